//! Names that travel between sites: cluster, node (site), `schema.table`.
//!
//! Each is validated against a strict pattern when it is built, so a value of these types
//! is always safe to put in a path or (quoted) in SQL.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadName {
    /// The name is empty, too long, or holds a character outside the allowed set.
    #[error("{what} {value:?} is not valid: {rule}")]
    Pattern {
        /// What kind of name it was meant to be.
        what: &'static str,
        /// The refused text (as given).
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

const IDENT_RULE: &str = "use 1 to 63 characters: letters, digits, '_' (not starting with a digit)";
const NODE_RULE: &str =
    "use 1 to 64 characters: letters, digits, '_', '-' (starting with a letter or digit)";

fn is_ident(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A Slony cluster name (the schema `_<cluster>` holds its objects).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName(String);

impl ClusterName {
    /// Validates a cluster name.
    pub fn new(s: &str) -> Result<Self, BadName> {
        // The schema name "_<cluster>" must itself fit PostgreSQL's 63 bytes.
        if is_ident(s) && s.len() < 63 {
            Ok(Self(s.to_string()))
        } else {
            Err(BadName::Pattern {
                what: "cluster name",
                value: s.to_string(),
                rule: IDENT_RULE,
            })
        }
    }

    /// The cluster name as written in configs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The quoted schema that holds the cluster's objects, e.g. `"_lab"`.
    pub fn schema(&self) -> String {
        quote_ident(&format!("_{}", self.0))
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscriber site's name (the `node` of the original tools), used in paths and file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Validates a site name.
    pub fn new(s: &str) -> Result<Self, BadName> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(BadName::Pattern {
                what: "node name",
                value: s.to_string(),
                rule: NODE_RULE,
            })
        }
    }

    /// The site name as written in configs and paths.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A replicated table (a "series"), `schema.table`.
///
/// Each part is written plain, 1 to 63 letters, digits or `_` not starting with a digit
/// and taken exactly as written (case included), or in double quotes, as SQL quotes an
/// identifier: any text of 1 to 63 bytes without control characters, a `"` inside
/// written twice (`"Schema.name"."Capital Idea"`, `public."Jan's bad ideas"`). Nothing
/// else is accepted: no spaces around the dot, no third part. A subscriber's list is read
/// with [`QualifiedTable::parse_prefix_folded`] instead, which folds a plain part to lower
/// case as PostgreSQL does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedTable {
    /// The schema (namespace), as PostgreSQL spells it.
    pub schema: String,
    /// The table name, as PostgreSQL spells it.
    pub table: String,
}

/// The rule, for messages.
const TABLE_RULE: &str = "write schema.table, each part either 1 to 63 letters, digits or '_' (not starting with a digit, taken as written) or in double quotes (\"Any Name\", a '\"' inside written twice)";

/// Whether `s` is a name PostgreSQL could hold (1 to 63 bytes, no control characters).
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.chars().any(char::is_control)
}

/// Whether `s` can be an entry of a `search_path` the product sets: a schema name as
/// PostgreSQL spells it, not a `$user`-style placeholder (whose schema depends on the
/// role, which the product cannot know).
pub fn is_schema_name(s: &str) -> bool {
    is_name(s) && !s.starts_with('$')
}

/// Reads one part of a qualified name from the start of `s`: the name and the rest.
fn name_part(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if body[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return is_name(&name).then(|| (name, &body[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        is_ident(&s[..end]).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// One part of a qualified name as read: the name, and whether it was quoted.
type Part = (String, bool);

impl QualifiedTable {
    /// Parses and validates `schema.table` (see the type's documentation).
    pub fn parse(s: &str) -> Result<Self, BadName> {
        match Self::parse_prefix(s) {
            Ok((t, "")) => Ok(t),
            _ => Err(BadName::Pattern {
                what: "table name",
                value: s.to_string(),
                rule: TABLE_RULE,
            }),
        }
    }

    /// Reads a `schema.table` at the start of `s`; returns it and the rest of `s`.
    pub fn parse_prefix(s: &str) -> Result<(Self, &str), BadName> {
        let (schema, table, rest) = Self::parts(s)?;
        Ok((
            Self {
                schema: schema.0,
                table: table.0,
            },
            rest,
        ))
    }

    /// Reads a `schema.table` at the start of `s` as SQL reads a name: a plain part is
    /// folded to lower case, as PostgreSQL folds an unquoted name (`S1.T1` is `s1.t1`), a
    /// part in double quotes is taken exactly. Returns it, whether folding changed it,
    /// and the rest of `s`.
    pub fn parse_prefix_folded(s: &str) -> Result<(Self, bool, &str), BadName> {
        let (schema, table, rest) = Self::parts(s)?;
        let fold = |(name, quoted): (String, bool)| {
            if quoted {
                name
            } else {
                name.to_ascii_lowercase()
            }
        };
        let written = (schema.0.clone(), table.0.clone());
        let t = Self {
            schema: fold(schema),
            table: fold(table),
        };
        let folded =
            (t.schema.as_str(), t.table.as_str()) != (written.0.as_str(), written.1.as_str());
        Ok((t, folded, rest))
    }

    /// The two parts at the start of `s`, each with whether it was quoted, and the rest.
    fn parts(s: &str) -> Result<(Part, Part, &str), BadName> {
        let bad = || BadName::Pattern {
            what: "table name",
            value: s.to_string(),
            rule: TABLE_RULE,
        };
        let schema_quoted = s.starts_with('"');
        let (schema, rest) = name_part(s).ok_or_else(bad)?;
        let rest = rest.strip_prefix('.').ok_or_else(bad)?;
        let table_quoted = rest.starts_with('"');
        let (table, rest) = name_part(rest).ok_or_else(bad)?;
        if rest.starts_with(['.', '"']) || rest.starts_with(|c: char| c.is_alphanumeric()) {
            return Err(bad());
        }
        Ok(((schema, schema_quoted), (table, table_quoted), rest))
    }

    /// A table named as PostgreSQL spells it (from a catalog), if PostgreSQL could hold
    /// such names.
    pub fn new(schema: &str, table: &str) -> Result<Self, BadName> {
        if is_name(schema) && is_name(table) {
            Ok(Self {
                schema: schema.to_string(),
                table: table.to_string(),
            })
        } else {
            Err(BadName::Pattern {
                what: "table name",
                value: format!("{schema}.{table}"),
                rule: TABLE_RULE,
            })
        }
    }

    /// `"schema"."table"`, ready for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl fmt::Display for QualifiedTable {
    /// Plain parts as they are, others in double quotes: what [`QualifiedTable::parse`]
    /// reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |s: &str| {
            if is_ident(s) {
                s.to_string()
            } else {
                quote_ident(s)
            }
        };
        write!(f, "{}.{}", part(&self.schema), part(&self.table))
    }
}

/// Quotes an SQL identifier: `"` around it, inner `"` doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `'` around it, inner `'` doubled (standard strings).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_names_are_read_as_postgresql_reads_them() {
        let read = |s| {
            let (t, folded, rest) = QualifiedTable::parse_prefix_folded(s).unwrap();
            (t.schema, t.table, folded, rest)
        };
        assert_eq!(read("S1.T1 x"), ("s1".into(), "t1".into(), true, " x"));
        assert_eq!(read("s1.t1"), ("s1".into(), "t1".into(), false, ""));
        assert_eq!(read("\"S1\".T1"), ("S1".into(), "t1".into(), true, ""));
        assert_eq!(
            read("s1.\"Capital Idea\""),
            ("s1".into(), "Capital Idea".into(), false, "")
        );
        // The exact reading is unchanged.
        let (t, _) = QualifiedTable::parse_prefix("S1.T1").unwrap();
        assert_eq!((t.schema.as_str(), t.table.as_str()), ("S1", "T1"));
        assert!(QualifiedTable::parse_prefix_folded("s1").is_err());
        assert!(QualifiedTable::parse_prefix_folded("s1.t1.x").is_err());
    }

    #[test]
    fn cluster_names() {
        assert_eq!(ClusterName::new("lab").unwrap().schema(), "\"_lab\"");
        for bad in ["", "1x", "a-b", "a;drop", "a\"b", &"x".repeat(63)] {
            assert!(ClusterName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_names() {
        for good in ["nso", "site-1", "A_b", "9lives"] {
            assert!(NodeName::new(good).is_ok(), "{good:?}");
        }
        for bad in ["", "../x", "a/b", "-x", ".", "a b", "a;b", &"x".repeat(65)] {
            assert!(NodeName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tables() {
        let t = QualifiedTable::parse("s1.t_1").unwrap();
        assert_eq!(t.quoted(), "\"s1\".\"t_1\"");
        assert_eq!(t.to_string(), "s1.t_1");
        // Quoted parts, as Slony's own regression suites name tables.
        for (text, schema, table) in [
            (
                "\"Schema.name\".\"Capital Idea\"",
                "Schema.name",
                "Capital Idea",
            ),
            ("public.\"Jan's bad ideas\"", "public", "Jan's bad ideas"),
            ("\"s1\".t1", "s1", "t1"),
            ("a.\"b\"", "a", "b"),
            ("s.\"say \"\"hi\"\"\"", "s", "say \"hi\""),
        ] {
            let t = QualifiedTable::parse(text).unwrap();
            assert_eq!(
                (t.schema.as_str(), t.table.as_str()),
                (schema, table),
                "{text}"
            );
            // Written back so that it reads the same.
            assert_eq!(QualifiedTable::parse(&t.to_string()).unwrap(), t, "{text}");
        }
        assert_eq!(
            QualifiedTable::parse("public.\"Jan's bad ideas\"")
                .unwrap()
                .quoted(),
            "\"public\".\"Jan's bad ideas\""
        );
        for bad in [
            "t",
            "a.b.c",
            "a.",
            ".b",
            "a.b;drop",
            "a/b.c",
            "a. b",
            "a .b",
            "\"a.b",
            "a.\"\"",
            "a.\"b\"c",
            "a.\"b\".c",
            "a.\"x\ny\"",
            &format!("a.\"{}\"", "x".repeat(64)),
        ] {
            assert!(QualifiedTable::parse(bad).is_err(), "{bad:?}");
        }
        let (t, rest) = QualifiedTable::parse_prefix("\"A B\".c subscribe").unwrap();
        assert_eq!((t.schema.as_str(), rest), ("A B", " subscribe"));
        assert!(QualifiedTable::new("s", "Capital Idea").is_ok());
        assert!(QualifiedTable::new("s", "").is_err());
        assert!(is_schema_name("Odd \"One\""));
        for bad in ["", "$user", "a\nb", &"x".repeat(64)] {
            assert!(!is_schema_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
