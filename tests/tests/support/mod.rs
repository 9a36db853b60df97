/*!
Real-process test fixtures for the end-to-end tests.

Every fixture is an RAII guard that owns the child process it started and the
directory it works in: dropping the guard stops the process (also while a test
panics), and a failing test keeps the directory so its files and logs can be
inspected afterwards.

Layout:

- [`pg`]: [`pg::PgServer`], a private PostgreSQL cluster (initdb + postgres on a
  loopback port), run as the `postgres` OS user when the tests run as root.
- [`ssh`]: [`ssh::SshServer`], a real `sshd` on a loopback port with generated
  host and client keys, plus matching and deliberately wrong `known_hosts`.
- [`smtp`]: [`smtp::SmtpSink`], a real SMTP server (Debian's `python3-aiosmtpd`)
  that records every message it receives, for alert assertions.
- [`manager`]: [`manager::ManagerToml`], a manager config, and
  [`manager::ManagerDaemon`], `slony-manager run` as a child process.
- [`site`]: [`site::Site`], a subscriber site with its provider, replica and mail
  sink, and the receiver's config pointing at them.
- this file: shared helpers ([`free_port`], [`bin_path`], [`wait_until`],
  [`wait_until_async`], [`TestDir`]).

The tests run the product binaries as separate processes. Cargo only provides
`CARGO_BIN_EXE_<name>` to tests of the package that defines the binary, so this
crate finds them in the target directory instead: **run `cargo build --workspace`
before `cargo test -p slony-e2e`** (`scripts/test.sh` does both).

All waits in here are bounded by a deadline, and all servers listen on
127.0.0.1 only.
*/

#![allow(dead_code)]

pub mod legacy;
pub mod manager;
pub mod pg;
pub mod receiver;
pub mod site;
pub mod slony;
pub mod smtp;
pub mod ssh;

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How often [`wait_until`] and [`wait_until_async`] re-check their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and releasing the socket at once,
/// so another process may take it before the caller binds it; the fixtures
/// retry on a new port when their server reports "address in use".
///
/// # Panics
///
/// If binding a loopback socket fails.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// Returns the path of a binary built from this workspace (for example
/// `bin_path("slony-receiver")`).
///
/// Cargo does not give tests of one package the binaries of another, so the
/// binary is looked up in the target directory this test binary was built
/// into (`<target>/<profile>/`, found from the test executable's own path, which
/// honours `CARGO_TARGET_DIR` and the profile). If that fails, it falls back to
/// `$CARGO_TARGET_DIR/debug` or `<workspace>/target/debug`.
///
/// # Panics
///
/// If the binary does not exist; the message says to run
/// `cargo build --workspace` first (as `scripts/test.sh` does).
pub fn bin_path(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
    // The test binary lives in `<target>/<profile>/deps/`.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(name));
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    candidates.push(target_dir.join("debug").join(name));

    for candidate in &candidates {
        if candidate.is_file() {
            return candidate.clone();
        }
    }
    panic!(
        "binary `{name}` not found (looked at {candidates:?}); the end-to-end tests run the \
         product binaries, so build them first with `cargo build --workspace` \
         (scripts/test.sh does this before `cargo test`)"
    );
}

/// Polls `cond` every 50 ms until it returns `true`.
///
/// `what` names the awaited condition for the panic message. This blocks the
/// calling thread; inside an async test that also needs its own tasks to make
/// progress (a tokio-postgres connection, for example) use
/// [`wait_until_async`].
///
/// # Panics
///
/// If `cond` is still `false` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Async twin of [`wait_until`]: polls `cond` every 50 ms with `tokio::time::sleep`,
/// so other tasks of the test's runtime keep running in between.
///
/// # Panics
///
/// If the future returned by `cond` still yields `false` after `timeout`.
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A fresh directory for one test (or one fixture), removed when dropped unless
/// the test failed.
///
/// The directory is created under the system temp directory with mode 0755, so
/// that servers running as another OS user (PostgreSQL runs as `postgres` when
/// the tests run as root) can traverse it. When the guard is dropped while the
/// thread is panicking, or when `SLONY_E2E_KEEP` is set in the environment, the
/// directory is kept and its path printed.
pub struct TestDir {
    /// The directory itself; its own drop removes it unless cleanup was disabled.
    dir: tempfile::TempDir,
}

impl TestDir {
    /// Creates `<tmp>/slony-e2e-<name>-<random>`.
    ///
    /// # Panics
    ///
    /// If the directory cannot be created or its mode cannot be set.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("slony-e2e-{name}-"))
            .tempdir()
            .expect("creating a test directory under the system temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("making the test directory traversable (0755)");
        TestDir { dir }
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates the sub-directory `rel` (and its parents, each with mode 0755)
    /// and returns its path.
    ///
    /// # Panics
    ///
    /// If the directory cannot be created.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.join(rel);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        path
    }

    /// Keeps the directory after the guard is dropped, whatever the outcome.
    pub fn keep(&mut self) {
        self.dir.disable_cleanup(true);
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SLONY_E2E_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept test directory {}", self.dir.path().display());
        }
    }
}

/// Returns the last `lines` lines of the file at `path` (or a note saying it
/// could not be read), for failure reports.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to `child` (if it is still running) and waits up to `grace`
/// for it to exit; then kills it with SIGKILL and reaps it.
///
/// Returns `true` if the child exited within `grace` after `signal`.
pub(crate) fn terminate_child(
    child: &mut std::process::Child,
    signal: libc::c_int,
    grace: Duration,
) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; the pid is our own
    // un-reaped child, so it cannot have been recycled for another process.
    unsafe {
        libc::kill(pid, signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Tries to open a TCP connection to `127.0.0.1:port` within `timeout`.
pub(crate) fn port_accepts(port: u16, timeout: Duration) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// An entry of the OS user database.
#[derive(Debug, Clone)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// Looks up a user by login name (thread-safe `getpwnam_r`).
pub fn user_by_name(name: &str) -> Option<OsUser> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: `cname` is NUL-terminated; getpwnam_r writes only into the
    // buffers we pass and their sizes are given.
    lookup_passwd(|pwd, buf, len, result| unsafe {
        libc::getpwnam_r(cname.as_ptr(), pwd, buf, len, result)
    })
}

/// The user this process runs as (effective uid, thread-safe `getpwuid_r`).
///
/// # Panics
///
/// If the effective uid has no entry in the user database.
pub fn current_user() -> OsUser {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    // SAFETY: getpwuid_r writes only into the buffers we pass.
    lookup_passwd(|pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) })
        .unwrap_or_else(|| panic!("uid {uid} has no entry in the user database"))
}

/// Runs a `getpw*_r` call with owned buffers and copies the result out.
fn lookup_passwd(
    call: impl Fn(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> Option<OsUser> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for an out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success the string fields point into `buf`, NUL-terminated.
    let (name, home) = unsafe {
        (
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
            std::ffi::CStr::from_ptr(pwd.pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    Some(OsUser {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: PathBuf::from(home),
    })
}
pub mod workload;

/// SQL that makes `tables` (`schema.table`, existing) the tables of one set of the Slony
/// cluster `cluster`, as `"_<cluster>".sl_table` lists them on a Slony node: what the
/// manager serves. It also creates the set's (empty) `"_<cluster>".sl_sequence`, which
/// [`slony_set_sequences_sql`] fills.
pub fn slony_set_sql(cluster: &str, tables: &[&str]) -> String {
    format!(
        "CREATE TABLE \"_{cluster}\".sl_table (tab_id serial, tab_reloid oid, tab_relname name, \
         tab_nspname name, tab_set int);\n\
         INSERT INTO \"_{cluster}\".sl_table (tab_reloid, tab_relname, tab_nspname, tab_set) \
         SELECT c.oid, c.relname, n.nspname, 1 FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname || '.' || c.relname IN ({});\n\
         CREATE TABLE \"_{cluster}\".sl_sequence (seq_id serial, seq_reloid oid UNIQUE NOT NULL, \
         seq_relname name NOT NULL, seq_nspname name NOT NULL, seq_set int, seq_comment text);\n",
        name_list(tables)
    )
}

/// SQL that adds `sequences` (`schema.sequence`, existing) to the set of
/// [`slony_set_sql`], as `"_<cluster>".sl_sequence` lists them on a Slony node (by
/// `seq_reloid`, the sequence's oid): the sequences whose values the manager replicates.
pub fn slony_set_sequences_sql(cluster: &str, sequences: &[&str]) -> String {
    format!(
        "INSERT INTO \"_{cluster}\".sl_sequence (seq_reloid, seq_relname, seq_nspname, seq_set) \
         SELECT c.oid, c.relname, n.nspname, 1 FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND n.nspname || '.' || c.relname IN ({});\n",
        name_list(sequences)
    )
}

/// `'a.b', 'c.d'` (`NULL` for none, so that `IN (...)` stays valid).
fn name_list(names: &[&str]) -> String {
    if names.is_empty() {
        return "NULL".into();
    }
    names
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Top-level lines of a manager config registering `nodes`, all under the account
/// running the tests (so with `allow_shared_account`, which tests not about the sites'
/// separation need: they play every party as one OS user). Put them before the first
/// `[section]`.
pub fn shared_sites_toml(nodes: &[&str]) -> String {
    let account = current_user().name;
    let accounts: Vec<(&str, &str)> = nodes.iter().map(|n| (*n, account.as_str())).collect();
    String::from("allow_shared_account = true\n") + &sites_toml(&accounts)
}

/// Top-level lines of a manager config registering each `(node, account)` of `sites`:
/// the node's site acts as that OS account. Put them before the first `[section]`.
pub fn sites_toml(sites: &[(&str, &str)]) -> String {
    sites
        .iter()
        .map(|(node, account)| format!("sites.\"{node}\".account = \"{account}\"\n"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// OS accounts (root only): a provider and sites under accounts of their own.

/// Runs a command as root and checks it succeeded.
pub fn run_as_root(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The account `name`, created if missing (own group, no home), with a usable password
/// field: sshd without PAM refuses a locked account.
pub fn account(name: &str) -> OsUser {
    if user_by_name(name).is_none() {
        let _ = Command::new("useradd")
            .args([
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
            ])
            .args(["--shell", "/bin/sh", name])
            .output();
    }
    run_as_root("usermod", &["-p", "*", name]);
    user_by_name(name).unwrap_or_else(|| panic!("useradd {name} failed"))
}

/// A command run as `user`, with its groups (`setpriv --init-groups`).
pub fn as_user(user: &str, program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .arg(program);
    c
}
