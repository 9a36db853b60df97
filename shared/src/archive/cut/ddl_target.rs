//! What a DDL or DML statement targets, read from the head of its text: the tables (or
//! the sequence) it names, and which schema an unqualified table name meant on the
//! log-shipping node ([`resolve`], by [`super::CutOptions::ddl_search_path`]).

use super::SiteFilter;
use crate::archive::lex::{has_sql, Scanner, Tok, Tokens};
use crate::archive::statement::Strings;

/// The tables a statement touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// (schema, table), as PostgreSQL spells them.
    pub(super) tables: Vec<(String, String)>,
    /// Set when the statement renames the table or moves it to another schema.
    pub(super) identity_change: Option<&'static str>,
}

impl Target {
    /// A statement on the one table `t`, which keeps its name.
    pub(super) fn one(t: (String, String)) -> Self {
        Target {
            tables: vec![t],
            identity_change: None,
        }
    }
}

/// Whether `t` is the (lower-cased) word `w`.
fn word(t: &Option<Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x == w)
}

/// A possibly qualified name.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Name {
    /// `schema.name`.
    Two(String, String),
    /// `name` alone: its schema is the first of the search path that holds it.
    One(String),
    /// Anything else, and why it cannot be used.
    Other(&'static str),
}

/// Why an unqualified name is not taken where its schema must be known.
pub(super) const UNQUALIFIED: &str =
    "the name is not schema-qualified (its schema depends on search_path)";

/// Reads `ident(.ident)*` from the tokens.
pub(super) fn qualified_name(toks: &mut Tokens<'_>) -> Result<Name, String> {
    let mut parts = Vec::new();
    loop {
        match toks.next() {
            Some(Tok::Word(w)) => parts.push(w),
            Some(Tok::Quoted(q)) => parts.push(q),
            _ => return Err("expected a table name".into()),
        }
        let save = toks.save();
        match toks.next() {
            Some(Tok::Punct('.')) => continue,
            _ => {
                toks.restore(save);
                break;
            }
        }
    }
    Ok(match parts.len() {
        1 => Name::One(parts.pop().unwrap_or_default()),
        2 => {
            let t = parts.pop().unwrap_or_default();
            Name::Two(parts.pop().unwrap_or_default(), t)
        }
        _ => Name::Other("a name with more than two parts"),
    })
}

/// Parses a name written as text (`'"s1"."seq1"'`, `'s1.seq1'`).
pub(super) fn parse_name_text(s: &str) -> Result<Name, String> {
    let mut t = Tokens::new(s);
    let name = qualified_name(&mut t)?;
    if t.next().is_some() {
        return Err(format!("{s:?} is not a plain name"));
    }
    Ok(name)
}

/// What [`target_of`] found.
pub(super) enum Found {
    /// A statement on these tables.
    Tables(Target),
    /// A statement on the sequence (schema, name).
    Sequence(String, String),
    /// Nothing table-specific (`analyze` alone).
    All,
}

/// A name that must be schema-qualified (a sequence's): `(schema, name)`.
fn two(name: Name) -> Result<(String, String), String> {
    match name {
        Name::Two(s, t) => Ok((s, t)),
        Name::One(_) => Err(UNQUALIFIED.to_string()),
        Name::Other(why) => Err(why.to_string()),
    }
}

/// A table named by a statement: `(schema, table)`, the schema empty when the statement
/// does not name one (resolved against the DDL search path, see [`resolve`]).
fn table(name: Name) -> Result<(String, String), String> {
    match name {
        Name::Two(s, t) => Ok((s, t)),
        Name::One(t) => Ok((String::new(), t)),
        Name::Other(why) => Err(why.to_string()),
    }
}

/// The one table whose name comes next.
fn one_table(toks: &mut Tokens<'_>) -> Result<Found, String> {
    Ok(Found::Tables(Target::one(table(qualified_name(toks)?)?)))
}

/// The sequence whose name comes next, which must be schema-qualified.
fn sequence(toks: &mut Tokens<'_>) -> Result<(String, String), String> {
    two(qualified_name(toks)?)
}

/// The target of a DDL or DML statement (`first` is its lower-cased first word).
pub(super) fn target_of(first: &str, toks: &mut Tokens<'_>) -> Result<Found, String> {
    match first {
        "insert" | "update" | "delete" => row_change_target(first, toks),
        "truncate" => {
            skip_word(toks, "table");
            name_list(toks).map(Found::Tables)
        }
        "analyze" | "analyse" => analyze_target(toks),
        "alter" => alter_target(toks),
        "comment" => comment_target(toks),
        "drop" => drop_target(toks),
        "create" => create_target(toks),
        "with" => Err("a statement with a WITH clause".into()),
        _ => Err(format!(
            "`{first}` statements are not among those whose table can be read (alter table, create index ... on, comment on table, drop table, create table, insert, update, delete, truncate)"
        )),
    }
}

/// `insert into`, `update [only]`, `delete from [only]`: the table whose rows change.
fn row_change_target(first: &str, toks: &mut Tokens<'_>) -> Result<Found, String> {
    match first {
        "insert" => {
            let t = toks.next();
            if !word(&t, "into") {
                return Err("an insert without `into`".into());
            }
        }
        "delete" => {
            let t = toks.next();
            if !word(&t, "from") {
                return Err("a delete without `from`".into());
            }
            skip_word(toks, "only");
        }
        _ => {
            skip_word(toks, "only");
        }
    }
    one_table(toks)
}

/// `analyze [verbose] [tables]`: the tables, or the whole database.
fn analyze_target(toks: &mut Tokens<'_>) -> Result<Found, String> {
    skip_word(toks, "verbose");
    let save = toks.save();
    match toks.next() {
        None | Some(Tok::Punct(';')) => Ok(Found::All),
        _ => {
            toks.restore(save);
            name_list(toks).map(Found::Tables)
        }
    }
}

/// `alter table ...` or `alter sequence ...`.
fn alter_target(toks: &mut Tokens<'_>) -> Result<Found, String> {
    let what = toks.next();
    if word(&what, "table") {
        alter_table_target(toks)
    } else if word(&what, "sequence") {
        skip_words(toks, &["if", "exists"]);
        let (s, n) = sequence(toks)?;
        Ok(Found::Sequence(s, n))
    } else {
        Err("an ALTER of something other than a table or sequence".into())
    }
}

/// `alter table [if exists] [only] <table> [*] ...`, and whether it changes the table's
/// name or schema.
fn alter_table_target(toks: &mut Tokens<'_>) -> Result<Found, String> {
    skip_words(toks, &["if", "exists"]);
    skip_word(toks, "only");
    let save = toks.save();
    if let Some(Tok::Word(w)) = toks.next() {
        if w == "all" {
            return Err("ALTER TABLE ALL IN TABLESPACE touches many tables".into());
        }
    }
    toks.restore(save);
    let t = table(qualified_name(toks)?)?;
    let save = toks.save();
    if toks.next() != Some(Tok::Punct('*')) {
        toks.restore(save);
    }
    let a = toks.next();
    let b = toks.next();
    let identity_change = if word(&a, "rename") && word(&b, "to") {
        Some("a rename")
    } else if word(&a, "set") && word(&b, "schema") {
        Some("a move to another schema")
    } else {
        None
    };
    Ok(Found::Tables(Target {
        tables: vec![t],
        identity_change,
    }))
}

/// `comment on table <table>` or `comment on column <schema>.<table>.<column>`.
fn comment_target(toks: &mut Tokens<'_>) -> Result<Found, String> {
    if !word(&toks.next(), "on") {
        return Err("a COMMENT without ON".into());
    }
    let what = toks.next();
    if word(&what, "table") {
        return one_table(toks);
    }
    if !word(&what, "column") {
        return Err("a COMMENT on something other than a table or column".into());
    }
    let mut parts = Vec::new();
    loop {
        match toks.next() {
            Some(Tok::Word(w) | Tok::Quoted(w)) => parts.push(w),
            _ => return Err("expected a column name".into()),
        }
        if toks.next() != Some(Tok::Punct('.')) {
            break;
        }
    }
    match parts.as_slice() {
        [s, t, _c] => Ok(Found::Tables(Target::one((s.clone(), t.clone())))),
        _ => Err("the column is not written schema.table.column".into()),
    }
}

/// `drop table [if exists] <tables>` or `drop sequence [if exists] <one sequence>`.
fn drop_target(toks: &mut Tokens<'_>) -> Result<Found, String> {
    let what = toks.next();
    if word(&what, "table") {
        skip_words(toks, &["if", "exists"]);
        name_list(toks).map(Found::Tables)
    } else if word(&what, "sequence") {
        skip_words(toks, &["if", "exists"]);
        let (s, n) = sequence(toks)?;
        if toks.next() == Some(Tok::Punct(',')) {
            return Err("a DROP of several sequences".into());
        }
        Ok(Found::Sequence(s, n))
    } else {
        Err("a DROP of something other than a table or sequence".into())
    }
}

/// `create [or replace] [unique] [constraint] [unlogged] table|sequence|index|trigger`.
fn create_target(toks: &mut Tokens<'_>) -> Result<Found, String> {
    let mut w = toks.next();
    if word(&w, "or") {
        if !word(&toks.next(), "replace") {
            return Err("CREATE OR without REPLACE".into());
        }
        w = toks.next();
    }
    for modifier in ["unique", "constraint", "unlogged"] {
        if word(&w, modifier) {
            w = toks.next();
        }
    }
    if word(&w, "temp") || word(&w, "temporary") || word(&w, "global") || word(&w, "local") {
        return Err("a temporary table".into());
    }
    if word(&w, "table") {
        skip_words(toks, &["if", "not", "exists"]);
        one_table(toks)
    } else if word(&w, "sequence") {
        skip_words(toks, &["if", "not", "exists"]);
        let (s, n) = sequence(toks)?;
        Ok(Found::Sequence(s, n))
    } else if word(&w, "index") || word(&w, "trigger") {
        on_table(toks)
    } else {
        Err("a CREATE of something other than a table, index, trigger or sequence".into())
    }
}

/// The table of a `create index|trigger`: it follows the first top-level ON (an index
/// or trigger name, options and events come before it).
fn on_table(toks: &mut Tokens<'_>) -> Result<Found, String> {
    let mut depth = 0i32;
    loop {
        match toks.next() {
            None => return Err("no ON <table> found".into()),
            Some(Tok::Punct('(')) => depth += 1,
            Some(Tok::Punct(')')) => depth -= 1,
            Some(Tok::Word(x)) if x == "on" && depth == 0 => break,
            _ => {}
        }
    }
    skip_word(toks, "only");
    one_table(toks)
}

/// Consumes the word `w` if it comes next; says whether it did.
fn skip_word(toks: &mut Tokens<'_>, w: &str) -> bool {
    let save = toks.save();
    if word(&toks.next(), w) {
        true
    } else {
        toks.restore(save);
        false
    }
}

/// Consumes `words` if they all come next, in order; otherwise none of them.
fn skip_words(toks: &mut Tokens<'_>, words: &[&str]) {
    let save = toks.save();
    for w in words {
        if !word(&toks.next(), w) {
            toks.restore(save);
            return;
        }
    }
}

/// `[only] name [*] [, [only] name [*]]*` (truncate, drop table, analyze).
fn name_list(toks: &mut Tokens<'_>) -> Result<Target, String> {
    let mut tables = Vec::new();
    loop {
        skip_word(toks, "only");
        tables.push(table(qualified_name(toks)?)?);
        let save = toks.save();
        let mut t = toks.next();
        if t == Some(Tok::Punct('*')) {
            t = toks.next();
        }
        if t != Some(Tok::Punct(',')) {
            toks.restore(save);
            if toks.next() != Some(Tok::Punct('*')) {
                toks.restore(save);
            }
            break;
        }
    }
    Ok(Target {
        tables,
        identity_change: None,
    })
}

/// The target of a statement carried in a DDL (`S`) row; it must be exactly one
/// statement.
pub(super) fn ddl_target(statement: &str) -> Result<Found, String> {
    let mut scanner = Scanner::new(Strings::Standard);
    let bytes = statement.as_bytes();
    // Scan line by line (a line comment ends at its newline).
    let mut offset = 0;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if let Some(semi) = scanner.scan(&bytes[..offset], line, 0) {
            if has_sql(&bytes[offset + semi + 1..]) {
                return Err("the row holds more than one statement".into());
            }
            break;
        }
        offset += line.len();
    }
    let mut toks = Tokens::new(statement);
    let first = match toks.next() {
        Some(Tok::Word(w)) => w,
        _ => return Err("it does not start with a keyword".into()),
    };
    match target_of(&first, &mut toks)? {
        Found::All => Err("an ANALYZE of the whole database inside a script".into()),
        found => Ok(found),
    }
}

/// The table an unqualified name `t` meant when Slony applied the script, as far as
/// the sites are concerned: `None` when no site holds a table of that name in a schema
/// of the DDL search path `path` (the statement is then no site's). `Err` says why it
/// cannot be decided.
///
/// A site's table exists on the log-shipping node, so when a site holds `t` in the
/// first schema of the path, that is the table PostgreSQL took. When sites hold it
/// only in a later schema, an earlier schema may still hold a table of that name
/// that no site subscribes to: that is truly ambiguous, and the cut stops.
pub(super) fn resolve(
    t: &str,
    sites: &[&SiteFilter],
    path: &[String],
) -> Result<Option<(String, String)>, String> {
    let held = |schema: &str| sites.iter().any(|site| site.has_table(schema, t));
    let Some(first) = path.iter().position(|s| held(s)) else {
        return Ok(None);
    };
    if first == 0 {
        return Ok(Some((path[0].clone(), t.to_string())));
    }
    let earlier = path[..first].join(", ");
    Err(format!(
        "the unqualified name {t:?} is {}.{t} of a site's list, unless a schema searched before it ({earlier}) holds a table {t:?} that no site subscribes to: qualify the name in the script, or set ddl_search_path to the search_path the script ran with",
        path[first]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_kinds_are_read() {
        let t = |s: &str| match ddl_target(s) {
            Ok(Found::Tables(t)) => Ok(t.tables),
            Ok(_) => Err("not tables".to_string()),
            Err(e) => Err(e),
        };
        let st = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            t("ALTER TABLE IF EXISTS ONLY \"S1\".\"MixedCase\" * ADD x int"),
            Ok(vec![st("S1", "MixedCase")])
        );
        assert_eq!(t("alter table S1.T1 add x int"), Ok(vec![st("s1", "t1")]));
        assert_eq!(t("create index on s1.t1 (a)"), Ok(vec![st("s1", "t1")]));
        assert_eq!(
            t("create index i on s1.t1 using gin ((j->'on'))"),
            Ok(vec![st("s1", "t1")])
        );
        assert_eq!(
            t("create trigger tr before insert or update on s1.t4 for each row execute function s1.f()"),
            Ok(vec![st("s1", "t4")])
        );
        assert_eq!(
            t("comment on column s1.t2.v is 'x'"),
            Ok(vec![st("s1", "t2")])
        );
        assert_eq!(
            t("drop table if exists s1.a, s1.b cascade"),
            Ok(vec![st("s1", "a"), st("s1", "b")])
        );
        assert_eq!(
            t("create unlogged table if not exists s1.n (id int)"),
            Ok(vec![st("s1", "n")])
        );
        assert_eq!(
            t("truncate table only s1.a *, s1.b restart identity"),
            Ok(vec![st("s1", "a"), st("s1", "b")])
        );
        assert_eq!(
            t("insert into s1.t1 select * from s1.t2"),
            Ok(vec![st("s1", "t1")])
        );
        assert!(t("comment on column t2.v is 'x'").is_err());
        assert!(t("create temp table s1.x (a int)").is_err());
        assert!(t("with x as (select 1) insert into s1.t1 select * from x").is_err());
        assert!(t("alter table all in tablespace a set tablespace b").is_err());
        assert!(
            matches!(ddl_target("create sequence s1.q"), Ok(Found::Sequence(s, q)) if s == "s1" && q == "q")
        );
    }
}
