//! The provider's SQL does only what Slony's does. Each trick a compromised provider
//! could play is first shown to be live (PostgreSQL, given the statement alone, does the
//! damage), then served to `pull` inside an archive: the archive is refused with an
//! error naming the file, the line and the rule, and the replica does not change. At the
//! end, benign archives of the same shapes apply.

use crate::support::site::{Options, Site};
use crate::support::workload::{self, Format};
use bytes::Bytes;
use futures_util::SinkExt;

const COPY_HEADER: &str = "COPY \"_lab\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n";

/// A DDL row (`log_cmdtype = 'S'`) carrying `statement`, as slon writes it.
fn ddl_row(statement: &str) -> String {
    // Array quoting, then COPY text escaping.
    let element = statement.replace('\\', "\\\\").replace('"', "\\\"");
    let field = format!("{{\"{element}\",\"\",\"1\"}}").replace('\\', "\\\\");
    format!("1\t950\t\\N\t55\t\\N\t\\N\tS\t\\N\t{field}\n")
}

/// `text` with `extra` right after the archive header.
fn after_header(text: &str, extra: &str) -> String {
    let at = text.find("-- end of log archiving header\n").unwrap();
    format!("{}{extra}{}", &text[..at], &text[at..])
}

/// `text` with `rows` first in its COPY data.
fn with_rows(text: &str, rows: &str) -> String {
    text.replacen(COPY_HEADER, &format!("{COPY_HEADER}{rows}"), 1)
}

/// Runs `statement` as a DDL row through the replica's own `log_apply` trigger, as the
/// archive's COPY would, with no check in between.
async fn through_log_apply(client: &tokio_postgres::Client, statement: &str) -> Result<(), String> {
    copy_raw(client, &ddl_row(statement)).await
}

/// COPYs `data` (rows as COPY text) into sl_log_archive as an archive would, with no
/// check in between.
async fn copy_raw(client: &tokio_postgres::Client, data: &str) -> Result<(), String> {
    copy_approved(client, data, None).await
}

/// Runs `statement` as a DDL row through `log_apply`, with no check in between, and rolls
/// the transaction back: `Ok` when PostgreSQL ran it.
async fn runs_through_log_apply(
    client: &tokio_postgres::Client,
    statement: &str,
) -> Result<(), String> {
    copy_and_end(client, &ddl_row(statement), None, "ROLLBACK").await
}

/// [`copy_raw`], with the list of approved DDL digests the receiver sets for an archive.
async fn copy_approved(
    client: &tokio_postgres::Client,
    data: &str,
    approved: Option<&str>,
) -> Result<(), String> {
    copy_and_end(client, data, approved, "COMMIT").await
}

/// The COPY of [`copy_approved`], ended by `end` (COMMIT or ROLLBACK).
async fn copy_and_end(
    client: &tokio_postgres::Client,
    data: &str,
    approved: Option<&str>,
    end: &str,
) -> Result<(), String> {
    client
        .batch_execute("SET session_replication_role TO replica; BEGIN")
        .await
        .map_err(|e| e.to_string())?;
    if let Some(list) = approved {
        client
            .batch_execute(&format!(
                "SET LOCAL {} TO '{list}'",
                slony_shared::offline::APPROVED_DDL_SETTING
            ))
            .await
            .map_err(|e| e.to_string())?;
    }
    let copy = COPY_HEADER.trim_end().trim_end_matches(';');
    let result = async {
        let sink = client.copy_in::<_, Bytes>(copy).await?;
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from(data.to_string())).await?;
        sink.finish().await?;
        client.batch_execute(end).await
    }
    .await;
    let _ = client
        .batch_execute("ROLLBACK; SET session_replication_role TO DEFAULT")
        .await;
    result.map_err(|e| format!("{e:?}"))
}

async fn is_superuser(client: &tokio_postgres::Client, role: &str) -> bool {
    client
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .get(0)
}

async fn exists(client: &tokio_postgres::Client, rel: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&rel])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_provider_sql_is_live_then_refused() {
    let site = Site::start(
        "provider-sql",
        Options {
            archives: 8,
            mail: true,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 3);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 3);
    let db = site.pg.connect("replica").await;
    db.batch_execute(
        "DROP ROLE IF EXISTS victim; CREATE ROLE victim NOSUPERUSER; \
         CREATE TABLE s1.scratch (id int)",
    )
    .await
    .unwrap();
    let marker = std::env::temp_dir().join(format!("slony-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let m = marker.display().to_string();

    // --- The payloads are live: PostgreSQL alone does the damage. ---
    db.batch_execute(&format!("COPY (SELECT 1) TO PROGRAM 'cat > {m}'"))
        .await
        .unwrap();
    assert!(marker.exists(), "COPY TO PROGRAM runs a program");
    std::fs::remove_file(&marker).unwrap();
    through_log_apply(&db, &format!("COPY (SELECT 1) TO PROGRAM 'cat > {m}'"))
        .await
        .unwrap();
    assert!(
        marker.exists(),
        "a DDL row runs through log_apply's EXECUTE"
    );
    std::fs::remove_file(&marker).unwrap();
    through_log_apply(&db, "ALTER ROLE victim SUPERUSER")
        .await
        .unwrap();
    assert!(
        is_superuser(&db, "victim").await,
        "a DDL row makes a superuser"
    );
    db.batch_execute("ALTER ROLE victim NOSUPERUSER")
        .await
        .unwrap();
    through_log_apply(
        &db,
        "update pg_catalog.pg_authid set rolsuper = true where rolname = 'victim'",
    )
    .await
    .unwrap();
    assert!(
        is_superuser(&db, "victim").await,
        "a catalog write makes a superuser"
    );
    db.batch_execute("ALTER ROLE victim NOSUPERUSER")
        .await
        .unwrap();
    for commit in ["/**/commit;", "commit/**/;", "END/**/;", "commit--x\n;"] {
        db.batch_execute(&format!(
            "BEGIN; INSERT INTO s1.scratch VALUES (1);\n{commit}\nROLLBACK"
        ))
        .await
        .unwrap();
        let n: i64 = db
            .query_one("SELECT count(*) FROM s1.scratch", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{commit:?} ends the transaction: the insert stays");
        db.batch_execute("DELETE FROM s1.scratch").await.unwrap();
    }
    // With standard_conforming_strings off (as a pre-2.2 archive is applied), '\'' is a
    // quote and what follows it runs; read with standard strings, the same text is one
    // harmless INSERT of a long string.
    // (The SET goes first on its own: a query string is parsed whole before it runs.)
    db.batch_execute("SET standard_conforming_strings = off")
        .await
        .unwrap();
    db.batch_execute(
        "BEGIN;\n\
         INSERT INTO s1.t2 (k, v) VALUES ('\\'', 1) ; commit; drop table s1.scratch; --', 1);\n",
    )
    .await
    .unwrap();
    db.batch_execute("RESET standard_conforming_strings")
        .await
        .unwrap();
    assert!(!exists(&db, "s1.scratch").await, "the hidden DROP ran");
    db.batch_execute("CREATE TABLE s1.scratch (id int)")
        .await
        .unwrap();

    // An escaped tab moves the fields: a reader that splits at every tab sees an `I` row,
    // the server an `S` row.
    let escaped_tab = |m: &str| {
        format!(
            "1\t950\t\\N\t55\tx\ty\\\tI\tS\t\\N\t{{\"COPY (SELECT 1) TO PROGRAM 'cat > {m}'\"}}\n"
        )
    };
    copy_raw(&db, &escaped_tab(&m)).await.unwrap();
    assert!(
        marker.exists(),
        "the server reads the escaped-tab row as an S row"
    );
    std::fs::remove_file(&marker).unwrap();
    // A bare carriage return is a line end to the server: a second row it alone sees,
    // and an end of the data after it.
    let bare_cr = |m: &str| {
        format!("1\t950\t\\N\t55\t\\N\t\\N\ts\t\\N\t\\N\r1\t950\t\\N\t56\t\\N\t\\N\tS\t\\N\t{{\"COPY (SELECT 1) TO PROGRAM 'cat > {m}'\"}}\r\\.\r\n")
    };
    copy_raw(&db, &bare_cr(&m)).await.unwrap();
    assert!(marker.exists(), "the server reads a row after a bare CR");
    std::fs::remove_file(&marker).unwrap();
    // A row change may name any table: log_apply writes where the row says.
    let authid_row = "1\t950\t1\t55\tpg_catalog\tpg_authid\tU\t1\t{rolsuper,t,rolname,victim}\n";
    copy_raw(&db, authid_row).await.unwrap();
    assert!(
        is_superuser(&db, "victim").await,
        "a U row on pg_authid makes a superuser"
    );
    db.batch_execute("ALTER ROLE victim NOSUPERUSER")
        .await
        .unwrap();
    // An aggregate runs set_config without a call of it in the statement.
    db.batch_execute(
        "CREATE AGGREGATE s1.cfg(text, boolean) (sfunc = set_config, stype = text, \
         initcond = 'standard_conforming_strings'); SELECT s1.cfg('off', false)",
    )
    .await
    .unwrap();
    let scs: String = db
        .query_one("SHOW standard_conforming_strings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(scs, "off", "the aggregate changed a setting");
    db.batch_execute("RESET standard_conforming_strings; DROP AGGREGATE s1.cfg(text, boolean)")
        .await
        .unwrap();
    // search_path reaches the cluster's schema without naming it in a table.
    db.batch_execute(
        "BEGIN; SET LOCAL search_path TO _lab; UPDATE sl_archive_tracking SET at_counter = 1000",
    )
    .await
    .unwrap();
    let at: i64 = db
        .query_one("SELECT at_counter FROM \"_lab\".sl_archive_tracking", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(at, 1000, "search_path reaches the tracking table");
    db.batch_execute("ROLLBACK").await.unwrap();

    // Defence in depth: log_apply() runs only the DDL rows the receiver approved, so a row
    // the server reads differently from the receiver fails instead of running.
    let approved = slony_shared::offline::ddl_digest("COMMENT ON TABLE s1.t2 IS 'approved'");
    copy_approved(
        &db,
        &ddl_row("COMMENT ON TABLE s1.t2 IS 'approved'"),
        Some(&approved),
    )
    .await
    .unwrap();
    let err = copy_approved(
        &db,
        &ddl_row(&format!("COPY (SELECT 1) TO PROGRAM 'cat > {m}'")),
        Some(&approved),
    )
    .await
    .unwrap_err();
    assert!(err.contains("did not approve"), "{err}");
    assert!(!marker.exists(), "an unapproved DDL row does not run");
    let err = copy_approved(&db, &ddl_row("COMMENT ON TABLE s1.t2 IS 'x'"), Some("none"))
        .await
        .unwrap_err();
    assert!(err.contains("did not approve"), "{err}");

    // A LIMIT holds a query: an INSERT "of constants" reads a server file into the
    // database.
    let limit_payload = "insert into \"s1\".\"t2\" (k,v) values ('limit', 1) limit (select lo_import('/etc/hostname', 4243343))";
    db.batch_execute(limit_payload).await.unwrap();
    let imported: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 4243343",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(imported, 1, "a LIMIT subquery read a server file");
    db.batch_execute("SELECT lo_unlink(4243343); DELETE FROM s1.t2 WHERE k = 'limit'")
        .await
        .unwrap();
    // DROP EXTENSION plpgsql CASCADE takes every plpgsql function with it (shown on a
    // scratch database: on the replica it would take log_apply()).
    site.pg.create_db("scratch").await;
    let scratch = site.pg.connect("scratch").await;
    scratch
        .batch_execute(
            "CREATE FUNCTION public.f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$; \
             DROP EXTENSION plpgsql CASCADE",
        )
        .await
        .unwrap();
    let left: i64 = scratch
        .query_one("SELECT count(*) FROM pg_proc WHERE proname = 'f'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the function went with the extension");

    // --- Served inside archive 4, each is refused and nothing changes. ---
    let good = workload::render("lab", 4, &site.stream[3], Format::Copy22);
    let old = workload::render("lab", 4, &site.stream[3], Format::Statements);
    let a4 = site.provider.join(workload::archive_name(4));
    let smuggled = "insert into \"s1\".\"t2\" (k, v) values ('smuggled', 1);\n";
    let mut tricks: Vec<(String, String, &str)> = Vec::new();
    for commit in [
        "/**/commit;\n",
        "commit/**/;\n",
        "END/**/;\n",
        "commit--x\n;\n",
        "/* a /* nested */ c */ CoMmIt;\n",
    ] {
        tricks.push((
            format!("disguised transaction control {commit:?}"),
            after_header(&good, &format!("{commit}{smuggled}")),
            "after the archive's commit",
        ));
    }
    for (what, statement) in [
        ("savepoint", "savepoint x;\n"),
        ("rollback", "ROLLBACK/**/;\n"),
    ] {
        tricks.push((
            what.into(),
            after_header(&good, statement),
            "transaction control",
        ));
    }
    for copy in [
        format!("COPY (SELECT 1) TO PROGRAM 'cat > {m}' /* from stdin */;\n"),
        format!("copy s1.t1 to program 'cat > {m}' -- from stdin\n;\n"),
        format!("CoPy (select 1) tO pRoGrAm E'cat > {m}';\n"),
        "copy s1.t1 from '/etc/passwd';\n".into(),
    ] {
        tricks.push((
            format!("COPY past the check: {copy:?}"),
            after_header(&good, &copy),
            "COPY to or from a server file or program",
        ));
    }
    // Each DDL row is live: PostgreSQL runs it through log_apply (rolled back here), but
    // for `commit` and `alter system`, which the server itself refuses inside an
    // archive's trigger and are refused here all the same.
    let not_live = ["commit", "alter system set fsync = off"];
    for (statement, says) in [
        (
            format!("COPY (SELECT 1) TO PROGRAM 'cat > {m}'"),
            "COPY to or from a server file or program",
        ),
        (
            format!("copy (select 1) to program $odd_Tag$cat > {m}$odd_Tag$"),
            "COPY to or from a server file or program",
        ),
        ("ALTER ROLE victim SUPERUSER".into(), "role and privilege"),
        (
            "alter/**/role victim superuser".into(),
            "role and privilege",
        ),
        (
            "ALTER USER victim WITH SUPERUSER".into(),
            "role and privilege",
        ),
        (
            "grant pg_execute_server_program to victim".into(),
            "role and privilege",
        ),
        ("set role postgres".into(), "role or session changes"),
        (
            "SET SESSION AUTHORIZATION victim".into(),
            "role or session changes",
        ),
        ("reset all".into(), "role or session changes"),
        (
            "select set_config('role', 'victim', false)".into(),
            "set_config",
        ),
        ("alter system set fsync = off".into(), "ALTER SYSTEM"),
        ("commit".into(), "transaction control"),
        (
            "do $x$ begin execute 'alter role victim superuser'; end $x$".into(),
            "DO blocks",
        ),
        (
            "create function s1.f() returns int language sql as 'select 1'".into(),
            "function definitions",
        ),
        (
            "update pg_catalog.pg_authid set rolsuper = true where rolname = 'victim'".into(),
            "system catalogs",
        ),
        (
            "update \"_lab\".sl_archive_tracking set at_counter = 99".into(),
            "cluster's own schema",
        ),
        (
            "create table s1.x as select pg_read_file('/etc/passwd')".into(),
            "pg_read_file",
        ),
        (
            "select lo_import(U&'/etc/host\\006eame')".into(),
            "lo_import",
        ),
    ] {
        // A role change that took effect shows in what fails next: log_apply() may no
        // longer set session_replication_role, as the role it switched to.
        let live = runs_through_log_apply(&db, &statement).await.or_else(|e| {
            if e.contains("permission denied to set parameter \\\"session_replication_role\\\"") {
                Ok(())
            } else {
                Err(e)
            }
        });
        let _ = std::fs::remove_file(&marker);
        if not_live.contains(&statement.as_str()) {
            assert!(live.is_err(), "{statement} was expected to fail on its own");
        } else {
            live.unwrap_or_else(|e| panic!("{statement} is not live: {e}"));
        }
        tricks.push((
            format!("a DDL row carrying {statement:?}"),
            with_rows(&good, &ddl_row(&statement)),
            says,
        ));
    }
    tricks.push((
        "an escaped tab that hides an S row".into(),
        with_rows(&good, &escaped_tab(&m)),
        "COPY to or from a server file or program",
    ));
    tricks.push((
        "a bare carriage return that starts a row only the server sees".into(),
        with_rows(&good, &bare_cr(&m)),
        "a carriage return inside COPY data",
    ));
    tricks.push((
        "a row change of pg_catalog.pg_authid".into(),
        with_rows(&good, authid_row),
        "a row change of pg_catalog.pg_authid is refused",
    ));
    tricks.push((
        "a row change of the tracking table".into(),
        with_rows(
            &good,
            "1\t950\t1\t56\t_lab\tsl_archive_tracking\tU\t1\t{at_counter,1000,at_counter,3}\n",
        ),
        "cluster's own schema",
    ));
    tricks.push((
        "an aggregate that calls set_config".into(),
        with_rows(
            &good,
            &ddl_row("create aggregate s1.cfg(text, boolean) (sfunc = set_config, stype = text, initcond = 'standard_conforming_strings')"),
        ),
        "function definitions",
    ));
    tricks.push((
        "search_path set to the cluster's schema (pre-2.2)".into(),
        after_header(
            &old,
            "set search_path to _lab;\nupdate sl_archive_tracking set at_counter = 1000;\n",
        ),
        "cluster's own schema",
    ));
    tricks.push((
        "a pre-2.2 row change whose LIMIT holds a query".into(),
        after_header(&old, &format!("{limit_payload};\n")),
        "lo_import",
    ));
    tricks.push((
        "a DDL row dropping the plpgsql extension".into(),
        with_rows(&good, &ddl_row("drop extension plpgsql cascade")),
        "outside replicated tables",
    ));
    tricks.push((
        "a DDL statement outside the DDL channel of a 2.2 archive".into(),
        after_header(&good, "alter table s1.t2 add column sneaky int;\n"),
        "not part of a Slony 2.2 archive",
    ));
    tricks.push((
        "a string read differently by the server (pre-2.2)".into(),
        after_header(
            &old,
            "insert into \"s1\".\"t2\" (k,v) values ('\\'', 1) ; commit; drop table s1.t1; --', 1);\n",
        ),
        "after the archive's commit",
    ));
    tricks.push((
        "a pre-2.2 row change of a function's value".into(),
        after_header(
            &old,
            "insert into \"s1\".\"t2\" (k,v) values (pg_read_file('/etc/hostname'), 1);\n",
        ),
        "pg_read_file",
    ));

    let before = site.replica_fingerprint().await;
    let mut failures = Vec::new();
    let refused = site.site_dir().join("refused.json");
    for (what, text, says) in &tricks {
        let _ = std::fs::remove_dir_all(site.incoming());
        // Each trick on its own: no refusal remembered from the trick before.
        let _ = std::fs::remove_file(&refused);
        std::fs::write(&a4, text).unwrap();
        let run = site.pull();
        let mut problems = Vec::new();
        if run.code != 4 {
            problems.push(format!("exit {} (want 4)", run.code));
        }
        for s in [*says, "slony1_log_2_00000000000000000004.sql", "line "] {
            if !run.stderr.contains(s) {
                problems.push(format!("no {s:?} in the error"));
            }
        }
        if site.counter().await != 3 || site.replica_fingerprint().await != before {
            problems.push("the replica changed".into());
        }
        if marker.exists() {
            problems.push("the program ran".into());
            let _ = std::fs::remove_file(&marker);
        }
        if is_superuser(&db, "victim").await {
            problems.push("victim became a superuser".into());
        }
        if !exists(&db, "s1.scratch").await || !exists(&db, "s1.t1").await {
            problems.push("a table was dropped".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{what}: {}\n{}", problems.join("; "), run.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The operator hears of it.
    let mails = site.mails(1);
    assert!(
        mails[0]
            .body
            .contains("slony1_log_2_00000000000000000004.sql"),
        "{}",
        mails[0].body
    );

    // The refusal is final: a later run does not fetch or apply the same file again.
    let again = site.pull();
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert!(again.stderr.contains("still refused"), "{}", again.stderr);
    assert!(
        !again.stderr.contains("applying new archives"),
        "{}",
        again.stderr
    );
    assert_eq!(site.counter().await, 3);

    // A batch member written by another Slony node is refused like the single file.
    let _ = std::fs::remove_file(&a4);
    let _ = std::fs::remove_dir_all(site.incoming());
    let batch = site.provider.join("slony_logs_4-4.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&batch).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(good.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            "slony1_log_3_00000000000000000004.sql",
            good.as_bytes(),
        )
        .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("written by Slony node 3"),
        "{}",
        run.stderr
    );
    assert_eq!(site.counter().await, 3);
    std::fs::remove_file(&batch).unwrap();

    // Benign archives of the same shapes apply: a DDL row, and a pre-2.2 string with a
    // backslash and a quote read the server's way.
    let _ = std::fs::remove_dir_all(site.incoming());
    std::fs::write(
        &a4,
        with_rows(
            &good,
            &ddl_row("alter table s1.t2 add column extra_ddl text default 'x'"),
        ),
    )
    .unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 4);
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 't2' AND column_name = 'extra_ddl'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the benign DDL row applied");
    let old5 = workload::render("lab", 5, &site.stream[4], Format::Statements);
    std::fs::write(
        site.provider.join(workload::archive_name(5)),
        after_header(
            &old5,
            "insert into \"s1\".\"t2\" (k,v) values ('it\\'s a \\\\ backslash; commit', 5);\n",
        ),
    )
    .unwrap();
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 5);
    let k: String = db
        .query_one("SELECT k FROM s1.t2 WHERE v = 5 AND k LIKE 'it%'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(k, "it's a \\ backslash; commit");
    assert!(exists(&db, "s1.t1").await);
    let _ = db.batch_execute("DROP ROLE IF EXISTS victim").await;
}
