/*!
Each site's directories on the provider, and reading what a site wrote.

| directory | owner, group, mode | holds |
| --- | --- | --- |
| `<trigger_dir>/` | manager, 0755 | one exchange directory per site |
| `<trigger_dir>/<node>/` | manager, the site's group, 2770 | the site's request, report and acknowledgement; the manager's answers |
| `<site_log_dir>/<node>/` | manager, the site's group, 2750 | the site's archives and batches, written by the manager only |

The directories are setgid, so every file in them takes the site's group; the manager
writes its files 0640 and the subscriber its own 0640. No other site can enter either
directory. The manager makes the directories itself (it must be in each site's group)
and refuses one that it does not own: someone else made it, and may still control it.
*/

use crate::config::ManagerConfig;
use crate::fsutil::{self, OtherSide};
use crate::registry::{describe_uid, SiteAccount};
use anyhow::{bail, Context};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of a site's exchange directory: the manager and the site's group read and write.
pub const EXCHANGE_MODE: u32 = 0o2770;
/// Mode of a site's archive directory: the site's group only reads.
pub const ARCHIVE_MODE: u32 = 0o2750;

/// Makes or repairs the site's exchange directory, and its archive directory if it exists.
///
/// # Errors
///
/// A directory the manager does not own, a link in its place, or an I/O error (the
/// manager not in the site's group, above all).
pub fn prepare(cfg: &ManagerConfig, site: &SiteAccount) -> anyhow::Result<()> {
    ensure_dir(&cfg.exchange_dir(&site.node), site, EXCHANGE_MODE)?;
    let logs = cfg.site_log_dir(&site.node);
    if fsutil::exists(&logs) {
        ensure_dir(&logs, site, ARCHIVE_MODE)?;
    }
    Ok(())
}

/// Makes the site's archive directory (when its first subscription succeeds).
pub fn prepare_archive_dir(cfg: &ManagerConfig, site: &SiteAccount) -> anyhow::Result<()> {
    ensure_dir(&cfg.site_log_dir(&site.node), site, ARCHIVE_MODE)
}

/// Creates `path` (owner: the manager) or checks that the manager owns it, then sets its
/// group to the site's and its mode to `mode`.
fn ensure_dir(path: &Path, site: &SiteAccount, mode: u32) -> anyhow::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            path.symlink_metadata()
                .with_context(|| format!("inspecting {}", path.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory (a link or a file put there by someone else): remove it, and the manager makes the site's directory itself",
            path.display()
        );
    }
    if meta.uid() != fsutil::own_uid() {
        bail!(
            "{} belongs to {}, not to the manager: whoever made it can still change it. Remove it, and the manager makes the site's directory itself",
            path.display(),
            describe_uid(meta.uid(), None)
        );
    }
    let gid = site.account.gid;
    if meta.gid() != gid {
        std::os::unix::fs::lchown(path, None, Some(gid)).with_context(|| {
            format!(
                "giving {} to site {}'s group (gid {gid}): the manager's account must be a member of it",
                path.display(),
                site.node
            )
        })?;
    }
    if meta.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {} to {mode:o}", path.display()))?;
    }
    Ok(())
}

/// Reads a file the site wrote into its exchange directory (see
/// [`fsutil::read_site_file`]): refused unless the site's account owns it.
///
/// # Errors
///
/// An I/O error other than "not found".
pub fn read_from_site(
    cfg: &ManagerConfig,
    site: &SiteAccount,
    path: &Path,
    limit: usize,
) -> anyhow::Result<OtherSide> {
    Ok(
        match fsutil::read_site_file(path, limit, site.account.uid, |uid| {
            describe_uid(uid, Some(&cfg.registry))
        })? {
            OtherSide::Refused(why) => OtherSide::Refused(format!(
                "{why} ({} of site {}, uid {})",
                site.account.name, site.node, site.account.uid
            )),
            other => other,
        },
    )
}

/// Who wrote `path`, for a refusal: its owner, named.
pub fn writer_of(cfg: &ManagerConfig, path: &Path) -> String {
    match path.symlink_metadata() {
        Ok(m) => describe_uid(m.uid(), Some(&cfg.registry)),
        Err(_) => "an unknown writer (the file is gone)".into(),
    }
}
