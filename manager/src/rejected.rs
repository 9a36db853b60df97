/*!
Refused files: what a site wrote where it may not is moved into
`<trigger_dir>/rejected/` (the manager's own, 0700) under a generated name, never acted
on, and kept a while for the operator.
*/

use crate::config::ManagerConfig;
use crate::fsutil;
use anyhow::Context;
use slony_shared::ident::NodeName;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where refused files are moved, inside the trigger directory (the manager's only).
pub const REJECTED_DIR: &str = "rejected";

/// The tag of a protocol file refused in the old shared layout (directly in the trigger
/// directory); a registered site's carries its node after a `.`.
const OLD_LAYOUT: &str = "old-layout";

/// The registered site a protocol file of the old shared layout (directly in the trigger
/// directory) is named for, if any: its refusal is tagged for it ([`old_layout_tag`]).
pub fn old_layout_site(cfg: &ManagerConfig, name: &str) -> Option<NodeName> {
    match slony_shared::trigger::TriggerKind::parse_file_name(name) {
        Ok(Some((node, _))) if cfg.registry.get(&node).is_some() => Some(node),
        _ => None,
    }
}

/// The tag of a protocol file refused in the old shared layout: named for its site when
/// it is a registered site's ([`old_layout_site`]), so that [`old_layout_sites`] counts it.
pub fn old_layout_tag(site: Option<&NodeName>) -> String {
    match site {
        Some(node) => format!("{OLD_LAYOUT}.{node}"),
        None => OLD_LAYOUT.to_string(),
    }
}

/// Per registered site, how many of its protocol files were refused in the old shared
/// layout (the original `subscribe_series` writes there): in `rejected/`, or still
/// directly in the trigger directory (when `run` has not moved them yet). For `status`
/// and `check`: such a site still runs the original tools' subscription client.
pub fn old_layout_sites(cfg: &ManagerConfig) -> Vec<(NodeName, usize)> {
    let mut counts: std::collections::BTreeMap<NodeName, usize> = Default::default();
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let prefix = format!("{OLD_LAYOUT}.");
    for name in names(&cfg.rejected_dir()) {
        let Some((tag, _)) = generated_parts(&name) else {
            continue;
        };
        let Some(node) = tag.strip_prefix(&prefix) else {
            continue;
        };
        if let Ok(node) = NodeName::new(node) {
            if cfg.registry.get(&node).is_some() {
                *counts.entry(node).or_default() += 1;
            }
        }
    }
    for name in names(&cfg.trigger_dir) {
        if let Some(node) = old_layout_site(cfg, &name) {
            if cfg.trigger_dir.join(&name).is_file() {
                *counts.entry(node).or_default() += 1;
            }
        }
    }
    counts.into_iter().collect()
}

/// The tag and the time (seconds since the epoch) of a name [`RejectedDir::move_aside`]
/// generated, `<tag>-<time>-<pid>-<seq>`.
fn generated_parts(name: &str) -> Option<(&str, u64)> {
    let mut parts = name.rsplitn(4, '-');
    let (_seq, _pid, time, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((tag, time.parse().ok()?))
}

/// The warning `status` and `check` give for a site of [`old_layout_sites`].
pub fn old_layout_warning(node: &NodeName, files: usize) -> String {
    format!(
        "site {node} wrote {files} protocol file(s) in the old shared layout, directly in the trigger directory, as the original subscribe_series does: they are refused unanswered (see rejected/). Move the site's subscriptions to `slony-receiver subscribe-series --legacy-config repclient.cfg` (README: Migrating from the original tools); its archives need nothing (the original get_slony_logs.pl reads them as they are)"
    )
}

/// Moves refused files into `<trigger_dir>/rejected/`, each under a name of its own. The
/// daemon makes one and passes clones to its tasks (clones share the count).
#[derive(Debug, Clone, Default)]
pub struct RejectedDir {
    /// Files moved so far: part of each generated name, so that two moves within one
    /// second never collide, and every hundredth move prunes the directory.
    moved: Arc<AtomicU64>,
}

impl RejectedDir {
    /// A mover that has moved nothing yet.
    pub fn new() -> RejectedDir {
        RejectedDir::default()
    }

    /// Moves a refused file into `<trigger_dir>/rejected/` under a generated name (the
    /// file's own name is never used in a path), and returns where it went. A file that
    /// cannot be moved is removed.
    ///
    /// # Errors
    ///
    /// Neither worked.
    pub fn move_aside(
        &self,
        cfg: &ManagerConfig,
        path: &Path,
        tag: &str,
    ) -> anyhow::Result<PathBuf> {
        let dir = cfg.rejected_dir();
        let seq = self.moved.fetch_add(1, Ordering::Relaxed);
        let target = dir.join(format!(
            "{tag}-{}-{}-{seq}",
            crate::request::now(),
            std::process::id()
        ));
        // `rejected/` must be our own directory, not a link planted in its place, and open to
        // no one else: what lands there may be any site's.
        let result = (|| {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            let m = dir.symlink_metadata()?;
            if !m.file_type().is_dir() || m.uid() != fsutil::own_uid() {
                return Err(std::io::Error::other(format!(
                    "{} is not the manager's directory",
                    dir.display()
                )));
            }
            if m.mode() & 0o077 != 0 {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            }
            std::fs::rename(path, &target)
        })();
        if seq.is_multiple_of(100) {
            prune(&dir);
        }
        match result {
            Ok(()) => Ok(target),
            Err(e) => {
                fsutil::remove_file(path)
                    .with_context(|| format!("cannot move it aside ({e}) nor remove it"))?;
                Ok(PathBuf::from("(removed)"))
            }
        }
    }
}

/// Refused files are kept this long, for the operator to look at.
const REJECTED_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// And at most this many (the newest).
const REJECTED_MAX: usize = 1000;

/// Cleans `rejected/` up: files older than [`REJECTED_KEEP`] go, and beyond
/// [`REJECTED_MAX`] the oldest go. Returns how many were removed.
pub fn prune(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    // Aged by when the manager moved them (the second field of the generated name), not
    // by their own mtime, which the site that planted them chose.
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| {
            let moved = e
                .file_name()
                .to_str()
                .and_then(generated_parts)
                .map_or(now, |(_, t)| std::time::UNIX_EPOCH + Duration::from_secs(t));
            (moved, e.path())
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(REJECTED_MAX);
    let mut removed = 0;
    for (i, (mtime, path)) in files.iter().enumerate() {
        let old = now.duration_since(*mtime).unwrap_or_default() > REJECTED_KEEP;
        if i < excess || old {
            // A directory a site made and the manager moved here goes too.
            let gone = if path.is_dir() {
                fsutil::remove_dir_all(path)
            } else {
                fsutil::remove_file(path)
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_files_are_kept_a_while_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(31 * 24 * 3600);
        let secs =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let now = secs(std::time::SystemTime::now());
        for i in 0..REJECTED_MAX + 5 {
            // Named as move_aside names them: tag-<moved at>-<pid>-<seq>.
            let moved = if i < 3 {
                secs(old)
            } else {
                now - 100 + i as u64 % 50
            };
            let p = dir.path().join(format!("forged-request-{moved}-1-{i}"));
            std::fs::write(&p, "x").unwrap();
            // A file's own mtime (which its writer chose) does not count.
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(if i < 3 {
                    std::time::SystemTime::now()
                } else {
                    old
                })
                .unwrap();
        }
        // The three old ones, and two more beyond the bound (the oldest).
        assert_eq!(prune(dir.path()), 5);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), REJECTED_MAX);
        assert_eq!(prune(dir.path()), 0);
    }
}
