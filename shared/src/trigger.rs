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
//! Every file is `key value` lines ending with an [`END_MARKER`] line, so a file still
//! being copied is never taken for a whole one; both sides also write to a temporary
//! name and rename. Everything read here comes from the other side and is validated
//! strictly: sizes are bounded, names match strict patterns, unknown keys are refused.

use crate::counter::Counter;
use crate::ident::{NodeName, QualifiedTable};
use std::fmt::Write as _;

/// The last line of every trigger file.
pub const END_MARKER: &str = "EOF";
/// Largest trigger file accepted.
pub const MAX_TRIGGER_SIZE: usize = 64 * 1024;
/// Most series one request may name.
pub const MAX_SERIES: usize = 2000;

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
fn lines(bytes: &[u8]) -> Result<Vec<(usize, String, String)>, TriggerError> {
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
        out.push((i + 1, key.to_string(), value.trim().to_string()));
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

/// Parses a subscriber's list: `schema.table subscribe|unsubscribe` per line
/// (`#` comments and blank lines allowed; a bare `schema.table` means subscribe).
pub fn parse_series_list(text: &str) -> Result<Vec<Series>, TriggerError> {
    let mut out: Vec<Series> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let table = parts.next().unwrap_or("");
        let action = parts.next().unwrap_or("subscribe");
        if parts.next().is_some() {
            return Err(invalid(
                i + 1,
                "expected `schema.table subscribe|unsubscribe`",
            ));
        }
        push_series(&mut out, i + 1, table, action)?;
    }
    if out.is_empty() {
        return Err(invalid(0, "the list names no table"));
    }
    Ok(out)
}

fn push_series(
    out: &mut Vec<Series>,
    line: usize,
    table: &str,
    action: &str,
) -> Result<(), TriggerError> {
    let table = QualifiedTable::parse(table).map_err(|e| invalid(line, e.to_string()))?;
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
        let _ = writeln!(s, "node {}", self.node);
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

    /// Parses a request file named for `file_node`.
    pub fn parse(bytes: &[u8], file_node: &NodeName) -> Result<Request, TriggerError> {
        let mut node = None;
        let (mut archive, mut retention, mut tapegroup) = (0u8, 21u32, 1u32);
        let mut series = Vec::new();
        for (line, key, value) in lines(bytes)? {
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
                table => push_series(&mut series, line, table, &value)?,
            }
        }
        let node = node.ok_or_else(|| invalid(0, "no `node` line"))?;
        if series.is_empty() {
            return Err(invalid(0, "the request names no table"));
        }
        Ok(Request {
            node,
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
        /// Remarks for the operator (e.g. tables left in place).
        notes: Vec<String>,
    },
    /// The request was refused or failed; nothing changed.
    Failed {
        /// Why.
        reason: String,
    },
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
    /// Renders the file.
    pub fn render(&self) -> String {
        let mut s = String::new();
        match self {
            SqlDone::Ready {
                new_site,
                counter,
                notes,
            } => {
                let _ = writeln!(s, "status success\nnew_site {new_site}\ncounter {counter}");
                for n in notes {
                    let _ = writeln!(s, "note {}", one_line(n));
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
    pub fn parse(bytes: &[u8]) -> Result<SqlDone, TriggerError> {
        let (mut status, mut new_site, mut counter, mut reason) = (None, None, None, None);
        let mut notes = Vec::new();
        for (line, key, value) in lines(bytes)? {
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
                "note" => notes.push(value),
                "reason" => reason = Some(value),
                other => return Err(invalid(line, format!("unknown key {other:?}"))),
            }
        }
        match status.as_deref() {
            Some("success") => Ok(SqlDone::Ready {
                new_site: new_site.ok_or_else(|| invalid(0, "no new_site line"))?,
                counter: counter.ok_or_else(|| invalid(0, "no counter line"))?,
                notes,
            }),
            Some("failure") => Ok(SqlDone::Failed {
                reason: reason.unwrap_or_else(|| "no reason given".into()),
            }),
            _ => Err(invalid(0, "status must be success or failure")),
        }
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
    /// Renders the file.
    pub fn render(&self) -> String {
        let mut s = format!("success {}\n", self.success);
        if let Some(r) = &self.reason {
            let _ = writeln!(s, "reason {}", one_line(r));
        }
        s.push_str(END_MARKER);
        s.push('\n');
        s
    }

    /// Parses the file.
    pub fn parse(bytes: &[u8]) -> Result<Outcome, TriggerError> {
        let (mut success, mut reason) = (None, None);
        for (line, key, value) in lines(bytes)? {
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
        Ok(Outcome {
            success: success.ok_or_else(|| invalid(0, "no success line"))?,
            reason,
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
            archive: 0,
            retention: 21,
            tapegroup: 1,
            series: parse_series_list(
                "s1.t1 subscribe\n# comment\ns1.big\ns1.old unsubscribe\ns1.t1 subscribe\n",
            )
            .unwrap(),
        };
        assert_eq!(r.series.len(), 3);
        let text = r.render();
        assert_eq!(Request::parse(text.as_bytes(), &node("site1")).unwrap(), r);
    }

    #[test]
    fn incomplete_and_hostile_requests() {
        let ok = "node site1\ns1.t1 subscribe\nEOF\n";
        assert!(Request::parse(ok.as_bytes(), &node("site1")).is_ok());
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
    fn answers_round_trip() {
        let ready = SqlDone::Ready {
            new_site: true,
            counter: Counter(42),
            notes: vec!["kept s1.x\nin place".into()],
        };
        let parsed = SqlDone::parse(ready.render().as_bytes()).unwrap();
        assert_eq!(
            parsed,
            SqlDone::Ready {
                new_site: true,
                counter: Counter(42),
                notes: vec!["kept s1.x in place".into()]
            }
        );
        let failed = SqlDone::Failed {
            reason: "no such table s1.x".into(),
        };
        assert_eq!(SqlDone::parse(failed.render().as_bytes()).unwrap(), failed);
        let o = Outcome {
            success: false,
            reason: Some("duplicate key".into()),
        };
        assert_eq!(Outcome::parse(o.render().as_bytes()).unwrap(), o);
        assert!(Outcome::parse(b"success maybe\nEOF\n").is_err());
    }
}
