//! Files and directories for their owner only.
//!
//! What the receiver keeps locally (downloaded archives, batches, the counter, alert and
//! subscription state, the promotion marker, the run lock) holds replicated data or
//! details of the set-up, so files are created mode 0600 and directories 0700 (narrower
//! if the umask says so). Directories that exist already keep their mode: an operator
//! may have opened one to a group on purpose.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the files created here.
pub const FILE_MODE: u32 = 0o600;
/// The mode of the directories created here.
pub const DIR_MODE: u32 = 0o700;

/// `OpenOptions` that create a missing file with [`FILE_MODE`]; the caller adds the rest.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates (or truncates) `path` for writing, mode 0600; an existing file is narrowed to
/// its owner's bits too.
pub fn create(path: &Path) -> io::Result<File> {
    let file = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    restrict(&file);
    Ok(file)
}

/// Writes `bytes` to `path` as [`create`] does.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create(path)?.write_all(bytes)
}

/// Takes the group's and others' bits off an open file (opening a file that exists
/// already keeps its mode). Best effort: a file we may write but do not own cannot be
/// changed, and is used as it is.
pub fn restrict(file: &File) {
    if let Ok(meta) = file.metadata() {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            let _ = file.set_permissions(Permissions::from_mode(mode & 0o700));
        }
    }
}

/// Creates `path` and its missing parents with [`DIR_MODE`] (existing ones are kept as
/// they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates the directory `path` (its parent must exist) with [`DIR_MODE`].
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_directories_are_the_owners_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        create_dir_all(&dir).unwrap();
        create_dir(&dir.join("c")).unwrap();
        assert_eq!(mode(&dir.join("c")), 0o700);

        let file = dir.join("f");
        write(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        // A file that was there with a wider mode is narrowed when written again.
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write(&file, b"y").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"y");
    }
}
