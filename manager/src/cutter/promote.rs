//! A change of a site's list at its snapshot: the cutter's state made to fit the new list
//! before `<node>.new/` is promoted (see the module doc of [`super`]).

use super::sites::{current_cut, write_cut_counter};
use crate::config::ManagerConfig;
use crate::fsutil;
use crate::site;
use anyhow::Context;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use std::path::Path;

/// A promotion that must wait: the cutter has not yet cut the site up to the old list's
/// last archive. It passes by itself once the cutter catches up.
#[derive(Debug, thiserror::Error)]
#[error(
    "waiting for the archive cutter: {node} is cut up to archive {cut}, and archives up to \
     {last_old} still belong to its previous table list (the new list starts at {since})"
)]
pub struct CutterBehind {
    /// The site being promoted.
    pub node: NodeName,
    /// Where the cutter is for it.
    pub cut: Counter,
    /// The last archive of its previous list.
    pub last_old: Counter,
    /// The first archive of its new list.
    pub since: Counter,
}

/// Called by the flow before it promotes `<node>.new/`, with [`super::CutterHandle::lock_lists`] held: makes
/// the cutter's state fit the new list (see the module doc). Does nothing when the
/// cutter is off or the promotion already happened.
///
/// # Errors
///
/// The cutter has not reached `since - 1` for this site yet (retry later), or an I/O
/// error.
pub fn prepare_promotion(cfg: &ManagerConfig, node: &NodeName) -> anyhow::Result<()> {
    if cfg.archive_dir.is_none() {
        return Ok(());
    }
    let new = cfg.new_site_dir(node);
    if !fsutil::exists(&new) {
        return Ok(());
    }
    let since = site::read_since(&new).with_context(|| {
        format!(
            "{} has no `{}`: cannot tell where the new list starts",
            new.display(),
            site::SINCE_FILE
        )
    })?;
    let last_old = Counter(since.0.saturating_sub(1));
    let current = cfg.site_dir(node);
    let log_dir = cfg.site_log_dir(node);
    if fsutil::exists(&current) {
        let cut = current_cut(&current, &log_dir)?;
        if cut < last_old {
            return Err(CutterBehind {
                node: node.clone(),
                cut,
                last_old,
                since,
            }
            .into());
        }
        if cut > last_old {
            write_cut_counter(&current, last_old)?;
        }
    }
    let removed = remove_from(&log_dir, since)?;
    if removed > 0 {
        tracing::info!(
            %node,
            since = since.0,
            removed,
            "removed the copies cut with the previous table list; they are cut again with the new one"
        );
    }
    write_cut_counter(&new, last_old)
}

/// Deletes a site's archives (and batches reaching) `>= since`; returns how many.
fn remove_from(log_dir: &Path, since: Counter) -> anyhow::Result<usize> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", log_dir.display())),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = match classify(name) {
            Ok(Entry::Archive(a)) => a.counter >= since,
            Ok(Entry::Batch(b)) => b.to >= since,
            _ => name.starts_with('.') && name.ends_with(".cut.tmp"),
        };
        if stale {
            fsutil::remove_file(&entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsutil::sync_dir(log_dir).with_context(|| format!("syncing {}", log_dir.display()))?;
    }
    Ok(removed)
}
