//! Any bytes as a downloaded archive: the archive reader (splitter, PostgreSQL's
//! parser, the grammar and the DDL rules) must return an action or a typed error,
//! never panic, loop or allocate without bound, and a file it accepts as whole must
//! hold exactly one tracking call for the expected counter followed by a commit.
//!
//! The first line of the input is also tried as a file name (archive, batch, or
//! anything a provider listing may hold).

#![no_main]

use libfuzzer_sys::fuzz_target;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::statement::Allowances;
use slony_shared::archive::{Action, ArchiveError, ArchiveName, ArchiveReader, BatchName};
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;

/// The counter the envelope expects (the tracking call must name it).
const EXPECTED: u64 = 7;

fuzz_target!(|data: &[u8]| {
    names(data);
    archive(data);
});

fn names(data: &[u8]) {
    let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(name) = std::str::from_utf8(first) else {
        return;
    };
    match classify(name) {
        Ok(Entry::Archive(a)) => {
            let again =
                ArchiveName::parse(&a.to_string()).expect("a parsed name renders to a valid name");
            assert_eq!(again, a);
        }
        Ok(Entry::Batch(b)) => {
            assert!(b.from <= b.to, "a batch range is never reversed");
            let again = BatchName::parse(&b.to_string())
                .expect("a parsed batch name renders to a valid name");
            assert_eq!(again, b);
        }
        Ok(Entry::InProgress | Entry::Other) | Err(_) => {}
    }
}

fn archive(data: &[u8]) {
    let cluster = ClusterName::new("lab").expect("a valid cluster name");
    let mut reader = ArchiveReader::new(data, &cluster, Counter(EXPECTED), Allowances::default());
    let mut chunk = Vec::new();
    let mut commits = 0;
    let mut trackings = 0;
    // Every action consumes at least one byte (or is a strings switch before one), so
    // this bound is never reached by a reader that makes progress.
    for _ in 0..=2 * data.len() + 2 {
        let action = match reader.next_action() {
            Ok(Some(action)) => action,
            Ok(None) => {
                if let Ok(header) = reader.finish() {
                    assert_eq!(header.counter, Counter(EXPECTED));
                    assert_eq!(commits, 1, "a whole archive has exactly one commit");
                    assert_eq!(trackings, 1, "a whole archive has one tracking call");
                }
                return;
            }
            Err(ArchiveError::Malformed { .. } | ArchiveError::Incomplete { .. }) => return,
            Err(ArchiveError::Io(e)) => panic!("no I/O error reading from memory: {e}"),
        };
        match action {
            Action::Commit => commits += 1,
            Action::Execute { sql, .. } => {
                assert!(commits == 0, "nothing is executed after the commit");
                if sql.to_ascii_lowercase().contains("archivetracking_offline") {
                    trackings += 1;
                }
            }
            Action::CopyIn { .. } => {
                let mut total = 0usize;
                loop {
                    match reader.copy_chunk(&mut chunk) {
                        Ok(more) => {
                            total += chunk.len();
                            assert!(total <= data.len(), "COPY data never exceeds the input");
                            if !more {
                                break;
                            }
                        }
                        Err(_) => return,
                    }
                }
            }
            Action::Strings(_) | Action::Vacuum => {}
        }
    }
    panic!("the reader made no progress");
}
