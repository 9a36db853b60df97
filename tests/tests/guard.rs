//! Replica guardrails end to end: `guard on|off|check`, `verify` and `promote` against a
//! real PostgreSQL replica fed by `pull --once` over a real sshd.
//!
//! One scenario on one server (a PostgreSQL start is the expensive part): the guard
//! refuses ordinary writes while archives still apply; `guard check` and `status` see an
//! unguarded table; `verify` compares with a reference database holding the expected
//! data; `promote` makes the database writable and stops pull for good.

use crate::support::site::{Options, Site};
use crate::support::workload::{self, Change};
use serde_json::Value;
use std::path::PathBuf;

/// Archives in the stream.
const ARCHIVES: u64 = 40;
/// The message of a refused write to s1.t1 (the provider host is 127.0.0.1).
const REFUSED_T1: &str =
    "table s1.t1 is replicated from 127.0.0.1; writes are refused on this replica";

/// The marker `promote` leaves in the site directory.
fn promoted_marker(site: &Site) -> PathBuf {
    site.site_dir().join("PROMOTED")
}

/// The tables `status --json` reports as unguarded.
fn guard_missing(site: &Site) -> Value {
    site.run(&["status", "--json"]).json()["guard_missing"].clone()
}

/// Runs `sql` in an ordinary session of the replica; returns the error's message, code
/// and detail, or `None` if it succeeded.
async fn try_write(c: &tokio_postgres::Client, sql: &str) -> Option<(String, String, String)> {
    match c.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"));
            let text = (
                db.message().to_string(),
                db.code().code().to_string(),
                db.detail().unwrap_or("").to_string(),
            );
            eprintln!(
                "--- refused write: {sql}\nERROR:  {}\nDETAIL:  {}\nHINT:  {}\nSQLSTATE: {}",
                text.0,
                text.2,
                db.hint().unwrap_or(""),
                text.1
            );
            Some(text)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_verify_and_promote() {
    let site = Site::start(
        "guard",
        Options {
            archives: ARCHIVES,
            seed: 5,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 20);
    assert_eq!(site.run(&["pull", "--once"]).code, 0);
    assert_eq!(site.counter().await, 20);

    // Nothing is guarded yet: check says so, and fails.
    let run = site.run(&["guard", "check"]);
    assert_eq!(run.code, 20, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("2 of 2 replicated table(s) are NOT guarded"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("s1.t1") && run.stdout.contains("s1.t2"));
    assert_eq!(guard_missing(&site), serde_json::json!(["s1.t1", "s1.t2"]));

    // `guard on` is idempotent.
    let run = site.run(&["guard", "on"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("newly guarded or repaired: s1.t1, s1.t2"),
        "{}",
        run.stdout
    );
    let run = site.run(&["guard", "on"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("all were already guarded"),
        "{}",
        run.stdout
    );
    assert_eq!(site.run(&["guard", "check"]).code, 0);
    assert_eq!(guard_missing(&site), serde_json::json!([]));
    let status = site.run(&["status"]);
    assert!(
        status.stdout.contains("guard ")
            && status
                .stdout
                .contains("ok (replicated tables refuse local writes)"),
        "{}",
        status.stdout
    );

    // Ordinary sessions cannot write, in any way.
    let replica = site.pg.connect("replica").await;
    let (message, code, detail) = try_write(&replica, "INSERT INTO s1.t1 (id) VALUES (1000000)")
        .await
        .expect("the insert must be refused");
    assert_eq!(message, REFUSED_T1);
    assert_eq!(code, "25006", "read_only_sql_transaction");
    assert!(detail.contains("INSERT refused"), "{detail}");
    for sql in [
        "UPDATE s1.t1 SET txt = 'local'",
        "DELETE FROM s1.t1",
        "TRUNCATE s1.t1",
    ] {
        let (message, _, _) = try_write(&replica, sql)
            .await
            .unwrap_or_else(|| panic!("{sql} must be refused"));
        assert_eq!(message, REFUSED_T1, "{sql}");
    }
    let (message, _, _) = try_write(&replica, "INSERT INTO s1.t2 VALUES ('local', 1)")
        .await
        .expect("refused");
    assert_eq!(
        message,
        "table s1.t2 is replicated from 127.0.0.1; writes are refused on this replica"
    );

    // Archives touching the same tables still apply.
    let touched: usize = site.stream[20..]
        .iter()
        .flatten()
        .filter(|c| !matches!(c, Change::SetSeq(_)))
        .count();
    assert!(touched > 10, "the later archives change the guarded tables");
    site.publish(21, ARCHIVES);
    let run = site.run(&["pull", "--once"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, ARCHIVES);

    // verify against a reference holding the expected data: the same.
    site.pg.create_db("reference").await;
    let reference = site.pg.connect("reference").await;
    reference.batch_execute(workload::SCHEMA_SQL).await.unwrap();
    workload::apply_expected(&reference, &site.stream, ARCHIVES).await;
    let conninfo = site.pg.conninfo("reference");
    let run = site.run(&["verify", "--reference", &conninfo]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("at archive {ARCHIVES}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2 table(s) compared: all the same"),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.matches(" same ").count(), 2, "{}", run.stdout);

    // A row altered behind the guard's back (replica role, as an archive would): drift.
    replica
        .batch_execute(
            "SET session_replication_role = replica;
             UPDATE s1.t1 SET txt = 'drifted' WHERE id = (SELECT min(id) FROM s1.t1);
             RESET session_replication_role;",
        )
        .await
        .unwrap();
    let run = site.run(&["verify", "--reference", &conninfo]);
    assert_eq!(run.code, 21, "{}{}", run.stdout, run.stderr);
    let t1 = run.stdout.lines().find(|l| l.contains("s1.t1")).unwrap();
    assert!(
        t1.contains("DIFFERS") && t1.contains("on both") && t1.contains("hash: replica"),
        "{t1}"
    );
    let t2 = run.stdout.lines().find(|l| l.contains("s1.t2")).unwrap();
    assert!(t2.contains(" same "), "{t2}");
    assert!(
        run.stdout.contains("1 same, 1 differ (s1.t1)"),
        "{}",
        run.stdout
    );
    let run = site.run(&["verify", "--reference", &conninfo, "--tables", "s1.t2"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let run = site.run(&["verify", "--reference", &conninfo, "--tables", "s1.t2;drop"]);
    assert_eq!(run.code, 2, "a bad table name is a bad command line");

    // A new table is unguarded until `guard on`; a disabled trigger is reported too.
    replica
        .batch_execute(
            "CREATE TABLE s1.t3 (id serial PRIMARY KEY, v text);
             INSERT INTO s1.t3 VALUES (1, 'a'), (2, 'b'), (7, 'c');
             ALTER TABLE s1.t2 DISABLE TRIGGER slony_receiver_guard;",
        )
        .await
        .unwrap();
    let run = site.run(&["guard", "check"]);
    assert_eq!(run.code, 20, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("2 of 3 replicated table(s) are NOT guarded"),
        "{}",
        run.stdout
    );
    let t3 = run.stdout.lines().find(|l| l.contains("s1.t3")).unwrap();
    assert!(t3.contains("not guarded"), "{t3}");
    let t2 = run.stdout.lines().find(|l| l.contains("s1.t2")).unwrap();
    assert!(
        t2.contains("trigger slony_receiver_guard is disabled"),
        "{t2}"
    );
    assert_eq!(guard_missing(&site), serde_json::json!(["s1.t2", "s1.t3"]));
    let run = site.run(&["guard", "on"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("newly guarded or repaired: s1.t2, s1.t3"),
        "{}",
        run.stdout
    );
    assert_eq!(site.run(&["guard", "check"]).code, 0);
    // The default set of verify now holds s1.t3, which the reference does not have.
    let run = site.run(&["verify", "--reference", &conninfo]);
    assert_eq!(run.code, 21);
    assert!(
        run.stdout.contains("missing on the reference"),
        "{}",
        run.stdout
    );

    // `guard off` then `on` again round-trips.
    let run = site.run(&["guard", "off"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("removed from 3 table(s)"),
        "{}",
        run.stdout
    );
    assert!(try_write(&replica, "INSERT INTO s1.t3 VALUES (100, 'x')")
        .await
        .is_none());
    replica
        .batch_execute("DELETE FROM s1.t3 WHERE id = 100")
        .await
        .unwrap();
    assert_eq!(site.run(&["guard", "on"]).code, 0);

    // promote while a pull holds the run lock: refused, nothing changes.
    let lock = slony_shared::lock::RunLock::try_acquire(&site.lock_file()).unwrap();
    let run = site.run(&["promote"]);
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert!(run.stderr.contains("Not promoting"), "{}", run.stderr);
    assert!(!promoted_marker(&site).exists());
    assert!(
        try_write(&replica, "INSERT INTO s1.t1 (id) VALUES (1000000)")
            .await
            .is_some()
    );
    drop(lock);

    // promote: marker, guard gone, next steps, the sequence behind its column.
    let run = site.run(&["promote"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for needle in [
        "promoted: site site1 (cluster lab) is now a writable database",
        &format!("last archive applied: {ARCHIVES} (created 2026-11-21 10:00:40.123456"),
        "guard:                removed from 3 table(s): s1.t1, s1.t2, s1.t3",
        "What to do next:",
        "sequence s1.t3_id_seq is at 1 but s1.t3.id already holds 7",
        "no longer feeds this database",
    ] {
        assert!(
            run.stdout.contains(needle),
            "{needle:?} in:\n{}",
            run.stdout
        );
    }
    let marker = std::fs::read_to_string(promoted_marker(&site)).unwrap();
    assert!(
        marker.contains(&format!("counter={ARCHIVES}\n")),
        "{marker}"
    );
    assert!(
        marker.contains("counter_created=2026-11-21 10:00:40.123456\n"),
        "{marker}"
    );

    // Ordinary writes succeed now.
    assert!(
        try_write(&replica, "INSERT INTO s1.t1 (id) VALUES (1000000)")
            .await
            .is_none()
    );
    assert!(try_write(&replica, "TRUNCATE s1.t2").await.is_none());

    // pull refuses for good.
    let run = site.run(&["pull", "--once"]);
    assert_eq!(run.code, 22, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("at archive {ARCHIVES}; pull will not run again (remove {} only if you re-initialise the replica)", promoted_marker(&site).display())),
        "{}",
        run.stderr
    );

    // promote is idempotent; guard check accepts the promoted state; guard on refuses.
    let run = site.run(&["promote"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("already promoted"), "{}", run.stdout);
    let run = site.run(&["guard", "check"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("promoted"), "{}", run.stdout);
    assert_eq!(site.run(&["guard", "on"]).code, 22);
    assert!(
        try_write(&replica, "INSERT INTO s1.t1 (id) VALUES (1000001)")
            .await
            .is_none()
    );
}
