//! What each statement of an archive's SQL text is, for the cut: the envelope, the
//! tracking call, a statement on tables, a sequence call, a COPY.

use super::ddl_target::{
    parse_name_text, qualified_name, target_of, Found, Name, Target, UNQUALIFIED,
};
use super::log_rows::{log_columns, LogColumns};
use crate::archive::lex::{Tok, Tokens};
use crate::archive::parse::is_copy_from_stdin;

/// What a statement of the archive's SQL text is.
#[derive(Debug)]
pub(super) enum Class {
    /// Envelope or session statement: every site.
    All,
    /// The tracking call, with its counter text.
    Tracking(String),
    /// `commit;`
    Commit,
    /// A statement on these tables.
    Tables(Target),
    /// Goes with the previous table statement (`finishTableAfterCopy`).
    FollowTable,
    /// Sets sequence (schema, name).
    Sequence(String, String),
    /// `COPY <cluster>.sl_log_archive ... FROM STDIN`.
    CopyLog(LogColumns),
    /// `COPY <table> ... FROM STDIN` (an initial copy).
    CopyTable(Target),
}

/// Classifies one statement of an archive's SQL text. `in_body`: the tracking call was
/// seen (before it, only the header is expected).
pub(super) fn classify(text: &str, in_body: bool) -> Result<Class, String> {
    let mut toks = Tokens::new(text);
    let Some(first) = toks.next() else {
        // An empty statement (a lone `;`).
        return Ok(Class::All);
    };
    let Tok::Word(first) = first else {
        return Err("it does not start with a keyword".into());
    };
    match first.as_str() {
        "set" | "reset" | "start" | "begin" | "vacuum" | "savepoint" | "release" => Ok(Class::All),
        "commit" | "end" => Ok(Class::Commit),
        "select" => classify_call(&mut toks),
        "copy" => {
            let name = qualified_name(&mut toks).map_err(|e| format!("COPY target: {e}"))?;
            // Only `COPY ... FROM STDIN` carries data in the file.
            let rest = toks.rest();
            if !is_copy_from_stdin(&format!("copy x {rest}")) {
                return Err("a COPY that is not FROM STDIN".into());
            }
            match name {
                Name::Two(s, t) if t == "sl_log_archive" && s.starts_with('_') => {
                    Ok(Class::CopyLog(log_columns(rest)?))
                }
                Name::Two(s, t) => Ok(Class::CopyTable(Target::one((s, t)))),
                Name::One(_) => Err(format!("COPY target: {UNQUALIFIED}")),
                Name::Other(why) => Err(format!("COPY target: {why}")),
            }
        }
        _ if !in_body => Err("a statement before the archive's tracking call".into()),
        _ => {
            let target = target_of(&first, &mut toks)?;
            match target {
                Found::Tables(t) => Ok(Class::Tables(t)),
                Found::Sequence(s, n) => Ok(Class::Sequence(s, n)),
                Found::All => Ok(Class::All),
            }
        }
    }
}

/// `select [schema.]function(args)`: the Slony calls and `setval`.
fn classify_call(toks: &mut Tokens<'_>) -> Result<Class, String> {
    let a = toks.next();
    let b = toks.next();
    let (schema, func, open) = match (a, b) {
        (Some(Tok::Word(s) | Tok::Quoted(s)), Some(Tok::Punct('.'))) => {
            let f = match toks.next() {
                Some(Tok::Word(f)) => f,
                Some(Tok::Quoted(f)) => f.to_ascii_lowercase(),
                _ => return Err("a select that is not a function call".into()),
            };
            (Some(s), f, toks.next())
        }
        (Some(Tok::Word(f)), open) => (None, f, open),
        _ => return Err("a select that is not a function call".into()),
    };
    if open != Some(Tok::Punct('(')) {
        return Err("a select that is not a function call".into());
    }
    let mut args = Vec::new();
    loop {
        match toks.next() {
            Some(Tok::Str(s) | Tok::Num(s)) => args.push(s),
            Some(Tok::Punct('-')) => match toks.next() {
                Some(Tok::Num(n)) => args.push(format!("-{n}")),
                _ => return Err("a function call with an expression argument".into()),
            },
            Some(Tok::Word(w)) if w == "true" || w == "false" => args.push(w),
            Some(Tok::Punct(')')) if args.is_empty() => break,
            _ => return Err("a function call with an expression argument".into()),
        }
        match toks.next() {
            Some(Tok::Punct(',')) => {}
            Some(Tok::Punct(')')) => break,
            _ => return Err("a function call with an expression argument".into()),
        }
    }
    if !matches!(toks.next(), None | Some(Tok::Punct(';'))) || toks.next().is_some() {
        return Err("more than a single function call".into());
    }
    let slony = schema.as_deref().is_some_and(|s| s.starts_with('_'));
    match (slony, func.as_str()) {
        (true, "archivetracking_offline") => match args.first() {
            Some(c) => Ok(Class::Tracking(c.clone())),
            None => Err("archiveTracking_offline without a counter".into()),
        },
        (true, "sequencesetvalue_offline") => match args.as_slice() {
            [nsp, seq, _value] => Ok(Class::Sequence(nsp.clone(), seq.clone())),
            [_id, _value] => Err(
                "the pre-2.2 form sequenceSetValue_offline(<id>, <value>) names no sequence".into(),
            ),
            _ => Err("sequenceSetValue_offline with unexpected arguments".into()),
        },
        (true, "finishtableaftercopy") => Ok(Class::FollowTable),
        (false, "setval") if schema.is_none() || schema.as_deref() == Some("pg_catalog") => {
            let name = args.first().ok_or("setval without a sequence")?;
            match parse_name_text(name)? {
                Name::Two(s, n) => Ok(Class::Sequence(s, n)),
                Name::One(_) => Err(format!("setval of {name:?}: {UNQUALIFIED}")),
                Name::Other(why) => Err(format!("setval of {name:?}: {why}")),
            }
        }
        _ => Err(format!(
            "a call of {func}(), which is not a known Slony call"
        )),
    }
}
