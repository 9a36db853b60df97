//! The link to the service manager (systemd, `Type=notify` units): READY once the
//! daemon is up, a `STATUS=` line that `systemctl status` shows, and watchdog
//! keep-alives.
//!
//! A keep-alive is sent only while the daemon makes progress: the daemon's loop and its
//! long steps call [`beat`], and a keep-alive task sends `WATCHDOG=1` only if the last
//! beat is younger than the watchdog interval (a wait between polls counts, through
//! [`rest`]). A daemon stuck in one place (a lock wait,
//! a dead connection with no timeout) therefore stops sending them, and systemd
//! restarts it after `WatchdogSec`. Outside systemd (no `NOTIFY_SOCKET`) every call
//! here does nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When the process first asked; beats are milliseconds since then.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The last beat, in milliseconds since [`epoch`]. Process-wide, like the logger: the
/// data path beats from wherever it makes progress without a handle threaded through.
static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Records that the daemon is making progress (a poll, an archive, a chunk of a file).
pub fn beat() {
    LAST_BEAT_MS.store(now_ms(), Ordering::Relaxed);
}

/// Records that the daemon is waiting on purpose for up to `wait` (between polls, or
/// backing off after a failure): it counts as alive until `wait` has passed.
pub fn rest(wait: Duration) {
    LAST_BEAT_MS.store(
        now_ms().saturating_add(wait.as_millis() as u64),
        Ordering::Relaxed,
    );
}

/// How long ago the last [`beat`] was (zero while a [`rest`] lasts).
pub fn since_last_beat() -> Duration {
    Duration::from_millis(now_ms().saturating_sub(LAST_BEAT_MS.load(Ordering::Relaxed)))
}

/// Sends states to the service manager; failures are logged, never fatal (the daemon
/// works the same without systemd).
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "could not notify the service manager");
    }
}

/// Tells the service manager the daemon is up, with its first status line.
pub fn ready(status: &str) {
    beat();
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Replaces the status line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[sd_notify::NotifyState::Status(status)]);
}

/// Tells the service manager the daemon is shutting down.
pub fn stopping() {
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("shutting down"),
    ]);
}

/// Starts the keep-alive task when the unit has `WatchdogSec` (systemd sets
/// `WATCHDOG_USEC`); returns the interval it keeps, or `None` without a watchdog.
pub fn spawn_watchdog() -> Option<Duration> {
    let timeout = sd_notify::watchdog_enabled()?;
    let tick = (timeout / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut reported = false;
        loop {
            tokio::time::sleep(tick).await;
            let quiet = since_last_beat();
            if keep_alive(quiet, timeout) {
                reported = false;
                send(&[sd_notify::NotifyState::Watchdog]);
            } else if !reported {
                reported = true;
                tracing::error!(
                    quiet_secs = quiet.as_secs(),
                    watchdog_secs = timeout.as_secs(),
                    "no progress: keep-alives withheld, the service manager will restart the daemon"
                );
            }
        }
    });
    Some(timeout)
}

/// Whether a keep-alive is due: the last beat is younger than the watchdog interval.
fn keep_alive(quiet: Duration, timeout: Duration) -> bool {
    quiet < timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_resets_the_quiet_time() {
        beat();
        assert!(since_last_beat() < Duration::from_secs(1));
    }

    #[test]
    fn a_rest_counts_as_alive_until_it_is_over() {
        rest(Duration::from_secs(3600));
        assert_eq!(since_last_beat(), Duration::ZERO);
        beat();
    }

    #[test]
    fn keep_alives_stop_once_the_daemon_is_quiet_for_the_whole_interval() {
        let t = Duration::from_secs(60);
        assert!(keep_alive(Duration::from_secs(59), t));
        assert!(!keep_alive(Duration::from_secs(60), t));
        assert!(!keep_alive(Duration::from_secs(600), t));
    }
}
