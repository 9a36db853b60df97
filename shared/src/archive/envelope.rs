//! The envelope every archive must have, checked statement by statement while it is applied.
//!
//! ```text
//! set session_replication_role to replica;      -- preamble (the applier does this itself)
//! start transaction;
//! select "_<cluster>".archiveTracking_offline('<counter>', '<created>');
//! ... body: COPY into sl_log_archive, or INSERT/UPDATE/DELETE (before 2.2), sequences ...
//! -- End Of Archive Log                          -- or `-- EOL` (JSOC's splitter)
//! commit;
//! vacuum analyze "_<cluster>".sl_archive_tracking;
//! ```
//!
//! The applier owns the transaction: the archive's own `start transaction` and `commit`
//! are not sent but mark where the body begins and ends. A body statement that would end
//! or split the transaction (`commit; drop table ...` in the middle), anything after the
//! commit other than the tracking VACUUM, and COPY to or from server files are refused,
//! so an archive is applied whole or not at all.

use super::parse::{words, Item};
use super::{excerpt, ArchiveError};
use crate::counter::Counter;
use crate::ident::ClusterName;

/// What the applier does with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to send (a comment, or transaction control the applier does itself).
    Skip,
    /// Send the statement inside the archive's transaction.
    Execute,
    /// Run the COPY and stream its data inside the archive's transaction.
    CopyIn,
    /// The archive's `commit;`: its body is complete.
    Commit,
    /// The tracking-table VACUUM after the commit (may be deferred and grouped).
    Vacuum,
}

/// What the archive says about itself in its tracking call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The counter the archive moves the replica to.
    pub counter: Counter,
    /// When the provider created it (`ac_timestamp`, as written).
    pub created: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preamble,
    Body,
    Committed,
}

/// Checks the items of one archive in order.
#[derive(Debug)]
pub struct Envelope {
    /// `_<cluster>`, lower case, for comparisons.
    schema: String,
    /// The counter the file name promises.
    expected: Counter,
    /// Where we are in the archive.
    phase: Phase,
    /// Whether the archive's own `start transaction` was seen.
    started: bool,
    /// Whether an end marker comment was seen.
    marker: bool,
    /// The parsed tracking call.
    header: Option<Header>,
}

fn malformed(line: u64, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Malformed {
        line,
        reason: reason.into(),
    }
}

impl Envelope {
    /// Starts checking the archive that should carry counter `expected`.
    pub fn new(cluster: &ClusterName, expected: Counter) -> Self {
        Envelope {
            schema: format!("_{}", cluster.as_str()).to_ascii_lowercase(),
            expected,
            phase: Phase::Preamble,
            started: false,
            marker: false,
            header: None,
        }
    }

    /// The tracking call's content, once seen.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Judges the next item.
    pub fn step(&mut self, item: &Item) -> Result<Step, ArchiveError> {
        let (sql, line) = match item {
            Item::Comment { text, .. } => {
                if self.phase != Phase::Preamble && (text == "End Of Archive Log" || text == "EOL")
                {
                    self.marker = true;
                }
                return Ok(Step::Skip);
            }
            Item::CopyIn { sql, line } => {
                if self.phase != Phase::Body {
                    return Err(malformed(*line, "COPY outside the archive's transaction"));
                }
                let _ = sql;
                return Ok(Step::CopyIn);
            }
            Item::Statement { sql, line } => (sql.as_str(), *line),
        };
        let w = words(sql);
        let first = w.first().map(String::as_str).unwrap_or("");
        let second = w.get(1).map(String::as_str).unwrap_or("");
        match self.phase {
            Phase::Preamble => {
                if is_replica_role(&w) {
                    return Ok(Step::Skip);
                }
                if !self.started && is_begin(&w) {
                    self.started = true;
                    return Ok(Step::Skip);
                }
                if let Some(call) = Call::parse(sql) {
                    if call.function == "settrackingoffline"
                        || call.function == "setsynctracking_offline"
                    {
                        return Err(malformed(
                            line,
                            "this is an archive of Slony-I 1.x before 1.2.11 (setsyncTracking_offline); only archives with archiveTracking_offline (Slony-I 1.2.11 and later) are supported",
                        ));
                    }
                    if call.function == "archivetracking_offline" {
                        return self.tracking(call, line);
                    }
                }
                Err(malformed(
                    line,
                    format!(
                        "expected the header (`start transaction;` then `select \"{}\".archiveTracking_offline(...)`), found `{}`",
                        self.schema,
                        excerpt(sql, 80)
                    ),
                ))
            }
            Phase::Body => {
                if is_commit(&w) {
                    self.phase = Phase::Committed;
                    return Ok(Step::Commit);
                }
                if matches!(
                    first,
                    "begin" | "start" | "rollback" | "abort" | "savepoint" | "release"
                ) || (first == "prepare" && second == "transaction")
                    || (first == "commit" || first == "end")
                {
                    return Err(malformed(
                        line,
                        format!(
                            "`{}` would end or split the archive's transaction; refused",
                            excerpt(sql, 80)
                        ),
                    ));
                }
                if first == "vacuum" {
                    return Err(malformed(line, "VACUUM inside the archive's transaction"));
                }
                if first == "copy" {
                    return Err(malformed(
                        line,
                        "COPY from or to a server file or program is not allowed; only COPY ... FROM STDIN",
                    ));
                }
                if let Some(call) = Call::parse(sql) {
                    if call.function == "archivetracking_offline" {
                        return Err(malformed(line, "a second archiveTracking_offline call"));
                    }
                }
                Ok(Step::Execute)
            }
            Phase::Committed => {
                if first == "vacuum" && w.last().is_some_and(|t| is_tracking_table(t, &self.schema))
                {
                    return Ok(Step::Vacuum);
                }
                Err(malformed(
                    line,
                    format!(
                        "`{}` after the archive's commit; only the sl_archive_tracking VACUUM may follow it",
                        excerpt(sql, 80)
                    ),
                ))
            }
        }
    }

    fn tracking(&mut self, call: Call, line: u64) -> Result<Step, ArchiveError> {
        if call.schema != self.schema {
            return Err(malformed(
                line,
                format!(
                    "the archive belongs to cluster schema {:?}, this replica uses {:?}",
                    call.schema, self.schema
                ),
            ));
        }
        let [counter, created] = call.args.as_slice() else {
            return Err(malformed(
                line,
                "archiveTracking_offline takes (counter, timestamp)",
            ));
        };
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
            created: created.clone(),
        });
        self.phase = Phase::Body;
        Ok(Step::Execute)
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
}

fn is_replica_role(w: &[String]) -> bool {
    let joined = w.join(" ");
    let joined = joined.replace(['\'', '"'], "");
    matches!(
        joined.as_str(),
        "set session_replication_role to replica"
            | "set session_replication_role = replica"
            | "set session_replication_role =replica"
            | "set session_replication_role=replica"
            | "set session_replication_role= replica"
    )
}

fn is_begin(w: &[String]) -> bool {
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["start", "transaction"] | ["begin"] | ["begin", "transaction"] | ["begin", "work"]
    )
}

fn is_commit(w: &[String]) -> bool {
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    matches!(
        w.as_slice(),
        ["commit"]
            | ["commit", "transaction"]
            | ["commit", "work"]
            | ["end"]
            | ["end", "transaction"]
    )
}

fn is_tracking_table(t: &str, schema: &str) -> bool {
    let t = t.replace('"', "");
    t == format!("{schema}.sl_archive_tracking")
}

/// A `select <schema>.<function>(<literal>, ...)` call, as Slony writes them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Call {
    /// Schema, unquoted, lower case.
    pub schema: String,
    /// Function name, lower case.
    pub function: String,
    /// Arguments: string literals unquoted, numbers as written.
    pub args: Vec<String>,
}

impl Call {
    /// Parses a Slony function call statement; None if it is not one.
    pub(crate) fn parse(sql: &str) -> Option<Call> {
        let s = sql.trim();
        let rest = s
            .get(..6)?
            .eq_ignore_ascii_case("select")
            .then(|| &s[6..])?;
        let rest = rest.trim_start();
        let (schema, rest) = ident(rest)?;
        let rest = rest.strip_prefix('.')?;
        let (function, rest) = ident(rest)?;
        let mut rest = rest.trim_start().strip_prefix('(')?;
        let mut args = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(')') {
                if !r.trim().is_empty() {
                    return None;
                }
                break;
            }
            if !args.is_empty() {
                rest = rest.strip_prefix(',')?.trim_start();
            }
            let (arg, r) = literal(rest)?;
            args.push(arg);
            rest = r;
        }
        Some(Call {
            schema: schema.to_ascii_lowercase(),
            function: function.to_ascii_lowercase(),
            args,
        })
    }
}

fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(r) = s.strip_prefix('"') {
        let end = r.find('"')?;
        return Some((r[..end].to_string(), &r[end + 1..]));
    }
    let n = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (n > 0).then(|| (s[..n].to_string(), &s[n..]))
}

fn literal(s: &str) -> Option<(String, &str)> {
    if let Some(r) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = r.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if r[i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                    continue;
                }
                return Some((out, &r[i + 1..]));
            }
            out.push(c);
        }
        return None;
    }
    let n = s
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(s.len());
    (n > 0).then(|| (s[..n].to_string(), &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::parse::Splitter;

    fn run(text: &str, expected: u64) -> Result<(Vec<Step>, Header), ArchiveError> {
        let cluster = ClusterName::new("lab").unwrap();
        let mut env = Envelope::new(&cluster, Counter(expected));
        let mut s = Splitter::new(text.as_bytes());
        let mut steps = Vec::new();
        while let Some(item) = s.next_item().map_err(ArchiveError::from)? {
            let step = env.step(&item)?;
            if let Item::CopyIn { .. } = item {
                let mut buf = Vec::new();
                while s.copy_chunk(&mut buf).map_err(ArchiveError::from)? {}
            }
            if step != Step::Skip {
                steps.push(step);
            }
        }
        Ok((steps, env.finish()?))
    }

    const SYNC: &str = "------\n-- Slony-I log shipping archive\n-- Node 1, Event 5000000060\n------\n\
set session_replication_role to replica;\nstart transaction;\n\
select \"_lab\".archiveTracking_offline('35', '2026-11-21 22:06:43.093233+00');\n\
-- end of log archiving header\n\
COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_cmdargs) FROM STDIN;\n1\t{id,1}\n\\.\n\
select \"_lab\".sequenceSetValue_offline('s1','seq1','2');\n\n\n------\n-- End Of Archive Log\n------\n\
commit;\nvacuum analyze \"_lab\".sl_archive_tracking;\n";

    #[test]
    fn a_real_sync_archive_passes() {
        let (steps, header) = run(SYNC, 35).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Execute,
                Step::CopyIn,
                Step::Execute,
                Step::Commit,
                Step::Vacuum
            ]
        );
        assert_eq!(header.counter, Counter(35));
        assert_eq!(header.created, "2026-11-21 22:06:43.093233+00");
    }

    #[test]
    fn jsoc_eol_marker_is_accepted() {
        let text = SYNC.replace("-- End Of Archive Log", "-- EOL");
        run(&text, 35).unwrap();
        let text = SYNC.replace("-- End Of Archive Log\n", "") + "-- EOL\n";
        run(&text, 35).unwrap();
    }

    #[test]
    fn mismatches_and_escapes_are_refused() {
        let cases: Vec<(String, &str)> = vec![
            (SYNC.to_string(), "file name says 36"),
            (
                SYNC.replace("\"_lab\".archive", "\"_other\".archive"),
                "cluster schema",
            ),
            (
                SYNC.replace(
                    "select \"_lab\".seq",
                    "commit; drop table s1.t1; select \"_lab\".seq",
                ),
                "after the archive's commit",
            ),
            (
                SYNC.replace("vacuum analyze", "drop table s1.t1; vacuum analyze"),
                "after the archive's commit",
            ),
            (
                SYNC.replace(
                    "select \"_lab\".seq",
                    "copy s1.t1 from '/etc/passwd'; select \"_lab\".seq",
                ),
                "server file",
            ),
            (
                SYNC.replace(
                    "start transaction;\n",
                    "start transaction;\ndelete from s1.t1;\n",
                ),
                "expected the header",
            ),
            (
                SYNC.replace("select \"_lab\".seq", "rollback; select \"_lab\".seq"),
                "would end or split",
            ),
            (
                SYNC.replace(
                    "archiveTracking_offline('35', '2026-11-21 22:06:43.093233+00')",
                    "setsyncTracking_offline(1, '5', '6', '2026-11-21')",
                ),
                "1.x",
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
    fn incomplete_archives_are_incomplete() {
        let cut = &SYNC[..SYNC.find("commit;").unwrap()];
        assert!(matches!(run(cut, 35), Err(ArchiveError::Incomplete { .. })));
        let no_marker = SYNC.replace("-- End Of Archive Log\n", "");
        assert!(matches!(
            run(&no_marker, 35),
            Err(ArchiveError::Incomplete { .. })
        ));
        let mid_copy = &SYNC[..SYNC.find("\\.").unwrap()];
        assert!(matches!(
            run(mid_copy, 35),
            Err(ArchiveError::Incomplete { .. })
        ));
    }

    #[test]
    fn pre_22_statement_archives_pass() {
        let text = "start transaction;\nselect \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
insert into \"s1\".\"t1\" (id,txt) values ('1',E'a\\\\b;c');\n\
update only \"s1\".\"t1\" set txt='x' where id='1';\ndelete from only \"s1\".\"t1\" where id='2';\n\
select \"_lab\".sequenceSetValue_offline('1','22');\n-- EOL\ncommit;\n";
        let (steps, _) = run(text, 7).unwrap();
        assert_eq!(steps.iter().filter(|s| **s == Step::Execute).count(), 5);
    }

    #[test]
    fn calls_parse() {
        let c = Call::parse("select \"_lab\".archiveTracking_offline('35', 'it''s')").unwrap();
        assert_eq!(c.schema, "_lab");
        assert_eq!(c.function, "archivetracking_offline");
        assert_eq!(c.args, vec!["35", "it's"]);
        assert!(Call::parse("select 1").is_none());
        assert!(Call::parse("select \"_lab\".f('1') ; drop").is_none());
    }
}

#[cfg(test)]
mod real_archives {
    //! Every archive that real Slony-I 2.2.11 wrote in the fixtures passes the envelope.

    use super::*;
    use crate::archive::parse::Splitter;
    use std::path::PathBuf;

    #[test]
    fn real_slony_archives_pass() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/slony-2.2.11");
        let cluster = ClusterName::new("lab").unwrap();
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
            let mut env = Envelope::new(&cluster, Counter(counter));
            let mut s = Splitter::new(text.as_bytes());
            while let Some(item) = s.next_item().unwrap() {
                env.step(&item).unwrap_or_else(|e| panic!("{name}: {e}"));
                if let Item::CopyIn { .. } = item {
                    let mut buf = Vec::new();
                    while s.copy_chunk(&mut buf).unwrap() {}
                }
            }
            env.finish().unwrap_or_else(|e| panic!("{name}: {e}"));
            seen += 1;
        }
        assert!(seen >= 8, "only {seen} fixtures found in {}", dir.display());
    }
}
