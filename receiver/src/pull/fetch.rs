//! The fetch side of the pipeline: runs on the blocking pool as one provider job
//! ([`crate::provider::Provider::job`]; ssh2 blocks), walks the plan
//! in order, downloads each source (or takes it from the local incoming directory),
//! unpacks batches, verifies every archive (complete, right counter) and hands it to the
//! applier through a bounded channel, so downloading runs ahead of applying by at most
//! `fetch_ahead` archives.

use super::plan::Source;
use crate::provider::{part_path, Remote, RemoteError};
use slony_shared::archive::check::verify_file;
use slony_shared::archive::{ArchiveError, ArchiveName, Header};
use slony_shared::batch::{self, BatchError};
use slony_shared::ident::ClusterName;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

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
    /// Remote file sizes by name, from the listing.
    pub sizes: std::collections::HashMap<String, u64>,
    /// The Slony node every archive must come from, when known.
    pub node: Option<u32>,
    /// What the provider's DDL may hold beyond the default rules.
    pub allow: slony_shared::archive::statement::Allowances,
}

/// Runs the job over `remote`, sending each archive (or the error that stops the run)
/// down `tx`. Stops early, quietly, when the receiving side hangs up.
pub fn run(remote: &Remote, job: FetchJob, tx: mpsc::Sender<Result<Fetched, FetchError>>) {
    for source in &job.sources {
        let result = match source {
            Source::Local(name) => job.local(remote, name).map(|f| vec![Ok(f)]),
            Source::Remote(name) => job.single(remote, name).map(|f| vec![Ok(f)]),
            Source::Batch { batch, after } => job.batch(remote, batch, *after),
        };
        let items = match result {
            Ok(items) => items,
            Err(e) => vec![Err(e)],
        };
        for item in items {
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    }
}

impl FetchJob {
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
            Err(FetchError::Archive { .. }) if self.sizes.contains_key(&name.to_string()) => {
                self.single(remote, name)
            }
            other => other,
        }
    }

    fn single(&self, remote: &Remote, name: &ArchiveName) -> Result<Fetched, FetchError> {
        let file = name.to_string();
        let path = format!("{}/{}", self.remote_dir, file);
        let local = self.incoming.join(&file);
        let size = self.sizes.get(&file).copied().unwrap_or(0);
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
        let size = self.sizes.get(&file).copied().unwrap_or(0);
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
