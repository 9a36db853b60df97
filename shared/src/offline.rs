//! The SQL that prepares a database to receive archives: the objects Slony's
//! `slony1_dump.sh` creates in schema `_<cluster>` (tracking table, `sl_log_archive` with
//! the trigger that turns each logged row into the real change, and the functions the
//! archives call), written for current PostgreSQL.
//!
//! The messages of `archiveTracking_offline` are Slony's own, so operators and tools that
//! know them keep working.
//!
//! # search_path
//!
//! Every function runs with `SET search_path = pg_catalog, pg_temp` and names what it uses
//! with its schema. Archives are often applied by a privileged role, and on PostgreSQL 14
//! and earlier every user may create objects in `public`: a `public.array_upper(text[],
//! integer)` matches an unqualified call better than the catalog's own and would run with
//! the applier's rights. The pin also covers what the applied changes run on the replica
//! (`ENABLE ALWAYS` or `ENABLE REPLICA` triggers, functions in indexes and constraints):
//! those must qualify their names or set their own `search_path`.
//!
//! The DDL of an `EXECUTE SCRIPT` ('S' rows) is the exception: it was written for the
//! session's `search_path`, and runs with it. The receiver records that path in the custom
//! setting `slony_receiver.ddl_search_path` ([`REMEMBER_DDL_SEARCH_PATH`]); `log_apply()`
//! sets it for the statement (`public` when unset), keeps a `SET search_path` among the
//! script's statements for the DDL after it in the same transaction, and pins its own
//! path again afterwards.
//!
//! Replicas prepared before the pin (or by Slony's `slony1_dump.sh`, whose `log_apply()`
//! calls `array_upper` unqualified) get it from [`functions_sql`], which
//! `slony-receiver init --apply-role` runs (`CREATE OR REPLACE`).

use crate::counter::Counter;
use crate::ident::{quote_literal, ClusterName};

/// The search_path every function of the tracking schema runs with.
pub const PINNED_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// The custom setting that carries the applying session's `search_path` to the DDL of
/// 'S' rows.
pub const DDL_SEARCH_PATH_SETTING: &str = "slony_receiver.ddl_search_path";

/// Records the session's current `search_path` in [`DDL_SEARCH_PATH_SETTING`], for the
/// session; run once after connecting, outside a transaction.
pub const REMEMBER_DDL_SEARCH_PATH: &str = "SELECT pg_catalog.set_config('slony_receiver.ddl_search_path', pg_catalog.current_setting('search_path'), false)";

/// The custom setting that lists, for the archive being applied, the SHA-256 (hex, comma
/// separated) of the DDL row statements the receiver checked and approved. `log_apply()`
/// runs no other: should the server ever read a row differently from the receiver, the
/// statement it would run is refused, not run. Unset (as in a psql session) means no
/// list is kept.
pub const APPROVED_DDL_SETTING: &str = "slony_receiver.approved_ddl";

/// The digest of a DDL row statement as `log_apply()` computes it (SHA-256 of its UTF-8
/// text, lower-case hex).
pub fn ddl_digest(statement: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(statement.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `_<cluster>` schema and its objects (no data, no tracking row).
pub fn tracking_schema_sql(cluster: &ClusterName) -> String {
    let s = cluster.schema();
    let functions = functions_sql(cluster);
    format!(
        r#"CREATE SCHEMA {s};

CREATE TABLE {s}.sl_archive_tracking (
    at_counter bigint,
    at_created timestamp,
    at_applied timestamp
);

CREATE TABLE {s}.sl_log_archive (
    log_origin int4,
    log_txid bigint,
    log_tableid int4,
    log_actionseq int8,
    log_tablenspname text,
    log_tablerelname text,
    log_cmdtype char,
    log_cmdupdncols int4,
    log_cmdargs text[]
);

{functions}
CREATE TRIGGER apply_trigger BEFORE INSERT ON {s}.sl_log_archive
    FOR EACH ROW EXECUTE FUNCTION {s}.log_apply();
ALTER TABLE {s}.sl_log_archive ENABLE REPLICA TRIGGER apply_trigger;
"#
    )
}

/// `CREATE OR REPLACE` of the functions of the tracking schema (see the module
/// documentation for their `search_path`). The signatures are those of Slony's
/// `slony1_dump.sh`, so this also replaces the functions of a replica it prepared.
pub fn functions_sql(cluster: &ClusterName) -> String {
    let s = cluster.schema();
    let pin = PINNED_SEARCH_PATH;
    format!(
        r#"CREATE OR REPLACE FUNCTION {s}.sequenceSetValue_offline(p_nsp text, p_name text, p_value int8) RETURNS int4
LANGUAGE plpgsql SET search_path = {pin} AS $fn$
BEGIN
    PERFORM pg_catalog.setval(pg_catalog.quote_ident(p_nsp) || '.' || pg_catalog.quote_ident(p_name), p_value);
    RETURN 0;
END;
$fn$;

CREATE OR REPLACE FUNCTION {s}.finishTableAfterCopy(int4) RETURNS int4
LANGUAGE sql SET search_path = {pin} AS $fn$ SELECT 1 $fn$;

CREATE OR REPLACE FUNCTION {s}.archiveTracking_offline(p_new int8, p_created timestamp) RETURNS int8
LANGUAGE plpgsql SET search_path = {pin} AS $fn$
DECLARE
    v_old int8;
BEGIN
    SELECT at_counter INTO v_old FROM {s}.sl_archive_tracking;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Slony-I: current archive tracking status not found';
    END IF;
    IF v_old <> p_new - 1 THEN
        RAISE EXCEPTION 'Slony-I: node is on archive counter %, this archive log expects %',
            v_old, p_new - 1;
    END IF;
    RAISE NOTICE 'Slony-I: Process archive with counter % created %', p_new, p_created;
    UPDATE {s}.sl_archive_tracking
       SET at_counter = p_new, at_created = p_created, at_applied = CURRENT_TIMESTAMP;
    RETURN p_new;
END;
$fn$;

-- Each row COPYed into sl_log_archive is turned into the change it describes and not kept.
CREATE OR REPLACE FUNCTION {s}.log_apply() RETURNS trigger
LANGUAGE plpgsql SET search_path = {pin} AS $fn$
DECLARE
    v_args text[] := NEW.log_cmdargs;
    v_n int := coalesce(pg_catalog.array_upper(NEW.log_cmdargs, 1), 0);
    -- DDL rows ('S') carry no table name: quote_ident gives NULL there, where
    -- format('%I') would raise.
    v_rel text := pg_catalog.quote_ident(NEW.log_tablenspname) || '.'
        || pg_catalog.quote_ident(NEW.log_tablerelname);
    v_cols text := '';
    v_vals text := '';
    v_set text := '';
    v_where text := '';
    v_i int := 1;
    v_approved text;
BEGIN
    IF NEW.log_cmdtype = 'I' THEN
        WHILE v_i < v_n LOOP
            IF v_i > 1 THEN v_cols := v_cols || ','; v_vals := v_vals || ','; END IF;
            v_cols := v_cols || pg_catalog.quote_ident(v_args[v_i]);
            v_vals := v_vals || coalesce(pg_catalog.quote_literal(v_args[v_i + 1]), 'NULL');
            v_i := v_i + 2;
        END LOOP;
        EXECUTE 'INSERT INTO ' || v_rel || ' (' || v_cols || ') VALUES (' || v_vals || ')';
    ELSIF NEW.log_cmdtype = 'U' THEN
        WHILE v_i < 2 * NEW.log_cmdupdncols LOOP
            IF v_i > 1 THEN v_set := v_set || ','; END IF;
            v_set := v_set || pg_catalog.quote_ident(v_args[v_i]) || '='
                || coalesce(pg_catalog.quote_literal(v_args[v_i + 1]), 'NULL');
            v_i := v_i + 2;
        END LOOP;
        IF NEW.log_cmdupdncols = 0 THEN
            v_set := pg_catalog.quote_ident(v_args[1]) || '=' || pg_catalog.quote_ident(v_args[1]);
        END IF;
        WHILE v_i < v_n LOOP
            IF v_where <> '' THEN v_where := v_where || ' AND '; END IF;
            v_where := v_where || pg_catalog.quote_ident(v_args[v_i]) || '='
                || coalesce(pg_catalog.quote_literal(v_args[v_i + 1]), 'NULL');
            v_i := v_i + 2;
        END LOOP;
        EXECUTE 'UPDATE ONLY ' || v_rel || ' SET ' || v_set || ' WHERE ' || v_where;
    ELSIF NEW.log_cmdtype = 'D' THEN
        WHILE v_i < v_n LOOP
            IF v_where <> '' THEN v_where := v_where || ' AND '; END IF;
            v_where := v_where || pg_catalog.quote_ident(v_args[v_i]) || '='
                || coalesce(pg_catalog.quote_literal(v_args[v_i + 1]), 'NULL');
            v_i := v_i + 2;
        END LOOP;
        EXECUTE 'DELETE FROM ONLY ' || v_rel || ' WHERE ' || v_where;
    ELSIF NEW.log_cmdtype = 'T' THEN
        EXECUTE 'TRUNCATE TABLE ONLY ' || v_rel || ' CASCADE';
    ELSIF NEW.log_cmdtype = 'S' THEN
        -- A DDL statement from EXECUTE SCRIPT: run it with local triggers as on the origin,
        -- and with the applying session's search_path, which the DDL was written for.
        v_approved := pg_catalog.current_setting('{approved}', true);
        IF v_approved IS NOT NULL AND v_approved <> '' AND pg_catalog.strpos(
                ',' || v_approved || ',',
                ',' || pg_catalog.encode(pg_catalog.sha256(
                    pg_catalog.convert_to(coalesce(v_args[1], ''), 'UTF8')), 'hex') || ',') = 0
        THEN
            RAISE EXCEPTION 'Slony-I log shipping: a DDL statement the receiver did not approve: %',
                pg_catalog.left(v_args[1], 200);
        END IF;
        PERFORM pg_catalog.set_config('search_path', coalesce(nullif(
            pg_catalog.current_setting('{ddl_path}', true), ''), 'public'), true);
        SET LOCAL session_replication_role TO local;
        EXECUTE v_args[1];
        SET LOCAL session_replication_role TO replica;
        -- A SET search_path in the script holds for its later statements, as when each
        -- archive ran in a psql session of its own (until the transaction ends).
        PERFORM pg_catalog.set_config('{ddl_path}',
            pg_catalog.current_setting('search_path'), true);
        PERFORM pg_catalog.set_config('search_path', '{pin}', true);
    END IF;
    RETURN NULL;
END;
$fn$;
"#,
        ddl_path = DDL_SEARCH_PATH_SETTING,
        approved = APPROVED_DDL_SETTING,
    )
}

/// The tracking row for a replica whose data is the state after archive `counter`.
pub fn tracking_row_sql(cluster: &ClusterName, counter: Counter, created: &str) -> String {
    format!(
        "INSERT INTO {}.sl_archive_tracking VALUES ({}, {}, CURRENT_TIMESTAMP);\n",
        cluster.schema(),
        counter,
        quote_literal(created)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_pins_its_search_path() {
        let sql = tracking_schema_sql(&ClusterName::new("lab").unwrap());
        let functions = sql.matches("CREATE OR REPLACE FUNCTION").count();
        assert_eq!(functions, 4, "{sql}");
        assert_eq!(
            sql.matches("SET search_path = pg_catalog, pg_temp AS $fn$")
                .count(),
            functions,
            "{sql}"
        );
        assert!(!sql.contains("CREATE FUNCTION"), "{sql}");
    }

    #[test]
    fn catalog_functions_are_called_by_their_qualified_names() {
        let sql = functions_sql(&ClusterName::new("lab").unwrap());
        for name in [
            "array_upper",
            "quote_ident",
            "quote_literal",
            "setval",
            "set_config",
            "current_setting",
        ] {
            let calls = sql.matches(&format!("{name}(")).count();
            assert!(calls > 0, "{name}");
            assert_eq!(
                sql.matches(&format!("pg_catalog.{name}(")).count(),
                calls,
                "an unqualified call of {name}"
            );
        }
        // The tracking table is named with its schema.
        assert!(sql.contains("FROM \"_lab\".sl_archive_tracking"), "{sql}");
        assert!(!sql.contains(" sl_archive_tracking"), "{sql}");
    }

    #[test]
    fn ddl_runs_with_the_recorded_session_path_then_the_pin_again() {
        let sql = functions_sql(&ClusterName::new("lab").unwrap());
        let ddl = &sql[sql.find("log_cmdtype = 'S'").unwrap()..];
        let set = ddl
            .find("set_config('search_path', coalesce(nullif(")
            .unwrap();
        let exec = ddl.find("EXECUTE v_args[1]").unwrap();
        let pin = ddl
            .find("set_config('search_path', 'pg_catalog, pg_temp', true)")
            .unwrap();
        assert!(set < exec && exec < pin, "{ddl}");
        assert!(ddl.contains("current_setting('slony_receiver.ddl_search_path', true)"));
        assert!(REMEMBER_DDL_SEARCH_PATH.contains(DDL_SEARCH_PATH_SETTING));
    }
}
