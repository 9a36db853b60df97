//! `slony-receiver pull` end to end: a real PostgreSQL replica, a real sshd serving the
//! provider directory, a real SMTP server catching the alerts.

use crate::support::bin_path;
use crate::support::receiver::Run;
use crate::support::site::{files_in, ConfigChange, Options, Site, CLUSTER, NODE};
use crate::support::workload::{self, Format};
use std::process::Command;
use std::time::Duration;

/// A site whose alerts go to its mail sink, for a stream of `archives` archives.
async fn new_site(name: &str, archives: u64) -> Site {
    let options = Options {
        archives,
        seed: 7,
        mail: true,
        extra: "[pull]\nfetch_ahead = 8\nvacuum_every = 50\n".into(),
        ..Options::default()
    };
    Site::start(name, options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_singles_and_batches_in_both_formats() {
    let site = new_site("pull-mixed", 260).await;
    // Start with 30 singles, then the provider packs 1..=50 and 51..=100 into batches.
    site.publish(1, 30);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 30);
    assert_eq!(site.counter_file(), Some(30));

    for f in files_in(&site.provider) {
        std::fs::remove_file(site.provider.join(f)).unwrap();
    }
    site.publish_batch(1, 50, Format::Copy22);
    // The second batch is named as the original archivelogs.pl named them.
    let batch = site.publish_batch(51, 100, Format::Statements);
    std::fs::rename(&batch, site.provider.join("slogs_51-100.tar.gz")).unwrap();
    workload::write_archives(&site.provider, CLUSTER, &site.stream, 101, 260, |c| {
        if c % 3 == 0 {
            Format::Statements
        } else {
            Format::Copy22
        }
    });
    // Files the receiver must ignore: one still being written, one unrelated.
    std::fs::write(
        site.provider
            .join("slony1_log_2_00000000000000000261.sql.tmp"),
        "partial",
    )
    .unwrap();
    std::fs::write(site.provider.join("README"), "not an archive").unwrap();

    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 260);
    assert_eq!(site.counter_file(), Some(260));
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(260).await
    );
    let applied = files_in(&site.site_dir().join("applied"));
    assert_eq!(
        applied.len(),
        260,
        "every applied archive is kept for housekeeping"
    );
    assert!(files_in(&site.site_dir().join("incoming")).is_empty());

    // Nothing new: a second run applies nothing and changes nothing.
    let before = site.replica_fingerprint().await;
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("up to date"), "{}", run.stderr);
    assert_eq!(site.counter().await, 260);
    assert_eq!(site.replica_fingerprint().await, before);
    assert!(
        site.smtp().messages().is_empty(),
        "no mail when all is well"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_archive_is_fetched_again_never_applied() {
    let site = new_site("pull-truncated", 12).await;
    site.publish(1, 12);
    let victim = site.provider.join(workload::archive_name(6));
    let whole = std::fs::read(&victim).unwrap();
    let cut = whole.windows(3).position(|w| w == b"\\.\n").unwrap() - 5;
    std::fs::write(&victim, &whole[..cut]).unwrap();

    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("incomplete archive"), "{}", run.stderr);
    assert_eq!(
        site.counter().await,
        5,
        "archives before the cut one are applied"
    );
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(5).await
    );
    assert!(
        !site
            .site_dir()
            .join("incoming")
            .join(workload::archive_name(6))
            .exists(),
        "the partial copy is deleted"
    );
    let mails = site.mails(1);
    assert!(mails[0].subject.contains("FAILED"), "{}", mails[0].subject);
    assert!(
        mails[0].body.contains(&workload::archive_name(6)),
        "{}",
        mails[0].body
    );

    // The provider's file becomes whole: the next run fetches it again and recovers.
    std::fs::write(&victim, &whole).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 12);
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(12).await
    );
    let mails = site.mails(2);
    assert!(
        mails[1].subject.contains("RECOVERED"),
        "{}",
        mails[1].subject
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_stops_at_the_missing_counter_and_is_mailed_once() {
    let site = new_site("pull-gap", 10).await;
    site.publish(1, 4);
    site.publish(6, 10);
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("archive 5 is missing"),
        "{}",
        run.stderr
    );
    assert_eq!(site.counter().await, 4);
    let mails = site.mails(1);
    assert!(
        mails[0].body.contains("archive 5 is missing"),
        "{}",
        mails[0].body
    );
    assert_eq!(mails[0].to, vec!["ops@example.org".to_string()]);

    // The same failure on the next run is not mailed again.
    let run = site.pull();
    assert_eq!(run.code, 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        site.smtp().messages().len(),
        1,
        "the same failure is mailed once, not on every run"
    );

    site.publish(5, 5);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 10);
    assert!(site.mails(2)[1].subject.contains("RECOVERED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_error_mid_archive_applies_nothing_of_it() {
    let site = new_site("pull-sqlerror", 8).await;
    site.publish_as(1, 8, Format::Statements);
    // Archive 4: valid statements, then one that fails (a duplicate key), then more.
    let path = site.provider.join(workload::archive_name(4));
    let text = std::fs::read_to_string(&path).unwrap();
    let bad = "insert into \"s1\".\"t2\" (\"k\",\"v\") values ('dup','1');\ninsert into \"s1\".\"t2\" (\"k\",\"v\") values ('dup','2');\n";
    let at = text.find("-- EOL").unwrap();
    let text = format!(
        "{}insert into \"s1\".\"t2\" (\"k\",\"v\") values ('before','0');\n{bad}{}",
        &text[..at],
        &text[at..]
    );
    std::fs::write(&path, &text).unwrap();
    let bad_line = text[..text.find("'dup','2'").unwrap()].lines().count() as u64;

    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(&workload::archive_name(4)),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("line {bad_line}")),
        "line {bad_line}: {}",
        run.stderr
    );
    assert!(run.stderr.contains("duplicate key value"), "{}", run.stderr);
    assert_eq!(site.counter().await, 3);
    assert_eq!(site.counter_file(), Some(3));
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(3).await,
        "nothing of archive 4 is applied"
    );
    let c = site.pg.connect("replica").await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM s1.t2 WHERE k IN ('before', 'dup')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let mails = site.mails(1);
    assert!(
        mails[0].body.contains("duplicate key value"),
        "{}",
        mails[0].body
    );
    assert!(
        mails[0].body.contains(&format!("line {bad_line}")),
        "{}",
        mails[0].body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused() {
    let site = new_site("pull-hostkey", 3).await;
    site.publish(1, 3);
    site.write_config(ConfigChange {
        known_hosts: Some(&site.ssh.wrong_known_hosts()),
        ..ConfigChange::default()
    });
    let run = site.pull();
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("does NOT match"), "{}", run.stderr);
    assert_eq!(site.counter().await, 0);
    let mails = site.mails(1);
    assert!(
        mails[0].body.contains("does NOT match"),
        "{}",
        mails[0].body
    );

    // An empty known_hosts: the key is unknown, also refused.
    let empty = site.dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    site.write_config(ConfigChange {
        known_hosts: Some(&empty),
        ..ConfigChange::default()
    });
    let run = site.pull();
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("is not in"), "{}", run.stderr);
    assert_eq!(site.counter().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_reported_and_pull_resumes_after() {
    let mut site = new_site("pull-dbdown", 5).await;
    site.publish(1, 5);
    site.pg.stop();
    let run = site.pull();
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot connect to the replica database"),
        "{}",
        run.stderr
    );
    let mails = site.mails(1);
    assert!(mails[0].subject.contains("FAILED"), "{}", mails[0].subject);
    // Every command that needs the replica says so with the same exit code.
    for args in [&["guard", "check"][..], &["promote"]] {
        let run = site.run(args);
        assert_eq!(run.code, 5, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("cannot connect to the replica database"),
            "{args:?}: {}",
            run.stderr
        );
    }
    site.pg.start_again();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 5);
    assert!(site.mails(2)[1].subject.contains("RECOVERED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_file_and_second_instance() {
    let site = new_site("pull-pause", 4).await;
    site.publish(1, 4);
    let die = site.die_file();
    std::fs::create_dir_all(site.local()).unwrap();
    std::fs::write(&die, "").unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("paused"), "{}", run.stderr);
    assert_eq!(site.counter().await, 0);
    let run = site.run(&["pull", "--once", "--fail-if-paused"]);
    assert_eq!(run.code, 10, "{}", run.stderr);
    std::fs::remove_file(&die).unwrap();

    // Another instance holds the per-cluster lock.
    let lock = slony_shared::lock::RunLock::try_acquire(&site.lock_file()).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert!(run.stderr.contains("already running"), "{}", run.stderr);
    assert_eq!(site.counter().await, 0);
    drop(lock);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 4);
    assert!(
        site.smtp().messages().is_empty(),
        "pauses and a busy lock are not failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_initialised_database_gets_a_clear_error() {
    let site = new_site("pull-noinit", 2).await;
    site.publish(1, 2);
    site.pg
        .connect("replica")
        .await
        .batch_execute(&format!("DROP SCHEMA \"_{CLUSTER}\" CASCADE"))
        .await
        .unwrap();
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("not initialised for log shipping"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("subscribe-series"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_config_with_ssh_agent() {
    let site = new_site("pull-legacy", 6).await;
    site.publish(1, 6);
    // The original tools logged in through the user's ssh-agent and ~/.ssh/known_hosts.
    let home = site.dir.mkdir("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::copy(site.ssh.known_hosts(), home.join(".ssh/known_hosts")).unwrap();
    let agent = crate::support::ssh::SshAgent::start(site.dir.path(), site.ssh.client_key());

    let legacy = site.dir.join("client.cfg");
    std::fs::write(
        &legacy,
        format!(
            "# original client config\nkRSServer=127.0.0.1\nkRSPort={}\nkRSUser={}\nrmt_slony_dir={}\nslony_logs={}\n\
             pg_host=127.0.0.1\npg_port={}\npg_user=postgres\npg_dbname=replica\nslony_cluster={CLUSTER}\nnode={NODE}\n\
             ingestion_path={}\nemail_list=\n",
            site.ssh.port(),
            site.ssh.user(),
            site.provider.parent().unwrap().display(),
            site.local().display(),
            site.pg.port(),
            site.local().display(),
        ),
    )
    .unwrap();
    let out = Command::new(bin_path("slony-receiver"))
        .args([
            "pull",
            "--legacy-config",
            legacy.to_str().unwrap(),
            "--once",
        ])
        .env("HOME", &home)
        .env("SSH_AUTH_SOCK", agent.socket())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(site.counter().await, 6);
    assert_eq!(site.counter_file(), Some(6));
}

/// A rough throughput figure for a backlog (not a benchmark harness; run by hand with
/// `cargo test -p slony-e2e backlog_throughput -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn backlog_throughput() {
    let n: u64 = std::env::var("BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let site = new_site("pull-backlog", n).await;
    let paths = site.publish(1, n);
    if std::env::var_os("BACKLOG_LOCAL").is_some() {
        // Apply only: every archive is already downloaded.
        let incoming = site.site_dir().join("incoming");
        std::fs::create_dir_all(&incoming).unwrap();
        for p in &paths {
            std::fs::copy(p, incoming.join(p.file_name().unwrap())).unwrap();
        }
    }
    let started = std::time::Instant::now();
    let run = site.pull();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(run.code, 0);
    assert_eq!(site.counter().await, n);
    eprintln!(
        "applied {n} archives in {secs:.2} s: {:.0} archives/s",
        n as f64 / secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_prepares_a_replica_at_a_counter_once() {
    let site = new_site("pull-init", 12).await;
    // The site's schema exists already: init refuses and changes nothing.
    let run = site.run(&["init", "--counter", "9"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(site.counter().await, 0);

    site.pg
        .connect("replica")
        .await
        .batch_execute(&format!("DROP SCHEMA \"_{CLUSTER}\" CASCADE"))
        .await
        .unwrap();
    let run = site.run(&["init", "--counter", "9"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 9);
    // The replica's data is the provider's after archive 9: pull continues from 10.
    let replica = site.pg.connect("replica").await;
    workload::apply_expected(&replica, &site.stream, 9).await;
    site.publish(1, 12);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 12);
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(12).await
    );
}

/// A site whose whole stream of 30 archives forms one group once downloaded.
async fn group_site(name: &str) -> Site {
    let site = new_site(name, 30).await;
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        text.replace("vacuum_every = 50", "vacuum_every = 50\ngroup_commit = 30")
            .replace("fetch_ahead = 8", "fetch_ahead = 64"),
    )
    .unwrap();
    site
}

/// Puts the provider's archives `paths` in the site's incoming directory, as if
/// downloaded: every one is there at once, so they form one group.
fn download_all(site: &Site, paths: &[std::path::PathBuf]) {
    let incoming = site.site_dir().join("incoming");
    std::fs::create_dir_all(&incoming).unwrap();
    for p in paths {
        std::fs::copy(p, incoming.join(p.file_name().unwrap())).unwrap();
    }
}

/// The run failed on archive `bad` saying `says`, and the replica stands exactly before
/// it: tables, counter, counter file and applied directory.
async fn assert_stopped_before(site: &Site, run: &Run, bad: u64, says: &str, what: &str) {
    assert_eq!(run.code, 4, "{what}: {}", run.stderr);
    assert!(run.stderr.contains(says), "{what}: {says}: {}", run.stderr);
    assert!(
        run.stderr.contains(&workload::archive_name(bad)),
        "{what}: {}",
        run.stderr
    );
    assert_eq!(site.counter().await, bad - 1, "{what}");
    assert_eq!(site.counter_file(), Some(bad - 1), "{what}");
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(bad - 1).await,
        "{what}"
    );
    assert_eq!(
        files_in(&site.site_dir().join("applied")).len() as u64,
        bad - 1,
        "{what}"
    );
}

/// Group commit keeps exact per-archive semantics: a bad archive in the middle of a group
/// leaves the replica at the archive before it, whichever way it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_stops_exactly_before_a_bad_archive() {
    // (what goes wrong in archive 17, what the error says)
    let cases = [
        // A statement the database refuses: rolled back to the archive's savepoint.
        ("insert into \"s1\".\"t2\" (\"k\",\"v\") values ('x',1);\ninsert into \"s1\".\"t2\" (\"k\",\"v\") values ('x',2);\n", "duplicate key value"),
        // Something refused before any of the archive's statements reached the database.
        ("\\! echo hi\n", "meta-command"),
    ];
    for (i, (bad, says)) in cases.iter().enumerate() {
        let site = group_site(&format!("pull-group-{i}")).await;
        let paths = site.publish_as(1, 30, Format::Statements);
        let victim = &paths[16];
        let body = std::fs::read_to_string(victim).unwrap();
        let at = body.find("-- end of log archiving header\n").unwrap()
            + "-- end of log archiving header\n".len();
        std::fs::write(victim, format!("{}{bad}{}", &body[..at], &body[at..])).unwrap();
        // Every archive is already downloaded, so the whole stream forms one group.
        download_all(&site, &paths);
        let run = site.pull();
        assert_stopped_before(&site, &run, 17, says, says).await;
    }
}

/// The same in Slony-I 2.2's COPY format, where a group goes out without waiting for any
/// answer: a failure in the COPY data, and a failing statement followed, in the same
/// transaction, by the next archive's COPY. Each time the replica stops exactly before
/// the bad archive, with nothing of it applied, and the error names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_in_the_copy_format_stops_exactly_before_a_bad_archive() {
    // (name, how archive 17 is spoiled, what the error says)
    type Spoil = fn(&str) -> String;
    let cases: [(&str, Spoil, &str); 3] = [
        // A data row applied twice: the COPY itself fails, mid-data.
        (
            "copy-row",
            |body| {
                let copy = body.find("FROM STDIN;\n").unwrap() + "FROM STDIN;\n".len();
                let row_end = copy + body[copy..].find('\n').unwrap() + 1;
                let row = &body[copy..row_end];
                assert!(
                    row.contains("\tI\t"),
                    "the first change must be an insert: {row}"
                );
                format!("{}{row}{}", &body[..row_end], &body[row_end..])
            },
            "duplicate key value",
        ),
        // A statement after the COPY fails; the next archive's COPY is already on its way.
        (
            "statement-then-copy",
            |body| {
                let end = body.find("\\.\n").unwrap() + 3;
                format!(
                    "{}select \"_{CLUSTER}\".sequenceSetValue_offline('s1','no_such_seq','5');\n{}",
                    &body[..end],
                    &body[end..]
                )
            },
            "no_such_seq",
        ),
        // The archive is refused by the receiver while it is being sent.
        (
            "refused-mid-group",
            |body| {
                let end = body.find("\\.\n").unwrap() + 3;
                format!("{}\\! echo hi\n{}", &body[..end], &body[end..])
            },
            "meta-command",
        ),
    ];
    for (what, spoil, says) in cases {
        let site = group_site(&format!("pull-group-copy-{what}")).await;
        let paths = site.publish_as(1, 30, Format::Copy22);
        // The first archive from 17 on whose first change is an insert.
        let (victim, counter) = (17..=30u64)
            .map(|c| (&paths[c as usize - 1], c))
            .find(|(p, _)| {
                let body = std::fs::read_to_string(p).unwrap();
                body.find("FROM STDIN;\n").is_some_and(|at| {
                    let rest = &body[at + 12..];
                    rest.split('\n').next().is_some_and(|r| r.contains("\tI\t"))
                })
            })
            .expect("an archive with an insert");
        let body = std::fs::read_to_string(victim).unwrap();
        std::fs::write(victim, spoil(&body)).unwrap();
        // Everything already downloaded forms one group (the meta-command is refused
        // by the fetch's check first: the group then ends before it).
        download_all(&site, &paths);
        let run = site.pull();
        assert_stopped_before(&site, &run, counter, says, what).await;
    }
}

/// Fetching over several sessions never reorders or skips: a file larger than the whole
/// fetch budget goes alone and in its turn, and a cut file far down the plan stops the
/// replica exactly before it, whatever the other sessions had fetched beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fetch_keeps_plan_order_and_stops_exactly_at_a_bad_file() {
    let site = new_site("pull-parallel", 300).await;
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        text.replace(
            "vacuum_every = 50",
            "vacuum_every = 50\nfetch_sessions = 4\nfetch_ahead_mb = 1",
        ),
    )
    .unwrap();
    site.publish(1, 300);
    // Archive 40: 3 MB of comments, three times the budget.
    let big = site.provider.join(workload::archive_name(40));
    let body = std::fs::read_to_string(&big).unwrap();
    let at = body.find("-- end of log archiving header\n").unwrap()
        + "-- end of log archiving header\n".len();
    let padding = format!("-- {}\n", "padding ".repeat(12)).repeat(30_000);
    std::fs::write(&big, format!("{}{padding}{}", &body[..at], &body[at..])).unwrap();
    // Archive 200: cut before its end.
    let victim = site.provider.join(workload::archive_name(200));
    let whole = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &whole[..whole.len() - 40]).unwrap();

    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("fetching over parallel SSH sessions")
            && run.stderr.contains("sessions=4"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&workload::archive_name(200)),
        "{}",
        run.stderr
    );
    assert_eq!(site.counter().await, 199);
    assert_eq!(site.counter_file(), Some(199));
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(199).await
    );
    assert_eq!(files_in(&site.site_dir().join("applied")).len(), 199);

    std::fs::write(&victim, &whole).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 300);
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(300).await
    );
    assert_eq!(files_in(&site.site_dir().join("applied")).len(), 300);
}

/// The pull daemon, killed on drop if a test fails before stopping it.
struct Daemon(std::process::Child);

impl Daemon {
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, sig);
        }
    }

    /// Waits (bounded) for the daemon to exit; returns its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The metrics page; empty while nothing listens yet (a daemon starting up).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut out = String::new();
    if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        conn.read_to_string(&mut out).unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_stops_cleanly_mid_backlog_then_follows_new_archives() {
    let site = new_site("pull-daemon", 1510).await;
    let metrics_port = crate::support::free_port();
    let text = std::fs::read_to_string(&site.config).unwrap();
    let text = text.replace(
        "vacuum_every = 50",
        &format!("vacuum_every = 50\npoll_interval_secs = 1\nmetrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    std::fs::write(&site.config, &text).unwrap();
    site.publish(1, 1500);
    let start = || {
        let log =
            std::fs::File::create(site.dir.join(format!("daemon-{}.log", rand_suffix()))).unwrap();
        Daemon(
            Command::new(bin_path("slony-receiver"))
                .args(["pull", "--config", site.config.to_str().unwrap()])
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };

    // SIGTERM in the middle of the backlog: the daemon ends between archives.
    let mut daemon = start();
    crate::support::wait_until_async(
        Duration::from_secs(60),
        "the daemon to apply some archives",
        || async { site.counter().await >= 20 },
    )
    .await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "clean exit on SIGTERM"
    );
    let at = site.counter().await;
    assert!(at < 1500, "stopped mid-backlog (at {at})");
    assert_eq!(site.counter_file(), Some(at));
    assert_eq!(files_in(&site.site_dir().join("applied")).len() as u64, at);
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(at).await
    );

    // Started again, it catches up, then picks up archives that appear while it runs.
    let mut daemon = start();
    crate::support::wait_until_async(
        Duration::from_secs(120),
        "the daemon to catch up",
        || async { site.counter().await == 1500 },
    )
    .await;
    site.publish(1501, 1505);
    crate::support::wait_until_async(
        Duration::from_secs(30),
        "the new archives to be applied",
        || async { site.counter().await == 1505 },
    )
    .await;
    // The daemon keeps its SSH session between polls; the provider drops it: the next
    // poll connects again, within the same run, without a failure.
    assert!(site.ssh.kill_connections() >= 1, "a session was kept open");
    site.publish(1506, 1510);
    crate::support::wait_until_async(
        Duration::from_secs(30),
        "the archives after the dropped session to be applied",
        || async { site.counter().await == 1510 },
    )
    .await;
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(1510).await
    );
    crate::support::wait_until(
        Duration::from_secs(10),
        "metrics to show counter 1510",
        || scrape(metrics_port).contains("slony_receiver_counter 1510\n"),
    );
    let metrics = scrape(metrics_port);
    assert!(
        metrics.contains("slony_receiver_errors_total 0\n"),
        "{metrics}"
    );

    // SIGHUP with a broken config: refused, the daemon keeps running on the old one.
    std::fs::write(&site.config, "cluster = \"lab\"\nbogus = 1\n").unwrap();
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "still running after a bad reload"
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
    let logs: String = std::fs::read_dir(site.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("configuration NOT reloaded"), "{logs}");
    assert!(logs.contains("shut down cleanly"), "{logs}");

    // A daemon that starts up to date reports the replica's lag after its first run,
    // not "none yet".
    std::fs::write(&site.config, &text).unwrap();
    let mut daemon = start();
    crate::support::wait_until(Duration::from_secs(30), "metrics of the first run", || {
        scrape(metrics_port).contains("slony_receiver_counter 1510\n")
    });
    let metrics = scrape(metrics_port);
    let lag = metrics
        .lines()
        .find_map(|l| l.strip_prefix("slony_receiver_lag_seconds "))
        .unwrap_or_default();
    assert!(lag.parse::<i64>().is_ok_and(|l| l >= 0), "{metrics}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_housekeeping_on_its_schedule() {
    let site = new_site("pull-schedule", 30).await;
    let mut text = std::fs::read_to_string(&site.config).unwrap();
    text = text.replace(
        "vacuum_every = 50",
        "vacuum_every = 50\npoll_interval_secs = 1",
    );
    text.push_str("[housekeeping]\nbatch_size = 10\nschedule = \"*/2 * * * * *\"\n");
    std::fs::write(&site.config, &text).unwrap();
    site.publish(1, 30);
    let mut daemon = Daemon(
        Command::new(bin_path("slony-receiver"))
            .args(["pull", "--config", site.config.to_str().unwrap()])
            .stderr(std::fs::File::create(site.dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let batches = site.site_dir().join("batches");
    crate::support::wait_until(
        Duration::from_secs(60),
        "scheduled housekeeping to pack the applied archives",
        // Only finished batches: one being written is still a temporary file.
        || {
            files_in(&batches)
                .iter()
                .filter(|n| n.ends_with(".tar.gz"))
                .count()
                == 3
        },
    );
    assert_eq!(
        files_in(&batches),
        vec![
            "slony_logs_1-10.tar.gz",
            "slony_logs_11-20.tar.gz",
            "slony_logs_21-30.tar.gz"
        ]
    );
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(site.counter().await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applied_counter_is_acknowledged_and_a_failure_to_is_not_fatal() {
    let site = new_site("pull-ack", 6).await;
    let ack = site.exchange().join("applied_counter");
    site.publish(1, 3);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&ack).unwrap(), "3\n");

    // The provider refuses the write (its temporary name is taken by a directory): the
    // pull applies everything all the same, and says what it could not do.
    std::fs::create_dir(site.exchange().join("applied_counter.tmp")).unwrap();
    site.publish(4, 6);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 6);
    assert!(
        run.stderr.contains("cannot write the acknowledgement"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(&ack).unwrap(), "3\n");
    assert!(
        site.smtp().messages().is_empty(),
        "not a failure of the pull"
    );

    // Once it can, the next run (with nothing new to apply) catches up.
    std::fs::remove_dir(site.exchange().join("applied_counter.tmp")).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&ack).unwrap(), "6\n");
}
