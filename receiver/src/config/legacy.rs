/*!
The original tools' client config (`repclient.cfg`, filled in from
`repclient.template.cfg`): `key=value` lines that `subscribe_series` sourced with bash and
`get_slony_logs.pl` split on `=`. Read by [`slony_shared::config::shell`], as bash assigns
the values (quotes, `${key}` references to earlier keys) and never run: command
substitution, operators and anything else a shell would execute are refused with the line.

Every key of the template is either mapped onto the TOML config ([`KEYS`], `Maps`) or
knowingly ignored (`Ignored`, with the reason); any other key is refused, naming the key
and its line, so a typo does not go unnoticed. An empty value (`email_list=`) counts as not
set, as the original scripts treated it.

| legacy key | TOML key |
| --- | --- |
| `node` | `node` |
| `slony_cluster` | `cluster` |
| `kRSServer`, `kRSPort`, `kRSUser` | `remote.host`, `remote.port`, `remote.user` |
| `kRSTriggerDir` | `remote.trigger_dir` |
| `rmt_slony_dir` | `remote.log_dir` |
| `slony_logs` | `local.log_dir` |
| `ingestion_path` | `local.die_dir` (the die file `get_slony_logs.<node>.die`) |
| `pg_host`, `pg_port`, `pg_user`, `pg_dbname` | `database.host`, `.port`, `.user`, `.dbname` |
| `email_list` | `alert.recipients` (split on `,`, `;` and spaces) |
| `attempts`, `archive`, `retention`, `tapegroup` | `subscribe.attempts`, `.archive`, `.retention`, `.tapegroup` |

| ignored key | why |
| --- | --- |
| `kRSPerl` | the Perl that ran the original scripts: nothing here runs Perl |
| `kRSBaseURL`, `kSubService`, `kPubListService`, `kSubXfer` | URLs of the web subscription service of later original clients: the receiver talks to the provider over SSH only |
| `kLocalLogDir`, `kMaxLog` | the original scripts' own log files and their size limit: the receiver logs to stderr |
| `kLocalWorkingDir` | `subscribe_series`'s temporary files and lock: the receiver's state is under `local.log_dir` |
| `kSQLIngestionProgram` | the `get_slony_logs.pl` that `subscribe_series` started: `pull` replaces it |
| `kDeleteSeriesProgram` | the `delete_series` that `subscribe_series` offered to run: the receiver never drops a local series |
| `scp_cmd`, `ssh_cmd` | the receiver speaks SSH and SFTP itself (libssh2) |
| `PSQL` | the receiver connects to the replica itself, with `pg_*` |
| `pg_schema`, `webdb_ip`, `webdb_dir`, `webdb_user` | in older copies; read by no original client script |

The reasons, word for word, are in [`KEYS`]; `migrate` writes them into the TOML.

A legacy config always logs in through the ssh-agent (`remote.use_agent = true`), as the
original tools did, and checks the host key against `$HOME/.ssh/known_hosts`; every other
key takes its default. Relative paths are taken against the file's directory.

[`Legacy::to_toml`] writes the same configuration as TOML, each key with the line it came
from (`slony-receiver migrate`).
*/

use super::raw::RawReceiver;
use super::{base_dir, resolve, ReceiverConfig};
use slony_shared::config::shell::{self, Assignment};
use slony_shared::config::ConfigError;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a key of the original client config becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// The TOML key (dotted) it sets, and the kind of value.
    Maps(&'static str, Kind),
    /// Not carried over, and why.
    Ignored(&'static str),
}

/// The kind of value a mapped key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// A local path (relative: against the config file's directory).
    LocalPath,
    /// A TCP port.
    Port,
    /// A non-negative number.
    Number,
    /// 0 or 1.
    Flag,
    /// Mail addresses separated by `,`, `;` or spaces.
    Addresses,
}

use Kind::*;
use Meaning::{Ignored, Maps};

const LOGS: &str = "where the original scripts wrote their own log files: slony-receiver logs to stderr (cron's redirection or the journal; --log-format json for log shippers)";
const WEB: &str = "a URL of the web-based subscription service of later original clients: slony-receiver talks to the provider over SSH only";

/// Every key of the original client config (the template's, and those of older copies
/// that `legacy.rs` has always accepted), in the template's order.
pub const KEYS: &[(&str, Meaning)] = &[
    ("node", Maps("node", Text)),
    ("kRSServer", Maps("remote.host", Text)),
    ("kRSTriggerDir", Maps("remote.trigger_dir", Text)),
    ("kRSUser", Maps("remote.user", Text)),
    ("kRSPort", Maps("remote.port", Port)),
    ("ingestion_path", Maps("local.die_dir", LocalPath)),
    ("pg_host", Maps("database.host", Text)),
    ("pg_port", Maps("database.port", Port)),
    ("pg_user", Maps("database.user", Text)),
    ("pg_dbname", Maps("database.dbname", Text)),
    ("slony_cluster", Maps("cluster", Text)),
    (
        "kRSPerl",
        Ignored("the Perl that ran the original scripts: slony-receiver runs no Perl"),
    ),
    ("kRSBaseURL", Ignored(WEB)),
    ("kLocalLogDir", Ignored(LOGS)),
    (
        "kLocalWorkingDir",
        Ignored("subscribe_series's temporary files and lock: slony-receiver keeps its state under local.log_dir/<node>/ and its run lock in local.log_dir"),
    ),
    (
        "kSQLIngestionProgram",
        Ignored("the get_slony_logs.pl that subscribe_series started after a subscription: slony-receiver pull replaces it"),
    ),
    (
        "kDeleteSeriesProgram",
        Ignored("the delete_series that subscribe_series offered to run on a series already present: slony-receiver never drops a local series (drop one by hand if you must)"),
    ),
    ("attempts", Maps("subscribe.attempts", Number)),
    ("archive", Maps("subscribe.archive", Flag)),
    ("retention", Maps("subscribe.retention", Number)),
    ("tapegroup", Maps("subscribe.tapegroup", Number)),
    ("kSubService", Ignored(WEB)),
    ("kPubListService", Ignored(WEB)),
    ("kSubXfer", Ignored(WEB)),
    (
        "scp_cmd",
        Ignored("the scp the original scripts ran: slony-receiver speaks SSH and SFTP itself (libssh2), through the ssh-agent"),
    ),
    (
        "ssh_cmd",
        Ignored("the ssh the original scripts ran: slony-receiver speaks SSH itself (libssh2), through the ssh-agent"),
    ),
    ("rmt_slony_dir", Maps("remote.log_dir", Text)),
    ("slony_logs", Maps("local.log_dir", LocalPath)),
    (
        "PSQL",
        Ignored("the psql the original scripts ran: slony-receiver connects to the replica itself, with pg_host, pg_port, pg_user and pg_dbname"),
    ),
    ("email_list", Maps("alert.recipients", Addresses)),
    (
        "kMaxLog",
        Ignored("the size at which the original scripts truncated their log files: slony-receiver keeps no log file of its own"),
    ),
    (
        "pg_schema",
        Ignored("read by none of the original client scripts (a provider-side sql_gen variable)"),
    ),
    (
        "webdb_ip",
        Ignored("an older name of the provider host, read by none of the original client scripts: kRSServer is"),
    ),
    (
        "webdb_dir",
        Ignored("an older name of the provider directory, read by none of the original client scripts: rmt_slony_dir is"),
    ),
    (
        "webdb_user",
        Ignored("an older name of the provider account, read by none of the original client scripts: kRSUser is"),
    ),
];

/// What a key means, if it is one of [`KEYS`].
pub fn meaning(key: &str) -> Option<Meaning> {
    KEYS.iter().find(|(k, _)| *k == key).map(|&(_, m)| m)
}

/// A value of a mapped key, typed as its TOML key wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text (a name, a host, a remote directory).
    Text(String),
    /// A local path, made absolute against the config file's directory.
    Path(PathBuf),
    /// A number (port, attempts, days...).
    Number(u32),
    /// A list of mail addresses.
    List(Vec<String>),
}

/// One mapped key of the file.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The TOML key it sets.
    pub toml_key: &'static str,
    /// Its assignment in the file (the last one, when set twice, as bash takes it).
    pub from: Assignment,
    /// The value; `None` when empty (not set).
    pub value: Option<Value>,
}

/// One ignored key of the file.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// Its assignment in the file.
    pub from: Assignment,
    /// Why it is not carried over.
    pub why: &'static str,
}

/// The original client config, read and mapped, before validation.
#[derive(Debug, Clone)]
pub struct Legacy {
    /// The file read.
    pub path: PathBuf,
    /// The lines of the file as written (for the comments of [`Legacy::to_toml`]).
    lines: Vec<String>,
    /// The keys carried over, in the file's order.
    pub mapped: Vec<Mapped>,
    /// The keys knowingly ignored, in the file's order.
    pub skipped: Vec<Skipped>,
}

/// Reads the original client config at `path`.
///
/// # Errors
///
/// The file cannot be read, a line is refused by [`shell`], a key is unknown, or a
/// value is not of its key's kind: each [`ConfigError::Syntax`] names the line.
pub fn read(path: &Path) -> Result<Legacy, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// [`read`] of `text`, read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Legacy, ConfigError> {
    let assignments = shell::parse(path, text)?;
    let base = base_dir(path);
    let mut mapped = Vec::new();
    let mut skipped = Vec::new();
    for a in assignments.last_of_each() {
        let syntax =
            |message: String| assignments.error_at(a.line, format!("{}: {message}", a.key));
        match meaning(&a.key) {
            None => {
                return Err(syntax(format!(
                    "unknown key (not one of the original client config's keys: {})",
                    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )))
            }
            Some(Ignored(why)) => skipped.push(Skipped {
                from: a.clone(),
                why,
            }),
            Some(Maps(toml_key, kind)) => {
                let value = if a.value.trim().is_empty() {
                    None
                } else {
                    Some(typed(&a.value, kind, &base).map_err(syntax)?)
                };
                mapped.push(Mapped {
                    toml_key,
                    from: a.clone(),
                    value,
                });
            }
        }
    }
    Ok(Legacy {
        path: path.to_path_buf(),
        lines: text.lines().map(str::to_string).collect(),
        mapped,
        skipped,
    })
}

/// `v` as a value of `kind`, or why not.
fn typed(v: &str, kind: Kind, base: &Path) -> Result<Value, String> {
    let number = |max: u32, what: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|n| *n <= max)
            .map(Value::Number)
            .ok_or_else(|| format!("{v:?} is not {what}"))
    };
    match kind {
        Text => Ok(Value::Text(v.to_string())),
        LocalPath => Ok(Value::Path(resolve(base, PathBuf::from(v)))),
        Port => number(u32::from(u16::MAX), "a port number"),
        Number => number(u32::MAX, "a number"),
        Flag => number(1, "0 or 1"),
        Addresses => Ok(Value::List(
            v.split([',', ' ', ';', '\t'])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )),
    }
}

impl Legacy {
    /// The mapped key that sets `toml_key`, if the file sets it.
    fn source_of(&self, toml_key: &str) -> Option<&Mapped> {
        self.mapped.iter().find(|m| m.toml_key == toml_key)
    }

    /// The raw config this file means (the same struct the TOML is read into).
    fn raw(&self) -> RawReceiver {
        let mut raw = RawReceiver::default();
        for m in &self.mapped {
            let Some(value) = &m.value else {
                continue;
            };
            let text = || match value {
                Value::Text(t) => Some(t.clone()),
                _ => None,
            };
            let path = || match value {
                Value::Path(p) => Some(p.clone()),
                _ => None,
            };
            let number = || match value {
                Value::Number(n) => Some(*n),
                _ => None,
            };
            // `typed` checked the ranges (ports, 0 or 1), so the conversions hold.
            let port = || number().and_then(|n| u16::try_from(n).ok());
            match m.toml_key {
                "node" => raw.node = text(),
                "cluster" => raw.cluster = text(),
                "remote.host" => raw.remote.host = text(),
                "remote.port" => raw.remote.port = port(),
                "remote.user" => raw.remote.user = text(),
                "remote.trigger_dir" => raw.remote.trigger_dir = text(),
                "remote.log_dir" => raw.remote.log_dir = text(),
                "local.log_dir" => raw.local.log_dir = path(),
                "local.die_dir" => raw.local.die_dir = path(),
                "database.host" => raw.database.host = text(),
                "database.port" => raw.database.port = port(),
                "database.user" => raw.database.user = text(),
                "database.dbname" => raw.database.dbname = text(),
                "alert.recipients" => {
                    raw.alert.recipients = match value {
                        Value::List(l) => Some(l.clone()),
                        _ => None,
                    }
                }
                "subscribe.attempts" => raw.subscribe.attempts = number(),
                "subscribe.archive" => {
                    raw.subscribe.archive = number().and_then(|n| u8::try_from(n).ok())
                }
                "subscribe.retention" => raw.subscribe.retention = number(),
                "subscribe.tapegroup" => raw.subscribe.tapegroup = number(),
                // Every TOML key of KEYS is above: the fixture's alpha sets each, and its
                // TOML is checked to mean the same.
                _ => {}
            }
        }
        // The original tools authenticated through the user's ssh-agent.
        raw.remote.use_agent = Some(true);
        raw.local.original_client_lock = self.original_client_lock();
        raw
    }

    /// Where `get_slony_logs.pl` takes its lock for this file's cluster.
    fn original_client_lock(&self) -> Option<PathBuf> {
        match self.source_of("cluster").and_then(|m| m.value.as_ref()) {
            Some(Value::Text(cluster)) => Some(original_lock_path(cluster)),
            _ => None,
        }
    }

    /// Validates the configuration this file means.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the legacy key and its line (and the TOML key it
    /// maps to).
    pub fn config(&self) -> Result<ReceiverConfig, ConfigError> {
        let mut cfg =
            ReceiverConfig::from_raw(&self.path, self.raw()).map_err(|e| self.legacy_error(e))?;
        cfg.legacy = true;
        Ok(cfg)
    }

    /// `e`, about a TOML key, restated about the legacy key that sets it.
    fn legacy_error(&self, e: ConfigError) -> ConfigError {
        let ConfigError::Invalid { path, key, reason } = e else {
            return e;
        };
        if let Some(m) = self.source_of(&key) {
            return ConfigError::Invalid {
                path,
                key: m.from.key.clone(),
                reason: format!("line {} (`{key}` in TOML): {reason}", m.from.line),
            };
        }
        match KEYS
            .iter()
            .find(|(_, m)| matches!(m, Maps(k, _) if *k == key))
        {
            Some((legacy, _)) => ConfigError::Invalid {
                path,
                key: (*legacy).to_string(),
                reason: format!("(`{key}` in TOML): {reason}"),
            },
            None => ConfigError::Invalid { path, key, reason },
        }
    }

    /// The line `n` of the file as written, safe inside a TOML comment.
    fn line_text(&self, n: usize) -> String {
        printable(self.lines.get(n.wrapping_sub(1)).map_or("", |l| l.trim()))
    }

    /// The TOML configuration meaning what this file means: every key it sets, with the
    /// line it came from; the keys left out, with why; the ssh-agent login. Paths are
    /// written absolute, so the TOML means the same wherever it is put.
    pub fn to_toml(&self) -> String {
        let name = printable(&self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# slony-receiver configuration, written by `slony-receiver migrate` from\n# {}.\n#\n# It means what that file meant: each key below says the line it came from;\n# every key not written here takes its default (etc/receiver.toml.example\n# lists them all). Load it with `slony-receiver <command> --config FILE`.",
            printable(&self.path.display().to_string())
        );
        let sections: [(&str, &[&str]); 6] = [
            ("", &["cluster", "node"]),
            (
                "remote",
                &[
                    "remote.host",
                    "remote.port",
                    "remote.user",
                    "remote.log_dir",
                    "remote.trigger_dir",
                ],
            ),
            ("local", &["local.log_dir", "local.die_dir"]),
            (
                "database",
                &[
                    "database.host",
                    "database.port",
                    "database.user",
                    "database.dbname",
                ],
            ),
            ("alert", &["alert.recipients"]),
            (
                "subscribe",
                &[
                    "subscribe.attempts",
                    "subscribe.archive",
                    "subscribe.retention",
                    "subscribe.tapegroup",
                ],
            ),
        ];
        for (section, keys) in sections {
            out.push('\n');
            if !section.is_empty() {
                let _ = writeln!(out, "[{section}]");
            }
            if section == "local" {
                if let Some(lock) = self.original_client_lock() {
                    let _ = writeln!(
                        out,
                        "# The lock get_slony_logs.pl takes (/tmp/<slony_cluster>.lock): taken too, so\n# the original client and slony-receiver never apply at once while the old cron\n# line may still run. Remove this line once it no longer does.\noriginal_client_lock = {}",
                        toml_value(&Value::Path(lock))
                    );
                }
            }
            for key in keys {
                let Some(m) = self.source_of(key) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "# from {name} line {}: {}",
                    m.from.line,
                    self.line_text(m.from.line)
                );
                let short = key.rsplit('.').next().unwrap_or(key);
                match &m.value {
                    None => {
                        let _ = writeln!(out, "# (empty: not set, so the default)");
                    }
                    Some(v) => {
                        let _ = writeln!(out, "{short} = {}", toml_value(v));
                    }
                }
            }
            if section == "remote" {
                out.push_str("# The original tools logged in through the ssh-agent (SSH_AUTH_SOCK must be\n# set for every run); to log in with a key file instead, remove this line and\n# set key_file.\nuse_agent = true\n");
                out.push_str("# known_hosts is not set: the provider's host key must be in\n# $HOME/.ssh/known_hosts of the account that runs slony-receiver, as ssh\n# required for the original tools.\n");
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(
                out,
                "\n# Not carried over from {name} (they configured what slony-receiver replaces):"
            );
            for s in &self.skipped {
                let _ = writeln!(
                    out,
                    "#   line {}: {}\n#     {}",
                    s.from.line,
                    self.line_text(s.from.line),
                    s.why
                );
            }
        }
        out
    }
}

/// The lock file of the original client for `cluster`: it opens `/tmp/<cluster>.lock`.
pub fn original_lock_path(cluster: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/{cluster}.lock"))
}

/// `s` with its control characters (but tabs) shown as `?`: safe inside a TOML comment.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

/// `v` written as TOML.
fn toml_value(v: &Value) -> String {
    match v {
        Value::Text(t) => toml::Value::String(t.clone()).to_string(),
        Value::Path(p) => toml::Value::String(p.to_string_lossy().into_owned()).to_string(),
        Value::Number(n) => n.to_string(),
        Value::List(l) => {
            toml::Value::Array(l.iter().map(|s| toml::Value::String(s.clone())).collect())
                .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ReceiverConfig, SshAuth, SubscribeConfig};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The fixture alpha's config, its placeholders filled in.
    fn alpha(root: &Path) -> String {
        let text = include_str!("../../../tests/fixtures/legacy/sites/alpha/repclient.cfg");
        text.replace("@ROOT@", &root.display().to_string())
            .replace("@PG_PORT@", "5433")
            .replace("@SSH_PORT@", "2222")
            .replace("@SSH_USER@", "slony")
    }

    /// Two configs mean the same: equal in everything but the file they came from.
    fn assert_same(a: &ReceiverConfig, b: &ReceiverConfig) {
        let mut a = a.clone();
        a.source = b.source.clone();
        a.legacy = b.legacy;
        assert_eq!(format!("{a:#?}"), format!("{b:#?}"));
    }

    #[test]
    fn reads_the_original_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "client.cfg",
            "# client config\nkRSServer=solarport.stanford.edu\nkRSPort=55000\nkRSUser=igor\n\
             rmt_slony_dir=/scr21/slony_logs\nslony_logs=/home/slony/logs\npg_host=localhost\n\
             pg_port=5432\npg_user=slony\npg_dbname=jsoc\nslony_cluster=mdi_mag\nnode=nso\n\
             ingestion_path=/home/slony/bin\nemail_list='a@x.org, b@y.org'\n",
        );
        let c = ReceiverConfig::load_legacy(&p).unwrap();
        assert!(c.legacy);
        assert_eq!(c.config_arg(), format!("--legacy-config {}", p.display()));
        assert_eq!(c.remote.host, "solarport.stanford.edu");
        assert_eq!(c.remote.port, 55000);
        assert_eq!(c.remote.auth, SshAuth::Agent);
        assert_eq!(c.remote_site_dir(), "/scr21/slony_logs/nso");
        assert_eq!(c.remote_exchange_dir(), None);
        assert_eq!(c.cluster.as_str(), "mdi_mag");
        assert_eq!(c.alert.recipients, vec!["a@x.org", "b@y.org"]);
        assert_eq!(c.subscribe, SubscribeConfig::default());
        assert_eq!(
            c.die_file(),
            std::path::PathBuf::from("/home/slony/bin/get_slony_logs.nso.die")
        );
    }

    #[test]
    fn reads_a_filled_in_copy_of_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = write(root, "repclient.cfg", &alpha(root));
        let c = ReceiverConfig::load_legacy(&p).unwrap();
        assert_eq!(c.node.as_str(), "alpha");
        assert_eq!(c.cluster.as_str(), "jsoc");
        assert_eq!(c.remote.host, "127.0.0.1");
        assert_eq!(c.remote.port, 2222);
        assert_eq!(c.remote.user, "slony");
        assert_eq!(
            c.remote.trigger_dir,
            format!("{}/provider/triggers", root.display())
        );
        assert_eq!(
            c.remote.log_dir,
            format!("{}/provider/site_logs", root.display())
        );
        // slony_logs=${kLocalWorkingDir}/slony_logs, through an ignored key.
        assert_eq!(c.local.log_dir, root.join("sites/alpha/work/slony_logs"));
        assert_eq!(c.local.die_dir, root.join("sites/alpha/work"));
        // The original client's lock, /tmp/<slony_cluster>.lock, is taken too.
        assert_eq!(
            c.local.original_client_lock,
            Some(PathBuf::from("/tmp/jsoc.lock"))
        );
        assert!(c.database.conninfo.contains("port=5433"));
        assert!(c.database.conninfo.contains("dbname='replica_alpha'"));
        assert_eq!(
            c.alert.recipients,
            vec!["ops@alpha.example.org", "dba@alpha.example.org"]
        );
        assert_eq!(c.subscribe.attempts, 60);
        assert_eq!(c.subscribe.retention, 21);
        assert_eq!(c.remote.auth, SshAuth::Agent);
        // Every key of the fixture is either mapped or ignored, none twice.
        let l = read(&p).unwrap();
        assert_eq!(l.mapped.len() + l.skipped.len(), 30);
        // It sets every mapped key, so the equivalence tests cover each of them.
        assert_eq!(
            l.mapped.len(),
            KEYS.iter().filter(|(_, m)| matches!(m, Maps(..))).count()
        );
        assert!(l.skipped.iter().any(|s| s.from.key == "PSQL"));
    }

    #[test]
    fn every_site_of_the_fixture_loads_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (node, text) in [
            (
                "alpha",
                include_str!("../../../tests/fixtures/legacy/sites/alpha/repclient.cfg"),
            ),
            (
                "beta",
                include_str!("../../../tests/fixtures/legacy/sites/beta/repclient.cfg"),
            ),
            (
                "gamma",
                include_str!("../../../tests/fixtures/legacy/sites/gamma/repclient.cfg"),
            ),
        ] {
            let text = text
                .replace("@ROOT@", &root.display().to_string())
                .replace("@PG_PORT@", "5433")
                .replace("@SSH_PORT@", "2222")
                .replace("@SSH_USER@", "slony");
            let p = write(root, &format!("{node}.cfg"), &text);
            let legacy = read(&p).unwrap();
            let c = legacy.config().unwrap_or_else(|e| panic!("{node}: {e}"));
            assert_eq!(c.node.as_str(), node);
            assert_eq!(
                c.local.die_dir,
                root.join(format!("sites/{node}/work")),
                "{node}"
            );
            let t = write(root, &format!("{node}.toml"), &legacy.to_toml());
            assert_same(&c, &ReceiverConfig::load(&t).unwrap());
        }
    }

    #[test]
    fn every_key_of_the_template_is_known() {
        // The keys of the original repclient.template.cfg, in its order.
        for key in [
            "node",
            "kRSServer",
            "kRSTriggerDir",
            "kRSUser",
            "kRSPort",
            "ingestion_path",
            "pg_host",
            "pg_port",
            "pg_user",
            "pg_dbname",
            "slony_cluster",
            "kRSPerl",
            "kRSBaseURL",
            "kLocalLogDir",
            "kLocalWorkingDir",
            "kSQLIngestionProgram",
            "kDeleteSeriesProgram",
            "attempts",
            "archive",
            "retention",
            "tapegroup",
            "kSubService",
            "kPubListService",
            "kSubXfer",
            "scp_cmd",
            "ssh_cmd",
            "rmt_slony_dir",
            "slony_logs",
            "PSQL",
            "email_list",
        ] {
            assert!(meaning(key).is_some(), "{key}");
        }
        for (i, (k, _)) in KEYS.iter().enumerate() {
            assert!(!KEYS[i + 1..].iter().any(|(o, _)| o == k), "{k} twice");
        }
    }

    #[test]
    fn refuses_unknown_keys_bad_values_and_shell_code_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needles) in [
            (
                "node=a\nkRSPrt=1\n",
                &["line 2", "kRSPrt", "unknown key"][..],
            ),
            ("kRSPort=$(rm -rf /)\n", &["line 1", "command substitution"]),
            ("kRSServer=`id`\n", &["line 1", "command substitution"]),
            ("\nkRSPort=port\n", &["line 2", "kRSPort", "port number"]),
            ("pg_port=70000\n", &["line 1", "pg_port", "port number"]),
            ("archive=2\n", &["line 1", "archive", "0 or 1"]),
            (
                "attempts=<max number of attempts>\n",
                &["line 1", "attempts"],
            ),
            ("kRSServer=a; touch /tmp/x\n", &["line 1", "shell operator"]),
        ] {
            let p = write(dir.path(), "c.cfg", text);
            let e = ReceiverConfig::load_legacy(&p).unwrap_err().to_string();
            for n in needles {
                assert!(e.contains(n), "{text:?}: {e}");
            }
        }
    }

    #[test]
    fn invalid_values_name_the_legacy_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let text = alpha(root).replace("slony_cluster=jsoc", "slony_cluster=js-oc");
        let p = write(root, "c.cfg", &text);
        let e = ReceiverConfig::load_legacy(&p).unwrap_err().to_string();
        assert!(e.contains("`slony_cluster`"), "{e}");
        assert!(e.contains("line 26 (`cluster` in TOML)"), "{e}");
        let text = alpha(root).replace("kRSServer=127.0.0.1", "kRSServer=");
        let p = write(root, "c.cfg", &text);
        let e = ReceiverConfig::load_legacy(&p).unwrap_err().to_string();
        assert!(e.contains("`kRSServer`"), "{e}");
        assert!(e.contains("missing"), "{e}");
        let text = alpha(root).replace("attempts=60", "attempts=0");
        let p = write(root, "c.cfg", &text);
        let e = ReceiverConfig::load_legacy(&p).unwrap_err().to_string();
        assert!(e.contains("`attempts`"), "{e}");
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn the_toml_written_means_what_the_legacy_file_meant() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Relative paths and an empty key, too: the TOML is written elsewhere.
        let text = alpha(root)
            .replace(
                "ingestion_path=",
                "ingestion_path=relative/die\n#ingestion_path=",
            )
            .replace("kRSTriggerDir=", "kRSTriggerDir=\n#kRSTriggerDir=");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let p = write(&root.join("etc"), "repclient.cfg", &text);
        let legacy = read(&p).unwrap();
        let from_legacy = legacy.config().unwrap();
        assert_eq!(from_legacy.local.die_dir, root.join("etc/relative/die"));
        let toml_text = legacy.to_toml();
        let t = write(root, "receiver.toml", &toml_text);
        let from_toml = ReceiverConfig::load(&t).unwrap();
        assert_same(&from_legacy, &from_toml);
        assert!(
            toml_text.contains(
                "# from repclient.cfg line 15: kRSServer=127.0.0.1\nhost = \"127.0.0.1\"\n"
            ),
            "{toml_text}"
        );
        assert!(toml_text
            .contains("# from repclient.cfg line 64: slony_logs=${kLocalWorkingDir}/slony_logs\n"));
        assert!(toml_text.contains("kRSTriggerDir=\n# (empty: not set, so the default)"));
        assert!(toml_text.contains("#   line 31: kRSPerl=/usr/bin/perl\n#     the Perl"));
        assert!(toml_text.contains("PSQL=\"/usr/bin/psql -p ${pg_port}\""));
        assert!(toml_text.contains("use_agent = true"));
        // A second load of the same file is the same configuration (the test can fail:
        // a different file is not).
        let other = write(
            root,
            "other.toml",
            &toml_text.replace("attempts = 60", "attempts = 61"),
        );
        let other = ReceiverConfig::load(&other).unwrap();
        assert_ne!(other.subscribe, from_legacy.subscribe);
    }

    #[test]
    fn values_with_quotes_and_spaces_survive_the_toml() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let text = "node=n1\nslony_cluster=c\nkRSServer=h\nkRSUser='we \"ird\\'\nrmt_slony_dir=/r\n\
                    slony_logs='/l/with space'\npg_user=u\npg_dbname='d b'\nemail_list=\"a@x;b@y\tc@z\"\n";
        let p = write(root, "c.cfg", text);
        let legacy = read(&p).unwrap();
        let a = legacy.config().unwrap();
        assert_eq!(a.remote.user, "we \"ird\\");
        let b = ReceiverConfig::load(&write(root, "r.toml", &legacy.to_toml())).unwrap();
        assert_same(&a, &b);
        assert_eq!(b.alert.recipients, vec!["a@x", "b@y", "c@z"]);
    }

    #[test]
    fn a_file_name_with_a_newline_stays_inside_the_comments() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // The name is written into the comments of the TOML: a newline in it must not
        // start a line of TOML.
        let name = "repclient\n[pull]\nacknowledge = false\n#.cfg";
        let p = write(root, name, &alpha(root));
        let legacy = read(&p).unwrap();
        let toml_text = legacy.to_toml();
        assert!(!toml_text.contains("\nacknowledge"), "{toml_text}");
        let from_toml = ReceiverConfig::load(&write(root, "r.toml", &toml_text)).unwrap();
        assert_same(&legacy.config().unwrap(), &from_toml);
    }
}
