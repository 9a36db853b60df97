/*!
What the original tools left on disk, as `import-legacy` finds it: each site's archive
directory (its counters, loose and in batches, and whether they are contiguous), what a
change in progress left (`<node>.new/`, `<node>.new.lst`), and request files of the
original shared layout still in `triggerdir`. Only names are read, never contents; the
archives stay where they are.
*/

use anyhow::{bail, Context};
use slony_shared::archive::name::{classify, Entry};
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use std::path::Path;

/// A site's archive directory, by the names in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Archives {
    /// Loose archives (`slony1_log_<n>_<counter>.sql`).
    pub loose: usize,
    /// Batches (`slony_logs_<from>-<to>.tar.gz`).
    pub batches: usize,
    /// The oldest counter present.
    pub first: Option<Counter>,
    /// The newest counter present: the last one cut for the site.
    pub newest: Option<Counter>,
    /// The counters missing between `first` and `newest`, as inclusive ranges.
    pub gaps: Vec<(Counter, Counter)>,
    /// Names that claim to be archives or batches but do not parse.
    pub odd: Vec<String>,
}

/// Lists `dir` (a site's archive directory; it must exist and not be a link).
///
/// # Errors
///
/// `dir` is a link or not a directory (refused: it would lead the manager elsewhere), or
/// cannot be listed.
pub fn archives(dir: &Path) -> anyhow::Result<Archives> {
    let meta = dir
        .symlink_metadata()
        .with_context(|| format!("inspecting {}", dir.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link: a site's archive directory must be a directory of its own inside subscribers_dir; nothing was imported",
            dir.display()
        );
    }
    if !meta.is_dir() {
        bail!("{} is not a directory; nothing was imported", dir.display());
    }
    let mut ranges = Vec::new();
    let mut out = Archives::default();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        match classify(name) {
            Ok(Entry::Archive(a)) => {
                out.loose += 1;
                ranges.push((a.counter.0, a.counter.0));
            }
            Ok(Entry::Batch(b)) => {
                out.batches += 1;
                ranges.push((b.from.0, b.to.0));
            }
            Ok(_) => {}
            Err(_) => out.odd.push(name.to_string()),
        }
    }
    out.odd.sort();
    let (first, newest, gaps) = coverage(ranges);
    out.first = first;
    out.newest = newest;
    out.gaps = gaps;
    Ok(out)
}

/// The oldest and newest counters of `ranges` (inclusive, in any order, overlapping or
/// not) and the counters none of them covers in between.
pub fn coverage(
    mut ranges: Vec<(u64, u64)>,
) -> (Option<Counter>, Option<Counter>, Vec<(Counter, Counter)>) {
    ranges.sort_unstable();
    let mut gaps = Vec::new();
    let mut covered: Option<u64> = None;
    for (from, to) in &ranges {
        if let Some(upto) = covered {
            if *from > upto.saturating_add(1) {
                gaps.push((Counter(upto + 1), Counter(from - 1)));
            }
        }
        covered = Some(covered.map_or(*to, |u| u.max(*to)));
    }
    (
        ranges.first().map(|(f, _)| Counter(*f)),
        covered.map(Counter),
        gaps,
    )
}

/// slon's archive directory (`kPSLlogsSourceDir`) as the original parser left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlonDir {
    /// The oldest archive still waiting under its own name (`.sql`), if any.
    pub oldest_waiting: Option<Counter>,
    /// The newest archive the parser renamed `<name>.sql.parsed` once it was cut.
    pub newest_parsed: Option<Counter>,
    /// How many such `.sql.parsed` files there are.
    pub parsed: usize,
}

/// Lists slon's archive directory; a missing one is empty.
///
/// # Errors
///
/// It cannot be listed.
pub fn slon_dir(dir: &Path) -> anyhow::Result<SlonDir> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SlonDir::default()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = SlonDir::default();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(base) = name.strip_suffix(".parsed") {
            if let Ok(a) = slony_shared::archive::name::ArchiveName::parse(base) {
                out.parsed += 1;
                out.newest_parsed = out.newest_parsed.max(Some(a.counter));
            }
        } else if let Ok(Entry::Archive(a)) = classify(name) {
            out.oldest_waiting = Some(out.oldest_waiting.map_or(a.counter, |c| c.min(a.counter)));
        }
    }
    Ok(out)
}

/// What a change in progress of the original tools left for `node`: `<node>.new/` in
/// the archives' directory, `<node>.new.lst` in `tables_dir` (a parser configuration
/// line naming them is found by the caller).
pub fn change_in_progress(
    node: &NodeName,
    subscribers_dir: &Path,
    tables_dir: &Path,
) -> Vec<String> {
    let mut found = Vec::new();
    for path in [
        subscribers_dir.join(format!("{node}.new")),
        tables_dir.join(format!("{node}.new.lst")),
    ] {
        if path.symlink_metadata().is_ok() {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The files directly in `trigger_dir` (not the sites' directories): requests, answers
/// and SQL of the original shared layout, which `run` would move aside as refused.
///
/// # Errors
///
/// `trigger_dir` cannot be listed (a missing one is no error: `run` wants it made).
pub fn trigger_leftovers(trigger_dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(trigger_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", trigger_dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", trigger_dir.display()))?;
        let is_dir = entry
            .path()
            .symlink_metadata()
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !is_dir {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> Counter {
        Counter(n)
    }

    #[test]
    fn coverage_of_loose_archives_and_batches() {
        assert_eq!(coverage(vec![]), (None, None, vec![]));
        assert_eq!(
            coverage(vec![(7, 7), (1, 5), (6, 6)]),
            (Some(c(1)), Some(c(7)), vec![])
        );
        // Overlaps (an archive also in a batch) are no gap.
        assert_eq!(
            coverage(vec![(1, 5), (5, 5), (3, 8)]),
            (Some(c(1)), Some(c(8)), vec![])
        );
        assert_eq!(
            coverage(vec![(11, 11), (1, 5), (9, 9), (20, 30)]),
            (
                Some(c(1)),
                Some(c(30)),
                vec![(c(6), c(8)), (c(10), c(10)), (c(12), c(19))]
            )
        );
        // A range inside an earlier, longer one does not move the end back.
        assert_eq!(
            coverage(vec![(1, 10), (2, 3), (12, 12)]),
            (Some(c(1)), Some(c(12)), vec![(c(11), c(11))])
        );
    }

    #[test]
    fn a_site_directory_by_its_names() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("alpha");
        std::fs::create_dir(&d).unwrap();
        for name in [
            "slony_logs_1-3.tar.gz",
            "slogs_4-5.tar.gz",
            "slony1_log_2_00000000000000000006.sql",
            "slony1_log_2_00000000000000000009.sql",
            "slony1_log_2_00000000000000000010.sql.tmp",
            "slony1_log_2_7.sql",
            "README",
        ] {
            std::fs::write(d.join(name), "").unwrap();
        }
        let a = archives(&d).unwrap();
        assert_eq!((a.loose, a.batches), (2, 2));
        assert_eq!((a.first, a.newest), (Some(c(1)), Some(c(9))));
        assert_eq!(a.gaps, vec![(c(7), c(8))]);
        assert_eq!(a.odd, vec!["slony1_log_2_7.sql".to_string()]);

        std::os::unix::fs::symlink(&d, root.path().join("link")).unwrap();
        let e = archives(&root.path().join("link")).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(archives(&root.path().join("absent")).is_err());
    }

    #[test]
    fn slon_directory_as_the_parser_left_it() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            slon_dir(&root.path().join("absent")).unwrap(),
            SlonDir::default()
        );
        for name in [
            "slony1_log_2_00000000000000000001.sql.parsed",
            "slony1_log_2_00000000000000000002.sql.parsed",
            "slony1_log_2_00000000000000000004.sql",
            "slony1_log_2_00000000000000000003.sql",
            "slony1_log_2_00000000000000000005.sql.tmp",
            "slony1_log_2_x.sql.parsed",
        ] {
            std::fs::write(root.path().join(name), "").unwrap();
        }
        assert_eq!(
            slon_dir(root.path()).unwrap(),
            SlonDir {
                oldest_waiting: Some(c(3)),
                newest_parsed: Some(c(2)),
                parsed: 2,
            }
        );
    }

    #[test]
    fn leftovers_and_changes_in_progress() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("triggers");
        assert!(trigger_leftovers(&t).unwrap().is_empty());
        std::fs::create_dir(&t).unwrap();
        std::fs::create_dir(t.join("alpha")).unwrap();
        std::fs::write(t.join("beta.subscribe_series.sqldone"), "").unwrap();
        std::fs::write(t.join("beta.sql.tar.gz"), "").unwrap();
        assert_eq!(
            trigger_leftovers(&t).unwrap(),
            vec!["beta.sql.tar.gz", "beta.subscribe_series.sqldone"]
        );

        let node = NodeName::new("beta").unwrap();
        assert!(change_in_progress(&node, root.path(), root.path()).is_empty());
        std::fs::create_dir(root.path().join("beta.new")).unwrap();
        std::fs::write(root.path().join("beta.new.lst"), "").unwrap();
        assert_eq!(change_in_progress(&node, root.path(), root.path()).len(), 2);
    }
}
