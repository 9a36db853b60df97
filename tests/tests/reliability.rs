//! Reliability and hostile input, end to end: nothing is lost, nothing is applied
//! half-way or twice, and nothing from a hostile provider gets in.
//!
//! Every test ends with the replica compared to an independent expected database
//! (`workload::apply_expected`) through `workload::fingerprint`.
//!
//! - [`kill_9_at_random_points_loses_nothing`]: 200+ SIGKILLs of `pull --once` and
//!   `housekeeping` at random moments (seeded, `RELIABILITY_SEED` to replay).
//! - [`network_cut_mid_transfer_refetches`], [`truncated_batches_and_copies_are_refetched`]:
//!   partial transfers are discarded and fetched again.
//! - [`database_stopped_mid_run_then_resumes`]: PostgreSQL stops under a running daemon.
//! - [`disk_full_on_the_local_log_dir`]: a full tmpfs under `local.log_dir` (root only).
//! - [`hostile_provider_input_changes_nothing`]: names, counters, duplicates, envelopes,
//!   tar entries and symlinks a provider should never serve.

use crate::support::receiver::run_receiver;
use crate::support::site::{archive_name_of, files_in, Options, Site, CLUSTER};
use crate::support::workload::{self, Format};
use crate::support::{bin_path, is_root, wait_until, wait_until_async, TestDir};
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::{ArchiveName, BatchName};
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A site whose alerts go to its mail sink, with `extra` config.
async fn new_site(name: &str, archives: u64, extra: &str) -> Site {
    Site::start(name, options(archives, extra)).await
}

/// Options for a stream of `archives` archives, alerts by mail and `extra` config.
fn options(archives: u64, extra: &str) -> Options {
    Options {
        archives,
        mail: true,
        extra: extra.into(),
        format: |c| {
            if c % 4 == 0 {
                Format::Statements
            } else {
                Format::Copy22
            }
        },
        ..Options::default()
    }
}

/// `slony-receiver <command> --config <config> <args>` as a child process, output
/// to `log`.
fn spawn(site: &Site, command: &str, args: &[&str], log: &Path) -> Receiver {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Receiver(
        Command::new(bin_path("slony-receiver"))
            .arg(command)
            .arg("--config")
            .arg(&site.config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The replica's counter, after checking that its tables are exactly the expected
/// state at that counter (no archive half-applied, none applied twice).
async fn check_consistent(site: &Site, when: &str) -> u64 {
    let at = site.counter().await;
    let want = site.expected_fingerprint(at).await;
    assert_eq!(
        site.replica_fingerprint().await,
        want,
        "{when}: the replica's tables are not the state after archive {at}"
    );
    at
}

/// [`check_consistent`] for the tables only, right after a crash: `setval` is not
/// transactional in PostgreSQL, so a transaction killed after an archive's sequence
/// call leaves that sequence ahead until the archive is applied again.
async fn check_tables_consistent(site: &Site, when: &str) -> u64 {
    // A killed client's last COMMIT may still be running in its server backend.
    let c = site.pg.connect("postgres").await;
    wait_until_async(
        Duration::from_secs(20),
        "the killed receiver's database sessions to end",
        || async {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slony-receiver'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
        },
    )
    .await;
    // The counter and the tables from one snapshot.
    let replica = site.pg.connect("replica").await;
    replica
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .unwrap();
    let at = replica
        .query_one(
            &format!("SELECT at_counter FROM \"_{CLUSTER}\".sl_archive_tracking"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as u64;
    let got = workload::fingerprint(&replica).await;
    replica.batch_execute("COMMIT").await.unwrap();
    let tables = |f: String| f.split(" seq=").next().unwrap_or_default().to_string();
    let want = tables(site.expected_fingerprint(at).await);
    assert_eq!(
        tables(got),
        want,
        "{when}: the replica's tables are not the state after archive {at}"
    );
    at
}

/// A receiver process, killed on drop if still running.
struct Receiver(Child);

impl Receiver {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits (bounded) for the process to exit; its exit code, or `None` on timeout or signal.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// What one kill left behind, counted over the whole run.
#[derive(Debug, Default)]
struct KillStats {
    pulls_killed: u64,
    housekeeping_killed: u64,
    exited_before_kill: u64,
    partial_download_left: u64,
    counter_file_behind: u64,
    progress_during_kill: u64,
    partial_batch_left: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_loses_nothing() {
    const ITERATIONS: u64 = 220;
    const MAX_ARCHIVES: u64 = 2000;
    let seed = seed();
    eprintln!("kill -9 test: seed {seed} (RELIABILITY_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let site = new_site(
        "rel-kill9",
        MAX_ARCHIVES,
        "[pull]\nfetch_ahead = 4\ngroup_commit = 3\nvacuum_every = 5\n[housekeeping]\nbatch_size = 10\n",
    )
    .await;
    let log = site.dir.join("runs.log");
    let mut published = 0u64;
    let mut stats = KillStats::default();
    let started = Instant::now();
    let mut last = 0u64;
    let (mut pull_bound_ms, mut housekeeping_bound_ms) = (300u64, 150u64);
    for i in 0..ITERATIONS {
        // Keep a backlog of 20..=60 archives, half of it in provider batches.
        if published < last + 20 && published < MAX_ARCHIVES {
            let to = (published + 40).min(MAX_ARCHIVES);
            if rng.below(2) == 0 {
                site.publish_batch(published + 1, to, Format::Copy22);
            } else {
                site.publish(published + 1, to);
            }
            published = to;
        }
        // Now and then, the state a kill between a commit and the counter-file rename
        // leaves (that window is microseconds wide, so it is set up by hand as well).
        if i % 20 == 10 && last > 0 {
            let file = site.site_dir().join("slony_counter.txt");
            std::fs::write(&file, format!("{}\n", last - 1)).unwrap();
            std::fs::write(site.site_dir().join("slony_counter.txt.tmp"), "").unwrap();
            stats.counter_file_behind += 1;
        }
        let housekeeping = rng.below(6) == 0;
        // A run needs roughly 100 ms to reach its first archive here; kills land at
        // random up to a bound (locking, listing, downloading, applying). How long a run
        // takes depends on the machine, so the bound follows it: it shrinks when a run
        // finished before its kill and grows back when one is killed while working.
        let bound = if housekeeping {
            &mut housekeeping_bound_ms
        } else {
            &mut pull_bound_ms
        };
        let delay = Duration::from_millis(rng.below(*bound + 1));
        let mut child = if housekeeping {
            spawn(&site, "housekeeping", &[], &log)
        } else {
            spawn(&site, "pull", &["--once"], &log)
        };
        std::thread::sleep(delay);
        if let Ok(Some(_)) = child.0.try_wait() {
            stats.exited_before_kill += 1;
            *bound = (*bound * 3 / 4).max(20);
        } else {
            if housekeeping {
                stats.housekeeping_killed += 1;
            } else {
                stats.pulls_killed += 1;
            }
            *bound = (*bound + 10).min(if housekeeping { 150 } else { 300 });
        }
        child.kill9();

        // What the kill left: observed, then checked.
        if files_in(&site.incoming())
            .iter()
            .any(|f| f.ends_with(".part"))
        {
            stats.partial_download_left += 1;
        }
        if files_in(&site.site_dir().join("batches"))
            .iter()
            .any(|f| f.ends_with(".part"))
        {
            stats.partial_batch_left += 1;
        }
        let at = check_tables_consistent(&site, &format!("after kill {i} (+{delay:?})")).await;
        assert!(
            at >= last,
            "kill {i}: the counter went back from {last} to {at}"
        );
        if at > last {
            stats.progress_during_kill += 1;
        }
        if let Some(file) = site.counter_file() {
            assert!(
                file <= at,
                "kill {i}: the counter file ({file}) is ahead of the database ({at})"
            );
            if file < at {
                stats.counter_file_behind += 1;
            }
        }
        last = at;
    }
    let killing = started.elapsed();

    // A final clean run applies everything that is left, exactly once.
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let at = check_consistent(&site, "after the final clean run").await;
    assert_eq!(at, published, "every published archive is applied");
    assert_eq!(site.counter_file(), Some(at), "the counter file agrees");
    let run = run_receiver(&site.config, "housekeeping", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Nothing temporary is left, and nothing temporary is taken for an archive.
    let incoming = files_in(&site.incoming());
    assert!(
        incoming.is_empty(),
        "incoming after a clean run: {incoming:?}"
    );
    for f in files_in(&site.site_dir()) {
        assert!(
            !f.ends_with(".tmp") && !f.ends_with(".part"),
            "left behind in the site directory: {f}"
        );
    }
    // Every applied archive is kept exactly once: loose in applied/ or in one batch.
    let mut kept: Vec<u64> = Vec::new();
    for f in files_in(&site.site_dir().join("applied")) {
        match classify(&f) {
            Ok(Entry::Archive(a)) => kept.push(a.counter.0),
            other => panic!("unexpected file {f} in applied/: {other:?}"),
        }
    }
    let batches = site.site_dir().join("batches");
    for f in files_in(&batches) {
        match classify(&f) {
            Ok(Entry::Batch(b)) => {
                let members = slony_shared::batch::list(&batches.join(&f)).unwrap();
                assert_eq!(
                    members.iter().map(|m| m.counter.0).collect::<Vec<_>>(),
                    (b.from.0..=b.to.0).collect::<Vec<_>>(),
                    "{f} holds exactly its range"
                );
                kept.extend(b.from.0..=b.to.0);
            }
            other => panic!("unexpected file {f} in batches/: {other:?}"),
        }
    }
    kept.sort_unstable();
    assert_eq!(
        kept,
        (1..=published).collect::<Vec<_>>(),
        "each applied archive kept exactly once"
    );
    eprintln!(
        "kill -9 test: seed {seed}, {ITERATIONS} runs in {killing:.1?} ({published} archives): {stats:?}"
    );
    assert!(
        stats.pulls_killed + stats.housekeeping_killed >= ITERATIONS / 2,
        "most runs were killed while working: {stats:?}"
    );
    assert!(
        stats.progress_during_kill > 0,
        "some killed runs had applied archives: {stats:?}"
    );
    assert!(site.smtp().messages().is_empty(), "kills are not failures");
}

/// A large archive: the rendered archive with `bytes` of comment lines after its header
/// (comments between statements are skipped by the applier).
fn padded_archive(site: &Site, counter: u64, bytes: usize) -> PathBuf {
    let path = site.provider.join(workload::archive_name(counter));
    let text = workload::render(
        CLUSTER,
        counter,
        &site.stream[(counter - 1) as usize],
        Format::Copy22,
    );
    let at = text.find("-- end of log archiving header\n").unwrap()
        + "-- end of log archiving header\n".len();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&text.as_bytes()[..at]).unwrap();
    let line = format!("-- {}\n", "padding ".repeat(12));
    for _ in 0..bytes / line.len() {
        f.write_all(line.as_bytes()).unwrap();
    }
    f.write_all(&text.as_bytes()[at..]).unwrap();
    f.flush().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_mid_transfer_refetches() {
    let site = new_site("rel-netcut", 12, "[pull]\nfetch_ahead = 4\n").await;
    site.publish(1, 12);
    padded_archive(&site, 9, 200 * 1024 * 1024);
    let part = site
        .incoming()
        .join(format!("{}.part", workload::archive_name(9)));
    let log = site.dir.join("cut.log");
    let mut child = spawn(&site, "pull", &["--once"], &log);
    wait_until(
        Duration::from_secs(60),
        "archive 9 to be half downloaded",
        || std::fs::metadata(&part).is_ok_and(|m| m.len() > 4 * 1024 * 1024),
    );
    let killed = site.ssh.kill_connections();
    assert!(killed > 0, "a connection was open to cut");
    let code = child.wait_exit(Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(&workload::archive_name(9)), "{stderr}");
    assert!(!part.exists(), "the partial download is removed");
    assert!(
        !site.incoming().join(workload::archive_name(9)).exists(),
        "no partial copy under the archive's name"
    );
    assert_eq!(check_consistent(&site, "after the cut").await, 8);
    let mails = site.mails(1);
    assert!(mails[0].subject.contains("FAILED"), "{}", mails[0].subject);

    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "after the refetch").await, 12);
    assert_eq!(site.counter_file(), Some(12));
    assert!(site.mails(2)[1].subject.contains("RECOVERED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_batches_and_copies_are_refetched() {
    let site = new_site("rel-truncate", 40, "").await;

    // A batch cut short on the provider: nothing of it is applied; whole again, it is.
    let batch = site.publish_batch(1, 10, Format::Copy22);
    let whole = std::fs::read(&batch).unwrap();
    std::fs::write(&batch, &whole[..whole.len() * 2 / 3]).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("slony_logs_1-10.tar.gz"),
        "{}",
        run.stderr
    );
    assert_eq!(check_consistent(&site, "truncated batch").await, 0);
    // Members read whole before the damage may wait in incoming/, each complete.
    let cluster = ClusterName::new(CLUSTER).unwrap();
    for f in files_in(&site.incoming()) {
        let name = ArchiveName::parse(&f).unwrap_or_else(|_| panic!("left in incoming: {f}"));
        slony_shared::archive::check::verify_file(
            &site.incoming().join(&f),
            &name,
            &cluster,
            Default::default(),
        )
        .unwrap_or_else(|e| panic!("{f} kept in incoming but not whole: {e}"));
    }
    std::fs::write(&batch, &whole).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "whole batch").await, 10);

    // A batch whose member 15 is a cut-off archive (a whole tar of a partial file): the
    // members before it are applied, the cut one is deleted and fetched again.
    let staging = site.dir.join("staging-bad");
    let paths =
        workload::write_archives(&staging, CLUSTER, &site.stream, 11, 20, |_| Format::Copy22);
    let cut = std::fs::read(&paths[4]).unwrap();
    std::fs::write(&paths[4], &cut[..cut.len() - 30]).unwrap();
    let members: Vec<(ArchiveName, PathBuf)> = paths
        .iter()
        .map(|p| (archive_name_of(p), p.clone()))
        .collect();
    slony_shared::batch::write_batch(
        &site.provider,
        BatchName::new(Counter(11), Counter(20)),
        &members,
    )
    .unwrap();
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("incomplete archive"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&workload::archive_name(15)),
        "{}",
        run.stderr
    );
    assert_eq!(check_consistent(&site, "cut member").await, 14);
    assert!(!site.incoming().join(workload::archive_name(15)).exists());
    std::fs::remove_file(site.provider.join("slony_logs_11-20.tar.gz")).unwrap();
    site.publish(15, 20);

    // A local copy cut short (a crash, a full disk) of an archive the provider still
    // has: fetched again, never applied from the partial copy.
    site.publish(21, 40);
    std::fs::create_dir_all(site.incoming()).unwrap();
    let local = site.incoming().join(workload::archive_name(22));
    let text = std::fs::read(site.provider.join(workload::archive_name(22))).unwrap();
    std::fs::write(&local, &text[..text.len() / 2]).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "after refetching").await, 40);
    assert_eq!(site.counter_file(), Some(40));
    assert!(files_in(&site.incoming()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stopped_mid_run_then_resumes() {
    const N: u64 = 1200;
    let mut site = new_site(
        "rel-dbstop",
        N,
        "[pull]\npoll_interval_secs = 1\nfetch_ahead = 8\n",
    )
    .await;
    site.publish(1, N);
    let log = site.dir.join("daemon.log");
    let mut daemon = spawn(&site, "pull", &[], &log);
    wait_until_async(
        Duration::from_secs(60),
        "the daemon to apply some archives",
        || async { site.counter().await >= 30 },
    )
    .await;
    site.pg.stop();
    let mails = site.mails(1);
    assert!(mails[0].subject.contains("FAILED"), "{}", mails[0].subject);
    assert!(
        mails[0]
            .body
            .contains("database connection lost while applying"),
        "the mail says the database went away, not that the archive is bad: {}",
        mails[0].body
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("database connection lost while applying"),
        "a clear error in the log: {text}"
    );
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon keeps running while the database is down"
    );

    // Paused while the database comes back, the replica can be inspected as it was left.
    let die = site.die_file();
    std::fs::write(&die, "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    site.pg.start_again();
    // Sequences are not transactional: the archive cut off by the stop may have left
    // one ahead until it is applied again; the tables must be exact.
    let at = check_tables_consistent(&site, "after the restart").await;
    assert!(at < N, "stopped mid-backlog (at {at})");
    assert!(site.counter_file().is_some_and(|f| f <= at));
    std::fs::remove_file(&die).unwrap();

    wait_until_async(
        Duration::from_secs(120),
        "the daemon to resume and catch up",
        || async { site.counter().await == N },
    )
    .await;
    assert_eq!(check_consistent(&site, "caught up").await, N);
    let mails = site.mails(2);
    assert!(
        mails[1].subject.contains("RECOVERED"),
        "{}",
        mails[1].subject
    );
    wait_until(Duration::from_secs(10), "the counter file", || {
        site.counter_file() == Some(N)
    });
    daemon.0.kill().unwrap();
}

/// A tmpfs mounted for the test, unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount syntax: `2m`) at `dir`; `Err` says why not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        if !is_root() {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_the_local_log_dir() {
    let dir = TestDir::new("rel-diskfull");
    let local = dir.join("local");
    let tmpfs = match Tmpfs::mount(&local, "2m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipping disk_full_on_the_local_log_dir: {why}");
            return;
        }
    };
    let site = Site::start_in(dir, options(12, "[pull]\nfetch_ahead = 2\n")).await;
    site.publish(1, 12);
    padded_archive(&site, 7, 4 * 1024 * 1024);
    let run = site.pull();
    assert_eq!(run.code, 1, "a local failure: {}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("{}.part", workload::archive_name(7))),
        "{}",
        run.stderr
    );
    let mails = site.mails(1);
    assert!(
        mails[0].body.contains("No space left on device"),
        "{}",
        mails[0].body
    );
    assert_eq!(
        check_consistent(&site, "disk full").await,
        6,
        "archives before the one that does not fit are applied"
    );
    for f in files_in(&site.incoming()) {
        assert!(
            !f.contains(&workload::archive_name(7)),
            "nothing of archive 7 is kept: {f}"
        );
    }

    tmpfs.resize("64m");
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "space freed").await, 12);
    assert_eq!(site.counter_file(), Some(12));
    drop(site);
    drop(tmpfs);
}

/// A tar.gz whose only member is named `name` verbatim (the tar crate itself refuses
/// to write `..`, so the header is filled by hand).
fn raw_batch(path: &Path, name: &str, content: &[u8]) {
    let mut header = tar::Header::new_old();
    let bytes = &mut header.as_old_mut().name;
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    builder.append(&header, content).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

/// One hostile provider state: how to set it up, the exit code and what the error says.
struct Case {
    what: &'static str,
    code: i32,
    says: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_provider_input_changes_nothing() {
    let site = new_site("rel-hostile", 12, "").await;
    site.publish(1, 3);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "start").await, 3);
    let good =
        |c: u64| workload::render(CLUSTER, c, &site.stream[(c - 1) as usize], Format::Copy22);
    let a4 = site.provider.join(workload::archive_name(4));
    let cases: Vec<(Case, Box<dyn Fn() + '_>)> = vec![
        (
            Case {
                what: "an archive name from another Slony node",
                code: 4,
                says: &[
                    "written by Slony node 3",
                    "slony1_log_3_00000000000000000005.sql",
                ],
            },
            Box::new(|| {
                std::fs::write(&a4, good(4)).unwrap();
                std::fs::write(
                    site.provider.join("slony1_log_3_00000000000000000005.sql"),
                    good(5),
                )
                .unwrap();
            }),
        ),
        (
            Case {
                what: "an archive of another cluster",
                code: 4,
                says: &["cluster schema \"_other\"", "\"_lab\""],
            },
            Box::new(|| std::fs::write(&a4, good(4).replace("\"_lab\"", "\"_other\"")).unwrap()),
        ),
        (
            Case {
                what: "a counter beyond bigint",
                code: 3,
                says: &["slony1_log_2_99999999999999999999.sql", "out of range"],
            },
            Box::new(|| {
                std::fs::write(&a4, good(4)).unwrap();
                std::fs::write(
                    site.provider.join("slony1_log_2_99999999999999999999.sql"),
                    good(4),
                )
                .unwrap();
            }),
        ),
        (
            Case {
                what: "a counter beyond u64 (21 digits)",
                code: 3,
                says: &[
                    "slony1_log_2_184467440737095516160.sql",
                    "exactly 20 digits",
                ],
            },
            Box::new(|| {
                std::fs::write(
                    site.provider.join("slony1_log_2_184467440737095516160.sql"),
                    good(4),
                )
                .unwrap();
            }),
        ),
        (
            Case {
                what: "a batch ending beyond u64",
                code: 3,
                says: &[
                    "slony_logs_4-99999999999999999999999.tar.gz",
                    "out of range",
                ],
            },
            Box::new(|| {
                std::fs::write(
                    site.provider
                        .join("slony_logs_4-99999999999999999999999.tar.gz"),
                    b"not a batch",
                )
                .unwrap();
            }),
        ),
        (
            Case {
                what: "the largest counter, far after the replica",
                code: 4,
                says: &["archive 4 is missing", "9223372036854775807"],
            },
            Box::new(|| {
                std::fs::write(
                    site.provider.join("slony1_log_2_09223372036854775807.sql"),
                    good(4),
                )
                .unwrap();
            }),
        ),
        (
            Case {
                what: "two files with the same counter",
                code: 4,
                says: &["two archives with counter 4"],
            },
            Box::new(|| {
                std::fs::write(&a4, good(4)).unwrap();
                std::fs::write(
                    site.provider.join("slony1_log_3_00000000000000000004.sql"),
                    good(4),
                )
                .unwrap();
            }),
        ),
        (
            Case {
                what: "a tracking call that does not match the file name",
                code: 4,
                says: &["the tracking call says counter 5 but the file name says 4"],
            },
            Box::new(|| std::fs::write(&a4, good(5)).unwrap()),
        ),
        (
            Case {
                what: "a statement after the final commit",
                code: 4,
                says: &["after the archive's commit", "drop table s1.t1"],
            },
            Box::new(|| std::fs::write(&a4, format!("{}drop table s1.t1;\n", good(4))).unwrap()),
        ),
        (
            Case {
                what: "`commit; drop table` in the middle",
                code: 4,
                says: &[
                    "slony1_log_2_00000000000000000004.sql",
                    "`drop table s1.t2` after the archive's commit",
                ],
            },
            Box::new(|| {
                let text = good(4);
                let at = text.find("-- end of log archiving header\n").unwrap();
                std::fs::write(
                    &a4,
                    format!("{}commit; drop table s1.t2;\n{}", &text[..at], &text[at..]),
                )
                .unwrap()
            }),
        ),
        (
            Case {
                what: "a batch with a `../` entry",
                code: 4,
                says: &[
                    "slony_logs_4-4.tar.gz",
                    "parent directory (..) components are not allowed",
                ],
            },
            Box::new(|| {
                raw_batch(
                    &site.provider.join("slony_logs_4-4.tar.gz"),
                    &format!("../{}", workload::archive_name(4)),
                    good(4).as_bytes(),
                )
            }),
        ),
        (
            Case {
                what: "an archive that is a symlink out of the site directory",
                code: 3,
                says: &["symbolic link", "slony1_log_2_00000000000000000004.sql"],
            },
            Box::new(|| {
                let outside = site.dir.join("outside.sql");
                std::fs::write(&outside, good(4)).unwrap();
                std::os::unix::fs::symlink(&outside, &a4).unwrap();
            }),
        ),
        (
            Case {
                what: "a site directory that is a symlink to another site's",
                code: 3,
                says: &[
                    "site1 on 127.0.0.1",
                    "is a symbolic link; the site directory must be",
                ],
            },
            Box::new(|| {
                let other = site.provider.parent().unwrap().join("site2");
                std::fs::create_dir_all(&other).unwrap();
                std::fs::write(other.join(workload::archive_name(4)), good(4)).unwrap();
                std::fs::remove_dir(&site.provider).unwrap();
                std::os::unix::fs::symlink(&other, &site.provider).unwrap();
            }),
        ),
    ];
    let before = site.replica_fingerprint().await;
    let mut failures = Vec::new();
    for (case, setup) in &cases {
        // A clean provider directory with the hostile file(s), nothing downloaded.
        if std::fs::symlink_metadata(&site.provider).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&site.provider).unwrap();
        }
        let _ = std::fs::remove_dir_all(&site.provider);
        std::fs::create_dir_all(&site.provider).unwrap();
        let _ = std::fs::remove_dir_all(site.incoming());
        // Each case on its own: no refusal remembered from the case before.
        let _ = std::fs::remove_file(site.site_dir().join("refused.json"));
        setup();
        let run = site.pull();
        let mut problems = Vec::new();
        if run.code != case.code {
            problems.push(format!("exit {} (want {})", run.code, case.code));
        }
        for s in case.says {
            if !run.stderr.contains(s) {
                problems.push(format!("no {s:?} in the error"));
            }
        }
        if site.counter().await != 3 || site.replica_fingerprint().await != before {
            problems.push("the replica changed".into());
        }
        let escaped = site.site_dir().join(workload::archive_name(4));
        if escaped.exists() {
            problems.push(format!("{} was written", escaped.display()));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n{}",
                case.what,
                problems.join("; "),
                run.stderr
            ));
        }
    }
    drop(cases);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A refused archive is not kept locally: once the provider repairs it, the next
    // run fetches and applies it with no hand needed in incoming/.
    let _ = std::fs::remove_file(&site.provider);
    let _ = std::fs::remove_dir_all(&site.provider);
    std::fs::create_dir_all(&site.provider).unwrap();
    let _ = std::fs::remove_dir_all(site.incoming());
    let text = good(4);
    let at = text.find("-- end of log archiving header\n").unwrap();
    std::fs::write(
        &a4,
        format!("{}commit; drop table s1.t2;\n{}", &text[..at], &text[at..]),
    )
    .unwrap();
    let _ = std::fs::remove_file(site.site_dir().join("refused.json"));
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert_eq!(site.counter().await, 3);
    // The refusal is final: served unchanged, the file is not fetched again.
    let again = site.pull();
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert!(again.stderr.contains("still refused"), "{}", again.stderr);
    assert!(!again.stderr.contains("fetched_bytes"), "{}", again.stderr);
    assert_eq!(site.counter().await, 3);
    std::fs::write(&a4, &text).unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "repaired archive").await, 4);

    // A single file and a batch, and two overlapping batches, covering the same
    // counters: the provider's housekeeping leaves such overlaps for a moment. Each
    // archive is applied exactly once.
    std::fs::remove_file(&a4).unwrap();
    site.publish_batch(5, 8, Format::Copy22);
    site.publish(5, 6);
    site.publish_batch(7, 12, Format::Copy22);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(check_consistent(&site, "overlapping sources").await, 12);
    let applied: BTreeSet<String> = files_in(&site.site_dir().join("applied"))
        .into_iter()
        .collect();
    assert_eq!(applied.len(), 12);
}
