/*!
The manager's configuration: a TOML file (see `etc/manager.toml.example`).

[`RawManager`] mirrors the file and is only checked for syntax (unknown keys are
refused); [`ManagerConfig::load`] turns it into the validated form the commands use:
names validated, paths made absolute against the config file's directory, the database
password read from the environment. Every error names the file, the key and the reason.
*/

use crate::registry::{Account, Registry, SiteAccount, TablePattern};
use serde::Deserialize;
use slony_shared::config::{
    base_dir, cluster_name, invalid, resolve, ConfigError, DatabaseConfig, RawDatabase,
};
use slony_shared::ident::{ClusterName, NodeName};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file exactly as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawManager {
    cluster: Option<String>,
    trigger_dir: Option<PathBuf>,
    subscribers_dir: Option<PathBuf>,
    site_log_dir: Option<PathBuf>,
    allow_drop: Option<bool>,
    rescan_interval_secs: Option<u64>,
    archive_dir: Option<PathBuf>,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    housekeeping: RawHousekeeping,
    allow_shared_account: Option<bool>,
    ddl_search_path: Option<Vec<String>>,
    #[serde(default)]
    sites: std::collections::BTreeMap<String, RawSite>,
    #[serde(default)]
    alert: slony_shared::config::RawAlert,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    account: Option<String>,
    tables: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHousekeeping {
    batch_size: Option<u64>,
    retention_days: Option<u64>,
}

/// Everything `slony-manager` needs, validated.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The file this was read from (for messages).
    pub source: PathBuf,
    /// Slony cluster name; its objects live in schema `_<cluster>` on the provider.
    pub cluster: ClusterName,
    /// Directory shared with the subscribers (over SSH) for the protocol files.
    pub trigger_dir: PathBuf,
    /// Per-site state: `<node>/` (current table list), `<node>.new/` during a change,
    /// `<node>.request.json` while a request is in progress.
    pub subscribers_dir: PathBuf,
    /// Per-site archive directories `<site_log_dir>/<node>/`, read by the subscribers.
    pub site_log_dir: PathBuf,
    /// Whether unsubscribing a table drops it on the subscriber.
    pub allow_drop: bool,
    /// Safety-net rescan of the trigger directory, in case a file event is missed.
    pub rescan_interval: Duration,
    /// The provider database (the Slony node whose `slon -a` writes the archives).
    pub database: DatabaseConfig,
    /// Where `slon -a` writes the provider's archives; the cutter splits them into the
    /// per-site directories. `None`: the cutter is off (something else fills them).
    pub archive_dir: Option<PathBuf>,
    /// `housekeeping`: batches and retention of the per-site directories.
    pub housekeeping: HousekeepingConfig,
    /// `[sites.<node>]`: the sites served, and the account each logs in as.
    pub registry: Registry,
    /// `[alert]`: who is mailed when a site does what it may not.
    pub alert: slony_shared::config::AlertConfig,
    /// How the cutter reads the provider's DDL (`ddl_search_path`).
    pub cut: slony_shared::archive::cut::CutOptions,
}

/// `[housekeeping]`: how `slony-manager housekeeping` packs and prunes site directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingConfig {
    /// Archives per `slony_logs_<from>-<to>.tar.gz` batch (ranges aligned to multiples).
    pub batch_size: u64,
    /// Batches and archives older than this many days are deleted (the sites have
    /// fetched them long before); `None` keeps everything.
    pub retention_days: Option<u64>,
}

/// Largest accepted batch size.
const MAX_BATCH_SIZE: u64 = 1_000_000;

/// Largest accepted rescan interval: an hour (a missed event must not wait longer).
const MAX_RESCAN_SECS: u64 = 3600;

fn dir(path: &Path, base: &Path, key: &str, v: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let v = v.ok_or_else(|| invalid(path, key, "missing: set the directory"))?;
    if v.as_os_str().is_empty() {
        return Err(invalid(path, key, "must not be empty"));
    }
    if v.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(invalid(
            path,
            key,
            format!("{} must not contain `..`", v.display()),
        ));
    }
    Ok(resolve(base, v))
}

/// `[sites.<node>]` entries, resolved against the user database.
fn registry(
    p: &Path,
    raw: std::collections::BTreeMap<String, RawSite>,
    shared_allowed: bool,
) -> Result<Registry, ConfigError> {
    let own = Account::own();
    let mut reg = Registry {
        sites: Default::default(),
        shared_allowed,
    };
    for (name, site) in raw {
        let key = format!("sites.{name}");
        let node = NodeName::new(&name).map_err(|e| invalid(p, &key, e.to_string()))?;
        if name == "rejected" {
            return Err(invalid(
                p,
                &key,
                "`rejected` is the trigger directory's place for refused files: choose another node name",
            ));
        }
        let account = site.account.ok_or_else(|| {
            invalid(
                p,
                &format!("{key}.account"),
                "missing: the Unix account this site logs in as over SSH",
            )
        })?;
        let account =
            Account::by_name(&account).map_err(|e| invalid(p, &format!("{key}.account"), e))?;
        if !shared_allowed {
            if account.uid == own.uid {
                return Err(invalid(
                    p,
                    &format!("{key}.account"),
                    format!(
                        "{} is the manager's own account: the site could write as the manager. Give the site an account of its own, or set allow_shared_account = true to accept that",
                        account.name
                    ),
                ));
            }
            if let Some(other) = reg.sites.values().find(|s| s.account.uid == account.uid) {
                return Err(invalid(
                    p,
                    &format!("{key}.account"),
                    format!(
                        "{} is also site {}'s account: the manager could not tell the two sites' files apart, and each could act for the other. Give each site an account of its own, or set allow_shared_account = true to accept that",
                        account.name, other.node
                    ),
                ));
            }
        }
        let tables = match site.tables {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|t| {
                        TablePattern::parse(t).map_err(|e| {
                            invalid(p, &format!("{key}.tables"), format!("{t:?}: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        reg.sites.insert(
            node.clone(),
            SiteAccount {
                node,
                account,
                tables,
            },
        );
    }
    Ok(reg)
}

/// The manager's directories, each resolved, and kept apart from one another.
struct Dirs {
    /// `trigger_dir`.
    trigger_dir: PathBuf,
    /// `subscribers_dir`.
    subscribers_dir: PathBuf,
    /// `site_log_dir`.
    site_log_dir: PathBuf,
    /// `archive_dir`, if set.
    archive_dir: Option<PathBuf>,
}

impl Dirs {
    /// Resolves the directories against `base` and checks that none holds another.
    fn from_raw(p: &Path, base: &Path, raw: &RawManager) -> Result<Dirs, ConfigError> {
        let trigger_dir = dir(p, base, "trigger_dir", raw.trigger_dir.clone())?;
        let subscribers_dir = dir(p, base, "subscribers_dir", raw.subscribers_dir.clone())?;
        let site_log_dir = dir(p, base, "site_log_dir", raw.site_log_dir.clone())?;
        let archive_dir = match raw.archive_dir.clone() {
            Some(d) => Some(dir(p, base, "archive_dir", Some(d))?),
            None => None,
        };
        if let Some(a) = &archive_dir {
            for (other, key) in [
                (&trigger_dir, "trigger_dir"),
                (&subscribers_dir, "subscribers_dir"),
                (&site_log_dir, "site_log_dir"),
            ] {
                if a == other || a.starts_with(other) || other.starts_with(a) {
                    return Err(invalid(
                        p,
                        "archive_dir",
                        format!(
                            "must be a separate directory, not inside or around {key} ({})",
                            other.display()
                        ),
                    ));
                }
            }
        }
        // Each directory's entries mean something different: sharing one would make the
        // manager read its own state files as triggers (or a site's archives as state).
        for (a, ka, b, kb) in [
            (
                &trigger_dir,
                "trigger_dir",
                &subscribers_dir,
                "subscribers_dir",
            ),
            (&trigger_dir, "trigger_dir", &site_log_dir, "site_log_dir"),
            (
                &subscribers_dir,
                "subscribers_dir",
                &site_log_dir,
                "site_log_dir",
            ),
        ] {
            if a == b {
                return Err(invalid(
                    p,
                    kb,
                    format!("must be a different directory from {ka} ({})", a.display()),
                ));
            }
        }
        Ok(Dirs {
            trigger_dir,
            subscribers_dir,
            site_log_dir,
            archive_dir,
        })
    }
}

/// `rescan_interval_secs`, 10 when unset.
fn rescan_interval(p: &Path, secs: Option<u64>) -> Result<Duration, ConfigError> {
    let secs = secs.unwrap_or(10);
    if secs == 0 || secs > MAX_RESCAN_SECS {
        return Err(invalid(
            p,
            "rescan_interval_secs",
            format!("must be between 1 and {MAX_RESCAN_SECS} (seconds)"),
        ));
    }
    Ok(Duration::from_secs(secs))
}

/// `[housekeeping]`, with its defaults.
fn housekeeping(p: &Path, h: RawHousekeeping) -> Result<HousekeepingConfig, ConfigError> {
    let batch_size = h.batch_size.unwrap_or(5000);
    if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
        return Err(invalid(
            p,
            "housekeeping.batch_size",
            format!("must be between 1 and {MAX_BATCH_SIZE}"),
        ));
    }
    let retention_days = match h.retention_days.unwrap_or(7) {
        0 => None,
        d if d > 36_500 => {
            return Err(invalid(
                p,
                "housekeeping.retention_days",
                "must be at most 36500 (0 keeps everything)",
            ))
        }
        d => Some(d),
    };
    Ok(HousekeepingConfig {
        batch_size,
        retention_days,
    })
}

/// `ddl_search_path`: schema names, `["public"]` when unset.
fn ddl_search_path(p: &Path, raw: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let ddl_search_path = raw.unwrap_or_else(|| vec!["public".to_string()]);
    if ddl_search_path.is_empty() {
        return Err(invalid(
            p,
            "ddl_search_path",
            "must name at least one schema",
        ));
    }
    for schema in &ddl_search_path {
        if !slony_shared::ident::is_schema_name(schema) {
            return Err(invalid(
                p,
                "ddl_search_path",
                format!("{schema:?} is not a schema name: write the schemas as PostgreSQL spells them (\"$user\" stands for the role slon connects as: write that role's schema instead)"),
            ));
        }
    }
    Ok(ddl_search_path)
}

impl ManagerConfig {
    /// Reads and validates a TOML config file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Syntax`] for bad
    /// TOML or unknown keys, [`ConfigError::Invalid`] naming the key otherwise.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates the text of a config file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawManager = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let p = path;
        let base = base_dir(path);

        let cluster = cluster_name(p, raw.cluster.as_deref())?;

        let dirs = Dirs::from_raw(p, &base, &raw)?;
        let rescan_interval = rescan_interval(p, raw.rescan_interval_secs)?;
        let database = DatabaseConfig::from_raw(p, raw.database, "provider")?;
        let housekeeping = housekeeping(p, raw.housekeeping)?;
        let registry = registry(p, raw.sites, raw.allow_shared_account.unwrap_or(false))?;
        let alert = slony_shared::config::alert_config(p, raw.alert, "slony-manager")?;
        let ddl_search_path = ddl_search_path(p, raw.ddl_search_path)?;

        Ok(ManagerConfig {
            source: path.to_path_buf(),
            cluster,
            trigger_dir: dirs.trigger_dir,
            subscribers_dir: dirs.subscribers_dir,
            site_log_dir: dirs.site_log_dir,
            allow_drop: raw.allow_drop.unwrap_or(false),
            rescan_interval,
            database,
            archive_dir: dirs.archive_dir,
            housekeeping,
            registry,
            alert,
            cut: slony_shared::archive::cut::CutOptions { ddl_search_path },
        })
    }

    /// `<subscribers_dir>/<node>/`: the site's current table list (`tables`, `since`).
    pub fn site_dir(&self, node: &NodeName) -> PathBuf {
        self.subscribers_dir.join(node.as_str())
    }

    /// `<subscribers_dir>/<node>.new/`: the table list being introduced.
    pub fn new_site_dir(&self, node: &NodeName) -> PathBuf {
        self.subscribers_dir.join(format!("{node}.new"))
    }

    /// `<subscribers_dir>/<node>.old/`: the previous list, only during a promotion.
    pub fn old_site_dir(&self, node: &NodeName) -> PathBuf {
        self.subscribers_dir.join(format!("{node}.old"))
    }

    /// `<subscribers_dir>/<node>.request.json`: the state of a request in progress.
    pub fn state_file(&self, node: &NodeName) -> PathBuf {
        self.subscribers_dir.join(format!("{node}.request.json"))
    }

    /// `<site_log_dir>/<node>/`: the site's archive directory.
    pub fn site_log_dir(&self, node: &NodeName) -> PathBuf {
        self.site_log_dir.join(node.as_str())
    }

    /// `<trigger_dir>/<node>/`: the site's exchange directory (its requests, reports and
    /// acknowledgement; the manager's answers), shared with the site's group only.
    pub fn exchange_dir(&self, node: &NodeName) -> PathBuf {
        self.trigger_dir.join(node.as_str())
    }

    /// A protocol file in the site's exchange directory.
    pub fn exchange_file(&self, node: &NodeName, name: &str) -> PathBuf {
        self.exchange_dir(node).join(name)
    }

    /// `<subscribers_dir>/<node>.cancel`: the operator's `cancel` of a published request.
    pub fn cancel_file(&self, node: &NodeName) -> PathBuf {
        self.subscribers_dir.join(format!("{node}.cancel"))
    }

    /// Where trigger files with an unusable name are moved.
    pub fn rejected_dir(&self) -> PathBuf {
        self.trigger_dir.join("rejected")
    }
}

/// Config lines registering `nodes`, all under the account running the tests (so with
/// `allow_shared_account`): for unit tests of the other modules.
#[cfg(test)]
pub fn test_sites(nodes: &[&str]) -> String {
    let own = Account::own().name;
    let mut s = String::from("allow_shared_account = true\n");
    for n in nodes {
        s.push_str(&format!("[sites.{n}]\naccount = \"{own}\"\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
cluster = "lab"
trigger_dir = "/srv/slony/triggers"
subscribers_dir = "subscribers"
site_log_dir = "/srv/slony/site_logs"
[database]
user = "slony"
dbname = "jsoc"
"#;

    fn parse(text: &str) -> Result<ManagerConfig, ConfigError> {
        ManagerConfig::parse(Path::new("/etc/slony/manager.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cluster.as_str(), "lab");
        assert!(!c.allow_drop);
        assert_eq!(c.rescan_interval, Duration::from_secs(10));
        assert_eq!(c.subscribers_dir, PathBuf::from("/etc/slony/subscribers"));
        assert_eq!(c.trigger_dir, PathBuf::from("/srv/slony/triggers"));
        assert!(c.database.conninfo.contains("dbname='jsoc'"));
        assert!(c.database.conninfo.contains("host='localhost'"));
        assert!(c.database.conninfo.contains("port=5432"));
        assert_eq!(c.archive_dir, None);
        assert_eq!(
            c.housekeeping,
            HousekeepingConfig {
                batch_size: 5000,
                retention_days: Some(7)
            }
        );
        let n = NodeName::new("site1").unwrap();
        assert_eq!(
            c.state_file(&n),
            PathBuf::from("/etc/slony/subscribers/site1.request.json")
        );
        assert_eq!(
            c.new_site_dir(&n),
            PathBuf::from("/etc/slony/subscribers/site1.new")
        );
        assert_eq!(
            c.site_log_dir(&n),
            PathBuf::from("/srv/slony/site_logs/site1")
        );
    }

    #[test]
    fn options_are_read() {
        let text = MINIMAL.replace(
            "[database]",
            "allow_drop = true\nrescan_interval_secs = 3\narchive_dir = \"archive\"\n[housekeeping]\nbatch_size = 100\nretention_days = 0\n[database]\nport = 5433\npassword_env = \"SLONY_MANAGER_TEST_PW\"",
        );
        std::env::set_var("SLONY_MANAGER_TEST_PW", "secret");
        let c = parse(&text).unwrap();
        assert!(c.allow_drop);
        assert_eq!(c.rescan_interval, Duration::from_secs(3));
        assert!(c.database.conninfo.contains("port=5433"));
        assert_eq!(c.database.password.as_deref(), Some("secret"));
        assert_eq!(c.archive_dir, Some(PathBuf::from("/etc/slony/archive")));
        assert_eq!(c.housekeeping.batch_size, 100);
        assert_eq!(c.housekeeping.retention_days, None);
    }

    #[test]
    fn url_instead_of_parts() {
        let text = r#"
cluster = "lab"
trigger_dir = "/t"
subscribers_dir = "/s"
site_log_dir = "/l"
[database]
url = "postgresql://slony@127.0.0.1:5432/jsoc"
"#;
        let c = parse(text).unwrap();
        assert_eq!(
            c.database.conninfo,
            "postgresql://slony@127.0.0.1:5432/jsoc"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (MINIMAL.replace("\"lab\"", "\"la;b\""), "cluster"),
            (MINIMAL.replace("cluster = \"lab\"", ""), "cluster"),
            (
                MINIMAL.replace("trigger_dir = \"/srv/slony/triggers\"", ""),
                "trigger_dir",
            ),
            (
                MINIMAL.replace("\"subscribers\"", "\"a/../b\""),
                "subscribers_dir",
            ),
            (
                MINIMAL.replace("/srv/slony/site_logs", "/srv/slony/triggers"),
                "site_log_dir",
            ),
            (
                MINIMAL.replace("[database]", "rescan_interval_secs = 0\n[database]"),
                "rescan_interval_secs",
            ),
            (
                MINIMAL.replace("[database]", "allow_drop = \"yes\"\n[database]"),
                "allow_drop",
            ),
            (
                MINIMAL.replace("[database]", "bogus = 1\n[database]"),
                "bogus",
            ),
            (MINIMAL.replace("user = \"slony\"", "usr = \"x\""), "usr"),
            (MINIMAL.replace("user = \"slony\"", ""), "database.user"),
            (
                MINIMAL.replace(
                    "[database]",
                    "archive_dir = \"/srv/slony/site_logs/x\"\n[database]",
                ),
                "archive_dir",
            ),
            (
                MINIMAL.replace("[database]", "archive_dir = \"/srv/slony\"\n[database]"),
                "archive_dir",
            ),
            (
                MINIMAL.replace("[database]", "[housekeeping]\nbatch_size = 0\n[database]"),
                "housekeeping.batch_size",
            ),
            (
                MINIMAL.replace(
                    "[database]",
                    "[housekeeping]\nretention_days = 99999\n[database]",
                ),
                "housekeeping.retention_days",
            ),
            (
                MINIMAL.replace("[database]", "[housekeeping]\nkeep = 1\n[database]"),
                "keep",
            ),
            (
                MINIMAL.replace(
                    "dbname = \"jsoc\"",
                    "dbname = \"jsoc\"\nurl = \"postgresql://x/y\"",
                ),
                "database.url",
            ),
            (
                MINIMAL.replace(
                    "dbname = \"jsoc\"",
                    "dbname = \"jsoc\"\npassword_env = \"SLONY_MANAGER_SURELY_UNSET\"",
                ),
                "database.password_env",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    /// An account of this host that is not the one running the tests.
    fn other_account() -> &'static str {
        if Account::own().name == "nobody" {
            "root"
        } else {
            "nobody"
        }
    }

    #[test]
    fn sites_are_registered_with_accounts_of_their_own() {
        let own = Account::own().name;
        let other = other_account();
        let site = |n: &str, a: &str| format!("[sites.{n}]\naccount = \"{a}\"\n");
        let c = parse(&format!(
            "{MINIMAL}{}tables = [\"s1.*\", \"s2.t1\"]\n",
            site("site1", other)
        ))
        .unwrap();
        let s1 = c.registry.get(&NodeName::new("site1").unwrap()).unwrap();
        assert_eq!(s1.account.name, other);
        assert!(s1.may_have(&slony_shared::ident::QualifiedTable::parse("s1.x").unwrap()));
        assert!(!s1.may_have(&slony_shared::ident::QualifiedTable::parse("s2.x").unwrap()));
        assert!(c.registry.shared_accounts().is_empty());
        for (text, says) in [
            (site("site1", "no-such-account-xyz"), "no Unix account"),
            (site("site1", &own), "the manager's own account"),
            (
                format!("{}{}", site("site1", other), site("site2", other)),
                "also site site1's account",
            ),
            (site("rejected", other), "choose another node name"),
            (site("bad.name", other), "sites"),
            ("[sites.site1]\n".to_string(), "account"),
            (
                format!("{}tables = [\"s1\"]\n", site("site1", other)),
                "sites.site1.tables",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}{text}")).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        // Shared on purpose: accepted, and reported.
        let c = parse(&format!(
            "allow_shared_account = true\n{MINIMAL}{}{}",
            site("site1", &own),
            site("site2", &own)
        ))
        .unwrap();
        assert_eq!(c.registry.shared_accounts().len(), 1);
    }

    #[test]
    fn the_ddl_search_path_is_a_list_of_schemas() {
        assert_eq!(parse(MINIMAL).unwrap().cut.ddl_search_path, ["public"]);
        let c = parse(&format!(
            "ddl_search_path = [\"app\", \"Odd Schema\", \"public\"]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.cut.ddl_search_path, ["app", "Odd Schema", "public"]);
        for bad in ["[]", "[\"$user\", \"public\"]", "[\"\"]"] {
            let err = parse(&format!("ddl_search_path = {bad}\n{MINIMAL}")).unwrap_err();
            assert!(err.to_string().contains("ddl_search_path"), "{bad}: {err}");
        }
    }

    #[test]
    fn example_config_is_valid() {
        // The example's site account is made up; any account of this host stands in.
        let text = include_str!("../../etc/manager.toml.example").replace(
            "account = \"site1\"",
            &format!("account = \"{}\"", other_account()),
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.registry.sites.len(), 1);
        assert!(!c.allow_drop);
        assert_eq!(c.archive_dir, Some(PathBuf::from("/srv/slony/archive")));
        assert_eq!(c.housekeeping.batch_size, 5000);
        assert_eq!(c.housekeeping.retention_days, Some(7));
    }
}
