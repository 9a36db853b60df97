//! Exit codes of `slony-receiver`, documented in the README. Scripts and monitoring
//! rely on them: never renumber.

use std::process::ExitCode;

/// Success, nothing to do, or paused (the pause is deliberate, not a failure).
pub const OK: u8 = 0;
/// An unexpected local failure (disk, permissions, internal error).
pub const LOCAL: u8 = 1;
/// The configuration file is missing or invalid (also used for bad command lines).
pub const CONFIG: u8 = 2;
/// The provider could not be reached or read over SSH (includes host-key refusal).
pub const REMOTE: u8 = 3;
/// The stream could not be applied: gap, invalid archive, SQL error, counter mismatch,
/// replica not initialised.
pub const APPLY: u8 = 4;
/// The replica database is unreachable (or went away during the run).
pub const DATABASE: u8 = 5;
/// Paused by the die file, when `--fail-if-paused` asks to tell it apart from success.
pub const PAUSED: u8 = 10;
/// Another instance holds the per-cluster lock.
pub const ALREADY_RUNNING: u8 = 11;

/// The exit code of a failure family.
pub fn for_class(class: crate::pull::FailureClass) -> u8 {
    use crate::pull::FailureClass;
    match class {
        FailureClass::Remote => REMOTE,
        FailureClass::Apply => APPLY,
        FailureClass::Database => DATABASE,
        FailureClass::Local => LOCAL,
    }
}

/// The exit code for an error that ended a command early: the family of the first
/// cause the receiver knows (a config, pull, replica or provider failure), else
/// [`LOCAL`].
pub fn for_error(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<crate::config::ConfigError>().is_some() {
            return CONFIG;
        }
        if let Some(p) = cause.downcast_ref::<crate::pull::PullError>() {
            return for_class(p.class());
        }
        if let Some(r) = cause.downcast_ref::<crate::replica::ReplicaError>() {
            return for_class(r.class());
        }
        if cause
            .downcast_ref::<crate::provider::RemoteError>()
            .is_some()
        {
            return REMOTE;
        }
    }
    LOCAL
}

/// The process exit code for a code above.
pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// `status`: the replica is reachable but unhealthy: its lag passed `[status]
/// max_lag_archives` or `max_lag_secs`, or a `pull` failure is still active. Also
/// `guard check` (a table without the guard) and `check` (a check failed).
pub const UNHEALTHY: u8 = 20;

/// `subscribe-series`: the manager did not answer within the allowed attempts; the
/// request stays pending and pull stays paused (run the command again to keep waiting,
/// or with `--abort` to cancel).
pub const TIMEOUT: u8 = 12;

/// `verify`: some compared table differs between the replica and the reference database
/// (row count, row hash or columns), or is missing on one side.
pub const DRIFT: u8 = 21;

/// `pull` (and `guard on`): this replica was promoted with `slony-receiver promote`
/// (marker `<site_dir>/PROMOTED`); it must never receive the provider's archives again.
pub const PROMOTED: u8 = 22;

/// `migrate`: the old `slony_counter.txt` and the replica's `at_counter` disagree (or the
/// file holds no counter). The TOML was written anyway; the database is the truth.
pub const COUNTER_DISAGREES: u8 = 23;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::ReplicaError;
    use anyhow::Context;

    #[test]
    fn every_command_reports_the_replica_s_failures_by_their_family() {
        let unreachable = || ReplicaError::Unavailable {
            conninfo: "host=127.0.0.1 port=1".into(),
            message: "Connection refused".into(),
        };
        let e = Err::<(), _>(unreachable()).context("guard on").unwrap_err();
        assert_eq!(for_error(&e), DATABASE);
        let e = anyhow::Error::new(ReplicaError::NotInitialised {
            schema: "\"_lab\"".into(),
        });
        assert_eq!(for_error(&e), APPLY);
        let e = anyhow::Error::new(ReplicaError::Privilege("may not SET".into()));
        assert_eq!(for_error(&e), APPLY);
        let e = anyhow::Error::new(crate::pull::PullError::from(unreachable()));
        assert_eq!(for_error(&e), DATABASE);
        assert_eq!(for_error(&anyhow::anyhow!("disk full")), LOCAL);
    }
}
