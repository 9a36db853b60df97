/*!
The per-site archive streams: follows slon's archive directory and cuts every complete
archive into each site's directory, keeping only the site's tables
([`slony_shared::archive::cut`]).

# Order and restart

For each site the cutter keeps the last counter it cut in
`<subscribers_dir>/<node>/cut_counter`. A site's next archive is `cut_counter + 1` (and
never below the `since` of its current list); archives are taken strictly in counter
order, and only once they have their final name in `archive_dir` (slon writes
`<name>.tmp` and renames it when complete). All sites due at a counter are cut in one
read of the archive.

Each site's copy is written to `.<name>.cut.tmp` in `<site_log_dir>/<node>/`, fsynced,
then renamed to the archive's own name, and the directory fsynced; only then is
`cut_counter` advanced (atomically). A crash at any point leaves at most an unused
temporary file and a `cut_counter` that is behind: after a restart the same counters
are cut again, and a copy already present under its final name is kept as it is, never
rewritten. To amortise the fsyncs, consecutive archives are cut in groups (at most
[`pass::GROUP_MAX`] archives or [`pass::GROUP_TIME`]) and committed together.

# Changes of a site's list (`since`)

The cutter always cuts with the site's *current* lists, `<node>/tables` and
`<node>/sequences` (see [`crate::site`]); it does not look at `<node>.new/`. When a request is promoted ([`prepare_promotion`], called by the flow
with [`CutterHandle::lock_lists`] held, the same lock the cutter holds while it cuts a group):

1. If the cutter has not yet cut the site up to `since - 1`, the promotion waits (the
   step fails and is retried at the next rescan): those archives belong to the old list.
2. The copies of counters `>= since`, cut meanwhile with the old list, are deleted, and
   the site's `cut_counter` becomes `since - 1` (in `<node>/` and `<node>.new/`).
3. The flow renames `<node>.new/` to `<node>/`, still under the lock; the cutter then
   cuts `since` onwards with the new list, before the subscriber (paused until it sees
   `.done`) fetches any of them.

So every archive below `since` is cut with the old list and every one from `since` on
with the new one: no row is lost or applied twice. A failed request leaves `<node>/`
untouched. This costs re-cutting the archives that arrived during the change, which is
cheaper and simpler than holding a site's stream back while its `.new/` exists.

# Errors

A site whose list is unreadable, or an archive that cannot be cut (a DDL statement whose
tables cannot be decided, a damaged file), stops the sites concerned at that counter,
with an error naming the archive and the statement; the other sites go on. The cut is
retried at every rescan; an operator can resolve it by placing the site copies of that
counter by hand (they are kept as they are).

A site directory without `sequences` (written by a version that chose sequences by
their names) is cut with its tables and no sequence at all, and a warning says so until
the site subscribes again: any change rebuilds the list from the provider's catalog.

# Layout

- [`sites`]: the site lists and positions the cutter reads (`cut_counter`).
- [`pass`]: cutting: one pass over every archive that can be cut now, group by group.
- [`promote`]: a change of a site's list, at its snapshot.
- [`follow`]: the thread that follows slon's directory for `run`.
*/

mod follow;
mod pass;
mod promote;
mod sites;
#[cfg(test)]
mod tests;

pub use follow::CutterThread;
pub use pass::{list_archives, pass};
pub use promote::{prepare_promotion, CutterBehind};
pub use sites::{read_cut_counter, CUT_COUNTER_FILE};

use crate::config::ManagerConfig;
use anyhow::bail;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The daemon's handle on the cutter: the lock that keeps the site lists and the cuts
/// apart, and the cutter thread's wake-up. Made once by whoever runs the cutter (the
/// daemon, or `cut`) and passed to every part that changes a site's lists; clones share
/// both.
#[derive(Debug, Clone)]
pub struct CutterHandle {
    /// Held by the cutter while it cuts and commits a group, and by the flow while it
    /// promotes `<node>.new/` (see the module doc). One daemon per `subscribers_dir`
    /// (the run lock), so one lock per process is enough.
    lists: Arc<Mutex<()>>,
    /// Wakes the cutter thread; nothing listens while no thread runs.
    wake: SyncSender<()>,
}

/// The cutter thread's end of [`CutterHandle::kick`].
#[derive(Debug)]
pub struct Wakeups(Receiver<()>);

impl CutterHandle {
    /// A handle, and the wake-ups it sends, for the cutter thread ([`CutterThread::spawn`]).
    pub fn new() -> (CutterHandle, Wakeups) {
        // One pending wake-up is enough: the thread looks at the whole directory.
        let (wake, wakeups) = mpsc::sync_channel(1);
        let handle = CutterHandle {
            lists: Arc::new(Mutex::new(())),
            wake,
        };
        (handle, Wakeups(wakeups))
    }

    /// Takes the lock that keeps site lists and the cutter apart (see the module doc).
    pub fn lock_lists(&self) -> MutexGuard<'_, ()> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the running cutter (if any) to look at the directories now.
    pub fn kick(&self) {
        let _ = self.wake.try_send(());
    }
}

/// `slony-manager cut`: cuts everything available now, then exits.
///
/// # Returns
///
/// The exit code: 0 when nothing stopped a site, 1 otherwise.
///
/// # Errors
///
/// The configuration has no `archive_dir`, another manager runs, or a directory cannot
/// be listed.
pub fn run_once(cfg: &ManagerConfig) -> anyhow::Result<u8> {
    if cfg.archive_dir.is_none() {
        bail!(
            "archive_dir is not set in {}: there is nothing to cut",
            cfg.source.display()
        );
    }
    let _lock =
        slony_shared::lock::RunLock::try_acquire(&cfg.subscribers_dir.join("slony-manager.lock"))?;
    // Nothing else in this process changes a site's lists, and the run lock keeps the
    // daemon out: the handle is this run's alone.
    let (cutter, _wakeups) = CutterHandle::new();
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let r = pass(cfg, &cutter, &stop)?;
    let secs = started.elapsed().as_secs_f64();
    for w in &r.warnings {
        tracing::warn!(warning = %w, "cutter");
    }
    for e in &r.errors {
        tracing::error!(error = %e, "cutter");
    }
    println!(
        "cut {} archives ({} site copies written, {} already present) in {:.3} s{}",
        r.archives,
        r.written,
        r.kept,
        secs,
        r.low_water
            .map(|c| format!("; every site is cut up to {c}"))
            .unwrap_or_default()
    );
    Ok(u8::from(!r.errors.is_empty()))
}
