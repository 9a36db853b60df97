/*!
The SQL that creates (or changes) a site's tables: the manager's `slony1_dump.sh`.

Everything is read from the provider (the log-shipping node) in ONE
`REPEATABLE READ READ ONLY` transaction whose first query reads
`"_<cluster>".sl_archive_counter`: slon advances that counter in the same transaction as
the SYNC it archives, so the data is exactly the state after archive `ac_num`, and a new
site starts with `at_counter = ac_num`. The snapshot blocks nobody.

The output, gzip-compressed and streamed (a big table is never held in memory), is what
the subscriber applies in one transaction, split the way psql would split it
(`shared::archive::parse::Splitter`):

1. for a new site, the tracking schema and the tracking row at the snapshot counter;
2. `DROP TABLE IF EXISTS` for unsubscribed tables when `allow_drop` is on;
3. the replicated sequences of the tables the site keeps (`CREATE SEQUENCE IF NOT
   EXISTS` and their current values), so that every sequence of the site's list exists
   there even when it joined a set after its table was subscribed;
4. per new table: its schema, its sequences (see below), `CREATE TABLE` from the
   catalog, the rows as `COPY ... FROM stdin` data, then its primary key, unique, check
   and exclusion constraints and other indexes (after the data, as pg_dump does, so the
   load is fast).

# Sequences

A table's sequences are read from the provider's catalog, never guessed from names:
those its column defaults use (`nextval('s'::regclass)` records a dependency of the
default on the sequence) and those a column of it owns (`OWNED BY`, a `pg_depend` row
of type `a`). Of these, the ones in a Slony set of the cluster (`"_<cluster>".sl_sequence`)
are *replicated*: created with their current value, and listed in the site's sequence
list ([`Generated::sequences`], stored as `<node>/sequences`), which is all the cutter
sends sequence changes for. A sequence a default uses but that is in no set is created
too, so the default works, but its value is neither read nor sent, and a note says it
is not replicated. The list covers every table of the site's new list, kept ones
included (their sequences are read again at each change).

It never contains `BEGIN`, `COMMIT` or anything else that ends a transaction. Every
identifier is quoted; every name comes from the validated request or from the catalog.
The session runs with an empty `search_path`, so every expression the catalog functions
print (`pg_get_expr`, `format_type`, `pg_get_constraintdef`, `pg_get_indexdef`) is fully
schema-qualified and means the same on the subscriber whatever its `search_path`.

Not sent: foreign keys (the referenced table may not be subscribed; a note says so),
triggers, grants, comments, ownership. Generated and identity columns become plain
columns holding the provider's values.
*/

use crate::config::ManagerConfig;
use crate::site::Plan;
use anyhow::{bail, Context};
use flate2::write::GzEncoder;
use flate2::Compression;
use futures_util::StreamExt;
use slony_shared::config::DatabaseConfig;
use slony_shared::counter::Counter;
use slony_shared::ident::{quote_ident, quote_literal, ClusterName, NodeName, QualifiedTable};
use slony_shared::pg;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// The archive position the snapshot corresponds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `sl_archive_counter.ac_num`.
    pub counter: Counter,
    /// `sl_archive_counter.ac_timestamp`, as PostgreSQL prints it.
    pub created: String,
}

/// One column of a table, from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (unquoted).
    pub name: String,
    /// `format_type(atttypid, atttypmod)`.
    pub type_sql: String,
    /// `COLLATE` clause target (already quoted), when not the type's default.
    pub collation: Option<String>,
    /// `pg_get_expr(adbin, adrelid)` of a plain default.
    pub default: Option<String>,
    /// `NOT NULL`.
    pub not_null: bool,
}

/// A sequence's position on the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceValue {
    /// `last_value`.
    pub last_value: i64,
    /// `is_called`.
    pub is_called: bool,
}

/// A sequence of a table: one its defaults use or one of its columns owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `AS ... INCREMENT BY ... MINVALUE ... MAXVALUE ... START WITH ... CACHE ... [NO] CYCLE`.
    pub options: String,
    /// Its current value, for a replicated sequence (in a Slony set of the cluster, with a
    /// name the site's list can hold); `None` for one that is only created so that a
    /// default works: its value is never read nor sent.
    pub value: Option<SequenceValue>,
    /// The column of the table that owns it (serial columns), if any.
    pub owned_by: Option<String>,
}

impl Sequence {
    fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// Its entry in the site's sequence list, when it is replicated.
    pub fn listed(&self) -> Option<QualifiedTable> {
        self.value?;
        QualifiedTable::new(&self.schema, &self.name).ok()
    }

    /// `CREATE SEQUENCE IF NOT EXISTS`, and the `setval` of a replicated one.
    fn create_sql(&self) -> String {
        let mut s = format!(
            "CREATE SEQUENCE IF NOT EXISTS {} {};\n",
            self.quoted(),
            self.options
        );
        if let Some(v) = self.value {
            s.push_str(&format!(
                "SELECT pg_catalog.setval({}, {}, {});\n",
                quote_literal(&self.quoted()),
                v.last_value,
                v.is_called
            ));
        }
        s
    }
}

/// The site's sequence list: the replicated sequences among `sequences` (given table by
/// table, in the order of the site's tables), each once, in order of first appearance.
pub fn sequence_list<'a>(sequences: impl IntoIterator<Item = &'a Sequence>) -> Vec<QualifiedTable> {
    let mut out: Vec<QualifiedTable> = Vec::new();
    for q in sequences {
        if let Some(l) = q.listed() {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// What [`generate`] produced besides the SQL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The archive position the SQL corresponds to.
    pub snapshot: Snapshot,
    /// Notes to add to the plan's (for `.sqldone`).
    pub notes: Vec<String>,
    /// The site's sequence list for its new table list (for `<node>.new/sequences`).
    pub sequences: Vec<QualifiedTable>,
}

/// A constraint sent with the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Its name.
    pub name: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
}

/// Everything needed to recreate one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table.
    pub table: QualifiedTable,
    /// Partitioned (`relkind = 'p'`): read without `ONLY`.
    pub partitioned: bool,
    /// Its columns, in order.
    pub columns: Vec<Column>,
    /// Sequences its defaults use, and replicated sequences its columns own.
    pub sequences: Vec<Sequence>,
    /// Primary key first, then unique, check and exclusion constraints.
    pub constraints: Vec<Constraint>,
    /// `pg_get_indexdef` of indexes that back no constraint.
    pub indexes: Vec<String>,
    /// Remarks (foreign keys left out, types that must exist on the subscriber).
    pub notes: Vec<String>,
}

/// `CREATE TABLE "s"."t" (...);`
pub fn create_table_sql(info: &TableInfo) -> String {
    let cols: Vec<String> = info
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("    {} {}", quote_ident(&c.name), c.type_sql);
            if let Some(coll) = &c.collation {
                s.push_str(" COLLATE ");
                s.push_str(coll);
            }
            if let Some(d) = &c.default {
                s.push_str(" DEFAULT ");
                s.push_str(d);
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    format!(
        "CREATE TABLE {} (\n{}\n);\n",
        info.table.quoted(),
        cols.join(",\n")
    )
}

fn column_list(info: &TableInfo) -> String {
    info.columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `COPY ... FROM stdin;` line that precedes the table's data in the file.
pub fn copy_in_sql(info: &TableInfo) -> String {
    format!(
        "COPY {} ({}) FROM stdin;\n",
        info.table.quoted(),
        column_list(info)
    )
}

/// The query that reads the table's rows on the provider.
pub fn copy_out_sql(info: &TableInfo) -> String {
    format!(
        "COPY (SELECT {} FROM {}{}) TO STDOUT",
        column_list(info),
        if info.partitioned { "" } else { "ONLY " },
        info.table.quoted()
    )
}

/// `CREATE SCHEMA IF NOT EXISTS` for `first` (if any) and the sequences' schemas, then
/// the sequences.
fn schemas_then_sequences(first: Option<&String>, sequences: &[Sequence]) -> String {
    let mut s = String::new();
    let mut schemas: Vec<&String> = first.into_iter().collect();
    for q in sequences {
        if !schemas.contains(&&q.schema) {
            schemas.push(&q.schema);
        }
    }
    for schema in schemas {
        s.push_str(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};\n",
            quote_ident(schema)
        ));
    }
    for q in sequences {
        s.push_str(&q.create_sql());
    }
    s
}

/// The schemas the table and its sequences live in, then the sequences (the table's
/// defaults call `nextval`, so they must exist first). Only replicated sequences get
/// their provider's value.
pub fn schemas_and_sequences_sql(info: &TableInfo) -> String {
    schemas_then_sequences(Some(&info.table.schema), &info.sequences)
}

/// The replicated sequences of the tables the site keeps, at their current values: a
/// sequence that joined a set (or a table) since the site got its table must exist
/// there before its changes arrive. `IF NOT EXISTS` leaves the site's own sequence in
/// place; its value is the provider's from here on either way.
pub fn kept_sequences_sql(sequences: &[Sequence]) -> String {
    schemas_then_sequences(None, sequences)
}

/// Constraints, indexes and sequence ownership, after the data.
pub fn after_data_sql(info: &TableInfo) -> String {
    let mut s = String::new();
    for c in &info.constraints {
        s.push_str(&format!(
            "ALTER TABLE ONLY {} ADD CONSTRAINT {} {};\n",
            info.table.quoted(),
            quote_ident(&c.name),
            c.definition
        ));
    }
    for i in &info.indexes {
        s.push_str(i.trim_end().trim_end_matches(';'));
        s.push_str(";\n");
    }
    for q in &info.sequences {
        if let Some(col) = &q.owned_by {
            s.push_str(&format!(
                "ALTER SEQUENCE {} OWNED BY {}.{};\n",
                q.quoted(),
                info.table.quoted(),
                quote_ident(col)
            ));
        }
    }
    s
}

/// Bytes gathered before they go to the writer as one chunk.
const CHUNK: usize = 256 * 1024;

/// Chunks on their way to the writer at most: the rows from the database wait while the
/// disk is behind.
const CHUNKS_IN_FLIGHT: usize = 8;

/// What the writer is sent.
enum Chunk {
    /// More SQL.
    Data(Vec<u8>),
    /// The SQL is complete: end the gzip stream and fsync the file.
    End,
}

/// The gzip stream being written to `<node>.sql.gz.part`. Compressing, writing and the
/// final fsync are blocking work: a task of the runtime's blocking pool owns the file and
/// does them ([`write_chunks`]), fed through a bounded channel; the async side only
/// gathers the SQL into chunks.
struct SqlWriter {
    /// What is gathered for the next chunk.
    buf: Vec<u8>,
    /// Chunks for the writer.
    chunks: mpsc::Sender<Chunk>,
    /// The writer; `None` once waited for.
    writer: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl SqlWriter {
    /// Creates the file (on the blocking pool) and starts its writer.
    async fn create(path: &Path) -> anyhow::Result<SqlWriter> {
        let p = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || {
            crate::fsutil::create_new(&p).with_context(|| format!("creating {}", p.display()))
        })
        .await
        .context("creating the SQL file")??;
        let (chunks, received) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, received));
        Ok(SqlWriter {
            buf: Vec::with_capacity(CHUNK),
            chunks,
            writer: Some(writer),
        })
    }

    async fn text(&mut self, s: &str) -> anyhow::Result<()> {
        self.bytes(s.as_bytes()).await
    }

    async fn bytes(&mut self, b: &[u8]) -> anyhow::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.send(Chunk::Data(chunk)).await?;
        }
        Ok(())
    }

    /// Sends a chunk; when the writer has stopped, its error.
    async fn send(&mut self, chunk: Chunk) -> anyhow::Result<()> {
        if self.chunks.send(chunk).await.is_ok() {
            return Ok(());
        }
        Err(self
            .wait()
            .await
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the SQL writer stopped early")))
    }

    /// Waits for the writer and returns its result.
    async fn wait(&mut self) -> anyhow::Result<()> {
        match self.writer.take() {
            Some(w) => w.await.context("the SQL writer did not complete")?,
            None => Ok(()),
        }
    }

    /// Ends the gzip stream and fsyncs the file.
    async fn finish(mut self) -> anyhow::Result<()> {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.send(Chunk::Data(rest)).await?;
        }
        self.send(Chunk::End).await?;
        self.wait().await
    }
}

/// The writer of [`SqlWriter`], on the blocking pool: compresses and writes every chunk,
/// and at [`Chunk::End`] ends the stream and fsyncs. A writer whose sender goes away
/// without `End` (the generation failed, and its file is removed) just stops.
fn write_chunks(file: File, mut chunks: mpsc::Receiver<Chunk>) -> anyhow::Result<()> {
    let mut enc = GzEncoder::new(
        BufWriter::with_capacity(256 * 1024, file),
        Compression::new(6),
    );
    while let Some(chunk) = chunks.blocking_recv() {
        match chunk {
            Chunk::Data(b) => enc.write_all(&b).context("writing the SQL")?,
            Chunk::End => {
                let buf = enc.finish().context("finishing the gzip stream")?;
                let f = buf
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("flushing the SQL")?;
                return f.sync_all().context("syncing the SQL");
            }
        }
    }
    Ok(())
}

/// Connects to the provider database.
pub async fn connect(cfg: &ManagerConfig) -> anyhow::Result<Client> {
    connect_to(&cfg.database).await
}

/// Connects to the provider database `database` (before a configuration exists: the
/// import of the original tools' set-up).
pub async fn connect_to(database: &DatabaseConfig) -> anyhow::Result<Client> {
    pg::connect(pg::Target::of(database, "slony-manager"))
        .await
        .context("cannot connect to the provider database")
}

/// `Result<T, tokio_postgres::Error>` → anyhow with the server's message and a context.
trait PgContext<T> {
    fn pg(self, what: &str) -> anyhow::Result<T>;
}

impl<T> PgContext<T> for Result<T, tokio_postgres::Error> {
    fn pg(self, what: &str) -> anyhow::Result<T> {
        Ok(self.map_err(pg::doing(what))?)
    }
}

/// Generates the SQL for `plan` into `part` (gzip, fsynced; the caller renames it).
///
/// # Returns
///
/// The snapshot position, notes to add to the plan's, and the site's sequence list.
///
/// # Errors
///
/// A message fit for `.sqldone`: a table missing on the provider, the provider not being
/// a log-shipping node, a database or disk error.
pub async fn generate(
    cfg: &ManagerConfig,
    node: &NodeName,
    plan: &Plan,
    part: &Path,
) -> anyhow::Result<Generated> {
    let client = connect(cfg).await?;
    client
        .batch_execute("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .pg("setting the search_path")?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .pg("starting the snapshot transaction")?;
    let result = generate_in_snapshot(cfg, &client, node, plan, part).await;
    // Read only: nothing to keep. A failed ROLLBACK means the connection is gone, and
    // the server rolls back by itself.
    let _ = client.batch_execute("ROLLBACK").await;
    result
}

/// Reads the snapshot's counter, looks up everything the SQL needs, then writes it.
async fn generate_in_snapshot(
    cfg: &ManagerConfig,
    client: &Client,
    node: &NodeName,
    plan: &Plan,
    part: &Path,
) -> anyhow::Result<Generated> {
    let snapshot = read_snapshot(cfg, client).await?;
    let mut found = look_up(cfg, client, plan).await?;
    write_sql(cfg, client, node, plan, &snapshot, &mut found, part).await?;
    Ok(Generated {
        snapshot,
        notes: found.notes,
        sequences: found.sequences,
    })
}

/// What [`look_up`] read from the catalog for the SQL.
struct Found {
    /// The added tables.
    infos: Vec<TableInfo>,
    /// The replicated sequences of the kept tables and of the sequences the site lists
    /// itself, each once.
    kept_sequences: Vec<Sequence>,
    /// The site's sequence list for its new table list.
    sequences: Vec<QualifiedTable>,
    /// Notes for `.sqldone`.
    notes: Vec<String>,
}

/// Looks everything up before a byte is written: a missing table refuses the request.
async fn look_up(cfg: &ManagerConfig, client: &Client, plan: &Plan) -> anyhow::Result<Found> {
    let mut infos = Vec::new();
    let mut notes = Vec::new();
    // Sequences the site lists itself (set sequences no table of its owns): created if
    // missing and set at the snapshot, like the kept tables' sequences.
    let mut listed: Vec<(&QualifiedTable, Vec<Sequence>)> = Vec::new();
    for t in &plan.added {
        if let Some(q) = listed_sequence(&cfg.cluster, client, t).await? {
            listed.push((t, vec![q]));
            continue;
        }
        in_a_slony_set(cfg, client, t).await?;
        let info = describe(cfg, client, t).await?;
        notes.extend(info.notes.iter().cloned());
        infos.push(info);
    }
    // The kept tables' sequences are read again at every change: sets change.
    let mut kept: Vec<(&QualifiedTable, Vec<Sequence>)> = Vec::new();
    for t in plan.tables.iter().filter(|t| !plan.added.contains(t)) {
        kept.push((
            t,
            kept_sequences_of(&cfg.cluster, client, t, &mut notes).await?,
        ));
    }
    kept.extend(listed);
    let sequences = sequence_list(plan.tables.iter().flat_map(|t| {
        let new = infos.iter().filter(move |i| i.table == *t);
        let old = kept.iter().filter(move |(k, _)| *k == t);
        new.flat_map(|i| &i.sequences)
            .chain(old.flat_map(|(_, s)| s))
    }));
    let mut kept_sequences: Vec<Sequence> = Vec::new();
    for q in kept.iter().flat_map(|(_, s)| s) {
        if !kept_sequences
            .iter()
            .any(|k| k.schema == q.schema && k.name == q.name)
        {
            kept_sequences.push(q.clone());
        }
    }

    Ok(Found {
        infos,
        kept_sequences,
        sequences,
        notes,
    })
}

/// The replicated sequences of an entry the site keeps in its list: the entry itself when
/// it is one of the cluster's set sequences, else those of the table (see
/// [`table_sequences`]). A sequence that left every set has none, and a note says so.
async fn kept_sequences_of(
    cluster: &ClusterName,
    client: &Client,
    t: &QualifiedTable,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Sequence>> {
    match listed_sequence(cluster, client, t).await {
        Ok(Some(q)) => Ok(vec![q]),
        Ok(None) => kept_table_sequences(cluster, client, t, notes).await,
        Err(e) => {
            notes.push(format!("{e:#}: its value is no longer replicated"));
            Ok(Vec::new())
        }
    }
}

/// The sequence list of a site whose list is `tables`, decided as a change of its
/// subscription decides the list of the tables it keeps: what the cutter then sends
/// sequence changes for. Read on `client` as it is (the caller picks the transaction).
///
/// # Returns
///
/// The list, and notes for the operator (a table gone from the provider, say).
///
/// # Errors
///
/// The provider is not a Slony node of `cluster`, or a database error.
pub async fn site_sequences(
    cluster: &ClusterName,
    client: &Client,
    tables: &[QualifiedTable],
) -> anyhow::Result<(Vec<QualifiedTable>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut per_table = Vec::new();
    for t in tables {
        per_table.push(kept_sequences_of(cluster, client, t, &mut notes).await?);
    }
    Ok((sequence_list(per_table.iter().flatten()), notes))
}

/// Writes the SQL into `part` (gzip, fsynced): header, drops, kept sequences, then each
/// added table with its rows.
async fn write_sql(
    cfg: &ManagerConfig,
    client: &Client,
    node: &NodeName,
    plan: &Plan,
    snapshot: &Snapshot,
    found: &mut Found,
    part: &Path,
) -> anyhow::Result<()> {
    let Found {
        infos,
        kept_sequences,
        sequences,
        notes,
    } = found;
    let mut w = SqlWriter::create(part).await?;
    w.text(&format!(
        "-- slony-manager subscription SQL for site {node}, cluster {}\n\
         -- Snapshot at archive counter {} ({}); the site applies archive {} next.\n\
         -- New site: {}. Tables added: {}. Tables dropped: {}. Sequences replicated: {}.\n\
         -- Apply in ONE transaction (the subscriber wraps it); it holds no BEGIN/COMMIT.\n",
        cfg.cluster,
        snapshot.counter,
        snapshot.created.replace('\n', " "),
        snapshot.counter.next(),
        plan.new_site,
        plan.added.len(),
        plan.dropped.len(),
        sequences.len(),
    ))
    .await?;
    for n in &plan.notes {
        w.text(&format!("-- Note: {}\n", n.replace('\n', " ")))
            .await?;
    }
    if plan.new_site {
        // The site creates its tracking schema itself, at the counter of the answer: the
        // provider's SQL never defines functions on a replica.
        w.text(&format!(
            "\n-- New site: the receiver creates its tracking schema at archive {}.\n",
            snapshot.counter
        ))
        .await?;
    }
    for t in &plan.dropped {
        // A sequence the site listed stays where it is (the archives before the snapshot
        // may still set it); only tables are dropped.
        if is_sequence(client, t).await? {
            notes.push(format!(
                "{t} is a sequence: it stays on the subscriber, no longer updated"
            ));
            continue;
        }
        w.text(&format!(
            "\n-- Unsubscribed: {t}\nDROP TABLE IF EXISTS {};\n",
            t.quoted()
        ))
        .await?;
    }
    if !kept_sequences.is_empty() {
        w.text("\n-- Replicated sequences of the tables the site keeps\n")
            .await?;
        w.text(&kept_sequences_sql(kept_sequences)).await?;
    }
    for info in infos.iter() {
        w.text(&format!("\n-- Table {}\n", info.table)).await?;
        w.text(&schemas_and_sequences_sql(info)).await?;
        w.text(&create_table_sql(info)).await?;
        for n in &info.notes {
            w.text(&format!("-- Note: {}\n", n.replace('\n', " ")))
                .await?;
        }
        w.text(&copy_in_sql(info)).await?;
        copy_rows(client, info, &mut w).await?;
        w.text("\\.\n").await?;
        w.text(&after_data_sql(info)).await?;
    }
    w.text("\n-- End Of Subscription SQL\n").await?;
    w.finish().await?;
    Ok(())
}

/// Reads the log-shipping node's archive counter (`"_<cluster>".sl_archive_counter`),
/// which a snapshot taken now corresponds to.
///
/// # Errors
///
/// The provider is not a log-shipping node of the cluster (no such table, or not one
/// row), or the query failed.
pub async fn read_snapshot(cfg: &ManagerConfig, client: &Client) -> anyhow::Result<Snapshot> {
    let sql = format!(
        "SELECT ac_num, ac_timestamp::text FROM {}.sl_archive_counter",
        cfg.cluster.schema()
    );
    let rows = match client.query(sql.as_str(), &[]).await {
        Ok(rows) => rows,
        Err(e)
            if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::INVALID_SCHEMA_NAME) =>
        {
            bail!(
                "the provider database has no {}.sl_archive_counter: it is not a Slony \
                 log-shipping node of cluster {}",
                cfg.cluster.schema(),
                cfg.cluster
            )
        }
        Err(e) => return Err(e).pg("reading the archive counter"),
    };
    let [row] = rows.as_slice() else {
        bail!(
            "{}.sl_archive_counter holds {} rows, expected exactly one",
            cfg.cluster.schema(),
            rows.len()
        );
    };
    let num: Option<i64> = row.try_get(0).pg("reading ac_num")?;
    let created: Option<String> = row.try_get(1).pg("reading ac_timestamp")?;
    let num = num
        .filter(|n| *n >= 0)
        .context("sl_archive_counter.ac_num is NULL or negative")?;
    Ok(Snapshot {
        counter: Counter(num as u64),
        created: created.unwrap_or_else(|| "1970-01-01 00:00:00".into()),
    })
}

/// Only what the cluster replicates is served: a table of one of its sets
/// (`"_<cluster>".sl_table`). A site asking for a catalog, another schema's table, a view
/// or any table outside every set is refused before anything of it is read.
async fn in_a_slony_set(
    cfg: &ManagerConfig,
    client: &Client,
    t: &QualifiedTable,
) -> anyhow::Result<()> {
    if !is_in_a_slony_set(&cfg.cluster, client, t).await? {
        bail!(
            "{t} is not a table of any Slony set of cluster {}: only what the cluster replicates is served",
            cfg.cluster
        );
    }
    Ok(())
}

/// Whether `t` is a table of one of the cluster's Slony sets (`"_<cluster>".sl_table`).
///
/// # Errors
///
/// The provider has no `"_<cluster>".sl_table` (it is not a Slony node of the cluster),
/// or a database error.
pub async fn is_in_a_slony_set(
    cluster: &ClusterName,
    client: &Client,
    t: &QualifiedTable,
) -> anyhow::Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {}.sl_table st \
           JOIN pg_catalog.pg_class c ON c.oid = st.tab_reloid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND c.relname = $2)",
        cluster.schema()
    );
    match client.query_one(sql.as_str(), &[&t.schema, &t.table]).await {
        Ok(row) => Ok(row.get(0)),
        Err(e)
            if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::INVALID_SCHEMA_NAME) =>
        {
            bail!(
                "the provider database has no {}.sl_table: it is not a Slony node of cluster {cluster}",
                cluster.schema(),
            )
        }
        Err(e) => Err(e).pg("looking up the Slony sets"),
    }
}

/// The sequences of table `t` (`oid`): those its column defaults use and those its
/// columns own (`OWNED BY`), in schema and name order. Of these, the ones in a Slony set
/// of the cluster (with a name a site's list can hold) are replicated and get their
/// current value. One a default uses that is not replicated comes without a value, and
/// one only owned that is not replicated is left out (nothing needs it); for both a
/// note says so when `notes` is given (a sequence only owned and in no set, none).
///
/// # Errors
///
/// The provider has no `"_<cluster>".sl_sequence`, or a database error.
async fn table_sequences(
    cluster: &ClusterName,
    client: &Client,
    t: &QualifiedTable,
    oid: u32,
    mut notes: Option<&mut Vec<String>>,
) -> anyhow::Result<Vec<Sequence>> {
    // `nextval('s'::regclass)` in a default records a dependency of the default on `s`;
    // `OWNED BY` one of type `a` of the sequence on the owning column. Other objects
    // depending on the table's columns the same way (its indexes) are not sequences.
    let sql = format!(
        "WITH used AS ( \
            SELECT d.refobjid AS seq FROM pg_catalog.pg_attrdef ad \
              JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum \
              JOIN pg_catalog.pg_depend d \
                ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
             WHERE ad.adrelid = $1 AND NOT a.attisdropped \
               AND a.attgenerated = '' AND a.attidentity = ''), \
         owned AS ( \
            SELECT od.objid AS seq, oa.attname::text AS col FROM pg_catalog.pg_depend od \
              JOIN pg_catalog.pg_attribute oa \
                ON oa.attrelid = od.refobjid AND oa.attnum = od.refobjsubid \
             WHERE od.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND od.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND od.refobjid = $1 AND od.deptype = 'a' AND NOT oa.attisdropped) \
         SELECT sn.nspname::text, s.relname::text, {SEQUENCE_OPTIONS}, \
                (SELECT min(o.col) FROM owned o WHERE o.seq = s.oid), \
                s.oid IN (SELECT seq FROM used), \
                EXISTS (SELECT 1 FROM {}.sl_sequence ss WHERE ss.seq_reloid = s.oid) \
           FROM pg_catalog.pg_class s \
           JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace \
           JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid \
          WHERE s.relkind = 'S' \
            AND (s.oid IN (SELECT seq FROM used) OR s.oid IN (SELECT seq FROM owned)) \
          ORDER BY 1, 2",
        cluster.schema()
    );
    let rows = match client.query(sql.as_str(), &[&oid]).await {
        Ok(rows) => rows,
        Err(e)
            if matches!(e.code(), Some(c) if *c == SqlState::UNDEFINED_TABLE
                || *c == SqlState::INVALID_SCHEMA_NAME) =>
        {
            bail!(
                "the provider database has no {}.sl_sequence: it is not a Slony node of cluster {}",
                cluster.schema(),
                cluster
            )
        }
        Err(e) => return Err(e).pg(&format!("reading the sequences of {t}")),
    };
    let mut sequences = Vec::new();
    for r in &rows {
        if let Some(q) = sequence_of(cluster, client, t, r, notes.as_deref_mut()).await? {
            sequences.push(q);
        }
    }
    Ok(sequences)
}

/// One row of [`table_sequences`]'s query as a [`Sequence`], with its current value when
/// it is replicated; `None` for one only owned and in no set (nothing needs it).
async fn sequence_of(
    cluster: &ClusterName,
    client: &Client,
    t: &QualifiedTable,
    r: &tokio_postgres::Row,
    notes: Option<&mut Vec<String>>,
) -> anyhow::Result<Option<Sequence>> {
    let schema: String = r.get(0);
    let name: String = r.get(1);
    let used: bool = r.get(4);
    let in_set: bool = r.get(5);
    let replicated = in_set && QualifiedTable::new(&schema, &name).is_ok();
    if !replicated {
        if let Some(notes) = notes {
            if in_set {
                notes.push(format!(
                    "sequence {schema}.{name} of {t} is in a Slony set, but a site's \
                     sequence list cannot hold its name (it holds control characters): \
                     its value is not replicated{}",
                    if used {
                        "; it is created on the subscriber for the default"
                    } else {
                        ""
                    }
                ));
            } else if used {
                notes.push(format!(
                    "sequence {schema}.{name}, used by a default of {t}, is in no Slony \
                     set of cluster {}: created on the subscriber, its value is not \
                     replicated",
                    cluster
                ));
            }
        }
        if !used {
            return Ok(None);
        }
    }
    let value = if replicated {
        let quoted = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        let v = client
            .query_one(
                format!("SELECT last_value, is_called FROM {quoted}").as_str(),
                &[],
            )
            .await
            .pg(&format!("reading sequence {schema}.{name}"))?;
        Some(SequenceValue {
            last_value: v.get(0),
            is_called: v.get(1),
        })
    } else {
        None
    };
    Ok(Some(Sequence {
        schema,
        name,
        options: r.get(2),
        value,
        owned_by: r.get(3),
    }))
}

/// A sequence's definition, `AS ... INCREMENT BY ... [NO] CYCLE`, from `pg_sequence q`.
const SEQUENCE_OPTIONS: &str = "'AS ' || pg_catalog.format_type(q.seqtypid, NULL) \
     || ' INCREMENT BY ' || q.seqincrement || ' MINVALUE ' || q.seqmin \
     || ' MAXVALUE ' || q.seqmax || ' START WITH ' || q.seqstart \
     || ' CACHE ' || q.seqcache || CASE WHEN q.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END";

/// Whether `t` is a sequence on the provider.
async fn is_sequence(client: &Client, t: &QualifiedTable) -> anyhow::Result<bool> {
    let rows = client
        .query(
            "SELECT 1 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'S'",
            &[&t.schema, &t.table],
        )
        .await
        .pg("looking up the relation")?;
    Ok(!rows.is_empty())
}

/// A sequence the site lists itself (`schema.sequence`, one of the cluster's set
/// sequences that no subscribed table owns): its definition and current value. `None`
/// when `t` is not a sequence on the provider.
///
/// # Errors
///
/// A sequence outside every Slony set of the cluster, or a database error.
async fn listed_sequence(
    cluster: &ClusterName,
    client: &Client,
    t: &QualifiedTable,
) -> anyhow::Result<Option<Sequence>> {
    let sql = format!(
        "SELECT {SEQUENCE_OPTIONS}, \
                EXISTS (SELECT 1 FROM {}.sl_sequence ss WHERE ss.seq_reloid = s.oid) \
           FROM pg_catalog.pg_class s \
           JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace \
           JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid \
          WHERE s.relkind = 'S' AND sn.nspname = $1 AND s.relname = $2",
        cluster.schema()
    );
    let rows = client
        .query(sql.as_str(), &[&t.schema, &t.table])
        .await
        .pg("looking up the sequence")?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let in_set: bool = row.get(1);
    if !in_set {
        bail!(
            "{t} is a sequence in no Slony set of cluster {}: only what the cluster replicates is served",
            cluster
        );
    }
    let v = client
        .query_one(
            format!("SELECT last_value, is_called FROM {}", t.quoted()).as_str(),
            &[],
        )
        .await
        .pg(&format!("reading sequence {t}"))?;
    Ok(Some(Sequence {
        schema: t.schema.clone(),
        name: t.table.clone(),
        options: row.get(0),
        value: Some(SequenceValue {
            last_value: v.get(0),
            is_called: v.get(1),
        }),
        owned_by: None,
    }))
}

/// The replicated sequences of a table the site keeps (see [`table_sequences`]). A
/// table gone from the provider has none, and a note says so.
async fn kept_table_sequences(
    cluster: &ClusterName,
    client: &Client,
    t: &QualifiedTable,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Sequence>> {
    let rows = client
        .query(
            "SELECT c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&t.schema, &t.table],
        )
        .await
        .pg("looking up the table")?;
    let Some(row) = rows.first() else {
        notes.push(format!(
            "{t} is no longer a table on the provider: none of its sequences is replicated"
        ));
        return Ok(Vec::new());
    };
    let mut sequences = table_sequences(cluster, client, t, row.get(0), None).await?;
    sequences.retain(|q| q.value.is_some());
    Ok(sequences)
}

/// Reads one table's definition from the catalog (inside the snapshot).
async fn describe(
    cfg: &ManagerConfig,
    client: &Client,
    t: &QualifiedTable,
) -> anyhow::Result<TableInfo> {
    let (oid, partitioned) = look_up_table(client, t).await?;
    let mut notes = Vec::new();
    let columns = read_columns(client, t, oid, &mut notes).await?;
    let sequences = table_sequences(&cfg.cluster, client, t, oid, Some(&mut notes)).await?;
    let constraints = read_constraints(client, t, oid, &mut notes).await?;
    let indexes = read_indexes(client, oid).await?;
    Ok(TableInfo {
        table: t.clone(),
        partitioned,
        columns,
        sequences,
        constraints,
        indexes,
        notes,
    })
}

/// The table's oid, and whether it is partitioned; anything but a table is refused.
async fn look_up_table(client: &Client, t: &QualifiedTable) -> anyhow::Result<(u32, bool)> {
    let rows = client
        .query(
            "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&t.schema, &t.table],
        )
        .await
        .pg("looking up the table")?;
    let Some(row) = rows.first() else {
        bail!("table {t} does not exist on the provider");
    };
    let oid: u32 = row.get(0);
    let relkind: String = row.get(1);
    let partitioned = match relkind.as_str() {
        "r" => false,
        "p" => true,
        other => {
            let what = match other {
                "v" => "a view",
                "m" => "a materialized view",
                "S" => "a sequence",
                "f" => "a foreign table",
                "i" | "I" => "an index",
                _ => "not an ordinary table",
            };
            bail!("{t} is {what} on the provider, not a table");
        }
    };
    Ok((oid, partitioned))
}

/// The table's columns, in order, with notes on those the subscriber gets differently.
async fn read_columns(
    client: &Client,
    t: &QualifiedTable,
    oid: u32,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Column>> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    a.attnotnull, \
                    CASE WHEN a.attgenerated = '' AND a.attidentity = '' \
                         THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END, \
                    CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN \
                         (SELECT pg_catalog.quote_ident(cn.nspname) || '.' \
                                 || pg_catalog.quote_ident(co.collname) \
                            FROM pg_catalog.pg_collation co \
                            JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                           WHERE co.oid = a.attcollation) END, \
                    a.attgenerated::text, a.attidentity::text, tn.nspname::text \
               FROM pg_catalog.pg_attribute a \
               JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
               LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
              ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .pg("reading the columns")?;
    let mut columns = Vec::new();
    for r in &rows {
        let name: String = r.get(0);
        let type_sql: String = r.get(1);
        let generated: String = r.get(5);
        let identity: String = r.get(6);
        let type_schema: String = r.get(7);
        if !generated.is_empty() {
            notes.push(format!(
                "{t}.{name} is a generated column on the provider: a plain column on the subscriber"
            ));
        }
        if !identity.is_empty() {
            notes.push(format!(
                "{t}.{name} is an identity column on the provider: a plain column on the subscriber"
            ));
        }
        if type_schema != "pg_catalog" && type_schema != "information_schema" {
            notes.push(format!(
                "{t}.{name} has type {type_sql}, which must already exist on the subscriber"
            ));
        }
        columns.push(Column {
            name,
            type_sql,
            not_null: r.get(2),
            default: r.get(3),
            collation: r.get(4),
        });
    }
    if columns.is_empty() {
        bail!("{t} has no columns on the provider: nothing to replicate");
    }
    Ok(columns)
}

/// Its primary key, unique, check and exclusion constraints; a note for each foreign key.
async fn read_constraints(
    client: &Client,
    t: &QualifiedTable,
    oid: u32,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Constraint>> {
    let rows = client
        .query(
            "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid), contype::text \
               FROM pg_catalog.pg_constraint \
              WHERE conrelid = $1 AND contype IN ('p', 'u', 'c', 'x', 'f') \
              ORDER BY CASE contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 ELSE 2 END, conname",
            &[&oid],
        )
        .await
        .pg("reading the constraints")?;
    let mut constraints = Vec::new();
    for r in &rows {
        let name: String = r.get(0);
        let definition: String = r.get(1);
        let kind: String = r.get(2);
        if kind == "f" {
            notes.push(format!(
                "foreign key {name} of {t} was not created on the subscriber (foreign keys are not replicated)"
            ));
            continue;
        }
        constraints.push(Constraint { name, definition });
    }
    Ok(constraints)
}

/// `pg_get_indexdef` of the indexes that back no constraint.
async fn read_indexes(client: &Client, oid: u32) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i \
              WHERE i.indrelid = $1 AND NOT EXISTS ( \
                    SELECT 1 FROM pg_catalog.pg_constraint c \
                     WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid \
                       AND c.contype IN ('p', 'u', 'x')) \
              ORDER BY i.indexrelid",
            &[&oid],
        )
        .await
        .pg("reading the indexes")?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Streams the table's rows from the provider into the SQL, chunk by chunk.
async fn copy_rows(client: &Client, info: &TableInfo, w: &mut SqlWriter) -> anyhow::Result<()> {
    let what = format!("copying {}", info.table);
    let stream = client
        .copy_out(copy_out_sql(info).as_str())
        .await
        .pg(&what)?;
    futures_util::pin_mut!(stream);
    let mut last = b'\n';
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.pg(&what)?;
        if let Some(b) = chunk.last() {
            last = *b;
        }
        // Gathered into chunks here; compressed and written on the writer's thread.
        w.bytes(&chunk).await?;
    }
    if last != b'\n' {
        w.text("\n").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slony_shared::archive::parse::{Item, Splitter};
    use slony_shared::archive::statement::Strings;

    const OPTIONS: &str = "AS bigint INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1 NO CYCLE";

    fn info() -> TableInfo {
        TableInfo {
            table: QualifiedTable::parse("s1.t1").unwrap(),
            partitioned: false,
            columns: vec![
                Column {
                    name: "id".into(),
                    type_sql: "bigint".into(),
                    collation: None,
                    default: Some("nextval('s1.t1_id_seq'::regclass)".into()),
                    not_null: true,
                },
                Column {
                    name: "we\"ird; name".into(),
                    type_sql: "text".into(),
                    collation: Some("pg_catalog.\"C\"".into()),
                    default: Some("'a;b'::text".into()),
                    not_null: false,
                },
            ],
            sequences: vec![
                Sequence {
                    schema: "s1".into(),
                    name: "t1_id_seq".into(),
                    options: OPTIONS.into(),
                    value: Some(SequenceValue {
                        last_value: 10,
                        is_called: true,
                    }),
                    owned_by: Some("id".into()),
                },
                Sequence {
                    schema: "s2".into(),
                    name: "t1_x_seq".into(),
                    options: OPTIONS.into(),
                    value: None,
                    owned_by: None,
                },
            ],
            constraints: vec![Constraint {
                name: "t1_pkey".into(),
                definition: "PRIMARY KEY (id)".into(),
            }],
            indexes: vec!["CREATE INDEX t1_x ON s1.t1 USING btree (\"we\"\"ird; name\")".into()],
            notes: vec![],
        }
    }

    #[test]
    fn renders_quoted_ddl() {
        let i = info();
        let ddl = create_table_sql(&i);
        assert_eq!(
            ddl,
            "CREATE TABLE \"s1\".\"t1\" (\n    \"id\" bigint DEFAULT nextval('s1.t1_id_seq'::regclass) NOT NULL,\n    \"we\"\"ird; name\" text COLLATE pg_catalog.\"C\" DEFAULT 'a;b'::text\n);\n"
        );
        assert_eq!(
            copy_in_sql(&i),
            "COPY \"s1\".\"t1\" (\"id\", \"we\"\"ird; name\") FROM stdin;\n"
        );
        assert_eq!(
            copy_out_sql(&i),
            "COPY (SELECT \"id\", \"we\"\"ird; name\" FROM ONLY \"s1\".\"t1\") TO STDOUT"
        );
        let seq = schemas_and_sequences_sql(&i);
        assert_eq!(
            seq.matches("CREATE SCHEMA IF NOT EXISTS \"s1\";").count(),
            1
        );
        assert!(seq.contains("CREATE SEQUENCE IF NOT EXISTS \"s1\".\"t1_id_seq\" AS bigint"));
        assert!(seq.contains("SELECT pg_catalog.setval('\"s1\".\"t1_id_seq\"', 10, true);"));
        // A sequence in no set: its definition (the default needs it), no value.
        assert!(seq.contains("CREATE SCHEMA IF NOT EXISTS \"s2\";"));
        assert!(seq.contains("CREATE SEQUENCE IF NOT EXISTS \"s2\".\"t1_x_seq\" AS bigint"));
        assert!(!seq.contains("t1_x_seq\"', "), "{seq}");
        assert_eq!(seq.matches("setval").count(), 1, "{seq}");
        let after = after_data_sql(&i);
        assert!(after.contains(
            "ALTER TABLE ONLY \"s1\".\"t1\" ADD CONSTRAINT \"t1_pkey\" PRIMARY KEY (id);"
        ));
        assert!(
            after.contains("ALTER SEQUENCE \"s1\".\"t1_id_seq\" OWNED BY \"s1\".\"t1\".\"id\";")
        );
    }

    #[test]
    fn the_sequence_list_holds_replicated_sequences_once_in_table_order() {
        let seq = |schema: &str, name: &str, replicated: bool| Sequence {
            schema: schema.into(),
            name: name.into(),
            options: OPTIONS.into(),
            value: replicated.then_some(SequenceValue {
                last_value: 1,
                is_called: false,
            }),
            owned_by: None,
        };
        let t2 = [seq("s1", "t2_id_seq", true), seq("s1", "shared", true)];
        let t1 = [
            seq("s1", "shared", true),
            seq("s1", "t1_id_seq", false),
            seq("s9", "Odd Name", true),
            seq("s3", "ticket", true),
        ];
        let list = sequence_list(t2.iter().chain(&t1));
        assert_eq!(
            list,
            ["s1.t2_id_seq", "s1.shared", "s9.\"Odd Name\"", "s3.ticket"]
                .map(|n| QualifiedTable::parse(n).unwrap())
                .to_vec()
        );
        assert!(sequence_list(&[]).is_empty());
        // The kept tables' sequences: created if missing, at the provider's value.
        let sql = kept_sequences_sql(&t2);
        assert_eq!(
            sql,
            format!(
                "CREATE SCHEMA IF NOT EXISTS \"s1\";\n\
                 CREATE SEQUENCE IF NOT EXISTS \"s1\".\"t2_id_seq\" {OPTIONS};\n\
                 SELECT pg_catalog.setval('\"s1\".\"t2_id_seq\"', 1, false);\n\
                 CREATE SEQUENCE IF NOT EXISTS \"s1\".\"shared\" {OPTIONS};\n\
                 SELECT pg_catalog.setval('\"s1\".\"shared\"', 1, false);\n"
            )
        );
    }

    /// The pieces, assembled as `generate` does, split into the statements psql would run.
    #[test]
    fn output_splits_like_psql() {
        let i = info();
        let cluster = slony_shared::ident::ClusterName::new("lab").unwrap();
        let mut sql = String::from("-- header\n");
        sql.push_str(&kept_sequences_sql(&i.sequences));
        sql.push_str(&schemas_and_sequences_sql(&i));
        sql.push_str(&create_table_sql(&i));
        sql.push_str(&copy_in_sql(&i));
        sql.push_str("1\ta\\tb;c\n2\t\\N\n\\.\n");
        sql.push_str(&after_data_sql(&i));
        sql.push_str("-- End Of Subscription SQL\n");
        let mut s = Splitter::new(sql.as_bytes());
        let mut statements = Vec::new();
        let mut copies = Vec::new();
        while let Some(item) = s.next_item().unwrap() {
            match item {
                Item::Statement { sql, .. } => statements.push(sql),
                Item::CopyIn { sql, .. } => {
                    let mut data = Vec::new();
                    let mut buf = Vec::new();
                    loop {
                        let more = s.copy_chunk(&mut buf).unwrap();
                        data.extend_from_slice(&buf);
                        if !more {
                            break;
                        }
                    }
                    copies.push((sql, data));
                }
                Item::Comment { .. } => {}
            }
        }
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].1, b"1\ta\\tb;c\n2\t\\N\n");
        // Every statement passes the rules the receiver holds the provider's SQL to.
        let rules = slony_shared::archive::statement::Rules::new(
            &format!("_{}", cluster.as_str()),
            Default::default(),
        );
        for st in &statements {
            let parsed = slony_shared::archive::statement::parse(st, Strings::Standard).unwrap();
            assert_eq!(rules.check_ddl(&parsed), Ok(vec![]), "{st}");
        }
        assert!(statements
            .iter()
            .any(|s| s.starts_with("CREATE TABLE \"s1\".\"t1\"")));
        assert!(statements
            .iter()
            .any(|s| s.starts_with("CREATE INDEX t1_x")));
    }
}
