//! Archive workloads written from the format: a deterministic stream of inserts, updates
//! and deletes with awkward values (quotes, tabs, newlines, backslashes, unicode, NULLs,
//! bytea), rendered as Slony-I 2.2 archives (COPY into sl_log_archive) or as pre-2.2
//! archives (INSERT/UPDATE/DELETE), plus the same changes applied directly to an
//! "expected" database through query parameters, an independent path to compare with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The user schema on both the replica and the expected database.
pub const SCHEMA_SQL: &str = "
CREATE SCHEMA s1;
CREATE TABLE s1.t1 (id bigint PRIMARY KEY, txt text, num numeric, ts timestamptz, b bytea, arr int[], j jsonb);
CREATE TABLE s1.t2 (k text PRIMARY KEY, v int);
CREATE SEQUENCE s1.seq1;
";

/// Archive body style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slony-I 2.2: rows COPYed into sl_log_archive.
    Copy22,
    /// Before 2.2: plain INSERT/UPDATE/DELETE statements.
    Statements,
}

/// One change to a row of s1.t1 or s1.t2.
#[derive(Debug, Clone)]
pub enum Change {
    /// Insert into s1.t1: id, txt, num, ts, b (hex), arr, j.
    InsertT1(T1Row),
    /// Update s1.t1 set txt where id.
    UpdateTxt { id: i64, txt: Option<String> },
    /// Delete from s1.t1 where id.
    DeleteT1 { id: i64 },
    /// Insert into s1.t2.
    InsertT2 { k: String, v: Option<i32> },
    /// Set sequence s1.seq1.
    SetSeq(i64),
}

/// A row of s1.t1, as text values (what Slony logs).
#[derive(Debug, Clone)]
pub struct T1Row {
    pub id: i64,
    pub txt: Option<String>,
    pub num: Option<String>,
    pub ts: Option<String>,
    pub b: Option<String>,
    pub arr: Option<String>,
    pub j: Option<String>,
}

const NASTY: &[&str] = &[
    "plain",
    "it's \"quoted\"",
    "tab\there",
    "new\nline",
    "cr\r\nlf",
    "back\\slash \\\\ double",
    "unicode é ☃ 𝄞",
    "NULL",
    "",
    "{braces},commas",
    "\\.",
    "semi; colon -- not a comment /* nor this */ $$ dollar $$",
];

/// A small deterministic generator (no external crates needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The changes of `archives` archives: some empty, most with a few changes.
pub fn generate(archives: u64, seed: u64) -> Vec<Vec<Change>> {
    let mut rng = Lcg(seed);
    let mut live: Vec<i64> = Vec::new();
    let mut next_id = 1i64;
    let mut out = Vec::new();
    for n in 1..=archives {
        let mut changes = Vec::new();
        let count = if n % 5 == 0 { 0 } else { 1 + rng.below(4) };
        for _ in 0..count {
            match rng.below(10) {
                0..=4 => {
                    let id = next_id;
                    next_id += 1;
                    let pick =
                        |r: &mut Lcg| NASTY[r.below(NASTY.len() as u64) as usize].to_string();
                    let txt = if rng.below(7) == 0 {
                        None
                    } else {
                        Some(format!("{} #{id}", pick(&mut rng)))
                    };
                    let row = T1Row {
                        id,
                        txt,
                        num: if rng.below(5) == 0 {
                            None
                        } else {
                            Some(format!("{}.{:03}", rng.below(100000), rng.below(1000)))
                        },
                        ts: Some(format!(
                            "2026-0{}-1{} 0{}:1{}:2{}.5+00",
                            1 + rng.below(9),
                            rng.below(10),
                            rng.below(10),
                            rng.below(10),
                            rng.below(10)
                        )),
                        b: if rng.below(3) == 0 {
                            None
                        } else {
                            Some(format!("\\x00ff{:04x}5c", rng.below(65536)))
                        },
                        arr: Some(format!("{{{},NULL,{}}}", rng.below(100), rng.below(100))),
                        j: Some(format!(
                            "{{\"s\": \"it's \\\"json\\\" \\\\ {}\", \"n\": null}}",
                            rng.below(1000)
                        )),
                    };
                    live.push(id);
                    changes.push(Change::InsertT1(row));
                }
                5..=6 if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize];
                    let txt = if rng.below(6) == 0 {
                        None
                    } else {
                        Some(format!(
                            "upd {} {}",
                            NASTY[rng.below(NASTY.len() as u64) as usize],
                            n
                        ))
                    };
                    changes.push(Change::UpdateTxt { id, txt });
                }
                7 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let id = live.swap_remove(i);
                    changes.push(Change::DeleteT1 { id });
                }
                8 => changes.push(Change::InsertT2 {
                    k: format!(
                        "k{n}-{}\t{}",
                        rng.below(1000),
                        NASTY[rng.below(NASTY.len() as u64) as usize]
                    ),
                    v: if rng.below(4) == 0 {
                        None
                    } else {
                        Some(rng.below(1000) as i32)
                    },
                }),
                _ => changes.push(Change::SetSeq(n as i64 * 10)),
            }
        }
        out.push(changes);
    }
    out
}

/// Quotes one element of a text[] literal the way PostgreSQL prints arrays.
fn array_elem(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) => {
            let needs = s.is_empty()
                || s.eq_ignore_ascii_case("null")
                || s.chars()
                    .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
            if needs {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                s.to_string()
            }
        }
    }
}

/// COPY text-format escaping of one field.
fn copy_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A literal as Slony-I before 2.2 wrote it: quotes and backslashes doubled, read with
/// `standard_conforming_strings = off`.
fn lit(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
    }
}

fn t1_pairs(r: &T1Row) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("id", Some(r.id.to_string())),
        ("txt", r.txt.clone()),
        ("num", r.num.clone()),
        ("ts", r.ts.clone()),
        ("b", r.b.clone()),
        ("arr", r.arr.clone()),
        ("j", r.j.clone()),
    ]
}

/// One sl_log_archive row: table, table id, command type, updated columns, name/value pairs.
type LogRow = (&'static str, i32, char, i32, Vec<(String, Option<String>)>);

/// Renders archive `counter` of `cluster` holding `changes`.
pub fn render(cluster: &str, counter: u64, changes: &[Change], format: Format) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "------------------------------------------------------------------\n-- Slony-I log shipping archive\n-- Node 1, Event {}\n------------------------------------------------------------------\n",
        5000000000u64 + counter
    );
    if format == Format::Copy22 {
        s.push_str("set session_replication_role to replica;\n");
    }
    let _ = write!(
        s,
        "start transaction;\nselect \"_{cluster}\".archiveTracking_offline('{counter}', '2026-11-21 10:{:02}:{:02}.123456+00');\n-- end of log archiving header\n",
        (counter / 60) % 60,
        counter % 60
    );
    let mut seqs = Vec::new();
    match format {
        Format::Copy22 => {
            let _ = writeln!(s, "COPY \"_{cluster}\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;");
            for (i, c) in changes.iter().enumerate() {
                let (table, tid, kind, ncols, pairs): LogRow = match c {
                    Change::InsertT1(r) => (
                        "t1",
                        1,
                        'I',
                        0,
                        t1_pairs(r)
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    ),
                    Change::UpdateTxt { id, txt } => (
                        "t1",
                        1,
                        'U',
                        1,
                        vec![
                            ("txt".into(), txt.clone()),
                            ("id".into(), Some(id.to_string())),
                        ],
                    ),
                    Change::DeleteT1 { id } => {
                        ("t1", 1, 'D', 0, vec![("id".into(), Some(id.to_string()))])
                    }
                    Change::InsertT2 { k, v } => (
                        "t2",
                        2,
                        'I',
                        0,
                        vec![
                            ("k".into(), Some(k.clone())),
                            ("v".into(), v.map(|v| v.to_string())),
                        ],
                    ),
                    Change::SetSeq(v) => {
                        seqs.push(*v);
                        continue;
                    }
                };
                let args: Vec<String> = pairs
                    .iter()
                    .flat_map(|(k, v)| [array_elem(Some(k)), array_elem(v.as_deref())])
                    .collect();
                let array = format!("{{{}}}", args.join(","));
                let _ = writeln!(
                    s,
                    "1\t{}\t{tid}\t{}\ts1\t{table}\t{kind}\t{ncols}\t{}",
                    1000 + counter,
                    counter * 100 + i as u64,
                    copy_escape(&array)
                );
            }
            s.push_str("\\.\n");
            for v in seqs {
                let _ = write!(
                    s,
                    "select \"_{cluster}\".sequenceSetValue_offline('s1','seq1','{v}');\n\n"
                );
            }
        }
        Format::Statements => {
            for c in changes {
                match c {
                    Change::InsertT1(r) => {
                        let pairs = t1_pairs(r);
                        let cols: Vec<String> =
                            pairs.iter().map(|(k, _)| format!("\"{k}\"")).collect();
                        let vals: Vec<String> =
                            pairs.iter().map(|(_, v)| lit(v.as_deref())).collect();
                        let _ = writeln!(
                            s,
                            "insert into \"s1\".\"t1\" ({}) values ({});",
                            cols.join(","),
                            vals.join(",")
                        );
                    }
                    Change::UpdateTxt { id, txt } => {
                        let _ = writeln!(
                            s,
                            "update only \"s1\".\"t1\" set \"txt\"={} where \"id\"='{id}';",
                            lit(txt.as_deref())
                        );
                    }
                    Change::DeleteT1 { id } => {
                        let _ = writeln!(s, "delete from only \"s1\".\"t1\" where \"id\"='{id}';");
                    }
                    Change::InsertT2 { k, v } => {
                        let _ = writeln!(
                            s,
                            "insert into \"s1\".\"t2\" (\"k\",\"v\") values ({},{});",
                            lit(Some(k)),
                            lit(v.map(|v| v.to_string()).as_deref())
                        );
                    }
                    Change::SetSeq(v) => {
                        let _ = writeln!(s, "select pg_catalog.setval('s1.seq1', {v});");
                    }
                }
            }
        }
    }
    match format {
        Format::Copy22 => s.push_str("\n------------------------------------------------------------------\n-- End Of Archive Log\n------------------------------------------------------------------\ncommit;\n"),
        Format::Statements => s.push_str("-- EOL\ncommit;\n"),
    }
    let _ = writeln!(s, "vacuum analyze \"_{cluster}\".sl_archive_tracking;");
    s
}

/// The file name slon gives archive `counter` (node 2 writes them here).
pub fn archive_name(counter: u64) -> String {
    format!("slony1_log_2_{counter:020}.sql")
}

/// Writes archives `from..=to` into `dir` and returns their paths.
pub fn write_archives(
    dir: &Path,
    cluster: &str,
    stream: &[Vec<Change>],
    from: u64,
    to: u64,
    format: impl Fn(u64) -> Format,
) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (from..=to)
        .map(|c| {
            let p = dir.join(archive_name(c));
            std::fs::write(&p, render(cluster, c, &stream[(c - 1) as usize], format(c))).unwrap();
            p
        })
        .collect()
}

/// Applies `stream[..upto]` to the expected database through query parameters.
pub async fn apply_expected(client: &tokio_postgres::Client, stream: &[Vec<Change>], upto: u64) {
    for changes in &stream[..upto as usize] {
        for c in changes {
            match c {
                Change::InsertT1(r) => {
                    client
                        .execute(
                            "INSERT INTO s1.t1 VALUES ($1, $2, $3::text::numeric, $4::text::timestamptz, $5::text::bytea, $6::text::int[], $7::text::jsonb)",
                            &[&r.id, &r.txt, &r.num, &r.ts, &r.b, &r.arr, &r.j],
                        )
                        .await
                        .unwrap();
                }
                Change::UpdateTxt { id, txt } => {
                    client
                        .execute("UPDATE s1.t1 SET txt = $2 WHERE id = $1", &[id, txt])
                        .await
                        .unwrap();
                }
                Change::DeleteT1 { id } => {
                    client
                        .execute("DELETE FROM s1.t1 WHERE id = $1", &[id])
                        .await
                        .unwrap();
                }
                Change::InsertT2 { k, v } => {
                    client
                        .execute("INSERT INTO s1.t2 VALUES ($1, $2)", &[k, v])
                        .await
                        .unwrap();
                }
                Change::SetSeq(v) => {
                    client
                        .execute("SELECT setval('s1.seq1', $1)", &[v])
                        .await
                        .unwrap();
                }
            }
        }
    }
}

/// A fingerprint of the replicated tables and the sequence: row counts and ordered hashes.
pub async fn fingerprint(client: &tokio_postgres::Client) -> String {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM s1.t1)::text || ' ' || coalesce((SELECT md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM s1.t1 t), '-')
              || ' ' || (SELECT count(*) FROM s1.t2)::text || ' ' || coalesce((SELECT md5(string_agg(t::text, E'\\n' ORDER BY k)) FROM s1.t2 t), '-')
              || ' seq=' || (SELECT last_value FROM s1.seq1)::text",
            &[],
        )
        .await
        .unwrap();
    row.get(0)
}

// ---------------------------------------------------------------------------------------
// More tables, for the per-site cutting tests: `s2.t3` (bigserial id, so its sequence
// `s2.t3_id_seq` belongs to it by name) and `s2.t4`, with inserts, updates, deletes,
// truncates, sequence changes and an EXECUTE SCRIPT (`comment on table s2.t3`) now and
// then. They ride in the same archives as the changes of `generate`.

/// The extra tables, on the expected database (after [`SCHEMA_SQL`]).
pub const EXTRA_SCHEMA_SQL: &str = "
CREATE SCHEMA s2;
CREATE TABLE s2.t3 (id bigserial PRIMARY KEY, note text, n int);
CREATE TABLE s2.t4 (k int PRIMARY KEY, v text);
";

/// The DDL of one replicated object (`s1.t1`, `s1.t2`, `s1.seq1`, `s2.t3`, `s2.t4`), for a
/// replica that holds only some of them (schemas `s1` and `s2` must exist).
pub fn object_sql(name: &str) -> &'static str {
    match name {
        "s1.t1" => "CREATE TABLE s1.t1 (id bigint PRIMARY KEY, txt text, num numeric, ts timestamptz, b bytea, arr int[], j jsonb);",
        "s1.t2" => "CREATE TABLE s1.t2 (k text PRIMARY KEY, v int);",
        "s1.seq1" => "CREATE SEQUENCE s1.seq1;",
        "s2.t3" => "CREATE TABLE s2.t3 (id bigserial PRIMARY KEY, note text, n int);",
        "s2.t4" => "CREATE TABLE s2.t4 (k int PRIMARY KEY, v text);",
        other => panic!("no DDL for {other}"),
    }
}

/// One change to `s2.t3` or `s2.t4`.
#[derive(Debug, Clone)]
pub enum ExtraChange {
    /// Insert into s2.t3.
    InsertT3 {
        id: i64,
        note: Option<String>,
        n: Option<i32>,
    },
    /// Update s2.t3 set n where id.
    UpdateT3 { id: i64, n: Option<i32> },
    /// Delete from s2.t3 where id.
    DeleteT3 { id: i64 },
    /// Insert into s2.t4.
    InsertT4 { k: i32, v: Option<String> },
    /// Delete from s2.t4 where k.
    DeleteT4 { k: i32 },
    /// Truncate s2.t4.
    TruncateT4,
    /// Set sequence s2.t3_id_seq.
    SetT3Seq(i64),
    /// EXECUTE SCRIPT `comment on table s2.t3 is '<text>'`.
    CommentT3(String),
}

/// The extra changes of `archives` archives.
pub fn generate_extra(archives: u64, seed: u64) -> Vec<Vec<ExtraChange>> {
    let mut rng = Lcg(seed);
    let mut live3: Vec<i64> = Vec::new();
    let mut live4: Vec<i32> = Vec::new();
    let (mut next3, mut next4) = (1i64, 1i32);
    let mut out = Vec::new();
    for n in 1..=archives {
        let mut changes = Vec::new();
        if n.is_multiple_of(97) {
            changes.push(ExtraChange::TruncateT4);
            live4.clear();
        }
        if n % 50 == 25 {
            changes.push(ExtraChange::CommentT3(format!("rev {n}: it's; fine")));
        }
        let count = if n.is_multiple_of(7) { 0 } else { rng.below(4) };
        for _ in 0..count {
            match rng.below(10) {
                0..=3 => {
                    let id = next3;
                    next3 += 1;
                    live3.push(id);
                    changes.push(ExtraChange::InsertT3 {
                        id,
                        note: (rng.below(5) != 0).then(|| {
                            format!("{} #{id}", NASTY[rng.below(NASTY.len() as u64) as usize])
                        }),
                        n: (rng.below(4) != 0).then(|| rng.below(1000) as i32),
                    });
                }
                4 if !live3.is_empty() => {
                    let id = live3[rng.below(live3.len() as u64) as usize];
                    changes.push(ExtraChange::UpdateT3 {
                        id,
                        n: (rng.below(4) != 0).then(|| rng.below(1000) as i32),
                    });
                }
                5 if !live3.is_empty() => {
                    let id = live3.swap_remove(rng.below(live3.len() as u64) as usize);
                    changes.push(ExtraChange::DeleteT3 { id });
                }
                6 | 7 => {
                    let k = next4;
                    next4 += 1;
                    live4.push(k);
                    changes.push(ExtraChange::InsertT4 {
                        k,
                        v: (rng.below(6) != 0)
                            .then(|| NASTY[rng.below(NASTY.len() as u64) as usize].to_string()),
                    });
                }
                8 if !live4.is_empty() => {
                    let k = live4.swap_remove(rng.below(live4.len() as u64) as usize);
                    changes.push(ExtraChange::DeleteT4 { k });
                }
                _ => changes.push(ExtraChange::SetT3Seq(next3 + 1000)),
            }
        }
        out.push(changes);
    }
    out
}

/// Renders archive `counter` holding `changes` (tables of [`generate`]) and `extra`.
pub fn render_multi(
    cluster: &str,
    counter: u64,
    changes: &[Change],
    extra: &[ExtraChange],
    format: Format,
) -> String {
    let mut s = render(cluster, counter, changes, format);
    let mut body = String::new();
    let mut after = String::new();
    let row = |body: &mut String,
               i: usize,
               txid: u64,
               tid: &str,
               nsp: &str,
               rel: &str,
               kind: char,
               ncols: &str,
               args: &[Option<String>]| {
        let elems: Vec<String> = args.iter().map(|a| array_elem(a.as_deref())).collect();
        let _ = writeln!(
            body,
            "1\t{txid}\t{tid}\t{}\t{nsp}\t{rel}\t{kind}\t{ncols}\t{}",
            counter * 100 + 50 + i as u64,
            copy_escape(&format!("{{{}}}", elems.join(",")))
        );
    };
    let some = |v: &dyn ToString| Some(v.to_string());
    for (i, c) in extra.iter().enumerate() {
        let txid = 5000 + counter;
        match format {
            Format::Copy22 => match c {
                ExtraChange::InsertT3 { id, note, n } => row(
                    &mut body,
                    i,
                    txid,
                    "3",
                    "s2",
                    "t3",
                    'I',
                    "0",
                    &[
                        some(&"id"),
                        some(id),
                        some(&"note"),
                        note.clone(),
                        some(&"n"),
                        n.map(|n| n.to_string()),
                    ],
                ),
                ExtraChange::UpdateT3 { id, n } => row(
                    &mut body,
                    i,
                    txid,
                    "3",
                    "s2",
                    "t3",
                    'U',
                    "1",
                    &[some(&"n"), n.map(|n| n.to_string()), some(&"id"), some(id)],
                ),
                ExtraChange::DeleteT3 { id } => row(
                    &mut body,
                    i,
                    txid,
                    "3",
                    "s2",
                    "t3",
                    'D',
                    "0",
                    &[some(&"id"), some(id)],
                ),
                ExtraChange::InsertT4 { k, v } => row(
                    &mut body,
                    i,
                    txid,
                    "4",
                    "s2",
                    "t4",
                    'I',
                    "0",
                    &[some(&"k"), some(k), some(&"v"), v.clone()],
                ),
                ExtraChange::DeleteT4 { k } => row(
                    &mut body,
                    i,
                    txid,
                    "4",
                    "s2",
                    "t4",
                    'D',
                    "0",
                    &[some(&"k"), some(k)],
                ),
                ExtraChange::TruncateT4 => row(&mut body, i, txid, "4", "s2", "t4", 'T', "0", &[]),
                ExtraChange::SetT3Seq(v) => {
                    let _ = write!(
                        after,
                        "select \"_{cluster}\".sequenceSetValue_offline('s2','t3_id_seq','{v}');\n\n"
                    );
                }
                ExtraChange::CommentT3(text) => {
                    let stmt = format!("comment on table s2.t3 is {};", lit(Some(text)));
                    let script = 9000 + counter;
                    for (j, (kind, args)) in [
                        (
                            'S',
                            vec![Some(stmt), Some(String::new()), Some(String::new())],
                        ),
                        (
                            'S',
                            vec![Some("\n".into()), Some(String::new()), Some(String::new())],
                        ),
                        ('s', vec![]),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        row(
                            &mut body,
                            i * 10 + j,
                            script,
                            "\\N",
                            "\\N",
                            "\\N",
                            kind,
                            "\\N",
                            &args,
                        );
                    }
                }
            },
            Format::Statements => {
                let stmt = match c {
                    ExtraChange::InsertT3 { id, note, n } => format!(
                        "insert into \"s2\".\"t3\" (\"id\",\"note\",\"n\") values ('{id}',{},{});",
                        lit(note.as_deref()),
                        lit(n.map(|n| n.to_string()).as_deref())
                    ),
                    ExtraChange::UpdateT3 { id, n } => format!(
                        "update only \"s2\".\"t3\" set \"n\"={} where \"id\"='{id}';",
                        lit(n.map(|n| n.to_string()).as_deref())
                    ),
                    ExtraChange::DeleteT3 { id } => {
                        format!("delete from only \"s2\".\"t3\" where \"id\"='{id}';")
                    }
                    ExtraChange::InsertT4 { k, v } => format!(
                        "insert into \"s2\".\"t4\" (\"k\",\"v\") values ('{k}',{});",
                        lit(v.as_deref())
                    ),
                    ExtraChange::DeleteT4 { k } => {
                        format!("delete from only \"s2\".\"t4\" where \"k\"='{k}';")
                    }
                    ExtraChange::TruncateT4 => "truncate only \"s2\".\"t4\";".into(),
                    ExtraChange::SetT3Seq(v) => {
                        format!("select pg_catalog.setval('s2.t3_id_seq', {v});")
                    }
                    ExtraChange::CommentT3(text) => {
                        format!("comment on table s2.t3 is {};", lit(Some(text)))
                    }
                };
                body.push_str(&stmt);
                body.push('\n');
            }
        }
    }
    match format {
        Format::Copy22 => {
            let end = s.find("\n\\.\n").expect("the COPY terminator") + 1;
            s.insert_str(end + 3, &after);
            s.insert_str(end, &body);
        }
        Format::Statements => {
            let end = s.rfind("-- EOL\n").expect("the end marker");
            s.insert_str(end, &body);
        }
    }
    s
}

/// Writes archive `counter` into `dir` the way slon does: a `.tmp` file, then a rename.
pub fn write_multi_archive(
    dir: &Path,
    cluster: &str,
    stream: &[Vec<Change>],
    extra: &[Vec<ExtraChange>],
    counter: u64,
    format: Format,
) -> PathBuf {
    let i = (counter - 1) as usize;
    let p = dir.join(archive_name(counter));
    let tmp = dir.join(format!("{}.tmp", archive_name(counter)));
    std::fs::write(
        &tmp,
        render_multi(cluster, counter, &stream[i], &extra[i], format),
    )
    .unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

/// Applies `extra[..upto]` to the expected database through query parameters.
pub async fn apply_extra(client: &tokio_postgres::Client, extra: &[Vec<ExtraChange>], upto: u64) {
    for changes in &extra[..upto as usize] {
        for c in changes {
            let r = match c {
                ExtraChange::InsertT3 { id, note, n } => {
                    client
                        .execute("INSERT INTO s2.t3 VALUES ($1, $2, $3)", &[id, note, n])
                        .await
                }
                ExtraChange::UpdateT3 { id, n } => {
                    client
                        .execute("UPDATE s2.t3 SET n = $2 WHERE id = $1", &[id, n])
                        .await
                }
                ExtraChange::DeleteT3 { id } => {
                    client
                        .execute("DELETE FROM s2.t3 WHERE id = $1", &[id])
                        .await
                }
                ExtraChange::InsertT4 { k, v } => {
                    client
                        .execute("INSERT INTO s2.t4 VALUES ($1, $2)", &[k, v])
                        .await
                }
                ExtraChange::DeleteT4 { k } => {
                    client.execute("DELETE FROM s2.t4 WHERE k = $1", &[k]).await
                }
                ExtraChange::TruncateT4 => client.execute("TRUNCATE s2.t4", &[]).await,
                ExtraChange::SetT3Seq(v) => {
                    client
                        .execute("SELECT setval('s2.t3_id_seq', $1)", &[v])
                        .await
                }
                ExtraChange::CommentT3(text) => client
                    .batch_execute(&format!("COMMENT ON TABLE s2.t3 IS {}", lit(Some(text))))
                    .await
                    .map(|()| 0),
            };
            r.unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }
}

/// A fingerprint of one replicated object: row count and ordered hash of a table (plus
/// its comment), or the state of a sequence.
pub async fn object_fingerprint(client: &tokio_postgres::Client, name: &str) -> String {
    let sql = if name.ends_with("seq1") || name.ends_with("_seq") {
        format!("SELECT last_value::text || ' ' || is_called::text FROM {name}")
    } else {
        format!(
            "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-') \
             || ' ' || coalesce(obj_description('{name}'::regclass, 'pg_class'), '-') FROM {name} t"
        )
    };
    client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .get(0)
}
