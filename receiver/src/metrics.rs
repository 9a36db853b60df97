//! Prometheus metrics of the pull daemon, served as text on `GET /metrics` at
//! `[pull] metrics_listen` (off by default).
//!
//! The figures live in atomics the daemon updates after each run; the endpoint only
//! reads them, so a slow scraper never holds up pulling.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The daemon's figures.
#[derive(Debug, Default)]
pub struct Metrics {
    /// The replica's archive counter.
    pub counter: AtomicU64,
    /// Creation time (Unix seconds) of the replica's last archive; 0 until a run succeeds.
    pub last_archive_created: AtomicI64,
    /// Archives applied since the daemon started.
    pub archives_applied: AtomicU64,
    /// Bytes downloaded since the daemon started.
    pub bytes_fetched: AtomicU64,
    /// Failed runs since the daemon started.
    pub errors: AtomicU64,
    /// When a run last succeeded (Unix seconds); 0 until one does.
    pub last_success: AtomicI64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let created = self.last_archive_created.load(Ordering::Relaxed);
        // Like a replica's "seconds behind": age of the newest change applied.
        let lag = if created > 0 {
            (now() - created).max(0)
        } else {
            -1
        };
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "slony_receiver_counter",
            "gauge",
            "Archive counter of the replica (last archive applied).",
            self.counter.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "slony_receiver_lag_seconds",
            "gauge",
            "Seconds since the provider created the replica's last archive (-1: no run succeeded yet).",
            lag.to_string(),
        );
        metric(
            "slony_receiver_archives_applied_total",
            "counter",
            "Archives applied since the daemon started.",
            self.archives_applied.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "slony_receiver_fetched_bytes_total",
            "counter",
            "Bytes downloaded from the provider since the daemon started.",
            self.bytes_fetched.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "slony_receiver_errors_total",
            "counter",
            "Failed pull runs since the daemon started.",
            self.errors.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "slony_receiver_last_success_timestamp_seconds",
            "gauge",
            "When a pull run last succeeded (Unix time; 0: not yet).",
            self.last_success.load(Ordering::Relaxed).to_string(),
        );
        out
    }

    /// Records a successful run.
    pub fn success(&self, counter: u64, applied: u64, fetched: u64, last_created: Option<i64>) {
        self.counter.store(counter, Ordering::Relaxed);
        self.archives_applied.fetch_add(applied, Ordering::Relaxed);
        self.bytes_fetched.fetch_add(fetched, Ordering::Relaxed);
        if let Some(t) = last_created {
            self.last_archive_created.store(t, Ordering::Relaxed);
        }
        self.last_success.store(now(), Ordering::Relaxed);
    }

    /// Records a failed run.
    pub fn failure(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // Only the request line matters; a bounded read keeps a bad client harmless.
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let ok = request.starts_with("GET /metrics ") || request.starts_with("GET / ");
            let (status, body) = if ok {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "try GET /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = Metrics::default();
        m.success(42, 40, 1000, Some(now() - 7));
        m.failure();
        let text = m.render();
        assert!(text.contains("slony_receiver_counter 42\n"), "{text}");
        assert!(text.contains("slony_receiver_archives_applied_total 40\n"));
        assert!(text.contains("slony_receiver_fetched_bytes_total 1000\n"));
        assert!(text.contains("slony_receiver_errors_total 1\n"));
        let lag: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("slony_receiver_lag_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((7..=9).contains(&lag), "{lag}");
    }
}
