//! The site lists and positions as the cutter reads them: each site's current lists, its
//! `cut_counter`, and where a site without one starts.

use crate::config::ManagerConfig;
use crate::fsutil;
use crate::site;
use anyhow::{bail, Context};
use slony_shared::archive::cut::SiteFilter;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use std::path::{Path, PathBuf};

/// Name of the file holding the last counter cut for a site, in `<subscribers_dir>/<node>/`.
pub const CUT_COUNTER_FILE: &str = "cut_counter";

/// Reads `<dir>/cut_counter`; `Ok(None)` if there is none.
///
/// # Errors
///
/// The file exists but is unreadable or not a counter.
pub fn read_cut_counter(dir: &Path) -> anyhow::Result<Option<Counter>> {
    let path = dir.join(CUT_COUNTER_FILE);
    match fsutil::read_bounded(&path, 64)? {
        None => Ok(None),
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            text.trim()
                .parse()
                .map(Some)
                .with_context(|| format!("{} does not hold a counter", path.display()))
        }
    }
}

pub(super) fn write_cut_counter(dir: &Path, c: Counter) -> anyhow::Result<()> {
    fsutil::write_atomic(&dir.join(CUT_COUNTER_FILE), format!("{c}\n").as_bytes())
}

/// The last counter cut for a site: its `cut_counter`, or for a site that has none yet,
/// `since - 1`, or else the newest counter already in its archive directory.
///
/// # Errors
///
/// `cut_counter` is damaged, or the site has neither `cut_counter`, `since` nor archives.
pub fn current_cut(site_dir: &Path, log_dir: &Path) -> anyhow::Result<Counter> {
    if let Some(c) = read_cut_counter(site_dir)? {
        return Ok(c);
    }
    if let Some(since) = site::read_since(site_dir) {
        return Ok(Counter(since.0.saturating_sub(1)));
    }
    if let Some(newest) = newest_in(log_dir)? {
        return Ok(newest);
    }
    bail!(
        "{} has neither `{CUT_COUNTER_FILE}` nor `{}`, and {} holds no archive: write the \
         last counter the site already has into {}",
        site_dir.display(),
        site::SINCE_FILE,
        log_dir.display(),
        site_dir.join(CUT_COUNTER_FILE).display()
    )
}

/// The newest counter in a site directory (archives and batches).
fn newest_in(log_dir: &Path) -> anyhow::Result<Option<Counter>> {
    let entries = match std::fs::read_dir(log_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", log_dir.display())),
    };
    let mut newest = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let c = match name.to_str().map(classify) {
            Some(Ok(Entry::Archive(a))) => a.counter,
            Some(Ok(Entry::Batch(b))) => b.to,
            _ => continue,
        };
        // A file the site planted never counts as already cut.
        if let Some(why) = fsutil::not_ours(&entry.path()) {
            tracing::warn!(file = %entry.path().display(), reason = %why, "a file the manager did not write, under an archive's name: not counted as cut");
            continue;
        }
        newest = newest.max(Some(c));
    }
    Ok(newest)
}

/// One site as the cutter sees it.
pub(super) struct Site {
    /// Its node name.
    pub(super) node: NodeName,
    /// What of an archive it gets: its tables and sequences.
    pub(super) filter: SiteFilter,
    /// `<subscribers_dir>/<node>/`.
    pub(super) dir: PathBuf,
    /// `<site_log_dir>/<node>/`.
    pub(super) log_dir: PathBuf,
    /// Last counter cut (on disk).
    pub(super) cut: Counter,
    /// The next counter to cut.
    pub(super) next: Counter,
}

/// What [`load_sites`] found.
pub(super) struct Loaded {
    /// The sites that can be cut.
    pub(super) sites: Vec<Site>,
    /// Sites whose lists cannot be read: they are not cut; the others are.
    pub(super) errors: Vec<String>,
    /// Sites that are cut, but with something to tell the operator (no sequence list).
    pub(super) warnings: Vec<String>,
}

/// Reads every site's lists and position.
pub(super) fn load_sites(cfg: &ManagerConfig) -> anyhow::Result<Loaded> {
    let mut names: Vec<NodeName> = Vec::new();
    let dir = &cfg.subscribers_dir;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Ok(node) = NodeName::new(&name) {
            if entry.path().is_dir() {
                names.push(node);
            }
        }
    }
    names.sort();
    let mut loaded = Loaded {
        sites: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    for node in names {
        // Only a registered site is served: its archive directory is made for its group.
        let Some(account) = cfg.registry.get(&node) else {
            loaded.errors.push(format!(
                "site {node}: not registered in {} (add [sites.{node}] account = ...); it is not cut until it is",
                cfg.source.display()
            ));
            continue;
        };
        match crate::exchange::prepare_archive_dir(cfg, account)
            .and_then(|()| load_site(cfg, &node, &mut loaded.warnings))
        {
            Ok(s) => loaded.sites.push(s),
            Err(e) => loaded.errors.push(format!("site {node}: {e:#}")),
        }
    }
    Ok(loaded)
}

/// Reads one site's lists and position.
fn load_site(
    cfg: &ManagerConfig,
    node: &NodeName,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Site> {
    let dir = cfg.site_dir(node);
    let tables =
        site::read_tables(&dir)?.with_context(|| format!("{} disappeared", dir.display()))?;
    let sequences = match site::read_sequences(&dir)? {
        Some(s) => s,
        None => {
            warnings.push(site::no_sequence_list_warning(node, &dir));
            Vec::new()
        }
    };
    let log_dir = cfg.site_log_dir(node);
    let cut = current_cut(&dir, &log_dir)?;
    let since = site::read_since(&dir).unwrap_or(Counter(1));
    Ok(Site {
        node: node.clone(),
        filter: SiteFilter::from_lists(&tables, &sequences),
        dir,
        log_dir,
        cut,
        next: cut.next().max(since),
    })
}
