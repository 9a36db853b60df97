//! Any bytes as one statement of the provider's SQL, read both ways strings can be
//! read: the classifier must never panic, and what it says must agree with itself.
//! A statement it takes for one of Slony's shapes is exactly one statement; transaction
//! control and COPY are never let through by the DDL rules; a row change of constants
//! never uses an allowance. The same text as the statement of a DDL row of an archive
//! goes through the archive reader without a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slony_shared::archive::envelope::read_whole;
use slony_shared::archive::statement::{self, Allowances, Refusal, Rules, Statement, Strings};
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let all = Allowances {
        do_blocks: true,
        functions: true,
        languages: true,
    };
    for rules in [Rules::new("_lab", Allowances::default()), Rules::new("_lab", all)] {
        for strings in [Strings::Standard, Strings::Escaped] {
            classify(&rules, sql, strings);
        }
    }
    ddl_row(sql);
});

fn classify(rules: &Rules, sql: &str, strings: Strings) {
    let Ok(parsed) = statement::parse(sql, strings) else {
        return;
    };
    let ddl = rules.check_ddl(&parsed);
    let Ok(shape) = parsed.statement() else {
        assert!(parsed.len() > 1, "only several statements make statement() fail");
        return;
    };
    match shape {
        Statement::Begin | Statement::Commit => {
            assert_eq!(ddl, Err(Refusal::TransactionControl), "{sql:?}");
        }
        Statement::CopyIn { .. } => {
            assert!(ddl.is_err(), "COPY is never DDL: {sql:?}");
        }
        Statement::RowChange(_) => {
            assert!(
                !matches!(ddl, Ok(ref used) if !used.is_empty()),
                "a row change of constants uses no allowance: {sql:?}"
            );
        }
        Statement::Empty => assert_eq!(ddl, Ok(vec![])),
        _ => {}
    }
    if parsed.is_copy_from_stdin() {
        assert!(ddl.is_err(), "COPY is never DDL: {sql:?}");
    }
}

fn ddl_row(sql: &str) {
    let element = sql.replace('\\', "\\\\").replace('"', "\\\"");
    let field = format!("{{\"{element}\"}}")
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    let archive = format!(
        "set session_replication_role to replica;\nstart transaction;\n\
         select \"_lab\".archiveTracking_offline('7', '2026-01-01');\n\
         COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n\
         1\t1\t\\N\t1\t\\N\t\\N\tS\t\\N\t{field}\n\\.\n-- End Of Archive Log\ncommit;\n"
    );
    let cluster = ClusterName::new("lab").expect("a valid cluster name");
    let _ = read_whole(archive.as_bytes(), &cluster, Counter(7), Allowances::default());
}
