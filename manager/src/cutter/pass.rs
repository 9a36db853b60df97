//! Cutting: one pass over every archive of slon's directory that can be cut now, in
//! groups whose copies are made durable together.

use super::sites::{load_sites, write_cut_counter, Loaded, Site};
use super::CutterHandle;
use super::CUT_COUNTER_FILE;
use crate::config::ManagerConfig;
use crate::fsutil;
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
use std::time::{Duration, Instant};

/// Most archives cut before a group is committed.
pub const GROUP_MAX: usize = 200;

/// Longest time a group keeps cutting before it is committed (the list lock is held
/// meanwhile, so a promotion waits at most about this long).
pub const GROUP_TIME: Duration = Duration::from_millis(500);

/// Threads issuing the fsyncs of a group.
const SYNC_THREADS: usize = 16;

/// The complete archives in `archive_dir`, by counter.
pub fn list_archives(
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
/// `stop` is set. Each group is cut under `cutter`'s site-list lock.
///
/// # Errors
///
/// The archive or subscribers directory cannot be listed. Problems of single sites or
/// archives are in [`PassReport::errors`].
pub fn pass(
    cfg: &ManagerConfig,
    cutter: &CutterHandle,
    stop: &AtomicBool,
) -> anyhow::Result<PassReport> {
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
        let _lists = cutter.lock_lists();
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
