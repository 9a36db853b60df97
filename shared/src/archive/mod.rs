//! Slony-I log-shipping archives.
//!
//! - [`name`]: file names of archives and batches.
//! - [`lex`]: the lexical rules of SQL text: where strings, quoted names, dollar quotes
//!   and comments begin and end; the reader of quoted literals.
//! - [`parse`]: splitting an archive into statements and COPY data, streaming.
//! - [`statement`]: what a statement is, by PostgreSQL's own parser, and the rules for it.
//! - [`copy_text`]: COPY rows of `sl_log_archive` and their array literals, read as the server reads them.
//! - [`envelope`]: reading an archive as it is applied: its grammar and the DDL rules.
//! - [`check`]: the whole-file check done right after a download.
//! - [`cut`]: a site's copy of an archive, holding only the site's tables (provider side).

pub mod check;
pub mod copy_text;
pub mod cut;
pub mod envelope;
pub mod lex;
pub mod name;
pub mod parse;
pub mod statement;

pub use envelope::{Action, ArchiveReader, Header};
pub use name::{ArchiveName, BatchName};
pub use parse::{Item, Splitter};

/// Why an archive cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file is cut short (a partial transfer): delete it and fetch it again.
    #[error("incomplete archive: {reason}")]
    Incomplete {
        /// What is missing.
        reason: String,
    },
    /// The file is whole but not a valid archive: stop and alert, never apply it.
    #[error("invalid archive (line {line}): {reason}")]
    Malformed {
        /// 1-based line of the problem (0 when not tied to a line).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the file failed.
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
}

impl From<parse::ParseError> for ArchiveError {
    fn from(e: parse::ParseError) -> Self {
        match e {
            parse::ParseError::Truncated { .. } => ArchiveError::Incomplete {
                reason: e.to_string(),
            },
            parse::ParseError::Invalid { line, reason } => ArchiveError::Malformed { line, reason },
            parse::ParseError::Io(e) => ArchiveError::Io(e),
        }
    }
}

/// `sql` on one line, cut to at most `max_chars` characters, for error messages.
pub(crate) fn excerpt(sql: &str, max_chars: usize) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > max_chars {
        one_line.chars().take(max_chars - 3).collect::<String>() + "..."
    } else {
        one_line
    }
}
