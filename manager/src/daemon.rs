/*!
`slony-manager run`: the daemon loop.

One `select!` waits for a file event in the trigger directory (notify, bridged into a
tokio channel), the rescan tick (a safety net for missed events and for requests whose
file was still incomplete), a finished request, or SIGTERM/SIGINT. Each wake-up runs
[`Daemon::reconcile`], which compares the trigger directory and the state files with
what is running:

- a state file with no task → spawn [`flow::drive`] for that site (this is also how a
  restart resumes every request), unless its last step failed and the retry policy
  ([`crate::retry`]) says to wait;
- a `.tgr` with no request in progress → [`flow::accept`], then drive it;
- a `.tgr` while a request of that site is past `Generating` → left alone (logged once)
  until the current request ends;
- a protocol file whose node name is invalid → moved into `<trigger_dir>/rejected/`
  under a generated name (the bad name is never used in any other path;
  [`crate::rejected`]).

With `archive_dir` set, the archive cutter ([`crate::cutter`]) runs beside the loop on a
thread of its own, following slon's archive directory with its own watcher and rescan,
and stops (after committing the group it is cutting) on the first signal.

Each site's request runs in its own task, so one slow or failing site never blocks
another. On the first signal no new step starts and the running steps finish (a SQL
generation in progress completes); a second signal aborts them (an interrupted
generation is redone after the restart).
*/

use crate::alert::Alerts;
use crate::config::ManagerConfig;
use crate::context::DaemonContext;
use crate::cutter::{CutterHandle, CutterThread, Wakeups};
use crate::fsutil;
use crate::rejected::{self, RejectedDir};
use crate::request::flow::{self, Accepted, Progress};
use crate::request::{Record, RequestState};
use crate::retry::RetryPolicy;
use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use slony_shared::ident::NodeName;
use slony_shared::lock::RunLock;
use slony_shared::service;
use slony_shared::trigger::TriggerKind;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Entries of one site's directory looked at in one pass.
const SCAN_LIMIT: usize = 10_000;
/// Files of one site's directory refused in one pass.
const REFUSE_LIMIT: usize = 100;

/// How long to let a burst of file events settle before looking at the directory.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The daemon's state: what runs, and what was already reported.
struct Daemon {
    /// The configuration and the daemon-owned state, shared with the tasks.
    ctx: DaemonContext,
    /// One task per site with a request in progress.
    tasks: HashMap<NodeName, JoinHandle<()>>,
    /// Sites whose extra `.tgr` was already reported as waiting (avoids a log line per rescan).
    waiting_reported: HashSet<NodeName>,
    /// The sites whose task's last step failed: when each is tried again, and whether a
    /// failure is new enough to log (see [`crate::retry`]).
    retry: Arc<Mutex<RetryPolicy<NodeName>>>,
    /// Tells the tasks to stop between steps.
    shutdown: watch::Sender<bool>,
    /// Tasks send here when their request ended, so a queued `.tgr` is picked up at once.
    wake: mpsc::Sender<()>,
    /// Paths already reported as refused but not movable, or unknown (logged once).
    reported: HashSet<PathBuf>,
    /// Whether the first pass (which resumes the requests found on disk) has run.
    started: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Returns
///
/// The exit code: 0 after a clean shutdown.
///
/// # Errors
///
/// A directory is missing, another manager holds the lock, or the signal handlers
/// cannot be installed.
pub async fn run(cfg: ManagerConfig) -> anyhow::Result<u8> {
    check_dirs(&cfg)?;
    let _lock = RunLock::try_acquire(&cfg.subscribers_dir.join("slony-manager.lock"))?;
    check_sites(&cfg)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    // notify calls the handler on its own thread; a channel of one coalesces bursts (a
    // full channel already means "look again").
    let (event_tx, mut event_rx) = mpsc::channel::<()>(1);
    let watcher = watch_exchange_dirs(&cfg, event_tx.clone())?;

    let (mut d, wakeups) = Daemon::new(cfg, event_tx);
    tracing::info!(
        trigger_dir = %d.ctx.cfg.trigger_dir.display(),
        subscribers_dir = %d.ctx.cfg.subscribers_dir.display(),
        rescan_secs = d.ctx.cfg.rescan_interval.as_secs(),
        "slony-manager started"
    );

    // The cutter is blocking file work: it runs on a thread of its own. Without
    // archive_dir no thread takes the wake-ups, and a promotion's kick finds nobody.
    let cutter = match d.ctx.cfg.archive_dir {
        Some(_) => Some(CutterThread::spawn(
            Arc::clone(&d.ctx.cfg),
            d.ctx.cutter.clone(),
            wakeups,
        )?),
        None => None,
    };

    let mut tick = tokio::time::interval(d.ctx.cfg.rescan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    service::spawn_watchdog();
    service::ready(&d.status_line());
    loop {
        // The loop wakes at least once a rescan interval; a wake-up that never comes
        // back (a reconcile stuck) withholds the keep-alives.
        service::rest(d.ctx.cfg.rescan_interval);
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            Some(()) = event_rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while event_rx.try_recv().is_ok() {}
                d.reconcile(tokio::time::Instant::now());
            }
            // The tick's own instant: ticks are one rescan interval apart exactly, so a
            // step that failed for good at one tick is due again at the next.
            at = tick.tick() => d.reconcile(at),
        }
    }
    service::stopping();
    drop(watcher);
    let cutter_stopped = tokio::task::spawn_blocking(move || {
        if let Some(c) = cutter {
            c.stop();
        }
    });
    d.stop(&mut sigterm, &mut sigint).await;
    if let Err(e) = cutter_stopped.await {
        tracing::error!(error = %e, "stopping the cutter");
    }
    tracing::info!("slony-manager stopped");
    Ok(0)
}

/// Checks that the configured directories exist.
fn check_dirs(cfg: &ManagerConfig) -> anyhow::Result<()> {
    for (key, dir) in [
        ("trigger_dir", &cfg.trigger_dir),
        ("subscribers_dir", &cfg.subscribers_dir),
        ("site_log_dir", &cfg.site_log_dir),
    ] {
        if !dir.is_dir() {
            anyhow::bail!(
                "{key} {} is not a directory (create it first; config {})",
                dir.display(),
                cfg.source.display()
            );
        }
    }
    if let Some(dir) = &cfg.archive_dir {
        if !dir.is_dir() {
            anyhow::bail!(
                "archive_dir {} is not a directory (config {})",
                dir.display(),
                cfg.source.display()
            );
        }
    }
    Ok(())
}

/// Watches the trigger directory and each registered site's directory in it; every
/// event that may concern a subscriber's file is sent to `events`.
fn watch_exchange_dirs(
    cfg: &ManagerConfig,
    events: mpsc::Sender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let watcher_tx = events;
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) if relevant(&ev) => {
            let _ = watcher_tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "file watch error; rescanning");
            let _ = watcher_tx.try_send(());
        }
    };
    // The trigger directory and each registered site's directory, one level each and
    // never through a link: a site may create directories and links in its own
    // directory, and a recursive watch would walk wherever they lead.
    let mut watcher = notify::RecommendedWatcher::new(
        handler,
        notify::Config::default().with_follow_symlinks(false),
    )
    .context("creating the file watcher")?;
    let watched = std::iter::once(cfg.trigger_dir.clone())
        .chain(cfg.registry.sites.keys().map(|n| cfg.exchange_dir(n)));
    for dir in watched {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(
                error = %e,
                dir = %dir.display(),
                "cannot watch a directory; relying on the periodic rescan"
            );
        }
    }
    Ok(watcher)
}

/// Checks the registry and makes each site's directories; refuses to start on a layout
/// where one site could act for another.
///
/// # Errors
///
/// A site's group admits another site, the manager is not in a site's group, or a site's
/// directory cannot be made.
pub fn check_sites(cfg: &ManagerConfig) -> anyhow::Result<()> {
    let problems = cfg.registry.group_problems();
    if !problems.is_empty() {
        anyhow::bail!(
            "the sites' accounts do not keep them apart (config {}):\n  {}",
            cfg.source.display(),
            problems.join("\n  ")
        );
    }
    for (account, parties) in cfg.registry.shared_accounts() {
        tracing::warn!(
            %account,
            shared_by = %parties.join(", "),
            "allow_shared_account: these share one account, so each can act for the others"
        );
    }
    if cfg.registry.sites.is_empty() {
        tracing::warn!(
            config = %cfg.source.display(),
            "no site is registered ([sites.<node>]): every request is refused"
        );
    }
    for (key, dir) in [
        ("trigger_dir", &cfg.trigger_dir),
        ("site_log_dir", &cfg.site_log_dir),
        ("subscribers_dir", &cfg.subscribers_dir),
    ] {
        crate::exchange::check_own_dir(key, dir)?;
    }
    let pruned = rejected::prune(&cfg.rejected_dir());
    if pruned > 0 {
        tracing::info!(pruned, dir = %cfg.rejected_dir().display(), "removed old refused files");
    }
    for site in cfg.registry.sites.values() {
        crate::exchange::prepare(cfg, site)
            .with_context(|| format!("preparing the directories of site {}", site.node))?;
    }
    Ok(())
}

/// Whether a file event may concern a subscriber's file (our own writes are ignored, so
/// writing a large SQL file does not wake the loop thousands of times).
fn relevant(ev: &notify::Event) -> bool {
    use notify::EventKind;
    if matches!(ev.kind, EventKind::Access(_)) {
        return false;
    }
    if ev.need_rescan() || ev.paths.is_empty() {
        return true;
    }
    ev.paths.iter().any(|p| {
        p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
            n.ends_with(".subscribe_series.tgr") || n.ends_with(".subscribe_series.sqlapplied")
        })
    })
}

impl Daemon {
    /// The daemon's state before its first pass, and the cutter's wake-ups for its
    /// thread. Its tasks send `wake` when their request ended.
    fn new(cfg: ManagerConfig, wake: mpsc::Sender<()>) -> (Daemon, Wakeups) {
        let (shutdown, _) = watch::channel(false);
        let (cutter, wakeups) = CutterHandle::new();
        let retry = RetryPolicy::new(cfg.rescan_interval);
        let d = Daemon {
            ctx: DaemonContext {
                cfg: Arc::new(cfg),
                cutter,
                alerts: Alerts::new(),
                rejected: RejectedDir::new(),
            },
            tasks: HashMap::new(),
            waiting_reported: HashSet::new(),
            retry: Arc::new(Mutex::new(retry)),
            shutdown,
            wake,
            reported: HashSet::new(),
            started: false,
        };
        (d, wakeups)
    }

    /// The line `systemctl status` shows: sites served, requests in progress, cutting.
    fn status_line(&self) -> String {
        let cutting = if self.ctx.cfg.archive_dir.is_some() {
            "cutting from archive_dir"
        } else {
            "not cutting (no archive_dir)"
        };
        format!(
            "{} sites, {} requests in progress, {cutting}",
            self.ctx.cfg.registry.sites.len(),
            self.tasks.len()
        )
    }

    /// One pass over the state files and the trigger directory (see the module doc).
    ///
    /// Its file work (listings, accepting a `.tgr`, moving a refused file aside) blocks:
    /// the loop runs on the thread `main` gives to `block_on`, not on an async worker,
    /// so it holds up only the loop itself, whose next event waits for the pass anyway.
    /// The requests' own steps run in their tasks, on the blocking pool. `at` is when the
    /// pass began, for the retry policy.
    fn reconcile(&mut self, at: Instant) {
        service::beat();
        self.tasks.retain(|_, t| !t.is_finished());
        if *self.shutdown.borrow() {
            return;
        }
        // Requests in progress: resume any that has no task.
        match list_states(&self.ctx.cfg.subscribers_dir) {
            Ok(nodes) => {
                for node in nodes {
                    if !self.tasks.contains_key(&node) && self.due(&node, at) {
                        if !self.started {
                            tracing::info!(%node, "resuming a request in progress");
                        }
                        self.spawn(node, at);
                    }
                }
                self.started = true;
            }
            Err(e) => tracing::error!(error = %format!("{e:#}"), "listing the request states"),
        }
        let requests = self.scan();
        let with_request: HashSet<NodeName> = requests.iter().cloned().collect();
        self.waiting_reported.retain(|n| with_request.contains(n));
        for node in requests {
            let state_file = self.ctx.cfg.state_file(&node);
            if self.tasks.contains_key(&node) || fsutil::exists(&state_file) {
                self.note_waiting(&node);
                continue;
            }
            match flow::accept(&self.ctx, &node) {
                Ok(Accepted::NotYet) => {}
                Ok(Accepted::Started) => self.spawn(node, at),
                Err(e) => {
                    tracing::error!(%node, error = %format!("{e:#}"), "cannot take the request")
                }
            }
        }
        service::status(&self.status_line());
    }

    /// Lists the trigger directory: the registered sites with a `.tgr` in their exchange
    /// directory. What does not belong is refused: protocol files in the old shared
    /// layout (directly in the trigger directory), files in a site's directory named for
    /// another node, and directories of unknown nodes (reported once).
    fn scan(&mut self) -> Vec<NodeName> {
        let cfg = Arc::clone(&self.ctx.cfg);
        let entries = match std::fs::read_dir(&cfg.trigger_dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    dir = %cfg.trigger_dir.display(),
                    "cannot list the trigger directory"
                );
                return Vec::new();
            }
        };
        let mut requests = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name == rejected::REJECTED_DIR || name.starts_with('.') {
                continue;
            }
            let is_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
            if !is_dir {
                // Only a name with a protocol suffix is ours to judge.
                if TriggerKind::parse_file_name(name).is_ok_and(|k| k.is_none())
                    && !name.ends_with(".sql.gz")
                {
                    continue;
                }
                let tag = rejected::old_layout_tag(rejected::old_layout_site(&cfg, name).as_ref());
                self.refuse(
                    &path,
                    "trigger_dir",
                    &tag,
                    "a protocol file directly in the trigger directory (the old shared layout, where the original subscribe_series writes): each site writes only in its own <trigger_dir>/<node>/, where `slony-receiver subscribe-series` writes (README: Migrating from the original tools)",
                );
                continue;
            }
            let node = match NodeName::new(name) {
                Ok(n) if cfg.registry.get(&n).is_some() => n,
                _ => {
                    if self.reported.insert(path.clone()) {
                        self.ctx.alerts.raise(
                            &cfg,
                            "trigger_dir",
                            &format!("a directory of an unknown site, {name:?}, in the trigger directory"),
                            &format!(
                                "{} (made by {}) is not a registered site's: it is ignored, and nothing in it is answered. Register the site in [sites.<node>], or remove the directory.",
                                path.display(),
                                crate::exchange::writer_of(&cfg, &path)
                            ),
                        );
                    }
                    continue;
                }
            };
            if self.scan_site(&path, &node) {
                requests.push(node);
            }
        }
        requests.sort();
        requests
    }

    /// Looks into one site's exchange directory; true if it holds a request. A protocol
    /// file named for another node is refused. At most [`SCAN_LIMIT`] entries are looked
    /// at a pass (a site may fill its own directory, but must not slow every site's), and
    /// at most [`REFUSE_LIMIT`] refused; the rest wait for the next pass.
    fn scan_site(&mut self, dir: &Path, node: &NodeName) -> bool {
        let own = TriggerKind::Request.file_name(node);
        let request = fsutil::exists(&dir.join(&own));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return request;
        };
        let mut refused = 0;
        for entry in entries.flatten().take(SCAN_LIMIT) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            match TriggerKind::parse_file_name(name) {
                Ok(Some((n, _))) if &n == node => {}
                Ok(Some(_)) | Err(_) if refused < REFUSE_LIMIT => {
                    refused += 1;
                    self.refuse(
                        &entry.path(),
                        node.as_str(),
                        "other-node",
                        &format!("a protocol file named for another node in site {node}'s directory: a site acts only for itself"),
                    )
                }
                _ => {}
            }
        }
        request
    }

    /// Refuses a file that does not belong where it is: moved aside, with an alert that
    /// names its writer.
    fn refuse(&mut self, path: &Path, source: &str, tag: &str, why: &str) {
        let writer = crate::exchange::writer_of(&self.ctx.cfg, path);
        let subject = format!("refused {path:?} from {writer}");
        match self.ctx.rejected.move_aside(&self.ctx.cfg, path, tag) {
            Ok(target) => self.ctx.alerts.raise(
                &self.ctx.cfg,
                source,
                &subject,
                &format!(
                    "{} was written by {writer}: {why}. It was moved to {} and not acted on.",
                    path.display(),
                    target.display()
                ),
            ),
            Err(e) => {
                if self.reported.insert(path.to_path_buf()) {
                    self.ctx.alerts.raise(
                        &self.ctx.cfg,
                        source,
                        &subject,
                        &format!(
                            "{} was written by {writer}: {why}. It is not acted on, but cannot be moved aside: {e:#}",
                            path.display()
                        ),
                    );
                }
            }
        }
    }

    /// Reports (once) a `.tgr` that waits for the site's current request to end.
    fn note_waiting(&mut self, node: &NodeName) {
        let state = Record::load(&self.ctx.cfg.state_file(node), node)
            .ok()
            .flatten()
            .map(|r| r.state);
        // While generating (or refusing), the `.tgr` present is the one being handled.
        if matches!(
            state,
            None | Some(RequestState::Generating) | Some(RequestState::Rejected { .. })
        ) {
            return;
        }
        if self.waiting_reported.insert(node.clone()) {
            tracing::warn!(
                %node,
                state = state.as_ref().map_or("?", RequestState::name),
                "a new request file arrived while a request of this site is in progress; \
                 it waits until the current one ends"
            );
        }
    }

    /// Whether `node`'s request may be driven at `at` (the retry policy).
    fn due(&self, node: &NodeName, at: Instant) -> bool {
        let retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        retry.due(node, at)
    }

    /// Starts the task that drives `node`'s request, in a pass begun at `at`.
    fn spawn(&mut self, node: NodeName, at: Instant) {
        let ctx = self.ctx.clone();
        let shutdown = self.shutdown.subscribe();
        let wake = self.wake.clone();
        let key = node.clone();
        let retry = Arc::clone(&self.retry);
        let handle = tokio::spawn(async move {
            let result = flow::drive(&ctx, &node, &shutdown).await;
            let mut retry = retry.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(progress) => {
                    retry.succeeded(&node);
                    drop(retry);
                    if progress == Progress::Closed {
                        tracing::info!(%node, "request finished");
                        let _ = wake.try_send(());
                    }
                }
                Err(e) => {
                    if retry.failed(node.clone(), &e, at).is_some() {
                        tracing::error!(
                            %node,
                            error = %format!("{e:#}"),
                            "request step failed; retrying at every rescan"
                        );
                    }
                }
            }
        });
        self.tasks.insert(key, handle);
    }

    /// Stops: no new step; waits for the running ones, or aborts them on a second signal.
    async fn stop(
        &mut self,
        sigterm: &mut tokio::signal::unix::Signal,
        sigint: &mut tokio::signal::unix::Signal,
    ) {
        let _ = self.shutdown.send(true);
        let tasks: Vec<(NodeName, JoinHandle<()>)> = self.tasks.drain().collect();
        let running = tasks.iter().filter(|(_, t)| !t.is_finished()).count();
        if running > 0 {
            tracing::info!(
                running,
                "waiting for the current steps to finish (signal again to abort)"
            );
        }
        let aborts: Vec<tokio::task::AbortHandle> =
            tasks.iter().map(|(_, t)| t.abort_handle()).collect();
        let all = futures_util::future::join_all(tasks.into_iter().map(|(_, t)| t));
        tokio::select! {
            _ = all => {}
            _ = sigterm.recv() => abort_all(&aborts),
            _ = sigint.recv() => abort_all(&aborts),
        }
    }
}

fn abort_all(handles: &[tokio::task::AbortHandle]) {
    tracing::warn!("second signal: aborting the running steps (they are redone after a restart)");
    for h in handles {
        h.abort();
    }
}

/// The nodes that have a `<node>.request.json` in `dir`.
fn list_states(dir: &Path) -> anyhow::Result<Vec<NodeName>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(node) = name.to_str().and_then(|n| n.strip_suffix(".request.json")) else {
            continue;
        };
        match NodeName::new(node) {
            Ok(n) => out.push(n),
            Err(_) => {
                tracing::warn!(file = ?name, "ignoring a state file with an invalid node name")
            }
        }
    }
    out.sort();
    Ok(out)
}
