//! `slony-receiver check`: is this site set up to work? One verdict per check, as Barman's
//! `barman check` gives them, for an operator (text), a script (`--json`) or Nagios
//! (`--nagios`); the report and its renderings are [`slony_shared::check`].
//!
//! # The checks, in the order printed
//!
//! | name | passes when |
//! | --- | --- |
//! | `config` | the configuration loads (if not, this is the only line: nothing else can run) |
//! | `ssh host key` | the provider's host key is in `remote.known_hosts` and matches |
//! | `ssh login` | the login as `remote.user` works (key file or agent) and SFTP opens |
//! | `remote site directory` | `<remote.log_dir>/<node>/` can be listed |
//! | `replica database` | the replica database answers |
//! | `tracking schema` | `"_<cluster>".sl_archive_tracking` holds the replica's position |
//! | `privileges` | the role may apply the provider's SQL ([`crate::privilege::applier`]); a superuser passes, with its risk said |
//! | `local directories` | `local.log_dir`, the site's directory, `incoming/`, `applied/` and `local.die_dir` are writable (or can be created), with at least 1 GiB and 5 % of their file system free ([`slony_shared::check::Space::problem`]) |
//! | `lock` | the run lock is free, or held by a live process (a `pull` at work is fine) |
//! | `original client lock` | only with `local.original_client_lock` (every `--legacy-config`): the original client's lock passes what `lock` asks of the run lock; always with a warning to remove the key once `get_slony_logs.pl` no longer runs |
//! | `guard` | every replicated table refuses local writes (`slony-receiver guard check`), or the replica was promoted |
//! | `mail` | `[alert]` addresses parse and the SMTP server answers; no recipients: passes, "not configured" |
//! | `test alert` | only with `--mail`: a test mail went through the alerter's own path |
//!
//! The checks run concurrently and each is bounded in time: SSH by `remote.timeout`, the
//! database by `database.connect_timeout` (the connection, then each query), mail by the
//! SMTP timeout. One failing never stops the others; a check that needs one that failed
//! says `FAILED (skipped: <that check> failed)`. Nothing is changed: no lock is taken, no
//! directory created, no file written (except the test mail, with `--mail`).
//!
//! # Exit codes
//!
//! 0 every check passed; [`exit::UNHEALTHY`] some failed; [`exit::CONFIG`] the
//! configuration does not load. With `--nagios`, Nagios's codes instead: 0 OK, 2 CRITICAL
//! (any failure, the configuration's included).

use crate::alert::Alerter;
use crate::config::{ReceiverConfig, SshAuth};
use crate::exit;
use crate::privilege::{self, ApplierError};
use crate::provider::{Provider, RemoteError};
use crate::replica::ReplicaError;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::check::{self, Check, Format, Report};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::Client;

/// The program name of the report (the Nagios line starts with it).
const PROGRAM: &str = "slony-receiver";
/// Bound on the local checks (a hung network file system must not hang the command).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the mail checks: the SMTP timeout (20 s per step) with room for its steps.
const MAIL_TIMEOUT: Duration = Duration::from_secs(45);

const CONFIG: &str = "config";
const HOST_KEY: &str = "ssh host key";
const LOGIN: &str = "ssh login";
const REMOTE_DIR: &str = "remote site directory";
const DATABASE: &str = "replica database";
const TRACKING: &str = "tracking schema";
const PRIVILEGES: &str = "privileges";
const LOCAL_DIRS: &str = "local directories";
const LOCK: &str = "lock";
const ORIGINAL_LOCK: &str = "original client lock";
const GUARD: &str = "guard";
const MAIL: &str = "mail";
const TEST_ALERT: &str = "test alert";

/// Runs `check` on the configuration as it loaded (or failed to), prints the report in
/// `format`, and returns the exit code.
///
/// # Errors
///
/// Only if the report cannot be printed.
pub async fn run(
    loaded: anyhow::Result<ReceiverConfig>,
    format: Format,
    test_mail: bool,
) -> anyhow::Result<u8> {
    let (report, config_failed) = match loaded {
        Ok(cfg) => (Report::new(PROGRAM, checks(&cfg, test_mail).await), false),
        Err(e) => (
            Report::new(
                PROGRAM,
                vec![Check::failed(
                    CONFIG,
                    format!("{e:#}"),
                    "fix the file; no other check can run without it",
                )],
            ),
            true,
        ),
    };
    print!("{}", report.render(format));
    Ok(match format {
        Format::Nagios => report.nagios_code(),
        _ if config_failed => exit::CONFIG,
        _ if report.ok => exit::OK,
        _ => exit::UNHEALTHY,
    })
}

/// Every check of a site whose configuration loaded, in the order printed.
async fn checks(cfg: &ReceiverConfig, test_mail: bool) -> Vec<Check> {
    let (ssh, database, local, mail) = tokio::join!(
        ssh_checks(cfg),
        database_checks(cfg),
        local_checks(cfg),
        mail_checks(cfg, test_mail)
    );
    let mut out = vec![Check::ok(CONFIG, cfg.source.display().to_string())];
    out.extend(ssh);
    // The guard is read on the database's connection, and printed after the local checks.
    let mut database = database;
    let guard = database.pop();
    out.extend(database);
    out.extend(local);
    out.extend(guard);
    out.extend(mail);
    out
}

/// `f`, or a message saying that `what` took longer than `limit`.
async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, f).await.map_err(|_| {
        format!(
            "{what} did not finish within {} s",
            limit.as_secs_f64().ceil()
        )
    })
}

/// `ssh host key`, `ssh login`, `remote site directory`: one connection, whose failure is
/// told to the check it belongs to.
async fn ssh_checks(cfg: &ReceiverConfig) -> Vec<Check> {
    let remote = &cfg.remote;
    let addr = format!("{}:{}", remote.host, remote.port);
    let known_hosts = remote.known_hosts.display();
    // The TCP connection, the handshake and each login step are bounded by the timeout.
    let limit = remote.timeout * 4;
    let provider = match bounded(
        limit,
        "connecting to the provider",
        Provider::connect(remote),
    )
    .await
    {
        Err(why) => {
            return vec![
                Check::failed(
                    HOST_KEY,
                    format!("{addr}: {why}"),
                    "check that the provider's sshd answers on remote.host and remote.port",
                ),
                Check::skipped(LOGIN, HOST_KEY),
                Check::skipped(REMOTE_DIR, HOST_KEY),
            ]
        }
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return ssh_failure(cfg, &e),
    };
    let how = match &remote.auth {
        SshAuth::KeyFile { path, .. } => format!("key {}", path.display()),
        SshAuth::Agent => "the ssh-agent".to_string(),
    };
    let host_key = Check::ok(HOST_KEY, format!("{addr} matches {known_hosts}"));
    let login = Check::ok(
        LOGIN,
        format!("{}@{addr} with {how}, SFTP open", remote.user),
    );
    let dir = cfg.remote_site_dir();
    let listed = bounded(limit, "listing the site directory", provider.list(&dir)).await;
    let remote_dir = match listed {
        Ok(Ok(files)) => {
            let streamed = files
                .iter()
                .filter(|f| {
                    f.regular && matches!(classify(&f.name), Ok(Entry::Archive(_) | Entry::Batch(_)))
                })
                .count();
            Check::ok(REMOTE_DIR, format!("{dir}: {streamed} archives and batches"))
        }
        Ok(Err(e)) => Check::failed(
            REMOTE_DIR,
            e.to_string(),
            format!(
                "the manager makes {dir} when the site's first subscription succeeds; check remote.log_dir, and that {} is in the site's group on the provider",
                remote.user
            ),
        ),
        Err(why) => Check::failed(REMOTE_DIR, why, ""),
    };
    vec![host_key, login, remote_dir]
}

/// The three SSH lines when the connection failed with `e`: the failure on the line of
/// the step that failed, the steps after it skipped.
fn ssh_failure(cfg: &ReceiverConfig, e: &RemoteError) -> Vec<Check> {
    let addr = format!("{}:{}", cfg.remote.host, cfg.remote.port);
    match e {
        RemoteError::Connect { .. } => vec![
            Check::failed(
                HOST_KEY,
                e.to_string(),
                "check that the provider's sshd answers on remote.host and remote.port",
            ),
            Check::skipped(LOGIN, HOST_KEY),
            Check::skipped(REMOTE_DIR, HOST_KEY),
        ],
        RemoteError::UnknownHostKey { .. } | RemoteError::HostKeyChanged { .. } => vec![
            Check::failed(HOST_KEY, e.to_string(), ""),
            Check::skipped(LOGIN, HOST_KEY),
            Check::skipped(REMOTE_DIR, HOST_KEY),
        ],
        _ => vec![
            Check::ok(
                HOST_KEY,
                format!("{addr} matches {}", cfg.remote.known_hosts.display()),
            ),
            Check::failed(
                LOGIN,
                e.to_string(),
                "check remote.user and the key (remote.key_file or the agent), and the account's authorized_keys on the provider",
            ),
            Check::skipped(REMOTE_DIR, LOGIN),
        ],
    }
}

/// `replica database`, `tracking schema`, `privileges`, `guard` (last): one connection.
async fn database_checks(cfg: &ReceiverConfig) -> Vec<Check> {
    let limit = cfg.database.connect_timeout;
    let connected = bounded(
        limit * 2,
        "connecting to the replica database",
        crate::replica::connect(cfg),
    )
    .await;
    let client = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return database_down(e.to_string()),
        Err(why) => return database_down(why),
    };
    let version = bounded(
        limit,
        "reading the server version",
        client.query_one("SELECT pg_catalog.current_setting('server_version')", &[]),
    )
    .await;
    let database = match version {
        Ok(Ok(row)) => Check::ok(
            DATABASE,
            format!(
                "{}: PostgreSQL {}",
                cfg.database.redacted(),
                row.get::<_, String>(0)
            ),
        ),
        Ok(Err(e)) => Check::failed(DATABASE, slony_shared::pg::describe_error(&e), ""),
        Err(why) => Check::failed(DATABASE, why, ""),
    };
    let tracking = tracking_check(cfg, &client, limit).await;
    let privileges = privileges_check(&client, limit).await;
    let guard = if tracking.ok {
        guard_check(cfg, &client, limit).await
    } else {
        Check::skipped(GUARD, TRACKING)
    };
    vec![database, tracking, privileges, guard]
}

/// The four database lines when the database cannot be reached (`why`).
fn database_down(why: String) -> Vec<Check> {
    vec![
        Check::failed(
            DATABASE,
            why,
            "check [database] and that the server runs and lets this role connect",
        ),
        Check::skipped(TRACKING, DATABASE),
        Check::skipped(PRIVILEGES, DATABASE),
        Check::skipped(GUARD, DATABASE),
    ]
}

/// `tracking schema`: the replica's position.
async fn tracking_check(cfg: &ReceiverConfig, client: &Client, limit: Duration) -> Check {
    let read = bounded(
        limit,
        "reading the tracking table",
        crate::replica::read_position(client, &cfg.cluster),
    )
    .await;
    match read {
        Ok(Ok(p)) => Check::ok(
            TRACKING,
            format!(
                "{}.sl_archive_tracking at archive {}{}",
                cfg.cluster.schema(),
                p.counter,
                p.created
                    .map(|c| format!(" (created {c})"))
                    .unwrap_or_default()
            ),
        ),
        Ok(Err(e @ ReplicaError::NotInitialised { .. })) => Check::failed(
            TRACKING,
            e.to_string(),
            "or `slony-receiver init` for tables loaded some other way",
        ),
        Ok(Err(e)) => Check::failed(TRACKING, e.to_string(), ""),
        Err(why) => Check::failed(TRACKING, why, ""),
    }
}

/// `privileges`: whether the role may apply, as `pull` judges it before applying.
async fn privileges_check(client: &Client, limit: Duration) -> Check {
    match bounded(limit, "reading the role", privilege::applier(client)).await {
        Ok(Ok(a)) if a.superuser => Check::ok(
            PRIVILEGES,
            format!(
                "{} is a superuser: it can apply, but SQL from the provider runs with every right on this server; an ordinary role is safer (`slony-receiver init --apply-role`)",
                a.user
            ),
        ),
        Ok(Ok(a)) => Check::ok(
            PRIVILEGES,
            format!("{} may SET session_replication_role", a.user),
        ),
        Ok(Err(ApplierError::Refused(e))) => Check::failed(PRIVILEGES, e.to_string(), ""),
        Ok(Err(ApplierError::Unreadable(why))) => Check::failed(
            PRIVILEGES,
            format!("cannot read the role or its privileges: {why}"),
            "",
        ),
        Err(why) => Check::failed(PRIVILEGES, why, ""),
    }
}

/// `guard`: what `slony-receiver guard check` reports.
async fn guard_check(cfg: &ReceiverConfig, client: &Client, limit: Duration) -> Check {
    match crate::promote::read_marker(cfg) {
        Ok(Some(m)) => {
            return Check::ok(
                GUARD,
                format!(
                "this replica was promoted on {} at archive {}: the guard was removed on purpose",
                m.promoted_at, m.counter
            ),
            )
        }
        Ok(None) => {}
        Err(e) => return Check::failed(GUARD, format!("{e:#}"), ""),
    }
    let inspected = bounded(limit * 2, "reading the guard triggers", async {
        let tables = crate::guard::replicated_tables(client, &cfg.cluster).await?;
        crate::guard::inspect(client, &cfg.cluster, &tables.tables).await
    })
    .await;
    let states = match inspected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Check::failed(GUARD, format!("{e:#}"), ""),
        Err(why) => return Check::failed(GUARD, why, ""),
    };
    let bad: Vec<String> = states
        .iter()
        .filter_map(|g| g.problem().map(|p| format!("{} ({p})", g.table)))
        .collect();
    if states.is_empty() {
        Check::ok(GUARD, "no replicated tables yet")
    } else if bad.is_empty() {
        Check::ok(
            GUARD,
            format!("all {} replicated tables refuse local writes", states.len()),
        )
    } else {
        Check::failed(
            GUARD,
            format!(
                "{} of {} replicated tables are not guarded (local sessions can write to them): {}",
                bad.len(),
                states.len(),
                bad.join(", ")
            ),
            format!("run `slony-receiver guard on {}`", cfg.config_arg()),
        )
    }
}

/// `local directories`, `lock`: on the blocking pool, bounded.
async fn local_checks(cfg: &ReceiverConfig) -> Vec<Check> {
    let dirs = vec![
        cfg.local.log_dir.clone(),
        cfg.site_dir(),
        cfg.incoming_dir(),
        cfg.applied_dir(),
        cfg.local.die_dir.clone(),
    ];
    let lock = cfg.lock_file();
    let original = cfg.local.original_client_lock.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut checks = vec![dirs_check(&dirs), lock_check(LOCK, &lock)];
        if let Some(original) = original {
            checks.push(original_lock_check(&original));
        }
        checks
    });
    match bounded(LOCAL_TIMEOUT, "checking the local directories", job).await {
        Ok(Ok(checks)) => checks,
        Ok(Err(e)) => vec![
            Check::failed(LOCAL_DIRS, format!("internal: {e}"), ""),
            Check::failed(LOCK, format!("internal: {e}"), ""),
        ],
        Err(why) => vec![
            Check::failed(LOCAL_DIRS, why.clone(), ""),
            Check::failed(LOCK, why, ""),
        ],
    }
}

/// `local directories`: each can be written (or, missing, created by the first `pull`),
/// and each file system holding them has room.
fn dirs_check(dirs: &[PathBuf]) -> Check {
    let mut unique: Vec<&PathBuf> = Vec::new();
    for d in dirs {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    let mut problems = Vec::new();
    let mut to_create = 0;
    // The nearest existing directory of each, whose file system the files go to.
    let mut homes: Vec<PathBuf> = Vec::new();
    for d in &unique {
        let home = match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => d.to_path_buf(),
            Ok(_) => {
                problems.push(format!("{} is not a directory", d.display()));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                to_create += 1;
                match nearest_existing(d) {
                    Some(a) => a,
                    None => {
                        problems.push(format!("{}: no directory above it exists", d.display()));
                        continue;
                    }
                }
            }
            Err(e) => {
                problems.push(format!("{}: {e}", d.display()));
                continue;
            }
        };
        if let Err(e) = check::writable_dir(&home) {
            problems.push(if home == **d {
                format!("{} is not writable: {e}", d.display())
            } else {
                format!(
                    "{} is missing and cannot be created: {} is not writable: {e}",
                    d.display(),
                    home.display()
                )
            });
        }
        homes.push(home);
    }
    let mut spaces: Vec<(u64, String)> = Vec::new();
    for home in &homes {
        use std::os::unix::fs::MetadataExt;
        let Ok(dev) = std::fs::metadata(home).map(|m| m.dev()) else {
            continue;
        };
        if spaces.iter().any(|(d, _)| *d == dev) {
            continue;
        }
        match check::space(home) {
            Ok(s) => {
                if let Some(p) = s.problem() {
                    problems.push(format!("{}: {p}", home.display()));
                }
                spaces.push((dev, format!("{}: {}", home.display(), s.describe())));
            }
            Err(e) => problems.push(format!(
                "{}: cannot read its free space: {e}",
                home.display()
            )),
        }
    }
    let space_text: Vec<String> = spaces.into_iter().map(|(_, s)| s).collect();
    if problems.is_empty() {
        let created = if to_create > 0 {
            format!(" ({to_create} to be created by the first pull)")
        } else {
            String::new()
        };
        Check::ok(
            LOCAL_DIRS,
            format!(
                "{} directories writable{created}; {}",
                unique.len(),
                space_text.join("; ")
            ),
        )
    } else {
        Check::failed(
            LOCAL_DIRS,
            problems.join("; "),
            format!(
                "the receiver needs to write local.log_dir and local.die_dir, with at least {} MB and {} % of the file system free",
                check::MIN_FREE_BYTES >> 20,
                check::MIN_FREE_PERCENT
            ),
        )
    }
}

/// The nearest directory above `path` that exists.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|a| a.is_dir())
        .map(Path::to_path_buf)
}

/// `original client lock`: the lock `get_slony_logs.pl` takes, taken too while a site
/// moves over: usable as the run lock must be ([`lock_check`]), with a warning that it is
/// still configured.
fn original_lock_check(path: &Path) -> Check {
    let mut check = lock_check(ORIGINAL_LOCK, path);
    if check.ok {
        let warning = super::status::original_lock_warning(path);
        check.detail = Some(match check.detail {
            Some(found) => format!("{found}; warning: {warning}"),
            None => format!("warning: {warning}"),
        });
    }
    check
}

/// `lock` (or the check `name` of another lock file of the same kind): free, or held by
/// a process that is running. Never taken to find out.
fn lock_check(name: &str, path: &Path) -> Check {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(name, format!("free (no lock file {} yet)", path.display()))
        }
        Err(e) => return Check::failed(name, format!("{}: {e}", path.display()), ""),
        Ok(m) if !m.is_file() => {
            return Check::failed(
                name,
                format!("{} is not a regular file", path.display()),
                "remove it; the next pull makes the lock file",
            )
        }
        Ok(_) => {}
    }
    if let Some(pid) = slony_shared::lock::holder(path) {
        return if check::pid_alive(pid) {
            Check::ok(
                name,
                format!("held by pid {pid}, which is running (a pull, housekeeping or subscription change at work)"),
            )
        } else {
            Check::failed(
                name,
                format!(
                    "{} is held, but pid {pid} written in it is not running here (a process of another pid namespace, or a child that inherited the lock)",
                    path.display()
                ),
                "find the process that holds the file open and stop it; every pull refuses to run meanwhile",
            )
        };
    }
    // Free: the file must still open for writing, as the next pull opens it.
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        return Check::failed(
            name,
            format!("{} cannot be opened for writing: {e}", path.display()),
            "give the file to the user the receiver runs as",
        );
    }
    let left_by = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    Check::ok(
        name,
        match left_by {
            Some(pid) => format!(
                "free: the file names pid {pid}{}, which does not hold it (an flock ends with its process, so a file left behind blocks nothing)",
                if check::pid_alive(pid) { "" } else { ", not running" }
            ),
            None => "free".to_string(),
        },
    )
}

/// `mail`, and with `--mail` the `test alert`.
async fn mail_checks(cfg: &ReceiverConfig, test_mail: bool) -> Vec<Check> {
    let alert = &cfg.alert;
    let server = format!("{}:{}", alert.smtp_host, alert.smtp_port);
    let mut out = Vec::new();
    if alert.recipients.is_empty() {
        out.push(Check::ok(MAIL, "not configured: failures are only logged"));
        if test_mail {
            out.push(Check::failed(
                TEST_ALERT,
                "no alert.recipients are configured: there is nobody to mail",
                "set [alert] recipients (and smtp_host, smtp_port, tls)",
            ));
        }
        return out;
    }
    let settings = alert.clone();
    let probe = tokio::task::spawn_blocking(move || slony_shared::mail::check_settings(&settings));
    let mail = match bounded(MAIL_TIMEOUT, "the SMTP session test", probe).await {
        Ok(Ok(Ok(()))) => Check::ok(
            MAIL,
            format!(
                "{} recipient(s); SMTP server {server} answers",
                alert.recipients.len()
            ),
        ),
        Ok(Ok(Err(e))) => Check::failed(
            MAIL,
            error_chain(&e),
            "check [alert] from, recipients, smtp_host, smtp_port and tls",
        ),
        Ok(Err(e)) => Check::failed(MAIL, format!("internal: {e}"), ""),
        Err(why) => Check::failed(MAIL, why, ""),
    };
    let mail_ok = mail.ok;
    out.push(mail);
    if test_mail {
        out.push(if mail_ok {
            let alerter = Alerter::for_site(cfg);
            let sent = tokio::task::spawn_blocking(move || alerter.send_test());
            match bounded(MAIL_TIMEOUT, "sending the test alert", sent).await {
                Ok(Ok(Ok(()))) => Check::ok(
                    TEST_ALERT,
                    format!("sent to {} via {server}", alert.recipients.join(", ")),
                ),
                Ok(Ok(Err(e))) => Check::failed(TEST_ALERT, error_chain(&e), ""),
                Ok(Err(e)) => Check::failed(TEST_ALERT, format!("internal: {e}"), ""),
                Err(why) => Check::failed(TEST_ALERT, why, ""),
            }
        } else {
            Check::skipped(TEST_ALERT, MAIL)
        });
    }
    out
}

/// `e` and its sources, `: `-separated, as `{:#}` prints an anyhow error.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_clients_lock_is_checked_as_the_run_lock_and_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jsoc.lock");
        let c = original_lock_check(&path);
        assert!(c.ok, "{}", c.line());
        assert!(c.line().contains("no lock file"), "{}", c.line());
        assert!(
            c.line().contains("warning: the original client's lock"),
            "{}",
            c.line()
        );
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        let c = original_lock_check(&path);
        assert!(
            !c.ok && c.line().contains("not a regular file"),
            "{}",
            c.line()
        );
        assert!(!c.line().contains("warning:"), "{}", c.line());
    }

    #[test]
    fn a_lock_is_free_held_or_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slony-receiver.lab.lock");
        let c = lock_check(LOCK, &path);
        assert!(c.ok && c.line().contains("no lock file"), "{}", c.line());
        let held = slony_shared::lock::RunLock::try_acquire(&path).unwrap();
        let c = lock_check(LOCK, &path);
        assert!(c.ok, "{}", c.line());
        assert!(
            c.line().contains(&format!(
                "held by pid {}, which is running",
                std::process::id()
            )),
            "{}",
            c.line()
        );
        drop(held);
        let c = lock_check(LOCK, &path);
        assert!(
            c.ok && c.line().contains("free: the file names pid"),
            "{}",
            c.line()
        );
        std::fs::write(&path, "not a pid\n").unwrap();
        assert_eq!(lock_check(LOCK, &path).line(), "lock: OK (free)");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let c = lock_check(LOCK, &path);
        assert!(
            !c.ok && c.line().contains("not a regular file"),
            "{}",
            c.line()
        );
    }

    #[test]
    fn directories_missing_are_created_later_and_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("local");
        let dirs = vec![
            log.clone(),
            log.join("site1"),
            log.join("site1/incoming"),
            log.clone(),
        ];
        let c = dirs_check(&dirs);
        assert!(c.ok, "{}", c.line());
        assert!(
            c.line()
                .contains("3 directories writable (3 to be created by the first pull)"),
            "{}",
            c.line()
        );
        assert!(c.line().contains("MB free"), "{}", c.line());
        std::fs::write(&log, "a file where the directory should be").unwrap();
        let c = dirs_check(&dirs);
        assert!(!c.ok, "{}", c.line());
        assert!(c.line().contains("is not a directory"), "{}", c.line());
    }
}
