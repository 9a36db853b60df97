/*!
`slony-manager housekeeping`: packs each site's archives into
`slony_logs_<from>-<to>.tar.gz` batches and applies the retention policy.

For every site of `<subscribers_dir>` (a directory with a valid site name), in
`<site_log_dir>/<node>/`:

- **Packing.** Batches are aligned to multiples of `[housekeeping] batch_size` (N):
  `k*N+1 ..= (k+1)*N`, so every run produces the same names. Only a complete run of
  loose archives is packed; the first batch of a site that started in the middle of a
  range (its first counter is its `since`) begins at that first counter
  ([`pack_rules`]; the plan is [`slony_shared::batch::plan`]'s). Only archives
  below the site's `cut_counter` are packed: the newest archive cut stays loose, so a
  batch never holds a counter a later subscription change could have to cut again (see
  [`crate::cutter`]). [`batch::write_batch`] reads the batch back and compares it with
  the archives before it gets its final name; only then are the loose archives deleted.
  A batch found beside loose copies of its members (a run interrupted between the two
  steps) is verified again before those copies go. The batch file's mtime is set to its
  newest archive's, so its age is the age of its data.
- **Retention.** Batches and loose archives are deleted once the site has acknowledged
  them and they are older than `[housekeeping] retention_days` (default 7). The site's
  `slony-receiver pull` writes the last counter it applied into
  its exchange directory, `<trigger_dir>/<node>/applied_counter` ([`slony_shared::ack`]); a batch goes only when
  its last member is acknowledged. A site that has never acknowledged (or whose file does
  not parse) keeps everything, and the run says so. The age keeps a few days for the
  operator to look back; the acknowledgement makes sure nothing a site still needs is
  lost. `retention_days = 0` keeps everything.
- A site whose subscription is being changed (`<node>.new/` or `<node>.request.json`
  exists) is skipped entirely: its directory is about to be re-cut from `since` on.

One bad site does not stop the others: its error is reported and the exit code is 1.
The command takes its own lock, so two runs never overlap; it runs beside `run`.
*/

use crate::alert::Alerts;
use crate::config::ManagerConfig;
use crate::cutter::read_cut_counter;
use crate::fsutil;
use anyhow::Context;
use slony_shared::ack;
use slony_shared::archive::name::{classify, ArchiveName, BatchName, Entry};
use slony_shared::batch;
use slony_shared::batch::plan::{plan_packing, FirstBatch, PackPlan, PackRules, PartlyCovered};
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use slony_shared::lock::RunLock;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// One day, for `retention_days`.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The manager's packing rules: a site's first batch starts at its first counter (its
/// `since`), and a range batches of another size already cover in part stays loose.
fn pack_rules(batch_size: u64) -> PackRules {
    PackRules {
        batch_size,
        first_batch: FirstBatch::AtStreamStart,
        partly_covered: PartlyCovered::LeaveLoose,
    }
}

/// What happened to one site.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SiteSummary {
    /// Batches written.
    pub packed: u64,
    /// Archives packed (and deleted loose).
    pub archives_packed: u64,
    /// Loose copies of batch members deleted after verifying the batch again.
    pub recovered: u64,
    /// Batches deleted by the retention policy.
    pub batches_expired: u64,
    /// Loose archives deleted by the retention policy.
    pub archives_expired: u64,
    /// Why the site was skipped, if it was.
    pub skipped: Option<String>,
    /// The counter the site acknowledged, if it did.
    pub acknowledged: Option<Counter>,
    /// Files with archive or batch names that the manager did not write (a symbolic
    /// link, a hard link, another owner's file): never packed, counted or deleted.
    pub foreign: Vec<String>,
}

/// Runs housekeeping for every site; prints one line per site.
///
/// # Returns
///
/// The exit code: 0, or 1 when a site failed or holds files the manager did not write.
///
/// # Errors
///
/// Another housekeeping run holds the lock, or the subscribers directory cannot be read.
pub fn run(cfg: &ManagerConfig) -> anyhow::Result<u8> {
    let _lock = RunLock::try_acquire(&cfg.subscribers_dir.join("slony-manager-housekeeping.lock"))?;
    let now = SystemTime::now();
    // This run's own hourly shares: a refused acknowledgement alerts once per run.
    let alerts = Alerts::new();
    let mut failed = 0;
    for node in sites(&cfg.subscribers_dir)? {
        match site(cfg, &alerts, &node, now) {
            Ok(s) => {
                if !s.foreign.is_empty() {
                    failed += 1;
                    println!(
                        "{node}: FAILED: files the manager did not write, left alone (remove them): {}",
                        s.foreign.join("; ")
                    );
                }
                if let Some(why) = &s.skipped {
                    tracing::info!(%node, reason = %why, "housekeeping skipped");
                    println!("{node}: skipped ({why})");
                } else {
                    tracing::info!(
                        %node,
                        batches = s.packed,
                        archives = s.archives_packed,
                        recovered = s.recovered,
                        batches_expired = s.batches_expired,
                        archives_expired = s.archives_expired,
                        "housekeeping done"
                    );
                    let acked = match s.acknowledged {
                        Some(c) => format!("acknowledged up to {c}"),
                        None => "never acknowledged: nothing expired".into(),
                    };
                    println!(
                        "{node}: packed {} archives into {} batches, {} loose copies of batches removed, expired {} batches and {} archives ({acked})",
                        s.archives_packed, s.packed, s.recovered, s.batches_expired, s.archives_expired
                    );
                }
            }
            Err(e) => {
                failed += 1;
                tracing::error!(%node, error = %format!("{e:#}"), "housekeeping failed for this site");
                println!("{node}: FAILED: {e:#}");
            }
        }
    }
    Ok(u8::from(failed > 0))
}

/// The sites: directories of `subscribers_dir` with a valid site name.
fn sites(dir: &Path) -> anyhow::Result<Vec<NodeName>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(node) = entry
            .file_name()
            .to_str()
            .and_then(|n| NodeName::new(n).ok())
        {
            if entry.path().is_dir() {
                out.push(node);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Housekeeping of one site; a refused acknowledgement is alerted through `alerts`.
///
/// # Errors
///
/// Listing, packing or deleting failed (what was done before stays done).
pub fn site(
    cfg: &ManagerConfig,
    alerts: &Alerts,
    node: &NodeName,
    now: SystemTime,
) -> anyhow::Result<SiteSummary> {
    let mut summary = SiteSummary::default();
    if fsutil::exists(&cfg.new_site_dir(node)) || fsutil::exists(&cfg.state_file(node)) {
        summary.skipped = Some("a subscription change is in progress".into());
        return Ok(summary);
    }
    let dir = cfg.site_log_dir(node);
    if !dir.is_dir() {
        summary.skipped = Some(format!("{} does not exist yet", dir.display()));
        return Ok(summary);
    }
    let (loose, batches, planted) = list_checked(&dir)?;
    summary.foreign = planted;
    // Never the newest archive cut (see the module doc).
    let newest = match read_cut_counter(&cfg.site_dir(node))? {
        Some(c) => Some(c),
        None => loose.keys().next_back().copied(),
    };
    let Some(newest) = newest else {
        return Ok(summary);
    };
    let upper = Counter(newest.0.saturating_sub(1));
    let counters: BTreeSet<Counter> = loose.keys().copied().collect();
    let batch_names: Vec<BatchName> = batches.keys().copied().collect();
    let plan = plan_packing(
        &counters,
        &batch_names,
        upper,
        &pack_rules(cfg.housekeeping.batch_size),
    );

    recover(&plan, &loose, &batches, &mut summary)?;
    pack(&dir, node, &plan, &loose, &mut summary)?;
    expire(cfg, alerts, node, &dir, upper, now, &mut summary)?;
    if summary.packed + summary.recovered + summary.batches_expired + summary.archives_expired > 0 {
        fsutil::sync_dir(&dir).with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(summary)
}

/// Batches on disk beside loose copies of their members: the copies are checked against
/// the batch, then removed.
fn recover(
    plan: &PackPlan,
    loose: &Loose,
    batches: &BTreeMap<BatchName, PathBuf>,
    summary: &mut SiteSummary,
) -> anyhow::Result<()> {
    for (b, counters) in &plan.recover {
        let expected: Vec<(ArchiveName, PathBuf)> = counters
            .iter()
            .filter_map(|c| loose.get(c).cloned())
            .collect();
        let path = &batches[b];
        // Packing may have been cut off after the batch was renamed into place and some
        // of its loose copies deleted: the copies left are checked against it.
        batch::verify_batch_beside(path, &expected).with_context(|| {
            format!(
                "{} lies beside loose copies of its archives that differ from it; both kept",
                path.display()
            )
        })?;
        // Copies go in counter order, so the newest member's copy is still here: the run
        // may have been cut off before it gave the batch its data's age.
        date_as_newest(path, &expected)?;
        for (i, (_, p)) in expected.iter().enumerate() {
            fsutil::remove_file(p)?;
            crash_at_nth("housekeeping-after-recovered-delete", i + 1);
        }
        summary.recovered += expected.len() as u64;
    }
    Ok(())
}

/// Packs the complete runs of `plan` into batches in `dir`, then removes their loose
/// archives.
fn pack(
    dir: &Path,
    node: &NodeName,
    plan: &PackPlan,
    loose: &Loose,
    summary: &mut SiteSummary,
) -> anyhow::Result<()> {
    for b in &plan.pack {
        let list: Vec<(ArchiveName, PathBuf)> =
            loose.range(b.from..=b.to).map(|(_, m)| m.clone()).collect();
        let path = batch::write_batch(dir, *b, &list)
            .with_context(|| format!("packing {b} for {node}"))?;
        crash_at("housekeeping-after-rename");
        date_as_newest(&path, &list)?;
        for (i, (_, p)) in list.iter().enumerate() {
            fsutil::remove_file(p)?;
            crash_at_nth("housekeeping-after-delete", i + 1);
        }
        summary.packed += 1;
        summary.archives_packed += list.len() as u64;
    }
    Ok(())
}

/// Retention: by mtime, only what the site acknowledged, never beyond `upper`. A refused
/// acknowledgement is alerted and counts as none.
fn expire(
    cfg: &ManagerConfig,
    alerts: &Alerts,
    node: &NodeName,
    dir: &Path,
    upper: Counter,
    now: SystemTime,
    summary: &mut SiteSummary,
) -> anyhow::Result<()> {
    summary.acknowledged = read_ack(cfg, node).unwrap_or_else(|why| {
        alerts.raise(
            cfg,
            node.as_str(),
            &format!("site {node}: its acknowledgement is refused"),
            &why,
        );
        None
    });
    let upper = summary.acknowledged.map_or(Counter(0), |a| a.min(upper));
    if let Some(days) = cfg.housekeeping.retention_days.filter(|_| upper.0 > 0) {
        let limit = now
            .checked_sub(DAY * u32::try_from(days).unwrap_or(u32::MAX))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (loose, batches) = list(dir)?;
        let old = |p: &Path| {
            p.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < limit)
        };
        for (b, p) in &batches {
            if b.to <= upper && old(p) {
                fsutil::remove_file(p)?;
                summary.batches_expired += 1;
            }
        }
        for (c, (_, p)) in &loose {
            if *c <= upper && old(p) {
                fsutil::remove_file(p)?;
                summary.archives_expired += 1;
            }
        }
    }
    Ok(())
}

/// Gives a batch the mtime of the newest of `members`' files, so that its age is the age
/// of its data (retention goes by it).
fn date_as_newest(batch: &Path, members: &[(ArchiveName, PathBuf)]) -> anyhow::Result<()> {
    let newest = members
        .iter()
        .filter_map(|(_, p)| p.metadata().and_then(|m| m.modified()).ok())
        .max();
    if let Some(t) = newest {
        std::fs::File::options()
            .write(true)
            .open(batch)
            .and_then(|f| f.set_modified(t))
            .with_context(|| format!("setting the mtime of {}", batch.display()))?;
    }
    Ok(())
}

/// The crash windows of packing, for the tests that kill housekeeping between its steps.
fn crash_at(point: &str) {
    slony_shared::crash::point("SLONY_MANAGER_CRASH_AT", point);
}

fn crash_at_nth(point: &str, n: usize) {
    slony_shared::crash::nth_point("SLONY_MANAGER_CRASH_AT", point, n);
}

/// The site's acknowledgement ([`slony_shared::ack`]), written by the subscriber into its
/// exchange directory, `<trigger_dir>/<node>/applied_counter`: read as hostile input (a
/// plain file of the site's own account, a few bytes, one counter); anything else counts
/// as no acknowledgement, with an alert naming its writer.
///
/// Returns the counter, or why the file there was refused.
pub fn read_ack(cfg: &ManagerConfig, node: &NodeName) -> Result<Option<Counter>, String> {
    let path = cfg.exchange_file(node, ack::ACK_FILE);
    let Some(site) = cfg.registry.get(node) else {
        return Ok(None);
    };
    let refused = |why: String| {
        Err(format!(
            "{} is not taken ({why}): nothing of the site's is deleted until it is",
            path.display()
        ))
    };
    match crate::exchange::read_from_site(cfg, site, &path, ack::MAX_LEN as usize) {
        Ok(crate::fsutil::OtherSide::Missing) => Ok(None),
        Ok(crate::fsutil::OtherSide::Bytes(bytes)) => match ack::parse(&bytes) {
            Ok(c) => Ok(Some(c)),
            Err(e) => refused(e.to_string()),
        },
        Ok(crate::fsutil::OtherSide::Refused(why)) => refused(why),
        Err(e) => refused(format!("{e:#}")),
    }
}

type Loose = BTreeMap<Counter, (ArchiveName, PathBuf)>;

/// The archives and batches of a site directory, and the names of foreign files.
fn list(dir: &Path) -> anyhow::Result<(Loose, BTreeMap<BatchName, PathBuf>)> {
    list_checked(dir).map(|(l, b, _)| (l, b))
}

/// [`list`], with the files under archive or batch names that the manager did not write.
fn list_checked(dir: &Path) -> anyhow::Result<(Loose, BTreeMap<BatchName, PathBuf>, Vec<String>)> {
    let mut loose = BTreeMap::new();
    let mut batches = BTreeMap::new();
    let mut planted = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if matches!(classify(name), Ok(Entry::Archive(_) | Entry::Batch(_))) {
            if let Some(why) = fsutil::not_ours(&entry.path()) {
                tracing::warn!(file = %entry.path().display(), reason = %why, "a file the manager did not write, under an archive's name: left alone");
                planted.push(format!("{name} {why}"));
                continue;
            }
        }
        match classify(name) {
            Ok(Entry::Archive(a)) => {
                loose.insert(a.counter, (a, entry.path()));
            }
            Ok(Entry::Batch(b)) => {
                batches.insert(b, entry.path());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "ignoring a file"),
        }
    }
    Ok((loose, batches, planted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site;
    use slony_shared::ident::QualifiedTable;

    fn b(from: u64, to: u64) -> BatchName {
        BatchName::new(Counter(from), Counter(to))
    }

    fn env(batch: u64, days: u64) -> (tempfile::TempDir, ManagerConfig) {
        let root = tempfile::tempdir().unwrap();
        for d in ["triggers", "subscribers", "site_logs"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let path = root.path().join("m.toml");
        std::fs::write(
            &path,
            format!(
                "cluster = \"lab\"\ntrigger_dir = \"triggers\"\nsubscribers_dir = \"subscribers\"\n\
                 site_log_dir = \"site_logs\"\n{}[database]\nuser = \"u\"\ndbname = \"d\"\n\
                 [housekeeping]\nbatch_size = {batch}\nretention_days = {days}\n",
                crate::config::test_sites(&["a"])
            ),
        )
        .unwrap();
        let cfg = ManagerConfig::load(&path).unwrap();
        (root, cfg)
    }

    fn name(c: u64) -> String {
        ArchiveName {
            counter: Counter(c),
            node_id: 2,
        }
        .to_string()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Site `a` of table s1.t1, cut up to 12, with archives 1 to 12 in its directory.
    fn site_with_twelve_archives(cfg: &ManagerConfig) -> (NodeName, PathBuf) {
        let node = NodeName::new("a").unwrap();
        let site_dir = cfg.site_dir(&node);
        site::prepare_new(&site_dir, &[QualifiedTable::parse("s1.t1").unwrap()]).unwrap();
        std::fs::write(site_dir.join("cut_counter"), "12\n").unwrap();
        let log = cfg.site_log_dir(&node);
        std::fs::create_dir_all(&log).unwrap();
        for c in 1..=12 {
            std::fs::write(log.join(name(c)), format!("archive {c}\n")).unwrap();
        }
        (node, log)
    }

    #[test]
    fn packs_verifies_and_deletes_then_expires() {
        let (_root, cfg) = env(5, 7);
        let (node, log) = site_with_twelve_archives(&cfg);
        let now = SystemTime::now();
        let s = site(&cfg, &Alerts::new(), &node, now).unwrap();
        assert_eq!((s.packed, s.archives_packed), (2, 10));
        let mut want = vec![
            name(11),
            name(12),
            "slony_logs_1-5.tar.gz".into(),
            "slony_logs_6-10.tar.gz".into(),
        ];
        want.sort();
        assert_eq!(files(&log), want);
        let listed = batch::list(&log.join("slony_logs_6-10.tar.gz")).unwrap();
        assert_eq!(listed.len(), 5);
        // A rerun changes nothing.
        assert_eq!(
            site(&cfg, &Alerts::new(), &node, now).unwrap(),
            SiteSummary::default()
        );
        // Ten days later, nothing goes while the site has not acknowledged (a garbled
        // or linked acknowledgement counts as none).
        let later = now + DAY * 10;
        let s = site(&cfg, &Alerts::new(), &node, later).unwrap();
        assert_eq!(
            (s.batches_expired, s.archives_expired, s.acknowledged),
            (0, 0, None)
        );
        let ackf = cfg.exchange_file(&node, ack::ACK_FILE);
        std::fs::create_dir_all(cfg.exchange_dir(&node)).unwrap();
        std::fs::write(&ackf, "12; rm -rf /\n").unwrap();
        assert_eq!(
            site(&cfg, &Alerts::new(), &node, later)
                .unwrap()
                .batches_expired,
            0
        );
        std::fs::remove_file(&ackf).unwrap();
        std::fs::write(log.join("elsewhere"), "12\n").unwrap();
        std::os::unix::fs::symlink(log.join("elsewhere"), &ackf).unwrap();
        assert_eq!(
            site(&cfg, &Alerts::new(), &node, later)
                .unwrap()
                .batches_expired,
            0
        );
        std::fs::remove_file(&ackf).unwrap();
        // A hard link, or an acknowledgement in the old place, the archive directory
        // (which only the manager writes now), counts as none.
        std::fs::hard_link(log.join("elsewhere"), &ackf).unwrap();
        assert_eq!(
            site(&cfg, &Alerts::new(), &node, later)
                .unwrap()
                .batches_expired,
            0
        );
        std::fs::remove_file(&ackf).unwrap();
        std::fs::rename(log.join("elsewhere"), log.join(ack::ACK_FILE)).unwrap();
        assert_eq!(
            site(&cfg, &Alerts::new(), &node, later)
                .unwrap()
                .batches_expired,
            0
        );
        std::fs::remove_file(log.join(ack::ACK_FILE)).unwrap();
        assert_eq!(files(&log).len(), 4);
        // Acknowledged up to 7: only the batch whose every member is acknowledged goes.
        std::fs::write(&ackf, ack::render(Counter(7))).unwrap();
        let s = site(&cfg, &Alerts::new(), &node, later).unwrap();
        assert_eq!((s.batches_expired, s.archives_expired), (1, 0));
        assert_eq!(s.acknowledged, Some(Counter(7)));
        // Acknowledged up to 12: everything below the newest cut goes, the newest stays.
        std::fs::write(&ackf, ack::render(Counter(12))).unwrap();
        let s = site(&cfg, &Alerts::new(), &node, later).unwrap();
        assert_eq!((s.batches_expired, s.archives_expired), (1, 1));
        assert_eq!(files(&log), vec![name(12)]);
        // Not yet old enough: nothing goes, acknowledged or not.
        let s = site(&cfg, &Alerts::new(), &node, now).unwrap();
        assert_eq!((s.batches_expired, s.archives_expired), (0, 0));
    }

    #[test]
    fn planted_links_are_never_followed_packed_or_deleted() {
        let (root, cfg) = env(5, 7);
        let (node, log) = site_with_twelve_archives(&cfg);
        // The site replaces archive 3 by a link to a provider file, and archive 4 by a
        // hard link to another file of the provider's.
        let secret = root.path().join("secret");
        std::fs::write(&secret, "provider secret\n").unwrap();
        std::fs::remove_file(log.join(name(3))).unwrap();
        std::os::unix::fs::symlink(&secret, log.join(name(3))).unwrap();
        std::fs::remove_file(log.join(name(4))).unwrap();
        std::fs::hard_link(&secret, log.join(name(4))).unwrap();
        let s = site(&cfg, &Alerts::new(), &node, SystemTime::now()).unwrap();
        assert_eq!(s.foreign.len(), 2, "{:?}", s.foreign);
        assert!(s.foreign.iter().any(|f| f.contains("symbolic link")));
        assert!(s.foreign.iter().any(|f| f.contains("hard links")));
        // 1-5 cannot be packed without 3 and 4; 6-10 is.
        assert_eq!(s.packed, 1);
        for f in files(&log) {
            if f.ends_with(".tar.gz") {
                for n in batch::list(&log.join(&f)).unwrap() {
                    assert_ne!(n.to_string(), name(3));
                }
            }
        }
        assert!(log.join(name(3)).symlink_metadata().is_ok(), "left alone");
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "provider secret\n"
        );
    }

    #[test]
    fn a_site_being_changed_is_skipped() {
        let (_root, cfg) = env(2, 7);
        let node = NodeName::new("a").unwrap();
        let site_dir = cfg.site_dir(&node);
        site::prepare_new(&site_dir, &[QualifiedTable::parse("s1.t1").unwrap()]).unwrap();
        site::prepare_new(
            &cfg.new_site_dir(&node),
            &[QualifiedTable::parse("s1.t2").unwrap()],
        )
        .unwrap();
        let log = cfg.site_log_dir(&node);
        std::fs::create_dir_all(&log).unwrap();
        for c in 1..=5 {
            std::fs::write(log.join(name(c)), "x").unwrap();
        }
        let s = site(&cfg, &Alerts::new(), &node, SystemTime::now()).unwrap();
        assert!(s.skipped.is_some());
        assert_eq!(files(&log).len(), 5);
    }

    #[test]
    fn an_interrupted_pack_is_recovered_after_verification() {
        let (_root, cfg) = env(3, 0);
        let node = NodeName::new("a").unwrap();
        let site_dir = cfg.site_dir(&node);
        site::prepare_new(&site_dir, &[QualifiedTable::parse("s1.t1").unwrap()]).unwrap();
        let log = cfg.site_log_dir(&node);
        std::fs::create_dir_all(&log).unwrap();
        let mut members = Vec::new();
        for c in 1..=4 {
            let p = log.join(name(c));
            std::fs::write(&p, format!("a{c}")).unwrap();
            if c <= 3 {
                members.push((ArchiveName::parse(&name(c)).unwrap(), p));
            }
        }
        batch::write_batch(&log, b(1, 3), &members).unwrap();
        // A loose copy that differs from the batch: both are kept, the site fails.
        std::fs::write(log.join(name(2)), "changed").unwrap();
        assert!(site(&cfg, &Alerts::new(), &node, SystemTime::now()).is_err());
        std::fs::write(log.join(name(2)), "a2").unwrap();
        // Cut off before the batch got its data's age: recovery gives it.
        let old = SystemTime::now() - 3 * DAY;
        for c in 1..=3 {
            let f = std::fs::File::options()
                .write(true)
                .open(log.join(name(c)))
                .unwrap();
            f.set_modified(old - Duration::from_secs(3 - c)).unwrap();
        }
        let s = site(&cfg, &Alerts::new(), &node, SystemTime::now()).unwrap();
        assert_eq!(s.recovered, 3);
        let batch_mtime = std::fs::metadata(log.join("slony_logs_1-3.tar.gz"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(batch_mtime, old);
        assert_eq!(
            files(&log),
            vec![name(4), "slony_logs_1-3.tar.gz".to_string()]
        );
        // Killed after the batch was renamed into place and its first loose copy (or its
        // first two) deleted: the copies left match the batch, and go.
        for deleted in [&[1][..], &[1, 2], &[2]] {
            batch::extract(&log.join("slony_logs_1-3.tar.gz"), &log, 1 << 20, |_| true).unwrap();
            for c in deleted {
                std::fs::remove_file(log.join(name(*c))).unwrap();
            }
            let s = site(&cfg, &Alerts::new(), &node, SystemTime::now()).unwrap();
            assert_eq!(s.recovered, 3 - deleted.len() as u64, "{deleted:?}");
            assert_eq!(
                files(&log),
                vec![name(4), "slony_logs_1-3.tar.gz".to_string()],
                "{deleted:?}"
            );
        }
        // A loose copy that differs is still refused when others are gone.
        batch::extract(&log.join("slony_logs_1-3.tar.gz"), &log, 1 << 20, |_| true).unwrap();
        std::fs::remove_file(log.join(name(1))).unwrap();
        std::fs::write(log.join(name(3)), "changed").unwrap();
        assert!(site(&cfg, &Alerts::new(), &node, SystemTime::now()).is_err());
    }
}
