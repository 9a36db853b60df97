//! Any bytes as a downloaded archive: the splitter and the envelope check must
//! return an item or a typed error, never panic, loop or allocate without bound,
//! and a file they accept as whole must hold exactly one tracking call for the
//! expected counter followed by a commit.
//!
//! The first line of the input is also tried as a file name (archive, batch, or
//! anything a provider listing may hold).

#![no_main]

use libfuzzer_sys::fuzz_target;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::{ArchiveError, ArchiveName, BatchName, Envelope, Item, Splitter, Step};
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
    let mut env = Envelope::new(&cluster, Counter(EXPECTED));
    let mut splitter = Splitter::new(data);
    let mut chunk = Vec::new();
    let mut last_line = 0;
    let mut commits = 0;
    // Every item consumes at least one byte, so this bound is never reached by a
    // splitter that makes progress.
    for _ in 0..=data.len() + 1 {
        let item = match splitter.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => {
                if let Ok(header) = env.finish() {
                    assert_eq!(header.counter, Counter(EXPECTED));
                    assert_eq!(commits, 1, "a whole archive has exactly one commit");
                }
                return;
            }
            Err(_) => return,
        };
        let line = match &item {
            Item::Statement { line, .. }
            | Item::CopyIn { line, .. }
            | Item::Comment { line, .. } => *line,
        };
        assert!(
            line >= last_line,
            "line numbers never go back ({line} after {last_line})"
        );
        assert!(
            line <= splitter.line(),
            "an item starts no later than the line read"
        );
        last_line = line;
        match env.step(&item) {
            Ok(Step::Commit) => commits += 1,
            Ok(_) => {}
            Err(ArchiveError::Malformed { .. } | ArchiveError::Incomplete { .. }) => return,
            Err(ArchiveError::Io(e)) => panic!("no I/O error reading from memory: {e}"),
        }
        if let Item::CopyIn { .. } = item {
            let mut total = 0usize;
            loop {
                match splitter.copy_chunk(&mut chunk) {
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
    }
    panic!("the splitter made no progress");
}
