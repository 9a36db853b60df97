//! The cutter's unit tests: a provider layout in a temporary directory, archives written
//! as slon writes them.

use super::pass::PassReport;
use super::*;
use crate::site;
use slony_shared::archive::name::ArchiveName;
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use slony_shared::ident::QualifiedTable;

struct Env {
    root: tempfile::TempDir,
    cfg: ManagerConfig,
    cutter: CutterHandle,
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
    Env {
        root,
        cfg,
        cutter: CutterHandle::new().0,
    }
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
        pass(&self.cfg, &self.cutter, &AtomicBool::new(false)).unwrap()
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
        let _g = e.cutter.lock_lists();
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
        let _g = e.cutter.lock_lists();
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
        let _g = e.cutter.lock_lists();
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
