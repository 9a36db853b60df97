//! The exclusive per-cluster run lock (flock, released by the kernel when the process dies).
//!
//! A lock file left behind by a crash never blocks anyone: the lock is on the open file,
//! not on its existence. The holder writes its pid into the file for `status`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
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
        // Never through a link: the original client's lock lives in /tmp, where anyone may
        // plant one pointing at a file of ours.
        let mut file = crate::private::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
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
///
/// The lock is never taken to find out (a `status` at the moment cron starts a `pull`
/// must not make the pull think another one is running): the kernel's table of locks,
/// `/proc/locks`, is read for this file's inode, and the pid the holder wrote is given.
pub fn holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let locks = read_proc_locks()?;
    // `1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF`: device numbers in hex, inode
    // in decimal.
    let dev = meta.dev();
    let (major, minor) = (libc_major(dev), libc_minor(dev));
    let listed = |locks: &str| {
        locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = fields.iter().position(|f| f.matches(':').count() == 2) else {
                return false;
            };
            let mut parts = fields[at].split(':');
            let (Some(ma), Some(mi), Some(ino)) = (parts.next(), parts.next(), parts.next()) else {
                return false;
            };
            u64::from_str_radix(ma, 16).ok() == Some(major)
                && u64::from_str_radix(mi, 16).ok() == Some(minor)
                && ino.parse::<u64>().ok() == Some(meta.ino())
        })
    };
    // The kernel lists the table a page at a time: a lock released meanwhile shifts the
    // rest, so one reading can miss a lock that is held all along. One that is held is in
    // every reading, so a miss is read again (a few times, in large reads).
    let mut held = listed(&locks);
    for _ in 0..3 {
        if held {
            break;
        }
        held = read_proc_locks().is_some_and(|l| listed(&l));
    }
    if !held {
        return None;
    }
    let mut pid = String::new();
    File::open(path).ok()?.read_to_string(&mut pid).ok()?;
    pid.trim().parse().ok()
}

/// `/proc/locks`, read in reads of 1 MiB (each a page-by-page walk of the kernel's table).
fn read_proc_locks() -> Option<String> {
    let mut buf = Vec::with_capacity(1 << 20);
    File::open("/proc/locks").ok()?.read_to_end(&mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// The major number of a device id (glibc's encoding).
fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

/// The minor number of a device id (glibc's encoding).
fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_planted_in_place_of_the_lock_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let lock = dir.path().join("jsoc.lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        // The plant is live: a plain open of the lock's path for writing reaches the file.
        let through = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            through.metadata().unwrap().ino(),
            std::fs::metadata(&target).unwrap().ino()
        );
        drop(through);
        let e = RunLock::try_acquire(&lock).unwrap_err();
        assert!(matches!(e, LockError::Io { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn asking_who_holds_the_lock_never_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        drop(RunLock::try_acquire(&path).unwrap());
        assert_eq!(holder(&path), None);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asker = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                    // Held by the loop below at times, by nobody else ever.
                    let h = holder(&path);
                    assert!(h.is_none() || h == Some(std::process::id()), "{h:?}");
                    n += 1;
                }
            })
        };
        for _ in 0..2000 {
            drop(RunLock::try_acquire(&path).expect("the lock was taken by holder()"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        asker
            .join()
            .unwrap_or_else(|_| panic!("holder() saw another holder"));
        // Held: the holder's pid.
        let held = RunLock::try_acquire(&path).unwrap();
        assert_eq!(holder(&path), Some(std::process::id()));
        drop(held);
        assert_eq!(holder(&path), None);
    }

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
