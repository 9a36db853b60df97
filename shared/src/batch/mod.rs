//! `slony_logs_<from>-<to>.tar.gz` batches: reading them safely and writing them verifiably.
//!
//! Both sides pack applied archives into batches of a few thousand (housekeeping), and the
//! receiver prefers fetching a provider's batch over thousands of single files. Two facts
//! shape this module:
//!
//! - **A batch from the provider is hostile input.** It crosses a trust boundary, so nothing
//!   in it is unpacked the way `tar x` would. Every entry must be a regular file at the top
//!   level whose name is exactly a valid archive name (optionally `./`-prefixed), inside the
//!   range the batch's own name announces, present once, and no larger than the caller's
//!   limit. Anything else (absolute or `..` paths, nested paths, links, devices, GNU long-name
//!   entries, PAX keys that would change a member's name, size or type) is refused with an
//!   error naming the batch, the entry and the reason. The file written on disk is named from
//!   the *parsed* [`ArchiveName`], never from the entry's bytes, so it cannot land anywhere
//!   but the destination directory.
//! - **A batch can be many GB.** Members are streamed through a fixed buffer, never held in
//!   memory; entries the caller already applied are skipped without touching the disk. The
//!   `tar` crate's own handling of long-name and PAX entries would read them whole into
//!   memory, so entries are read raw and the few PAX headers we accept are size-bounded here.
//!
//! Every file is written under a `.part` name, fsynced, then renamed, so a final name only
//! ever holds complete content. [`write_batch`] reads its result back ([`verify_batch`])
//! before the batch gets its final name, so the caller may delete the loose archives.
//! Which loose archives go into which batch is [`plan`]'s to decide.

pub mod plan;

use crate::archive::name::{ArchiveName, BadArchiveName, BatchName};
use crate::counter::Counter;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;
use tar::EntryType;

/// The member size limit [`list`] applies. Callers with bigger archives use
/// [`list_with_limit`] and pass their own limit to [`extract`].
pub const DEFAULT_MAX_MEMBER_SIZE: u64 = 1 << 30;

/// Largest PAX extended header we read (it is held in memory to be checked).
const MAX_PAX_HEADER: u64 = 64 * 1024;

/// How much data may follow the tar end-of-archive marker inside the gzip stream. GNU tar
/// pads to 10 KiB records; anything far beyond that is not a batch we wrote or expect.
const MAX_TRAILER: u64 = 1 << 20;

/// Copy buffer size for streaming members.
const BUF_SIZE: usize = 64 * 1024;

/// Why a batch could not be read, written or verified. Every variant names the batch file
/// (or the batch) and, where there is one, the offending entry.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch file's name is not `slony_logs_<from>-<to>.tar.gz`, so its range is unknown.
    #[error("{path}: not a batch file name")]
    BadName {
        /// The batch file.
        path: PathBuf,
        /// Why its name did not parse.
        #[source]
        source: BadArchiveName,
    },
    /// An entry that must never be unpacked: absolute or `..` path, nested path, link,
    /// device, FIFO, directory other than `./`, a name that is not an archive name, or a
    /// PAX/GNU extension header we do not accept.
    #[error("batch {batch}: refused entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The batch file.
        batch: PathBuf,
        /// The entry's path as stored in the tar (lossily decoded).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A member whose counter is outside the range the batch's name announces.
    #[error("batch {batch}: entry {entry:?} is archive {counter}, outside the batch's range {from}..={to}")]
    OutOfRange {
        /// The batch file.
        batch: PathBuf,
        /// The entry's path as stored in the tar.
        entry: String,
        /// The member's counter.
        counter: Counter,
        /// First counter the batch may hold.
        from: Counter,
        /// Last counter the batch may hold.
        to: Counter,
    },
    /// A second member with a counter already seen in this batch.
    #[error("batch {batch}: entry {entry:?} repeats archive {counter}")]
    Duplicate {
        /// The batch file.
        batch: PathBuf,
        /// The entry's path as stored in the tar.
        entry: String,
        /// The repeated counter.
        counter: Counter,
    },
    /// An entry whose declared size exceeds the limit (checked before reading its data).
    #[error("batch {batch}: entry {entry:?} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The batch file.
        batch: PathBuf,
        /// The entry's path as stored in the tar.
        entry: String,
        /// The size its header declares.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The batch does not hold every counter of its range (or an expected member is absent).
    #[error("batch {batch}: archive {counter} is missing")]
    Missing {
        /// The batch file.
        batch: PathBuf,
        /// The first missing counter.
        counter: Counter,
    },
    /// The gzip or tar stream is corrupt or truncated.
    #[error("batch {batch}: corrupt or truncated ({context})")]
    Corrupt {
        /// The batch file.
        batch: PathBuf,
        /// Where in the batch the problem showed.
        context: String,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// [`verify_batch`]: a member differs from the file it was packed from.
    #[error("batch {batch}: entry {entry:?} does not match its source: {detail}")]
    Mismatch {
        /// The batch file.
        batch: PathBuf,
        /// The entry's path as stored in the tar.
        entry: String,
        /// What differs, naming the source file.
        detail: String,
    },
    /// [`write_batch`]/[`verify_batch`]: the member list is not exactly the batch's range.
    #[error("batch {batch}: bad member list: {detail}")]
    BadMembers {
        /// The batch being written or verified.
        batch: BatchName,
        /// What is wrong with the list.
        detail: String,
    },
    /// Reading or writing a local file (not the batch's content) failed.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BatchError + '_ {
    move |source| BatchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(batch: &Path, context: impl Into<String>, source: io::Error) -> BatchError {
    BatchError::Corrupt {
        batch: batch.to_path_buf(),
        context: context.into(),
        source,
    }
}

fn unsafe_entry(batch: &Path, entry: &str, reason: impl Into<String>) -> BatchError {
    BatchError::UnsafeEntry {
        batch: batch.to_path_buf(),
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Parses the batch range from the file name of `path`.
fn batch_name(path: &Path) -> Result<BatchName, BatchError> {
    let bad = |source| BatchError::BadName {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().unwrap_or_default();
    let name = name.to_str().ok_or_else(|| {
        bad(BadArchiveName {
            name: name.to_string_lossy().into_owned(),
            reason: "the file name is not UTF-8",
        })
    })?;
    BatchName::parse(name).map_err(bad)
}

/// One validated member handed to a [`scan`] visitor, its data not yet read.
struct Member<'a> {
    /// The parsed name (the only name ever used on disk).
    name: ArchiveName,
    /// The entry path as stored, for error messages.
    entry: &'a str,
    /// The size the header declares (already checked against the limit).
    size: u64,
    /// The entry's data; reads stop at the entry's end.
    data: &'a mut dyn Read,
}

/// Why an entry type is refused.
fn type_reason(kind: EntryType) -> &'static str {
    if kind.is_symlink() {
        "symbolic links are not allowed"
    } else if kind.is_hard_link() {
        "hard links are not allowed"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device files are not allowed"
    } else if kind.is_fifo() {
        "FIFOs are not allowed"
    } else if kind.is_dir() {
        "directories other than ./ are not allowed"
    } else if kind.is_gnu_longname() || kind.is_gnu_longlink() {
        "GNU long-name entries are not allowed (archive names are short)"
    } else if kind.is_gnu_sparse() {
        "sparse files are not allowed"
    } else {
        "only regular files are allowed"
    }
}

/// Judges an entry by its path and type alone: `Ok(None)` for a `./` directory entry to
/// skip, `Ok(Some(name))` for a member, `Err(reason)` for anything to refuse.
fn judge_entry(raw: &[u8], kind: EntryType) -> Result<Option<ArchiveName>, String> {
    if kind.is_dir() && (raw == b"." || raw == b"./") {
        return Ok(None);
    }
    if raw.is_empty() {
        return Err("empty path".into());
    }
    if raw[0] == b'/' {
        return Err("absolute paths are not allowed".into());
    }
    if raw.split(|b| *b == b'/').any(|c| c == b"..") {
        return Err("parent directory (..) components are not allowed".into());
    }
    if !kind.is_file() {
        return Err(type_reason(kind).into());
    }
    let rest = raw.strip_prefix(b"./").unwrap_or(raw);
    if rest.contains(&b'/') {
        return Err("nested paths are not allowed: members must be at the top level".into());
    }
    let name = std::str::from_utf8(rest).map_err(|_| "the name is not UTF-8".to_string())?;
    ArchiveName::parse(name)
        .map(Some)
        .map_err(|e| format!("not an archive name: {}", e.reason))
}

/// Whether a PAX extended-header key is harmless to ignore: it only carries metadata we
/// do not use. Keys such as `path`, `linkpath`, `size` or `GNU.sparse.*` would make a
/// PAX-aware reader see a different member than we check, so they are refused.
fn pax_key_allowed(key: &str) -> bool {
    matches!(
        key,
        "atime" | "ctime" | "mtime" | "uid" | "gid" | "uname" | "gname" | "comment" | "charset"
    ) || ["SCHILY.xattr.", "LIBARCHIVE.xattr."]
        .iter()
        .any(|p| key.starts_with(p))
        || matches!(
            key,
            "SCHILY.dev" | "SCHILY.ino" | "SCHILY.nlink" | "LIBARCHIVE.creationtime"
        )
}

/// Reads a PAX extended header (bounded) and refuses keys that could change what a
/// PAX-aware reader takes the next member to be.
fn check_pax(batch: &Path, entry: &str, size: u64, data: &mut dyn Read) -> Result<(), BatchError> {
    if size > MAX_PAX_HEADER {
        return Err(BatchError::TooLarge {
            batch: batch.to_path_buf(),
            entry: entry.to_string(),
            size,
            limit: MAX_PAX_HEADER,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    data.take(size)
        .read_to_end(&mut buf)
        .map_err(|e| corrupt(batch, format!("reading PAX header {entry:?}"), e))?;
    if buf.len() as u64 != size {
        return Err(corrupt(
            batch,
            format!(
                "PAX header {entry:?} ends after {} of {size} bytes",
                buf.len()
            ),
            io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    for ext in tar::PaxExtensions::new(&buf) {
        let ext = ext.map_err(|_| unsafe_entry(batch, entry, "malformed PAX record"))?;
        let key = ext
            .key()
            .map_err(|_| unsafe_entry(batch, entry, "PAX key is not UTF-8"))?;
        if !pax_key_allowed(key) {
            return Err(unsafe_entry(
                batch,
                entry,
                format!("PAX key {key:?} is not accepted (it could change a member's name, size or type)"),
            ));
        }
    }
    Ok(())
}

/// Most archives one batch may hold: the largest `batch_size` the manager accepts.
pub const MAX_MEMBERS: u64 = 1_000_000;

/// Reads a batch entry by entry, refusing anything unsafe, and hands every valid member to
/// `visit` (which may read its data or not). Afterwards checks the gzip trailer and that
/// the batch holds every counter of its range. Returns the members in counter order.
fn scan(
    path: &Path,
    batch: BatchName,
    limit: u64,
    mut visit: impl FnMut(Member<'_>) -> Result<(), BatchError>,
) -> Result<Vec<ArchiveName>, BatchError> {
    check_span(batch)?;
    let file = File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut names = visit_entries(path, batch, limit, &mut archive, &mut visit)?;
    check_trailer(path, archive.into_inner())?;
    names.sort();
    check_complete(path, batch, &names)?;
    Ok(names)
}

/// Refuses a batch whose name spans more archives than a batch may hold.
fn check_span(batch: BatchName) -> Result<(), BatchError> {
    // A batch may name a range so wide that its members would be millions of files.
    let span = batch.to.0.saturating_sub(batch.from.0).saturating_add(1);
    if span > MAX_MEMBERS {
        return Err(BatchError::BadMembers {
            batch,
            detail: format!(
                "it spans {span} archives, more than the {MAX_MEMBERS} a batch may hold (the provider's housekeeping makes at most that many)"
            ),
        });
    }
    Ok(())
}

/// Reads the tar stream to its end marker: checks every PAX header, admits each member
/// ([`admit_member`]) and hands it to `visit`. Returns the members in stream order.
fn visit_entries<R: Read>(
    path: &Path,
    batch: BatchName,
    limit: u64,
    archive: &mut tar::Archive<R>,
    visit: &mut impl FnMut(Member<'_>) -> Result<(), BatchError>,
) -> Result<Vec<ArchiveName>, BatchError> {
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    // Raw: the tar crate would otherwise read GNU long names and PAX headers whole
    // into memory, whatever their size.
    let entries = archive
        .entries()
        .map_err(|e| corrupt(path, "opening the tar stream", e))?
        .raw(true);
    // Set while a PAX local header waits for the member it describes.
    let mut pending_pax: Option<String> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(path, "reading the next entry", e))?;
        let kind = entry.header().entry_type();
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            if kind.is_pax_local_extensions() {
                if pending_pax.is_some() {
                    return Err(unsafe_entry(path, &shown, "two PAX headers for one member"));
                }
                pending_pax = Some(shown.clone());
            }
            check_pax(path, &shown, size, &mut entry)?;
            continue;
        }
        pending_pax = None;
        let Some(name) = admit_member(path, batch, limit, &entry, &shown, &mut seen)? else {
            continue;
        };
        visit(Member {
            name,
            entry: &shown,
            size,
            data: &mut entry,
        })?;
        names.push(name);
    }
    if let Some(pax) = pending_pax {
        return Err(unsafe_entry(
            path,
            &pax,
            "PAX header with no member after it",
        ));
    }
    Ok(names)
}

/// Judges one entry that is not a PAX header: `Ok(None)` for a `./` directory entry to
/// skip, `Ok(Some(name))` for a member of the batch's range, seen for the first time and
/// within the size limit (recorded in `seen`), an error for anything else.
fn admit_member<R: Read>(
    path: &Path,
    batch: BatchName,
    limit: u64,
    entry: &tar::Entry<'_, R>,
    shown: &str,
    seen: &mut HashSet<Counter>,
) -> Result<Option<ArchiveName>, BatchError> {
    let name = match judge_entry(&entry.path_bytes(), entry.header().entry_type()) {
        Ok(Some(name)) => name,
        Ok(None) => return Ok(None),
        Err(reason) => return Err(unsafe_entry(path, shown, reason)),
    };
    if !batch.contains(name.counter) {
        return Err(BatchError::OutOfRange {
            batch: path.to_path_buf(),
            entry: shown.to_string(),
            counter: name.counter,
            from: batch.from,
            to: batch.to,
        });
    }
    if !seen.insert(name.counter) {
        return Err(BatchError::Duplicate {
            batch: path.to_path_buf(),
            entry: shown.to_string(),
            counter: name.counter,
        });
    }
    let size = entry.size();
    if size > limit {
        return Err(BatchError::TooLarge {
            batch: path.to_path_buf(),
            entry: shown.to_string(),
            size,
            limit,
        });
    }
    Ok(Some(name))
}

/// Reads on from the tar end marker to the end of the gzip stream, so a truncated or
/// corrupted stream is noticed (the CRC and length are checked at the end).
fn check_trailer(path: &Path, rest: impl Read) -> Result<(), BatchError> {
    let trailer = io::copy(&mut rest.take(MAX_TRAILER + 1), &mut io::sink())
        .map_err(|e| corrupt(path, "reading past the end-of-archive marker", e))?;
    if trailer > MAX_TRAILER {
        return Err(corrupt(
            path,
            "more than 1 MiB of data after the end-of-archive marker",
            io::ErrorKind::InvalidData.into(),
        ));
    }
    Ok(())
}

/// Refuses a batch that lacks a counter of its range; `names` are its members, sorted.
fn check_complete(path: &Path, batch: BatchName, names: &[ArchiveName]) -> Result<(), BatchError> {
    let mut next = batch.from;
    for name in names {
        if name.counter != next {
            break;
        }
        next = next.next();
    }
    if next <= batch.to {
        return Err(BatchError::Missing {
            batch: path.to_path_buf(),
            counter: next,
        });
    }
    Ok(())
}

/// Reads some bytes of a member; a read error or an early end is the batch's fault.
fn read_member(
    member: &mut Member<'_>,
    batch: &Path,
    buf: &mut [u8],
    done: u64,
) -> Result<usize, BatchError> {
    loop {
        match member.data.read(buf) {
            Ok(0) => {
                return Err(corrupt(
                    batch,
                    format!(
                        "entry {:?} ends after {done} of {} bytes",
                        member.entry, member.size
                    ),
                    io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(corrupt(
                    batch,
                    format!("reading entry {:?}", member.entry),
                    e,
                ))
            }
        }
    }
}

/// Streams one member into `<dest>/<name>.part`, fsyncs it and renames it to `<dest>/<name>`.
/// On failure the `.part` file is removed.
fn write_member(
    batch: &Path,
    dest_dir: &Path,
    mut member: Member<'_>,
) -> Result<PathBuf, BatchError> {
    let final_path = dest_dir.join(member.name.to_string());
    let part = dest_dir.join(format!("{}.part", member.name));
    let result = (|| {
        // A stale .part from an interrupted run is ours to replace; create_new then makes
        // sure we write a fresh file of our own.
        match fs::remove_file(&part) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&part)(e)),
            _ => {}
        }
        let mut out = crate::private::options()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(io_err(&part))?;
        let mut buf = vec![0u8; BUF_SIZE];
        let mut done = 0u64;
        while done < member.size {
            let want = (member.size - done).min(BUF_SIZE as u64) as usize;
            let n = read_member(&mut member, batch, &mut buf[..want], done)?;
            out.write_all(&buf[..n]).map_err(io_err(&part))?;
            done += n as u64;
        }
        // No fsync per member: an extracted archive is verified (head and tail) before it
        // is applied, so one torn by a crash is found incomplete and fetched again, and
        // thousands of fsyncs would dominate unpacking a batch. The directory is synced
        // once at the end.
        drop(out);
        fs::rename(&part, &final_path).map_err(io_err(&final_path))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    Ok(final_path)
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), BatchError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Lists the archives in a batch, validating it exactly as [`extract`] does (with
/// [`DEFAULT_MAX_MEMBER_SIZE`] as the member size limit) but writing nothing.
///
/// # Errors
///
/// Any [`BatchError`] `extract` would return for this batch.
pub fn list(batch_path: &Path) -> Result<Vec<ArchiveName>, BatchError> {
    list_with_limit(batch_path, DEFAULT_MAX_MEMBER_SIZE)
}

/// [`list`] with an explicit member size limit in bytes.
///
/// # Errors
///
/// Any [`BatchError`] `extract` would return for this batch.
pub fn list_with_limit(
    batch_path: &Path,
    max_member_size: u64,
) -> Result<Vec<ArchiveName>, BatchError> {
    let batch = batch_name(batch_path)?;
    scan(batch_path, batch, max_member_size, |_| Ok(()))
}

/// Extracts the archives of a batch that `wanted` selects into `dest_dir`.
///
/// The batch's range comes from its file name (`slony_logs_<from>-<to>.tar.gz`), so a
/// download must be renamed to its final name before it is extracted. Every entry is
/// validated (see the module doc), including the ones not wanted; those are skipped
/// without touching the disk. Each wanted member is streamed to `<name>.part`, fsynced
/// and renamed to `<name>`, named from its parsed [`ArchiveName`] only.
///
/// # Returns
///
/// The extracted archives and their paths, in counter order.
///
/// # Errors
///
/// [`BatchError::BadName`] for a file name that is not a batch name; `UnsafeEntry`,
/// `OutOfRange`, `Duplicate`, `TooLarge` for a refused entry; `Missing` when the batch
/// lacks a counter of its range; `Corrupt` for a bad gzip or tar stream; `Io` for local
/// file errors. On error, the `.part` file being written is removed; members already
/// renamed stay (they are complete, and the caller verifies archives before applying).
pub fn extract(
    batch_path: &Path,
    dest_dir: &Path,
    max_member_size: u64,
    wanted: impl Fn(Counter) -> bool,
) -> Result<Vec<(ArchiveName, PathBuf)>, BatchError> {
    let batch = batch_name(batch_path)?;
    let mut out = Vec::new();
    let result = scan(batch_path, batch, max_member_size, |member| {
        if wanted(member.name.counter) {
            let name = member.name;
            let path = write_member(batch_path, dest_dir, member)?;
            out.push((name, path));
        }
        Ok(())
    });
    // Make the renames durable even when a later entry failed: those members are complete.
    let synced = if out.is_empty() {
        Ok(())
    } else {
        sync_dir(dest_dir)
    };
    result?;
    synced?;
    out.sort_by_key(|(name, _)| name.counter);
    Ok(out)
}

/// A source file being packed: reads exactly the `left` bytes its header declares, and
/// remembers whether a failure came from the source (rather than the output).
struct SourceReader {
    /// The open source file.
    file: File,
    /// Bytes still to deliver; the header promised this many.
    left: u64,
    /// Set when reading the source failed or it ended early.
    failed: bool,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.file.read(&mut buf[..max]) {
            Ok(0) => {
                self.failed = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being packed",
                ))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(e)
            }
        }
    }
}

/// Checks that `members` are exactly the counters `batch.from..=batch.to`, in order.
fn check_members(batch: BatchName, members: &[(ArchiveName, PathBuf)]) -> Result<(), BatchError> {
    let bad = |detail: String| BatchError::BadMembers { batch, detail };
    let mut expected = batch.from;
    for (name, _) in members {
        if expected > batch.to {
            return Err(bad(format!(
                "{name} is beyond the last counter {}",
                batch.to
            )));
        }
        if name.counter != expected {
            return Err(bad(format!("expected archive {expected}, got {name}")));
        }
        expected = expected.next();
    }
    if expected <= batch.to {
        return Err(bad(format!("archive {expected} is missing")));
    }
    Ok(())
}

/// The permission bits every file of `members` has (read, write), for their batch: no one
/// reads the batch who could not read each archive in it, so the receiver's private
/// copies give a private batch and the provider's site files their own mode.
fn shared_mode(members: &[(ArchiveName, PathBuf)]) -> u32 {
    members.iter().fold(0o666, |mode, (_, path)| {
        mode & fs::metadata(path).map_or(0o600, |m| m.permissions().mode())
    })
}

/// Opens a file to pack without following a symbolic link (a link planted where an
/// archive should be is never read through).
fn open_member(src: &Path) -> Result<File, BatchError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(io_err(src))
}

/// Packs `members` into `<out_dir>/slony_logs_<from>-<to>.tar.gz` and verifies it.
///
/// Entries are named by the plain archive name, mode 0644, with each source file's mtime.
/// The batch file gets the permission bits all the members have ([`shared_mode`]).
/// The batch is written to `<final>.part`, fsynced, read back and compared byte for byte
/// with the sources ([`verify_batch`]), and only then renamed to its final name; so once
/// this returns, the loose files may be deleted.
///
/// # Errors
///
/// [`BatchError::BadMembers`] unless `members` are exactly the counters `from..=to` in
/// order; `Io` for a source or output failure; `Mismatch` (or another read error) if the
/// written batch does not read back identical. On error the `.part` file is removed and
/// no final batch is left behind.
pub fn write_batch(
    out_dir: &Path,
    batch: BatchName,
    members: &[(ArchiveName, PathBuf)],
) -> Result<PathBuf, BatchError> {
    check_members(batch, members)?;
    let final_path = out_dir.join(batch.to_string());
    let part = out_dir.join(format!("{batch}.part"));
    let result = (|| {
        match fs::remove_file(&part) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&part)(e)),
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(shared_mode(members))
            .open(&part)
            .map_err(io_err(&part))?;
        let gz = GzEncoder::new(BufWriter::new(file), Compression::default());
        let mut builder = tar::Builder::new(gz);
        for (name, src) in members {
            let file = open_member(src)?;
            let meta = file.metadata().map_err(io_err(src))?;
            if !meta.is_file() || meta.nlink() != 1 {
                return Err(BatchError::BadMembers {
                    batch,
                    detail: format!(
                        "{} is not a regular file with one link; it is not packed",
                        src.display()
                    ),
                });
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let mut header = tar::Header::new_gnu();
            header.set_path(name.to_string()).map_err(io_err(src))?;
            header.set_size(meta.len());
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(EntryType::Regular);
            header.set_cksum();
            let mut reader = SourceReader {
                file,
                left: meta.len(),
                failed: false,
            };
            if let Err(e) = builder.append(&header, &mut reader) {
                let path = if reader.failed { src } else { &part };
                return Err(io_err(path)(e));
            }
        }
        let gz = builder.into_inner().map_err(io_err(&part))?;
        let buffered = gz.finish().map_err(io_err(&part))?;
        let file = buffered
            .into_inner()
            .map_err(|e| io_err(&part)(e.into_error()))?;
        file.sync_all().map_err(io_err(&part))?;
        drop(file);
        verify(&part, batch, members, false)?;
        fs::rename(&part, &final_path).map_err(io_err(&final_path))?;
        sync_dir(out_dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    Ok(final_path)
}

/// Reads a batch back and checks it holds exactly `expected`, each member byte for byte
/// identical to its source file.
///
/// # Errors
///
/// [`BatchError::Mismatch`] for a member whose size or content differs from its source,
/// or that is not expected; `Missing` for an expected member the batch lacks;
/// `BadMembers` if `expected` repeats a counter; any error [`list`] would return.
pub fn verify_batch(
    batch_path: &Path,
    expected: &[(ArchiveName, PathBuf)],
) -> Result<(), BatchError> {
    let batch = batch_name(batch_path)?;
    verify(batch_path, batch, expected, false)
}

/// Checks a batch found beside some of its members' loose copies, as an interrupted
/// packing leaves it (the batch renamed into place after its check, then some loose
/// copies deleted): the whole batch must read back, and every loose copy `present` must
/// be one of its members, byte for byte. Members without a loose copy left are read but
/// not compared.
///
/// # Errors
///
/// As [`verify_batch`], except that members without a loose copy are no error.
pub fn verify_batch_beside(
    batch_path: &Path,
    present: &[(ArchiveName, PathBuf)],
) -> Result<(), BatchError> {
    let batch = batch_name(batch_path)?;
    verify(batch_path, batch, present, true)
}

/// Reads the batch at `path` back and compares each member with its file in `expected`;
/// with `others_allowed`, members not in `expected` are read (so damage still shows) but
/// not compared.
fn verify(
    path: &Path,
    batch: BatchName,
    expected: &[(ArchiveName, PathBuf)],
    others_allowed: bool,
) -> Result<(), BatchError> {
    let by_counter = index_expected(batch, expected)?;
    let mut member_buf = vec![0u8; BUF_SIZE];
    let mut source_buf = vec![0u8; BUF_SIZE];
    // Sizes are compared before any data is read, so the limit need not bound anything.
    let found = scan(path, batch, u64::MAX, |mut member| {
        match by_counter.get(&member.name.counter) {
            Some(&(want, src)) => compare_member(
                path,
                &mut member,
                want,
                src,
                &mut member_buf,
                &mut source_buf,
            ),
            // Read through, so a damaged member still fails the check.
            None if others_allowed => skip_member(path, &mut member, &mut member_buf),
            None => Err(mismatch(
                path,
                member.entry,
                "not among the expected members".into(),
            )),
        }
    })?;
    check_all_found(path, &by_counter, &found)
}

/// The expected members by counter; a counter listed twice is refused.
fn index_expected(
    batch: BatchName,
    expected: &[(ArchiveName, PathBuf)],
) -> Result<HashMap<Counter, (ArchiveName, &Path)>, BatchError> {
    let mut by_counter = HashMap::new();
    for (name, src) in expected {
        if by_counter
            .insert(name.counter, (*name, src.as_path()))
            .is_some()
        {
            return Err(BatchError::BadMembers {
                batch,
                detail: format!("archive {} is listed twice", name.counter),
            });
        }
    }
    Ok(by_counter)
}

/// [`BatchError::Mismatch`] for `entry` of `batch`.
fn mismatch(batch: &Path, entry: &str, detail: String) -> BatchError {
    BatchError::Mismatch {
        batch: batch.to_path_buf(),
        entry: entry.to_string(),
        detail,
    }
}

/// Reads a member to its end without comparing it.
fn skip_member(batch: &Path, member: &mut Member<'_>, buf: &mut [u8]) -> Result<(), BatchError> {
    let mut done = 0u64;
    while done < member.size {
        let want = (member.size - done).min(BUF_SIZE as u64) as usize;
        done += read_member(member, batch, &mut buf[..want], done)? as u64;
    }
    Ok(())
}

/// Checks that a member is `want` and byte for byte the file `src`: the same size, the
/// same content, and the file no longer than the member.
fn compare_member(
    batch: &Path,
    member: &mut Member<'_>,
    want: ArchiveName,
    src: &Path,
    member_buf: &mut [u8],
    source_buf: &mut [u8],
) -> Result<(), BatchError> {
    if want != member.name {
        return Err(mismatch(batch, member.entry, format!("expected {want}")));
    }
    let mut file = open_member(src)?;
    let len = file.metadata().map_err(io_err(src))?.len();
    if len != member.size {
        return Err(mismatch(
            batch,
            member.entry,
            format!(
                "{} bytes in the batch, {len} in {}",
                member.size,
                src.display()
            ),
        ));
    }
    compare_content(batch, member, &mut file, src, member_buf, source_buf)?;
    if file.read(&mut source_buf[..1]).map_err(io_err(src))? != 0 {
        return Err(mismatch(
            batch,
            member.entry,
            format!("{} grew", src.display()),
        ));
    }
    Ok(())
}

/// Compares a member's data with the first `member.size` bytes of `file` (the open `src`),
/// a buffer at a time.
fn compare_content(
    batch: &Path,
    member: &mut Member<'_>,
    file: &mut File,
    src: &Path,
    member_buf: &mut [u8],
    source_buf: &mut [u8],
) -> Result<(), BatchError> {
    let mut done = 0u64;
    while done < member.size {
        let want = (member.size - done).min(BUF_SIZE as u64) as usize;
        let n = read_member(member, batch, &mut member_buf[..want], done)?;
        match file.read_exact(&mut source_buf[..n]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(mismatch(
                    batch,
                    member.entry,
                    format!("{} shrank", src.display()),
                ))
            }
            Err(e) => return Err(io_err(src)(e)),
        }
        if member_buf[..n] != source_buf[..n] {
            let at = member_buf[..n]
                .iter()
                .zip(&source_buf[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0) as u64;
            return Err(mismatch(
                batch,
                member.entry,
                format!(
                    "content differs from {} at byte {}",
                    src.display(),
                    done + at
                ),
            ));
        }
        done += n as u64;
    }
    Ok(())
}

/// Refuses the check when an expected member is not among those `found` in the batch,
/// naming the lowest such counter.
fn check_all_found(
    path: &Path,
    by_counter: &HashMap<Counter, (ArchiveName, &Path)>,
    found: &[ArchiveName],
) -> Result<(), BatchError> {
    let found: HashSet<Counter> = found.iter().map(|n| n.counter).collect();
    let mut missing: Vec<Counter> = by_counter
        .keys()
        .filter(|c| !found.contains(c))
        .copied()
        .collect();
    missing.sort();
    match missing.first() {
        Some(&counter) => Err(BatchError::Missing {
            batch: path.to_path_buf(),
            counter,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::{Builder, Header};

    fn aname(counter: u64) -> ArchiveName {
        ArchiveName {
            counter: Counter(counter),
            node_id: 2,
        }
    }

    fn bname(from: u64, to: u64) -> BatchName {
        BatchName::new(Counter(from), Counter(to))
    }

    fn content(counter: u64) -> Vec<u8> {
        // Archive 3 is large (several copy buffers), archive 2 empty.
        let len = match counter {
            2 => 0,
            3 => 300_000,
            _ => 100 + counter as usize,
        };
        (0..len)
            .map(|i| (i as u64 * 31 + counter * 7) as u8)
            .collect()
    }

    /// Writes loose archives `from..=to` into `dir`.
    fn loose(dir: &Path, from: u64, to: u64) -> Vec<(ArchiveName, PathBuf)> {
        (from..=to)
            .map(|c| {
                let p = dir.join(aname(c).to_string());
                fs::write(&p, content(c)).unwrap();
                (aname(c), p)
            })
            .collect()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_write_list_extract_after_threshold() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let out = tmp.path().join("out");
        let dest = tmp.path().join("dest");
        for d in [&src, &out, &dest] {
            fs::create_dir(d).unwrap();
        }
        let members = loose(&src, 1, 5);
        let batch = write_batch(&out, bname(1, 5), &members).unwrap();
        assert_eq!(batch, out.join("slony_logs_1-5.tar.gz"));
        assert_eq!(files_in(&out), ["slony_logs_1-5.tar.gz"]);
        verify_batch(&batch, &members).unwrap();

        let listed = list(&batch).unwrap();
        assert_eq!(listed, (1..=5).map(aname).collect::<Vec<_>>());

        let got = extract(&batch, &dest, 1 << 20, |c| c > Counter(3)).unwrap();
        assert_eq!(
            got,
            vec![
                (aname(4), dest.join(aname(4).to_string())),
                (aname(5), dest.join(aname(5).to_string())),
            ]
        );
        assert_eq!(
            files_in(&dest),
            [aname(4).to_string(), aname(5).to_string()]
        );
        for (name, path) in &got {
            assert_eq!(fs::read(path).unwrap(), content(name.counter.0));
        }

        // Everything, including the empty and the multi-buffer member.
        let all = tmp.path().join("all");
        fs::create_dir(&all).unwrap();
        let got = extract(&batch, &all, 1 << 20, |_| true).unwrap();
        assert_eq!(got.len(), 5);
        for (name, path) in &got {
            assert_eq!(fs::read(path).unwrap(), content(name.counter.0));
        }

        // Extracted copies are private; the batch has its members' mode.
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for (_, path) in &got {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
        let umask_allows = |bits: u32| mode(&members[0].1) & bits;
        assert_eq!(mode(&batch), umask_allows(0o666));
        let private: Vec<(ArchiveName, PathBuf)> = got.clone();
        let private_batch = write_batch(&out, bname(1, 5), &private).unwrap();
        assert_eq!(private_batch, batch);
        assert_eq!(mode(&batch), 0o600);

        // Entry metadata as promised.
        let mut archive = tar::Archive::new(GzDecoder::new(File::open(&batch).unwrap()));
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().mode().unwrap(), 0o644);
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            // The batch was last written from the extracted copies in `all`.
            let src_mtime = fs::metadata(all.join(&name))
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert_eq!(entry.header().mtime().unwrap(), src_mtime);
        }
    }

    #[test]
    fn a_batch_spanning_too_many_archives_is_refused_unread() {
        let tmp = tempfile::tempdir().unwrap();
        // Any bytes at all: the name alone is refused, before the file is opened.
        let wide = tmp
            .path()
            .join(format!("slony_logs_1-{}.tar.gz", MAX_MEMBERS + 1));
        fs::write(&wide, b"not even gzip").unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        match extract(&wide, &dest, 1 << 20, |_| true) {
            Err(BatchError::BadMembers { detail, .. }) => {
                assert!(detail.contains("more than the 1000000"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(files_in(&dest).len(), 0);
    }

    #[test]
    fn write_batch_requires_exactly_the_range() {
        let tmp = tempfile::tempdir().unwrap();
        let members = loose(tmp.path(), 1, 4);
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        let gap = [members[0].clone(), members[2].clone()];
        let swapped = [members[1].clone(), members[0].clone()];
        for (range, list) in [
            (bname(1, 4), &members[..3]), // too few
            (bname(1, 3), &members[..]),  // too many
            (bname(2, 4), &members[..3]), // wrong start
            (bname(1, 3), &gap[..]),
            (bname(1, 2), &swapped[..]),
        ] {
            let err = write_batch(&out, range, list).unwrap_err();
            assert!(matches!(err, BatchError::BadMembers { .. }), "{err}");
        }
        assert!(files_in(&out).is_empty());

        // A missing source file: Io naming it, and no .part left behind.
        let mut broken = members[..2].to_vec();
        broken[1].1 = tmp.path().join("gone");
        let err = write_batch(&out, bname(1, 2), &broken).unwrap_err();
        assert!(
            matches!(&err, BatchError::Io { path, .. } if path.ends_with("gone")),
            "{err}"
        );
        assert!(files_in(&out).is_empty());
    }

    /// PAX records to insert before the entry at the given index.
    type Pax<'a> = (usize, &'a [(&'a str, &'a [u8])]);

    /// One raw entry of a hand-made tar.
    struct Raw {
        path: Vec<u8>,
        kind: EntryType,
        data: Vec<u8>,
        /// Declared size, when it should differ from `data.len()`.
        size: Option<u64>,
        link: Option<&'static [u8]>,
    }

    fn file(path: &str, data: &[u8]) -> Raw {
        Raw {
            path: path.as_bytes().to_vec(),
            kind: EntryType::Regular,
            data: data.to_vec(),
            size: None,
            link: None,
        }
    }

    fn of_kind(path: &str, kind: EntryType) -> Raw {
        Raw {
            kind,
            ..file(path, b"")
        }
    }

    /// Builds a tar.gz from raw headers, bypassing every check `set_path` would make.
    fn build(path: &Path, entries: Vec<Raw>, pax: Option<Pax<'_>>) {
        let gz = GzEncoder::new(File::create(path).unwrap(), Compression::fast());
        let mut b = Builder::new(gz);
        for (i, e) in entries.into_iter().enumerate() {
            if let Some((at, records)) = pax {
                if at == i {
                    b.append_pax_extensions(records.iter().copied()).unwrap();
                }
            }
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..e.path.len()].copy_from_slice(&e.path);
            if let Some(link) = e.link {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            }
            h.set_entry_type(e.kind);
            h.set_mode(0o644);
            h.set_size(e.size.unwrap_or(e.data.len() as u64));
            h.set_cksum();
            if e.size.is_some() {
                // Lying header: write it and its data by hand.
                let inner = b.get_mut();
                inner.write_all(h.as_bytes()).unwrap();
                inner.write_all(&e.data).unwrap();
                let pad = (512 - e.data.len() % 512) % 512;
                inner.write_all(&vec![0; pad]).unwrap();
            } else {
                b.append(&h, &e.data[..]).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    /// Extracts a hand-made batch into `<tmp>/dest` and checks nothing landed anywhere
    /// but there, and no `.part` file is left.
    fn try_extract(entries: Vec<Raw>, batch: &str, limit: u64) -> (BatchError, Vec<String>) {
        try_extract_pax(entries, batch, limit, None)
    }

    fn try_extract_pax(
        entries: Vec<Raw>,
        batch: &str,
        limit: u64,
        pax: Option<Pax<'_>>,
    ) -> (BatchError, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let path = tmp.path().join(batch);
        build(&path, entries, pax);
        let listed = list_with_limit(&path, limit);
        let err = extract(&path, &dest, limit, |_| true).unwrap_err();
        // list refuses what extract refuses (the context of a Corrupt may differ: list
        // skips the data extract reads).
        let listed = listed.unwrap_err();
        assert_eq!(
            std::mem::discriminant(&listed),
            std::mem::discriminant(&err),
            "list: {listed:?}, extract: {err:?}"
        );
        assert_eq!(
            files_in(tmp.path()),
            ["dest".to_string(), batch.to_string()]
        );
        let written = files_in(&dest);
        assert!(written.iter().all(|f| !f.ends_with(".part")), "{written:?}");
        (err, written)
    }

    fn unsafe_reason(err: &BatchError) -> &str {
        match err {
            BatchError::UnsafeEntry { reason, .. } => reason,
            other => panic!("expected UnsafeEntry, got {other:?}"),
        }
    }

    #[test]
    fn refuses_unsafe_entries() {
        let a1 = aname(1).to_string();
        let outside = format!("/tmp/slony-batch-test-{}", std::process::id());
        let cases: Vec<(Raw, &str)> = vec![
            (file("../evil", b"x"), "parent directory"),
            (file(&format!("../{a1}"), b"x"), "parent directory"),
            (file(&format!("./x/../../{a1}"), b"x"), "parent directory"),
            (file(&outside, b"x"), "absolute"),
            (file(&format!("a/{a1}"), b"x"), "nested"),
            (file(&format!(".//{a1}"), b"x"), "nested"),
            (file("README", b"x"), "not an archive name"),
            (file(&format!("{a1}.tmp"), b"x"), "not an archive name"),
            (file("slony1_log_2_1.sql", b"x"), "not an archive name"),
            (
                Raw {
                    link: Some(b"/etc/passwd"),
                    ..of_kind(&a1, EntryType::Symlink)
                },
                "symbolic link",
            ),
            (
                Raw {
                    link: Some(b"/etc/passwd"),
                    ..of_kind(&a1, EntryType::Link)
                },
                "hard link",
            ),
            (of_kind(&a1, EntryType::Char), "device"),
            (of_kind(&a1, EntryType::Block), "device"),
            (of_kind(&a1, EntryType::Fifo), "FIFO"),
            (of_kind("sub/", EntryType::Directory), "directories"),
            (of_kind("../", EntryType::Directory), "parent directory"),
            (of_kind(&a1, EntryType::GNULongName), "GNU long-name"),
        ];
        for (entry, want) in cases {
            let shown = String::from_utf8_lossy(&entry.path).into_owned();
            let (err, written) = try_extract(vec![entry], "slony_logs_1-1.tar.gz", 1 << 20);
            assert!(unsafe_reason(&err).contains(want), "{shown}: {err}");
            assert!(err.to_string().contains("slony_logs_1-1.tar.gz"), "{err}");
            assert!(written.is_empty(), "{shown}: {written:?}");
        }
        assert!(!Path::new(&outside).exists());
    }

    #[test]
    fn refuses_a_long_name_written_by_the_tar_crate() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("slony_logs_1-1.tar.gz");
        let gz = GzEncoder::new(File::create(&path).unwrap(), Compression::fast());
        let mut b = Builder::new(gz);
        let mut h = Header::new_gnu();
        h.set_size(1);
        b.append_data(
            &mut h,
            format!("{}/{}", "d".repeat(120), aname(1)),
            &b"x"[..],
        )
        .unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let err = list(&path).unwrap_err();
        assert!(unsafe_reason(&err).contains("GNU long-name"), "{err}");
    }

    #[test]
    fn refuses_out_of_range_duplicate_missing_and_oversized() {
        let a = |c| aname(c).to_string();
        let (err, written) = try_extract(
            vec![file(&a(1), b"1"), file(&a(3), b"3")],
            "slony_logs_1-2.tar.gz",
            100,
        );
        assert!(
            matches!(
                err,
                BatchError::OutOfRange {
                    counter: Counter(3),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(written, [a(1)]);

        let (err, _) = try_extract(
            vec![file(&a(1), b"1"), file(&format!("./{}", a(1)), b"1 again")],
            "slony_logs_1-2.tar.gz",
            100,
        );
        assert!(
            matches!(&err, BatchError::Duplicate { counter: Counter(1), entry, .. } if entry.starts_with("./")),
            "{err}"
        );

        // The same counter from another node is still a duplicate.
        let other_node = ArchiveName {
            counter: Counter(1),
            node_id: 7,
        };
        let (err, _) = try_extract(
            vec![file(&a(1), b"1"), file(&other_node.to_string(), b"1")],
            "slony_logs_1-2.tar.gz",
            100,
        );
        assert!(matches!(err, BatchError::Duplicate { .. }), "{err}");

        let (err, written) = try_extract(
            vec![file(&a(1), b"1"), file(&a(3), b"3")],
            "slony_logs_1-3.tar.gz",
            100,
        );
        assert!(
            matches!(
                err,
                BatchError::Missing {
                    counter: Counter(2),
                    ..
                }
            ),
            "{err}"
        );
        // Complete members already renamed may stay.
        assert_eq!(written, [a(1), a(3)]);

        let (err, written) = try_extract(
            vec![file(&a(1), &[b'x'; 101])],
            "slony_logs_1-1.tar.gz",
            100,
        );
        assert!(
            matches!(
                err,
                BatchError::TooLarge {
                    size: 101,
                    limit: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert!(written.is_empty());

        // A header claiming 1 TiB with no data behind it: refused before reading.
        let huge = Raw {
            size: Some(1 << 40),
            ..file(&a(1), b"short")
        };
        let (err, _) = try_extract(vec![huge], "slony_logs_1-1.tar.gz", 1 << 30);
        assert!(
            matches!(err, BatchError::TooLarge { size, .. } if size == 1 << 40),
            "{err}"
        );
    }

    #[test]
    fn lying_size_within_limit_is_corrupt_and_leaves_no_part() {
        let a1 = aname(1).to_string();
        let liar = Raw {
            size: Some(10_000),
            ..file(&a1, b"short")
        };
        let (err, written) = try_extract(vec![liar], "slony_logs_1-1.tar.gz", 1 << 20);
        assert!(matches!(err, BatchError::Corrupt { .. }), "{err}");
        assert!(written.is_empty());
    }

    #[test]
    fn accepts_dot_slash_and_harmless_pax() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("slony_logs_1-2.tar.gz");
        let records: &[(&str, &[u8])] = &[("mtime", b"1700000000.5"), ("atime", b"1")];
        build(
            &path,
            vec![
                of_kind("./", EntryType::Directory),
                of_kind(".", EntryType::Directory),
                file(&format!("./{}", aname(1)), b"one"),
                file(&aname(2).to_string(), b"two"),
            ],
            Some((3, records)),
        );
        assert_eq!(list(&path).unwrap(), vec![aname(1), aname(2)]);
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let got = extract(&path, &dest, 10, |c| c == Counter(1)).unwrap();
        assert_eq!(got, vec![(aname(1), dest.join(aname(1).to_string()))]);
        assert_eq!(fs::read(&got[0].1).unwrap(), b"one");
    }

    #[test]
    fn refuses_pax_keys_that_change_the_member() {
        let a1 = aname(1).to_string();
        for key in ["path", "size", "linkpath", "GNU.sparse.map"] {
            let records: &[(&str, &[u8])] = &[(key, b"../evil")];
            let (err, written) = try_extract_pax(
                vec![file(&a1, b"x")],
                "slony_logs_1-1.tar.gz",
                100,
                Some((0, records)),
            );
            assert!(unsafe_reason(&err).contains(key), "{key}: {err}");
            assert!(written.is_empty());
        }
    }

    #[test]
    fn corrupt_and_truncated_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let members = loose(&src, 1, 5);
        let good = write_batch(tmp.path(), bname(1, 5), &members).unwrap();
        let bytes = fs::read(&good).unwrap();
        let bad_dir = tmp.path().join("bad");
        fs::create_dir(&bad_dir).unwrap();
        let bad = bad_dir.join("slony_logs_1-5.tar.gz");
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        for (what, data) in [
            ("half", bytes[..bytes.len() / 2].to_vec()),
            ("no trailer", bytes[..bytes.len() - 4].to_vec()),
            ("header only", bytes[..10].to_vec()),
            ("empty", Vec::new()),
            ("not gzip", b"this is not a gzip stream at all".to_vec()),
            ("flipped byte", flipped),
        ] {
            fs::write(&bad, &data).unwrap();
            let dest = tmp.path().join(format!("dest-{}", what.replace(' ', "-")));
            fs::create_dir(&dest).unwrap();
            let err = extract(&bad, &dest, 1 << 20, |_| true).unwrap_err();
            assert!(matches!(err, BatchError::Corrupt { .. }), "{what}: {err:?}");
            assert!(list(&bad).is_err(), "{what}");
            assert!(
                files_in(&dest).iter().all(|f| !f.ends_with(".part")),
                "{what}"
            );
        }

        // A gzip-valid stream holding a tar cut in the middle of a member.
        let mut tar_bytes = Vec::new();
        GzDecoder::new(&bytes[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&tar_bytes[..tar_bytes.len() / 2]).unwrap();
        fs::write(&bad, enc.finish().unwrap()).unwrap();
        let err = list(&bad).unwrap_err();
        assert!(matches!(err, BatchError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn bad_batch_file_name() {
        let err = list(Path::new("/nonexistent/batch.tar.gz")).unwrap_err();
        assert!(matches!(err, BatchError::BadName { .. }), "{err}");
        let err = list(Path::new("/nonexistent/slony_logs_1-2.tar.gz")).unwrap_err();
        assert!(matches!(err, BatchError::Io { .. }), "{err}");
    }

    #[test]
    fn verify_batch_detects_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let members = loose(&src, 1, 4);
        let batch = write_batch(tmp.path(), bname(1, 4), &members).unwrap();
        verify_batch(&batch, &members).unwrap();

        // Same length, one byte changed deep inside the large member.
        let mut changed = content(3);
        changed[200_000] ^= 1;
        fs::write(&members[2].1, &changed).unwrap();
        let err = verify_batch(&batch, &members).unwrap_err();
        match &err {
            BatchError::Mismatch { detail, .. } => assert!(detail.contains("200000"), "{err}"),
            other => panic!("{other:?}"),
        }

        // Different length.
        fs::write(&members[2].1, content(3)).unwrap();
        fs::write(&members[0].1, b"longer or shorter").unwrap();
        let err = verify_batch(&batch, &members).unwrap_err();
        assert!(matches!(err, BatchError::Mismatch { .. }), "{err}");
        fs::write(&members[0].1, content(1)).unwrap();
        verify_batch(&batch, &members).unwrap();

        // An expected member the batch does not hold; a member not expected.
        let mut more = members.clone();
        more.extend(loose(&src, 5, 5));
        let err = verify_batch(&batch, &more).unwrap_err();
        assert!(
            matches!(
                err,
                BatchError::Missing {
                    counter: Counter(5),
                    ..
                }
            ),
            "{err}"
        );
        let err = verify_batch(&batch, &members[..3]).unwrap_err();
        assert!(matches!(err, BatchError::Mismatch { .. }), "{err}");
    }
}
