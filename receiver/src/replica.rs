//! The replica database: connecting to it, where it is in the stream, its own records of
//! subscription changes, and the classes of its failures that every command reports the
//! same way.

use crate::config::ReceiverConfig;
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;
use slony_shared::pg::{self, Target};
use slony_shared::trigger::Nonce;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// What is wrong with the replica database, as every command reports it.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The replica database cannot be reached.
    #[error("cannot connect to the replica database ({conninfo}): {message}")]
    Unavailable {
        /// Where we tried (passwords hidden).
        conninfo: String,
        /// Why.
        message: String,
    },
    /// The replica has no `_<cluster>.sl_archive_tracking`.
    #[error("this database was not initialised for log shipping: {schema}.sl_archive_tracking is missing; run `slony-receiver subscribe-series` first")]
    NotInitialised {
        /// The cluster schema.
        schema: String,
    },
    /// Reading the tracking table failed otherwise.
    #[error("reading the replica's archive counter: {0}")]
    Tracking(String),
    /// The database user may not apply the provider's SQL ([`crate::privilege`]).
    #[error("{0}")]
    Privilege(String),
}

impl ReplicaError {
    /// Which exit-code family this failure belongs to: an unreachable database is
    /// [`crate::pull::FailureClass::Database`], the others mean the replica cannot be
    /// applied to as it is.
    pub fn class(&self) -> crate::pull::FailureClass {
        match self {
            ReplicaError::Unavailable { .. } => crate::pull::FailureClass::Database,
            _ => crate::pull::FailureClass::Apply,
        }
    }
}

/// The replica's position, read from `sl_archive_tracking`.
#[derive(Debug, Clone)]
pub struct Position {
    /// Last applied archive.
    pub counter: Counter,
    /// When the provider created it.
    pub created: Option<String>,
    /// When it was applied here.
    pub applied: Option<String>,
}

/// Connects to the replica database.
///
/// # Errors
///
/// [`ReplicaError::Unavailable`], saying why.
pub async fn connect(cfg: &ReceiverConfig) -> Result<Client, ReplicaError> {
    let client = pg::connect(Target::of(&cfg.database, "slony-receiver"))
        .await
        .map_err(|e| ReplicaError::Unavailable {
            conninfo: cfg.database.redacted(),
            message: e.to_string(),
        })?;
    // For the DDL of 'S' rows, which runs with this path, not the Slony functions' own.
    if let Err(e) = client
        .batch_execute(slony_shared::offline::REMEMBER_DDL_SEARCH_PATH)
        .await
    {
        tracing::warn!(error = %pg::describe_error(&e), "cannot record the session's search_path for DDL");
    }
    Ok(client)
}

/// Reads the replica's position from `"_<cluster>".sl_archive_tracking`.
///
/// # Errors
///
/// [`ReplicaError::NotInitialised`] without the table, `Tracking` if it does not hold
/// exactly one sane row, `Unavailable` if the connection is gone.
pub async fn read_position(
    client: &Client,
    cluster: &ClusterName,
) -> Result<Position, ReplicaError> {
    let sql = format!(
        "SELECT at_counter, at_created::text, at_applied::text FROM {}.sl_archive_tracking",
        cluster.schema()
    );
    let rows = client.query(sql.as_str(), &[]).await.map_err(|e| {
        if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME)
        {
            ReplicaError::NotInitialised {
                schema: cluster.schema(),
            }
        } else if e.is_closed() {
            ReplicaError::Unavailable {
                conninfo: String::new(),
                message: e.to_string(),
            }
        } else {
            ReplicaError::Tracking(pg::describe_error(&e))
        }
    })?;
    match rows.as_slice() {
        [row] => {
            let counter: Option<i64> = row.get(0);
            let counter = counter
                .filter(|c| *c >= 0)
                .ok_or_else(|| ReplicaError::Tracking("at_counter is NULL or negative".into()))?;
            Ok(Position {
                counter: Counter(counter as u64),
                created: row.get(1),
                applied: row.get(2),
            })
        }
        rows => Err(ReplicaError::Tracking(format!(
            "{}.sl_archive_tracking must hold exactly one row, it holds {}",
            cluster.schema(),
            rows.len()
        ))),
    }
}

/// Tables an unsubscription drops once the archive of its snapshot is applied, in the
/// tracking schema (`nsp`, `rel`, `after_counter`); `pull` drops them in that archive's
/// transaction.
pub const PENDING_DROP_TABLE: &str = "sl_pending_drop";

/// The replica's record of the subscription changes it applied, in the tracking schema.
pub const APPLIED_TABLE: &str = "sl_subscription_applied";

/// The first of `tables` whose drop is still pending, and the archive it waits for: an
/// unsubscription of it has not taken effect yet, and the archives before it still carry
/// its rows, so it cannot be subscribed again before pull has passed that archive.
///
/// # Errors
///
/// The query failed.
pub async fn pending_drop_of(
    client: &Client,
    cluster: &ClusterName,
    tables: &[slony_shared::ident::QualifiedTable],
) -> Result<Option<(slony_shared::ident::QualifiedTable, i64)>, tokio_postgres::Error> {
    let table = format!("{}.{PENDING_DROP_TABLE}", cluster.schema());
    if !table_exists(client, &table).await? {
        return Ok(None);
    }
    for t in tables {
        let rows = client
            .query(
                &format!("SELECT after_counter FROM {table} WHERE nsp = $1 AND rel = $2"),
                &[&t.schema, &t.table],
            )
            .await?;
        if let Some(r) = rows.first() {
            return Ok(Some((t.clone(), r.get(0))));
        }
    }
    Ok(None)
}

/// Whether the table `name` (quoted, qualified) exists on the replica: the receiver's
/// records are made by the first change that needs them.
///
/// # Errors
///
/// The query failed.
pub async fn table_exists(client: &Client, name: &str) -> Result<bool, tokio_postgres::Error> {
    let found: Option<String> = client
        .query_one("SELECT pg_catalog.to_regclass($1)::text", &[&name])
        .await?
        .get(0);
    Ok(found.is_some())
}

/// Whether the replica recorded the SQL of the request with `nonce` as applied.
///
/// # Errors
///
/// The query failed.
pub async fn was_applied(
    client: &Client,
    cluster: &ClusterName,
    nonce: &Nonce,
) -> Result<bool, tokio_postgres::Error> {
    let table = format!("{}.{APPLIED_TABLE}", cluster.schema());
    if !table_exists(client, &table).await? {
        return Ok(false);
    }
    let n: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE nonce = $1"),
            &[&nonce.as_str()],
        )
        .await?
        .get(0);
    Ok(n > 0)
}
