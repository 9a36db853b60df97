/*!
A site's table and sequence lists and how a request changes them.

On disk, `<subscribers_dir>/<node>/` holds the site's current subscription:

- `tables`: one `schema.table` per line, in subscription order;
- `sequences`: one `schema.sequence` per line: the sequences whose changes the site
  receives. The subscription SQL decides them from the provider's catalog
  ([`crate::sqlgen`]): the sequences of the cluster's Slony sets that a column of one
  of the site's tables owns or uses in its default. Names play no part. A directory
  written by an older version has no such file; its site gets no sequence changes until
  it subscribes again;
- `since`: the first archive counter the lists apply to (the snapshot counter + 1).

During a change the new list is built in `<node>.new/` and only replaces `<node>/` once
the subscriber has applied the SQL ([`promote`]); on failure `<node>.new/` is removed
([`discard`]) and the previous list stays as it was.

[`plan`] is the pure part: from the previous list (if any) and the request's series it
decides the new list, which tables need their structure and data sent, which are dropped,
and the notes for the operator.
*/

use crate::fsutil;
use anyhow::{bail, Context};
use slony_shared::counter::Counter;
use slony_shared::ident::{NodeName, QualifiedTable};
use slony_shared::trigger::{Action, Series};
use std::path::Path;

/// Name of the table-list file inside a site directory.
pub const TABLES_FILE: &str = "tables";
/// Name of the sequence-list file inside a site directory.
pub const SEQUENCES_FILE: &str = "sequences";
/// Name of the file holding the first counter the list applies to.
pub const SINCE_FILE: &str = "since";

/// What a request does to a site's table list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// No `<node>/` yet: the SQL creates the tracking schema too.
    pub new_site: bool,
    /// The list after the change (previous minus unsubscribed, plus new at the end).
    pub tables: Vec<QualifiedTable>,
    /// Tables whose structure and data the SQL creates.
    pub added: Vec<QualifiedTable>,
    /// Tables dropped on the subscriber (only with `allow_drop`).
    pub dropped: Vec<QualifiedTable>,
    /// Remarks for the operator, sent in `.sqldone`.
    pub notes: Vec<String>,
}

/// Decides the new table list.
///
/// `previous` is the site's current list, `None` for a new site.
///
/// # Errors
///
/// A reason (for `.sqldone`) when the request would leave a new site without any table.
pub fn plan(
    previous: Option<&[QualifiedTable]>,
    series: &[Series],
    allow_drop: bool,
) -> Result<Plan, String> {
    let new_site = previous.is_none();
    let mut tables: Vec<QualifiedTable> = Vec::new();
    for t in previous.unwrap_or(&[]) {
        if !tables.contains(t) {
            tables.push(t.clone());
        }
    }
    let mut added = Vec::new();
    let mut dropped = Vec::new();
    let mut notes = Vec::new();
    for s in series {
        match s.action {
            Action::Unsubscribe => {
                if let Some(i) = tables.iter().position(|t| *t == s.table) {
                    tables.remove(i);
                    if allow_drop {
                        dropped.push(s.table.clone());
                    } else {
                        notes.push(format!(
                            "left {} in place on the subscriber (allow_drop is off)",
                            s.table
                        ));
                    }
                } else {
                    notes.push(format!(
                        "{} was not subscribed: nothing to unsubscribe",
                        s.table
                    ));
                }
            }
            Action::Subscribe => {
                if tables.contains(&s.table) {
                    if !added.contains(&s.table) {
                        notes.push(format!("{} is already subscribed: unchanged", s.table));
                    }
                } else {
                    tables.push(s.table.clone());
                    added.push(s.table.clone());
                }
            }
        }
    }
    if new_site && tables.is_empty() {
        return Err("the request subscribes no table for a new site".into());
    }
    Ok(Plan {
        new_site,
        tables,
        added,
        dropped,
        notes,
    })
}

/// Renders a table (or sequence) list file.
pub fn render_tables(tables: &[QualifiedTable]) -> String {
    tables.iter().map(|t| format!("{t}\n")).collect()
}

/// Parses a table (or sequence) list file (blank lines and `#` comments ignored).
///
/// # Errors
///
/// A line that is not a valid `schema.table`.
pub fn parse_tables(text: &str) -> anyhow::Result<Vec<QualifiedTable>> {
    let mut out: Vec<QualifiedTable> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        // A `#` starts a comment only at the start of a line: inside a quoted name it is
        // part of the name (`public."Jan's #1 idea"`).
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let t = QualifiedTable::parse(line).with_context(|| format!("line {}", i + 1))?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Reads `<dir>/tables`; `Ok(None)` when the site directory does not exist (a new site).
///
/// # Errors
///
/// The directory exists but its list is missing or unreadable: the site's state is
/// damaged and a change must not guess.
pub fn read_tables(dir: &Path) -> anyhow::Result<Option<Vec<QualifiedTable>>> {
    if !fsutil::exists(dir) {
        return Ok(None);
    }
    if !dir.is_dir() {
        bail!("{} exists but is not a directory", dir.display());
    }
    let path = dir.join(TABLES_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the site's table list {}", path.display()))?;
    parse_tables(&text)
        .with_context(|| format!("the site's table list {}", path.display()))
        .map(Some)
}

/// Reads `<dir>/sequences`; `Ok(None)` when there is none (a directory written by an
/// older version, or no site directory at all).
///
/// # Errors
///
/// The file exists but is unreadable or holds a line that is not `schema.sequence`.
pub fn read_sequences(dir: &Path) -> anyhow::Result<Option<Vec<QualifiedTable>>> {
    let path = dir.join(SEQUENCES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the site's sequence list {}", path.display()))
        }
    };
    parse_tables(&text)
        .with_context(|| format!("the site's sequence list {}", path.display()))
        .map(Some)
}

/// What the operator is told about a site directory without a sequence list.
pub fn no_sequence_list_warning(node: &NodeName, dir: &Path) -> String {
    format!(
        "site {node}: {} has no `{SEQUENCES_FILE}` (written by an older version, which chose \
         sequences by their names): the site receives no sequence changes. Have it \
         subscribe again, with any change, to rebuild its sequence list from the \
         provider's catalog",
        dir.display()
    )
}

/// Writes the sequence list into `<node>.new/` (atomically, like `tables`).
pub fn write_sequences(new_dir: &Path, sequences: &[QualifiedTable]) -> anyhow::Result<()> {
    fsutil::write_atomic(
        &new_dir.join(SEQUENCES_FILE),
        render_tables(sequences).as_bytes(),
    )
}

/// Reads `<dir>/since`, if present and valid.
pub fn read_since(dir: &Path) -> Option<Counter> {
    std::fs::read_to_string(dir.join(SINCE_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Builds `<node>.new/` afresh with the new list (a stale one from an earlier attempt is
/// removed first). `sequences` and `since` are written later, by [`write_sequences`] and
/// [`write_since`], once the snapshot is known.
pub fn prepare_new(new_dir: &Path, tables: &[QualifiedTable]) -> anyhow::Result<()> {
    fsutil::remove_dir_all(new_dir)?;
    std::fs::create_dir_all(new_dir).with_context(|| format!("creating {}", new_dir.display()))?;
    fsutil::write_atomic(&new_dir.join(TABLES_FILE), render_tables(tables).as_bytes())
}

/// Writes `since` (the snapshot counter + 1) into `<node>.new/`.
pub fn write_since(new_dir: &Path, snapshot: Counter) -> anyhow::Result<()> {
    fsutil::write_atomic(
        &new_dir.join(SINCE_FILE),
        format!("{}\n", snapshot.next()).as_bytes(),
    )
}

/// Replaces `<node>/` by `<node>.new/`: `<node>` → `<node>.old`, `<node>.new` → `<node>`,
/// remove `<node>.old`. Each step is skipped when already done, so a promotion
/// interrupted at any point completes when repeated.
///
/// # Errors
///
/// Neither `<node>.new/` nor `<node>/` exists (nothing to promote), or an I/O error.
pub fn promote(current: &Path, new: &Path, old: &Path) -> anyhow::Result<()> {
    let parent = current
        .parent()
        .context("a site directory without a parent")?;
    if fsutil::exists(new) {
        if fsutil::exists(current) {
            // `.old` can only be left over from an earlier promotion that completed its
            // renames before a crash: the current list is in `current`.
            fsutil::remove_dir_all(old)?;
            std::fs::rename(current, old)
                .with_context(|| format!("renaming {} aside", current.display()))?;
        }
        std::fs::rename(new, current)
            .with_context(|| format!("renaming {} to {}", new.display(), current.display()))?;
        fsutil::sync_dir(parent).with_context(|| format!("syncing {}", parent.display()))?;
    } else if !fsutil::exists(current) {
        bail!(
            "neither {} nor {} exists: nothing to promote",
            new.display(),
            current.display()
        );
    }
    fsutil::remove_dir_all(old)
}

/// Removes `<node>.new/` after a failed or refused request.
pub fn discard(new: &Path) -> anyhow::Result<()> {
    fsutil::remove_dir_all(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slony_shared::trigger::parse_series_list;

    fn t(s: &str) -> QualifiedTable {
        QualifiedTable::parse(s).unwrap()
    }

    fn list(s: &[&str]) -> Vec<QualifiedTable> {
        s.iter().map(|x| t(x)).collect()
    }

    #[test]
    fn new_site_takes_the_subscribed_tables_in_order() {
        let series = parse_series_list("s1.t1\ns1.big subscribe\ns1.t1\n").unwrap();
        let p = plan(None, &series, false).unwrap();
        assert!(p.new_site);
        assert_eq!(p.tables, list(&["s1.t1", "s1.big"]));
        assert_eq!(p.added, p.tables);
        assert!(p.dropped.is_empty());
        assert!(p.notes.is_empty());
    }

    #[test]
    fn new_site_without_tables_is_refused() {
        let series = parse_series_list("s1.t1 unsubscribe\n").unwrap();
        assert!(plan(None, &series, true).is_err());
    }

    #[test]
    fn existing_site_drops_unsubscribed_appends_new_ignores_duplicates() {
        let prev = list(&["s1.a", "s1.b", "s1.c"]);
        let series =
            parse_series_list("s1.d subscribe\ns1.b unsubscribe\ns1.a subscribe\ns1.e\n").unwrap();
        let p = plan(Some(&prev), &series, false).unwrap();
        assert!(!p.new_site);
        assert_eq!(p.tables, list(&["s1.a", "s1.c", "s1.d", "s1.e"]));
        assert_eq!(p.added, list(&["s1.d", "s1.e"]));
        assert!(p.dropped.is_empty());
        assert_eq!(
            p.notes,
            vec![
                "left s1.b in place on the subscriber (allow_drop is off)".to_string(),
                "s1.a is already subscribed: unchanged".to_string(),
            ]
        );
    }

    #[test]
    fn allow_drop_drops_and_unknown_unsubscribe_is_noted() {
        let prev = list(&["s1.a", "s1.b"]);
        let series = parse_series_list("s1.b unsubscribe\ns1.z unsubscribe\n").unwrap();
        let p = plan(Some(&prev), &series, true).unwrap();
        assert_eq!(p.tables, list(&["s1.a"]));
        assert_eq!(p.dropped, list(&["s1.b"]));
        assert!(p.added.is_empty());
        assert_eq!(
            p.notes,
            vec!["s1.z was not subscribed: nothing to unsubscribe".to_string()]
        );
        // An existing site may end up with no table (it still receives every counter).
        let all = parse_series_list("s1.a unsubscribe\n").unwrap();
        assert!(plan(Some(&p.tables), &all, true).unwrap().tables.is_empty());
    }

    #[test]
    fn previous_list_with_duplicates_is_cleaned() {
        let prev = list(&["s1.a", "s1.a"]);
        let series = parse_series_list("s1.b\n").unwrap();
        let p = plan(Some(&prev), &series, false).unwrap();
        assert_eq!(p.tables, list(&["s1.a", "s1.b"]));
    }

    #[test]
    fn tables_file_round_trip_and_validation() {
        let l = list(&["s1.a", "s2.b"]);
        assert_eq!(parse_tables(&render_tables(&l)).unwrap(), l);
        assert_eq!(
            parse_tables("# comment\n\ns1.a\ns1.a\n").unwrap(),
            list(&["s1.a"])
        );
        assert!(parse_tables("s1.a; drop\n").is_err());
        // Names with `#` or spaces, written and read back.
        let odd = vec![
            QualifiedTable::parse("public.\"Jan's #1 idea\"").unwrap(),
            QualifiedTable::parse("\"Schema.name\".\"Capital Idea\"").unwrap(),
        ];
        assert_eq!(parse_tables(&render_tables(&odd)).unwrap(), odd);
    }

    #[test]
    fn promote_is_resumable_at_every_step() {
        let root = tempfile::tempdir().unwrap();
        let cur = root.path().join("n");
        let new = root.path().join("n.new");
        let old = root.path().join("n.old");
        let setup = |cur_list: Option<&str>, new_list: Option<&str>, old_list: Option<&str>| {
            for d in [&cur, &new, &old] {
                fsutil::remove_dir_all(d).unwrap();
            }
            for (d, l) in [(&cur, cur_list), (&new, new_list), (&old, old_list)] {
                if let Some(l) = l {
                    prepare_new(d, &list(&[l])).unwrap();
                }
            }
        };
        // Fresh, after `cur -> old`, after `new -> cur`, new site, stale `.old`.
        for (c, n, o) in [
            (Some("s.prev"), Some("s.next"), None),
            (None, Some("s.next"), Some("s.prev")),
            (Some("s.next"), None, Some("s.prev")),
            (None, Some("s.next"), None),
            (Some("s.prev"), Some("s.next"), Some("s.older")),
        ] {
            setup(c, n, o);
            promote(&cur, &new, &old).unwrap();
            assert_eq!(read_tables(&cur).unwrap().unwrap(), list(&["s.next"]));
            assert!(!new.exists() && !old.exists());
            // Repeating it changes nothing.
            promote(&cur, &new, &old).unwrap();
            assert_eq!(read_tables(&cur).unwrap().unwrap(), list(&["s.next"]));
        }
        setup(None, None, None);
        assert!(promote(&cur, &new, &old).is_err());
    }

    #[test]
    fn sequences_are_written_read_and_promoted_with_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let cur = root.path().join("n");
        let new = root.path().join("n.new");
        let old = root.path().join("n.old");
        // A site directory of an older version: tables, no sequence list.
        prepare_new(&cur, &list(&["s.a"])).unwrap();
        assert_eq!(read_sequences(&cur).unwrap(), None);
        assert_eq!(read_sequences(&root.path().join("absent")).unwrap(), None);
        let w = no_sequence_list_warning(&NodeName::new("n").unwrap(), &cur);
        assert!(w.contains("site n") && w.contains("subscribe again"), "{w}");

        prepare_new(&new, &list(&["s.a", "s.b"])).unwrap();
        assert_eq!(
            read_sequences(&new).unwrap(),
            None,
            "not before it is written"
        );
        let seqs = list(&["s.a_id_seq", "other.ticket"]);
        write_sequences(&new, &seqs).unwrap();
        assert_eq!(
            std::fs::read_to_string(new.join(SEQUENCES_FILE)).unwrap(),
            "s.a_id_seq\nother.ticket\n"
        );
        assert_eq!(read_sequences(&new).unwrap(), Some(seqs.clone()));
        // No temporary file is left beside it.
        let mut names: Vec<String> = std::fs::read_dir(&new)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![SEQUENCES_FILE.to_string(), TABLES_FILE.to_string()]
        );
        promote(&cur, &new, &old).unwrap();
        assert_eq!(read_sequences(&cur).unwrap(), Some(seqs));
        // An empty list is a list: the site has no sequence.
        prepare_new(&new, &list(&["s.a"])).unwrap();
        write_sequences(&new, &[]).unwrap();
        assert_eq!(read_sequences(&new).unwrap(), Some(vec![]));
        // A damaged list is an error, not "no list".
        std::fs::write(cur.join(SEQUENCES_FILE), "s.a; drop\n").unwrap();
        assert!(read_sequences(&cur).is_err());
    }

    #[test]
    fn since_is_snapshot_plus_one() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("n.new");
        prepare_new(&d, &list(&["s.a"])).unwrap();
        assert_eq!(read_since(&d), None);
        write_since(&d, Counter(42)).unwrap();
        assert_eq!(read_since(&d), Some(Counter(43)));
        // A stale `.new` is rebuilt from scratch.
        prepare_new(&d, &list(&["s.b"])).unwrap();
        assert_eq!(read_since(&d), None);
        assert_eq!(read_tables(&d).unwrap().unwrap(), list(&["s.b"]));
    }
}
