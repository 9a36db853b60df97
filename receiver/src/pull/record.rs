//! After each commit: mirror the counter in `slony_counter.txt`
//! ([`crate::local::write_counter_file`]) and move the applied archive to the applied
//! directory, where housekeeping packs it. Around a run: tell the
//! provider how far this site is ([`acknowledge`]).
//!
//! The database is the source of truth; this mirror is for humans and the original tools.
//! Both steps are atomic renames, so a crash leaves either the old or the new state, and
//! the next run repairs the mirror from the database.

use crate::provider::{Remote, RemoteError};
use slony_shared::ack;
use slony_shared::archive::ArchiveName;
use slony_shared::counter::Counter;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Moves an applied archive from `from` into `applied_dir`.
pub fn move_to_applied(from: &Path, applied_dir: &Path, name: &ArchiveName) -> io::Result<()> {
    std::fs::rename(from, applied_dir.join(name.to_string()))
}

/// Writes `counter` into `<exchange_dir>/applied_counter` on the provider (the site's own
/// place there, `<trigger_dir>/<node>/`), unless it already says so. The provider's housekeeping deletes only acknowledged archives, so a failure
/// here costs the provider disk space, never this site data: it is logged, not raised.
pub fn acknowledge(remote: &Remote, exchange_dir: &str, counter: Counter) {
    static ACK_WARNED: AtomicBool = AtomicBool::new(false);
    let path = format!("{exchange_dir}/{}", ack::ACK_FILE);
    let written = || -> Result<bool, RemoteError> {
        let current = remote.read_small(&path, ack::MAX_LEN).unwrap_or(None);
        if current.is_some_and(|b| ack::parse(&b) == Ok(counter)) {
            return Ok(false);
        }
        remote.upload(&path, ack::render(counter).as_bytes())?;
        Ok(true)
    };
    match written() {
        Ok(true) => tracing::debug!(counter = counter.0, file = %path, "acknowledged"),
        Ok(false) => {}
        // Once per process at warning level: a daemon retries every poll.
        Err(e) if !ACK_WARNED.swap(true, Ordering::Relaxed) => tracing::warn!(
            error = %e,
            "cannot write the acknowledgement {path} on the provider; its housekeeping keeps \
             this site's archives until it can (set pull.acknowledge = false to stop trying)"
        ),
        Err(e) => tracing::debug!(error = %e, file = %path, "acknowledgement not written"),
    }
}

/// Reads the Slony node remembered in `path` (`None` when missing or garbled).
pub fn read_node_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Remembers the Slony node of the archives applied.
pub fn write_node_file(path: &Path, node: u32) -> io::Result<()> {
    slony_shared::private::write(path, format!("{node}\n").as_bytes())
}
