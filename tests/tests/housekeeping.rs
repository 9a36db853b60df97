//! `slony-receiver housekeeping` end to end: a real PostgreSQL replica holds the counter,
//! the applied directory holds thousands of archives, and the binary packs them.
//!
//! Housekeeping never reads an archive's SQL, so the archives here are tiny files with
//! the right names; no SSH or SMTP is needed (the config still names a provider, because
//! the file must parse).

use crate::support::pg::PgServer;
use crate::support::receiver::{run_receiver, Run};
use crate::support::site::tracking_sql;
use crate::support::{free_port, TestDir};
use slony_shared::archive::{ArchiveName, BatchName};
use slony_shared::counter::Counter;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const CLUSTER: &str = "lab";
const NODE: &str = "site1";

/// A site's local directories and config; the database is optional.
struct Site {
    /// Root of everything this test writes (kept on failure).
    dir: TestDir,
    /// The receiver's config file.
    config: PathBuf,
    /// The replica's port (a closed port when the test has no database).
    pg_port: u16,
}

impl Site {
    fn new(dir: TestDir, pg_port: u16) -> Site {
        let site = Site {
            config: dir.join("receiver.toml"),
            dir,
            pg_port,
        };
        std::fs::create_dir_all(site.applied()).unwrap();
        std::fs::create_dir_all(site.incoming()).unwrap();
        site.write_config(5000, "");
        site
    }

    fn write_config(&self, batch_size: u64, retention: &str) {
        let text = format!(
            r#"cluster = "{CLUSTER}"
node = "{NODE}"
[remote]
host = "127.0.0.1"
user = "nobody"
key_file = "no-such-key"
known_hosts = "no-such-known-hosts"
log_dir = "/nonexistent/site_logs"
[local]
log_dir = "{local}"
[database]
host = "127.0.0.1"
port = {pg_port}
user = "postgres"
dbname = "replica"
connect_timeout_secs = 5
[housekeeping]
batch_size = {batch_size}
{retention}
"#,
            local = self.dir.join("local").display(),
            pg_port = self.pg_port,
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn site_dir(&self) -> PathBuf {
        self.dir.join("local").join(NODE)
    }

    fn applied(&self) -> PathBuf {
        self.site_dir().join("applied")
    }

    fn incoming(&self) -> PathBuf {
        self.site_dir().join("incoming")
    }

    fn batches(&self) -> PathBuf {
        self.site_dir().join("batches")
    }

    fn lock_file(&self) -> PathBuf {
        self.dir
            .join("local")
            .join(format!("slony-receiver.{CLUSTER}.lock"))
    }

    /// Writes archives `from..=to` into `dir` (tiny, distinct contents).
    fn write_archives(&self, dir: &Path, from: u64, to: u64) {
        for c in from..=to {
            std::fs::write(dir.join(name(c).to_string()), content(c)).unwrap();
        }
    }

    fn housekeeping(&self) -> Run {
        run_receiver(&self.config, "housekeeping", &[])
    }
}

fn name(c: u64) -> ArchiveName {
    ArchiveName {
        counter: Counter(c),
        node_id: 2,
    }
}

fn content(c: u64) -> String {
    format!("-- archive {c}\n{}\n", "x".repeat((c % 97) as usize))
}

fn batch(from: u64, to: u64) -> String {
    BatchName::new(Counter(from), Counter(to)).to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The counters of the archives in `dir`.
fn counters_in(dir: &Path) -> BTreeSet<u64> {
    files_in(dir)
        .iter()
        .map(|f| ArchiveName::parse(f).unwrap().counter.0)
        .collect()
}

/// Checks a batch's members by name, and the content of every 500th member.
fn check_batch(dir: &Path, from: u64, to: u64) {
    let path = dir.join(batch(from, to));
    let members = slony_shared::batch::list(&path).unwrap();
    assert_eq!(members, (from..=to).map(name).collect::<Vec<_>>());
    let out = tempfile::tempdir().unwrap();
    let got = slony_shared::batch::extract(&path, out.path(), 1 << 20, |c| c.0 % 500 == 0).unwrap();
    assert_eq!(
        got.len() as u64,
        (from..=to).filter(|c| c % 500 == 0).count() as u64
    );
    for (n, p) in got {
        assert_eq!(std::fs::read_to_string(p).unwrap(), content(n.counter.0));
    }
}

async fn set_counter(pg: &PgServer, counter: u64) {
    pg.connect("replica")
        .await
        .batch_execute(&format!(
            "UPDATE \"_{CLUSTER}\".sl_archive_tracking SET at_counter = {counter}"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_12000_applied_archives_and_keeps_unapplied_ones() {
    let pg = PgServer::start();
    pg.create_db("replica").await;
    pg.connect("replica")
        .await
        .batch_execute(&tracking_sql())
        .await
        .unwrap();
    set_counter(&pg, 12_000).await;
    let site = Site::new(TestDir::new("housekeeping"), pg.port());
    // 12,000 applied; 12,001..=12,010 in the applied directory but not applied (the
    // database says 12,000); one more waiting in the incoming directory.
    site.write_archives(&site.applied(), 1, 12_010);
    site.write_archives(&site.incoming(), 12_011, 12_011);

    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("2 batch(es) written (10000 archives packed), 0 batch(es) deleted"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2000 applied archive(s) wait"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("10 archive(s) above counter 12000"),
        "{}",
        run.stdout
    );
    assert_eq!(
        files_in(&site.batches()),
        [batch(1, 5000), batch(5001, 10_000)]
    );
    check_batch(&site.batches(), 1, 5000);
    check_batch(&site.batches(), 5001, 10_000);
    // The incomplete run 10,001..=12,000 and the unapplied archives stay loose.
    assert_eq!(counters_in(&site.applied()), (10_001..=12_010).collect());
    for c in 10_001..=12_010 {
        let p = site.applied().join(name(c).to_string());
        assert_eq!(std::fs::read_to_string(p).unwrap(), content(c));
    }
    assert_eq!(files_in(&site.incoming()), [name(12_011).to_string()]);

    // Again: nothing new to do, nothing changed.
    let before: Vec<(String, u64, SystemTime)> = files_in(&site.batches())
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(site.batches().join(&f)).unwrap();
            (f, m.len(), m.modified().unwrap())
        })
        .collect();
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0 batch(es) written"), "{}", run.stdout);
    let after: Vec<(String, u64, SystemTime)> = files_in(&site.batches())
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(site.batches().join(&f)).unwrap();
            (f, m.len(), m.modified().unwrap())
        })
        .collect();
    assert_eq!(before, after);
    assert_eq!(counters_in(&site.applied()), (10_001..=12_010).collect());

    // A run that stopped after writing 5001-10000 but before deleting its loose files,
    // and one that stopped half-way through deleting those of 1-5000: the leftovers are
    // checked against the batches and deleted.
    site.write_archives(&site.applied(), 5001, 10_000);
    site.write_archives(&site.applied(), 4901, 5000);
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("2 batch(es) from an interrupted run verified (5100 loose copies deleted)"),
        "{}",
        run.stdout
    );
    assert_eq!(
        files_in(&site.batches()),
        [batch(1, 5000), batch(5001, 10_000)]
    );
    assert_eq!(counters_in(&site.applied()), (10_001..=12_010).collect());

    // A leftover that differs from its batch is a failure, and nothing of it is deleted.
    site.write_archives(&site.applied(), 4999, 5000);
    std::fs::write(site.applied().join(name(5000).to_string()), "tampered").unwrap();
    let run = site.housekeeping();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(&batch(1, 5000)), "{}", run.stderr);
    assert!(site.applied().join(name(4999).to_string()).exists());
    assert!(site.applied().join(name(5000).to_string()).exists());
    std::fs::remove_file(site.applied().join(name(4999).to_string())).unwrap();
    std::fs::remove_file(site.applied().join(name(5000).to_string())).unwrap();

    // The replica moves on: the third run completes and is packed; what is above the
    // counter still is not.
    set_counter(&pg, 15_000).await;
    site.write_archives(&site.applied(), 12_011, 15_003);
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("1 batch(es) written (5000 archives packed)"),
        "{}",
        run.stdout
    );
    check_batch(&site.batches(), 10_001, 15_000);
    assert_eq!(counters_in(&site.applied()), (15_001..=15_003).collect());

    // Retention: keep_count keeps the newest batches...
    site.write_config(5000, "keep_count = 2");
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("1 batch(es) deleted by retention"),
        "{}",
        run.stdout
    );
    assert_eq!(
        files_in(&site.batches()),
        [batch(10_001, 15_000), batch(5001, 10_000)]
    );
    // ...and keep_days drops a batch whose newest archive is older than that.
    let old = SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(site.batches().join(batch(5001, 10_000)))
        .unwrap()
        .set_modified(old)
        .unwrap();
    site.write_config(5000, "keep_days = 30");
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(files_in(&site.batches()), [batch(10_001, 15_000)]);
    assert_eq!(counters_in(&site.applied()), (15_001..=15_003).collect());
    assert_eq!(files_in(&site.incoming()), [name(12_011).to_string()]);
}

#[test]
fn without_the_database_falls_back_to_the_counter_file_and_respects_the_lock() {
    // Nothing listens on this port: the database is unreachable.
    let site = Site::new(TestDir::new("housekeeping-nodb"), free_port());
    site.write_config(5, "");
    site.write_archives(&site.applied(), 1, 12);

    // No counter file either: nothing is done.
    let run = site.housekeeping();
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stdout.contains("applied position is unknown"),
        "{}",
        run.stdout
    );
    assert!(files_in(&site.batches()).is_empty());
    assert_eq!(counters_in(&site.applied()), (1..=12).collect());

    // The counter file says 7: only 1-5 is complete and applied.
    std::fs::write(site.site_dir().join("slony_counter.txt"), "7\n").unwrap();
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("falling back to the counter file"),
        "{}",
        run.stderr
    );
    assert_eq!(files_in(&site.batches()), [batch(1, 5)]);
    assert_eq!(counters_in(&site.applied()), (6..=12).collect());

    // A pull holding the lock: housekeeping waits for its next run.
    let lock = slony_shared::lock::RunLock::try_acquire(&site.lock_file()).unwrap();
    std::fs::write(site.site_dir().join("slony_counter.txt"), "12\n").unwrap();
    let run = site.housekeeping();
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert!(run.stderr.contains("already running"), "{}", run.stderr);
    assert_eq!(counters_in(&site.applied()), (6..=12).collect());
    drop(lock);
    let run = site.housekeeping();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(files_in(&site.batches()), [batch(1, 5), batch(6, 10)]);
}
