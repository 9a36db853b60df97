//! A site moving from the original tools: its `repclient.cfg`, filled in from the
//! original template (`tests/fixtures/legacy/sites/alpha/`), used as it is with
//! `--legacy-config`, and turned into TOML by `slony-receiver migrate`; a hostile copy of
//! it refused by every command, its payload never run. Real PostgreSQL, real sshd and
//! ssh-agent (the original tools logged in through the agent).

use crate::support::pg::PgServer;
use crate::support::receiver::{run_receiver_args, Run};
use crate::support::ssh::{SshAgent, SshServer};
use crate::support::{bin_path, TestDir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The replica database alpha's config names.
const DBNAME: &str = "replica_alpha";

/// Line of `kRSServer` in alpha's config.
const SERVER_LINE: usize = 15;

/// A test directory laid out as the fixture's `sites/alpha` and `provider` (the
/// directories the config names), with alpha's config filled in.
struct Alpha {
    /// `@ROOT@`.
    root: TestDir,
    /// The filled-in `repclient.cfg`.
    cfg: PathBuf,
}

impl Alpha {
    fn new(name: &str, pg_port: u16, ssh_port: u16, ssh_user: &str) -> Alpha {
        let root = TestDir::new(name);
        for dir in [
            "sites/alpha/work",
            "sites/alpha/log",
            "provider/site_logs/alpha",
            "provider/triggers",
        ] {
            root.mkdir(dir);
        }
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy/sites/alpha/repclient.cfg");
        let text = std::fs::read_to_string(&fixture)
            .unwrap_or_else(|e| panic!("reading {}: {e}", fixture.display()))
            .replace("@ROOT@", &root.path().display().to_string())
            .replace("@PG_PORT@", &pg_port.to_string())
            .replace("@SSH_PORT@", &ssh_port.to_string())
            .replace("@SSH_USER@", ssh_user);
        for placeholder in ["@ROOT@", "@PG_PORT@", "@SSH_PORT@", "@SSH_USER@"] {
            assert!(!text.contains(placeholder), "{placeholder} left in {text}");
        }
        let cfg = root.join("sites/alpha/repclient.cfg");
        std::fs::write(&cfg, text).unwrap();
        Alpha { root, cfg }
    }

    /// `<slony_logs>/<node>/slony_counter.txt`, where the pre-2017 client kept it.
    fn counter_file(&self) -> PathBuf {
        self.root
            .join("sites/alpha/work/slony_logs/alpha/slony_counter.txt")
    }

    /// `receiver.toml` beside the legacy file: migrate's default output.
    fn toml(&self) -> PathBuf {
        self.root.join("sites/alpha/receiver.toml")
    }
}

/// Runs `slony-receiver ARGS` with `env`, and echoes what it printed (shown when the
/// test fails).
fn receiver(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_receiver_args(&args, env.iter().map(|(k, v)| (*k, v.as_os_str())))
}

/// Every file under `dir` and its content, but `except`.
fn tree(dir: &Path, except: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p != except {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(p, bytes);
            }
        }
    }
    out
}

async fn at_counter(pg: &PgServer) -> i64 {
    pg.connect(DBNAME)
        .await
        .query_one("SELECT at_counter FROM \"_jsoc\".sl_archive_tracking", &[])
        .await
        .expect("reading at_counter")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_writes_the_toml_prints_the_replacement_and_compares_the_counters() {
    let pg = PgServer::start();
    pg.create_db(DBNAME).await;
    let alpha = Alpha::new("legacy-migrate", pg.port(), 22, "slony");
    let cfg = alpha.cfg.to_str().unwrap();
    let init = receiver(&["init", "--legacy-config", cfg, "--counter", "5"], &[]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert_eq!(at_counter(&pg).await, 5);

    // No counter file (a client since 2017): nothing to compare, exit 0.
    let before = tree(alpha.root.path(), &alpha.toml());
    let run = receiver(&["migrate", "--legacy-config", cfg], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let toml = alpha.toml();
    assert!(run.stdout.starts_with(&format!("Wrote {}", toml.display())));
    assert!(
        run.stdout
            .contains("OK: there is no counter file to compare"),
        "{}",
        run.stdout
    );
    // It wrote the TOML and nothing else.
    assert_eq!(tree(alpha.root.path(), &toml), before);
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains(&format!(
        "# from repclient.cfg line {SERVER_LINE}: kRSServer=127.0.0.1\nhost = \"127.0.0.1\"\n"
    )));
    assert!(text.contains("dbname = \"replica_alpha\""), "{text}");
    assert!(
        text.contains("#   line 29: kRSPerl=/usr/bin/perl\n"),
        "{text}"
    );
    // The cron line and the units that replace the old line.
    let bin = bin_path("slony-receiver");
    let cron = format!(
        "* * * * *   {} pull --config {} --once 2>>",
        bin.display(),
        toml.display()
    );
    assert!(run.stdout.contains(&cron), "{}", run.stdout);
    assert!(run.stdout.contains(&format!(
        "{}/sites/alpha/work/get_slony_logs.pl {cfg}",
        alpha.root.path().display()
    )));
    for unit in [
        "slony-receiver.service",
        "slony-receiver-pull.timer",
        "slony-receiver-housekeeping.timer",
    ] {
        assert!(run.stdout.contains(unit), "{unit}: {}", run.stdout);
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../etc/systemd")
                .join(unit)
                .is_file(),
            "{unit} is printed but not shipped"
        );
    }
    // The TOML loads and reaches the same replica.
    let again = receiver(
        &["init", "--config", toml.to_str().unwrap(), "--counter", "5"],
        &[],
    );
    assert_eq!(again.code, 2, "init again: the schema exists");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    // The old client's file agrees with the database.
    std::fs::create_dir_all(alpha.counter_file().parent().unwrap()).unwrap();
    std::fs::write(alpha.counter_file(), "5").unwrap();
    let run = receiver(&["migrate", "--legacy-config", cfg], &[]);
    assert_eq!(run.code, 2, "an existing output is not overwritten");
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&toml).unwrap(), text);
    // Never over the legacy file itself, even with --force.
    let run = receiver(
        &[
            "migrate",
            "--legacy-config",
            cfg,
            "--output",
            cfg,
            "--force",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("the legacy file itself"),
        "{}",
        run.stderr
    );
    assert!(std::fs::read_to_string(&alpha.cfg)
        .unwrap()
        .contains("kRSPerl="));
    let run = receiver(&["migrate", "--legacy-config", cfg, "--force"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("OK: they agree"), "{}", run.stdout);
    assert!(
        run.stdout.contains("replica's at_counter:  archive 5\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("slony_counter.txt:  archive 5\n"),
        "{}",
        run.stdout
    );

    // A file ahead of the database: reported, non-zero, the TOML written anyway.
    std::fs::write(alpha.counter_file(), "9\n").unwrap();
    let elsewhere = alpha.root.join("elsewhere.toml");
    let run = receiver(
        &[
            "migrate",
            "--legacy-config",
            cfg,
            "--output",
            elsewhere.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 23, "{}", run.stderr);
    assert!(run.stdout.contains("DISAGREE"), "{}", run.stdout);
    assert!(
        run.stdout.contains("the file is 4 archive(s) ahead"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("The database is the truth"));
    assert!(
        run.stderr.contains("the counters disagree"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), text);
    // The database ahead of the file.
    std::fs::write(alpha.counter_file(), "2\n").unwrap();
    let run = receiver(&["migrate", "--legacy-config", cfg, "--force"], &[]);
    assert_eq!(run.code, 23, "{}", run.stderr);
    assert!(run.stdout.contains("database is 3 archive(s) ahead"));
    // migrate changed neither side.
    assert_eq!(at_counter(&pg).await, 5);
    assert_eq!(
        std::fs::read_to_string(alpha.counter_file()).unwrap(),
        "2\n"
    );

    // The database unreachable: said so, non-zero, the TOML still written.
    let down = alpha.root.join("sites/alpha/down.cfg");
    let port_line = format!("pg_port={}", pg.port());
    std::fs::write(
        &down,
        std::fs::read_to_string(&alpha.cfg)
            .unwrap()
            .replace(&port_line, "pg_port=1"),
    )
    .unwrap();
    let out = alpha.root.join("down.toml");
    let run = receiver(
        &[
            "migrate",
            "--legacy-config",
            down.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stdout.contains("NOT COMPARED"), "{}", run.stdout);
    assert!(out.is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_legacy_config_is_refused_by_every_command_and_never_run() {
    let pg = PgServer::start();
    pg.create_db(DBNAME).await;
    let alpha = Alpha::new("legacy-hostile", pg.port(), 22, "slony");
    let marker = alpha.root.join("payload-ran");
    let list = alpha.root.join("subscribe_list.cfg");
    std::fs::write(&list, "s1.t1 subscribe\n").unwrap();
    let good = std::fs::read_to_string(&alpha.cfg).unwrap();
    assert!(good.contains("\nkRSServer=127.0.0.1\n"));
    for payload in [
        format!("kRSServer=$(touch {})", marker.display()),
        format!("kRSServer=`touch {}`", marker.display()),
        format!("kRSServer=\"127.0.0.1$(touch {})\"", marker.display()),
    ] {
        let hostile = alpha.root.join("sites/alpha/hostile.cfg");
        std::fs::write(&hostile, good.replace("kRSServer=127.0.0.1", &payload)).unwrap();
        // The payload is live: bash, sourcing the file as the original tools did, runs it.
        let sourced = Command::new("bash")
            .arg("-c")
            .arg(". \"$1\"")
            .arg("bash")
            .arg(&hostile)
            .output()
            .expect("running bash");
        assert!(sourced.status.success(), "{sourced:?}");
        assert!(marker.exists(), "{payload}: bash did not run the payload");
        std::fs::remove_file(&marker).unwrap();

        let file = hostile.to_str().unwrap();
        let reference = format!(
            "host=127.0.0.1 port={} user=postgres dbname={DBNAME}",
            pg.port()
        );
        let commands: Vec<Vec<&str>> = vec![
            vec!["pull", "--once"],
            vec!["status"],
            vec!["housekeeping"],
            vec!["subscribe-series", "--list", list.to_str().unwrap()],
            vec!["check"],
            vec!["guard", "on"],
            vec!["verify", "--reference", &reference],
            vec!["promote"],
            vec!["init"],
            vec!["migrate"],
        ];
        for command in commands {
            let mut args = vec![command[0], "--legacy-config", file];
            args.extend(&command[1..]);
            let run = receiver(&args, &[]);
            let said = format!("{}{}", run.stdout, run.stderr);
            assert_eq!(run.code, 2, "{command:?}: {said}");
            assert!(
                said.contains(&format!(
                    "line {SERVER_LINE}: kRSServer: command substitution"
                )),
                "{command:?}: {said}"
            );
            assert!(said.contains("hostile.cfg"), "{command:?}: {said}");
            assert!(!marker.exists(), "{command:?} ran the payload");
        }
    }
    // Nothing was done with it: no output, no local directory, no tracking schema.
    assert!(!alpha.toml().exists());
    assert!(!alpha.root.join("sites/alpha/work/slony_logs").exists());
    let schema: Option<String> = pg
        .connect(DBNAME)
        .await
        .query_one("SELECT to_regnamespace('_jsoc')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, None);
}

/// The (name, ok) of each check of a `check --json` run.
fn verdicts(run: &Run) -> Vec<(String, bool)> {
    let v: Value = run.json();
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_check_work_on_the_filled_in_template() {
    let pg = PgServer::start();
    pg.create_db(DBNAME).await;
    let scratch = TestDir::new("legacy-status-ssh");
    let ssh = SshServer::start(scratch.path());
    let alpha = Alpha::new("legacy-status", pg.port(), ssh.port(), ssh.user());
    // The original tools logged in through the agent and ~/.ssh/known_hosts.
    let home = alpha.root.mkdir("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::copy(ssh.known_hosts(), home.join(".ssh/known_hosts")).unwrap();
    let agent = SshAgent::start(alpha.root.path(), ssh.client_key());
    let env: [(&str, &Path); 2] = [("HOME", &home), ("SSH_AUTH_SOCK", agent.socket())];
    let cfg = alpha.cfg.to_str().unwrap();
    assert_eq!(
        receiver(&["init", "--legacy-config", cfg, "--counter", "3"], &env).code,
        0
    );

    let status = receiver(&["status", "--legacy-config", cfg, "--json"], &env);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let v = status.json();
    assert_eq!(v["node"], "alpha");
    assert_eq!(v["cluster"], "jsoc");
    assert_eq!(v["counter"], 3);
    assert_eq!(v["provider_error"], Value::Null);
    assert_eq!(v["database_error"], Value::Null);
    assert_eq!(
        v["die_file"],
        format!(
            "{}/sites/alpha/work/get_slony_logs.alpha.die",
            alpha.root.path().display()
        )
    );

    let check = receiver(&["check", "--legacy-config", cfg, "--json"], &env);
    let legacy_verdicts = verdicts(&check);
    // Every check passes but, perhaps, mail: email_list names recipients, and the
    // original tools' mail went through the local MTA, which a test machine may lack.
    for (name, ok) in &legacy_verdicts {
        assert!(*ok || name == "mail", "{name} failed: {}", check.stdout);
    }
    let mail_ok = legacy_verdicts.iter().all(|(_, ok)| *ok);
    assert_eq!(check.code, if mail_ok { 0 } else { 20 }, "{}", check.stdout);
    let v = check.json();
    let detail = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["detail"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert!(
        detail("tracking schema").contains("at archive 3"),
        "{}",
        check.stdout
    );
    assert!(
        detail("ssh login").contains(&format!("{}@", ssh.user()))
            && detail("ssh login").contains("with the ssh-agent"),
        "{}",
        check.stdout
    );
    assert!(
        detail("ssh host key").contains(&home.join(".ssh/known_hosts").display().to_string()),
        "{}",
        check.stdout
    );

    // The TOML migrate writes passes the same checks the same way.
    let migrate = receiver(&["migrate", "--legacy-config", cfg], &env);
    assert_eq!(migrate.code, 0, "{}", migrate.stderr);
    let toml = alpha.toml();
    let check_toml = receiver(
        &["check", "--config", toml.to_str().unwrap(), "--json"],
        &env,
    );
    assert_eq!(verdicts(&check_toml), legacy_verdicts);
    assert_eq!(check_toml.code, check.code);
    let status_toml = receiver(
        &["status", "--config", toml.to_str().unwrap(), "--json"],
        &env,
    );
    assert_eq!(status_toml.code, 0);
    let (a, b) = (status.json(), status_toml.json());
    for key in ["node", "cluster", "counter", "die_file", "max_lag_archives"] {
        assert_eq!(a[key], b[key], "{key}");
    }

    // Without the agent the legacy config cannot log in: it is what it uses.
    let no_agent = receiver(
        &["status", "--legacy-config", cfg, "--json"],
        &[
            ("HOME", &home),
            ("SSH_AUTH_SOCK", &alpha.root.join("no-agent")),
        ],
    );
    assert_eq!(no_agent.code, 3, "{}", no_agent.stderr);

    // gamma's list in the original format: read, its flag noted and not sent.
    let list = alpha.root.join("subscribe_list.cfg");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/legacy/sites/gamma/subscribe_list.cfg"),
        &list,
    )
    .unwrap();
    let sub = receiver(
        &[
            "subscribe-series",
            "--legacy-config",
            cfg,
            "--list",
            list.to_str().unwrap(),
            "--attempts",
            "1",
            "--interval-secs",
            "0",
        ],
        &env,
    );
    assert!(
        sub.stderr
            .contains("line 5: jmdtrigger (s1.t1) is not supported"),
        "{}",
        sub.stderr
    );
    assert!(
        sub.stderr.contains("S1.T1 is read as s1.t1"),
        "{}",
        sub.stderr
    );
}
