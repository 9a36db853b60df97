//! Applying one archive to the replica, as psql would, but safer: statements and COPY
//! blocks are streamed from the file (bounded memory), the whole archive runs in one
//! transaction the applier owns, and it commits only after the envelope check has seen
//! the archive end cleanly. The tracking VACUUM runs after the commit, once per
//! `vacuum_every` archives (and at the end of a run), not inside the transaction.
//!
//! Statements and COPY data go through [`crate::execute`] (pipelined, streamed).

use crate::execute::{self, ExecError, Pipeline};
use slony_shared::archive::{ArchiveError, ArchiveName, Envelope, Header, Item, Splitter, Step};
use slony_shared::ident::ClusterName;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Why an archive was not applied. In every case nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The archive is cut short or invalid.
    #[error("{name}: {source}")]
    Archive {
        /// The archive.
        name: ArchiveName,
        /// What is wrong with it.
        #[source]
        source: ArchiveError,
    },
    /// A statement failed in the database.
    #[error("{name}, line {line}: {message}\n  statement: {statement}")]
    Sql {
        /// The archive.
        name: ArchiveName,
        /// 1-based line in the archive.
        line: u64,
        /// The start of the failing statement.
        statement: String,
        /// PostgreSQL's message (severity, text, detail, hint, SQLSTATE).
        message: String,
    },
    /// The replica is not at the counter this archive follows.
    #[error("{name}: the replica is not at the counter this archive follows: {message}")]
    CounterMismatch {
        /// The archive.
        name: ArchiveName,
        /// PostgreSQL's message from archiveTracking_offline.
        message: String,
    },
    /// The database connection failed or was lost.
    #[error("database connection lost while applying {name}: {source}")]
    Connection {
        /// The archive.
        name: ArchiveName,
        /// The client error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Applies archives over one connection.
pub struct Applier {
    /// The replica connection.
    client: Client,
    /// The cluster, for the envelope check and the VACUUM.
    cluster: ClusterName,
    /// Commits since the last tracking-table VACUUM.
    unvacuumed: u64,
    /// VACUUM after this many commits.
    vacuum_every: u64,
}

pub use crate::execute::describe_pg_error;

impl Applier {
    /// Wraps a connected client.
    pub fn new(client: Client, cluster: ClusterName, vacuum_every: u64) -> Self {
        Applier {
            client,
            cluster,
            unvacuumed: 0,
            vacuum_every: vacuum_every.max(1),
        }
    }

    fn exec_error(&self, name: &ArchiveName, e: ExecError) -> ApplyError {
        match e {
            ExecError::Parse(p) => ApplyError::Archive {
                name: *name,
                source: p.into(),
            },
            ExecError::Db { line, sql, source } => self.sql_error(name, line, &sql, source),
        }
    }

    fn sql_error(
        &self,
        name: &ArchiveName,
        line: u64,
        sql: &str,
        e: tokio_postgres::Error,
    ) -> ApplyError {
        if execute::is_connection_error(&e) {
            return ApplyError::Connection {
                name: *name,
                source: e,
            };
        }
        let message = describe_pg_error(&e);
        if e.code() == Some(&SqlState::RAISE_EXCEPTION) && message.contains("archive counter") {
            return ApplyError::CounterMismatch {
                name: *name,
                message,
            };
        }
        ApplyError::Sql {
            name: *name,
            line,
            statement: execute::excerpt(sql),
            message,
        }
    }

    /// Applies one archive in its own transaction. On any error the transaction is rolled
    /// back and nothing of the archive remains.
    pub async fn apply(&mut self, path: &Path, name: &ArchiveName) -> Result<Header, ApplyError> {
        match self.apply_body(path, name).await {
            Ok(header) => {
                if let Err(e) = self.client.batch_execute("COMMIT").await {
                    return Err(self.sql_error(name, 0, "COMMIT", e));
                }
                self.unvacuumed += 1;
                if self.unvacuumed >= self.vacuum_every {
                    self.vacuum().await;
                }
                Ok(header)
            }
            Err(e) => {
                // A failed ROLLBACK means the connection is gone: the server rolls back.
                let _ = self.client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn apply_body(&self, path: &Path, name: &ArchiveName) -> Result<Header, ApplyError> {
        let archive_err = |source: ArchiveError| ApplyError::Archive {
            name: *name,
            source,
        };
        let exec_err = |e: ExecError| self.exec_error(name, e);
        let file = File::open(path).map_err(|e| archive_err(e.into()))?;
        let mut splitter = Splitter::new(BufReader::with_capacity(256 * 1024, file));
        let mut envelope = Envelope::new(&self.cluster, name.counter);
        let client = &self.client;
        // The transaction starts with the first pipelined batch: no round trip of its own.
        // Archives may switch the role for DDL; each starts again as a replica.
        let mut pipeline = Pipeline::default();
        let begin = "SET session_replication_role TO replica; BEGIN".to_string();
        pipeline.push(client, begin, 0).await.map_err(exec_err)?;
        let mut buf = Vec::new();
        while let Some(item) = splitter.next_item().map_err(|e| archive_err(e.into()))? {
            match (envelope.step(&item).map_err(archive_err)?, item) {
                (Step::Execute, Item::Statement { sql, line }) => {
                    pipeline.push(client, sql, line).await.map_err(exec_err)?
                }
                (Step::CopyIn, Item::CopyIn { sql, line }) => {
                    pipeline.flush(client).await.map_err(exec_err)?;
                    execute::copy_in(client, &mut splitter, &sql, line, &mut buf)
                        .await
                        .map_err(exec_err)?;
                }
                // Comments, the archive's own BEGIN and COMMIT, and the VACUUM (run after
                // the commit).
                _ => {}
            }
        }
        pipeline.flush(client).await.map_err(exec_err)?;
        envelope.finish().map_err(archive_err)
    }

    /// Runs the tracking-table VACUUM if any commit happened since the last one. A
    /// failure here is only a warning: the archives are committed.
    pub async fn vacuum(&mut self) {
        if self.unvacuumed == 0 {
            return;
        }
        let sql = format!(
            "VACUUM ANALYZE {}.sl_archive_tracking",
            self.cluster.schema()
        );
        match self.client.batch_execute(&sql).await {
            Ok(()) => self.unvacuumed = 0,
            Err(e) => {
                tracing::warn!(error = %describe_pg_error(&e), "tracking-table VACUUM failed")
            }
        }
    }
}
