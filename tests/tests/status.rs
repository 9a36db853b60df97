//! `slony-receiver status` end to end: a real PostgreSQL replica and a real sshd serving
//! the provider directory, with a known backlog, so the lag figures are exact.
//!
//! The workload gives archive N the creation time `2026-11-21 10:MM:SS.123456+00`, N
//! seconds after 10:00:00, so a replica at 10 behind a provider at 25 is 15 archives and
//! 15 seconds behind.

use crate::support::free_port;
use crate::support::receiver::Run;
use crate::support::site::{ConfigChange, Options, Site, CLUSTER, NODE};
use crate::support::workload;
use serde_json::Value;

/// Runs `slony-receiver status`, with `--json` if `json`.
fn status(site: &Site, json: bool) -> Run {
    if json {
        site.run(&["status", "--json"])
    } else {
        site.run(&["status"])
    }
}

/// Writes the site's config with `extra` appended (a `[status]` section).
fn with_extra(site: &Site, extra: &str) {
    site.write_config(ConfigChange {
        extra,
        ..ConfigChange::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_against_a_live_setup_with_a_known_backlog() {
    let site = Site::start(
        "status-backlog",
        Options {
            archives: 25,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 10);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    site.publish(11, 25);

    let run = status(&site, true);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["cluster"], CLUSTER);
    assert_eq!(s["node"], NODE);
    assert_eq!(s["counter"], 10);
    assert_eq!(s["counter_created"], "2026-11-21 10:00:10.123456");
    assert!(s["counter_applied"].is_string(), "{s}");
    assert_eq!(s["provider_newest"], 25);
    assert_eq!(
        s["provider_newest_created"],
        "2026-11-21 10:00:25.123456+00"
    );
    assert_eq!(s["lag_archives"], 15);
    assert_eq!(s["lag_seconds"], 15);
    assert_eq!(s["paused"], false);
    assert_eq!(s["running"], false);
    assert_eq!(s["running_pid"], Value::Null);
    assert_eq!(s["waiting_local"], 0);
    assert_eq!(s["last_error"], Value::Null);
    assert_eq!(s["database_error"], Value::Null);
    assert_eq!(s["provider_error"], Value::Null);
    assert_eq!(s["max_lag_archives"], 100);
    assert_eq!(s["max_lag_secs"], 3600);
    assert_eq!(s["healthy"], true);
    assert_eq!(s["problems"], serde_json::json!([]));

    // The human table: same facts, one per line.
    let run = status(&site, false);
    assert_eq!(run.code, 0, "{}", run.stderr);
    eprintln!("=== human status output ===\n{}", run.stdout);
    let line = |label: &str| -> String {
        run.stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", run.stdout))
            .to_string()
    };
    assert!(line("counter ").ends_with(" 10"), "{}", run.stdout);
    assert!(line("provider newest ").ends_with(" 25"), "{}", run.stdout);
    assert!(line("lag (archives) ").ends_with(" 15"), "{}", run.stdout);
    assert!(line("lag (seconds) ").ends_with(" 15"), "{}", run.stdout);
    assert!(line("paused ").ends_with(" no"), "{}", run.stdout);
    assert!(line("health ").ends_with(" ok"), "{}", run.stdout);

    // A tighter threshold turns the same backlog into a failed check.
    with_extra(&site, "[status]\nmax_lag_archives = 5\n");
    let run = status(&site, true);
    assert_eq!(run.code, 20, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["healthy"], false);
    assert_eq!(s["max_lag_archives"], 5);
    assert_eq!(
        s["problems"],
        serde_json::json!(["lag of 15 archives is above max_lag_archives = 5"])
    );
    let run = status(&site, false);
    assert_eq!(run.code, 20, "{}", run.stderr);
    assert!(
        run.stdout.contains("UNHEALTHY: lag of 15 archives"),
        "{}",
        run.stdout
    );
    with_extra(&site, "[status]\nmax_lag_secs = 10\n");
    let run = status(&site, true);
    assert_eq!(run.code, 20, "{}", run.stderr);
    assert_eq!(
        run.json()["problems"],
        serde_json::json!(["lag of 15 s (15s) is above max_lag_secs = 10"])
    );
    site.write_config(ConfigChange::default());

    // Paused: reported, and still healthy (a pause is deliberate).
    std::fs::write(site.die_file(), "").unwrap();
    let run = status(&site, true);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["paused"], true);
    assert_eq!(s["die_file"], site.die_file().display().to_string());
    assert_eq!(s["counter"], 10);
    std::fs::remove_file(site.die_file()).unwrap();
    assert_eq!(status(&site, true).json()["paused"], false);

    // Running: some process holds the run lock (here, this test); an archive waits locally.
    let lock = slony_shared::lock::RunLock::try_acquire(&site.lock_file()).unwrap();
    let waiting = site.incoming().join(workload::archive_name(11));
    std::fs::write(&waiting, "").unwrap();
    let run = status(&site, true);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["running"], true);
    assert_eq!(s["running_pid"], std::process::id());
    assert_eq!(s["waiting_local"], 1);
    drop(lock);
    std::fs::remove_file(&waiting).unwrap();
    assert_eq!(status(&site, true).json()["running"], false);

    // An unreachable provider: exit 3, the replica's side still reported.
    site.write_config(ConfigChange {
        ssh_port: Some(free_port()),
        ..ConfigChange::default()
    });
    let run = status(&site, true);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["counter"], 10);
    assert_eq!(s["provider_newest"], Value::Null);
    assert_eq!(s["lag_archives"], Value::Null);
    assert_eq!(s["lag_seconds"], Value::Null);
    assert!(
        s["provider_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{s}"
    );
    assert_eq!(s["healthy"], false);

    // An unreachable database: exit 5, the provider's side still reported.
    site.write_config(ConfigChange {
        pg_port: Some(free_port()),
        ..ConfigChange::default()
    });
    let run = status(&site, true);
    assert_eq!(run.code, 5, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["counter"], Value::Null);
    assert_eq!(s["provider_newest"], 25);
    assert_eq!(s["lag_archives"], Value::Null);
    assert!(s["database_error"].is_string(), "{s}");
    let run = status(&site, false);
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("counter ") && l.ends_with(" -")),
        "{}",
        run.stdout
    );
    site.write_config(ConfigChange::default());

    // An active pull failure (archive 11 gone: a gap) makes the check fail too.
    std::fs::remove_file(site.provider.join(workload::archive_name(11))).unwrap();
    let run = site.pull();
    assert_ne!(run.code, 0, "the gap must fail the pull");
    let run = status(&site, true);
    assert_eq!(run.code, 20, "{}", run.stderr);
    let s = run.json();
    assert_eq!(s["counter"], 10);
    assert_eq!(s["provider_newest"], 25);
    assert_eq!(s["lag_archives"], 15);
    assert_eq!(s["last_error"]["key"], "gap:11");
    assert_eq!(s["last_error"]["runs"], 1);
    assert!(
        s["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("11")),
        "{s}"
    );
    assert_eq!(s["healthy"], false);
}
