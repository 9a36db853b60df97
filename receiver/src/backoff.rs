//! How long the pull daemon waits before its next run.
//!
//! After a success, the poll interval. After a failure, longer, by how much depending on
//! whether waiting can help:
//!
//! - **Transient** failures (the provider or the replica database unreachable, a lost
//!   connection, a local disk problem, and statements that failed on the server's state
//!   of the moment: a lock timeout, a deadlock, a serialization failure, a statement
//!   timeout, a lack of resources) usually clear by themselves: the wait doubles from
//!   the poll interval up to [`TRANSIENT_MAX`].
//! - **Permanent** failures (an archive that cannot be applied, a gap in the stream, a
//!   replica that is not initialised or a role that may not apply) need someone to act;
//!   retrying often only repeats the error and its log lines. The wait starts at
//!   [`PERMANENT_FIRST`] and doubles up to [`PERMANENT_MAX`]. `status` says so.
//!
//! A success, or a reloaded configuration, starts over.

use crate::pull::{FailureClass, PullError};
use std::time::Duration;

/// Longest wait while transient failures persist.
pub const TRANSIENT_MAX: Duration = Duration::from_secs(300);
/// First wait after a permanent failure.
pub const PERMANENT_FIRST: Duration = Duration::from_secs(300);
/// Longest wait while a permanent failure persists.
pub const PERMANENT_MAX: Duration = Duration::from_secs(3600);

/// Whether waiting can cure a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// It may clear by itself: retry soon.
    Transient,
    /// It needs someone to act: retry slowly.
    Permanent,
}

impl Persistence {
    /// The persistence of a run's failure.
    pub fn of_failure(e: &PullError) -> Self {
        match e {
            PullError::Apply(a) if a.may_pass() => Persistence::Transient,
            e => Persistence::of(e.class()),
        }
    }

    /// The persistence of a failure of `class`.
    pub fn of(class: FailureClass) -> Self {
        match class {
            FailureClass::Remote | FailureClass::Database | FailureClass::Local => {
                Persistence::Transient
            }
            FailureClass::Apply => Persistence::Permanent,
        }
    }
}

/// The daemon's waits between runs.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// `[pull] poll_interval_secs`.
    poll: Duration,
    /// The next wait after a transient failure.
    transient: Duration,
    /// The next wait after a permanent failure.
    permanent: Duration,
}

impl Backoff {
    /// Waits starting from `poll`, the poll interval.
    pub fn new(poll: Duration) -> Self {
        Backoff {
            poll,
            transient: poll,
            permanent: PERMANENT_FIRST.max(poll),
        }
    }

    /// The wait after a successful run (the poll interval); failures start over.
    pub fn after_success(&mut self) -> Duration {
        *self = Backoff::new(self.poll);
        self.poll
    }

    /// The wait after a failed run.
    pub fn after_failure(&mut self, persistence: Persistence) -> Duration {
        let (next, max) = match persistence {
            Persistence::Transient => (&mut self.transient, TRANSIENT_MAX),
            Persistence::Permanent => (&mut self.permanent, PERMANENT_MAX),
        };
        let wait = *next;
        *next = (wait * 2).min(max.max(self.poll));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// Sleeps each wait on the (paused) clock and returns when each run starts, in
    /// seconds from the first.
    async fn run_times(backoff: &mut Backoff, outcomes: &[Option<Persistence>]) -> Vec<u64> {
        let start = Instant::now();
        let mut times = Vec::new();
        for outcome in outcomes {
            times.push(start.elapsed().as_secs());
            let wait = match outcome {
                None => backoff.after_success(),
                Some(p) => backoff.after_failure(*p),
            };
            tokio::time::sleep(wait).await;
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_retry_soon_and_double_to_five_minutes() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let t = Some(Persistence::Transient);
        let times = run_times(&mut b, &[t, t, t, t, t, t, t, None, None]).await;
        // 10, 20, 40, 80, 160, then capped at 300; a success returns to the poll.
        assert_eq!(times, [0, 10, 30, 70, 150, 310, 610, 910, 920]);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_retry_slowly_up_to_an_hour() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let p = Some(Persistence::Permanent);
        let times = run_times(&mut b, &[p, p, p, p, p, p]).await;
        // 300, 600, 1200, 2400, then capped at 3600.
        assert_eq!(times, [0, 300, 900, 2100, 4500, 8100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_starts_both_over_and_kinds_back_off_apart() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let (t, p) = (Some(Persistence::Transient), Some(Persistence::Permanent));
        let times = run_times(&mut b, &[p, t, p, None, p, t]).await;
        // p: 300; t: 10 (its own sequence); p: 600; success: 10; p: 300 again; t: 10.
        assert_eq!(times, [0, 300, 310, 910, 920, 1220]);
    }

    #[test]
    fn a_poll_interval_beyond_the_caps_is_never_shortened() {
        let hour = Duration::from_secs(7200);
        let mut b = Backoff::new(hour);
        assert_eq!(b.after_failure(Persistence::Transient), hour);
        assert_eq!(b.after_failure(Persistence::Transient), hour);
        assert_eq!(b.after_failure(Persistence::Permanent), hour);
        assert_eq!(b.after_failure(Persistence::Permanent), hour);
    }

    #[test]
    fn statements_failing_on_the_server_s_state_of_the_moment_are_transient() {
        use crate::pull::apply::ApplyError;
        use slony_shared::archive::ArchiveName;
        let sql = |code: &str| {
            PullError::Apply(ApplyError::Sql {
                name: ArchiveName::parse("slony1_log_2_00000000000000000007.sql").unwrap(),
                line: 3,
                statement: "insert ...".into(),
                message: "ERROR: ...".into(),
                sqlstate: Some(code.into()),
            })
        };
        for code in ["40001", "40P01", "55P03", "57014", "53100", "53300"] {
            assert_eq!(
                Persistence::of_failure(&sql(code)),
                Persistence::Transient,
                "{code}"
            );
        }
        // A missing relation, a unique violation, a syntax error: the archive's own.
        for code in ["42P01", "23505", "42601"] {
            assert_eq!(
                Persistence::of_failure(&sql(code)),
                Persistence::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn apply_failures_are_permanent_the_others_transient() {
        assert_eq!(Persistence::of(FailureClass::Apply), Persistence::Permanent);
        for c in [
            FailureClass::Remote,
            FailureClass::Database,
            FailureClass::Local,
        ] {
            assert_eq!(Persistence::of(c), Persistence::Transient);
        }
    }
}
