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

/// The process exit code for a code above.
pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
