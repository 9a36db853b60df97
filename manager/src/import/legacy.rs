/*!
The original tools' provider set-up as `import-legacy` reads it: `repserver.cfg` (read
by [`slony_shared::config::shell`], never run), the parser configuration it names
(`parser_config`: one line per site, `<subscribers_dir>/<node>  <tables_dir>/<node>.lst`,
as `parse_slon_logs.pl` splits it) and each site's `.lst`.

Everything here is input from the old host, taken as hostile: a path must name exactly
`<subscribers_dir>/<node>` or `<tables_dir>/<node>.lst` (no `..`, nothing outside, no
link), a node must be a [`NodeName`], a table a plain `schema.table` (quoted or not, as
the original parser matched it, lower-cased as it lower-cased it). Anything else is
refused with the file and the line, before anything is written.
*/

use slony_shared::config::shell::{self, Assignments};
use slony_shared::config::{invalid, ConfigError};
use slony_shared::ident::{ClusterName, NodeName, QualifiedTable};
use std::path::{Component, Path, PathBuf};

/// The keys of `repserver.cfg` the import reads, each with its line.
#[derive(Debug, Clone)]
pub struct LegacyConfig {
    /// The file read.
    pub path: PathBuf,
    /// `CLUSTERNAME`.
    pub cluster: ClusterName,
    /// `triggerdir`: the directory every site wrote its requests into.
    pub trigger_dir: PathBuf,
    /// `subscribers_dir`: each site's archives, `<subscribers_dir>/<node>/`.
    pub subscribers_dir: PathBuf,
    /// `parser_config`: the sites and their lists.
    pub parser_config: PathBuf,
    /// `tables_dir`: each site's `<node>.lst`.
    pub tables_dir: PathBuf,
    /// `kPSLlogsSourceDir`: where slon writes the archives.
    pub archive_dir: PathBuf,
    /// `kPSLprepCfg`, when set: the parser configuration `parse_slon_logs.pl` reads (the
    /// template sets it to `${parser_config}`).
    pub prep_cfg: Option<PathBuf>,
    /// `SLAVEHOST`.
    pub host: String,
    /// `SLAVEPORT`.
    pub port: u16,
    /// `SLAVEDBNAME`.
    pub dbname: String,
    /// `REPUSER`.
    pub user: String,
    /// Each key read and the line it is set on, for the written config's comments.
    pub lines: Vec<(&'static str, usize)>,
    /// The keys set in the file that the import knowingly leaves aside, by group.
    pub ignored: Vec<(&'static str, Vec<String>)>,
}

/// The keys read, in the order the plan names them.
const READ: &[&str] = &[
    "CLUSTERNAME",
    "triggerdir",
    "subscribers_dir",
    "parser_config",
    "tables_dir",
    "kPSLlogsSourceDir",
    "kPSLprepCfg",
    "SLAVEHOST",
    "SLAVEPORT",
    "SLAVEDBNAME",
    "REPUSER",
];

/// The template's other keys, grouped by why the manager has no use for them.
const IGNORED: &[(&str, &[&str])] = &[
    (
        "the master database and the hosts (the manager reads only the log-shipping node, [database])",
        &[
            "hmidb0IP",
            "hmidb1IP",
            "hmidb2IP",
            "MASTERDBNAME",
            "MASTERHOST",
            "MASTERHOSTNAME",
            "MASTERPORT",
            "SLAVEHOSTNAME",
        ],
    ),
    (
        "the original scripts' own paths and programs",
        &[
            "kServerCfg",
            "kPsqlCmd",
            "kSlonCmd",
            "kSlonikCmd",
            "kServerLockDir",
            "kModDir",
            "kModOnSlaveHost",
            "kModOnSlaveUser",
            "kScriptDir",
            "kRepDir",
        ],
    ),
    (
        "publish_series.sh (publishing series is not the manager's)",
        &[
            "REP_PS_TMPDIR",
            "REP_PS_LOGDIR",
            "REP_PS_MERGETO",
            "kPubLockFile",
            "kPubSubList",
            "kPubUnpubNotify",
        ],
    ),
    (
        "subscription_manager's work files, logs, locks, timeouts and database tables (the manager keeps its own state in subscribers_dir)",
        &[
            "sl_dump_timeout",
            "SMworkDir",
            "kSMlogDir",
            "cleanup_max_tries",
            "kLstTable",
            "kCfgTable",
            "kSMcgiLogDir",
            "kSMreqTable",
            "kSMreqTableTimeout",
            "kSubLockFile",
        ],
    ),
    (
        "parse_slon_logs's counters, logs and reprocessing (the cutter keeps each site's position in its cut_counter)",
        &[
            "kPSLarchiveDir",
            "kPSLprepLog",
            "kPSLlogReady",
            "kPSLparseCounter",
            "kPSLreproPath",
            "kPSLaccessRepro",
        ],
    ),
    (
        "manage_slony (slon itself is not the manager's)",
        &[
            "kMSMasterPIDFile",
            "kMSSlavePIDFile",
            "kMSLogDir",
            "kMSWorkDir",
            "kMSOnSync",
        ],
    ),
    (
        "merge_rep_sets",
        &[
            "MRSLogDir",
            "MRSTempDir",
            "MRSPIDFile",
            "MRSDieFile",
            "MRSPSQLBin",
            "MRSSlonikBin",
            "MRSMaxTries",
            "MRSSleepTimer",
        ],
    ),
    (
        "slony_log_manager",
        &[
            "SLMPSQLBin",
            "SLMHost",
            "SLMPort",
            "SLMUser",
            "SLMDBName",
            "SLMLogDir",
            "SLMTempDir",
            "SLMSlonyLog",
            "SLMPIDFile",
            "SLMLastLineFile",
        ],
    ),
    (
        "slon_email_alert (set the manager's [alert] by hand)",
        &["SEALogDir", "SEATempDir", "SEAEmailList", "SEASendmailBin"],
    ),
    (
        "Slony auditing",
        &[
            "SALogDir",
            "SASendmailBin",
            "SATempDir",
            "SAMetaDatadb",
            "SAMetadataport",
            "SAMetadatahost",
            "SAMetadatauser",
            "SAMetadataSchema",
            "SACountTimeout",
            "SAEmailList",
        ],
    ),
];

/// The group of keys that are not in the original template.
const UNKNOWN_GROUP: &str = "not in the original template";

impl LegacyConfig {
    /// Reads `repserver.cfg` at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read or holds a line bash would run ([`shell::read`]); a key
    /// the import needs is missing or empty; a directory is not an absolute path; the
    /// cluster name or the port is not valid.
    pub fn read(path: &Path) -> Result<LegacyConfig, ConfigError> {
        Self::from_assignments(&shell::read(path)?)
    }

    /// [`LegacyConfig::read`] of assignments already read.
    pub fn from_assignments(a: &Assignments) -> Result<LegacyConfig, ConfigError> {
        let p = a.path.as_path();
        let mut lines = Vec::new();
        let mut get = |key: &'static str| -> Result<String, ConfigError> {
            match a.get(key) {
                Some(v) if !v.value.is_empty() => {
                    lines.push((key, v.line));
                    Ok(v.value.clone())
                }
                Some(_) => Err(invalid(p, key, "is empty")),
                None => Err(invalid(p, key, "missing: the import needs it")),
            }
        };
        let cluster = get("CLUSTERNAME")?;
        let cluster =
            ClusterName::new(&cluster).map_err(|e| invalid(p, "CLUSTERNAME", e.to_string()))?;
        let trigger_dir = absolute_dir(p, "triggerdir", get("triggerdir")?)?;
        let subscribers_dir = absolute_dir(p, "subscribers_dir", get("subscribers_dir")?)?;
        let parser_config = absolute_dir(p, "parser_config", get("parser_config")?)?;
        let tables_dir = absolute_dir(p, "tables_dir", get("tables_dir")?)?;
        let archive_dir = absolute_dir(p, "kPSLlogsSourceDir", get("kPSLlogsSourceDir")?)?;
        let host = get("SLAVEHOST")?;
        let port = get("SLAVEPORT")?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(p, "SLAVEPORT", format!("{port:?} is not a port number")))?;
        let dbname = get("SLAVEDBNAME")?;
        let user = get("REPUSER")?;
        let prep_cfg = match a.get("kPSLprepCfg") {
            Some(v) if !v.value.is_empty() => {
                lines.push(("kPSLprepCfg", v.line));
                Some(PathBuf::from(&v.value))
            }
            _ => None,
        };
        Ok(LegacyConfig {
            path: a.path.clone(),
            cluster,
            trigger_dir,
            subscribers_dir,
            parser_config,
            tables_dir,
            archive_dir,
            prep_cfg,
            host,
            port,
            dbname,
            user,
            lines,
            ignored: ignored(a),
        })
    }

    /// The line `key` was read from (0 when it was not read).
    pub fn line_of(&self, key: &str) -> usize {
        self.lines
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |(_, l)| *l)
    }
}

/// The keys set in the file and not read, by group (template groups first, in the
/// template's order; then the keys the template does not have).
fn ignored(a: &Assignments) -> Vec<(&'static str, Vec<String>)> {
    let mut groups: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut unknown = Vec::new();
    for item in a.last_of_each() {
        let key = item.key.as_str();
        if READ.contains(&key) {
            continue;
        }
        let group = IGNORED
            .iter()
            .find(|(_, keys)| keys.contains(&key))
            .map(|(g, _)| *g);
        match group {
            Some(g) => match groups.iter_mut().find(|(name, _)| *name == g) {
                Some((_, keys)) => keys.push(key.to_string()),
                None => groups.push((g, vec![key.to_string()])),
            },
            None => unknown.push(key.to_string()),
        }
    }
    groups.sort_by_key(|(g, _)| IGNORED.iter().position(|(name, _)| name == g));
    if !unknown.is_empty() {
        groups.push((UNKNOWN_GROUP, unknown));
    }
    groups
}

/// A directory (or file) key's value: absolute, without `..`.
fn absolute_dir(p: &Path, key: &str, value: String) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(&value);
    if !path.is_absolute() {
        return Err(invalid(
            p,
            key,
            format!("{value:?} is not an absolute path (the original scripts ran from several directories): write the full path"),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(p, key, format!("{value:?} must not contain `..`")));
    }
    Ok(path)
}

/// One line of the parser configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParserLine {
    /// Its line number (1-based).
    pub line: usize,
    /// The site.
    pub node: NodeName,
    /// A line of a change in progress (`<node>.new  <node>.new.lst`).
    pub new: bool,
    /// `<subscribers_dir>/<node>[.new]`, as resolved.
    pub site_dir: PathBuf,
    /// `<tables_dir>/<node>[.new].lst`, as resolved.
    pub lst: PathBuf,
}

/// Reads the parser configuration's text (`path` for messages).
///
/// Blank lines and lines starting with `#` are skipped; every other line must be two
/// paths, `<subscribers_dir>/<node>` and `<tables_dir>/<node>.lst`, as the original
/// tools wrote them (repeated `/` and `.` components are what the kernel makes of
/// them); a change's `<node>.new` line is kept, marked [`ParserLine::new`].
///
/// # Errors
///
/// A line naming anything else, a node name that is not one, or a site named twice.
pub fn parse_parser_config(
    path: &Path,
    text: &str,
    subscribers_dir: &Path,
    tables_dir: &Path,
) -> Result<Vec<ParserLine>, ConfigError> {
    let bad = |n: usize, message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: format!("line {n}: {message}; nothing was imported"),
    };
    let mut out: Vec<ParserLine> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        // White space as the original's Perl `split` saw it: ASCII only.
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let [dir, lst] = fields.as_slice() else {
            return Err(bad(
                n,
                format!(
                    "{line:?} is not two paths (<subscribers_dir>/<node> <tables_dir>/<node>.lst)"
                ),
            ));
        };
        let dir_name = entry_of(subscribers_dir, "subscribers_dir", dir).map_err(|m| {
            bad(
                n,
                format!(
                    "the site directory {dir:?} {m}: it must be {}/<node>",
                    subscribers_dir.display()
                ),
            )
        })?;
        let lst_name = entry_of(tables_dir, "tables_dir", lst).map_err(|m| {
            bad(
                n,
                format!(
                    "the list {lst:?} {m}: it must be {}/<node>.lst",
                    tables_dir.display()
                ),
            )
        })?;
        if lst_name != format!("{dir_name}.lst") {
            return Err(bad(
                n,
                format!(
                    "the list of {dir:?} must be {}/{dir_name}.lst, not {lst:?}",
                    tables_dir.display()
                ),
            ));
        }
        let (base, new) = match dir_name.strip_suffix(".new") {
            Some(base) => (base, true),
            None => (dir_name.as_str(), false),
        };
        let node = NodeName::new(base).map_err(|e| bad(n, e.to_string()))?;
        if let Some(earlier) = out.iter().find(|l| l.node == node && l.new == new) {
            return Err(bad(
                n,
                format!("site {node} is already named on line {}", earlier.line),
            ));
        }
        out.push(ParserLine {
            line: n,
            node,
            new,
            site_dir: subscribers_dir.join(&dir_name),
            lst: tables_dir.join(&lst_name),
        });
    }
    Ok(out)
}

/// The name of the one entry of `base` (the directory of key `key`) that `path` names
/// (`base/<name>`), or why not.
fn entry_of(base: &Path, key: &str, path: &str) -> Result<String, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("is not an absolute path".into());
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err("holds `..`".into());
    }
    let base: Vec<Component> = base.components().collect();
    let comps: Vec<Component> = p.components().collect();
    match comps.split_last() {
        Some((Component::Normal(name), parent)) if parent == base.as_slice() => name
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| "is not UTF-8".into()),
        _ => Err(format!("is not directly inside {key}")),
    }
}

/// Largest `.lst` read: a list of tables, not a dump.
const MAX_LST_BYTES: u64 = 1 << 20;

/// Reads the `.lst` at `path`: a regular file of its own, not a link (nor a FIFO or a
/// device, which are refused without being read).
///
/// # Errors
///
/// The file is a link or not a regular file, too large, unreadable, or holds a line
/// [`parse_lst`] refuses.
pub fn read_lst(path: &Path) -> Result<Vec<QualifiedTable>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |message: String| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: format!("{message}; nothing was imported"),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Not a link; and a FIFO is opened without waiting for a writer, then refused.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                refuse("is a symbolic link: a site's list must be a file of its own".into())
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if meta.len() > MAX_LST_BYTES {
        return Err(refuse(format!(
            "holds {} bytes, more than a list of tables ({MAX_LST_BYTES})",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|_| refuse("is not UTF-8".into()))?;
    parse_lst(path, &text)
}

/// Parses a site's `.lst` (`path` for messages): one table per line, `schema.table` or
/// `"schema"."table"` (or one part quoted), lower-cased as `parse_slon_logs.pl`
/// lower-cased it; blank lines skipped; a table listed twice kept once.
///
/// The original matched each line with a pattern that stopped at the first character it
/// did not expect and took what came before: `s1.t1; drop table x` was `s1.t1;`. Here
/// the whole line must be the name, and each part letters, digits and `_` (what the
/// original's series names are), so nothing of a line but a table name goes on.
///
/// # Errors
///
/// A line that is not such a name, with the line and what to write.
pub fn parse_lst(path: &Path, text: &str) -> Result<Vec<QualifiedTable>, ConfigError> {
    let mut out: Vec<QualifiedTable> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let lowered = line.to_ascii_lowercase();
        let table = QualifiedTable::parse(&lowered)
            .ok()
            .filter(|t| is_plain(&t.schema) && is_plain(&t.table))
            .ok_or_else(|| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: format!(
                    "line {}: {line:?} is not a table name (schema.table or \"schema\".\"table\", \
                     each part letters, digits and `_`); nothing was imported",
                    i + 1
                ),
            })?;
        if !out.contains(&table) {
            out.push(table);
        }
    }
    Ok(out)
}

/// Whether `s` is a plain SQL name: 1 to 63 letters, digits or `_`, not starting with a
/// digit.
fn is_plain(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> QualifiedTable {
        QualifiedTable::parse(s).unwrap()
    }

    fn lst(text: &str) -> Result<Vec<QualifiedTable>, String> {
        parse_lst(Path::new("/etc/x.lst"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn lst_lines_as_the_original_parser_read_them() {
        assert_eq!(
            lst("s1.t1\n\"s1\".\"t2\"\n\n  S1.T3  \ns1.\"t4\"\ns1.t1\n").unwrap(),
            vec![t("s1.t1"), t("s1.t2"), t("s1.t3"), t("s1.t4")]
        );
        assert_eq!(lst("\"HMI\".\"M_45s\"\n").unwrap(), vec![t("hmi.m_45s")]);
        assert_eq!(lst("").unwrap(), vec![]);
    }

    #[test]
    fn lst_lines_with_anything_but_a_name_are_refused_with_their_line() {
        for (text, line) in [
            ("s1.t1; drop table x\n", 1),
            ("s1.t1\ns1.t1'--\n", 2),
            ("s1.t1\n\nlev0\n", 3),
            ("\"s1\".\"t1; drop table x\"\n", 1),
            ("\"s1\".\"t 1\"\n", 1),
            ("s1.t1 s1.t2\n", 1),
            ("a.b.c\n", 1),
            ("s1.\"t\"\"x\"\n", 1),
            ("#s1.t1\n", 1),
            ("1s.t\n", 1),
            // To the original, a non-ASCII space was part of the name.
            ("s1.t1\u{a0}\n", 1),
            ("\u{2003}s1.t1\n", 1),
        ] {
            let e = lst(text).expect_err(text);
            assert!(e.contains(&format!("line {line}:")), "{text:?}: {e}");
            assert!(e.contains("/etc/x.lst"), "{e}");
            assert!(e.contains("nothing was imported"), "{e}");
        }
    }

    #[test]
    fn a_list_is_a_file_of_its_own() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("alpha.lst");
        std::fs::write(&real, "s1.t1\n").unwrap();
        assert_eq!(read_lst(&real).unwrap(), vec![t("s1.t1")]);
        let link = root.path().join("beta.lst");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = read_lst(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = read_lst(root.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A FIFO is refused, not waited on for a writer.
        let fifo = root.path().join("gamma.lst");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_lst(&fifo).map_err(|e| e.to_string())));
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("read_lst waits on a FIFO")
            .unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::write(&real, vec![b'a'; (MAX_LST_BYTES + 1) as usize]).unwrap();
        let e = read_lst(&real).unwrap_err().to_string();
        assert!(e.contains("more than a list"), "{e}");
    }

    fn parser(text: &str) -> Result<Vec<ParserLine>, String> {
        parse_parser_config(
            Path::new("/etc/slon_parser.cfg"),
            text,
            Path::new("/srv/site_logs"),
            Path::new("/srv/etc"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn parser_lines_name_a_site_directory_and_its_list() {
        let l = parser(
            "/srv/site_logs/alpha\t/srv/etc/alpha.lst\n\n# c\n/srv/site_logs//beta   /srv/etc/./beta.lst\n/srv/site_logs/beta.new /srv/etc/beta.new.lst\n",
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].node.as_str(), "alpha");
        assert_eq!(l[0].line, 1);
        assert!(!l[0].new);
        assert_eq!(l[0].site_dir, Path::new("/srv/site_logs/alpha"));
        assert_eq!(l[0].lst, Path::new("/srv/etc/alpha.lst"));
        assert_eq!(l[1].node.as_str(), "beta");
        assert_eq!(l[1].site_dir, Path::new("/srv/site_logs/beta"));
        assert_eq!(l[1].line, 4);
        assert_eq!(l[2].node.as_str(), "beta");
        assert!(l[2].new);
        assert_eq!(l[2].lst, Path::new("/srv/etc/beta.new.lst"));
    }

    #[test]
    fn parser_lines_pointing_anywhere_else_are_refused() {
        for (text, needle) in [
            (
                "/etc /srv/etc/etc.lst\n",
                "not directly inside subscribers_dir",
            ),
            ("/srv/site_logs/../x /srv/etc/x.lst\n", "`..`"),
            (
                "/srv/site_logs/a/b /srv/etc/b.lst\n",
                "not directly inside subscribers_dir",
            ),
            ("site_logs/a /srv/etc/a.lst\n", "not an absolute path"),
            (
                "/srv/site_logs/a /etc/passwd\n",
                "not directly inside tables_dir",
            ),
            ("/srv/site_logs/a /srv/etc/../a.lst\n", "`..`"),
            (
                "/srv/site_logs/a /srv/etc/b.lst\n",
                "must be /srv/etc/a.lst",
            ),
            ("/srv/site_logs/a\n", "not two paths"),
            // The original split on ASCII white space only: to it this was one field.
            ("/srv/site_logs/a\u{a0}/srv/etc/a.lst\n", "not two paths"),
            ("/srv/site_logs/a\u{2003}/srv/etc/a.lst\n", "not two paths"),
            ("/srv/site_logs/a /srv/etc/a.lst extra\n", "not two paths"),
            ("/srv/site_logs/a;b /srv/etc/a;b.lst\n", "node name"),
            ("/srv/site_logs/.new /srv/etc/.new.lst\n", "node name"),
            (
                "/srv/site_logs/a /srv/etc/a.lst\n/srv/site_logs/a /srv/etc/a.lst\n",
                "already named on line 1",
            ),
            (
                "/srv/site_logs /srv/etc/site_logs.lst\n",
                "not directly inside subscribers_dir",
            ),
        ] {
            let e = parser(text).expect_err(text);
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("/etc/slon_parser.cfg"), "{e}");
            assert!(e.contains("line "), "{e}");
        }
    }

    fn config(text: &str) -> Result<LegacyConfig, String> {
        let a = shell::parse(Path::new("/etc/repserver.cfg"), text).map_err(|e| e.to_string())?;
        LegacyConfig::from_assignments(&a).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "root=/srv\nCLUSTERNAME=jsoc\nSLAVEDBNAME=provider\nSLAVEHOST=db.example\nSLAVEPORT=5433\nREPUSER=slony\ntriggerdir=${root}/triggers\nsubscribers_dir=${root}/site_logs\nparser_config=${root}/etc/slon_parser.cfg\ntables_dir=${root}/etc\nkPSLlogsSourceDir=${root}/slon_logs\nkPSLprepCfg=${parser_config}\nMASTERPORT=5432\nkMSOnSync='/usr/bin/true'\nmy_own=1\n";

    #[test]
    fn the_keys_read_and_the_keys_left_aside() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(c.cluster.as_str(), "jsoc");
        assert_eq!(c.trigger_dir, Path::new("/srv/triggers"));
        assert_eq!(c.subscribers_dir, Path::new("/srv/site_logs"));
        assert_eq!(c.parser_config, Path::new("/srv/etc/slon_parser.cfg"));
        assert_eq!(c.prep_cfg.as_deref(), Some(c.parser_config.as_path()));
        assert_eq!(c.tables_dir, Path::new("/srv/etc"));
        assert_eq!(c.archive_dir, Path::new("/srv/slon_logs"));
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str(), c.user.as_str()),
            ("db.example", 5433, "provider", "slony")
        );
        assert_eq!(c.line_of("SLAVEPORT"), 5);
        assert_eq!(c.line_of("triggerdir"), 7);
        let groups: Vec<(&str, Vec<&str>)> = c
            .ignored
            .iter()
            .map(|(g, k)| (*g, k.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert!(groups[0].0.starts_with("the master database"));
        assert_eq!(groups[0].1, vec!["MASTERPORT"]);
        assert!(groups[1].0.starts_with("manage_slony"));
        assert_eq!(groups[2], (UNKNOWN_GROUP, vec!["root", "my_own"]));
    }

    #[test]
    fn missing_relative_or_bad_keys_are_refused_by_name() {
        for (change, needle) in [
            (("SLAVEPORT=5433", "SLAVEPORT=x"), "SLAVEPORT"),
            (("SLAVEPORT=5433\n", ""), "`SLAVEPORT`: missing"),
            (("CLUSTERNAME=jsoc", "CLUSTERNAME=a;b"), "CLUSTERNAME"),
            (
                ("triggerdir=${root}/triggers", "triggerdir=triggers"),
                "absolute",
            ),
            (
                ("tables_dir=${root}/etc", "tables_dir=${root}/../etc"),
                "`..`",
            ),
            (("REPUSER=slony", "REPUSER="), "`REPUSER`: is empty"),
        ] {
            let text = MINIMAL.replace(change.0, change.1);
            let e = config(&text).expect_err(needle);
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = config("CLUSTERNAME=$(id)\n").unwrap_err();
        assert!(e.contains("command substitution"), "{e}");
    }
}
