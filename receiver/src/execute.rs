//! Sending an SQL script's items to PostgreSQL: statements pipelined, COPY data streamed.
//!
//! Shared by the archive applier and the subscription bootstrap. Statements between COPY
//! blocks are sent together and their answers read in order, so a window of statements
//! costs one round trip, while the first failing statement is still named by its line.
//!
//! The provider's statements go out one per extended-protocol message (Parse, Bind,
//! Execute, Sync): the server refuses such a message if it holds more than one
//! statement, so nothing our splitter missed can ride along. Only the receiver's own
//! commands (BEGIN, SAVEPOINT, SET) use the simple protocol.

use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use slony_shared::archive::parse::ParseError;
use slony_shared::archive::ArchiveError;
use slony_shared::pg::doing;
use std::collections::VecDeque;
use std::task::Poll;
use tokio_postgres::{Client, Statement, ToStatement, Transaction};

/// Pipelined statements are flushed when this many are waiting.
const PIPELINE_STATEMENTS: usize = 256;
/// ... or when their text reaches this size.
const PIPELINE_BYTES: usize = 4 * 1024 * 1024;

/// Why executing stopped.
#[derive(Debug)]
pub enum ExecError {
    /// The database refused a statement (or the connection failed while running it).
    Db {
        /// 1-based line of the statement (for COPY: of the failing data row when known).
        line: u64,
        /// The statement.
        sql: String,
        /// The client error.
        source: tokio_postgres::Error,
    },
    /// The script could not be read or split (COPY data cut short, I/O).
    Parse(ParseError),
    /// The archive's COPY data holds something it must not (a refused DDL row).
    Archive(ArchiveError),
}

/// Who wrote a statement, and so how it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The receiver itself (transaction control, settings): the simple protocol.
    Ours,
    /// The provider: one statement per extended-protocol message.
    Provider,
}

/// Statements waiting to be sent together.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Statement text, line and source, in order.
    pending: Vec<(String, u64, Source)>,
    /// Their total size.
    bytes: usize,
}

impl Pipeline {
    /// Queues one of the receiver's own commands; sends the window when it is full.
    pub async fn push(&mut self, client: &Client, sql: String, line: u64) -> Result<(), ExecError> {
        self.push_from(client, sql, line, Source::Ours).await
    }

    /// Queues one statement of the provider's; sends the window when it is full.
    pub async fn push_provider(
        &mut self,
        client: &Client,
        sql: String,
        line: u64,
    ) -> Result<(), ExecError> {
        self.push_from(client, sql, line, Source::Provider).await
    }

    async fn push_from(
        &mut self,
        client: &Client,
        sql: String,
        line: u64,
        source: Source,
    ) -> Result<(), ExecError> {
        self.bytes += sql.len();
        self.pending.push((sql, line, source));
        if self.pending.len() >= PIPELINE_STATEMENTS || self.bytes >= PIPELINE_BYTES {
            self.flush(client).await?;
        }
        Ok(())
    }

    /// Sends every queued statement and reports the first failure.
    pub async fn flush(&mut self, client: &Client) -> Result<(), ExecError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.bytes = 0;
        let results = join_all(pending.iter().map(|(sql, _, source)| async move {
            match source {
                Source::Ours => client.batch_execute(sql).await,
                Source::Provider => client.execute_typed(sql, &[]).await.map(|_| ()),
            }
        }))
        .await;
        // After the first error the others only say "transaction is aborted".
        for (r, (sql, line, _)) in results.into_iter().zip(pending) {
            if let Err(source) = r {
                return Err(ExecError::Db { line, sql, source });
            }
        }
        Ok(())
    }
}

/// Requests sent to the server at once, their answers read later and in order.
///
/// A [`Pipeline`] waits for its window's answers before anything else is sent; a
/// `Window` never waits to send: each request is queued on the connection as soon as it
/// is read, COPY blocks included (their data held in memory). Only a COPY makes the
/// connection pause, for the server's go-ahead before its data (tokio-postgres writes
/// nothing after a COPY until it is answered); everything else of a group flows without
/// a round trip of its own. Answers are read as they come and the first failure is kept
/// with the request it belongs to.
///
/// After a failure the connection must be dropped, not reused: a COPY sent into a
/// transaction that had already failed makes tokio-postgres send one more Sync than the
/// server answers in order, so later answers may be matched to the wrong requests.
pub struct Window<'c> {
    /// The connection.
    client: &'c Client,
    /// The answers still to come, in the order the requests went out.
    in_flight: FuturesOrdered<BoxFuture<'c, Result<(), tokio_postgres::Error>>>,
    /// What each request in flight was, in the same order.
    sent: VecDeque<Sent>,
    /// Statement text and COPY data in flight.
    bytes: usize,
    /// The first request that failed.
    failed: Option<WindowFailure>,
}

/// What a request in flight was, to name it if it fails.
struct Sent {
    /// The caller's tag (the archive's place in its group).
    tag: usize,
    /// 1-based line in the script.
    line: u64,
    /// The statement.
    sql: String,
    /// Its size, with its COPY data.
    bytes: usize,
    /// Whether it is a COPY (errors then name the data row).
    copy: bool,
}

/// The first request of a [`Window`] that failed.
#[derive(Debug)]
pub struct WindowFailure {
    /// The tag it was sent with.
    pub tag: usize,
    /// Why.
    pub error: ExecError,
}

/// Requests in flight before the window waits for the oldest answers.
const WINDOW_REQUESTS: usize = 2048;
/// ... or bytes of statements and COPY data in flight.
const WINDOW_BYTES: usize = 8 * 1024 * 1024;

impl<'c> Window<'c> {
    /// An empty window on `client`.
    pub fn new(client: &'c Client) -> Self {
        Window {
            client,
            in_flight: FuturesOrdered::new(),
            sent: VecDeque::new(),
            bytes: 0,
            failed: None,
        }
    }

    /// Whether a request has failed (its answer already read).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Sends one of the receiver's own commands (simple protocol).
    pub async fn send_ours(&mut self, sql: String, tag: usize) {
        let client = self.client;
        let text = sql.clone();
        let fut = async move { client.batch_execute(&text).await }.boxed();
        self.send(fut, tag, 0, sql, 0, false).await;
    }

    /// Sends one statement of the provider's (one extended-protocol message).
    pub async fn send_provider(&mut self, sql: String, line: u64, tag: usize) {
        let client = self.client;
        let text = sql.clone();
        let fut = async move { client.execute_typed(&text, &[]).await.map(|_| ()) }.boxed();
        self.send(fut, tag, line, sql, 0, false).await;
    }

    /// Sends a COPY and all its data.
    pub async fn send_copy(
        &mut self,
        statement: Statement,
        data: Vec<u8>,
        sql: String,
        line: u64,
        tag: usize,
    ) {
        let client = self.client;
        let size = data.len();
        let fut = async move {
            let sink = client.copy_in::<_, Bytes>(&statement).await?;
            futures_util::pin_mut!(sink);
            if !data.is_empty() {
                sink.send(Bytes::from(data)).await?;
            }
            sink.finish().await.map(|_| ())
        }
        .boxed();
        self.send(fut, tag, line, sql, size, true).await;
    }

    async fn send(
        &mut self,
        fut: BoxFuture<'c, Result<(), tokio_postgres::Error>>,
        tag: usize,
        line: u64,
        sql: String,
        data: usize,
        copy: bool,
    ) {
        let bytes = sql.len() + data;
        self.bytes += bytes;
        self.sent.push_back(Sent {
            tag,
            line,
            sql,
            bytes,
            copy,
        });
        // Polled once here, the request goes out now, after the ones before it; the
        // answers of the others are collected on the way, which also lets a COPY sent
        // earlier stream its data as soon as the server asks for it.
        let mut first = Some(fut);
        std::future::poll_fn(|cx| {
            if let Some(mut fut) = first.take() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(r) => self
                        .in_flight
                        .push_back(futures_util::future::ready(r).boxed()),
                    Poll::Pending => self.in_flight.push_back(fut),
                }
            }
            while let Poll::Ready(Some(r)) = self.in_flight.poll_next_unpin(cx) {
                self.answered(r);
            }
            Poll::Ready(())
        })
        .await;
        while self.sent.len() > WINDOW_REQUESTS || self.bytes > WINDOW_BYTES {
            self.read_one().await;
        }
    }

    /// Reads the oldest answer.
    async fn read_one(&mut self) {
        match self.in_flight.next().await {
            Some(r) => self.answered(r),
            // Every request has a future: nothing left to read.
            None => {
                self.sent.clear();
                self.bytes = 0;
            }
        }
    }

    fn answered(&mut self, r: Result<(), tokio_postgres::Error>) {
        let Some(sent) = self.sent.pop_front() else {
            return;
        };
        self.bytes -= sent.bytes;
        if let (Err(source), None) = (r, &self.failed) {
            let line = if sent.copy {
                sent.line + copy_row(&source).unwrap_or(0)
            } else {
                sent.line
            };
            self.failed = Some(WindowFailure {
                tag: sent.tag,
                error: ExecError::Db {
                    line,
                    sql: sent.sql,
                    source,
                },
            });
        }
    }

    /// Reads every answer still to come, keeping the window open.
    pub async fn settle(&mut self) {
        while !self.sent.is_empty() {
            self.read_one().await;
        }
    }

    /// Reads every answer still to come; the first failure, if any.
    pub async fn finish(mut self) -> Result<(), WindowFailure> {
        self.settle().await;
        match self.failed {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

/// The row number PostgreSQL reports for a COPY error ("COPY t, line 3, ...").
fn copy_row(e: &tokio_postgres::Error) -> Option<u64> {
    let w = e.as_db_error()?.where_()?;
    let rest = &w[w.find(", line ")? + 7..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Runs `COPY ... FROM STDIN` and streams its data, read chunk by chunk with `read`
/// (which returns false after the last chunk); returns the data size.
///
/// `statement` is the COPY text or a statement prepared from it (the archive applier
/// prepares Slony's COPY header once per connection: one round trip less per archive).
pub async fn copy_in<T: ?Sized + ToStatement>(
    client: &Client,
    statement: &T,
    sql: &str,
    line: u64,
    buf: &mut Vec<u8>,
    mut read: impl FnMut(&mut Vec<u8>) -> Result<bool, ExecError>,
) -> Result<u64, ExecError> {
    let db_err = |source: tokio_postgres::Error| ExecError::Db {
        line: line + copy_row(&source).unwrap_or(0),
        sql: sql.to_string(),
        source,
    };
    let sink = client
        .copy_in::<T, Bytes>(statement)
        .await
        .map_err(db_err)?;
    futures_util::pin_mut!(sink);
    let mut total = 0u64;
    loop {
        let more = read(buf)?;
        if !buf.is_empty() {
            total += buf.len() as u64;
            sink.send(Bytes::copy_from_slice(buf))
                .await
                .map_err(db_err)?;
        }
        if !more {
            break;
        }
    }
    sink.finish().await.map_err(db_err)?;
    Ok(total)
}

/// The first 200 characters of a statement, on one line, for messages.
pub fn excerpt(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 200 {
        one.chars().take(197).collect::<String>() + "..."
    } else {
        one
    }
}

/// A transaction that changes objects of the replica (triggers, owners). Such changes
/// wait for the table's lock, which an archive being applied holds: they wait a while,
/// never forever. No NOTICE for each `DROP ... IF EXISTS` that finds nothing.
pub async fn ddl_transaction(client: &mut Client) -> anyhow::Result<Transaction<'_>> {
    let tx = client
        .transaction()
        .await
        .map_err(doing("starting a transaction"))?;
    tx.batch_execute("SET LOCAL lock_timeout = '60s'; SET LOCAL client_min_messages = warning")
        .await
        .map_err(doing("preparing the session"))?;
    Ok(tx)
}
