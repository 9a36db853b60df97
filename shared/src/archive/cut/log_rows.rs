//! Rows of `COPY ... sl_log_archive`: where the fields the cut routes by stand, and which
//! sites get each row (a row change by its table, a DDL row by its statement's target,
//! the rest of an EXECUTE SCRIPT with the script's statements).

use super::ddl_target::{ddl_target, Found};
use super::{malformed, undecidable, CutErrorKind, Cutter, Mode};
use crate::archive::copy_text::{self, LOG_COLUMNS};
use crate::archive::lex::has_sql;
use std::io::Write;

/// Positions of the fields the cut needs, from the COPY column list.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogColumns {
    /// `log_txid`: which EXECUTE SCRIPT a DDL row belongs to.
    txid: usize,
    /// `log_tablenspname`: the schema of a row change's table.
    nsp: usize,
    /// `log_tablerelname`: the name of a row change's table.
    rel: usize,
    /// `log_cmdtype`: what the row is.
    cmdtype: usize,
    /// `log_cmdargs`: a DDL row's statement.
    cmdargs: usize,
    /// Largest of the above: a row needs at least `max + 1` fields.
    max: usize,
}

/// The positions of the needed fields from `( col, col, ...) FROM STDIN`.
pub(super) fn log_columns(rest: &str) -> Result<LogColumns, String> {
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

/// The fields of one row that the cut routes by, as raw COPY text.
struct LogFields<'r> {
    /// `log_txid`.
    txid: &'r [u8],
    /// `log_tablenspname`.
    nsp: &'r [u8],
    /// `log_tablerelname`.
    rel: &'r [u8],
    /// `log_cmdtype`.
    cmdtype: &'r [u8],
    /// `log_cmdargs`.
    args: &'r [u8],
}

impl<'r> LogFields<'r> {
    /// Splits `row` (without its line end) at its tabs; `Err(n)` for a row of only `n`
    /// fields, too few to hold those the cut needs.
    fn split(row: &'r [u8], cols: &LogColumns) -> Result<Self, usize> {
        let mut fields: [&[u8]; 9] = [&[]; 9];
        let mut n = 0;
        for f in row.splitn(cols.max + 2, |b| *b == b'\t') {
            if n <= cols.max {
                fields[slot(n, cols)] = f;
            }
            n += 1;
        }
        if n <= cols.max {
            return Err(n);
        }
        Ok(LogFields {
            txid: fields[0],
            nsp: fields[1],
            rel: fields[2],
            cmdtype: fields[3],
            args: fields[4],
        })
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

impl<W: Write> Cutter<'_, W> {
    /// One line of `COPY ... sl_log_archive` data.
    pub(super) fn log_row(&mut self, line: &[u8], cols: LogColumns) -> Result<(), CutErrorKind> {
        if copy_text::is_end_of_data(line) {
            self.mode = Mode::Sql;
            return self.emit_all(line);
        }
        let row = line.strip_suffix(b"\n").unwrap_or(line);
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        let fields = LogFields::split(row, &cols).map_err(|n| {
            malformed(
                self.line_no,
                format!(
                    "a sl_log_archive row with {n} fields, expected at least {}",
                    cols.max + 1
                ),
            )
        })?;
        match fields.cmdtype {
            b"I" | b"U" | b"D" | b"T" => {
                let keep = self.row_decision(fields.nsp, fields.rel)?;
                self.count(&keep);
                self.emit_to(&keep, line)
            }
            b"S" => self.ddl_row(line, fields.txid, fields.args),
            b"s" => {
                let keep = self.scripts.remove(fields.txid).unwrap_or_default();
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

    /// A DDL row (`S`) of the EXECUTE SCRIPT `txid`, its statement in `args`: to the
    /// sites of the statement's target; the rest of a script after its last `;` to the
    /// sites that got one of its statements.
    fn ddl_row(&mut self, line: &[u8], txid: &[u8], args: &[u8]) -> Result<(), CutErrorKind> {
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
            Found::Sequence(nsp, seq) => self.sequence_decision(&nsp, &seq),
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
