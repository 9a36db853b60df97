//! This site's local state that every command respects: the log directory, the run lock
//! (one command at a time applies or rearranges archives) and the pause file.

use crate::config::ReceiverConfig;
use anyhow::Context;
use slony_shared::counter::Counter;
use slony_shared::lock::{LockError, RunLock};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The run locks a command holds while it applies or rearranges archives; released on
/// drop.
#[derive(Debug)]
pub struct RunLocks {
    /// This site's own (`local.log_dir/slony-receiver.<cluster>.lock`).
    _own: RunLock,
    /// The original client's (`local.original_client_lock`), when configured.
    _original: Option<RunLock>,
}

/// Why the run locks were not taken: another process holds one.
#[derive(Debug, thiserror::Error)]
pub enum Busy {
    /// Another slony-receiver command holds this site's lock.
    #[error("{0}")]
    Receiver(LockError),
    /// The original client holds its lock (`local.original_client_lock`).
    #[error("the original client (get_slony_logs.pl) is running for this cluster: it holds {path} (local.original_client_lock)")]
    OriginalClient {
        /// The original client's lock file.
        path: PathBuf,
    },
}

/// Creates the local log directory and takes the run lock, and the original client's
/// lock too when `local.original_client_lock` names it: while a site moves over, an old
/// cron line may still start `get_slony_logs.pl`, and the two must not apply at once.
///
/// Returns `Ok(Err(busy))` when another process holds a lock: the caller says what it
/// does instead, and exits [`crate::exit::ALREADY_RUNNING`].
///
/// # Errors
///
/// The directory cannot be created, or a lock file cannot be opened.
pub fn take_run_lock(cfg: &ReceiverConfig) -> anyhow::Result<Result<RunLocks, Busy>> {
    slony_shared::private::create_dir_all(&cfg.local.log_dir).with_context(|| {
        format!(
            "creating local log directory {}",
            cfg.local.log_dir.display()
        )
    })?;
    let own = match RunLock::try_acquire(&cfg.lock_file()) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => return Ok(Err(Busy::Receiver(e))),
        Err(e) => return Err(e).context("taking the run lock"),
    };
    let original = match &cfg.local.original_client_lock {
        None => None,
        Some(path) => match RunLock::try_acquire(path) {
            Ok(lock) => Some(lock),
            Err(LockError::Held { path, .. }) => return Ok(Err(Busy::OriginalClient { path })),
            Err(e) => {
                return Err(e).context(
                    "taking the original client's lock (local.original_client_lock; remove the key once get_slony_logs.pl no longer runs here)",
                )
            }
        },
    };
    Ok(Ok(RunLocks {
        _own: own,
        _original: original,
    }))
}

/// The pause (die) file, when it is present.
pub fn pause_file(cfg: &ReceiverConfig) -> Option<PathBuf> {
    let die = cfg.die_file();
    die.exists().then_some(die)
}

/// A local file operation that failed: what, on which path, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct LocalError {
    /// What was being done.
    pub what: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// For `map_err`: the failure of `what` on `path`.
pub fn local_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> LocalError + 'a {
    move |source| LocalError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the local directories of the site: its own, `incoming/` and `applied/`.
///
/// # Errors
///
/// A directory cannot be created.
pub fn prepare_dirs(cfg: &ReceiverConfig) -> Result<(), LocalError> {
    for dir in [cfg.site_dir(), cfg.incoming_dir(), cfg.applied_dir()] {
        slony_shared::private::create_dir_all(&dir)
            .map_err(local_err("creating directory", &dir))?;
    }
    Ok(())
}

/// Writes `counter` to the counter file atomically (temp file + rename).
pub fn write_counter_file(path: &Path, counter: Counter) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = slony_shared::private::create(&tmp)?;
    writeln!(f, "{counter}")?;
    // No fsync: the file mirrors the database (the source of truth), and the next run
    // rewrites it from there.
    std::fs::rename(&tmp, path)
}

/// Reads the counter file, if it exists and holds a number.
pub fn read_counter_file(path: &Path) -> Option<Counter> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slony_counter.txt");
        assert_eq!(read_counter_file(&p), None);
        write_counter_file(&p, Counter(42)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "42\n");
        assert_eq!(read_counter_file(&p), Some(Counter(42)));
    }
}
