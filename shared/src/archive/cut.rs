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

use super::copy_text::{self, LOG_COLUMNS};
use super::excerpt;
use super::lex::{dollar_tag, is_ident_byte};
use crate::counter::Counter;
use crate::ident::QualifiedTable;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Longest line accepted (PostgreSQL's own limit for one field is 1 GB).
pub const MAX_LINE: u64 = 1 << 30;

/// Longest SQL statement accepted (same bound as the splitter's).
pub const MAX_STATEMENT: usize = super::parse::MAX_STATEMENT;

/// The tables and sequences one site receives.
///
/// Both come from the site's stored lists: `<subscribers_dir>/<node>/tables`, and
/// `<subscribers_dir>/<node>/sequences`, which the manager decides from the provider's
/// catalog when the site subscribes (the sequences of the Slony sets that the site's
/// tables own or use in a default). A sequence is never taken for a site's because of
/// its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteFilter {
    /// schema → the site's tables in that schema.
    tables: HashMap<String, HashSet<String>>,
    /// schema → the site's sequences in that schema.
    sequences: HashMap<String, HashSet<String>>,
}

fn by_schema<S: Into<String>, N: Into<String>>(
    entries: impl IntoIterator<Item = (S, N)>,
) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for (s, n) in entries {
        out.entry(s.into()).or_default().insert(n.into());
    }
    out
}

impl SiteFilter {
    /// A filter for the tables `(schema, name)`, exactly as PostgreSQL spells them (case
    /// sensitive, unquoted), and no sequence.
    pub fn new<S: Into<String>, N: Into<String>>(tables: impl IntoIterator<Item = (S, N)>) -> Self {
        SiteFilter {
            tables: by_schema(tables),
            sequences: HashMap::new(),
        }
    }

    /// The same filter with the sequences `(schema, name)` as well (spelled as in
    /// [`SiteFilter::new`]).
    #[must_use]
    pub fn with_sequences<S: Into<String>, N: Into<String>>(
        mut self,
        sequences: impl IntoIterator<Item = (S, N)>,
    ) -> Self {
        for (s, n) in by_schema(sequences) {
            self.sequences.entry(s).or_default().extend(n);
        }
        self
    }

    /// A filter from a site's stored lists: its tables (`<node>/tables`) and its
    /// sequences (`<node>/sequences`), both `schema.name`.
    pub fn from_lists(tables: &[QualifiedTable], sequences: &[QualifiedTable]) -> Self {
        Self::new(tables.iter().map(|t| (t.schema.clone(), t.table.clone()))).with_sequences(
            sequences
                .iter()
                .map(|q| (q.schema.clone(), q.table.clone())),
        )
    }

    /// Whether the site's table list holds `schema.name`.
    pub fn has_table(&self, schema: &str, name: &str) -> bool {
        self.tables
            .get(schema)
            .is_some_and(|names| names.contains(name))
    }

    /// Whether the site's sequence list holds `schema.seq`. Only the list counts: a
    /// sequence called after one of the site's tables is not the site's for that.
    pub fn has_sequence(&self, schema: &str, seq: &str) -> bool {
        self.sequences
            .get(schema)
            .is_some_and(|names| names.contains(seq))
    }

    /// Whether both lists are empty (the site still gets every counter, envelope only).
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(HashSet::is_empty)
            && self.sequences.values().all(HashSet::is_empty)
    }
}

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

// ---------------------------------------------------------------------------------------
// The cutter.

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

/// Positions of the fields the cut needs, from the COPY column list.
#[derive(Debug, Clone, Copy)]
struct LogColumns {
    txid: usize,
    nsp: usize,
    rel: usize,
    cmdtype: usize,
    cmdargs: usize,
    /// Largest of the above: a row needs at least `max + 1` fields.
    max: usize,
}

struct Cutter<'a, W: Write> {
    sites: &'a [&'a SiteFilter],
    /// How DDL is read.
    options: &'a CutOptions,
    outs: &'a mut [W],
    /// Current 1-based line.
    line_no: u64,
    mode: Mode,
    /// Lexer state inside the statement being read.
    lexer: Lexer,
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
    counter: Option<Counter>,
    committed: bool,
    marker: bool,
    body: BodyKind,
    changes: u64,
    kept: Vec<u64>,
}

fn malformed(line: u64, reason: impl Into<String>) -> CutErrorKind {
    CutErrorKind::Malformed {
        line,
        reason: reason.into(),
    }
}

fn undecidable(line: u64, statement: &str, reason: impl Into<String>) -> CutErrorKind {
    CutErrorKind::Undecidable {
        line,
        statement: excerpt(statement, 120),
        reason: reason.into(),
    }
}

impl<'a, W: Write> Cutter<'a, W> {
    fn new(sites: &'a [&'a SiteFilter], outs: &'a mut [W], options: &'a CutOptions) -> Self {
        let n = sites.len();
        Cutter {
            sites,
            options,
            outs,
            line_no: 0,
            mode: Mode::Sql,
            lexer: Lexer::default(),
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
            body: BodyKind::Empty,
            changes: 0,
            kept: vec![0; n],
        }
    }

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

    fn emit_to(&mut self, keep: &[bool], bytes: &[u8]) -> Result<(), CutErrorKind> {
        for (site, &k) in keep.iter().enumerate() {
            if k {
                self.emit(site, bytes)?;
            }
        }
        Ok(())
    }

    fn emit_all(&mut self, bytes: &[u8]) -> Result<(), CutErrorKind> {
        for site in 0..self.sites.len() {
            self.emit(site, bytes)?;
        }
        Ok(())
    }

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
            if !matches!(self.mode, Mode::Sql) && !line.ends_with(b"\n") && !is_copy_end(&line) {
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
                    if !is_copy_end(&line) {
                        self.mode = Mode::TableRows(keep);
                    }
                }
            }
        }
    }

    fn end_of_file(&mut self) -> Result<(), CutErrorKind> {
        match self.mode {
            Mode::Sql => {}
            _ => {
                return Err(CutErrorKind::Incomplete {
                    reason: "the file ends inside COPY data (no `\\.` line)".into(),
                })
            }
        }
        if !self.lexer.is_normal() || has_sql(&self.stmt) {
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
        Ok(())
    }

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

    /// One line of SQL text.
    fn sql_line(&mut self, line: &[u8]) -> Result<(), CutErrorKind> {
        self.wrote_line.iter_mut().for_each(|w| *w = false);
        if self.stmt.is_empty() && self.lexer.is_normal() {
            let t = line.trim_ascii();
            if t.is_empty() {
                for site in 0..self.sites.len() {
                    if std::mem::take(&mut self.skip_blank[site]) {
                        continue;
                    }
                    self.emit(site, line)?;
                }
                return Ok(());
            }
            if let Some(c) = t.strip_prefix(b"--") {
                let text = c.trim_ascii();
                if self.counter.is_some() && (text == b"End Of Archive Log" || text == b"EOL") {
                    self.marker = true;
                }
                self.skip_blank.iter_mut().for_each(|s| *s = false);
                return self.emit_all(line);
            }
            if t.starts_with(b"\\") {
                return Err(malformed(
                    self.line_no,
                    "a psql meta-command (backslash command) outside COPY data",
                ));
            }
        }
        let mut ended_here = false;
        let mut seg_start = 0;
        loop {
            if self.stmt.is_empty() {
                self.stmt_line = self.line_no;
            }
            match self.lexer.scan(line, seg_start) {
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
                let keep = self.decide_tables(&names, line, &text)?;
                self.body_statement();
                self.count(&keep);
                self.last_table = Some(keep.clone());
                self.emit_to(&keep, raw)
            }
            Class::FollowTable => {
                let keep = self.last_table.clone().ok_or_else(|| {
                    undecidable(line, &text, "no table statement precedes it to follow")
                })?;
                self.emit_to(&keep, raw)
            }
            Class::Sequence(nsp, seq) => {
                let keep: Vec<bool> = self
                    .sites
                    .iter()
                    .map(|s| s.has_sequence(&nsp, &seq))
                    .collect();
                self.count(&keep);
                self.emit_to(&keep, raw)
            }
            Class::CopyLog(cols) => {
                self.body = BodyKind::LogCopy;
                self.mode = Mode::LogRows(cols);
                self.emit_all(raw)
            }
            Class::CopyTable(names) => {
                let keep = self.decide_tables(&names, line, &text)?;
                self.body_statement();
                self.count(&keep);
                self.last_table = Some(keep.clone());
                self.mode = Mode::TableRows(keep.clone());
                self.emit_to(&keep, raw)
            }
        }
    }

    fn body_statement(&mut self) {
        if self.body == BodyKind::Empty {
            self.body = BodyKind::Statements;
        }
    }

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
                    self.resolve(t, line, text)?
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

    /// The table an unqualified name `t` meant when Slony applied the script, as far as
    /// the sites are concerned: `None` when no site holds a table of that name in a
    /// schema of the DDL search path (the statement is then no site's).
    ///
    /// A site's table exists on the log-shipping node, so when a site holds `t` in the
    /// first schema of the path, that is the table PostgreSQL took. When sites hold it
    /// only in a later schema, an earlier schema may still hold a table of that name
    /// that no site subscribes to: that is truly ambiguous, and the cut stops.
    fn resolve(
        &self,
        t: &str,
        line: u64,
        text: &str,
    ) -> Result<Option<(String, String)>, CutErrorKind> {
        let path = &self.options.ddl_search_path;
        let held = |schema: &str| self.sites.iter().any(|site| site.has_table(schema, t));
        let Some(first) = path.iter().position(|s| held(s)) else {
            return Ok(None);
        };
        if first == 0 {
            return Ok(Some((path[0].clone(), t.to_string())));
        }
        let earlier = path[..first].join(", ");
        Err(undecidable(
            line,
            text,
            format!(
                "the unqualified name {t:?} is {}.{t} of a site's list, unless a schema searched before it ({earlier}) holds a table {t:?} that no site subscribes to: qualify the name in the script, or set ddl_search_path to the search_path the script ran with",
                path[first]
            ),
        ))
    }

    /// One line of `COPY ... sl_log_archive` data.
    fn log_row(&mut self, line: &[u8], cols: LogColumns) -> Result<(), CutErrorKind> {
        if is_copy_end(line) {
            self.mode = Mode::Sql;
            return self.emit_all(line);
        }
        let row = line.strip_suffix(b"\n").unwrap_or(line);
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        let mut fields: [&[u8]; 9] = [&[]; 9];
        let mut n = 0;
        for f in row.splitn(cols.max + 2, |b| *b == b'\t') {
            if n <= cols.max {
                fields[slot(n, &cols)] = f;
            }
            n += 1;
        }
        if n <= cols.max {
            return Err(malformed(
                self.line_no,
                format!(
                    "a sl_log_archive row with {n} fields, expected at least {}",
                    cols.max + 1
                ),
            ));
        }
        let (txid, nsp, rel, cmdtype, args) =
            (fields[0], fields[1], fields[2], fields[3], fields[4]);
        match cmdtype {
            b"I" | b"U" | b"D" | b"T" => {
                let keep = self.row_decision(nsp, rel)?;
                self.count(&keep);
                self.emit_to(&keep, line)
            }
            b"S" => {
                let args = copy_text::unescape(args)
                    .ok_or_else(|| malformed(self.line_no, "log_cmdargs is NULL in a DDL row"))?;
                let args = String::from_utf8_lossy(&args);
                let statement = copy_text::first_array_element(&args).ok_or_else(|| {
                    malformed(
                        self.line_no,
                        "log_cmdargs of a DDL row is not an array with a statement",
                    )
                })?;
                let line_no = self.line_no;
                if !has_sql(statement.as_bytes()) {
                    // The remainder of the script after its last `;`.
                    let keep = self.scripts.get(txid).cloned().unwrap_or_default();
                    return self.emit_to(&keep, line);
                }
                let keep = match ddl_target(&statement)
                    .map_err(|reason| undecidable(line_no, &statement, reason))?
                {
                    Found::Sequence(nsp, seq) => self
                        .sites
                        .iter()
                        .map(|s| s.has_sequence(&nsp, &seq))
                        .collect(),
                    Found::Tables(target) => self.decide_tables(&target, line_no, &statement)?,
                    Found::All => vec![true; self.sites.len()],
                };
                let seen = self
                    .scripts
                    .entry(txid.to_vec())
                    .or_insert_with(|| vec![false; keep.len()]);
                for (s, k) in seen.iter_mut().zip(&keep) {
                    *s |= *k;
                }
                self.count(&keep);
                self.emit_to(&keep, line)
            }
            b"s" => {
                let keep = self.scripts.remove(txid).unwrap_or_default();
                self.emit_to(&keep, line)
            }
            other => Err(malformed(
                self.line_no,
                format!(
                    "unknown log_cmdtype {:?} in a sl_log_archive row",
                    String::from_utf8_lossy(other)
                ),
            )),
        }
    }

    /// The decisions for a data row of table (`nsp`, `rel`), as written in the COPY.
    fn row_decision(&mut self, nsp: &[u8], rel: &[u8]) -> Result<Vec<bool>, CutErrorKind> {
        if let Some((n, r, keep)) = &self.row_cache {
            if n == nsp && r == rel {
                return Ok(keep.clone());
            }
        }
        let (Some(n), Some(r)) = (copy_text::unescape(nsp), copy_text::unescape(rel)) else {
            return Err(malformed(
                self.line_no,
                "a data row (I/U/D/T) without a table name",
            ));
        };
        // A name that is not UTF-8 cannot be in any list (lists hold plain identifiers).
        let keep: Vec<bool> = match (std::str::from_utf8(&n), std::str::from_utf8(&r)) {
            (Ok(n), Ok(r)) => self.sites.iter().map(|s| s.has_table(n, r)).collect(),
            _ => vec![false; self.sites.len()],
        };
        self.row_cache = Some((nsp.to_vec(), rel.to_vec(), keep.clone()));
        Ok(keep)
    }
}

/// Maps a field index of the row to its slot in the fields array (0 txid, 1 nsp, 2 rel,
/// 3 cmdtype, 4 cmdargs, others to 5..).
fn slot(i: usize, c: &LogColumns) -> usize {
    if i == c.txid {
        0
    } else if i == c.nsp {
        1
    } else if i == c.rel {
        2
    } else if i == c.cmdtype {
        3
    } else if i == c.cmdargs {
        4
    } else {
        5 + (i % 4)
    }
}

fn is_copy_end(line: &[u8]) -> bool {
    matches!(line, b"\\.\n" | b"\\.\r\n" | b"\\.")
}

/// Whether `rest` (after a `;`) is only blanks, or blanks and a `--` comment.
fn is_trailing(rest: &[u8]) -> bool {
    let t = rest.trim_ascii_start();
    t.is_empty() || t.starts_with(b"--")
}

/// Whether `b` holds anything but whitespace and comments.
fn has_sql(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if b[i..].starts_with(b"--") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// Finding statement boundaries in raw bytes.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Lex {
    #[default]
    Normal,
    /// Inside '...'; `true` when backslash escapes apply (E'...').
    Quote(bool),
    Ident,
    Dollar(Vec<u8>),
    Block(u32),
}

/// The splitter's lexical rules ([`super::parse`]), over raw bytes, carried across lines.
#[derive(Debug, Default)]
struct Lexer {
    lex: Lex,
    depth: i64,
}

impl Lexer {
    fn is_normal(&self) -> bool {
        self.lex == Lex::Normal
    }

    /// Scans `line` from `start`; returns the index of the first top-level `;`.
    fn scan(&mut self, line: &[u8], start: usize) -> Option<usize> {
        let mut i = start;
        while i < line.len() {
            let c = line[i];
            match &mut self.lex {
                Lex::Normal => match c {
                    b'\'' => {
                        let escape = i > start
                            && matches!(line[i - 1], b'E' | b'e')
                            && !(i > start + 1 && is_ident_byte(line[i - 2]));
                        self.lex = Lex::Quote(escape);
                    }
                    b'"' => self.lex = Lex::Ident,
                    b'-' if line.get(i + 1) == Some(&b'-') => return None,
                    b'/' if line.get(i + 1) == Some(&b'*') => {
                        self.lex = Lex::Block(1);
                        i += 2;
                        continue;
                    }
                    b'$' if !(i > start && is_ident_byte(line[i - 1])) => {
                        if let Some(tag) = dollar_tag(&line[i..]) {
                            let len = tag.len();
                            self.lex = Lex::Dollar(tag);
                            i += len;
                            continue;
                        }
                    }
                    b'(' => self.depth += 1,
                    b')' => self.depth -= 1,
                    b';' if self.depth <= 0 => {
                        self.depth = 0;
                        return Some(i);
                    }
                    _ => {}
                },
                Lex::Quote(escape) => {
                    if *escape && c == b'\\' {
                        i += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if line.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        self.lex = Lex::Normal;
                    }
                }
                Lex::Ident => {
                    if c == b'"' {
                        self.lex = Lex::Normal;
                    }
                }
                Lex::Dollar(tag) => {
                    if c == b'$' && line[i..].starts_with(tag) {
                        i += tag.len();
                        self.lex = Lex::Normal;
                        continue;
                    }
                }
                Lex::Block(d) => {
                    if c == b'*' && line.get(i + 1) == Some(&b'/') {
                        *d -= 1;
                        i += 2;
                        if *d == 0 {
                            self.lex = Lex::Normal;
                        }
                        continue;
                    }
                    if c == b'/' && line.get(i + 1) == Some(&b'*') {
                        *d += 1;
                        i += 2;
                        continue;
                    }
                }
            }
            i += 1;
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// Deciding what a statement touches.

/// Tokens of an SQL statement's text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An unquoted word, folded to lower case as PostgreSQL does.
    Word(String),
    /// A "quoted identifier", unquoted.
    Quoted(String),
    /// A string literal's value.
    Str(String),
    /// A number.
    Num(String),
    /// Any other character.
    Punct(char),
}

/// A lazy tokenizer: only the head of a (possibly huge) statement is ever looked at.
struct Tokens<'s> {
    s: &'s str,
    pos: usize,
}

impl<'s> Tokens<'s> {
    fn new(s: &'s str) -> Self {
        Tokens { s, pos: 0 }
    }

    fn skip_blanks(&mut self) {
        let b = self.s.as_bytes();
        loop {
            while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if b[self.pos..].starts_with(b"--") {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
            } else if b[self.pos..].starts_with(b"/*") {
                let mut depth = 0;
                while self.pos < b.len() {
                    if b[self.pos..].starts_with(b"/*") {
                        depth += 1;
                        self.pos += 2;
                    } else if b[self.pos..].starts_with(b"*/") {
                        depth -= 1;
                        self.pos += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.pos += 1;
                    }
                }
            } else {
                return;
            }
        }
    }

    /// The rest of the text after the current position (blanks skipped).
    fn rest(&mut self) -> &'s str {
        self.skip_blanks();
        &self.s[self.pos..]
    }
}

impl Iterator for Tokens<'_> {
    type Item = Tok;

    fn next(&mut self) -> Option<Tok> {
        self.skip_blanks();
        let s = &self.s[self.pos..];
        let mut chars = s.char_indices();
        let (_, c) = chars.next()?;
        let (tok, len) = if c == '"' {
            let (name, end) = quoted(s, 1, '"', false)?;
            (Tok::Quoted(name), end)
        } else if c == '\'' || ((c == 'E' || c == 'e') && s[1..].starts_with('\'')) {
            let escape = c != '\'';
            let (text, end) = quoted(s, if escape { 2 } else { 1 }, '\'', escape)?;
            (Tok::Str(text), end)
        } else if c.is_ascii_alphabetic() || c == '_' || !c.is_ascii() {
            let end = s
                .char_indices()
                .find(|&(_, ch)| {
                    !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '$' || !ch.is_ascii())
                })
                .map_or(s.len(), |(i, _)| i);
            (Tok::Word(s[..end].to_ascii_lowercase()), end)
        } else if c.is_ascii_digit() {
            let end = s
                .char_indices()
                .find(|&(_, ch)| !(ch.is_ascii_digit() || ch == '.'))
                .map_or(s.len(), |(i, _)| i);
            (Tok::Num(s[..end].to_string()), end)
        } else {
            (Tok::Punct(c), c.len_utf8())
        };
        self.pos += len;
        Some(tok)
    }
}

/// The text of a quoted token of `s` whose body starts at byte `start` and ends at an
/// undoubled `quote`, and the byte just past it; `backslash` for `E'...'` escapes.
/// `None` if the quote is not closed.
fn quoted(s: &str, start: usize, quote: char, backslash: bool) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s[start..]
        .char_indices()
        .map(|(i, c)| (i + start, c))
        .peekable();
    while let Some((i, c)) = chars.next() {
        if backslash && c == '\\' {
            if let Some((_, next)) = chars.next() {
                out.push(next);
                continue;
            }
            return None;
        }
        if c == quote {
            if chars.peek().is_some_and(|&(_, n)| n == quote) {
                chars.next();
                out.push(quote);
                continue;
            }
            return Some((out, i + c.len_utf8()));
        }
        out.push(c);
    }
    None
}

/// The tables a statement touches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// (schema, table), as PostgreSQL spells them.
    tables: Vec<(String, String)>,
    /// Set when the statement renames the table or moves it to another schema.
    identity_change: Option<&'static str>,
}

impl Target {
    fn one(t: (String, String)) -> Self {
        Target {
            tables: vec![t],
            identity_change: None,
        }
    }
}

/// What a statement of the archive's SQL text is.
#[derive(Debug)]
enum Class {
    /// Envelope or session statement: every site.
    All,
    /// The tracking call, with its counter text.
    Tracking(String),
    /// `commit;`
    Commit,
    /// A statement on these tables.
    Tables(Target),
    /// Goes with the previous table statement (`finishTableAfterCopy`).
    FollowTable,
    /// Sets sequence (schema, name).
    Sequence(String, String),
    /// `COPY <cluster>.sl_log_archive ... FROM STDIN`.
    CopyLog(LogColumns),
    /// `COPY <table> ... FROM STDIN` (an initial copy).
    CopyTable(Target),
}

fn word(t: &Option<Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x == w)
}

/// Classifies one statement of an archive's SQL text. `in_body`: the tracking call was
/// seen (before it, only the header is expected).
fn classify(text: &str, in_body: bool) -> Result<Class, String> {
    let mut toks = Tokens::new(text);
    let Some(first) = toks.next() else {
        // An empty statement (a lone `;`).
        return Ok(Class::All);
    };
    let Tok::Word(first) = first else {
        return Err("it does not start with a keyword".into());
    };
    match first.as_str() {
        "set" | "reset" | "start" | "begin" | "vacuum" | "savepoint" | "release" => Ok(Class::All),
        "commit" | "end" => Ok(Class::Commit),
        "select" => classify_call(&mut toks),
        "copy" => {
            let name = qualified_name(&mut toks).map_err(|e| format!("COPY target: {e}"))?;
            // Only `COPY ... FROM STDIN` carries data in the file.
            let rest = toks.rest();
            if !super::parse::is_copy_from_stdin(&format!("copy x {rest}")) {
                return Err("a COPY that is not FROM STDIN".into());
            }
            match name {
                Name::Two(s, t) if t == "sl_log_archive" && s.starts_with('_') => {
                    Ok(Class::CopyLog(log_columns(rest)?))
                }
                Name::Two(s, t) => Ok(Class::CopyTable(Target::one((s, t)))),
                Name::One(_) => Err(format!("COPY target: {UNQUALIFIED}")),
                Name::Other(why) => Err(format!("COPY target: {why}")),
            }
        }
        _ if !in_body => Err("a statement before the archive's tracking call".into()),
        _ => {
            let target = target_of(&first, &mut toks)?;
            match target {
                Found::Tables(t) => Ok(Class::Tables(t)),
                Found::Sequence(s, n) => Ok(Class::Sequence(s, n)),
                Found::All => Ok(Class::All),
            }
        }
    }
}

/// The positions of the needed fields from `( col, col, ...) FROM STDIN`.
fn log_columns(rest: &str) -> Result<LogColumns, String> {
    let names: Vec<String> = if let Some(list) = rest.trim_start().strip_prefix('(') {
        let end = list.find(')').ok_or("an unterminated column list")?;
        list[..end]
            .split(',')
            .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
            .collect()
    } else {
        LOG_COLUMNS.iter().map(|c| c.to_string()).collect()
    };
    let find = |col: &str| {
        names
            .iter()
            .position(|n| n == col)
            .ok_or_else(|| format!("the COPY into sl_log_archive has no {col} column"))
    };
    let c = LogColumns {
        txid: find("log_txid")?,
        nsp: find("log_tablenspname")?,
        rel: find("log_tablerelname")?,
        cmdtype: find("log_cmdtype")?,
        cmdargs: find("log_cmdargs")?,
        max: 0,
    };
    Ok(LogColumns {
        max: c.txid.max(c.nsp).max(c.rel).max(c.cmdtype).max(c.cmdargs),
        ..c
    })
}

/// `select [schema.]function(args)`: the Slony calls and `setval`.
fn classify_call(toks: &mut Tokens<'_>) -> Result<Class, String> {
    let a = toks.next();
    let b = toks.next();
    let (schema, func, open) = match (a, b) {
        (Some(Tok::Word(s) | Tok::Quoted(s)), Some(Tok::Punct('.'))) => {
            let f = match toks.next() {
                Some(Tok::Word(f)) => f,
                Some(Tok::Quoted(f)) => f.to_ascii_lowercase(),
                _ => return Err("a select that is not a function call".into()),
            };
            (Some(s), f, toks.next())
        }
        (Some(Tok::Word(f)), open) => (None, f, open),
        _ => return Err("a select that is not a function call".into()),
    };
    if open != Some(Tok::Punct('(')) {
        return Err("a select that is not a function call".into());
    }
    let mut args = Vec::new();
    loop {
        match toks.next() {
            Some(Tok::Str(s) | Tok::Num(s)) => args.push(s),
            Some(Tok::Punct('-')) => match toks.next() {
                Some(Tok::Num(n)) => args.push(format!("-{n}")),
                _ => return Err("a function call with an expression argument".into()),
            },
            Some(Tok::Word(w)) if w == "true" || w == "false" => args.push(w),
            Some(Tok::Punct(')')) if args.is_empty() => break,
            _ => return Err("a function call with an expression argument".into()),
        }
        match toks.next() {
            Some(Tok::Punct(',')) => {}
            Some(Tok::Punct(')')) => break,
            _ => return Err("a function call with an expression argument".into()),
        }
    }
    if !matches!(toks.next(), None | Some(Tok::Punct(';'))) || toks.next().is_some() {
        return Err("more than a single function call".into());
    }
    let slony = schema.as_deref().is_some_and(|s| s.starts_with('_'));
    match (slony, func.as_str()) {
        (true, "archivetracking_offline") => match args.first() {
            Some(c) => Ok(Class::Tracking(c.clone())),
            None => Err("archiveTracking_offline without a counter".into()),
        },
        (true, "sequencesetvalue_offline") => match args.as_slice() {
            [nsp, seq, _value] => Ok(Class::Sequence(nsp.clone(), seq.clone())),
            [_id, _value] => Err(
                "the pre-2.2 form sequenceSetValue_offline(<id>, <value>) names no sequence".into(),
            ),
            _ => Err("sequenceSetValue_offline with unexpected arguments".into()),
        },
        (true, "finishtableaftercopy") => Ok(Class::FollowTable),
        (false, "setval") if schema.is_none() || schema.as_deref() == Some("pg_catalog") => {
            let name = args.first().ok_or("setval without a sequence")?;
            match parse_name_text(name)? {
                Name::Two(s, n) => Ok(Class::Sequence(s, n)),
                Name::One(_) => Err(format!("setval of {name:?}: {UNQUALIFIED}")),
                Name::Other(why) => Err(format!("setval of {name:?}: {why}")),
            }
        }
        _ => Err(format!(
            "a call of {func}(), which is not a known Slony call"
        )),
    }
}

/// A possibly qualified name.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    /// `schema.name`.
    Two(String, String),
    /// `name` alone: its schema is the first of the search path that holds it.
    One(String),
    /// Anything else, and why it cannot be used.
    Other(&'static str),
}

/// Why an unqualified name is not taken where its schema must be known.
const UNQUALIFIED: &str = "the name is not schema-qualified (its schema depends on search_path)";

/// Reads `ident(.ident)*` from the tokens.
fn qualified_name(toks: &mut Tokens<'_>) -> Result<Name, String> {
    let mut parts = Vec::new();
    loop {
        match toks.next() {
            Some(Tok::Word(w)) => parts.push(w),
            Some(Tok::Quoted(q)) => parts.push(q),
            _ => return Err("expected a table name".into()),
        }
        let save = toks.pos;
        match toks.next() {
            Some(Tok::Punct('.')) => continue,
            _ => {
                toks.pos = save;
                break;
            }
        }
    }
    Ok(match parts.len() {
        1 => Name::One(parts.pop().unwrap_or_default()),
        2 => {
            let t = parts.pop().unwrap_or_default();
            Name::Two(parts.pop().unwrap_or_default(), t)
        }
        _ => Name::Other("a name with more than two parts"),
    })
}

/// Parses a name written as text (`'"s1"."seq1"'`, `'s1.seq1'`).
fn parse_name_text(s: &str) -> Result<Name, String> {
    let mut t = Tokens::new(s);
    let name = qualified_name(&mut t)?;
    if t.next().is_some() {
        return Err(format!("{s:?} is not a plain name"));
    }
    Ok(name)
}

/// What [`target_of`] found.
enum Found {
    Tables(Target),
    Sequence(String, String),
    /// Nothing table-specific (`analyze` alone).
    All,
}

fn two(name: Name) -> Result<(String, String), String> {
    match name {
        Name::Two(s, t) => Ok((s, t)),
        Name::One(_) => Err(UNQUALIFIED.to_string()),
        Name::Other(why) => Err(why.to_string()),
    }
}

/// A table named by a statement: `(schema, table)`, the schema empty when the statement
/// does not name one (resolved against the DDL search path, see [`CutOptions`]).
fn table(name: Name) -> Result<(String, String), String> {
    match name {
        Name::Two(s, t) => Ok((s, t)),
        Name::One(t) => Ok((String::new(), t)),
        Name::Other(why) => Err(why.to_string()),
    }
}

/// The target of a DDL or DML statement (`first` is its lower-cased first word).
fn target_of(first: &str, toks: &mut Tokens<'_>) -> Result<Found, String> {
    match first {
        "insert" => {
            let t = toks.next();
            if !word(&t, "into") {
                return Err("an insert without `into`".into());
            }
            Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
        }
        "update" => {
            skip_word(toks, "only");
            Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
        }
        "delete" => {
            let t = toks.next();
            if !word(&t, "from") {
                return Err("a delete without `from`".into());
            }
            skip_word(toks, "only");
            Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
        }
        "truncate" => {
            skip_word(toks, "table");
            name_list(toks).map(Found::Tables)
        }
        "analyze" | "analyse" => {
            skip_word(toks, "verbose");
            let save = toks.pos;
            match toks.next() {
                None | Some(Tok::Punct(';')) => Ok(Found::All),
                _ => {
                    toks.pos = save;
                    name_list(toks).map(Found::Tables)
                }
            }
        }
        "alter" => {
            let what = toks.next();
            if word(&what, "table") {
                skip_words(toks, &["if", "exists"]);
                skip_word(toks, "only");
                let save = toks.pos;
                if let Some(Tok::Word(w)) = toks.next() {
                    if w == "all" {
                        return Err("ALTER TABLE ALL IN TABLESPACE touches many tables".into());
                    }
                }
                toks.pos = save;
                let t = table(qualified_name(toks)?)?;
                let save = toks.pos;
                if toks.next() != Some(Tok::Punct('*')) {
                    toks.pos = save;
                }
                let a = toks.next();
                let b = toks.next();
                let identity_change = if word(&a, "rename") && word(&b, "to") {
                    Some("a rename")
                } else if word(&a, "set") && word(&b, "schema") {
                    Some("a move to another schema")
                } else {
                    None
                };
                Ok(Found::Tables(Target {
                    tables: vec![t],
                    identity_change,
                }))
            } else if word(&what, "sequence") {
                skip_words(toks, &["if", "exists"]);
                let (s, n) = two(qualified_name(toks)?)?;
                Ok(Found::Sequence(s, n))
            } else {
                Err("an ALTER of something other than a table or sequence".into())
            }
        }
        "comment" => {
            if !word(&toks.next(), "on") {
                return Err("a COMMENT without ON".into());
            }
            let what = toks.next();
            if word(&what, "table") {
                Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
            } else if word(&what, "column") {
                let mut parts = Vec::new();
                loop {
                    match toks.next() {
                        Some(Tok::Word(w) | Tok::Quoted(w)) => parts.push(w),
                        _ => return Err("expected a column name".into()),
                    }
                    if toks.next() != Some(Tok::Punct('.')) {
                        break;
                    }
                }
                match parts.as_slice() {
                    [s, t, _c] => Ok(Found::Tables(Target::one((s.clone(), t.clone())))),
                    _ => Err("the column is not written schema.table.column".into()),
                }
            } else {
                Err("a COMMENT on something other than a table or column".into())
            }
        }
        "drop" => {
            let what = toks.next();
            if word(&what, "table") {
                skip_words(toks, &["if", "exists"]);
                name_list(toks).map(Found::Tables)
            } else if word(&what, "sequence") {
                skip_words(toks, &["if", "exists"]);
                let (s, n) = two(qualified_name(toks)?)?;
                if toks.next() == Some(Tok::Punct(',')) {
                    return Err("a DROP of several sequences".into());
                }
                Ok(Found::Sequence(s, n))
            } else {
                Err("a DROP of something other than a table or sequence".into())
            }
        }
        "create" => {
            let mut w = toks.next();
            if word(&w, "or") {
                if !word(&toks.next(), "replace") {
                    return Err("CREATE OR without REPLACE".into());
                }
                w = toks.next();
            }
            if word(&w, "unique") {
                w = toks.next();
            }
            if word(&w, "constraint") {
                w = toks.next();
            }
            if word(&w, "unlogged") {
                w = toks.next();
            }
            if word(&w, "temp") || word(&w, "temporary") || word(&w, "global") || word(&w, "local") {
                return Err("a temporary table".into());
            }
            if word(&w, "table") {
                skip_words(toks, &["if", "not", "exists"]);
                Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
            } else if word(&w, "sequence") {
                skip_words(toks, &["if", "not", "exists"]);
                let (s, n) = two(qualified_name(toks)?)?;
                Ok(Found::Sequence(s, n))
            } else if word(&w, "index") || word(&w, "trigger") {
                // The table follows the first top-level ON (an index or trigger name,
                // options and events come before it).
                let mut depth = 0i32;
                loop {
                    match toks.next() {
                        None => return Err("no ON <table> found".into()),
                        Some(Tok::Punct('(')) => depth += 1,
                        Some(Tok::Punct(')')) => depth -= 1,
                        Some(Tok::Word(x)) if x == "on" && depth == 0 => break,
                        _ => {}
                    }
                }
                skip_word(toks, "only");
                Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
            } else {
                Err("a CREATE of something other than a table, index, trigger or sequence".into())
            }
        }
        "with" => Err("a statement with a WITH clause".into()),
        _ => Err(format!(
            "`{first}` statements are not among those whose table can be read (alter table, create index ... on, comment on table, drop table, create table, insert, update, delete, truncate)"
        )),
    }
}

fn skip_word(toks: &mut Tokens<'_>, w: &str) -> bool {
    let save = toks.pos;
    if word(&toks.next(), w) {
        true
    } else {
        toks.pos = save;
        false
    }
}

fn skip_words(toks: &mut Tokens<'_>, words: &[&str]) {
    let save = toks.pos;
    for w in words {
        if !word(&toks.next(), w) {
            toks.pos = save;
            return;
        }
    }
}

/// `[only] name [*] [, [only] name [*]]*` (truncate, drop table, analyze).
fn name_list(toks: &mut Tokens<'_>) -> Result<Target, String> {
    let mut tables = Vec::new();
    loop {
        skip_word(toks, "only");
        tables.push(table(qualified_name(toks)?)?);
        let save = toks.pos;
        let mut t = toks.next();
        if t == Some(Tok::Punct('*')) {
            t = toks.next();
        }
        if t != Some(Tok::Punct(',')) {
            toks.pos = save;
            if toks.next() == Some(Tok::Punct('*')) {
                // consumed
            } else {
                toks.pos = save;
            }
            break;
        }
    }
    Ok(Target {
        tables,
        identity_change: None,
    })
}

/// The target of a statement carried in a DDL (`S`) row; it must be exactly one
/// statement.
fn ddl_target(statement: &str) -> Result<Found, String> {
    let mut lexer = Lexer::default();
    let bytes = statement.as_bytes();
    // Lex line by line (a line comment ends at its newline).
    let mut offset = 0;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if let Some(semi) = lexer.scan(line, 0) {
            if has_sql(&bytes[offset + semi + 1..]) {
                return Err("the row holds more than one statement".into());
            }
            break;
        }
        offset += line.len();
    }
    let mut toks = Tokens::new(statement);
    let first = match toks.next() {
        Some(Tok::Word(w)) => w,
        _ => return Err("it does not start with a keyword".into()),
    };
    match target_of(&first, &mut toks)? {
        Found::All => Err("an ANALYZE of the whole database inside a script".into()),
        found => Ok(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::envelope::read_whole;
    use crate::archive::statement::Allowances;
    use crate::ident::ClusterName;

    const HEAD: &str = "------------------------------------------------------------------\n\
-- Slony-I log shipping archive\n\
-- Node 1, Event 5000000060\n\
------------------------------------------------------------------\n\
set session_replication_role to replica;\n\
start transaction;\n\
select \"_lab\".archiveTracking_offline('35', '2026-11-21 22:06:43.093233+00');\n\
-- end of log archiving header\n\
------------------------------------------------------------------\n\
-- start of Slony-I data\n\
------------------------------------------------------------------\n";

    const COPY: &str = "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n";

    const TAIL: &str = "\n------------------------------------------------------------------\n\
-- End Of Archive Log\n\
------------------------------------------------------------------\n\
commit;\n\
vacuum analyze \"_lab\".sl_archive_tracking;\n";

    fn archive(rows: &[&str], seqs: &[&str]) -> String {
        let mut s = String::from(HEAD);
        s.push_str(COPY);
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str("\\.\n");
        for q in seqs {
            s.push_str(q);
            s.push_str("\n\n");
        }
        s.push_str(TAIL);
        s
    }

    fn pairs<'a>(names: &'a [&'a str]) -> impl Iterator<Item = (String, String)> + 'a {
        names.iter().map(|t| {
            let (s, n) = t.split_once('.').unwrap();
            (s.to_string(), n.to_string())
        })
    }

    /// A site with these tables and no sequence.
    fn site(tables: &[&str]) -> SiteFilter {
        SiteFilter::new(pairs(tables))
    }

    /// A site with these tables and these sequences.
    fn site_seq(tables: &[&str], sequences: &[&str]) -> SiteFilter {
        SiteFilter::new(pairs(tables)).with_sequences(pairs(sequences))
    }

    fn cut_str(text: &str, sites: &[SiteFilter]) -> Result<(Vec<String>, CutSummary), CutError> {
        let refs: Vec<&SiteFilter> = sites.iter().collect();
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); sites.len()];
        let summary = cut_many(text.as_bytes(), &refs, &mut outs)?;
        Ok((
            outs.into_iter()
                .map(|o| String::from_utf8(o).unwrap())
                .collect(),
            summary,
        ))
    }

    /// Runs a cut copy through the reader the receiver applies with.
    fn check_envelope(text: &str, counter: u64) {
        let cluster = ClusterName::new("lab").unwrap();
        read_whole(
            text.as_bytes(),
            &cluster,
            Counter(counter),
            Allowances::default(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    const R1: &str = "1\t854\t1\t1\ts1\tt1\tI\t0\t{id,4,txt,\"it's \\t tab \\n nl \\\\\\\\ bs é ☃ 𝄞 \\\\\"q\\\\\" 1\"}";
    const R2: &str = "1\t855\t2\t8\ts1\tt2\tI\t0\t{k,k101,v,1}";
    const R3: &str = "1\t857\t1\t17\ts1\tt1\tU\t1\t{txt,NULL,id,1}";
    const R4: &str = "1\t962\t5\t305\ts1\tt5\tT\t0\t{}";

    #[test]
    fn quoted_tokens_undouble_and_unescape() {
        assert_eq!(
            quoted("\"a\"\"b\" rest", 1, '"', false),
            Some(("a\"b".to_string(), 6))
        );
        assert_eq!(
            quoted("'it''s' x", 1, '\'', false),
            Some(("it's".to_string(), 7))
        );
        assert_eq!(
            quoted("E'a\\'b\\\\c' x", 2, '\'', true),
            Some(("a'b\\c".to_string(), 10))
        );
        assert_eq!(quoted("'é☃'", 1, '\'', false), Some(("é☃".to_string(), 7)));
        assert_eq!(quoted("'open", 1, '\'', false), None);
        assert_eq!(quoted("E'ends\\", 2, '\'', true), None);
    }

    #[test]
    fn copy_rows_are_filtered_byte_for_byte() {
        let text = archive(
            &[R1, R2, R3, R4],
            &[
                "select \"_lab\".sequenceSetValue_offline('s1','seq1','2');",
                "select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','10');",
            ],
        );
        let sites = [
            site_seq(&["s1.t1"], &["s1.t1_id_seq"]),
            site_seq(&["s1.t2", "s1.t5"], &["s1.seq1"]),
            site_seq(&["s1.t1", "s1.t2", "s1.t5"], &["s1.seq1", "s1.t1_id_seq"]),
            site(&[]),
        ];
        let (outs, summary) = cut_str(&text, &sites).unwrap();
        assert_eq!(summary.counter, Counter(35));
        assert_eq!(summary.body, BodyKind::LogCopy);
        assert_eq!(summary.changes, 6);
        assert_eq!(summary.kept, vec![3, 3, 6, 0]);
        assert_eq!(
            outs[0],
            archive(
                &[R1, R3],
                &["select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','10');"]
            )
        );
        assert_eq!(
            outs[1],
            archive(
                &[R2, R4],
                &["select \"_lab\".sequenceSetValue_offline('s1','seq1','2');"]
            )
        );
        // A site with every table gets the archive byte for byte.
        assert_eq!(outs[2], text);
        // A site without rows gets the layout of an idle SYNC.
        assert_eq!(outs[3], archive(&[], &[]));
        for o in &outs {
            check_envelope(o, 35);
        }
    }

    #[test]
    fn one_site_cut_equals_the_many_site_cut() {
        let text = archive(&[R1, R2], &[]);
        let f = site(&["s1.t2"]);
        let mut out = Vec::new();
        let s = cut(text.as_bytes(), &f, &mut out).unwrap();
        assert_eq!(s.kept, vec![1]);
        assert_eq!(String::from_utf8(out).unwrap(), archive(&[R2], &[]));
    }

    #[test]
    fn table_names_are_compared_after_copy_unescaping() {
        // `\164\061` is "t1" in octal, `\x74\x31` in hex; `t\\1` is the 3-character name t\1;
        // `we\tird` holds a tab.
        let octal = "1\t1\t1\t1\ts1\t\\164\\061\tI\t0\t{id,1}";
        let hexed = "1\t1\t1\t2\t\\x731\tt\\x31\tI\t0\t{id,2}";
        let backslash = "1\t1\t7\t3\ts1\tt\\\\1\tI\t0\t{id,3}";
        let tab = "1\t1\t8\t4\ts1\twe\\tird\tI\t0\t{id,4}";
        let text = archive(&[octal, hexed, backslash, tab], &[]);
        let sites = [
            site(&["s1.t1"]),
            SiteFilter::new([("s1", "t\\1"), ("s1", "we\tird")]),
            site(&["s1.t\\\\1"]),
        ];
        let (outs, _) = cut_str(&text, &sites).unwrap();
        assert_eq!(outs[0], archive(&[octal, hexed], &[]));
        assert_eq!(outs[1], archive(&[backslash, tab], &[]));
        assert_eq!(outs[2], archive(&[], &[]));
    }

    #[test]
    fn column_order_comes_from_the_copy_statement() {
        let text = archive(&[R1, R2], &[]).replace(
            COPY,
            "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablerelname, log_tablenspname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n",
        );
        // In that order, the 5th field (s1) is the table name and the 6th the schema.
        let (outs, _) = cut_str(&text, &[site(&["t1.s1"]), site(&["s1.t1"])]).unwrap();
        assert!(outs[0].contains(R1) && !outs[0].contains(R2));
        assert!(!outs[1].contains(R1));
    }

    #[test]
    fn ddl_rows_go_with_their_table_and_scripts_stay_whole() {
        let alter = "1\t1070\t\\N\t513\t\\N\t\\N\tS\t\\N\t{\"alter table s1.t2 add column extra text default 'dflt';\",\"\",\"1,1,16,2,1,205,3,1,108\"}";
        let rest = "1\t1070\t\\N\t514\t\\N\t\\N\tS\t\\N\t{\"\\n\",\"\",\"\"}";
        let end = "1\t1070\t\\N\t515\t\\N\t\\N\ts\t\\N\t{}";
        let index = "1\t1071\t\\N\t516\t\\N\t\\N\tS\t\\N\t{\"-- a comment\\ncreate unique index concurrently if not exists \\\\\"t1 idx\\\\\" on only \\\\\"s1\\\\\".\\\\\"t1\\\\\" using btree (id);\",\"\",\"\"}";
        let comment = "1\t1071\t\\N\t517\t\\N\t\\N\tS\t\\N\t{\"\\ncomment on table s1.t5 is 'it''s; fine';\",\"\",\"\"}";
        let rest2 = "1\t1071\t\\N\t518\t\\N\t\\N\tS\t\\N\t{\"\\n\",\"\",\"\"}";
        let end2 = "1\t1071\t\\N\t519\t\\N\t\\N\ts\t\\N\t{}";
        let text = archive(&[alter, rest, end, R2, index, comment, rest2, end2], &[]);
        let sites = [
            site(&["s1.t2"]),
            site(&["s1.t1"]),
            site(&["s1.t5"]),
            site(&["s9.x"]),
        ];
        let (outs, summary) = cut_str(&text, &sites).unwrap();
        assert_eq!(outs[0], archive(&[alter, rest, end, R2], &[]));
        assert_eq!(outs[1], archive(&[index, rest2, end2], &[]));
        assert_eq!(outs[2], archive(&[comment, rest2, end2], &[]));
        assert_eq!(outs[3], archive(&[], &[]));
        assert_eq!(summary.changes, 4);
    }

    #[test]
    fn undecidable_ddl_stops_the_cut_and_names_the_statement() {
        for (stmt, why) in [
            (
                "create or replace function s1.f() returns int language sql as $$ select 1 $$;",
                "something other",
            ),
            (
                "create view s1.v as select * from s1.t1;",
                "something other",
            ),
            ("grant select on s1.t1 to public;", "not among"),
            (
                "alter table s1.t1 add column a int; drop table s1.t2;",
                "more than one statement",
            ),
            ("drop table s1.t1, s1.t2;", "together with"),
            ("alter table s1.t1 rename to t9;", "a rename"),
            ("alter table s1.t1 set schema s2;", "another schema"),
        ] {
            let row = format!(
                "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{{\"{}\",\"\",\"\"}}",
                stmt.replace('\\', "\\\\\\\\").replace('"', "\\\\\"")
            );
            let text = archive(&[&row], &[]);
            let err = cut_str(&text, &[site(&["s1.t1"]), site(&["s1.t3"])]).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err.kind, CutErrorKind::Undecidable { line: 13, .. }),
                "{stmt}: {msg}"
            );
            assert!(msg.contains(why), "{stmt}: {msg}");
            assert!(msg.contains(&stmt[..20]), "{stmt}: {msg}");
        }
        // Renaming a table no site has is decided: nobody gets it.
        let row = "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"alter table s1.zz rename to yy;\",\"\",\"\"}";
        let (outs, _) = cut_str(&archive(&[row], &[]), &[site(&["s1.t1"])]).unwrap();
        assert_eq!(outs[0], archive(&[], &[]));
    }

    #[test]
    fn unqualified_ddl_goes_to_the_sites_of_the_table_slony_resolved() {
        let ddl = |stmt: &str| format!("1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{{\"{stmt}\",\"\",\"\"}}");
        let cut_with = |text: &str, sites: &[SiteFilter], path: &[&str]| {
            let refs: Vec<&SiteFilter> = sites.iter().collect();
            let mut outs: Vec<Vec<u8>> = vec![Vec::new(); sites.len()];
            let options = CutOptions {
                ddl_search_path: path.iter().map(|s| s.to_string()).collect(),
            };
            cut_many_with(text.as_bytes(), &refs, &mut outs, &options).map(|_| {
                outs.into_iter()
                    .map(|o| String::from_utf8(o).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        // As Slony's regression suites write it: `alter table table4 ...`, applied with
        // the default search_path (public): only the site holding public.table4 gets it.
        let row = ddl("alter table table4 add column x int;");
        let text = archive(&[&row], &[]);
        let sites = [
            site(&["public.table4"]),
            site(&["s1.table4"]),
            site(&["s1.t1"]),
        ];
        let outs = cut_with(&text, &sites, &["public"]).unwrap();
        assert!(outs[0].contains("alter table table4"), "{}", outs[0]);
        assert!(!outs[1].contains("table4"), "{}", outs[1]);
        assert!(!outs[2].contains("table4"), "{}", outs[2]);
        // The default options are the same.
        let (outs, _) = cut_str(&text, &sites).unwrap();
        assert!(outs[0].contains("alter table table4"));
        // With s1 first in the path, the site of s1.table4 gets it.
        let outs = cut_with(&text, &sites, &["s1", "public"]).unwrap();
        assert!(outs[1].contains("alter table table4"), "{}", outs[1]);
        assert!(!outs[0].contains("table4"), "{}", outs[0]);
        // No site holds it in any schema of the path: nobody gets it.
        let outs = cut_with(&text, &[site(&["s2.table4"])], &["public", "s1"]).unwrap();
        assert!(!outs[0].contains("table4"));
        // Held only in a later schema: an earlier one may hold an unsubscribed table4, so
        // the cut stops and says why.
        let err = cut_with(&text, &[site(&["s1.table4"])], &["public", "s1"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err.kind, CutErrorKind::Undecidable { .. }) && msg.contains("public"),
            "{msg}"
        );
        // A name no site holds, together with a site's table: mixed, refused.
        let mixed = ddl("truncate scratch, s1.t1;");
        let err = cut_with(&archive(&[&mixed], &[]), &[site(&["s1.t1"])], &["public"]).unwrap_err();
        assert!(err.to_string().contains("together with"), "{err}");
        // Unqualified names of sequences and COPY targets still stop the cut.
        let seq = ddl("alter sequence q1 restart;");
        let err = cut_with(&archive(&[&seq], &[]), &[site(&["s1.t1"])], &["public"]).unwrap_err();
        assert!(err.to_string().contains("not schema-qualified"), "{err}");
    }

    #[test]
    fn errors_from_a_file_name_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slony1_log_2_00000000000000000035.sql");
        let row = "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"create view s1.v as select 1;\",\"\",\"\"}";
        std::fs::write(&p, archive(&[row], &[])).unwrap();
        let f = site(&["s1.t1"]);
        let mut outs = vec![Vec::new()];
        let err = cut_file(&p, &[&f], &mut outs).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("slony1_log_2_00000000000000000035.sql"),
            "{msg}"
        );
        assert!(msg.contains("create view s1.v"), "{msg}");
    }

    #[test]
    fn sequences_come_from_the_list_only() {
        let s = site_seq(
            &["s1.t1", "s1.t_x", "s2.big"],
            &["s1.t1_id_seq", "s3.ticket"],
        );
        assert!(s.has_sequence("s1", "t1_id_seq"));
        // Listed, in a schema with none of the site's tables.
        assert!(s.has_sequence("s3", "ticket"));
        // Named after a listed table, but not listed: not the site's.
        for (nsp, seq) in [
            ("s1", "t1_x_seq"),
            ("s1", "t1_some_col_seq"),
            ("s1", "t_x_id_seq"),
            ("s2", "big_n_seq"),
            ("s1", "t1_seq"),
            ("s2", "t1_id_seq"),
        ] {
            assert!(!s.has_sequence(nsp, seq), "{nsp}.{seq}");
        }
        // The two lists do not stand in for each other.
        assert!(!s.has_sequence("s1", "t1"));
        assert!(!s.has_table("s1", "t1_id_seq"));
        let tables_only = site(&["s1.t1", "s1.seq1"]);
        assert!(!tables_only.has_sequence("s1", "seq1"));
        assert!(!site(&[]).has_sequence("s1", "t1_id_seq"));
        assert!(site(&[]).is_empty());
        assert!(!site_seq(&[], &["s1.q"]).is_empty());
        let from_lists = SiteFilter::from_lists(
            &[QualifiedTable::parse("s1.t1").unwrap()],
            &[QualifiedTable::parse("s1.q").unwrap()],
        );
        assert_eq!(from_lists, site_seq(&["s1.t1"], &["s1.q"]));
    }

    /// A sequence call named like one of the site's tables' sequences, for a sequence
    /// the site does not list, is cut away in both formats and as DDL; the listed one
    /// stays.
    #[test]
    fn pattern_named_sequences_are_not_sent() {
        let calls = [
            "select \"_lab\".sequenceSetValue_offline('s1','t1_x_seq','5');",
            "select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','10');",
        ];
        let text = archive(&[R1], &calls);
        let sites = [site(&["s1.t1"]), site_seq(&["s1.t1"], &["s1.t1_id_seq"])];
        let (outs, summary) = cut_str(&text, &sites).unwrap();
        assert_eq!(summary.kept, vec![1, 2]);
        assert_eq!(outs[0], archive(&[R1], &[]));
        assert_eq!(outs[1], archive(&[R1], &calls[1..]));
        let row = "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"alter sequence s1.t1_x_seq restart;\"}";
        let (outs, _) = cut_str(
            &archive(&[row], &[]),
            &[site(&["s1.t1"]), site_seq(&[], &["s1.t1_x_seq"])],
        )
        .unwrap();
        assert!(!outs[0].contains("t1_x_seq"), "{}", outs[0]);
        assert!(
            outs[1].contains("alter sequence s1.t1_x_seq"),
            "{}",
            outs[1]
        );
        let pre22 = "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
select pg_catalog.setval('s1.t1_x_seq', 22);\n\
-- EOL\ncommit;\n";
        let (outs, _) = cut_str(pre22, &[site(&["s1.t1"])]).unwrap();
        assert!(!outs[0].contains("t1_x_seq"), "{}", outs[0]);
    }

    #[test]
    fn pre_22_statement_archives() {
        let text = "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
insert into \"s1\".\"t1\" (id,txt) values ('1',E'a\\\\b;c\n-- not a comment\nd');\n\
update only \"s1\".\"t2\" set txt='x;y' where id='1';\n\
delete from only \"s1\".\"t1\" where id='2'; insert into s1.t2 (k) values ('z');\n\
truncate only \"s1\".\"t2\" cascade;\n\
select pg_catalog.setval('s1.t1_id_seq', 22);\n\
select \"pg_catalog\".setval('\"s1\".\"seq1\"', '1');\n\
-- EOL\ncommit;\n";
        let sites = [
            site_seq(&["s1.t1"], &["s1.t1_id_seq"]),
            site_seq(&["s1.t2"], &["s1.seq1"]),
            site(&[]),
        ];
        let (outs, summary) = cut_str(text, &sites).unwrap();
        assert_eq!(summary.body, BodyKind::Statements);
        assert_eq!(summary.changes, 7);
        assert_eq!(summary.kept, vec![3, 4, 0]);
        assert_eq!(
            outs[0],
            "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
insert into \"s1\".\"t1\" (id,txt) values ('1',E'a\\\\b;c\n-- not a comment\nd');\n\
delete from only \"s1\".\"t1\" where id='2';\n\
select pg_catalog.setval('s1.t1_id_seq', 22);\n\
-- EOL\ncommit;\n"
        );
        assert_eq!(
            outs[1],
            "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
update only \"s1\".\"t2\" set txt='x;y' where id='1';\n insert into s1.t2 (k) values ('z');\n\
truncate only \"s1\".\"t2\" cascade;\n\
select \"pg_catalog\".setval('\"s1\".\"seq1\"', '1');\n\
-- EOL\ncommit;\n"
        );
        assert_eq!(
            outs[2],
            "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
-- EOL\ncommit;\n"
        );
        for o in &outs {
            check_envelope(o, 7);
        }
        // A site with everything gets the file unchanged.
        let (all, _) = cut_str(
            text,
            &[site_seq(&["s1.t1", "s1.t2"], &["s1.seq1", "s1.t1_id_seq"])],
        )
        .unwrap();
        assert_eq!(all[0], text);
    }

    #[test]
    fn pre_22_sequence_ids_are_undecidable() {
        let text =
            "start transaction;\nselect \"_lab\".archiveTracking_offline('7', '2010-01-01');\n\
select \"_lab\".sequenceSetValue_offline('1','22');\n-- EOL\ncommit;\n";
        let err = cut_str(text, &[site(&["s1.t1"])]).unwrap_err();
        assert!(
            matches!(err.kind, CutErrorKind::Undecidable { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn incomplete_and_malformed_archives() {
        let full = archive(&[R1, R2], &[]);
        let last = full.rfind("commit;").unwrap() + "commit".len();
        for cut_at in [
            0,
            100,
            full.find("\\.").unwrap(),
            full.find(R2).unwrap() + 3,
            last,
        ] {
            let err = cut_str(&full[..cut_at], &[site(&["s1.t1"])]).unwrap_err();
            assert!(
                matches!(err.kind, CutErrorKind::Incomplete { .. }),
                "cut at {cut_at}: {err}"
            );
        }
        let no_marker = full.replace("-- End Of Archive Log\n", "");
        assert!(matches!(
            cut_str(&no_marker, &[site(&[])]).unwrap_err().kind,
            CutErrorKind::Incomplete { .. }
        ));
        let bad_type = archive(&["1\t1\t1\t1\ts1\tt1\tX\t0\t{}"], &[]);
        assert!(matches!(
            cut_str(&bad_type, &[site(&[])]).unwrap_err().kind,
            CutErrorKind::Malformed { .. }
        ));
        let short = archive(&["1\t1\t1\t1\ts1"], &[]);
        assert!(matches!(
            cut_str(&short, &[site(&[])]).unwrap_err().kind,
            CutErrorKind::Malformed { .. }
        ));
        let meta = full.replace("commit;\n", "\\! rm -rf /\ncommit;\n");
        assert!(matches!(
            cut_str(&meta, &[site(&[])]).unwrap_err().kind,
            CutErrorKind::Malformed { .. }
        ));
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let full = archive(
            &[R1, R2, R3],
            &["select \"_lab\".sequenceSetValue_offline('s1','seq1','2');"],
        );
        let last = full.rfind("commit;").unwrap() + "commit".len();
        for at in 0..=last {
            if !full.is_char_boundary(at) {
                continue;
            }
            match cut_str(&full[..at], &[site(&["s1.t1"])]) {
                Err(CutError {
                    kind: CutErrorKind::Incomplete { .. },
                    ..
                }) => {}
                other => panic!("cut at {at}: {other:?}"),
            }
        }
    }

    #[test]
    fn non_sync_archives_pass_through() {
        let text = format!("{HEAD}-- STORE_NODE\n{TAIL}");
        let (outs, summary) = cut_str(&text, &[site(&[]), site(&["s1.t1"])]).unwrap();
        assert_eq!(summary.body, BodyKind::Empty);
        assert_eq!(outs[0], text);
        assert_eq!(outs[1], text);
    }

    #[test]
    fn a_two_megabyte_row_streams_through() {
        let big = format!(
            "1\t9\t1\t1\ts1\tt1\tI\t0\t{{id,1,txt,{}}}",
            "x".repeat(2_000_000)
        );
        let text = archive(&[&big, R2], &[]);
        let (outs, _) = cut_str(&text, &[site(&["s1.t1"]), site(&["s1.t2"])]).unwrap();
        assert_eq!(outs[0], archive(&[&big], &[]));
        assert_eq!(outs[1], archive(&[R2], &[]));
    }

    #[test]
    fn statement_kinds_are_read() {
        let t = |s: &str| match ddl_target(s) {
            Ok(Found::Tables(t)) => Ok(t.tables),
            Ok(_) => Err("not tables".to_string()),
            Err(e) => Err(e),
        };
        let st = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            t("ALTER TABLE IF EXISTS ONLY \"S1\".\"MixedCase\" * ADD x int"),
            Ok(vec![st("S1", "MixedCase")])
        );
        assert_eq!(t("alter table S1.T1 add x int"), Ok(vec![st("s1", "t1")]));
        assert_eq!(t("create index on s1.t1 (a)"), Ok(vec![st("s1", "t1")]));
        assert_eq!(
            t("create index i on s1.t1 using gin ((j->'on'))"),
            Ok(vec![st("s1", "t1")])
        );
        assert_eq!(
            t("create trigger tr before insert or update on s1.t4 for each row execute function s1.f()"),
            Ok(vec![st("s1", "t4")])
        );
        assert_eq!(
            t("comment on column s1.t2.v is 'x'"),
            Ok(vec![st("s1", "t2")])
        );
        assert_eq!(
            t("drop table if exists s1.a, s1.b cascade"),
            Ok(vec![st("s1", "a"), st("s1", "b")])
        );
        assert_eq!(
            t("create unlogged table if not exists s1.n (id int)"),
            Ok(vec![st("s1", "n")])
        );
        assert_eq!(
            t("truncate table only s1.a *, s1.b restart identity"),
            Ok(vec![st("s1", "a"), st("s1", "b")])
        );
        assert_eq!(
            t("insert into s1.t1 select * from s1.t2"),
            Ok(vec![st("s1", "t1")])
        );
        assert!(t("comment on column t2.v is 'x'").is_err());
        assert!(t("create temp table s1.x (a int)").is_err());
        assert!(t("with x as (select 1) insert into s1.t1 select * from x").is_err());
        assert!(t("alter table all in tablespace a set tablespace b").is_err());
        assert!(
            matches!(ddl_target("create sequence s1.q"), Ok(Found::Sequence(s, q)) if s == "s1" && q == "q")
        );
    }

    /// The archives real Slony-I 2.2.11 wrote, cut for a subset of their tables.
    mod real_archives {
        use super::*;

        fn fixture(name: &str) -> String {
            let dir =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/slony-2.2.11");
            std::fs::read_to_string(dir.join(name)).unwrap()
        }

        fn counter_of(text: &str) -> u64 {
            text.split("archiveTracking_offline('")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap()
                .parse()
                .unwrap()
        }

        fn rows(text: &str) -> Vec<&str> {
            let start = text.find("FROM STDIN;\n").unwrap() + "FROM STDIN;\n".len();
            let end = text[start..]
                .find("\n\\.\n")
                .map_or(start, |e| start + e + 1);
            text[start..end].lines().collect()
        }

        #[test]
        fn dml_truncate_and_big_rows_cut_for_subsets() {
            let all = site_seq(
                &["s1.t1", "s1.t2", "s1.t3", "s1.t4", "s1.t5"],
                &["s1.seq1", "s1.seq2", "s1.t1_id_seq"],
            );
            for name in [
                "dump-mode_02_SYNC_dml.sql",
                "dump-mode_11_SYNC_truncate.sql",
                "dump-mode_33_SYNC_2MB_row_and_pk_update.TRIMMED.sql",
                "dump-mode_35_SYNC_idle.sql",
                "dump-mode_16_SYNC_execute_script_alter.sql",
                "copy-mode_04_SYNC_before_subscription.sql",
            ] {
                let text = fixture(name);
                let sub = site_seq(&["s1.t1", "s1.t4"], &["s1.t1_id_seq"]);
                let (outs, summary) = cut_str(&text, &[sub, all.clone(), site(&[])]).unwrap();
                let counter = counter_of(&text);
                assert_eq!(summary.counter, Counter(counter));
                // Everything subscribed: unchanged.
                assert_eq!(outs[1], text, "{name}");
                for o in &outs {
                    check_envelope(o, counter);
                }
                // The subset gets exactly the rows of t1 and t4, in order, byte for byte.
                let want: Vec<&str> = rows(&text)
                    .into_iter()
                    .filter(|r| {
                        let f: Vec<&str> = r.split('\t').collect();
                        f[4] == "s1" && (f[5] == "t1" || f[5] == "t4")
                    })
                    .collect();
                assert_eq!(rows(&outs[0]), want, "{name}");
                assert!(
                    !outs[0].contains("'seq1'") && !outs[0].contains("'seq2'"),
                    "{name}"
                );
                assert_eq!(
                    outs[0].contains("'t1_id_seq'"),
                    text.contains("'t1_id_seq'"),
                    "{name}"
                );
                // Nothing subscribed: the layout of an idle SYNC with this header.
                assert!(rows(&outs[2]).is_empty(), "{name}");
                assert!(!outs[2].contains("sequenceSetValue"), "{name}");
            }
        }

        #[test]
        fn execute_script_alter_goes_to_the_sites_with_t2() {
            let text = fixture("dump-mode_16_SYNC_execute_script_alter.sql");
            let (outs, _) = cut_str(&text, &[site(&["s1.t2"]), site(&["s1.t1"])]).unwrap();
            assert!(outs[0].contains("alter table s1.t2 add column extra"));
            assert!(outs[0].contains("\ts\t\\N\t{}"));
            assert!(!outs[1].contains("alter table s1.t2"));
            assert!(!outs[1].contains("\tS\t"));
            assert!(!outs[1].contains("\ts\t\\N\t{}"));
        }

        #[test]
        fn a_script_with_a_function_is_undecidable() {
            let text = fixture("dump-mode_34_SYNC_execute_script_multi.sql");
            let err = cut_str(&text, &[site(&["s1.t4"])]).unwrap_err();
            assert!(
                matches!(err.kind, CutErrorKind::Undecidable { .. }),
                "{err}"
            );
            assert!(
                err.to_string().contains("create or replace function s1.f"),
                "{err}"
            );
        }

        #[test]
        fn events_and_the_initial_copy() {
            for name in [
                "copy-mode_01_STORE_NODE_event.sql",
                "copy-mode_05_SUBSCRIBE_SET_event.sql",
            ] {
                let text = fixture(name);
                let (outs, summary) = cut_str(&text, &[site(&["s1.t1"])]).unwrap();
                assert_eq!(outs[0], text, "{name}");
                assert_eq!(summary.body, BodyKind::Empty);
            }
            let text = fixture("copy-mode_06_ENABLE_SUBSCRIPTION_initial_copy.sql");
            let (outs, _) = cut_str(
                &text,
                &[
                    site_seq(&["s1.t2"], &["s1.seq2"]),
                    site_seq(&["s1.t1"], &["s1.t1_id_seq"]),
                ],
            )
            .unwrap();
            check_envelope(&outs[0], 6);
            check_envelope(&outs[1], 6);
            let o = &outs[0];
            assert!(o.contains("delete from \"s1\".\"t2\";\ncopy \"s1\".\"t2\""));
            assert!(o.contains("finishTableAfterCopy(2); analyze \"s1\".\"t2\"; \n"));
            assert!(o.contains("setval('\"s1\".\"seq2\"', '100'); \n"));
            for gone in [
                "\"t1\"",
                "\"t3\"",
                "\"t4\"",
                "\"t5\"",
                "'\"s1\".\"seq1\"'",
                "finishTableAfterCopy(1)",
            ] {
                assert!(!o.contains(gone), "{gone} in\n{o}");
            }
            let o = &outs[1];
            assert!(o.contains("copy \"s1\".\"t1\""));
            assert!(o.contains("3\t\\N\t\\N\t\\N\t\\N\t\\N\n\\.\nselect \"_lab\".finishTableAfterCopy(1); analyze \"s1\".\"t1\"; \n"));
            assert!(o.contains("setval('\"s1\".\"t1_id_seq\"', '3')"));
            assert!(!o.contains("\"t2\""));
        }
    }
}
