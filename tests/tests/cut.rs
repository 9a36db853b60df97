//! The manager's archive cutter end to end: slon's archive directory fed with a stream of
//! archives in both formats over five replicated objects, `slony-manager run` cutting it
//! for three sites with different table lists (and being killed with SIGKILL in the
//! middle, twice), then each site's replica fed by `slony-receiver pull --once` over a
//! real sshd, compared with the expected state restricted to its subscription.
//!
//! [`sequences_named_after_a_subscribed_table_are_not_sent`]: a site subscribed with
//! `slony-receiver subscribe-series` gets the changes of the set sequences its table
//! owns, and none of the sequences merely named after that table, which it does not
//! have and which would stop its pull.

use crate::support::manager::{ManagerDaemon, ManagerToml};
use crate::support::pg::PgServer;
use crate::support::receiver::{receiver_toml, run_receiver, Endpoints};
use crate::support::ssh::SshServer;
use crate::support::workload::{self, Change, ExtraChange, Format};
use crate::support::{bin_path, tail, wait_until, TestDir};
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CLUSTER: &str = "lab";
/// Archives in the stream.
const N: u64 = 520;
/// Archives per batch of the manager's housekeeping.
const BATCH: u64 = 100;
/// Bound on waiting for the cutter.
const WAIT: Duration = Duration::from_secs(120);

/// The sites, their tables and their sequences (the lists a subscription would have
/// stored: here written by hand, `s1.seq1` owned by no table).
const SITES: &[(&str, &[&str], &[&str])] = &[
    ("site-a", &["s1.t1", "s2.t3"], &["s1.seq1", "s2.t3_id_seq"]),
    ("site-b", &["s1.t2", "s2.t4"], &[]),
    (
        "site-c",
        &["s1.t1", "s1.t2", "s2.t3", "s2.t4"],
        &["s1.seq1", "s2.t3_id_seq"],
    ),
];

/// The objects a site's replica must match: its tables and its sequences.
fn objects(tables: &[&str], sequences: &[&str]) -> Vec<String> {
    tables
        .iter()
        .chain(sequences)
        .map(|s| s.to_string())
        .collect()
}

fn format_of(counter: u64) -> Format {
    if counter.is_multiple_of(3) {
        Format::Statements
    } else {
        Format::Copy22
    }
}

struct Setup {
    dir: TestDir,
    archive: PathBuf,
    subscribers: PathBuf,
    site_logs: PathBuf,
    config: PathBuf,
    log: PathBuf,
    stream: Vec<Vec<Change>>,
    extra: Vec<Vec<ExtraChange>>,
    pg: PgServer,
}

impl Setup {
    async fn new() -> Setup {
        let dir = TestDir::new("cut");
        let root = dir.mkdir("provider");
        let archive = dir.mkdir("provider/archive");
        let subscribers = dir.mkdir("provider/subscribers");
        let site_logs = dir.mkdir("provider/site_logs");
        // The sites' exchange directories: the receivers' `remote.trigger_dir`
        // (`<site_logs>.exchange`, see support::receiver) is the manager's trigger_dir.
        dir.mkdir("provider/site_logs.exchange");
        let pg = PgServer::start();
        let cluster = ClusterName::new(CLUSTER).unwrap();
        pg.create_db("expected").await;
        pg.connect("expected")
            .await
            .batch_execute(&format!(
                "{}{}",
                workload::SCHEMA_SQL,
                workload::EXTRA_SCHEMA_SQL
            ))
            .await
            .unwrap();
        for (node, list, sequences) in SITES {
            // The provider side: the site's lists, starting at archive 1.
            let d = subscribers.join(node);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("tables"), list.join("\n") + "\n").unwrap();
            let seqs: String = sequences.iter().map(|q| format!("{q}\n")).collect();
            std::fs::write(d.join("sequences"), seqs).unwrap();
            std::fs::write(d.join("since"), "1\n").unwrap();
            // The replica: only its own objects, at counter 0.
            let db = node.replace('-', "_");
            pg.create_db(&db).await;
            let mut sql = String::from("CREATE SCHEMA s1; CREATE SCHEMA s2;\n");
            // s2.t3's bigserial column creates s2.t3_id_seq.
            let own = sequences.iter().filter(|q| **q != "s2.t3_id_seq");
            for o in list.iter().chain(own) {
                sql.push_str(workload::object_sql(o));
                sql.push('\n');
            }
            sql.push_str(&slony_shared::offline::tracking_schema_sql(&cluster));
            sql.push_str(&slony_shared::offline::tracking_row_sql(
                &cluster,
                Counter(0),
                "1970-01-01 00:00:00",
            ));
            pg.connect(&db).await.batch_execute(&sql).await.unwrap();
        }
        let config = dir.join("manager.toml");
        ManagerToml::new(
            CLUSTER,
            &root.join("site_logs.exchange"),
            &subscribers,
            &site_logs,
            pg.port(),
            "expected",
        )
        .archive_dir(&archive)
        .key("rescan_interval_secs", 1)
        .sites(crate::support::shared_sites_toml(
            &SITES.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        ))
        .section(
            "housekeeping",
            &format!("batch_size = {BATCH}\nretention_days = 7\n"),
        )
        .write(&config);
        Setup {
            log: dir.join("manager.log"),
            config,
            archive,
            subscribers,
            site_logs,
            stream: workload::generate(N, 21),
            extra: workload::generate_extra(N, 22),
            dir,
            pg,
        }
    }

    /// Writes archives `from..=to` like slon (`.tmp`, then rename), `pause` apart.
    fn publish(&self, from: u64, to: u64, pause: Duration) {
        for c in from..=to {
            workload::write_multi_archive(
                &self.archive,
                CLUSTER,
                &self.stream,
                &self.extra,
                c,
                format_of(c),
            );
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }

    fn cut_counter(&self, node: &str) -> u64 {
        std::fs::read_to_string(self.subscribers.join(node).join("cut_counter"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn min_cut(&self) -> u64 {
        SITES
            .iter()
            .map(|(n, _, _)| self.cut_counter(n))
            .min()
            .unwrap()
    }

    fn max_cut(&self) -> u64 {
        SITES
            .iter()
            .map(|(n, _, _)| self.cut_counter(n))
            .max()
            .unwrap()
    }

    fn start(&self) -> ManagerDaemon {
        ManagerDaemon::start(&self.config, &self.log, &[])
    }

    /// A site's exchange directory on the provider (its acknowledgement).
    fn exchange(&self, node: &str) -> PathBuf {
        self.site_logs.with_extension("exchange").join(node)
    }

    /// The counters of the site copies present, and any other file names.
    fn site_files(&self, node: &str) -> (Vec<u64>, Vec<String>) {
        let mut counters = Vec::new();
        let mut other = Vec::new();
        for e in std::fs::read_dir(self.site_logs.join(node)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            match slony_shared::archive::ArchiveName::parse(&name) {
                Ok(a) => counters.push(a.counter.0),
                Err(_) => other.push(name),
            }
        }
        counters.sort_unstable();
        other.sort();
        (counters, other)
    }

    /// After housekeeping was killed: each site still holds every counter `1..=N`, loose
    /// or in a batch (a counter may be in both), and nothing but archives, batches and
    /// a batch being written.
    fn check_all_held(&self, when: &str) {
        for (node, _, _) in SITES {
            let dir = self.site_logs.join(node);
            let (mut counters, other) = self.site_files(node);
            let mut batches = 0;
            for name in &other {
                if name.ends_with(".tar.gz.part") {
                    continue;
                }
                assert!(
                    name.starts_with("slony_logs_") && name.ends_with(".tar.gz"),
                    "{when}: {node}: unexpected file {name}"
                );
                let members = slony_shared::batch::list(&dir.join(name))
                    .unwrap_or_else(|e| panic!("{when}: {node}: {name}: {e}"));
                counters.extend(members.iter().map(|a| a.counter.0));
                batches += 1;
            }
            counters.sort_unstable();
            counters.dedup();
            assert_eq!(
                counters,
                (1..=N).collect::<Vec<_>>(),
                "{when}: {node}: an archive is missing"
            );
            eprintln!("{when}: {node}: every archive held, {batches} batches");
        }
    }

    /// After a crash: each site holds exactly `1..=k` for some `k >= cut_counter`, plus
    /// at most temporary files of the cutter.
    fn check_prefixes(&self, when: &str) {
        for (node, _, _) in SITES {
            let (counters, other) = self.site_files(node);
            let k = counters.len() as u64;
            assert_eq!(
                counters,
                (1..=k).collect::<Vec<_>>(),
                "{when}: {node} holds a gap"
            );
            assert!(
                k >= self.cut_counter(node),
                "{when}: {node} has {k} copies but cut_counter {}",
                self.cut_counter(node)
            );
            assert!(
                other.iter().all(|n| n.ends_with(".cut.tmp")),
                "{when}: {node}: unexpected files {other:?}"
            );
            eprintln!(
                "{when}: {node}: {k} copies, cut_counter {}, {} temporary files",
                self.cut_counter(node),
                other.len()
            );
        }
    }
}

/// The receiver's configuration for a site, pulling from the provider over `ssh`.
fn receiver_config(s: &Setup, ssh: &SshServer, node: &str) -> PathBuf {
    let local = s.dir.mkdir(format!("receiver-{node}"));
    let path = s.dir.join(format!("receiver-{node}.toml"));
    let db = node.replace('-', "_");
    let endpoints = Endpoints {
        cluster: CLUSTER,
        node,
        ssh,
        ssh_port: ssh.port(),
        known_hosts: ssh.known_hosts(),
        remote_log_dir: &s.site_logs,
        local_dir: &local,
        pg_port: s.pg.port(),
        dbname: &db,
        slony_node_id: None,
    };
    std::fs::write(
        &path,
        receiver_toml(&endpoints, "[pull]\nfetch_ahead = 16\n"),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_get_their_own_stream_across_crashes() {
    let s = Setup::new().await;

    // Phase 1: 300 archives are waiting; the manager is killed while it cuts them.
    s.publish(1, 300, Duration::ZERO);
    let m = s.start();
    wait_until(WAIT, "the first cut group", || s.max_cut() >= 1);
    m.kill9();
    eprintln!(
        "killed during the first catch-up at cut counters {:?}",
        SITES
            .iter()
            .map(|(n, _, _)| s.cut_counter(n))
            .collect::<Vec<_>>()
    );
    s.check_prefixes("after the first SIGKILL");

    // Phase 2: restarted, while slon goes on writing; killed again mid-stream.
    let m = s.start();
    std::thread::scope(|scope| {
        let slon = scope.spawn(|| s.publish(301, 400, Duration::from_millis(10)));
        wait_until(WAIT, "the cutter passing 330", || s.max_cut() >= 330);
        m.kill9();
        eprintln!(
            "killed while slon writes, at cut counters {:?}",
            SITES
                .iter()
                .map(|(n, _, _)| s.cut_counter(n))
                .collect::<Vec<_>>()
        );
        slon.join().unwrap();
    });
    s.check_prefixes("after the second SIGKILL");

    // Phase 3: restarted; the rest of the stream, and an archive slon is still writing.
    let m = s.start();
    s.publish(401, N, Duration::from_millis(1));
    let partial = s
        .archive
        .join(format!("{}.tmp", workload::archive_name(N + 1)));
    std::fs::write(
        &partial,
        "------\n-- Slony-I log shipping archive\nstart transaction;\n",
    )
    .unwrap();
    wait_until(WAIT, "every site cut up to N", || s.min_cut() == N);
    let status = m.terminate();
    assert_eq!(status.code(), Some(0), "{}", tail(&s.log, 60));

    // Every site directory holds counters 1..=N exactly once, and nothing else.
    for (node, _, _) in SITES {
        let (counters, other) = s.site_files(node);
        assert_eq!(
            counters,
            (1..=N).collect::<Vec<_>>(),
            "{node}: every counter exactly once"
        );
        assert!(other.is_empty(), "{node}: stray files {other:?}");
        assert_eq!(s.cut_counter(node), N);
    }
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(!log.contains("ERROR"), "the cutter reported errors:\n{log}");

    // The manager packs each site's archives into batches (all but the newest), which
    // the receivers read below. First it is killed at each window of packing (after a
    // batch is renamed into place, after each kind of loose copy deleted) and at random
    // moments; every archive stays held, loose or in a batch, and the next run finishes.
    for point in [
        "housekeeping-after-rename",
        "housekeeping-after-recovered-delete:1",
        "housekeeping-after-recovered-delete:98",
        "housekeeping-after-delete:1",
        "housekeeping-after-delete:99",
        "housekeeping-after-rename",
    ] {
        let out = Command::new(bin_path("slony-manager"))
            .args(["housekeeping", "--config"])
            .arg(&s.config)
            .env("SLONY_MANAGER_CRASH_AT", point)
            .output()
            .expect("running slony-manager housekeeping");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_none() && stderr.contains(&format!("crashing at {point}")),
            "housekeeping was to die at {point}: {:?} {stderr}",
            out.status
        );
        s.check_all_held(point);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..6 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = Command::new(bin_path("slony-manager"))
            .args(["housekeeping", "--config"])
            .arg(&s.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning slony-manager housekeeping");
        std::thread::sleep(Duration::from_millis(rng % 150));
        let _ = child.kill();
        let _ = child.wait();
        s.check_all_held(&format!("random kill {round}"));
    }
    housekeeping(&s.config);
    for (node, _, _) in SITES {
        let (counters, other) = s.site_files(node);
        let batches: Vec<String> = (0..N / BATCH)
            .map(|k| format!("slony_logs_{}-{}.tar.gz", k * BATCH + 1, (k + 1) * BATCH))
            .collect();
        assert_eq!(other, batches, "{node}: batches");
        assert_eq!(counters, (N / BATCH * BATCH + 1..=N).collect::<Vec<_>>());
    }

    // Each replica, fed from its own directory, equals the expected state of its objects.
    let expected = s.pg.connect("expected").await;
    workload::apply_expected(&expected, &s.stream, N).await;
    workload::apply_extra(&expected, &s.extra, N).await;
    let ssh = SshServer::start(&s.dir.join("provider"));
    for (node, list, sequences) in SITES {
        let config = receiver_config(&s, &ssh, node);
        let out = Command::new(bin_path("slony-receiver"))
            .args(["pull", "--once", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .output()
            .expect("running slony-receiver");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{node}: {stderr}");
        let replica = s.pg.connect(&node.replace('-', "_")).await;
        let at: i64 = replica
            .query_one(
                &format!("SELECT at_counter FROM \"_{CLUSTER}\".sl_archive_tracking"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(at as u64, N, "{node}: {stderr}");
        for o in objects(list, sequences) {
            assert_eq!(
                workload::object_fingerprint(&replica, &o).await,
                workload::object_fingerprint(&expected, &o).await,
                "{node}: {o} differs from the expected state"
            );
        }
        // The script comments reached exactly the sites with s2.t3.
        if list.contains(&"s2.t3") {
            let c: Option<String> = replica
                .query_one("SELECT obj_description('s2.t3'::regclass, 'pg_class')", &[])
                .await
                .unwrap()
                .get(0);
            assert!(
                c.is_some_and(|c| c.starts_with("rev ")),
                "{node}: the comment script did not arrive"
            );
        }
    }
    // The copies differ per site: none of site-b's carries a change of s1.t1 or s2.t3.
    let copies = |node: &str| -> Vec<String> {
        let local = s.dir.join(format!("receiver-{node}/{node}/applied"));
        let mut v = Vec::new();
        for c in 1..=N {
            v.push(std::fs::read_to_string(local.join(workload::archive_name(c))).unwrap());
        }
        v
    };
    // What the manager writes for a site is readable through the site's group only.
    for (node, _, _) in SITES {
        use std::os::unix::fs::MetadataExt;
        let dir = s.site_logs.join(node);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().mode() & 0o7777,
            0o2750,
            "{node}"
        );
        for e in std::fs::read_dir(&dir).unwrap() {
            let m = e.unwrap().metadata().unwrap();
            assert_eq!(
                m.mode() & 0o007,
                0,
                "{node}: a site copy readable by others"
            );
        }
    }
    let (site_a, site_b) = (copies("site-a"), copies("site-b"));
    let mut t1_rows = 0;
    for (i, (a, b)) in site_a.iter().zip(&site_b).enumerate() {
        let c = i + 1;
        t1_rows += a.matches("\ts1\tt1\t").count() + a.matches("\"s1\".\"t1\"").count();
        for t in ["\ts1\tt1\t", "\"s1\".\"t1\"", "\ts2\tt3\t", "s2.t3", "seq1"] {
            assert!(!b.contains(t), "site-b archive {c} holds {t}:\n{b}");
        }
    }
    assert!(t1_rows > 100, "site-a got only {t1_rows} changes of s1.t1");

    // Each receiver acknowledged its counter in its exchange directory; once the files are
    // older than the retention, the manager's housekeeping deletes what was acknowledged
    // (all but the newest archive, which stays loose).
    let old = std::time::SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    for (node, _, _) in SITES {
        let dir = s.site_logs.join(node);
        assert_eq!(
            std::fs::read_to_string(s.exchange(node).join("applied_counter")).unwrap(),
            format!("{N}\n"),
            "{node}: acknowledgement"
        );
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    // site-b acknowledges less than it has: its archives beyond that stay.
    std::fs::write(s.exchange("site-b").join("applied_counter"), "250\n").unwrap();
    housekeeping(&s.config);
    for (node, _, _) in SITES {
        let (counters, other) = s.site_files(node);
        if *node == "site-b" {
            let kept: Vec<String> = (2..N / BATCH)
                .map(|k| format!("slony_logs_{}-{}.tar.gz", k * BATCH + 1, (k + 1) * BATCH))
                .collect();
            let mut kept = kept;
            kept.sort();
            assert_eq!(other, kept, "{node}: only acknowledged batches expire");
            assert_eq!(counters.len() as u64, N % BATCH, "{node}");
        } else {
            assert!(other.is_empty(), "{node}: {other:?}");
            assert_eq!(counters, vec![N], "{node}: only the newest archive stays");
        }
    }
}

/// Runs `slony-manager housekeeping` and checks it succeeded.
fn housekeeping(config: &Path) {
    let out = Command::new(bin_path("slony-manager"))
        .args(["housekeeping", "--config"])
        .arg(config)
        .output()
        .expect("running slony-manager housekeeping");
    assert_eq!(
        out.status.code(),
        Some(0),
        "housekeeping: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The site of [`sequences_named_after_a_subscribed_table_are_not_sent`].
const SEQ_SITE: &str = "seqsite";
/// The provider's archive counter at that site's snapshot.
const SEQ_SNAPSHOT: u64 = 10;

/// The provider of [`sequences_named_after_a_subscribed_table_are_not_sent`]: the site
/// subscribes to `app.orders`, whose `bigserial` sequence is in the set. Two more
/// sequences carry names of the form `orders_<anything>_seq` but are not `app.orders`'s:
/// `app.orders_x_seq` is in no set, `app.orders_y_seq` is in the set but owned by a
/// column of `app.audit`, which the site does not subscribe to.
fn seq_provider_sql() -> String {
    format!(
        r#"CREATE SCHEMA "_{CLUSTER}";
CREATE TABLE "_{CLUSTER}".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);
INSERT INTO "_{CLUSTER}".sl_archive_counter VALUES ({SEQ_SNAPSHOT}, '2026-11-21 10:00:10+00');
CREATE SCHEMA app;
CREATE TABLE app.orders (id bigserial PRIMARY KEY, note text);
INSERT INTO app.orders (note) SELECT 'order ' || g FROM generate_series(1, 5) g;
CREATE TABLE app.audit (id int PRIMARY KEY);
CREATE SEQUENCE app.orders_x_seq;
CREATE SEQUENCE app.orders_y_seq OWNED BY app.audit.id;
{}{}"#,
        crate::support::slony_set_sql(CLUSTER, &["app.orders", "app.audit"]),
        crate::support::slony_set_sequences_sql(
            CLUSTER,
            &["app.orders_id_seq", "app.orders_y_seq"]
        ),
    )
}

/// The rule the cutter used to send a sequence by: `<seq>` is `<table>_<column>_seq`
/// for one of the site's tables. Kept here only to show what it would have let through.
fn old_name_rule(table: &str, seq: &str) -> bool {
    seq.strip_suffix("_seq").is_some_and(|stem| {
        stem.char_indices()
            .filter(|&(i, c)| c == '_' && i > 0 && i + 1 < stem.len())
            .any(|(i, _)| &stem[..i] == table)
    })
}

/// Archive `counter` as slon writes it (2.2): a row of each table and a change of each
/// of the three sequences. (slon writes calls only for set sequences, so a real archive
/// would not hold `orders_x_seq`'s; the cut must not depend on that.)
fn seq_archive(counter: u64) -> String {
    let mut s = format!(
        "------------------------------------------------------------------\n\
         -- Slony-I log shipping archive\n-- Node 1, Event {}\n\
         ------------------------------------------------------------------\n\
         set session_replication_role to replica;\nstart transaction;\n\
         select \"_{CLUSTER}\".archiveTracking_offline('{counter}', '2026-11-21 10:00:{counter:02}.000000+00');\n\
         -- end of log archiving header\n\
         COPY \"_{CLUSTER}\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n",
        5000000000u64 + counter
    );
    let id = 100 + counter;
    s.push_str(&format!(
        "1\t{}\t1\t{}\tapp\torders\tI\t0\t{{id,{id},note,n{id}}}\n",
        2000 + counter,
        counter * 10
    ));
    s.push_str(&format!(
        "1\t{}\t2\t{}\tapp\taudit\tI\t0\t{{id,{id}}}\n",
        2000 + counter,
        counter * 10 + 1
    ));
    s.push_str("\\.\n");
    for (seq, v) in [
        ("orders_id_seq", id),
        ("orders_x_seq", 7 * id),
        ("orders_y_seq", 9 * id),
    ] {
        s.push_str(&format!(
            "select \"_{CLUSTER}\".sequenceSetValue_offline('app','{seq}','{v}');\n\n"
        ));
    }
    s.push_str(
        "\n------------------------------------------------------------------\n\
         -- End Of Archive Log\n\
         ------------------------------------------------------------------\n\
         commit;\n",
    );
    s.push_str(&format!(
        "vacuum analyze \"_{CLUSTER}\".sl_archive_tracking;\n"
    ));
    s
}

async fn last_value(c: &tokio_postgres::Client, seq: &str) -> i64 {
    c.query_one(&format!("SELECT last_value FROM {seq}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{seq}: {e:?}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_named_after_a_subscribed_table_are_not_sent() {
    let dir = TestDir::new("cut-sequences");
    let root = dir.mkdir("provider");
    for d in ["triggers", "subscribers", "site_logs", "archive"] {
        dir.mkdir(format!("provider/{d}"));
    }
    // The site's exchange directory (the manager makes it too, maybe after the receiver
    // has started).
    dir.mkdir(format!("provider/triggers/{SEQ_SITE}"));
    let pg = PgServer::start();
    pg.create_db("provider").await;
    pg.create_db("replica").await;
    let provider = pg.connect("provider").await;
    provider.batch_execute(&seq_provider_sql()).await.unwrap();
    let config = dir.join("manager.toml");
    ManagerToml::under(&root, CLUSTER, pg.port(), "provider")
        .archive_dir(&root.join("archive"))
        .key("rescan_interval_secs", 1)
        .sites(crate::support::shared_sites_toml(&[SEQ_SITE]))
        .write(&config);
    let log = dir.join("manager.log");
    let manager = ManagerDaemon::start(&config, &log, &[]);
    let ssh = SshServer::start(&root);
    let receiver = dir.join("receiver.toml");
    std::fs::write(
        &receiver,
        format!(
            "cluster = \"{CLUSTER}\"\nnode = \"{SEQ_SITE}\"\n[remote]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\nlog_dir = \"{root}/site_logs\"\ntrigger_dir = \"{root}/triggers\"\nallow_shared_account = true\n[local]\nlog_dir = \"{}\"\n[database]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndbname = \"replica\"\n",
            ssh.port(),
            ssh.user(),
            ssh.client_key().display(),
            ssh.known_hosts().display(),
            dir.join("local").display(),
            pg.port(),
            root = root.display(),
        ),
    )
    .unwrap();

    // The site subscribes to app.orders: its list of sequences is the set sequence
    // app.orders owns, decided from the provider's catalog.
    let list = dir.join("list.txt");
    std::fs::write(&list, "app.orders subscribe\n").unwrap();
    let run = run_receiver(
        &receiver,
        "subscribe-series",
        &[
            "--list",
            list.to_str().unwrap(),
            "--attempts",
            "60",
            "--interval-secs",
            "1",
        ],
    );
    assert_eq!(
        run.code,
        0,
        "{}\nmanager log:\n{}",
        run.stderr,
        tail(&log, 60)
    );
    let site_dir = root.join("subscribers").join(SEQ_SITE);
    assert_eq!(
        std::fs::read_to_string(site_dir.join("tables")).unwrap(),
        "app.orders\n"
    );
    assert_eq!(
        std::fs::read_to_string(site_dir.join("sequences")).unwrap(),
        "app.orders_id_seq\n",
        "only the set sequence app.orders owns is the site's"
    );
    let replica = pg.connect("replica").await;
    assert_eq!(last_value(&replica, "app.orders_id_seq").await, 5);
    for seq in ["app.orders_x_seq", "app.orders_y_seq"] {
        let exists: bool = replica
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&seq])
            .await
            .unwrap()
            .get(0);
        assert!(!exists, "{seq} is not created on the site");
    }

    // The attack is live: by the old name rule both foreign sequences were the site's,
    // and the site's own PostgreSQL refuses their calls (the site does not have them),
    // which would have stopped its pull at the first such archive for good.
    for seq in ["orders_x_seq", "orders_y_seq"] {
        assert!(old_name_rule("orders", seq), "{seq}");
        replica.batch_execute("BEGIN").await.unwrap();
        let err = replica
            .batch_execute(&format!(
                "SET LOCAL session_replication_role TO replica; \
                 SELECT \"_{CLUSTER}\".sequenceSetValue_offline('app','{seq}','5')"
            ))
            .await
            .expect_err("a sequence the site lacks cannot be set");
        replica.batch_execute("ROLLBACK").await.unwrap();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(
            *db.code(),
            tokio_postgres::error::SqlState::UNDEFINED_TABLE,
            "{db:?}"
        );
        assert!(db.message().contains(seq), "{}", db.message());
    }
    assert!(!old_name_rule("orders", "orders_seq"));
    assert!(!old_name_rule("orders", "other_id_seq"));

    // slon writes three archives after the snapshot, each setting all three sequences.
    let archive = root.join("archive");
    let last = SEQ_SNAPSHOT + 3;
    for c in SEQ_SNAPSHOT + 1..=last {
        let name = workload::archive_name(c);
        let tmp = archive.join(format!("{name}.tmp"));
        std::fs::write(&tmp, seq_archive(c)).unwrap();
        std::fs::rename(&tmp, archive.join(&name)).unwrap();
    }
    let cut = site_dir.join("cut_counter");
    wait_until(WAIT, "the site's archives to be cut", || {
        std::fs::read_to_string(&cut).is_ok_and(|t| t.trim() == last.to_string())
    });
    for c in SEQ_SNAPSHOT + 1..=last {
        let name = workload::archive_name(c);
        let original = std::fs::read_to_string(archive.join(&name)).unwrap();
        let copy =
            std::fs::read_to_string(root.join("site_logs").join(SEQ_SITE).join(&name)).unwrap();
        for seq in ["orders_x_seq", "orders_y_seq", "orders_id_seq"] {
            assert!(original.contains(&format!("'{seq}'")), "{seq} in {name}");
        }
        assert!(copy.contains("'app','orders_id_seq'"), "{copy}");
        assert!(!copy.contains("orders_x_seq"), "{copy}");
        assert!(!copy.contains("orders_y_seq"), "{copy}");
        assert!(copy.contains("\tapp\torders\t"), "{copy}");
        assert!(!copy.contains("\tapp\taudit\t"), "{copy}");
    }

    // The site's pull goes through every archive, and the value of its own sequence
    // reaches it.
    let run = run_receiver(&receiver, "pull", &["--once"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let at: i64 = replica
        .query_one(
            &format!("SELECT at_counter FROM \"_{CLUSTER}\".sl_archive_tracking"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(at as u64, last);
    assert_eq!(
        last_value(&replica, "app.orders_id_seq").await,
        (100 + last) as i64
    );
    let rows: i64 = replica
        .query_one("SELECT count(*) FROM app.orders WHERE id > 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
    let manager_log = std::fs::read_to_string(&log).unwrap();
    assert!(!manager_log.contains("ERROR"), "{manager_log}");
    assert_eq!(manager.terminate().code(), Some(0), "{}", tail(&log, 60));
}
