//! The SQL that prepares a database to receive archives: the objects Slony's
//! `slony1_dump.sh` creates in schema `_<cluster>` (tracking table, `sl_log_archive` with
//! the trigger that turns each logged row into the real change, and the functions the
//! archives call), written for current PostgreSQL.
//!
//! The messages of `archiveTracking_offline` are Slony's own, so operators and tools that
//! know them keep working.

use crate::counter::Counter;
use crate::ident::{quote_literal, ClusterName};

/// The `_<cluster>` schema and its objects (no data, no tracking row).
pub fn tracking_schema_sql(cluster: &ClusterName) -> String {
    let s = cluster.schema();
    format!(
        r#"CREATE SCHEMA {s};

CREATE TABLE {s}.sl_archive_tracking (
    at_counter bigint,
    at_created timestamp,
    at_applied timestamp
);

CREATE FUNCTION {s}.sequenceSetValue_offline(p_nsp text, p_name text, p_value int8) RETURNS int4
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_catalog.setval(pg_catalog.quote_ident(p_nsp) || '.' || pg_catalog.quote_ident(p_name), p_value);
    RETURN 0;
END;
$fn$;

CREATE FUNCTION {s}.finishTableAfterCopy(int4) RETURNS int4
LANGUAGE sql AS $fn$ SELECT 1 $fn$;

CREATE FUNCTION {s}.archiveTracking_offline(p_new int8, p_created timestamp) RETURNS int8
LANGUAGE plpgsql AS $fn$
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

-- Each row COPYed into sl_log_archive is turned into the change it describes and not kept.
CREATE FUNCTION {s}.log_apply() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_args text[] := NEW.log_cmdargs;
    v_n int := coalesce(array_upper(NEW.log_cmdargs, 1), 0);
    -- DDL rows ('S') carry no table name: quote_ident gives NULL there, where
    -- format('%I') would raise.
    v_rel text := pg_catalog.quote_ident(NEW.log_tablenspname) || '.'
        || pg_catalog.quote_ident(NEW.log_tablerelname);
    v_cols text := '';
    v_vals text := '';
    v_set text := '';
    v_where text := '';
    v_i int := 1;
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
        -- A DDL statement from EXECUTE SCRIPT: run it with local triggers as on the origin.
        SET LOCAL session_replication_role TO local;
        EXECUTE v_args[1];
        SET LOCAL session_replication_role TO replica;
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE TRIGGER apply_trigger BEFORE INSERT ON {s}.sl_log_archive
    FOR EACH ROW EXECUTE FUNCTION {s}.log_apply();
ALTER TABLE {s}.sl_log_archive ENABLE REPLICA TRIGGER apply_trigger;
"#
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
