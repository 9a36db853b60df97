//! Real Slony-I as the producer of record.
//!
//! [`real_slony_archives_replicate_origin`] builds a real Slony-I 2.2.11 cluster on a
//! private PostgreSQL (Debian packages `slony1-2-bin` and `postgresql-15-slony1-2`):
//! node 1 = database `origin`, node 2 = database `sub1`, whose `slon -a` writes the
//! log-shipping archives. The offline replica (database `replica`) is initialised the
//! documented way, with Slony's own `slony1_dump.sh` run against node 2 while its slon
//! is stopped. The origin then gets awkward DML, a TRUNCATE, sequence changes, a
//! 2 MB row, primary-key updates, many small transactions and a DDL change through
//! slonik `EXECUTE SCRIPT`. sshd serves slon's archive directory as the provider's
//! site directory and `slony-receiver pull --once` applies it: once while both slons
//! still run (archives keep arriving), once more after they stopped. The replica must
//! then equal the origin table by table and sequence by sequence, at exactly node 2's
//! archive counter. Finally `slony-manager cut` cuts the same archives for a site
//! subscribed to two of the tables (database `subset`, loaded from the same dump), with
//! the sequence list `slony-manager run` decided for it from node 2's catalog (Slony's
//! own `sl_sequence`): the set sequence one of its tables owns, not the set sequence no
//! table owns. After its pull those objects equal the origin and the others are as the
//! dump left them.
//!
//! [`real_slony_subscription_changes_while_behind`] drives subscription changes through
//! `slony-manager run` on node 2 while slon writes the archives and the manager cuts the
//! site's stream from them: a new site with tables reachable only by quoted names, then
//! a table added and one unsubscribed with `allow_drop` while the site is eleven or so
//! archives behind, an EXECUTE SCRIPT naming a table unqualified, and a re-subscription.
//!
//! [`pre_22_statement_archives`] needs no Slony: it applies the hand-written archives
//! in `tests/fixtures/pre-2.2/`, bodies of plain INSERT/UPDATE/DELETE statements as
//! Slony-I 1.2.11 to 2.1 wrote them, with the JSOC splitter's `-- EOL` end marker and
//! no `session_replication_role` line in the header, then checks the rows one by one;
//! a Slony-I 1.x archive (`setsyncTracking_offline`) after them is refused.

use crate::support::manager::{ManagerDaemon, ManagerToml};
use crate::support::pg::PgServer;
use crate::support::receiver::{receiver_toml, Endpoints};
use crate::support::slony::{run_bounded, Slon, Slony};
use crate::support::ssh::SshServer;
use crate::support::TestDir;
use crate::support::{bin_path, tail};
use slony_shared::archive::ArchiveName;
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The Slony cluster (schema `"_lab"` on every node and on the replica).
const CLUSTER: &str = "lab";
/// The receiver's site name: its archives are read from `<remote.log_dir>/<SITE>/`.
const SITE: &str = "lab_site";
/// The whole real-Slony scenario must finish within this (each wait is capped by it).
const BUDGET: Duration = Duration::from_secs(100);

/// The replicated tables (schema `app`) and the columns that order their rows.
const TABLES: &[(&str, &str)] = &[
    ("docs", "id"),
    ("kv", "k"),
    ("pairs", "a, b"),
    ("odd", "id"),
    ("scratch", "id"),
];
/// The replicated sequences (schema `app`).
const SEQUENCES: &[&str] = &["ticket_seq", "docs_id_seq"];

/// The user schema, identical in origin, sub1 and replica (Slony replicates data, not
/// schema; the one DDL change travels through EXECUTE SCRIPT).
const SCHEMA_SQL: &str = r#"
CREATE SCHEMA app;
CREATE TABLE app.docs (id bigserial PRIMARY KEY, body text, amount numeric, at timestamptz,
                       raw bytea, big text);
CREATE TABLE app.kv (k text PRIMARY KEY, v int, tags int[], doc jsonb);
CREATE TABLE app.pairs (a int, b int, payload text, PRIMARY KEY (a, b));
CREATE TABLE app.odd (id int PRIMARY KEY, "MixedCase" text, "order" date, "sp ace" double precision,
                      flag boolean, span interval, u uuid);
CREATE TABLE app.scratch (id int PRIMARY KEY, note varchar(60));
CREATE SEQUENCE app.ticket_seq INCREMENT BY 7 START WITH 100;
"#;

/// Rows on the origin before Slony is set up (they reach sub1 by Slony's initial
/// copy, and the replica through slony1_dump.sh).
const SEED_SQL: &str = r#"
INSERT INTO app.docs (body, amount, at, raw) VALUES
  ('seed plain', 1.5, '2020-01-02 03:04:05.678+00', '\x00010203'),
  (E'seed it''s "quoted"\nsecond line\ttab \\ backslash é ☃ 𝄞', -0.000001, '1999-12-31 23:59:59+05:30', '\xdeadbeef'),
  (NULL, NULL, NULL, NULL);
INSERT INTO app.kv VALUES ('seed', 1, '{1,NULL,3}', '{"a": [1, "x"], "q": "it''s"}');
INSERT INTO app.odd VALUES (1, E'Zürich\r\nCRLF', '2024-02-29', 'NaN', true, '1 day 02:03:04',
                            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
INSERT INTO app.scratch SELECT g, 'seed ' || g FROM generate_series(1, 3) g;
SELECT nextval('app.ticket_seq');
"#;

/// Text values that are hard to carry through COPY escaping, array literals and SQL.
const AWKWARD: &[&str] = &[
    "it's \"quoted\"",
    "tab\there",
    "new\nline",
    "cr\r\nlf",
    "back\\slash \\\\ two",
    "unicode é ☃ 𝄞",
    "NULL",
    "",
    "\\N",
    "\\.",
    "{braces},commas",
    "semi; -- not a comment /* nor this */ $$ dollar $$",
    "E'\\x41' and \\x00ff",
];

/// The DDL change, run through slonik EXECUTE SCRIPT in the middle of the load.
const DDL_SCRIPT: &str = "-- a comment line; with a semicolon
alter table app.kv add column extra text default 'dflt';
comment on table app.kv is 'it''s commented; with a semicolon';
";

/// A deadline for the whole scenario: every wait takes the smaller of its own limit
/// and what is left of the budget.
struct Budget {
    deadline: Instant,
}

impl Budget {
    fn new(total: Duration) -> Budget {
        Budget {
            deadline: Instant::now() + total,
        }
    }

    /// `limit`, or less if the budget ends sooner.
    fn cap(&self, limit: Duration) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the test's time budget of {BUDGET:?} is used up"
        );
        limit.min(left)
    }
}

/// The real Slony lab: PostgreSQL with origin, sub1 and replica, and the two slons.
/// Fields drop in order: the slons stop before PostgreSQL does.
struct Lab {
    slon1: Option<Slon>,
    slon2: Option<Slon>,
    slony: Slony,
    pg: PgServer,
    /// slonik scripts, logs, the dump, the receiver's config and local directory.
    dir: TestDir,
    /// `<dir>/provider`, the receiver's `remote.log_dir`.
    provider: PathBuf,
    /// `<provider>/<SITE>`: slon 2's `-a` directory, served as the site directory.
    archive_dir: PathBuf,
    budget: Budget,
}

impl Lab {
    /// A lab of its own: PostgreSQL, the Slony binaries, a test directory `name` with
    /// slon 2's archive directory `provider/<SITE>`.
    fn new(name: &str) -> Lab {
        let pg = PgServer::start();
        let slony = Slony::locate(&pg);
        let dir = TestDir::new(name);
        let provider = dir.mkdir("provider");
        let archive_dir = dir.mkdir(format!("provider/{SITE}"));
        Lab {
            slon1: None,
            slon2: None,
            slony,
            pg,
            dir,
            provider,
            archive_dir,
            budget: Budget::new(BUDGET),
        }
    }

    /// Sets up the cluster: node 1 = `origin`, node 2 = `sub1`, set 1 holding `tables` and
    /// `sequences` (fully qualified names as slonik takes them); starts both slons (slon 2
    /// not archiving yet) and waits until node 2's subscription is active.
    async fn replicate(&mut self, started: Instant, tables: &[String], sequences: &[String]) {
        let mut init = String::from(
            "init cluster (id = 1, comment = 'origin');\n\
             create set (id = 1, origin = 1, comment = 'app');\n",
        );
        // A slonik string doubles its single quotes, as SQL does.
        for (id, table) in tables.iter().enumerate() {
            init += &format!(
                "set add table (set id = 1, origin = 1, id = {}, fully qualified name = '{}');\n",
                id + 1,
                table.replace('\'', "''")
            );
        }
        for (id, seq) in sequences.iter().enumerate() {
            init += &format!(
                "set add sequence (set id = 1, origin = 1, id = {}, fully qualified name = '{seq}');\n",
                id + 1
            );
        }
        init += &format!(
            "store node (id = 2, comment = 'subscriber, writes the archives', event node = 1);\n\
             store path (server = 1, client = 2, conninfo = '{}', connretry = 1);\n\
             store path (server = 2, client = 1, conninfo = '{}', connretry = 1);\n",
            self.slony.conninfo("origin"),
            self.slony.conninfo("sub1")
        );
        self.slonik("init", &init);
        progress(started, "cluster initialised (slonik init)");
        self.start_slon1();
        self.start_slon2(false);
        // slon 2 first processes node 1's STORE_NODE, ENABLE_NODE and STORE_PATH, then the
        // subscription's events. While it rebuilds its listen configuration for such an
        // event, its listener for node 1 may find nothing to listen for, and then sleeps a
        // fixed 10 s (remote_listen.c). A restarted slon reads the configuration afresh, so
        // these two waits restart slon 2 when it makes no progress for a while.
        let origin = self.pg.connect("origin").await;
        let sub1 = self.pg.connect("sub1").await;
        let init_events = last_event_of_node1(&origin).await;
        let db = &sub1;
        self.wait_restarting_slon2(
            Duration::from_secs(30),
            "node 2 to process node 1's configuration events",
            || async move { confirmed_by_node2(db).await >= init_events },
        )
        .await;
        progress(started, "node 2 processed the configuration events");
        self.slonik(
            "subscribe",
            "subscribe set (id = 1, provider = 1, receiver = 2, forward = yes);\n",
        );
        progress(started, "subscribe set submitted");
        let active = format!(
            "SELECT count(*) FROM \"_{CLUSTER}\".sl_subscribe WHERE sub_receiver = 2 AND sub_active"
        );
        let q = &active;
        self.wait_restarting_slon2(
            Duration::from_secs(40),
            "node 2's subscription to become active",
            || async move { scalar::<i64>(db, q).await == 1 },
        )
        .await;
        progress(started, "subscription active");
    }

    /// `cluster name` and the admin conninfos every slonik script starts with.
    fn preamble(&self) -> String {
        format!(
            "cluster name = {CLUSTER};\n\
             node 1 admin conninfo = '{}';\n\
             node 2 admin conninfo = '{}';\n",
            self.slony.conninfo("origin"),
            self.slony.conninfo("sub1")
        )
    }

    fn slonik(&self, name: &str, body: &str) -> String {
        self.slony.slonik(
            self.dir.path(),
            name,
            &format!("{}{body}", self.preamble()),
            self.budget.cap(Duration::from_secs(30)),
        )
    }

    /// slon for node 1: checks for changes every 100 ms and cuts an (empty) SYNC at
    /// least every second, so SYNCs and archives come quickly.
    fn start_slon1(&mut self) {
        assert!(self.slon1.is_none());
        self.slon1 = Some(self.slony.start_slon(
            self.dir.path(),
            "node1",
            CLUSTER,
            "origin",
            &["-s", "100", "-t", "1000"],
        ));
    }

    /// slon for node 2, one SYNC per group (one archive per SYNC); with `archive`,
    /// it writes the log-shipping archives. Its `-s`/`-t` also bound how long its
    /// listener backs off between polls of node 1 for events (up to `-t`, 10 s by
    /// default, which would make the subscription take up to 10 s longer).
    fn start_slon2(&mut self, archive: bool) {
        assert!(self.slon2.is_none());
        let dir = self.archive_dir.to_str().expect("UTF-8 path").to_string();
        let mut args = vec!["-g", "1", "-s", "100", "-t", "1000"];
        if archive {
            args.extend(["-a", dir.as_str()]);
        }
        self.slon2 = Some(
            self.slony
                .start_slon(self.dir.path(), "node2", CLUSTER, "sub1", &args),
        );
    }

    /// Stops slon 1 (SIGTERM; its watchdog ends the worker).
    fn stop_slon1(&mut self) {
        let mut slon = self.slon1.take().expect("slon node1 runs");
        assert!(
            slon.stop(),
            "slon node1 did not stop within 10 s of SIGTERM"
        );
    }

    /// Stops slon 2 (SIGTERM; its watchdog ends the worker).
    fn stop_slon2(&mut self) {
        let mut slon = self.slon2.take().expect("slon node2 runs");
        assert!(
            slon.stop(),
            "slon node2 did not stop within 10 s of SIGTERM"
        );
    }

    /// Like [`Lab::wait`] for slon 2 without archiving, but restarts slon 2 whenever
    /// node 2 has confirmed no new event of node 1 for 2 s (4 s after one restart, ...;
    /// see the set-up in [`real_slony_archives_replicate_origin`] for why).
    async fn wait_restarting_slon2<F, Fut>(&mut self, limit: Duration, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // Doubled after every restart, so a slow machine cannot make this restart forever.
        let mut patience = Duration::from_secs(2);
        let sub1 = self.pg.connect("sub1").await;
        let limit = self.budget.cap(limit);
        let deadline = Instant::now() + limit;
        let mut confirmed = confirmed_by_node2(&sub1).await;
        let mut progressed = Instant::now();
        loop {
            if cond().await {
                return;
            }
            for (name, slon) in [("node1", &mut self.slon1), ("node2", &mut self.slon2)] {
                if slon.as_mut().is_some_and(|s| !s.is_running()) {
                    panic!(
                        "slon {name} exited while waiting for {what}\n{}",
                        slon_logs(self.dir.path())
                    );
                }
            }
            let now = confirmed_by_node2(&sub1).await;
            if now != confirmed {
                confirmed = now;
                progressed = Instant::now();
            } else if progressed.elapsed() >= patience {
                eprintln!(
                    "node 2 confirmed nothing new for {patience:?} ({what}); restarting slon node2"
                );
                self.stop_slon2();
                self.start_slon2(false);
                progressed = Instant::now();
                patience *= 2;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    slon_logs(self.dir.path())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `cond` every 100 ms until it holds, for at most `limit` (capped by the
    /// budget); panics with the slon logs if it does not, or if a slon exits.
    async fn wait<F, Fut>(&mut self, limit: Duration, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let limit = self.budget.cap(limit);
        let deadline = Instant::now() + limit;
        loop {
            if cond().await {
                return;
            }
            let mut exited = None;
            for (name, slon) in [("node1", &mut self.slon1), ("node2", &mut self.slon2)] {
                if slon.as_mut().is_some_and(|s| !s.is_running()) {
                    exited = Some(name);
                }
            }
            if let Some(name) = exited {
                panic!(
                    "slon {name} exited while waiting for {what}\n{}",
                    slon_logs(self.dir.path())
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    slon_logs(self.dir.path())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The tails of both slon logs in `dir`, for failure messages.
fn slon_logs(dir: &Path) -> String {
    let log = |label: &str| tail(&dir.join(format!("slon-{label}.log")), 25);
    format!(
        "--- slon node1:\n{}\n--- slon node2:\n{}",
        log("node1"),
        log("node2")
    )
}

/// Prints how far the scenario got, and when (the log of a slow or failed run).
fn progress(started: Instant, what: &str) {
    eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// One value of a query that returns a single row and column.
async fn scalar<T>(c: &Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn exec(c: &Client, sql: &str) {
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Per table: row count and md5 of its rows as text in primary-key order; per
/// sequence: its last value.
async fn contents(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for (table, order) in TABLES {
        let row = c
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {order})), '-') \
                     FROM app.{table} t"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("reading app.{table}: {e}"));
        out.push(format!(
            "app.{table}: {} rows, md5 {}",
            row.get::<_, i64>(0),
            row.get::<_, String>(1)
        ));
    }
    for seq in SEQUENCES {
        let v: i64 = scalar(c, &format!("SELECT last_value FROM app.{seq}")).await;
        out.push(format!("app.{seq}: last_value {v}"));
    }
    out
}

/// node 2's archive counter: the last archive its slon wrote and committed.
async fn archive_counter(sub1: &Client) -> u64 {
    scalar::<i64>(
        sub1,
        &format!("SELECT ac_num FROM \"_{CLUSTER}\".sl_archive_counter"),
    )
    .await as u64
}

/// The newest event node 1 has created.
async fn last_event_of_node1(origin: &Client) -> i64 {
    scalar(
        origin,
        &format!("SELECT max(ev_seqno) FROM \"_{CLUSTER}\".sl_event WHERE ev_origin = 1"),
    )
    .await
}

/// The newest event of node 1 that node 2 has processed (and confirmed).
async fn confirmed_by_node2(sub1: &Client) -> i64 {
    scalar(
        sub1,
        &format!(
            "SELECT coalesce(max(con_seqno), 0) FROM \"_{CLUSTER}\".sl_confirm \
             WHERE con_origin = 1 AND con_received = 2"
        ),
    )
    .await
}

/// The replica's position.
async fn tracking_counter(replica: &Client) -> u64 {
    scalar::<i64>(
        replica,
        &format!("SELECT at_counter FROM \"_{CLUSTER}\".sl_archive_tracking"),
    )
    .await as u64
}

/// The archives in `dir`, by counter.
fn archives(dir: &Path) -> Vec<(Counter, PathBuf)> {
    let mut v: Vec<(Counter, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| {
            let e = e.ok()?;
            let name = ArchiveName::parse(e.file_name().to_str()?).ok()?;
            assert_eq!(name.node_id, 2, "archives are written by node 2's slon");
            Some((name.counter, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// One round of origin load: awkward inserts, updates, deletes, a multi-statement
/// transaction with awkward identifiers, sequence moves, a rolled-back transaction.
async fn load_round(c: &Client, r: i32) {
    for i in 0..4i32 {
        let n = (r * 4 + i) as usize;
        let body = (i != 3).then(|| format!("{} #{r}.{i}", AWKWARD[n % AWKWARD.len()]));
        let amount = (i != 2).then(|| format!("{}.{:06}", r * 1000 + i, i * 7919));
        let at = Some(format!(
            "2026-0{}-1{} 0{}:1{}:2{}.25+0{}:30",
            1 + i,
            r % 10,
            i,
            r % 10,
            i,
            i
        ));
        let raw = (i != 1).then(|| vec![0u8, 255, r as u8, i as u8, b'\\', b'\'', b'\n']);
        c.execute(
            "INSERT INTO app.docs (body, amount, at, raw) \
             VALUES ($1, $2::text::numeric, $3::text::timestamptz, $4)",
            &[&body, &amount, &at, &raw],
        )
        .await
        .unwrap_or_else(|e| panic!("insert into app.docs: {e}"));
    }
    for i in 0..4i32 {
        let k = format!("k{r}-{i}\t{}", AWKWARD[(r + i) as usize % AWKWARD.len()]);
        let v = (i != 3).then_some(i);
        let tags: Option<Vec<Option<i32>>> = Some(vec![Some(i), None, Some(r)]);
        let awkward = AWKWARD[(r * 3 + i) as usize % AWKWARD.len()];
        let doc = serde_json::json!({"s": awkward, "n": null, "r": r}).to_string();
        c.execute(
            "INSERT INTO app.kv (k, v, tags, doc) VALUES ($1, $2, $3, $4::text::jsonb)",
            &[&k, &v, &tags, &doc],
        )
        .await
        .unwrap_or_else(|e| panic!("insert into app.kv: {e}"));
    }
    exec(
        c,
        &format!(
            "INSERT INTO app.pairs SELECT {r}, g, repeat('p', g * 10) FROM generate_series(1, 4) g;
             UPDATE app.docs SET body = NULL WHERE id % 5 = {m};
             UPDATE app.docs SET body = NULL WHERE body IS NULL AND id % 3 = 0;
             DELETE FROM app.kv WHERE v = 2 AND k LIKE 'k{r}-%';
             UPDATE app.pairs SET b = b + 1000 WHERE a = {r} AND b = 2;
             SELECT nextval('app.ticket_seq');",
            m = r % 5
        ),
    )
    .await;
    exec(
        c,
        &format!(
            r#"BEGIN;
             INSERT INTO app.odd VALUES ({id}, E'row {r}: Ünïcødé \\N not null, "dq" ''sq''', date '2000-01-01' + {r},
                                         {r} / 3.0, {r} % 2 = 0, make_interval(hours => {r}), md5('{r}')::uuid);
             INSERT INTO app.odd (id) VALUES ({id} + 1);
             UPDATE app.odd SET "MixedCase" = E'line1\nline2\r\n' || {r}, "sp ace" = -{r} * 1e-10,
                                "order" = date '1999-12-31' - {r} WHERE id = 1;
             DELETE FROM app.odd WHERE id = {gone};
             SELECT setval('app.ticket_seq', 100 + {r} * 7 * 3);
             COMMIT;
             BEGIN;
             INSERT INTO app.scratch VALUES (-{r}, 'rolled back, never shipped');
             ROLLBACK;"#,
            id = r * 10,
            gone = (r - 2) * 10 + 1
        ),
    )
    .await;
    if r % 5 == 4 {
        exec(
            c,
            &format!(
                "TRUNCATE app.scratch;
                 INSERT INTO app.scratch SELECT g, 'after truncate in round {r} #' || g FROM generate_series(1, 3) g;"
            ),
        )
        .await;
    }
}

/// What the archives up to `upto` must contain for this test to cover what it claims.
fn assert_archive_coverage(archives: &[(Counter, PathBuf)], upto: Counter) {
    let (mut ddl, mut truncate, mut big, mut seq, mut pk_update) =
        (false, false, false, false, false);
    for (counter, path) in archives.iter().filter(|(c, _)| *c <= upto) {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let text =
            String::from_utf8(bytes).unwrap_or_else(|_| panic!("archive {counter} is not UTF-8"));
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() == 9 {
                ddl |= fields[6] == "S" && fields[8].contains("add column extra");
                truncate |= fields[5] == "scratch" && fields[6] == "T";
                big |= line.len() > 1_000_000;
                // `U`, one updated column, and it is the key: {id,<new>,id,<old>}.
                pk_update |= fields[5] == "docs"
                    && fields[6] == "U"
                    && fields[7] == "1"
                    && fields[8].starts_with("{id,");
            }
            seq |= line.contains("sequenceSetValue_offline('app','ticket_seq'");
        }
    }
    assert!(
        ddl,
        "no archive carries the EXECUTE SCRIPT statement as an S row"
    );
    assert!(truncate, "no archive carries the TRUNCATE (T row)");
    assert!(big, "no archive carries the large row");
    assert!(seq, "no archive sets app.ticket_seq");
    assert!(
        pk_update,
        "no archive carries a primary-key update of app.docs"
    );
}

/// The receiver's configuration: the provider is the loopback sshd, `remote.log_dir`
/// is the parent of slon 2's archive directory.
/// The receiver's config for site `node`, reading `<log_dir>/<node>/` on the provider
/// and applying to database `db`.
fn write_receiver_config(
    lab: &Lab,
    ssh: &SshServer,
    node: &str,
    log_dir: &Path,
    db: &str,
) -> PathBuf {
    let config = lab.dir.join(format!("receiver-{node}.toml"));
    let local = lab.dir.join(format!("local-{node}"));
    let endpoints = Endpoints {
        cluster: CLUSTER,
        node,
        ssh,
        ssh_port: ssh.port(),
        known_hosts: ssh.known_hosts(),
        remote_log_dir: log_dir,
        local_dir: &local,
        pg_port: lab.pg.port(),
        dbname: db,
        slony_node_id: Some(2),
    };
    let text = receiver_toml(&endpoints, "[pull]\nfetch_ahead = 16\nvacuum_every = 50\n");
    std::fs::write(&config, text).expect("writing the receiver config");
    config
}

/// The objects of the subset site: its two tables and the one set sequence a column of
/// them owns (`app.docs.id`'s `docs_id_seq`). `app.ticket_seq` is in the set too, but
/// no table of the site owns or uses it: it is not the site's.
const SUBSET: &[&str] = &["app.docs", "app.kv", "app.docs_id_seq"];

/// The tables of the subset site.
const SUBSET_TABLES: &[&str] = &["app.docs", "app.kv"];

/// Asks `slony-manager run` (node 2 as its provider) for the subset site's subscription,
/// and returns the table and sequence lists it decided (`<site>.new/tables` and
/// `<site>.new/sequences`). The subset database was loaded from the dump instead, so
/// the subscription is then answered as failed and nothing else of it is kept.
fn subscription_lists(lab: &Lab, root: &Path, site: &str) -> (String, String) {
    use slony_shared::ident::{NodeName, QualifiedTable};
    use slony_shared::trigger::{Action, Nonce, Outcome, Request, Series, SqlDone, TriggerKind};
    let config = root.join("subscribe.toml");
    ManagerToml::under(root, CLUSTER, lab.pg.port(), "sub1")
        .key("rescan_interval_secs", 1)
        .sites(crate::support::shared_sites_toml(&[site]))
        .write(&config);
    // The site's exchange directory (the manager makes it too, maybe after the request
    // is written).
    let triggers = root.join("triggers").join(site);
    std::fs::create_dir_all(&triggers).unwrap();
    let log = lab.dir.join("manager-subscribe.log");
    let manager = ManagerDaemon::start(&config, &log, &[]);
    let node = NodeName::new(site).unwrap();
    let put = |kind: TriggerKind, text: String| {
        let name = kind.file_name(&node);
        let tmp = triggers.join(format!(".{name}.upload"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, triggers.join(name)).unwrap();
    };
    let request = Request {
        node: node.clone(),
        nonce: Nonce::random().unwrap(),
        archive: 0,
        retention: 21,
        tapegroup: 1,
        series: SUBSET_TABLES
            .iter()
            .map(|t| Series {
                table: QualifiedTable::parse(t).unwrap(),
                action: Action::Subscribe,
            })
            .collect(),
    };
    put(TriggerKind::Request, request.render());
    let binding = request.binding();
    let wait_file = |kind: TriggerKind| -> Vec<u8> {
        let path = triggers.join(kind.file_name(&node));
        let deadline = Instant::now() + lab.budget.cap(Duration::from_secs(30));
        loop {
            if let Ok(b) = std::fs::read(&path) {
                if b.ends_with(b"EOF\n") {
                    return b;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {} from slony-manager run:\n{}",
                path.display(),
                tail(&log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let done = SqlDone::parse(&wait_file(TriggerKind::SqlDone))
        .unwrap()
        .for_request(&binding, ".sqldone")
        .unwrap();
    assert!(
        matches!(done, SqlDone::Ready { .. }),
        "{done:?}\n{}",
        tail(&log, 40)
    );
    let new = root.join(format!("subscribers/{site}.new"));
    let lists = (
        std::fs::read_to_string(new.join("tables")).unwrap(),
        std::fs::read_to_string(new.join("sequences")).unwrap(),
    );
    let answer = Outcome {
        success: false,
        reason: Some("only the lists were wanted".into()),
    };
    put(TriggerKind::SqlApplied, answer.render(Some(&binding)));
    let done = Outcome::parse(&wait_file(TriggerKind::Done))
        .unwrap()
        .for_request(&binding, ".done")
        .unwrap();
    assert!(!done.success, "{done:?}");
    manager.kill9();
    std::fs::remove_file(triggers.join(TriggerKind::Done.file_name(&node))).unwrap();
    assert!(
        !new.exists(),
        "the refused subscription left {}",
        new.display()
    );
    lists
}

/// Cuts slon's archives with `slony-manager cut` for one site subscribed to
/// `app.docs` and `app.kv`, with the lists `slony-manager run` decided for it (see
/// [`subscription_lists`]), into `provider/cut/<site>/`; returns the site's name.
fn cut_for_subset(lab: &Lab) -> String {
    let site = "lab_subset";
    let root = lab.dir.join("manager");
    for d in ["triggers", "subscribers", "site_logs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let (tables, sequences) = subscription_lists(lab, &root, site);
    assert_eq!(tables, "app.docs\napp.kv\n");
    assert_eq!(
        sequences, "app.docs_id_seq\n",
        "the set sequence app.docs owns, and not app.ticket_seq, which no table owns"
    );
    std::fs::create_dir_all(lab.provider.join(format!("cut/{site}"))).unwrap();
    let list = root.join(format!("subscribers/{site}"));
    std::fs::create_dir_all(&list).unwrap();
    std::fs::write(list.join("tables"), tables).unwrap();
    std::fs::write(list.join("sequences"), sequences).unwrap();
    // The dump put the subset database at counter 0: its stream starts at archive 1.
    std::fs::write(list.join("since"), "1\n").unwrap();
    let config = root.join("manager.toml");
    ManagerToml::new(
        CLUSTER,
        &root.join("triggers"),
        &root.join("subscribers"),
        &lab.provider.join("cut"),
        lab.pg.port(),
        "sub1",
    )
    .archive_dir(&lab.archive_dir)
    .sites(crate::support::shared_sites_toml(&[site]))
    .write(&config);
    let done = run_bounded(
        Command::new(bin_path("slony-manager"))
            .args(["cut", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info"),
        lab.budget.cap(Duration::from_secs(60)),
        &lab.dir.join("manager-cut"),
        "slony-manager cut",
    );
    assert_eq!(
        done.status.code(),
        Some(0),
        "slony-manager cut: {}",
        done.stderr
    );
    site.to_string()
}

/// Runs `slony-receiver <args> --config <config>` within `limit` (capped by the budget),
/// logging into `<dir>/<name>`; returns its exit code and stderr.
fn receiver_run(
    lab: &Lab,
    args: &[&std::ffi::OsStr],
    config: &Path,
    limit: Duration,
    name: &str,
) -> (i32, String) {
    let done = run_bounded(
        Command::new(bin_path("slony-receiver"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info"),
        lab.budget.cap(limit),
        &lab.dir.join(name),
        "slony-receiver",
    );
    let code = done.status.code().unwrap_or(-1);
    eprintln!(
        "--- slony-receiver {} ({name}) exited {code}\n{}",
        args.first().and_then(|a| a.to_str()).unwrap_or(""),
        done.stderr
    );
    (code, done.stderr)
}

/// Runs `slony-receiver pull --once` and returns its exit code and stderr.
fn pull_once(lab: &Lab, config: &Path, name: &str) -> (i32, String) {
    let args = ["pull", "--once"].map(std::ffi::OsStr::new);
    receiver_run(lab, &args, config, Duration::from_secs(60), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_slony_archives_replicate_origin() {
    let started = Instant::now();
    let mut lab = Lab::new("real-slony");

    // --- the databases, the schema in all three, seed rows on the origin
    for db in ["origin", "sub1", "replica", "subset"] {
        lab.pg.create_db(db).await;
        exec(&lab.pg.connect(db).await, SCHEMA_SQL).await;
    }
    let origin = lab.pg.connect("origin").await;
    let sub1 = lab.pg.connect("sub1").await;
    let replica = lab.pg.connect("replica").await;
    exec(&origin, SEED_SQL).await;

    // --- the Slony cluster: node 1 = origin, node 2 = sub1, set 1 = every table and sequence
    let tables: Vec<String> = TABLES.iter().map(|(t, _)| format!("app.{t}")).collect();
    let sequences: Vec<String> = SEQUENCES.iter().map(|q| format!("app.{q}")).collect();
    lab.replicate(started, &tables, &sequences).await;
    let db = &sub1;

    // --- the offline replica, as documented: slon 2 stopped, slony1_dump.sh of node 2
    lab.stop_slon2();
    let dump = lab.dir.join("offline_init.sql");
    progress(started, "slon node2 stopped for the dump");
    lab.slony.dump_offline(
        "sub1",
        CLUSTER,
        &dump,
        lab.budget.cap(Duration::from_secs(30)),
    );
    for db in ["replica", "subset"] {
        lab.slony
            .psql_file(db, &dump, lab.budget.cap(Duration::from_secs(30)));
    }
    let subset = lab.pg.connect("subset").await;
    let at_dump = contents(&subset).await;
    assert_eq!(
        tracking_counter(&replica).await,
        0,
        "the dump starts the replica at counter 0"
    );
    assert_eq!(
        contents(&replica).await,
        contents(&sub1).await,
        "the dump's snapshot equals node 2"
    );
    lab.start_slon2(true);
    let set_up = started.elapsed();
    progress(
        started,
        "replica loaded from slony1_dump.sh; slon node2 archiving",
    );

    // --- load on the origin
    let load_started = Instant::now();
    for r in 1..=10 {
        load_round(&origin, r).await;
        if r == 5 {
            let script = lab.dir.join("ddl.sql");
            std::fs::write(&script, DDL_SCRIPT).unwrap();
            lab.slonik(
                "ddl",
                &format!(
                    "execute script (filename = '{}', event node = 1);\n",
                    script.display()
                ),
            );
            exec(
                &origin,
                "UPDATE app.kv SET extra = E'set after ddl: tab\\t, backslash \\\\' WHERE v = 1",
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Many small transactions.
    for i in 0..200i32 {
        origin
            .execute(
                "INSERT INTO app.pairs VALUES (9000, $1, $2)",
                &[&i, &format!("small txn {i}")],
            )
            .await
            .unwrap_or_else(|e| panic!("small insert: {e}"));
    }
    // A large row: 1.7 million characters, 2 MB in UTF-8, more in the archive after escaping.
    exec(
        &origin,
        r"INSERT INTO app.docs (body, big) VALUES ('large', repeat(E'big \\ row\t€\n', 140000))",
    )
    .await;
    // Primary-key updates, and a final setval.
    exec(
        &origin,
        "UPDATE app.docs SET id = id + 100000 WHERE id % 7 = 0;
         UPDATE app.kv SET k = k || '/renamed' WHERE v = 1;
         UPDATE app.pairs SET a = a + 500, b = b * 2 WHERE a = 3;
         SELECT setval('app.ticket_seq', 424242);",
    )
    .await;
    let load_time = load_started.elapsed();
    progress(started, "load done");

    // --- node 2 catches up; every archive up to its counter is on disk
    let expected = contents(&origin).await;
    let want = &expected;
    lab.wait(
        Duration::from_secs(45),
        "sub1 (node 2) to equal origin",
        || async move { contents(db).await == *want },
    )
    .await;
    progress(started, "sub1 equals origin");
    let caught_up = archive_counter(&sub1).await;
    let files = archives(&lab.archive_dir);
    let counters: Vec<u64> = files
        .iter()
        .map(|(c, _)| c.0)
        .filter(|c| *c <= caught_up)
        .collect();
    assert_eq!(
        counters,
        (1..=caught_up).collect::<Vec<_>>(),
        "slon writes every archive up to node 2's counter, densely from 1"
    );
    assert_archive_coverage(&files, Counter(caught_up));
    let biggest = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    eprintln!(
        "node 2 caught up at archive {caught_up} ({} files, largest {biggest} bytes)",
        files.len()
    );

    // --- the receiver, while slon keeps writing (idle SYNCs arrive every second)
    let ssh = SshServer::start(&lab.provider);
    let config = write_receiver_config(&lab, &ssh, SITE, &lab.provider, "replica");
    let (code, stderr) = pull_once(&lab, &config, "pull-live");
    assert_eq!(code, 0, "pull while slon writes: {stderr}");
    let live = tracking_counter(&replica).await;
    progress(started, "live pull done");
    assert!(
        live >= caught_up,
        "the live pull reached {live}, but archives up to {caught_up} were there before it started"
    );
    assert_eq!(
        contents(&replica).await,
        expected,
        "replica after the live pull"
    );

    // --- stop Slony cleanly: slon 1 first (no new SYNCs), node 2 finishes what is
    //     pending, then slon 2. Its counter is then final.
    lab.stop_slon1();
    let last_event = last_event_of_node1(&origin).await;
    lab.wait(
        Duration::from_secs(30),
        "node 2 to confirm node 1's last event",
        || async move { confirmed_by_node2(db).await >= last_event },
    )
    .await;
    progress(started, "node 2 confirmed every event of node 1");
    lab.stop_slon2();
    let last = archive_counter(&sub1).await;
    let files = archives(&lab.archive_dir);
    // slon renames an archive into place just before it commits the counter on node 2;
    // a file past the committed counter would be rewritten by the next slon and must
    // not be served (none is expected after a clean stop).
    for (c, p) in files.iter().filter(|(c, _)| c.0 > last) {
        eprintln!("removing archive {c} written past node 2's committed counter {last}");
        std::fs::remove_file(p).unwrap();
    }
    assert_eq!(
        archives(&lab.archive_dir).len() as u64,
        last,
        "archives 1..={last} on disk"
    );

    // --- the receiver again: the rest, up to exactly node 2's counter
    let (code, stderr) = pull_once(&lab, &config, "pull-final");
    progress(started, "final pull done");
    assert_eq!(code, 0, "final pull: {stderr}");
    assert_eq!(
        tracking_counter(&replica).await,
        last,
        "the replica's at_counter is node 2's sl_archive_counter.ac_num"
    );
    let final_origin = contents(&origin).await;
    assert_eq!(
        final_origin, expected,
        "nothing changed the origin after the load"
    );
    assert_eq!(
        contents(&replica).await,
        final_origin,
        "replica equals origin"
    );
    assert_eq!(contents(&sub1).await, final_origin, "sub1 equals origin");
    let keys = vec!["k1-0\ttab\there".to_string(), "seed/renamed".to_string()];
    let extra: Vec<Option<String>> = replica
        .query(
            "SELECT extra FROM app.kv WHERE k = ANY($1) ORDER BY k",
            &[&keys],
        )
        .await
        .unwrap_or_else(|e| panic!("reading app.kv.extra on the replica: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        extra,
        [Some("dflt".to_string()), Some("set after ddl: tab\t, backslash \\".to_string())],
        "the column added by EXECUTE SCRIPT reached the replica, with its default and a later update"
    );
    let counter_file = std::fs::read_to_string(
        lab.dir
            .join(format!("local-{SITE}/{SITE}/slony_counter.txt")),
    )
    .unwrap_or_default();
    assert_eq!(
        counter_file.trim(),
        last.to_string(),
        "slony_counter.txt mirrors the database"
    );

    // --- the same archives cut by the manager for a site subscribed to a subset
    let cut_site = cut_for_subset(&lab);
    progress(started, "archives cut for the subset site");
    let config = write_receiver_config(
        &lab,
        &ssh,
        &cut_site,
        &lab.dir.join("provider/cut"),
        "subset",
    );
    let (code, stderr) = pull_once(&lab, &config, "pull-subset");
    assert_eq!(code, 0, "pull of the subset site: {stderr}");
    assert_eq!(
        tracking_counter(&subset).await,
        last,
        "the subset site's at_counter"
    );
    let got = contents(&subset).await;
    for ((line, origin_line), dump_line) in got.iter().zip(&final_origin).zip(&at_dump) {
        let object = line.split(':').next().unwrap_or_default();
        if SUBSET.contains(&object) {
            assert_eq!(
                line, origin_line,
                "{object} on the subset site equals the origin"
            );
        } else {
            assert_eq!(
                line, dump_line,
                "{object} is not the subset site's: it stays as loaded"
            );
            assert_ne!(
                dump_line, origin_line,
                "{object} changed on the origin (the test must be able to tell)"
            );
        }
    }
    progress(started, "subset site equals the origin on its objects");

    drop(ssh);
    eprintln!(
        "real Slony-I {}: set-up {:.1} s, load {:.1} s, {last} archives ({live} applied live), total {:.1} s",
        crate::support::slony::VERSION,
        set_up.as_secs_f64(),
        load_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The 2.1-era offline schema addition: `sl_sequence_offline` and the
/// `sequenceSetValue_offline(seq_id, value)` that pre-2.2 archives call (2.2's
/// slony1_dump.sh creates the (nspname, relname, value) form instead).
fn pre_22_sequence_sql() -> String {
    format!(
        r#"
CREATE TABLE "_{CLUSTER}".sl_sequence_offline (seq_id int4 PRIMARY KEY, seq_relname name NOT NULL,
                                               seq_nspname name NOT NULL);
INSERT INTO "_{CLUSTER}".sl_sequence_offline VALUES (1, 'seq1', 's1');
CREATE FUNCTION "_{CLUSTER}".sequenceSetValue_offline(p_seq_id int4, p_last_value int8) RETURNS int4
LANGUAGE plpgsql AS $$
DECLARE
    v_fqname text;
BEGIN
    SELECT quote_ident(seq_nspname) || '.' || quote_ident(seq_relname) INTO v_fqname
      FROM "_{CLUSTER}".sl_sequence_offline WHERE seq_id = p_seq_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Slony-I: sequence % not found', p_seq_id;
    END IF;
    PERFORM setval(v_fqname, p_last_value);
    RETURN p_seq_id;
END;
$$;
"#
    )
}

/// The fixtures follow what slon wrote before 2.2 (`insert into "s1"."t1" (...) values
/// ('...')`, `update only ... set ... where ...`, `delete from only ... where ...`, the
/// 2.1 DDL_SCRIPT form between `set session_replication_role to local/replica`, and
/// `sequenceSetValue_offline(<seq_id>, '<value>')`), including their backslashes:
/// doubled inside '...', as logTrigger wrote them for `standard_conforming_strings =
/// off`, which the receiver sets for statement archives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_22_statement_archives() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pre-2.2");
    let dir = TestDir::new("pre-22");
    let site_dir = dir.mkdir(format!("provider/{SITE}"));
    let mut copied = 0;
    for entry in std::fs::read_dir(&fixtures).expect("tests/fixtures/pre-2.2") {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if ArchiveName::parse(&name).is_ok() {
            std::fs::copy(entry.path(), site_dir.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, 4, "four pre-2.2 archives in {}", fixtures.display());

    let pg = PgServer::start();
    pg.create_db("replica").await;
    let replica = pg.connect("replica").await;
    let cluster = ClusterName::new(CLUSTER).unwrap();
    exec(
        &replica,
        &format!(
            "{}{}{}{}",
            crate::support::workload::SCHEMA_SQL,
            slony_shared::offline::tracking_schema_sql(&cluster),
            slony_shared::offline::tracking_row_sql(&cluster, Counter(0), "1970-01-01 00:00:00"),
            pre_22_sequence_sql()
        ),
    )
    .await;
    let ssh = SshServer::start(&dir.join("provider"));
    let config = dir.join("receiver.toml");
    std::fs::write(
        &config,
        format!(
            r#"cluster = "{CLUSTER}"
node = "{SITE}"
[remote]
host = "127.0.0.1"
port = {}
user = "{}"
key_file = "{}"
known_hosts = "{}"
log_dir = "{}"
[local]
log_dir = "{}"
[database]
host = "127.0.0.1"
port = {}
user = "postgres"
dbname = "replica"
"#,
            ssh.port(),
            ssh.user(),
            ssh.client_key().display(),
            ssh.known_hosts().display(),
            dir.join("provider").display(),
            dir.join("local").display(),
            pg.port()
        ),
    )
    .unwrap();
    let pull = |name: &str| {
        let done = run_bounded(
            Command::new(bin_path("slony-receiver"))
                .args(["pull", "--once", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info"),
            Duration::from_secs(60),
            &dir.join(name),
            "slony-receiver pull",
        );
        eprintln!(
            "--- slony-receiver pull ({name}) exited {}\n{}",
            done.status, done.stderr
        );
        (done.status.code().unwrap_or(-1), done.stderr)
    };

    let (code, stderr) = pull("pull-pre22");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tracking_counter(&replica).await, 4);

    // id, then txt, num, ts (UTC), b (hex), arr, j as text.
    let t1: Vec<(i64, [Option<String>; 6])> = replica
        .query(
            "SELECT id, txt, num::text, (ts AT TIME ZONE 'UTC')::text, encode(b, 'hex'), \
                    arr::text, j::text \
             FROM s1.t1 ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), std::array::from_fn(|i| r.get(i + 1))))
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        t1,
        vec![
            (
                1,
                [
                    s("plain, updated"),
                    s("1.5"),
                    s("2011-06-01 09:59:59.5"),
                    s("00ff10"),
                    s("{1,NULL,3}"),
                    s(r#"{"a": "b", "n": null}"#)
                ]
            ),
            (
                3,
                [
                    s("multi\nline\twith tab, unicode é ☃ 𝄞 and a \\ backslash"),
                    s("-0.000001"),
                    s("1999-12-31 18:29:59"),
                    None,
                    s("{}"),
                    s(r#"{"q": "it's \"json\""}"#)
                ]
            ),
            (
                4,
                [
                    s("it's \"quoted\"; -- not a comment /* nor this */ $$ dollar $$"),
                    None,
                    None,
                    s("5c27"),
                    None,
                    None
                ]
            ),
            (
                102,
                [s("inserted after the DDL"), s("42"), None, None, None, None]
            ),
        ],
        "s1.t1 after the pre-2.2 archives"
    );
    let t2: Vec<(String, Option<i32>, Option<String>)> = replica
        .query("SELECT k, v, note FROM s1.t2 ORDER BY k", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        t2,
        vec![
            ("NULL".to_string(), None, s("added by ddl")),
            ("k\t2".to_string(), Some(20), s("set after ddl")),
            ("k1 renamed".to_string(), Some(10), s("added by ddl")),
        ],
        "s1.t2 after the pre-2.2 archives"
    );
    let seq: i64 = scalar(&replica, "SELECT last_value FROM s1.seq1").await;
    assert_eq!(
        seq, 202,
        "s1.seq1 set by sequenceSetValue_offline(seq_id, value)"
    );
    let counter_file = std::fs::read_to_string(dir.join(format!("local/{SITE}/slony_counter.txt")))
        .unwrap_or_default();
    assert_eq!(counter_file.trim(), "4");

    // A Slony-I 1.x archive (before 1.2.11: setsyncTracking_offline) is refused, and
    // nothing of it is applied.
    std::fs::write(
        site_dir.join("slony1_log_2_00000000000000000005.sql"),
        format!(
            "-- Slony-I log shipping archive\n\
             -- Node 1, Event 1205\n\
             start transaction;\n\
             \n\
             select \"_{CLUSTER}\".setsyncTracking_offline(1, '1204', '1205', '2007-03-01 12:00:00.5');\n\
             -- end of log archiving header\n\
             insert into \"s1\".\"t2\" (k,v) values ('from 1.x','1');\n\
             \n\
             -- End Of Archive Log\n\
             commit;\n\
             vacuum analyze \"_{CLUSTER}\".sl_setsync_offline;\n"
        ),
    )
    .unwrap();
    let (code, stderr) = pull("pull-1x");
    assert_eq!(code, 4, "a Slony-I 1.x archive is an apply error: {stderr}");
    assert!(
        stderr.contains("1.x"),
        "the error names Slony-I 1.x: {stderr}"
    );
    assert_eq!(tracking_counter(&replica).await, 4);
    let n: i64 = scalar(&replica, "SELECT count(*) FROM s1.t2 WHERE k = 'from 1.x'").await;
    assert_eq!(n, 0, "nothing of the 1.x archive was applied");
    drop(ssh);
}

/// The site of [`real_slony_subscription_changes_while_behind`].
const SUB_SITE: &str = "lab_sub";

/// The schema of that scenario on origin and sub1, with names only quoting reaches, as
/// Slony's own regression suites spell them (`testtabnames`), and `table4`, which their
/// DDL (`testddl`) names unqualified. The site's database starts empty: its subscription
/// creates what it holds.
///
/// The suites' schema is `"Schema.name"`; here it is `"Schema name"`. Slony-I 2.2.11's
/// `repair_log_triggers()`, which every EXECUTE SCRIPT runs, joins schema and table
/// names with a dot unquoted and splits them again at the first dot, so in a cluster
/// holding a table of `"Schema.name"` every EXECUTE SCRIPT fails (`table
/// "Schema"."name.Capital Idea" not found`). A dotted schema goes through the manager and
/// the receiver in `subscribe::quoted_names_are_subscribed_exactly`.
const SUB_SCHEMA_SQL: &str = r#"
CREATE SCHEMA app;
CREATE TABLE app.docs (id bigserial PRIMARY KEY, body text);
CREATE TABLE public.table4 (id int PRIMARY KEY, v text);
CREATE SCHEMA "Schema name";
CREATE TABLE "Schema name"."Capital Idea" ("user" text PRIMARY KEY, description text);
CREATE TABLE public."Jan's bad ideas" (id int PRIMARY KEY, "Idea" text, at timestamptz);
"#;

/// The quoted table names, as slonik, PostgreSQL and the subscription list spell them.
const CAPITAL: &str = r#""Schema name"."Capital Idea""#;
const JANS: &str = r#"public."Jan's bad ideas""#;

/// The EXECUTE SCRIPT of that scenario: `table4` unqualified (slon ran it with its
/// search_path, so it is `public.table4`, the manager's default `ddl_search_path`), then
/// a change of a table the site will have unsubscribed by then.
const SUB_DDL_SCRIPT: &str = r#"alter table table4 add column extra text default 'dflt';
alter table "Schema name"."Capital Idea" add column later int default 7;
"#;

/// Row count and md5 of a table's rows as text.
async fn fingerprint(c: &Client, table: &str) -> String {
    scalar(
        c,
        &format!(
            "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-') FROM {table} t"
        ),
    )
    .await
}

/// Whether `table` exists in the database.
async fn has_table(c: &Client, table: &str) -> bool {
    c.query_one("SELECT pg_catalog.to_regclass($1)::text", &[&table])
        .await
        .unwrap_or_else(|e| panic!("looking up {table}: {e}"))
        .get::<_, Option<String>>(0)
        .is_some()
}

/// One round of origin load on every table of the scenario.
async fn subscription_load(c: &Client, r: i32) {
    for i in 0..3i32 {
        let text = AWKWARD[((r * 3 + i) as usize) % AWKWARD.len()];
        let id = r * 10 + i;
        c.execute(
            "INSERT INTO app.docs (body) VALUES ($1)",
            &[&format!("{text} #{r}.{i}")],
        )
        .await
        .unwrap_or_else(|e| panic!("insert into app.docs: {e}"));
        c.execute(
            "INSERT INTO public.table4 (id, v) VALUES ($1, $2)",
            &[&id, &text],
        )
        .await
        .unwrap_or_else(|e| panic!("insert into table4: {e}"));
        c.execute(
            &format!("INSERT INTO {CAPITAL} (\"user\", description) VALUES ($1, $2)"),
            &[&format!("user {r}.{i}"), &text],
        )
        .await
        .unwrap_or_else(|e| panic!("insert into {CAPITAL}: {e}"));
        c.execute(
            &format!("INSERT INTO {JANS} VALUES ($1, $2, now())"),
            &[&id, &text],
        )
        .await
        .unwrap_or_else(|e| panic!("insert into {JANS}: {e}"));
    }
    exec(
        c,
        &format!(
            "UPDATE public.table4 SET v = v || ' (updated)' WHERE id % 4 = {};
             DELETE FROM {CAPITAL} WHERE \"user\" = 'user {}.1';
             UPDATE {JANS} SET \"Idea\" = NULL WHERE id = {};",
            r % 4,
            r - 1,
            r * 10 + 2
        ),
    )
    .await;
}

/// Runs `slony-receiver subscribe-series` with `list` as the subscription list.
fn subscribe_series(lab: &Lab, config: &Path, list: &str, name: &str) -> (i32, String) {
    let path = lab.dir.join(format!("{name}.list"));
    std::fs::write(&path, list).unwrap();
    let mut args = ["subscribe-series", "--list"]
        .map(std::ffi::OsStr::new)
        .to_vec();
    args.push(path.as_os_str());
    args.extend(["--attempts", "60", "--interval-secs", "1"].map(std::ffi::OsStr::new));
    receiver_run(lab, &args, config, Duration::from_secs(90), name)
}

/// A new site subscribes through `slony-manager run` while slon writes the archives and
/// the manager cuts the site's stream from them: three tables, two of them reachable
/// only by quoted names. The origin keeps changing; the site pulls once, then falls
/// behind, and while it is behind it adds `public.table4` and unsubscribes
/// `"Schema name"."Capital Idea"` with `allow_drop`. An EXECUTE SCRIPT then changes
/// `table4`, named unqualified, and the unsubscribed table. After one pull the site
/// equals the origin on its tables at exactly node 2's counter: the unsubscribed table
/// went at the snapshot (after the copies that still carried it), the new one holds
/// every change from its snapshot on, the unqualified DDL reached it and the other did
/// not. Subscribed again, the dropped table comes back equal to the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_slony_subscription_changes_while_behind() {
    let started = Instant::now();
    let mut lab = Lab::new("real-slony-subscribe");
    for db in ["origin", "sub1"] {
        lab.pg.create_db(db).await;
        exec(&lab.pg.connect(db).await, SUB_SCHEMA_SQL).await;
    }
    lab.pg.create_db("site").await;
    let origin = lab.pg.connect("origin").await;
    let sub1 = lab.pg.connect("sub1").await;
    let site = lab.pg.connect("site").await;
    subscription_load(&origin, 0).await;
    let tables: Vec<String> = ["app.docs", "public.table4", CAPITAL, JANS]
        .iter()
        .map(|t| t.to_string())
        .collect();
    lab.replicate(started, &tables, &["app.docs_id_seq".to_string()])
        .await;
    // From here on node 2 writes an archive per SYNC.
    lab.stop_slon2();
    lab.start_slon2(true);

    // --- the provider: slony-manager run on node 2, cutting slon's archives for the site
    let site_logs = lab.provider.join("site_logs");
    std::fs::create_dir_all(&site_logs).unwrap();
    std::fs::create_dir_all(site_logs.with_extension("exchange").join(SUB_SITE)).unwrap();
    let subscribers = lab.dir.mkdir("subscribers");
    let manager_config = lab.dir.join("manager.toml");
    ManagerToml::new(
        CLUSTER,
        &site_logs.with_extension("exchange"),
        &subscribers,
        &site_logs,
        lab.pg.port(),
        "sub1",
    )
    .archive_dir(&lab.archive_dir)
    .key("allow_drop", true)
    .key("rescan_interval_secs", 1)
    .sites(crate::support::shared_sites_toml(&[SUB_SITE]))
    .write(&manager_config);
    let manager_log = lab.dir.join("manager.log");
    let _manager = ManagerDaemon::start(&manager_config, &manager_log, &[]);
    let ssh = SshServer::start(&lab.provider);
    let config = write_receiver_config(&lab, &ssh, SUB_SITE, &site_logs, "site");
    let read = |name: &str| {
        std::fs::read_to_string(subscribers.join(SUB_SITE).join(name)).unwrap_or_default()
    };
    let cut_counter = || read("cut_counter").trim().parse::<u64>().unwrap_or(0);

    // --- a new site, three tables, two by quoted names
    let (code, out) = subscribe_series(
        &lab,
        &config,
        &format!("app.docs subscribe\n{CAPITAL} subscribe\n{JANS} subscribe\n"),
        "subscribe-new",
    );
    assert_eq!(code, 0, "{out}\n{}", tail(&manager_log, 40));
    progress(started, "new site subscribed");
    let listed = || {
        let mut v: Vec<String> = read("tables").lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let sorted = |l: &[&str]| {
        let mut v: Vec<String> = l.iter().map(|t| t.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(
        listed(),
        sorted(&["app.docs", CAPITAL, JANS]),
        "the manager's list, in the list's quoted syntax"
    );

    // --- load; the site pulls once
    // Rounds apart, so that slon cuts them into separate SYNCs and archives.
    let rounds = |from: i32, to: i32| {
        let origin = &origin;
        async move {
            for r in from..=to {
                subscription_load(origin, r).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    rounds(1, 3).await;
    let db = &sub1;
    let origin_ref = &origin;
    lab.wait(
        Duration::from_secs(30),
        "sub1 to equal origin after rounds 1-3",
        || async move { fingerprint(db, JANS).await == fingerprint(origin_ref, JANS).await },
    )
    .await;
    let n1 = archive_counter(&sub1).await;
    lab.wait(Duration::from_secs(30), "the cut past round 3", || async {
        cut_counter() >= n1
    })
    .await;
    let (code, out) = pull_once(&lab, &config, "pull-first");
    assert_eq!(code, 0, "{out}");
    let at_first = tracking_counter(&site).await;
    assert!(at_first >= n1, "the site at {at_first}, the cut at {n1}");

    // --- the site falls behind: more load, cut but not pulled
    rounds(4, 12).await;
    lab.wait(
        Duration::from_secs(30),
        "sub1 to equal origin after rounds 4-12",
        || async move { fingerprint(db, JANS).await == fingerprint(origin_ref, JANS).await },
    )
    .await;
    let n2 = archive_counter(&sub1).await;
    lab.wait(Duration::from_secs(30), "the cut past round 12", || async {
        cut_counter() >= n2
    })
    .await;

    // --- while behind: add table4, unsubscribe "Capital Idea" with allow_drop
    let (code, out) = subscribe_series(
        &lab,
        &config,
        &format!("public.table4 subscribe\n{CAPITAL} unsubscribe\n"),
        "subscribe-change",
    );
    assert_eq!(code, 0, "{out}\n{}", tail(&manager_log, 40));
    progress(started, "subscription changed while behind");
    let snapshot: u64 = read("since").trim().parse::<u64>().unwrap() - 1;
    assert!(
        snapshot >= n2 && snapshot >= at_first + 5,
        "the change's snapshot {snapshot} is well ahead of the site's counter {at_first}"
    );
    assert_eq!(listed(), sorted(&["app.docs", "public.table4", JANS]));
    assert!(
        has_table(&site, CAPITAL).await,
        "the unsubscribed table stays while the copies before the snapshot carry it"
    );

    // --- more load and an EXECUTE SCRIPT with an unqualified name, then Slony stops
    rounds(13, 15).await;
    let script = lab.dir.join("ddl.sql");
    std::fs::write(&script, SUB_DDL_SCRIPT).unwrap();
    lab.slonik(
        "ddl",
        &format!(
            "execute script (filename = '{}', event node = 1);\n",
            script.display()
        ),
    );
    rounds(16, 18).await;
    let all = &tables;
    lab.wait(
        Duration::from_secs(30),
        "sub1 to equal origin after the last round",
        || async move {
            for t in all {
                if fingerprint(db, t).await != fingerprint(origin_ref, t).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    lab.stop_slon1();
    let last_event = last_event_of_node1(&origin).await;
    lab.wait(
        Duration::from_secs(30),
        "node 2 to confirm node 1's last event",
        || async move { confirmed_by_node2(db).await >= last_event },
    )
    .await;
    lab.stop_slon2();
    let last = archive_counter(&sub1).await;
    for (c, p) in archives(&lab.archive_dir)
        .iter()
        .filter(|(c, _)| c.0 > last)
    {
        eprintln!("removing archive {c} written past node 2's committed counter {last}");
        std::fs::remove_file(p).unwrap();
    }
    lab.wait(
        Duration::from_secs(30),
        "the cut up to the last archive",
        || async { cut_counter() == last },
    )
    .await;
    progress(started, "slon stopped, the site's stream cut to the end");

    // The site's stream: the dropped table's rows only up to the snapshot, the unqualified
    // DDL after it, the other DDL nowhere.
    let (mut capital_before, mut capital_after, mut ddl) = (0, 0, 0);
    for (c, p) in archives(&site_logs.join(SUB_SITE)) {
        let text = std::fs::read_to_string(&p).unwrap();
        let capital = text.contains("Capital Idea");
        if c.0 <= snapshot {
            capital_before += usize::from(capital);
        } else {
            capital_after += usize::from(capital);
        }
        if text.contains("alter table table4") {
            assert!(
                c.0 > snapshot,
                "the DDL at {c} before the snapshot {snapshot}"
            );
            ddl += 1;
        }
        assert!(
            !text.contains("add column later"),
            "archive {c} sends the DDL of a table the site no longer holds"
        );
    }
    assert!(
        capital_before > 0,
        "the copies before the snapshot carry the unsubscribed table"
    );
    assert_eq!(
        capital_after, 0,
        "copies after the snapshot carry the unsubscribed table"
    );
    assert_eq!(ddl, 1, "the unqualified DDL reaches the site once");

    // --- one pull: the site equals the origin on its tables, at node 2's counter
    let (code, out) = pull_once(&lab, &config, "pull-final");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dropped the unsubscribed tables at their snapshot"),
        "{out}"
    );
    assert_eq!(tracking_counter(&site).await, last);
    for t in ["app.docs", "public.table4", JANS] {
        assert_eq!(
            fingerprint(&site, t).await,
            fingerprint(&origin, t).await,
            "{t} on the site"
        );
    }
    let extra: i64 = scalar(
        &site,
        "SELECT count(*) FROM public.table4 WHERE extra = 'dflt'",
    )
    .await;
    assert!(extra > 0, "the column the unqualified DDL added");
    let seq = "SELECT last_value FROM app.docs_id_seq";
    assert_eq!(
        scalar::<i64>(&site, seq).await,
        scalar::<i64>(&origin, seq).await,
        "the set sequence app.docs owns"
    );
    assert!(
        !has_table(&site, CAPITAL).await,
        "the unsubscribed table went with its snapshot's archive"
    );

    // --- subscribed again: it comes back as the origin holds it, DDL included
    let (code, out) = subscribe_series(
        &lab,
        &config,
        &format!("{CAPITAL} subscribe\n"),
        "subscribe-again",
    );
    assert_eq!(code, 0, "{out}\n{}", tail(&manager_log, 40));
    assert_eq!(
        fingerprint(&site, CAPITAL).await,
        fingerprint(&origin, CAPITAL).await,
        "{CAPITAL} subscribed again"
    );
    let later: i64 = scalar(
        &site,
        &format!("SELECT count(*) FROM {CAPITAL} WHERE later = 7"),
    )
    .await;
    assert!(later > 0, "the column the other DDL added");
    drop(ssh);
    eprintln!(
        "real Slony-I subscription changes: snapshot {snapshot} with the site at {at_first}, {last} archives, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
