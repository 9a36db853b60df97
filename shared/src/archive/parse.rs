//! Splits an archive into the units psql would send: SQL statements and COPY data.
//!
//! The splitter reads the file as a stream (a 1 GB archive never sits in memory) and
//! understands what can hide a `;`: single-quoted strings (with `E''` escapes), quoted
//! identifiers, dollar quotes, `--` and nested `/* */` comments, and parentheses. After a
//! `COPY ... FROM STDIN;` statement the lines up to `\.` are COPY data, handed out in
//! bounded chunks by [`Splitter::copy_chunk`] byte for byte.
//!
//! Comments between statements are reported as [`Item::Comment`] so the caller can see
//! the archive's end marker.

use super::copy_text;
use super::lex::{gap, Gap, Scanner, Within};
use super::statement::Strings;
use std::io::{self, BufRead, Read};

/// One unit of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An SQL statement without its terminating `;`, and the line it starts on.
    Statement {
        /// The statement text (leading whitespace and comments removed).
        sql: String,
        /// 1-based line number of its first character.
        line: u64,
    },
    /// A `COPY ... FROM STDIN` statement: its data must be read with
    /// [`Splitter::copy_chunk`] before asking for the next item.
    CopyIn {
        /// The COPY statement without its `;`.
        sql: String,
        /// 1-based line number of the statement.
        line: u64,
    },
    /// A `--` comment line between statements (text after `--`, trimmed).
    Comment {
        /// The comment text.
        text: String,
        /// 1-based line number.
        line: u64,
    },
}

/// Why the archive text could not be split.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file ended inside a statement, string, comment or COPY block.
    #[error(
        "the archive ends in the middle of {what} (started at line {line}): the file is incomplete"
    )]
    Truncated {
        /// What was open at the end.
        what: &'static str,
        /// Where it began.
        line: u64,
    },
    /// The text is not something an archive may contain.
    #[error("line {line}: {reason}")]
    Invalid {
        /// 1-based line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading failed.
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
}

/// Largest statement we accept: far above anything Slony writes (a 2 MB row is one
/// statement in the pre-2.2 format), and a bound on memory for a hostile file.
pub const MAX_STATEMENT: usize = 256 * 1024 * 1024;

/// Size of the COPY data chunks handed to the database.
const COPY_CHUNK: usize = 256 * 1024;

/// Streams [`Item`]s out of an archive.
pub struct Splitter<R> {
    /// The archive bytes.
    reader: R,
    /// Lines read so far.
    line: u64,
    /// Bytes of the current line not yet consumed.
    pending: Vec<u8>,
    /// Offset of the first unconsumed byte in `pending`.
    pos: usize,
    /// The line `pending` came from.
    pending_line: u64,
    /// True between a CopyIn item and the end of its data.
    in_copy: bool,
    /// Set when the last COPY block ended at end of file without `\.`.
    eof: bool,
    /// How `'...'` strings are read.
    strings: Strings,
    /// Where the COPY data stands between two reads.
    copy: CopyState,
    /// Longest statement accepted ([`MAX_STATEMENT`]; smaller in tests).
    limit: usize,
}

/// What the COPY data left open at the end of the last piece read.
#[derive(Debug, Clone, Copy, Default)]
struct CopyState {
    /// The piece ended inside a line (a line longer than a read).
    mid_line: bool,
    /// The piece ended with a backslash: the next byte is escaped.
    escape: bool,
    /// The piece ended with a carriage return: a line feed must follow.
    cr: bool,
}

impl<R: BufRead> Splitter<R> {
    /// Starts splitting `reader`.
    pub fn new(reader: R) -> Self {
        Splitter {
            reader,
            line: 0,
            pending: Vec::new(),
            pos: 0,
            pending_line: 0,
            in_copy: false,
            eof: false,
            strings: Strings::Standard,
            copy: CopyState::default(),
            limit: MAX_STATEMENT,
        }
    }

    /// A splitter that refuses statements longer than `limit` bytes (tests use a small
    /// one to check the bound without gigabytes of input).
    #[cfg(test)]
    fn with_limit(reader: R, limit: usize) -> Self {
        Splitter {
            limit,
            ..Splitter::new(reader)
        }
    }

    /// How `'...'` strings are read from now on.
    pub fn strings(&self) -> Strings {
        self.strings
    }

    /// Reads `'...'` strings this way from the next statement on (the archive's header
    /// says which way its body was written, before any string of it is read).
    pub fn set_strings(&mut self, strings: Strings) {
        self.strings = strings;
    }

    /// Reads the next line into `pending`; false at end of file.
    fn fill(&mut self) -> Result<bool, ParseError> {
        self.pending.clear();
        self.pos = 0;
        let n = (&mut self.reader)
            .take(self.limit as u64 + 1)
            .read_until(b'\n', &mut self.pending)?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        self.pending_line = self.line;
        Ok(true)
    }

    /// The next statement, COPY statement or comment; `None` at a clean end of file.
    pub fn next_item(&mut self) -> Result<Option<Item>, ParseError> {
        if self.in_copy {
            return Err(ParseError::Invalid {
                line: self.line,
                reason: "internal: COPY data not consumed before the next statement".into(),
            });
        }
        let mut stmt: Vec<u8> = Vec::new();
        let mut start_line = 0;
        let mut scanner = Scanner::new(self.strings);
        loop {
            if self.pos >= self.pending.len() && !self.fill()? {
                return end_of_text(&stmt, &scanner, start_line);
            }
            let line = self.pending_line;
            if stmt.iter().all(u8::is_ascii_whitespace) && scanner.is_normal() {
                if let Some(comment) = self.between_statements(line)? {
                    return Ok(Some(comment));
                }
                if self.pos >= self.pending.len() {
                    continue;
                }
                stmt.clear();
                start_line = line;
            }
            let ended = scanner.scan(&stmt, &self.pending, self.pos);
            let end = ended.unwrap_or(self.pending.len()).min(self.pending.len());
            stmt.extend_from_slice(&self.pending[self.pos..end]);
            if stmt.len() > self.limit {
                return Err(ParseError::Invalid {
                    line: start_line,
                    reason: format!("statement longer than {} bytes", self.limit),
                });
            }
            match ended {
                None => self.pos = self.pending.len(),
                Some(semi) => {
                    self.pos = semi + 1;
                    return self.statement_item(stmt, start_line).map(Some);
                }
            }
        }
    }

    /// Reads the rest of the current line, which comes between two statements: skips
    /// it when blank, hands out a comment line, refuses a meta-command, and otherwise
    /// moves to where the next statement starts.
    fn between_statements(&mut self, line: u64) -> Result<Option<Item>, ParseError> {
        let rest = &self.pending[self.pos..];
        match gap(rest) {
            Gap::Blank => {
                self.pos = self.pending.len();
                Ok(None)
            }
            Gap::Comment(c) => {
                let text = String::from_utf8_lossy(c).trim().to_string();
                self.pos = self.pending.len();
                Ok(Some(Item::Comment { text, line }))
            }
            Gap::MetaCommand => Err(ParseError::Invalid {
                line,
                reason: "a psql meta-command (backslash command) is not allowed outside COPY data"
                    .into(),
            }),
            Gap::Sql => {
                self.pos = self.pending.len() - rest.trim_ascii_start().len();
                Ok(None)
            }
        }
    }

    /// The item of a statement read up to its `;` (excluded); the rest of its line is
    /// still pending.
    fn statement_item(&mut self, stmt: Vec<u8>, start_line: u64) -> Result<Item, ParseError> {
        let sql = String::from_utf8(stmt).map_err(|_| ParseError::Invalid {
            line: start_line,
            reason: "the statement is not valid UTF-8".into(),
        })?;
        let sql = sql.trim_end().to_string();
        if !is_copy_from_stdin_with(&sql, self.strings) {
            return Ok(Item::Statement {
                sql,
                line: start_line,
            });
        }
        // Data starts on the next line; nothing but blanks may follow the `;`.
        if !self.pending[self.pos..].trim_ascii_start().is_empty() {
            return Err(ParseError::Invalid {
                line: self.pending_line,
                reason: "text after `COPY ... FROM STDIN;` on the same line".into(),
            });
        }
        self.pos = self.pending.len();
        self.in_copy = true;
        Ok(Item::CopyIn {
            sql,
            line: start_line,
        })
    }

    /// Reads the next chunk of COPY data (whole lines, `\.` excluded) into `buf`, which is
    /// cleared first. Returns `false` once the `\.` line has been consumed (then `buf` may
    /// still hold the last data).
    pub fn copy_chunk(&mut self, buf: &mut Vec<u8>) -> Result<bool, ParseError> {
        buf.clear();
        if !self.in_copy {
            return Ok(false);
        }
        let start = self.line;
        loop {
            let at = buf.len();
            // Each read takes at most one line (or a slice of a very long one).
            let n = (&mut self.reader)
                .take(COPY_CHUNK as u64)
                .read_until(b'\n', buf)?;
            if n == 0 {
                self.eof = true;
                return Err(ParseError::Truncated {
                    what: "COPY data (no `\\.` line)",
                    line: start,
                });
            }
            let piece = &buf[at..];
            let line_start = !self.copy.mid_line;
            self.copy.mid_line = !piece.ends_with(b"\n");
            if piece.ends_with(b"\n") {
                self.line += 1;
            }
            if line_start && copy_text::is_end_of_data(piece) {
                if !piece.ends_with(b"\n") {
                    self.line += 1;
                }
                buf.truncate(at);
                self.in_copy = false;
                self.copy = CopyState::default();
                return Ok(false);
            }
            let line = self.line;
            check_copy_bytes(&mut self.copy, piece).map_err(|reason| ParseError::Invalid {
                line,
                reason: reason.into(),
            })?;
            if buf.len() >= COPY_CHUNK && buf.ends_with(b"\n") {
                return Ok(true);
            }
            if buf.len() >= 2 * COPY_CHUNK {
                // A single line longer than the chunk: hand it out in pieces.
                return Ok(true);
            }
        }
    }

    /// The current line number (1-based; 0 before anything was read).
    pub fn line(&self) -> u64 {
        self.line
    }
}

/// COPY data may not hold what the server would read as the end of the data or of a
/// row where the receiver does not: `\.` other than on the end line, a backslash
/// before a line end (it escapes the line end), or a carriage return that is not part of
/// a CRLF line end (the server may take it for the line end). COPY TO never writes them.
fn check_copy_bytes(state: &mut CopyState, piece: &[u8]) -> Result<(), &'static str> {
    for &b in piece {
        if state.cr {
            state.cr = false;
            if b != b'\n' {
                return Err(
                    "a carriage return inside COPY data (only CRLF line ends may hold one)",
                );
            }
        }
        if state.escape {
            state.escape = false;
            match b {
                b'.' => {
                    return Err("`\\.` inside COPY data: only the end-of-data line may hold it")
                }
                b'\n' | b'\r' => return Err("a backslash before a line end in COPY data"),
                _ => {}
            }
            continue;
        }
        match b {
            b'\\' => state.escape = true,
            b'\r' => state.cr = true,
            _ => {}
        }
    }
    Ok(())
}

/// Why the text ended where it did: cleanly between statements (`None`), or inside a
/// statement or whatever the scanner has open.
fn end_of_text(
    stmt: &[u8],
    scanner: &Scanner,
    start_line: u64,
) -> Result<Option<Item>, ParseError> {
    if stmt.iter().all(u8::is_ascii_whitespace) && scanner.is_normal() {
        return Ok(None);
    }
    let what = match scanner.within() {
        Within::Code => "a statement (no terminating `;`)",
        Within::String(_) => "a quoted string",
        Within::QuotedIdent => "a quoted identifier",
        Within::DollarQuote(_) => "a dollar-quoted string",
        Within::BlockComment(_) => "a /* comment */",
    };
    Err(ParseError::Truncated {
        what,
        line: start_line,
    })
}

/// Whether the statement is `COPY ... FROM STDIN` (the data follows in the file), as
/// PostgreSQL's parser reads it with standard strings.
pub fn is_copy_from_stdin(sql: &str) -> bool {
    is_copy_from_stdin_with(sql, Strings::Standard)
}

/// [`is_copy_from_stdin`], reading strings as `strings` says.
fn is_copy_from_stdin_with(sql: &str, strings: Strings) -> bool {
    // Only a statement that starts with the word can be a COPY: skip the parse for
    // everything else.
    let head = sql.trim_start().as_bytes();
    if !head
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"copy"))
    {
        return false;
    }
    super::statement::judge(sql, strings).is_ok_and(|s| s.copy_from_stdin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the bytes taken from the reader.
    struct Counting<'a>(&'a [u8], std::rc::Rc<std::cell::Cell<usize>>);

    impl std::io::Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }

    #[test]
    fn a_line_without_an_end_is_refused_at_the_limit_unread() {
        // 10 MB of one line that never ends, limit 1 KiB: refused after about 1 KiB.
        let huge = vec![b'x'; 10 * 1024 * 1024];
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = std::io::BufReader::with_capacity(4096, Counting(&huge, read.clone()));
        let mut s = Splitter::with_limit(reader, 1024);
        let err = s.next_item().unwrap_err().to_string();
        assert!(err.contains("longer than 1024 bytes"), "{err}");
        assert!(read.get() <= 8192, "read {} bytes of the line", read.get());
        // The same text within the limit is a statement.
        let mut s = Splitter::with_limit(&b"select 1;\n"[..], 1024);
        assert!(matches!(
            s.next_item().unwrap(),
            Some(Item::Statement { .. })
        ));
    }

    fn split(text: &str) -> Vec<(String, Vec<u8>)> {
        let mut s = Splitter::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(item) = s.next_item().unwrap() {
            match item {
                Item::Statement { sql, .. } => out.push((sql, Vec::new())),
                Item::Comment { text, .. } => out.push((format!("-- {text}"), Vec::new())),
                Item::CopyIn { sql, .. } => {
                    let mut data = Vec::new();
                    let mut buf = Vec::new();
                    loop {
                        let more = s.copy_chunk(&mut buf).unwrap();
                        data.extend_from_slice(&buf);
                        if !more {
                            break;
                        }
                    }
                    out.push((sql, data));
                }
            }
        }
        out
    }

    fn sqls(text: &str) -> Vec<String> {
        split(text).into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn statements_and_comments() {
        assert_eq!(
            sqls("-- head\nselect 1;select 2;\n\n  -- End Of Archive Log\ncommit;\n"),
            vec![
                "-- head",
                "select 1",
                "select 2",
                "-- End Of Archive Log",
                "commit"
            ]
        );
    }

    #[test]
    fn semicolons_inside_quotes_comments_and_parens() {
        let got = sqls(concat!(
            "insert into t values ('a;b', 'it''s;', E'x\\';y');\n",
            "select \"we;ird\" from t;\n",
            "create function f() returns int as $$ begin return 1; end; $$ language plpgsql;\n",
            "create function g() returns int as $body$ select $$;$$; $body$ language sql;\n",
            "select 1 /* a ; /* nested ; */ still ; */ + 1;\n",
            "select 2 -- trailing ; comment\n + 3;\n",
            "create rule r as on insert to t do (insert into u values (1); insert into u values (2));\n",
            "select $1, a$b from t;\n",
        ));
        assert_eq!(got.len(), 8, "{got:#?}");
        assert!(got[0].ends_with("E'x\\';y')"));
        assert!(got[2].ends_with("$$ language plpgsql"));
        assert!(got[3].contains("$$;$$"));
        assert!(got[5].contains("+ 3"));
        assert!(got[6].ends_with("(2))"));
    }

    #[test]
    fn standard_strings_keep_backslashes() {
        // With standard strings, '\' does not escape the closing quote.
        assert_eq!(
            sqls("select 'a\\'; select 2;"),
            vec!["select 'a\\'", "select 2"]
        );
    }

    #[test]
    fn copy_data_is_passed_byte_for_byte() {
        let text = concat!(
            "COPY \"_lab\".\"sl_log_archive\" ( a, b) FROM STDIN;\n",
            "1\t{x,\"a\\\\.b\"}\tCRLF ok\r\n",
            "\\.\n",
            "select 'after';\n"
        );
        let got = split(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, b"1\t{x,\"a\\\\.b\"}\tCRLF ok\r\n".to_vec());
        assert_eq!(got[1].0, "select 'after'");
    }

    #[test]
    fn copy_data_the_server_would_cut_elsewhere_is_refused() {
        for data in [
            "\\.x is not data\n",
            " \\.\n",
            "a\\.\n",
            "1\t2\\\n3\n",
            "1\t2\r3\t4\n",
            "1\t2\r\\.\r\n",
        ] {
            let text = format!("copy t from stdin;\n{data}\\.\n");
            let mut s = Splitter::new(text.as_bytes());
            assert!(matches!(s.next_item(), Ok(Some(Item::CopyIn { .. }))));
            let mut buf = Vec::new();
            let mut result = Ok(true);
            for _ in 0..4 {
                result = s.copy_chunk(&mut buf);
                if !matches!(result, Ok(true)) {
                    break;
                }
            }
            assert!(
                matches!(result, Err(ParseError::Invalid { .. })),
                "{data:?}: {result:?}"
            );
        }
    }

    #[test]
    fn empty_copy_and_crlf_terminator() {
        let got = split("copy t from stdin;\r\n\\.\r\nselect 1;\n");
        assert_eq!(got[0].1, Vec::<u8>::new());
        assert_eq!(got[1].0, "select 1");
    }

    #[test]
    fn large_copy_comes_in_bounded_chunks() {
        let row = "x".repeat(1000) + "\n";
        let text = format!("copy t from stdin;\n{}\\.\n", row.repeat(2000));
        let mut s = Splitter::new(text.as_bytes());
        assert!(matches!(s.next_item().unwrap(), Some(Item::CopyIn { .. })));
        let (mut total, mut chunks, mut buf) = (0, 0, Vec::new());
        loop {
            let more = s.copy_chunk(&mut buf).unwrap();
            assert!(buf.len() <= 2 * COPY_CHUNK);
            total += buf.len();
            chunks += 1;
            if !more {
                break;
            }
        }
        assert_eq!(total, row.len() * 2000);
        assert!(chunks > 4);
        assert!(s.next_item().unwrap().is_none());
    }

    #[test]
    fn truncation_is_reported() {
        for text in [
            "select 1",
            "select 'abc;\n",
            "select $$ x;\n",
            "/* open ;\n",
            "copy t from stdin;\n1\t2\n",
        ] {
            let mut s = Splitter::new(text.as_bytes());
            let mut err = None;
            for _ in 0..5 {
                match s.next_item() {
                    Ok(Some(Item::CopyIn { .. })) => {
                        let mut buf = Vec::new();
                        if let Err(e) = s.copy_chunk(&mut buf) {
                            err = Some(e);
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            assert!(
                matches!(err, Some(ParseError::Truncated { .. })),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn meta_commands_and_trailing_copy_text_are_refused() {
        let mut s = Splitter::new(&b"\\! rm -rf /\n"[..]);
        assert!(matches!(
            s.next_item(),
            Err(ParseError::Invalid { line: 1, .. })
        ));
        let mut s = Splitter::new(&b"copy t from stdin; drop table t;\n"[..]);
        assert!(matches!(s.next_item(), Err(ParseError::Invalid { .. })));
    }

    #[test]
    fn line_numbers() {
        let mut s = Splitter::new(&b"\n\nselect\n1;\n-- c\n"[..]);
        assert_eq!(
            s.next_item().unwrap(),
            Some(Item::Statement {
                sql: "select\n1".into(),
                line: 3
            })
        );
        assert_eq!(
            s.next_item().unwrap(),
            Some(Item::Comment {
                text: "c".into(),
                line: 5
            })
        );
    }

    #[test]
    fn a_multibyte_character_where_copy_would_end_is_no_panic() {
        // Found by the archive fuzz target: byte 4 falls inside a two-byte character.
        assert!(!is_copy_from_stdin("slo\u{713};"));
        let crash = include_bytes!("../../../fuzz/seeds/archive/crash-multibyte-head");
        let mut s = Splitter::new(&crash[..]);
        for _ in 0..64 {
            match s.next_item() {
                Ok(Some(Item::CopyIn { .. })) => {
                    let mut buf = Vec::new();
                    if s.copy_chunk(&mut buf).is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn copy_detection() {
        assert!(is_copy_from_stdin(
            "COPY \"_x\".\"sl_log_archive\" ( a,b) FROM STDIN"
        ));
        assert!(is_copy_from_stdin("copy s1.t1 (\"id\") from stdin"));
        assert!(!is_copy_from_stdin("copy t to stdout"));
        assert!(!is_copy_from_stdin("select 'copy from stdin'"));
        // The words alone would say yes: the parser says what it is.
        assert!(!is_copy_from_stdin(
            "copy t to program 'id' /* from stdin */"
        ));
        assert!(!is_copy_from_stdin(
            "copy t to program 'id' -- from stdin\n"
        ));
        assert!(is_copy_from_stdin("copy t from/**/stdin"));
    }
}
