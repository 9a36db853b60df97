/*!
What the import writes, once the plan holds no unacknowledged inconsistency: each site's
state in the state directory (`<node>/tables`, `sequences`, `cut_counter`), then the
manager's configuration, every value commented with where it came from.

Each site directory is built under a temporary name and renamed into place; the
configuration is written beside its final name and linked there, so an existing file is
never replaced. If the configuration cannot be written, the site directories made are
removed again.
*/

use super::plan::Facts;
use crate::fsutil;
use crate::site;
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `s` as a TOML string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `p` as it may be shown inside a TOML comment: control characters (a newline would end
/// the comment and start a line of TOML) shown as `?`.
fn comment(p: &Path) -> String {
    p.display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A path as a TOML string.
fn quote_path(p: &Path) -> anyhow::Result<String> {
    p.to_str()
        .map(quote)
        .with_context(|| format!("{} is not UTF-8: the config cannot name it", p.display()))
}

/// The manager's configuration for `f`.
///
/// # Errors
///
/// A path that is not UTF-8.
pub fn render_config(f: &Facts, shared: bool) -> anyhow::Result<String> {
    let l = &f.legacy;
    let from = |key: &str| format!("{key}, line {}", l.line_of(key));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# slony-manager configuration, imported by `slony-manager import-legacy` from\n\
         # the original tools' {} (\"From KEY, line N\" below: the\n\
         # line of that file). Every key is described in etc/manager.toml.example.\n",
        comment(&l.path)
    );
    let _ = writeln!(
        s,
        "# From {}.\ncluster = {}\n",
        from("CLUSTERNAME"),
        quote(l.cluster.as_str())
    );
    let _ = writeln!(
        s,
        "# From {}. `run` makes one exchange directory per site in it,\n\
         # <trigger_dir>/<node>/; the original shared layout's files directly in it are\n\
         # moved into <trigger_dir>/rejected/.\ntrigger_dir = {}\n",
        from("triggerdir"),
        quote_path(&l.trigger_dir)?
    );
    let _ = writeln!(
        s,
        "# The manager's own state of each site (--state-dir): <node>/tables (was\n\
         # {}/<node>.lst), sequences, cut_counter.\nsubscribers_dir = {}\n",
        comment(&l.tables_dir),
        quote_path(&f.state_dir)?
    );
    let _ = writeln!(
        s,
        "# From {}: each site's archives, <site_log_dir>/<node>/,\n\
         # where the sites' rmt_slony_dir point.\nsite_log_dir = {}\n",
        from("subscribers_dir"),
        quote_path(&l.subscribers_dir)?
    );
    let _ = writeln!(
        s,
        "# From {}: where slon -a writes the archives; `run` cuts\n\
         # them for each site from its cut_counter on.\narchive_dir = {}\n",
        from("kPSLlogsSourceDir"),
        quote_path(&l.archive_dir)?
    );
    if shared {
        let _ = writeln!(
            s,
            "# WARNING: several sites share one Unix account (or use the manager's own), as\n\
             # --account said. The manager then cannot tell who wrote a file, so each such\n\
             # site can act for the others and forge their answers. Give each site an account\n\
             # of its own and remove this line.\nallow_shared_account = true\n"
        );
    }
    let _ = writeln!(
        s,
        "# The log-shipping node whose slon -a writes the archives (the original's\n\
         # SLAVE* database, which sql_gen dumped from).\n[database]"
    );
    let _ = writeln!(
        s,
        "# From {}.\nhost = {}",
        from("SLAVEHOST"),
        quote(&l.host)
    );
    let _ = writeln!(s, "# From {}.\nport = {}", from("SLAVEPORT"), l.port);
    let _ = writeln!(s, "# From {}.\nuser = {}", from("REPUSER"), quote(&l.user));
    let _ = writeln!(
        s,
        "# From {}.\ndbname = {}",
        from("SLAVEDBNAME"),
        quote(&l.dbname)
    );
    match &f.password_env {
        Some(var) => {
            let _ = writeln!(
                s,
                "# From --password-env: the variable holding the password.\npassword_env = {}",
                quote(var)
            );
        }
        None => {
            let _ = writeln!(
                s,
                "# No password: the original's psql read ~/.pgpass, the manager does not. Use\n\
                 # trust or peer authentication, or set password_env.\n#password_env = \"SLONY_MANAGER_PGPASSWORD\""
            );
        }
    }
    for site in &f.sites {
        let _ = writeln!(
            s,
            "\n# From {}, line {}; its tables were in\n# {}.\n[sites.{}]",
            comment(&l.parser_config),
            site.line,
            comment(&site.lst),
            site.node
        );
        let _ = writeln!(
            s,
            "# {}\naccount = {}",
            if site.account.given {
                "From --account."
            } else {
                "The node's name (no --account given for it)."
            },
            quote(&site.account.name)
        );
    }
    Ok(s)
}

/// Refuses what the import must not write into: an existing configuration, a state
/// directory that already holds a site (or a request, or a change) or that is, holds or
/// lies inside one of the directories of the original set-up the manager uses (as
/// written, and with links resolved; a state directory named with `..` is refused), and
/// a configuration that would not load.
///
/// # Errors
///
/// What is wrong, named.
pub fn check_targets(f: &Facts, config_text: &str) -> anyhow::Result<()> {
    let (state_dir, config) = (&f.state_dir, &f.write_config);
    if fsutil::exists(config) {
        bail!(
            "{} exists: the import never overwrites a configuration; choose another --write-config",
            config.display()
        );
    }
    if state_dir
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        bail!(
            "the state directory {} holds `..`: name it without",
            state_dir.display()
        );
    }
    let l = &f.legacy;
    for (dir, key) in [
        (&l.subscribers_dir, "subscribers_dir (the sites' archives)"),
        (&l.trigger_dir, "triggerdir"),
        (&l.archive_dir, "kPSLlogsSourceDir"),
    ] {
        let (real_state, real_dir) = (resolved(state_dir), resolved(dir));
        if state_dir.starts_with(dir)
            || dir.starts_with(state_dir)
            || real_state.starts_with(&real_dir)
            || real_dir.starts_with(&real_state)
        {
            bail!(
                "the state directory {} must be apart from the original {key}, {}: choose another --state-dir",
                state_dir.display(),
                dir.display()
            );
        }
    }
    // A configuration with an account missing (acknowledged) cannot load until the
    // account exists; everything else must load as it is written.
    if f.sites.iter().all(|s| s.account.uid.is_ok()) {
        crate::config::ManagerConfig::parse(config, config_text)
            .context("the configuration the import would write does not load")?;
    }
    let entries = match std::fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", state_dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", state_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry
            .path()
            .symlink_metadata()
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if is_dir || name.ends_with(".request.json") {
            bail!(
                "{} already holds a site's state ({name:?}): the import only fills an empty state directory",
                state_dir.display()
            );
        }
    }
    Ok(())
}

/// `p` with the links of its longest existing part resolved (the rest appended as it
/// is): where the kernel would take it.
fn resolved(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut at = p;
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |path, name| path.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Writes every site's state, then the configuration.
///
/// # Errors
///
/// An I/O error; what was made is removed again.
pub fn write(f: &Facts, config_text: &str) -> anyhow::Result<()> {
    check_targets(f, config_text)?;
    let made_state_dir = !fsutil::exists(&f.state_dir);
    if made_state_dir {
        std::fs::create_dir_all(&f.state_dir)
            .with_context(|| format!("creating {}", f.state_dir.display()))?;
    }
    let mut made: Vec<PathBuf> = Vec::new();
    let result =
        write_sites(f, &mut made).and_then(|()| write_config(&f.write_config, config_text));
    if result.is_err() {
        for dir in &made {
            let _ = fsutil::remove_dir_all(dir);
        }
        if made_state_dir {
            let _ = std::fs::remove_dir(&f.state_dir);
        }
    }
    result
}

/// Each site's directory, built as `.<node>.import.tmp` and renamed to `<node>`.
fn write_sites(f: &Facts, made: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for s in &f.sites {
        let tmp = f.state_dir.join(format!(".{}.import.tmp", s.node));
        let dir = f.state_dir.join(s.node.as_str());
        site::prepare_new(&tmp, &s.tables)?;
        site::write_sequences(&tmp, &s.sequences)?;
        if let Some(c) = s.cut_counter() {
            fsutil::write_atomic(
                &tmp.join(crate::cutter::CUT_COUNTER_FILE),
                format!("{c}\n").as_bytes(),
            )?;
        }
        if fsutil::exists(&dir) {
            let _ = fsutil::remove_dir_all(&tmp);
            bail!("{} appeared while importing", dir.display());
        }
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
        made.push(dir);
    }
    fsutil::sync_dir(&f.state_dir).with_context(|| format!("syncing {}", f.state_dir.display()))
}

/// Writes `text` to `path`, which must not exist: written beside it, then linked to its
/// name (a link never replaces a file), then the temporary name removed.
fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut file = fsutil::create_new(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path).with_context(|| {
            format!(
                "{} could not be created (it may have appeared meanwhile: it is never overwritten)",
                path.display()
            )
        })?;
        fsutil::sync_dir(&dir)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::plan::tests::{facts, site};

    #[test]
    fn the_state_and_the_config_as_run_reads_them() {
        let root = tempfile::tempdir().unwrap();
        let own = crate::registry::Account::own();
        let mut alpha = site("alpha", Some(20), own.uid);
        alpha.account.name = own.name.clone();
        alpha.account.given = true;
        let mut beta = site("beta", None, own.uid);
        beta.account.name = own.name.clone();
        let mut f = facts(vec![alpha, beta]);
        f.state_dir = root.path().join("state");
        f.write_config = root.path().join("manager.toml");
        f.password_env = Some("PROVIDER_PW".into());
        // The configuration is loaded before it is written: its variable must be set.
        std::env::set_var("PROVIDER_PW", "x");
        let shared = crate::import::plan::shared_account(&f);
        assert!(shared);
        let text = render_config(&f, shared).unwrap();
        write(&f, &text).unwrap();

        let alpha_dir = f.state_dir.join("alpha");
        assert_eq!(
            crate::cutter::read_cut_counter(&alpha_dir).unwrap(),
            Some(slony_shared::counter::Counter(20))
        );
        assert_eq!(
            site::read_tables(&alpha_dir).unwrap().unwrap(),
            f.sites[0].tables
        );
        assert_eq!(
            site::read_sequences(&alpha_dir).unwrap().unwrap(),
            f.sites[0].sequences
        );
        let beta_dir = f.state_dir.join("beta");
        assert_eq!(crate::cutter::read_cut_counter(&beta_dir).unwrap(), None);
        let mut names: Vec<String> = std::fs::read_dir(&f.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["alpha", "beta"],
            "no temporary directory is left"
        );

        let cfg = crate::config::ManagerConfig::parse(&f.write_config, &text).unwrap();
        assert_eq!(cfg.cluster.as_str(), "jsoc");
        assert_eq!(cfg.subscribers_dir, f.state_dir);
        assert_eq!(cfg.site_log_dir, Path::new("/srv/site_logs"));
        assert_eq!(cfg.trigger_dir, Path::new("/srv/triggers"));
        assert_eq!(
            cfg.archive_dir.as_deref(),
            Some(Path::new("/srv/slon_logs"))
        );
        assert!(cfg.registry.shared_allowed);
        let node = slony_shared::ident::NodeName::new("alpha").unwrap();
        assert_eq!(cfg.registry.get(&node).unwrap().account.name, own.name);
        assert!(
            text.contains("# From CLUSTERNAME, line 1.\ncluster = \"jsoc\""),
            "{text}"
        );
        assert!(
            text.contains("original tools' /srv/etc/repserver.cfg"),
            "{text}"
        );
        assert!(text.contains("# From --account.\naccount = "), "{text}");
        assert!(
            text.contains("# WARNING: several sites share one Unix account"),
            "{text}"
        );

        // A second import into the same place is refused, and changes nothing.
        let e = write(&f, &text).unwrap_err().to_string();
        assert!(e.contains("never overwrites"), "{e}");
        std::fs::remove_file(&f.write_config).unwrap();
        let e = write(&f, &text).unwrap_err().to_string();
        assert!(e.contains("already holds a site"), "{e}");
        assert!(!f.write_config.exists());
    }

    #[test]
    fn paths_in_comments_cannot_start_a_line_of_toml() {
        let mut alpha = site("alpha", Some(20), 1001);
        alpha.lst = PathBuf::from("/srv/etc\r/alpha.lst");
        let mut f = facts(vec![alpha]);
        f.legacy.path = PathBuf::from("/srv/etc/x\nallow_shared_account = true\n#/repserver.cfg");
        f.legacy.tables_dir = PathBuf::from("/srv/etc\r");
        f.legacy.parser_config = PathBuf::from("/srv/etc/p\u{7f}.cfg");
        let text = render_config(&f, false).unwrap();
        let toml: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!toml.contains_key("allow_shared_account"), "{text}");
        assert!(
            text.contains("/srv/etc/x?allow_shared_account = true?#/"),
            "{text}"
        );
    }

    #[test]
    fn the_config_is_written_once_and_never_replaced() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("manager.toml");
        write_config(&p, "a = 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 1\n");
        assert!(write_config(&p, "a = 2\n").is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a = 1\n");
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn a_state_directory_holding_a_site_or_inside_the_old_set_up_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut f = facts(vec![]);
        f.state_dir = root.path().join("state");
        f.write_config = root.path().join("m.toml");
        let text = render_config(&f, false).unwrap();
        let state = f.state_dir.clone();
        check_targets(&f, &text).unwrap();
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("slony-manager.lock"), "").unwrap();
        check_targets(&f, &text).unwrap();
        std::fs::write(state.join("alpha.request.json"), "{}").unwrap();
        assert!(check_targets(&f, &text).is_err());
        std::fs::remove_file(state.join("alpha.request.json")).unwrap();
        std::fs::create_dir(state.join("alpha")).unwrap();
        let e = check_targets(&f, &text).unwrap_err().to_string();
        assert!(e.contains("already holds a site"), "{e}");
        std::fs::remove_dir(state.join("alpha")).unwrap();
        check_targets(&f, &text).unwrap();

        // Not in, at or around a directory of the original set-up.
        for dir in [
            "/srv/site_logs",
            "/srv/site_logs/state",
            "/srv",
            "/srv/triggers/x",
        ] {
            let mut g = f.clone();
            g.state_dir = PathBuf::from(dir);
            let e = check_targets(&g, &text).unwrap_err().to_string();
            assert!(e.contains("must be apart from the original"), "{dir}: {e}");
        }
        // Nor there by way of `..` or a symbolic link.
        let mut g = f.clone();
        g.state_dir = PathBuf::from("/srv/elsewhere/../site_logs/state");
        let e = check_targets(&g, &text).unwrap_err().to_string();
        assert!(e.contains("`..`"), "{e}");
        let mut g = f.clone();
        let logs = root.path().join("site_logs");
        std::fs::create_dir(&logs).unwrap();
        std::os::unix::fs::symlink(&logs, root.path().join("link")).unwrap();
        g.legacy.subscribers_dir = logs.clone();
        g.state_dir = root.path().join("link/state");
        let e = check_targets(&g, &text).unwrap_err().to_string();
        assert!(e.contains("must be apart from the original"), "{e}");
        // A configuration that would not load.
        let e = check_targets(&f, "cluster = 1\n").unwrap_err();
        assert!(format!("{e:#}").contains("does not load"), "{e:#}");

        std::fs::write(&f.write_config, "").unwrap();
        let e = check_targets(&f, &text).unwrap_err().to_string();
        assert!(e.contains("never overwrites"), "{e}");
    }
}
