//! The provider as every command reaches it: one SSH session with its SFTP channel
//! ([`Remote`], in [`sftp`]), driven one way.
//!
//! ssh2 blocks, so no ssh2 call runs on an async worker thread. [`Provider`]'s async
//! methods each run one call on tokio's blocking pool; a job of many calls in a row (the
//! fetch of a whole plan, the listing and probing of `status`) runs on the blocking pool
//! for its whole length with [`Provider::job`]. The session is shared, never used by two
//! threads at once: each caller awaits its call before the next.

pub mod sftp;

pub use sftp::{part_path, Kind, Owner, Remote, RemoteError, RemoteFile};

use crate::config::RemoteConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open session to the provider; cheap to clone (the clones share the session).
#[derive(Clone)]
pub struct Provider {
    remote: Arc<Remote>,
}

/// Runs `f` on the blocking pool and waits for it. A call that panicked (a bug in the
/// SSH stack) fails the run like any provider error, so a daemon keeps going.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RemoteError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RemoteError::Internal(format!("an SSH task failed: {e}")))
}

impl Provider {
    /// Connects, checks the host key, logs in and opens SFTP.
    ///
    /// # Errors
    ///
    /// [`RemoteError`]: unreachable, an unknown or changed host key, a refused login.
    pub async fn connect(cfg: &RemoteConfig) -> Result<Provider, RemoteError> {
        let cfg = cfg.clone();
        let remote = blocking(move || Remote::connect(&cfg)).await??;
        Ok(Provider {
            remote: Arc::new(remote),
        })
    }

    /// Runs a job of many calls on the blocking pool, with the session.
    ///
    /// # Errors
    ///
    /// [`RemoteError::Internal`] if the job panicked.
    pub async fn job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Remote) -> T + Send + 'static,
    ) -> Result<T, RemoteError> {
        let remote = self.remote.clone();
        blocking(move || f(&remote)).await
    }

    /// host:port, for messages.
    pub fn addr(&self) -> &str {
        self.remote.addr()
    }

    /// [`Remote::list`].
    pub async fn list(&self, dir: &str) -> Result<Vec<RemoteFile>, RemoteError> {
        let dir = dir.to_string();
        self.job(move |r| r.list(&dir)).await?
    }

    /// [`Remote::download`].
    pub async fn download(
        &self,
        path: &str,
        local: &Path,
        expected: u64,
    ) -> Result<u64, RemoteError> {
        let (path, local): (String, PathBuf) = (path.to_string(), local.to_path_buf());
        self.job(move |r| r.download(&path, &local, expected))
            .await?
    }

    /// [`Remote::size_of`].
    pub async fn size_of(&self, path: &str) -> Result<Option<u64>, RemoteError> {
        let path = path.to_string();
        self.job(move |r| r.size_of(&path)).await?
    }

    /// [`Remote::upload`].
    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> Result<Owner, RemoteError> {
        let path = path.to_string();
        self.job(move |r| r.upload(&path, &bytes)).await?
    }

    /// [`Remote::owner_of`].
    pub async fn owner_of(&self, path: &str) -> Result<Option<Owner>, RemoteError> {
        let path = path.to_string();
        self.job(move |r| r.owner_of(&path)).await?
    }

    /// [`Remote::read_small_owned`].
    pub async fn read_small_owned(
        &self,
        path: &str,
        max: u64,
    ) -> Result<Option<(Vec<u8>, Owner)>, RemoteError> {
        let path = path.to_string();
        self.job(move |r| r.read_small_owned(&path, max)).await?
    }

    /// [`Remote::remove`].
    pub async fn remove(&self, path: &str) -> Result<(), RemoteError> {
        let path = path.to_string();
        self.job(move |r| r.remove(&path)).await?
    }
}
