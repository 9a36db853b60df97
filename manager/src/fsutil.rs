/*!
Small file-system helpers with the crash guarantees the protocol relies on.

Every file another party may read (protocol files, state files, table lists) is written
under a temporary name in the same directory, fsynced and renamed, so a reader sees
either the old content or the whole new one, and a crash leaves at worst a stray
temporary file. Removals tolerate a missing file, so each cleanup step can be repeated
after a restart.
*/

use anyhow::Context;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary name in the same directory, fsync,
/// rename, fsync of the directory).
///
/// # Errors
///
/// Any I/O error, with the path in the context.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path without a directory")?;
    let name = path
        .file_name()
        .context("a file path without a file name")?
        .to_string_lossy();
    // A leading dot and a `.tmp` suffix: neither the manager nor a subscriber takes this
    // for a protocol file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Creates `path` for writing, refusing to follow anything already there: the trigger
/// directory is writable by the subscribers, so a planted symlink at one of our
/// temporary names must not redirect the write. A leftover regular file or link is
/// removed and the creation retried once.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Never world-readable: what the manager writes for a site is read through the site's
    // group (its directories are setgid, so the file takes their group).
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

/// Flushes a directory's entries (renames, creations) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file; a missing file is fine.
pub fn remove_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Removes an entry a site may have made in its own directory (its report, say). What
/// cannot be removed (a directory of the site's) is left, logged: the site can stall only
/// itself that way, and the manager must go on.
pub fn remove_site_entry(path: &Path) {
    if let Err(e) = remove_file(path) {
        tracing::warn!(error = %format!("{e:#}"), "leaving an entry of the site's that cannot be removed");
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir_all(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Reads at most `limit + 1` bytes of a file (so a caller can tell "too large" without
/// reading a huge file). `Ok(None)` if the file does not exist.
pub fn read_bounded(path: &Path, limit: usize) -> anyhow::Result<Option<Vec<u8>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut buf = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(buf))
}

/// What [`read_site_file`] found.
#[derive(Debug)]
pub enum OtherSide {
    /// No such file.
    Missing,
    /// The file's first `limit + 1` bytes at most.
    Bytes(Vec<u8>),
    /// Not something the other side may hand us: a symlink, a hard link, a directory...
    /// (reading it could leak a file of ours into an error message sent back).
    Refused(String),
}

/// Reads a file a site wrote into its exchange directory, at most `limit + 1` bytes,
/// only if it is a plain regular file with a single link, owned by `expected_uid` and
/// writable by no one else. The file opened is checked to be the one inspected (same
/// device and inode), so it cannot be swapped for a symlink in between. A file of another
/// owner is refused with `writer(owner)` in the reason, naming the real writer.
///
/// # Errors
///
/// An I/O error other than "not found".
pub fn read_site_file(
    path: &Path,
    limit: usize,
    expected_uid: u32,
    writer: impl Fn(u32) -> String,
) -> anyhow::Result<OtherSide> {
    Ok(match read_owned(path, limit)? {
        Owned::Read { owner, .. } if owner != expected_uid => OtherSide::Refused(format!(
            "it was written by {}, not by the site's account",
            writer(owner)
        )),
        Owned::Read { mode, .. } if mode & 0o022 != 0 => {
            OtherSide::Refused(format!("its mode {:o} lets others write it", mode & 0o7777))
        }
        Owned::Read { bytes, .. } => OtherSide::Bytes(bytes),
        Owned::Other(o) => o,
    })
}

/// A file read by [`read_owned`], with its owner and mode.
enum Owned {
    Read {
        bytes: Vec<u8>,
        owner: u32,
        mode: u32,
    },
    Other(OtherSide),
}

fn read_owned(path: &Path, limit: usize) -> anyhow::Result<Owned> {
    use std::os::unix::fs::MetadataExt;
    use Owned::Other;
    let before = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Other(OtherSide::Missing)),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !before.file_type().is_file() {
        return Ok(Other(OtherSide::Refused("it is not a regular file".into())));
    }
    if before.nlink() != 1 {
        return Ok(Other(OtherSide::Refused(
            "it has more than one hard link".into(),
        )));
    }
    let f = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Other(OtherSide::Missing)),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let after = f
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) || after.nlink() != 1 {
        return Ok(Other(OtherSide::Refused(
            "it was replaced while being opened".into(),
        )));
    }
    let mut buf = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Owned::Read {
        bytes: buf,
        owner: after.uid(),
        mode: after.mode(),
    })
}

/// Opens a file the manager wrote itself, in a directory a site can write: without
/// following a link, and only if the file opened is a regular file with one link owned
/// by the manager (the exchange directory is sticky, so a site cannot have swapped it).
///
/// # Errors
///
/// It cannot be opened, or it is not the manager's own file.
pub fn open_own(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let f = open_nofollow(path).with_context(|| format!("opening {}", path.display()))?;
    let m = f
        .metadata()
        .with_context(|| format!("inspecting {}", path.display()))?;
    if !m.file_type().is_file() || m.nlink() != 1 || m.uid() != own_uid() {
        anyhow::bail!(
            "{} is not the file the manager wrote (a regular file of its own with one link)",
            path.display()
        );
    }
    Ok(f)
}

/// Opens a file for reading without following a symbolic link at its last component.
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Why a file in a site directory is not one the manager wrote, if it is not (`None`
/// when it is): the site can write there (its acknowledgement), so a link or a file of
/// its own may be planted under an archive's name.
pub fn not_ours(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot be inspected: {e}")),
    };
    if meta.file_type().is_symlink() {
        Some("is a symbolic link".into())
    } else if !meta.file_type().is_file() {
        Some("is not a regular file".into())
    } else if meta.nlink() != 1 {
        Some(format!("has {} hard links", meta.nlink()))
    } else if meta.uid() != own_uid() {
        Some(format!("belongs to uid {}, not to the manager", meta.uid()))
    } else {
        None
    }
}

/// The manager's effective uid (the owner of every file it writes).
pub fn own_uid() -> u32 {
    nix::unistd::Uid::effective().as_raw()
}

/// Whether a path exists (a dangling symlink counts as existing: it is not ours to touch).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(read_bounded(&p, 2).unwrap().unwrap(), b"two");
        assert_eq!(read_bounded(&p, 1).unwrap().unwrap(), b"tw");
        assert!(read_bounded(&dir.path().join("none"), 1).unwrap().is_none());
        remove_file(&p).unwrap();
        remove_file(&p).unwrap();
        remove_dir_all(&dir.path().join("none")).unwrap();
    }

    #[test]
    fn other_side_files_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root:x").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"hello").unwrap();
        assert!(
            matches!(read_site_file(&plain, 10, own_uid(), |u| u.to_string()).unwrap(), OtherSide::Bytes(b) if b == b"hello")
        );
        assert!(
            matches!(read_site_file(&plain, 2, own_uid(), |u| u.to_string()).unwrap(), OtherSide::Bytes(b) if b == b"hel")
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(matches!(
            read_site_file(&link, 10, own_uid(), |u| u.to_string()).unwrap(),
            OtherSide::Refused(_)
        ));
        let hard = dir.path().join("hard");
        std::fs::hard_link(&secret, &hard).unwrap();
        assert!(matches!(
            read_site_file(&hard, 10, own_uid(), |u| u.to_string()).unwrap(),
            OtherSide::Refused(_)
        ));
        assert!(matches!(
            read_site_file(dir.path(), 10, own_uid(), |u| u.to_string()).unwrap(),
            OtherSide::Refused(_)
        ));
        assert!(matches!(
            read_site_file(&dir.path().join("none"), 10, own_uid(), |u| u.to_string()).unwrap(),
            OtherSide::Missing
        ));
        // A site's file counts only if its account owns it, and no one else may write it.
        let own = own_uid();
        let named = |uid: u32| format!("uid {uid}");
        assert!(matches!(
            read_site_file(&plain, 10, own, named).unwrap(),
            OtherSide::Bytes(b) if b == b"hello"
        ));
        match read_site_file(&plain, 10, own + 1, named).unwrap() {
            OtherSide::Refused(why) => assert!(why.contains(&format!("uid {own}")), "{why}"),
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            read_site_file(&plain, 10, own, named).unwrap(),
            OtherSide::Refused(why) if why.contains("lets others write it")
        ));
        assert!(matches!(
            read_site_file(&link, 10, own, named).unwrap(),
            OtherSide::Refused(_)
        ));
        // What the manager creates is not world-readable.
        let made = dir.path().join("made");
        create_new(&made).unwrap();
        assert_eq!(made.metadata().unwrap().permissions().mode() & 0o777, 0o640);
        // A planted symlink at a temporary name is replaced, not followed.
        let tmp = dir.path().join("tmp");
        std::os::unix::fs::symlink(&secret, &tmp).unwrap();
        create_new(&tmp).unwrap().write_all(b"mine").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"root:x");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"mine");
    }
}
