/*!
Each site's directories on the provider, and reading what a site wrote.

| directory | owner, group, mode | holds |
| --- | --- | --- |
| `<trigger_dir>/` | manager, 0755 | one exchange directory per site |
| `<trigger_dir>/<node>/` | manager, the site's group, 3770 | the site's request, report and acknowledgement; the manager's answers |
| `<site_log_dir>/<node>/` | manager, the site's group, 2750 | the site's archives and batches, written by the manager only |

The directories are setgid, so every file in them takes the site's group; the manager
writes its files 0640 and the subscriber its own 0640. The exchange directory is also
sticky: a site can rename or remove only its own files there, never the manager's (an
answer, or the SQL being written). No other site can enter either
directory. The manager makes the directories itself (it must be in each site's group)
and refuses one that it does not own: someone else made it, and may still control it.
*/

use crate::config::ManagerConfig;
use crate::fsutil::{self, OtherSide};
use crate::registry::{describe_uid, SiteAccount};
use anyhow::{bail, Context};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of a site's exchange directory: the manager and the site's group read and write;
/// sticky, so the site cannot rename or remove the manager's files.
pub const EXCHANGE_MODE: u32 = 0o3770;
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
/// group to the site's and its mode to `mode`, through a handle opened without following
/// a link (so nothing swapped in between is changed instead).
fn ensure_dir(path: &Path, site: &SiteAccount, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Err(e) = path.symlink_metadata() {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("inspecting {}", path.display()));
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating {}", path.display()))?;
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path);
    let dir = match dir {
        Ok(d) => d,
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            bail!(
                "{} is not a directory (a link or a file put there by someone else): remove it, and the manager makes the site's directory itself",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let meta = dir
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if meta.uid() != fsutil::own_uid() {
        bail!(
            "{} belongs to {}, not to the manager: whoever made it can still change it. Remove it, and the manager makes the site's directory itself",
            path.display(),
            describe_uid(meta.uid(), None)
        );
    }
    let gid = site.account.gid;
    if meta.gid() != gid {
        std::os::unix::fs::fchown(&dir, None, Some(gid)).with_context(|| {
            format!(
                "giving {} to site {}'s group (gid {gid}): the manager's account must be a member of it",
                path.display(),
                site.node
            )
        })?;
    }
    if meta.mode() & 0o7777 != mode {
        dir.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {} to {mode:o}", path.display()))?;
    }
    Ok(())
}

/// What is wrong with a site's directory at `path`, which [`prepare`] makes: not a real
/// directory, not the manager's, not in the site's group, or another mode than `mode`.
/// Read only: nothing is repaired.
///
/// # Errors
///
/// What is wrong, and what to do (a missing directory included).
pub fn inspect_dir(path: &Path, site: &SiteAccount, mode: u32) -> anyhow::Result<()> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} does not exist", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !meta.is_dir() {
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
    if meta.gid() != site.account.gid {
        bail!(
            "{} has group gid {}, not site {}'s group (gid {}): `slony-manager run` repairs it at start",
            path.display(),
            meta.gid(),
            site.node,
            site.account.gid
        );
    }
    if meta.mode() & 0o7777 != mode {
        bail!(
            "{} has mode {:o}, not {mode:o}: `slony-manager run` repairs it at start",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Checks that a directory of the manager's (`trigger_dir`, `site_log_dir`,
/// `subscribers_dir`) and every directory above it can be changed by no one but the
/// manager and root: a site that could rename an entry there could swap a site's
/// directory for one of its own. A directory above may be writable by others only if it
/// is sticky (as `/tmp` is).
///
/// # Errors
///
/// The directory is missing, or someone else may change it or one above it.
pub fn check_own_dir(key: &str, path: &Path) -> anyhow::Result<()> {
    let real = path
        .canonicalize()
        .with_context(|| format!("{key} {} cannot be resolved", path.display()))?;
    let own = fsutil::own_uid();
    for (i, dir) in real.ancestors().enumerate() {
        let m = std::fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
        if !m.is_dir() {
            bail!("{key} {} is not a directory", path.display());
        }
        if m.uid() != own && m.uid() != 0 {
            bail!(
                "{key} {}: {} belongs to {}, who could swap the sites' directories; it must belong to the manager or root",
                path.display(),
                dir.display(),
                describe_uid(m.uid(), None)
            );
        }
        let writable = m.mode() & 0o022 != 0;
        let sticky = m.mode() & 0o1000 != 0;
        if writable && (i == 0 || !sticky) {
            bail!(
                "{key} {}: {} is writable by other accounts (mode {:o}), who could swap the sites' directories (the original shared layout let sites write it): chmod go-w {}",
                path.display(),
                dir.display(),
                m.mode() & 0o7777,
                dir.display()
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_dirs_are_inspected_without_repair() {
        use crate::registry::Account;
        use slony_shared::ident::NodeName;
        let root = tempfile::tempdir().unwrap();
        let site = SiteAccount {
            node: NodeName::new("site1").unwrap(),
            account: Account::own(),
            tables: None,
        };
        let dir = root.path().join("site1");
        let err = |d: &Path| format!("{:#}", inspect_dir(d, &site, ARCHIVE_MODE).unwrap_err());
        assert!(err(&dir).contains("does not exist"), "{}", err(&dir));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            err(&dir).contains("has mode 755, not 2750"),
            "{}",
            err(&dir)
        );
        // Still 755: the inspection repairs nothing.
        assert_eq!(dir.metadata().unwrap().mode() & 0o7777, 0o755);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2750)).unwrap();
        inspect_dir(&dir, &site, ARCHIVE_MODE).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(err(&link).contains("is not a directory"), "{}", err(&link));
    }

    #[test]
    fn own_dirs_must_be_changeable_by_the_manager_only() {
        let root = tempfile::tempdir().unwrap();
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(root.path(), 0o755);
        let dir = root.path().join("triggers");
        std::fs::create_dir(&dir).unwrap();
        set(&dir, 0o755);
        check_own_dir("trigger_dir", &dir).unwrap();
        // Writable by others, as the original shared layout had it: refused.
        for mode in [0o777, 0o1777, 0o775] {
            set(&dir, mode);
            let err = check_own_dir("trigger_dir", &dir).unwrap_err().to_string();
            assert!(err.contains("chmod go-w"), "{mode:o}: {err}");
        }
        set(&dir, 0o755);
        // A directory above may be writable by others only when sticky (as /tmp is).
        set(root.path(), 0o777);
        assert!(check_own_dir("trigger_dir", &dir).is_err());
        set(root.path(), 0o1777);
        check_own_dir("trigger_dir", &dir).unwrap();
        set(root.path(), 0o755);
        assert!(check_own_dir("trigger_dir", &root.path().join("none")).is_err());
    }
}
