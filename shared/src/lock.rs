//! The exclusive per-cluster run lock (flock, released by the kernel when the process dies).
//!
//! A lock file left behind by a crash never blocks anyone: the lock is on the open file,
//! not on its existence. The holder writes its pid into the file for `status`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another instance is already running for this cluster (lock {path}, held by pid {pid})"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid as written in the file ("unknown" if unreadable).
        pid: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot use lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    /// Kept open: closing the file releases the flock.
    _file: File,
    /// Where the lock lives.
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock without waiting, or says who holds it.
    pub fn try_acquire(path: &Path) -> Result<RunLock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = crate::private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        crate::private::restrict(&file);
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(RunLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid of the process holding the lock at `path`, if any holds it.
pub fn holder(path: &Path) -> Option<u32> {
    let mut file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    match file.try_lock() {
        Ok(()) => None,
        Err(_) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok()?;
            pid.trim().parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = RunLock::try_acquire(&path).unwrap();
        match RunLock::try_acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(holder(&path), Some(std::process::id()));
        drop(first);
        assert_eq!(holder(&path), None);
        RunLock::try_acquire(&path).unwrap();
    }
}
