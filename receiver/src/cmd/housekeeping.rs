//! `slony-receiver housekeeping`: pack applied archives into tar.gz batches and apply the
//! retention policy (the work itself is in [`crate::housekeeping`]).
//!
//! The command takes the same per-cluster lock as `pull`, so it never packs while an
//! archive is being applied, and does nothing while the pause (die) file is present: a
//! subscription change may be moving the replica's counter. The applied position comes
//! from the database; when the database cannot be read, from the counter file (bounded by
//! the archives actually in the applied directory); when neither is known, nothing is
//! done and the exit code says the database is the problem.

use crate::exit;
use crate::housekeeping::{self, Applied, Layout};
use crate::pull::record;
use anyhow::Context;
use slony_shared::config::ReceiverConfig;
use slony_shared::lock::{LockError, RunLock};
use std::time::SystemTime;

/// Runs `housekeeping`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig) -> anyhow::Result<u8> {
    slony_shared::private::create_dir_all(&cfg.local.log_dir).with_context(|| {
        format!(
            "creating local log directory {}",
            cfg.local.log_dir.display()
        )
    })?;
    let _lock = match RunLock::try_acquire(&cfg.lock_file()) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            tracing::warn!("{e}; housekeeping not run");
            eprintln!("slony-receiver: {e}; housekeeping waits for the next run");
            return Ok(exit::ALREADY_RUNNING);
        }
        Err(e) => return Err(e).context("taking the run lock"),
    };
    run_locked(cfg).await
}

/// Housekeeping for a caller that already holds the run lock (the pull daemon, on its
/// schedule).
pub async fn run_locked(cfg: &ReceiverConfig) -> anyhow::Result<u8> {
    let die = cfg.die_file();
    if die.exists() {
        tracing::info!(file = %die.display(), "paused: the die file is present; housekeeping does nothing");
        println!("housekeeping: paused by {}; nothing done", die.display());
        return Ok(exit::OK);
    }

    let Some(applied) = applied_position(cfg).await else {
        let message = format!(
            "housekeeping: the applied position is unknown (database unreachable and no counter file at {}); nothing packed or deleted",
            cfg.counter_file().display()
        );
        tracing::error!("{message}");
        println!("{message}");
        return Ok(exit::DATABASE);
    };

    let layout = Layout {
        applied_dir: cfg.applied_dir(),
        batches_dir: cfg.site_dir().join("batches"),
    };
    let settings = cfg.housekeeping.clone();
    let summary = tokio::task::spawn_blocking(move || {
        housekeeping::run(&layout, &settings, applied, SystemTime::now())
    })
    .await
    .context("housekeeping task failed")??;

    let line = summary.line();
    tracing::info!(
        batches_written = summary.batches_written,
        archives_packed = summary.archives_packed,
        batches_recovered = summary.batches_recovered,
        batches_deleted = summary.batches_deleted,
        waiting = summary.waiting,
        failures = summary.failures.len(),
        "housekeeping finished: {line}"
    );
    println!("housekeeping: {line}");
    if summary.failures.is_empty() {
        Ok(exit::OK)
    } else {
        for f in &summary.failures {
            eprintln!("slony-receiver: {f}");
        }
        Ok(exit::LOCAL)
    }
}

/// The last applied counter: the database's, or the counter file's when the database
/// cannot be read (logged), or None when neither is known.
async fn applied_position(cfg: &ReceiverConfig) -> Option<Applied> {
    let from_db = async {
        let client = crate::replica::connect(cfg).await?;
        crate::replica::read_position(&client, &cfg.cluster).await
    };
    match from_db.await {
        Ok(position) => {
            tracing::debug!(counter = position.counter.0, "replica position");
            Some(Applied::Database(position.counter))
        }
        Err(e) => {
            let file = cfg.counter_file();
            match record::read_counter_file(&file) {
                Some(c) => {
                    tracing::warn!(
                        counter_file = %file.display(),
                        counter = c.0,
                        "cannot read the replica's counter ({e}); falling back to the counter file"
                    );
                    Some(Applied::CounterFile(c))
                }
                None => {
                    tracing::error!(
                        counter_file = %file.display(),
                        "cannot read the replica's counter ({e}), and there is no readable counter file"
                    );
                    None
                }
            }
        }
    }
}
