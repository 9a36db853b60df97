//! Following slon's archive directory for `run`: a thread of its own that cuts after
//! every file event and at every rescan, until it is stopped.

use super::pass::pass;
use super::{CutterHandle, Wakeups};
use crate::config::ManagerConfig;
use anyhow::Context;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cutter thread of `run`; stopped by [`CutterThread::stop`].
pub struct CutterThread {
    /// Set to stop after the current group.
    stop: Arc<AtomicBool>,
    /// Wakes the thread (file events, promotions, stop), and holds the site-list lock.
    handle: CutterHandle,
    /// The thread.
    thread: std::thread::JoinHandle<()>,
    /// Watches `archive_dir`; dropped with the cutter.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl CutterThread {
    /// Starts following `archive_dir` (file events, plus a rescan every
    /// `rescan_interval`), woken by `handle`'s `wakeups`. The cutter is blocking file
    /// work (reads, writes, fsyncs): it runs on a thread of its own, never on the async
    /// runtime.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(
        cfg: Arc<ManagerConfig>,
        handle: CutterHandle,
        wakeups: Wakeups,
    ) -> anyhow::Result<CutterThread> {
        use notify::Watcher;
        let dir = cfg
            .archive_dir
            .clone()
            .context("the cutter needs archive_dir")?;
        let watcher_tx = handle.wake.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match &res {
                Ok(ev) => relevant(ev),
                Err(_) => true,
            };
            if relevant {
                let _ = watcher_tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the archive directory; relying on the periodic rescan");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a file watcher; relying on the periodic rescan");
                None
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread_handle = handle.clone();
        let thread = std::thread::Builder::new()
            .name("cutter".into())
            .spawn(move || follow(&cfg, &thread_handle, &thread_stop, &wakeups))
            .context("starting the cutter thread")?;
        tracing::info!(archive_dir = %dir.display(), "archive cutter started");
        Ok(CutterThread {
            stop,
            handle,
            thread,
            _watcher: watcher,
        })
    }

    /// Stops after the group being cut (committed first) and waits for the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.kick();
        if self.thread.join().is_err() {
            tracing::error!("the cutter thread panicked");
        }
    }
}

/// Whether a file event in the archive directory may be a new archive.
fn relevant(ev: &notify::Event) -> bool {
    if matches!(ev.kind, notify::EventKind::Access(_)) {
        return false;
    }
    if ev.need_rescan() || ev.paths.is_empty() {
        return true;
    }
    ev.paths.iter().any(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("slony1_log_") && n.ends_with(".sql"))
    })
}

/// The thread's loop: a pass, then wait for an event or the rescan interval.
fn follow(cfg: &ManagerConfig, handle: &CutterHandle, stop: &AtomicBool, wakeups: &Wakeups) {
    let mut reported: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match pass(cfg, handle, stop) {
            Ok(r) => {
                if r.archives > 0 {
                    tracing::info!(
                        archives = r.archives,
                        written = r.written,
                        kept = r.kept,
                        up_to = r.low_water.map(|c| c.0),
                        secs = started.elapsed().as_secs_f64(),
                        "archives cut"
                    );
                }
                // Each problem is logged when it appears, not at every rescan.
                for e in &r.errors {
                    if !reported.contains(e) {
                        tracing::error!(error = %e, "the cutter cannot go on for some sites; retrying at every rescan");
                    }
                }
                for w in &r.warnings {
                    if !reported.contains(w) {
                        tracing::warn!(warning = %w, "cutter");
                    }
                }
                let now: HashSet<String> = r.errors.iter().chain(&r.warnings).cloned().collect();
                if reported.iter().any(|k| !now.contains(k)) && r.errors.is_empty() {
                    tracing::info!("the cutter's earlier problems are gone");
                }
                reported = now;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if reported.insert(msg.clone()) {
                    tracing::error!(error = %msg, "cutter pass failed; retrying at every rescan");
                }
            }
        }
        match wakeups.0.recv_timeout(cfg.rescan_interval) {
            Ok(()) => {
                // Let a burst of renames settle, then take them all in one pass.
                // (A sleep on the cutter's own thread, never on the async runtime.)
                std::thread::sleep(Duration::from_millis(50));
                while wakeups.0.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    tracing::info!("archive cutter stopped");
}
