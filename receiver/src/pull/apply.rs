//! Applying one archive to the replica, as psql would, but safer: statements and COPY
//! blocks are streamed from the file (bounded memory), the whole archive runs in one
//! transaction the applier owns, and it commits only after the envelope check has seen
//! the archive end cleanly. The tracking VACUUM runs after the commit, once per
//! `vacuum_every` archives (and at the end of a run), not inside the transaction.
//!
//! Statements and COPY data go through [`crate::execute`] (pipelined, streamed).

use crate::config::ReceiverConfig;
use crate::execute::{self, ExecError, Pipeline, Window, WindowFailure};
use slony_shared::archive::statement::{Allowances, Strings};
use slony_shared::archive::{Action, ArchiveError, ArchiveName, ArchiveReader, Header};
use slony_shared::ident::{quote_ident, quote_literal, ClusterName};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

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
        /// The SQLSTATE, when the server sent one.
        sqlstate: Option<String>,
    },
    /// The replica is not at the counter this archive follows.
    #[error("{name}: the replica is not at the counter this archive follows: {message}")]
    CounterMismatch {
        /// The archive.
        name: ArchiveName,
        /// PostgreSQL's message from archiveTracking_offline.
        message: String,
    },
    /// After a group failed, no new connection could be made to apply it archive by
    /// archive (nothing of the group was committed).
    #[error("applying {name} failed, and reconnecting to the replica database to apply its group archive by archive failed too: {message}")]
    Reconnect {
        /// The archive that failed first.
        name: ArchiveName,
        /// Why the connection failed.
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

impl ApplyError {
    /// Whether the failure is the server's state of the moment rather than the
    /// archive's: a lock timeout, a deadlock, a serialization failure, a statement
    /// timeout or a lack of resources (disk, memory, connections) may pass by itself.
    pub fn may_pass(&self) -> bool {
        matches!(
            self,
            ApplyError::Sql { sqlstate: Some(code), .. }
                if matches!(code.as_str(), "40001" | "40P01" | "55P03" | "57014")
                    || code.starts_with("53")
        )
    }

    /// The archive whose own content or statements failed (not a lost connection).
    pub fn refused_archive(&self) -> Option<ArchiveName> {
        match self {
            ApplyError::Archive { name, .. }
            | ApplyError::Sql { name, .. }
            | ApplyError::CounterMismatch { name, .. } => Some(*name),
            ApplyError::Connection { .. } | ApplyError::Reconnect { .. } => None,
        }
    }
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
    /// COPY statements prepared on this connection, by text (Slony writes the same one
    /// in every archive).
    copy_statements: HashMap<String, Statement>,
    /// What the provider's DDL may hold beyond the default rules.
    allow: Allowances,
    /// Tables an unsubscription dropped only once the archive of its snapshot is
    /// applied (see [`crate::replica::PENDING_DROP_TABLE`]); `None` until
    /// read from the replica.
    pending_drops: Option<Vec<PendingDrop>>,
    /// What DDL rows take their search_path from: an SQL literal, or the session's own.
    ddl_search_path: String,
    /// The configuration, to connect again after a failed group.
    reconnect: ReceiverConfig,
}

/// A table to drop in the transaction of the archive `after`: the copies before it still
/// carry its rows.
#[derive(Debug, Clone)]
struct PendingDrop {
    schema: String,
    table: String,
    after: i64,
}

/// Why the fast path gave up on a group: the first failure, and the archive it belongs to.
#[derive(Debug)]
struct FastFailure {
    /// The archive.
    name: ArchiveName,
    /// The failure.
    error: ApplyError,
}

/// How much of a COPY block is held in memory so that it goes out without waiting; a
/// larger one is streamed from the file.
const COPY_IN_MEMORY: usize = 1024 * 1024;

/// One archive to apply: where it is, and the DDL row statements its check approved.
#[derive(Debug, Clone, Copy)]
pub struct ToApply<'a> {
    /// The verified local copy.
    pub path: &'a Path,
    /// Its name.
    pub name: ArchiveName,
    /// SHA-256 (hex) of each DDL row statement the check approved: the replica's
    /// `log_apply()` runs no other.
    pub approved_ddl: &'a [String],
}

/// What a group of archives came to: the first `committed` are in, then maybe an error
/// for the next one (nothing of which was applied).
#[derive(Debug)]
pub struct GroupResult {
    /// How many archives of the group were committed, from the first.
    pub committed: usize,
    /// Why the archive after them was not applied.
    pub error: Option<ApplyError>,
}

impl Applier {
    /// Wraps a client connected as `cfg` says.
    pub fn new(client: Client, cfg: &ReceiverConfig) -> Self {
        Applier {
            ddl_search_path: cfg.pull.ddl_search_path.as_deref().map_or_else(
                || "pg_catalog.current_setting('search_path')".to_string(),
                quote_literal,
            ),
            client,
            cluster: cfg.cluster.clone(),
            unvacuumed: 0,
            vacuum_every: cfg.pull.vacuum_every.max(1),
            copy_statements: HashMap::new(),
            allow: cfg.sql_allow,
            pending_drops: None,
            reconnect: cfg.clone(),
        }
    }

    /// The replica's pending drops, read once (and again after a group that ran some).
    async fn pending_drops(&mut self) -> Vec<PendingDrop> {
        if let Some(p) = &self.pending_drops {
            return p.clone();
        }
        let table = format!(
            "{}.{}",
            self.cluster.schema(),
            crate::replica::PENDING_DROP_TABLE
        );
        let found = crate::replica::table_exists(&self.client, &table)
            .await
            .unwrap_or(false);
        let mut out = Vec::new();
        if found {
            if let Ok(rows) = self
                .client
                .query(
                    &format!("SELECT nsp, rel, after_counter FROM {table} ORDER BY after_counter"),
                    &[],
                )
                .await
            {
                for r in rows {
                    out.push(PendingDrop {
                        schema: r.get(0),
                        table: r.get(1),
                        after: r.get(2),
                    });
                }
            }
        }
        self.pending_drops = Some(out.clone());
        out
    }

    fn exec_error(&self, name: &ArchiveName, e: ExecError) -> ApplyError {
        match e {
            ExecError::Parse(p) => ApplyError::Archive {
                name: *name,
                source: p.into(),
            },
            ExecError::Archive(source) => ApplyError::Archive {
                name: *name,
                source,
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
        if slony_shared::pg::is_connection_error(&e) {
            return ApplyError::Connection {
                name: *name,
                source: e,
            };
        }
        let message = slony_shared::pg::describe_error(&e);
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
            sqlstate: e.code().map(|c| c.code().to_string()),
        }
    }

    /// Applies consecutive archives in ONE transaction (group commit), with the result of
    /// one transaction per archive: when archive k fails, the archives before it are
    /// committed, nothing of k is, and k is reported.
    ///
    /// The group first goes out whole, without savepoints and without waiting for any
    /// answer ([`Applier::apply_fast`]). If anything in it fails, that transaction is
    /// rolled back and the group is applied again the careful way, on a new connection,
    /// each archive in its own savepoint ([`Applier::apply_exact`]), which stops exactly
    /// before the failing archive and names it.
    pub async fn apply_group(&mut self, archives: &[ToApply<'_>]) -> GroupResult {
        if archives.is_empty() {
            return GroupResult {
                committed: 0,
                error: None,
            };
        }
        let error = match self.apply_fast(archives).await {
            Ok(()) => {
                self.committed(archives.len());
                return GroupResult {
                    committed: archives.len(),
                    error: None,
                };
            }
            Err(e) => e,
        };
        tracing::debug!(
            first = %archives[0].name,
            archives = archives.len(),
            failed_at = %error.name,
            error = %error.error,
            "the group did not apply in one go: applying it again archive by archive"
        );
        // A lost connection is the same on the careful path: report it now.
        if let ApplyError::Connection { .. } = error.error {
            return GroupResult {
                committed: 0,
                error: Some(error.error),
            };
        }
        // The connection's answers may be out of step after a failure (see
        // `execute::Window`): the careful path gets a new one. Dropping the old one rolls
        // back what it had sent.
        match crate::replica::connect(&self.reconnect).await {
            Ok(client) => {
                self.client = client;
                self.copy_statements.clear();
                self.pending_drops = None;
            }
            Err(e) => {
                return GroupResult {
                    committed: 0,
                    error: Some(ApplyError::Reconnect {
                        name: error.name,
                        message: e.to_string(),
                    }),
                }
            }
        }
        self.apply_exact(archives).await
    }

    /// Applies consecutive archives in ONE transaction (group commit), each inside its own
    /// savepoint: when archive k fails, it is rolled back to its savepoint, archives
    /// before it are committed, and k is reported, exactly as if each archive had its own
    /// transaction, with one commit for the group.
    async fn apply_exact(&mut self, archives: &[ToApply<'_>]) -> GroupResult {
        if archives.is_empty() {
            return GroupResult {
                committed: 0,
                error: None,
            };
        }
        let single = archives.len() == 1;
        let pending = self.pending_drops().await;
        // The transaction starts with the first pipelined batch: no round trip of its own.
        // Archives may switch the role for DDL; each starts again as a replica, reading
        // strings the standard way until its body says otherwise.
        let mut pipeline = Pipeline::default();
        let mut begin = "SET session_replication_role TO replica; BEGIN".to_string();
        for (i, archive) in archives.iter().enumerate() {
            if !single {
                begin.push_str("; SAVEPOINT archive");
            }
            self.push_archive_settings(&mut begin, archive);
            let lead_at = pipeline.sent() + pipeline.queued() as u64;
            let lead = std::mem::take(&mut begin);
            let outcome = match self
                .apply_body(&mut pipeline, lead, archive.path, &archive.name)
                .await
            {
                Ok(_) => self.drop_due(&mut pipeline, &pending, &archive.name).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) if single => {}
                // RELEASE rides with the next archive's first statements.
                Ok(()) => {
                    begin =
                        "SET session_replication_role TO replica; RELEASE SAVEPOINT archive".into()
                }
                Err(error) => {
                    let lead_sent = pipeline.sent() > lead_at;
                    pipeline.discard();
                    return self.keep_before(archives, i, lead_sent, error).await;
                }
            }
        }
        self.commit_group(archives, single).await
    }

    /// Sends the whole group in one transaction, every statement and COPY as soon as it is
    /// read, the answers read as they come; commits if every answer is good. On `Err`
    /// nothing of the group is committed, and the connection must not be used again.
    async fn apply_fast(&mut self, archives: &[ToApply<'_>]) -> Result<(), FastFailure> {
        let pending = self.pending_drops().await;
        // The window borrows the connection for the whole group.
        let mut copies = std::mem::take(&mut self.copy_statements);
        let result = self.send_group(archives, pending, &mut copies).await;
        self.copy_statements = copies;
        if matches!(result, Ok(true)) {
            self.pending_drops = None;
        }
        result.map(|_| ())
    }

    /// [`Applier::apply_fast`]'s sending; whether tables were dropped.
    async fn send_group(
        &self,
        archives: &[ToApply<'_>],
        mut pending: Vec<PendingDrop>,
        copies: &mut HashMap<String, Statement>,
    ) -> Result<bool, FastFailure> {
        let mut window = Window::new(&self.client);
        let mut lead = "SET session_replication_role TO replica; BEGIN".to_string();
        let mut dropped = false;
        for (i, archive) in archives.iter().enumerate() {
            if i > 0 {
                lead = "SET session_replication_role TO replica".into();
            }
            self.push_archive_settings(&mut lead, archive);
            window.send_ours(std::mem::take(&mut lead), i).await;
            let sent = self.send_archive(&mut window, archive, i, copies).await;
            let sent = match sent {
                Ok(()) => {
                    self.send_drops(&mut window, &mut pending, &archive.name, i)
                        .await
                }
                Err(e) => Err(e),
            };
            dropped |= matches!(sent, Ok(true));
            if let Err(error) = sent {
                // Read what was sent, so a failure of the server's that came first is
                // the one reported; then give up on this transaction.
                let error = match window.finish().await {
                    Err(f) => self.fast_failure(archives, f),
                    Ok(()) => FastFailure {
                        name: archive.name,
                        error,
                    },
                };
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(error);
            }
            if window.has_failed() {
                break;
            }
        }
        // After a failure the server answers COMMIT with a rollback: nothing goes in.
        window.send_ours("COMMIT".into(), archives.len() - 1).await;
        if let Err(f) = window.finish().await {
            return Err(self.fast_failure(archives, f));
        }
        Ok(dropped)
    }

    fn fast_failure(&self, archives: &[ToApply<'_>], f: WindowFailure) -> FastFailure {
        let name = archives[f.tag.min(archives.len() - 1)].name;
        FastFailure {
            name,
            error: self.exec_error(&name, f.error),
        }
    }

    /// Sends one archive's statements and COPY data through `window`, and checks that the
    /// archive ends cleanly.
    async fn send_archive(
        &self,
        window: &mut Window<'_>,
        archive: &ToApply<'_>,
        tag: usize,
        copies: &mut HashMap<String, Statement>,
    ) -> Result<(), ApplyError> {
        let name = &archive.name;
        let archive_err = |source: ArchiveError| ApplyError::Archive {
            name: *name,
            source,
        };
        let file = File::open(archive.path).map_err(|e| archive_err(e.into()))?;
        let mut reader = ArchiveReader::new(
            BufReader::with_capacity(64 * 1024, file),
            &self.cluster,
            name.counter,
            self.allow,
        );
        let sent = self
            .send_actions(window, &mut reader, name, tag, copies)
            .await;
        for (line, allowance) in reader.allowances_used() {
            tracing::warn!(archive = %name, line, "the provider's SQL uses an allowance of [sql] allow: {allowance}");
        }
        sent?;
        reader.finish().map(|_| ()).map_err(archive_err)
    }

    async fn send_actions<R: std::io::BufRead>(
        &self,
        window: &mut Window<'_>,
        reader: &mut ArchiveReader<R>,
        name: &ArchiveName,
        tag: usize,
        copies: &mut HashMap<String, Statement>,
    ) -> Result<(), ApplyError> {
        let archive_err = |source: ArchiveError| ApplyError::Archive {
            name: *name,
            source,
        };
        while let Some(action) = reader.next_action().map_err(archive_err)? {
            match action {
                Action::Execute { sql, line } => window.send_provider(sql, line, tag).await,
                Action::Strings(strings) => {
                    let set = match strings {
                        Strings::Standard => "SET LOCAL standard_conforming_strings TO on",
                        Strings::Escaped => "SET LOCAL standard_conforming_strings TO off",
                    };
                    window.send_ours(set.to_string(), tag).await;
                }
                Action::CopyIn { sql, line } => {
                    let statement = match copies.get(&sql) {
                        Some(s) => s.clone(),
                        None => {
                            // No other request may wait while this one is answered.
                            window.settle().await;
                            let s = self
                                .client
                                .prepare(&sql)
                                .await
                                .map_err(|e| self.sql_error(name, line, &sql, e))?;
                            if copies.len() >= 16 {
                                copies.clear();
                            }
                            copies.insert(sql.clone(), s.clone());
                            s
                        }
                    };
                    let mut data = Vec::new();
                    let mut chunk = Vec::new();
                    let mut more = true;
                    while more && data.len() < COPY_IN_MEMORY {
                        more = reader.copy_chunk(&mut chunk).map_err(archive_err)?;
                        data.extend_from_slice(&chunk);
                    }
                    if !more {
                        window.send_copy(statement, data, sql, line, tag).await;
                        continue;
                    }
                    // A large COPY streams from the file, once every answer before it is in.
                    window.settle().await;
                    if window.has_failed() {
                        return Ok(());
                    }
                    let mut first = Some(data);
                    execute::copy_in(&self.client, &statement, &sql, line, &mut chunk, |b| {
                        if let Some(d) = first.take() {
                            *b = d;
                            return Ok(true);
                        }
                        reader.copy_chunk(b).map_err(ExecError::Archive)
                    })
                    .await
                    .map_err(|e| self.exec_error(name, e))?;
                }
                Action::Commit | Action::Vacuum => {}
            }
            if window.has_failed() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends, after archive `name`, the drops of the unsubscribed tables whose snapshot
    /// it is; whether there were any.
    async fn send_drops(
        &self,
        window: &mut Window<'_>,
        pending: &mut Vec<PendingDrop>,
        name: &ArchiveName,
        tag: usize,
    ) -> Result<bool, ApplyError> {
        let (due, later): (Vec<PendingDrop>, Vec<PendingDrop>) = std::mem::take(pending)
            .into_iter()
            .partition(|d| d.after <= name.counter.as_i64());
        *pending = later;
        if due.is_empty() {
            return Ok(false);
        }
        let due: Vec<&PendingDrop> = due.iter().collect();
        window.send_ours(self.drop_sql(&due), tag).await;
        tracing::info!(archive = %name, tables = due.len(), "dropping the unsubscribed tables at their snapshot");
        Ok(true)
    }

    /// Appends to `lead` the settings every archive starts from: standard strings, the
    /// session's search path, the DDL rows' search path and the DDL rows its check
    /// approved.
    fn push_archive_settings(&self, lead: &mut String, archive: &ToApply<'_>) {
        // DDL of an archive before may have set search_path: each archive starts
        // from the session's own, for its statements and for its DDL rows.
        // DDL rows run with the provider's DDL search path when one is configured (so
        // an unqualified name is the table it was on the log-shipping node, and the
        // one the cut chose), else with the session's own.
        lead.push_str(&format!(
            "; SET LOCAL standard_conforming_strings TO on; RESET search_path; \
             SELECT pg_catalog.set_config('slony_receiver.ddl_search_path', {}, true)",
            self.ddl_search_path
        ));
        // The DDL rows log_apply() may run: those the check approved, or none.
        let approved = if archive.approved_ddl.is_empty() {
            "none".to_string()
        } else {
            archive.approved_ddl.join(",")
        };
        lead.push_str(&format!(
            "; SET LOCAL {} TO '{approved}'",
            slony_shared::offline::APPROVED_DDL_SETTING
        ));
    }

    /// Drops, in the transaction of archive `name`, the unsubscribed tables whose
    /// snapshot it is: every copy that still carries their rows is in.
    async fn drop_due(
        &mut self,
        pipeline: &mut Pipeline,
        pending: &[PendingDrop],
        name: &ArchiveName,
    ) -> Result<(), ApplyError> {
        let due: Vec<&PendingDrop> = pending
            .iter()
            .filter(|d| d.after <= name.counter.as_i64())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let sql = self.drop_sql(&due);
        self.pending_drops = None;
        let sent = match pipeline.push(&self.client, sql, 0).await {
            Ok(()) => pipeline.flush(&self.client).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            return Err(self.exec_error(name, e));
        }
        tracing::info!(archive = %name, tables = due.len(), "dropped the unsubscribed tables at their snapshot");
        Ok(())
    }

    /// The statements that drop the tables `due` and forget them.
    fn drop_sql(&self, due: &[&PendingDrop]) -> String {
        // The archive may have switched to escaped strings (pre-2.2): the literals
        // below are standard ones.
        let mut sql = String::from("SET LOCAL standard_conforming_strings TO on;");
        for d in due {
            sql.push_str(&format!(
                "DROP TABLE IF EXISTS {}.{}; DELETE FROM {}.{} WHERE nsp = {} AND rel = {};",
                quote_ident(&d.schema),
                quote_ident(&d.table),
                self.cluster.schema(),
                crate::replica::PENDING_DROP_TABLE,
                quote_literal(&d.schema),
                quote_literal(&d.table),
            ));
        }
        sql
    }

    /// Archive `failed` of the group did not apply (`error`): commits the archives before
    /// it, if any, and reports how many are in. `lead_sent` says whether the failed
    /// archive's savepoint went out (it had sent its first statements).
    async fn keep_before(
        &mut self,
        archives: &[ToApply<'_>],
        failed: usize,
        lead_sent: bool,
        error: ApplyError,
    ) -> GroupResult {
        // Keep the archives before this one, if any. If this archive's savepoint never
        // went out (it failed before its first statement was sent), the last savepoint
        // is still the previous archive's: commit.
        let keep = if failed == 0 {
            "ROLLBACK"
        } else if lead_sent {
            "ROLLBACK TO SAVEPOINT archive; COMMIT"
        } else {
            "COMMIT"
        };
        let committed = match self.client.batch_execute(keep).await {
            // The tracking table says what really got in.
            Ok(()) => self
                .applied_since(archives[0].name.counter)
                .await
                .min(failed),
            Err(_) => {
                // The connection is gone: the server rolled everything back.
                let _ = self.client.batch_execute("ROLLBACK").await;
                0
            }
        };
        self.committed(committed);
        GroupResult {
            committed,
            error: Some(error),
        }
    }

    /// Commits a group every archive of which applied.
    async fn commit_group(&mut self, archives: &[ToApply<'_>], single: bool) -> GroupResult {
        let commit = if single {
            "COMMIT"
        } else {
            "RELEASE SAVEPOINT archive; COMMIT"
        };
        if let Err(e) = self.client.batch_execute(commit).await {
            let _ = self.client.batch_execute("ROLLBACK").await;
            let last = archives[archives.len() - 1].name;
            return GroupResult {
                committed: 0,
                error: Some(self.sql_error(&last, 0, commit, e)),
            };
        }
        self.committed(archives.len());
        GroupResult {
            committed: archives.len(),
            error: None,
        }
    }

    /// How many archives from `first` on the replica holds, per its tracking table
    /// (0 when it cannot be read).
    async fn applied_since(&self, first: slony_shared::counter::Counter) -> usize {
        let sql = format!(
            "SELECT at_counter FROM {}.sl_archive_tracking",
            self.cluster.schema()
        );
        match self.client.query_one(sql.as_str(), &[]).await {
            Ok(row) => {
                let at: i64 = row.get(0);
                (at + 1 - first.as_i64()).max(0) as usize
            }
            Err(_) => 0,
        }
    }

    /// Counts commits towards the next tracking-table VACUUM.
    fn committed(&mut self, n: usize) {
        self.unvacuumed += n as u64;
    }

    /// The connection, for the next run.
    pub fn into_client(self) -> Client {
        self.client
    }

    /// Whether enough commits happened for the tracking-table VACUUM to be due.
    pub fn vacuum_due(&self) -> bool {
        self.unvacuumed >= self.vacuum_every
    }

    /// Sends one archive's statements (after `lead`, the transaction or savepoint
    /// commands that precede it) and checks its envelope. Everything is flushed when it
    /// returns Ok.
    async fn apply_body(
        &mut self,
        pipeline: &mut Pipeline,
        lead: String,
        path: &Path,
        name: &ArchiveName,
    ) -> Result<Header, ApplyError> {
        let archive_err = |source: ArchiveError| ApplyError::Archive {
            name: *name,
            source,
        };
        let file = File::open(path).map_err(|e| archive_err(e.into()))?;
        let mut archive = ArchiveReader::new(
            BufReader::with_capacity(256 * 1024, file),
            &self.cluster,
            name.counter,
            self.allow,
        );
        if !lead.is_empty() {
            pipeline
                .push(&self.client, lead, 0)
                .await
                .map_err(|e| self.exec_error(name, e))?;
        }
        let sent = self.send_body(pipeline, &mut archive, name).await;
        // Every use of an allowance is logged, whether the archive then applied or not.
        for (line, allowance) in archive.allowances_used() {
            tracing::warn!(archive = %name, line, "the provider's SQL uses an allowance of [sql] allow: {allowance}");
        }
        sent?;
        archive.finish().map_err(archive_err)
    }

    /// Sends what the reader hands out, statement by statement and COPY by COPY.
    async fn send_body<R: std::io::BufRead>(
        &mut self,
        pipeline: &mut Pipeline,
        archive: &mut ArchiveReader<R>,
        name: &ArchiveName,
    ) -> Result<(), ApplyError> {
        let archive_err = |source: ArchiveError| ApplyError::Archive {
            name: *name,
            source,
        };
        let mut buf = Vec::new();
        while let Some(action) = archive.next_action().map_err(archive_err)? {
            match action {
                Action::Execute { sql, line } => pipeline
                    .push_provider(&self.client, sql, line)
                    .await
                    .map_err(|e| self.exec_error(name, e))?,
                Action::Strings(strings) => {
                    // The server reads the rest of the body as the reader does.
                    let set = match strings {
                        Strings::Standard => "SET LOCAL standard_conforming_strings TO on",
                        Strings::Escaped => "SET LOCAL standard_conforming_strings TO off",
                    };
                    pipeline
                        .push(&self.client, set.to_string(), 0)
                        .await
                        .map_err(|e| self.exec_error(name, e))?;
                }
                Action::CopyIn { sql, line } => {
                    pipeline
                        .flush(&self.client)
                        .await
                        .map_err(|e| self.exec_error(name, e))?;
                    let statement = self.copy_statement(name, &sql, line).await?;
                    execute::copy_in(&self.client, &statement, &sql, line, &mut buf, |b| {
                        archive.copy_chunk(b).map_err(ExecError::Archive)
                    })
                    .await
                    .map_err(|e| self.exec_error(name, e))?;
                }
                // The archive's own COMMIT, and its VACUUM (run after the commit, grouped).
                Action::Commit | Action::Vacuum => {}
            }
        }
        pipeline
            .flush(&self.client)
            .await
            .map_err(|e| self.exec_error(name, e))
    }

    /// The prepared statement for a COPY text, prepared on first use.
    async fn copy_statement(
        &mut self,
        name: &ArchiveName,
        sql: &str,
        line: u64,
    ) -> Result<Statement, ApplyError> {
        if let Some(s) = self.copy_statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self
            .client
            .prepare(sql)
            .await
            .map_err(|e| self.sql_error(name, line, sql, e))?;
        // A hostile stream could vary the text endlessly: keep the cache small.
        if self.copy_statements.len() >= 16 {
            self.copy_statements.clear();
        }
        self.copy_statements
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
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
                tracing::warn!(error = %slony_shared::pg::describe_error(&e), "tracking-table VACUUM failed")
            }
        }
    }
}
