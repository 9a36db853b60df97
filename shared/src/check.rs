//! The report of a `check` command (both binaries), in the manner of Barman's `barman
//! check`: one verdict per check, and its three renderings.
//!
//! Each binary runs its own checks (`slony-receiver check`, `slony-manager check`) and
//! collects them in a [`Report`]; this module renders it and says the Nagios state. The
//! checks run independently: one that fails never stops the others, and a check that
//! cannot run because another failed says so ([`Check::skipped`]).
//!
//! # Renderings
//!
//! - [`Report::text`]: one line per check, `name: OK`, `name: OK (detail)` or
//!   `name: FAILED (why; what to do)`.
//! - [`Report::json`]: `{"program", "ok", "checks": [{"name", "ok", "detail", "hint"}]}`;
//!   `detail` and `hint` are `null` when there is none. Field names are stable.
//! - [`Report::nagios`]: one line, `SLONY-RECEIVER OK - 11 checks passed` or
//!   `SLONY-RECEIVER CRITICAL - 2 of 11 checks failed: ssh login, tracking schema`, with
//!   the state's code from [`Report::nagios_code`] (0 OK, 2 CRITICAL). A check is OK or
//!   FAILED, so WARNING (1) is never given; UNKNOWN (3) is for the caller when the
//!   command itself could not run.
//!
//! The probes of the local file system both binaries use (free space, writability,
//! whether a pid lives) are here too.

use serde::Serialize;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Nagios state OK.
pub const NAGIOS_OK: u8 = 0;
/// Nagios state WARNING (never given by a report: every check is OK or FAILED).
pub const NAGIOS_WARNING: u8 = 1;
/// Nagios state CRITICAL: at least one check failed.
pub const NAGIOS_CRITICAL: u8 = 2;
/// Nagios state UNKNOWN: the check command itself could not run.
pub const NAGIOS_UNKNOWN: u8 = 3;

/// A file system with less available space than this fails a directory check (1 GiB).
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// A file system with less than this share of its space available fails (5 %).
pub const MIN_FREE_PERCENT: u64 = 5;
/// A file system with less than this share of its inodes available fails (1 %): archives
/// are many small files.
pub const MIN_FREE_INODES_PERCENT: u64 = 1;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`ssh login`, `tracking schema`): stable, lower case.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (for a pass) or why it failed.
    pub detail: Option<String>,
    /// What to do about a failure.
    pub hint: Option<String>,
}

impl Check {
    /// A pass, with what was found (an empty `detail` is none).
    pub fn ok(name: &str, detail: impl Into<String>) -> Check {
        let detail = detail.into();
        Check {
            name: name.to_string(),
            ok: true,
            detail: (!detail.is_empty()).then_some(detail),
            hint: None,
        }
    }

    /// A failure: why, and what to do (an empty `hint` is none).
    pub fn failed(name: &str, why: impl Into<String>, hint: impl Into<String>) -> Check {
        let hint = hint.into();
        Check {
            name: name.to_string(),
            ok: false,
            detail: Some(why.into()),
            hint: (!hint.is_empty()).then_some(hint),
        }
    }

    /// A check that could not run because the check `because` failed: a failure,
    /// `skipped: <because> failed`, whose remedy is that check's.
    pub fn skipped(name: &str, because: &str) -> Check {
        Check::failed(name, format!("skipped: {because} failed"), "")
    }

    /// The check's line of [`Report::text`], without the newline.
    pub fn line(&self) -> String {
        let inside = |parts: Vec<&String>| {
            let text: Vec<String> = parts.into_iter().map(|p| one_line(p)).collect();
            if text.is_empty() {
                String::new()
            } else {
                format!(" ({})", text.join("; "))
            }
        };
        let parts: Vec<&String> = self.detail.iter().chain(self.hint.iter()).collect();
        format!(
            "{}: {}{}",
            self.name,
            if self.ok { "OK" } else { "FAILED" },
            inside(parts)
        )
    }
}

/// Every check of one run of a `check` command, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The program (`slony-receiver`): the Nagios line starts with it, in capitals.
    pub program: String,
    /// Whether every check passed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line per check.
    Text,
    /// One JSON object.
    Json,
    /// One Nagios plugin line.
    Nagios,
}

impl Format {
    /// The format the flags `--json` and `--nagios` ask for (text without either).
    pub fn from_flags(json: bool, nagios: bool) -> Format {
        match (json, nagios) {
            (true, _) => Format::Json,
            (false, true) => Format::Nagios,
            (false, false) => Format::Text,
        }
    }
}

impl Report {
    /// A report of `program` holding `checks`.
    pub fn new(program: &str, checks: Vec<Check>) -> Report {
        Report {
            program: program.to_string(),
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// The checks that failed.
    pub fn failed(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    /// One line per check, each ending with a newline.
    pub fn text(&self) -> String {
        self.checks.iter().map(|c| c.line() + "\n").collect()
    }

    /// The report as pretty-printed JSON, with a final newline.
    pub fn json(&self) -> String {
        // A struct of strings and booleans always serialises.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into()) + "\n"
    }

    /// The Nagios plugin line, with a final newline.
    pub fn nagios(&self) -> String {
        let program = self.program.to_uppercase();
        let total = self.checks.len();
        let failed = self.failed();
        if failed.is_empty() {
            format!("{program} OK - {total} checks passed\n")
        } else {
            let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
            format!(
                "{program} CRITICAL - {} of {total} checks failed: {}\n",
                failed.len(),
                names.join(", ")
            )
        }
    }

    /// The Nagios state: [`NAGIOS_OK`] or [`NAGIOS_CRITICAL`].
    pub fn nagios_code(&self) -> u8 {
        if self.ok {
            NAGIOS_OK
        } else {
            NAGIOS_CRITICAL
        }
    }

    /// The report rendered in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Json => self.json(),
            Format::Nagios => self.nagios(),
        }
    }
}

/// `s` on one line: line breaks and runs of white space become one space, and `|`
/// (which starts Nagios performance data) becomes `/`.
fn one_line(s: &str) -> String {
    crate::mail::one_line(s).replace('|', "/")
}

/// The space of a file system, as `statvfs` says it for an unprivileged user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Size of the file system in bytes.
    pub total: u64,
    /// Inodes available to unprivileged users.
    pub inodes_available: u64,
    /// Inodes of the file system (0 when it does not count them).
    pub inodes_total: u64,
}

impl Space {
    /// Available space in MB (2^20 bytes), rounded down.
    pub fn available_mb(&self) -> u64 {
        self.available >> 20
    }

    /// Available space as a whole percentage of the file system, rounded down.
    pub fn available_percent(&self) -> u64 {
        percent(self.available, self.total)
    }

    /// `41234 MB free (16 %)`.
    pub fn describe(&self) -> String {
        format!(
            "{} MB free ({} %)",
            self.available_mb(),
            self.available_percent()
        )
    }

    /// Why this is too little: less than [`MIN_FREE_BYTES`], [`MIN_FREE_PERCENT`] of the
    /// space, or [`MIN_FREE_INODES_PERCENT`] of the inodes.
    pub fn problem(&self) -> Option<String> {
        if self.available < MIN_FREE_BYTES {
            return Some(format!(
                "only {} MB free, less than {} MB",
                self.available_mb(),
                MIN_FREE_BYTES >> 20
            ));
        }
        if self.available_percent() < MIN_FREE_PERCENT {
            return Some(format!(
                "only {} % free, less than {MIN_FREE_PERCENT} %",
                self.available_percent()
            ));
        }
        if self.inodes_total > 0
            && percent(self.inodes_available, self.inodes_total) < MIN_FREE_INODES_PERCENT
        {
            return Some(format!(
                "only {} inodes free, less than {MIN_FREE_INODES_PERCENT} % of {}",
                self.inodes_available, self.inodes_total
            ));
        }
        None
    }
}

/// `part` as a whole percentage of `whole`, rounded down (100 for an empty whole).
fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        100
    } else {
        (part as u128 * 100 / whole as u128) as u64
    }
}

/// `path` as a C string.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// The space of the file system holding `path` (`statvfs`).
///
/// # Errors
///
/// `statvfs` failed (the path does not exist, say).
// The fields' C types are 32 or 64 bits wide depending on the platform.
#[allow(clippy::unnecessary_cast)]
pub fn space(path: &Path) -> io::Result<Space> {
    let c = c_path(path)?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated string; `s` is a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    let frsize = if s.f_frsize > 0 {
        s.f_frsize as u64
    } else {
        s.f_bsize as u64
    };
    Ok(Space {
        available: (s.f_bavail as u64).saturating_mul(frsize),
        total: (s.f_blocks as u64).saturating_mul(frsize),
        inodes_available: s.f_favail as u64,
        inodes_total: s.f_files as u64,
    })
}

/// Whether this process (its effective user) may create files in the directory `dir`:
/// write and search permission, and a file system not mounted read-only.
///
/// # Errors
///
/// Why not (`EACCES`, `EROFS`, `ENOENT`...).
pub fn writable_dir(dir: &Path) -> io::Result<()> {
    let c = c_path(dir)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a process with this pid exists (it may belong to another user).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report::new(
            "slony-receiver",
            vec![
                Check::ok("config", "/etc/slony/receiver.toml"),
                Check::failed(
                    "ssh login",
                    "SSH login as site1@webdb:22 refused: auth failed",
                    "check remote.key_file",
                ),
                Check::skipped("remote site directory", "ssh login"),
                Check::ok("lock", ""),
                Check::failed(
                    "tracking schema",
                    "\"_lab\".sl_archive_tracking is missing\nsecond line",
                    "",
                ),
            ],
        )
    }

    #[test]
    fn text_has_one_line_per_check() {
        assert_eq!(
            report().text(),
            "config: OK (/etc/slony/receiver.toml)\n\
             ssh login: FAILED (SSH login as site1@webdb:22 refused: auth failed; check remote.key_file)\n\
             remote site directory: FAILED (skipped: ssh login failed)\n\
             lock: OK\n\
             tracking schema: FAILED (\"_lab\".sl_archive_tracking is missing second line)\n"
        );
    }

    #[test]
    fn json_holds_every_field() {
        let r = report();
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["program"], "slony-receiver");
        assert_eq!(v["ok"], false);
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 5);
        assert_eq!(checks[1]["name"], "ssh login");
        assert_eq!(checks[1]["ok"], false);
        assert_eq!(checks[1]["hint"], "check remote.key_file");
        assert_eq!(checks[3]["detail"], serde_json::Value::Null);
        assert_eq!(checks[3]["hint"], serde_json::Value::Null);
        assert_eq!(checks[0]["ok"], true);
    }

    #[test]
    fn nagios_line_and_state() {
        let r = report();
        assert_eq!(
            r.nagios(),
            "SLONY-RECEIVER CRITICAL - 3 of 5 checks failed: ssh login, remote site directory, tracking schema\n"
        );
        assert_eq!(r.nagios_code(), NAGIOS_CRITICAL);
        let good = Report::new(
            "slony-manager",
            vec![Check::ok("a", ""), Check::ok("b", "fine")],
        );
        assert!(good.ok);
        assert_eq!(good.nagios(), "SLONY-MANAGER OK - 2 checks passed\n");
        assert_eq!(good.nagios_code(), NAGIOS_OK);
        assert_eq!(good.render(Format::Nagios), good.nagios());
        assert_eq!(Format::from_flags(false, true), Format::Nagios);
        assert_eq!(Format::from_flags(true, false), Format::Json);
        assert_eq!(Format::from_flags(false, false), Format::Text);
    }

    #[test]
    fn pipes_never_reach_a_nagios_line() {
        let c = Check::failed("x", "a | b", "");
        assert_eq!(c.line(), "x: FAILED (a / b)");
    }

    #[test]
    fn space_thresholds() {
        let gib = 1u64 << 30;
        let s = |available, total| Space {
            available,
            total,
            inodes_available: 1000,
            inodes_total: 1000,
        };
        assert_eq!(s(10 * gib, 100 * gib).problem(), None);
        assert_eq!(s(10 * gib, 100 * gib).describe(), "10240 MB free (10 %)");
        assert!(s(gib - 1, 2 * gib)
            .problem()
            .unwrap()
            .contains("less than 1024 MB"));
        assert!(s(4 * gib, 100 * gib)
            .problem()
            .unwrap()
            .contains("4 % free, less than 5 %"));
        let no_inodes = Space {
            inodes_available: 5,
            ..s(10 * gib, 100 * gib)
        };
        assert!(no_inodes.problem().unwrap().contains("inodes"));
        // A file system that does not count inodes passes on inodes.
        let uncounted = Space {
            inodes_available: 0,
            inodes_total: 0,
            ..s(10 * gib, 100 * gib)
        };
        assert_eq!(uncounted.problem(), None);
    }

    #[test]
    fn probes_of_the_local_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total);
        writable_dir(dir.path()).unwrap();
        assert!(writable_dir(&dir.path().join("missing")).is_err());
        assert!(space(&dir.path().join("missing")).is_err());
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }
}
