//! Applying the manager's bootstrap SQL (`<node>.sql.gz`): the tables, their data and,
//! for a new site, the tracking schema, in ONE transaction, streamed from the gzip file.
//!
//! The SQL comes from the other side, so its statements are checked: nothing that ends or
//! splits the transaction, no VACUUM, no COPY to or from server files, no psql commands.

use crate::execute::{self, ExecError, Pipeline};
use slony_shared::archive::parse::{words, ParseError};
use slony_shared::archive::{Item, Splitter};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_postgres::Client;

/// Why the bootstrap SQL was not applied (nothing of it was committed).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A statement failed.
    #[error("line {line}: {message}\n  statement: {statement}")]
    Sql {
        /// 1-based line in the SQL.
        line: u64,
        /// The start of the statement.
        statement: String,
        /// PostgreSQL's message.
        message: String,
    },
    /// The SQL holds something it must not.
    #[error("line {line}: {reason}")]
    Refused {
        /// 1-based line.
        line: u64,
        /// What was refused.
        reason: String,
    },
    /// The file is not readable SQL (cut short, bad gzip, not UTF-8).
    #[error("reading the SQL: {0}")]
    Parse(#[from] ParseError),
}

/// Counts the compressed bytes read, for progress.
struct Counting<R> {
    /// The file.
    inner: R,
    /// Bytes read so far, shared with the progress display.
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn check(sql: &str, line: u64) -> Result<(), BootstrapError> {
    let w = words(sql);
    let first = w.first().map(String::as_str).unwrap_or("");
    let refused = match first {
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            Some("transaction control is not allowed: the whole SQL runs in one transaction")
        }
        "prepare" if w.get(1).map(String::as_str) == Some("transaction") => {
            Some("transaction control is not allowed")
        }
        "vacuum" => Some("VACUUM cannot run inside the transaction"),
        "copy" => Some(
            "COPY from or to server files or programs is not allowed; only COPY ... FROM STDIN",
        ),
        _ => None,
    };
    match refused {
        Some(reason) => Err(BootstrapError::Refused {
            line,
            reason: format!("{reason}: `{}`", execute::excerpt(sql)),
        }),
        None => Ok(()),
    }
}

/// Applies the gzip-compressed SQL at `path` in one transaction. `progress` is called
/// now and then with (compressed bytes read, file size).
pub async fn apply(
    client: &Client,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), BootstrapError> {
    let file = File::open(path).map_err(|e| BootstrapError::Parse(e.into()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: file,
        read: read.clone(),
    };
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(256 * 1024, counting));
    let mut splitter = Splitter::new(BufReader::with_capacity(256 * 1024, gz));
    let result = run(client, &mut splitter, &read, size, &mut progress).await;
    match result {
        Ok(()) => match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => Err(sql_error(0, "COMMIT", &e)),
        },
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

fn sql_error(line: u64, sql: &str, e: &tokio_postgres::Error) -> BootstrapError {
    BootstrapError::Sql {
        line,
        statement: execute::excerpt(sql),
        message: execute::describe_pg_error(e),
    }
}

fn exec_error(e: ExecError) -> BootstrapError {
    match e {
        ExecError::Db { line, sql, source } => sql_error(line, &sql, &source),
        ExecError::Parse(p) => BootstrapError::Parse(p),
    }
}

async fn run<R: std::io::BufRead>(
    client: &Client,
    splitter: &mut Splitter<R>,
    read: &AtomicU64,
    size: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), BootstrapError> {
    let mut pipeline = Pipeline::default();
    // Replica role: user triggers on existing tables stay quiet, as with slony1_dump.sh.
    let begin = "SET session_replication_role TO replica; BEGIN".to_string();
    pipeline.push(client, begin, 0).await.map_err(exec_error)?;
    let mut buf = Vec::new();
    while let Some(item) = splitter.next_item()? {
        match item {
            Item::Comment { .. } => {}
            Item::Statement { sql, line } => {
                check(&sql, line)?;
                pipeline.push(client, sql, line).await.map_err(exec_error)?;
            }
            Item::CopyIn { sql, line } => {
                pipeline.flush(client).await.map_err(exec_error)?;
                execute::copy_in(client, splitter, sql.as_str(), &sql, line, &mut buf)
                    .await
                    .map_err(exec_error)?;
                progress(read.load(Ordering::Relaxed), size);
            }
        }
    }
    pipeline.flush(client).await.map_err(exec_error)?;
    progress(size, size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_transaction_escapes() {
        assert!(check("create table s1.t (id int)", 1).is_ok());
        assert!(check("insert into s1.t values (1)", 1).is_ok());
        for bad in [
            "commit",
            "COMMIT WORK",
            "rollback",
            "begin",
            "savepoint a",
            "vacuum full",
            "copy s1.t from '/etc/passwd'",
            "prepare transaction 'x'",
        ] {
            assert!(
                matches!(check(bad, 3), Err(BootstrapError::Refused { line: 3, .. })),
                "{bad}"
            );
        }
    }
}
