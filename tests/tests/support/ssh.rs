/*!
A real OpenSSH server per test: [`SshServer`].

The fixture generates an ed25519 host key and an ed25519 client key (no
passphrase) with `ssh-keygen`, writes an `sshd_config` that accepts only that
client key, and runs `/usr/sbin/sshd -D -e` in the foreground on a free
127.0.0.1 port, so the guard owns the listener process. sshd logs to a file in
the fixture's directory ([`SshServer::log`]).

The login user is the OS user running the tests (root in CI). The server is
not chrooted: the "served" directory is simply where a test puts the remote
files, and the product is given absolute paths below it. That keeps SFTP and
exec channels (for example a streaming `tar`) working exactly as on a real
provider host.

Host-key checking: [`SshServer::known_hosts`] lists the real host key as
`[127.0.0.1]:P ssh-ed25519 ...`, and [`SshServer::wrong_known_hosts`] lists a
different ed25519 key for the same host and port, which must be reported as a
mismatch.
*/

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{current_user, free_port, is_root, tail, terminate_child, TestDir};

/// sshd must be started by absolute path (it re-executes itself).
const SSHD: &str = "/usr/sbin/sshd";
/// How long sshd may take to send its banner after being spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How many free ports `start()` tries when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// A running sshd on 127.0.0.1, killed (with its connections) on drop.
pub struct SshServer {
    /// The listening sshd, parent of one process per connection.
    child: Option<Child>,
    /// TCP port on 127.0.0.1.
    port: u16,
    /// Directory the test serves remote files from (absolute paths, no chroot).
    root: PathBuf,
    /// Login name accepted by the server (the current OS user).
    user: String,
    /// Private client key (OpenSSH format, ed25519, no passphrase).
    client_key: PathBuf,
    /// `known_hosts` listing the real host key for `[127.0.0.1]:port`.
    known_hosts: PathBuf,
    /// `known_hosts` listing another key for the same host and port.
    wrong_known_hosts: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA... comment`).
    host_public_key: String,
    /// sshd's stderr (`-e`), with `LogLevel VERBOSE`.
    log_path: PathBuf,
    /// Owns keys, config and log; declared last so it goes after the process.
    dir: TestDir,
}

impl SshServer {
    /// Generates keys, starts sshd on a free loopback port serving
    /// `root_dir_to_serve`, and waits until it sends its `SSH-2.0` banner.
    ///
    /// # Panics
    ///
    /// If sshd or ssh-keygen is missing (the message names the Debian package
    /// `openssh-server`), if key generation fails, or if sshd does not answer
    /// within 15 s.
    pub fn start(root_dir_to_serve: &Path) -> SshServer {
        if !Path::new(SSHD).is_file() {
            panic!("{SSHD} not found; install the Debian package `openssh-server` (or run scripts/test.sh as root)");
        }
        let dir = TestDir::new("ssh");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        let other_key = dir.join("other_host_key");
        for (path, comment) in [
            (&host_key, "slony-e2e host"),
            (&client_key, "slony-e2e client"),
            (&other_key, "slony-e2e impostor"),
        ] {
            keygen(path, comment);
        }
        let authorized_keys = dir.join("authorized_keys");
        std::fs::copy(pub_path(&client_key), &authorized_keys).expect("writing authorized_keys");
        // Readable by every login: sshd reads it as the user logging in, and the tests of
        // the sites' separation log in as accounts of their own (a public key is no secret).
        std::fs::set_permissions(&authorized_keys, std::fs::Permissions::from_mode(0o644))
            .expect("chmod authorized_keys");

        if is_root() {
            // The privilege separation directory; missing in containers where
            // the sshd service never ran.
            let privsep = Path::new("/run/sshd");
            if !privsep.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(privsep)
                    .unwrap_or_else(|e| {
                        panic!("creating sshd's privilege separation directory /run/sshd: {e}")
                    });
            }
        }

        let host_public_key = read_pub(&host_key);
        let other_public_key = read_pub(&other_key);
        let user = current_user().name;
        let config = dir.join("sshd_config");
        let log_path = dir.join("sshd.log");
        let known_hosts = dir.join("known_hosts");
        let wrong_known_hosts = dir.join("wrong_known_hosts");

        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            std::fs::write(&config, sshd_config(&dir, port)).expect("writing sshd_config");
            let mut child = spawn_sshd(&config, &log_path, port);
            match wait_for_banner(&mut child, port, &log_path) {
                Ok(()) => {
                    std::fs::write(
                        &known_hosts,
                        format!("[127.0.0.1]:{port} {host_public_key}\n"),
                    )
                    .expect("writing known_hosts");
                    std::fs::write(
                        &wrong_known_hosts,
                        format!("[127.0.0.1]:{port} {other_public_key}\n"),
                    )
                    .expect("writing wrong_known_hosts");
                    return SshServer {
                        child: Some(child),
                        port,
                        root: root_dir_to_serve.to_path_buf(),
                        user,
                        client_key,
                        known_hosts,
                        wrong_known_hosts,
                        host_public_key,
                        log_path,
                        dir,
                    };
                }
                Err(log) if log.contains("Address already in use") && attempt < PORT_ATTEMPTS => {
                    continue
                }
                Err(log) => panic!(
                    "sshd did not start on port {port}; log {}:\n{log}",
                    log_path.display()
                ),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login name the server accepts (the current OS user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The directory passed to [`SshServer::start`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the private client key (ed25519, OpenSSH format, no passphrase).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// Path of the client's public key (`client_key().pub`).
    pub fn client_key_pub(&self) -> PathBuf {
        pub_path(&self.client_key)
    }

    /// Path of a `known_hosts` file listing the real host key as
    /// `[127.0.0.1]:P ssh-ed25519 ...`.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// Path of a `known_hosts` file listing a *different* ed25519 key for the
    /// same `[127.0.0.1]:P`, for wrong-host-key tests.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.wrong_known_hosts.clone()
    }

    /// The host's public key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The fixture's directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log so far (`LogLevel VERBOSE`: connections, accepted keys,
    /// subsystem requests, disconnects).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Kills every per-connection sshd process, dropping all open sessions
    /// while the listener keeps accepting new ones (simulates a network cut).
    ///
    /// Returns how many connection processes were killed.
    pub fn kill_connections(&self) -> usize {
        let Some(child) = self.child.as_ref() else {
            return 0;
        };
        let listener = child.id();
        let mut killed = 0;
        for pid in children_of(listener) {
            // SAFETY: kill has no memory-safety preconditions. The pid was just
            // read as a child of our sshd; a recycled pid is possible only if
            // it exited in between, which is harmless for a test fixture.
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        killed
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sshd fixture kept in {} (port {}); last lines of {}:\n{}",
                self.dir.path().display(),
                self.port,
                self.log_path.display(),
                tail(&self.log_path, 40)
            );
        }
        // Connection processes outlive the listener, so end them first.
        self.kill_connections();
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child, libc::SIGTERM, Duration::from_secs(5));
        }
    }
}

/// The sshd_config for a fixture in `dir` listening on `port`.
fn sshd_config(dir: &TestDir, port: u16) -> String {
    let mut config = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized_keys}\n\
         StrictModes no\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\n\
         Subsystem sftp internal-sftp\n\
         LogLevel VERBOSE\n\
         UseDNS no\n\
         PrintMotd no\n\
         MaxSessions 50\n\
         MaxStartups 100:30:200\n",
        host_key = dir.join("host_key").display(),
        pid = dir.join("sshd.pid").display(),
        authorized_keys = dir.join("authorized_keys").display(),
    );
    if supports_per_source_penalties(dir) {
        // OpenSSH >= 9.8 would otherwise refuse 127.0.0.1 for a while after
        // probes and deliberately failed logins (wrong host key tests).
        config.push_str("PerSourcePenalties no\n");
    }
    config
}

/// Whether this sshd understands `PerSourcePenalties` (OpenSSH 9.8+), checked
/// once per test binary with `sshd -t`.
fn supports_per_source_penalties(dir: &TestDir) -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let probe = dir.join("sshd_config.probe");
        let text = format!(
            "HostKey {}\nPidFile {}\nPerSourcePenalties no\n",
            dir.join("host_key").display(),
            dir.join("probe.pid").display()
        );
        if std::fs::write(&probe, text).is_err() {
            return false;
        }
        let out = Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&probe)
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&probe);
        matches!(out, Ok(out) if out.status.success())
    })
}

/// Spawns `sshd -D -e -f config`, stderr appended to `log_path`.
fn spawn_sshd(config: &Path, log_path: &Path, port: u16) -> Child {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log_path.display()));
    use std::io::Write;
    let _ = writeln!(log, "---- slony-e2e: starting sshd on port {port} ----");
    Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating the log file handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {SSHD}: {e}"))
}

/// Waits until `127.0.0.1:port` sends an `SSH-2.0` banner.
///
/// # Errors
///
/// Returns the log tail if sshd exits or the deadline passes (the child is
/// reaped or killed in both cases).
fn wait_for_banner(child: &mut Child, port: u16, log_path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited with {status}\n{}", tail(log_path, 40)));
        }
        if banner(port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            terminate_child(child, libc::SIGTERM, Duration::from_secs(2));
            return Err(format!(
                "no SSH banner after {READY_TIMEOUT:?}\n{}",
                tail(log_path, 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects to `127.0.0.1:port` and checks that the first line is an SSH-2.0
/// banner.
fn banner(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if buf[..len].contains(&b'\n') {
                    break;
                }
            }
        }
    }
    buf[..len].starts_with(b"SSH-2.0")
}

/// Generates an ed25519 key pair without passphrase at `path` / `path.pub`.
fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running ssh-keygen: {e}; install the Debian package `openssh-server` (it pulls in openssh-client)")
        });
    if !out.status.success() {
        panic!(
            "ssh-keygen -f {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `<key>.pub` beside a private key.
fn pub_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// The public key line of the key pair at `key`, without the newline.
fn read_pub(key: &Path) -> String {
    let path = pub_path(key);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Pids of the direct children of `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces and parentheses,
        // so parse from the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    children
}

/// An ssh-agent holding one key, listening on a socket of its own: how the original
/// tools logged in (`SSH_AUTH_SOCK`). Killed, by its pid, on drop.
pub struct SshAgent {
    pid: String,
    socket: PathBuf,
}

impl SshAgent {
    /// Starts an agent on `<dir>/agent.sock` and adds `key` to it.
    ///
    /// # Panics
    ///
    /// If `ssh-agent` or `ssh-add` fails (Debian package `openssh-client`).
    pub fn start(dir: &Path, key: &Path) -> SshAgent {
        let socket = dir.join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .output()
            .expect("ssh-agent (Debian package openssh-client)");
        assert!(out.status.success(), "ssh-agent: {out:?}");
        let pid = String::from_utf8_lossy(&out.stdout)
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .expect("ssh-agent prints its pid")
            .to_string();
        let agent = SshAgent { pid, socket };
        let add = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()
            .expect("ssh-add");
        assert!(add.status.success(), "ssh-add: {add:?}");
        agent
    }

    /// The socket to put in `SSH_AUTH_SOCK`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}
