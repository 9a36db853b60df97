/*!
Housekeeping of applied archives: pack them into `slony_logs_<from>-<to>.tar.gz` batches
and apply the retention policy to the batches.

Where it sits: `pull` moves every archive it has committed to `<site>/applied/`; this
module packs them into `<site>/batches/`, runs of `batch_size` archives at a time, and
later deletes whole batches the retention policy no longer keeps. It never looks at the
incoming directory, and never touches an archive above the applied position it is given
(the database counter, or a conservative bound from the counter file).

The work is split the same way as `pull`: the packing plan ([`plan_packing`], which the
manager's housekeeping follows too, under its own rules) and [`plan_retention`] are pure
functions of (files present, applied position, settings), unit-tested without a disk;
[`run`] reads the directories, follows the plans and keeps going past a bad batch,
recording each failure in the [`Summary`].

Batches are aligned to multiples of the batch size, `k*N+1 ..= (k+1)*N`, so that every
site (and every rerun) produces the same names, and only a *complete* run of `N` applied
archives is packed; a partial run waits for its last archive. When an existing batch of
another size covers the start of an aligned range (the batch size was changed), the rest
of that range is packed as a shorter batch ending on the aligned boundary, so the stream
realigns instead of leaving archives loose forever ([`pack_rules`]).

Loose archives are deleted only after their batch has been read back and compared byte
for byte with them: [`batch::write_batch`] does that before the batch gets its final
name, and a batch found on disk together with loose copies of its members (a run that
stopped between writing the batch and deleting the loose files) is verified again before
the loose copies go. A batch's age for `keep_days` is the age of its newest archive: the
batch file's mtime is set to that when it is written.
*/

use crate::config::{HousekeepingConfig, ReceiverConfig};
use anyhow::Context;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::{ArchiveName, BatchName};
use slony_shared::batch;
use slony_shared::batch::plan::{plan_packing, span, FirstBatch, PackRules, PartlyCovered};
use slony_shared::counter::Counter;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Prefix of the scratch directories used to verify part of a batch (see [`run`]).
const SCRATCH_PREFIX: &str = ".verify-";

/// One day, for `keep_days`.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The receiver's packing rules: every batch aligned, archives below a stream's first
/// complete range waiting, and the stream realigned after a change of `batch_size`.
fn pack_rules(batch_size: u64) -> PackRules {
    PackRules {
        batch_size,
        first_batch: FirstBatch::Aligned,
        partly_covered: PartlyCovered::PackTheRest,
    }
}

/// A batch on disk, as the retention policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAge {
    /// Its range.
    pub name: BatchName,
    /// Its file's mtime: the mtime of its newest archive when we wrote it.
    pub modified: SystemTime,
}

/// Decides which batches the retention policy deletes.
///
/// Only batches ending at or below `applied` are candidates. `keep_count` keeps the
/// newest (highest counters) `K` candidates; `keep_days` keeps the candidates younger
/// than that many days. A batch either rule rejects is deleted; with neither set,
/// nothing is.
///
/// # Returns
///
/// The batches to delete, in counter order.
pub fn plan_retention(
    batches: &[BatchAge],
    applied: Counter,
    keep_days: Option<u64>,
    keep_count: Option<usize>,
    now: SystemTime,
) -> Vec<BatchName> {
    let mut candidates: Vec<BatchAge> = batches
        .iter()
        .copied()
        .filter(|b| b.name.to <= applied)
        .collect();
    // Newest first.
    candidates.sort_by_key(|b| std::cmp::Reverse(b.name));
    // A keep_days too large to subtract from now keeps everything.
    let cutoff = keep_days.and_then(|d| {
        u32::try_from(d)
            .ok()
            .and_then(|d| DAY.checked_mul(d))
            .and_then(|keep| now.checked_sub(keep))
    });
    let mut doomed: Vec<BatchName> = candidates
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            keep_count.is_some_and(|k| *i >= k) || cutoff.is_some_and(|c| b.modified < c)
        })
        .map(|(_, b)| b.name)
        .collect();
    doomed.sort();
    doomed
}

/// What the applied position is and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// `sl_archive_tracking.at_counter`: the source of truth.
    Database(Counter),
    /// The counter file, used when the database cannot be read; archives are then packed
    /// only up to the lower of it and the newest archive in the applied directory.
    CounterFile(Counter),
}

/// Where housekeeping reads and writes.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<site>/applied/`: archives `pull` has committed.
    pub applied_dir: PathBuf,
    /// `<site>/batches/`: the batches (created if missing).
    pub batches_dir: PathBuf,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// The applied position packing was bounded by.
    pub applied: Counter,
    /// New batches written and verified.
    pub batches_written: u64,
    /// Loose archives packed into those batches (and deleted).
    pub archives_packed: u64,
    /// Batches from an earlier run whose leftover loose copies were verified and deleted.
    pub batches_recovered: u64,
    /// Loose copies deleted by that recovery.
    pub leftovers_deleted: u64,
    /// Batches deleted by the retention policy.
    pub batches_deleted: u64,
    /// Applied archives left loose until their run is complete.
    pub waiting: u64,
    /// Archives in the applied directory above the applied position (left alone).
    pub beyond: u64,
    /// One line per failed step; the run went on past each of them.
    pub failures: Vec<String>,
}

impl Summary {
    /// One line for humans (stdout) and logs.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} batch(es) written ({} archives packed), {} batch(es) deleted by retention",
            self.batches_written, self.archives_packed, self.batches_deleted
        );
        if self.batches_recovered > 0 {
            s.push_str(&format!(
                ", {} batch(es) from an interrupted run verified ({} loose copies deleted)",
                self.batches_recovered, self.leftovers_deleted
            ));
        }
        s.push_str(&format!(
            "; {} applied archive(s) wait for a complete run",
            self.waiting
        ));
        if self.beyond > 0 {
            s.push_str(&format!(
                ", {} archive(s) above counter {} left alone",
                self.beyond, self.applied
            ));
        }
        if !self.failures.is_empty() {
            s.push_str(&format!("; {} failure(s)", self.failures.len()));
        }
        s
    }

    fn fail(&mut self, message: String) {
        tracing::error!("{message}");
        self.failures.push(message);
    }
}

/// The files found in the two directories.
#[derive(Debug, Default)]
struct Inventory {
    /// Loose archives by counter (counters with two files are left out, see `duplicates`).
    loose: BTreeMap<Counter, (ArchiveName, PathBuf)>,
    /// Counters with more than one file in the applied directory (e.g. two node ids).
    duplicates: BTreeMap<Counter, Vec<PathBuf>>,
    /// Batches on disk.
    batches: BTreeMap<BatchName, PathBuf>,
}

impl Inventory {
    /// The loose archives with these counters (those present), in the given order.
    fn members(&self, counters: impl Iterator<Item = Counter>) -> Vec<(ArchiveName, PathBuf)> {
        counters
            .filter_map(|c| self.loose.get(&c).cloned())
            .collect()
    }
}

fn list_dir(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(out)
}

/// Reads both directories. Leftovers of an interrupted run in the batches directory
/// (`*.part` batches, verification scratch directories) are removed: we hold the lock,
/// so nothing else is writing them.
fn take_inventory(layout: &Layout) -> anyhow::Result<Inventory> {
    let mut inv = Inventory::default();
    let mut all: BTreeMap<Counter, Vec<(ArchiveName, PathBuf)>> = BTreeMap::new();
    for (name, path) in list_dir(&layout.applied_dir)? {
        match classify(&name) {
            Ok(Entry::Archive(a)) => all.entry(a.counter).or_default().push((a, path)),
            Ok(Entry::InProgress) => {}
            Ok(Entry::Batch(_)) | Ok(Entry::Other) => {
                tracing::warn!(file = %path.display(), "ignoring unexpected file in the applied directory");
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "ignoring unexpected file in the applied directory: {e}")
            }
        }
    }
    for (counter, mut files) in all {
        if files.len() == 1 {
            inv.loose.insert(counter, files.remove(0));
        } else {
            inv.duplicates
                .insert(counter, files.into_iter().map(|(_, p)| p).collect());
        }
    }
    for (name, path) in list_dir(&layout.batches_dir)? {
        if name.starts_with(SCRATCH_PREFIX) {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale scratch directory {}", path.display()))?;
            continue;
        }
        match classify(&name) {
            Ok(Entry::Batch(b)) => {
                inv.batches.insert(b, path);
            }
            Ok(Entry::InProgress) if name.starts_with("slony_logs_") => {
                tracing::info!(file = %path.display(), "removing a partial batch left by an interrupted run");
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
            _ => {}
        }
    }
    Ok(inv)
}

/// Whether two files hold the same bytes.
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (fa, fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let mut ra = BufReader::with_capacity(64 * 1024, fa);
    let mut rb = BufReader::with_capacity(64 * 1024, fb);
    loop {
        let ba = ra.fill_buf()?;
        let bb = rb.fill_buf()?;
        if ba.is_empty() || bb.is_empty() {
            return Ok(ba.is_empty() && bb.is_empty());
        }
        let n = ba.len().min(bb.len());
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        ra.consume(n);
        rb.consume(n);
    }
}

/// Checks that the batch at `path` is whole and that its members `members` (a subset of
/// its range) are byte for byte the loose files: extracts them into a scratch directory
/// beside the batch and compares.
fn verify_subset(
    path: &Path,
    b: BatchName,
    members: &[(ArchiveName, PathBuf)],
    batches_dir: &Path,
) -> anyhow::Result<()> {
    let scratch = batches_dir.join(format!("{SCRATCH_PREFIX}{}-{}", b.from, b.to));
    let _ = fs::remove_dir_all(&scratch);
    slony_shared::private::create_dir(&scratch)
        .with_context(|| format!("creating {}", scratch.display()))?;
    let result = (|| {
        let wanted: BTreeSet<Counter> = members.iter().map(|(a, _)| a.counter).collect();
        // Our own local batch: no size limit beyond the batch itself (every entry is
        // still validated, and sizes are compared below).
        let got = batch::extract(path, &scratch, u64::MAX, |c| wanted.contains(&c))?;
        let got: BTreeMap<ArchiveName, PathBuf> = got.into_iter().collect();
        for (name, loose) in members {
            let Some(packed) = got.get(name) else {
                anyhow::bail!("{name} is not in the batch");
            };
            if !same_content(packed, loose)
                .with_context(|| format!("comparing {} with the batch", loose.display()))?
            {
                anyhow::bail!("{} differs from its copy in the batch", loose.display());
            }
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Deletes loose archives; returns how many went, and a failure line if some did not.
fn delete_loose(members: &[(ArchiveName, PathBuf)]) -> (u64, Option<String>) {
    let mut deleted = 0;
    let mut first_error = None;
    let mut errors = 0;
    for (_, p) in members {
        match fs::remove_file(p) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{}: {e}", p.display()));
            }
        }
    }
    let failure = first_error.map(|first| {
        format!("could not delete {errors} packed archive(s) (the next run retries): {first}")
    });
    (deleted, failure)
}

/// The newest mtime among `members` (None if none could be read).
fn newest_mtime(members: &[(ArchiveName, PathBuf)]) -> Option<SystemTime> {
    members
        .iter()
        .filter_map(|(_, p)| fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
}

/// One housekeeping run: recover interrupted batches, pack complete runs, apply the
/// retention policy. Steps that fail are recorded in [`Summary::failures`] and the run
/// goes on with the next batch.
///
/// # Errors
///
/// Only when a directory cannot be listed or created: then nothing has been done.
pub fn run(
    layout: &Layout,
    settings: &HousekeepingConfig,
    applied: Applied,
    now: SystemTime,
) -> anyhow::Result<Summary> {
    slony_shared::private::create_dir_all(&layout.batches_dir)
        .with_context(|| format!("creating {}", layout.batches_dir.display()))?;
    let inv = take_inventory(layout)?;
    let limit = packing_limit(applied, &inv);
    let mut summary = Summary {
        applied: limit,
        ..Summary::default()
    };
    report_duplicates(&inv, limit, &mut summary);

    let loose: BTreeSet<Counter> = inv.loose.keys().copied().collect();
    let existing: Vec<BatchName> = inv.batches.keys().copied().collect();
    let plan = plan_packing(&loose, &existing, limit, &pack_rules(settings.batch_size));
    summary.waiting = plan.waiting;
    summary.beyond = plan.beyond;
    warn_blocked(&plan.blocked);

    recover_batches(&plan.recover, &inv, layout, &mut summary);
    let written = pack_batches(&plan.pack, &inv, layout, &mut summary);

    let mut on_disk = inv.batches.clone();
    on_disk.extend(written);
    apply_retention(&on_disk, limit, settings, now, &mut summary);
    Ok(summary)
}

/// The applied position packing is bounded by: the database's counter, or, when only the
/// counter file is known, the lower of it and the newest archive in the applied
/// directory (logged).
fn packing_limit(applied: Applied, inv: &Inventory) -> Counter {
    match applied {
        Applied::Database(c) => c,
        Applied::CounterFile(c) => {
            let newest = inv
                .loose
                .keys()
                .chain(inv.duplicates.keys())
                .max()
                .copied()
                .unwrap_or(c);
            let limit = c.min(newest);
            tracing::warn!(
                counter_file = c.0,
                newest_applied_file = newest.0,
                limit = limit.0,
                "the database counter is unknown: packing only archives up to the lower of the counter file and the newest applied archive"
            );
            limit
        }
    }
}

/// Records a failure for every applied counter with more than one file: its batch is not
/// packed until only one is left.
fn report_duplicates(inv: &Inventory, limit: Counter, summary: &mut Summary) {
    for (counter, files) in &inv.duplicates {
        if *counter <= limit {
            let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            summary.fail(format!(
                "archive {counter} has {} files in the applied directory ({}); its batch is not packed until only one is left",
                files.len(),
                names.join(", ")
            ));
        }
    }
}

/// Logs the ranges an existing batch keeps loose (see [`PackPlan::blocked`]).
///
/// [`PackPlan::blocked`]: slony_shared::batch::plan::PackPlan::blocked
fn warn_blocked(blocked: &[(BatchName, BatchName)]) {
    for (range, batch) in blocked {
        tracing::warn!(
            "archives of range {}..={} stay loose: the existing batch {batch} covers part of that range, not from its start (was housekeeping.batch_size changed?)",
            range.from,
            range.to
        );
    }
}

/// Verifies each batch left by an interrupted run against the loose copies of its
/// members, and deletes those copies when they match.
fn recover_batches(
    recover: &[(BatchName, Vec<Counter>)],
    inv: &Inventory,
    layout: &Layout,
    summary: &mut Summary,
) {
    for (b, counters) in recover {
        let path = &inv.batches[b];
        let members = inv.members(counters.iter().copied());
        let verified = if members.len() as u64 == span(*b) {
            batch::verify_batch(path, &members).map_err(anyhow::Error::from)
        } else {
            verify_subset(path, *b, &members, &layout.batches_dir)
        };
        match verified {
            Ok(()) => {
                let (deleted, failure) = delete_loose(&members);
                tracing::info!(
                    batch = %b,
                    deleted,
                    "verified a batch left by an interrupted run; deleted the loose copies of its archives"
                );
                summary.batches_recovered += 1;
                summary.leftovers_deleted += deleted;
                if let Some(f) = failure {
                    summary.fail(format!("batch {b}: {f}"));
                }
            }
            Err(e) => summary.fail(format!(
                "batch {} does not match the {} loose archive(s) of its range still in {}; nothing deleted, check by hand: {e:#}",
                path.display(),
                members.len(),
                layout.applied_dir.display()
            )),
        }
    }
}

/// Packs each complete run into a verified batch and deletes its loose archives.
///
/// # Returns
///
/// The batches written, and where.
fn pack_batches(
    pack: &[BatchName],
    inv: &Inventory,
    layout: &Layout,
    summary: &mut Summary,
) -> Vec<(BatchName, PathBuf)> {
    let mut written = Vec::new();
    for b in pack {
        let members = inv.members((b.from.0..=b.to.0).map(Counter));
        let newest = newest_mtime(&members);
        match batch::write_batch(&layout.batches_dir, *b, &members) {
            Ok(path) => {
                if let Some(t) = newest {
                    date_batch(&path, t);
                }
                let (deleted, failure) = delete_loose(&members);
                tracing::info!(batch = %b, archives = members.len(), "packed and verified");
                summary.batches_written += 1;
                summary.archives_packed += deleted;
                written.push((*b, path));
                if let Some(f) = failure {
                    summary.fail(format!("batch {b}: {f}"));
                }
            }
            Err(e) => summary.fail(format!(
                "packing archives {}..={} into {b} failed; the loose archives are kept: {e:#}",
                b.from, b.to
            )),
        }
    }
    written
}

/// Gives a batch the mtime of its newest archive.
fn date_batch(path: &Path, newest: SystemTime) {
    // The batch ages with its newest archive (keep_days); failing to set it only keeps
    // the batch longer.
    if let Err(e) = File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(newest))
    {
        tracing::warn!(batch = %path.display(), "could not set the batch's mtime: {e}");
    }
}

/// Deletes the batches on disk the retention policy no longer keeps.
fn apply_retention(
    on_disk: &BTreeMap<BatchName, PathBuf>,
    limit: Counter,
    settings: &HousekeepingConfig,
    now: SystemTime,
    summary: &mut Summary,
) {
    let ages = batch_ages(on_disk, summary);
    for name in plan_retention(&ages, limit, settings.keep_days, settings.keep_count, now) {
        let path = &on_disk[&name];
        match fs::remove_file(path) {
            Ok(()) => {
                tracing::info!(batch = %name, "deleted by the retention policy");
                summary.batches_deleted += 1;
            }
            Err(e) => summary.fail(format!("deleting {} (retention): {e}", path.display())),
        }
    }
}

/// The age of each batch on disk; one whose age cannot be read is left out (and the
/// failure recorded), so retention skips it.
fn batch_ages(on_disk: &BTreeMap<BatchName, PathBuf>, summary: &mut Summary) -> Vec<BatchAge> {
    let mut ages = Vec::new();
    for (name, path) in on_disk {
        match fs::metadata(path).and_then(|m| m.modified()) {
            Ok(modified) => ages.push(BatchAge {
                name: *name,
                modified,
            }),
            Err(e) => summary.fail(format!(
                "reading the age of {}: {e}; retention skips it",
                path.display()
            )),
        }
    }
    ages
}

/// What one housekeeping run of the site did.
pub enum SiteRun {
    /// The pause file (this path) is present: a subscription change may be moving the
    /// counter, so nothing was done.
    Paused(PathBuf),
    /// The applied position is unknown (database unreachable, no counter file): nothing
    /// was packed or deleted. The message says so.
    PositionUnknown(String),
    /// The run's summary (its failures included).
    Done(Summary),
}

/// Housekeeping of this site, for a caller that holds the run lock (`housekeeping`, or
/// the pull daemon on its schedule). The work runs on the blocking pool (gzip, fsync).
///
/// # Errors
///
/// A directory cannot be listed or created: nothing was done.
pub async fn run_site(cfg: &ReceiverConfig) -> anyhow::Result<SiteRun> {
    if let Some(die) = crate::local::pause_file(cfg) {
        tracing::info!(file = %die.display(), "paused: the die file is present; housekeeping does nothing");
        return Ok(SiteRun::Paused(die));
    }
    let Some(applied) = applied_position(cfg).await else {
        let message = format!(
            "housekeeping: the applied position is unknown (database unreachable and no counter file at {}); nothing packed or deleted",
            cfg.counter_file().display()
        );
        tracing::error!("{message}");
        return Ok(SiteRun::PositionUnknown(message));
    };

    let layout = Layout {
        applied_dir: cfg.applied_dir(),
        batches_dir: cfg.site_dir().join("batches"),
    };
    let settings = cfg.housekeeping.clone();
    let summary =
        tokio::task::spawn_blocking(move || run(&layout, &settings, applied, SystemTime::now()))
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
    Ok(SiteRun::Done(summary))
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
            match crate::local::read_counter_file(&file) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn b(from: u64, to: u64) -> BatchName {
        BatchName::new(Counter(from), Counter(to))
    }

    fn ages(now: SystemTime, list: &[(u64, u64, u64)]) -> Vec<BatchAge> {
        list.iter()
            .map(|&(from, to, days_old)| BatchAge {
                name: b(from, to),
                modified: now - DAY * days_old as u32,
            })
            .collect()
    }

    #[test]
    fn retention() {
        let now = SystemTime::now();
        let all = ages(
            now,
            &[
                (1, 5, 50),
                (6, 10, 40),
                (11, 15, 20),
                (16, 20, 1),
                (21, 25, 0),
            ],
        );
        let applied = Counter(20);
        // Keep everything by default; never consider a batch above the applied position.
        assert!(plan_retention(&all, applied, None, None, now).is_empty());
        assert_eq!(
            plan_retention(&all, applied, None, Some(2), now),
            [b(1, 5), b(6, 10)]
        );
        assert_eq!(
            plan_retention(&all, applied, Some(30), None, now),
            [b(1, 5), b(6, 10)]
        );
        // Either rule deletes.
        assert_eq!(
            plan_retention(&all, applied, Some(45), Some(3), now),
            [b(1, 5)]
        );
        assert_eq!(
            plan_retention(&all, applied, Some(10), Some(3), now),
            [b(1, 5), b(6, 10), b(11, 15)]
        );
        // keep_count = 0 keeps none of the applied batches.
        assert_eq!(plan_retention(&all, applied, None, Some(0), now).len(), 4);
        // Absurd keep_days keep everything instead of overflowing.
        assert!(plan_retention(&all, applied, Some(u64::MAX), None, now).is_empty());
        // Count is by counter, not by age.
        let odd = ages(now, &[(1, 5, 0), (6, 10, 99)]);
        assert_eq!(
            plan_retention(&odd, Counter(10), None, Some(1), now),
            [b(1, 5)]
        );
    }

    // ----- run(), on a temporary directory (no database) -----

    fn archive(c: u64) -> ArchiveName {
        ArchiveName {
            counter: Counter(c),
            node_id: 2,
        }
    }

    struct Dirs {
        _tmp: tempfile::TempDir,
        layout: Layout,
    }

    fn dirs(loose: impl IntoIterator<Item = u64>) -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout {
            applied_dir: tmp.path().join("applied"),
            batches_dir: tmp.path().join("batches"),
        };
        fs::create_dir(&layout.applied_dir).unwrap();
        for c in loose {
            write_loose(&layout, c);
        }
        Dirs { _tmp: tmp, layout }
    }

    fn write_loose(layout: &Layout, c: u64) -> PathBuf {
        let p = layout.applied_dir.join(archive(c).to_string());
        fs::write(&p, format!("archive {c}\n")).unwrap();
        p
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn settings(batch_size: u64) -> HousekeepingConfig {
        HousekeepingConfig {
            batch_size,
            keep_days: None,
            keep_count: None,
            schedule: None,
        }
    }

    #[test]
    fn run_packs_recovers_and_refuses_mismatches() {
        let d = dirs(1..=12);
        let s = run(
            &d.layout,
            &settings(5),
            Applied::Database(Counter(11)),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(
            (s.batches_written, s.archives_packed, s.waiting, s.beyond),
            (2, 10, 1, 1)
        );
        assert!(s.failures.is_empty(), "{:?}", s.failures);
        assert_eq!(
            names(&d.layout.batches_dir),
            ["slony_logs_1-5.tar.gz", "slony_logs_6-10.tar.gz"]
        );
        assert_eq!(names(&d.layout.applied_dir).len(), 2);
        let batch1 = d.layout.batches_dir.join("slony_logs_1-5.tar.gz");
        assert_eq!(
            batch::list(&batch1).unwrap(),
            (1..=5).map(archive).collect::<Vec<_>>()
        );

        // Interrupted runs: all loose copies of 1..=5 back, and two of 6..=10.
        for c in 1..=5 {
            write_loose(&d.layout, c);
        }
        write_loose(&d.layout, 7);
        write_loose(&d.layout, 9);
        fs::write(
            d.layout.batches_dir.join("slony_logs_11-15.tar.gz.part"),
            "junk",
        )
        .unwrap();
        fs::create_dir(d.layout.batches_dir.join(".verify-6-10")).unwrap();
        let s = run(
            &d.layout,
            &settings(5),
            Applied::Database(Counter(11)),
            SystemTime::now(),
        )
        .unwrap();
        assert!(s.failures.is_empty(), "{:?}", s.failures);
        assert_eq!(
            (s.batches_written, s.batches_recovered, s.leftovers_deleted),
            (0, 2, 7)
        );
        assert_eq!(
            names(&d.layout.batches_dir),
            ["slony_logs_1-5.tar.gz", "slony_logs_6-10.tar.gz"]
        );
        assert_eq!(
            names(&d.layout.applied_dir),
            [archive(11).to_string(), archive(12).to_string()]
        );

        // A loose copy that differs from the batch: nothing of that batch is deleted, the
        // other batch is still handled, and the run reports the failure.
        let p3 = write_loose(&d.layout, 3);
        fs::write(&p3, "something else\n").unwrap();
        write_loose(&d.layout, 4);
        write_loose(&d.layout, 8);
        let s = run(
            &d.layout,
            &settings(5),
            Applied::Database(Counter(11)),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(s.failures.len(), 1, "{:?}", s.failures);
        assert!(
            s.failures[0].contains("slony_logs_1-5.tar.gz"),
            "{}",
            s.failures[0]
        );
        assert_eq!(s.batches_recovered, 1);
        assert!(p3.exists() && d.layout.applied_dir.join(archive(4).to_string()).exists());
        assert!(!d.layout.applied_dir.join(archive(8).to_string()).exists());
        assert!(!names(&d.layout.batches_dir)
            .iter()
            .any(|n| n.starts_with(SCRATCH_PREFIX)));
    }

    #[test]
    fn run_with_counter_file_is_bounded_by_the_files() {
        let d = dirs(1..=7);
        // The counter file claims 100, but only 1..=7 are here: 1..=5 is packed, and
        // the retention policy only considers batches up to 7.
        let mut hk = settings(5);
        hk.keep_count = Some(0);
        let s = run(
            &d.layout,
            &hk,
            Applied::CounterFile(Counter(100)),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(s.applied, Counter(7));
        assert_eq!((s.batches_written, s.batches_deleted, s.waiting), (1, 1, 2));
        assert!(names(&d.layout.batches_dir).is_empty());
        // The counter file is lower than the files: it wins.
        let d = dirs(1..=7);
        let s = run(
            &d.layout,
            &settings(5),
            Applied::CounterFile(Counter(4)),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!((s.batches_written, s.beyond), (0, 3));
    }

    #[test]
    fn run_reports_duplicates_and_skips_their_range() {
        let d = dirs(1..=10);
        let other_node = ArchiveName {
            counter: Counter(2),
            node_id: 3,
        };
        fs::write(d.layout.applied_dir.join(other_node.to_string()), "x").unwrap();
        let s = run(
            &d.layout,
            &settings(5),
            Applied::Database(Counter(10)),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(s.failures.len(), 1);
        assert_eq!(names(&d.layout.batches_dir), ["slony_logs_6-10.tar.gz"]);
    }

    #[test]
    fn batch_mtime_is_its_newest_archive() {
        let d = dirs(1..=5);
        let old = SystemTime::now() - DAY * 40;
        for c in 1..=5 {
            let p = d.layout.applied_dir.join(archive(c).to_string());
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let mut hk = settings(5);
        hk.keep_days = Some(30);
        // Packed, then at once deleted: its archives are 40 days old.
        let s = run(
            &d.layout,
            &hk,
            Applied::Database(Counter(5)),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!((s.batches_written, s.batches_deleted), (1, 1));
        assert!(names(&d.layout.batches_dir).is_empty());
        assert!(names(&d.layout.applied_dir).is_empty());
    }
}
