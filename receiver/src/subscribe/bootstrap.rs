//! Applying the manager's bootstrap SQL (`<node>.sql.gz`): the tables and their data, in
//! ONE transaction, streamed from the gzip file. For a new site the receiver creates the
//! tracking schema itself, from its own code, in the same transaction: the provider's SQL
//! never defines functions on the replica.
//!
//! The SQL comes from the other side, so it follows the rules archives follow (see
//! `slony_shared::archive::statement`): each statement is judged by PostgreSQL's parser
//! against the DDL rules (no transaction control, no role or session changes, no COPY to
//! or from files or programs, no catalogs, no function definitions or DO blocks unless
//! the config allows them ...), the only COPY is `COPY <table> (...) FROM STDIN` into an
//! ordinary table, and each statement is sent alone in an extended-protocol message.

use crate::execute::{self, ExecError, Pipeline};
use slony_shared::archive::parse::ParseError;
use slony_shared::archive::statement::{self, Allowances, Refusal, Rules, Statement, Strings};
use slony_shared::archive::{Item, Splitter};
use slony_shared::counter::Counter;
use slony_shared::ident::{quote_literal, ClusterName};
use slony_shared::trigger::Nonce;
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

/// What the bootstrap SQL is checked against, and what the receiver adds to it.
pub struct Bootstrap<'a> {
    /// The cluster the replica follows.
    pub cluster: &'a ClusterName,
    /// For a new site: the snapshot's counter, at which the tracking schema starts.
    pub new_site_at: Option<Counter>,
    /// What the provider's DDL may hold beyond the default rules.
    pub allow: Allowances,
    /// The request this SQL answers, and its snapshot: recorded in the replica in the
    /// same transaction, so whether it was applied is the replica's to say.
    pub request: (&'a Nonce, Counter),
    /// Whether the replica is behind the snapshot: then a `DROP TABLE` of the SQL (an
    /// unsubscription with `allow_drop`) waits until the snapshot's archive is applied,
    /// because the copies before it still carry the table's rows.
    pub behind: bool,
}

use crate::replica::{APPLIED_TABLE, PENDING_DROP_TABLE};

fn refused(line: u64, sql: &str, why: Refusal) -> BootstrapError {
    BootstrapError::Refused {
        line,
        reason: format!("`{}` is refused: {why}", execute::excerpt(sql)),
    }
}

/// Judges one statement of the bootstrap SQL; `copy` says whether its data follows.
fn check(rules: &Rules, sql: &str, line: u64, copy: bool) -> Result<(), BootstrapError> {
    let parsed = statement::parse(sql, Strings::Standard).map_err(|r| refused(line, sql, r))?;
    let shape = parsed.statement().map_err(|r| refused(line, sql, r))?;
    match (copy, shape) {
        (true, Statement::CopyIn { table, .. }) => {
            rules.check_table(&table).map_err(|r| refused(line, sql, r))
        }
        (false, Statement::CopyIn { .. }) => Err(refused(
            line,
            sql,
            Refusal::Grammar("a COPY FROM STDIN written so that its data cannot be found".into()),
        )),
        _ => {
            let used = rules
                .check_ddl(&parsed)
                .map_err(|r| refused(line, sql, r))?;
            if copy {
                return Err(refused(line, sql, Refusal::Copy));
            }
            for allowance in used {
                tracing::warn!(
                    line,
                    "the subscription SQL uses an allowance of [sql] allow: {allowance}"
                );
            }
            Ok(())
        }
    }
}

/// Applies the gzip-compressed SQL at `path` in one transaction. `progress` is called
/// now and then with (compressed bytes read, file size).
pub async fn apply(
    client: &Client,
    path: &Path,
    bootstrap: &Bootstrap<'_>,
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
    let result = run(client, &mut splitter, bootstrap, &read, size, &mut progress).await;
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
    let mut message = slony_shared::pg::describe_error(e);
    if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE) {
        // Most often a table left in place by an unsubscribe without drop.
        message.push_str(
            "\n  What to do: the table is already on this replica (an earlier unsubscribe \
             without allow_drop leaves it in place). Nothing was changed. Drop or rename \
             it on the replica (DROP TABLE ...), then run subscribe-series again: the new \
             copy is loaded from the provider's snapshot.",
        );
    }
    BootstrapError::Sql {
        line,
        statement: execute::excerpt(sql),
        message,
    }
}

fn exec_error(e: ExecError) -> BootstrapError {
    match e {
        ExecError::Db { line, sql, source } => sql_error(line, &sql, &source),
        ExecError::Parse(p) => BootstrapError::Parse(p),
        ExecError::Archive(a) => BootstrapError::Refused {
            line: 0,
            reason: a.to_string(),
        },
    }
}

/// Sends the whole SQL, after the opening statements, without committing.
async fn run<R: std::io::BufRead>(
    client: &Client,
    splitter: &mut Splitter<R>,
    bootstrap: &Bootstrap<'_>,
    read: &AtomicU64,
    size: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), BootstrapError> {
    let mut pipeline = Pipeline::default();
    pipeline
        .push(client, opening(bootstrap), 0)
        .await
        .map_err(exec_error)?;
    let rules = Rules::new(&format!("_{}", bootstrap.cluster.as_str()), bootstrap.allow);
    let mut buf = Vec::new();
    while let Some(item) = splitter.next_item()? {
        match item {
            Item::Comment { .. } => {}
            Item::Statement { sql, line } => {
                check(&rules, &sql, line, false)?;
                send_statement(client, &mut pipeline, bootstrap, sql, line).await?;
            }
            Item::CopyIn { sql, line } => {
                check(&rules, &sql, line, true)?;
                pipeline.flush(client).await.map_err(exec_error)?;
                execute::copy_in(client, sql.as_str(), &sql, line, &mut buf, |b| {
                    splitter.copy_chunk(b).map_err(ExecError::Parse)
                })
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

/// What the transaction starts with: the replica role, standard strings, for a new site
/// the tracking schema, and the tables that record this change and the drops waiting for
/// their snapshot.
fn opening(bootstrap: &Bootstrap<'_>) -> String {
    // Replica role: user triggers on existing tables stay quiet, as with slony1_dump.sh.
    let mut begin = "BEGIN; SET session_replication_role TO replica; \
                     SET LOCAL standard_conforming_strings TO on"
        .to_string();
    let cluster = bootstrap.cluster;
    if let Some(counter) = bootstrap.new_site_at {
        begin.push_str(";\n");
        begin.push_str(&slony_shared::offline::tracking_schema_sql(cluster));
        begin.push_str(&format!(
            "INSERT INTO {}.sl_archive_tracking VALUES ({counter}, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            cluster.schema()
        ));
    }
    // The record of this change, committed with it (the nonce is hexadecimal digits).
    let (nonce, snapshot) = bootstrap.request;
    begin.push_str(&format!(
        ";\nCREATE TABLE IF NOT EXISTS {s}.{APPLIED_TABLE} (nonce text PRIMARY KEY, snapshot bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP);\n\
         INSERT INTO {s}.{APPLIED_TABLE} (nonce, snapshot) VALUES ('{nonce}', {snapshot})",
        s = cluster.schema()
    ));
    begin.push_str(&format!(
        ";\nCREATE TABLE IF NOT EXISTS {s}.{PENDING_DROP_TABLE} (nsp text NOT NULL, rel text NOT NULL, after_counter bigint NOT NULL, PRIMARY KEY (nsp, rel))",
        s = cluster.schema()
    ));
    begin
}

/// Sends one checked statement; a `DROP TABLE` while the replica is behind the snapshot
/// is deferred instead ([`defer_drop`]).
async fn send_statement(
    client: &Client,
    pipeline: &mut Pipeline,
    bootstrap: &Bootstrap<'_>,
    sql: String,
    line: u64,
) -> Result<(), BootstrapError> {
    let dropped = bootstrap
        .behind
        .then(|| statement::parse(&sql, Strings::Standard).ok())
        .flatten()
        .and_then(|p| p.dropped_tables());
    match dropped {
        Some(tables) => defer_drop(client, pipeline, bootstrap, sql, line, tables).await,
        None => pipeline
            .push_provider(client, sql, line)
            .await
            .map_err(exec_error),
    }
}

/// Tries the drop `sql` of `tables` and undoes it, then records the tables in the
/// pending drops, to go with the snapshot's archive.
async fn defer_drop(
    client: &Client,
    pipeline: &mut Pipeline,
    bootstrap: &Bootstrap<'_>,
    sql: String,
    line: u64,
    tables: Vec<(String, String)>,
) -> Result<(), BootstrapError> {
    // Tried now and undone: a drop that cannot succeed (a view or a foreign key of the
    // site's on the table) refuses the change here, instead of stopping pull at the
    // snapshot later.
    pipeline
        .push(client, "SAVEPOINT pending_drop".into(), line)
        .await
        .map_err(exec_error)?;
    pipeline
        .push_provider(client, sql, line)
        .await
        .map_err(exec_error)?;
    pipeline
        .push(client, "ROLLBACK TO SAVEPOINT pending_drop".into(), line)
        .await
        .map_err(exec_error)?;
    let snapshot = bootstrap.request.1;
    for (schema, table) in tables {
        pipeline
            .push(
                client,
                format!(
                    "INSERT INTO {s}.{PENDING_DROP_TABLE} (nsp, rel, after_counter) VALUES ({}, {}, {snapshot}) ON CONFLICT (nsp, rel) DO UPDATE SET after_counter = EXCLUDED.after_counter",
                    quote_literal(&schema),
                    quote_literal(&table),
                    s = bootstrap.cluster.schema()
                ),
                line,
            )
            .await
            .map_err(exec_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_archives_may_not_hold() {
        let cluster = ClusterName::new("lab").unwrap();
        let rules = Rules::new("_lab", Allowances::default());
        let _ = &cluster;
        assert!(check(&rules, "create table s1.t (id int)", 1, false).is_ok());
        assert!(check(&rules, "insert into s1.t values (1)", 1, false).is_ok());
        assert!(check(&rules, "COPY \"s1\".\"t\" (\"id\") FROM stdin", 1, true).is_ok());
        for bad in [
            "commit",
            "COMMIT WORK",
            "/**/commit",
            "rollback",
            "begin",
            "savepoint a",
            "vacuum full",
            "copy s1.t from '/etc/passwd'",
            "prepare transaction 'x'",
            "do $$ begin perform 1; end $$",
            "create function s1.f() returns int language sql as 'select 1'",
            "alter role app superuser",
            "select pg_read_file('/etc/passwd')",
            "insert into \"_lab\".sl_archive_tracking values (1, now(), now())",
        ] {
            assert!(
                matches!(
                    check(&rules, bad, 3, false),
                    Err(BootstrapError::Refused { line: 3, .. })
                ),
                "{bad}"
            );
        }
        assert!(check(&rules, "copy s1.t to program 'id'", 3, true).is_err());
        assert!(check(
            &rules,
            "copy pg_catalog.pg_authid (rolname) from stdin",
            3,
            true
        )
        .is_err());
    }
}
