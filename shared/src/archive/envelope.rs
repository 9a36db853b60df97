//! Reading an archive the way it will be applied: every statement judged by PostgreSQL's
//! parser against the grammar slon writes, every DDL row of the COPY data against the
//! DDL rules, before anything is sent.
//!
//! ```text
//! set session_replication_role to replica;      -- preamble (the applier does this itself)
//! start transaction;
//! select "_<cluster>".archiveTracking_offline('<counter>', '<created>');
//! ... body ...
//! -- End Of Archive Log                          -- or `-- EOL` (JSOC's splitter)
//! commit;
//! vacuum analyze "_<cluster>".sl_archive_tracking;
//! ```
//!
//! A Slony 2.2 archive says so in its header (`set session_replication_role to replica;`
//! before `start transaction;`); its strings are read the standard way. Its body may
//! hold only: the COPY into
//! `"_<cluster>".sl_log_archive` with slon's column list, `sequenceSetValue_offline`
//! calls, and the initial copy of a subscription (`delete from <table>`, `copy <table>
//! (...) from stdin`, `finishTableAfterCopy(<n>)`, `analyze <table>`). An archive of
//! Slony-I before 2.2 (no such line) was written for servers with
//! `standard_conforming_strings = off`, so its body is read, and applied, with backslash
//! escapes; it may also hold row changes of constants and the DDL of an EXECUTE SCRIPT. DDL, in either format (in 2.2 it is the
//! statement of a `log_cmdtype = 'S'` row), follows the rules of [`super::statement`].
//!
//! The applier owns the transaction: the archive's own `start transaction` and `commit`
//! are not sent but mark where the body begins and ends, and anything after the commit
//! other than the tracking VACUUM is refused, so an archive is applied whole or not at all.

use super::copy_text::{self, CMDARGS, CMDTYPE, LOG_COLUMNS};
use super::lex::quoted;
use super::parse::{Item, Splitter};
use super::statement::{
    self, Allowance, Allowances, Literal, Parsed, Refusal, Rules, Statement, Strings, Table,
};
use super::{excerpt, ArchiveError};
use crate::counter::Counter;
use crate::ident::ClusterName;
use std::io::BufRead;

/// What the archive says about itself in its tracking call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The counter the archive moves the replica to.
    pub counter: Counter,
    /// When the provider created it (`ac_timestamp`, as written).
    pub created: String,
}

/// What the applier does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this statement of the archive, alone in its own extended-protocol message.
    Execute {
        /// The statement, as in the file.
        sql: String,
        /// Its line.
        line: u64,
    },
    /// From here on the server must read strings this way
    /// (`SET LOCAL standard_conforming_strings`), as the reader does.
    Strings(Strings),
    /// Run this `COPY ... FROM STDIN` and stream its data, read with
    /// [`ArchiveReader::copy_chunk`].
    CopyIn {
        /// The COPY statement, as in the file.
        sql: String,
        /// Its line.
        line: u64,
    },
    /// The archive's `commit;`: its body is complete.
    Commit,
    /// The tracking-table VACUUM after the commit (the applier runs its own, grouped).
    Vacuum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preamble,
    Body,
    Committed,
}

fn malformed(line: u64, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Malformed {
        line,
        reason: reason.into(),
    }
}

fn refused(line: u64, sql: &str, why: &Refusal) -> ArchiveError {
    malformed(line, format!("`{}` is refused: {why}", excerpt(sql, 120)))
}

/// Reads one archive, judging each statement and DDL row before the caller sends it.
pub struct ArchiveReader<R> {
    /// The statements and COPY data.
    splitter: Splitter<R>,
    /// What provider SQL may do.
    rules: Rules,
    /// The counter the file name promises.
    expected: Counter,
    /// Where we are in the archive.
    phase: Phase,
    /// Whether the archive's own `start transaction` was seen.
    started: bool,
    /// Whether the header says Slony 2.2 (`set session_replication_role to replica`).
    slony22: bool,
    /// Whether an end marker comment was seen.
    marker: bool,
    /// The parsed tracking call.
    header: Option<Header>,
    /// How the caller was last told strings are read.
    told: Strings,
    /// An action to hand out before reading on.
    queued: Option<Action>,
    /// Rows of the current COPY into sl_log_archive, being checked.
    rows: Option<LogRows>,
    /// What the checks found so far.
    found: Findings,
    /// Whether a DDL statement or a switch of strings was handed out.
    session_touched: bool,
}

/// What reading an archive found besides its actions.
#[derive(Debug, Default)]
struct Findings {
    /// Allowances used, with their lines.
    used: Vec<(u64, Allowance)>,
    /// SHA-256 (hex) of each DDL row statement checked and found acceptable.
    approved: Vec<String>,
}

impl<R: BufRead> ArchiveReader<R> {
    /// Starts reading the archive of `cluster` that should carry counter `expected`.
    pub fn new(reader: R, cluster: &ClusterName, expected: Counter, allow: Allowances) -> Self {
        ArchiveReader {
            splitter: Splitter::new(reader),
            rules: Rules::new(&format!("_{}", cluster.as_str()), allow),
            expected,
            phase: Phase::Preamble,
            started: false,
            slony22: false,
            marker: false,
            header: None,
            told: Strings::Standard,
            queued: None,
            rows: None,
            found: Findings::default(),
            session_touched: false,
        }
    }

    /// The tracking call's content, once seen.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// The allowances the archive used so far (line, kind), for the log.
    pub fn allowances_used(&self) -> &[(u64, Allowance)] {
        &self.found.used
    }

    /// Whether what the archive handed out so far may have changed the session's
    /// settings: a DDL statement or DDL row (which may set `search_path`), or a switch of
    /// how strings are read. An archive of slon's plain calls and COPY does not, so the
    /// next one in the same transaction needs none of them set again.
    pub fn may_change_session(&self) -> bool {
        self.session_touched || !self.found.approved.is_empty()
    }

    /// The SHA-256 (hex) of every DDL row statement read and approved so far: what the
    /// replica's `log_apply()` is told it may run (see [`crate::offline`]).
    pub fn approved_ddl(&self) -> &[String] {
        &self.found.approved
    }

    /// The next thing to do; `None` at the end of the file.
    pub fn next_action(&mut self) -> Result<Option<Action>, ArchiveError> {
        loop {
            if let Some(a) = self.queued.take() {
                return Ok(Some(a));
            }
            let Some(item) = self.splitter.next_item()? else {
                return Ok(None);
            };
            // How the item was read, and so how the server must read it.
            let strings = self.splitter.strings();
            let action = match item {
                Item::Comment { text, .. } => {
                    if self.phase != Phase::Preamble
                        && (text == "End Of Archive Log" || text == "EOL")
                    {
                        self.marker = true;
                    }
                    continue;
                }
                Item::Statement { sql, line } => self.statement(sql, line)?,
                Item::CopyIn { sql, line } => self.copy(sql, line)?,
            };
            let Some(action) = action else { continue };
            if strings != self.told {
                self.told = strings;
                self.session_touched = true;
                self.queued = Some(action);
                return Ok(Some(Action::Strings(strings)));
            }
            return Ok(Some(action));
        }
    }

    /// Reads the next chunk of the current COPY's data into `buf` (see
    /// [`Splitter::copy_chunk`]); rows of `sl_log_archive` are checked before they are
    /// handed out. Returns `false` once the data has ended.
    pub fn copy_chunk(&mut self, buf: &mut Vec<u8>) -> Result<bool, ArchiveError> {
        let more = self.splitter.copy_chunk(buf)?;
        if let Some(rows) = &mut self.rows {
            rows.feed(buf, &self.rules, self.told, &mut self.found)?;
            if !more {
                rows.finish(&self.rules, self.told, &mut self.found)?;
                self.rows = None;
            }
        }
        Ok(more)
    }

    /// Called at the end of the file: the archive must have been whole.
    pub fn finish(&self) -> Result<Header, ArchiveError> {
        let header = self
            .header
            .clone()
            .ok_or_else(|| ArchiveError::Incomplete {
                reason: "no archiveTracking_offline header".into(),
            })?;
        if self.phase != Phase::Committed {
            return Err(ArchiveError::Incomplete {
                reason: "the final `commit;` is missing".into(),
            });
        }
        if !self.marker {
            return Err(ArchiveError::Incomplete {
                reason: "the end marker (`-- End Of Archive Log` or `-- EOL`) is missing".into(),
            });
        }
        Ok(header)
    }

    /// A statement of the archive, judged by where in the archive it stands.
    fn statement(&mut self, sql: String, line: u64) -> Result<Option<Action>, ArchiveError> {
        let strings = self.splitter.strings();
        let shape = statement::judge(&sql, strings)
            .and_then(|s| s.statement)
            .map_err(|r| refused(line, &sql, &r))?;
        match self.phase {
            Phase::Preamble => self.preamble_statement(shape, sql, line),
            Phase::Body => self.body_statement(shape, sql, line),
            Phase::Committed => self.committed_statement(shape, &sql, line),
        }
    }

    /// A statement before the tracking call: the header.
    fn preamble_statement(
        &mut self,
        shape: Statement,
        sql: String,
        line: u64,
    ) -> Result<Option<Action>, ArchiveError> {
        match shape {
            Statement::ReplicaRole if !self.started => {
                self.slony22 = true;
                Ok(None)
            }
            Statement::Empty => Ok(None),
            Statement::Begin if !self.started => {
                self.started = true;
                Ok(None)
            }
            Statement::Call {
                schema,
                function,
                args,
            } if function == "archivetracking_offline" => {
                self.tracking(&schema, &args, line)?;
                if !self.slony22 {
                    self.splitter.set_strings(Strings::Escaped);
                }
                Ok(Some(Action::Execute { sql, line }))
            }
            Statement::Call { function, .. }
                if function == "settrackingoffline" || function == "setsynctracking_offline" =>
            {
                Err(malformed(
                    line,
                    "this is an archive of Slony-I 1.x before 1.2.11 (setsyncTracking_offline); only archives with archiveTracking_offline (Slony-I 1.2.11 and later) are supported",
                ))
            }
            _ => Err(malformed(
                line,
                format!(
                    "expected the header (`start transaction;` then `select \"{}\".archiveTracking_offline(...)`), found `{}`",
                    self.rules.schema(),
                    excerpt(&sql, 80)
                ),
            )),
        }
    }

    /// A statement of the body, between the tracking call and the commit.
    fn body_statement(
        &mut self,
        shape: Statement,
        sql: String,
        line: u64,
    ) -> Result<Option<Action>, ArchiveError> {
        let old = !self.slony22;
        let check_target = |t: &Table| {
            self.rules
                .check_target(t)
                .map_err(|r| refused(line, &sql, &r))
        };
        match shape {
            Statement::Empty => return Ok(None),
            Statement::Commit => {
                self.phase = Phase::Committed;
                return Ok(Some(Action::Commit));
            }
            Statement::Call { function, .. } if function == "archivetracking_offline" => {
                return Err(malformed(line, "a second archiveTracking_offline call"))
            }
            Statement::Call {
                ref schema,
                ref function,
                ref args,
            } if *schema == self.rules.schema()
                && (function == "sequencesetvalue_offline"
                    || function == "finishtableaftercopy") =>
            {
                // A sequence of 2.2 is named (schema, name, value): not one of
                // the cluster's or the system's.
                if let (true, [Literal::Text(nsp), _, _]) =
                    (function == "sequencesetvalue_offline", args.as_slice())
                {
                    self.rules
                        .check_schema(nsp)
                        .map_err(|r| refused(line, &sql, &r))?;
                }
            }
            // The initial copy of a sequence (ENABLE_SUBSCRIPTION).
            Statement::Call {
                ref schema,
                ref function,
                ref args,
            } if schema == "pg_catalog"
                && function == "setval"
                && matches!(args.as_slice(), [Literal::Text(_), _]) =>
            {
                if let [Literal::Text(seq), _] = args.as_slice() {
                    self.check_setval(seq, &sql, line)?;
                }
            }
            Statement::DeleteAll(t) | Statement::Analyze(t) => check_target(&t)?,
            Statement::RowChange(t) if old => check_target(&t)?,
            Statement::CopyIn { .. } => {
                return Err(malformed(
                    line,
                    format!(
                    "`{}` is refused: a COPY FROM STDIN written so that its data cannot be found",
                    excerpt(&sql, 80)
                ),
                ))
            }
            Statement::VacuumAnalyze(_) => {
                return Err(malformed(line, "VACUUM inside the archive's transaction"))
            }
            _ => {
                // The DDL rules read the parse tree itself.
                let parsed = statement::parse(&sql, self.splitter.strings())
                    .map_err(|r| refused(line, &sql, &r))?;
                self.body_ddl(&parsed, &sql, line)?
            }
        }
        Ok(Some(Action::Execute { sql, line }))
    }

    /// `setval` of the sequence `seq` in an initial copy: the sequence must be named as
    /// Slony names it, in a schema provider SQL may set values in.
    fn check_setval(&self, seq: &str, sql: &str, line: u64) -> Result<(), ArchiveError> {
        let Some(nsp) = sequence_schema(seq) else {
            return Err(refused(
                line,
                sql,
                &Refusal::RowChange(
                    "the sequence is not named schema.name or \"schema\".\"name\" as Slony names it",
                ),
            ));
        };
        self.rules
            .check_schema(nsp)
            .map_err(|r| refused(line, sql, &r))
    }

    /// Any other statement of the body: DDL under the DDL rules, and only in an archive
    /// from before Slony-I 2.2 (2.2 carries DDL in `S` rows).
    fn body_ddl(&mut self, parsed: &Parsed, sql: &str, line: u64) -> Result<(), ArchiveError> {
        // The specific rule first, then the grammar.
        let used = self
            .rules
            .check_ddl(parsed)
            .map_err(|r| refused(line, sql, &r))?;
        if self.slony22 {
            return Err(refused(
                line,
                sql,
                &Refusal::Grammar(
                    "it is not part of a Slony 2.2 archive (COPY into sl_log_archive, sequenceSetValue_offline calls, an initial copy); DDL comes as log_cmdtype 'S' rows".into(),
                ),
            ));
        }
        self.found.used.extend(used.into_iter().map(|a| (line, a)));
        self.session_touched = true;
        Ok(())
    }

    /// A statement after the archive's commit: only the tracking VACUUM.
    fn committed_statement(
        &self,
        shape: Statement,
        sql: &str,
        line: u64,
    ) -> Result<Option<Action>, ArchiveError> {
        match shape {
            Statement::VacuumAnalyze(t)
                if t.schema == self.rules.schema() && t.name == "sl_archive_tracking" =>
            {
                Ok(Some(Action::Vacuum))
            }
            Statement::Empty => Ok(None),
            _ => Err(malformed(
                line,
                format!(
                    "`{}` after the archive's commit; only the sl_archive_tracking VACUUM may follow it",
                    excerpt(sql, 80)
                ),
            )),
        }
    }

    fn copy(&mut self, sql: String, line: u64) -> Result<Option<Action>, ArchiveError> {
        if self.phase != Phase::Body {
            return Err(malformed(line, "COPY outside the archive's transaction"));
        }
        match statement::judge(&sql, self.splitter.strings())
            .and_then(|s| s.statement)
            .map_err(|r| refused(line, &sql, &r))?
        {
            Statement::CopyIn { table, columns } => {
                if table.schema == self.rules.schema() && table.name == "sl_log_archive" {
                    if columns != LOG_COLUMNS {
                        return Err(malformed(
                            line,
                            format!(
                                "the COPY into sl_log_archive must name slon's columns ({}) in that order",
                                LOG_COLUMNS.join(", ")
                            ),
                        ));
                    }
                    self.rows = Some(LogRows::new(line));
                } else {
                    self.rules
                        .check_target(&table)
                        .map_err(|r| refused(line, &sql, &r))?;
                }
                Ok(Some(Action::CopyIn { sql, line }))
            }
            _ => {
                let why = match statement::parse(&sql, self.splitter.strings()) {
                    Ok(parsed) => self.rules.check_ddl(&parsed).err().unwrap_or(Refusal::Copy),
                    Err(r) => r,
                };
                Err(refused(line, &sql, &why))
            }
        }
    }

    fn tracking(&mut self, schema: &str, args: &[Literal], line: u64) -> Result<(), ArchiveError> {
        if schema != self.rules.schema() {
            return Err(malformed(
                line,
                format!(
                    "the archive belongs to cluster schema {schema:?}, this replica uses {:?}",
                    self.rules.schema()
                ),
            ));
        }
        let [counter, created] = args else {
            return Err(malformed(
                line,
                "archiveTracking_offline takes (counter, timestamp)",
            ));
        };
        let counter = counter.as_text();
        let counter: Counter = counter.parse().map_err(|_| {
            malformed(
                line,
                format!("tracking counter {counter:?} is not a number"),
            )
        })?;
        if counter != self.expected {
            return Err(malformed(
                line,
                format!(
                    "the tracking call says counter {counter} but the file name says {}",
                    self.expected
                ),
            ));
        }
        self.header = Some(Header {
            counter,
            created: created.as_text(),
        });
        self.phase = Phase::Body;
        Ok(())
    }
}

/// The schema of a sequence named `"schema"."name"` or `schema.name` (lower-case plain
/// words), as Slony names it in `setval`; `None` for any other spelling, so that no case
/// or blank can hide the schema.
fn sequence_schema(seq: &str) -> Option<&str> {
    let plain = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    quoted_schema(seq).or_else(|| {
        seq.split_once('.')
            .filter(|(n, name)| plain(n) && plain(name))
            .map(|(n, _)| n)
    })
}

/// The schema of a sequence named `"schema"."name"`, exactly: neither part may hold a
/// quote, not even a doubled one.
fn quoted_schema(seq: &str) -> Option<&str> {
    if !seq.starts_with('"') {
        return None;
    }
    let (schema, end) = quoted(seq, 1, '"', false)?;
    let rest = seq[end..].strip_prefix('.')?;
    if !rest.starts_with('"') {
        return None;
    }
    let (name, name_end) = quoted(rest, 1, '"', false)?;
    (!schema.contains('"') && !name.contains('"') && name_end == rest.len())
        .then(|| &seq[1..end - 1])
}

/// What is known of the row being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Its command type is not known yet: keep its bytes.
    Start,
    /// A row change (`I`, `U`, `D`, `T`, `s`): nothing to check, skip to its end.
    Skip,
    /// A DDL row (`S`): keep it whole and check its statement at its end.
    Ddl,
}

/// How much of a row may come before its command type is known.
const MAX_ROW_HEAD: usize = 64 * 1024;

/// Checks the rows of a COPY into `sl_log_archive` as they stream past.
#[derive(Debug)]
struct LogRows {
    /// Line of the current row.
    line: u64,
    /// Bytes of the current row while they are needed.
    partial: Vec<u8>,
    /// What the current row is.
    row: Row,
}

impl LogRows {
    fn new(copy_line: u64) -> Self {
        LogRows {
            line: copy_line + 1,
            partial: Vec::new(),
            row: Row::Start,
        }
    }

    fn feed(
        &mut self,
        mut chunk: &[u8],
        rules: &Rules,
        strings: Strings,
        found: &mut Findings,
    ) -> Result<(), ArchiveError> {
        while !chunk.is_empty() {
            let (piece, ends) = match chunk.iter().position(|c| *c == b'\n') {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            chunk = &chunk[piece.len()..];
            if self.row != Row::Skip {
                if self.partial.len() + piece.len() > super::parse::MAX_STATEMENT {
                    return Err(malformed(self.line, "a row of sl_log_archive is too long"));
                }
                self.partial.extend_from_slice(piece);
                if self.row == Row::Start {
                    self.row = self.kind(rules)?;
                    if self.row == Row::Skip {
                        self.partial.clear();
                    }
                }
            }
            if ends {
                self.end_row(rules, strings, found)?;
            }
        }
        Ok(())
    }

    /// The row's kind, once its command type field is complete. A row change must name
    /// an ordinary table: `log_apply` writes to whatever table a row names.
    fn kind(&self, rules: &Rules) -> Result<Row, ArchiveError> {
        let Some(fields) = copy_text::leading_fields(&self.partial, CMDTYPE + 1) else {
            if self.partial.len() > MAX_ROW_HEAD {
                return Err(malformed(
                    self.line,
                    "a row of sl_log_archive whose first fields are longer than 64 KiB",
                ));
            }
            return Ok(Row::Start);
        };
        let cmdtype = fields[CMDTYPE];
        match copy_text::unescape(cmdtype).as_deref() {
            Some(b"S") => Ok(Row::Ddl),
            Some(b"s") => Ok(Row::Skip),
            Some(b"I" | b"U" | b"D" | b"T") => {
                let text = |f: &[u8]| {
                    copy_text::unescape(f).and_then(|b| String::from_utf8(b.into_owned()).ok())
                };
                let (Some(schema), Some(name)) = (text(fields[4]), text(fields[5])) else {
                    return Err(malformed(
                        self.line,
                        "a row change of sl_log_archive without a valid schema and table name",
                    ));
                };
                let table = super::statement::Table { schema, name };
                if table.schema.is_empty() {
                    return Err(malformed(self.line, "a row change without a schema name"));
                }
                rules.check_table(&table).map_err(|r| {
                    malformed(
                        self.line,
                        format!("a row change of {table} is refused: {r}"),
                    )
                })?;
                Ok(Row::Skip)
            }
            _ => Err(malformed(
                self.line,
                format!(
                    "log_cmdtype {:?} is not one Slony writes (I, U, D, T, S, s)",
                    String::from_utf8_lossy(cmdtype)
                ),
            )),
        }
    }

    fn end_row(
        &mut self,
        rules: &Rules,
        strings: Strings,
        found: &mut Findings,
    ) -> Result<(), ArchiveError> {
        let row = std::mem::take(&mut self.partial);
        let kind = std::mem::replace(&mut self.row, Row::Start);
        let line = self.line;
        self.line += 1;
        if kind == Row::Skip {
            return Ok(());
        }
        let row = row.strip_suffix(b"\n").unwrap_or(&row);
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        let fields = copy_text::fields(row);
        if fields.len() != LOG_COLUMNS.len() {
            return Err(malformed(
                line,
                format!(
                    "a row of sl_log_archive with {} fields, expected {}",
                    fields.len(),
                    LOG_COLUMNS.len()
                ),
            ));
        }
        if kind == Row::Start {
            // A row this short never had its command type decided: decide it now.
            self.partial = row.to_vec();
            self.partial.push(b'\t');
            let k = self.kind(rules)?;
            self.partial.clear();
            if k != Row::Ddl {
                return Ok(());
            }
        }
        let Some(args) = copy_text::unescape(fields[CMDARGS]) else {
            return Ok(()); // NULL: EXECUTE refuses it.
        };
        let args = std::str::from_utf8(&args)
            .map_err(|_| malformed(line, "log_cmdargs of a DDL row is not valid UTF-8"))?;
        let elements = copy_text::array_elements(args).map_err(|e| {
            malformed(
                line,
                format!("log_cmdargs of a DDL row is not an array read the same way by the server and by the receiver: {e}"),
            )
        })?;
        let Some(Some(sql)) = elements.into_iter().next() else {
            return Ok(());
        };
        let ddl = |r: Refusal| {
            malformed(
                line,
                format!(
                    "the DDL row (log_cmdtype 'S') `{}` is refused: {r}",
                    excerpt(&sql, 120)
                ),
            )
        };
        let parsed = statement::parse(&sql, strings).map_err(ddl)?;
        let allowances = rules.check_ddl(&parsed).map_err(ddl)?;
        found.used.extend(allowances.into_iter().map(|a| (line, a)));
        found.approved.push(crate::offline::ddl_digest(&sql));
        Ok(())
    }

    fn finish(
        &mut self,
        rules: &Rules,
        strings: Strings,
        found: &mut Findings,
    ) -> Result<(), ArchiveError> {
        if !self.partial.is_empty() || self.row == Row::Skip {
            self.end_row(rules, strings, found)?;
        }
        Ok(())
    }
}

/// An archive read whole and found acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its tracking call.
    pub header: Header,
    /// The SHA-256 (hex) of each of its DDL row statements ([`ArchiveReader::approved_ddl`]).
    pub approved_ddl: Vec<String>,
}

/// Reads a whole archive as the applier would, sending nothing: the check done on every
/// downloaded archive before it is queued.
pub fn read_whole<R: BufRead>(
    reader: R,
    cluster: &ClusterName,
    expected: Counter,
    allow: Allowances,
) -> Result<Verified, ArchiveError> {
    let mut archive = ArchiveReader::new(reader, cluster, expected, allow);
    let mut buf = Vec::new();
    while let Some(action) = archive.next_action()? {
        if let Action::CopyIn { .. } = action {
            while archive.copy_chunk(&mut buf)? {}
        }
    }
    Ok(Verified {
        header: archive.finish()?,
        approved_ddl: archive.found.approved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(
        text: &str,
        expected: u64,
        allow: Allowances,
    ) -> Result<(Vec<Action>, Header), ArchiveError> {
        let cluster = ClusterName::new("lab").unwrap();
        let mut r = ArchiveReader::new(text.as_bytes(), &cluster, Counter(expected), allow);
        let mut actions = Vec::new();
        let mut buf = Vec::new();
        while let Some(a) = r.next_action()? {
            if let Action::CopyIn { .. } = a {
                while r.copy_chunk(&mut buf)? {}
            }
            actions.push(a);
        }
        Ok((actions, r.finish()?))
    }

    fn run(text: &str, expected: u64) -> Result<(Vec<Action>, Header), ArchiveError> {
        run_with(text, expected, Allowances::default())
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::Execute { .. } => "execute",
                Action::Strings(Strings::Standard) => "standard strings",
                Action::Strings(Strings::Escaped) => "escaped strings",
                Action::CopyIn { .. } => "copy",
                Action::Commit => "commit",
                Action::Vacuum => "vacuum",
            })
            .collect()
    }

    const COPY: &str = "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n";

    fn sync(rows: &[&str]) -> String {
        let mut s = String::from(
            "------\n-- Slony-I log shipping archive\n-- Node 1, Event 5000000060\n------\n\
set session_replication_role to replica;\nstart transaction;\n\
select \"_lab\".archiveTracking_offline('35', '2026-11-21 22:06:43.093233+00');\n\
-- end of log archiving header\n",
        );
        s.push_str(COPY);
        for r in rows {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str(
            "\\.\nselect \"_lab\".sequenceSetValue_offline('s1','seq1','2');\n\n\n------\n-- End Of Archive Log\n------\n\
commit;\nvacuum analyze \"_lab\".sl_archive_tracking;\n",
        );
        s
    }

    const ROW: &str = "1\t951\t2\t58\ts1\tt2\tI\t0\t{k,after-ddl,v,99}";

    fn ddl_row(statement: &str) -> String {
        let quoted = statement.replace('\\', "\\\\\\\\").replace('"', "\\\\\"");
        format!("1\t950\t\\N\t55\t\\N\t\\N\tS\t\\N\t{{\"{quoted}\",\"\",\"3,1,4\"}}")
    }

    #[test]
    fn a_real_sync_archive_passes() {
        let (actions, header) = run(&sync(&[ROW]), 35).unwrap();
        assert_eq!(
            kinds(&actions),
            vec!["execute", "copy", "execute", "commit", "vacuum"]
        );
        assert_eq!(header.counter, Counter(35));
        assert_eq!(header.created, "2026-11-21 22:06:43.093233+00");
        let ddl = ddl_row("alter table s1.t2 add column extra text default 'x';");
        run(&sync(&[&ddl, ROW]), 35).unwrap();
    }

    #[test]
    fn jsoc_eol_marker_is_accepted() {
        let text = sync(&[ROW]).replace("-- End Of Archive Log", "-- EOL");
        run(&text, 35).unwrap();
        let text = sync(&[ROW]).replace("-- End Of Archive Log\n", "") + "-- EOL\n";
        run(&text, 35).unwrap();
    }

    #[test]
    fn mismatches_and_escapes_are_refused() {
        let seq = "select \"_lab\".seq";
        let with = |before: &str| sync(&[ROW]).replace(seq, &format!("{before} {seq}"));
        let cases: Vec<(String, &str)> = vec![
            (sync(&[ROW]), "file name says 36"),
            (
                sync(&[ROW]).replace("\"_lab\".archive", "\"_other\".archive"),
                "cluster schema",
            ),
            (
                with("commit; drop table s1.t1;"),
                "after the archive's commit",
            ),
            (
                sync(&[ROW]).replace("vacuum analyze", "drop table s1.t1; vacuum analyze"),
                "after the archive's commit",
            ),
            (with("copy s1.t1 from '/etc/passwd';"), "server file"),
            (
                sync(&[ROW]).replace(
                    "start transaction;\n",
                    "start transaction;\ndelete from s1.t1;\n",
                ),
                "expected the header",
            ),
            (with("rollback;"), "transaction control"),
            (with("/**/commit;"), "after the archive's commit"),
            (with("END/**/;"), "after the archive's commit"),
            (with("savepoint x;"), "transaction control"),
            (with("drop table s1.t1;"), "not part of a Slony 2.2 archive"),
            (
                with("insert into s1.t1 values ('1');"),
                "not part of a Slony 2.2 archive",
            ),
            (
                with("COPY (select 1) TO PROGRAM 'id' /* from stdin */;"),
                "server file or program",
            ),
            (
                with("copy s1.t1 to program 'id' -- from stdin\n;\n"),
                "server file or program",
            ),
            (with("select pg_read_file('/etc/passwd');"), "pg_read_file"),
            (
                with("update \"_lab\".sl_archive_tracking set at_counter = 99;"),
                "cluster's own schema",
            ),
            (
                sync(&[ROW]).replace(
                    "archiveTracking_offline('35', '2026-11-21 22:06:43.093233+00')",
                    "setsyncTracking_offline(1, '5', '6', '2026-11-21')",
                ),
                "1.x",
            ),
            (
                sync(&[ROW]).replace("log_cmdupdncols,log_cmdargs", "log_cmdargs,log_cmdupdncols"),
                "slon's columns",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let expected = if i == 0 { 36 } else { 35 };
            let err = run(text, expected).unwrap_err();
            assert!(
                matches!(err, ArchiveError::Malformed { .. }),
                "{want}: {err}"
            );
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn ddl_rows_are_checked_before_anything_is_sent() {
        for (statement, want) in [
            (
                "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'",
                "server file or program",
            ),
            ("alter role app superuser", "role and privilege"),
            ("ALTER/**/ROLE app SUPERUSER", "role and privilege"),
            ("commit", "transaction control"),
            ("/* x */ END", "transaction control"),
            ("set role postgres", "session changes"),
            ("reset session authorization", "session changes"),
            ("alter system set fsync = off", "ALTER SYSTEM"),
            ("grant all on s1.t1 to public", "role and privilege"),
            ("do $q$ begin perform 1; end $q$", "DO blocks"),
            (
                "create function s1.f() returns int language sql as 'select 1'",
                "function definitions",
            ),
            ("select lo_export(1, '/tmp/x')", "lo_export"),
        ] {
            let text = sync(&[ROW, &ddl_row(statement), ROW]);
            let err = run(&text, 35).unwrap_err();
            assert!(err.to_string().contains(want), "{statement}: {err}");
            assert!(err.to_string().contains("DDL row"), "{statement}: {err}");
        }
        for bad in [
            // The command type as the server would read it, not as it looks.
            "1\t950\t\\N\t55\t\\N\t\\N\t\\123\t\\N\t{\"alter role app superuser\"}",
            "1\t950\t\\N\t55\t\\N\t\\N\tS \t\\N\t{\"alter role app superuser\"}",
            // Dimensions make element 1 another element.
            "1\t950\t\\N\t55\t\\N\t\\N\tS\t\\N\t[0:1]={\"select 1\",\"alter role app superuser\"}",
            "1\t950\t\\N\t55\t\\N\t\\N\tS\t\\N",
        ] {
            let err = run(&sync(&[bad]), 35).unwrap_err();
            assert!(
                matches!(err, ArchiveError::Malformed { .. }),
                "{bad}: {err}"
            );
        }
        // An operator's allowance lets a DO block through, and its use is recorded.
        let text = sync(&[&ddl_row("do $$ begin perform 1; end $$")]);
        let allow = Allowances {
            do_blocks: true,
            ..Allowances::default()
        };
        let cluster = ClusterName::new("lab").unwrap();
        let mut r = ArchiveReader::new(text.as_bytes(), &cluster, Counter(35), allow);
        let mut buf = Vec::new();
        while let Some(a) = r.next_action().unwrap() {
            if let Action::CopyIn { .. } = a {
                while r.copy_chunk(&mut buf).unwrap() {}
            }
        }
        assert_eq!(r.allowances_used(), &[(10, Allowance::DoBlock)]);
    }

    #[test]
    fn incomplete_archives_are_incomplete() {
        let text = sync(&[ROW]);
        let cut = &text[..text.find("commit;").unwrap()];
        assert!(matches!(run(cut, 35), Err(ArchiveError::Incomplete { .. })));
        let no_marker = text.replace("-- End Of Archive Log\n", "");
        assert!(matches!(
            run(&no_marker, 35),
            Err(ArchiveError::Incomplete { .. })
        ));
        let mid_copy = &text[..text.find("\\.").unwrap()];
        assert!(matches!(
            run(mid_copy, 35),
            Err(ArchiveError::Incomplete { .. })
        ));
    }

    const OLD: &str = "start transaction;\nselect \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
insert into \"s1\".\"t1\" (id,txt) values ('1','a\\\\b;c');\n\
update only \"s1\".\"t1\" set txt='x' where id='1';\ndelete from only \"s1\".\"t1\" where id='2';\n\
select \"_lab\".sequenceSetValue_offline('1','22');\n-- EOL\ncommit;\n";

    #[test]
    fn pre_22_statement_archives_pass_with_escaped_strings() {
        let (actions, _) = run(OLD, 7).unwrap();
        assert_eq!(
            kinds(&actions),
            vec![
                "execute",
                "escaped strings",
                "execute",
                "execute",
                "execute",
                "execute",
                "commit"
            ]
        );
        // DDL of an EXECUTE SCRIPT passes the rules; a forbidden one is refused.
        let ddl = OLD.replace(
            "update only",
            "alter table s1.t1 add column z int;\nupdate only",
        );
        run(&ddl, 7).unwrap();
        let bad = OLD.replace("update only", "alter role app superuser;\nupdate only");
        assert!(run(&bad, 7)
            .unwrap_err()
            .to_string()
            .contains("role and privilege"));
    }

    #[test]
    fn a_string_the_server_reads_differently_hides_nothing() {
        // Read with backslash escapes (as the server applies a pre-2.2 archive), this is
        // one row change whose string holds `'; commit; drop table ...`.
        let hidden = OLD.replace(
            "values ('1','a\\\\b;c')",
            "values ('1','x\\'); commit; drop table s1.t2; --')",
        );
        let (actions, _) = run(&hidden, 7).unwrap();
        assert_eq!(actions.iter().filter(|a| **a == Action::Commit).count(), 1);
        let sent = actions
            .iter()
            .filter_map(|a| match a {
                Action::Execute { sql, .. } => Some(sql.as_str()),
                _ => None,
            })
            .find(|s| s.contains("drop table"))
            .unwrap();
        // The statement sent is the whole row change, and the server reads it the same
        // way, because it is told to read strings with escapes first.
        assert!(
            sent.starts_with("insert into") && sent.ends_with("--')"),
            "{sent}"
        );
        assert_eq!(kinds(&actions)[1], "escaped strings");
        // In a 2.2 archive (standard strings) the same text is refused, not applied.
        let text = sync(&[ROW]).replace(
            "select \"_lab\".seq",
            "insert into s1.t1 values ('x\\'); commit; drop table s1.t2; --'); select \"_lab\".seq",
        );
        assert!(run(&text, 35).is_err());
    }

    #[test]
    fn real_slony_archives_pass() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/slony-2.2.11");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.contains("offline_init") || !name.ends_with(".sql") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let counter: u64 = text
                .split("archiveTracking_offline('")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap()
                .parse()
                .unwrap();
            // Slony's own EXECUTE SCRIPT test defines a function: allowed here as an
            // operator would allow it.
            let allow = Allowances {
                functions: true,
                ..Allowances::default()
            };
            run_with(&text, counter, allow).unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        }
        assert!(seen >= 8, "only {seen} fixtures found in {}", dir.display());
    }
}
