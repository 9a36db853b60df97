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
[`GROUP_MAX`] archives or [`GROUP_TIME`]) and committed together.

# Changes of a site's list (`since`)

The cutter always cuts with the site's *current* lists, `<node>/tables` and
`<node>/sequences` (see [`crate::site`]); it does not look at `<node>.new/`. When a request is promoted ([`prepare_promotion`], called by the flow
with [`lock_lists`] held, the same lock the cutter holds while it cuts a group):

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
*/

use crate::config::ManagerConfig;
use crate::fsutil;
use crate::site;
use anyhow::{bail, Context};
use slony_shared::archive::cut::{cut_file_with, CutOptions, SiteFilter};
use slony_shared::archive::name::{classify, ArchiveName, Entry};
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Name of the file holding the last counter cut for a site, in `<subscribers_dir>/<node>/`.
pub const CUT_COUNTER_FILE: &str = "cut_counter";

/// Most archives cut before a group is committed.
pub const GROUP_MAX: usize = 200;

/// Longest time a group keeps cutting before it is committed (the list lock is held
/// meanwhile, so a promotion waits at most about this long).
pub const GROUP_TIME: Duration = Duration::from_millis(500);

/// Threads issuing the fsyncs of a group.
const SYNC_THREADS: usize = 16;

/// Serialises the cutter with changes of the site lists: the cutter holds it while it
/// cuts and commits a group, the flow while it promotes `<node>.new/`. One daemon per
/// `subscribers_dir` is guaranteed by the run lock, so a process-wide lock is enough.
static SITE_LISTS: Mutex<()> = Mutex::new(());

/// Wakes the running cutter (set while one runs).
static WAKE: Mutex<Option<SyncSender<()>>> = Mutex::new(None);

/// Takes the lock that keeps site lists and the cutter apart (see the module doc).
pub fn lock_lists() -> MutexGuard<'static, ()> {
    SITE_LISTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asks the running cutter (if any) to look at the directories now.
pub fn kick() {
    if let Some(tx) = WAKE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let _ = tx.try_send(());
    }
}

/// Reads `<dir>/cut_counter`; `Ok(None)` if there is none.
///
/// # Errors
///
/// The file exists but is unreadable or not a counter.
pub fn read_cut_counter(dir: &Path) -> anyhow::Result<Option<Counter>> {
    let path = dir.join(CUT_COUNTER_FILE);
    match fsutil::read_bounded(&path, 64)? {
        None => Ok(None),
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            text.trim()
                .parse()
                .map(Some)
                .with_context(|| format!("{} does not hold a counter", path.display()))
        }
    }
}

fn write_cut_counter(dir: &Path, c: Counter) -> anyhow::Result<()> {
    fsutil::write_atomic(&dir.join(CUT_COUNTER_FILE), format!("{c}\n").as_bytes())
}

/// The last counter cut for a site: its `cut_counter`, or for a site that has none yet,
/// `since - 1`, or else the newest counter already in its archive directory.
///
/// # Errors
///
/// `cut_counter` is damaged, or the site has neither `cut_counter`, `since` nor archives.
pub fn current_cut(site_dir: &Path, log_dir: &Path) -> anyhow::Result<Counter> {
    if let Some(c) = read_cut_counter(site_dir)? {
        return Ok(c);
    }
    if let Some(since) = site::read_since(site_dir) {
        return Ok(Counter(since.0.saturating_sub(1)));
    }
    if let Some(newest) = newest_in(log_dir)? {
        return Ok(newest);
    }
    bail!(
        "{} has neither `{CUT_COUNTER_FILE}` nor `{}`, and {} holds no archive: write the \
         last counter the site already has into {}",
        site_dir.display(),
        site::SINCE_FILE,
        log_dir.display(),
        site_dir.join(CUT_COUNTER_FILE).display()
    )
}

/// The newest counter in a site directory (archives and batches).
fn newest_in(log_dir: &Path) -> anyhow::Result<Option<Counter>> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", log_dir.display())),
    };
    let mut newest = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let c = match name.to_str().map(classify) {
            Some(Ok(Entry::Archive(a))) => a.counter,
            Some(Ok(Entry::Batch(b))) => b.to,
            _ => continue,
        };
        // A file the site planted never counts as already cut.
        if let Some(why) = fsutil::not_ours(&entry.path()) {
            tracing::warn!(file = %entry.path().display(), reason = %why, "a file the manager did not write, under an archive's name: not counted as cut");
            continue;
        }
        newest = newest.max(Some(c));
    }
    Ok(newest)
}

/// Called by the flow before it promotes `<node>.new/`, with [`lock_lists`] held: makes
/// the cutter's state fit the new list (see the module doc). Does nothing when the
/// cutter is off or the promotion already happened.
///
/// # Errors
///
/// The cutter has not reached `since - 1` for this site yet (retry later), or an I/O
/// error.
pub fn prepare_promotion(cfg: &ManagerConfig, node: &NodeName) -> anyhow::Result<()> {
    if cfg.archive_dir.is_none() {
        return Ok(());
    }
    let new = cfg.new_site_dir(node);
    if !fsutil::exists(&new) {
        return Ok(());
    }
    let since = site::read_since(&new).with_context(|| {
        format!(
            "{} has no `{}`: cannot tell where the new list starts",
            new.display(),
            site::SINCE_FILE
        )
    })?;
    let last_old = Counter(since.0.saturating_sub(1));
    let current = cfg.site_dir(node);
    let log_dir = cfg.site_log_dir(node);
    if fsutil::exists(&current) {
        let cut = current_cut(&current, &log_dir)?;
        if cut < last_old {
            bail!(
                "waiting for the archive cutter: {node} is cut up to archive {cut}, and \
                 archives up to {last_old} still belong to its previous table list (the \
                 new list starts at {since})"
            );
        }
        if cut > last_old {
            write_cut_counter(&current, last_old)?;
        }
    }
    let removed = remove_from(&log_dir, since)?;
    if removed > 0 {
        tracing::info!(
            %node,
            since = since.0,
            removed,
            "removed the copies cut with the previous table list; they are cut again with the new one"
        );
    }
    write_cut_counter(&new, last_old)
}

/// Deletes a site's archives (and batches reaching) `>= since`; returns how many.
fn remove_from(log_dir: &Path, since: Counter) -> anyhow::Result<usize> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", log_dir.display())),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = match classify(name) {
            Ok(Entry::Archive(a)) => a.counter >= since,
            Ok(Entry::Batch(b)) => b.to >= since,
            _ => name.starts_with('.') && name.ends_with(".cut.tmp"),
        };
        if stale {
            fsutil::remove_file(&entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsutil::sync_dir(log_dir).with_context(|| format!("syncing {}", log_dir.display()))?;
    }
    Ok(removed)
}

/// One site as the cutter sees it.
struct Site {
    node: NodeName,
    filter: SiteFilter,
    /// `<subscribers_dir>/<node>/`.
    dir: PathBuf,
    /// `<site_log_dir>/<node>/`.
    log_dir: PathBuf,
    /// Last counter cut (on disk).
    cut: Counter,
    /// The next counter to cut.
    next: Counter,
}

/// What [`load_sites`] found.
struct Loaded {
    /// The sites that can be cut.
    sites: Vec<Site>,
    /// Sites whose lists cannot be read: they are not cut; the others are.
    errors: Vec<String>,
    /// Sites that are cut, but with something to tell the operator (no sequence list).
    warnings: Vec<String>,
}

/// Reads every site's lists and position.
fn load_sites(cfg: &ManagerConfig) -> anyhow::Result<Loaded> {
    let mut names: Vec<NodeName> = Vec::new();
    let dir = &cfg.subscribers_dir;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Ok(node) = NodeName::new(&name) {
            if entry.path().is_dir() {
                names.push(node);
            }
        }
    }
    names.sort();
    let mut loaded = Loaded {
        sites: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    for node in names {
        // Only a registered site is served: its archive directory is made for its group.
        let Some(account) = cfg.registry.get(&node) else {
            loaded.errors.push(format!(
                "site {node}: not registered in {} (add [sites.{node}] account = ...); it is not cut until it is",
                cfg.source.display()
            ));
            continue;
        };
        match crate::exchange::prepare_archive_dir(cfg, account)
            .and_then(|()| load_site(cfg, &node, &mut loaded.warnings))
        {
            Ok(s) => loaded.sites.push(s),
            Err(e) => loaded.errors.push(format!("site {node}: {e:#}")),
        }
    }
    Ok(loaded)
}

fn load_site(
    cfg: &ManagerConfig,
    node: &NodeName,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Site> {
    let dir = cfg.site_dir(node);
    let tables =
        site::read_tables(&dir)?.with_context(|| format!("{} disappeared", dir.display()))?;
    let sequences = match site::read_sequences(&dir)? {
        Some(s) => s,
        None => {
            warnings.push(site::no_sequence_list_warning(node, &dir));
            Vec::new()
        }
    };
    let log_dir = cfg.site_log_dir(node);
    let cut = current_cut(&dir, &log_dir)?;
    let since = site::read_since(&dir).unwrap_or(Counter(1));
    Ok(Site {
        node: node.clone(),
        filter: SiteFilter::from_lists(&tables, &sequences),
        dir,
        log_dir,
        cut,
        next: cut.next().max(since),
    })
}

/// The complete archives in `archive_dir`, by counter.
fn list_archives(
    dir: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<Counter, ArchiveName>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match classify(name) {
            Ok(Entry::Archive(a)) => {
                if let Some(other) = out.insert(a.counter, a) {
                    warnings.push(format!(
                        "{} holds two archives with counter {}: {other} and {a}",
                        dir.display(),
                        a.counter
                    ));
                }
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("{}: {e}", dir.display())),
        }
    }
    Ok(out)
}

/// What one [`pass`] did.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Archives cut (for one site or more).
    pub archives: u64,
    /// Site copies written.
    pub written: u64,
    /// Site copies already present under their final name, kept.
    pub kept: u64,
    /// Problems that stop a site (or all): each is logged by the caller.
    pub errors: Vec<String>,
    /// Notes: an archive missing before a later one, a strange name.
    pub warnings: Vec<String>,
    /// The highest counter every site has now (None without sites).
    pub low_water: Option<Counter>,
}

/// A site copy written to its temporary name, not yet fsynced nor renamed.
struct Pending {
    site: usize,
    tmp: PathBuf,
    dest: PathBuf,
}

/// Cuts every archive that can be cut now, group after group, until none is left or
/// `stop` is set.
///
/// # Errors
///
/// The archive or subscribers directory cannot be listed. Problems of single sites or
/// archives are in [`PassReport::errors`].
pub fn pass(cfg: &ManagerConfig, stop: &AtomicBool) -> anyhow::Result<PassReport> {
    let archive_dir = cfg
        .archive_dir
        .as_deref()
        .context("the cutter needs archive_dir")?;
    let mut report = PassReport::default();
    let archives = list_archives(archive_dir, &mut report.warnings)?;
    let mut blocked: HashSet<NodeName> = HashSet::new();
    let mut positions: HashMap<NodeName, Counter> = HashMap::new();
    let mut first = true;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let _lists = lock_lists();
        let Loaded {
            mut sites,
            errors,
            warnings,
        } = load_sites(cfg)?;
        if first {
            report.errors.extend(errors);
            report.warnings.extend(warnings);
            first = false;
        }
        sites.retain(|s| !blocked.contains(&s.node));
        let before = report.archives;
        let stuck = group(archive_dir, &cfg.cut, &archives, &mut sites, &mut report)?;
        for s in &sites {
            positions.insert(s.node.clone(), s.cut);
        }
        blocked.extend(stuck);
        if report.archives == before {
            break;
        }
    }
    report.low_water = positions.values().min().copied();
    Ok(report)
}

/// Cuts one group of archives for `sites` and commits it. Returns the sites that cannot
/// go on in this pass (up to date, or their next archive is missing or failed).
fn group(
    archive_dir: &Path,
    options: &CutOptions,
    archives: &BTreeMap<Counter, ArchiveName>,
    sites: &mut [Site],
    report: &mut PassReport,
) -> anyhow::Result<Vec<NodeName>> {
    let started = Instant::now();
    let lowest = archives.keys().next().copied();
    let highest = archives.keys().next_back().copied();
    let mut stuck: Vec<usize> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut advanced: Vec<bool> = vec![false; sites.len()];
    let mut count = 0;
    while count < GROUP_MAX && started.elapsed() < GROUP_TIME {
        let Some(c) = sites
            .iter()
            .enumerate()
            .filter(|(i, _)| !stuck.contains(i))
            .map(|(_, s)| s.next)
            .min()
        else {
            break;
        };
        let due: Vec<usize> = (0..sites.len())
            .filter(|i| !stuck.contains(i) && sites[*i].next == c)
            .collect();
        let Some(name) = archives.get(&c) else {
            if lowest.is_some_and(|l| c < l) {
                report.errors.push(format!(
                    "sites {} need archive {c}, which is no longer in {} (it starts at {}): \
                     set their `{CUT_COUNTER_FILE}` to where they should go on",
                    names(sites, &due),
                    archive_dir.display(),
                    lowest.unwrap_or_default()
                ));
            } else if highest.is_some_and(|h| h > c) {
                report.warnings.push(format!(
                    "archive {c} is not in {} although later ones are: sites {} wait for it",
                    archive_dir.display(),
                    names(sites, &due)
                ));
            }
            stuck.extend(due);
            continue;
        };
        match cut_one(
            archive_dir,
            options,
            name,
            sites,
            &due,
            &mut pending,
            report,
        ) {
            Ok(()) => {
                for &i in &due {
                    sites[i].cut = c;
                    sites[i].next = c.next();
                    advanced[i] = true;
                }
                count += 1;
                report.archives += 1;
            }
            Err(e) => {
                report.errors.push(format!(
                    "{e:#} (sites {} stop at this archive)",
                    names(sites, &due)
                ));
                stuck.extend(due);
            }
        }
    }
    commit(sites, &advanced, pending)?;
    Ok(stuck.into_iter().map(|i| sites[i].node.clone()).collect())
}

fn names(sites: &[Site], idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| sites[i].node.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cuts archive `name` for the sites `due` that do not have it yet, into fsynced
/// temporary files added to `pending`.
fn cut_one(
    archive_dir: &Path,
    options: &CutOptions,
    name: &ArchiveName,
    sites: &[Site],
    due: &[usize],
    pending: &mut Vec<Pending>,
    report: &mut PassReport,
) -> anyhow::Result<()> {
    let file_name = name.to_string();
    let mut todo = Vec::new();
    for &i in due {
        if fsutil::exists(&sites[i].log_dir.join(&file_name)) {
            report.kept += 1;
        } else {
            todo.push(i);
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let mut started: Vec<Pending> = Vec::with_capacity(todo.len());
    let result = (|| {
        let mut outs = Vec::with_capacity(todo.len());
        for &i in &todo {
            let s = &sites[i];
            std::fs::create_dir_all(&s.log_dir)
                .with_context(|| format!("creating {}", s.log_dir.display()))?;
            let tmp = s.log_dir.join(format!(".{file_name}.cut.tmp"));
            let file =
                fsutil::create_new(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            outs.push(BufWriter::with_capacity(64 * 1024, file));
            started.push(Pending {
                site: i,
                dest: s.log_dir.join(&file_name),
                tmp,
            });
        }
        let filters: Vec<&SiteFilter> = todo.iter().map(|&i| &sites[i].filter).collect();
        let summary = cut_file_with(&archive_dir.join(&file_name), &filters, &mut outs, options)?;
        if summary.counter != name.counter {
            bail!(
                "{}: its tracking call says counter {}, its name {}",
                archive_dir.join(&file_name).display(),
                summary.counter,
                name.counter
            );
        }
        // Made durable in [`commit`], all of the group's files at once.
        for (mut out, p) in outs.into_iter().zip(&started) {
            out.flush()
                .with_context(|| format!("writing {}", p.tmp.display()))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            report.written += started.len() as u64;
            pending.extend(started);
            Ok(())
        }
        Err(e) => {
            for p in started {
                let _ = std::fs::remove_file(&p.tmp);
            }
            Err(e)
        }
    }
}

/// Makes the group's copies durable, renames them into place (in counter order), makes
/// the renames durable, then records the new positions.
fn commit(sites: &[Site], advanced: &[bool], pending: Vec<Pending>) -> anyhow::Result<()> {
    // fsync is the cutter's main cost; issued from several threads at once, the file
    // system commits them together.
    in_parallel(&pending, |p| {
        File::open(&p.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", p.tmp.display()))
    })?;
    let mut dirs: Vec<&Path> = Vec::new();
    for p in &pending {
        std::fs::rename(&p.tmp, &p.dest)
            .with_context(|| format!("renaming {} into place", p.tmp.display()))?;
        let d = sites[p.site].log_dir.as_path();
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    in_parallel(&dirs, |d| {
        fsutil::sync_dir(d).with_context(|| format!("syncing {}", d.display()))
    })?;
    let moved: Vec<&Site> = sites
        .iter()
        .zip(advanced)
        .filter(|(_, a)| **a)
        .map(|(s, _)| s)
        .collect();
    in_parallel(&moved, |s| write_cut_counter(&s.dir, s.cut))?;
    Ok(())
}

/// Runs `f` on every item, from up to [`SYNC_THREADS`] threads; the first error wins.
fn in_parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    if items.len() <= 1 {
        return items.iter().try_for_each(&f);
    }
    let threads = SYNC_THREADS.min(items.len());
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().try_for_each(&f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a sync thread panicked")))
            })
            .collect::<anyhow::Result<Vec<()>>>()
            .map(|_| ())
    })
}

/// The cutter thread of `run`; stopped by [`Cutter::stop`].
pub struct Cutter {
    /// Set to stop after the current group.
    stop: Arc<AtomicBool>,
    /// Wakes the thread (file events, promotions, stop).
    wake: SyncSender<()>,
    /// The thread.
    thread: std::thread::JoinHandle<()>,
    /// Watches `archive_dir`; dropped with the cutter.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Cutter {
    /// Starts following `archive_dir` (file events, plus a rescan every
    /// `rescan_interval`).
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    pub fn spawn(cfg: Arc<ManagerConfig>) -> anyhow::Result<Cutter> {
        use notify::Watcher;
        let dir = cfg
            .archive_dir
            .clone()
            .context("the cutter needs archive_dir")?;
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let watcher_tx = tx.clone();
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
        *WAKE.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("cutter".into())
            .spawn(move || follow(&cfg, &thread_stop, &rx))
            .context("starting the cutter thread")?;
        tracing::info!(archive_dir = %dir.display(), "archive cutter started");
        Ok(Cutter {
            stop,
            wake: tx,
            thread,
            _watcher: watcher,
        })
    }

    /// Stops after the group being cut (committed first) and waits for the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        *WAKE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = self.wake.try_send(());
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
fn follow(cfg: &ManagerConfig, stop: &AtomicBool, wake: &mpsc::Receiver<()>) {
    let mut reported: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match pass(cfg, stop) {
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
        match wake.recv_timeout(cfg.rescan_interval) {
            Ok(()) => {
                // Let a burst of renames settle, then take them all in one pass.
                std::thread::sleep(Duration::from_millis(50));
                while wake.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    tracing::info!("archive cutter stopped");
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
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let r = pass(cfg, &stop)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ManagerConfig;
    use slony_shared::ident::QualifiedTable;

    struct Env {
        root: tempfile::TempDir,
        cfg: ManagerConfig,
    }

    fn env() -> Env {
        let root = tempfile::tempdir().unwrap();
        for d in ["triggers", "subscribers", "site_logs", "archive"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let text = format!(
            "cluster = \"lab\"\ntrigger_dir = \"triggers\"\nsubscribers_dir = \"subscribers\"\n\
             site_log_dir = \"site_logs\"\narchive_dir = \"archive\"\n{}[database]\nuser = \"u\"\ndbname = \"d\"\n",
            crate::config::test_sites(&[
                "a", "b", "c", "early", "late", "fresh", "legacy", "listed", "unlisted", "older",
            ])
        );
        let path = root.path().join("manager.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = ManagerConfig::load(&path).unwrap();
        Env { root, cfg }
    }

    fn node(n: &str) -> NodeName {
        NodeName::new(n).unwrap()
    }

    fn tables(list: &[&str]) -> Vec<QualifiedTable> {
        list.iter()
            .map(|t| QualifiedTable::parse(t).unwrap())
            .collect()
    }

    /// An archive with one row per table listed.
    fn archive_text(counter: u64, rows: &[&str]) -> String {
        let mut s = format!(
            "-- Slony-I log shipping archive\nstart transaction;\n\
             select \"_lab\".archiveTracking_offline('{counter}', '2026-01-01 00:00:00');\n\
             COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n"
        );
        for (i, t) in rows.iter().enumerate() {
            let (nsp, rel) = t.split_once('.').unwrap();
            s.push_str(&format!(
                "1\t{counter}\t1\t{i}\t{nsp}\t{rel}\tI\t0\t{{id,{counter}}}\n"
            ));
        }
        s.push_str(
            "\\.\n-- End Of Archive Log\ncommit;\nvacuum analyze \"_lab\".sl_archive_tracking;\n",
        );
        s
    }

    impl Env {
        fn add_site(&self, n: &str, list: &[&str], since: u64) {
            self.add_site_with(n, list, Some(&[]), since);
        }

        /// A site with its lists; `sequences: None` as an older version left it.
        fn add_site_with(&self, n: &str, list: &[&str], sequences: Option<&[&str]>, since: u64) {
            let d = self.cfg.site_dir(&node(n));
            site::prepare_new(&d, &tables(list)).unwrap();
            if let Some(seqs) = sequences {
                site::write_sequences(&d, &tables(seqs)).unwrap();
            }
            site::write_since(&d, Counter(since - 1)).unwrap();
        }

        fn put_archive(&self, counter: u64, rows: &[&str]) {
            let name = ArchiveName {
                counter: Counter(counter),
                node_id: 2,
            };
            let dir = self.cfg.archive_dir.as_ref().unwrap();
            std::fs::write(dir.join(name.to_string()), archive_text(counter, rows)).unwrap();
        }

        fn pass(&self) -> PassReport {
            pass(&self.cfg, &AtomicBool::new(false)).unwrap()
        }

        fn files(&self, n: &str) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.cfg.site_log_dir(&node(n)))
                .map(|rd| {
                    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }

        fn copy(&self, n: &str, counter: u64) -> String {
            let name = ArchiveName {
                counter: Counter(counter),
                node_id: 2,
            };
            std::fs::read_to_string(self.cfg.site_log_dir(&node(n)).join(name.to_string())).unwrap()
        }

        fn cut_counter(&self, n: &str) -> Option<Counter> {
            read_cut_counter(&self.cfg.site_dir(&node(n))).unwrap()
        }
    }

    fn names(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range
            .map(|c| {
                ArchiveName {
                    counter: Counter(c),
                    node_id: 2,
                }
                .to_string()
            })
            .collect()
    }

    /// Sequence calls go by the stored list alone; a site without one (an older version's
    /// directory) gets none, and a warning says what to do.
    #[test]
    fn sequences_come_from_the_stored_list_only() {
        let e = env();
        e.add_site_with("listed", &["s1.t1"], Some(&["s1.t1_id_seq"]), 1);
        e.add_site_with("unlisted", &["s1.t1"], Some(&[]), 1);
        e.add_site_with("older", &["s1.t1"], None, 1);
        let calls = "select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','7');\n\n\
                     select \"_lab\".sequenceSetValue_offline('s1','t1_x_seq','9');\n\n";
        let text = archive_text(1, &["s1.t1"]).replace(
            "\\.\n-- End Of Archive Log",
            &format!("\\.\n{calls}-- End Of Archive Log"),
        );
        assert!(text.contains("t1_x_seq"), "{text}");
        let name = names(1..=1).remove(0);
        std::fs::write(e.cfg.archive_dir.as_ref().unwrap().join(&name), &text).unwrap();
        let r = e.pass();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.written, 3);
        let listed = e.copy("listed", 1);
        assert!(listed.contains("'t1_id_seq'"), "{listed}");
        assert!(!listed.contains("t1_x_seq"), "{listed}");
        for n in ["unlisted", "older"] {
            let c = e.copy(n, 1);
            assert!(c.contains("\ts1\tt1\t"), "{n}: {c}");
            assert!(!c.contains("sequenceSetValue"), "{n}: {c}");
        }
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        let w = &r.warnings[0];
        assert!(
            w.contains("site older") && w.contains("subscribe again"),
            "{w}"
        );
    }

    #[test]
    fn cuts_in_counter_order_and_waits_for_gaps_and_tmp_files() {
        let e = env();
        e.add_site("a", &["s1.t1"], 1);
        e.add_site("b", &["s1.t2"], 1);
        for c in 1..=5 {
            e.put_archive(c, &["s1.t1", "s1.t2"]);
        }
        e.put_archive(7, &["s1.t1"]);
        let dir = e.cfg.archive_dir.clone().unwrap();
        std::fs::write(dir.join(format!("{}.tmp", names(6..=6)[0])), "partial").unwrap();
        let r = e.pass();
        assert_eq!(r.archives, 5);
        assert_eq!(r.written, 10);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(
            r.warnings.iter().any(|w| w.contains("archive 6 is not in")),
            "{:?}",
            r.warnings
        );
        assert_eq!(e.files("a"), names(1..=5));
        assert_eq!(e.files("b"), names(1..=5));
        assert_eq!(e.cut_counter("a"), Some(Counter(5)));
        assert!(e.copy("a", 3).contains("\ts1\tt1\t") && !e.copy("a", 3).contains("\tt2\t"));
        assert!(e.copy("b", 3).contains("\ts1\tt2\t") && !e.copy("b", 3).contains("\tt1\t"));
        // Archive 6 completes: 6 and 7 follow.
        std::fs::remove_file(dir.join(format!("{}.tmp", names(6..=6)[0]))).unwrap();
        e.put_archive(6, &[]);
        let r = e.pass();
        assert_eq!(r.archives, 2);
        assert_eq!(e.files("a"), names(1..=7));
        assert_eq!(r.low_water, Some(Counter(7)));
        // Nothing new: nothing done.
        assert_eq!(e.pass().archives, 0);
    }

    #[test]
    fn a_restart_resumes_and_keeps_existing_copies() {
        let e = env();
        e.add_site("a", &["s1.t1"], 1);
        for c in 1..=4 {
            e.put_archive(c, &["s1.t1"]);
        }
        e.pass();
        // A crash after renaming copies 5 and 6 but before cut_counter moved: the copies
        // stay as they are (here marked), nothing is cut twice, nothing is missing.
        e.put_archive(5, &["s1.t1"]);
        e.put_archive(6, &["s1.t1"]);
        let log = e.cfg.site_log_dir(&node("a"));
        std::fs::write(log.join(&names(5..=5)[0]), "kept as is").unwrap();
        std::fs::write(
            log.join(".slony1_log_2_00000000000000000006.sql.cut.tmp"),
            "junk",
        )
        .unwrap();
        let r = e.pass();
        assert_eq!((r.archives, r.written, r.kept), (2, 1, 1));
        assert_eq!(e.copy("a", 5), "kept as is");
        assert!(e.copy("a", 6).contains("archiveTracking_offline('6'"));
        assert_eq!(e.files("a"), names(1..=6));
        assert_eq!(e.cut_counter("a"), Some(Counter(6)));
    }

    #[test]
    fn a_new_site_starts_at_since_and_sites_go_on_independently() {
        let e = env();
        e.add_site("a", &["s1.t1"], 1);
        for c in 1..=6 {
            e.put_archive(c, &["s1.t1"]);
        }
        e.pass();
        e.add_site("late", &["s1.t1"], 4);
        e.add_site("early", &["s1.t1"], 1);
        // `early` needs archive 1 again: it is gone from the archive directory.
        let dir = e.cfg.archive_dir.clone().unwrap();
        std::fs::remove_file(dir.join(&names(1..=1)[0])).unwrap();
        e.put_archive(7, &["s1.t1"]);
        let r = e.pass();
        assert_eq!(e.files("late"), names(4..=7));
        assert_eq!(e.files("a"), names(1..=7));
        assert!(e.files("early").is_empty());
        assert_eq!(e.cut_counter("early"), None);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].contains("no longer in"), "{}", r.errors[0]);
        assert_eq!(r.low_water, Some(Counter(0)));
    }

    #[test]
    fn an_undecidable_archive_stops_with_its_name_and_is_resolved_by_hand() {
        let e = env();
        e.add_site("a", &["s1.t1"], 1);
        e.put_archive(1, &["s1.t1"]);
        let dir = e.cfg.archive_dir.clone().unwrap();
        let bad = archive_text(2, &[]).replace(
            "\\.\n",
            "1\t9\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"create function s1.f() returns int as 'select 1' language sql;\",\"\",\"\"}\n\\.\n",
        );
        std::fs::write(dir.join(&names(2..=2)[0]), &bad).unwrap();
        e.put_archive(3, &["s1.t1"]);
        let r = e.pass();
        assert_eq!(r.archives, 1);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].contains(&names(2..=2)[0]), "{}", r.errors[0]);
        assert!(
            r.errors[0].contains("create function s1.f()"),
            "{}",
            r.errors[0]
        );
        assert_eq!(e.files("a"), names(1..=1));
        // The operator puts the site's copy of 2 in place: the cutter goes on.
        let log = e.cfg.site_log_dir(&node("a"));
        std::fs::write(log.join(&names(2..=2)[0]), archive_text(2, &[])).unwrap();
        let r = e.pass();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(e.files("a"), names(1..=3));
    }

    #[test]
    fn promotion_recuts_from_since_with_the_new_list() {
        let e = env();
        let n = node("a");
        e.add_site("a", &["s1.t1"], 1);
        for c in 1..=3 {
            e.put_archive(c, &["s1.t1", "s1.t2"]);
        }
        e.pass();
        // A request adds s1.t2; its snapshot is at 4, so the new list starts at 5. The
        // cutter meanwhile cut up to 6 with the old list.
        let new = e.cfg.new_site_dir(&n);
        site::prepare_new(&new, &tables(&["s1.t1", "s1.t2"])).unwrap();
        site::write_since(&new, Counter(4)).unwrap();
        // The cutter has only reached 3: the promotion must wait for 4.
        let err = {
            let _g = lock_lists();
            prepare_promotion(&e.cfg, &n).unwrap_err()
        };
        assert!(
            err.to_string().contains("waiting for the archive cutter"),
            "{err}"
        );
        for c in 4..=6 {
            e.put_archive(c, &["s1.t1", "s1.t2"]);
        }
        e.pass();
        assert!(!e.copy("a", 5).contains("\tt2\t"));
        {
            let _g = lock_lists();
            prepare_promotion(&e.cfg, &n).unwrap();
            site::promote(&e.cfg.site_dir(&n), &new, &e.cfg.old_site_dir(&n)).unwrap();
        }
        assert_eq!(e.files("a"), names(1..=4));
        assert_eq!(e.cut_counter("a"), Some(Counter(4)));
        e.pass();
        assert_eq!(e.files("a"), names(1..=6));
        assert!(!e.copy("a", 4).contains("\tt2\t"), "before since: old list");
        assert!(e.copy("a", 5).contains("\tt2\t"), "from since: new list");
        assert!(e.copy("a", 6).contains("\tt2\t"));
        // Repeating the step after the promotion changes nothing.
        {
            let _g = lock_lists();
            prepare_promotion(&e.cfg, &n).unwrap();
        }
        assert_eq!(e.files("a"), names(1..=6));
    }

    #[test]
    fn a_promotion_interrupted_before_the_rename_is_redone() {
        let e = env();
        let n = node("a");
        e.add_site("a", &["s1.t1"], 1);
        for c in 1..=5 {
            e.put_archive(c, &["s1.t1", "s1.t2"]);
        }
        e.pass();
        let new = e.cfg.new_site_dir(&n);
        site::prepare_new(&new, &tables(&["s1.t2"])).unwrap();
        site::write_since(&new, Counter(2)).unwrap();
        prepare_promotion(&e.cfg, &n).unwrap();
        // Crash here; the cutter runs again before the flow redoes the step.
        e.pass();
        assert_eq!(e.files("a"), names(1..=5));
        assert!(!e.copy("a", 4).contains("\tt2\t"));
        prepare_promotion(&e.cfg, &n).unwrap();
        site::promote(&e.cfg.site_dir(&n), &new, &e.cfg.old_site_dir(&n)).unwrap();
        e.pass();
        assert_eq!(e.files("a"), names(1..=5));
        assert!(e.copy("a", 2).contains("\tt1\t"));
        for c in 3..=5 {
            assert!(e.copy("a", c).contains("\tt2\t") && !e.copy("a", c).contains("\tt1\t"));
        }
    }

    #[test]
    fn a_new_site_promotion_sets_its_position() {
        let e = env();
        let n = node("fresh");
        for c in 1..=3 {
            e.put_archive(c, &["s1.t1"]);
        }
        let new = e.cfg.new_site_dir(&n);
        site::prepare_new(&new, &tables(&["s1.t1"])).unwrap();
        site::write_since(&new, Counter(2)).unwrap();
        // Nothing is cut for a site that does not exist yet.
        e.pass();
        assert!(e.files("fresh").is_empty());
        prepare_promotion(&e.cfg, &n).unwrap();
        site::promote(&e.cfg.site_dir(&n), &new, &e.cfg.old_site_dir(&n)).unwrap();
        e.pass();
        assert_eq!(e.files("fresh"), names(3..=3));
        let _ = &e.root;
    }

    #[test]
    fn a_site_without_position_is_reported_not_guessed() {
        let e = env();
        let d = e.cfg.site_dir(&node("legacy"));
        site::prepare_new(&d, &tables(&["s1.t1"])).unwrap();
        e.put_archive(1, &["s1.t1"]);
        let r = e.pass();
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(r.errors[0].contains("cut_counter"), "{}", r.errors[0]);
        // With archives in its directory, it continues after the newest.
        let log = e.cfg.site_log_dir(&node("legacy"));
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join(&names(1..=1)[0]), "from the old splitter").unwrap();
        e.put_archive(2, &["s1.t1"]);
        let r = e.pass();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(e.files("legacy"), names(1..=2));
    }
}
