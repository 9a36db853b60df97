/*!
`slony-manager` from tests: [`ManagerToml`], the config the tests write for it, and
[`ManagerDaemon`], `slony-manager run` as a child process that appends its log to a
file, is killed on drop, and can be stopped cleanly or with SIGKILL.
*/

use super::bin_path;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `slony-manager` config: the directories, the provider database (on 127.0.0.1, as
/// `postgres`), the sites' registry, and whatever else a test sets.
///
/// [`ManagerToml::render`] puts every top-level key before the first `[section]`, as
/// TOML requires, whatever order they were given in, and `[database]` last.
#[derive(Debug, Clone)]
pub struct ManagerToml {
    cluster: String,
    trigger_dir: PathBuf,
    subscribers_dir: PathBuf,
    site_log_dir: PathBuf,
    archive_dir: Option<PathBuf>,
    port: u16,
    dbname: String,
    /// Top-level lines registering the sites.
    sites: String,
    /// Further top-level `key = value` lines, in order.
    keys: Vec<String>,
    /// Further `[database]` lines, in order.
    database_keys: Vec<String>,
    /// Further sections (header and body), in order.
    sections: Vec<String>,
}

impl ManagerToml {
    /// Cluster `cluster` with the given directories, serving database `dbname` of the
    /// PostgreSQL on `port`; no archive directory, no sites.
    pub fn new(
        cluster: &str,
        trigger_dir: &Path,
        subscribers_dir: &Path,
        site_log_dir: &Path,
        port: u16,
        dbname: &str,
    ) -> ManagerToml {
        ManagerToml {
            cluster: cluster.to_string(),
            trigger_dir: trigger_dir.to_path_buf(),
            subscribers_dir: subscribers_dir.to_path_buf(),
            site_log_dir: site_log_dir.to_path_buf(),
            archive_dir: None,
            port,
            dbname: dbname.to_string(),
            sites: String::new(),
            keys: Vec::new(),
            database_keys: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// [`ManagerToml::new`] with the usual layout under `root`: `root/triggers`,
    /// `root/subscribers` and `root/site_logs`.
    pub fn under(root: &Path, cluster: &str, port: u16, dbname: &str) -> ManagerToml {
        ManagerToml::new(
            cluster,
            &root.join("triggers"),
            &root.join("subscribers"),
            &root.join("site_logs"),
            port,
            dbname,
        )
    }

    /// `archive_dir`: slon's archives, which the manager cuts for the sites.
    pub fn archive_dir(mut self, dir: &Path) -> ManagerToml {
        self.archive_dir = Some(dir.to_path_buf());
        self
    }

    /// The sites' registry: top-level lines such as [`super::shared_sites_toml`] or
    /// [`super::sites_toml`] return.
    pub fn sites(mut self, registry: String) -> ManagerToml {
        assert_top_level(&registry);
        self.sites = registry;
        self
    }

    /// A further top-level key: `key = value`, `value` written as it is (TOML).
    pub fn key(mut self, key: &str, value: impl Display) -> ManagerToml {
        let line = format!("{key} = {value}");
        assert_top_level(&line);
        self.keys.push(line);
        self
    }

    /// A further `[database]` key: `key = value`, `value` written as it is (TOML).
    pub fn database_key(mut self, key: &str, value: impl Display) -> ManagerToml {
        self.database_keys.push(format!("{key} = {value}"));
        self
    }

    /// A further section: `[name]` followed by `body` (its `key = value` lines).
    pub fn section(mut self, name: &str, body: &str) -> ManagerToml {
        assert_ne!(name, "database", "use ManagerToml::database_key");
        let mut text = format!("[{name}]\n{body}");
        if !text.ends_with('\n') {
            text.push('\n');
        }
        self.sections.push(text);
        self
    }

    /// The config's text.
    pub fn render(&self) -> String {
        let mut s = format!("cluster = {}\n", quote(&self.cluster));
        for (key, dir) in [
            ("trigger_dir", Some(&self.trigger_dir)),
            ("subscribers_dir", Some(&self.subscribers_dir)),
            ("site_log_dir", Some(&self.site_log_dir)),
            ("archive_dir", self.archive_dir.as_ref()),
        ] {
            if let Some(dir) = dir {
                s.push_str(&format!("{key} = {}\n", quote(&dir.display().to_string())));
            }
        }
        for line in &self.keys {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&self.sites);
        if !s.ends_with('\n') {
            s.push('\n');
        }
        for section in &self.sections {
            s.push_str(section);
        }
        s.push_str(&format!(
            "[database]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"postgres\"\ndbname = {}\n",
            self.port,
            quote(&self.dbname)
        ));
        for line in &self.database_keys {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// Writes [`ManagerToml::render`] to `path`.
    ///
    /// # Panics
    ///
    /// If the file cannot be written.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.render())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Panics if `text` holds a section header: it goes before the first `[section]`.
fn assert_top_level(text: &str) {
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with('[')),
        "a top-level key of the manager config holds a section header: {text:?}"
    );
}

/// `s` as a TOML basic string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `slony-manager run` as a child process; killed (SIGKILL) on drop.
pub struct ManagerDaemon {
    child: Child,
}

impl ManagerDaemon {
    /// Starts `slony-manager run --config <config>` with `RUST_LOG=info` and `env` added
    /// (an `env` `RUST_LOG` wins), appending its log to `log`.
    pub fn start(config: &Path, log: &Path, env: &[(&str, &str)]) -> ManagerDaemon {
        ManagerDaemon::spawn(
            ManagerDaemon::run_command(config)
                .env("RUST_LOG", "info")
                .envs(env.iter().copied()),
            log,
        )
    }

    /// `slony-manager run --config <config>`, with the test's environment as it is.
    pub fn run_command(config: &Path) -> Command {
        let mut command = Command::new(bin_path("slony-manager"));
        command.args(["run", "--config"]).arg(config);
        command
    }

    /// Spawns `command` (a `slony-manager run`, maybe behind a wrapper such as
    /// `setpriv`) with no stdin and stdout, appending its stderr (the log) to `log`.
    pub fn spawn(command: &mut Command, log: &Path) -> ManagerDaemon {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawning slony-manager run");
        ManagerDaemon { child }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: our own un-reaped child: the pid cannot have been recycled.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for slony-manager") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "slony-manager ignored SIGTERM for 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash at an arbitrary point.
    pub fn kill9(mut self) {
        self.kill9_in_place();
    }

    /// [`ManagerDaemon::kill9`] through a borrow: for a guard kept in a field, which a
    /// new daemon then replaces.
    pub fn kill9_in_place(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status if it has exited ([`Child::try_wait`]).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ManagerDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
