//! `slony-receiver subscribe-series` against a real `slony-manager run`: a provider
//! database with a 100k-row table, the trigger directory served by a real sshd, and the
//! subscriber's replica; then `pull` continues from the snapshot's counter.

use crate::support::manager::{ManagerDaemon, ManagerToml};
use crate::support::pg::PgServer;
use crate::support::ssh::SshServer;
use crate::support::workload::{self, Change, Format};
use crate::support::{bin_path, wait_until, TestDir};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "site1";
/// The provider's archive counter when the snapshot is taken.
const SNAPSHOT: u64 = 42;

/// Starts `slony-manager run` on the test's config, with `env` added, appending to its log.
fn start_manager(dir: &TestDir, env: &[(&str, &str)]) -> ManagerDaemon {
    ManagerDaemon::spawn(
        ManagerDaemon::run_command(&dir.join("manager.toml")).envs(env.iter().copied()),
        &dir.join("manager.log"),
    )
}

struct Setup {
    dir: TestDir,
    provider_root: PathBuf,
    receiver_config: PathBuf,
    stream: Vec<Vec<Change>>,
    manager: ManagerDaemon,
    ssh: SshServer,
    pg: PgServer,
}

/// Ordered hash and count of a table's rows.
async fn table_hash(c: &tokio_postgres::Client, table: &str) -> String {
    c.query_one(
        &format!("SELECT count(*)::text || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-') FROM {table} t"),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{table}: {e}"))
    .get(0)
}

/// The receiver config of site `node`: its replica is database `dbname`, its local
/// directory `local`.
fn receiver_toml(
    provider_root: &Path,
    ssh: &SshServer,
    pg: &PgServer,
    node: &str,
    dbname: &str,
    local: &Path,
) -> String {
    format!(
        "cluster = \"lab\"\nnode = \"{node}\"\n[remote]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\nlog_dir = \"{root}/site_logs\"\ntrigger_dir = \"{root}/triggers\"\nallow_shared_account = true\n[local]\nlog_dir = \"{}\"\n[database]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndbname = \"{dbname}\"\n",
        ssh.port(),
        ssh.user(),
        ssh.client_key().display(),
        ssh.known_hosts().display(),
        local.display(),
        pg.port(),
        root = provider_root.display(),
    )
}

impl Setup {
    /// With `cut`, the manager also cuts slon's archive directory `provider/archive`
    /// into the site directories.
    async fn new(name: &str, cut: bool) -> Setup {
        Setup::with_sites(name, cut, 100, &[]).await
    }

    /// [`Setup::new`] with a stream of `archives` archives, and `extra_nodes` registered
    /// with the manager besides NODE, each with its exchange directory (their receivers:
    /// [`Setup::add_receiver`]).
    async fn with_sites(name: &str, cut: bool, archives: u64, extra_nodes: &[&str]) -> Setup {
        let dir = TestDir::new(name);
        let provider_root = dir.mkdir("provider");
        for d in ["triggers", "subscribers", "site_logs", "archive"] {
            std::fs::create_dir_all(provider_root.join(d)).unwrap();
        }
        // The sites' exchange directories (the manager makes them too, maybe after the
        // test has started the receiver).
        for node in std::iter::once(&NODE).chain(extra_nodes) {
            std::fs::create_dir_all(provider_root.join("triggers").join(node)).unwrap();
        }
        let pg = PgServer::start();
        pg.create_db("provider").await;
        pg.create_db("replica").await;
        // Archives carry no sequence changes here: sites subscribe to tables.
        let stream: Vec<Vec<Change>> = workload::generate(archives, 11)
            .into_iter()
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| !matches!(c, Change::SetSeq(_)))
                    .collect()
            })
            .collect();
        let provider = pg.connect("provider").await;
        provider
            .batch_execute(&format!(
                "{}
                 CREATE TABLE s1.big (id int PRIMARY KEY, v text NOT NULL DEFAULT 'x', n numeric);
                 INSERT INTO s1.big SELECT g, 'row ' || g || E' tab\\there', g / 7.0 FROM generate_series(1, 100000) g;
                 CREATE TABLE s1.other (id serial PRIMARY KEY, note text UNIQUE);
                 INSERT INTO s1.other (note) VALUES ('a'), ('b''s'), (NULL);
                 CREATE SCHEMA \"_lab\";
                 CREATE TABLE \"_lab\".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);
                 INSERT INTO \"_lab\".sl_archive_counter VALUES ({SNAPSHOT}, '2026-11-21 10:00:42+00');\n{}",
                workload::SCHEMA_SQL,
                crate::support::slony_set_sql("lab", &["s1.t1", "s1.t2", "s1.big", "s1.other"])
            ))
            .await
            .unwrap();
        workload::apply_expected(&provider, &stream, SNAPSHOT).await;

        let nodes: Vec<&str> = std::iter::once(NODE)
            .chain(extra_nodes.iter().copied())
            .collect();
        let mut manager_config = ManagerToml::under(&provider_root, "lab", pg.port(), "provider")
            .key("allow_drop", true)
            .key("rescan_interval_secs", 1)
            .sites(crate::support::shared_sites_toml(&nodes));
        if cut {
            manager_config = manager_config.archive_dir(&provider_root.join("archive"));
        }
        manager_config.write(&dir.join("manager.toml"));
        let manager = start_manager(&dir, &[]);

        let ssh = SshServer::start(&provider_root);
        let receiver_config = dir.join("receiver.toml");
        std::fs::write(
            &receiver_config,
            receiver_toml(
                &provider_root,
                &ssh,
                &pg,
                NODE,
                "replica",
                &dir.join("local"),
            ),
        )
        .unwrap();
        Setup {
            dir,
            provider_root,
            receiver_config,
            stream,
            manager,
            ssh,
            pg,
        }
    }

    /// Writes the receiver config of the extra site `node` (registered by
    /// [`Setup::with_sites`]), whose replica is database `dbname`; returns its path.
    fn add_receiver(&self, node: &str, dbname: &str) -> PathBuf {
        let path = self.dir.join(format!("receiver-{node}.toml"));
        std::fs::write(
            &path,
            receiver_toml(
                &self.provider_root,
                &self.ssh,
                &self.pg,
                node,
                dbname,
                &self.local_dir(node),
            ),
        )
        .unwrap();
        path
    }

    /// The local directory of site `node`'s receiver.
    fn local_dir(&self, node: &str) -> PathBuf {
        if node == NODE {
            self.dir.join("local")
        } else {
            self.dir.join(format!("local-{node}"))
        }
    }

    fn receiver(&self, args: &[&str]) -> (i32, String) {
        self.receiver_env(args, &[])
    }

    fn receiver_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let out = Command::new(bin_path("slony-receiver"))
            .args(args)
            .envs(env.iter().copied())
            .args(["--config", self.receiver_config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "--- slony-receiver {args:?} exited {:?}\n{text}",
            out.status.code()
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn subscribe(&self, list: &str) -> (i32, String) {
        self.subscribe_env(list, &[])
    }

    fn subscribe_env(&self, list: &str, env: &[(&str, &str)]) -> (i32, String) {
        let path = self.dir.join("list.txt");
        std::fs::write(&path, list).unwrap();
        self.receiver_env(
            &[
                "subscribe-series",
                "--list",
                path.to_str().unwrap(),
                "--attempts",
                "60",
                "--interval-secs",
                "1",
            ],
            env,
        )
    }

    fn site_tables(&self) -> String {
        self.site_tables_of(NODE)
    }

    /// The manager's table list of site `node` (empty when it has none).
    fn site_tables_of(&self, node: &str) -> String {
        std::fs::read_to_string(
            self.provider_root
                .join("subscribers")
                .join(node)
                .join("tables"),
        )
        .unwrap_or_default()
    }

    fn die_file(&self) -> PathBuf {
        self.die_file_of(NODE)
    }

    fn die_file_of(&self, node: &str) -> PathBuf {
        self.local_dir(node)
            .join(format!("get_slony_logs.{node}.die"))
    }

    fn manager_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("manager.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_site_then_change_then_pull() {
    let s = Setup::new("subscribe", false).await;
    let provider = s.pg.connect("provider").await;

    // An invalid list is a usage error (exit 2), found before any login: with the
    // provider unreachable the answer is the same, and nothing is paused or sent.
    let unreachable = s.dir.join("unreachable.toml");
    let text = std::fs::read_to_string(&s.receiver_config).unwrap();
    let text = text.replace(
        &format!("port = {}\n", s.ssh.port()),
        &format!("port = {}\n", crate::support::free_port()),
    );
    std::fs::write(&unreachable, text).unwrap();
    let bad = s.dir.join("bad.txt");
    std::fs::write(&bad, "s1.t1 subscribe\ns1.t2 maybe\n").unwrap();
    for config in [&s.receiver_config, &unreachable] {
        let out = Command::new(bin_path("slony-receiver"))
            .args(["subscribe-series", "--list", bad.to_str().unwrap()])
            .args(["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(!s.die_file().exists());
    }
    // A valid list against an unreachable provider gets past the validation.
    let good = s.dir.join("good.txt");
    std::fs::write(&good, "s1.t1 subscribe\n").unwrap();
    let out = Command::new(bin_path("slony-receiver"))
        .args(["subscribe-series", "--list", good.to_str().unwrap()])
        .args(["--config", unreachable.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A new site subscribes to three tables, one with 100k rows. The first run gives up
    // at once, before the manager could answer, and says how to keep waiting: that
    // command finishes the request.
    let list = s.dir.join("list.txt");
    std::fs::write(
        &list,
        "s1.t1 subscribe\ns1.t2 subscribe\ns1.big subscribe\n",
    )
    .unwrap();
    let (code, out) = s.receiver(&[
        "subscribe-series",
        "--list",
        list.to_str().unwrap(),
        "--attempts",
        "1",
    ]);
    assert_eq!(code, 12, "{out}");
    let again = format!(
        "slony-receiver subscribe-series --config {} --list {}",
        s.receiver_config.display(),
        list.display()
    );
    assert!(out.contains(&again), "{out}");
    let (code, out) = s.subscribe("s1.t1 subscribe\ns1.t2 subscribe\ns1.big subscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    let replica = s.pg.connect("replica").await;
    for t in ["s1.t1", "s1.t2", "s1.big"] {
        assert_eq!(
            table_hash(&replica, t).await,
            table_hash(&provider, t).await,
            "{t}"
        );
    }
    let counter: i64 = replica
        .query_one("SELECT at_counter FROM \"_lab\".sl_archive_tracking", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counter as u64, SNAPSHOT);
    assert!(!s.die_file().exists(), "pull is no longer paused");
    assert_eq!(s.site_tables().lines().count(), 3, "{}", s.site_tables());
    // Only the manager's final word is left (it is the manager's to remove, at the next
    // request: the site's directory is sticky).
    wait_until(
        Duration::from_secs(10),
        "the trigger directory to be cleaned up",
        || {
            let left: Vec<String> = std::fs::read_dir(s.provider_root.join("triggers").join(NODE))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            left == [format!("{NODE}.subscribe_series.done")]
        },
    );

    // The provider's stream continues after the snapshot: pull applies it.
    let site_logs = s.provider_root.join("site_logs").join(NODE);
    std::fs::create_dir_all(&site_logs).unwrap();
    workload::write_archives(&site_logs, "lab", &s.stream, SNAPSHOT + 1, 80, |_| {
        Format::Copy22
    });
    let (code, out) = s.receiver(&["pull", "--once"]);
    assert_eq!(code, 0, "{out}");
    workload::apply_expected(&provider, &s.stream[SNAPSHOT as usize..], 80 - SNAPSHOT).await;
    for t in ["s1.t1", "s1.t2"] {
        assert_eq!(
            table_hash(&replica, t).await,
            table_hash(&provider, t).await,
            "{t} after pull"
        );
    }

    // The provider's counter has moved on with the stream.
    provider
        .batch_execute("UPDATE \"_lab\".sl_archive_counter SET ac_num = 80")
        .await
        .unwrap();

    // A change that fails on the subscriber (the table already exists there): rolled back
    // on both sides, pull not left paused.
    replica
        .batch_execute("CREATE TABLE s1.other (id int)")
        .await
        .unwrap();
    let (code, out) = s.subscribe("s1.other subscribe\ns1.big unsubscribe\n");
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("already exists"), "{out}");
    assert!(
        out.contains(
            "Drop or rename it on the replica (DROP TABLE ...), then run subscribe-series again"
        ),
        "{out}"
    );
    assert!(!s.die_file().exists());
    assert_eq!(
        s.site_tables().lines().count(),
        3,
        "the previous subscription is intact: {}",
        s.site_tables()
    );
    assert_eq!(
        table_hash(&replica, "s1.big").await,
        table_hash(&provider, "s1.big").await
    );

    // The same change succeeds once the obstacle is gone: s1.other added, s1.big dropped.
    replica.batch_execute("DROP TABLE s1.other").await.unwrap();
    let (code, out) = s.subscribe("s1.other subscribe\ns1.big unsubscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    assert_eq!(
        table_hash(&replica, "s1.other").await,
        table_hash(&provider, "s1.other").await
    );
    let big: Option<String> = replica
        .query_one("SELECT to_regclass('s1.big')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(big, None, "unsubscribed table dropped (allow_drop = true)");
    let tables = s.site_tables();
    assert!(
        tables.contains("s1.other") && !tables.contains("s1.big"),
        "{tables}"
    );
    let _ = &s.ssh;
}

impl Setup {
    /// Publishes archives `from..=to` into slon's archive directory as slon does (each
    /// written elsewhere, then renamed into place).
    fn publish(&self, from: u64, to: u64) {
        let staging = self.dir.join("staging");
        let archive = self.provider_root.join("archive");
        for p in workload::write_archives(&staging, "lab", &self.stream, from, to, |c| {
            if c % 3 == 0 {
                Format::Statements
            } else {
                Format::Copy22
            }
        }) {
            std::fs::rename(&p, archive.join(p.file_name().unwrap())).unwrap();
        }
    }

    fn cut_counter(&self) -> u64 {
        self.cut_counter_of(NODE)
    }

    /// The last archive the manager cut for site `node` (0 before any).
    fn cut_counter_of(&self, node: &str) -> u64 {
        self.site_counter_file(node, "cut_counter").unwrap_or(0)
    }

    /// A counter the manager keeps in `subscribers/<node>/<file>`.
    fn site_counter_file(&self, node: &str, file: &str) -> Option<u64> {
        std::fs::read_to_string(self.provider_root.join("subscribers").join(node).join(file))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }
}

/// The manager cuts the site's stream from slon's archive directory across two
/// subscriptions: a new site at the snapshot counter 42, then a table added at 70 while
/// archives up to 80 are already cut with the old list. The replica, pulling throughout,
/// ends equal to the provider's state at 80 on both tables: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_changes_take_effect_at_their_snapshot_in_the_cut_stream() {
    let s = Setup::new("subscribe-cut", true).await;
    let provider = s.pg.connect("provider").await;
    s.publish(1, 60);

    // A new site takes s1.t1 only, from the snapshot at 42.
    let (code, out) = s.subscribe("s1.t1 subscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    wait_until(Duration::from_secs(30), "the new site cut up to 60", || {
        s.cut_counter() == 60
    });
    let (code, out) = s.receiver(&["pull", "--once"]);
    // The replica has no s1.t2: a single s1.t2 row in its stream would fail the pull.
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    let replica = s.pg.connect("replica").await;
    let expected_db = {
        s.pg.create_db("expected").await;
        let c = s.pg.connect("expected").await;
        c.batch_execute(workload::SCHEMA_SQL).await.unwrap();
        c
    };
    workload::apply_expected(&expected_db, &s.stream, 60).await;
    assert_eq!(
        table_hash(&replica, "s1.t1").await,
        table_hash(&expected_db, "s1.t1").await,
        "s1.t1 at 60"
    );

    // slon goes on to 80; the cutter cuts 61..80 with the list of the day (s1.t1).
    s.publish(61, 80);
    wait_until(Duration::from_secs(30), "the site cut up to 80", || {
        s.cut_counter() == 80
    });
    // The provider's snapshot for the change is taken at 70.
    workload::apply_expected(&provider, &s.stream[SNAPSHOT as usize..], 70 - SNAPSHOT).await;
    provider
        .batch_execute("UPDATE \"_lab\".sl_archive_counter SET ac_num = 70")
        .await
        .unwrap();
    let (code, out) = s.subscribe("s1.t2 subscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    let since =
        std::fs::read_to_string(s.provider_root.join(format!("subscribers/{NODE}/since"))).unwrap();
    assert_eq!(
        since.trim(),
        "71",
        "the new list applies from the snapshot on"
    );
    wait_until(Duration::from_secs(30), "the site re-cut up to 80", || {
        s.cut_counter() == 80
    });

    // The replica (still at 60) applies 61..70 with the old list and 71..80 with the new
    // one on top of the snapshot of s1.t2 at 70.
    let (code, out) = s.receiver(&["pull", "--once"]);
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    workload::apply_expected(&expected_db, &s.stream[60..], 20).await;
    let at: i64 = replica
        .query_one("SELECT at_counter FROM \"_lab\".sl_archive_tracking", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(at, 80);
    for t in ["s1.t1", "s1.t2"] {
        assert_eq!(
            table_hash(&replica, t).await,
            table_hash(&expected_db, t).await,
            "{t} at 80"
        );
    }
    let t2_changes_after_70 = s.stream[70..80]
        .iter()
        .flatten()
        .filter(|c| matches!(c, Change::InsertT2 { .. }))
        .count();
    assert!(
        t2_changes_after_70 > 0,
        "the stream must change s1.t2 after the snapshot for this test to mean anything"
    );

    // Unsubscribing s1.t1 with allow_drop while the site is behind its snapshot: slon
    // goes on to 100, the snapshot is taken at 90, the replica is still at 80. The copies
    // 81..90 were cut with the old list and carry s1.t1's rows, so the table must stay
    // until 90 is applied, and go with it.
    s.publish(81, 100);
    wait_until(Duration::from_secs(30), "the site cut up to 100", || {
        s.cut_counter() == 100
    });
    workload::apply_expected(&provider, &s.stream[70..], 20).await;
    provider
        .batch_execute("UPDATE \"_lab\".sl_archive_counter SET ac_num = 90")
        .await
        .unwrap();
    let t1_changes = s.stream[80..90]
        .iter()
        .flatten()
        .filter(|c| {
            matches!(
                c,
                Change::InsertT1(_) | Change::UpdateTxt { .. } | Change::DeleteT1 { .. }
            )
        })
        .count();
    assert!(
        t1_changes > 0,
        "81..90 must change s1.t1 for this part to mean anything"
    );
    // A drop that cannot succeed (a view of the site's on the table) refuses the change
    // now, on both sides, instead of stopping pull at the snapshot later.
    replica
        .batch_execute("CREATE VIEW public.t1_view AS SELECT * FROM s1.t1")
        .await
        .unwrap();
    let (code, out) = s.subscribe("s1.t1 unsubscribe\n");
    assert_eq!(code, 4, "{out}\nmanager log:\n{}", s.manager_log());
    assert!(out.contains("depend"), "{out}");
    assert!(
        s.site_tables().lines().any(|l| l == "s1.t1"),
        "{}",
        s.site_tables()
    );
    replica
        .batch_execute("DROP VIEW public.t1_view")
        .await
        .unwrap();
    let (code, out) = s.subscribe("s1.t1 unsubscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    let t1_there = |r: &tokio_postgres::Row| r.get::<_, Option<String>>(0).is_some();
    let row = replica
        .query_one("SELECT pg_catalog.to_regclass('s1.t1')::text", &[])
        .await
        .unwrap();
    assert!(
        t1_there(&row),
        "s1.t1 stays while the copies before the snapshot carry it"
    );
    // Subscribing it again now would load it at a snapshot while copies before that still
    // carry its rows: refused before anything is applied, saying what to do.
    let (code, out) = s.subscribe("s1.t1 subscribe\n");
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("cannot be subscribed again yet"), "{out}");
    assert!(out.contains("past archive 90"), "{out}");
    assert!(
        !s.site_tables().lines().any(|l| l == "s1.t1"),
        "{}",
        s.site_tables()
    );
    wait_until(Duration::from_secs(30), "the site re-cut up to 100", || {
        s.cut_counter() == 100
    });
    let (code, out) = s.receiver(&["pull", "--once"]);
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    workload::apply_expected(&expected_db, &s.stream[80..], 20).await;
    let at: i64 = replica
        .query_one("SELECT at_counter FROM \"_lab\".sl_archive_tracking", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(at, 100);
    let row = replica
        .query_one("SELECT pg_catalog.to_regclass('s1.t1')::text", &[])
        .await
        .unwrap();
    assert!(!t1_there(&row), "s1.t1 went with the snapshot's archive");
    assert_eq!(
        table_hash(&replica, "s1.t2").await,
        table_hash(&expected_db, "s1.t2").await,
        "s1.t2 at 100"
    );
    assert!(
        out.contains("dropped the unsubscribed tables at their snapshot"),
        "{out}"
    );
    let _ = &s.ssh;
}

/// The crash windows of a subscription change: the receiver killed right after the
/// bootstrap SQL committed and right after it reported, and the manager killed between
/// writing `.sqldone` and recording it. Each time both sides end with the change applied
/// exactly once, and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_windows_end_with_the_change_applied_once() {
    let mut s = Setup::new("subscribe-crash", false).await;
    let provider = s.pg.connect("provider").await;
    let replica = s.pg.connect("replica").await;
    let same = |t: &'static str| {
        let (provider, replica) = (&provider, &replica);
        async move {
            assert_eq!(
                table_hash(replica, t).await,
                table_hash(provider, t).await,
                "{t}"
            )
        }
    };

    // A new site, the receiver killed right after its SQL committed (before it told the
    // manager): the rerun finds the replica's own record and reports success, not a
    // second apply.
    for (list, point, table) in [
        ("s1.t1 subscribe\n", "after-commit", "s1.t1"),
        ("s1.t2 subscribe\n", "after-report", "s1.t2"),
        // Killed after recording the request but before sending it: the rerun sends the
        // same request (and lifts the pause it set).
        ("s1.big subscribe\n", "after-state", "s1.big"),
    ] {
        let (code, out) = s.subscribe_env(list, &[("SLONY_RECEIVER_CRASH_AT", point)]);
        assert_eq!(code, -1, "the receiver was to die at {point}: {out}");
        assert!(out.contains(&format!("crashing at {point}")), "{out}");
        if point == "after-commit" {
            // The SQL is committed: withdrawing the request would roll back on the
            // provider what the replica holds, so --abort refuses and says what to do.
            let (code, out) = s.receiver(&["subscribe-series", "--abort"]);
            assert_eq!(code, 4, "{out}");
            assert!(out.contains("already applied on the replica"), "{out}");
        }
        let (code, out) = s.subscribe(list);
        assert_eq!(code, 0, "{out}\n{}", s.manager_log());
        assert!(out.contains("subscription updated"), "{out}");
        same(table).await;
        assert!(s.site_tables().contains(table), "{}", s.site_tables());
        assert!(!s.die_file().exists());
    }
    let applied: i64 = replica
        .query_one("SELECT count(*) FROM \"_lab\".sl_subscription_applied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 3, "each change recorded once");

    // The manager killed after writing `.sqldone` but before recording it: restarted, it
    // announces again, keeps the site's answer, and finishes.
    s.manager.kill9_in_place();
    s.manager = start_manager(&s.dir, &[("SLONY_MANAGER_CRASH_AT", "after-sqldone")]);
    let list = s.dir.join("list-other.txt");
    std::fs::write(&list, "s1.other subscribe\n").unwrap();
    let receiver = Command::new(bin_path("slony-receiver"))
        .args(["subscribe-series", "--list"])
        .arg(&list)
        .args(["--attempts", "90", "--interval-secs", "1", "--config"])
        .arg(&s.receiver_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the manager to die at after-sqldone",
        || matches!(s.manager.try_wait(), Ok(Some(_))),
    );
    assert!(
        s.manager_log().contains("crashing at after-sqldone"),
        "{}",
        s.manager_log()
    );
    // The site answers while the manager is down.
    let report = s
        .provider_root
        .join("triggers")
        .join(NODE)
        .join(format!("{NODE}.subscribe_series.sqlapplied"));
    wait_until(Duration::from_secs(60), "the site's report", || {
        report.exists()
    });
    s.manager = start_manager(&s.dir, &[]);
    let out = receiver.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", s.manager_log());
    assert!(text.contains("subscription updated"), "{text}");
    same("s1.other").await;
    assert_eq!(s.site_tables().lines().count(), 4, "{}", s.site_tables());
}

/// Tables that only a quoted name reaches, as Slony's own regression suites name them,
/// subscribed with the list's quoted syntax through the real manager and receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_names_are_subscribed_exactly() {
    let s = Setup::new("subscribe-quoted", false).await;
    let provider = s.pg.connect("provider").await;
    provider
        .batch_execute(
            "CREATE SCHEMA \"Schema.name\";
             CREATE TABLE \"Schema.name\".\"Capital Idea\" (id int PRIMARY KEY, \"Odd Col\" text);
             INSERT INTO \"Schema.name\".\"Capital Idea\" VALUES (1, 'a'), (2, 'b''s');
             CREATE TABLE public.\"Jan's bad ideas\" (id int PRIMARY KEY, note text);
             INSERT INTO public.\"Jan's bad ideas\" VALUES (7, 'seven');
             INSERT INTO \"_lab\".sl_table (tab_reloid, tab_relname, tab_nspname, tab_set)
             SELECT c.oid, c.relname, n.nspname, 1 FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE (n.nspname, c.relname) IN (('Schema.name', 'Capital Idea'), ('public', 'Jan''s bad ideas'));",
        )
        .await
        .unwrap();
    let (code, out) = s.subscribe(
        "# names as PostgreSQL spells them, in double quotes\n\
         \"Schema.name\".\"Capital Idea\" subscribe\n\
         public.\"Jan's bad ideas\"\n",
    );
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    let replica = s.pg.connect("replica").await;
    for t in [
        "\"Schema.name\".\"Capital Idea\"",
        "public.\"Jan's bad ideas\"",
    ] {
        assert_eq!(
            table_hash(&replica, t).await,
            table_hash(&provider, t).await,
            "{t}"
        );
    }
    // The manager's list holds them in the same syntax, read back exactly.
    assert_eq!(
        s.site_tables(),
        "\"Schema.name\".\"Capital Idea\"\npublic.\"Jan's bad ideas\"\n"
    );
    // A name that only looks quoted, or an unclosed quote, is refused before any login.
    let (code, out) = s.subscribe("\"Schema.name\".\"Capital Idea subscribe\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("double quotes"), "{out}");
}

/// The tables the soak subscribes and unsubscribes. The stream changes `s1.t1` and
/// `s1.t2`; `s1.other` only ever has its snapshot.
const SOAK_TABLES: [&str; 3] = ["s1.t2", "s1.other", "s1.t1"];

/// A run of `subscribe-series` is killed at a random moment this long after its start at
/// most (a request takes about 1-3 s: the manager rescans and the receiver looks every
/// second).
const KILL_WINDOW_MS: u64 = 2500;

/// The soak's tables whose rows `changes` touch.
fn tables_changed(changes: &[Change]) -> BTreeSet<&'static str> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::InsertT1(_) | Change::UpdateTxt { .. } | Change::DeleteT1 { .. } => {
                Some("s1.t1")
            }
            Change::InsertT2 { .. } => Some("s1.t2"),
            Change::SetSeq(_) => None,
        })
        .collect()
}

/// The soak's tables whose rows a site's copy of an archive carries: statements
/// ([`Format::Statements`]) name them `"s1"."t1"`, COPY rows ([`Format::Copy22`]) carry
/// the schema and the table as their 5th and 6th fields.
fn tables_carried(text: &str) -> BTreeSet<&'static str> {
    [("s1.t1", "t1"), ("s1.t2", "t2")]
        .into_iter()
        .filter(|(_, rel)| {
            text.contains(&format!("\"s1\".\"{rel}\"")) || text.contains(&format!("\ts1\t{rel}\t"))
        })
        .map(|(t, _)| t)
        .collect()
}

/// What the checks of the sites' streams saw over the run: enough for them to mean
/// something (they can fail both ways).
#[derive(Default)]
struct StreamTally {
    /// Site copies checked (each time).
    archives: usize,
    /// Tables whose rows a copy carried, as its list said it must.
    carried: usize,
    /// Tables whose rows an archive had that a site's copy rightly did not carry.
    held_back: usize,
}

/// A (since, table list) the manager recorded for a site: the list applies to the
/// archives from `since` on, until the next.
type ListFrom = (u64, BTreeSet<String>);

/// Checks site `node`'s stream in `log_dir`: archives contiguous from the first present
/// up to `cut` (nothing beyond), none before the site's first list, and each copy carries
/// exactly the rows of the stream's archive that belong to the tables of the list in
/// effect for its counter (the last of `history` whose `since` is at most the counter:
/// archives cut before a change whose snapshot is earlier are cut again with it).
fn check_stream(
    log_dir: &Path,
    node: &str,
    stream: &[Vec<Change>],
    history: &[ListFrom],
    cut: u64,
    tally: &mut StreamTally,
) {
    let mut counters: Vec<u64> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(log_dir) {
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            // The cutter's temporary files.
            if name.starts_with('.') {
                continue;
            }
            let digits = name
                .strip_prefix("slony1_log_2_")
                .and_then(|r| r.strip_suffix(".sql"))
                .filter(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
                .unwrap_or_else(|| panic!("{node}: {name} in {} is no archive", log_dir.display()));
            counters.push(digits.parse().unwrap());
        }
    }
    counters.sort_unstable();
    let first_since = history.first().map(|(since, _)| *since);
    let Some(&first) = counters.first() else {
        assert!(
            first_since.is_some_and(|since| cut < since),
            "{node}: no archive cut, but the cut counter is {cut} (history {history:?})"
        );
        return;
    };
    let last = *counters.last().unwrap();
    assert_eq!(
        last, cut,
        "{node}: the newest copy is {last}, the cut counter {cut}"
    );
    assert_eq!(
        counters,
        (first..=last).collect::<Vec<_>>(),
        "{node}: the stream has a gap"
    );
    assert!(
        first_since.is_some_and(|since| since <= first),
        "{node}: archive {first} is before the site's first list (history {history:?})"
    );
    for c in counters {
        let (since, list) = history.iter().rev().find(|(since, _)| *since <= c).unwrap();
        let path = log_dir.join(workload::archive_name(c));
        let text = std::fs::read_to_string(&path).unwrap();
        let carried = tables_carried(&text);
        let changed = tables_changed(&stream[(c - 1) as usize]);
        let expected: BTreeSet<&str> = changed
            .iter()
            .copied()
            .filter(|t| list.contains(*t))
            .collect();
        assert_eq!(
            carried,
            expected,
            "{node}: archive {c} carries the rows of {carried:?}; the stream's archive changes {changed:?} and the list in effect (from {since}) is {list:?}\n{}",
            path.display()
        );
        tally.archives += 1;
        tally.carried += carried.len();
        tally.held_back += changed.len() - expected.len();
    }
}

/// One subscriber of the soak.
struct SoakSite {
    node: String,
    config: PathBuf,
    replica: tokio_postgres::Client,
    /// Every list the manager recorded for the site, in order.
    history: Vec<ListFrom>,
}

impl SoakSite {
    /// The manager's list for the site.
    fn listed(&self, s: &Setup) -> BTreeSet<String> {
        s.site_tables_of(&self.node)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The first archive the manager's list applies to (`None` before the site has one).
    fn since(&self, s: &Setup) -> Option<u64> {
        s.site_counter_file(&self.node, "since")
    }

    /// Records the manager's current list if it is not the last one recorded.
    fn note_list(&mut self, s: &Setup) {
        let Some(since) = self.since(s) else { return };
        let entry = (since, self.listed(s));
        if let Some((last, _)) = self.history.last() {
            assert!(
                *last <= since,
                "{}: the list's since went back from {last} to {since}",
                self.node
            );
        }
        if self.history.last() != Some(&entry) {
            self.history.push(entry);
        }
    }

    /// The replica's `at_counter` (`None` before it has the tracking schema).
    async fn at_counter(&self) -> Option<u64> {
        if !self.exists("\"_lab\".sl_archive_tracking").await {
            return None;
        }
        let at: i64 = self
            .replica
            .query_one("SELECT at_counter FROM \"_lab\".sl_archive_tracking", &[])
            .await
            .unwrap()
            .get(0);
        Some(at as u64)
    }

    /// How many subscription changes the replica recorded as applied.
    async fn applied_changes(&self) -> i64 {
        if !self.exists("\"_lab\".sl_subscription_applied").await {
            return 0;
        }
        self.replica
            .query_one("SELECT count(*) FROM \"_lab\".sl_subscription_applied", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn exists(&self, name: &str) -> bool {
        self.replica
            .query_one("SELECT pg_catalog.to_regclass($1)::text", &[&name])
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .is_some()
    }

    /// Waits until the manager has cut the site up to `published`, pulls once, and checks
    /// the site: the replica at that archive, each soak table on the manager's list iff
    /// it is on the replica, each listed one equal to the provider's (which is at
    /// `published`), and the site's stream ([`check_stream`]).
    async fn pull_and_check(
        &self,
        s: &Setup,
        provider: &tokio_postgres::Client,
        published: u64,
        tally: &mut StreamTally,
    ) {
        let node = &self.node;
        wait_until(
            Duration::from_secs(60),
            &format!("the manager to cut {node} up to {published}"),
            || s.cut_counter_of(node) == published,
        );
        let (code, out) = run_receiver(
            &self.config,
            &["pull", "--once"],
            &s.dir.join("soak-pull.out"),
        );
        assert_eq!(code, 0, "{node}: pull --once\n{out}");
        assert_eq!(
            self.at_counter().await,
            Some(published),
            "{node}: the replica's counter after the pull\n{out}"
        );
        let listed = self.listed(s);
        for t in SOAK_TABLES {
            let on_list = listed.contains(t);
            let there = self.exists(t).await;
            assert_eq!(
                on_list, there,
                "{node}: {t} on the manager's list: {on_list}, on the replica: {there}"
            );
            if on_list {
                assert_eq!(
                    table_hash(&self.replica, t).await,
                    table_hash(provider, t).await,
                    "{node}: {t} at {published}"
                );
            }
        }
        check_stream(
            &s.provider_root.join("site_logs").join(node),
            node,
            &s.stream,
            &self.history,
            published,
            tally,
        );
    }
}

/// Starts `slony-receiver <args> --config <config>`, its output going to the file `out`.
fn spawn_receiver(config: &Path, args: &[&str], out: &Path) -> Child {
    let file = std::fs::File::create(out).unwrap();
    Command::new(bin_path("slony-receiver"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `bound` (then kills it and panics); its exit code, -1 for a
/// signal.
fn wait_bounded(child: &mut Child, bound: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `slony-receiver <args> --config <config>` to its end (at most 5 minutes): its exit
/// code and output.
fn run_receiver(config: &Path, args: &[&str], out: &Path) -> (i32, String) {
    let mut child = spawn_receiver(config, args, out);
    let code = wait_bounded(
        &mut child,
        Duration::from_secs(300),
        &format!("slony-receiver {args:?}"),
    );
    (code, std::fs::read_to_string(out).unwrap_or_default())
}

/// Moves the provider from archive `from` to `to`: the stream's changes in between and
/// the archive counter (the snapshot's counter), as slon's commits do.
async fn move_provider(
    provider: &tokio_postgres::Client,
    stream: &[Vec<Change>],
    from: u64,
    to: u64,
) {
    if to > from {
        workload::apply_expected(provider, &stream[from as usize..], to - from).await;
        provider
            .batch_execute(&format!(
                "UPDATE \"_lab\".sl_archive_counter SET ac_num = {to}"
            ))
            .await
            .unwrap();
    }
}

/// What a soak cycle asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SoakKind {
    /// site1 adds or unsubscribes (with `allow_drop`) one table.
    Change,
    /// The same, made to fail on the replica: a view of the site's on the table to drop,
    /// or a table of the site's where one is to be added.
    Failing,
    /// A new site subscribes for the first time.
    NewSite,
}

/// A soak of random kills (`scripts/crash-soak.sh`; not in CI) with the manager cutting
/// the sites' streams from slon's archive directory. Before each cycle slon writes 0-2
/// archives and the provider's counter moves with them (one time in five it stays behind
/// while they are cut, so the change's snapshot is earlier than what the site already has
/// and those copies are cut again); site1 pulls first or not, so it asks caught up or
/// behind. Then a change: site1 adds a table or unsubscribes one with `allow_drop` (a
/// drop deferred to its snapshot while behind); one cycle in eight the change cannot be
/// applied on the replica (a view on the table to drop, or a table already there) and
/// must be rolled back; one in ten a new site subscribes for the first time. Meanwhile
/// `subscribe-series` or `slony-manager run` is killed with SIGKILL at a random moment and
/// restarted. After every cycle: no request left on either side, pull not paused; the
/// change applied exactly once on both sides (the manager's list changed as asked, from
/// the snapshot's archive on, and the replica recorded it once) or rolled back on both
/// (list and replica as they were); then, once the manager has cut up to slon's newest
/// archive, `pull --once` brings the replica to exactly that archive, each table is on
/// the manager's list iff it is on the replica and then equals the provider's, and the
/// site's stream is contiguous with every copy carrying exactly the rows of the list in
/// effect for its counter. At the end every site pulls once more and is checked again.
/// `SLONY_SOAK_CYCLES` (default 260: at least 100 kills mid-request on each side) and
/// `SLONY_SOAK_SEED` set the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of random kills: run by scripts/crash-soak.sh"]
async fn crash_soak_random_kills() {
    let began = Instant::now();
    let cycles: usize = std::env::var("SLONY_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(260);
    let seed: u64 = std::env::var("SLONY_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("soak: {cycles} cycles, SLONY_SOAK_SEED={seed}");
    let mut state = seed;
    let mut next = move |n: u64| {
        // xorshift64*: reproducible from the seed printed above.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    // Each new site is used in one cycle; about one cycle in ten is one.
    let new_nodes: Vec<String> = (0..cycles / 10 + 2).map(|i| format!("new{i}")).collect();
    let new_refs: Vec<&str> = new_nodes.iter().map(String::as_str).collect();
    // slon writes at most two archives a cycle.
    let archives = SNAPSHOT + 2 * cycles as u64 + 2;
    let mut s = Setup::with_sites("subscribe-soak", true, archives, &new_refs).await;
    let provider = s.pg.connect("provider").await;
    // slon's directory holds the archives up to the provider's counter.
    s.publish(1, SNAPSHOT);
    let mut published = SNAPSHOT;
    let (code, out) = s.subscribe("s1.t1 subscribe\n");
    assert_eq!(code, 0, "{out}");
    let mut sites = vec![SoakSite {
        node: NODE.into(),
        config: s.receiver_config.clone(),
        replica: s.pg.connect("replica").await,
        history: Vec::new(),
    }];
    sites[0].note_list(&s);
    let mut tally = StreamTally::default();
    sites[0]
        .pull_and_check(&s, &provider, published, &mut tally)
        .await;

    let list = s.dir.join("soak-list.txt");
    let (mut kills_receiver, mut kills_manager, mut ended_before_kill) = (0, 0, 0);
    let (mut applied, mut rolled_back, mut failing, mut new_sites) = (0, 0, 0, 0);
    let (mut recut, mut asked_behind, mut deferred_drops) = (0, 0, 0);
    let mut new_used = 0;
    let mut unexpected_rollbacks: Vec<String> = Vec::new();
    for cycle in 0..cycles {
        // slon writes 0-2 archives; the provider's counter moves with them, or stays
        // behind while the site has them cut already.
        let k = next(3);
        let lag = k > 0 && next(5) == 0;
        let snapshot = if lag {
            published + next(k)
        } else {
            published + k
        };
        move_provider(&provider, &s.stream, published, snapshot).await;
        if k > 0 {
            s.publish(published + 1, published + k);
            published += k;
        }
        let kind = if next(10) == 0 && new_used < new_nodes.len() {
            SoakKind::NewSite
        } else if next(8) == 0 {
            SoakKind::Failing
        } else {
            SoakKind::Change
        };
        if lag {
            wait_until(
                Duration::from_secs(60),
                "site1 cut ahead of the snapshot",
                || s.cut_counter() == published,
            );
        }
        let (site_index, list_text, old, table) = if kind == SoakKind::NewSite {
            let node = new_nodes[new_used].clone();
            new_used += 1;
            let db = format!("replica_{node}");
            s.pg.create_db(&db).await;
            let config = s.add_receiver(&node, &db);
            sites.push(SoakSite {
                replica: s.pg.connect(&db).await,
                node,
                config,
                history: Vec::new(),
            });
            let mut chosen: Vec<&str> = SOAK_TABLES
                .iter()
                .copied()
                .filter(|_| next(2) == 0)
                .collect();
            if chosen.is_empty() {
                chosen.push(SOAK_TABLES[next(3) as usize]);
            }
            let text: String = chosen.iter().map(|t| format!("{t} subscribe\n")).collect();
            (sites.len() - 1, text, BTreeSet::new(), None)
        } else {
            if !lag && next(2) == 0 {
                let (code, out) = run_receiver(
                    &sites[0].config,
                    &["pull", "--once"],
                    &s.dir.join("soak-pull.out"),
                );
                assert_eq!(
                    code, 0,
                    "cycle {cycle}: pull --once before the change\n{out}"
                );
            }
            let table = SOAK_TABLES[next(3) as usize];
            let old = sites[0].listed(&s);
            let had = old.contains(table);
            let action = if had { "unsubscribe" } else { "subscribe" };
            (0, format!("{table} {action}\n"), old, Some((table, had)))
        };
        let site = &sites[site_index];
        let node = site.node.clone();
        // The obstacle of a failing change, and what the failure must say.
        let obstacle = match (kind, table) {
            (SoakKind::Failing, Some((t, true))) => {
                site.replica
                    .batch_execute(&format!(
                        "CREATE VIEW public.soak_view AS SELECT * FROM {t}"
                    ))
                    .await
                    .unwrap();
                Some(("DROP VIEW public.soak_view".to_string(), "depend"))
            }
            (SoakKind::Failing, Some((t, false))) => {
                site.replica
                    .batch_execute(&format!("CREATE TABLE {t} (soak int)"))
                    .await
                    .unwrap();
                Some((format!("DROP TABLE {t}"), "already exists"))
            }
            _ => None,
        };
        let at_before = site.at_counter().await;
        let applied_before = site.applied_changes().await;
        let since_before = site.since(&s);
        let cut_before = s.cut_counter_of(&node);
        if at_before.is_some_and(|at| at < snapshot) {
            asked_behind += 1;
        }
        eprintln!(
            "soak cycle {cycle}: {kind:?} {node} {:?}; slon at {published}, snapshot {snapshot}, replica at {at_before:?}",
            list_text.trim_end()
        );

        std::fs::write(&list, &list_text).unwrap();
        let subscribe = |out: &str| {
            spawn_receiver(
                &site.config,
                &[
                    "subscribe-series",
                    "--list",
                    list.to_str().unwrap(),
                    "--attempts",
                    "60",
                    "--interval-secs",
                    "1",
                ],
                &s.dir.join(out),
            )
        };
        let started = Instant::now();
        let mut child = subscribe("soak-run.out");
        let delay = next(KILL_WINDOW_MS);
        std::thread::sleep(Duration::from_millis(delay));
        let running = child.try_wait().unwrap().is_none();
        let kill_receiver = cycle % 2 == 0;
        let mut first_out = String::new();
        if kill_receiver {
            if running {
                kills_receiver += 1;
                let _ = child.kill();
                let _ = child.wait();
                first_out = std::fs::read_to_string(s.dir.join("soak-run.out")).unwrap();
                child = subscribe("soak-rerun.out");
            }
        } else {
            if running {
                kills_manager += 1;
            }
            s.manager.kill9_in_place();
            if running {
                // The site goes on alone for a while.
                std::thread::sleep(Duration::from_millis(next(1000)));
            }
            s.manager = start_manager(&s.dir, &[]);
        }
        if !running {
            ended_before_kill += 1;
        }
        let code = wait_bounded(
            &mut child,
            Duration::from_secs(300),
            &format!("cycle {cycle}: subscribe-series"),
        );
        let out_file = if kill_receiver && running {
            "soak-rerun.out"
        } else {
            "soak-run.out"
        };
        let text = std::fs::read_to_string(s.dir.join(out_file)).unwrap();
        let context = || {
            format!(
                "cycle {cycle} ({kind:?} {node} {:?}, seed {seed}), {} killed {}after {delay} ms\nkilled run:\n{first_out}\nlast run (exit {code}):\n{text}\nmanager log:\n{}",
                list_text.trim_end(),
                if kill_receiver { "subscribe-series" } else { "slony-manager" },
                if running { "" } else { "(it had ended) " },
                crate::support::tail(&s.dir.join("manager.log"), 60)
            )
        };
        let ok = match code {
            0 => true,
            4 => false,
            _ => panic!("unexpected exit\n{}", context()),
        };
        if let Some((undo, reason)) = &obstacle {
            assert!(
                !ok,
                "a change the replica cannot apply was applied\n{}",
                context()
            );
            assert!(
                text.contains(reason),
                "the failure must say {reason:?}\n{}",
                context()
            );
            site.replica.batch_execute(undo).await.unwrap();
        } else if !ok {
            unexpected_rollbacks.push(format!("cycle {cycle}: {}", text.trim_end()));
        }
        // The slon archives beyond the snapshot reach the provider now.
        move_provider(&provider, &s.stream, snapshot, published).await;

        // No request is left in progress on either side, and pull is not paused.
        let subscribers = s.provider_root.join("subscribers");
        wait_until(
            Duration::from_secs(60),
            &format!("cycle {cycle}: no request of {node} in progress"),
            || {
                !subscribers.join(format!("{node}.request.json")).exists()
                    && !subscribers.join(format!("{node}.new")).exists()
            },
        );
        assert!(
            !s.die_file_of(&node).exists(),
            "pull stays paused\n{}",
            context()
        );
        assert!(
            !s.local_dir(&node)
                .join(&node)
                .join("subscribe_state.json")
                .exists(),
            "the site keeps a request in progress\n{}",
            context()
        );

        // Applied exactly once on both sides, or rolled back on both.
        let site = &mut sites[site_index];
        let listed = site.listed(&s);
        let since = site.since(&s);
        // A rerun that found the first run's change complete sent a request of its own,
        // which changed nothing (the manager says so).
        let noop_rerun = text.contains("is already subscribed: unchanged")
            || text.contains("was not subscribed: nothing to unsubscribe");
        let applied_now = site.applied_changes().await - applied_before;
        if ok {
            applied += 1;
            let expected: BTreeSet<String> = match table {
                None => list_text
                    .lines()
                    .map(|l| l.split(' ').next().unwrap().to_string())
                    .collect(),
                Some((t, true)) => old.iter().filter(|o| *o != t).cloned().collect(),
                Some((t, false)) => old.iter().cloned().chain([t.to_string()]).collect(),
            };
            assert_eq!(listed, expected, "the manager's list\n{}", context());
            assert_eq!(
                since,
                Some(snapshot + 1),
                "the new list applies from the snapshot on\n{}",
                context()
            );
            assert_eq!(
                applied_now,
                1 + i64::from(noop_rerun),
                "changes the replica recorded\n{}",
                context()
            );
            if snapshot < cut_before {
                recut += 1;
            }
            if matches!(table, Some((_, true))) && at_before.is_some_and(|at| at < snapshot) {
                deferred_drops += 1;
            }
        } else {
            rolled_back += 1;
            assert_eq!(listed, old, "the manager's list\n{}", context());
            assert_eq!(since, since_before, "the list's since\n{}", context());
            assert_eq!(
                applied_now,
                0,
                "changes the replica recorded\n{}",
                context()
            );
        }
        site.note_list(&s);
        match kind {
            SoakKind::Failing => failing += 1,
            SoakKind::NewSite => new_sites += 1,
            SoakKind::Change => {}
        }
        if site.history.is_empty() {
            // A new site rolled back: nothing of it on either side.
            assert!(
                !subscribers.join(&node).exists() && site.at_counter().await.is_none(),
                "a new site's first request rolled back leaves nothing\n{}",
                context()
            );
            for t in SOAK_TABLES {
                assert!(!site.exists(t).await, "{t} on {node}\n{}", context());
            }
        } else {
            site.pull_and_check(&s, &provider, published, &mut tally)
                .await;
        }
        eprintln!(
            "soak cycle {cycle}: exit {code} after {:.1} s, {} killed {}after {delay} ms; list {listed:?} from {since:?}",
            started.elapsed().as_secs_f64(),
            if kill_receiver { "subscribe-series" } else { "slony-manager" },
            if running { "" } else { "(it had ended) " },
        );
    }

    // A final pull of every site: each replica equals the provider on its tables.
    for site in &sites {
        if !site.history.is_empty() {
            site.pull_and_check(&s, &provider, published, &mut tally)
                .await;
        }
    }
    assert!(
        tally.carried > 0 && tally.held_back > 0,
        "the stream checks saw no row carried ({}) or none held back ({}): they check nothing",
        tally.carried,
        tally.held_back
    );
    let site1_cut = std::fs::read_dir(s.provider_root.join("site_logs").join(NODE))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("slony1_log_")
        })
        .count();
    eprintln!(
        "soak: {cycles} cycles (SLONY_SOAK_SEED={seed}) in {:.0} s: {kills_receiver} subscribe-series and {kills_manager} slony-manager run killed mid-request ({ended_before_kill} runs had ended before their kill); {applied} changes applied, {rolled_back} rolled back; {failing} failing applies (all rolled back), {new_sites} new sites; {asked_behind} asked while behind the snapshot, {deferred_drops} drops deferred to it, {recut} changes re-cut archives already cut; slon wrote {published} archives, {site1_cut} cut for {NODE}; {} site copies checked ({} table rows carried, {} held back); every cycle consistent",
        began.elapsed().as_secs_f64(),
        tally.archives,
        tally.carried,
        tally.held_back,
    );
    for r in &unexpected_rollbacks {
        eprintln!("soak: rolled back without an obstacle: {r}");
    }
}

/// A set sequence that no subscribed table owns is subscribed by listing it: it is
/// created on the replica at the provider's value, kept in the site's sequence list (so
/// the cutter sends its changes), and stays when it is unsubscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_set_sequence_is_replicated() {
    let s = Setup::new("subscribe-sequence", false).await;
    let provider = s.pg.connect("provider").await;
    provider
        .batch_execute(&format!(
            "SELECT setval('s1.seq1', 4242);\n{}",
            crate::support::slony_set_sequences_sql("lab", &["s1.seq1"])
        ))
        .await
        .unwrap();
    let (code, out) = s.subscribe("s1.t1 subscribe\ns1.seq1 subscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    let replica = s.pg.connect("replica").await;
    let v: i64 = replica
        .query_one("SELECT last_value FROM s1.seq1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 4242);
    let listed = std::fs::read_to_string(
        s.provider_root
            .join("subscribers")
            .join(NODE)
            .join("sequences"),
    )
    .unwrap();
    assert!(listed.lines().any(|l| l == "s1.seq1"), "{listed}");
    // A sequence outside every set is refused, with the reason.
    provider
        .batch_execute("CREATE SEQUENCE s1.not_replicated")
        .await
        .unwrap();
    let (code, out) = s.subscribe("s1.not_replicated subscribe\n");
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("is a sequence in no Slony set"), "{out}");
    // Unsubscribed, it stays on the replica, no longer updated.
    let (code, out) = s.subscribe("s1.seq1 unsubscribe\n");
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", s.manager_log());
    assert!(out.contains("s1.seq1 is a sequence: it stays"), "{out}");
    let there: Option<String> = replica
        .query_one("SELECT pg_catalog.to_regclass('s1.seq1')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(there.is_some());
}
