//! Secrets stay secret: a password inside the replica's connection URL (or conninfo), or
//! in `verify --reference`, appears in no message, log line (at debug level), alert mail,
//! state file or `status`/`promote` output; and the files a pull writes are its owner's
//! only.

use crate::support::receiver::{run_receiver, run_receiver_env, Run};
use crate::support::site::{ConfigChange, Options, Site};
use crate::support::workload::Format;
use crate::support::{free_port, TestDir};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The role that logs in with a password.
const ROLE: &str = "rx";
/// Its password (the part after the dash is what the checks look for).
const RIGHT: &str = "R1ght-51c0e2";
/// A wrong one, percent-encoded in the URLs.
const WRONG: &str = "Wr0ng+7f3a9c";
/// What must never be seen: a piece of each password, in every form they are written.
const NEVER: [&str; 2] = ["51c0e2", "7f3a9c"];

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                todo.push(entry.path());
            } else if ft.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// Panics if a piece of a password is in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for secret in NEVER {
        assert!(
            !text.contains(secret),
            "{what} shows the password ({secret}):\n{text}"
        );
    }
}

/// A run with debug logging, checked for secrets in everything it printed.
fn run_checked(site: &Site, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug"));
    let run = run_receiver_env(&site.config, args[0], &args[1..], &env);
    assert_no_secret(&format!("stdout of {args:?}"), &run.stdout);
    assert_no_secret(&format!("stderr of {args:?}"), &run.stderr);
    run
}

/// Points the site's config at a `[database] url`.
fn use_url(site: &Site, url: &str) {
    let database = format!("url = \"{url}\"\nconnect_timeout_secs = 5\n");
    site.write_config(ConfigChange {
        database: Some(&database),
        ..ConfigChange::default()
    });
}

/// The replica's URL with a wrong password, then a conninfo to a closed port, then the
/// right URL: every run's output (debug logs included), the alert mails, the files under
/// the local directory, `status --json`, `check --json`, `verify` and `promote` keep the
/// passwords out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_passwords_stay_out_of_output_mail_and_files() {
    let site = Site::start(
        "secrets",
        Options {
            archives: 3,
            mail: true,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 3);
    let dba = site.dir.join("dba.toml");
    std::fs::copy(&site.config, &dba).unwrap();
    let su = site.pg.connect("replica").await;
    su.batch_execute(&format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{RIGHT}'"))
        .await
        .unwrap();
    let run = run_receiver(&dba, "init", &["--apply-role", ROLE]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    site.pg
        .hba_first(&format!("host all {ROLE} 127.0.0.1/32 scram-sha-256"))
        .await;
    let port = site.pg.port();

    // A wrong password in the URL (percent-encoded): authentication fails.
    let wrong_url = format!(
        "postgres://{ROLE}:{}@127.0.0.1:{port}/replica",
        WRONG.replace('+', "%2B")
    );
    use_url(&site, &wrong_url);
    let run = run_checked(&site, &["pull", "--once"], &[]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("postgres://{ROLE}:***@127.0.0.1:{port}/replica")),
        "{}",
        run.stderr
    );
    let status = run_checked(&site, &["status", "--json"], &[]);
    assert_eq!(status.code, 5, "{}", status.stderr);
    let json = status.json();
    assert!(
        json["database_error"]
            .as_str()
            .is_some_and(|e| e.contains(":***@")),
        "{json}"
    );
    let check = run_checked(&site, &["check", "--json"], &[]);
    assert_eq!(check.code, 20, "{}", check.stdout);
    let database = check.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "replica database")
        .cloned()
        .unwrap();
    assert_eq!(database["ok"], false, "{database}");
    assert!(
        database["detail"]
            .as_str()
            .is_some_and(|e| e.contains(":***@") && e.contains("password authentication failed")),
        "{database}"
    );

    // A libpq conninfo with the right password, to a closed port.
    use_url(
        &site,
        &format!(
            "host=127.0.0.1 port={} user={ROLE} password='{RIGHT} x' dbname=replica",
            free_port()
        ),
    );
    let run = run_checked(&site, &["pull", "--once"], &[]);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("password=***"), "{}", run.stderr);

    // verify: a URL password, a wrong one, or one taken from the environment.
    use_url(
        &site,
        &format!("postgres://{ROLE}:{RIGHT}@127.0.0.1:{port}/replica"),
    );
    let run = run_checked(&site, &["verify", "--reference", &wrong_url], &[]);
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    let keyword_ref = format!("host=127.0.0.1 port={port} user={ROLE} dbname=replica");
    let run = run_checked(
        &site,
        &[
            "verify",
            "--reference",
            &keyword_ref,
            "--reference-password-env",
            "SLONY_TEST_REFERENCE_PW",
        ],
        &[("SLONY_TEST_REFERENCE_PW", RIGHT)],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("all the same"), "{}", run.stdout);
    let run = run_checked(
        &site,
        &[
            "verify",
            "--reference",
            &keyword_ref,
            "--reference-password-env",
            "SLONY_TEST_UNSET_PW",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);

    // The right URL: the pull recovers, then status and promote.
    let run = run_checked(&site, &["pull", "--once"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 3);
    let run = run_checked(&site, &["status", "--json"], &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let run = run_checked(&site, &["promote"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("postgres://{ROLE}:***@127.0.0.1:{port}/replica")),
        "{}",
        run.stdout
    );
    let marker = site.site_dir().join("PROMOTED");
    assert_eq!(
        std::fs::metadata(&marker).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The failure and the recovery were mailed, without the passwords.
    let mails = site.mails(2);
    assert!(mails[0].body.contains(":***@"), "{}", mails[0].body);
    for mail in &mails {
        assert_no_secret("an alert mail", &mail.raw);
        assert_no_secret("an alert mail", &mail.body);
        assert_no_secret("an alert mail", &mail.subject);
    }
    let files = files_under(&site.local());
    assert!(
        files.iter().any(|f| f.ends_with("alert_state.json")),
        "{files:?}"
    );
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert_no_secret(&file.display().to_string(), &text);
    }
}

/// Downloads (single files and batch members), the applied archives, housekeeping's
/// batches, the counter, the alert state and the lock: files 0600, directories 0700.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_and_directories_a_pull_writes_are_private() {
    let site = Site::start(
        "private-files",
        Options {
            archives: 30,
            extra: "[housekeeping]\nbatch_size = 10\n".into(),
            ..Options::default()
        },
    )
    .await;
    // The test means something only if the umask would let others read.
    let probe = TestDir::new("umask");
    std::fs::write(probe.join("probe"), "x").unwrap();
    let probe_mode = std::fs::metadata(probe.join("probe"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(probe_mode & 0o044, 0, "the umask hides files already");

    site.publish(1, 10);
    site.publish_batch(11, 20, Format::Copy22);
    site.publish(21, 30);
    // A failed run first, for the alert state.
    site.write_config(ConfigChange {
        ssh_port: Some(free_port()),
        ..ConfigChange::default()
    });
    assert_eq!(site.pull().code, 3);
    site.write_config(ConfigChange::default());
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 30);
    let seen = private_tree(&site.local());
    for expected in [
        "slony-receiver.lab.lock",
        "site1/slony_counter.txt",
        "site1/alert_state.json",
        "site1/applied/slony1_log_2_00000000000000000001.sql",
        // Extracted from the provider's batch.
        "site1/applied/slony1_log_2_00000000000000000015.sql",
        "site1/applied/slony1_log_2_00000000000000000030.sql",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "no {expected} in {seen:?}"
        );
    }
    let run = site.run(&["housekeeping"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = private_tree(&site.local());
    for expected in [
        "site1/batches/slony_logs_1-10.tar.gz",
        "site1/batches/slony_logs_11-20.tar.gz",
        "site1/batches/slony_logs_21-30.tar.gz",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "no {expected} in {seen:?}"
        );
    }
}

/// Checks that every directory under `local` (itself included) is 0700 and every file
/// 0600; returns the files, relative to `local`.
fn private_tree(local: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let mut todo = vec![local.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "directory {}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                todo.push(path);
            } else {
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "file {}", path.display());
                seen.push(path.strip_prefix(local).unwrap().display().to_string());
            }
        }
    }
    seen
}
