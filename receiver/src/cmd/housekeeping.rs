//! `slony-receiver housekeeping`: pack applied archives into tar.gz batches and apply the
//! retention policy (the work itself is in [`crate::housekeeping`]).
//!
//! The command takes the same per-cluster lock as `pull`, so it never packs while an
//! archive is being applied, and does nothing while the pause (die) file is present: a
//! subscription change may be moving the replica's counter. The applied position comes
//! from the database; when the database cannot be read, from the counter file (bounded by
//! the archives actually in the applied directory); when neither is known, nothing is
//! done and the exit code says the database is the problem.

use crate::config::ReceiverConfig;
use crate::exit;
use crate::housekeeping::{self, SiteRun};
use crate::local;

/// Runs `housekeeping`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig) -> anyhow::Result<u8> {
    let _lock = match local::take_run_lock(cfg)? {
        Ok(lock) => lock,
        Err(held) => {
            tracing::warn!("{held}; housekeeping not run");
            eprintln!("slony-receiver: {held}; housekeeping waits for the next run");
            return Ok(exit::ALREADY_RUNNING);
        }
    };
    Ok(report(housekeeping::run_site(cfg).await?))
}

/// Prints what a run did and picks the exit code.
fn report(run: SiteRun) -> u8 {
    match run {
        SiteRun::Paused(die) => {
            println!("housekeeping: paused by {}; nothing done", die.display());
            exit::OK
        }
        SiteRun::PositionUnknown(message) => {
            println!("{message}");
            exit::DATABASE
        }
        SiteRun::Done(summary) => {
            println!("housekeeping: {}", summary.line());
            if summary.failures.is_empty() {
                exit::OK
            } else {
                for f in &summary.failures {
                    eprintln!("slony-receiver: {f}");
                }
                exit::LOCAL
            }
        }
    }
}
