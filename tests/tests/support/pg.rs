/*!
A private PostgreSQL cluster per test: [`PgServer`].

`PgServer::start()` runs `initdb` into a fresh [`TestDir`] and spawns `postgres`
directly (not through `pg_ctl`), so the guard owns the server's `Child` and can
always stop it. The server listens on 127.0.0.1 on a free port, keeps its Unix
socket inside the test directory, trusts every local connection (user
`postgres`, no password) and runs with `fsync=off`: fast, and disposable.

PostgreSQL refuses to run as root, so when the tests run as root (as in CI),
`initdb` and `postgres` run as the `postgres` OS user (created by the Debian
package `postgresql`) and the data directory is chowned to it.

Binaries are taken from `/usr/lib/postgresql/15/bin/` if present, else from
`pg_config --bindir`, else from `PATH`.
*/

use std::fs::{File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, is_root, port_accepts, tail, terminate_child, TestDir};

/// How long a starting server may take to accept real connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown (SIGINT) may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How many free ports `start()` tries when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;
/// Where Debian's PostgreSQL 15 server binaries live.
const DEBIAN_PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running private PostgreSQL server; stopping and cleaning up on drop.
///
/// Dropping the guard performs a fast shutdown (SIGINT, then SIGKILL after a
/// grace period). If the test is panicking, the data directory and the server
/// log are kept, and the log's tail is printed.
pub struct PgServer {
    /// The postmaster, while it runs; `None` after [`PgServer::stop`].
    child: Option<Child>,
    /// TCP port on 127.0.0.1; the same across [`PgServer::start_again`].
    port: u16,
    /// Directory holding `initdb`, `postgres`, `psql`, ...
    bin_dir: PathBuf,
    /// `(uid, gid)` of the `postgres` OS user when we run as root.
    run_as: Option<(u32, u32)>,
    /// The cluster's data directory (`PGDATA`).
    data_dir: PathBuf,
    /// Server log (stdout and stderr of `postgres`), appended across restarts.
    log_path: PathBuf,
    /// Owns everything above on disk; declared last so it is removed after the
    /// server has stopped.
    dir: TestDir,
}

/// Why a spawned server did not become ready.
enum StartError {
    /// The port was taken by someone else between choosing and binding it.
    PortInUse,
    /// Anything else, with a description that includes the log tail.
    Other(String),
}

impl PgServer {
    /// Creates a new cluster with `initdb` and starts it on a free loopback port,
    /// waiting until it accepts real connections.
    ///
    /// # Panics
    ///
    /// If the PostgreSQL binaries are missing (the message names the Debian
    /// package `postgresql`), if `initdb` fails, or if the server is not ready
    /// within 30 s.
    pub fn start() -> PgServer {
        let dir = TestDir::new("pg");
        let bin_dir = find_bin_dir();
        let run_as = if is_root() {
            Some(postgres_user())
        } else {
            None
        };

        let data_dir = dir.join("data");
        let socket_dir = dir.join("socket");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data_dir)
            .expect("creating the data directory");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&socket_dir)
            .expect("creating the socket directory");
        if let Some((uid, gid)) = run_as {
            for path in [&data_dir, &socket_dir] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| {
                    panic!("chown {} to the postgres user: {e}", path.display())
                });
            }
        }

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .args([
                "-N",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "-D",
            ])
            .arg(&data_dir)
            .current_dir(dir.path())
            .stdin(Stdio::null());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb
            .output()
            .unwrap_or_else(|e| panic!("running {}/initdb: {e}", bin_dir.display()));
        if !out.status.success() {
            panic!(
                "initdb failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let log_path = dir.join("postgres.log");
        let mut server = PgServer {
            child: None,
            port: 0,
            bin_dir,
            run_as,
            data_dir,
            log_path,
            dir,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(StartError::PortInUse) if attempt < PORT_ATTEMPTS => continue,
                Err(StartError::PortInUse) => panic!("postgres: every port tried was in use"),
                Err(StartError::Other(msg)) => panic!("{msg}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for database `db` as user `postgres`:
    /// `host=127.0.0.1 port=P user=postgres dbname=db`.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// The same connection parameters as [`PgServer::conninfo`], as a
    /// tokio-postgres config.
    pub fn conn_config(&self, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(db);
        config
    }

    /// Connects to database `db` and spawns the connection task on the current
    /// tokio runtime.
    ///
    /// # Panics
    ///
    /// If the connection fails, or if called outside a tokio runtime.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.conninfo(db)));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection closed with an error: {e}");
            }
        });
        client
    }

    /// Connects to database `db` as `user` (with `password`, if given), like
    /// [`PgServer::connect`].
    ///
    /// # Panics
    ///
    /// If the connection fails, or if called outside a tokio runtime.
    pub async fn connect_as(
        &self,
        db: &str,
        user: &str,
        password: Option<&str>,
    ) -> tokio_postgres::Client {
        let mut config = self.conn_config(db);
        config.user(user);
        if let Some(pw) = password {
            config.password(pw);
        }
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {db} as {user}: {e}"));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection closed with an error: {e}");
            }
        });
        client
    }

    /// Puts `line` first in `pg_hba.conf` (for example a loopback line that asks one role
    /// for its password) and reloads the configuration.
    ///
    /// # Panics
    ///
    /// If the file cannot be rewritten or the reload fails.
    pub async fn hba_first(&self, line: &str) {
        let path = self.data_dir.join("pg_hba.conf");
        let old = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        std::fs::write(&path, format!("{line}\n{old}"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.connect("postgres")
            .await
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reloading the server configuration");
        // The reload is signalled, not waited for: give the postmaster a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Creates database `name` (quoted as an identifier).
    ///
    /// # Panics
    ///
    /// If connecting to the `postgres` database or `CREATE DATABASE` fails.
    pub async fn create_db(&self, name: &str) {
        let client = self.connect("postgres").await;
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {quoted}: {e}"));
    }

    /// Stops the server with a fast shutdown (SIGINT: abort open transactions,
    /// then exit cleanly), killing it if it takes longer than 20 s. Does
    /// nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM would be a "smart" shutdown that waits for every client
            // to disconnect; SIGINT is the "fast" one.
            if !terminate_child(&mut child, libc::SIGINT, STOP_GRACE) {
                eprintln!(
                    "postgres on port {} ignored SIGINT for {STOP_GRACE:?}; killed it",
                    self.port
                );
            }
        }
    }

    /// Starts the stopped server again on the same port and data directory, for
    /// "database down, then back" tests. Waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If the server is still running, if the port has been taken meanwhile,
    /// or if it is not ready within 30 s.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again() called while postgres is running"
        );
        match self.spawn_and_wait() {
            Ok(()) => {}
            Err(StartError::PortInUse) => panic!(
                "postgres: port {} was taken while the server was down",
                self.port
            ),
            Err(StartError::Other(msg)) => panic!("{msg}"),
        }
    }

    /// Whether the server process is running (it may still be starting up).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Path of a PostgreSQL client or server binary, such as `psql` or
    /// `pg_dump`, from the same installation as the server.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The fixture's directory (data directory, socket directory, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the server log.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Spawns the postmaster on `self.port` and waits until it serves queries.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err: File = log.try_clone().expect("duplicating the log file handle");
        use std::io::Write;
        let _ = writeln!(
            log,
            "---- slony-e2e: starting postgres on port {} ----",
            self.port
        );

        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-c", &format!("port={}", self.port)])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.join("socket").display()
            ))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}/postgres: {e}", self.bin_dir.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child was just set");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let text = std::fs::read(&self.log_path).unwrap_or_default();
                let since_spawn =
                    String::from_utf8_lossy(&text[(log_start as usize).min(text.len())..])
                        .into_owned();
                if since_spawn.contains("already in use") {
                    return Err(StartError::PortInUse);
                }
                return Err(StartError::Other(format!(
                    "postgres exited during start-up ({status}); log {}:\n{since_spawn}",
                    self.log_path.display()
                )));
            }
            if port_accepts(self.port, Duration::from_millis(200))
                && ping(&self.conninfo("postgres"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(StartError::Other(format!(
                    "postgres on port {} not ready after {READY_TIMEOUT:?}; log tail:\n{}",
                    self.port,
                    tail(&self.log_path, 40)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "PostgreSQL fixture kept in {} (port {}); last lines of {}:\n{}",
                self.dir.path().display(),
                self.port,
                self.log_path.display(),
                tail(&self.log_path, 40)
            );
        }
        self.stop();
    }
}

/// Connects with tokio-postgres and runs `SELECT 1`, on a private
/// current-thread runtime in a scoped thread, so this works whether or not the
/// caller is itself inside a tokio runtime.
fn ping(conninfo: &str) -> bool {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(_) => return false,
                };
                runtime.block_on(async {
                    let attempt = async {
                        let (client, connection) =
                            tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
                        let driver = tokio::spawn(connection);
                        let result = client.simple_query("SELECT 1").await;
                        drop(client);
                        let _ = driver.await;
                        result
                    };
                    matches!(
                        tokio::time::timeout(Duration::from_secs(2), attempt).await,
                        Ok(Ok(_))
                    )
                })
            })
            .join()
            .unwrap_or(false)
    })
}

/// Finds the directory holding `initdb` and `postgres`.
///
/// # Panics
///
/// If none is found; the message names the Debian package to install.
fn find_bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();

    let debian = Path::new(DEBIAN_PG15_BIN);
    if has_server(debian) {
        return debian.to_path_buf();
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server(&dir) {
                return dir;
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Resolve symlinks such as /usr/local/bin/initdb -> .../15/bin/initdb,
                // so `postgres` is taken from the same installation.
                let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(real_dir) = real.parent() {
                    if has_server(real_dir) {
                        return real_dir.to_path_buf();
                    }
                }
                if has_server(&dir) {
                    return dir;
                }
            }
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, postgres) not found in {DEBIAN_PG15_BIN}, \
         `pg_config --bindir` or PATH; install the Debian package `postgresql` \
         (apt-get install postgresql), or run scripts/test.sh as root"
    );
}

/// `(uid, gid)` of the `postgres` OS user.
///
/// # Panics
///
/// If there is no such user; the Debian package `postgresql` creates it.
fn postgres_user() -> (u32, u32) {
    match super::user_by_name("postgres") {
        Some(user) => (user.uid, user.gid),
        None => panic!(
            "running as root, but there is no `postgres` OS user to run PostgreSQL as; \
             install the Debian package `postgresql` (it creates the user)"
        ),
    }
}
