//! Cutting one site's copy of an archive: the envelope byte for byte, only the site's rows.
//!
//! The provider's `slon -a` writes one archive per event holding every replicated table;
//! each subscriber site receives a copy holding only the tables it subscribes to. This
//! module makes those copies, for any number of sites in one pass over the archive
//! ([`cut_many`]; [`cut`] for one site). The manager's cutter (`slony-manager`) feeds it.
//!
//! # What a site's copy holds
//!
//! - **The envelope, unchanged**: comment and blank lines, `set session_replication_role`,
//!   `start transaction`, the `archiveTracking_offline` call, the end marker, `commit;`,
//!   the tracking `vacuum`. Every site gets every counter, also when none of its rows are
//!   in it, and a non-SYNC archive (comment-only body) passes through whole.
//! - **A `-- EOL` last line** ([`EOL_LINE`]) after it, unless the archive has one: the
//!   original JSOC splitter ended its copies so, and the original client refuses a file
//!   without it, so sites still running that client keep working.
//! - **Slony-I 2.2 (`COPY ... sl_log_archive`)**: the COPY statement and `\.` always; a
//!   data row only when its `log_tablenspname`/`log_tablerelname` (located by the
//!   COPY column list, the 5th and 6th fields in what slon writes) name a table of the
//!   site. The two fields are decoded by the COPY text rules *for the comparison only*;
//!   the row is written out as the very bytes that were read.
//! - **DDL rows** (`S`, NULL table, statement text in `log_cmdargs[1]`): the statement's
//!   target is parsed (`alter table`, `create [unique] index ... on`, `create trigger
//!   ... on`, `comment on table|column`, `drop table`, `create table`, `truncate`,
//!   `insert`/`update`/`delete`, `analyze`, `create|alter|drop sequence`) and the row goes
//!   to the sites that have that table (that sequence, for a sequence statement: see
//!   below). An unqualified table name is the table Slony's own apply took on the
//!   log-shipping node: the first schema of [`CutOptions::ddl_search_path`] (the
//!   `search_path` of the role slon connects as) that holds it. The rest of an EXECUTE SCRIPT (the trailing `S` row with only whitespace,
//!   and the `s` end-of-script row) goes to the sites that got at least one statement of
//!   the same script (same `log_txid`). A statement whose target cannot be decided
//!   safely (a function, a view, a grant, an unqualified name that sites hold only in a
//!   later schema of the DDL search path, several statements in one
//!   row, a table rename of a subscribed table, a `truncate` of subscribed and
//!   unsubscribed tables together...) stops the cut with
//!   [`CutErrorKind::Undecidable`], naming the statement: a wrong guess would break a
//!   replica or silently skip a change.
//! - **Pre-2.2 statement archives**: `insert into`, `update`, `delete from`, `truncate`
//!   whose target is a site table; the same DDL rule for other statements; the initial
//!   copy of an `ENABLE_SUBSCRIPTION` event (`delete from` / `copy ... from stdin` + data /
//!   `finishTableAfterCopy` / `analyze` per table) likewise per table.
//! - **Sequences**: `sequenceSetValue_offline('<nsp>','<seq>','<value>')`,
//!   `[pg_catalog.]setval('<nsp>.<seq>', ...)` and `create|alter|drop sequence` DDL rows
//!   go to a site when its sequence list holds `<nsp>.<seq>` (see
//!   [`SiteFilter::has_sequence`]). The manager decides that list from the provider's
//!   catalog when the site subscribes: the sequences of the cluster's Slony sets that a
//!   column of one of the site's tables owns or uses in its default. No name rule
//!   applies: a sequence named after a subscribed table (`<table>_x_seq`) is not the
//!   site's unless the list holds it, so a sequence the site never received cannot stop
//!   its pull. The pre-2.2 form `sequenceSetValue_offline(<id>, <value>)` names no
//!   sequence and is refused as undecidable.
//!
//! A dropped statement that filled its line(s) takes one following empty line with it,
//! so a site's copy of a busy archive has the layout slon gives an idle one.
//!
//! # Streaming
//!
//! The archive is read line by line; memory holds one line (a 2 MB row is one line) or
//! one SQL statement at a time, never the whole file. Output goes to the callers'
//! writers as it is decided.
//!
//! # Layout
//!
//! This file holds the public API and the streaming driver (SQL text line by line);
//! `site` what a site receives ([`SiteFilter`]); `classify` what each statement of the
//! SQL text is; `ddl_target` which table a DDL or DML statement targets and how an
//! unqualified name resolves; `log_rows` the rows of `COPY ... sl_log_archive`.

mod classify;
mod ddl_target;
mod log_rows;
mod site;
#[cfg(test)]
mod tests;

pub use site::SiteFilter;

use super::copy_text;
use super::excerpt;
use super::lex::{gap, has_sql, Gap, Scanner};
use super::statement::Strings;
use crate::counter::Counter;
use classify::{classify, Class};
use ddl_target::{resolve, Target};
use log_rows::LogColumns;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Longest line accepted (PostgreSQL's own limit for one field is 1 GB).
pub const MAX_LINE: u64 = 1 << 30;

/// Longest SQL statement accepted (same bound as the splitter's).
pub const MAX_STATEMENT: usize = super::parse::MAX_STATEMENT;

/// Why an archive could not be cut.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CutErrorKind {
    /// The archive is cut short (no end marker, no `commit;`, an open COPY block or
    /// statement at the end): wait for the whole file, or fetch it again.
    #[error("incomplete archive: {reason}")]
    Incomplete {
        /// What is missing.
        reason: String,
    },
    /// The archive holds something an archive cannot hold (a bad COPY row, a psql
    /// meta-command, an unknown command type).
    #[error("invalid archive (line {line}): {reason}")]
    Malformed {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A statement whose tables cannot be decided safely: the cut stops rather than guess.
    #[error(
        "line {line}: cannot decide which site gets `{statement}`: {reason}; the cut stops instead of guessing"
    )]
    Undecidable {
        /// 1-based line where the statement (or COPY row) starts.
        line: u64,
        /// The statement (shortened to one line).
        statement: String,
        /// Why it cannot be decided.
        reason: String,
    },
    /// Reading the archive failed.
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    /// Writing a site's copy failed.
    #[error("writing the copy of site #{site}: {source}")]
    Write {
        /// Index of the site in the caller's list.
        site: usize,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why an archive could not be cut, naming the archive when it is known.
#[derive(Debug)]
pub struct CutError {
    /// The archive file, when the cut was given a path.
    pub archive: Option<PathBuf>,
    /// What went wrong.
    pub kind: CutErrorKind,
}

impl fmt::Display for CutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.archive {
            Some(p) => write!(f, "cutting {}: {}", p.display(), self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for CutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}

impl From<CutErrorKind> for CutError {
    fn from(kind: CutErrorKind) -> Self {
        CutError {
            archive: None,
            kind,
        }
    }
}

/// Which body an archive had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Slony-I 2.2: rows COPYed into `sl_log_archive`.
    LogCopy,
    /// Before 2.2 (or an initial copy): plain SQL statements.
    Statements,
    /// Comments only (a non-SYNC event).
    Empty,
}

/// What a cut found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutSummary {
    /// The counter of the `archiveTracking_offline` call.
    pub counter: Counter,
    /// The body's kind.
    pub body: BodyKind,
    /// Changes in the archive (COPY rows, data statements, sequence calls).
    pub changes: u64,
    /// Of those, how many each site received.
    pub kept: Vec<u64>,
}

/// How the provider's DDL is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutOptions {
    /// The schemas, in order, that an unqualified table name of an EXECUTE SCRIPT
    /// resolved against when Slony applied the script on the log-shipping node: the
    /// `search_path` of the role its slon connects as (Slony sets none of its own).
    pub ddl_search_path: Vec<String>,
}

impl Default for CutOptions {
    fn default() -> Self {
        CutOptions {
            ddl_search_path: vec!["public".into()],
        }
    }
}

/// Cuts `reader` for one site into `out`.
///
/// # Errors
///
/// See [`cut_many`].
pub fn cut<R: BufRead, W: Write>(
    reader: R,
    site: &SiteFilter,
    out: &mut W,
) -> Result<CutSummary, CutError> {
    cut_many(reader, &[site], std::slice::from_mut(out))
}

/// Cuts the archive at `path` for every site at once (one read of the archive).
///
/// # Errors
///
/// See [`cut_many`]; the error names the archive.
pub fn cut_file<W: Write>(
    path: &Path,
    sites: &[&SiteFilter],
    outs: &mut [W],
) -> Result<CutSummary, CutError> {
    cut_file_with(path, sites, outs, &CutOptions::default())
}

/// [`cut_file`] with `options`.
///
/// # Errors
///
/// See [`cut_many`]; the error names the archive.
pub fn cut_file_with<W: Write>(
    path: &Path,
    sites: &[&SiteFilter],
    outs: &mut [W],
    options: &CutOptions,
) -> Result<CutSummary, CutError> {
    let with_path = |kind| CutError {
        archive: Some(path.to_path_buf()),
        kind,
    };
    let file = File::open(path).map_err(|e| with_path(CutErrorKind::Read(e)))?;
    cut_many_with(
        BufReader::with_capacity(256 * 1024, file),
        sites,
        outs,
        options,
    )
    .map_err(|e| CutError {
        archive: Some(path.to_path_buf()),
        kind: e.kind,
    })
}

/// Cuts one archive for several sites: `outs[i]` receives the copy of `sites[i]`.
///
/// # Returns
///
/// The archive's counter and what each site received.
///
/// # Errors
///
/// [`CutErrorKind::Incomplete`] for a file cut short, `Malformed` for a body that is
/// not an archive's, `Undecidable` for a statement whose tables cannot be decided,
/// `Read`/`Write` for I/O. The outputs then hold a partial copy, which the caller
/// discards.
///
/// # Panics
///
/// If `sites` and `outs` differ in length.
pub fn cut_many<R: BufRead, W: Write>(
    reader: R,
    sites: &[&SiteFilter],
    outs: &mut [W],
) -> Result<CutSummary, CutError> {
    cut_many_with(reader, sites, outs, &CutOptions::default())
}

/// [`cut_many`] with `options`.
///
/// # Errors
///
/// See [`cut_many`].
///
/// # Panics
///
/// If `sites` and `outs` differ in length.
pub fn cut_many_with<R: BufRead, W: Write>(
    reader: R,
    sites: &[&SiteFilter],
    outs: &mut [W],
    options: &CutOptions,
) -> Result<CutSummary, CutError> {
    assert_eq!(sites.len(), outs.len(), "one output per site");
    let mut c = Cutter::new(sites, outs, options);
    c.run(reader)?;
    Ok(c.summary()?)
}

/// Where the reader is.
#[derive(Debug)]
enum Mode {
    /// SQL text.
    Sql,
    /// Rows of `COPY ... sl_log_archive`.
    LogRows(LogColumns),
    /// Data of another `COPY ... FROM STDIN`, going whole to the sites marked.
    TableRows(Vec<bool>),
}

/// One cut in progress: where the reader is, and what each site got so far.
struct Cutter<'a, W: Write> {
    /// The sites, in the caller's order.
    sites: &'a [&'a SiteFilter],
    /// How DDL is read.
    options: &'a CutOptions,
    /// Per site: where its copy goes.
    outs: &'a mut [W],
    /// Current 1-based line.
    line_no: u64,
    /// SQL text or which COPY data.
    mode: Mode,
    /// What the statement being read has open (a string, a comment...).
    scanner: Scanner,
    /// Raw bytes of the statement being read.
    stmt: Vec<u8>,
    /// Line where it starts.
    stmt_line: u64,
    /// Per site: something was written from the current line.
    wrote_line: Vec<bool>,
    /// Per site: the last byte written was a newline (or nothing was written yet).
    at_line_start: Vec<bool>,
    /// Per site: the previous line was wholly dropped; a following empty line goes too.
    skip_blank: Vec<bool>,
    /// Decision for the table of the last per-table statement (`finishTableAfterCopy`
    /// follows it).
    last_table: Option<Vec<bool>>,
    /// Open EXECUTE SCRIPTs: txid → the sites that got one of its statements.
    scripts: HashMap<Vec<u8>, Vec<bool>>,
    /// Cache of the last COPY row's table: raw nsp, raw rel → decisions.
    row_cache: Option<(Vec<u8>, Vec<u8>, Vec<bool>)>,
    /// The counter of the tracking call, once read.
    counter: Option<Counter>,
    /// Whether the archive's `commit;` was read (after the tracking call).
    committed: bool,
    /// Whether the end marker was read (after the tracking call).
    marker: bool,
    /// Whether a `-- EOL` line was read (after the tracking call): the copy then needs
    /// none of its own.
    eol: bool,
    /// Which body the archive has, as far as read.
    body: BodyKind,
    /// Changes read (see [`CutSummary::changes`]).
    changes: u64,
    /// Per site: the changes it got.
    kept: Vec<u64>,
}

/// The last line of every site copy: the original tools' client (`get_slony_logs.pl`)
/// applies only a file holding it, so that a copy cut short in transfer is never applied.
pub const EOL_LINE: &[u8] = b"-- EOL\n";

/// A [`CutErrorKind::Malformed`] at `line`.
fn malformed(line: u64, reason: impl Into<String>) -> CutErrorKind {
    CutErrorKind::Malformed {
        line,
        reason: reason.into(),
    }
}

/// A [`CutErrorKind::Undecidable`] for `statement`, which starts at `line`.
fn undecidable(line: u64, statement: &str, reason: impl Into<String>) -> CutErrorKind {
    CutErrorKind::Undecidable {
        line,
        statement: excerpt(statement, 120),
        reason: reason.into(),
    }
}

impl<'a, W: Write> Cutter<'a, W> {
    /// A cut at the start of an archive.
    fn new(sites: &'a [&'a SiteFilter], outs: &'a mut [W], options: &'a CutOptions) -> Self {
        let n = sites.len();
        Cutter {
            sites,
            options,
            outs,
            line_no: 0,
            mode: Mode::Sql,
            // Every archive's strings are read the standard way here, a pre-2.2 body as
            // well (the receiver reads one with backslash escapes, see `envelope`).
            scanner: Scanner::new(Strings::Standard),
            stmt: Vec::new(),
            stmt_line: 0,
            wrote_line: vec![false; n],
            at_line_start: vec![true; n],
            skip_blank: vec![false; n],
            last_table: None,
            scripts: HashMap::new(),
            row_cache: None,
            counter: None,
            committed: false,
            marker: false,
            eol: false,
            body: BodyKind::Empty,
            changes: 0,
            kept: vec![0; n],
        }
    }

    /// Writes `bytes` to the copy of `site`.
    fn emit(&mut self, site: usize, bytes: &[u8]) -> Result<(), CutErrorKind> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.outs[site]
            .write_all(bytes)
            .map_err(|source| CutErrorKind::Write { site, source })?;
        self.wrote_line[site] = true;
        self.at_line_start[site] = bytes.ends_with(b"\n");
        Ok(())
    }

    /// Writes `bytes` to the copies of the sites marked in `keep`.
    fn emit_to(&mut self, keep: &[bool], bytes: &[u8]) -> Result<(), CutErrorKind> {
        for (site, &k) in keep.iter().enumerate() {
            if k {
                self.emit(site, bytes)?;
            }
        }
        Ok(())
    }

    /// Writes `bytes` to every site's copy.
    fn emit_all(&mut self, bytes: &[u8]) -> Result<(), CutErrorKind> {
        for site in 0..self.sites.len() {
            self.emit(site, bytes)?;
        }
        Ok(())
    }

    /// Reads the whole archive, line by line, writing each site's copy as it goes.
    fn run<R: BufRead>(&mut self, mut reader: R) -> Result<(), CutErrorKind> {
        let mut line = Vec::with_capacity(64 * 1024);
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .map_err(CutErrorKind::Read)?;
            if n == 0 {
                return self.end_of_file();
            }
            self.line_no += 1;
            if !line.ends_with(b"\n") && n as u64 == MAX_LINE {
                return Err(malformed(
                    self.line_no,
                    format!("a line longer than {MAX_LINE} bytes"),
                ));
            }
            if !matches!(self.mode, Mode::Sql)
                && !line.ends_with(b"\n")
                && !copy_text::is_end_of_data(&line)
            {
                return Err(CutErrorKind::Incomplete {
                    reason: format!(
                        "the file ends in the middle of COPY data (line {})",
                        self.line_no
                    ),
                });
            }
            match &self.mode {
                Mode::Sql => self.sql_line(&line)?,
                Mode::LogRows(cols) => {
                    let cols = *cols;
                    self.log_row(&line, cols)?
                }
                Mode::TableRows(_) => {
                    let Mode::TableRows(keep) = std::mem::replace(&mut self.mode, Mode::Sql) else {
                        unreachable!("matched just above")
                    };
                    self.emit_to(&keep, &line)?;
                    if !copy_text::is_end_of_data(&line) {
                        self.mode = Mode::TableRows(keep);
                    }
                }
            }
        }
    }

    /// At the end of the file: nothing may be left open.
    fn end_of_file(&mut self) -> Result<(), CutErrorKind> {
        match self.mode {
            Mode::Sql => {}
            _ => {
                return Err(CutErrorKind::Incomplete {
                    reason: "the file ends inside COPY data (no `\\.` line)".into(),
                })
            }
        }
        if !self.scanner.is_normal() || has_sql(&self.stmt) {
            return Err(CutErrorKind::Incomplete {
                reason: format!(
                    "the file ends inside a statement (started at line {})",
                    self.stmt_line
                ),
            });
        }
        if !self.stmt.is_empty() {
            // Only comments after the last statement, on a line without a newline.
            let rest = std::mem::take(&mut self.stmt);
            self.emit_all(&rest)?;
        }
        if !self.eol {
            for site in 0..self.sites.len() {
                if !self.at_line_start[site] {
                    self.emit(site, b"\n")?;
                }
                self.emit(site, EOL_LINE)?;
            }
        }
        Ok(())
    }

    /// What the cut found; the archive must have been whole.
    fn summary(&self) -> Result<CutSummary, CutErrorKind> {
        let counter = self.counter.ok_or_else(|| CutErrorKind::Incomplete {
            reason: "no archiveTracking_offline call".into(),
        })?;
        if !self.committed {
            return Err(CutErrorKind::Incomplete {
                reason: "the final `commit;` is missing".into(),
            });
        }
        if !self.marker {
            return Err(CutErrorKind::Incomplete {
                reason: "the end marker (`-- End Of Archive Log` or `-- EOL`) is missing".into(),
            });
        }
        Ok(CutSummary {
            counter,
            body: self.body,
            changes: self.changes,
            kept: self.kept.clone(),
        })
    }

    /// A blank line between statements: every site gets it, but a site whose previous
    /// line was wholly dropped (see [`Cutter::skip_blank`]).
    fn blank_line(&mut self, line: &[u8]) -> Result<(), CutErrorKind> {
        for site in 0..self.sites.len() {
            if std::mem::take(&mut self.skip_blank[site]) {
                continue;
            }
            self.emit(site, line)?;
        }
        Ok(())
    }

    /// A comment line between statements, `text` its trimmed text: every site gets it;
    /// after the tracking call it may be the end marker.
    fn comment_line(&mut self, line: &[u8], text: &[u8]) -> Result<(), CutErrorKind> {
        if self.counter.is_some() && (text == b"End Of Archive Log" || text == b"EOL") {
            self.marker = true;
            self.eol |= text == b"EOL";
        }
        self.skip_blank.iter_mut().for_each(|s| *s = false);
        self.emit_all(line)
    }

    /// One line of SQL text.
    fn sql_line(&mut self, line: &[u8]) -> Result<(), CutErrorKind> {
        self.wrote_line.iter_mut().for_each(|w| *w = false);
        if self.stmt.is_empty() && self.scanner.is_normal() {
            match gap(line) {
                Gap::Blank => return self.blank_line(line),
                Gap::Comment(text) => return self.comment_line(line, text.trim_ascii()),
                Gap::MetaCommand => {
                    return Err(malformed(
                        self.line_no,
                        "a psql meta-command (backslash command) outside COPY data",
                    ))
                }
                Gap::Sql => {}
            }
        }
        let mut ended_here = false;
        let mut seg_start = 0;
        loop {
            if self.stmt.is_empty() {
                self.stmt_line = self.line_no;
            }
            match self.scanner.scan(&self.stmt, line, seg_start) {
                None => {
                    self.stmt.extend_from_slice(&line[seg_start..]);
                    if self.stmt.len() > MAX_STATEMENT {
                        return Err(malformed(
                            self.stmt_line,
                            format!("a statement longer than {MAX_STATEMENT} bytes"),
                        ));
                    }
                    break;
                }
                Some(semi) => {
                    ended_here = true;
                    self.stmt.extend_from_slice(&line[seg_start..=semi]);
                    let rest = &line[semi + 1..];
                    let tail = is_trailing(rest);
                    if tail {
                        self.stmt.extend_from_slice(rest);
                    }
                    let raw = std::mem::take(&mut self.stmt);
                    self.statement(&raw)?;
                    if !matches!(self.mode, Mode::Sql) {
                        if !tail {
                            return Err(malformed(
                                self.line_no,
                                "text after `COPY ... FROM STDIN;` on the same line",
                            ));
                        }
                        break;
                    }
                    if tail {
                        break;
                    }
                    seg_start = semi + 1;
                }
            }
        }
        for site in 0..self.sites.len() {
            if self.wrote_line[site] {
                self.skip_blank[site] = false;
                if !self.at_line_start[site] {
                    // The statement owning this line's newline went elsewhere.
                    self.emit(site, b"\n")?;
                }
            } else if ended_here {
                self.skip_blank[site] = true;
            }
        }
        Ok(())
    }

    /// A complete statement (raw bytes, with its `;` and the rest of its last line when
    /// that is only blanks or a comment).
    fn statement(&mut self, raw: &[u8]) -> Result<(), CutErrorKind> {
        let text = String::from_utf8_lossy(raw);
        let line = self.stmt_line;
        let class = classify(&text, self.counter.is_some())
            .map_err(|reason| undecidable(line, &text, reason))?;
        match class {
            Class::All => self.emit_all(raw),
            Class::Tracking(counter) => {
                if self.counter.is_some() {
                    return Err(malformed(line, "a second archiveTracking_offline call"));
                }
                let counter: Counter = counter.parse().map_err(|_| {
                    malformed(
                        line,
                        format!("tracking counter {counter:?} is not a number"),
                    )
                })?;
                self.counter = Some(counter);
                self.emit_all(raw)
            }
            Class::Commit => {
                if self.counter.is_some() {
                    self.committed = true;
                }
                self.emit_all(raw)
            }
            Class::Tables(names) => {
                let keep = self.table_statement(&names, line, &text)?;
                self.emit_to(&keep, raw)
            }
            Class::FollowTable => {
                let keep = self.last_table.clone().ok_or_else(|| {
                    undecidable(line, &text, "no table statement precedes it to follow")
                })?;
                self.emit_to(&keep, raw)
            }
            Class::Sequence(nsp, seq) => {
                let keep = self.sequence_decision(&nsp, &seq);
                self.count(&keep);
                self.emit_to(&keep, raw)
            }
            Class::CopyLog(cols) => {
                self.body = BodyKind::LogCopy;
                self.mode = Mode::LogRows(cols);
                self.emit_all(raw)
            }
            Class::CopyTable(names) => {
                let keep = self.table_statement(&names, line, &text)?;
                self.mode = Mode::TableRows(keep.clone());
                self.emit_to(&keep, raw)
            }
        }
    }

    /// A statement of the body on the tables of `target` (a row change, a step of an
    /// initial copy): which sites get it, counted as a change, and remembered for the
    /// `finishTableAfterCopy` that may follow it.
    fn table_statement(
        &mut self,
        target: &Target,
        line: u64,
        text: &str,
    ) -> Result<Vec<bool>, CutErrorKind> {
        let keep = self.decide_tables(target, line, text)?;
        self.body_statement();
        self.count(&keep);
        self.last_table = Some(keep.clone());
        Ok(keep)
    }

    /// Per site: whether it gets a statement on the sequence `nsp.seq` (its list holds it).
    fn sequence_decision(&self, nsp: &str, seq: &str) -> Vec<bool> {
        self.sites
            .iter()
            .map(|s| s.has_sequence(nsp, seq))
            .collect()
    }

    /// A statement on tables makes the body one of statements, unless it is a COPY's.
    fn body_statement(&mut self) {
        if self.body == BodyKind::Empty {
            self.body = BodyKind::Statements;
        }
    }

    /// Counts one change, and for each site whether it got it.
    fn count(&mut self, keep: &[bool]) {
        self.changes += 1;
        for (k, n) in keep.iter().zip(self.kept.iter_mut()) {
            *n += u64::from(*k);
        }
    }

    /// Per site: whether it gets a statement touching all of `names`.
    fn decide_tables(
        &self,
        target: &Target,
        line: u64,
        text: &str,
    ) -> Result<Vec<bool>, CutErrorKind> {
        let mut tables = Vec::with_capacity(target.tables.len());
        for (s, t) in &target.tables {
            if s.is_empty() {
                // A name no site holds stays in the list as held by none, so a statement
                // naming it with a site's table is still refused as mixed.
                tables.push(
                    resolve(t, self.sites, &self.options.ddl_search_path)
                        .map_err(|reason| undecidable(line, text, reason))?
                        .unwrap_or_else(|| (String::new(), t.clone())),
                );
            } else {
                tables.push((s.clone(), t.clone()));
            }
        }
        let mut keep = Vec::with_capacity(self.sites.len());
        for site in self.sites {
            let has: Vec<bool> = tables.iter().map(|(s, t)| site.has_table(s, t)).collect();
            let any = has.iter().any(|h| *h);
            if any && !has.iter().all(|h| *h) {
                return Err(undecidable(
                    line,
                    text,
                    "it touches tables a site subscribes to together with tables it does not",
                ));
            }
            if any {
                if let Some(why) = &target.identity_change {
                    return Err(undecidable(
                        line,
                        text,
                        format!("{why} of a subscribed table: the site's table list must be changed with it"),
                    ));
                }
            }
            keep.push(any);
        }
        Ok(keep)
    }
}

/// Whether `rest` (after a `;`) is only blanks, or blanks and a `--` comment.
fn is_trailing(rest: &[u8]) -> bool {
    let t = rest.trim_ascii_start();
    t.is_empty() || t.starts_with(b"--")
}
