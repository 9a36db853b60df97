//! Archive and batch file names, parsed into types.
//!
//! - `slony1_log_<node>_<counter, 20 digits>.sql`: one archive, written by the slon of `<node>`.
//! - `slony_logs_<from>-<to>.tar.gz`: a batch holding archives `from..=to` (what both
//!   housekeepings write, as the original `manage_logs.pl` did).
//! - `slogs_<from>-<to>.tar.gz`: the same, named as the original `archivelogs.pl` named
//!   the batches of the provider's own archives; read, never written.
//!
//! Anything else in a directory listing (`.tmp` files still being written, our own `.part`
//! downloads, stray files) is not an archive and is never applied.

use crate::counter::Counter;
use std::fmt;

/// A validated archive file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchiveName {
    /// The archive counter (sorts first, so names order by counter).
    pub counter: Counter,
    /// The Slony node id of the slon that wrote the archive.
    pub node_id: u32,
}

/// A validated batch file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchName {
    /// First counter in the batch.
    pub from: Counter,
    /// Last counter in the batch (inclusive).
    pub to: Counter,
    /// Which of the two names it has.
    pub style: BatchStyle,
}

/// The prefix of a batch's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BatchStyle {
    /// `slony_logs_<from>-<to>.tar.gz`, the name batches are written with.
    SlonyLogs,
    /// `slogs_<from>-<to>.tar.gz`, the original `archivelogs.pl`'s name.
    Slogs,
}

impl BatchStyle {
    fn prefix(self) -> &'static str {
        match self {
            BatchStyle::SlonyLogs => BATCH_PREFIX,
            BatchStyle::Slogs => SLOGS_PREFIX,
        }
    }
}

/// A file name that looked like an archive or batch but is not a valid one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name:?} is not a valid archive or batch name: {reason}")]
pub struct BadArchiveName {
    /// The refused name.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// What a directory entry is, judged by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A single archive.
    Archive(ArchiveName),
    /// A tar.gz batch of archives.
    Batch(BatchName),
    /// A file still being written by its producer (`*.tmp`) or our own partial download.
    InProgress,
    /// Something else; listed for the operator's information only.
    Other,
}

const ARCHIVE_PREFIX: &str = "slony1_log_";
const BATCH_PREFIX: &str = "slony_logs_";
const SLOGS_PREFIX: &str = "slogs_";

/// Classifies a file name from a listing. Names that claim to be archives or batches
/// but do not parse are errors: the provider directory holds something suspicious.
pub fn classify(name: &str) -> Result<Entry, BadArchiveName> {
    if name.ends_with(".tmp") || name.ends_with(".part") {
        return Ok(Entry::InProgress);
    }
    if name.starts_with(ARCHIVE_PREFIX) {
        return ArchiveName::parse(name).map(Entry::Archive);
    }
    if name.starts_with(BATCH_PREFIX) || name.starts_with(SLOGS_PREFIX) {
        return BatchName::parse(name).map(Entry::Batch);
    }
    Ok(Entry::Other)
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl ArchiveName {
    /// Parses `slony1_log_<node>_<20 digits>.sql`.
    pub fn parse(name: &str) -> Result<Self, BadArchiveName> {
        let bad = |reason| BadArchiveName {
            name: name.to_string(),
            reason,
        };
        let rest = name
            .strip_prefix(ARCHIVE_PREFIX)
            .ok_or(bad("does not start with slony1_log_"))?;
        let rest = rest
            .strip_suffix(".sql")
            .ok_or(bad("does not end with .sql"))?;
        let (node, counter) = rest
            .split_once('_')
            .ok_or(bad("expected slony1_log_<node>_<counter>.sql"))?;
        if !digits(node) || node.len() > 9 || (node.len() > 1 && node.starts_with('0')) {
            return Err(bad("the node id must be a plain number"));
        }
        if counter.len() != 20 || !digits(counter) {
            return Err(bad("the counter must be exactly 20 digits"));
        }
        let counter: Counter = counter
            .parse()
            .map_err(|_| bad("the counter is out of range"))?;
        if counter.0 == 0 {
            return Err(bad("archive counters start at 1"));
        }
        Ok(ArchiveName {
            counter,
            node_id: node
                .parse()
                .map_err(|_| bad("the node id is out of range"))?,
        })
    }
}

impl fmt::Display for ArchiveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ARCHIVE_PREFIX}{}_{:020}.sql",
            self.node_id, self.counter.0
        )
    }
}

impl BatchName {
    /// The batch of archives `from..=to`, named `slony_logs_<from>-<to>.tar.gz`.
    pub fn new(from: Counter, to: Counter) -> Self {
        BatchName {
            from,
            to,
            style: BatchStyle::SlonyLogs,
        }
    }

    /// Parses `slony_logs_<from>-<to>.tar.gz` or `slogs_<from>-<to>.tar.gz`.
    pub fn parse(name: &str) -> Result<Self, BadArchiveName> {
        let bad = |reason| BadArchiveName {
            name: name.to_string(),
            reason,
        };
        let (style, rest) = if let Some(rest) = name.strip_prefix(BATCH_PREFIX) {
            (BatchStyle::SlonyLogs, rest)
        } else if let Some(rest) = name.strip_prefix(SLOGS_PREFIX) {
            (BatchStyle::Slogs, rest)
        } else {
            return Err(bad("does not start with slony_logs_ or slogs_"));
        };
        let rest = rest
            .strip_suffix(".tar.gz")
            .ok_or(bad("does not end with .tar.gz"))?;
        let (from, to) = rest
            .split_once('-')
            .ok_or(bad("expected slony_logs_<from>-<to>.tar.gz"))?;
        if !digits(from) || !digits(to) {
            return Err(bad("from and to must be numbers"));
        }
        let from: Counter = from.parse().map_err(|_| bad("from is out of range"))?;
        let to: Counter = to.parse().map_err(|_| bad("to is out of range"))?;
        if from.0 == 0 || to < from {
            return Err(bad("the range must be 1 <= from <= to"));
        }
        Ok(BatchName { from, to, style })
    }

    /// Whether the batch holds archive `c`.
    pub fn contains(&self, c: Counter) -> bool {
        self.from <= c && c <= self.to
    }
}

impl fmt::Display for BatchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}-{}.tar.gz", self.style.prefix(), self.from, self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_round_trip() {
        let n = ArchiveName::parse("slony1_log_2_00000000000000000035.sql").unwrap();
        assert_eq!(n.counter, Counter(35));
        assert_eq!(n.node_id, 2);
        assert_eq!(n.to_string(), "slony1_log_2_00000000000000000035.sql");
    }

    #[test]
    fn bad_archive_names() {
        for bad in [
            "slony1_log_2_0000000000000000035.sql",
            "slony1_log_2_000000000000000000035.sql",
            "slony1_log__00000000000000000035.sql",
            "slony1_log_x_00000000000000000035.sql",
            "slony1_log_02_00000000000000000035.sql",
            "slony1_log_2_00000000000000000035.sql.gz",
            "slony1_log_2_0000000000000000003a.sql",
            "slony1_log_2_00000000000000000000.sql",
            "slony1_log_2_99999999999999999999.sql",
            "slony1_log_2_/0000000000000000035.sql",
        ] {
            assert!(ArchiveName::parse(bad).is_err(), "{bad}");
            assert!(classify(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_names() {
        let b = BatchName::parse("slony_logs_1-5000.tar.gz").unwrap();
        assert_eq!((b.from, b.to), (Counter(1), Counter(5000)));
        assert!(b.contains(Counter(5000)) && !b.contains(Counter(5001)));
        assert_eq!(b.to_string(), "slony_logs_1-5000.tar.gz");
        assert_eq!(b, BatchName::new(Counter(1), Counter(5000)));
        // The original archivelogs.pl's name keeps its name.
        let s = BatchName::parse("slogs_17-42.tar.gz").unwrap();
        assert_eq!(
            (s.from, s.to, s.style),
            (Counter(17), Counter(42), BatchStyle::Slogs)
        );
        assert_eq!(s.to_string(), "slogs_17-42.tar.gz");
        assert_eq!(classify("slogs_17-42.tar.gz"), Ok(Entry::Batch(s)));
        assert!(classify("slogs_17.tar.gz").is_err());
        for bad in [
            "slony_logs_5-1.tar.gz",
            "slony_logs_0-1.tar.gz",
            "slony_logs_1-.tar.gz",
            "slony_logs_1-2.tgz",
        ] {
            assert!(BatchName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classify_skips_in_progress_and_others() {
        assert_eq!(
            classify("slony1_log_2_00000000000000000001.sql.tmp"),
            Ok(Entry::InProgress)
        );
        assert_eq!(classify("x.part"), Ok(Entry::InProgress));
        assert_eq!(classify("README"), Ok(Entry::Other));
        assert!(matches!(
            classify("slony_logs_1-2.tar.gz"),
            Ok(Entry::Batch(_))
        ));
    }
}
