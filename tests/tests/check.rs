//! `slony-receiver check` and `slony-manager check` end to end: every check passes on a
//! healthy site and provider (real PostgreSQL, sshd, SMTP), and each fault made for real
//! (another host key, a missing directory, a dropped schema, a guard removed, a bad mail
//! address, a database stopped, an old archive, a site behind) fails its own check by
//! name, in text, JSON and Nagios form.

use crate::support::manager::ManagerToml;
use crate::support::pg::PgServer;
use crate::support::receiver::{database_toml, Run};
use crate::support::site::{ConfigChange, Options, Site, CLUSTER, NODE};
use crate::support::{bin_path, free_port, slony_set_sql, workload, TestDir};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The receiver's checks, in the order printed.
const RECEIVER_CHECKS: [&str; 11] = [
    "config",
    "ssh host key",
    "ssh login",
    "remote site directory",
    "replica database",
    "tracking schema",
    "privileges",
    "local directories",
    "lock",
    "guard",
    "mail",
];

/// The exit code of a failed check (`exit::UNHEALTHY`).
const UNHEALTHY: i32 = 20;

/// The line of check `name` in a text report.
fn line<'a>(run: &'a Run, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    run.stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{}", run.stdout))
}

/// The names of the checks a text report says FAILED, in order.
fn failed(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|l| l.contains(": FAILED"))
        .map(|l| l.split(": ").next().unwrap().to_string())
        .collect()
}

/// The names of the checks in a text report, in order.
fn names(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .map(|l| l.split(": ").next().unwrap().to_string())
        .collect()
}

/// The check `name` of a `--json` report.
fn json_check<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_check_passes_on_a_healthy_site_in_every_form_and_mails_a_test_alert() {
    let site = Site::start(
        "check-ok",
        Options {
            archives: 3,
            mail: true,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 3);
    assert_eq!(site.pull().code, 0);
    assert_eq!(site.run(&["guard", "on"]).code, 0);
    // The pull's recovery-free success sent no mail; the sink starts empty.
    assert!(site.smtp().messages().is_empty());

    let run = site.run(&["check"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(names(&run), RECEIVER_CHECKS);
    assert!(failed(&run).is_empty(), "{}", run.stdout);
    for name in RECEIVER_CHECKS {
        assert!(line(&run, name).starts_with(&format!("{name}: OK")));
    }
    assert!(line(&run, "tracking schema").contains("at archive 3"));
    assert!(line(&run, "remote site directory").contains(": 3 archives and batches"));
    assert!(line(&run, "ssh host key").contains(&site.ssh.known_hosts().display().to_string()));
    assert!(line(&run, "guard").contains("all 2 replicated tables refuse local writes"));
    assert!(line(&run, "privileges").contains("postgres is a superuser"));
    assert!(line(&run, "local directories").contains("MB free"));
    assert!(line(&run, "lock").contains("free"));
    assert!(line(&run, "mail").contains("1 recipient(s); SMTP server 127.0.0.1:"));

    let json = site.run(&["check", "--json"]);
    assert_eq!(json.code, 0);
    let v = json.json();
    assert_eq!(v["program"], "slony-receiver");
    assert_eq!(v["ok"], true);
    let checks = v["checks"].as_array().unwrap();
    let json_names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(json_names, RECEIVER_CHECKS);
    for c in checks {
        assert_eq!(c["ok"], true, "{c}");
        assert_eq!(c["hint"], Value::Null, "{c}");
    }
    // The same details as the text.
    let tracking = json_check(&v, "tracking schema")["detail"]
        .as_str()
        .unwrap();
    assert!(line(&run, "tracking schema").contains(tracking));

    let nagios = site.run(&["check", "--nagios"]);
    assert_eq!(nagios.code, 0);
    assert_eq!(nagios.stdout, "SLONY-RECEIVER OK - 11 checks passed\n");

    // A lock held by a live process passes: here the test itself holds it.
    let held = slony_shared::lock::RunLock::try_acquire(&site.lock_file()).unwrap();
    let run = site.run(&["check"]);
    assert_eq!(run.code, 0);
    assert!(
        line(&run, "lock").starts_with(&format!(
            "lock: OK (held by pid {}, which is running",
            std::process::id()
        )),
        "{}",
        run.stdout
    );
    drop(held);
    // A lock file left by a process that is gone blocks nothing, and passes.
    std::fs::write(site.lock_file(), "999999999\n").unwrap();
    let run = site.run(&["check"]);
    assert_eq!(run.code, 0);
    assert!(
        line(&run, "lock").starts_with("lock: OK (free: the file names pid 999999999, not running"),
        "{}",
        run.stdout
    );

    // --mail: a test alert through the alerter, which the SMTP server receives.
    let run = site.run(&["check", "--mail"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(line(&run, "test alert")
        .starts_with("test alert: OK (sent to ops@example.org via 127.0.0.1:"));
    let mails = site.mails(1);
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, vec!["ops@example.org".to_string()]);
    assert!(
        mails[0]
            .subject
            .starts_with("[slony-receiver] TEST: alert mail from cluster lab, site site1"),
        "{}",
        mails[0].subject
    );
    assert!(mails[0].body.contains("slony-receiver check --mail"));
    // Nothing of the alert state was touched: a test is not a failure.
    assert!(!site.site_dir().join("alert_state.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_check_names_each_fault() {
    let site = Site::start(
        "check-faults",
        Options {
            archives: 2,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 2);
    assert_eq!(site.pull().code, 0);
    // Mail not configured passes; a guard never installed fails.
    let run = site.run(&["check"]);
    assert_eq!(run.code, UNHEALTHY);
    assert_eq!(failed(&run), ["guard"]);
    assert_eq!(
        line(&run, "mail"),
        "mail: OK (not configured: failures are only logged)"
    );
    assert!(
        line(&run, "guard").contains("2 of 2 replicated tables are not guarded"),
        "{}",
        run.stdout
    );
    assert!(line(&run, "guard").contains("run `slony-receiver guard on --config"));

    // Three faults at once, each on its own line; the others still pass.
    let moved = site.provider.with_extension("away");
    std::fs::rename(&site.provider, &moved).unwrap();
    let closed = free_port();
    site.write_config(ConfigChange {
        extra: &format!(
            "[alert]\nrecipients = [\"ops@\"]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {closed}\n"
        ),
        ..ConfigChange::default()
    });
    let run = site.run(&["check"]);
    assert_eq!(run.code, UNHEALTHY);
    assert_eq!(failed(&run), ["remote site directory", "guard", "mail"]);
    assert!(line(&run, "remote site directory").contains("site_logs/site1"));
    assert!(
        line(&run, "mail").contains("invalid mail address \"ops@\""),
        "{}",
        run.stdout
    );
    assert!(line(&run, "ssh login").starts_with("ssh login: OK"));
    let v = site.run(&["check", "--json"]).json();
    assert_eq!(v["ok"], false);
    assert_eq!(json_check(&v, "mail")["ok"], false);
    assert!(json_check(&v, "mail")["hint"]
        .as_str()
        .unwrap()
        .contains("[alert]"));
    assert_eq!(json_check(&v, "ssh login")["ok"], true);
    let nagios = site.run(&["check", "--nagios"]);
    assert_eq!(nagios.code, 2);
    assert_eq!(
        nagios.stdout,
        "SLONY-RECEIVER CRITICAL - 3 of 11 checks failed: remote site directory, guard, mail\n"
    );

    // Another host key: the login and the listing cannot be tried. The tracking schema
    // dropped: the guard, which needs it, is skipped.
    std::fs::rename(&moved, &site.provider).unwrap();
    site.write_config(ConfigChange {
        known_hosts: Some(&site.ssh.wrong_known_hosts()),
        ..ConfigChange::default()
    });
    site.pg
        .connect("replica")
        .await
        .batch_execute(&format!("DROP SCHEMA \"_{CLUSTER}\" CASCADE"))
        .await
        .unwrap();
    let run = site.run(&["check"]);
    assert_eq!(run.code, UNHEALTHY);
    assert_eq!(
        failed(&run),
        [
            "ssh host key",
            "ssh login",
            "remote site directory",
            "tracking schema",
            "guard"
        ]
    );
    assert!(
        line(&run, "ssh host key").contains("does NOT match"),
        "{}",
        run.stdout
    );
    assert_eq!(
        line(&run, "ssh login"),
        "ssh login: FAILED (skipped: ssh host key failed)"
    );
    assert!(line(&run, "tracking schema").contains("not initialised for log shipping"));
    assert_eq!(
        line(&run, "guard"),
        "guard: FAILED (skipped: tracking schema failed)"
    );
    assert!(line(&run, "replica database").starts_with("replica database: OK"));
    let nagios = site.run(&["check", "--nagios"]);
    assert_eq!(nagios.code, 2);
    assert_eq!(nagios.stdout.lines().count(), 1);
    assert!(nagios
        .stdout
        .starts_with("SLONY-RECEIVER CRITICAL - 5 of 11 checks failed: ssh host key, ssh login"));

    // An ordinary role that may not SET session_replication_role fails the privileges
    // check, as pull would refuse it; granted that, it passes.
    site.write_config(ConfigChange::default());
    let admin = site.pg.connect("replica").await;
    admin
        .batch_execute("CREATE ROLE plain LOGIN")
        .await
        .unwrap();
    site.write_config(ConfigChange {
        database: Some(&database_toml(site.pg.port(), "plain", "replica")),
        ..ConfigChange::default()
    });
    let run = site.run(&["check"]);
    assert!(
        line(&run, "privileges")
            .contains("the database user plain may not SET session_replication_role"),
        "{}",
        run.stdout
    );
    admin
        .batch_execute("GRANT SET ON PARAMETER session_replication_role TO plain")
        .await
        .unwrap();
    let run = site.run(&["check"]);
    assert_eq!(
        line(&run, "privileges"),
        "privileges: OK (plain may SET session_replication_role)"
    );

    // A provider port that takes the connection but never speaks SSH: the check ends
    // within the configured timeout (remote.connect_timeout_secs = 10) and says so.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    site.write_config(ConfigChange {
        ssh_port: Some(silent.local_addr().unwrap().port()),
        ..ConfigChange::default()
    });
    let started = std::time::Instant::now();
    let run = site.run(&["check"]);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        &failed(&run)[..3],
        ["ssh host key", "ssh login", "remote site directory"]
    );
    assert!(
        line(&run, "ssh host key").contains("cannot connect to 127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(line(&run, "replica database").starts_with("replica database: OK"));
    drop(silent);

    // A database that is down: its four checks fail, the rest run.
    site.write_config(ConfigChange {
        pg_port: Some(free_port()),
        ..ConfigChange::default()
    });
    let run = site.run(&["check"]);
    assert_eq!(
        failed(&run),
        ["replica database", "tracking schema", "privileges", "guard"]
    );
    assert!(line(&run, "replica database").contains("cannot connect to the replica database"));

    // A configuration that does not load: one line, exit 2.
    std::fs::write(&site.config, "cluster = \"lab\"\nno_such_key = 1\n").unwrap();
    let run = site.run(&["check"]);
    assert_eq!(run.code, 2);
    assert_eq!(names(&run), ["config"]);
    assert!(line(&run, "config").starts_with("config: FAILED ("));
    let nagios = site.run(&["check", "--nagios"]);
    assert_eq!(nagios.code, 2);
    assert_eq!(
        nagios.stdout,
        "SLONY-RECEIVER CRITICAL - 1 of 1 checks failed: config\n"
    );
    let v = site.run(&["check", "--json"]).json();
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"].as_array().unwrap().len(), 1);
    assert_eq!(json_check(&v, "config")["ok"], false);
    assert!(json_check(&v, "config")["detail"]
        .as_str()
        .unwrap()
        .contains("no_such_key"));
}

/// The manager's checks of a provider with one site, in the order printed.
const MANAGER_CHECKS: [&str; 7] = [
    "config",
    "provider database",
    "archive_dir",
    "trigger directory",
    "registry",
    "site site1 directory",
    "site site1 lag",
];

/// A provider: slon's archive directory, one site `site1` subscribed to the workload's
/// tables and cut up to some archive, and the provider database with the Slony catalog.
struct Provider {
    dir: TestDir,
    config: PathBuf,
    archive: PathBuf,
    pg: PgServer,
    stream: Vec<Vec<workload::Change>>,
}

impl Provider {
    async fn start(name: &str) -> Provider {
        let dir = TestDir::new(name);
        let archive = dir.mkdir("archive");
        let subscribers = dir.mkdir("subscribers");
        dir.mkdir("site_logs");
        // The site's exchange directory as `slony-manager run` makes it: the manager's,
        // in the site's group (the test's own account plays both), setgid and sticky.
        let exchange = dir.mkdir("triggers").join(NODE);
        std::fs::create_dir(&exchange).unwrap();
        std::fs::set_permissions(&exchange, std::fs::Permissions::from_mode(0o3770)).unwrap();
        let site = subscribers.join(NODE);
        std::fs::create_dir(&site).unwrap();
        std::fs::write(site.join("tables"), "s1.t1\ns1.t2\n").unwrap();
        std::fs::write(site.join("sequences"), "").unwrap();
        std::fs::write(site.join("since"), "1\n").unwrap();
        let pg = PgServer::start();
        pg.create_db("provider").await;
        pg.connect("provider")
            .await
            .batch_execute(&format!(
                "{}CREATE SCHEMA \"_{CLUSTER}\";\
                 CREATE TABLE \"_{CLUSTER}\".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);\
                 INSERT INTO \"_{CLUSTER}\".sl_archive_counter VALUES (0, now());\n{}",
                workload::SCHEMA_SQL,
                slony_set_sql(CLUSTER, &["s1.t1", "s1.t2"])
            ))
            .await
            .unwrap();
        let config = dir.join("manager.toml");
        ManagerToml::under(dir.path(), CLUSTER, pg.port(), "provider")
            .archive_dir(&archive)
            .sites(crate::support::shared_sites_toml(&[NODE]))
            .database_key("connect_timeout_secs", 5)
            .write(&config);
        Provider {
            stream: workload::generate(20, 5),
            dir,
            config,
            archive,
            pg,
        }
    }

    /// slon writes archives `from..=to`; the manager cuts them for the site.
    fn publish_and_cut(&self, from: u64, to: u64) {
        workload::write_archives(&self.archive, CLUSTER, &self.stream, from, to, |_| {
            workload::Format::Copy22
        });
        let out = Command::new(bin_path("slony-manager"))
            .args(["cut", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The site acknowledges having applied `counter`.
    fn acknowledge(&self, counter: u64) {
        std::fs::write(
            self.dir.join("triggers").join(NODE).join("applied_counter"),
            format!("{counter}\n"),
        )
        .unwrap();
    }

    fn check(&self, args: &[&str]) -> Run {
        let out = Command::new(bin_path("slony-manager"))
            .arg("check")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "--- slony-manager check {args:?} exited {}\n--- stdout:\n{}--- stderr:\n{}",
            run.code, run.stdout, run.stderr
        );
        run
    }
}

/// Sets the modification time of every file in `dir` to `age` ago.
fn age_files(dir: &Path, age: Duration) {
    let then = SystemTime::now() - age;
    for e in std::fs::read_dir(dir).unwrap() {
        let f = std::fs::File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap();
        f.set_modified(then).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_check_passes_on_a_healthy_provider_and_names_each_fault() {
    let mut p = Provider::start("check-manager").await;
    p.publish_and_cut(1, 5);
    p.acknowledge(5);

    let run = p.check(&[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(names(&run), MANAGER_CHECKS);
    assert!(failed(&run).is_empty());
    assert!(
        line(&run, "provider database").contains("\"_lab\" present"),
        "{}",
        run.stdout
    );
    assert!(
        line(&run, "archive_dir").contains("newest archive 5"),
        "{}",
        run.stdout
    );
    assert!(
        line(&run, "site site1 lag").contains("acknowledged 5 of 5"),
        "{}",
        run.stdout
    );
    let nagios = p.check(&["--nagios"]);
    assert_eq!(
        (nagios.code, nagios.stdout.as_str()),
        (0, "SLONY-MANAGER OK - 7 checks passed\n")
    );
    let v = p.check(&["--json"]).json();
    assert_eq!(v["program"], "slony-manager");
    assert_eq!(v["ok"], true);

    // The site is 15 archives behind, over a threshold of 10; slon's newest archive is
    // two hours old, over the default of 15 minutes.
    p.publish_and_cut(6, 20);
    age_files(&p.archive, Duration::from_secs(7200));
    let run = p.check(&["--max-lag-archives", "10"]);
    assert_eq!(run.code, 1);
    assert_eq!(failed(&run), ["archive_dir", "site site1 lag"]);
    assert!(
        line(&run, "site site1 lag")
            .contains("15 archives behind (acknowledged 5 of 20), more than 10"),
        "{}",
        run.stdout
    );
    assert!(
        line(&run, "archive_dir").contains("newest archive 20 was written 2h"),
        "{}",
        run.stdout
    );
    // Within a larger threshold the lag passes; the archive age stays failed.
    let run = p.check(&[
        "--max-lag-archives",
        "100",
        "--max-archive-age-secs",
        "10800",
    ]);
    assert_eq!(run.code, 0, "{}", run.stdout);

    // The site's directory gone; the database stopped.
    std::fs::rename(
        p.dir.join("site_logs").join(NODE),
        p.dir.join("site_logs.away"),
    )
    .unwrap();
    p.pg.stop();
    let run = p.check(&["--max-archive-age-secs", "10800"]);
    assert_eq!(run.code, 1);
    assert_eq!(failed(&run), ["provider database", "site site1 directory"]);
    assert!(
        line(&run, "provider database").contains("cannot connect"),
        "{}",
        run.stdout
    );
    assert!(
        line(&run, "site site1 directory").contains("does not exist"),
        "{}",
        run.stdout
    );
    let nagios = p.check(&["--nagios", "--max-archive-age-secs", "10800"]);
    assert_eq!(nagios.code, 2);
    assert_eq!(
        nagios.stdout,
        "SLONY-MANAGER CRITICAL - 2 of 7 checks failed: provider database, site site1 directory\n"
    );

    // The database back, but without the Slony catalog.
    p.pg.start_again();
    p.pg.connect("provider")
        .await
        .batch_execute(&format!("DROP SCHEMA \"_{CLUSTER}\" CASCADE"))
        .await
        .unwrap();
    let run = p.check(&["--max-archive-age-secs", "10800"]);
    assert_eq!(failed(&run), ["provider database", "site site1 directory"]);
    assert!(
        line(&run, "provider database").contains("no \"_lab\".sl_archive_counter"),
        "{}",
        run.stdout
    );
}
