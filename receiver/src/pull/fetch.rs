//! The fetch side of the pipeline: downloads the plan's sources over several SSH sessions
//! at once (or takes them from the local incoming directory), unpacks batches, verifies
//! every archive (complete, right counter, the provider's SQL within the rules) and hands
//! the archives to the applier in counter order.
//!
//! Each session is one worker: it takes the next source of the plan, waits for room in
//! the budget (at most `fetch_ahead` sources and `fetch_ahead_mb` of provider files
//! downloaded and not yet applied), fetches and verifies it on the blocking pool (ssh2
//! blocks), and passes the result on. The results are put back in plan order before
//! they go to the applier: a slow file holds back the ones after it, a failed one ends
//! the stream right there, and nothing is ever reordered or skipped. Room in the budget
//! is taken in plan order too, so the source the applier waits for always gets it.

use super::plan::Source;
use super::refused::ProviderFile;
use crate::config::RemoteConfig;
use crate::provider::{part_path, Provider, Remote, RemoteError};
use slony_shared::archive::check::verify_file;
use slony_shared::archive::{ArchiveError, ArchiveName, Header};
use slony_shared::batch::{self, BatchError};
use slony_shared::ident::ClusterName;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};

/// Largest archive accepted out of a batch (a bound against hostile batches).
pub const MAX_BATCH_MEMBER: u64 = 64 * 1024 * 1024 * 1024;

/// An archive on local disk, verified complete, ready to apply.
#[derive(Debug)]
pub struct Fetched {
    /// Its name.
    pub name: ArchiveName,
    /// Where it is.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    /// The DDL row statements it holds, approved by the check (SHA-256, hex).
    pub approved_ddl: Vec<String>,
    /// Bytes transferred for it (0 if it was already local).
    pub fetched_bytes: u64,
    /// Its size.
    pub size: u64,
    /// Its share of the fetch budget, given back once it is applied (and every other
    /// member of its batch).
    pub room: Option<Arc<Room>>,
}

/// Room taken in the fetch budget by one source: returned when dropped.
#[derive(Debug)]
pub struct Room {
    _count: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// How much may be downloaded ahead of the applier.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Sources.
    pub sources: usize,
    /// Bytes of provider files.
    pub bytes: u64,
}

/// Why fetching stopped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The provider could not be reached or read.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// An archive is incomplete (deleted; fetched again next run) or invalid.
    #[error("{name}: {source}")]
    Archive {
        /// The archive.
        name: ArchiveName,
        /// What is wrong.
        #[source]
        source: ArchiveError,
    },
    /// A batch could not be unpacked safely.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A batch member was written by another Slony node than the stream's.
    #[error("batch {batch} holds {name}, written by Slony node {found}, but this site expects node {expected}; the batch is refused")]
    BatchWrongNode {
        /// The batch file.
        batch: String,
        /// The member.
        name: ArchiveName,
        /// Its node.
        found: u32,
        /// The stream's node.
        expected: u32,
    },
    /// A batch did not hold the archive the plan expected from it.
    #[error("batch {batch} does not contain archive counter {missing}")]
    BatchMissing {
        /// The batch file.
        batch: String,
        /// The missing counter.
        missing: u64,
    },
}

/// What the fetch thread needs.
pub struct FetchJob {
    /// `<remote.log_dir>/<node>`.
    pub remote_dir: String,
    /// Local incoming directory.
    pub incoming: PathBuf,
    /// The cluster (for the verify step).
    pub cluster: ClusterName,
    /// The plan's sources, in order.
    pub sources: Vec<Source>,
    /// Remote file sizes (and modification times) by name, from the listing.
    pub stamps: Arc<super::refused::Stamps>,
    /// The Slony node every archive must come from, when known.
    pub node: Option<u32>,
    /// What the provider's DDL may hold beyond the default rules.
    pub allow: slony_shared::archive::statement::Allowances,
}

/// Budget units are KiB, so a large budget fits the semaphore.
const UNIT: u64 = 1024;

/// What the workers share.
struct Shared {
    job: FetchJob,
    /// Room for sources.
    count: Arc<Semaphore>,
    /// Room for bytes, in [`UNIT`]s.
    bytes: Arc<Semaphore>,
    /// The most units one source takes (a larger file takes the whole budget).
    max_units: u64,
    /// The next source to hand out; locked while its room is awaited, so room is given
    /// in plan order.
    next: Mutex<usize>,
    /// Set when nothing more is wanted.
    stop: AtomicBool,
    /// Held while a chunk of [`LARGE`] bytes or more is fetched.
    large: Arc<Semaphore>,
}

/// Runs the job over `primary` and `more` further sessions connected as `remote` says,
/// sending each archive, or the error that stops the run, down `tx` in plan order.
/// Returns once every worker has stopped: early, quietly, when the receiving side hangs
/// up. A further session that cannot connect is only a warning: the others go on.
pub async fn run(
    primary: Provider,
    more: usize,
    remote: RemoteConfig,
    job: FetchJob,
    budget: Budget,
    tx: mpsc::Sender<Result<Fetched, FetchError>>,
) {
    let max_units = (budget.bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64 / 2);
    let shared = Arc::new(Shared {
        job,
        count: Arc::new(Semaphore::new(budget.sources.max(1))),
        bytes: Arc::new(Semaphore::new(max_units as usize)),
        max_units,
        next: Mutex::new(0),
        stop: AtomicBool::new(false),
        large: Arc::new(Semaphore::new(1)),
    });
    let (done_tx, mut done_rx) = mpsc::channel::<Done>((more + 1) * 2);
    let mut workers = vec![tokio::spawn(worker(
        primary,
        shared.clone(),
        done_tx.clone(),
    ))];
    for _ in 0..more {
        let (shared, done_tx, remote) = (shared.clone(), done_tx.clone(), remote.clone());
        workers.push(tokio::spawn(async move {
            match Provider::connect(&remote).await {
                Ok(session) => worker(session, shared, done_tx).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not open one more SSH session to fetch in parallel; going on with fewer")
                }
            }
        }));
    }
    drop(done_tx);
    // Back in plan order.
    let mut waiting = BTreeMap::new();
    let mut deliver = 0usize;
    'deliver: loop {
        // The applier may stop at any time (a failure, a shutdown): then so does this.
        let (index, items) = tokio::select! {
            done = done_rx.recv() => match done {
                Some(done) => done,
                None => break,
            },
            _ = tx.closed() => break,
        };
        waiting.insert(index, items);
        while let Some(items) = waiting.remove(&deliver) {
            deliver += 1;
            for item in items {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break 'deliver;
                }
            }
        }
    }
    // Workers waiting for room stop now; one in the middle of a chunk finishes its
    // current file (the copy stays in incoming/, and the next run verifies it again).
    shared.stop.store(true, Ordering::Relaxed);
    shared.count.close();
    shared.bytes.close();
    shared.large.close();
    drop(done_rx);
    drop(waiting);
    for w in workers {
        let _ = w.await;
    }
}

/// A source's place in the plan and what it yielded.
type Done = (usize, Vec<Result<Fetched, FetchError>>);

/// Sources a worker takes at once, and their most bytes: one trip to the blocking pool
/// for several small files (each trip costs thread hand-overs of its own).
const CHUNK_SOURCES: usize = 16;
const CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// A chunk this large is fetched while no other such chunk is.
const LARGE: u64 = 1024 * 1024;

/// One session's loop: the next sources, their room, the fetch, the results.
async fn worker(session: Provider, shared: Arc<Shared>, done: mpsc::Sender<Done>) {
    loop {
        let Some((chunk, bytes)) = take_chunk(&shared).await else {
            return;
        };
        // Large files one at a time: their transfer is bound by CPU (encryption here and
        // on the provider), which the database applying the archives needs; only small
        // files, bound by round trips, gain from being fetched side by side.
        let _large = if bytes >= LARGE {
            match shared.large.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            }
        } else {
            None
        };
        let first = chunk[0].0;
        let job = shared.clone();
        let indexes: Vec<usize> = chunk.iter().map(|(i, _)| *i).collect();
        let fetched = session
            .job(move |r| {
                let mut out = Vec::with_capacity(indexes.len());
                for i in indexes {
                    if job.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let items = job.job.fetch(r, &job.job.sources[i]);
                    let failed = items.iter().any(|i| i.is_err());
                    out.push(items);
                    if failed {
                        break; // the stream ends there: the rest are not needed
                    }
                }
                out
            })
            .await;
        let results: Vec<Vec<Result<Fetched, FetchError>>> = match fetched {
            Ok(results) => results,
            Err(e) => vec![vec![Err(FetchError::Remote(e))]],
        };
        for (k, (items, (_, room))) in results.into_iter().zip(chunk).enumerate() {
            let items = items
                .into_iter()
                .map(|item| {
                    item.map(|mut f| {
                        f.room = Some(room.clone());
                        f
                    })
                })
                .collect();
            if done.send((first + k, items)).await.is_err() {
                return;
            }
        }
    }
}

/// The next sources for a worker, with their room: the first waits for room, the ones
/// after it join only if room is there now. `None` once the plan is handed out or the
/// run is over.
async fn take_chunk(shared: &Shared) -> Option<(Vec<(usize, Arc<Room>)>, u64)> {
    let mut next = shared.next.lock().await;
    let mut chunk = Vec::new();
    let mut bytes = 0u64;
    while chunk.len() < CHUNK_SOURCES && bytes < CHUNK_BYTES {
        let index = *next;
        let Some(source) = shared.job.sources.get(index) else {
            break; // the plan is handed out
        };
        let size = shared.job.size_of(source);
        if !chunk.is_empty() && (size >= CHUNK_BYTES || matches!(source, Source::Batch { .. })) {
            break; // a large file or a batch goes alone
        }
        let units = (size / UNIT).clamp(1, shared.max_units) as u32;
        let room = if chunk.is_empty() {
            let count = shared.count.clone().acquire_owned().await.ok()?;
            let bytes = shared.bytes.clone().acquire_many_owned(units).await.ok()?;
            (count, bytes)
        } else {
            let (Ok(count), Ok(bytes)) = (
                shared.count.clone().try_acquire_owned(),
                shared.bytes.clone().try_acquire_many_owned(units),
            ) else {
                break;
            };
            (count, bytes)
        };
        *next += 1;
        bytes += size;
        chunk.push((
            index,
            Arc::new(Room {
                _count: room.0,
                _bytes: room.1,
            }),
        ));
    }
    (!chunk.is_empty()).then_some((chunk, bytes))
}

impl FetchJob {
    /// What one source yields, in order: its archives, or the error that stops the run
    /// after the archives before it.
    fn fetch(&self, remote: &Remote, source: &Source) -> Vec<Result<Fetched, FetchError>> {
        let result = match source {
            Source::Local(name) => self.local(remote, name).map(|f| vec![Ok(f)]),
            Source::Remote(name) => self.single(remote, name).map(|f| vec![Ok(f)]),
            Source::Batch { batch, after } => self.batch(remote, batch, *after),
        };
        result.unwrap_or_else(|e| vec![Err(e)])
    }

    /// The size of the provider file a source is fetched from (a local copy may have to
    /// be fetched again: its provider file's, if listed).
    fn size_of(&self, source: &Source) -> u64 {
        let file = match source {
            Source::Local(name) | Source::Remote(name) => ProviderFile::Archive(*name),
            Source::Batch { batch, .. } => ProviderFile::Batch(*batch),
        };
        self.stamps.get(&file).map_or(0, |s| s.0)
    }

    fn verify(
        &self,
        name: &ArchiveName,
        path: &Path,
        fetched_bytes: u64,
    ) -> Result<Fetched, FetchError> {
        match verify_file(path, name, &self.cluster, self.allow) {
            Ok(verified) => Ok(Fetched {
                approved_ddl: verified.approved_ddl,
                name: *name,
                path: path.to_path_buf(),
                header: verified.header,
                fetched_bytes,
                size: std::fs::metadata(path).map_or(0, |m| m.len()),
                room: None,
            }),
            Err(source) => {
                // Never keep a partial or refused copy: the next attempt fetches the
                // provider's file again (which the provider may have repaired meanwhile).
                let _ = std::fs::remove_file(path);
                Err(FetchError::Archive {
                    name: *name,
                    source,
                })
            }
        }
    }

    fn local(&self, remote: &Remote, name: &ArchiveName) -> Result<Fetched, FetchError> {
        let path = self.incoming.join(name.to_string());
        match self.verify(name, &path, 0) {
            Err(FetchError::Archive { .. })
                if self.stamps.contains_key(&ProviderFile::Archive(*name)) =>
            {
                self.single(remote, name)
            }
            other => other,
        }
    }

    fn single(&self, remote: &Remote, name: &ArchiveName) -> Result<Fetched, FetchError> {
        let file = name.to_string();
        let path = format!("{}/{}", self.remote_dir, file);
        let local = self.incoming.join(&file);
        let size = self.size_of(&Source::Remote(*name));
        let n = remote.download(&path, &local, size)?;
        self.verify(name, &local, n)
    }

    fn batch(
        &self,
        remote: &Remote,
        batch: &slony_shared::archive::BatchName,
        after: slony_shared::counter::Counter,
    ) -> Result<Vec<Result<Fetched, FetchError>>, FetchError> {
        let file = batch.to_string();
        let path = format!("{}/{}", self.remote_dir, file);
        let local = self.incoming.join(&file);
        let size = self
            .stamps
            .get(&ProviderFile::Batch(*batch))
            .map_or(0, |s| s.0);
        let n = remote.download(&path, &local, size)?;
        let extracted = batch::extract(&local, &self.incoming, MAX_BATCH_MEMBER, |c| c > after);
        let _ = std::fs::remove_file(&local);
        let _ = std::fs::remove_file(part_path(&local));
        let extracted = extracted?;
        // The batch must hold every counter after `after`, in order; each member is
        // verified on its own so the good ones before a bad one still get applied.
        let mut expected = after.next();
        let mut out = Vec::with_capacity(extracted.len());
        // Members obey the same rules as single files: one node for the whole stream.
        let node = self
            .node
            .or_else(|| extracted.first().map(|(n, _)| n.node_id));
        for (i, (name, path)) in extracted.iter().enumerate() {
            if name.counter != expected {
                break;
            }
            if let Some(node) = node.filter(|n| *n != name.node_id) {
                for (_, p) in &extracted[i..] {
                    let _ = std::fs::remove_file(p);
                }
                out.push(Err(FetchError::BatchWrongNode {
                    batch: file,
                    name: *name,
                    found: name.node_id,
                    expected: node,
                }));
                return Ok(out);
            }
            let bytes = if i == 0 { n } else { 0 };
            let verified = self.verify(name, path, bytes);
            let bad = verified.is_err();
            out.push(verified);
            if bad {
                return Ok(out);
            }
            expected = expected.next();
        }
        if expected != batch.to.next() {
            out.push(Err(FetchError::BatchMissing {
                batch: file,
                missing: expected.0,
            }));
        }
        Ok(out)
    }
}
