//! The receiver's configuration: a TOML file (see `etc/receiver.toml.example`), or the
//! original tools' `key=value` client config ([`legacy`]).
//!
//! [`raw`] mirrors the file and is only checked for syntax; [`ReceiverConfig`] is the
//! validated, resolved form the commands use (names validated, paths absolute, secrets
//! read from the environment). The `[database]` and `[alert]` sections are the shared
//! crate's, as the manager's config has them too.

pub mod legacy;
pub mod raw;

use raw::RawReceiver;
pub use slony_shared::config::{
    alert_config, base_dir, cluster_name, env_var, invalid, resolve, AlertConfig, ConfigError,
    DatabaseConfig,
};
use slony_shared::ident::{ClusterName, NodeName};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `slony-receiver` needs, validated.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The file this was read from (for messages).
    pub source: PathBuf,
    /// Whether that file is the original tools' client config (`--legacy-config`), so
    /// the commands messages suggest name it the way it was given.
    pub legacy: bool,
    /// Slony cluster name; its objects live in schema `_<cluster>`.
    pub cluster: ClusterName,
    /// This site's name: the provider keeps its stream in `<remote.log_dir>/<node>/`.
    pub node: NodeName,
    /// If set, only archives written by this Slony node id are accepted.
    pub slony_node_id: Option<u32>,
    /// Where the archives come from.
    pub remote: RemoteConfig,
    /// Where they are kept locally.
    pub local: LocalConfig,
    /// The replica database.
    pub database: DatabaseConfig,
    /// Pull tuning.
    pub pull: PullConfig,
    /// Packing applied archives.
    pub housekeeping: HousekeepingConfig,
    /// Failure mail.
    pub alert: AlertConfig,
    /// Health thresholds of `status`.
    pub status: StatusConfig,
    /// `[sql] allow`: the kinds of DDL the provider's SQL may hold beyond the defaults.
    pub sql_allow: slony_shared::archive::statement::Allowances,
    /// What `subscribe-series` does unless its command line says otherwise.
    pub subscribe: SubscribeConfig,
}

/// How to reach the provider over SSH.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Provider host name or address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// How to authenticate.
    pub auth: SshAuth,
    /// known_hosts file the provider's host key must be listed in.
    pub known_hosts: PathBuf,
    /// Provider directory holding one sub-directory per site.
    pub log_dir: String,
    /// Provider directory holding one exchange directory per site, `<trigger_dir>/<node>/`
    /// (requests, answers, the acknowledgement). Empty: not set.
    pub trigger_dir: String,
    /// Accept answers owned by the account this site logs in as: the provider's manager
    /// runs as the same account, or shares it among sites, so ownership proves nothing and
    /// only the answers' binding and digest are checked.
    pub allow_shared_account: bool,
    /// Bound on connecting and on each SSH operation.
    pub timeout: Duration,
}

/// SSH authentication method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshAuth {
    /// A private key file, with an optional passphrase (read from the environment).
    KeyFile {
        /// Private key path.
        path: PathBuf,
        /// Passphrase, if the key has one.
        passphrase: Option<String>,
    },
    /// Whatever identities the running ssh-agent offers (`SSH_AUTH_SOCK`).
    Agent,
}

/// Local directories.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// `<log_dir>/<node>/` holds the counter file, downloads and applied archives.
    pub log_dir: PathBuf,
    /// Directory of the pause file `get_slony_logs.<node>.die`.
    pub die_dir: PathBuf,
    /// The lock the original client (`get_slony_logs.pl`) takes, `/tmp/<cluster>.lock`:
    /// taken too, so that the two never apply at once while a site moves over.
    pub original_client_lock: Option<PathBuf>,
}

/// Pull tuning.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// Daemon mode: time between polls of the provider.
    pub poll_interval: Duration,
    /// How many archives may be downloaded ahead of the one being applied.
    pub fetch_ahead: usize,
    /// How many bytes of provider files may be downloaded ahead of the one being
    /// applied (a single larger file is still fetched, alone).
    pub fetch_ahead_bytes: u64,
    /// SSH sessions fetching in parallel during a catch-up.
    pub fetch_sessions: usize,
    /// Run the tracking-table VACUUM after this many applied archives (and at the end of a run).
    pub vacuum_every: u64,
    /// At most this many archives are applied in one transaction (1 = one transaction
    /// per archive). Only a backlog forms groups: a live stream's archive never waits.
    pub group_commit: usize,
    /// Daemon mode: where to serve Prometheus metrics (`GET /metrics`); None: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Write the applied counter into the site directory on the provider
    /// ([`crate::ack`]), so its housekeeping deletes only what this site has.
    pub acknowledge: bool,
    /// The `search_path` an EXECUTE SCRIPT's statements run with (`pull.ddl_search_path`,
    /// as a `search_path` value): the provider's `ddl_search_path`, so an unqualified name
    /// means here what it meant on the log-shipping node. `None`: the applying session's
    /// own (its role's `search_path`).
    pub ddl_search_path: Option<String>,
}

/// Housekeeping of applied archives.
#[derive(Debug, Clone)]
pub struct HousekeepingConfig {
    /// Archives per tar.gz batch.
    pub batch_size: u64,
    /// Delete batches older than this many days (None: keep forever).
    pub keep_days: Option<u64>,
    /// Keep at most this many batches, the newest by counter (None: keep all; 0: keep
    /// none, so applied archives are deleted once packed).
    pub keep_count: Option<usize>,
    /// When the pull daemon runs housekeeping itself (a cron expression, seconds first),
    /// so a site needs no separate crontab; None: only when `housekeeping` is run.
    pub schedule: Option<cron::Schedule>,
}

/// When `status` calls the replica unhealthy (exit code 20), so it can serve as a
/// monitoring check. A lag exactly at a threshold is still healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// Unhealthy when the provider has more than this many archives the replica has not
    /// applied yet (`[status] max_lag_archives`, default 100).
    pub max_lag_archives: u64,
    /// Unhealthy when the newest archive on the provider was created more than this long
    /// after the replica's current one (`[status] max_lag_secs`, default 3600).
    pub max_lag: Duration,
}

/// `[subscribe]`: the defaults of `subscribe-series` (each overridden by its flag), and
/// the original tools' per-request values passed through to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeConfig {
    /// How many times to look for each answer from the manager (the original
    /// `attempts`). Default 120.
    pub attempts: u32,
    /// Time between looks (the original slept 5 seconds). Default 5 s.
    pub interval: Duration,
    /// The original tools' archive flag, 0 or 1. Default 0.
    pub archive: u8,
    /// The original tools' retention in days. Default 21.
    pub retention: u32,
    /// The original tools' tape group. Default 1.
    pub tapegroup: u32,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig {
            attempts: 120,
            interval: Duration::from_secs(5),
            archive: 0,
            retention: 21,
            tapegroup: 1,
        }
    }
}

impl SubscribeConfig {
    /// `[subscribe]` of the config file `p`.
    fn from_raw(p: &Path, s: raw::RawSubscribe) -> Result<Self, ConfigError> {
        let d = SubscribeConfig::default();
        let attempts = s.attempts.unwrap_or(d.attempts);
        if attempts == 0 {
            return Err(invalid(p, "subscribe.attempts", "must be at least 1"));
        }
        let archive = s.archive.unwrap_or(d.archive);
        if archive > 1 {
            return Err(invalid(
                p,
                "subscribe.archive",
                format!("must be 0 or 1, not {archive}"),
            ));
        }
        Ok(SubscribeConfig {
            attempts,
            interval: s
                .interval_secs
                .map_or(d.interval, |v| Duration::from_secs(v.max(1))),
            archive,
            retention: s.retention.unwrap_or(d.retention),
            tapegroup: s.tapegroup.unwrap_or(d.tapegroup),
        })
    }
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            max_lag_archives: 100,
            max_lag: Duration::from_secs(3600),
        }
    }
}

/// Archives per transaction unless configured: enough that a catch-up pays for a commit
/// once in hundreds of archives, small enough that a failure redoes little.
pub const DEFAULT_GROUP_COMMIT: usize = 250;

/// Archives downloaded ahead unless configured: room for the group being applied and
/// the next one.
pub const DEFAULT_FETCH_AHEAD: usize = 1000;

/// MB downloaded ahead unless configured.
pub const DEFAULT_FETCH_AHEAD_MB: u64 = 128;

/// Parallel SSH sessions unless configured (see BENCHMARKS.md for the measurement).
pub const DEFAULT_FETCH_SESSIONS: usize = 4;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn remote_dir(path: &Path, key: &str, value: Option<String>) -> Result<String, ConfigError> {
    let v = value.ok_or_else(|| invalid(path, key, "missing: set the provider directory"))?;
    if !v.starts_with('/') || v.contains('\0') || v.split('/').any(|c| c == "..") {
        return Err(invalid(
            path,
            key,
            format!("{v:?} must be an absolute path without `..`"),
        ));
    }
    Ok(v.trim_end_matches('/').to_string())
}

impl ReceiverConfig {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawReceiver = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_raw(path, raw)
    }

    /// Reads and validates the original tools' `key=value` client config ([`legacy`]).
    pub fn load_legacy(path: &Path) -> Result<Self, ConfigError> {
        legacy::read(path)?.config()
    }

    /// Resolves and validates a raw config read from `path`, section by section.
    pub(super) fn from_raw(path: &Path, raw: RawReceiver) -> Result<Self, ConfigError> {
        let p = path;
        let base = base_dir(path);
        let cluster = cluster_name(p, raw.cluster.as_deref())?;
        let node = raw
            .node
            .as_deref()
            .ok_or_else(|| invalid(p, "node", "missing: set this site's name"))?;
        let node = NodeName::new(node).map_err(|e| invalid(p, "node", e.to_string()))?;
        Ok(ReceiverConfig {
            source: path.to_path_buf(),
            legacy: false,
            sql_allow: sql_allowances(p, raw.sql)?,
            cluster,
            node,
            slony_node_id: raw.slony_node_id,
            remote: RemoteConfig::from_raw(p, &base, raw.remote)?,
            local: LocalConfig::from_raw(p, &base, raw.local)?,
            database: DatabaseConfig::from_raw(p, raw.database, "replica")?,
            pull: PullConfig::from_raw(p, raw.pull)?,
            housekeeping: HousekeepingConfig::from_raw(p, raw.housekeeping)?,
            alert: alert_config(p, raw.alert, "slony-receiver")?,
            status: StatusConfig::from_raw(p, raw.status)?,
            subscribe: SubscribeConfig::from_raw(p, raw.subscribe)?,
        })
    }

    /// `--config FILE` or `--legacy-config FILE`: how to give this configuration to a
    /// command again (for the commands messages suggest).
    pub fn config_arg(&self) -> String {
        let flag = if self.legacy {
            "--legacy-config"
        } else {
            "--config"
        };
        format!("{flag} {}", self.source.display())
    }

    /// `<local.log_dir>/<node>/`: counter file, downloads, applied archives.
    pub fn site_dir(&self) -> PathBuf {
        self.local.log_dir.join(self.node.as_str())
    }

    /// The counter mirror file `slony_counter.txt`.
    pub fn counter_file(&self) -> PathBuf {
        self.site_dir().join("slony_counter.txt")
    }

    /// `<site_dir>/refused.json`: the archive refused for its content, and its source.
    pub fn refused_file(&self) -> PathBuf {
        self.site_dir().join("refused.json")
    }

    /// `<site_dir>/slony_node_id`: the Slony node of the archives applied, when
    /// `slony_node_id` is not configured.
    pub fn node_file(&self) -> PathBuf {
        self.site_dir().join("slony_node_id")
    }

    /// Where downloaded, not yet applied archives wait.
    pub fn incoming_dir(&self) -> PathBuf {
        self.site_dir().join("incoming")
    }

    /// Where applied archives go until housekeeping packs them.
    pub fn applied_dir(&self) -> PathBuf {
        self.site_dir().join("applied")
    }

    /// The pause file `get_slony_logs.<node>.die` (same name as the original tools).
    pub fn die_file(&self) -> PathBuf {
        self.local
            .die_dir
            .join(format!("get_slony_logs.{}.die", self.node))
    }

    /// The per-cluster run lock.
    pub fn lock_file(&self) -> PathBuf {
        self.local
            .log_dir
            .join(format!("slony-receiver.{}.lock", self.cluster))
    }

    /// The alert state (what failure was mailed, and when).
    pub fn alert_state_file(&self) -> PathBuf {
        self.site_dir().join("alert_state.json")
    }

    /// The provider's directory for this site: `<remote.log_dir>/<node>`.
    pub fn remote_site_dir(&self) -> String {
        format!("{}/{}", self.remote.log_dir, self.node)
    }

    /// `<remote.trigger_dir>/<node>`: the site's exchange directory on the provider, where
    /// it writes its requests, reports and acknowledgement (`None` without a trigger_dir).
    pub fn remote_exchange_dir(&self) -> Option<String> {
        (!self.remote.trigger_dir.is_empty())
            .then(|| format!("{}/{}", self.remote.trigger_dir, self.node))
    }
}

impl RemoteConfig {
    /// `[remote]` of the config file `p`, relative paths against `base`.
    fn from_raw(p: &Path, base: &Path, r: raw::RawRemote) -> Result<Self, ConfigError> {
        let host = r
            .host
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| invalid(p, "remote.host", "missing: set the provider host"))?;
        let user = r
            .user
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| invalid(p, "remote.user", "missing: set the SSH user"))?;
        let auth = match (r.key_file, r.use_agent.unwrap_or(false)) {
            (Some(_), true) => {
                return Err(invalid(
                    p,
                    "remote.use_agent",
                    "set either remote.key_file or remote.use_agent = true, not both",
                ))
            }
            (Some(k), false) => SshAuth::KeyFile {
                path: resolve(base, k),
                passphrase: match r.key_passphrase_env {
                    Some(var) => Some(env_var(p, "remote.key_passphrase_env", &var)?),
                    None => None,
                },
            },
            (None, true) => SshAuth::Agent,
            (None, false) => {
                return Err(invalid(
                    p,
                    "remote.key_file",
                    "missing: set remote.key_file, or remote.use_agent = true",
                ))
            }
        };
        let known_hosts = r
            .known_hosts
            .map(|k| resolve(base, k))
            .unwrap_or_else(|| home().join(".ssh/known_hosts"));
        Ok(RemoteConfig {
            host,
            port: r.port.unwrap_or(22),
            user,
            auth,
            known_hosts,
            log_dir: remote_dir(p, "remote.log_dir", r.log_dir)?,
            trigger_dir: match r.trigger_dir {
                Some(t) => remote_dir(p, "remote.trigger_dir", Some(t))?,
                None => String::new(),
            },
            allow_shared_account: r.allow_shared_account.unwrap_or(false),
            timeout: Duration::from_secs(r.connect_timeout_secs.unwrap_or(30).max(1)),
        })
    }
}

impl LocalConfig {
    /// `[local]` of the config file `p`, relative paths against `base`.
    fn from_raw(p: &Path, base: &Path, l: raw::RawLocal) -> Result<Self, ConfigError> {
        let log_dir = l
            .log_dir
            .map(|d| resolve(base, d))
            .ok_or_else(|| invalid(p, "local.log_dir", "missing: set the local log directory"))?;
        let die_dir = l
            .die_dir
            .map(|d| resolve(base, d))
            .unwrap_or_else(|| log_dir.clone());
        let original_client_lock = l.original_client_lock.map(|f| resolve(base, f));
        Ok(LocalConfig {
            log_dir,
            die_dir,
            original_client_lock,
        })
    }
}

impl PullConfig {
    /// `[pull]` of the config file `p`.
    fn from_raw(p: &Path, r: raw::RawPull) -> Result<Self, ConfigError> {
        let fetch_ahead = r.fetch_ahead.unwrap_or(DEFAULT_FETCH_AHEAD);
        if fetch_ahead == 0 || fetch_ahead > 10_000 {
            return Err(invalid(
                p,
                "pull.fetch_ahead",
                "must be between 1 and 10000",
            ));
        }
        let fetch_ahead_mb = r.fetch_ahead_mb.unwrap_or(DEFAULT_FETCH_AHEAD_MB);
        if fetch_ahead_mb == 0 || fetch_ahead_mb > 1_000_000 {
            return Err(invalid(
                p,
                "pull.fetch_ahead_mb",
                "must be between 1 and 1000000",
            ));
        }
        let fetch_sessions = r.fetch_sessions.unwrap_or(DEFAULT_FETCH_SESSIONS);
        if fetch_sessions == 0 || fetch_sessions > 16 {
            return Err(invalid(
                p,
                "pull.fetch_sessions",
                "must be between 1 and 16",
            ));
        }
        let group_commit = r.group_commit.unwrap_or(DEFAULT_GROUP_COMMIT);
        if group_commit == 0 || group_commit > 10_000 {
            return Err(invalid(
                p,
                "pull.group_commit",
                "must be between 1 and 10000",
            ));
        }
        let ddl_search_path = match r.ddl_search_path.clone() {
            None => None,
            Some(path) => {
                if path.is_empty() || !path.iter().all(|s| slony_shared::ident::is_schema_name(s)) {
                    return Err(invalid(
                        p,
                        "pull.ddl_search_path",
                        "must list schemas as PostgreSQL spells them (the provider's ddl_search_path), at least one",
                    ));
                }
                Some(
                    path.iter()
                        .map(|s| slony_shared::ident::quote_ident(s))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        };
        Ok(PullConfig {
            ddl_search_path,
            poll_interval: Duration::from_secs(r.poll_interval_secs.unwrap_or(5).max(1)),
            fetch_ahead,
            fetch_ahead_bytes: fetch_ahead_mb * 1024 * 1024,
            fetch_sessions,
            vacuum_every: r.vacuum_every.unwrap_or(100).max(1),
            group_commit,
            acknowledge: r.acknowledge.unwrap_or(true),
            metrics_listen: match r.metrics_listen {
                None => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    invalid(
                        p,
                        "pull.metrics_listen",
                        format!("{a:?} is not an address:port (e.g. \"127.0.0.1:9187\")"),
                    )
                })?),
            },
        })
    }
}

impl HousekeepingConfig {
    /// `[housekeeping]` of the config file `p`.
    fn from_raw(p: &Path, h: raw::RawHousekeeping) -> Result<Self, ConfigError> {
        let batch_size = h.batch_size.unwrap_or(5000);
        if batch_size == 0 {
            return Err(invalid(p, "housekeeping.batch_size", "must be at least 1"));
        }
        Ok(HousekeepingConfig {
            batch_size,
            keep_days: h.keep_days,
            schedule: match h.schedule {
                None => None,
                Some(expr) => Some(expr.parse::<cron::Schedule>().map_err(|e| {
                    invalid(
                        p,
                        "housekeeping.schedule",
                        format!("{expr:?} is not a cron expression ({e}); write seconds first, e.g. \"0 17 3 * * *\" for 03:17:00 daily"),
                    )
                })?),
            },
            keep_count: match h.keep_count {
                Some(n) => Some(
                    usize::try_from(n)
                        .map_err(|_| invalid(p, "housekeeping.keep_count", "is too large"))?,
                ),
                None => None,
            },
        })
    }
}

impl StatusConfig {
    /// `[status]` of the config file `p`.
    fn from_raw(p: &Path, st: raw::RawStatus) -> Result<Self, ConfigError> {
        let defaults = StatusConfig::default();
        let max_lag_archives = st.max_lag_archives.unwrap_or(defaults.max_lag_archives);
        if max_lag_archives == 0 || max_lag_archives > slony_shared::counter::MAX_COUNTER {
            return Err(invalid(
                p,
                "status.max_lag_archives",
                format!(
                    "must be between 1 and {}",
                    slony_shared::counter::MAX_COUNTER
                ),
            ));
        }
        let max_lag_secs = st.max_lag_secs.unwrap_or(defaults.max_lag.as_secs());
        if max_lag_secs == 0 || max_lag_secs > i64::MAX as u64 {
            return Err(invalid(
                p,
                "status.max_lag_secs",
                "must be at least 1 (seconds)",
            ));
        }
        Ok(StatusConfig {
            max_lag_archives,
            max_lag: Duration::from_secs(max_lag_secs),
        })
    }
}

/// `[sql] allow` of the config file `p`: what the provider's DDL may hold beyond the
/// default rules.
fn sql_allowances(
    p: &Path,
    sql: raw::RawSql,
) -> Result<slony_shared::archive::statement::Allowances, ConfigError> {
    let mut sql_allow = slony_shared::archive::statement::Allowances::default();
    for kind in sql.allow.unwrap_or_default() {
        match kind.as_str() {
            "do" => sql_allow.do_blocks = true,
            "functions" => sql_allow.functions = true,
            "languages" => sql_allow.languages = true,
            other => {
                return Err(invalid(
                    p,
                    "sql.allow",
                    format!("{other:?} is not one of \"do\", \"functions\", \"languages\""),
                ))
            }
        }
    }
    Ok(sql_allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("r.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const MINIMAL: &str = r#"
cluster = "lab"
node = "site1"
[remote]
host = "127.0.0.1"
user = "slony"
key_file = "id_ed25519"
log_dir = "/srv/site_logs/"
[local]
log_dir = "/var/lib/slony"
[database]
user = "postgres"
dbname = "replica"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), MINIMAL);
        let c = ReceiverConfig::load(&p).unwrap();
        assert!(!c.legacy);
        assert_eq!(c.config_arg(), format!("--config {}", p.display()));
        assert_eq!(c.remote.port, 22);
        assert_eq!(c.remote.log_dir, "/srv/site_logs");
        assert_eq!(c.remote_site_dir(), "/srv/site_logs/site1");
        assert!(matches!(&c.remote.auth, SshAuth::KeyFile { path, .. } if path.is_absolute()));
        assert_eq!(
            c.die_file(),
            PathBuf::from("/var/lib/slony/get_slony_logs.site1.die")
        );
        assert_eq!(
            c.counter_file(),
            PathBuf::from("/var/lib/slony/site1/slony_counter.txt")
        );
        assert_eq!(c.housekeeping.batch_size, 5000);
        assert_eq!(c.alert.smtp_port, 25);
        assert!(c.database.conninfo.contains("dbname='replica'"));
        assert_eq!(c.status, StatusConfig::default());
        assert_eq!(c.status.max_lag_archives, 100);
        assert_eq!(c.status.max_lag, Duration::from_secs(3600));
    }

    #[test]
    fn the_exchange_directory_and_the_ddl_search_path() {
        let dir = tempfile::tempdir().unwrap();
        let c = ReceiverConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(c.remote_exchange_dir(), None);
        assert!(!c.remote.allow_shared_account);
        assert_eq!(c.pull.ddl_search_path, None);
        let text = MINIMAL.replace(
            "log_dir = \"/srv/site_logs/\"",
            "log_dir = \"/srv/site_logs/\"\ntrigger_dir = \"/srv/triggers\"\nallow_shared_account = true",
        ) + "[pull]\nddl_search_path = [\"app\", \"Odd \\\"One\\\"\"]\n";
        let c = ReceiverConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(
            c.remote_exchange_dir().as_deref(),
            Some("/srv/triggers/site1")
        );
        assert!(c.remote.allow_shared_account);
        assert_eq!(
            c.pull.ddl_search_path.as_deref(),
            Some("\"app\", \"Odd \"\"One\"\"\"")
        );
        for bad in ["[]", "[\"$user\"]", "[\"\"]"] {
            let text = format!("{MINIMAL}[pull]\nddl_search_path = {bad}\n");
            let err = ReceiverConfig::load(&write(dir.path(), &text)).unwrap_err();
            assert!(
                err.to_string().contains("pull.ddl_search_path"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn status_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}[status]\nmax_lag_archives = 5\nmax_lag_secs = 60\n");
        let c = ReceiverConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(c.status.max_lag_archives, 5);
        assert_eq!(c.status.max_lag, Duration::from_secs(60));
        for (extra, key) in [
            ("max_lag_archives = 0", "status.max_lag_archives"),
            ("max_lag_secs = 0", "status.max_lag_secs"),
            ("max_lag = 3", "max_lag"),
        ] {
            let text = format!("{MINIMAL}[status]\n{extra}\n");
            let err = ReceiverConfig::load(&write(dir.path(), &text)).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_subscribe_section() {
        let dir = tempfile::tempdir().unwrap();
        let c = ReceiverConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(c.subscribe, SubscribeConfig::default());
        assert_eq!(c.subscribe.attempts, 120);
        assert_eq!(c.subscribe.interval, Duration::from_secs(5));
        assert_eq!(
            (
                c.subscribe.archive,
                c.subscribe.retention,
                c.subscribe.tapegroup
            ),
            (0, 21, 1)
        );
        let text = format!(
            "{MINIMAL}[subscribe]\nattempts = 9\ninterval_secs = 2\narchive = 1\nretention = 7\ntapegroup = 3\n"
        );
        let c = ReceiverConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(
            c.subscribe,
            SubscribeConfig {
                attempts: 9,
                interval: Duration::from_secs(2),
                archive: 1,
                retention: 7,
                tapegroup: 3,
            }
        );
        for (extra, key) in [
            ("attempts = 0", "subscribe.attempts"),
            ("archive = 2", "subscribe.archive"),
            ("retention = -1", "retention"),
            ("interval = 3", "interval"),
        ] {
            let text = format!("{MINIMAL}[subscribe]\n{extra}\n");
            let err = ReceiverConfig::load(&write(dir.path(), &text)).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_example_file_loads_with_its_documented_values() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../../etc/receiver.toml.example");
        let c = ReceiverConfig::load(&write(dir.path(), text)).unwrap();
        assert_eq!(c.subscribe, SubscribeConfig::default());
        assert_eq!(c.status, StatusConfig::default());
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (MINIMAL.replace("\"lab\"", "\"la;b\""), "cluster"),
            (MINIMAL.replace("\"site1\"", "\"../x\""), "node"),
            (
                MINIMAL.replace("/srv/site_logs/", "srv/../x"),
                "remote.log_dir",
            ),
            (
                MINIMAL.replace("[local]", "[alert]\ntls = \"maybe\"\n[local]"),
                "alert.tls",
            ),
            (MINIMAL.replace("[local]", "[local]\nbogus = 1"), "bogus"),
        ];
        for (text, key) in cases {
            let err = ReceiverConfig::load(&write(dir.path(), &text)).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }
}
