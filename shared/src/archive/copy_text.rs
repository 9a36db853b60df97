//! COPY text-format rows of `sl_log_archive`, read exactly as PostgreSQL reads them.
//!
//! Slony 2.2 carries each change as a row COPYed into `"_<cluster>".sl_log_archive`;
//! a trigger on that table turns the row into the change. Rows of command type `S`
//! carry a DDL statement, which the trigger runs with `EXECUTE`. So the receiver reads
//! those rows before they are sent: the field escapes of COPY, then the array literal
//! of `log_cmdargs`. Where our reading could differ from the server's (an array with
//! dimensions, an unquoted element with escapes, a command type padded with blanks), the
//! row is refused rather than guessed at.

use std::borrow::Cow;

/// The columns of `sl_log_archive`, in the order slon writes them in its COPY.
pub const LOG_COLUMNS: [&str; 9] = [
    "log_origin",
    "log_txid",
    "log_tableid",
    "log_actionseq",
    "log_tablenspname",
    "log_tablerelname",
    "log_cmdtype",
    "log_cmdupdncols",
    "log_cmdargs",
];

/// Index of `log_cmdtype` in [`LOG_COLUMNS`].
pub const CMDTYPE: usize = 6;
/// Index of `log_cmdargs` in [`LOG_COLUMNS`].
pub const CMDARGS: usize = 8;

/// Whether `line` is the end-of-data line `\.` (with its line end, if any).
pub fn is_end_of_data(line: &[u8]) -> bool {
    matches!(line, b"\\.\n" | b"\\.\r\n" | b"\\.")
}

/// The raw fields of a COPY text-format row, as the server splits them: a tab ends a
/// field unless a backslash escapes it.
struct Fields<'a> {
    /// The row, or its start.
    bytes: &'a [u8],
    /// Where the next field starts; `None` once the last one was handed out.
    start: Option<usize>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], bool);

    /// The next field, and whether a tab ended it.
    fn next(&mut self) -> Option<Self::Item> {
        let start = self.start?;
        let mut i = start;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'\\' => i += 2,
                b'\t' => {
                    self.start = Some(i + 1);
                    return Some((&self.bytes[start..i], true));
                }
                _ => i += 1,
            }
        }
        self.start = None;
        Some((&self.bytes[start.min(self.bytes.len())..], false))
    }
}

/// Splits a COPY text-format row (without its line end) into its raw fields.
pub fn fields(row: &[u8]) -> Vec<&[u8]> {
    Fields {
        bytes: row,
        start: Some(0),
    }
    .map(|(f, _)| f)
    .collect()
}

/// The first `n` fields of a row whose start is `bytes`, once the tab after the `n`-th
/// has arrived (`None` before).
pub fn leading_fields(bytes: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let out: Vec<&[u8]> = Fields {
        bytes,
        start: Some(0),
    }
    .take(n)
    .take_while(|(_, ended)| *ended)
    .map(|(f, _)| f)
    .collect();
    (out.len() == n).then_some(out)
}

/// Decodes one COPY text-format field. `None` for `\N` (SQL NULL).
pub fn unescape(f: &[u8]) -> Option<Cow<'_, [u8]>> {
    if f == b"\\N" {
        return None;
    }
    if !f.contains(&b'\\') {
        return Some(Cow::Borrowed(f));
    }
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        let c = f[i];
        if c != b'\\' || i + 1 >= f.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = f[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + u32::from(f[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < f.len() && f[i].is_ascii_hexdigit() => {
                let mut v = hex(f[i]);
                i += 1;
                if i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + hex(f[i]);
                    i += 1;
                }
                out.push(v);
            }
            other => out.push(other),
        }
    }
    Some(Cow::Owned(out))
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// The first element of an array literal (`{"stmt",...}`), unquoted; `None` if the text
/// is not an array or the element is NULL. Lenient: for the cutter, which only routes.
pub fn first_array_element(s: &str) -> Option<String> {
    array_elements(s).ok()?.into_iter().next().flatten()
}

/// Whitespace as PostgreSQL's array parser skips it.
fn array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

/// The elements of a one-dimensional text array literal, as `array_in` reads them
/// (`None` for NULL). Refuses what it does not read exactly as the server does:
/// dimension decorations, nested arrays, unquoted elements with backslashes or blanks.
pub fn array_elements(s: &str) -> Result<Vec<Option<String>>, String> {
    let s = s.trim_start_matches(array_space);
    let mut chars = s
        .strip_prefix('{')
        .ok_or("not a one-dimensional array literal starting with `{`")?
        .chars()
        .peekable();
    let mut out = Vec::new();
    loop {
        while chars.next_if(|c| array_space(*c)).is_some() {}
        match chars.peek() {
            Some('}') if out.is_empty() => {
                chars.next();
                break;
            }
            Some('"') => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => v.push(chars.next().ok_or("unterminated element")?),
                        Some('"') => break,
                        Some(c) => v.push(c),
                        None => return Err("unterminated element".into()),
                    }
                }
                out.push(Some(v));
            }
            Some(_) => {
                let mut v = String::new();
                while let Some(c) = chars.next_if(|c| !matches!(c, ',' | '}') && !array_space(*c)) {
                    if matches!(c, '{' | '"' | '\\') {
                        return Err(format!("unquoted element with {c:?}"));
                    }
                    v.push(c);
                }
                if v.is_empty() {
                    return Err("empty unquoted element".into());
                }
                out.push(if v.eq_ignore_ascii_case("null") {
                    None
                } else {
                    Some(v)
                });
            }
            None => return Err("unterminated array".into()),
        }
        while chars.next_if(|c| array_space(*c)).is_some() {}
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            _ => return Err("expected `,` or `}` after an element".into()),
        }
    }
    if chars.any(|c| !array_space(c)) {
        return Err("text after the array's closing `}`".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_tab_does_not_end_a_field() {
        let row = b"1\t950\t\\N\t55\tx\ty\\\tI\tS\t\\N\t{x}";
        let f = fields(row);
        assert_eq!(f.len(), 9);
        assert_eq!(f[5], b"y\\\tI");
        assert_eq!(f[6], b"S");
        assert_eq!(leading_fields(row, 7).unwrap()[6], b"S");
        assert!(leading_fields(b"1\t2\\\t3", 2).is_none());
    }

    #[test]
    fn fields_unescape_as_copy_reads_them() {
        assert_eq!(unescape(b"\\N"), None);
        assert_eq!(unescape(b"a\\tb\\\\c").unwrap().as_ref(), b"a\tb\\c");
        assert_eq!(unescape(b"\\123\\x53").unwrap().as_ref(), b"SS");
    }

    #[test]
    fn arrays_are_read_as_array_in_reads_them() {
        assert_eq!(
            array_elements("{\"alter table s1.t2 add x int;\",\"\",\"3,1,4\"}").unwrap(),
            vec![
                Some("alter table s1.t2 add x int;".into()),
                Some(String::new()),
                Some("3,1,4".into())
            ]
        );
        assert_eq!(
            array_elements(" { \"a\\\"b\" , NULL , c } ").unwrap(),
            vec![Some("a\"b".into()), None, Some("c".into())]
        );
        assert_eq!(array_elements("{}").unwrap(), vec![]);
        for bad in [
            "[0:1]={\"drop table x\",\"select 1\"}",
            "{{\"a\"},{\"b\"}}",
            "{a\\,b}",
            "{a b}",
            "{\"a\"",
            "{\"a\"} x",
            "{,}",
        ] {
            assert!(array_elements(bad).is_err(), "{bad}");
        }
    }
}
