//! Applying archives to the replica, as psql would, but safer: the applier owns the
//! transaction, and it commits only after the envelope check has seen every archive in
//! it end cleanly. A backlog goes in groups, one transaction each, sent through an
//! [`execute::Window`] without waiting for any answer (statements one per
//! extended-protocol message, small COPY blocks from memory, large ones streamed from
//! the file). A group that fails is applied again archive by archive, so the replica
//! always ends where one transaction per archive would leave it. The tracking VACUUM
//! runs after the commit, once per `vacuum_every` archives (and at the end of a run),
//! not inside the transaction.

use crate::config::ReceiverConfig;
use crate::execute::{self, ExecError, Window, WindowFailure};
use slony_shared::archive::statement::{Allowances, Strings};
use slony_shared::archive::{Action, ArchiveError, ArchiveName, ArchiveReader};
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
    /// Whether the connection saw a failed transaction and must be replaced.
    dirty: bool,
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
            dirty: false,
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
    /// The group goes out whole, without waiting for any answer
    /// ([`Applier::apply_fast`]). If anything in it fails, its transaction is rolled
    /// back and the group is applied again on a new connection, one archive per
    /// transaction, which stops exactly at the failing archive and names it, whether
    /// it fails in a statement, in its COPY data, on reading or at its commit.
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
        if archives.len() == 1 || matches!(error.error, ApplyError::Connection { .. }) {
            return GroupResult {
                committed: 0,
                error: Some(error.error),
            };
        }
        tracing::debug!(
            first = %archives[0].name,
            archives = archives.len(),
            failed_at = %error.name,
            error = %error.error,
            "the group did not apply in one go: applying it again archive by archive"
        );
        for (i, archive) in archives.iter().enumerate() {
            if let Err(error) = self.apply_fast(std::slice::from_ref(archive)).await {
                return GroupResult {
                    committed: i,
                    error: Some(error.error),
                };
            }
            self.committed(1);
        }
        GroupResult {
            committed: archives.len(),
            error: None,
        }
    }

    /// A connection that answers in step: after a failed transaction the old one is
    /// dropped (which rolls back whatever it had sent) and a new one made.
    async fn clean_connection(&mut self, name: &ArchiveName) -> Result<(), ApplyError> {
        if !self.dirty {
            return Ok(());
        }
        let client = crate::replica::connect(&self.reconnect)
            .await
            .map_err(|e| ApplyError::Reconnect {
                name: *name,
                message: e.to_string(),
            })?;
        self.client = client;
        self.copy_statements.clear();
        self.pending_drops = None;
        self.dirty = false;
        Ok(())
    }

    /// Sends the whole group in one transaction, every statement and COPY as soon as it is
    /// read, the answers read as they come; commits if every answer is good. On `Err`
    /// nothing of the group is committed, and the connection must not be used again.
    async fn apply_fast(&mut self, archives: &[ToApply<'_>]) -> Result<(), FastFailure> {
        let first = archives[0].name;
        self.clean_connection(&first)
            .await
            .map_err(|error| FastFailure { name: first, error })?;
        let pending = self.pending_drops().await;
        // The window borrows the connection for the whole group.
        let mut copies = std::mem::take(&mut self.copy_statements);
        let result = self.send_group(archives, pending, &mut copies).await;
        self.copy_statements = copies;
        match result {
            Ok(true) => {
                tracing::info!("dropped the unsubscribed tables at their snapshot");
                self.pending_drops = None;
            }
            Ok(false) => {}
            // The connection's answers may be out of step (see `execute::Window`).
            Err(_) => self.dirty = true,
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
        // BEGIN first: if a SET after it fails, the transaction is aborted and nothing
        // sent after it runs. (BEGIN after a failing SET in the same query string would
        // never run, and every statement after it would commit on its own.)
        let mut lead = "BEGIN; SET session_replication_role TO replica".to_string();
        let mut dropped = false;
        // Whether the session is still as the last archive's settings left it.
        let mut settled = false;
        for (i, archive) in archives.iter().enumerate() {
            // Each archive starts from the same settings; after an archive of slon's
            // plain calls and COPY they are still in place (five statements less).
            if !settled || !archive.approved_ddl.is_empty() {
                if i > 0 {
                    lead = "SET session_replication_role TO replica".into();
                }
                self.push_archive_settings(&mut lead, archive);
                window.send_ours(std::mem::take(&mut lead), i).await;
            }
            let sent = self.send_archive(&mut window, archive, i, copies).await;
            settled = matches!(sent, Ok(false)) && archive.approved_ddl.is_empty();
            let sent = match sent {
                Ok(_) => {
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
        let end = if window.has_failed() {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        window.send_ours(end.into(), archives.len() - 1).await;
        if let Err(f) = window.finish().await {
            return Err(self.fast_failure(archives, f));
        }
        // Only a group that failed sends ROLLBACK, and its failure was seen above.
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
    /// archive ends cleanly; whether it may have changed the session's settings.
    async fn send_archive(
        &self,
        window: &mut Window<'_>,
        archive: &ToApply<'_>,
        tag: usize,
        copies: &mut HashMap<String, Statement>,
    ) -> Result<bool, ApplyError> {
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
        reader.finish().map_err(archive_err)?;
        Ok(reader.may_change_session())
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
            slony_shared::service::beat();
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
        tracing::debug!(archive = %name, tables = due.len(), "dropping the unsubscribed tables at their snapshot");
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

    /// Counts commits towards the next tracking-table VACUUM.
    fn committed(&mut self, n: usize) {
        self.unvacuumed += n as u64;
    }

    /// The connection, for the next run, unless it saw a failure.
    pub fn into_client(self) -> Option<Client> {
        (!self.dirty).then_some(self.client)
    }

    /// Whether enough commits happened for the tracking-table VACUUM to be due.
    pub fn vacuum_due(&self) -> bool {
        self.unvacuumed >= self.vacuum_every
    }

    /// Runs the tracking-table VACUUM if any commit happened since the last one. A
    /// failure here is only a warning: the archives are committed.
    pub async fn vacuum(&mut self) {
        if self.unvacuumed == 0 {
            return;
        }
        if self.dirty {
            // Not on a connection whose answers may be out of step.
            let Ok(client) = crate::replica::connect(&self.reconnect).await else {
                return;
            };
            self.client = client;
            self.dirty = false;
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
