//! Sites act only for themselves, end to end, with real accounts: two site accounts and
//! the manager's own (created with `useradd`, run as root), a real sshd that both sites
//! log in to, the manager running as its account (`setpriv`), and each receiver speaking
//! SFTP as its site. Every attack is first shown live (the same file in its genuine form
//! is acted on), then refused, with nothing changed.

use crate::support::manager::{ManagerDaemon, ManagerToml};
use crate::support::pg::PgServer;
use crate::support::receiver::database_toml;
use crate::support::smtp::SmtpSink;
use crate::support::ssh::SshServer;
use crate::support::{
    account, as_user, bin_path, is_root, run_as_root, sites_toml, slony_set_sql, tail, wait_until,
    OsUser, TestDir,
};
use slony_shared::trigger::{Binding, Digest, Nonce, Outcome, SqlDone};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CLUSTER: &str = "lab";
/// The manager's account and the two sites' (their names say they are the tests').
const MGR: &str = "slonyt-mgr";
const ACCOUNTS: [&str; 2] = ["slonyt-site1", "slonyt-site2"];
const NODES: [&str; 2] = ["site1", "site2"];
const WAIT: Duration = Duration::from_secs(60);

const PROVIDER_SQL: &str = r#"
CREATE SCHEMA s1;
CREATE TABLE s1.t1 (id int PRIMARY KEY, v text);
INSERT INTO s1.t1 SELECT g, 'one ' || g FROM generate_series(1, 50) g;
CREATE TABLE s1.t2 (id int PRIMARY KEY, v text);
INSERT INTO s1.t2 SELECT g, 'two ' || g FROM generate_series(1, 30) g;
CREATE SCHEMA "_lab";
CREATE TABLE "_lab".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);
INSERT INTO "_lab".sl_archive_counter VALUES (42, '2026-11-21 10:00:42+00');
"#;

/// Writes `bytes` to `path` as if `owner` had (temporary name, owner set, rename), in
/// the owner's group.
fn write_as(owner: &OsUser, path: &Path, bytes: &[u8]) {
    write_as_group(owner, owner.gid, path, bytes)
}

/// [`write_as`] in group `gid`.
fn write_as_group(owner: &OsUser, gid: u32, path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("planting");
    std::fs::write(&tmp, bytes).unwrap();
    std::os::unix::fs::chown(&tmp, Some(owner.uid), Some(gid)).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts the manager running as its own account; killed on drop.
fn start_manager(config: &Path, log: &Path) -> ManagerDaemon {
    ManagerDaemon::spawn(
        as_user(MGR, &bin_path("slony-manager"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info"),
        log,
    )
}

/// The provider host and the two sites.
struct World {
    dir: TestDir,
    triggers: PathBuf,
    subscribers: PathBuf,
    site_logs: PathBuf,
    config: PathBuf,
    log: PathBuf,
    pg: PgServer,
    ssh: SshServer,
    /// Where the manager's alerts are mailed.
    smtp: SmtpSink,
    mgr: OsUser,
    sites: [OsUser; 2],
}

impl World {
    async fn new() -> World {
        let mgr = account(MGR);
        let sites = ACCOUNTS.map(account);
        // The manager reads what each site writes through the site's group.
        run_as_root("usermod", &["-aG", &ACCOUNTS.join(","), MGR]);
        let dir = TestDir::new("sites");
        let provider = dir.mkdir("provider");
        let triggers = dir.mkdir("provider/triggers");
        let subscribers = dir.mkdir("provider/subscribers");
        let site_logs = dir.mkdir("provider/site_logs");
        for d in [&triggers, &subscribers, &site_logs] {
            std::os::unix::fs::chown(d, Some(mgr.uid), Some(mgr.gid)).unwrap();
        }
        std::fs::set_permissions(&subscribers, std::fs::Permissions::from_mode(0o700)).unwrap();
        let pg = PgServer::start();
        for db in ["provider", "site1", "site2"] {
            pg.create_db(db).await;
        }
        pg.connect("provider")
            .await
            .batch_execute(&format!(
                "{PROVIDER_SQL}{}",
                slony_set_sql(CLUSTER, &["s1.t1", "s1.t2"])
            ))
            .await
            .unwrap();
        let smtp = SmtpSink::start();
        let config = dir.join("manager.toml");
        ManagerToml::new(
            CLUSTER,
            &triggers,
            &subscribers,
            &site_logs,
            pg.port(),
            "provider",
        )
        .key("rescan_interval_secs", 1)
        .sites(sites_toml(&[(NODES[0], ACCOUNTS[0]), (NODES[1], ACCOUNTS[1])]))
        .section(
            "alert",
            &format!(
                "recipients = [\"ops@provider.example\"]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\n",
                smtp.port()
            ),
        )
        .write(&config);
        let ssh = SshServer::start(&provider);
        let w = World {
            log: dir.join("manager.log"),
            dir,
            triggers,
            subscribers,
            site_logs,
            config,
            pg,
            ssh,
            smtp,
            mgr,
            sites,
        };
        for i in 0..2 {
            w.write_receiver_config(i);
        }
        w
    }

    /// Site `i`'s receiver config: SFTP as its own account, its own replica.
    fn write_receiver_config(&self, i: usize) {
        let text = format!(
            "cluster = \"{CLUSTER}\"\nnode = \"{}\"\n[remote]\nhost = \"127.0.0.1\"\nport = {}\n\
             user = \"{}\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\nlog_dir = \"{}\"\n\
             trigger_dir = \"{}\"\nconnect_timeout_secs = 10\n[local]\nlog_dir = \"{}\"\n\
             [database]\n{}",
            NODES[i],
            self.ssh.port(),
            ACCOUNTS[i],
            self.ssh.client_key().display(),
            self.ssh.known_hosts().display(),
            self.site_logs.display(),
            self.triggers.display(),
            self.dir.join(format!("local{i}")).display(),
            database_toml(self.pg.port(), "postgres", NODES[i]),
        );
        std::fs::write(self.receiver_config(i), text).unwrap();
    }

    fn receiver_config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("receiver{i}.toml"))
    }

    fn list(&self, i: usize, tables: &str) -> PathBuf {
        let p = self
            .dir
            .join(format!("list{i}-{}", tables.replace(' ', "_")));
        std::fs::write(&p, tables.replace(' ', "\n")).unwrap();
        p
    }

    /// `slony-receiver subscribe-series` for site `i`, waiting `attempts` seconds at most.
    fn subscribe(&self, i: usize, list: &Path, attempts: u32) -> Command {
        let mut c = Command::new(bin_path("slony-receiver"));
        c.arg("subscribe-series")
            .arg("--config")
            .arg(self.receiver_config(i))
            .arg("--list")
            .arg(list)
            .args(["--attempts", &attempts.to_string(), "--interval-secs", "1"])
            .env("RUST_LOG", "info");
        c
    }

    fn exchange(&self, node: &str) -> PathBuf {
        self.triggers.join(node)
    }

    fn file(&self, node: &str, suffix: &str) -> PathBuf {
        self.exchange(node).join(format!("{node}{suffix}"))
    }

    fn log(&self) -> String {
        tail(&self.log, 60)
    }

    /// `slony-manager status --json`, as the manager's account.
    fn status(&self, config: &Path) -> (i32, String) {
        let out = as_user(MGR, &bin_path("slony-manager"))
            .args(["status", "--config"])
            .arg(config)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    async fn count(&self, db: &str, table: &str) -> Option<i64> {
        let c = self.pg.connect(db).await;
        c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .ok()
            .map(|r| r.get(0))
    }

    /// A request file for `node` with a fresh nonce, as the receiver writes it.
    fn request_text(node: &str, table: &str) -> (String, Binding) {
        let nonce = Nonce::random().unwrap();
        (
            format!("node {node}\nnonce {nonce}\n{table} subscribe\nEOF\n"),
            Binding {
                node: slony_shared::ident::NodeName::new(node).unwrap(),
                nonce,
            },
        )
    }
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_act_only_for_themselves_and_answers_are_authentic() {
    if !is_root() {
        eprintln!("skipped: creating the site accounts needs root (CI runs as root)");
        return;
    }
    let w = World::new().await;
    let [s1, s2] = &w.sites;
    let m = start_manager(&w.config, &w.log);

    // The manager makes each site's exchange directory: its own, the site's group, 3770 (setgid, sticky).
    wait_until(WAIT, "the exchange directories", || {
        NODES.iter().all(|n| w.exchange(n).is_dir())
    });
    for (i, n) in NODES.iter().enumerate() {
        let meta = std::fs::metadata(w.exchange(n)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (w.mgr.uid, w.sites[i].gid, 0o3770),
            "{n}"
        );
    }

    // --- 1. The genuine flow, for both sites, each over SFTP as its own account.
    run_ok(&mut w.subscribe(0, &w.list(0, "s1.t1"), 60));
    run_ok(&mut w.subscribe(1, &w.list(1, "s1.t2"), 60));
    assert_eq!(w.count("site1", "s1.t1").await, Some(50));
    assert_eq!(w.count("site2", "s1.t2").await, Some(30));
    let logs = std::fs::metadata(w.site_logs.join("site1")).unwrap();
    assert_eq!(
        (logs.uid(), logs.gid(), logs.mode() & 0o7777),
        (w.mgr.uid, s1.gid, 0o2750)
    );
    // The operating system keeps site2 out of site1's directories.
    for (args, what) in [
        (vec!["-c", "ls \"$0\""], w.exchange("site1")),
        (vec!["-c", "echo x > \"$0/x\""], w.exchange("site1")),
        (vec!["-c", "ls \"$0\""], w.site_logs.join("site1")),
    ] {
        let out = as_user(ACCOUNTS[1], Path::new("/bin/sh"))
            .args(&args)
            .arg(&what)
            .output()
            .unwrap();
        assert!(!out.status.success(), "site2 reached {}", what.display());
    }

    // --- 2. The manager: requests and reports must come from their site's account.
    // Live: a request owned by site1's account in its directory is acted on.
    let (text, n1) = World::request_text("site1", "s1.t2");
    write_as(
        s1,
        &w.file("site1", ".subscribe_series.tgr"),
        text.as_bytes(),
    );
    let sqldone = w.file("site1", ".subscribe_series.sqldone");
    wait_until(WAIT, "site1's published answer", || sqldone.exists());
    let answer = SqlDone::parse(&std::fs::read(&sqldone).unwrap()).unwrap();
    assert_eq!(answer.binding.as_ref(), Some(&n1));
    let sql = w.file("site1", ".sql.gz");
    for f in [&sqldone, &sql] {
        let meta = std::fs::metadata(f).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (w.mgr.uid, s1.gid, 0o640),
            "{}: the manager's, the site's group, not world-readable",
            f.display()
        );
    }
    // The directory is sticky: site1's own account cannot rename the manager's SQL (say,
    // to slip an older one into place later).
    let out = as_user(ACCOUNTS[0], Path::new("/bin/mv"))
        .arg(&sql)
        .arg(w.exchange("site1").join("stash"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "site1 renamed the manager's SQL");
    // Kept for the replays below (owner and content preserved).
    let kept = w.dir.join("kept");
    std::fs::create_dir(&kept).unwrap();
    run_as_root(
        "cp",
        &[
            "-p",
            sqldone.to_str().unwrap(),
            kept.join("sqldone").to_str().unwrap(),
        ],
    );
    run_as_root(
        "cp",
        &[
            "-p",
            sql.to_str().unwrap(),
            kept.join("sql.gz").to_str().unwrap(),
        ],
    );

    // While it is published: a success report written by site2's account, bound right,
    // is refused; so is one of site1's own bound to another request.
    let report = w.file("site1", ".subscribe_series.sqlapplied");
    let success = Outcome {
        success: true,
        reason: None,
    };
    write_as(s2, &report, success.render(Some(&n1)).as_bytes());
    wait_until(WAIT, "the forged report to be refused", || !report.exists());
    // The alert is logged just after the file is moved aside.
    wait_until(
        Duration::from_secs(10),
        "the alert naming the writer",
        || w.log().contains(ACCOUNTS[1]),
    );
    let (_, old) = World::request_text("site1", "s1.t2");
    write_as(s1, &report, success.render(Some(&old)).as_bytes());
    wait_until(WAIT, "the misbound report to be refused", || {
        !report.exists()
    });
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.subscribers.join("site1.request.json")).unwrap())
            .unwrap();
    assert_eq!(state["state"], "published", "{}", w.log());
    // site1's own report, bound to its request, ends it (a failure: nothing changes).
    let failure = Outcome {
        success: false,
        reason: Some("withdrawn by the test".into()),
    };
    write_as(s1, &report, failure.render(Some(&n1)).as_bytes());
    let done = w.file("site1", ".subscribe_series.done");
    wait_until(WAIT, "site1's .done", || done.exists());
    std::fs::remove_file(&done).unwrap();
    assert_eq!(
        std::fs::read_to_string(w.subscribers.join("site1/tables")).unwrap(),
        "s1.t1\n"
    );

    // Forged requests for site1: written by site2's account in site1's directory, named
    // for site1 in site2's own directory, and in the old shared layout. None is answered.
    let (text, _) = World::request_text("site1", "s1.t2");
    let rejected = w.triggers.join("rejected");
    let moved = || std::fs::read_dir(&rejected).map_or(0, |d| d.count());
    let before = moved();
    write_as(
        s2,
        &w.file("site1", ".subscribe_series.tgr"),
        text.as_bytes(),
    );
    write_as(
        s2,
        &w.exchange("site2").join("site1.subscribe_series.tgr"),
        text.as_bytes(),
    );
    write_as(
        s2,
        &w.triggers.join("site1.subscribe_series.tgr"),
        text.as_bytes(),
    );
    wait_until(WAIT, "the forged requests to be moved aside", || {
        moved() == before + 3
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !sqldone.exists(),
        "a forged request was answered:\n{}",
        w.log()
    );
    assert!(!w.subscribers.join("site1.request.json").exists());
    // Each refusal (two reports, three requests) was mailed, naming the real writer:
    // site2's account four times, site1's own for its misbound report.
    let mails = w.smtp.wait_for(5, WAIT);
    let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
    let naming = |account: &str| {
        subjects
            .iter()
            .filter(|s| s.starts_with("[slony-manager] ") && s.contains(account))
            .count()
    };
    assert_eq!(
        (naming(ACCOUNTS[1]), naming(ACCOUNTS[0])),
        (4, 1),
        "{subjects:?}"
    );
    assert!(w.log().contains("ALERT"), "{}", w.log());

    // --- 3. The receiver: only the manager's answer to this very request is applied.
    // A genuine answer for site2, to be moved to site1's names below.
    let (text2, _) = World::request_text("site2", "s1.t1");
    write_as(
        s2,
        &w.file("site2", ".subscribe_series.tgr"),
        text2.as_bytes(),
    );
    let sqldone2 = w.file("site2", ".subscribe_series.sqldone");
    wait_until(WAIT, "site2's published answer", || sqldone2.exists());
    m.terminate();

    // site1 asks for s1.t2 while the manager is down: its request is in flight.
    let err_path = w.dir.join("subscribe1.err");
    let mut child = w
        .subscribe(0, &w.list(0, "s1.t2"), 40)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let tgr = w.file("site1", ".subscribe_series.tgr");
    wait_until(WAIT, "site1's request", || tgr.exists());
    let binding = slony_shared::trigger::request_binding(&std::fs::read(&tgr).unwrap()).unwrap();
    let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();

    // Forged new files, bound right and with the right digest, that PostgreSQL would
    // apply: written by site2's account.
    let forged_sql = "CREATE TABLE s1.t2 (id int PRIMARY KEY, v text);\n\
                      INSERT INTO s1.t2 VALUES (1, 'forged by site2');\n";
    {
        let c = w.pg.connect("site1").await;
        c.batch_execute(&format!("BEGIN; {forged_sql}"))
            .await
            .unwrap();
        let v: String = c
            .query_one("SELECT v FROM s1.t2", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(v, "forged by site2", "the forged SQL is live");
        c.batch_execute("ROLLBACK").await.unwrap();
    }
    let forged_gz = gzip(forged_sql.as_bytes());
    let forged = SqlDone::Ready {
        new_site: false,
        counter: slony_shared::counter::Counter(42),
        sql: Digest::of(forged_gz.as_slice()).unwrap(),
        notes: vec![],
    };
    write_as(s2, &w.file("site1", ".sql.gz"), &forged_gz);
    write_as(s2, &sqldone, forged.render(Some(&binding)).as_bytes());
    wait_until(WAIT, "the forged answer to be refused", || {
        stderr().contains(&format!("owned by uid {}", s2.uid))
    });
    // The manager's genuine answer for site2, moved to site1's names: it keeps site2's
    // group, so site1's account cannot even read it.
    std::fs::rename(&sqldone2, &sqldone).unwrap();
    std::fs::rename(w.file("site2", ".sql.gz"), w.file("site1", ".sql.gz")).unwrap();
    wait_until(WAIT, "the moved answer to be refused", || {
        stderr().contains("may not read it")
    });
    // Where the sites share a group (or an account), it is readable, and looks over
    // SFTP just like site1's own answer: its binding refuses it.
    for f in [&sqldone, &w.file("site1", ".sql.gz")] {
        std::os::unix::fs::chown(f, None, Some(s1.gid)).unwrap();
    }
    wait_until(
        WAIT,
        "the moved answer to be refused by its binding",
        || stderr().contains("belongs to node site2"),
    );
    // site1's own earlier answer, kept, then hard-linked into place.
    std::fs::remove_file(&sqldone).unwrap();
    std::fs::hard_link(kept.join("sqldone"), &sqldone).unwrap();
    std::fs::remove_file(w.file("site1", ".sql.gz")).unwrap();
    std::fs::hard_link(kept.join("sql.gz"), w.file("site1", ".sql.gz")).unwrap();
    wait_until(WAIT, "the replayed answer to be refused", || {
        stderr().contains(&format!("node site1, request {}", n1.nonce))
    });
    // An answer of the manager's account, bound right, whose SQL file is not the one it
    // describes (here: another SQL file of the manager's, of the same size): refused by
    // its SHA-256 before a byte is applied; the site reports the failure.
    let real = std::fs::read(kept.join("sql.gz")).unwrap();
    let mut other = real.clone();
    *other.last_mut().unwrap() ^= 0xff;
    let claimed = SqlDone::Ready {
        new_site: false,
        counter: slony_shared::counter::Counter(42),
        sql: Digest::of(other.as_slice()).unwrap(),
        notes: vec![],
    };
    std::fs::remove_file(&sqldone).unwrap();
    write_as_group(
        &w.mgr,
        s1.gid,
        &sqldone,
        claimed.render(Some(&binding)).as_bytes(),
    );
    wait_until(WAIT, "the swapped SQL file to be refused", || {
        stderr().contains("it is not the SQL the manager published")
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(12), "{}", stderr());
    assert_eq!(w.count("site1", "s1.t2").await, None, "nothing was applied");
    assert_eq!(w.count("site1", "s1.t1").await, Some(50));

    // The genuine flow of the same shape works: the site withdraws the failed request,
    // the manager comes back, and a new request completes.
    run_ok(
        Command::new(bin_path("slony-receiver"))
            .args(["subscribe-series", "--abort", "--config"])
            .arg(w.receiver_config(0)),
    );
    for f in [&sqldone, &w.file("site1", ".sql.gz")] {
        let _ = std::fs::remove_file(f);
    }
    let m = start_manager(&w.config, &w.log);
    let out = run_ok(&mut w.subscribe(0, &w.list(0, "s1.t2"), 60));
    assert!(out.contains("subscription updated"), "{out}");
    assert_eq!(w.count("site1", "s1.t2").await, Some(30));

    // --- 4. The acknowledgement: the site's own file in its own directory only.
    let run = run_ok(
        Command::new(bin_path("slony-receiver"))
            .args(["pull", "--once", "--config"])
            .arg(w.receiver_config(0)),
    );
    let ack = w.exchange("site1").join("applied_counter");
    assert_eq!(std::fs::read_to_string(&ack).unwrap(), "42\n", "{run}");
    assert_eq!(std::fs::metadata(&ack).unwrap().uid(), s1.uid);
    let acknowledged = |w: &World| {
        let out = as_user(MGR, &bin_path("slony-manager"))
            .args(["status", "--json", "--config"])
            .arg(&w.config)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "site1")
            .unwrap()["acknowledged"]
            .clone()
    };
    assert_eq!(acknowledged(&w), serde_json::json!(42));
    std::os::unix::fs::chown(&ack, Some(s2.uid), Some(s1.gid)).unwrap();
    assert_eq!(
        acknowledged(&w),
        serde_json::Value::Null,
        "written by site2"
    );
    std::fs::remove_file(&ack).unwrap();
    write_as(s1, &w.site_logs.join("site1/applied_counter"), b"42\n");
    assert_eq!(acknowledged(&w), serde_json::Value::Null, "the old place");
    m.terminate();

    // --- 5. One account for both sites is refused, unless the operator opts in; then
    // status warns on every run.
    let text = std::fs::read_to_string(&w.config).unwrap();
    let shared = text.replace(ACCOUNTS[1], ACCOUNTS[0]);
    let shared_config = w.dir.join("shared.toml");
    std::fs::write(&shared_config, &shared).unwrap();
    let (code, out) = w.status(&shared_config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("also site site1's account"), "{out}");
    std::fs::write(
        &shared_config,
        format!("allow_shared_account = true\n{shared}"),
    )
    .unwrap();
    let (code, out) = w.status(&shared_config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "WARNING: account {} is shared by site1, site2",
            ACCOUNTS[0]
        )),
        "{out}"
    );
}
