//! The database role that applies the provider's SQL.
//!
//! Archives and the subscription SQL come from the provider, and whatever they hold runs
//! with the rights of the role the receiver connects as. A superuser there hands a
//! compromised provider the whole server (`COPY ... TO PROGRAM` runs shell commands,
//! `ALTER ROLE` changes anyone). An ordinary role that owns the replicated tables can
//! apply everything a replica needs on PostgreSQL 15 and later, where
//! `GRANT SET ON PARAMETER session_replication_role` lets it switch triggers off as
//! applying requires.
//!
//! - [`check_applier`] runs before `pull` and `subscribe-series` apply anything: it warns
//!   (once per process) when the role is a superuser, and refuses, with what to do, a role
//!   that may not set `session_replication_role`.
//! - [`apply_role`] is `slony-receiver init --apply-role ROLE`, run by a DBA as a
//!   superuser: it creates the role if needed and gives it what applying needs, and no
//!   more. Running it again repairs ownership and grants.

use crate::config::ReceiverConfig;
use crate::exit;
use crate::guard;
use crate::replica::ReplicaError;
use slony_shared::counter::Counter;
use slony_shared::ident::{quote_ident, ClusterName};
use slony_shared::offline;
use slony_shared::pg::doing;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::{Client, GenericClient};

/// The first PostgreSQL version (`server_version_num`) that grants SET on a parameter.
const PARAMETER_GRANTS: i32 = 150000;

/// Names PostgreSQL keeps for itself (as role names, or as words in `OWNER TO`).
const RESERVED_ROLES: [&str; 5] = [
    "public",
    "none",
    "current_role",
    "current_user",
    "session_user",
];

/// The role the receiver connects as, when it may apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applier {
    /// The role's name.
    pub user: String,
    /// Whether it is a superuser (it may apply, with every right on the server).
    pub superuser: bool,
}

/// Why [`applier`] gave no role.
#[derive(Debug)]
pub enum ApplierError {
    /// The role may not apply the provider's SQL ([`ReplicaError::Privilege`], saying what
    /// to do).
    Refused(ReplicaError),
    /// The role or its privileges could not be read (the server's message).
    Unreadable(String),
}

/// Reads the connected role and judges whether it may apply the provider's SQL: a
/// superuser may; an ordinary role may from PostgreSQL 15 on, once granted SET on
/// `session_replication_role`.
///
/// # Errors
///
/// [`ApplierError::Refused`] saying what to do, or [`ApplierError::Unreadable`].
pub async fn applier(client: &Client) -> Result<Applier, ApplierError> {
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper,
                    pg_catalog.current_setting('server_version_num')::int
               FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| ApplierError::Unreadable(slony_shared::pg::describe_error(&e)))?;
    let (user, superuser, version): (String, bool, i32) = (row.get(0), row.get(1), row.get(2));
    if superuser {
        return Ok(Applier { user, superuser });
    }
    if let Some(why) = too_old(version) {
        return Err(ApplierError::Refused(ReplicaError::Privilege(format!(
            "the database user {user} is not a superuser, and {why}: connect as a superuser \
             until the replica runs PostgreSQL 15 or later, then run `slony-receiver init \
             --apply-role {user}`"
        ))));
    }
    let may_set: bool = client
        .query_one(
            "SELECT pg_catalog.has_parameter_privilege('session_replication_role', 'SET')",
            &[],
        )
        .await
        .map_err(|e| ApplierError::Unreadable(slony_shared::pg::describe_error(&e)))?
        .get(0);
    if may_set {
        return Ok(Applier { user, superuser });
    }
    Err(ApplierError::Refused(ReplicaError::Privilege(format!(
        "the database user {user} may not SET session_replication_role, which applying the \
         provider's SQL needs: have a superuser run `slony-receiver init --apply-role {user}` \
         (it also gives {user} the replicated tables)"
    ))))
}

/// What [`check_applier`] warns about a superuser: SQL from the provider runs with every
/// right on the server.
pub fn superuser_risk(user: &str) -> String {
    format!(
        "the replica database user {user} is a superuser: SQL from the provider \
         (archives, subscription changes) runs with full rights on this server, so a \
         compromised provider could take it over. Apply as an ordinary role instead: \
         see `slony-receiver init --apply-role`"
    )
}

/// Warns once per process (every `pull --once`, every start of the daemon) when the
/// connected role is a superuser; refuses a role that may not set
/// `session_replication_role`, before anything is downloaded or applied.
///
/// # Errors
///
/// [`ReplicaError::Privilege`] saying what to do. A failure to read the role is not one:
/// the steps after report it.
pub async fn check_applier(client: &Client) -> Result<(), ReplicaError> {
    static SUPERUSER_WARNED: AtomicBool = AtomicBool::new(false);
    match applier(client).await {
        Ok(a) => {
            if a.superuser && !SUPERUSER_WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("{}", superuser_risk(&a.user));
            }
            Ok(())
        }
        Err(ApplierError::Refused(e)) => Err(e),
        Err(ApplierError::Unreadable(e)) => {
            tracing::debug!(error = %e, "cannot read the database role or its privileges");
            Ok(())
        }
    }
}

/// Why a server of `version` (`server_version_num`) cannot let an ordinary role apply.
fn too_old(version: i32) -> Option<String> {
    // From 10 on the major version is one number; before, two (9.6).
    let major = if version >= 100000 {
        (version / 10000).to_string()
    } else {
        format!("{}.{}", version / 10000, version / 100 % 100)
    };
    (version < PARAMETER_GRANTS).then(|| {
        format!(
            "PostgreSQL {major} lets only superusers SET session_replication_role (granting \
             SET on a parameter needs PostgreSQL 15 or later)"
        )
    })
}

/// Why `role` cannot be the apply role, judged by its name alone.
fn bad_role_name(role: &str) -> Option<&'static str> {
    if role.is_empty() {
        Some("the role name is empty")
    } else if role.len() > 63 {
        Some("PostgreSQL names are at most 63 bytes long")
    } else if role.contains('\0') {
        Some("the role name holds a NUL character")
    } else if role.starts_with("pg_") {
        Some("names starting with pg_ belong to PostgreSQL's own roles")
    } else if RESERVED_ROLES.contains(&role.to_ascii_lowercase().as_str()) {
        Some("PostgreSQL reserves that name")
    } else {
        None
    }
}

/// What `init --apply-role` is asked to do.
pub struct ApplyRole<'a> {
    /// The role that is to apply archives.
    pub role: &'a str,
    /// Create the tracking schema when it is missing (not for a new site whose
    /// `subscribe-series` creates it).
    pub create_schema: bool,
    /// The archive a created schema starts at.
    pub counter: Counter,
    /// When the provider created that archive.
    pub created: &'a str,
}

/// The state of the tracking schema before the change.
enum Tracking {
    /// No `_<cluster>` schema.
    Missing,
    /// A tracking schema (it has `sl_archive_tracking`).
    Present,
}

/// Runs `init --apply-role`; returns the exit code. Everything happens in one
/// transaction, so a failure changes nothing.
pub async fn apply_role(cfg: &ReceiverConfig, req: &ApplyRole<'_>) -> anyhow::Result<u8> {
    let role = req.role;
    if let Some(why) = bad_role_name(role) {
        eprintln!("slony-receiver: --apply-role {role:?}: {why}; nothing changed");
        return Ok(exit::CONFIG);
    }
    let mut client = crate::replica::connect(cfg).await?;
    let target = match inspect_target(&client, cfg, role).await? {
        Ok(target) => target,
        Err(refusal) => {
            eprintln!("slony-receiver: {refusal}");
            return Ok(exit::CONFIG);
        }
    };

    let mut done = Vec::new();
    let tx = crate::execute::ddl_transaction(&mut client).await?;
    grant_role(&tx, role, &target, &mut done).await?;
    if prepare_schema(&tx, cfg, req, target.tracking, &mut done).await? {
        let changed = own_schema(&tx, &cfg.cluster, role).await?;
        done.push(format!(
            "{role} owns schema {} and everything in it ({})",
            cfg.cluster.schema(),
            changed_text(&changed)
        ));
    }
    give_replicated(&tx, &cfg.cluster, role, &mut done).await?;
    tx.commit().await.map_err(doing("committing"))?;

    print_report(cfg, role, &target.database, &done);
    Ok(exit::OK)
}

/// What `init --apply-role` found before changing anything.
struct Target {
    /// The database connected to.
    database: String,
    /// The apply role, if it exists: whether it may log in.
    role_can_login: Option<bool>,
    /// The tracking schema.
    tracking: Tracking,
}

/// Reads the connected role, the server, the apply role and the tracking schema.
///
/// # Returns
///
/// What was found, or the line that tells the operator why nothing can be changed: the
/// connected role is no superuser, the server is older than PostgreSQL 15, the apply role
/// is a superuser, or the cluster's schema is not a tracking schema.
async fn inspect_target(
    client: &Client,
    cfg: &ReceiverConfig,
    role: &str,
) -> anyhow::Result<Result<Target, String>> {
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper,
                    pg_catalog.current_setting('server_version_num')::int,
                    pg_catalog.current_setting('server_version'), pg_catalog.current_database()::text
               FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(doing("reading the connected role"))?;
    let (me, superuser, version, version_text, database): (String, bool, i32, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if !superuser {
        return Ok(Err(format!(
            "init --apply-role grants privileges, so it must connect as a \
             superuser; the configured database user {me} is not one. Run it with a copy of \
             the configuration whose [database] user is a superuser; nothing changed"
        )));
    }
    if let Some(why) = too_old(version) {
        return Ok(Err(format!(
            "this replica runs PostgreSQL {version_text}: {why}, so no ordinary \
             role can apply archives here. Keep applying as a superuser (pull warns about it \
             on every start) and run this again once the replica runs PostgreSQL 15 or later; \
             nothing changed"
        )));
    }
    let existing = client
        .query_opt(
            "SELECT rolsuper, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .map_err(doing("looking up the role"))?
        .map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1)));
    if let Some((true, _)) = existing {
        return Ok(Err(format!(
            "role {role} is a superuser; the apply role must be an ordinary \
             one (give another name, or ALTER ROLE {} NOSUPERUSER first); nothing changed",
            quote_ident(role)
        )));
    }
    let tracking = match inspect_schema(client, &cfg.cluster).await? {
        Ok(t) => t,
        Err(why) => return Ok(Err(format!("{why}; nothing changed"))),
    };
    Ok(Ok(Target {
        database,
        role_can_login: existing.map(|(_, login)| login),
        tracking,
    }))
}

/// Creates the role when it is missing, and grants it SET on `session_replication_role`
/// and CONNECT, CREATE on the database.
async fn grant_role(
    tx: &impl GenericClient,
    role: &str,
    target: &Target,
    done: &mut Vec<String>,
) -> anyhow::Result<()> {
    let q = quote_ident(role);
    match target.role_can_login {
        None => {
            tx.batch_execute(&format!("CREATE ROLE {q} LOGIN"))
                .await
                .map_err(doing("creating the role"))?;
            done.push(format!(
                "created role {role} (LOGIN, no password: the operator sets one)"
            ));
        }
        Some(true) => done.push(format!("role {role} exists")),
        Some(false) => done.push(format!(
            "role {role} exists but may not log in (NOLOGIN): give it LOGIN before pull connects as it"
        )),
    }
    let database = &target.database;
    tx.batch_execute(&format!(
        "GRANT SET ON PARAMETER session_replication_role TO {q};
         GRANT CONNECT, CREATE ON DATABASE {} TO {q}",
        quote_ident(database)
    ))
    .await
    .map_err(doing("granting the parameter and database privileges"))?;
    done.push("granted SET on parameter session_replication_role".into());
    done.push(format!("granted CONNECT, CREATE on database {database}"));
    Ok(())
}

/// Creates a missing tracking schema when asked to, or re-creates the functions of an
/// existing one.
///
/// # Returns
///
/// Whether the tracking schema is there now.
async fn prepare_schema(
    tx: &impl GenericClient,
    cfg: &ReceiverConfig,
    req: &ApplyRole<'_>,
    tracking: Tracking,
    done: &mut Vec<String>,
) -> anyhow::Result<bool> {
    let schema = cfg.cluster.schema();
    Ok(match tracking {
        Tracking::Missing if req.create_schema => {
            tx.batch_execute(&format!(
                "{}{}",
                offline::tracking_schema_sql(&cfg.cluster),
                offline::tracking_row_sql(&cfg.cluster, req.counter, req.created)
            ))
            .await
            .map_err(doing("creating the tracking schema"))?;
            done.push(format!(
                "created the tracking schema {schema} at archive {}",
                req.counter
            ));
            true
        }
        Tracking::Missing => {
            done.push(format!(
                "no tracking schema {schema}: subscribe-series creates it, run as {}",
                req.role
            ));
            false
        }
        Tracking::Present => {
            tx.batch_execute(&offline::functions_sql(&cfg.cluster))
                .await
                .map_err(doing("re-creating the tracking schema's functions"))?;
            done.push(format!(
                "re-created the functions of {schema} (search_path pinned to {})",
                offline::PINNED_SEARCH_PATH
            ));
            true
        }
    })
}

/// Gives `role` the replicated tables and sequences and their schemas
/// ([`own_replicated`]), and says so in `done`.
async fn give_replicated(
    tx: &impl GenericClient,
    cluster: &ClusterName,
    role: &str,
    done: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (tables, sequences, schemas) = own_replicated(tx, cluster, role).await?;
    done.push(format!(
        "{role} owns the {} replicated table(s) ({}) and {} sequence(s) ({})",
        tables.0,
        changed_text(&tables.1),
        sequences.0,
        changed_text(&sequences.1)
    ));
    if !schemas.is_empty() {
        done.push(format!(
            "granted USAGE, CREATE on schema(s) {}",
            schemas.join(", ")
        ));
    }
    Ok(())
}

/// Prints what was done, and what the operator does next.
fn print_report(cfg: &ReceiverConfig, role: &str, database: &str, done: &[String]) {
    println!(
        "init --apply-role {role} on database {database} (cluster {}):",
        cfg.cluster
    );
    for line in done {
        println!("  {line}");
    }
    println!(
        "Next: give {role} a password (ALTER ROLE {} PASSWORD '...') or another way to log \
         in (pg_hba.conf), set [database] user = \"{role}\" (and password_env) in the \
         configuration pull and subscribe-series use, and keep this superuser configuration \
         for the DBA. Run this again after tables were added by hand: it only fixes \
         ownership and grants.",
        quote_ident(role)
    );
}

/// Whether the cluster's schema is missing or a log-shipping tracking schema; `Err` with
/// the reason when it is something else (a Slony node's own schema, a stranger).
async fn inspect_schema(
    client: &Client,
    cluster: &ClusterName,
) -> anyhow::Result<Result<Tracking, String>> {
    let row = client
        .query_one(
            "SELECT pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL,
                    pg_catalog.to_regclass(pg_catalog.quote_ident($1) || '.sl_archive_tracking') IS NOT NULL,
                    pg_catalog.to_regclass(pg_catalog.quote_ident($1) || '.sl_node') IS NOT NULL",
            &[&format!("_{}", cluster.as_str())],
        )
        .await
        .map_err(doing("looking at the tracking schema"))?;
    let (exists, tracking, node): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let schema = cluster.schema();
    Ok(match (exists, tracking, node) {
        (false, _, _) => Ok(Tracking::Missing),
        (true, _, true) => Err(format!(
            "schema {schema} holds sl_node: it is a Slony-I node's own schema, not a \
             log-shipping replica's; this is the wrong database"
        )),
        (true, true, false) => Ok(Tracking::Present),
        (true, false, false) => Err(format!(
            "schema {schema} exists but has no sl_archive_tracking: it is not a log-shipping \
             tracking schema"
        )),
    })
}

/// What changed hands, for the report: the names (up to 8), a count, or nothing.
fn changed_text(changed: &[String]) -> String {
    match changed.len() {
        0 => "nothing to change".into(),
        n if n <= 8 => format!("changed: {}", changed.join(", ")),
        n => format!("changed: {n} objects"),
    }
}

/// Gives `role` the tracking schema and every table, sequence, view, routine and type in
/// it; returns what changed hands.
async fn own_schema(
    tx: &impl GenericClient,
    cluster: &ClusterName,
    role: &str,
) -> anyhow::Result<Vec<String>> {
    let nsp = format!("_{}", cluster.as_str());
    // Indexes, TOAST tables and the sequences of a column follow their table; table row
    // types and array types follow what they belong to.
    let rows = tx
        .query(
            "SELECT 'SCHEMA', pg_catalog.quote_ident(n.nspname), n.nspowner
               FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
             UNION ALL
             SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                        WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                        WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END,
                    pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
                    c.relowner
               FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
                AND NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_depend d
                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                       AND d.objid = c.oid
                       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                       AND d.deptype IN ('a', 'i'))
             UNION ALL
             SELECT 'ROUTINE',
                    pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
                        || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
                    p.proowner
               FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = $1
             UNION ALL
             SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                    pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.typname),
                    t.typowner
               FROM pg_catalog.pg_type t
               JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname = $1 AND t.typtype IN ('d', 'e', 'r')",
            &[&nsp],
        )
        .await
        .map_err(doing("listing the tracking schema's objects"))?;
    let role_oid = role_oid(tx, role).await?;
    let mut changed = Vec::new();
    for row in rows {
        let (kind, name, owner): (String, String, u32) = (row.get(0), row.get(1), row.get(2));
        if owner == role_oid {
            continue;
        }
        tx.batch_execute(&format!(
            "ALTER {kind} {name} OWNER TO {}",
            quote_ident(role)
        ))
        .await
        .map_err(doing(&format!("giving {name} to {role}")))?;
        changed.push(name);
    }
    Ok(changed)
}

/// Gives `role` the replicated tables (see [`guard::replicated_tables`]) and the
/// sequences beside them, and USAGE and CREATE on their schemas (subscription changes
/// create tables there). Returns (tables, changed), (sequences, changed) and the schemas.
async fn own_replicated(
    tx: &impl GenericClient,
    cluster: &ClusterName,
    role: &str,
) -> anyhow::Result<((usize, Vec<String>), (usize, Vec<String>), Vec<String>)> {
    let tables = guard::replicated_tables(tx, cluster).await?.tables;
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
    let role_oid = role_oid(tx, role).await?;
    let owners = tx
        .query(
            "SELECT c.relowner FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(s, t, o)
               JOIN pg_catalog.pg_namespace n ON n.nspname = w.s
               JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.t
              ORDER BY w.o",
            &[&schemas, &names],
        )
        .await
        .map_err(doing("reading the replicated tables' owners"))?;
    let q = quote_ident(role);
    let mut changed_tables = Vec::new();
    for (t, row) in tables.iter().zip(owners) {
        if row.get::<_, u32>(0) == role_oid {
            continue;
        }
        // The sequences of its columns (serial, identity) come along.
        tx.batch_execute(&format!("ALTER TABLE {} OWNER TO {q}", t.quoted()))
            .await
            .map_err(doing(&format!("giving {t} to {role}")))?;
        changed_tables.push(t.to_string());
    }
    // Sequences by the rule of the replicated tables, but those of a column: they
    // follow their table.
    let sequences = tx
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relowner
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'S' AND {}
                    AND NOT EXISTS (
                        SELECT 1 FROM pg_catalog.pg_depend d
                         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                           AND d.objid = c.oid
                           AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                           AND d.deptype IN ('a', 'i'))
                  ORDER BY 1, 2",
                guard::REPLICATED_RELATION
            ),
            &[&format!("_{}", cluster.as_str())],
        )
        .await
        .map_err(doing("listing the sequences"))?;
    let mut all_schemas: Vec<String> = tables.iter().map(|t| t.schema.to_string()).collect();
    let mut changed_sequences = Vec::new();
    let sequence_count = sequences.len();
    for row in sequences {
        let (nsp, name, owner): (String, String, u32) = (row.get(0), row.get(1), row.get(2));
        let qualified = format!("{}.{}", quote_ident(&nsp), quote_ident(&name));
        all_schemas.push(nsp.clone());
        if owner == role_oid {
            continue;
        }
        tx.batch_execute(&format!("ALTER SEQUENCE {qualified} OWNER TO {q}"))
            .await
            .map_err(doing(&format!("giving {qualified} to {role}")))?;
        changed_sequences.push(format!("{nsp}.{name}"));
    }
    all_schemas.sort();
    all_schemas.dedup();
    for nsp in &all_schemas {
        tx.batch_execute(&format!(
            "GRANT USAGE, CREATE ON SCHEMA {} TO {q}",
            quote_ident(nsp)
        ))
        .await
        .map_err(doing(&format!("granting USAGE, CREATE on schema {nsp}")))?;
    }
    Ok((
        (tables.len(), changed_tables),
        (sequence_count, changed_sequences),
        all_schemas,
    ))
}

/// The oid of `role`.
async fn role_oid(client: &impl GenericClient, role: &str) -> anyhow::Result<u32> {
    let row = client
        .query_one(
            "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .map_err(doing("looking up the role"))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_before_15_are_told_why() {
        let why = too_old(140011).unwrap();
        assert!(
            why.starts_with("PostgreSQL 14 lets only superusers"),
            "{why}"
        );
        assert!(why.contains("15 or later"), "{why}");
        assert!(too_old(90624).unwrap().starts_with("PostgreSQL 9.6 "));
        assert!(too_old(150000).is_none());
        assert!(too_old(170002).is_none());
    }

    #[test]
    fn reserved_and_impossible_role_names_are_refused() {
        for bad in ["", "pg_monitor", "public", "PUBLIC", "current_user", "none"] {
            assert!(bad_role_name(bad).is_some(), "{bad:?}");
        }
        assert!(bad_role_name(&"x".repeat(64)).is_some());
        for good in ["slony_apply", "Apply Role", "x"] {
            assert_eq!(bad_role_name(good), None, "{good:?}");
        }
    }
}
