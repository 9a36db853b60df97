/*!
The daemon's retry policy for a request whose step failed.

A failed step ends its request's task with the state unchanged, and the daemon starts
the task again at a later pass ([`crate::daemon`]); the failure is logged once, and
again only when its error changes. How soon the step is tried again depends on what
failed:

- **transient**: an I/O error or a database error (a full disk, a database restarting),
  or the cutter not yet at the change's snapshot. It may pass by itself at any moment,
  so the step is tried again at the next pass, whether a file event or the rescan tick
  brings it.
- **permanent**: anything else, such as a damaged state file, an event its state does
  not expect or a site missing from the configuration. It fails the same way until the
  operator changes something, so the step is tried again once a rescan interval has
  passed since the failed attempt began, however many file events arrive meanwhile.

A step that succeeds forgets the failure.
*/

use crate::cutter::CutterBehind;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// What kind of failure an error is (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// May pass by itself: tried again at the next pass.
    Transient,
    /// Fails the same way until someone acts: tried again a rescan interval later.
    Permanent,
}

impl Failure {
    /// Sorts an error by the causes in its chain.
    pub fn of(error: &anyhow::Error) -> Failure {
        let transient = error.chain().any(|cause| {
            cause.is::<std::io::Error>()
                || cause.is::<tokio_postgres::Error>()
                || cause.is::<CutterBehind>()
        });
        if transient {
            Failure::Transient
        } else {
            Failure::Permanent
        }
    }
}

/// The last failure of one key's step.
#[derive(Debug)]
struct Failed {
    /// Its error, as logged (`{:#}`).
    message: String,
    /// Its kind.
    failure: Failure,
    /// When the failed attempt began.
    started: Instant,
}

/// The retry policy of the daemon's request steps, by site (see the module doc).
#[derive(Debug)]
pub struct RetryPolicy<K> {
    /// How long a permanent failure waits: the rescan interval.
    interval: Duration,
    /// The keys whose last attempt failed.
    failed: HashMap<K, Failed>,
}

impl<K: Eq + Hash> RetryPolicy<K> {
    /// A policy that waits `interval` after a permanent failure.
    pub fn new(interval: Duration) -> RetryPolicy<K> {
        RetryPolicy {
            interval,
            failed: HashMap::new(),
        }
    }

    /// Whether `key`'s step may be tried at `now`.
    pub fn due(&self, key: &K, now: Instant) -> bool {
        match self.failed.get(key) {
            None => true,
            Some(f) => match f.failure {
                Failure::Transient => true,
                Failure::Permanent => now.saturating_duration_since(f.started) >= self.interval,
            },
        }
    }

    /// Records that `key`'s attempt begun at `started` failed with `error`. Returns its
    /// kind when the failure is to be logged (the first, or one whose error changed),
    /// `None` when it repeats the last one.
    pub fn failed(&mut self, key: K, error: &anyhow::Error, started: Instant) -> Option<Failure> {
        let message = format!("{error:#}");
        let failure = Failure::of(error);
        let new = self.failed.get(&key).is_none_or(|f| f.message != message);
        self.failed.insert(
            key,
            Failed {
                message,
                failure,
                started,
            },
        );
        new.then_some(failure)
    }

    /// Forgets `key`'s failure: its step succeeded.
    pub fn succeeded(&mut self, key: &K) {
        self.failed.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn io_error() -> anyhow::Error {
        Err::<(), _>(std::io::Error::other("No space left on device"))
            .context("writing site1.subscribe_series.sqldone")
            .unwrap_err()
    }

    #[test]
    fn failures_are_sorted_by_their_causes() {
        assert_eq!(Failure::of(&io_error()), Failure::Transient);
        let behind = anyhow::Error::from(CutterBehind {
            node: slony_shared::ident::NodeName::new("site1").unwrap(),
            cut: slony_shared::counter::Counter(3),
            last_old: slony_shared::counter::Counter(4),
            since: slony_shared::counter::Counter(5),
        });
        assert!(behind
            .to_string()
            .starts_with("waiting for the archive cutter: site1"));
        assert_eq!(Failure::of(&behind), Failure::Transient);
        let damaged = serde_json::from_str::<u32>("{ not json")
            .context("request state site1.request.json is damaged")
            .unwrap_err();
        assert_eq!(Failure::of(&damaged), Failure::Permanent);
        let unregistered = anyhow::anyhow!("site site1 is not registered");
        assert_eq!(Failure::of(&unregistered), Failure::Permanent);
    }

    /// On the daemon's own rescan tick: a permanent failure is tried again at the next
    /// tick and not at the file events in between; a transient one at every pass.
    #[tokio::test(start_paused = true)]
    async fn permanent_failures_wait_for_the_next_rescan_transient_ones_do_not() {
        let interval = Duration::from_secs(10);
        let mut tick = tokio::time::interval(interval);
        let mut policy = RetryPolicy::new(interval);
        let first = tick.tick().await;
        assert!(policy.due(&"damaged", first) && policy.due(&"disk", first));
        let damaged = anyhow::anyhow!("request state is damaged");
        assert_eq!(
            policy.failed("damaged", &damaged, first),
            Some(Failure::Permanent)
        );
        assert_eq!(
            policy.failed("disk", &io_error(), first),
            Some(Failure::Transient)
        );
        // File events within the interval.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(3)).await;
            let event = Instant::now();
            assert!(!policy.due(&"damaged", event));
            assert!(policy.due(&"disk", event));
            // The same error again is not logged again.
            assert_eq!(policy.failed("disk", &io_error(), event), None);
        }
        let next = tick.tick().await;
        assert_eq!(next - first, interval);
        assert!(policy.due(&"damaged", next));
        // It fails again, the same way: quiet, and it waits for the tick after.
        assert_eq!(policy.failed("damaged", &damaged, next), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!policy.due(&"damaged", Instant::now()));
        // A changed error is logged; success forgets the failure.
        let other = anyhow::anyhow!("request state names another node");
        assert_eq!(
            policy.failed("damaged", &other, Instant::now()),
            Some(Failure::Permanent)
        );
        policy.succeeded(&"damaged");
        assert!(policy.due(&"damaged", Instant::now()));
        assert_eq!(
            policy.failed("damaged", &damaged, Instant::now()),
            Some(Failure::Permanent)
        );
    }
}
