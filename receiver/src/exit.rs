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

/// The process exit code for a code above.
pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// `status`: the replica is reachable but unhealthy: its lag passed `[status]
/// max_lag_archives` or `max_lag_secs`, or a `pull` failure is still active.
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
