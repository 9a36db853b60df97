/*!
Running `slony-receiver` from tests: the TOML config pointing at the test's own servers,
and one way to run a subcommand and keep what it printed.
*/

use super::bin_path;
use super::ssh::SshServer;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Where a test's receiver finds everything.
pub struct Endpoints<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// Site name.
    pub node: &'a str,
    /// The provider's sshd (login user and key come from it).
    pub ssh: &'a SshServer,
    /// The port to reach it on (`ssh.port()`, or another to make it unreachable).
    pub ssh_port: u16,
    /// known_hosts to check the provider against (usually `ssh.known_hosts()`).
    pub known_hosts: &'a Path,
    /// The provider's directory of site directories.
    pub remote_log_dir: &'a Path,
    /// The local log directory.
    pub local_dir: &'a Path,
    /// The replica PostgreSQL's port (user `postgres`).
    pub pg_port: u16,
    /// The replica database.
    pub dbname: &'a str,
    /// The Slony node whose archives the site expects, if pinned.
    pub slony_node_id: Option<u32>,
}

/// The receiver's TOML config for `e`, with `extra` appended (more keys or sections).
pub fn receiver_toml(e: &Endpoints<'_>, extra: &str) -> String {
    receiver_toml_with_database(e, &database_toml(e.pg_port, "postgres", e.dbname), extra)
}

/// The keys of a `[database]` section: 127.0.0.1 on `port`, as `user`, database `dbname`.
pub fn database_toml(port: u16, user: &str, dbname: &str) -> String {
    format!(
        "host = \"127.0.0.1\"\nport = {port}\nuser = \"{user}\"\ndbname = \"{dbname}\"\nconnect_timeout_secs = 5\n"
    )
}

/// [`receiver_toml`] with `database` as the keys of its `[database]` section.
pub fn receiver_toml_with_database(e: &Endpoints<'_>, database: &str, extra: &str) -> String {
    format!(
        r#"cluster = "{cluster}"
node = "{node}"
{node_id}[remote]
host = "127.0.0.1"
port = {ssh_port}
user = "{user}"
key_file = "{key}"
known_hosts = "{known_hosts}"
log_dir = "{log_dir}"
trigger_dir = "{log_dir}.exchange"
allow_shared_account = true
connect_timeout_secs = 10
[local]
log_dir = "{local}"
[database]
{database}{extra}"#,
        cluster = e.cluster,
        node = e.node,
        ssh_port = e.ssh_port,
        user = e.ssh.user(),
        key = e.ssh.client_key().display(),
        known_hosts = e.known_hosts.display(),
        log_dir = e.remote_log_dir.display(),
        local = e.local_dir.display(),
        node_id = e
            .slony_node_id
            .map_or(String::new(), |n| format!("slony_node_id = {n}\n")),
    )
}

/// What one `slony-receiver` run printed and how it exited.
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error (the log).
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as the object a `--json` run prints.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs `slony-receiver <command> --config <config> <rest...>` and echoes its output
/// (shown when the test fails).
pub fn run_receiver(config: &Path, command: &str, rest: &[&str]) -> Run {
    run_receiver_env(config, command, rest, &[])
}

/// [`run_receiver`] with more environment variables (`RUST_LOG` among them overrides
/// the default `info`).
pub fn run_receiver_env(config: &Path, command: &str, rest: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args: Vec<&OsStr> = vec![command.as_ref(), "--config".as_ref(), config.as_os_str()];
    args.extend(rest.iter().map(OsStr::new));
    run_receiver_args(&args, env.iter().map(|(k, v)| (*k, OsStr::new(v))))
}

/// Runs `slony-receiver <args>` with `RUST_LOG=info` and `env` added, and echoes its
/// output (shown when the test fails).
pub fn run_receiver_args<'a>(
    args: &[&OsStr],
    env: impl IntoIterator<Item = (&'a str, &'a OsStr)>,
) -> Run {
    let out = Command::new(bin_path("slony-receiver"))
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env)
        .output()
        .expect("running slony-receiver");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "--- slony-receiver {args:?} exited {}\n--- stdout:\n{}--- stderr:\n{}",
        run.code, run.stdout, run.stderr
    );
    run
}
