//! Tests of the cut: whole archives, synthetic and as Slony-I 2.2.11 wrote them.

use super::*;
use crate::archive::envelope::read_whole;
use crate::archive::statement::Allowances;
use crate::ident::ClusterName;
use crate::ident::QualifiedTable;

const HEAD: &str = "------------------------------------------------------------------\n\
-- Slony-I log shipping archive\n\
-- Node 1, Event 5000000060\n\
------------------------------------------------------------------\n\
set session_replication_role to replica;\n\
start transaction;\n\
select \"_lab\".archiveTracking_offline('35', '2026-11-21 22:06:43.093233+00');\n\
-- end of log archiving header\n\
------------------------------------------------------------------\n\
-- start of Slony-I data\n\
------------------------------------------------------------------\n";

const COPY: &str = "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n";

const TAIL: &str = "\n------------------------------------------------------------------\n\
-- End Of Archive Log\n\
------------------------------------------------------------------\n\
commit;\n\
vacuum analyze \"_lab\".sl_archive_tracking;\n";

fn archive(rows: &[&str], seqs: &[&str]) -> String {
    let mut s = String::from(HEAD);
    s.push_str(COPY);
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.push_str("\\.\n");
    for q in seqs {
        s.push_str(q);
        s.push_str("\n\n");
    }
    s.push_str(TAIL);
    s
}

fn pairs<'a>(names: &'a [&'a str]) -> impl Iterator<Item = (String, String)> + 'a {
    names.iter().map(|t| {
        let (s, n) = t.split_once('.').unwrap();
        (s.to_string(), n.to_string())
    })
}

/// A site with these tables and no sequence.
fn site(tables: &[&str]) -> SiteFilter {
    SiteFilter::new(pairs(tables))
}

/// A site with these tables and these sequences.
fn site_seq(tables: &[&str], sequences: &[&str]) -> SiteFilter {
    SiteFilter::new(pairs(tables)).with_sequences(pairs(sequences))
}

fn cut_str(text: &str, sites: &[SiteFilter]) -> Result<(Vec<String>, CutSummary), CutError> {
    let refs: Vec<&SiteFilter> = sites.iter().collect();
    let mut outs: Vec<Vec<u8>> = vec![Vec::new(); sites.len()];
    let summary = cut_many(text.as_bytes(), &refs, &mut outs)?;
    Ok((
        outs.into_iter()
            .map(|o| without_eol(text, String::from_utf8(o).unwrap()))
            .collect(),
        summary,
    ))
}

/// A copy without the `-- EOL` line the cut adds to an archive that has none (the
/// expectations are written in the source's terms); asserts it is there.
fn without_eol(source: &str, copy: String) -> String {
    if source.lines().any(|l| l.trim() == "-- EOL") {
        return copy;
    }
    match copy.strip_suffix("-- EOL\n") {
        Some(body) => body.to_string(),
        None => panic!("the copy does not end with `-- EOL`:\n{copy}"),
    }
}

/// Runs a cut copy through the reader the receiver applies with.
fn check_envelope(text: &str, counter: u64) {
    let cluster = ClusterName::new("lab").unwrap();
    read_whole(
        text.as_bytes(),
        &cluster,
        Counter(counter),
        Allowances::default(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
}

const R1: &str = "1\t854\t1\t1\ts1\tt1\tI\t0\t{id,4,txt,\"it's \\t tab \\n nl \\\\\\\\ bs é ☃ 𝄞 \\\\\"q\\\\\" 1\"}";
const R2: &str = "1\t855\t2\t8\ts1\tt2\tI\t0\t{k,k101,v,1}";
const R3: &str = "1\t857\t1\t17\ts1\tt1\tU\t1\t{txt,NULL,id,1}";
const R4: &str = "1\t962\t5\t305\ts1\tt5\tT\t0\t{}";

#[test]
fn copy_rows_are_filtered_byte_for_byte() {
    let text = archive(
        &[R1, R2, R3, R4],
        &[
            "select \"_lab\".sequenceSetValue_offline('s1','seq1','2');",
            "select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','10');",
        ],
    );
    let sites = [
        site_seq(&["s1.t1"], &["s1.t1_id_seq"]),
        site_seq(&["s1.t2", "s1.t5"], &["s1.seq1"]),
        site_seq(&["s1.t1", "s1.t2", "s1.t5"], &["s1.seq1", "s1.t1_id_seq"]),
        site(&[]),
    ];
    let (outs, summary) = cut_str(&text, &sites).unwrap();
    assert_eq!(summary.counter, Counter(35));
    assert_eq!(summary.body, BodyKind::LogCopy);
    assert_eq!(summary.changes, 6);
    assert_eq!(summary.kept, vec![3, 3, 6, 0]);
    assert_eq!(
        outs[0],
        archive(
            &[R1, R3],
            &["select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','10');"]
        )
    );
    assert_eq!(
        outs[1],
        archive(
            &[R2, R4],
            &["select \"_lab\".sequenceSetValue_offline('s1','seq1','2');"]
        )
    );
    // A site with every table gets the archive byte for byte.
    assert_eq!(outs[2], text);
    // A site without rows gets the layout of an idle SYNC.
    assert_eq!(outs[3], archive(&[], &[]));
    for o in &outs {
        check_envelope(o, 35);
    }
}

#[test]
fn one_site_cut_equals_the_many_site_cut() {
    let text = archive(&[R1, R2], &[]);
    let f = site(&["s1.t2"]);
    let mut out = Vec::new();
    let s = cut(text.as_bytes(), &f, &mut out).unwrap();
    assert_eq!(s.kept, vec![1]);
    assert_eq!(
        without_eol(&text, String::from_utf8(out).unwrap()),
        archive(&[R2], &[])
    );
}

#[test]
fn table_names_are_compared_after_copy_unescaping() {
    // `\164\061` is "t1" in octal, `\x74\x31` in hex; `t\\1` is the 3-character name t\1;
    // `we\tird` holds a tab.
    let octal = "1\t1\t1\t1\ts1\t\\164\\061\tI\t0\t{id,1}";
    let hexed = "1\t1\t1\t2\t\\x731\tt\\x31\tI\t0\t{id,2}";
    let backslash = "1\t1\t7\t3\ts1\tt\\\\1\tI\t0\t{id,3}";
    let tab = "1\t1\t8\t4\ts1\twe\\tird\tI\t0\t{id,4}";
    let text = archive(&[octal, hexed, backslash, tab], &[]);
    let sites = [
        site(&["s1.t1"]),
        SiteFilter::new([("s1", "t\\1"), ("s1", "we\tird")]),
        site(&["s1.t\\\\1"]),
    ];
    let (outs, _) = cut_str(&text, &sites).unwrap();
    assert_eq!(outs[0], archive(&[octal, hexed], &[]));
    assert_eq!(outs[1], archive(&[backslash, tab], &[]));
    assert_eq!(outs[2], archive(&[], &[]));
}

#[test]
fn column_order_comes_from_the_copy_statement() {
    let text = archive(&[R1, R2], &[]).replace(
        COPY,
        "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablerelname, log_tablenspname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n",
    );
    // In that order, the 5th field (s1) is the table name and the 6th the schema.
    let (outs, _) = cut_str(&text, &[site(&["t1.s1"]), site(&["s1.t1"])]).unwrap();
    assert!(outs[0].contains(R1) && !outs[0].contains(R2));
    assert!(!outs[1].contains(R1));
}

#[test]
fn ddl_rows_go_with_their_table_and_scripts_stay_whole() {
    let alter = "1\t1070\t\\N\t513\t\\N\t\\N\tS\t\\N\t{\"alter table s1.t2 add column extra text default 'dflt';\",\"\",\"1,1,16,2,1,205,3,1,108\"}";
    let rest = "1\t1070\t\\N\t514\t\\N\t\\N\tS\t\\N\t{\"\\n\",\"\",\"\"}";
    let end = "1\t1070\t\\N\t515\t\\N\t\\N\ts\t\\N\t{}";
    let index = "1\t1071\t\\N\t516\t\\N\t\\N\tS\t\\N\t{\"-- a comment\\ncreate unique index concurrently if not exists \\\\\"t1 idx\\\\\" on only \\\\\"s1\\\\\".\\\\\"t1\\\\\" using btree (id);\",\"\",\"\"}";
    let comment = "1\t1071\t\\N\t517\t\\N\t\\N\tS\t\\N\t{\"\\ncomment on table s1.t5 is 'it''s; fine';\",\"\",\"\"}";
    let rest2 = "1\t1071\t\\N\t518\t\\N\t\\N\tS\t\\N\t{\"\\n\",\"\",\"\"}";
    let end2 = "1\t1071\t\\N\t519\t\\N\t\\N\ts\t\\N\t{}";
    let text = archive(&[alter, rest, end, R2, index, comment, rest2, end2], &[]);
    let sites = [
        site(&["s1.t2"]),
        site(&["s1.t1"]),
        site(&["s1.t5"]),
        site(&["s9.x"]),
    ];
    let (outs, summary) = cut_str(&text, &sites).unwrap();
    assert_eq!(outs[0], archive(&[alter, rest, end, R2], &[]));
    assert_eq!(outs[1], archive(&[index, rest2, end2], &[]));
    assert_eq!(outs[2], archive(&[comment, rest2, end2], &[]));
    assert_eq!(outs[3], archive(&[], &[]));
    assert_eq!(summary.changes, 4);
}

#[test]
fn undecidable_ddl_stops_the_cut_and_names_the_statement() {
    for (stmt, why) in [
        (
            "create or replace function s1.f() returns int language sql as $$ select 1 $$;",
            "something other",
        ),
        (
            "create view s1.v as select * from s1.t1;",
            "something other",
        ),
        ("grant select on s1.t1 to public;", "not among"),
        (
            "alter table s1.t1 add column a int; drop table s1.t2;",
            "more than one statement",
        ),
        ("drop table s1.t1, s1.t2;", "together with"),
        ("alter table s1.t1 rename to t9;", "a rename"),
        ("alter table s1.t1 set schema s2;", "another schema"),
    ] {
        let row = format!(
            "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{{\"{}\",\"\",\"\"}}",
            stmt.replace('\\', "\\\\\\\\").replace('"', "\\\\\"")
        );
        let text = archive(&[&row], &[]);
        let err = cut_str(&text, &[site(&["s1.t1"]), site(&["s1.t3"])]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err.kind, CutErrorKind::Undecidable { line: 13, .. }),
            "{stmt}: {msg}"
        );
        assert!(msg.contains(why), "{stmt}: {msg}");
        assert!(msg.contains(&stmt[..20]), "{stmt}: {msg}");
    }
    // Renaming a table no site has is decided: nobody gets it.
    let row = "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"alter table s1.zz rename to yy;\",\"\",\"\"}";
    let (outs, _) = cut_str(&archive(&[row], &[]), &[site(&["s1.t1"])]).unwrap();
    assert_eq!(outs[0], archive(&[], &[]));
}

#[test]
fn unqualified_ddl_goes_to_the_sites_of_the_table_slony_resolved() {
    let ddl = |stmt: &str| format!("1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{{\"{stmt}\",\"\",\"\"}}");
    let cut_with = |text: &str, sites: &[SiteFilter], path: &[&str]| {
        let refs: Vec<&SiteFilter> = sites.iter().collect();
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); sites.len()];
        let options = CutOptions {
            ddl_search_path: path.iter().map(|s| s.to_string()).collect(),
        };
        cut_many_with(text.as_bytes(), &refs, &mut outs, &options).map(|_| {
            outs.into_iter()
                .map(|o| String::from_utf8(o).unwrap())
                .collect::<Vec<_>>()
        })
    };
    // As Slony's regression suites write it: `alter table table4 ...`, applied with
    // the default search_path (public): only the site holding public.table4 gets it.
    let row = ddl("alter table table4 add column x int;");
    let text = archive(&[&row], &[]);
    let sites = [
        site(&["public.table4"]),
        site(&["s1.table4"]),
        site(&["s1.t1"]),
    ];
    let outs = cut_with(&text, &sites, &["public"]).unwrap();
    assert!(outs[0].contains("alter table table4"), "{}", outs[0]);
    assert!(!outs[1].contains("table4"), "{}", outs[1]);
    assert!(!outs[2].contains("table4"), "{}", outs[2]);
    // The default options are the same.
    let (outs, _) = cut_str(&text, &sites).unwrap();
    assert!(outs[0].contains("alter table table4"));
    // With s1 first in the path, the site of s1.table4 gets it.
    let outs = cut_with(&text, &sites, &["s1", "public"]).unwrap();
    assert!(outs[1].contains("alter table table4"), "{}", outs[1]);
    assert!(!outs[0].contains("table4"), "{}", outs[0]);
    // No site holds it in any schema of the path: nobody gets it.
    let outs = cut_with(&text, &[site(&["s2.table4"])], &["public", "s1"]).unwrap();
    assert!(!outs[0].contains("table4"));
    // Held only in a later schema: an earlier one may hold an unsubscribed table4, so
    // the cut stops and says why.
    let err = cut_with(&text, &[site(&["s1.table4"])], &["public", "s1"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err.kind, CutErrorKind::Undecidable { .. }) && msg.contains("public"),
        "{msg}"
    );
    // A name no site holds, together with a site's table: mixed, refused.
    let mixed = ddl("truncate scratch, s1.t1;");
    let err = cut_with(&archive(&[&mixed], &[]), &[site(&["s1.t1"])], &["public"]).unwrap_err();
    assert!(err.to_string().contains("together with"), "{err}");
    // Unqualified names of sequences and COPY targets still stop the cut.
    let seq = ddl("alter sequence q1 restart;");
    let err = cut_with(&archive(&[&seq], &[]), &[site(&["s1.t1"])], &["public"]).unwrap_err();
    assert!(err.to_string().contains("not schema-qualified"), "{err}");
}

#[test]
fn errors_from_a_file_name_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("slony1_log_2_00000000000000000035.sql");
    let row = "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"create view s1.v as select 1;\",\"\",\"\"}";
    std::fs::write(&p, archive(&[row], &[])).unwrap();
    let f = site(&["s1.t1"]);
    let mut outs = vec![Vec::new()];
    let err = cut_file(&p, &[&f], &mut outs).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("slony1_log_2_00000000000000000035.sql"),
        "{msg}"
    );
    assert!(msg.contains("create view s1.v"), "{msg}");
}

#[test]
fn sequences_come_from_the_list_only() {
    let s = site_seq(
        &["s1.t1", "s1.t_x", "s2.big"],
        &["s1.t1_id_seq", "s3.ticket"],
    );
    assert!(s.has_sequence("s1", "t1_id_seq"));
    // Listed, in a schema with none of the site's tables.
    assert!(s.has_sequence("s3", "ticket"));
    // Named after a listed table, but not listed: not the site's.
    for (nsp, seq) in [
        ("s1", "t1_x_seq"),
        ("s1", "t1_some_col_seq"),
        ("s1", "t_x_id_seq"),
        ("s2", "big_n_seq"),
        ("s1", "t1_seq"),
        ("s2", "t1_id_seq"),
    ] {
        assert!(!s.has_sequence(nsp, seq), "{nsp}.{seq}");
    }
    // The two lists do not stand in for each other.
    assert!(!s.has_sequence("s1", "t1"));
    assert!(!s.has_table("s1", "t1_id_seq"));
    let tables_only = site(&["s1.t1", "s1.seq1"]);
    assert!(!tables_only.has_sequence("s1", "seq1"));
    assert!(!site(&[]).has_sequence("s1", "t1_id_seq"));
    assert!(site(&[]).is_empty());
    assert!(!site_seq(&[], &["s1.q"]).is_empty());
    let from_lists = SiteFilter::from_lists(
        &[QualifiedTable::parse("s1.t1").unwrap()],
        &[QualifiedTable::parse("s1.q").unwrap()],
    );
    assert_eq!(from_lists, site_seq(&["s1.t1"], &["s1.q"]));
}

/// A sequence call named like one of the site's tables' sequences, for a sequence
/// the site does not list, is cut away in both formats and as DDL; the listed one
/// stays.
#[test]
fn pattern_named_sequences_are_not_sent() {
    let calls = [
        "select \"_lab\".sequenceSetValue_offline('s1','t1_x_seq','5');",
        "select \"_lab\".sequenceSetValue_offline('s1','t1_id_seq','10');",
    ];
    let text = archive(&[R1], &calls);
    let sites = [site(&["s1.t1"]), site_seq(&["s1.t1"], &["s1.t1_id_seq"])];
    let (outs, summary) = cut_str(&text, &sites).unwrap();
    assert_eq!(summary.kept, vec![1, 2]);
    assert_eq!(outs[0], archive(&[R1], &[]));
    assert_eq!(outs[1], archive(&[R1], &calls[1..]));
    let row = "1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{\"alter sequence s1.t1_x_seq restart;\"}";
    let (outs, _) = cut_str(
        &archive(&[row], &[]),
        &[site(&["s1.t1"]), site_seq(&[], &["s1.t1_x_seq"])],
    )
    .unwrap();
    assert!(!outs[0].contains("t1_x_seq"), "{}", outs[0]);
    assert!(
        outs[1].contains("alter sequence s1.t1_x_seq"),
        "{}",
        outs[1]
    );
    let pre22 = "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
select pg_catalog.setval('s1.t1_x_seq', 22);\n\
-- EOL\ncommit;\n";
    let (outs, _) = cut_str(pre22, &[site(&["s1.t1"])]).unwrap();
    assert!(!outs[0].contains("t1_x_seq"), "{}", outs[0]);
}

#[test]
fn pre_22_statement_archives() {
    let text = "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
insert into \"s1\".\"t1\" (id,txt) values ('1',E'a\\\\b;c\n-- not a comment\nd');\n\
update only \"s1\".\"t2\" set txt='x;y' where id='1';\n\
delete from only \"s1\".\"t1\" where id='2'; insert into s1.t2 (k) values ('z');\n\
truncate only \"s1\".\"t2\" cascade;\n\
select pg_catalog.setval('s1.t1_id_seq', 22);\n\
select \"pg_catalog\".setval('\"s1\".\"seq1\"', '1');\n\
-- EOL\ncommit;\n";
    let sites = [
        site_seq(&["s1.t1"], &["s1.t1_id_seq"]),
        site_seq(&["s1.t2"], &["s1.seq1"]),
        site(&[]),
    ];
    let (outs, summary) = cut_str(text, &sites).unwrap();
    assert_eq!(summary.body, BodyKind::Statements);
    assert_eq!(summary.changes, 7);
    assert_eq!(summary.kept, vec![3, 4, 0]);
    assert_eq!(
        outs[0],
        "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
insert into \"s1\".\"t1\" (id,txt) values ('1',E'a\\\\b;c\n-- not a comment\nd');\n\
delete from only \"s1\".\"t1\" where id='2';\n\
select pg_catalog.setval('s1.t1_id_seq', 22);\n\
-- EOL\ncommit;\n"
    );
    assert_eq!(
        outs[1],
        "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
update only \"s1\".\"t2\" set txt='x;y' where id='1';\n insert into s1.t2 (k) values ('z');\n\
truncate only \"s1\".\"t2\" cascade;\n\
select \"pg_catalog\".setval('\"s1\".\"seq1\"', '1');\n\
-- EOL\ncommit;\n"
    );
    assert_eq!(
        outs[2],
        "start transaction;\n\
select \"_lab\".archiveTracking_offline('7', '2010-01-01 00:00:00');\n\
-- EOL\ncommit;\n"
    );
    for o in &outs {
        check_envelope(o, 7);
    }
    // A site with everything gets the file unchanged.
    let (all, _) = cut_str(
        text,
        &[site_seq(&["s1.t1", "s1.t2"], &["s1.seq1", "s1.t1_id_seq"])],
    )
    .unwrap();
    assert_eq!(all[0], text);
}

#[test]
fn pre_22_sequence_ids_are_undecidable() {
    let text = "start transaction;\nselect \"_lab\".archiveTracking_offline('7', '2010-01-01');\n\
select \"_lab\".sequenceSetValue_offline('1','22');\n-- EOL\ncommit;\n";
    let err = cut_str(text, &[site(&["s1.t1"])]).unwrap_err();
    assert!(
        matches!(err.kind, CutErrorKind::Undecidable { line: 3, .. }),
        "{err}"
    );
}

#[test]
fn incomplete_and_malformed_archives() {
    let full = archive(&[R1, R2], &[]);
    let last = full.rfind("commit;").unwrap() + "commit".len();
    for cut_at in [
        0,
        100,
        full.find("\\.").unwrap(),
        full.find(R2).unwrap() + 3,
        last,
    ] {
        let err = cut_str(&full[..cut_at], &[site(&["s1.t1"])]).unwrap_err();
        assert!(
            matches!(err.kind, CutErrorKind::Incomplete { .. }),
            "cut at {cut_at}: {err}"
        );
    }
    let no_marker = full.replace("-- End Of Archive Log\n", "");
    assert!(matches!(
        cut_str(&no_marker, &[site(&[])]).unwrap_err().kind,
        CutErrorKind::Incomplete { .. }
    ));
    let bad_type = archive(&["1\t1\t1\t1\ts1\tt1\tX\t0\t{}"], &[]);
    assert!(matches!(
        cut_str(&bad_type, &[site(&[])]).unwrap_err().kind,
        CutErrorKind::Malformed { .. }
    ));
    let short = archive(&["1\t1\t1\t1\ts1"], &[]);
    assert!(matches!(
        cut_str(&short, &[site(&[])]).unwrap_err().kind,
        CutErrorKind::Malformed { .. }
    ));
    let meta = full.replace("commit;\n", "\\! rm -rf /\ncommit;\n");
    assert!(matches!(
        cut_str(&meta, &[site(&[])]).unwrap_err().kind,
        CutErrorKind::Malformed { .. }
    ));
}

#[test]
fn every_truncation_is_incomplete() {
    let full = archive(
        &[R1, R2, R3],
        &["select \"_lab\".sequenceSetValue_offline('s1','seq1','2');"],
    );
    let last = full.rfind("commit;").unwrap() + "commit".len();
    for at in 0..=last {
        if !full.is_char_boundary(at) {
            continue;
        }
        match cut_str(&full[..at], &[site(&["s1.t1"])]) {
            Err(CutError {
                kind: CutErrorKind::Incomplete { .. },
                ..
            }) => {}
            other => panic!("cut at {at}: {other:?}"),
        }
    }
}

#[test]
fn non_sync_archives_pass_through() {
    let text = format!("{HEAD}-- STORE_NODE\n{TAIL}");
    let (outs, summary) = cut_str(&text, &[site(&[]), site(&["s1.t1"])]).unwrap();
    assert_eq!(summary.body, BodyKind::Empty);
    assert_eq!(outs[0], text);
    assert_eq!(outs[1], text);
}

#[test]
fn a_two_megabyte_row_streams_through() {
    let big = format!(
        "1\t9\t1\t1\ts1\tt1\tI\t0\t{{id,1,txt,{}}}",
        "x".repeat(2_000_000)
    );
    let text = archive(&[&big, R2], &[]);
    let (outs, _) = cut_str(&text, &[site(&["s1.t1"]), site(&["s1.t2"])]).unwrap();
    assert_eq!(outs[0], archive(&[&big], &[]));
    assert_eq!(outs[1], archive(&[R2], &[]));
}

/// The archives real Slony-I 2.2.11 wrote, cut for a subset of their tables.
mod real_archives {
    use super::*;

    fn fixture(name: &str) -> String {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/slony-2.2.11");
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    fn counter_of(text: &str) -> u64 {
        text.split("archiveTracking_offline('")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn rows(text: &str) -> Vec<&str> {
        let start = text.find("FROM STDIN;\n").unwrap() + "FROM STDIN;\n".len();
        let end = text[start..]
            .find("\n\\.\n")
            .map_or(start, |e| start + e + 1);
        text[start..end].lines().collect()
    }

    #[test]
    fn dml_truncate_and_big_rows_cut_for_subsets() {
        let all = site_seq(
            &["s1.t1", "s1.t2", "s1.t3", "s1.t4", "s1.t5"],
            &["s1.seq1", "s1.seq2", "s1.t1_id_seq"],
        );
        for name in [
            "dump-mode_02_SYNC_dml.sql",
            "dump-mode_11_SYNC_truncate.sql",
            "dump-mode_33_SYNC_2MB_row_and_pk_update.TRIMMED.sql",
            "dump-mode_35_SYNC_idle.sql",
            "dump-mode_16_SYNC_execute_script_alter.sql",
            "copy-mode_04_SYNC_before_subscription.sql",
        ] {
            let text = fixture(name);
            let sub = site_seq(&["s1.t1", "s1.t4"], &["s1.t1_id_seq"]);
            let (outs, summary) = cut_str(&text, &[sub, all.clone(), site(&[])]).unwrap();
            let counter = counter_of(&text);
            assert_eq!(summary.counter, Counter(counter));
            // Everything subscribed: unchanged.
            assert_eq!(outs[1], text, "{name}");
            for o in &outs {
                check_envelope(o, counter);
            }
            // The subset gets exactly the rows of t1 and t4, in order, byte for byte.
            let want: Vec<&str> = rows(&text)
                .into_iter()
                .filter(|r| {
                    let f: Vec<&str> = r.split('\t').collect();
                    f[4] == "s1" && (f[5] == "t1" || f[5] == "t4")
                })
                .collect();
            assert_eq!(rows(&outs[0]), want, "{name}");
            assert!(
                !outs[0].contains("'seq1'") && !outs[0].contains("'seq2'"),
                "{name}"
            );
            assert_eq!(
                outs[0].contains("'t1_id_seq'"),
                text.contains("'t1_id_seq'"),
                "{name}"
            );
            // Nothing subscribed: the layout of an idle SYNC with this header.
            assert!(rows(&outs[2]).is_empty(), "{name}");
            assert!(!outs[2].contains("sequenceSetValue"), "{name}");
        }
    }

    #[test]
    fn execute_script_alter_goes_to_the_sites_with_t2() {
        let text = fixture("dump-mode_16_SYNC_execute_script_alter.sql");
        let (outs, _) = cut_str(&text, &[site(&["s1.t2"]), site(&["s1.t1"])]).unwrap();
        assert!(outs[0].contains("alter table s1.t2 add column extra"));
        assert!(outs[0].contains("\ts\t\\N\t{}"));
        assert!(!outs[1].contains("alter table s1.t2"));
        assert!(!outs[1].contains("\tS\t"));
        assert!(!outs[1].contains("\ts\t\\N\t{}"));
    }

    #[test]
    fn a_script_with_a_function_is_undecidable() {
        let text = fixture("dump-mode_34_SYNC_execute_script_multi.sql");
        let err = cut_str(&text, &[site(&["s1.t4"])]).unwrap_err();
        assert!(
            matches!(err.kind, CutErrorKind::Undecidable { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("create or replace function s1.f"),
            "{err}"
        );
    }

    #[test]
    fn events_and_the_initial_copy() {
        for name in [
            "copy-mode_01_STORE_NODE_event.sql",
            "copy-mode_05_SUBSCRIBE_SET_event.sql",
        ] {
            let text = fixture(name);
            let (outs, summary) = cut_str(&text, &[site(&["s1.t1"])]).unwrap();
            assert_eq!(outs[0], text, "{name}");
            assert_eq!(summary.body, BodyKind::Empty);
        }
        let text = fixture("copy-mode_06_ENABLE_SUBSCRIPTION_initial_copy.sql");
        let (outs, _) = cut_str(
            &text,
            &[
                site_seq(&["s1.t2"], &["s1.seq2"]),
                site_seq(&["s1.t1"], &["s1.t1_id_seq"]),
            ],
        )
        .unwrap();
        check_envelope(&outs[0], 6);
        check_envelope(&outs[1], 6);
        let o = &outs[0];
        assert!(o.contains("delete from \"s1\".\"t2\";\ncopy \"s1\".\"t2\""));
        assert!(o.contains("finishTableAfterCopy(2); analyze \"s1\".\"t2\"; \n"));
        assert!(o.contains("setval('\"s1\".\"seq2\"', '100'); \n"));
        for gone in [
            "\"t1\"",
            "\"t3\"",
            "\"t4\"",
            "\"t5\"",
            "'\"s1\".\"seq1\"'",
            "finishTableAfterCopy(1)",
        ] {
            assert!(!o.contains(gone), "{gone} in\n{o}");
        }
        let o = &outs[1];
        assert!(o.contains("copy \"s1\".\"t1\""));
        assert!(o.contains("3\t\\N\t\\N\t\\N\t\\N\t\\N\n\\.\nselect \"_lab\".finishTableAfterCopy(1); analyze \"s1\".\"t1\"; \n"));
        assert!(o.contains("setval('\"s1\".\"t1_id_seq\"', '3')"));
        assert!(!o.contains("\"t2\""));
    }
}

#[test]
fn every_copy_ends_with_one_eol_line_the_original_client_looks_for() {
    let text = archive(&[R1, R2], &[]);
    let refs = [&site(&["s1.t1"]), &site(&[])];
    let mut outs: Vec<Vec<u8>> = vec![Vec::new(); 2];
    cut_many(text.as_bytes(), &refs, &mut outs).unwrap();
    for out in &outs {
        let copy = String::from_utf8(out.clone()).unwrap();
        assert!(
            copy.ends_with("vacuum analyze \"_lab\".sl_archive_tracking;\n-- EOL\n"),
            "{copy}"
        );
        assert_eq!(copy.matches("-- EOL").count(), 1, "{copy}");
        // The receiver applies it as any archive.
        check_envelope(&copy, 35);
    }
    // A last line without its newline gets one before the marker.
    let unterminated = text.trim_end_matches('\n').to_string() + "\n-- a trailing comment";
    let mut out = Vec::new();
    cut(unterminated.as_bytes(), &site(&["s1.t1"]), &mut out).unwrap();
    let copy = String::from_utf8(out).unwrap();
    assert!(copy.ends_with("-- a trailing comment\n-- EOL\n"), "{copy}");
    check_envelope(&copy, 35);
    // An archive that has the marker already (the original splitter's) keeps just it.
    let marked = format!("{text}-- EOL\n");
    let mut out = Vec::new();
    cut(marked.as_bytes(), &site(&["s1.t1"]), &mut out).unwrap();
    let copy = String::from_utf8(out).unwrap();
    assert_eq!(copy.matches("-- EOL").count(), 1, "{copy}");
}
