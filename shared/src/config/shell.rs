/*!
The original tools' configuration files (`repclient.cfg`, `repserver.cfg`): lines of
`key=value` that bash sources and Perl splits on `=`.

The file is never given to a shell. A value is read as bash reads the word of an
assignment: `'…'` is literal, `"…"` and unquoted text expand `$name` and `${name}` and
take `\` escapes, and nothing is split or globbed. A reference must name a key set on an
earlier line of the same file (the environment is not read, so the result does not
depend on who runs the command). Everything else bash would do is refused with the line
and what to write instead: command substitution (`$(…)`, backticks), arithmetic,
`${name:-…}` and other operators, `~` (at the start or after an unquoted `:`), arrays,
several words (bash would run the second as a command), shell operators, multi-line
values, and lines that are not assignments.

Two leniencies keep files the original Perl client read working: spaces around `=`
(`key = value`) and a trailing `# comment` after the value.
*/

use super::ConfigError;
use std::path::{Path, PathBuf};

/// One `key=value` line, its value expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The key, as written.
    pub key: String,
    /// The value after quote removal and expansion.
    pub value: String,
    /// The line it is on (1-based).
    pub line: usize,
}

/// Every assignment of a file, in order.
#[derive(Debug, Clone, Default)]
pub struct Assignments {
    /// The file read (for messages).
    pub path: PathBuf,
    /// The assignments in file order; a key set twice appears twice (the last one wins,
    /// as in bash).
    pub items: Vec<Assignment>,
}

impl Assignments {
    /// The value a key ends with (the last assignment), if set.
    pub fn get(&self, key: &str) -> Option<&Assignment> {
        self.items.iter().rev().find(|a| a.key == key)
    }

    /// The last assignment of each key, in the order the keys first appear.
    pub fn last_of_each(&self) -> Vec<&Assignment> {
        let mut keys: Vec<&str> = Vec::new();
        for a in &self.items {
            if !keys.contains(&a.key.as_str()) {
                keys.push(&a.key);
            }
        }
        keys.into_iter().filter_map(|k| self.get(k)).collect()
    }

    /// A [`ConfigError::Syntax`] naming `line` of this file.
    pub fn error_at(&self, line: usize, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::Syntax {
            path: self.path.clone(),
            message: format!("line {line}: {message}"),
        }
    }
}

/// Reads the file at `path`.
///
/// # Errors
///
/// The file cannot be read, or a line is refused (see the module doc).
pub fn read(path: &Path) -> Result<Assignments, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `text` (read from `path`, named in errors).
///
/// # Errors
///
/// A line is refused (see the module doc).
pub fn parse(path: &Path, text: &str) -> Result<Assignments, ConfigError> {
    let mut out = Assignments {
        path: path.to_path_buf(),
        items: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, rest) = split_key(line).map_err(|m| out.error_at(n, m))?;
        let value = word(rest, &out).map_err(|m| out.error_at(n, format!("{key}: {m}")))?;
        out.items.push(Assignment {
            key: key.to_string(),
            value,
            line: n,
        });
    }
    Ok(out)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn split_key(line: &str) -> Result<(&str, &str), String> {
    let Some((key, rest)) = line.split_once('=') else {
        return Err(format!(
            "{line:?} is not a key=value line (nothing else is read: no commands, no `source`)"
        ));
    };
    let key = key.trim_end();
    if !is_name(key) {
        return Err(format!(
            "{key:?} is not a key name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    Ok((key, rest.trim_start()))
}

/// Reads the value word, expanding references to earlier keys.
fn word(text: &str, earlier: &Assignments) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    // Where bash would expand a `~`: at the start, and after an unquoted `:`.
    let mut tilde = true;
    while let Some((at, c)) = chars.next() {
        match c {
            '\'' => {
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '\'' {
                        closed = true;
                        break;
                    }
                    out.push(c);
                }
                if !closed {
                    return Err("unterminated ' quote (values must fit on one line)".into());
                }
            }
            '"' => {
                let mut closed = false;
                while let Some((at, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.peek().map(|&(_, c)| c) {
                            Some(e @ ('$' | '`' | '"' | '\\')) => {
                                chars.next();
                                out.push(e);
                            }
                            _ => out.push('\\'),
                        },
                        '$' => out.push_str(&dollar(&text[at..], &mut chars, earlier)?),
                        '`' => return Err(substitution()),
                        c => out.push(c),
                    }
                }
                if !closed {
                    return Err("unterminated \" quote (values must fit on one line)".into());
                }
            }
            '\\' => match chars.next() {
                Some((_, c)) => out.push(c),
                None => return Err("a trailing `\\` continues the line: multi-line values are not read; write the value on one line".into()),
            },
            '$' => out.push_str(&dollar(&text[at..], &mut chars, earlier)?),
            '`' => return Err(substitution()),
            '~' if tilde => {
                return Err("`~` would be expanded by bash to a home directory: write the full path".into())
            }
            c if c.is_whitespace() => {
                let rest = text[at..].trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                return Err(format!(
                    "the value has a second word ({:?}): bash would run it as a command. Quote the value ('...') if the space belongs to it",
                    rest.split_whitespace().next().unwrap_or(rest)
                ));
            }
            ';' | '&' | '|' | '<' | '>' | '(' | ')' => {
                return Err(format!(
                    "`{c}` is a shell operator: quote the value ('...') if it belongs to it"
                ))
            }
            c => out.push(c),
        }
        tilde = c == ':';
    }
    Ok(out)
}

fn substitution() -> String {
    "command substitution (`$(...)` or backticks) is refused: this file is read, never run; write the value itself".into()
}

/// Expands the reference starting at `$` (`from` is the text from the `$` on).
fn dollar(
    from: &str,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    earlier: &Assignments,
) -> Result<String, String> {
    let name = match chars.peek().map(|&(_, c)| c) {
        Some('(') => return Err(substitution()),
        Some('{') => {
            chars.next();
            let mut name = String::new();
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                if c == '}' {
                    closed = true;
                    break;
                }
                name.push(c);
            }
            if !closed {
                return Err(format!("unterminated `${{` in {from:?}"));
            }
            if !is_name(&name) {
                return Err(format!(
                    "`${{{name}}}`: only `${{key}}` (a key set earlier in this file) is expanded, no operators or special parameters"
                ));
            }
            name
        }
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {
            let mut name = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '_' || c.is_ascii_alphanumeric() {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            name
        }
        _ => {
            return Err(format!(
                "`$` in {from:?} is not a reference to a key (write `\\$` or quote with '...' for a literal `$`)"
            ))
        }
    };
    if name == "_" {
        return Err(
            "`$_` is bash's special parameter (the last argument of the previous command), not a key: name the key otherwise".into(),
        );
    }
    earlier
        .get(&name)
        .map(|a| a.value.clone())
        .ok_or_else(|| {
            format!("`${name}` names no key set on an earlier line of this file (the environment is not read)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Result<Vec<(String, String)>, String> {
        parse(Path::new("t.cfg"), text)
            .map(|a| a.items.into_iter().map(|a| (a.key, a.value)).collect())
            .map_err(|e| e.to_string())
    }

    fn one(text: &str) -> Result<String, String> {
        values(text).map(|mut v| v.pop().unwrap().1)
    }

    #[test]
    fn reads_values_as_bash_assigns_them() {
        assert_eq!(one("a=plain").unwrap(), "plain");
        assert_eq!(one("a='single $b `x` \\'").unwrap(), "single $b `x` \\");
        assert_eq!(one("a=\"dq \\\"x\\\" \\$ \\n\"").unwrap(), "dq \"x\" $ \\n");
        assert_eq!(one("a=x\\ y").unwrap(), "x y");
        assert_eq!(one("a=").unwrap(), "");
        assert_eq!(one("a=\"\"").unwrap(), "");
        assert_eq!(one("export a=1").unwrap(), "1");
        assert_eq!(one("a=1 # trailing comment").unwrap(), "1");
        assert_eq!(one("a = spaced").unwrap(), "spaced");
        assert_eq!(one("a=x=y").unwrap(), "x=y");
        assert_eq!(one("a=/p/*.sql").unwrap(), "/p/*.sql");
        assert_eq!(one("a=b#c").unwrap(), "b#c");
        // `~` is expanded only at the start and after an unquoted `:`.
        assert_eq!(one("a=x~").unwrap(), "x~");
        assert_eq!(one("a=x=~").unwrap(), "x=~");
        assert_eq!(one("a=\"x:~\"").unwrap(), "x:~");
        assert_eq!(one("a=x:\\~").unwrap(), "x:~");
    }

    #[test]
    fn expands_earlier_keys_and_nothing_else() {
        let text = "root=/srv/slony\nlogs=${root}/logs\nwork=\"$root/work dir\"\nlit='${root}'\nroot=/other\nlater=$root\n";
        let v = values(text).unwrap();
        assert_eq!(v[1].1, "/srv/slony/logs");
        assert_eq!(v[2].1, "/srv/slony/work dir");
        assert_eq!(v[3].1, "${root}");
        assert_eq!(v[5].1, "/other");
        let a = parse(Path::new("t.cfg"), text).unwrap();
        assert_eq!(a.get("root").unwrap().value, "/other");
        assert_eq!(a.last_of_each().len(), 5);
    }

    #[test]
    fn refuses_what_a_shell_would_run_or_expand() {
        for (text, needle) in [
            ("a=$(rm -rf /)", "command substitution"),
            ("a=\"$(id)\"", "command substitution"),
            ("a=`id`", "command substitution"),
            ("a=\"x`id`\"", "command substitution"),
            ("a=$((1+2))", "command substitution"),
            ("a=${HOME}", "earlier line"),
            ("a=$HOME/x", "earlier line"),
            ("a=${b:-x}", "no operators"),
            ("a=${#b}", "no operators"),
            ("a=$1", "not a reference"),
            ("a=~/x", "full path"),
            ("a=/x:~/y", "full path"),
            ("a=\"/x\":~", "full path"),
            ("a=one two", "second word"),
            ("a=x; rm -rf /", "shell operator"),
            ("a=(x y)", "shell operator"),
            ("a=x|y", "shell operator"),
            ("a='open", "unterminated"),
            ("a=\"open", "unterminated"),
            ("a=x\\", "multi-line"),
            ("rm -rf /", "not a key=value line"),
            ("source other.cfg", "not a key=value line"),
            ("1a=x", "not a key name"),
            ("a-b=x", "not a key name"),
        ] {
            let e = values(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("line 1"), "{text}: {e}");
        }
        // `$_` is bash's last argument, never a key `_` set earlier.
        for text in ["_=x\na=$_", "_=x\na=${_}", "_=x\na=\"$_\""] {
            let e = values(text).expect_err(text);
            assert!(
                e.contains("line 2: a:") && e.contains("special parameter"),
                "{text}: {e}"
            );
        }
        let e = values("# c\n\nok=1\nbad=$(x)\n").unwrap_err();
        assert!(e.contains("line 4: bad:"), "{e}");
    }
}
