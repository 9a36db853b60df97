//! A refused archive stays refused until the provider replaces it.
//!
//! When an archive is refused for its content (it breaks the archive grammar or the DDL
//! rules), the run records which provider file it came from, with that file's size and
//! modification time, in `<site>/refused.json`. Later runs that see the same file
//! unchanged report the same refusal at once, without fetching or applying anything
//! again: a hostile file is not retried in a loop, and the alert keeps its key, so it is
//! mailed once and then as a daily reminder. Once the provider replaces the file (or
//! removes it), the record is dropped and the stream goes on.

use serde::{Deserialize, Serialize};
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::{ArchiveName, BatchName};
use slony_shared::counter::Counter;
use std::collections::HashMap;
use std::path::Path;

/// The record of a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The refused archive.
    pub archive: String,
    /// The provider file it came from (the archive itself, or the batch holding it).
    pub source: String,
    /// That file's size when it was refused.
    pub size: u64,
    /// That file's modification time when it was refused.
    pub mtime: Option<u64>,
    /// The error it was refused with.
    pub error: String,
}

/// A file of the provider's listing that the stream is fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderFile {
    /// A single archive.
    Archive(ArchiveName),
    /// A batch.
    Batch(BatchName),
}

impl ProviderFile {
    /// The file named `name`, if it is an archive or a batch.
    pub fn named(name: &str) -> Option<ProviderFile> {
        match classify(name) {
            Ok(Entry::Archive(a)) => Some(ProviderFile::Archive(a)),
            Ok(Entry::Batch(b)) => Some(ProviderFile::Batch(b)),
            _ => None,
        }
    }
}

impl std::fmt::Display for ProviderFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderFile::Archive(a) => a.fmt(f),
            ProviderFile::Batch(b) => b.fmt(f),
        }
    }
}

/// Size and modification time of the provider's files, from the listing (a typed key:
/// a listing of 100,000 files holds no file name twice).
pub type Stamps = HashMap<ProviderFile, (u64, Option<u64>)>;

impl Refusal {
    /// The refused archive's name, if the record holds a valid one.
    pub fn archive_name(&self) -> Option<ArchiveName> {
        match classify(&self.archive) {
            Ok(Entry::Archive(a)) => Some(a),
            _ => None,
        }
    }

    /// Whether the provider still serves the very file that was refused.
    pub fn still_stands(&self, stamps: &Stamps) -> bool {
        ProviderFile::named(&self.source)
            .is_some_and(|file| stamps.get(&file) == Some(&(self.size, self.mtime)))
    }
}

/// Reads the record, if there is one (an unreadable record counts as none).
pub fn load(path: &Path) -> Option<Refusal> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the record (atomically, 0600).
pub fn save(path: &Path, refusal: &Refusal) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = slony_shared::private::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(refusal).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The refusal that still stands for a replica at `at`: recorded for an archive after
/// `at` whose provider file is served unchanged. Any other record is dropped.
pub fn standing(path: &Path, at: Counter, stamps: &Stamps) -> Option<(ArchiveName, Refusal)> {
    let record = load(path)?;
    match record.archive_name() {
        Some(archive) if archive.counter > at && record.still_stands(stamps) => {
            Some((archive, record))
        }
        _ => {
            clear(path);
            None
        }
    }
}

/// Drops the record.
pub fn clear(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stands_only_while_the_same_file_is_served() {
        let r = Refusal {
            archive: "slony1_log_2_00000000000000000004.sql".into(),
            source: "slony1_log_2_00000000000000000004.sql".into(),
            size: 10,
            mtime: Some(5),
            error: "refused".into(),
        };
        let mut stamps = Stamps::new();
        assert!(!r.still_stands(&stamps));
        stamps.insert(ProviderFile::named(&r.source).unwrap(), (10, Some(5)));
        assert!(r.still_stands(&stamps));
        stamps.insert(ProviderFile::named(&r.source).unwrap(), (10, Some(6)));
        assert!(!r.still_stands(&stamps));
        stamps.insert(ProviderFile::named(&r.source).unwrap(), (11, Some(5)));
        assert!(!r.still_stands(&stamps));
        assert_eq!(r.archive_name().unwrap().counter.0, 4);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("refused.json");
        save(&p, &r).unwrap();
        assert_eq!(load(&p), Some(r));
        clear(&p);
        assert_eq!(load(&p), None);
    }
}
