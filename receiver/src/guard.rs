//! Replica guardrails: the SQL that keeps a replica read-only for ordinary sessions.
//!
//! # Which tables are guarded
//!
//! The replicated tables of a site are every ordinary table of the replica database
//! (persistent or unlogged, not temporary, not part of an extension) outside
//! `pg_catalog`, `information_schema`, the other `pg_*` schemas and the cluster's own
//! schema `_<cluster>`. A replica database is meant to hold the site's replicated
//! tables and nothing else: local tables belong in another database. Tables whose name
//! the subscription protocol would not accept (see
//! [`slony_shared::ident::QualifiedTable`]) can never be replicated and are left alone.
//!
//! # How
//!
//! Each table gets two ordinary (`ENABLE`, origin-mode) triggers calling one function,
//! `"_<cluster>".deny_local_write()`:
//!
//! - `slony_receiver_guard`: `BEFORE INSERT OR UPDATE OR DELETE ... FOR EACH ROW`;
//! - `slony_receiver_guard_truncate`: `BEFORE TRUNCATE ... FOR EACH STATEMENT`.
//!
//! Archives and the subscription bootstrap run with `session_replication_role =
//! replica`, in which ordinary triggers do not fire: they pass untouched, at no cost.
//! The function also lets `session_replication_role = local` through: that is the role
//! in which archives run the statements of an `EXECUTE SCRIPT` (as Slony's own
//! `denyAccess` allows it). Every other session gets SQLSTATE 25006
//! (`read_only_sql_transaction`, as on a hot standby) and the message
//! `table s1.t1 is replicated from <provider host>; writes are refused on this replica`.
//! The triggers must stay ordinary: `ENABLE ALWAYS` or `ENABLE REPLICA` would refuse the
//! archives themselves, and [`inspect`] reports them as wrong.
//!
//! Changing `session_replication_role` needs superuser rights (or, from PostgreSQL 15, a
//! granted `SET` privilege): the guard stops mistakes of ordinary users and
//! applications, not a superuser who means it.

use crate::config::ReceiverConfig;
use slony_shared::ident::{quote_ident, quote_literal, ClusterName, QualifiedTable};
use slony_shared::pg::doing;
use tokio_postgres::{Client, GenericClient};

/// The row-level trigger (INSERT, UPDATE, DELETE).
pub const ROW_TRIGGER: &str = "slony_receiver_guard";
/// The statement-level trigger (TRUNCATE).
pub const TRUNCATE_TRIGGER: &str = "slony_receiver_guard_truncate";
/// The trigger function, in schema `_<cluster>`.
pub const FUNCTION: &str = "deny_local_write";

/// `pg_trigger.tgtype` of the row trigger: ROW | BEFORE | INSERT | DELETE | UPDATE.
const ROW_TYPE: i16 = 1 | 2 | 4 | 8 | 16;
/// `pg_trigger.tgtype` of the truncate trigger: BEFORE | TRUNCATE (statement level).
const TRUNCATE_TYPE: i16 = 2 | 32;

/// The replicated tables of the database, and the tables left alone because their names
/// cannot be replicated.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// The replicated tables, sorted.
    pub tables: Vec<QualifiedTable>,
    /// `schema.table` of tables whose names are not valid series names (never replicated).
    pub skipped: Vec<String>,
}

/// The rule of a replicated relation (see the module documentation), as a condition on
/// `pg_catalog.pg_class c` joined to `pg_catalog.pg_namespace n`, with `$1` the cluster's
/// schema name: not temporary, outside the system schemas and the cluster's own, not part
/// of an extension.
pub const REPLICATED_RELATION: &str = "c.relpersistence <> 't'
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
                AND n.nspname NOT LIKE 'pg\\_%'
                AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_depend d
                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                       AND d.objid = c.oid AND d.deptype = 'e')";

/// Finds the replicated tables (see the module documentation for the rule).
pub async fn replicated_tables(
    client: &impl GenericClient,
    cluster: &ClusterName,
) -> anyhow::Result<Tables> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'r' AND {REPLICATED_RELATION}
                  ORDER BY 1, 2"
            ),
            &[&format!("_{}", cluster.as_str())],
        )
        .await
        .map_err(doing("listing the replicated tables"))?;
    let mut out = Tables::default();
    for row in rows {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        match QualifiedTable::new(&schema, &table) {
            Ok(t) => out.tables.push(t),
            Err(_) => out.skipped.push(format!("{schema}.{table}")),
        }
    }
    Ok(out)
}

/// The state of one guard trigger on a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerState {
    /// Present, ordinary (fires in origin and local role), calling the guard function.
    Ok,
    /// Not there.
    Missing,
    /// `DISABLE TRIGGER`: ordinary sessions can write.
    Disabled,
    /// `ENABLE ALWAYS`: would refuse the archives too.
    Always,
    /// `ENABLE REPLICA`: would refuse the archives and let ordinary sessions write.
    ReplicaOnly,
    /// A trigger of that name that is not the guard (other function or events).
    Foreign,
}

impl TriggerState {
    fn from_catalog(enabled: Option<&str>, tgtype: Option<i16>, ours: bool, want: i16) -> Self {
        match enabled {
            None => TriggerState::Missing,
            Some(_) if !ours || tgtype != Some(want) => TriggerState::Foreign,
            Some("O") => TriggerState::Ok,
            Some("D") => TriggerState::Disabled,
            Some("A") => TriggerState::Always,
            Some(_) => TriggerState::ReplicaOnly,
        }
    }

    fn describe(self, name: &str) -> Option<String> {
        match self {
            TriggerState::Ok => None,
            TriggerState::Missing => Some(format!("no {name} trigger")),
            TriggerState::Disabled => Some(format!("trigger {name} is disabled")),
            TriggerState::Always => Some(format!(
                "trigger {name} is ENABLE ALWAYS: it would refuse the archives too"
            )),
            TriggerState::ReplicaOnly => Some(format!(
                "trigger {name} is ENABLE REPLICA: it would refuse the archives and let local writes through"
            )),
            TriggerState::Foreign => Some(format!(
                "trigger {name} exists but is not the guard (other function or events)"
            )),
        }
    }
}

/// The guard of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableGuard {
    /// The table.
    pub table: QualifiedTable,
    /// Whether the table exists.
    pub exists: bool,
    /// The INSERT/UPDATE/DELETE trigger.
    pub row: TriggerState,
    /// The TRUNCATE trigger.
    pub truncate: TriggerState,
}

impl TableGuard {
    /// Fully guarded.
    pub fn guarded(&self) -> bool {
        self.exists && self.row == TriggerState::Ok && self.truncate == TriggerState::Ok
    }

    /// What is wrong with the guard of this table, if anything.
    pub fn problem(&self) -> Option<String> {
        if !self.exists {
            return Some("the table does not exist".into());
        }
        let problems: Vec<String> = [
            self.row.describe(ROW_TRIGGER),
            self.truncate.describe(TRUNCATE_TRIGGER),
        ]
        .into_iter()
        .flatten()
        .collect();
        if problems.is_empty() {
            None
        } else if self.row == TriggerState::Missing && self.truncate == TriggerState::Missing {
            Some("not guarded".into())
        } else {
            Some(problems.join("; "))
        }
    }
}

/// Reads the guard state of `tables`, in the order given.
pub async fn inspect(
    client: &impl GenericClient,
    cluster: &ClusterName,
    tables: &[QualifiedTable],
) -> anyhow::Result<Vec<TableGuard>> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
    let rows = client
        .query(
            "WITH fn AS (
                SELECT p.oid FROM pg_catalog.pg_proc p
                  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = $3 AND p.proname = $4 AND p.pronargs = 0)
             SELECT c.oid IS NOT NULL,
                    r.tgenabled::text, r.tgtype, coalesce(r.tgfoid IN (SELECT oid FROM fn), false),
                    t.tgenabled::text, t.tgtype, coalesce(t.tgfoid IN (SELECT oid FROM fn), false)
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(s, t, ord)
               LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = w.s
               LEFT JOIN pg_catalog.pg_class c
                      ON c.relnamespace = n.oid AND c.relname = w.t AND c.relkind IN ('r', 'p')
               LEFT JOIN pg_catalog.pg_trigger r ON r.tgrelid = c.oid AND r.tgname = $5
               LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.oid AND t.tgname = $6
              ORDER BY w.ord",
            &[
                &schemas,
                &names,
                &format!("_{}", cluster.as_str()),
                &FUNCTION,
                &ROW_TRIGGER,
                &TRUNCATE_TRIGGER,
            ],
        )
        .await
        .map_err(doing("reading the guard triggers"))?;
    Ok(tables
        .iter()
        .zip(rows)
        .map(|(table, row)| TableGuard {
            table: table.clone(),
            exists: row.get(0),
            row: TriggerState::from_catalog(
                row.get::<_, Option<String>>(1).as_deref(),
                row.get(2),
                row.get(3),
                ROW_TYPE,
            ),
            truncate: TriggerState::from_catalog(
                row.get::<_, Option<String>>(4).as_deref(),
                row.get(5),
                row.get(6),
                TRUNCATE_TYPE,
            ),
        })
        .collect())
}

/// The replicated tables that are not fully guarded, with what is wrong.
pub async fn missing(
    client: &impl GenericClient,
    cluster: &ClusterName,
) -> anyhow::Result<Vec<(QualifiedTable, String)>> {
    let tables = replicated_tables(client, cluster).await?;
    Ok(inspect(client, cluster, &tables.tables)
        .await?
        .into_iter()
        .filter_map(|g| g.problem().map(|p| (g.table, p)))
        .collect())
}

/// The `CREATE OR REPLACE FUNCTION` of the guard function. The provider host, cluster and
/// site go into the function as literals, for the message. Its `search_path` is pinned
/// like the tracking schema's functions ([`slony_shared::offline`]): it also fires in the
/// applier's session, for the DDL of an `EXECUTE SCRIPT`.
pub fn function_sql(cluster: &ClusterName, site: &str, provider_host: &str) -> String {
    let body = format!(
        r#"
BEGIN
    -- Archives and the subscription bootstrap run in session_replication_role 'replica',
    -- where this (ordinary) trigger does not fire. 'local' is the role in which archives
    -- run the statements of an EXECUTE SCRIPT: let it through, as Slony's denyAccess does.
    IF pg_catalog.current_setting('session_replication_role') = 'local' THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        ELSIF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'table %.% is replicated from %; writes are refused on this replica',
            TG_TABLE_SCHEMA, TG_TABLE_NAME, {host}
        USING ERRCODE = 'read_only_sql_transaction',
              DETAIL = pg_catalog.format('%s refused: slony-receiver keeps this table equal to the provider (Slony cluster %s, site %s).', TG_OP, {cluster}, {site}),
              HINT = 'Make the change on the provider. To make this database writable for good (it then stops following the provider), run slony-receiver promote.';
END;
"#,
        host = quote_literal(provider_host),
        cluster = quote_literal(cluster.as_str()),
        site = quote_literal(site),
    );
    let mut tag = "$guard$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$guard{n}$");
    }
    let function = function_name(cluster);
    format!(
        "CREATE OR REPLACE FUNCTION {function} RETURNS trigger LANGUAGE plpgsql SET search_path = {} AS {tag}{body}{tag};\n\
         COMMENT ON FUNCTION {function} IS {};\n",
        slony_shared::offline::PINNED_SEARCH_PATH,
        quote_literal(
            "slony-receiver guard: refuses writes to replicated tables from ordinary sessions (see slony-receiver guard)"
        )
    )
}

/// `"_<cluster>".deny_local_write()`.
fn function_name(cluster: &ClusterName) -> String {
    format!("{}.{}()", cluster.schema(), quote_ident(FUNCTION))
}

/// The statements that (re)create the guard triggers of one table, as needed.
fn trigger_sql(cluster: &ClusterName, g: &TableGuard) -> String {
    let t = g.table.quoted();
    let function = function_name(cluster);
    let mut sql = String::new();
    if g.row != TriggerState::Ok {
        let name = quote_ident(ROW_TRIGGER);
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {name} ON {t};\n\
             CREATE TRIGGER {name} BEFORE INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {function};\n"
        ));
    }
    if g.truncate != TriggerState::Ok {
        let name = quote_ident(TRUNCATE_TRIGGER);
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {name} ON {t};\n\
             CREATE TRIGGER {name} BEFORE TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION {function};\n"
        ));
    }
    sql
}

/// What [`enable`] did.
#[derive(Debug, Clone, Default)]
pub struct Enabled {
    /// Tables that are guarded now.
    pub guarded: Vec<QualifiedTable>,
    /// Of those, the ones whose triggers were created or repaired by this call.
    pub changed: Vec<QualifiedTable>,
    /// Tables that were asked for but do not exist.
    pub absent: Vec<QualifiedTable>,
}

/// Installs (or repairs) the guard on `tables` in one transaction. Idempotent: tables
/// already guarded are not touched (the function is always replaced, so a changed
/// provider host shows in the message).
pub async fn enable(
    client: &mut Client,
    cluster: &ClusterName,
    site: &str,
    provider_host: &str,
    tables: &[QualifiedTable],
) -> anyhow::Result<Enabled> {
    let tx = crate::execute::ddl_transaction(client).await?;
    tx.batch_execute(&function_sql(cluster, site, provider_host))
        .await
        .map_err(doing("creating the guard function"))?;
    let mut done = Enabled::default();
    for g in inspect(&tx, cluster, tables).await? {
        if !g.exists {
            done.absent.push(g.table);
            continue;
        }
        if !g.guarded() {
            tx.batch_execute(&trigger_sql(cluster, &g))
                .await
                .map_err(doing(&format!("guarding {}", g.table)))?;
            done.changed.push(g.table.clone());
        }
        done.guarded.push(g.table);
    }
    tx.commit().await.map_err(doing("committing the guard"))?;
    Ok(done)
}

/// Removes the guard triggers: from `only` those tables, or from every table of the
/// database (and then the function too) when `only` is `None`. Returns the tables
/// whose triggers were removed.
pub async fn disable(
    client: &mut Client,
    cluster: &ClusterName,
    only: Option<&[QualifiedTable]>,
) -> anyhow::Result<Vec<String>> {
    let tx = crate::execute::ddl_transaction(client).await?;
    let rows = tx
        .query(
            "SELECT n.nspname::text, c.relname::text, tg.tgname::text
               FROM pg_catalog.pg_trigger tg
               JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE tg.tgname IN ($1, $2) AND NOT tg.tgisinternal
              ORDER BY 1, 2, 3",
            &[&ROW_TRIGGER, &TRUNCATE_TRIGGER],
        )
        .await
        .map_err(doing("listing the guard triggers"))?;
    let mut removed: Vec<String> = Vec::new();
    for row in rows {
        let (schema, table, trigger): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        if let Some(only) = only {
            if !only.iter().any(|t| t.schema == schema && t.table == table) {
                continue;
            }
        }
        tx.batch_execute(&format!(
            "DROP TRIGGER {} ON {}.{}",
            quote_ident(&trigger),
            quote_ident(&schema),
            quote_ident(&table)
        ))
        .await
        .map_err(doing(&format!("removing the guard of {schema}.{table}")))?;
        let name = format!("{schema}.{table}");
        if removed.last() != Some(&name) {
            removed.push(name);
        }
    }
    if only.is_none() {
        tx.batch_execute(&format!(
            "DROP FUNCTION IF EXISTS {}",
            function_name(cluster)
        ))
        .await
        .map_err(doing("removing the guard function"))?;
    }
    tx.commit()
        .await
        .map_err(doing("committing the guard removal"))?;
    Ok(removed)
}

/// Guards every replicated table (idempotent); for callers with no connection at hand,
/// such as `subscribe-series` after a bootstrap.
pub async fn protect(cfg: &ReceiverConfig) -> anyhow::Result<Enabled> {
    if let Some(m) = crate::promote::read_marker(cfg)? {
        anyhow::bail!(
            "this replica was promoted on {} at archive {}; the guard is not installed on a promoted database",
            m.promoted_at,
            m.counter
        );
    }
    let mut client = crate::replica::connect(cfg).await?;
    protect_with(cfg, &mut client).await
}

/// [`protect`] over an open connection.
pub async fn protect_with(
    cfg: &ReceiverConfig,
    client: &mut tokio_postgres::Client,
) -> anyhow::Result<Enabled> {
    let tables = replicated_tables(&*client, &cfg.cluster).await?;
    if !tables.skipped.is_empty() {
        tracing::info!(
            tables = %tables.skipped.join(", "),
            "not guarded: these names cannot be replicated (schema.table of plain identifiers)"
        );
    }
    enable(
        client,
        &cfg.cluster,
        cfg.node.as_str(),
        &cfg.remote.host,
        &tables.tables,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> QualifiedTable {
        QualifiedTable::parse(s).unwrap()
    }

    #[test]
    fn function_quotes_its_literals_and_keeps_its_dollar_tag_unique() {
        let cluster = ClusterName::new("lab").unwrap();
        let sql = function_sql(&cluster, "site1", "web'db $guard$ host");
        assert!(sql.starts_with(
            "CREATE OR REPLACE FUNCTION \"_lab\".\"deny_local_write\"() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $guard1$"
        ));
        assert!(sql.contains("'web''db $guard$ host'"), "{sql}");
        assert!(sql.contains("$guard1$;\nCOMMENT ON FUNCTION"), "{sql}");
        assert!(sql.contains("writes are refused on this replica"));
        assert!(sql.contains("ERRCODE = 'read_only_sql_transaction'"));
    }

    #[test]
    fn triggers_are_ordinary_and_only_the_broken_one_is_recreated() {
        let cluster = ClusterName::new("lab").unwrap();
        let mut g = TableGuard {
            table: table("s1.t1"),
            exists: true,
            row: TriggerState::Missing,
            truncate: TriggerState::Missing,
        };
        let sql = trigger_sql(&cluster, &g);
        assert!(sql.contains("CREATE TRIGGER \"slony_receiver_guard\" BEFORE INSERT OR UPDATE OR DELETE ON \"s1\".\"t1\" FOR EACH ROW EXECUTE FUNCTION \"_lab\".\"deny_local_write\"();"), "{sql}");
        assert!(sql.contains("CREATE TRIGGER \"slony_receiver_guard_truncate\" BEFORE TRUNCATE ON \"s1\".\"t1\" FOR EACH STATEMENT"), "{sql}");
        assert!(!sql.contains("ALWAYS") && !sql.contains("REPLICA"));
        assert_eq!(g.problem().as_deref(), Some("not guarded"));
        g.row = TriggerState::Ok;
        g.truncate = TriggerState::Always;
        let sql = trigger_sql(&cluster, &g);
        assert!(!sql.contains("\"slony_receiver_guard\" ON"), "{sql}");
        assert!(sql.contains(
            "DROP TRIGGER IF EXISTS \"slony_receiver_guard_truncate\" ON \"s1\".\"t1\";"
        ));
        assert!(g.problem().unwrap().contains("ENABLE ALWAYS"));
        g.truncate = TriggerState::Ok;
        assert!(g.guarded());
        assert_eq!(g.problem(), None);
        assert_eq!(trigger_sql(&cluster, &g), "");
        g.exists = false;
        assert!(!g.guarded());
    }

    #[test]
    fn trigger_states_from_the_catalog() {
        use TriggerState::*;
        assert_eq!(
            TriggerState::from_catalog(None, None, false, ROW_TYPE),
            Missing
        );
        assert_eq!(
            TriggerState::from_catalog(Some("O"), Some(ROW_TYPE), true, ROW_TYPE),
            Ok
        );
        assert_eq!(
            TriggerState::from_catalog(Some("D"), Some(ROW_TYPE), true, ROW_TYPE),
            Disabled
        );
        assert_eq!(
            TriggerState::from_catalog(Some("A"), Some(ROW_TYPE), true, ROW_TYPE),
            Always
        );
        assert_eq!(
            TriggerState::from_catalog(Some("R"), Some(ROW_TYPE), true, ROW_TYPE),
            ReplicaOnly
        );
        // An AFTER trigger, or another function, under the guard's name.
        assert_eq!(
            TriggerState::from_catalog(Some("O"), Some(ROW_TYPE & !2), true, ROW_TYPE),
            Foreign
        );
        assert_eq!(
            TriggerState::from_catalog(Some("O"), Some(ROW_TYPE), false, ROW_TYPE),
            Foreign
        );
    }
}
