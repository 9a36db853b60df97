//! `pull`: bring the replica up to date with the provider.
//!
//! One run is a short pipeline, each step in its own module:
//!
//! ```text
//! list (remote) -> plan -> fetch (remote, own thread) -> verify (check) -> apply -> record
//! ```
//!
//! The database's `sl_archive_tracking` says where the replica is; the plan says what
//! to fetch; the fetch thread downloads ahead through a bounded channel; the applier
//! applies each archive in its own transaction; `record` mirrors the counter and moves
//! the file to the applied directory. The pause file and cancellation are checked
//! before every archive, never in the middle of one.

pub mod apply;
pub mod fetch;
pub mod plan;
pub mod record;
pub mod refused;

use crate::config::ReceiverConfig;
use crate::local::{local_err, prepare_dirs, LocalError};
use crate::provider::{Provider, RemoteError, RemoteFile};
use crate::replica::{self, ReplicaError};
use apply::{Applier, ApplyError};
use fetch::{FetchError, FetchJob};
use plan::{Listing, Plan, PlanError};
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::{ArchiveError, ArchiveName};
use slony_shared::counter::Counter;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Why a run stopped early. Each kind has its own exit code and alert key.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The replica database: unreachable, not initialised, unreadable position, or a
    /// role that may not apply.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The provider could not be reached or read.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The provider's listing makes no sense.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// An archive is missing from the stream.
    #[error("archive {missing} is missing on the provider while later archives exist (next available: {next_available}); the replica stays at {at}. Ask the provider to restore archive {missing}")]
    Gap {
        /// The missing counter.
        missing: Counter,
        /// The next counter that exists.
        next_available: Counter,
        /// Where the replica stopped.
        at: Counter,
    },
    /// An archive could not be fetched or is invalid.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// An archive could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// An archive refused for its content earlier is still served unchanged.
    #[error("{error} (still refused: the provider serves the same {file}; it is not fetched or applied again until the provider replaces it)")]
    StillRefused {
        /// The refused archive.
        archive: ArchiveName,
        /// The provider file it came from.
        file: String,
        /// The refusal, as first reported.
        error: String,
    },
    /// A local file operation failed.
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl PullError {
    /// A stable key: the same failure on the next run gets the same key, so it is
    /// mailed once and then daily, not on every run.
    pub fn alert_key(&self) -> String {
        match self {
            PullError::Replica(ReplicaError::Unavailable { .. }) => "database:unavailable".into(),
            PullError::Replica(ReplicaError::NotInitialised { .. }) => {
                "database:not-initialised".into()
            }
            PullError::Replica(ReplicaError::Tracking(_)) => "database:tracking".into(),
            PullError::Replica(ReplicaError::Privilege(_)) => "database:privilege".into(),
            PullError::Remote(e) => format!("remote:{}", e.key()),
            PullError::Plan(PlanError::Duplicate { counter, .. }) => {
                format!("plan:duplicate:{counter}")
            }
            PullError::Plan(PlanError::WrongNode { name, .. }) => format!("plan:node:{name}"),
            PullError::Gap { missing, .. } => format!("gap:{missing}"),
            PullError::Fetch(FetchError::Archive { name, .. }) => {
                format!("archive:{}", name.counter)
            }
            PullError::Fetch(FetchError::Remote(e)) => format!("remote:{}", e.key()),
            PullError::Fetch(FetchError::Batch(_)) => "batch".into(),
            PullError::Fetch(FetchError::BatchMissing { batch, .. }) => format!("batch:{batch}"),
            PullError::Fetch(FetchError::BatchWrongNode { batch, .. }) => {
                format!("batch:node:{batch}")
            }
            PullError::Apply(ApplyError::Connection { .. } | ApplyError::Reconnect { .. }) => {
                "database:lost".into()
            }
            PullError::Apply(ApplyError::Archive { name, .. }) => {
                format!("archive:{}", name.counter)
            }
            PullError::Apply(ApplyError::Sql { name, .. }) => format!("apply:{}", name.counter),
            PullError::Apply(ApplyError::CounterMismatch { name, .. }) => {
                format!("counter:{}", name.counter)
            }
            PullError::StillRefused { archive, .. } => format!("archive:{}", archive.counter),
            PullError::Local(LocalError { what, .. }) => format!("local:{what}"),
        }
    }

    /// The archive refused for its content (grammar or DDL rules), if that is the failure.
    pub fn refused_archive(&self) -> Option<ArchiveName> {
        match self {
            PullError::Fetch(FetchError::Archive {
                name,
                source: ArchiveError::Malformed { .. },
            })
            | PullError::Apply(ApplyError::Archive {
                name,
                source: ArchiveError::Malformed { .. },
            }) => Some(*name),
            _ => None,
        }
    }

    /// Which exit-code family this failure belongs to.
    pub fn class(&self) -> FailureClass {
        match self {
            PullError::Replica(e) => e.class(),
            PullError::Apply(ApplyError::Connection { .. } | ApplyError::Reconnect { .. }) => {
                FailureClass::Database
            }
            // Writing the download to local disk (a full disk, permissions) is local.
            PullError::Local(_)
            | PullError::Remote(RemoteError::Local { .. })
            | PullError::Fetch(FetchError::Remote(RemoteError::Local { .. })) => {
                FailureClass::Local
            }
            PullError::Remote(_) | PullError::Fetch(FetchError::Remote(_)) => FailureClass::Remote,
            _ => FailureClass::Apply,
        }
    }
}

/// Families of failure, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// SSH / provider trouble.
    Remote,
    /// The stream cannot be applied: gap, invalid archive, SQL error, not initialised.
    Apply,
    /// The replica database cannot be reached.
    Database,
    /// Local disk trouble.
    Local,
}

/// What a run achieved.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Counter before the run.
    pub from: Counter,
    /// Counter after the run.
    pub to: Counter,
    /// The newest archive the provider offered: `newest - to` archives are still to apply.
    pub newest: Counter,
    /// Archives applied.
    pub applied: u64,
    /// Bytes downloaded.
    pub fetched_bytes: u64,
    /// True if the run stopped because the pause file appeared or shutdown was asked.
    pub interrupted: bool,
    /// When the provider created the replica's last archive (as the archive says): the
    /// last one applied by this run, or the one it started at.
    pub last_created: Option<String>,
}

/// Sorts the incoming directory: removes partial downloads, moves archives the database
/// already has to the applied directory, and returns the ones still to apply.
fn tidy_incoming(
    cfg: &ReceiverConfig,
    at: Counter,
) -> Result<Vec<slony_shared::archive::ArchiveName>, PullError> {
    let dir = cfg.incoming_dir();
    let mut waiting = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(local_err("listing", &dir))? {
        let entry = entry.map_err(local_err("listing", &dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        match classify(&name) {
            Ok(Entry::Archive(a)) if a.counter <= at => {
                record::move_to_applied(&path, &cfg.applied_dir(), &a)
                    .map_err(local_err("moving applied archive", &path))?;
            }
            Ok(Entry::Archive(a)) => waiting.push(a),
            Ok(Entry::InProgress) | Ok(Entry::Batch(_)) => {
                // Leftovers of an interrupted download: fetched again if still needed.
                std::fs::remove_file(&path)
                    .map_err(local_err("removing partial download", &path))?;
            }
            Ok(Entry::Other) | Err(_) => {
                tracing::warn!(file = %path.display(), "ignoring unexpected file in the incoming directory");
            }
        }
    }
    Ok(waiting)
}

/// Turns the provider's directory listing into archives and batches.
fn read_listing(
    files: Vec<RemoteFile>,
    dir: &str,
    addr: &str,
) -> Result<(Listing, refused::Stamps), PullError> {
    let mut listing = Listing::default();
    let mut stamps = refused::Stamps::new();
    for f in files {
        let entry = classify(&f.name).map_err(|e| {
            PullError::Remote(RemoteError::Refused {
                addr: addr.to_string(),
                path: format!("{dir}/{}", f.name),
                reason: e.to_string(),
            })
        })?;
        if matches!(entry, Entry::Archive(_) | Entry::Batch(_)) && !f.regular {
            return Err(PullError::Remote(RemoteError::Refused {
                addr: addr.to_string(),
                path: format!("{dir}/{}", f.name),
                reason: if f.symlink {
                    "is a symbolic link; archives must be regular files in the site directory"
                        .into()
                } else {
                    "is not a regular file".into()
                },
            }));
        }
        let file = match entry {
            Entry::Archive(a) => {
                listing.archives.push(a);
                refused::ProviderFile::Archive(a)
            }
            Entry::Batch(b) => {
                listing.batches.push(b);
                refused::ProviderFile::Batch(b)
            }
            Entry::InProgress | Entry::Other => continue,
        };
        stamps.insert(file, (f.size, f.mtime));
    }
    Ok((listing, stamps))
}

/// Records a refusal for its content with the provider file it came from, so later runs
/// report it without fetching that file again (see [`refused`]).
fn remember_refusal(
    path: &Path,
    e: &PullError,
    planned: &[plan::Source],
    stamps: &refused::Stamps,
) {
    let Some(name) = e.refused_archive() else {
        return;
    };
    // A refused local copy is deleted and fetched again: only provider files are
    // remembered, and only with a modification time to tell a replaced file by.
    let source = planned.iter().find_map(|s| match s {
        plan::Source::Remote(n) if *n == name => Some(refused::ProviderFile::Archive(*n)),
        plan::Source::Batch { batch, .. }
            if batch.from <= name.counter && name.counter <= batch.to =>
        {
            Some(refused::ProviderFile::Batch(*batch))
        }
        _ => None,
    });
    let Some(source) = source else { return };
    let Some(&(size, mtime @ Some(_))) = stamps.get(&source) else {
        return;
    };
    let record = refused::Refusal {
        archive: name.to_string(),
        source: source.to_string(),
        size,
        mtime,
        error: e.to_string(),
    };
    if let Err(err) = refused::save(path, &record) {
        tracing::warn!(file = %path.display(), error = %err, "could not record the refused archive");
    }
}

/// Reports progress: a bar on a terminal, a log line every few seconds otherwise.
struct Progress {
    /// The bar, when stderr is a terminal and the backlog is worth one.
    bar: Option<indicatif::ProgressBar>,
    /// When the last log line was written.
    last_log: Instant,
    /// When the service manager's status line was last replaced.
    last_status: Instant,
    /// Archives in the plan.
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = (total >= 20 && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} applying [{bar:40}] {pos}/{len} archives, {per_sec}, eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            last_log: Instant::now(),
            last_status: Instant::now(),
            total,
        }
    }

    fn applied(&mut self, done: u64, counter: Counter) {
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.last_status = Instant::now();
            slony_shared::service::status(&format!(
                "counter {counter}, lag {} archives (catching up)",
                self.total.saturating_sub(done)
            ));
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(format!("(counter {counter})"));
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            tracing::info!(
                applied = done,
                total = self.total,
                counter = counter.0,
                "catching up"
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The connections a daemon keeps from one run to the next, so that a poll costs a
/// directory listing, not an SSH handshake and a database login.
#[derive(Default)]
pub struct Kept {
    /// The SSH session of the last run that ended well.
    provider: Option<Provider>,
    /// Its replica connection.
    replica: Option<tokio_postgres::Client>,
}

/// One pull run: everything available is fetched and applied, in order.
///
/// `stop` turns true when the run should end after the current archive (shutdown).
pub async fn run_once(
    cfg: &ReceiverConfig,
    stop: watch::Receiver<bool>,
) -> Result<Report, PullError> {
    run_keeping(cfg, stop, &mut Kept::default()).await
}

/// [`run_once`], with the connections `kept` from the last run, if they still work; a
/// run that ends well leaves its own in `kept` for the next.
pub async fn run_keeping(
    cfg: &ReceiverConfig,
    stop: watch::Receiver<bool>,
    kept: &mut Kept,
) -> Result<Report, PullError> {
    let (client, position, local) = open_replica(cfg, kept.replica.take()).await?;
    let start = position.counter;
    let listing_started = Instant::now();
    let listed = list(cfg, start, kept.provider.take()).await?;
    let list_ms = listing_started.elapsed().as_millis() as u64;
    let planning_started = Instant::now();
    refuse_standing(cfg, start, &listed.stamps)?;
    // Without a configured node id, the node of the archives applied before holds the
    // stream to one node.
    let known_node = cfg
        .slony_node_id
        .or_else(|| record::read_node_file(&cfg.node_file()));
    let Plan {
        sources,
        reaches,
        gap,
        node,
    } = plan::plan(start, &local, &listed.listing, known_node)?;
    let plan_ms = planning_started.elapsed().as_millis() as u64;
    let mut recorder = Recorder::new(cfg, &position, known_node, reaches);
    if sources.is_empty() {
        return match gap {
            Some(g) => Err(gap_error(g, start)),
            None => {
                tracing::info!(counter = start.0, "up to date: nothing new on the provider");
                *kept = Kept {
                    provider: Some(listed.provider),
                    replica: Some(client),
                };
                Ok(recorder.report)
            }
        };
    }
    tracing::info!(
        from = start.0,
        to = reaches.0,
        archives = reaches.0 - start.0,
        list_ms,
        plan_ms,
        "applying new archives"
    );
    let planned = sources.clone();
    let (rx, fetcher) = start_fetch(cfg, &listed, sources, node);
    let mut applier = Applier::new(client, cfg);
    let result = apply_in_order(cfg, &mut applier, rx, &stop, &mut recorder).await;
    applier.vacuum().await;
    let report = recorder.finish();
    // The acknowledgement only after a fetch that ended cleanly.
    if fetcher.await.is_ok() && report.applied > 0 {
        acknowledge(&listed.provider, listed.ack_dir.as_deref(), report.to).await;
    }
    tracing::info!(
        from = report.from.0,
        to = report.to.0,
        applied = report.applied,
        fetched_bytes = report.fetched_bytes,
        "pull run finished"
    );
    if let Err(e) = &result {
        remember_refusal(&cfg.refused_file(), e, &planned, &listed.stamps);
    }
    result?;
    match gap {
        Some(g) if !report.interrupted => Err(gap_error(g, report.to)),
        _ => {
            *kept = Kept {
                provider: Some(listed.provider),
                replica: applier.into_client(),
            };
            Ok(report)
        }
    }
}

/// The replica side of a run: connected, allowed to apply, at its position, with the
/// counter file agreeing and the archives already downloaded sorted out.
async fn open_replica(
    cfg: &ReceiverConfig,
    kept: Option<tokio_postgres::Client>,
) -> Result<(tokio_postgres::Client, replica::Position, Vec<ArchiveName>), PullError> {
    prepare_dirs(cfg)?;
    let client = match kept.filter(|c| !c.is_closed()) {
        Some(client) => client,
        None => replica::connect(cfg).await?,
    };
    crate::privilege::check_applier(&client).await?;
    let position = replica::read_position(&client, &cfg.cluster).await?;
    let start = position.counter;
    tracing::debug!(
        counter = start.0,
        created = position.created.as_deref().unwrap_or("-"),
        applied = position.applied.as_deref().unwrap_or("-"),
        "replica position"
    );
    let counter_file = cfg.counter_file();
    if crate::local::read_counter_file(&counter_file) != Some(start) {
        crate::local::write_counter_file(&counter_file, start)
            .map_err(local_err("writing", &counter_file))?;
    }
    let local = tidy_incoming(cfg, start)?;
    Ok((client, position, local))
}

/// What the provider offers this run, and the session to fetch it.
struct Listed {
    /// The open session.
    provider: Provider,
    /// `<remote.log_dir>/<node>`.
    remote_dir: String,
    /// Its archives and batches.
    listing: Listing,
    /// Their sizes and modification times, by file name: what the fetch expects, and
    /// how a replaced file is told (see [`refused`]).
    stamps: Arc<refused::Stamps>,
    /// Where the acknowledgement goes, if this site writes one.
    ack_dir: Option<String>,
}

/// Lists the site directory on the provider, and acknowledges where the replica is (the
/// provider's housekeeping may then delete what this site has).
async fn list(
    cfg: &ReceiverConfig,
    start: Counter,
    kept: Option<Provider>,
) -> Result<Listed, PullError> {
    let remote_dir = cfg.remote_site_dir();
    // The acknowledgement goes into the site's exchange directory; without a trigger
    // directory there is none, and the provider keeps this site's archives.
    let ack_dir = cfg.remote_exchange_dir().filter(|_| cfg.pull.acknowledge);
    // A kept session may have been closed by the provider since: one more try on a new one.
    let kept = match kept {
        Some(provider) => match provider.list(&remote_dir).await {
            Ok(files) => Some((provider, files)),
            Err(e) => {
                tracing::debug!(error = %e, "the kept SSH session failed: connecting again");
                None
            }
        },
        None => None,
    };
    let (provider, files) = match kept {
        Some(listed) => listed,
        None => {
            let provider = Provider::connect(&cfg.remote).await?;
            let files = provider.list(&remote_dir).await?;
            (provider, files)
        }
    };
    // Before the listing is judged: a listing refused for as long as the provider leaves
    // it so must not also keep the provider from learning where this site is.
    acknowledge(&provider, ack_dir.as_deref(), start).await;
    let (listing, stamps) = read_listing(files, &remote_dir, provider.addr())?;
    let stamps = Arc::new(stamps);
    Ok(Listed {
        provider,
        remote_dir,
        listing,
        stamps,
        ack_dir,
    })
}

/// Writes the acknowledgement of `counter` into `ack_dir`, if this site writes one.
async fn acknowledge(provider: &Provider, ack_dir: Option<&str>, counter: Counter) {
    if let Some(ack_dir) = ack_dir.map(str::to_string) {
        // A failure is logged by the step itself; a lost task is no reason to stop.
        let _ = provider
            .job(move |r| record::acknowledge(r, &ack_dir, counter))
            .await;
    }
}

/// An archive refused for its content stays refused while the provider serves the same
/// file: nothing is fetched or applied again.
fn refuse_standing(
    cfg: &ReceiverConfig,
    start: Counter,
    stamps: &refused::Stamps,
) -> Result<(), PullError> {
    match refused::standing(&cfg.refused_file(), start, stamps) {
        Some((archive, r)) => Err(PullError::StillRefused {
            archive,
            file: r.source,
            error: r.error,
        }),
        None => Ok(()),
    }
}

fn gap_error(g: plan::Gap, at: Counter) -> PullError {
    PullError::Gap {
        missing: g.missing,
        next_available: g.next_available,
        at,
    }
}

/// What the fetch sends the applier: each archive in order, or the error that ends it.
type Fetching = mpsc::Receiver<Result<fetch::Fetched, FetchError>>;

/// Starts fetching `sources`, over `pull.fetch_sessions` sessions when there is enough to
/// fetch (the listing's session and more), ahead of the applier by at most
/// `pull.fetch_ahead` sources and `pull.fetch_ahead_mb`.
fn start_fetch(
    cfg: &ReceiverConfig,
    listed: &Listed,
    sources: Vec<plan::Source>,
    node: Option<u32>,
) -> (Fetching, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.pull.fetch_ahead);
    // A further session costs a handshake: worth it only for a few files at least.
    let remote_files = sources
        .iter()
        .filter(|s| !matches!(s, plan::Source::Local(_)))
        .count();
    let more = cfg
        .pull
        .fetch_sessions
        .min(remote_files / FILES_PER_SESSION)
        .saturating_sub(1);
    let job = FetchJob {
        remote_dir: listed.remote_dir.clone(),
        incoming: cfg.incoming_dir(),
        cluster: cfg.cluster.clone(),
        sources,
        stamps: listed.stamps.clone(),
        node,
        allow: cfg.sql_allow,
    };
    let budget = fetch::Budget {
        sources: cfg.pull.fetch_ahead,
        bytes: cfg.pull.fetch_ahead_bytes,
    };
    if more > 0 {
        tracing::info!(
            sessions = more + 1,
            files = remote_files,
            "fetching over parallel SSH sessions"
        );
    }
    let fetcher = tokio::spawn(fetch::run(
        listed.provider.clone(),
        more,
        cfg.remote.clone(),
        job,
        budget,
        tx,
    ));
    (rx, fetcher)
}

/// Provider files per further fetch session: fewer are fetched on the sessions there are.
const FILES_PER_SESSION: usize = 8;

/// Applies what the fetch sends, group by group, until it ends, an archive fails, or the
/// run is asked to stop (checked between groups, never inside one).
async fn apply_in_order(
    cfg: &ReceiverConfig,
    applier: &mut Applier,
    mut rx: Fetching,
    stop: &watch::Receiver<bool>,
    recorder: &mut Recorder,
) -> Result<(), PullError> {
    let die_file = cfg.die_file();
    loop {
        if *stop.borrow() {
            tracing::info!(
                counter = recorder.report.to.0,
                "stopping on request, between archives"
            );
            recorder.report.interrupted = true;
            return Ok(());
        }
        if die_file.exists() {
            tracing::info!(file = %die_file.display(), counter = recorder.report.to.0, "pause file appeared: stopping between archives");
            recorder.report.interrupted = true;
            return Ok(());
        }
        // A backlog forms groups; a live stream's next archive is usually the last one
        // planned, and goes alone, at once.
        let waiting = recorder
            .progress
            .total
            .saturating_sub(recorder.report.applied);
        // A group takes at most half the fetch budget, so the fetch goes on meanwhile.
        let limit = GroupLimit {
            archives: cfg
                .pull
                .group_commit
                .min((cfg.pull.fetch_ahead / 2).max(1))
                .min(waiting.max(1) as usize),
            bytes: GROUP_BYTES.min(cfg.pull.fetch_ahead_bytes / 2),
            wait: GROUP_WAIT,
        };
        let Some((group, fetch_error)) = next_group(&mut rx, limit).await? else {
            return Ok(());
        };
        let archives: Vec<apply::ToApply<'_>> = group
            .iter()
            .map(|f| apply::ToApply {
                path: f.path.as_path(),
                name: f.name,
                approved_ddl: &f.approved_ddl,
            })
            .collect();
        let outcome = applier.apply_group(&archives).await;
        recorder.committed(&group[..outcome.committed])?;
        if applier.vacuum_due() {
            applier.vacuum().await;
        }
        if let Some(e) = outcome.error {
            // The refused copy is not kept: the next run fetches the provider's file
            // again, so a repaired archive is picked up without a hand in incoming/.
            if let Some(refused) = e.refused_archive() {
                if let Some(f) = group.iter().find(|f| f.name == refused) {
                    let _ = std::fs::remove_file(&f.path);
                }
            }
            return Err(PullError::Apply(e));
        }
        if let Some(e) = fetch_error {
            return Err(PullError::Fetch(e));
        }
    }
}

/// How a group is closed.
#[derive(Debug, Clone, Copy)]
struct GroupLimit {
    /// At most this many archives.
    archives: usize,
    /// Closed once its archives reach this size.
    bytes: u64,
    /// Closed when the next archive takes longer than this to arrive, from the first.
    wait: Duration,
}

/// A group closes at this size. Bulk archives gain nothing from larger groups and lose:
/// a row version replaced inside a transaction cannot be pruned before it commits
/// (measured: 200 archives of 1 MB in groups of 64 MB took 15 % longer than in groups of
/// 8 MB, which run as fast as one psql session).
const GROUP_BYTES: u64 = 8 * 1024 * 1024;

/// A group waits at most this long for the fetch, from its first archive: while the
/// fetch is slower than the applier, it makes groups large without idling the applier
/// for long.
const GROUP_WAIT: Duration = Duration::from_millis(100);

/// The next group: the next archive, then those behind it until `limit` closes it, with
/// the fetch error that came right after them, if any. `None` once the fetch has ended.
async fn next_group(
    rx: &mut Fetching,
    limit: GroupLimit,
) -> Result<Option<(Vec<fetch::Fetched>, Option<FetchError>)>, PullError> {
    let Some(first) = rx.recv().await else {
        return Ok(None);
    };
    let first = first?;
    let deadline = tokio::time::Instant::now() + limit.wait;
    let mut bytes = first.size;
    let mut group = vec![first];
    while group.len() < limit.archives && bytes < limit.bytes {
        let next = match rx.try_recv() {
            Ok(next) => Some(next),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        match next {
            Some(Ok(f)) => {
                bytes += f.size;
                group.push(f);
            }
            Some(Err(e)) => return Ok(Some((group, Some(e)))),
            None => break,
        }
    }
    Ok(Some((group, None)))
}

/// The record step: after each commit, the report, the applied directory, the counter
/// file, the node file and the progress display follow.
struct Recorder {
    /// What the run achieved so far.
    report: Report,
    /// Where applied archives go.
    applied_dir: PathBuf,
    /// `slony_counter.txt`.
    counter_file: PathBuf,
    /// The remembered Slony node of the stream.
    node_file: PathBuf,
    /// The stream's node, once known.
    known_node: Option<u32>,
    /// The bar or the log lines.
    progress: Progress,
}

impl Recorder {
    fn new(
        cfg: &ReceiverConfig,
        position: &replica::Position,
        known_node: Option<u32>,
        reaches: Counter,
    ) -> Self {
        let total = reaches.0.saturating_sub(position.counter.0);
        Recorder {
            report: Report {
                from: position.counter,
                to: position.counter,
                newest: reaches.max(position.counter),
                last_created: position.created.clone(),
                ..Report::default()
            },
            applied_dir: cfg.applied_dir(),
            counter_file: cfg.counter_file(),
            node_file: cfg.node_file(),
            known_node,
            progress: Progress::new(total),
        }
    }

    /// Records archives the database has just committed, in order.
    fn committed(&mut self, done: &[fetch::Fetched]) -> Result<(), PullError> {
        slony_shared::service::beat();
        for fetched in done {
            self.report.fetched_bytes += fetched.fetched_bytes;
            self.report.to = fetched.name.counter;
            self.report.applied += 1;
            self.report.last_created = Some(fetched.header.created.clone());
            record::move_to_applied(&fetched.path, &self.applied_dir, &fetched.name)
                .map_err(local_err("moving applied archive", &fetched.path))?;
            tracing::debug!(counter = self.report.to.0, created = %fetched.header.created, "applied");
        }
        let Some(last) = done.last() else {
            return Ok(());
        };
        crate::local::write_counter_file(&self.counter_file, self.report.to)
            .map_err(local_err("writing", &self.counter_file))?;
        if self.known_node.is_none() {
            let applied_node = last.name.node_id;
            record::write_node_file(&self.node_file, applied_node)
                .map_err(local_err("writing", &self.node_file))?;
            self.known_node = Some(applied_node);
        }
        self.progress.applied(self.report.applied, self.report.to);
        Ok(())
    }

    /// Ends the progress display; the run's report.
    fn finish(self) -> Report {
        self.progress.finish();
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slony_shared::archive::Header;

    fn fetched(counter: u64, size: u64) -> fetch::Fetched {
        let name = ArchiveName {
            node_id: 1,
            counter: Counter(counter),
        };
        fetch::Fetched {
            name,
            path: PathBuf::from(name.to_string()),
            header: Header {
                counter: Counter(counter),
                created: String::new(),
            },
            approved_ddl: Vec::new(),
            fetched_bytes: size,
            size,
            room: None,
        }
    }

    fn counters(group: &[fetch::Fetched]) -> Vec<u64> {
        group.iter().map(|f| f.name.counter.0).collect()
    }

    const LIMIT: GroupLimit = GroupLimit {
        archives: 4,
        bytes: 1000,
        wait: Duration::from_millis(100),
    };

    #[tokio::test(start_paused = true)]
    async fn a_group_closes_at_its_count_and_the_next_one_goes_on() {
        let (tx, mut rx) = mpsc::channel(16);
        for c in 1..=6 {
            tx.send(Ok(fetched(c, 10))).await.unwrap();
        }
        let (group, err) = next_group(&mut rx, LIMIT).await.unwrap().unwrap();
        assert_eq!(counters(&group), [1, 2, 3, 4]);
        assert!(err.is_none());
        drop(tx);
        let (group, _) = next_group(&mut rx, LIMIT).await.unwrap().unwrap();
        assert_eq!(counters(&group), [5, 6]);
        assert!(next_group(&mut rx, LIMIT).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_closes_at_its_size() {
        let (tx, mut rx) = mpsc::channel(16);
        for c in 1..=4 {
            tx.send(Ok(fetched(c, 600))).await.unwrap();
        }
        let (group, _) = next_group(&mut rx, LIMIT).await.unwrap().unwrap();
        assert_eq!(
            counters(&group),
            [1, 2],
            "closed once it reached 1000 bytes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_waits_for_the_fetch_but_not_longer_than_its_wait() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(Ok(fetched(1, 10))).await.unwrap();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            tx.send(Ok(fetched(2, 10))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(Ok(fetched(3, 10))).await.unwrap();
        });
        let started = tokio::time::Instant::now();
        let (group, _) = next_group(&mut rx, LIMIT).await.unwrap().unwrap();
        assert_eq!(counters(&group), [1, 2]);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let (group, _) = next_group(&mut rx, LIMIT).await.unwrap().unwrap();
        assert_eq!(counters(&group), [3]);
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_archive_goes_alone_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(Ok(fetched(7, 10))).await.unwrap();
        let started = tokio::time::Instant::now();
        let one = GroupLimit {
            archives: 1,
            ..LIMIT
        };
        let (group, _) = next_group(&mut rx, one).await.unwrap().unwrap();
        assert_eq!(counters(&group), [7]);
        assert_eq!(started.elapsed(), Duration::ZERO);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_error_ends_the_group_after_the_archives_before_it() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(Ok(fetched(1, 10))).await.unwrap();
        tx.send(Ok(fetched(2, 10))).await.unwrap();
        tx.send(Err(FetchError::BatchMissing {
            batch: "b".into(),
            missing: 3,
        }))
        .await
        .unwrap();
        tx.send(Ok(fetched(4, 10))).await.unwrap();
        let (group, err) = next_group(&mut rx, LIMIT).await.unwrap().unwrap();
        assert_eq!(counters(&group), [1, 2]);
        assert!(matches!(
            err,
            Some(FetchError::BatchMissing { missing: 3, .. })
        ));
    }
}
