//! The subscription protocol's files, exchanged in the provider's trigger directory.
//!
//! | file | written by | says |
//! | --- | --- | --- |
//! | `<node>.subscribe_series.tgr` | subscriber | the request: site, options, `schema.table subscribe/unsubscribe` lines |
//! | `<node>.sql.gz` | manager | the SQL that creates/changes the site's tables (gzip) |
//! | `<node>.subscribe_series.sqldone` | manager | SQL ready (snapshot counter), or the failure and why |
//! | `<node>.subscribe_series.sqlapplied` | subscriber | whether the SQL applied |
//! | `<node>.subscribe_series.done` | manager | the request is finished |
//!
//! They live in the site's own exchange directory, `<trigger_dir>/<node>/`, which only the
//! site's account and the manager can enter (see TRUST.md).
//!
//! Every file is `key value` lines ending with an [`END_MARKER`] line, so a file still
//! being copied is never taken for a whole one; both sides also write to a temporary
//! name and rename. Everything read here comes from the other side and is validated
//! strictly: sizes are bounded, names match strict patterns, unknown keys are refused.
//!
//! Each request carries a fresh random [`Nonce`]; every answer and report names the
//! site's node and that nonce (a [`Binding`]), so a file moved, copied or kept from
//! another site's or an earlier request is refused: over SFTP a moved file looks just
//! like the original. The manager's `.sqldone` also carries the SHA-256 and size of the
//! SQL it published, which the subscriber checks before it applies a byte of it.

use crate::counter::Counter;
use crate::ident::{quote_ident, quote_literal, NodeName, QualifiedTable};
use std::fmt::Write as _;

/// The last line of every trigger file.
pub const END_MARKER: &str = "EOF";
/// Largest trigger file accepted.
pub const MAX_TRIGGER_SIZE: usize = 64 * 1024;
/// Most series one request may name.
pub const MAX_SERIES: usize = 2000;

/// The random token of one request (128 bits, lowercase hex): every answer names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nonce(String);

impl Nonce {
    /// A fresh nonce from the operating system's random source.
    ///
    /// # Errors
    ///
    /// The random source failed.
    pub fn random() -> std::io::Result<Nonce> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Nonce(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Parses 32 lowercase hexadecimal digits.
    pub fn parse(s: &str) -> Result<Nonce, String> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Nonce(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not a nonce (32 lowercase hexadecimal digits)"
            ))
        }
    }

    /// The hexadecimal text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request a file belongs to: the site's node and the request's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The site.
    pub node: NodeName,
    /// The request's nonce.
    pub nonce: Nonce,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {}, request {}", self.node, self.nonce)
    }
}

/// A file of the protocol with the binding it names (`None`: it names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound<T> {
    /// The node and nonce written in the file.
    pub binding: Option<Binding>,
    /// Its content.
    pub body: T,
}

/// A file that answers another request than the one it was taken for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} belongs to {}, not to this request ({expected}): it was moved, copied or kept from another request, so it is refused", found.as_ref().map_or_else(|| "no request (it names none)".to_string(), |b| b.to_string()))]
pub struct Misbound {
    /// Which file.
    pub what: String,
    /// The binding it names.
    pub found: Option<Binding>,
    /// The request it was expected to answer.
    pub expected: Binding,
}

impl<T> Bound<T> {
    /// The content, if the file names exactly `expected`.
    ///
    /// # Errors
    ///
    /// [`Misbound`] naming both bindings.
    pub fn for_request(self, expected: &Binding, what: &str) -> Result<T, Misbound> {
        if self.binding.as_ref() == Some(expected) {
            Ok(self.body)
        } else {
            Err(Misbound {
                what: what.to_string(),
                found: self.binding,
                expected: expected.clone(),
            })
        }
    }
}

fn render_binding(s: &mut String, b: &Binding) {
    let _ = writeln!(s, "node {}\nnonce {}", b.node, b.nonce);
}

/// Reads the `node` and `nonce` lines of a file; both or neither.
fn parse_binding(
    line: usize,
    key: &str,
    value: &str,
    node: &mut Option<NodeName>,
    nonce: &mut Option<Nonce>,
) -> Result<bool, TriggerError> {
    match key {
        "node" => *node = Some(NodeName::new(value).map_err(|e| invalid(line, e.to_string()))?),
        "nonce" => *nonce = Some(Nonce::parse(value).map_err(|e| invalid(line, e))?),
        _ => return Ok(false),
    }
    Ok(true)
}

fn binding_of(
    node: Option<NodeName>,
    nonce: Option<Nonce>,
) -> Result<Option<Binding>, TriggerError> {
    match (node, nonce) {
        (Some(node), Some(nonce)) => Ok(Some(Binding { node, nonce })),
        (None, None) => Ok(None),
        _ => Err(invalid(0, "a file must name both its node and its nonce")),
    }
}

/// The binding a request file names, read leniently, so that a refusal of an invalid
/// request can still be bound to it. `None` when it names no valid node and nonce.
pub fn request_binding(bytes: &[u8]) -> Option<Binding> {
    let (mut node, mut nonce) = (None, None);
    for (line, key, value, _) in lines(bytes).ok()? {
        let _ = parse_binding(line, &key, &value, &mut node, &mut nonce);
    }
    binding_of(node, nonce).ok().flatten()
}

/// Which protocol file a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerKind {
    /// `<node>.subscribe_series.tgr`: the subscriber's request.
    Request,
    /// `<node>.subscribe_series.sqldone`: the manager's answer.
    SqlDone,
    /// `<node>.subscribe_series.sqlapplied`: the subscriber's result.
    SqlApplied,
    /// `<node>.subscribe_series.done`: the end of the request.
    Done,
}

impl TriggerKind {
    fn suffix(self) -> &'static str {
        match self {
            TriggerKind::Request => ".subscribe_series.tgr",
            TriggerKind::SqlDone => ".subscribe_series.sqldone",
            TriggerKind::SqlApplied => ".subscribe_series.sqlapplied",
            TriggerKind::Done => ".subscribe_series.done",
        }
    }

    /// The file name of this kind for `node`.
    pub fn file_name(self, node: &NodeName) -> String {
        format!("{node}{}", self.suffix())
    }

    /// Recognises a protocol file name. `Ok(None)`: not a protocol file at all;
    /// `Err`: it has a protocol suffix but its node name is not valid.
    pub fn parse_file_name(name: &str) -> Result<Option<(NodeName, TriggerKind)>, TriggerError> {
        for kind in [
            TriggerKind::Request,
            TriggerKind::SqlDone,
            TriggerKind::SqlApplied,
            TriggerKind::Done,
        ] {
            if let Some(node) = name.strip_suffix(kind.suffix()) {
                let node = NodeName::new(node).map_err(|e| TriggerError::Invalid {
                    line: 0,
                    reason: format!("file name {name:?}: {e}"),
                })?;
                return Ok(Some((node, kind)));
            }
        }
        Ok(None)
    }
}

/// The gzip-compressed SQL the manager publishes for `node`.
pub fn sql_file_name(node: &NodeName) -> String {
    format!("{node}.sql.gz")
}

/// Why a trigger file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    /// The file has no end marker yet: still being written. Try again later.
    #[error("the trigger file is incomplete (no `{END_MARKER}` line yet)")]
    Incomplete,
    /// The file is larger than [`MAX_TRIGGER_SIZE`].
    #[error("the trigger file is {size} bytes, more than the {MAX_TRIGGER_SIZE} allowed")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The content breaks the format.
    #[error("line {line}: {reason}")]
    Invalid {
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(line: usize, reason: impl Into<String>) -> TriggerError {
    TriggerError::Invalid {
        line,
        reason: reason.into(),
    }
}

/// Splits a trigger file into `(line number, key, value)`; checks size, text and the end marker.
/// One line of a trigger file: its number, first word, the rest, and the whole line.
type Line = (usize, String, String, String);

fn lines(bytes: &[u8]) -> Result<Vec<Line>, TriggerError> {
    if bytes.len() > MAX_TRIGGER_SIZE {
        return Err(TriggerError::TooLarge { size: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(0, "not UTF-8 text"))?;
    let all: Vec<&str> = text.lines().collect();
    let last = all.iter().rposition(|l| !l.trim().is_empty());
    match last {
        Some(i) if all[i].trim() == END_MARKER => {}
        _ => return Err(TriggerError::Incomplete),
    }
    let last = last.unwrap_or(0);
    let mut out = Vec::new();
    for (i, line) in all[..last].iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == END_MARKER {
            return Err(invalid(i + 1, "text after the end marker"));
        }
        if line.chars().any(|c| c.is_control()) {
            return Err(invalid(i + 1, "control characters are not allowed"));
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        out.push((
            i + 1,
            key.to_string(),
            value.trim().to_string(),
            line.to_string(),
        ));
    }
    Ok(out)
}

/// Whether a trigger file is whole: its last non-blank line is the end marker.
pub fn is_complete(bytes: &[u8]) -> bool {
    !matches!(lines(bytes), Err(TriggerError::Incomplete))
}

/// Subscribe or unsubscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start receiving the table.
    Subscribe,
    /// Stop receiving it.
    Unsubscribe,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        match s {
            "subscribe" => Some(Action::Subscribe),
            "unsubscribe" => Some(Action::Unsubscribe),
            _ => None,
        }
    }

    /// The word used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Unsubscribe => "unsubscribe",
        }
    }
}

/// One `schema.table subscribe|unsubscribe` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The table.
    pub table: QualifiedTable,
    /// What to do with it.
    pub action: Action,
}

/// Reads one series line of a request file, as [`Request::render`] writes it:
/// `schema.table [subscribe|unsubscribe] [# comment]`, the table exact in the syntax of
/// [`QualifiedTable`] (quoted parts may hold spaces and `#`; nothing folded, unlike a
/// site's list, [`read_series_list`]). `None` for a blank or comment line.
fn series_line(line: &str) -> Result<Option<(QualifiedTable, &str)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (table, rest) = QualifiedTable::parse_prefix(line).map_err(|e| e.to_string())?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace) || rest.starts_with('#')) {
        return Err(format!(
            "{line:?}: the table name must be followed by a space, then subscribe or unsubscribe"
        ));
    }
    let rest = rest.split('#').next().unwrap_or("").trim();
    let mut words = rest.split_whitespace();
    let action = words.next().unwrap_or("subscribe");
    if words.next().is_some() {
        return Err("expected `schema.table subscribe|unsubscribe`".into());
    }
    Ok(Some((table, action)))
}

/// Something the operator must know about one line of a subscribe list: what the
/// original tools did differently with it, or what the request does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListNote {
    /// The line (1-based).
    pub line: usize,
    /// What to know, and what to do instead.
    pub message: String,
}

/// A subscribe list as read ([`read_series_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesList {
    /// The series to request, in list order.
    pub series: Vec<Series>,
    /// The notes for the operator, in line order.
    pub notes: Vec<ListNote>,
}

/// Reads a subscriber's list: our format, and the original tools' `subscribe_list.cfg`
/// as it is.
///
/// A line is `schema.table [subscribe|unsubscribe] [flags] [# comment]`:
///
/// - the action is case-insensitive, as the original matched it (`grep -wi`), and a bare
///   `schema.table` means subscribe;
/// - a plain name part is folded to lower case, as the original did (`lc`) and as
///   PostgreSQL reads an unquoted name; a part in double quotes is taken exactly (see
///   [`QualifiedTable`]). A line whose name folding changed gets a note: our format read
///   `S1.T1` as written before, and `"S1"."T1"` is how to name such a table now;
/// - blank lines and lines starting with `#` are skipped. The original sent the list
///   through `grep -v "#"`, so it dropped *every* line holding a `#`, even after the
///   action. Such a line keeps the meaning our format gives it (a request; the `#`
///   starts a comment, or is part of a quoted name), with a note saying that the
///   original would have dropped it;
/// - the original's flags `popjmd` and `jmdtrigger` (the JMD's queue and trigger) are
///   accepted, never sent to the provider, and noted with what to do by hand; any other
///   word is refused.
///
/// # Errors
///
/// [`TriggerError`] naming the line: a bad name, an unknown action or flag, a table both
/// subscribed and unsubscribed, too many series, or no series at all.
pub fn read_series_list(text: &str) -> Result<SeriesList, TriggerError> {
    let mut series: Vec<Series> = Vec::new();
    let mut notes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some((table, action)) = list_line(line, n, &mut notes).map_err(|e| invalid(n, e))? {
            push_series(&mut series, n, table, action)?;
        }
    }
    if series.is_empty() {
        return Err(invalid(0, "the list names no table"));
    }
    Ok(SeriesList { series, notes })
}

/// The series of a subscriber's list ([`read_series_list`] without its notes).
pub fn parse_series_list(text: &str) -> Result<Vec<Series>, TriggerError> {
    read_series_list(text).map(|l| l.series)
}

/// One line of a list (see [`read_series_list`]): the table and its action, `None` for a
/// blank or comment line; notes go to `notes`.
fn list_line(
    line: &str,
    n: usize,
    notes: &mut Vec<ListNote>,
) -> Result<Option<(QualifiedTable, &'static str)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (table, folded, rest) =
        QualifiedTable::parse_prefix_folded(line).map_err(|e| e.to_string())?;
    if !(rest.is_empty() || rest.starts_with(char::is_whitespace) || rest.starts_with('#')) {
        return Err(format!(
            "{line:?}: the table name must be followed by a space, then subscribe or unsubscribe"
        ));
    }
    let written = &line[..line.len() - rest.len()];
    let words = rest.split('#').next().unwrap_or("");
    let mut words = words.split_whitespace();
    let action = match words.next() {
        None => "subscribe",
        Some(w) if w.eq_ignore_ascii_case("subscribe") => "subscribe",
        Some(w) if w.eq_ignore_ascii_case("unsubscribe") => "unsubscribe",
        Some(w) => return Err(format!("{w:?} is neither `subscribe` nor `unsubscribe`")),
    };
    let mut note = |message: String| notes.push(ListNote { line: n, message });
    for flag in words {
        match flag.to_ascii_lowercase().as_str() {
            "jmdtrigger" => note(jmd_trigger_note(&table)),
            "popjmd" => note(format!(
                "popjmd ({table}) is not supported and is not sent to the provider. It asked for the JMD's sunum_queue to be filled with the newest record of each prime key of the series (the original tools did that only for series flagged jmdtrigger). If this site runs the JMD, do it by hand once subscribe-series has finished: {}",
                populate_sql(&table)
            )),
            other => {
                return Err(format!(
                    "{other:?} after `{action}`: the original list's only flags are popjmd and jmdtrigger"
                ))
            }
        }
    }
    if folded {
        note(format!(
            "{written} is read as {table}: an unquoted name is folded to lower case, as PostgreSQL and the original tools read it. For a table whose name holds capitals, write it in double quotes ({})",
            QualifiedTable::parse_prefix(written)
                .map(|(t, _)| t.quoted())
                .unwrap_or_else(|_| written.to_string())
        ));
    }
    if line.contains('#') {
        note(format!(
            "this line holds a `#`: the original subscribe_series sent the list through `grep -v \"#\"` and so dropped it from its request. It is read here as `{table} {action}` (after the name a `#` starts a comment; inside double quotes it is part of the name). Delete the line, or start it with `#`, if it is not meant as a request"
        ));
    }
    Ok(Some((table, action)))
}

/// What to do by hand instead of the original's `jmdtrigger` flag for `table`.
fn jmd_trigger_note(table: &QualifiedTable) -> String {
    let base = format!("{}_{}", table.schema, table.table);
    format!(
        "jmdtrigger ({table}) is not supported and is not sent to the provider. After subscribing, the original tools created a trigger on the series that queues each new row's sunum into the JMD's sunum_queue, and queued the newest record of each prime key. If this site runs the JMD, do both by hand once subscribe-series has finished: a plpgsql function {fc}() that, on INSERT with new.sunum > 0, runs INSERT INTO sunum_queue (sunum, recnum, series_name) VALUES (new.sunum, new.recnum, {name}); CREATE TRIGGER {trg} AFTER INSERT ON {quoted} FOR EACH ROW EXECUTE PROCEDURE {fc}(); then {populate}",
        fc = quote_ident(&format!("{base}_fc")),
        trg = quote_ident(&format!("{base}_trg")),
        name = quote_literal(&table.to_string()),
        quoted = table.quoted(),
        populate = populate_sql(table),
    )
}

/// The statement that fills the JMD's queue from `table` (the original's POPULATEJMD).
fn populate_sql(table: &QualifiedTable) -> String {
    format!(
        "INSERT INTO sunum_queue (recnum, sunum, series_name) SELECT recnum, sunum, {name} FROM {t} WHERE recnum IN (SELECT max(recnum) FROM {t} GROUP BY <the series' prime keys, drms_series.primary_idx>)",
        name = quote_literal(&table.to_string()),
        t = table.quoted(),
    )
}

fn push_series(
    out: &mut Vec<Series>,
    line: usize,
    table: QualifiedTable,
    action: &str,
) -> Result<(), TriggerError> {
    let action = Action::parse(action).ok_or_else(|| {
        invalid(
            line,
            format!("{action:?} is neither `subscribe` nor `unsubscribe`"),
        )
    })?;
    if let Some(prev) = out.iter().find(|s| s.table == table) {
        if prev.action != action {
            return Err(invalid(
                line,
                format!("{table} is both subscribed and unsubscribed"),
            ));
        }
        return Ok(());
    }
    if out.len() >= MAX_SERIES {
        return Err(invalid(
            line,
            format!("more than {MAX_SERIES} series in one request"),
        ));
    }
    out.push(Series { table, action });
    Ok(())
}

/// A subscription request (`<node>.subscribe_series.tgr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The requesting site.
    pub node: NodeName,
    /// Fresh for each request; every answer to it names it.
    pub nonce: Nonce,
    /// Archive flag of the original tools (0 or 1), passed through.
    pub archive: u8,
    /// Retention in days of the original tools, passed through.
    pub retention: u32,
    /// Tape group of the original tools, passed through.
    pub tapegroup: u32,
    /// The tables to subscribe or unsubscribe.
    pub series: Vec<Series>,
}

impl Request {
    /// Renders the file.
    pub fn render(&self) -> String {
        let mut s = String::new();
        render_binding(&mut s, &self.binding());
        let _ = writeln!(s, "archive {}", self.archive);
        let _ = writeln!(s, "retention {}", self.retention);
        let _ = writeln!(s, "tapegroup {}", self.tapegroup);
        for series in &self.series {
            let _ = writeln!(s, "{} {}", series.table, series.action.as_str());
        }
        s.push_str(END_MARKER);
        s.push('\n');
        s
    }

    /// The node and nonce its answers must name.
    pub fn binding(&self) -> Binding {
        Binding {
            node: self.node.clone(),
            nonce: self.nonce.clone(),
        }
    }

    /// Parses a request file named for `file_node`.
    pub fn parse(bytes: &[u8], file_node: &NodeName) -> Result<Request, TriggerError> {
        let mut node = None;
        let mut nonce = None;
        let (mut archive, mut retention, mut tapegroup) = (0u8, 21u32, 1u32);
        let mut series = Vec::new();
        for (line, key, value, raw) in lines(bytes)? {
            let number = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| invalid(line, format!("{key}: {v:?} is not a number")))
            };
            match key.as_str() {
                "node" => {
                    let n = NodeName::new(&value).map_err(|e| invalid(line, e.to_string()))?;
                    if &n != file_node {
                        return Err(invalid(
                            line,
                            format!("node {n} does not match the file name's node {file_node}"),
                        ));
                    }
                    node = Some(n);
                }
                "nonce" => nonce = Some(Nonce::parse(&value).map_err(|e| invalid(line, e))?),
                "archive" => {
                    archive = match value.as_str() {
                        "0" => 0,
                        "1" => 1,
                        v => {
                            return Err(invalid(line, format!("archive must be 0 or 1, not {v:?}")))
                        }
                    }
                }
                "retention" => retention = number(&value)?,
                "tapegroup" => tapegroup = number(&value)?,
                _ => {
                    if let Some((table, action)) =
                        series_line(&raw).map_err(|e| invalid(line, e))?
                    {
                        push_series(&mut series, line, table, action)?
                    }
                }
            }
        }
        let node = node.ok_or_else(|| invalid(0, "no `node` line"))?;
        let nonce = nonce.ok_or_else(|| {
            invalid(
                0,
                "no `nonce` line (a request must carry one; upgrade the subscriber's slony-receiver)",
            )
        })?;
        if series.is_empty() {
            return Err(invalid(0, "the request names no table"));
        }
        Ok(Request {
            node,
            nonce,
            archive,
            retention,
            tapegroup,
            series,
        })
    }
}

/// The manager's answer (`<node>.subscribe_series.sqldone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlDone {
    /// The SQL is published.
    Ready {
        /// Whether the site is new (its SQL creates the tracking schema).
        new_site: bool,
        /// The archive counter the data snapshot corresponds to.
        counter: Counter,
        /// The SQL file: its SHA-256 and size, checked before it is applied.
        sql: Digest,
        /// Remarks for the operator (e.g. tables left in place).
        notes: Vec<String>,
    },
    /// The request was refused or failed; nothing changed.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The SHA-256 (lowercase hex) and size of a published SQL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// 64 lowercase hexadecimal digits.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

impl Digest {
    /// The digest of `bytes` read from `reader`.
    ///
    /// # Errors
    ///
    /// A read error.
    pub fn of(mut reader: impl std::io::Read) -> std::io::Result<Digest> {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Digest {
            sha256: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            size,
        })
    }
}

/// One line of free text, safe inside a trigger file.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(2000).collect()
}

impl SqlDone {
    /// Renders the file, bound to the request it answers (`None`: a request so broken
    /// that it names no node and nonce).
    pub fn render(&self, to: Option<&Binding>) -> String {
        let mut s = String::new();
        if let Some(b) = to {
            render_binding(&mut s, b);
        }
        match self {
            SqlDone::Ready {
                new_site,
                counter,
                sql,
                notes,
            } => {
                let _ = writeln!(
                    s,
                    "status success\nnew_site {new_site}\ncounter {counter}\nsha256 {}\nsize {}",
                    sql.sha256, sql.size
                );
                // The notes may not make the file larger than the subscriber accepts.
                let budget = MAX_TRIGGER_SIZE / 2;
                let mut used = 0;
                for (i, n) in notes.iter().enumerate() {
                    let line = format!("note {}\n", one_line(n));
                    if used + line.len() > budget {
                        let _ = writeln!(s, "note ... and {} more notes", notes.len() - i);
                        break;
                    }
                    used += line.len();
                    s.push_str(&line);
                }
            }
            SqlDone::Failed { reason } => {
                let _ = writeln!(s, "status failure\nreason {}", one_line(reason));
            }
        }
        s.push_str(END_MARKER);
        s.push('\n');
        s
    }

    /// Parses the file.
    pub fn parse(bytes: &[u8]) -> Result<Bound<SqlDone>, TriggerError> {
        let (mut status, mut new_site, mut counter, mut reason) = (None, None, None, None);
        let (mut sha256, mut size) = (None, None);
        let (mut node, mut nonce) = (None, None);
        let mut notes = Vec::new();
        for (line, key, value, _) in lines(bytes)? {
            if parse_binding(line, &key, &value, &mut node, &mut nonce)? {
                continue;
            }
            match key.as_str() {
                "status" => status = Some(value),
                "new_site" => new_site = Some(value == "true"),
                "counter" => {
                    counter = Some(
                        value
                            .parse::<Counter>()
                            .map_err(|e| invalid(line, e.to_string()))?,
                    )
                }
                "sha256" => {
                    if value.len() != 64
                        || !value
                            .bytes()
                            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    {
                        return Err(invalid(
                            line,
                            "sha256 must be 64 lowercase hexadecimal digits",
                        ));
                    }
                    sha256 = Some(value)
                }
                "size" => {
                    size =
                        Some(value.parse::<u64>().map_err(|_| {
                            invalid(line, format!("size {value:?} is not a number"))
                        })?)
                }
                "note" => notes.push(value),
                "reason" => reason = Some(value),
                other => return Err(invalid(line, format!("unknown key {other:?}"))),
            }
        }
        let binding = binding_of(node, nonce)?;
        let body = match status.as_deref() {
            Some("success") => SqlDone::Ready {
                new_site: new_site.ok_or_else(|| invalid(0, "no new_site line"))?,
                counter: counter.ok_or_else(|| invalid(0, "no counter line"))?,
                sql: Digest {
                    sha256: sha256.ok_or_else(|| invalid(0, "no sha256 line"))?,
                    size: size.ok_or_else(|| invalid(0, "no size line"))?,
                },
                notes,
            },
            Some("failure") => SqlDone::Failed {
                reason: reason.unwrap_or_else(|| "no reason given".into()),
            },
            _ => return Err(invalid(0, "status must be success or failure")),
        };
        Ok(Bound { binding, body })
    }
}

/// The subscriber's result (`.sqlapplied`) and the manager's final word (`.done`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the step succeeded.
    pub success: bool,
    /// Why not, or remarks.
    pub reason: Option<String>,
}

impl Outcome {
    /// Renders the file, bound to the request it reports on (`None`: a request whose
    /// nonce is unknown, recorded by an older version; the subscriber refuses it).
    pub fn render(&self, to: Option<&Binding>) -> String {
        let mut s = String::new();
        if let Some(b) = to {
            render_binding(&mut s, b);
        }
        let _ = writeln!(s, "success {}", self.success);
        if let Some(r) = &self.reason {
            let _ = writeln!(s, "reason {}", one_line(r));
        }
        s.push_str(END_MARKER);
        s.push('\n');
        s
    }

    /// Parses the file.
    pub fn parse(bytes: &[u8]) -> Result<Bound<Outcome>, TriggerError> {
        let (mut success, mut reason) = (None, None);
        let (mut node, mut nonce) = (None, None);
        for (line, key, value, _) in lines(bytes)? {
            if parse_binding(line, &key, &value, &mut node, &mut nonce)? {
                continue;
            }
            match key.as_str() {
                "success" => {
                    success = Some(match value.as_str() {
                        "true" => true,
                        "false" => false,
                        v => {
                            return Err(invalid(
                                line,
                                format!("success must be true or false, not {v:?}"),
                            ))
                        }
                    })
                }
                "reason" => reason = Some(value),
                other => return Err(invalid(line, format!("unknown key {other:?}"))),
            }
        }
        Ok(Bound {
            binding: binding_of(node, nonce)?,
            body: Outcome {
                success: success.ok_or_else(|| invalid(0, "no success line"))?,
                reason,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn request_round_trip() {
        let r = Request {
            node: node("site1"),
            nonce: Nonce::random().unwrap(),
            archive: 0,
            retention: 21,
            tapegroup: 1,
            series: parse_series_list(
                "s1.t1 subscribe\n# comment\ns1.big\ns1.old unsubscribe # gone\ns1.t1 subscribe\n\
                 \"Schema.name\".\"Capital Idea\"  subscribe\npublic.\"Jan's #1 idea\"\n",
            )
            .unwrap(),
        };
        assert_eq!(r.series.len(), 5);
        assert_eq!(r.series[3].table.schema, "Schema.name");
        assert_eq!(r.series[3].table.table, "Capital Idea");
        assert_eq!(r.series[4].table.table, "Jan's #1 idea");
        for bad in [
            "s1.t1 subscribe;\n",
            "\"s1\".\"t1\"subscribe\n",
            "s1.t1 subscribe now\n",
            "\"unclosed.t1 subscribe\n",
            "s1.t1; subscribe\n",
        ] {
            assert!(parse_series_list(bad).is_err(), "{bad:?}");
        }
        let text = r.render();
        assert_eq!(Request::parse(text.as_bytes(), &node("site1")).unwrap(), r);
    }

    fn list(text: &str) -> SeriesList {
        read_series_list(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn names(l: &SeriesList) -> Vec<String> {
        l.series
            .iter()
            .map(|s| format!("{} {}", s.table, s.action.as_str()))
            .collect()
    }

    #[test]
    fn list_actions_are_case_insensitive_as_the_original_grep_wi() {
        let l = list("s1.t1 SUBSCRIBE\ns1.t2 Unsubscribe\ns1.t3\n");
        assert_eq!(
            names(&l),
            ["s1.t1 subscribe", "s1.t2 unsubscribe", "s1.t3 subscribe"]
        );
        assert!(l.notes.is_empty(), "{:?}", l.notes);
        for bad in ["s1.t1 subscribed\n", "s1.t1 sub\n", "s1.t1 jmdtrigger\n"] {
            let e = read_series_list(bad).unwrap_err().to_string();
            assert!(e.contains("neither"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn list_names_fold_like_postgresql_and_quoted_ones_stay_exact() {
        let l = list("S1.T1 subscribe\n\"S1\".\"T1\" subscribe\ns1.\"Mixed Case\"\n");
        assert_eq!(l.series[0].table, QualifiedTable::new("s1", "t1").unwrap());
        assert_eq!(l.series[1].table, QualifiedTable::new("S1", "T1").unwrap());
        assert_eq!(
            l.series[2].table,
            QualifiedTable::new("s1", "Mixed Case").unwrap()
        );
        // Only the folded line is noted, with how to keep the capitals.
        assert_eq!(l.notes.len(), 1, "{:?}", l.notes);
        assert_eq!(l.notes[0].line, 1);
        assert!(l.notes[0].message.contains("S1.T1 is read as s1.t1"));
        assert!(l.notes[0].message.contains("\"S1\".\"T1\""));
        // Folding happens before duplicates are found.
        let e = read_series_list("S1.T1 subscribe\ns1.t1 unsubscribe\n").unwrap_err();
        assert!(
            e.to_string().contains("both subscribed and unsubscribed"),
            "{e}"
        );
        assert_eq!(list("S1.T1\ns1.t1\n").series.len(), 1);
    }

    #[test]
    fn list_lines_with_a_hash_keep_their_meaning_and_are_noted() {
        // Lines starting with `#` are skipped, as both formats always did.
        let l = list("# comment\n   # indented comment\n#s1.gone subscribe\ns1.t1\n");
        assert_eq!(names(&l), ["s1.t1 subscribe"]);
        assert!(l.notes.is_empty(), "{:?}", l.notes);
        // The original dropped these lines (grep -v "#"); ours reads them as before, and
        // says so.
        let l = list("s1.t1 subscribe # keep\npublic.\"Jan's #1 idea\"\ns1.t2\n");
        assert_eq!(
            names(&l),
            [
                "s1.t1 subscribe",
                "public.\"Jan's #1 idea\" subscribe",
                "s1.t2 subscribe"
            ]
        );
        assert_eq!(l.notes.iter().map(|n| n.line).collect::<Vec<_>>(), [1, 2]);
        for n in &l.notes {
            assert!(n.message.contains("grep -v"), "{}", n.message);
            assert!(n.message.contains("dropped it"), "{}", n.message);
        }
        assert!(l.notes[0].message.contains("`s1.t1 subscribe`"));
    }

    #[test]
    fn list_jmd_flags_are_noted_and_never_sent() {
        // gamma's list, as the original tools left it: tabs, capitals, a flag.
        let l = list(include_str!(
            "../../tests/fixtures/legacy/sites/gamma/subscribe_list.cfg"
        ));
        assert_eq!(names(&l), ["s1.t1 subscribe"]);
        assert!(l.notes.iter().any(|n| n
            .message
            .starts_with("jmdtrigger (s1.t1) is not supported")
            && n.message
                .contains("CREATE TRIGGER \"s1_t1_trg\" AFTER INSERT ON \"s1\".\"t1\"")
            && n.message.contains("INSERT INTO sunum_queue")));
        assert!(l
            .notes
            .iter()
            .any(|n| n.message.contains("is read as s1.t1")));
        let l = list("s1.t1 subscribe POPJMD jmdtrigger\ns1.t2 unsubscribe popjmd\n");
        assert_eq!(names(&l), ["s1.t1 subscribe", "s1.t2 unsubscribe"]);
        let messages: Vec<&str> = l.notes.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("popjmd (s1.t1) is not supported"));
        assert!(messages[1].starts_with("jmdtrigger (s1.t1)"));
        assert!(messages[2].starts_with("popjmd (s1.t2)"));
        let e = read_series_list("s1.t1 subscribe jmdtriger\n").unwrap_err();
        assert!(e.to_string().contains("popjmd and jmdtrigger"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        // The request the manager receives is in our format: no flag, names folded.
        let r = Request {
            node: node("gamma"),
            nonce: Nonce::random().unwrap(),
            archive: 0,
            retention: 21,
            tapegroup: 1,
            series: list("S1.T1\tsubscribe\tjmdtrigger popjmd\n").series,
        };
        let text = r.render();
        assert!(text.contains("\ns1.t1 subscribe\n"), "{text}");
        assert!(!text.to_lowercase().contains("jmd"), "{text}");
        assert_eq!(Request::parse(text.as_bytes(), &node("gamma")).unwrap(), r);
    }

    #[test]
    fn the_managers_reading_of_a_request_stays_strict() {
        let request = |line: &str| {
            format!("node site1\nnonce 0123456789abcdef0123456789abcdef\n{line}\nEOF\n")
        };
        for bad in ["s1.t1 SUBSCRIBE", "s1.t1 subscribe jmdtrigger"] {
            assert!(
                Request::parse(request(bad).as_bytes(), &node("site1")).is_err(),
                "{bad}"
            );
        }
        let r = Request::parse(request("S1.T1 subscribe").as_bytes(), &node("site1")).unwrap();
        assert_eq!(r.series[0].table, QualifiedTable::new("S1", "T1").unwrap());
    }

    #[test]
    fn incomplete_and_hostile_requests() {
        let ok = "node site1\nnonce 0123456789abcdef0123456789abcdef\ns1.t1 subscribe\nEOF\n";
        assert!(Request::parse(ok.as_bytes(), &node("site1")).is_ok());
        // No nonce, or a malformed one: refused.
        for bad in [
            "node site1\ns1.t1 subscribe\nEOF\n",
            "node site1\nnonce 0123456789ABCDEF0123456789abcdef\ns1.t1 subscribe\nEOF\n",
            "node site1\nnonce 0123\ns1.t1 subscribe\nEOF\n",
        ] {
            assert!(
                Request::parse(bad.as_bytes(), &node("site1")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            request_binding(ok.as_bytes()).unwrap().nonce.as_str(),
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            Request::parse(b"node site1\ns1.t1 subscribe\n", &node("site1")),
            Err(TriggerError::Incomplete)
        );
        assert_eq!(
            Request::parse(b"node site1\ns1.t1 subscr", &node("site1")),
            Err(TriggerError::Incomplete)
        );
        for bad in [
            "node site2\ns1.t1 subscribe\nEOF\n",
            "node ../etc\ns1.t1 subscribe\nEOF\n",
            "node site1\ns1.t1;drop subscribe\nEOF\n",
            "node site1\ns1.\"t1\" subscribe\nEOF\n",
            "node site1\n../x.t1 subscribe\nEOF\n",
            "node site1\ns1.t1 maybe\nEOF\n",
            "node site1\ns1.t1 subscribe\ns1.t1 unsubscribe\nEOF\n",
            "node site1\nEOF\n",
            "node site1\ns1.t1 subscribe\nEOF\ns1.t2 subscribe\nEOF\n",
            "node site1\narchive 7\ns1.t1 subscribe\nEOF\n",
            "node site1\ns1.t1 subscribe\u{7}\nEOF\n",
        ] {
            assert!(
                matches!(
                    Request::parse(bad.as_bytes(), &node("site1")),
                    Err(TriggerError::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        let huge = "x".repeat(MAX_TRIGGER_SIZE + 1);
        assert!(matches!(
            Request::parse(huge.as_bytes(), &node("site1")),
            Err(TriggerError::TooLarge { .. })
        ));
    }

    #[test]
    fn file_names() {
        assert_eq!(
            TriggerKind::Request.file_name(&node("a")),
            "a.subscribe_series.tgr"
        );
        assert_eq!(
            TriggerKind::parse_file_name("a.subscribe_series.sqlapplied").unwrap(),
            Some((node("a"), TriggerKind::SqlApplied))
        );
        assert_eq!(TriggerKind::parse_file_name("a.sql.gz").unwrap(), None);
        assert!(TriggerKind::parse_file_name("a b.subscribe_series.tgr").is_err());
        assert!(TriggerKind::parse_file_name(".subscribe_series.tgr").is_err());
    }

    #[test]
    fn answers_round_trip_and_are_bound() {
        let b = Binding {
            node: node("site1"),
            nonce: Nonce::random().unwrap(),
        };
        let other = Binding {
            node: node("site2"),
            nonce: b.nonce.clone(),
        };
        let later = Binding {
            node: node("site1"),
            nonce: Nonce::random().unwrap(),
        };
        assert_ne!(b.nonce, later.nonce);
        let digest = Digest::of(&b"select 1;"[..]).unwrap();
        assert_eq!(digest.size, 9);
        assert_eq!(digest.sha256.len(), 64);
        let ready = SqlDone::Ready {
            new_site: true,
            counter: Counter(42),
            sql: digest.clone(),
            notes: vec!["kept s1.x\nin place".into()],
        };
        let parsed = SqlDone::parse(ready.render(Some(&b)).as_bytes()).unwrap();
        assert_eq!(
            parsed.clone().for_request(&b, ".sqldone").unwrap(),
            SqlDone::Ready {
                new_site: true,
                counter: Counter(42),
                sql: digest,
                notes: vec!["kept s1.x in place".into()]
            }
        );
        // Another site's, or an earlier request's, answer is refused.
        let err = parsed.clone().for_request(&other, ".sqldone").unwrap_err();
        assert!(err.to_string().contains("node site1"), "{err}");
        assert!(parsed.for_request(&later, ".sqldone").is_err());
        let failed = SqlDone::Failed {
            reason: "no such table s1.x".into(),
        };
        let unbound = SqlDone::parse(failed.render(None).as_bytes()).unwrap();
        assert_eq!(unbound.binding, None);
        assert!(unbound.for_request(&b, ".sqldone").is_err());
        assert_eq!(
            SqlDone::parse(failed.render(Some(&b)).as_bytes())
                .unwrap()
                .for_request(&b, ".sqldone")
                .unwrap(),
            failed
        );
        let o = Outcome {
            success: false,
            reason: Some("duplicate key".into()),
        };
        let parsed = Outcome::parse(o.render(Some(&b)).as_bytes()).unwrap();
        assert_eq!(parsed.clone().for_request(&b, ".sqlapplied").unwrap(), o);
        assert!(parsed.for_request(&later, ".sqlapplied").is_err());
        assert!(Outcome::parse(b"success maybe\nEOF\n").is_err());
        // Notes never make the answer larger than a subscriber accepts.
        let many = SqlDone::Ready {
            new_site: false,
            counter: Counter(1),
            sql: Digest::of(&b""[..]).unwrap(),
            notes: vec!["x".repeat(1000); 2000],
        };
        let text = many.render(Some(&b));
        assert!(text.len() < MAX_TRIGGER_SIZE, "{}", text.len());
        assert!(text.contains("more notes"));
        assert!(SqlDone::parse(text.as_bytes()).is_ok());
        // A node without a nonce (or the reverse) is malformed.
        assert!(Outcome::parse(b"node site1\nsuccess true\nEOF\n").is_err());
        assert!(SqlDone::parse(
            b"status success\nnew_site true\ncounter 1\nsha256 xyz\nsize 1\nEOF\n"
        )
        .is_err());
    }
}
