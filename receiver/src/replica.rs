//! The replica database: connecting to it, where it is in the stream, and the classes
//! of its failures that every command reports the same way.

use slony_shared::config::ReceiverConfig;
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;
use slony_shared::pg::{self, Target};
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
