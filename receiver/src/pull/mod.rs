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
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
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
            PullError::Apply(ApplyError::Connection { .. }) => "database:lost".into(),
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
            PullError::Replica(ReplicaError::Unavailable { .. })
            | PullError::Apply(ApplyError::Connection { .. }) => FailureClass::Database,
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
) -> Result<(Listing, HashMap<String, u64>, refused::Stamps), PullError> {
    let mut listing = Listing::default();
    let mut sizes = HashMap::new();
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
        match entry {
            Entry::Archive(a) => listing.archives.push(a),
            Entry::Batch(b) => listing.batches.push(b),
            Entry::InProgress | Entry::Other => continue,
        }
        stamps.insert(f.name.clone(), (f.size, f.mtime));
        sizes.insert(f.name, f.size);
    }
    Ok((listing, sizes, stamps))
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
        plan::Source::Remote(n) if *n == name => Some(n.to_string()),
        plan::Source::Batch { batch, .. }
            if batch.from <= name.counter && name.counter <= batch.to =>
        {
            Some(batch.to_string())
        }
        _ => None,
    });
    let Some(source) = source else { return };
    let Some(&(size, mtime @ Some(_))) = stamps.get(&source) else {
        return;
    };
    let record = refused::Refusal {
        archive: name.to_string(),
        source,
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
            total,
        }
    }

    fn applied(&mut self, done: u64, counter: Counter) {
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

/// One pull run: everything available is fetched and applied, in order.
///
/// `stop` turns true when the run should end after the current archive (shutdown).
pub async fn run_once(
    cfg: &ReceiverConfig,
    stop: watch::Receiver<bool>,
) -> Result<Report, PullError> {
    prepare_dirs(cfg)?;
    let client = replica::connect(cfg).await?;
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

    let remote_dir = cfg.remote_site_dir();
    // The acknowledgement goes into the site's exchange directory; without a trigger
    // directory there is none, and the provider keeps this site's archives.
    let ack_dir = cfg.remote_exchange_dir().filter(|_| cfg.pull.acknowledge);
    let provider = Provider::connect(&cfg.remote).await?;
    let files = provider.list(&remote_dir).await?;
    if let Some(ack_dir) = ack_dir.clone() {
        provider
            .job(move |r| record::acknowledge(r, &ack_dir, start))
            .await;
    }
    let (listing, sizes, stamps) = read_listing(files, &remote_dir, provider.addr())?;
    // An archive refused for its content stays refused while the provider serves the
    // same file: nothing is fetched or applied again.
    let refused_file = cfg.refused_file();
    if let Some((archive, r)) = refused::standing(&refused_file, start, &stamps) {
        return Err(PullError::StillRefused {
            archive,
            file: r.source,
            error: r.error,
        });
    }
    // Without a configured node id, the node of the archives applied before holds the
    // stream to one node.
    let node_file = cfg.node_file();
    let mut known_node = cfg
        .slony_node_id
        .or_else(|| record::read_node_file(&node_file));
    let Plan {
        sources,
        reaches,
        gap,
        node,
    } = plan::plan(start, &local, &listing, known_node)?;

    let mut report = Report {
        from: start,
        to: start,
        last_created: position.created.clone(),
        ..Report::default()
    };
    if sources.is_empty() {
        return match gap {
            Some(g) => Err(PullError::Gap {
                missing: g.missing,
                next_available: g.next_available,
                at: start,
            }),
            None => {
                tracing::info!(counter = start.0, "up to date: nothing new on the provider");
                Ok(report)
            }
        };
    }
    let total = reaches.0 - start.0;
    tracing::info!(
        from = start.0,
        to = reaches.0,
        archives = total,
        "applying new archives"
    );

    let planned = sources.clone();
    let (tx, mut rx) = mpsc::channel(cfg.pull.fetch_ahead);
    let job = FetchJob {
        remote_dir: remote_dir.clone(),
        incoming: cfg.incoming_dir(),
        cluster: cfg.cluster.clone(),
        sources,
        sizes,
        node,
        allow: cfg.sql_allow,
    };
    let fetcher = {
        let provider = provider.clone();
        tokio::spawn(async move { provider.job(move |r| fetch::run(r, job, tx)).await })
    };

    let mut applier = Applier::new(
        client,
        cfg.cluster.clone(),
        cfg.pull.vacuum_every,
        cfg.sql_allow,
        cfg.pull.ddl_search_path.as_deref(),
    );
    let mut progress = Progress::new(total);
    let die_file = cfg.die_file();
    let result = loop {
        if *stop.borrow() {
            tracing::info!(
                counter = report.to.0,
                "stopping on request, between archives"
            );
            report.interrupted = true;
            break Ok(());
        }
        if die_file.exists() {
            tracing::info!(file = %die_file.display(), counter = report.to.0, "pause file appeared: stopping between archives");
            report.interrupted = true;
            break Ok(());
        }
        // A group: the next archive, plus those already fetched behind it (never wait
        // for more: a group only saves commits, it must not add latency).
        let Some(first) = rx.recv().await else {
            break Ok(());
        };
        let mut group = Vec::with_capacity(cfg.pull.group_commit);
        let mut fetch_error = None;
        match first {
            Ok(f) => group.push(f),
            Err(e) => break Err(PullError::Fetch(e)),
        }
        while group.len() < cfg.pull.group_commit {
            match rx.try_recv() {
                Ok(Ok(f)) => group.push(f),
                Ok(Err(e)) => {
                    fetch_error = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        let archives: Vec<apply::ToApply<'_>> = group
            .iter()
            .map(|f| apply::ToApply {
                path: f.path.as_path(),
                name: f.name,
                approved_ddl: &f.approved_ddl,
            })
            .collect();
        let outcome = applier.apply_group(&archives).await;
        for fetched in &group[..outcome.committed] {
            report.fetched_bytes += fetched.fetched_bytes;
            report.to = fetched.name.counter;
            report.applied += 1;
            report.last_created = Some(fetched.header.created.clone());
            record::move_to_applied(&fetched.path, &cfg.applied_dir(), &fetched.name)
                .map_err(local_err("moving applied archive", &fetched.path))?;
            tracing::debug!(counter = report.to.0, created = %fetched.header.created, "applied");
        }
        if outcome.committed > 0 {
            crate::local::write_counter_file(&counter_file, report.to)
                .map_err(local_err("writing", &counter_file))?;
            if known_node.is_none() {
                let applied_node = group[outcome.committed - 1].name.node_id;
                record::write_node_file(&node_file, applied_node)
                    .map_err(local_err("writing", &node_file))?;
                known_node = Some(applied_node);
            }
            progress.applied(report.applied, report.to);
        }
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
            break Err(PullError::Apply(e));
        }
        if let Some(e) = fetch_error {
            break Err(PullError::Fetch(e));
        }
    };
    progress.finish();
    drop(rx);
    applier.vacuum().await;
    if fetcher.await.is_ok() {
        if let Some(ack_dir) = ack_dir.filter(|_| report.applied > 0) {
            let to = report.to;
            provider
                .job(move |r| record::acknowledge(r, &ack_dir, to))
                .await;
        }
    }
    tracing::info!(
        from = report.from.0,
        to = report.to.0,
        applied = report.applied,
        fetched_bytes = report.fetched_bytes,
        "pull run finished"
    );
    if let Err(e) = &result {
        remember_refusal(&refused_file, e, &planned, &stamps);
    }
    result?;
    if !report.interrupted {
        if let Some(g) = gap {
            return Err(PullError::Gap {
                missing: g.missing,
                next_available: g.next_available,
                at: report.to,
            });
        }
    }
    Ok(report)
}
