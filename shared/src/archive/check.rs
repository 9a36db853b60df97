//! The check done on a freshly downloaded archive, before it is queued for apply.
//!
//! The archive is read whole, exactly as the applier will read it
//! ([`super::envelope::read_whole`]): every statement judged by PostgreSQL's parser
//! against the archive grammar, every DDL row against the DDL rules. A cut-off file is
//! [`ArchiveError::Incomplete`] (delete it, fetch it again); a whole file that is wrong is
//! [`ArchiveError::Malformed`]: refused, never applied, nothing of it sent.

use super::envelope::{read_whole, Verified};
use super::name::ArchiveName;
use super::statement::Allowances;
use super::ArchiveError;
use crate::ident::ClusterName;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Checks that `path` is a complete, acceptable archive for `name` in `cluster`;
/// returns its header and the DDL row statements it approved.
pub fn verify_file(
    path: &Path,
    name: &ArchiveName,
    cluster: &ClusterName,
    allow: Allowances,
) -> Result<Verified, ArchiveError> {
    let file = File::open(path)?;
    read_whole(
        BufReader::with_capacity(256 * 1024, file),
        cluster,
        name.counter,
        allow,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::Counter;

    const SYNC: &str = "------\n-- Slony-I log shipping archive\n------\n\
set session_replication_role to replica;\nstart transaction;\n\
select \"_lab\".archiveTracking_offline('3', '2026-11-21 22:06:43+00');\n\
COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n\
1\t950\t2\t58\ts1\tt2\tI\t0\t{k,x}\n\\.\n\
------\n-- End Of Archive Log\n------\ncommit;\nvacuum analyze \"_lab\".sl_archive_tracking;\n";

    fn verify(text: &str) -> Result<crate::archive::Header, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.sql");
        std::fs::write(&p, text).unwrap();
        let name = ArchiveName {
            counter: Counter(3),
            node_id: 2,
        };
        verify_file(
            &p,
            &name,
            &ClusterName::new("lab").unwrap(),
            Allowances::default(),
        )
        .map(|v| v.header)
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
                    reason.contains("`drop table s1.t1` after the archive's commit"),
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
