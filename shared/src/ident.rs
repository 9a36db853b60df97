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

/// A replicated table (a "series"), `schema.table`, both parts plain identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedTable {
    /// The schema (namespace).
    pub schema: String,
    /// The table name.
    pub table: String,
}

impl QualifiedTable {
    /// Parses and validates `schema.table`.
    pub fn parse(s: &str) -> Result<Self, BadName> {
        let bad = || {
            BadName::Pattern {
            what: "table name",
            value: s.to_string(),
            rule: "write schema.table, each part 1 to 63 letters, digits or '_' (not starting with a digit)",
        }
        };
        let (schema, table) = s.split_once('.').ok_or_else(bad)?;
        if is_ident(schema) && is_ident(table) {
            Ok(Self {
                schema: schema.to_string(),
                table: table.to_string(),
            })
        } else {
            Err(bad())
        }
    }

    /// `"schema"."table"`, ready for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl fmt::Display for QualifiedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
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
        for bad in ["t", "a.b.c", "a.", ".b", "a.b;drop", "a.\"b\"", "a/b.c"] {
            assert!(QualifiedTable::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
