//! The daemons under a service manager: READY, the STATUS= line and watchdog
//! keep-alives over a real `NOTIFY_SOCKET` datagram socket (what systemd listens on),
//! and `--log-format json`.

use crate::support::bin_path;
use crate::support::site::{Options, Site};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// What the daemon under test sent to its notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// Where it is bound: the daemon's `NOTIFY_SOCKET`.
    pub path: std::path::PathBuf,
}

impl NotifySocket {
    pub fn bind(path: std::path::PathBuf) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { socket, path }
    }

    /// Every message that arrives within `within`, one `KEY=value` line each.
    pub fn collect(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                lines.extend(text.lines().map(str::to_string));
            }
        }
        lines
    }

    /// Throws away what is queued: what was sent before now.
    pub fn drain(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        // Bounded: at most one datagram per 0.5 s keep-alive was queued meanwhile.
        for _ in 0..10_000 {
            if self.socket.recv(&mut buf).is_err() {
                break;
            }
        }
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Waits (bounded) for a line satisfying `want`; every line seen until then.
    pub fn wait_for(
        &self,
        within: Duration,
        what: &str,
        want: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let lines = self.collect(Duration::from_millis(200));
            let found = lines.iter().any(|l| want(l));
            seen.extend(lines);
            if found {
                return seen;
            }
        }
        panic!("no notification {what} within {within:?}; got {seen:?}");
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn terminate(mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_daemon_reports_ready_status_and_withholds_keep_alives_while_stuck() {
    let options = Options {
        archives: 20,
        seed: 11,
        extra: "[pull]\npoll_interval_secs = 1\n".into(),
        ..Options::default()
    };
    let site = Site::start("systemd-receiver", options).await;
    site.publish(1, 10);
    let notify = NotifySocket::bind(site.dir.join("notify.sock"));
    let log_path = site.dir.join("daemon.log");
    let daemon = Daemon(
        Command::new(bin_path("slony-receiver"))
            .args(["pull", "--config", site.config.to_str().unwrap()])
            .args(["--log-format", "json"])
            .env("NOTIFY_SOCKET", &notify.path)
            // 1.5 s: keep-alives every 0.5 s while the daemon makes progress.
            .env("WATCHDOG_USEC", "1500000")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );

    let seen = notify.wait_for(Duration::from_secs(30), "READY=1", |l| l == "READY=1");
    assert!(
        seen.iter().any(|l| l.starts_with("STATUS=started, site ")),
        "{seen:?}"
    );
    let seen = notify.wait_for(Duration::from_secs(60), "STATUS with counter 10", |l| {
        l.starts_with("STATUS=counter 10, lag 0 archives, last archive created ")
    });
    let seen = [seen, notify.collect(Duration::from_secs(2))].concat();
    // For the record (--nocapture): the line `systemctl status` would show.
    for line in seen.iter().filter(|l| l.starts_with("STATUS=")) {
        println!("{line}");
    }
    let keep_alives = seen.iter().filter(|l| *l == "WATCHDOG=1").count();
    assert!(keep_alives >= 2, "keep-alives while polling: {seen:?}");

    // Stuck: a local session holds the replicated tables, so the next archive waits for
    // their lock forever. The keep-alives must stop, so that systemd restarts it.
    let mut holder = site.pg.connect("replica").await;
    let tx = holder.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE s1.t1, s1.t2 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    site.publish(11, 20);
    // The poll that finds them starts within a second; 1.5 s later the keep-alives end.
    std::thread::sleep(Duration::from_secs(4));
    notify.drain();
    let quiet = notify.collect(Duration::from_secs(3));
    assert!(
        !quiet.iter().any(|l| l == "WATCHDOG=1"),
        "keep-alives while stuck on a lock: {quiet:?}"
    );
    assert_eq!(
        site.counter().await,
        10,
        "nothing applied while the lock is held"
    );

    // Unstuck: it applies the rest, and the keep-alives come back.
    tx.rollback().await.unwrap();
    let seen = notify.wait_for(Duration::from_secs(60), "STATUS with counter 20", |l| {
        l.starts_with("STATUS=counter 20, lag 0 archives")
    });
    let seen = [seen, notify.collect(Duration::from_secs(2))].concat();
    assert!(seen.iter().any(|l| l == "WATCHDOG=1"), "{seen:?}");
    assert_eq!(daemon.terminate(), Some(0));
    let after = notify.collect(Duration::from_millis(500));
    assert!(after.iter().any(|l| l == "STOPPING=1"), "{after:?}");

    // Every log line is one JSON object with the fields log shippers read.
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.trim().is_empty());
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "message"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
    }
    assert!(
        log.contains("keep-alives withheld"),
        "the stuck daemon said why it stopped the keep-alives: {log}"
    );
    assert!(log.contains("\"message\":\"shut down cleanly\""), "{log}");
}
