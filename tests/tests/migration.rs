//! Moving a fleet from the original tools, end to end.
//!
//! The fixture tree `tests/fixtures/legacy/` is a provider and three sites as the
//! original tools leave them (`repserver.cfg`, `slon_parser.cfg`, one `<node>.lst` per
//! site, every site's `repclient.cfg` with every key of the template set). The test
//! writes what the original splitter left in each site's directory (archives 1 to 15,
//! loose and in `slony_logs_<a>-<b>.tar.gz` batches, each ending in `-- EOL`), lets
//! beta apply them with the original client, then:
//!
//! 1. `slony-manager import-legacy --dry-run` prints the plan, then the import runs;
//! 2. `slony-manager run` (as an account of its own) cuts the next 50 archives;
//! 3. alpha and gamma pull with `slony-receiver pull --legacy-config`, their original
//!    configs unchanged; beta keeps the original `get_slony_logs.pl` (real ssh, scp and
//!    psql) and applies the manager's copies with it: a mixed fleet;
//! 4. every replica equals the expected state of its tables, and every site's stream is
//!    contiguous across the switch;
//! 5. gamma runs `subscribe-series` with its original config and list, adds a table,
//!    and after ten more archives every replica again equals the expected state.
//!
//! Sites log in as accounts of their own and the manager runs as its own (root only, as
//! in `sites.rs`).

use crate::support::legacy::{self, Placeholders};
use crate::support::manager::ManagerDaemon;
use crate::support::pg::PgServer;
use crate::support::ssh::{SshAgent, SshServer};
use crate::support::workload::{self, Change, Format};
use crate::support::{
    account, as_user, bin_path, is_root, run_as_root, slony_set_sql, tail, wait_until, OsUser,
    TestDir,
};
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::ArchiveName;
use slony_shared::counter::Counter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CLUSTER: &str = "jsoc";
const NODES: [&str; 3] = ["alpha", "beta", "gamma"];
/// The manager's account and each site's.
const MGR: &str = "slonyt-lmgr";
/// The last archive the original splitter cut.
const SWITCH: u64 = 15;
/// The last archive before gamma's subscription change.
const BEFORE_CHANGE: u64 = SWITCH + 50;
/// The last archive of the test.
const LAST: u64 = BEFORE_CHANGE + 10;
const WAIT: Duration = Duration::from_secs(90);

fn site_account(node: &str) -> String {
    format!("slonyt-{node}")
}

/// The tables each site subscribes to before gamma's change (as in the `.lst` files).
fn tables_of(node: &str) -> &'static [&'static str] {
    match node {
        "alpha" => &["s1.t1", "s1.t2"],
        "beta" => &["s1.t1"],
        _ => &["s1.t2"],
    }
}

/// Whether `change` touches one of `tables`.
fn touches(change: &Change, tables: &[&str]) -> bool {
    let table = match change {
        Change::InsertT1(_) | Change::UpdateTxt { .. } | Change::DeleteT1 { .. } => "s1.t1",
        Change::InsertT2 { .. } => "s1.t2",
        Change::SetSeq(_) => return false,
    };
    tables.contains(&table)
}

/// Ordered hash and count of a table's rows.
async fn table_hash(c: &tokio_postgres::Client, table: &str) -> String {
    let key = if table == "s1.t1" { "id" } else { "k" };
    c.query_one(
        &format!(
            "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY {key})), '-') FROM {table} t"
        ),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("{table}: {e}"))
    .get(0)
}

async fn at_counter(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        &format!("SELECT at_counter FROM \"_{CLUSTER}\".sl_archive_tracking"),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The counters a site directory holds, loose and in batches, each once.
fn counters_in(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        match classify(&name) {
            Ok(Entry::Archive(a)) => out.push(a.counter.0),
            Ok(Entry::Batch(b)) => out.extend(b.from.0..=b.to.0),
            _ => {}
        }
    }
    out.sort_unstable();
    out
}

fn chown_tree(path: &Path, user: &OsUser, gid: u32) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), user, gid);
        }
    }
}

fn output(c: &mut Command) -> (i32, String) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The provider and the three sites.
struct World {
    dir: TestDir,
    root: PathBuf,
    pg: PgServer,
    /// Serves the provider's directories to the sites.
    _ssh: SshServer,
    stream: Vec<Vec<Change>>,
    mgr: OsUser,
    /// The ssh-agent the sites on `slony-receiver` log in through, as the original tools did.
    agent: SshAgent,
    /// `$HOME` of those sites (its `.ssh/known_hosts` is the test sshd's).
    home: PathBuf,
    /// The original client, when a copy of the original tools is at hand.
    client: Result<PathBuf, String>,
}

impl World {
    async fn new() -> World {
        let mgr = account(MGR);
        let sites: Vec<OsUser> = NODES.iter().map(|n| account(&site_account(n))).collect();
        let groups: Vec<String> = NODES.iter().map(|n| site_account(n)).collect();
        run_as_root("usermod", &["-aG", &groups.join(","), MGR]);
        let dir = TestDir::new("migration");
        let root = dir.mkdir("world");
        let pg = PgServer::start();
        let ssh = SshServer::start(&root);
        legacy::copy_fixture(
            &root,
            &Placeholders {
                pg_port: pg.port(),
                ssh_port: ssh.port(),
                account_of: &site_account,
            },
        );
        let stream: Vec<Vec<Change>> = workload::generate(LAST, 23)
            .into_iter()
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| !matches!(c, Change::SetSeq(_)))
                    .collect()
            })
            .collect();

        // The provider: the log-shipping node's database, with the Slony catalog of its
        // set and its archive counter; the state after SWITCH archives.
        pg.create_db("provider").await;
        let provider = pg.connect("provider").await;
        provider
            .batch_execute(&format!(
                "{}\nCREATE SCHEMA \"_{CLUSTER}\";\n\
                 CREATE TABLE \"_{CLUSTER}\".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);\n\
                 INSERT INTO \"_{CLUSTER}\".sl_archive_counter VALUES ({SWITCH}, '2026-11-21 10:00:15+00');\n{}",
                workload::SCHEMA_SQL,
                slony_set_sql(CLUSTER, &["s1.t1", "s1.t2"])
            ))
            .await
            .unwrap();
        workload::apply_expected(&provider, &stream, SWITCH).await;
        pg.create_db("expected").await;
        pg.connect("expected")
            .await
            .batch_execute(workload::SCHEMA_SQL)
            .await
            .unwrap();

        // What the original splitter left: each site's copies of 1..=SWITCH.
        let site_logs = root.join("provider/site_logs");
        for node in NODES {
            let d = site_logs.join(node);
            std::fs::create_dir_all(&d).unwrap();
            let paths: Vec<(ArchiveName, PathBuf)> = (1..=SWITCH)
                .map(|c| {
                    let changes: Vec<Change> = stream[(c - 1) as usize]
                        .iter()
                        .filter(|ch| touches(ch, tables_of(node)))
                        .cloned()
                        .collect();
                    let p = d.join(workload::archive_name(c));
                    std::fs::write(&p, legacy::original_copy(CLUSTER, c, &changes)).unwrap();
                    (ArchiveName::parse(&workload::archive_name(c)).unwrap(), p)
                })
                .collect();
            // manage_logs.pl packed the older ones (alpha: one batch; gamma: two).
            let batches: &[(u64, u64)] = match node {
                "alpha" => &[(1, 10)],
                "gamma" => &[(1, 5), (6, 10)],
                _ => &[],
            };
            for &(from, to) in batches {
                let members: Vec<(ArchiveName, PathBuf)> =
                    paths[(from - 1) as usize..to as usize].to_vec();
                let batch = slony_shared::archive::name::BatchName::new(Counter(from), Counter(to));
                slony_shared::batch::write_batch(&d, batch, &members).unwrap();
                for (_, p) in members {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
        // slon keeps writing; the original splitter stopped after SWITCH.
        for d in ["triggers", "slon_logs", "state"] {
            std::fs::create_dir_all(root.join("provider").join(d)).unwrap();
        }
        // The provider's files belong to the manager's account (the original ran as one
        // account too); each site's directory is shared with the site's group.
        chown_tree(&root.join("provider"), &mgr, mgr.gid);
        for (node, site) in NODES.iter().zip(&sites) {
            let d = site_logs.join(node);
            chown_tree(&d, &mgr, site.gid);
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o2750)).unwrap();
            for f in std::fs::read_dir(&d).unwrap() {
                std::fs::set_permissions(f.unwrap().path(), std::fs::Permissions::from_mode(0o640))
                    .unwrap();
            }
        }
        std::fs::set_permissions(
            root.join("provider/state"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();

        // Each site: its replica (its tables, the tracking schema at counter 0) and the
        // directories its config names.
        for node in NODES {
            let db = format!("replica_{node}");
            pg.create_db(&db).await;
            let ddl: String = tables_of(node)
                .iter()
                .map(|t| workload::object_sql(t).to_string() + "\n")
                .collect();
            pg.connect(&db)
                .await
                .batch_execute(&format!("CREATE SCHEMA s1;\n{ddl}"))
                .await
                .unwrap();
            for d in ["log", "work/slony_logs"] {
                std::fs::create_dir_all(root.join("sites").join(node).join(d)).unwrap();
            }
        }
        let home = dir.mkdir("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::copy(ssh.known_hosts(), home.join(".ssh/known_hosts")).unwrap();
        let agent = SshAgent::start(dir.path(), ssh.client_key());
        legacy::write_ssh_wrappers(&root.join("sites/beta/bin"), &ssh);
        let client = legacy::original_client(&root.join("sites/beta/bin"));
        let w = World {
            dir,
            root,
            pg,
            _ssh: ssh,
            stream,
            mgr,
            agent,
            home,
            client,
        };
        for node in NODES {
            let (code, out) = w.receiver(node, "init", &["--counter", "0"]);
            assert_eq!(code, 0, "init {node}: {out}");
        }
        w
    }

    fn repclient(&self, node: &str) -> PathBuf {
        self.root.join("sites").join(node).join("repclient.cfg")
    }

    fn provider(&self, rel: &str) -> PathBuf {
        self.root.join("provider").join(rel)
    }

    /// `slony-receiver <command> --legacy-config sites/<node>/repclient.cfg <rest>`, as
    /// the site's operator runs it: through the ssh-agent.
    fn receiver(&self, node: &str, command: &str, rest: &[&str]) -> (i32, String) {
        output(
            Command::new(bin_path("slony-receiver"))
                .arg(command)
                .arg("--legacy-config")
                .arg(self.repclient(node))
                .args(rest)
                .env("HOME", &self.home)
                .env("SSH_AUTH_SOCK", self.agent.socket()),
        )
    }

    /// `slony-manager <args>`, as the manager's account.
    fn manager(&self, args: &[&str]) -> (i32, String) {
        output(as_user(MGR, &bin_path("slony-manager")).args(args))
    }

    fn manager_config(&self) -> PathBuf {
        self.provider("etc/manager.toml")
    }

    /// slon writes archives `from..=to` (full, every table).
    fn slon_writes(&self, from: u64, to: u64) {
        let dir = self.provider("slon_logs");
        for p in workload::write_archives(&dir, CLUSTER, &self.stream, from, to, |_| Format::Copy22)
        {
            std::os::unix::fs::chown(&p, Some(self.mgr.uid), Some(self.mgr.gid)).unwrap();
        }
    }

    /// Waits until the manager has cut `upto` for every site.
    fn wait_cut(&self, upto: u64, log: &Path) {
        let log_tail = || tail(log, 30);
        wait_until(WAIT, &format!("the cut of {upto}"), || {
            NODES.iter().all(|n| {
                counters_in(&self.provider("site_logs").join(n))
                    .last()
                    .is_some_and(|&c| c >= upto)
            })
        });
        // Nothing failed (the refusals of what a site may not write are ALERTs).
        assert!(
            !log_tail()
                .lines()
                .any(|l| l.contains("ERROR") && !l.contains("ALERT")),
            "{}",
            log_tail()
        );
    }

    /// Each site applies what it has: beta with the original client (when at hand),
    /// alpha and gamma with `slony-receiver pull`.
    /// `alpha_toml`: alpha has moved to the TOML `migrate` wrote and pulls with it.
    fn pull_all(&self, alpha_toml: Option<&Path>) {
        for node in ["alpha", "gamma"] {
            let (code, out) = match (node, alpha_toml) {
                ("alpha", Some(toml)) => output(
                    Command::new(bin_path("slony-receiver"))
                        .args(["pull", "--once", "--config"])
                        .arg(toml)
                        .env("HOME", &self.home)
                        .env("SSH_AUTH_SOCK", self.agent.socket()),
                ),
                _ => self.receiver(node, "pull", &["--once"]),
            };
            assert_eq!(code, 0, "{node}: {out}");
        }
        match &self.client {
            Ok(client) => {
                let (code, out) = legacy::run_original_client(client, &self.repclient("beta"));
                assert_eq!(code, 0, "get_slony_logs.pl (beta): {out}");
                assert!(!out.contains("Corrupt Slony log"), "{out}");
            }
            Err(why) => {
                eprintln!("beta's original client skipped: {why}");
                let (code, out) = self.receiver("beta", "pull", &["--once"]);
                assert_eq!(code, 0, "beta: {out}");
            }
        }
    }

    /// Every replica holds exactly the expected rows of its tables at `upto`.
    async fn assert_replicas(&self, upto: u64, tables: impl Fn(&str) -> Vec<&'static str>) {
        let expected = self.pg.connect("expected").await;
        expected
            .batch_execute("TRUNCATE s1.t1, s1.t2")
            .await
            .unwrap();
        workload::apply_expected(&expected, &self.stream, upto).await;
        for node in NODES {
            let replica = self.pg.connect(&format!("replica_{node}")).await;
            assert_eq!(at_counter(&replica).await, upto as i64, "{node}'s counter");
            for t in tables(node) {
                assert_eq!(
                    table_hash(&replica, t).await,
                    table_hash(&expected, t).await,
                    "{node}: {t} at {upto}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_moves_from_the_original_tools_without_a_gap() {
    if !is_root() {
        eprintln!(
            "skipped: creating the provider's and sites' accounts needs root (CI runs as root)"
        );
        return;
    }
    let w = World::new().await;
    let manager_log = w.dir.join("manager.log");

    // Before the switch beta is on the original client, up to date with the original
    // splitter's copies; alpha and gamma have applied nothing yet.
    if let Ok(client) = &w.client {
        let (code, out) = legacy::run_original_client(client, &w.repclient("beta"));
        assert_eq!(code, 0, "{out}");
        let beta = w.pg.connect("replica_beta").await;
        assert_eq!(at_counter(&beta).await, SWITCH as i64, "{out}");
    }

    // While the original client runs (here: holds its lock), slony-receiver waits: the
    // two never apply at once while a site moves over.
    let mut holder = Command::new("perl")
        .args([
            "-e",
            "use Fcntl ':flock'; open(L, '>', $ARGV[0]) or die; flock(L, LOCK_EX|LOCK_NB) or die; print \"held\\n\"; $| = 1; sleep 60",
            &format!("/tmp/{CLUSTER}.lock"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "held\n");
    let (code, out) = w.receiver("alpha", "pull", &["--once"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 11, "{out}");
    assert!(out.contains("get_slony_logs.pl"), "{out}");
    let (code, out) = w.receiver("alpha", "status", &["--json"]);
    assert!(
        out.contains("original_client_lock"),
        "status warns: {code} {out}"
    );

    // --- 1. The plan, then the import.
    let repserver = w.provider("etc/repserver.cfg");
    let accounts: Vec<String> = NODES
        .iter()
        .map(|n| format!("{n}={}", site_account(n)))
        .collect();
    let mut import: Vec<String> = vec![
        "import-legacy".into(),
        "--legacy-config".into(),
        repserver.display().to_string(),
        "--state-dir".into(),
        w.provider("state").display().to_string(),
        "--write-config".into(),
        w.manager_config().display().to_string(),
    ];
    for a in &accounts {
        import.push("--account".into());
        import.push(a.clone());
    }
    // A request the original subscribe_series left in the shared trigger directory.
    let leftover = w.provider("triggers/gamma.subscribe_series.tgr");
    std::fs::write(
        &leftover,
        "\narchive 0\nretention 21\ntapegroup 1\nnode gamma\ns1.t2 subscribe\n",
    )
    .unwrap();
    let gamma = crate::support::user_by_name(&site_account("gamma")).unwrap();
    std::os::unix::fs::chown(&leftover, Some(gamma.uid), Some(gamma.gid)).unwrap();
    let mut dry = import.clone();
    dry.push("--dry-run".into());
    let dry: Vec<&str> = dry.iter().map(String::as_str).collect();
    let (code, plan) = w.manager(&dry);
    assert_eq!(code, 0, "{plan}");
    println!("import-legacy --dry-run:\n{plan}");
    for node in NODES {
        assert!(plan.contains(node), "{plan}");
    }
    assert!(plan.contains(&(SWITCH + 1).to_string()), "{plan}");
    assert!(
        plan.contains("trigger-file/gamma.subscribe_series.tgr"),
        "{plan}"
    );
    assert!(!w.manager_config().exists(), "a dry run writes nothing");
    assert!(std::fs::read_dir(w.provider("state"))
        .unwrap()
        .next()
        .is_none());
    let (code, out) = w.manager(&import.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(code, 0, "an inconsistency stops the import: {out}");
    assert!(!w.manager_config().exists());
    import.push("--acknowledge".into());
    import.push("trigger-file/gamma.subscribe_series.tgr".into());
    let import: Vec<&str> = import.iter().map(String::as_str).collect();
    let (code, out) = w.manager(&import);
    assert_eq!(code, 0, "{out}");
    for node in NODES {
        let cut =
            std::fs::read_to_string(w.provider("state").join(node).join("cut_counter")).unwrap();
        assert_eq!(cut.trim(), SWITCH.to_string(), "{node}");
    }
    let config = w.manager_config().display().to_string();
    let (code, out) = w.manager(&["check", "--config", &config]);
    assert!(
        code == 0 || code == 1,
        "check on the imported config: {out}"
    );

    // --- 2. The manager cuts the next 50 archives.
    w.slon_writes(SWITCH + 1, BEFORE_CHANGE);
    let manager = ManagerDaemon::spawn(
        as_user(MGR, &bin_path("slony-manager"))
            .args(["run", "--config", &config])
            .env("RUST_LOG", "info"),
        &manager_log,
    );
    w.wait_cut(BEFORE_CHANGE, &manager_log);
    // The leftover was refused, unanswered; status and check say which site left it.
    wait_until(WAIT, "the leftover moved aside", || !leftover.exists());
    let (_, status) = w.manager(&["status", "--config", &config, "--json"]);
    assert!(
        status.contains("site gamma wrote 1 protocol file(s) in the old shared layout"),
        "{status}"
    );
    let (_, check) = w.manager(&["check", "--config", &config]);
    assert!(check.contains("warning: site gamma wrote"), "{check}");
    for node in NODES {
        assert_eq!(
            counters_in(&w.provider("site_logs").join(node)),
            (1..=BEFORE_CHANGE).collect::<Vec<_>>(),
            "{node}'s stream is contiguous across the switch"
        );
        let copy = std::fs::read_to_string(
            w.provider("site_logs")
                .join(node)
                .join(workload::archive_name(SWITCH + 1)),
        )
        .unwrap();
        assert!(copy.ends_with("-- EOL\n"), "{copy}");
    }

    // --- 3 and 4. Each site pulls with its original config; a mixed fleet.
    w.pull_all(None);
    w.assert_replicas(BEFORE_CHANGE, |n| tables_of(n).to_vec())
        .await;

    // alpha moves on to the TOML `migrate` writes: the counters agree.
    let toml = w.root.join("sites/alpha/receiver.toml");
    let (code, out) = w.receiver("alpha", "migrate", &[]);
    println!("slony-receiver migrate (alpha):\n{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: they agree"), "{out}");
    assert!(toml.is_file());

    // --- 5. gamma adds a table with its original config and list.
    let provider = w.pg.connect("provider").await;
    provider
        .batch_execute("TRUNCATE s1.t1, s1.t2")
        .await
        .unwrap();
    workload::apply_expected(&provider, &w.stream, BEFORE_CHANGE).await;
    provider
        .batch_execute(&format!(
            "UPDATE \"_{CLUSTER}\".sl_archive_counter SET ac_num = {BEFORE_CHANGE}"
        ))
        .await
        .unwrap();
    let list = w.root.join("sites/gamma/subscribe_list.cfg");
    let (code, out) = w.receiver(
        "gamma",
        "subscribe-series",
        &["--list", list.to_str().unwrap(), "--interval-secs", "1"],
    );
    assert_eq!(code, 0, "{out}\nmanager log:\n{}", tail(&manager_log, 40));
    assert!(
        out.contains("jmdtrigger"),
        "the unsupported flag is reported: {out}"
    );
    w.slon_writes(BEFORE_CHANGE + 1, LAST);
    w.wait_cut(LAST, &manager_log);
    w.pull_all(Some(&toml));
    w.assert_replicas(LAST, |n| match n {
        "gamma" => vec!["s1.t1", "s1.t2"],
        other => tables_of(other).to_vec(),
    })
    .await;
    drop(manager);
}
