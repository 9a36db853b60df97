//! The lexical rules of SQL text as the archive tools read it: where strings, quoted
//! identifiers, dollar quotes and comments begin and end, and so where a statement ends.
//!
//! One home for them, because a `;` or a `--` inside a string means nothing, and every
//! reader of an archive must agree on that: the splitter ([`super::parse`]) and the cutter
//! ([`super::cut`]) find statement ends with `Scanner`; the cutter reads the head of a
//! statement with `Tokens`; quoted names and string literals are read by one reader
//! ([`string_literal`] and its crate-internal core). What a statement *is* is decided
//! elsewhere, by PostgreSQL's own parser ([`super::statement`]).

use super::statement::Strings;

/// A byte that may continue an identifier (or a `$n` parameter).
pub(crate) fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 || c == b'$'
}

/// `$tag$` at the start of `b` (tag empty or an identifier not starting with a digit).
pub(crate) fn dollar_tag(b: &[u8]) -> Option<Vec<u8>> {
    let mut j = 1;
    while j < b.len() && b[j] != b'$' {
        let c = b[j];
        let ok = if j == 1 {
            c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
        } else {
            c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
        };
        if !ok {
            return None;
        }
        j += 1;
    }
    (j < b.len()).then(|| b[..=j].to_vec())
}

/// The position in `b` of the first byte at or after `from` that is neither whitespace
/// nor part of a `--` or (nested) `/* */` comment; `b.len()` when there is none.
pub(crate) fn skip_blanks(b: &[u8], from: usize) -> usize {
    let mut pos = from;
    loop {
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if b[pos..].starts_with(b"--") {
            while pos < b.len() && b[pos] != b'\n' {
                pos += 1;
            }
        } else if b[pos..].starts_with(b"/*") {
            let mut depth = 0;
            while pos < b.len() {
                if b[pos..].starts_with(b"/*") {
                    depth += 1;
                    pos += 2;
                } else if b[pos..].starts_with(b"*/") {
                    depth -= 1;
                    pos += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    pos += 1;
                }
            }
        } else {
            return pos;
        }
    }
}

/// Whether `b` holds anything but whitespace and comments.
pub(crate) fn has_sql(b: &[u8]) -> bool {
    skip_blanks(b, 0) < b.len()
}

/// What a line (or the rest of one) between two statements is, as psql reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gap<'a> {
    /// Only whitespace.
    Blank,
    /// A `--` comment: the text after `--`, untrimmed.
    Comment(&'a [u8]),
    /// A backslash command of psql.
    MetaCommand,
    /// The start of a statement.
    Sql,
}

/// Reads `rest`, the text between statements up to its line end.
pub(crate) fn gap(rest: &[u8]) -> Gap<'_> {
    let trimmed = rest.trim_ascii_start();
    if trimmed.is_empty() {
        Gap::Blank
    } else if let Some(text) = trimmed.strip_prefix(b"--") {
        Gap::Comment(text)
    } else if trimmed.starts_with(b"\\") {
        Gap::MetaCommand
    } else {
        Gap::Sql
    }
}

/// What a [`Scanner`] is inside of at the end of what it has read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Within {
    /// Plain SQL: a `;` at the top level ends the statement.
    #[default]
    Code,
    /// A `'...'` string; `true` when backslash escapes apply (`E'...'`, or every string
    /// when strings are read [`Strings::Escaped`]).
    String(bool),
    /// A `"quoted identifier"`.
    QuotedIdent,
    /// A dollar-quoted string, with its `$tag$`.
    DollarQuote(Vec<u8>),
    /// A `/* */` comment, nested this deep.
    BlockComment(u32),
}

/// Finds the `;` that ends a statement in raw bytes, line by line, carrying what is
/// open (a string, a comment, parentheses) from one line to the next.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    /// What the text read so far left open.
    within: Within,
    /// Parentheses open at the top level (a `;` inside them does not end the statement,
    /// as in `create rule ... do (...; ...)`).
    depth: i64,
    /// How `'...'` strings are read.
    strings: Strings,
}

/// The text a [`Scanner`] looks at: one line from `start`, and what came before it in
/// the statement (for the byte before an `E'` or a `$`).
struct Text<'a> {
    /// The statement's bytes before this line's part of it.
    before: &'a [u8],
    /// The line.
    line: &'a [u8],
    /// Where the statement's part of the line starts.
    start: usize,
}

impl Text<'_> {
    /// The byte `k` places before position `i` of the line, looking into `before` when
    /// that falls ahead of `start`.
    fn back(&self, i: usize, k: usize) -> Option<u8> {
        if i >= self.start + k {
            Some(self.line[i - k])
        } else {
            let r = k - (i - self.start);
            self.before.len().checked_sub(r).map(|x| self.before[x])
        }
    }

    /// Whether the `k` bytes before position `i` spell `word` (ASCII case-insensitive)
    /// and are not the tail of a longer identifier.
    fn preceded_by(&self, i: usize, word: &[u8]) -> bool {
        let k = word.len();
        word.iter().enumerate().all(|(j, c)| {
            self.back(i, k - j)
                .is_some_and(|b| b.eq_ignore_ascii_case(c))
        }) && !self.back(i, k + 1).is_some_and(is_ident_byte)
    }
}

/// What one step of a scan found.
enum Step {
    /// Go on at this position.
    To(usize),
    /// The statement ends at the `;` just read.
    End,
}

impl Scanner {
    /// A scanner at the start of a statement, reading strings as `strings` says.
    pub(crate) fn new(strings: Strings) -> Self {
        Scanner {
            within: Within::Code,
            depth: 0,
            strings,
        }
    }

    /// Whether nothing is open (no string, identifier, dollar quote or comment).
    pub(crate) fn is_normal(&self) -> bool {
        self.within == Within::Code
    }

    /// What is open at the end of what was read.
    pub(crate) fn within(&self) -> &Within {
        &self.within
    }

    /// Scans `line` from `start`; returns the index of the first top-level `;`, after
    /// which the scanner is ready for the next statement. `before` is the statement's
    /// text ahead of `start` (empty for a new statement).
    pub(crate) fn scan(&mut self, before: &[u8], line: &[u8], start: usize) -> Option<usize> {
        let text = Text {
            before,
            line,
            start,
        };
        let mut i = start;
        while i < line.len() {
            let step = match &mut self.within {
                Within::Code => self.code(&text, i),
                Within::String(escape) => {
                    let escape = *escape;
                    self.string(line, i, escape)
                }
                Within::QuotedIdent => {
                    if line[i] == b'"' {
                        self.within = Within::Code;
                    }
                    Step::To(i + 1)
                }
                Within::DollarQuote(tag) => {
                    if line[i] == b'$' && line[i..].starts_with(tag) {
                        let next = i + tag.len();
                        self.within = Within::Code;
                        Step::To(next)
                    } else {
                        Step::To(i + 1)
                    }
                }
                Within::BlockComment(_) => self.comment(line, i),
            };
            match step {
                Step::To(next) => i = next,
                Step::End => {
                    self.depth = 0;
                    return Some(i);
                }
            }
        }
        None
    }

    /// One byte of plain SQL at `i`.
    fn code(&mut self, text: &Text<'_>, i: usize) -> Step {
        let line = text.line;
        match line[i] {
            b'\'' => {
                // E'...' (not the tail of an identifier like `case'`) takes backslash
                // escapes; with escaped strings every string does, except U&'...',
                // where the backslash starts a Unicode escape.
                let escape = text.preceded_by(i, b"e")
                    || (self.strings == Strings::Escaped && !text.preceded_by(i, b"u&"));
                self.within = Within::String(escape);
            }
            b'"' => self.within = Within::QuotedIdent,
            // A comment inside a statement runs to the end of the line.
            b'-' if line.get(i + 1) == Some(&b'-') => return Step::To(line.len()),
            b'/' if line.get(i + 1) == Some(&b'*') => {
                self.within = Within::BlockComment(1);
                return Step::To(i + 2);
            }
            b'$' if !text.back(i, 1).is_some_and(is_ident_byte) => {
                if let Some(tag) = dollar_tag(&line[i..]) {
                    let len = tag.len();
                    self.within = Within::DollarQuote(tag);
                    return Step::To(i + len);
                }
            }
            b'(' => self.depth += 1,
            b')' => self.depth -= 1,
            b';' if self.depth <= 0 => return Step::End,
            _ => {}
        }
        Step::To(i + 1)
    }

    /// One byte at `i` inside a string; `escape` when a backslash escapes the next byte.
    fn string(&mut self, line: &[u8], i: usize, escape: bool) -> Step {
        if escape && line[i] == b'\\' {
            return Step::To(i + 2);
        }
        if line[i] == b'\'' {
            // '' inside a string is an escaped quote: stay in the string.
            if line.get(i + 1) == Some(&b'\'') {
                return Step::To(i + 2);
            }
            self.within = Within::Code;
        }
        Step::To(i + 1)
    }

    /// One byte at `i` inside a block comment, which may nest.
    fn comment(&mut self, line: &[u8], i: usize) -> Step {
        let Within::BlockComment(depth) = &mut self.within else {
            return Step::To(i + 1);
        };
        if line[i] == b'*' && line.get(i + 1) == Some(&b'/') {
            *depth -= 1;
            if *depth == 0 {
                self.within = Within::Code;
            }
            return Step::To(i + 2);
        }
        if line[i] == b'/' && line.get(i + 1) == Some(&b'*') {
            *depth += 1;
            return Step::To(i + 2);
        }
        Step::To(i + 1)
    }
}

/// Tokens of an SQL statement's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
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
pub(crate) struct Tokens<'s> {
    /// The statement.
    s: &'s str,
    /// Where the next token is looked for.
    pos: usize,
}

impl<'s> Tokens<'s> {
    /// Tokens of `s`, from its start.
    pub(crate) fn new(s: &'s str) -> Self {
        Tokens { s, pos: 0 }
    }

    /// Where the tokenizer stands, to come back to with [`Tokens::restore`].
    pub(crate) fn save(&self) -> usize {
        self.pos
    }

    /// Goes back to a position [`Tokens::save`] gave.
    pub(crate) fn restore(&mut self, at: usize) {
        self.pos = at;
    }

    /// The rest of the text after the current position (blanks skipped).
    pub(crate) fn rest(&mut self) -> &'s str {
        self.pos = skip_blanks(self.s.as_bytes(), self.pos);
        &self.s[self.pos..]
    }
}

impl Iterator for Tokens<'_> {
    type Item = Tok;

    fn next(&mut self) -> Option<Tok> {
        let s = self.rest();
        let c = s.chars().next()?;
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
pub(crate) fn quoted(
    s: &str,
    start: usize,
    quote: char,
    backslash: bool,
) -> Option<(String, usize)> {
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

/// The value of the `'...'` string literal at the start of `s`, read with standard
/// strings (a doubled `''` is one quote, a backslash is itself), and the text after it;
/// `None` when `s` does not start with `'` or the literal is not closed.
pub fn string_literal(s: &str) -> Option<(String, &str)> {
    if !s.starts_with('\'') {
        return None;
    }
    let (value, end) = quoted(s, 1, '\'', false)?;
    Some((value, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn string_literals_and_what_follows() {
        assert_eq!(
            string_literal("'25', '2026-11-21'"),
            Some(("25".to_string(), ", '2026-11-21'"))
        );
        assert_eq!(
            string_literal("'it''s' )"),
            Some(("it's".to_string(), " )"))
        );
        assert_eq!(string_literal("'a\\' x"), Some(("a\\".to_string(), " x")));
        assert_eq!(string_literal("''"), Some((String::new(), "")));
        for bad in ["", "25'", " '25'", "'open", "E'x'"] {
            assert_eq!(string_literal(bad), None, "{bad:?}");
        }
    }

    /// Every statement end found in `text`, scanned line by line as the callers do.
    fn ends(text: &str, strings: Strings) -> Vec<usize> {
        let mut scanner = Scanner::new(strings);
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        let mut offset = 0;
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let mut start = 0;
            let mut stmt_start = found.last().map_or(0, |e| e + 1);
            while let Some(semi) = scanner.scan(&bytes[stmt_start.min(offset)..offset], line, start)
            {
                found.push(offset + semi);
                start = semi + 1;
                stmt_start = offset + start;
            }
            offset += line.len();
        }
        found
    }

    #[test]
    fn statement_ends_skip_what_hides_a_semicolon() {
        let text = "select 'a;b', \"c;d\", $t$;$t$, E'\\';' /* ; /* ; */ ; */;\n\
                    select 1 -- ;\n;(;);";
        let at: Vec<usize> = text.match_indices(';').map(|(i, _)| i).collect();
        assert_eq!(ends(text, Strings::Standard), vec![at[7], at[9], at[11]]);
        // A backslash escapes only in E'' with standard strings, in every '' otherwise.
        assert_eq!(ends("select 'a\\'; x';", Strings::Standard), vec![11]);
        assert_eq!(ends("select 'a\\'; x';", Strings::Escaped), vec![15]);
        assert_eq!(ends("select U&'a\\'; x';", Strings::Escaped), vec![13]);
        // `case'...'` is an identifier and a string, not an E'' string.
        assert_eq!(ends("select case'\\';", Strings::Standard), vec![14]);
        // A `$` after an identifier byte starts no dollar quote.
        assert_eq!(ends("select a$b$;", Strings::Standard), vec![11]);
    }

    #[test]
    fn open_constructs_are_carried_across_lines() {
        for (text, open) in [
            ("select 'a\n", Within::String(false)),
            ("select \"a\n", Within::QuotedIdent),
            ("select $x$ a\n", Within::DollarQuote(b"$x$".to_vec())),
            ("select /* /* */\n", Within::BlockComment(1)),
            ("select (\n", Within::Code),
        ] {
            let mut scanner = Scanner::new(Strings::Standard);
            assert_eq!(scanner.scan(&[], text.as_bytes(), 0), None, "{text:?}");
            assert_eq!(scanner.within(), &open, "{text:?}");
        }
    }

    #[test]
    fn gaps_between_statements() {
        assert_eq!(gap(b"  \r\n"), Gap::Blank);
        assert_eq!(
            gap(b" -- End Of Archive Log\n"),
            Gap::Comment(b" End Of Archive Log\n")
        );
        assert_eq!(gap(b"\\! id\n"), Gap::MetaCommand);
        assert_eq!(gap(b" select 1;\n"), Gap::Sql);
    }

    #[test]
    fn blanks_and_comments_hold_no_sql() {
        assert!(!has_sql(b" -- a\n /* b /* c */ */\n"));
        assert!(!has_sql(b"/* open"));
        assert!(has_sql(b"-- a\nx"));
        assert_eq!(skip_blanks(b"  /* x */ y", 0), 10);
    }
}
