//! The quick check done on a freshly downloaded archive, before it is queued for apply.
//!
//! It reads only the head (up to the tracking call) and the tail (the end marker and the
//! final `commit;`), so even a 1 GB archive is checked in a moment. A cut-off file is
//! [`ArchiveError::Incomplete`] (delete it, fetch it again); a whole file that is wrong is
//! [`ArchiveError::Malformed`]. The full statement-by-statement check happens while the
//! archive is applied (see [`super::envelope`]).

use super::envelope::{Envelope, Header};
use super::name::ArchiveName;
use super::parse::{Item, Splitter};
use super::ArchiveError;
use crate::ident::ClusterName;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// How much of the end of the file is searched for the end marker and `commit;`.
const TAIL: u64 = 64 * 1024;
/// How many items may come before the tracking call.
const MAX_HEADER_ITEMS: usize = 64;

/// Checks that `path` is a complete archive for `name` in `cluster`; returns its header.
pub fn verify_file(
    path: &Path,
    name: &ArchiveName,
    cluster: &ClusterName,
) -> Result<Header, ArchiveError> {
    let file = File::open(path)?;
    let header = read_header(BufReader::new(&file), name, cluster)?;
    check_tail(&file)?;
    Ok(header)
}

fn read_header(
    reader: impl std::io::BufRead,
    name: &ArchiveName,
    cluster: &ClusterName,
) -> Result<Header, ArchiveError> {
    let mut env = Envelope::new(cluster, name.counter);
    let mut splitter = Splitter::new(reader);
    for _ in 0..MAX_HEADER_ITEMS {
        let Some(item) = splitter.next_item()? else {
            break;
        };
        if matches!(item, Item::CopyIn { .. }) {
            break;
        }
        env.step(&item)?;
        if let Some(h) = env.header() {
            return Ok(h.clone());
        }
    }
    Err(ArchiveError::Incomplete {
        reason: "no archiveTracking_offline header at the start of the file".into(),
    })
}

fn check_tail(mut file: &File) -> Result<(), ArchiveError> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.take(TAIL).read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    let mut lines = text.lines().rev().map(str::trim).filter(|l| !l.is_empty());
    let mut marker = false;
    let mut commit = false;
    // Whole statements between the commit and the end: refused, not fetched again.
    let mut after_commit = None;
    for line in lines.by_ref() {
        let lower = line.to_ascii_lowercase();
        if line == "-- End Of Archive Log" || line == "-- EOL" {
            marker = true;
        } else if lower.starts_with("vacuum ") && lower.ends_with(';') || line.starts_with("--") {
            // The tracking VACUUM and separator lines may follow the commit.
        } else if lower == "commit;" {
            commit = true;
            break;
        } else if line.ends_with(';') {
            after_commit = Some(line);
        } else {
            break;
        }
    }
    if let (true, Some(statement)) = (commit, after_commit) {
        return Err(ArchiveError::Malformed {
            line: 0,
            reason: format!(
                "`{}` after the archive's commit; only the sl_archive_tracking VACUUM may follow it",
                statement.chars().take(80).collect::<String>()
            ),
        });
    }
    if !commit {
        return Err(ArchiveError::Incomplete {
            reason: "the file does not end with `commit;` (and the tracking VACUUM)".into(),
        });
    }
    if !marker {
        marker = lines
            .take(16)
            .any(|l| l == "-- End Of Archive Log" || l == "-- EOL");
    }
    if !marker {
        return Err(ArchiveError::Incomplete {
            reason:
                "the end marker (`-- End Of Archive Log` or `-- EOL`) is missing before `commit;`"
                    .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::Counter;

    const SYNC: &str = "------\n-- Slony-I log shipping archive\n------\n\
set session_replication_role to replica;\nstart transaction;\n\
select \"_lab\".archiveTracking_offline('3', '2026-11-21 22:06:43+00');\n\
COPY \"_lab\".\"sl_log_archive\" ( log_origin) FROM STDIN;\n1\n\\.\n\
------\n-- End Of Archive Log\n------\ncommit;\nvacuum analyze \"_lab\".sl_archive_tracking;\n";

    fn verify(text: &str) -> Result<Header, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sql");
        std::fs::write(&p, text).unwrap();
        let name = ArchiveName {
            counter: Counter(3),
            node_id: 2,
        };
        verify_file(&p, &name, &ClusterName::new("lab").unwrap())
    }

    #[test]
    fn whole_file_passes() {
        assert_eq!(verify(SYNC).unwrap().counter, Counter(3));
        verify(&SYNC.replace(
            "-- End Of Archive Log\n------\ncommit;\n",
            "commit;\n-- EOL\n",
        ))
        .unwrap();
    }

    #[test]
    fn every_cut_is_incomplete_or_detected() {
        // Cutting the file anywhere before the end of `commit;` must never pass (the
        // tracking VACUUM after it is optional).
        let last = SYNC.rfind("commit;").unwrap() + "commit".len();
        for cut in 0..last {
            match verify(&SYNC[..cut]) {
                Err(ArchiveError::Incomplete { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn statements_after_the_commit_are_malformed_not_incomplete() {
        let text = format!("{SYNC}drop table s1.t1;\n");
        match verify(&text) {
            Err(ArchiveError::Malformed { reason, .. }) => {
                assert!(
                    reason.contains("`drop table s1.t1;` after the archive's commit"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // A statement cut short after the commit is still a partial file.
        assert!(matches!(
            verify(&format!("{SYNC}drop table s1")),
            Err(ArchiveError::Incomplete { .. })
        ));
    }

    #[test]
    fn wrong_counter_is_malformed() {
        let text = SYNC.replace("('3',", "('4',");
        assert!(matches!(verify(&text), Err(ArchiveError::Malformed { .. })));
    }
}
