//! `slony-manager run` end to end, provider side: a real PostgreSQL holding the provider
//! database (with the `"_lab".sl_archive_counter` a log-shipping node has) and a
//! subscriber database the generated SQL is applied to with psql (allowed in tests
//! only), the manager running as a child process, and the subscriber's side of the
//! protocol played by the test through files in the trigger directory.

use crate::support::manager::{ManagerDaemon, ManagerToml};
use crate::support::pg::PgServer;
use crate::support::{bin_path, slony_set_sequences_sql, slony_set_sql, tail, wait_until, TestDir};
use slony_shared::archive::parse::{Item, Splitter};
use slony_shared::counter::Counter;
use slony_shared::ident::{NodeName, QualifiedTable};
use slony_shared::trigger::{
    sql_file_name, Action, Binding, Nonce, Outcome, Request, Series, SqlDone, TriggerKind,
};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const CLUSTER: &str = "lab";
/// Bound on every wait for the manager.
const WAIT: Duration = Duration::from_secs(90);

const PROVIDER_SQL: &str = r#"
CREATE SCHEMA "_lab";
CREATE TABLE "_lab".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);
INSERT INTO "_lab".sl_archive_counter VALUES (42, '2026-11-21 10:00:42+00');

CREATE SCHEMA s1;
CREATE TABLE s1.t1 (
    id bigserial PRIMARY KEY,
    code text NOT NULL,
    gone int,
    qty int NOT NULL DEFAULT 7 CONSTRAINT qty_positive CHECK (qty >= 0),
    note text COLLATE "C",
    created timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT t1_code_key UNIQUE (code)
);
ALTER TABLE s1.t1 DROP COLUMN gone;
CREATE INDEX t1_qty_idx ON s1.t1 (qty);
INSERT INTO s1.t1 (code, qty, note)
SELECT 'c' || g, g % 10,
       CASE WHEN g % 3 = 0 THEN NULL
            ELSE E'tab\there\nnew ''q'' \\ back; commit; \\. ' || g END
  FROM generate_series(1, 500) g;

CREATE TABLE s1.big (id int PRIMARY KEY, payload text, v double precision);
INSERT INTO s1.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 100000) g;

CREATE TABLE s1.other (
    k text PRIMARY KEY,
    t1_id bigint REFERENCES s1.t1 (id),
    doubled int GENERATED ALWAYS AS (length(k) * 2) STORED,
    seqno bigserial
);
INSERT INTO s1.other (k, t1_id) SELECT 'k' || g, g FROM generate_series(1, 50) g;

CREATE VIEW s1.v AS SELECT 1 AS one;
CREATE TABLE s1.secret (k text PRIMARY KEY);
INSERT INTO s1.secret VALUES ('not replicated');
CREATE ROLE app_secret PASSWORD 'hunter2';
"#;

/// The provider host: directories, config, databases.
struct Provider {
    /// Owns every file of the test (kept when it fails).
    _dir: TestDir,
    trigger: PathBuf,
    subscribers: PathBuf,
    site_logs: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pg: PgServer,
    /// The nonce of each site's request, as a subscriber remembers it.
    nonces: Mutex<HashMap<String, Nonce>>,
}

/// The sites the tests' manager knows.
const SITES: &[&str] = &[
    "site1", "site2", "site3", "site4", "site5", "site6", "site7", "site8", "site9", "site10",
    "site11", "site12", "site13", "site14", "gone",
];

impl Provider {
    async fn new(name: &str) -> Provider {
        let dir = TestDir::new(name);
        let trigger = dir.mkdir("triggers");
        // The sites' exchange directories (the manager makes them too, but the test may
        // write into them before it has started).
        for site in SITES {
            std::fs::create_dir(trigger.join(site)).unwrap();
        }
        let subscribers = dir.mkdir("subscribers");
        let site_logs = dir.mkdir("site_logs");
        let pg = PgServer::start();
        pg.create_db("provider").await;
        pg.create_db("sub").await;
        pg.connect("provider")
            .await
            .batch_execute(&format!(
                "{PROVIDER_SQL}{}{}",
                slony_set_sql(CLUSTER, &["s1.t1", "s1.big", "s1.other"]),
                slony_set_sequences_sql(CLUSTER, &["s1.t1_id_seq"])
            ))
            .await
            .unwrap();
        let p = Provider {
            config: dir.join("manager.toml"),
            log: dir.join("manager.log"),
            trigger,
            subscribers,
            site_logs,
            pg,
            nonces: Mutex::new(HashMap::new()),
            _dir: dir,
        };
        p.write_config(false);
        p
    }

    fn write_config(&self, allow_drop: bool) {
        ManagerToml::new(
            CLUSTER,
            &self.trigger,
            &self.subscribers,
            &self.site_logs,
            self.pg.port(),
            "provider",
        )
        .key("allow_drop", allow_drop)
        .key("rescan_interval_secs", 1)
        // site14 may have only s1.other, within the set.
        .sites(
            crate::support::shared_sites_toml(SITES) + "sites.\"site14\".tables = [\"s1.other\"]\n",
        )
        .database_key("connect_timeout_secs", 5)
        .write(&self.config);
    }

    fn start(&self) -> ManagerDaemon {
        ManagerDaemon::start(
            &self.config,
            &self.log,
            &[("RUST_LOG", "info,slony_manager=debug")],
        )
    }

    fn log(&self) -> String {
        tail(&self.log, 80)
    }

    /// A protocol file in `node`'s exchange directory.
    fn tfile(&self, node: &str, kind: TriggerKind) -> PathBuf {
        self.trigger
            .join(node)
            .join(kind.file_name(&NodeName::new(node).unwrap()))
    }

    /// Writes a protocol file into its node's exchange directory (the node is the name up
    /// to its first dot) the way a subscriber does: temporary name, then rename.
    fn put(&self, name: &str, content: &[u8]) {
        let node = name.split('.').next().unwrap();
        self.put_in(&self.trigger.join(node), name, content);
    }

    /// Writes a file into `dir` as [`Provider::put`] does.
    fn put_in(&self, dir: &Path, name: &str, content: &[u8]) {
        let tmp = dir.join(format!(".{name}.upload"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    /// The binding of `node`'s last request.
    fn binding(&self, node: &str) -> Binding {
        Binding {
            node: NodeName::new(node).unwrap(),
            nonce: self.nonces.lock().unwrap()[node].clone(),
        }
    }

    fn request(&self, node: &str, series: &[(&str, Action)]) {
        let nonce = Nonce::random().unwrap();
        self.nonces
            .lock()
            .unwrap()
            .insert(node.to_string(), nonce.clone());
        let node = NodeName::new(node).unwrap();
        let r = Request {
            node: node.clone(),
            nonce,
            archive: 0,
            retention: 21,
            tapegroup: 1,
            series: series
                .iter()
                .map(|(t, action)| Series {
                    table: QualifiedTable::parse(t).unwrap(),
                    action: *action,
                })
                .collect(),
        };
        self.put(
            &TriggerKind::Request.file_name(&node),
            r.render().as_bytes(),
        );
    }

    fn wait_file(&self, path: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        wait_until(
            WAIT,
            &format!("{}", path.display()),
            || match std::fs::read(path) {
                Ok(b) if b.ends_with(b"EOF\n") => {
                    bytes = b;
                    true
                }
                _ => false,
            },
        );
        bytes
    }

    /// Waits for `node`'s `.sqldone`; when the test sent the request, the answer must be
    /// bound to it.
    fn wait_sqldone(&self, node: &str) -> SqlDone {
        let bytes = self.wait_file(&self.tfile(node, TriggerKind::SqlDone));
        let bound = SqlDone::parse(&bytes).unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log()));
        if self.nonces.lock().unwrap().contains_key(node) {
            bound.for_request(&self.binding(node), ".sqldone").unwrap()
        } else {
            bound.body
        }
    }

    /// Writes `.sqlapplied` and waits for `.done`; removes `.done` as a subscriber does.
    fn answer(&self, node: &str, success: bool, reason: Option<&str>) -> Outcome {
        let o = Outcome {
            success,
            reason: reason.map(str::to_string),
        };
        let binding = self.binding(node);
        self.put(
            &TriggerKind::SqlApplied.file_name(&NodeName::new(node).unwrap()),
            o.render(Some(&binding)).as_bytes(),
        );
        let done = self.tfile(node, TriggerKind::Done);
        let bytes = self.wait_file(&done);
        std::fs::remove_file(&done).unwrap();
        wait_until(WAIT, "the request state to be removed", || {
            !self.state_file(node).exists()
        });
        Outcome::parse(&bytes)
            .unwrap()
            .for_request(&binding, ".done")
            .unwrap()
    }

    fn state_file(&self, node: &str) -> PathBuf {
        self.subscribers.join(format!("{node}.request.json"))
    }

    fn state(&self, node: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state_file(node)).unwrap()).unwrap()
    }

    fn tables(&self, dir: &str) -> String {
        std::fs::read_to_string(self.subscribers.join(dir).join("tables")).unwrap()
    }

    fn sequences(&self, dir: &str) -> String {
        std::fs::read_to_string(self.subscribers.join(dir).join("sequences")).unwrap()
    }

    fn since(&self, dir: &str) -> String {
        std::fs::read_to_string(self.subscribers.join(dir).join("since"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn sql_path(&self, node: &str) -> PathBuf {
        self.trigger
            .join(node)
            .join(sql_file_name(&NodeName::new(node).unwrap()))
    }

    /// Decompresses the published SQL and checks it splits into statements that never
    /// end the subscriber's transaction.
    fn sql(&self, node: &str) -> Vec<u8> {
        let mut sql = Vec::new();
        flate2::read::GzDecoder::new(File::open(self.sql_path(node)).unwrap())
            .read_to_end(&mut sql)
            .unwrap();
        let mut s = Splitter::new(sql.as_slice());
        let mut copies = 0;
        while let Some(item) = s.next_item().unwrap() {
            match item {
                Item::Statement { sql, .. } => {
                    let first = sql
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    assert!(
                        !["BEGIN", "COMMIT", "ROLLBACK", "END", "START", "ABORT"]
                            .contains(&first.as_str()),
                        "the SQL ends the transaction: {sql}"
                    );
                }
                Item::CopyIn { .. } => {
                    copies += 1;
                    let mut buf = Vec::new();
                    while s.copy_chunk(&mut buf).unwrap() {}
                }
                Item::Comment { .. } => {}
            }
        }
        assert!(copies > 0, "the SQL carries data");
        sql
    }

    /// Applies a new site's SQL as the receiver does: the tracking schema from the
    /// receiver's own code at the answer's counter, then the provider's SQL, which must
    /// define no function of its own.
    fn apply_new_site(&self, sql: &[u8], counter: Counter) {
        let text = String::from_utf8_lossy(sql);
        assert!(
            !text.to_ascii_uppercase().contains("CREATE FUNCTION"),
            "the provider's SQL defines no functions"
        );
        let cluster = slony_shared::ident::ClusterName::new("lab").unwrap();
        let mut all = slony_shared::offline::tracking_schema_sql(&cluster).into_bytes();
        all.extend_from_slice(
            slony_shared::offline::tracking_row_sql(&cluster, counter, "2026-01-01 00:00:00")
                .as_bytes(),
        );
        all.extend_from_slice(sql);
        self.apply(&all);
    }

    /// Applies SQL to the subscriber database in one transaction, as psql would.
    fn apply(&self, sql: &[u8]) {
        let mut child = Command::new(self.pg.bin("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", "-"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "sub"])
            .arg("-p")
            .arg(self.pg.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running psql");
        let mut stdin = child.stdin.take().unwrap();
        let input = sql.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// Ordered md5 of a table's rows in a database.
    async fn fingerprint(&self, db: &str, table: &str) -> String {
        let c = self.pg.connect(db).await;
        let row = c
            .query_one(
                &format!(
                    "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {table} t"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("fingerprint of {table} in {db}: {e:?}"));
        row.get(0)
    }

    async fn query_i64(&self, db: &str, sql: &str) -> i64 {
        let c = self.pg.connect(db).await;
        c.query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn exists(&self, db: &str, rel: &str) -> bool {
        let c = self.pg.connect(db).await;
        let row = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&rel])
            .await
            .unwrap();
        row.get(0)
    }

    fn status_json(&self) -> serde_json::Value {
        let out = Command::new(bin_path("slony-manager"))
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// What the trigger directory holds: `node/file` in the sites' exchange directories,
    /// and any other entry of its own (the sites' directories themselves left out).
    fn trigger_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for e in std::fs::read_dir(&self.trigger).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if SITES.contains(&name.as_str()) && e.path().is_dir() {
                for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                    v.push(format!("{name}/{}", f.file_name().to_string_lossy()));
                }
            } else {
                v.push(name);
            }
        }
        v.sort();
        v
    }

    fn subscriber_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.subscribers)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "slony-manager.lock")
            // A state file being replaced (written beside, then renamed) is in flight.
            .filter(|n| !(n.starts_with('.') && n.ends_with(".tmp")))
            .collect();
        v.sort();
        v
    }
}

fn ready(done: &SqlDone) -> (bool, Counter, Vec<String>) {
    match done {
        SqlDone::Ready {
            new_site,
            counter,
            notes,
            ..
        } => (*new_site, *counter, notes.clone()),
        SqlDone::Failed { reason } => panic!("expected Ready, got Failed: {reason}"),
    }
}

fn failed(done: &SqlDone) -> String {
    match done {
        SqlDone::Failed { reason } => reason.clone(),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_serves_new_and_existing_sites_and_survives_a_crash() {
    let p = Provider::new("manager-lifecycle").await;
    let mut m = p.start();

    // 1. A new site subscribes two tables.
    p.request(
        "site1",
        &[("s1.t1", Action::Subscribe), ("s1.big", Action::Subscribe)],
    );
    let done = p.wait_sqldone("site1");
    let (new_site, counter, notes) = ready(&done);
    assert!(new_site, "{done:?}");
    assert_eq!(counter, Counter(42));
    assert!(notes.is_empty(), "{notes:?}");
    // The .tgr goes right after `.sqldone` is written.
    wait_until(WAIT, "the .tgr to be removed once published", || {
        !p.tfile("site1", TriggerKind::Request).exists()
    });
    assert_eq!(p.tables("site1.new"), "s1.t1\ns1.big\n");
    assert_eq!(p.sequences("site1.new"), "s1.t1_id_seq\n");
    assert_eq!(p.since("site1.new"), "43");
    assert!(!p.subscribers.join("site1").exists());
    assert_eq!(p.state("site1")["state"], "published");

    let sql = p.sql("site1");
    let text = String::from_utf8_lossy(&sql);
    assert!(!text.contains("FOREIGN KEY"), "no foreign keys");
    p.apply_new_site(&sql, counter);
    for t in ["s1.t1", "s1.big"] {
        assert_eq!(
            p.fingerprint("sub", t).await,
            p.fingerprint("provider", t).await,
            "{t}"
        );
    }
    assert_eq!(
        p.fingerprint("sub", "s1.big").await.split(':').next(),
        Some("100000")
    );
    assert_eq!(
        p.query_i64("sub", "SELECT at_counter FROM \"_lab\".sl_archive_tracking")
            .await,
        42
    );
    // The sequence carries on where the provider's is; defaults, constraints and the
    // index came along.
    assert_eq!(
        p.query_i64("sub", "SELECT nextval('s1.t1_id_seq')").await,
        501
    );
    assert_eq!(
        p.query_i64(
            "sub",
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 's1' AND tablename = 't1' \
             AND indexname IN ('t1_pkey', 't1_code_key', 't1_qty_idx')"
        )
        .await,
        3
    );
    assert_eq!(
        p.query_i64(
            "sub",
            "SELECT count(*) FROM pg_constraint WHERE conname = 'qty_positive'"
        )
        .await,
        1
    );
    let c = p.pg.connect("sub").await;
    c.batch_execute("INSERT INTO s1.t1 (code) VALUES ('fresh')")
        .await
        .unwrap();
    assert!(c
        .batch_execute("INSERT INTO s1.t1 (code) VALUES ('c1')")
        .await
        .is_err());
    assert!(c
        .batch_execute("INSERT INTO s1.t1 (code, qty) VALUES ('neg', -1)")
        .await
        .is_err());
    c.batch_execute("DELETE FROM s1.t1 WHERE code = 'fresh'")
        .await
        .unwrap();

    let o = p.answer("site1", true, None);
    assert!(o.success, "{o:?}");
    assert_eq!(p.tables("site1"), "s1.t1\ns1.big\n");
    assert_eq!(p.sequences("site1"), "s1.t1_id_seq\n");
    assert_eq!(p.since("site1"), "43");
    assert!(p.site_logs.join("site1").is_dir());
    assert_eq!(p.subscriber_names(), vec!["site1".to_string()]);
    assert!(p.trigger_names().is_empty(), "{:?}", p.trigger_names());

    let s = p.status_json();
    assert_eq!(s["sites"][0]["name"], "site1");
    assert_eq!(s["sites"][0]["table_count"], 2);
    assert_eq!(
        s["sites"][0]["sequences"],
        serde_json::json!(["s1.t1_id_seq"])
    );
    assert_eq!(s["sites"][0]["warning"], serde_json::Value::Null);
    assert_eq!(s["sites"][0]["since"], 43);
    assert_eq!(s["requests"], serde_json::json!([]));

    // 2. SIGTERM is a clean shutdown; restart with allow_drop.
    let status = m.terminate();
    assert_eq!(status.code(), Some(0), "{}", p.log());
    p.write_config(true);
    let provider = p.pg.connect("provider").await;
    provider
        .batch_execute("UPDATE \"_lab\".sl_archive_counter SET ac_num = 50")
        .await
        .unwrap();
    m = p.start();

    // The existing site adds a table and drops one.
    p.request(
        "site1",
        &[
            ("s1.other", Action::Subscribe),
            ("s1.big", Action::Unsubscribe),
            ("s1.t1", Action::Subscribe),
        ],
    );
    let done = p.wait_sqldone("site1");
    let (new_site, counter, notes) = ready(&done);
    assert!(!new_site);
    assert_eq!(counter, Counter(50));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("foreign key") && n.contains("s1.other")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("s1.t1 is already subscribed")),
        "{notes:?}"
    );
    // s1.other's serial sequence is in no set: created for its default, not replicated.
    assert!(
        notes.iter().any(|n| n.contains("s1.other_seqno_seq")
            && n.contains("in no Slony set")
            && n.contains("not replicated")),
        "{notes:?}"
    );
    assert_eq!(p.tables("site1.new"), "s1.t1\ns1.other\n");
    assert_eq!(
        p.sequences("site1.new"),
        "s1.t1_id_seq\n",
        "the kept table's sequence is read again"
    );
    assert_eq!(
        p.tables("site1"),
        "s1.t1\ns1.big\n",
        "unchanged until applied"
    );
    let sql = p.sql("site1");
    let text = String::from_utf8_lossy(&sql);
    assert!(text.contains("DROP TABLE IF EXISTS \"s1\".\"big\";"));
    assert!(
        text.contains("SELECT pg_catalog.setval('\"s1\".\"t1_id_seq\"', 500, true);"),
        "the kept table's sequence is set at the snapshot"
    );
    assert!(text.contains("CREATE SEQUENCE IF NOT EXISTS \"s1\".\"other_seqno_seq\""));
    assert!(
        !text.contains("setval('\"s1\".\"other_seqno_seq\"'"),
        "the value of a sequence in no set is not sent"
    );
    assert!(
        !text.contains("sl_archive_tracking ("),
        "no tracking schema for an existing site"
    );
    p.apply(&sql);
    assert!(!p.exists("sub", "s1.big").await);
    assert_eq!(
        p.fingerprint("sub", "s1.other").await,
        p.fingerprint("provider", "s1.other").await
    );
    assert_eq!(
        p.query_i64("sub", "SELECT at_counter FROM \"_lab\".sl_archive_tracking")
            .await,
        42,
        "an existing site keeps its position"
    );
    let o = p.answer("site1", true, None);
    assert!(o.success);
    assert_eq!(p.tables("site1"), "s1.t1\ns1.other\n");
    assert_eq!(p.sequences("site1"), "s1.t1_id_seq\n");
    assert_eq!(p.since("site1"), "51");
    assert!(!p.subscribers.join("site1.new").exists());
    assert!(!p.subscribers.join("site1.old").exists());
    assert_eq!(
        p.query_i64("sub", "SELECT nextval('s1.other_seqno_seq')")
            .await,
        1,
        "created at its start"
    );

    // 3. The subscriber fails to apply: the previous list stays.
    p.request("site1", &[("s1.big", Action::Subscribe)]);
    let (new_site, _, _) = ready(&p.wait_sqldone("site1"));
    assert!(!new_site);
    assert_eq!(p.tables("site1.new"), "s1.t1\ns1.other\ns1.big\n");
    let o = p.answer("site1", false, Some("duplicate key value"));
    assert!(!o.success);
    assert!(o.reason.unwrap().contains("duplicate key value"));
    assert!(!p.subscribers.join("site1.new").exists());
    assert_eq!(p.tables("site1"), "s1.t1\ns1.other\n");
    assert_eq!(p.since("site1"), "51");
    assert!(p.trigger_names().is_empty(), "{:?}", p.trigger_names());

    // A new site that fails disappears entirely.
    p.request("site3", &[("s1.t1", Action::Subscribe)]);
    ready(&p.wait_sqldone("site3"));
    assert!(p.subscribers.join("site3.new").is_dir());
    let o = p.answer("site3", false, None);
    assert!(!o.success);
    assert!(!p.subscribers.join("site3").exists());
    assert!(!p.subscribers.join("site3.new").exists());
    assert!(!p.site_logs.join("site3").exists());

    // 4. A crash after publishing: the restarted manager finishes the request.
    p.request("site5", &[("s1.other", Action::Subscribe)]);
    let done = p.wait_sqldone("site5");
    ready(&done);
    // A second request of the same site waits while this one is in progress.
    let first = p.binding("site5");
    p.request("site5", &[("s1.t1", Action::Subscribe)]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(p.tfile("site5", TriggerKind::Request).exists());
    assert_eq!(
        SqlDone::parse(&std::fs::read(p.tfile("site5", TriggerKind::SqlDone)).unwrap())
            .unwrap()
            .for_request(&first, ".sqldone")
            .unwrap(),
        done
    );
    p.nonces
        .lock()
        .unwrap()
        .insert("site5".into(), first.nonce.clone());
    assert_eq!(p.tables("site5.new"), "s1.other\n");
    m.kill9();
    // The subscriber gives up on its second request.
    std::fs::remove_file(p.tfile("site5", TriggerKind::Request)).unwrap();
    m = p.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(p.state("site5")["state"], "published");
    assert!(p.sql_path("site5").exists());
    let o = p.answer("site5", true, None);
    assert!(o.success);
    assert_eq!(p.tables("site5"), "s1.other\n");
    assert_eq!(p.since("site5"), "51");
    assert!(p.site_logs.join("site5").is_dir());
    assert_eq!(
        p.subscriber_names(),
        vec!["site1".to_string(), "site5".to_string()]
    );
    assert!(p.trigger_names().is_empty(), "{:?}", p.trigger_names());

    assert!(m.is_running(), "{}", p.log());
    let status = m.terminate();
    assert_eq!(status.code(), Some(0), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_incomplete_requests_change_nothing() {
    let p = Provider::new("manager-hostile").await;
    // An existing site whose state must survive everything below.
    std::fs::create_dir(p.subscribers.join("site1")).unwrap();
    std::fs::write(p.subscribers.join("site1/tables"), "s1.t1\n").unwrap();
    std::fs::write(p.subscribers.join("site1/since"), "10\n").unwrap();
    let m = p.start();

    // The node inside differs from the file name's.
    p.put(
        "site2.subscribe_series.tgr",
        b"node site1\ns1.t1 subscribe\nEOF\n",
    );
    let reason = failed(&p.wait_sqldone("site2"));
    assert!(reason.contains("does not match"), "{reason}");

    // An injection attempt in a table name.
    p.put(
        "site4.subscribe_series.tgr",
        b"node site4\ns1.t1; drop table x subscribe\nEOF\n",
    );
    let reason = failed(&p.wait_sqldone("site4"));
    assert!(reason.contains("invalid request"), "{reason}");

    // Oversized.
    let mut huge = b"node site6\n".to_vec();
    while huge.len() < 70 * 1024 {
        huge.extend_from_slice(b"# padding padding padding padding padding padding\n");
    }
    huge.extend_from_slice(b"s1.t1 subscribe\nEOF\n");
    p.put("site6.subscribe_series.tgr", &huge);
    let reason = failed(&p.wait_sqldone("site6"));
    assert!(reason.contains("bytes"), "{reason}");

    // Tables that are missing, or not tables.
    p.request("site7", &[("s1.nope", Action::Subscribe)]);
    let reason = failed(&p.wait_sqldone("site7"));
    assert!(
        reason.contains("s1.nope is not a table of any Slony set of cluster lab"),
        "{reason}"
    );
    p.request("site8", &[("s1.v", Action::Subscribe)]);
    let reason = failed(&p.wait_sqldone("site8"));
    assert!(
        reason.contains("s1.v is not a table of any Slony set"),
        "{reason}"
    );

    // A table of the set, but not among what this site may have (its `tables`).
    p.request("site14", &[("s1.t1", Action::Subscribe)]);
    let reason = failed(&p.wait_sqldone("site14"));
    assert!(
        reason.contains("s1.t1 is not among the tables this provider serves to site site14"),
        "{reason}"
    );
    assert!(!p.sql_path("site14").exists());

    // Only what the cluster replicates is served. The provider's catalog holds what a
    // site must never read (password hashes), and a table outside every set is there too.
    let hashes: i64 = p
        .query_i64(
            "provider",
            "SELECT count(rolpassword) FROM pg_catalog.pg_authid",
        )
        .await;
    assert!(hashes >= 1, "the provider's catalog holds password hashes");
    for (site, table) in [("site12", "pg_catalog.pg_authid"), ("site13", "s1.secret")] {
        p.request(site, &[(table, Action::Subscribe)]);
        let reason = failed(&p.wait_sqldone(site));
        assert!(
            reason.contains(&format!("{table} is not a table of any Slony set")),
            "{reason}"
        );
        assert!(!p.sql_path(site).exists(), "no SQL published for {table}");
    }

    // Files where no site may write, or that a site wrote for another node, are moved
    // aside unanswered: a badly named file and a valid request in the old shared layout
    // (directly in the trigger directory), a request named for site2 in site1's
    // directory, and a symlink planted as a request (which must not make the manager
    // read, and echo back, a file of its own).
    p.put_in(
        &p.trigger,
        "bad name.subscribe_series.tgr",
        b"node site1\ns1.t1 subscribe\nEOF\n",
    );
    let genuine = format!(
        "node site3\nnonce {}\ns1.t1 subscribe\nEOF\n",
        Nonce::random().unwrap()
    );
    p.put_in(&p.trigger, "site3.subscribe_series.tgr", genuine.as_bytes());
    p.put_in(
        &p.trigger.join("site1"),
        "site2.subscribe_series.tgr",
        genuine.replace("site3", "site2").as_bytes(),
    );
    let secret = p.subscribers.join("site1/since");
    std::os::unix::fs::symlink(&secret, p.tfile("site10", TriggerKind::Request)).unwrap();
    // A site the manager does not know: its directory and request are left alone and
    // reported, never answered.
    let ghost = p.trigger.join("ghost");
    std::fs::create_dir(&ghost).unwrap();
    p.put_in(
        &ghost,
        "ghost.subscribe_series.tgr",
        genuine.replace("site3", "ghost").as_bytes(),
    );
    let rejected = p.trigger.join("rejected");
    wait_until(WAIT, "the refused files to be moved aside", || {
        std::fs::read_dir(&rejected).map_or(0, |d| d.count()) == 4
    });
    let moved: Vec<String> = std::fs::read_dir(&rejected)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 4, "{moved:?}");
    assert!(moved.iter().all(|m| !m.contains(' ')), "{moved:?}");
    assert_eq!(
        moved.iter().filter(|m| m.starts_with("old-layout")).count(),
        2,
        "{moved:?}"
    );
    assert!(
        moved.iter().any(|m| m.starts_with("other-node")),
        "{moved:?}"
    );
    assert!(
        moved.iter().any(|m| m.starts_with("forged-request")),
        "{moved:?}"
    );
    assert!(p.log().contains("ALERT"), "{}", p.log());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "10\n");
    wait_until(WAIT, "the unknown site to be reported", || {
        p.log().contains("a directory of an unknown site")
    });
    assert!(!ghost.join("ghost.subscribe_series.sqldone").exists());
    std::fs::remove_dir_all(&ghost).unwrap();

    // A request still being written (no EOF line) is left alone until complete.
    let partial = p.tfile("site9", TriggerKind::Request);
    let nonce9 = Nonce::random().unwrap();
    p.nonces
        .lock()
        .unwrap()
        .insert("site9".into(), nonce9.clone());
    std::fs::write(
        &partial,
        format!("node site9\nnonce {nonce9}\ns1.t1 subscribe\n"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(partial.exists());
    assert!(!p.tfile("site9", TriggerKind::SqlDone).exists());
    assert!(!p.state_file("site9").exists());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&partial)
        .unwrap()
        .write_all(b"EOF\n")
        .unwrap();
    let (new_site, counter, _) = ready(&p.wait_sqldone("site9"));
    assert!(new_site);
    assert_eq!(counter, Counter(42));

    // Nothing else changed: only the replies, the complete request's outputs and the
    // moved file are there; the existing site is untouched.
    let mut expected: Vec<String> = [
        "rejected",
        "site2/site2.subscribe_series.sqldone",
        "site4/site4.subscribe_series.sqldone",
        "site6/site6.subscribe_series.sqldone",
        "site7/site7.subscribe_series.sqldone",
        "site8/site8.subscribe_series.sqldone",
        "site12/site12.subscribe_series.sqldone",
        "site13/site13.subscribe_series.sqldone",
        "site14/site14.subscribe_series.sqldone",
        "site9/site9.sql.gz",
        "site9/site9.subscribe_series.sqldone",
    ]
    .map(str::to_string)
    .to_vec();
    expected.sort();
    assert_eq!(p.trigger_names(), expected);
    assert_eq!(
        p.subscriber_names(),
        vec![
            "site1".to_string(),
            "site9.new".to_string(),
            "site9.request.json".to_string()
        ]
    );
    assert_eq!(p.tables("site1"), "s1.t1\n");
    assert_eq!(p.since("site1"), "10");
    assert_eq!(std::fs::read_dir(&p.site_logs).unwrap().count(), 0);

    let s = p.status_json();
    // site1's directory was written without a sequence list, as an older version did.
    assert_eq!(s["sites"][0]["name"], "site1");
    assert_eq!(s["sites"][0]["sequences"], serde_json::Value::Null);
    let warning = s["sites"][0]["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("no `sequences`") && warning.contains("subscribe again"),
        "{s}"
    );
    assert_eq!(s["requests"][0]["node"], "site9");
    assert_eq!(s["requests"][0]["state"], "published");
    assert_eq!(s["requests"][0]["counter"], 42);

    let status = m.terminate();
    assert_eq!(status.code(), Some(0), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_resume_from_their_persisted_state() {
    let p = Provider::new("manager-resume").await;
    // As a crash would leave them: site11 interrupted while generating (a partial SQL
    // file and a wrong `.new` list), site12 interrupted while finishing (its `.new`
    // already renamed half-way: the old list aside, the new one not yet in place).
    let nonce11 = Nonce::random().unwrap();
    let request = format!("node site11\nnonce {nonce11}\ns1.t1 subscribe\nEOF\n");
    p.nonces.lock().unwrap().insert("site11".into(), nonce11);
    p.put("site11.subscribe_series.tgr", request.as_bytes());
    std::fs::write(
        p.state_file("site11"),
        serde_json::json!({
            "node": "site11", "new_site": true, "request": request,
            "state": "generating", "accepted_at": 0, "updated_at": 0
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(p.sql_path("site11").with_extension("gz.part"), b"junk").unwrap();
    std::fs::create_dir(p.subscribers.join("site11.new")).unwrap();
    std::fs::write(p.subscribers.join("site11.new/tables"), "s1.junk\n").unwrap();

    let nonce12 = Nonce::random().unwrap();
    p.nonces
        .lock()
        .unwrap()
        .insert("site12".into(), nonce12.clone());
    std::fs::write(
        p.state_file("site12"),
        serde_json::json!({
            "node": "site12", "new_site": false,
            "request": format!("node site12\nnonce {nonce12}\ns1.big subscribe\nEOF\n"),
            "state": "finishing", "success": true, "reason": null,
            "accepted_at": 0, "updated_at": 0
        })
        .to_string(),
    )
    .unwrap();
    std::fs::create_dir(p.subscribers.join("site12.old")).unwrap();
    std::fs::write(p.subscribers.join("site12.old/tables"), "s1.t1\n").unwrap();
    std::fs::create_dir(p.subscribers.join("site12.new")).unwrap();
    std::fs::write(p.subscribers.join("site12.new/tables"), "s1.t1\ns1.big\n").unwrap();
    std::fs::write(p.subscribers.join("site12.new/since"), "43\n").unwrap();
    p.put("site12.subscribe_series.sqlapplied", b"success true\nEOF\n");

    let m = p.start();
    // site12 completes without any input.
    let done = p.tfile("site12", TriggerKind::Done);
    let o = Outcome::parse(&p.wait_file(&done)).unwrap();
    assert_eq!(o.binding, Some(p.binding("site12")));
    assert!(o.body.success, "{o:?}");
    assert_eq!(p.tables("site12"), "s1.t1\ns1.big\n");
    assert_eq!(p.since("site12"), "43");
    assert!(!p.subscribers.join("site12.old").exists());
    assert!(!p.subscribers.join("site12.new").exists());
    assert!(!p.tfile("site12", TriggerKind::SqlApplied).exists());
    assert!(p.site_logs.join("site12").is_dir());
    std::fs::remove_file(&done).unwrap();

    // site11 is generated again from scratch.
    let (new_site, counter, _) = ready(&p.wait_sqldone("site11"));
    assert!(new_site);
    assert_eq!(counter, Counter(42));
    assert_eq!(p.tables("site11.new"), "s1.t1\n");
    assert_eq!(p.since("site11.new"), "43");
    assert!(!p.sql_path("site11").with_extension("gz.part").exists());
    p.apply_new_site(&p.sql("site11"), counter);
    assert_eq!(
        p.fingerprint("sub", "s1.t1").await,
        p.fingerprint("provider", "s1.t1").await
    );
    let o = p.answer("site11", true, None);
    assert!(o.success);
    assert_eq!(p.tables("site11"), "s1.t1\n");
    assert!(p.trigger_names().is_empty(), "{:?}", p.trigger_names());
    assert_eq!(
        p.subscriber_names(),
        vec!["site11".to_string(), "site12".to_string()]
    );

    let status = m.terminate();
    assert_eq!(status.code(), Some(0), "{}", p.log());
}

/// Runs `slony-manager cancel` for `node`; returns its exit code and output.
fn cancel(p: &Provider, node: &str) -> (Option<i32>, String) {
    let out = Command::new(bin_path("slony-manager"))
        .args(["cancel", "--config"])
        .arg(&p.config)
        .args(["--node", node, "--reason", "site decommissioned"])
        .output()
        .expect("running slony-manager cancel");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_request_of_a_vanished_site_is_cancelled() {
    let p = Provider::new("manager-cancel").await;
    let _m = p.start();

    // Nothing to cancel: a clear refusal.
    let (code, out) = cancel(&p, "gone");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no subscription request in progress"), "{out}");
    let (code, out) = cancel(&p, "../etc");
    assert_ne!(code, Some(0), "{out}");

    // A new site's request is published, and the site never answers.
    p.request("gone", &[("s1.t1", Action::Subscribe)]);
    ready(&p.wait_sqldone("gone"));
    assert!(p.subscribers.join("gone.new").is_dir());
    // Nothing the site puts in its directory (a directory where its report goes, which
    // cannot be moved aside) holds the cancel up.
    std::fs::create_dir(p.tfile("gone", TriggerKind::SqlApplied)).unwrap();
    let (code, out) = cancel(&p, "gone");
    assert_eq!(code, Some(0), "{out}");
    let done = p.wait_file(&p.tfile("gone", TriggerKind::Done));
    let o = Outcome::parse(&done)
        .unwrap()
        .for_request(&p.binding("gone"), ".done")
        .unwrap();
    assert!(!o.success);
    assert!(
        o.reason
            .as_deref()
            .is_some_and(|r| r.contains("cancelled on the provider: site decommissioned")),
        "{o:?}"
    );
    wait_until(WAIT, "the request state to be removed", || {
        !p.state_file("gone").exists()
    });
    assert!(!p.subscribers.join("gone.new").exists(), "{}", p.log());
    assert!(!p.subscribers.join("gone").exists());
    assert!(!p.sql_path("gone").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_daemon_tells_the_service_manager_it_is_ready_and_alive() {
    let p = Provider::new("manager-notify").await;
    let notify = crate::systemd::NotifySocket::bind(p.subscribers.join("notify.sock"));
    let path = notify.path.to_str().unwrap().to_string();
    let mut manager = ManagerDaemon::start(
        &p.config,
        &p.log,
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", "1500000"),
        ],
    );
    let seen = notify.wait_for(Duration::from_secs(30), "READY=1", |l| l == "READY=1");
    let status = format!(
        "STATUS={} sites, 0 requests in progress, not cutting (no archive_dir)",
        SITES.len()
    );
    assert!(seen.contains(&status), "{seen:?}\n{}", p.log());
    // The loop rescans every second: keep-alives keep coming while it idles.
    std::thread::sleep(Duration::from_secs(3));
    notify.drain();
    let idle = notify.collect(Duration::from_secs(3));
    assert!(
        idle.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3,
        "{idle:?}"
    );
    assert!(manager.is_running());
    assert_eq!(manager.terminate().code(), Some(0));
    let after = notify.collect(Duration::from_millis(500));
    assert!(after.iter().any(|l| l == "STOPPING=1"), "{after:?}");
}
