//! `slony-receiver migrate --legacy-config FILE [--output PATH] [--force]`: the step from
//! the original tools to `--config`. It writes the TOML configuration that means what
//! the original client config means ([`crate::config::legacy`], each key with the line
//! it came from), prints what replaces the old cron line (the cron lines, or the systemd
//! units), and compares the replica's counter with the old `slony_counter.txt`.
//!
//! It changes nothing else: the only file written is the output (to a temporary name,
//! loaded back and compared with the legacy file's meaning, then put in place), and the
//! database is read in a read-only session.
//!
//! # The counters
//!
//! The pre-2017 `get_slony_logs.pl` kept the last applied archive in
//! `<slony_logs>/<node>/slony_counter.txt`; later clients keep none and read the
//! database. The replica's `"_<cluster>".sl_archive_tracking.at_counter` is the truth:
//! every archive commits with it, and `pull` goes on after it whatever the file says
//! (and rewrites the file). A disagreement still means something happened that the
//! operator should know of before switching, so it is reported.
//!
//! # Exit codes
//!
//! 0 when the counters agree or there is no counter file; [`exit::COUNTER_DISAGREES`]
//! when they disagree (or the file holds no counter); [`exit::DATABASE`] or
//! [`exit::APPLY`] when the replica cannot be read (unreachable, or not initialised). The
//! TOML is written in every one of these cases. [`exit::CONFIG`] when the legacy file is
//! refused or the output exists (without `--force`): then nothing is written.

use crate::config::{legacy, ReceiverConfig};
use crate::exit;
use crate::replica;
use anyhow::Context;
use slony_shared::counter::Counter;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on reading the replica's counter once connected.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What `migrate` was asked to do.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The original client config.
    pub legacy_config: &'a Path,
    /// Where to write the TOML (`None`: `receiver.toml` beside the legacy file).
    pub output: Option<&'a Path>,
    /// Overwrite an existing output.
    pub force: bool,
}

/// Runs `migrate`; returns the exit code.
pub async fn run(req: &Request<'_>) -> anyhow::Result<u8> {
    // Absolute, for the cron lines printed and the comments of the TOML.
    let legacy_path =
        std::path::absolute(req.legacy_config).unwrap_or_else(|_| req.legacy_config.to_path_buf());
    let req = &Request {
        legacy_config: &legacy_path,
        ..req.clone()
    };
    let legacy = legacy::read(req.legacy_config)?;
    let cfg = legacy.config()?;
    let output = match req.output {
        Some(p) => p.to_path_buf(),
        None => slony_shared::config::base_dir(req.legacy_config).join("receiver.toml"),
    };
    let output = std::path::absolute(&output).unwrap_or(output);
    if is_same_file(&output, req.legacy_config) {
        eprintln!(
            "slony-receiver: --output {} is the legacy file itself: migrate never replaces it (it is what going back uses)",
            output.display()
        );
        return Ok(exit::CONFIG);
    }
    if !req.force && std::fs::symlink_metadata(&output).is_ok() {
        eprintln!(
            "slony-receiver: {} exists: migrate does not overwrite it (give --force to replace it, or --output PATH)",
            output.display()
        );
        return Ok(exit::CONFIG);
    }
    let toml = legacy.to_toml();
    // The promise of migrate: the TOML means exactly what the legacy file means. It is
    // checked on the temporary file, so a TOML that does not is never put in place.
    write_output(&output, &toml, req.force, |tmp| {
        let written = ReceiverConfig::load(tmp).with_context(|| {
            format!(
                "internal: the TOML for {} does not load; nothing was written",
                output.display()
            )
        })?;
        if !same(&written, &cfg) {
            anyhow::bail!(
                "internal: the TOML for {} does not mean what {} means; nothing was written",
                output.display(),
                req.legacy_config.display()
            );
        }
        Ok(())
    })?;
    tracing::info!(output = %output.display(), legacy = %req.legacy_config.display(), "wrote the TOML configuration");

    let mut out = String::new();
    out.push_str(&format!(
        "Wrote {} from {}: {} key(s) carried over, {} ignored (each says why in the file).\n",
        output.display(),
        req.legacy_config.display(),
        legacy.mapped.len(),
        legacy.skipped.len()
    ));
    if let Some(note) = psql_port_note(&legacy) {
        out.push_str(&note);
    }
    out.push_str(&replacement(&legacy, &cfg, &output));
    let db = read_counter(&cfg).await;
    let file = read_counter_file(&cfg.counter_file());
    let verdict = verdict(&cfg.counter_file(), &db, &file);
    out.push_str("\nCounter:\n");
    out.push_str(&verdict.text);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the report")?;
    if verdict.code != exit::OK {
        eprintln!(
            "slony-receiver: migrate: {} (the TOML was written)",
            verdict.summary
        );
    }
    Ok(verdict.code)
}

/// Whether `a` and `b` name the same existing file (the same device and inode).
fn is_same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Writes `text` to `path`: a temporary name beside it (owner-only), which `check` must
/// accept, then put in place: renamed over `path` with `force`, else linked to it (a link
/// never replaces a file that appeared meanwhile).
fn write_output(
    path: &Path,
    text: &str,
    force: bool,
    check: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> anyhow::Result<()> {
        // A stale temporary file (or a link in its place) is removed, never written through.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let mut f = slony_shared::private::options()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        check(&tmp)?;
        if force {
            std::fs::rename(&tmp, path)?;
        } else {
            std::fs::hard_link(&tmp, path).with_context(|| {
                format!(
                    "{} could not be created (it may have appeared meanwhile: migrate does not overwrite it without --force)",
                    path.display()
                )
            })?;
        }
        Ok(())
    };
    let result = write();
    let _ = std::fs::remove_file(&tmp);
    result.with_context(|| format!("writing {}", path.display()))
}

/// Whether two configurations mean the same, whatever file (and format) each came from.
fn same(a: &ReceiverConfig, b: &ReceiverConfig) -> bool {
    let mut a = a.clone();
    a.source = b.source.clone();
    a.legacy = b.legacy;
    format!("{a:?}") == format!("{b:?}")
}

/// The value of an ignored key of the legacy file, if set.
fn skipped_value<'a>(legacy: &'a legacy::Legacy, key: &str) -> Option<&'a str> {
    legacy
        .skipped
        .iter()
        .find(|s| s.from.key == key)
        .map(|s| s.from.value.as_str())
        .filter(|v| !v.is_empty())
}

/// A note when the ignored `PSQL` names another port than `pg_port`: get_slony_logs.pl
/// connected with `PSQL` (it added the host, user and database, never the port), while
/// the TOML takes `pg_port`, as subscribe_series did.
fn psql_port_note(legacy: &legacy::Legacy) -> Option<String> {
    let psql = skipped_value(legacy, "PSQL")?;
    let words: Vec<&str> = psql.split_whitespace().collect();
    let port = words.iter().enumerate().find_map(|(i, w)| {
        if *w == "-p" || *w == "--port" {
            words.get(i + 1).copied()
        } else {
            w.strip_prefix("--port=")
                .or_else(|| w.strip_prefix("-p").filter(|p| !p.is_empty()))
        }
    })?;
    let pg_port = legacy
        .mapped
        .iter()
        .find(|m| m.from.key == "pg_port")
        .map(|m| m.from.value.as_str())
        .filter(|v| !v.is_empty());
    (port != pg_port.unwrap_or("5432")).then(|| {
        format!(
            "\nNote: PSQL ({psql}) names port {port}, pg_port is {}. get_slony_logs.pl\n\
             connected with PSQL's port; the TOML takes pg_port, as subscribe_series did.\n\
             Check that [database] port is the replica's.\n",
            pg_port.unwrap_or("not set (5432)")
        )
    })
}

/// What replaces the old cron line: the new cron lines, or the systemd units.
fn replacement(legacy: &legacy::Legacy, cfg: &ReceiverConfig, output: &Path) -> String {
    let bin = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "slony-receiver".into());
    let old = skipped_value(legacy, "kSQLIngestionProgram").unwrap_or("get_slony_logs.pl");
    let log_dir = skipped_value(legacy, "kLocalLogDir").unwrap_or("/var/log/slony-receiver");
    let config = output.display();
    let agent = if cfg.remote.auth == crate::config::SshAuth::Agent {
        "  The configuration logs in through the ssh-agent, as the original tools did: keep\n  what gave the old line its SSH_AUTH_SOCK (e.g. `. $HOME/.ssh-agent_rs;` before the\n  command), or set remote.key_file instead of use_agent.\n"
    } else {
        ""
    };
    format!(
        "\nCron: in the crontab of the account that ran the original client (crontab -e),\n\
         replace the line that runs\n    {old} {legacy}\n\
         with:\n    * * * * *   {bin} pull --config {config} --once 2>>{log_dir}/slony-receiver-pull.log\n\
         and add daily housekeeping (packs applied archives, applies retention):\n    17 3 * * *  {bin} housekeeping --config {config} 2>>{log_dir}/slony-receiver-housekeeping.log\n\
         {agent}\
         \nOr, instead of cron, the systemd units (etc/systemd/; the Debian package installs\n\
         them in /usr/lib/systemd/system/):\n\
         \x20   slony-receiver.service              the pull daemon (polls every [pull] poll_interval_secs)\n\
         \x20   slony-receiver-pull.timer           or: one pull run a minute, like the cron line\n\
         \x20   slony-receiver-housekeeping.timer   daily housekeeping\n\
         \x20 They read /etc/slony-receiver/receiver.toml (copy {config} there) and run as\n\
         \x20 their User=, without an ssh-agent: set remote.key_file and remove use_agent, and\n\
         \x20 set remote.known_hosts to a file that account can read. Then\n\
         \x20   systemctl enable --now slony-receiver.service slony-receiver-housekeeping.timer\n\
         \nTo go back: put the old line back in the crontab and remove the new ones (or\n\
         disable the units). Either goes on from where the other stopped: the original\n\
         client reads the replica's counter (before 2017, slony_counter.txt, which pull\n\
         keeps equal to it).\n",
        legacy = legacy.path.display(),
    )
}

/// The replica's counter, read in a read-only session, or why it cannot be read.
async fn read_counter(cfg: &ReceiverConfig) -> Result<Counter, replica::ReplicaError> {
    let client = replica::connect(cfg).await?;
    let read = async {
        client
            .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            .await
            .map_err(|e| replica::ReplicaError::Tracking(slony_shared::pg::describe_error(&e)))?;
        replica::read_position(&client, &cfg.cluster).await
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(position) => position.map(|p| p.counter),
        Err(_) => Err(replica::ReplicaError::Tracking(format!(
            "no answer within {} s",
            READ_TIMEOUT.as_secs()
        ))),
    }
}

/// What the old counter file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileCounter {
    /// No such file (the original client has kept none since 2017).
    Absent,
    /// A counter.
    At(Counter),
    /// Not a counter, or unreadable: why.
    Unreadable(String),
}

fn read_counter_file(path: &Path) -> FileCounter {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileCounter::Absent,
        Err(e) => FileCounter::Unreadable(e.to_string()),
        Ok(text) => match text.trim().parse::<Counter>() {
            Ok(c) => FileCounter::At(c),
            Err(_) => FileCounter::Unreadable(format!(
                "it holds {:?}, not an archive counter",
                text.trim().chars().take(40).collect::<String>()
            )),
        },
    }
}

/// The report on the two counters.
#[derive(Debug)]
struct Verdict {
    /// The lines printed under "Counter:".
    text: String,
    /// One line for stderr when the code is not 0.
    summary: String,
    /// The exit code it calls for.
    code: u8,
}

/// Compares the replica's counter `db` with the counter file at `path`.
fn verdict(
    path: &Path,
    db: &Result<Counter, replica::ReplicaError>,
    file: &FileCounter,
) -> Verdict {
    let file_line = match file {
        FileCounter::Absent => "none (the original client has kept none since 2017)".to_string(),
        FileCounter::At(f) => format!("archive {f}"),
        FileCounter::Unreadable(why) => format!("unreadable: {why}"),
    };
    let mut text = format!(
        "  replica's at_counter:  {}
  {}:  {file_line}
",
        match db {
            Ok(d) => format!("archive {d}"),
            Err(_) => "cannot be read".to_string(),
        },
        path.display()
    );
    let (said, summary, code) = match (db, file) {
        (Err(e), _) => (
            format!(
                "NOT COMPARED: the replica database cannot be read: {e}.\n  The replica's at_counter is the truth, so nothing can be said before it is read:\n  fix [database] in the TOML (or start the database), then run migrate again\n  (with --force) or `slony-receiver status --config FILE`."
            ),
            format!("the counters were not compared: {e}"),
            exit::for_class(e.class()),
        ),
        (Ok(d), FileCounter::Absent) => (
            format!(
                "OK: there is no counter file to compare (a client since 2017 reads the database).\n  pull goes on from archive {}.",
                d.next()
            ),
            String::new(),
            exit::OK,
        ),
        (Ok(d), FileCounter::At(f)) if f == d => (
            format!("OK: they agree. pull goes on from archive {}.", d.next()),
            String::new(),
            exit::OK,
        ),
        (Ok(d), FileCounter::At(f)) if f.0 > d.0 => (
            format!(
                "DISAGREE: the file is {n} archive(s) ahead of the database.\n  The database is the truth: every archive commits with its counter, so archives\n  {}..={f} are not in the replica (the file was written for work that did not\n  commit, or the database was restored from an older copy). pull applies them\n  from archive {} and rewrites the file: the provider must still hold them\n  (`slony-receiver status --config FILE` shows what it has).",
                d.next(),
                d.next(),
                n = f.0 - d.0,
            ),
            format!(
                "the counters disagree: {} says archive {f}, the replica's at_counter {d} (the file is {} ahead; the database is the truth)",
                path.display(),
                f.0 - d.0
            ),
            exit::COUNTER_DISAGREES,
        ),
        (Ok(d), FileCounter::At(f)) => (
            format!(
                "DISAGREE: the database is {n} archive(s) ahead of the file.\n  The database is the truth: the file is stale (a client that stopped writing it,\n  or stopped between a commit and the file). pull goes on from archive {} and\n  rewrites the file.",
                d.next(),
                n = d.0 - f.0,
            ),
            format!(
                "the counters disagree: {} says archive {f}, the replica's at_counter {d} (the database is {} ahead, and the truth)",
                path.display(),
                d.0 - f.0
            ),
            exit::COUNTER_DISAGREES,
        ),
        (Ok(d), FileCounter::Unreadable(_)) => (
            format!(
                "DISAGREE: the file holds no counter that can be read. The database is the\n  truth: pull goes on from archive {} and rewrites the file.",
                d.next()
            ),
            format!(
                "the counters disagree: {} holds no counter that can be read; the replica's at_counter is {d}",
                path.display()
            ),
            exit::COUNTER_DISAGREES,
        ),
    };
    text.push_str("  ");
    text.push_str(&said);
    text.push('\n');
    Verdict {
        text,
        summary,
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::ReplicaError;

    fn path() -> PathBuf {
        PathBuf::from("/l/alpha/slony_counter.txt")
    }

    #[test]
    fn counters_that_agree_or_no_file_exit_zero() {
        let v = verdict(&path(), &Ok(Counter(6)), &FileCounter::At(Counter(6)));
        assert_eq!(v.code, exit::OK);
        assert!(v.text.contains("OK: they agree"), "{}", v.text);
        assert!(v.text.contains("archive 7"), "{}", v.text);
        assert!(
            v.text.contains(
                "  replica's at_counter:  archive 6\n  /l/alpha/slony_counter.txt:  archive 6\n"
            ),
            "{}",
            v.text
        );
        let v = verdict(&path(), &Ok(Counter(6)), &FileCounter::Absent);
        assert_eq!(v.code, exit::OK);
        assert!(v.text.contains("slony_counter.txt:  none"), "{}", v.text);
        assert!(v.text.contains("no counter file to compare"), "{}", v.text);
    }

    #[test]
    fn a_disagreement_says_which_is_ahead_and_exits_non_zero() {
        let v = verdict(&path(), &Ok(Counter(6)), &FileCounter::At(Counter(9)));
        assert_eq!(v.code, exit::COUNTER_DISAGREES);
        assert!(
            v.text.contains("the file is 3 archive(s) ahead"),
            "{}",
            v.text
        );
        assert!(v.text.contains("\n  7..=9 are not in"), "{}", v.text);
        assert!(v.text.contains("The database is the truth"), "{}", v.text);
        assert!(v
            .summary
            .contains("says archive 9, the replica's at_counter 6"));
        let v = verdict(&path(), &Ok(Counter(6)), &FileCounter::At(Counter(2)));
        assert_eq!(v.code, exit::COUNTER_DISAGREES);
        assert!(
            v.text.contains("database is 4 archive(s) ahead"),
            "{}",
            v.text
        );
        assert!(
            v.summary.contains("the database is 4 ahead"),
            "{}",
            v.summary
        );
        let v = verdict(
            &path(),
            &Ok(Counter(6)),
            &FileCounter::Unreadable("x".into()),
        );
        assert_eq!(v.code, exit::COUNTER_DISAGREES);
        assert!(v.text.contains("holds no counter"), "{}", v.text);
    }

    #[test]
    fn an_unreadable_database_compares_nothing_and_exits_non_zero() {
        let down = Err(ReplicaError::Unavailable {
            conninfo: "host=127.0.0.1 port=1".into(),
            message: "Connection refused".into(),
        });
        let v = verdict(&path(), &down, &FileCounter::At(Counter(3)));
        assert_eq!(v.code, exit::DATABASE);
        assert!(v.text.contains("NOT COMPARED"), "{}", v.text);
        assert!(v.text.contains("Connection refused"), "{}", v.text);
        assert!(
            v.text.contains("slony_counter.txt:  archive 3"),
            "{}",
            v.text
        );
        assert!(v.summary.contains("not compared"), "{}", v.summary);
        let v = verdict(
            &path(),
            &Err(ReplicaError::NotInitialised {
                schema: "\"_jsoc\"".into(),
            }),
            &FileCounter::Absent,
        );
        assert_eq!(v.code, exit::APPLY);
    }

    #[test]
    fn a_psql_port_other_than_pg_port_is_noted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.cfg");
        for (psql, noted) in [
            ("'psql -p 5433'", false),
            ("'psql -p5434'", true),
            ("'psql --port=5435 -h x'", true),
            ("psql", false),
        ] {
            std::fs::write(&p, format!("pg_port=5433\nPSQL={psql}\n")).unwrap();
            let l = legacy::read(&p).unwrap();
            assert_eq!(psql_port_note(&l).is_some(), noted, "{psql}");
        }
    }

    #[test]
    fn an_output_that_fails_its_check_is_never_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("receiver.toml");
        let refuse = |_: &Path| anyhow::bail!("does not mean the same");
        assert!(write_output(&out, "node = \"x\"\n", false, refuse).is_err());
        assert!(!out.exists());
        std::fs::write(&out, "old\n").unwrap();
        assert!(write_output(&out, "node = \"x\"\n", true, refuse).is_err());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
        // Without --force an existing file is never replaced, even one that appeared
        // after the first look.
        assert!(write_output(&out, "new\n", false, |_| Ok(())).is_err());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
        write_output(&out, "new\n", true, |_| Ok(())).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
        // A link where the temporary file goes is not written through.
        let legacy = dir.path().join("repclient.cfg");
        std::fs::write(&legacy, "node=x\n").unwrap();
        std::os::unix::fs::symlink(&legacy, dir.path().join("receiver.toml.tmp")).unwrap();
        write_output(&out, "newer\n", true, |_| Ok(())).unwrap();
        assert_eq!(std::fs::read_to_string(&legacy).unwrap(), "node=x\n");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "newer\n");
    }

    #[test]
    fn the_counter_file_is_read_as_the_old_client_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slony_counter.txt");
        assert_eq!(read_counter_file(&p), FileCounter::Absent);
        // save_current_counter wrote no newline; `echo` did.
        std::fs::write(&p, "42").unwrap();
        assert_eq!(read_counter_file(&p), FileCounter::At(Counter(42)));
        std::fs::write(&p, "42\n").unwrap();
        assert_eq!(read_counter_file(&p), FileCounter::At(Counter(42)));
        std::fs::write(&p, "forty-two\n").unwrap();
        assert!(matches!(read_counter_file(&p), FileCounter::Unreadable(_)));
    }
}
