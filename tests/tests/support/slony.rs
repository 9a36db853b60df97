/*!
Real Slony-I 2.2 for the end-to-end tests: [`Slony`] finds the installed tools,
runs `slonik` scripts and `slony1_dump.sh`, and starts `slon` daemons as
[`Slon`] guards.

The tools come from the Debian packages `slony1-2-bin` (`slon`, `slonik`, and
the example script `slony1_dump.sh`) and `postgresql-15-slony1-2` (the C
functions `slony1_funcs.2.2.11.so` in the server's pkglibdir, which the Slony
SQL loads as `$libdir/slony1_funcs.2.2.11`). `scripts/test.sh` installs both.

Process hygiene: every process started here runs in its own process group
whose id is the pid we spawned, and is stopped by that id only: `slon` forks a
worker under its watchdog process, so a [`Slon`] guard signals the watchdog and
then makes sure nothing of its group is left, also when the test panics.
Short-lived tools (`slonik`, `psql`, `sh slony1_dump.sh`) run under a deadline
and are killed the same way when they overrun it.
*/

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::pg::PgServer;
use super::tail;

/// Slony's own script that prepares an offline (log-shipping) replica.
pub const DUMP_SCRIPT: &str = "/usr/share/doc/slony1-2-bin/examples/slony1_dump.sh";
/// The Slony-I version these tests are written against.
pub const VERSION: &str = "2.2.11";
/// The C library the Slony SQL of [`VERSION`] loads from the server's pkglibdir.
const FUNCS_LIB: &str = "slony1_funcs.2.2.11.so";
/// How long a stopping process may take after SIGTERM before its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A child process leading its own process group; the whole group is stopped
/// (by the child's pid) when the guard is dropped.
pub struct GroupChild {
    /// The group leader while it has not been reaped.
    child: Option<Child>,
    /// The process group id (the leader's pid).
    pgid: libc::pid_t,
    /// What it is, for messages.
    what: String,
}

impl GroupChild {
    /// Spawns `cmd` as the leader of a new process group.
    ///
    /// # Panics
    ///
    /// If the program cannot be started.
    pub fn spawn(cmd: &mut Command, what: &str) -> GroupChild {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} ({cmd:?}): {e}"));
        GroupChild {
            pgid: child.id() as libc::pid_t,
            child: Some(child),
            what: what.to_string(),
        }
    }

    /// The leader's pid (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }

    /// The leader's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the leader to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the group: SIGTERM to the leader, up to `grace` for it to exit,
    /// then SIGKILL to whatever is left of the group. Returns whether the
    /// leader exited within `grace`. Safe to call more than once.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let mut clean = true;
        if !matches!(child.try_wait(), Ok(Some(_))) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // own un-reaped child, so it cannot have been recycled.
            unsafe {
                libc::kill(self.pgid, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            clean = loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break false,
                }
            };
        }
        // Members of the group (slon's worker) may still be shutting down.
        let deadline = Instant::now() + grace;
        while group_alive(self.pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if group_alive(self.pgid) {
            clean = false;
            eprintln!(
                "{} (process group {}) did not stop within {grace:?}; killing it",
                self.what, self.pgid
            );
            // SAFETY: as above; the group id is the pid of the child we spawned.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_alive(self.pgid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        clean
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.stop(if std::thread::panicking() {
            Duration::from_secs(2)
        } else {
            STOP_GRACE
        });
    }
}

/// Whether any process of group `pgid` is still running.
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// What a bounded run of a tool produced.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (also kept in `<log>.out`).
    pub stdout: String,
    /// Everything it wrote to stderr (also kept in `<log>.err`).
    pub stderr: String,
}

/// Runs `cmd` to completion, stdout and stderr to `<log>.out` and `<log>.err`
/// (suffixes appended to the whole name),
/// killing its process group if it takes longer than `timeout`.
///
/// # Panics
///
/// If it cannot be started, or does not finish within `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration, log: &Path, what: &str) -> Finished {
    let with_suffix = |suffix: &str| {
        let mut name = log.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let out_path = with_suffix(".out");
    let err_path = with_suffix(".err");
    let out =
        File::create(&out_path).unwrap_or_else(|e| panic!("creating {}: {e}", out_path.display()));
    let err =
        File::create(&err_path).unwrap_or_else(|e| panic!("creating {}: {e}", err_path.display()));
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut proc = GroupChild::spawn(cmd, what);
    let Some(status) = proc.wait_timeout(timeout) else {
        proc.stop(Duration::from_secs(2));
        panic!(
            "{what} did not finish within {timeout:?}; stderr:\n{}",
            tail(&err_path, 30)
        );
    };
    proc.stop(Duration::from_secs(2));
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    Finished {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// The installed Slony-I tools, checked against the PostgreSQL they will serve.
#[derive(Debug, Clone)]
pub struct Slony {
    /// The `slon` daemon.
    slon: PathBuf,
    /// The `slonik` admin tool.
    slonik: PathBuf,
    /// The PostgreSQL client and server binaries' directory (for `psql`).
    pg_bin: PathBuf,
    /// The server's port on 127.0.0.1.
    pg_port: u16,
}

impl Slony {
    /// Finds `slon`, `slonik`, `slony1_dump.sh` and the C functions for `pg`'s
    /// installation, and checks that `slon` is version [`VERSION`].
    ///
    /// # Panics
    ///
    /// If anything is missing; the message names the Debian packages.
    pub fn locate(pg: &PgServer) -> Slony {
        let install = "install the Debian packages `slony1-2-bin` and `postgresql-15-slony1-2` \
                       (scripts/test.sh does, as root)";
        let slon = find_in_path("slon").unwrap_or_else(|| panic!("`slon` not in PATH; {install}"));
        let slonik =
            find_in_path("slonik").unwrap_or_else(|| panic!("`slonik` not in PATH; {install}"));
        assert!(
            Path::new(DUMP_SCRIPT).is_file(),
            "{DUMP_SCRIPT} is missing; {install}"
        );
        let libdir = pkglibdir(pg);
        assert!(
            libdir.join(FUNCS_LIB).is_file(),
            "{} is missing: the server at {} cannot load Slony's C functions; {install}",
            libdir.join(FUNCS_LIB).display(),
            pg.bin("postgres").display()
        );
        let version = Command::new(&slon)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {} -v: {e}", slon.display()));
        let text = String::from_utf8_lossy(&version.stdout).into_owned()
            + &String::from_utf8_lossy(&version.stderr);
        assert!(
            text.contains(VERSION),
            "these tests are written for Slony-I {VERSION}, but `slon -v` says: {text}"
        );
        Slony {
            slon,
            slonik,
            pg_bin: pg
                .bin("psql")
                .parent()
                .expect("psql has a directory")
                .to_path_buf(),
            pg_port: pg.port(),
        }
    }

    /// The libpq conninfo of database `db` on the test server, as slon and
    /// slonik use it.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "dbname={db} host=127.0.0.1 port={} user=postgres",
            self.pg_port
        )
    }

    /// Runs the slonik `script` (saved as `<dir>/<name>.slonik`, output in
    /// `<dir>/<name>.slonik.out` and `.err`) and returns its output.
    ///
    /// # Panics
    ///
    /// If slonik fails or takes longer than `timeout`.
    pub fn slonik(&self, dir: &Path, name: &str, script: &str, timeout: Duration) -> String {
        let file = dir.join(format!("{name}.slonik"));
        std::fs::write(&file, script).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        let done = run_bounded(
            Command::new(&self.slonik).arg(&file).current_dir(dir),
            timeout,
            &file,
            &format!("slonik {name}"),
        );
        assert!(
            done.status.success(),
            "slonik {name} failed ({}):\n{}\n{}\nscript:\n{script}",
            done.status,
            done.stdout,
            done.stderr
        );
        done.stdout + &done.stderr
    }

    /// Starts `slon <cluster> <conninfo of db>` with `args` before them; its
    /// output goes to `<dir>/slon-<label>.log`.
    pub fn start_slon(
        &self,
        dir: &Path,
        label: &str,
        cluster: &str,
        db: &str,
        args: &[&str],
    ) -> Slon {
        let log = dir.join(format!("slon-{label}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut cmd = Command::new(&self.slon);
        cmd.args(args)
            .arg(cluster)
            .arg(self.conninfo(db))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("duplicating a file handle"))
            .stderr(file);
        let proc = GroupChild::spawn(&mut cmd, &format!("slon {label}"));
        Slon {
            proc,
            log,
            label: label.to_string(),
        }
    }

    /// Runs Slony's `slony1_dump.sh <db> <cluster>` against the test server and
    /// writes its output (the SQL that prepares an offline replica) to `out`.
    ///
    /// # Panics
    ///
    /// If the script fails, writes anything to stderr, or overruns `timeout`.
    pub fn dump_offline(&self, db: &str, cluster: &str, out: &Path, timeout: Duration) {
        let done = run_bounded(
            Command::new("sh")
                .arg(DUMP_SCRIPT)
                .args([db, cluster])
                .env("PGHOST", "127.0.0.1")
                .env("PGPORT", self.pg_port.to_string())
                .env("PGUSER", "postgres")
                .env("PATH", self.path_with_pg_bin()),
            timeout,
            &out.with_extension("dump"),
            "slony1_dump.sh",
        );
        assert!(
            done.status.success() && done.stderr.trim().is_empty(),
            "slony1_dump.sh {db} {cluster} failed ({}):\n{}",
            done.status,
            done.stderr
        );
        std::fs::write(out, &done.stdout)
            .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    }

    /// Runs `psql -X -q -v ON_ERROR_STOP=1 -f file` on database `db`.
    ///
    /// # Panics
    ///
    /// If psql fails or overruns `timeout`.
    pub fn psql_file(&self, db: &str, file: &Path, timeout: Duration) {
        let done = run_bounded(
            Command::new(self.pg_bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.pg_port.to_string(), "-d", db, "-f"])
                .arg(file),
            timeout,
            &file.with_extension("psql"),
            "psql",
        );
        assert!(
            done.status.success(),
            "psql -d {db} -f {} failed ({}):\n{}",
            file.display(),
            done.status,
            done.stderr
        );
    }

    /// `PATH` with the PostgreSQL binaries of the test server first, so that
    /// scripts calling `psql` use the same installation.
    fn path_with_pg_bin(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.pg_bin.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).expect("PATH entries contain no ':'")
    }
}

/// A running `slon`, stopped (with its worker) when dropped.
pub struct Slon {
    /// The slon watchdog process and its group.
    proc: GroupChild,
    /// Its log file.
    log: PathBuf,
    /// Which node, for messages.
    label: String,
}

impl Slon {
    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Whether the slon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.try_wait().is_none()
    }

    /// Stops slon gracefully (SIGTERM to its watchdog, which ends the worker),
    /// killing what is left after 10 s. Returns whether it stopped on time.
    pub fn stop(&mut self) -> bool {
        self.proc.stop(STOP_GRACE)
    }
}

impl Drop for Slon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "slon {} (pid {}) log {}, last lines:\n{}",
                self.label,
                self.proc.pid(),
                self.log.display(),
                self.log_tail(30)
            );
        }
        // GroupChild's own drop stops the process group.
    }
}

/// Looks `name` up in `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The server's pkglibdir (`pg_config --pkglibdir` of the same installation),
/// falling back to `<bindir>/../lib`.
fn pkglibdir(pg: &PgServer) -> PathBuf {
    if let Ok(out) = Command::new(pg.bin("pg_config"))
        .arg("--pkglibdir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        if out.status.success() {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    pg.bin("postgres")
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("lib"))
        .unwrap_or_default()
}
