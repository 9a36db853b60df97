//! Applying one archive to the replica, as psql would, but safer: statements and COPY
//! blocks are streamed from the file (bounded memory), the whole archive runs in one
//! transaction the applier owns, and it commits only after the envelope check has seen
//! the archive end cleanly. The tracking VACUUM runs after the commit, once per
//! `vacuum_every` archives (and at the end of a run), not inside the transaction.
//!
//! Statements between COPY blocks are pipelined (sent together, answers read in order),
//! so a pre-2.2 archive of many INSERTs costs one round trip per window, while the first
//! failing statement is still named by its line.

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::SinkExt;
use slony_shared::archive::{ArchiveError, ArchiveName, Envelope, Header, Item, Splitter, Step};
use slony_shared::ident::ClusterName;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Pipelined statements are flushed when this many are waiting.
const PIPELINE_STATEMENTS: usize = 256;
/// ... or when their text reaches this size.
const PIPELINE_BYTES: usize = 4 * 1024 * 1024;

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

/// Renders a PostgreSQL error with everything an operator needs.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}:  {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\n  DETAIL:  {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("\n  HINT:  {h}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("\n  CONTEXT:  {w}"));
            }
            s.push_str(&format!(" (SQLSTATE {})", db.code().code()));
            s
        }
        None => e.to_string(),
    }
}

fn excerpt(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        one.chars().take(197).collect::<String>() + "..."
    } else {
        one
    }
}

/// The row number PostgreSQL reports for a COPY error ("COPY t, line 3, ...").
fn copy_row(e: &tokio_postgres::Error) -> Option<u64> {
    let w = e.as_db_error()?.where_()?;
    let rest = &w[w.find(", line ")? + 7..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

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

    fn sql_error(
        &self,
        name: &ArchiveName,
        line: u64,
        sql: &str,
        e: tokio_postgres::Error,
    ) -> ApplyError {
        if e.is_closed() || e.as_db_error().is_none() && e.code().is_none() {
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
            statement: excerpt(sql),
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

    async fn apply_body(&mut self, path: &Path, name: &ArchiveName) -> Result<Header, ApplyError> {
        let archive_err = |source: ArchiveError| ApplyError::Archive {
            name: *name,
            source,
        };
        let file = File::open(path).map_err(|e| archive_err(e.into()))?;
        let mut splitter = Splitter::new(BufReader::with_capacity(256 * 1024, file));
        let mut envelope = Envelope::new(&self.cluster, name.counter);
        // The transaction starts with the first pipelined batch: no round trip of its own.
        // Archives may switch the role for DDL; each starts again as a replica.
        let mut pending: Vec<(String, u64)> =
            vec![("SET session_replication_role TO replica; BEGIN".to_string(), 0)];
        let mut pending_bytes = 0;
        let mut buf = Vec::new();
        while let Some(item) = splitter.next_item().map_err(|e| archive_err(e.into()))? {
            let step = envelope.step(&item).map_err(archive_err)?;
            match (step, item) {
                (Step::Execute, Item::Statement { sql, line }) => {
                    pending_bytes += sql.len();
                    pending.push((sql, line));
                    if pending.len() >= PIPELINE_STATEMENTS || pending_bytes >= PIPELINE_BYTES {
                        self.flush(name, &mut pending).await?;
                        pending_bytes = 0;
                    }
                }
                (Step::CopyIn, Item::CopyIn { sql, line }) => {
                    self.flush(name, &mut pending).await?;
                    pending_bytes = 0;
                    self.copy(name, &mut splitter, &sql, line, &mut buf).await?;
                }
                (Step::Commit, _) => {
                    self.flush(name, &mut pending).await?;
                    pending_bytes = 0;
                }
                // Comments, the archive's own BEGIN, and the VACUUM (run after commit).
                _ => {}
            }
        }
        self.flush(name, &mut pending).await?;
        envelope.finish().map_err(archive_err)
    }

    async fn flush(
        &self,
        name: &ArchiveName,
        pending: &mut Vec<(String, u64)>,
    ) -> Result<(), ApplyError> {
        if pending.is_empty() {
            return Ok(());
        }
        let results = join_all(
            pending
                .iter()
                .map(|(sql, _)| self.client.batch_execute(sql)),
        )
        .await;
        let first_error = results
            .into_iter()
            .zip(pending.iter())
            .find_map(|(r, (sql, line))| r.err().map(|e| (e, sql, *line)));
        let out = match first_error {
            Some((e, sql, line)) => Err(self.sql_error(name, line, sql, e)),
            None => Ok(()),
        };
        pending.clear();
        out
    }

    async fn copy<R: std::io::BufRead>(
        &self,
        name: &ArchiveName,
        splitter: &mut Splitter<R>,
        sql: &str,
        line: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), ApplyError> {
        let sink = self
            .client
            .copy_in::<str, Bytes>(sql)
            .await
            .map_err(|e| self.sql_error(name, line, sql, e))?;
        futures_util::pin_mut!(sink);
        loop {
            let more = splitter.copy_chunk(buf).map_err(|e| ApplyError::Archive {
                name: *name,
                source: e.into(),
            })?;
            if !buf.is_empty() {
                if let Err(e) = sink.send(Bytes::copy_from_slice(buf)).await {
                    let at = line + copy_row(&e).unwrap_or(0);
                    return Err(self.sql_error(name, at, sql, e));
                }
            }
            if !more {
                break;
            }
        }
        match sink.finish().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let at = line + copy_row(&e).unwrap_or(0);
                Err(self.sql_error(name, at, sql, e))
            }
        }
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
