/*!
The original tools' world for the migration tests: the fixture tree of
`tests/fixtures/legacy/` copied with its placeholders filled in, site copies written
the way the original splitter wrote them, and the original client `get_slony_logs.pl`
itself, run with real `ssh`, `scp` and `psql`.

The original client is public (lm-jps/drms, `base/drms/replication/get_slony_logs.pl`)
but not part of this repository. [`original_client`] takes it from `$SLONY_ORIGINAL_TOOLS`
(a checkout or a bare git directory of that repository) or from the local mirror at
[`MIRROR`]; without either, the tests that need it say so and skip that part.
*/

use super::ssh::SshServer;
use super::workload::{self, Change, Format};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a mirror of lm-jps/drms is kept on the development machines.
pub const MIRROR: &str = "/work/.mirror/lm-jps+drms/repo";
/// The client's path inside that repository.
const CLIENT_PATH: &str = "base/drms/replication/get_slony_logs.pl";

/// The fixture tree in the source tree.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy")
}

/// What the placeholders of the fixture tree stand for.
pub struct Placeholders<'a> {
    /// PostgreSQL's port (`@PG_PORT@`).
    pub pg_port: u16,
    /// sshd's port (`@SSH_PORT@`).
    pub ssh_port: u16,
    /// The account site `node` logs in as (`@SSH_USER@` in `sites/<node>/`).
    pub account_of: &'a dyn Fn(&str) -> String,
}

/// Copies the fixture tree into `root`, filling in the placeholders (`@ROOT@` is `root`).
pub fn copy_fixture(root: &Path, p: &Placeholders<'_>) {
    copy_dir(&fixture_dir(), root, root, p, None);
}

fn copy_dir(from: &Path, to: &Path, root: &Path, p: &Placeholders<'_>, node: Option<&str>) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let (src, dst) = (entry.path(), to.join(&name));
        if name == "README.md" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            // sites/<node>/: the files of that site.
            let node = node.or_else(|| (from.file_name()? == "sites").then_some(name.as_str()));
            copy_dir(&src, &dst, root, p, node);
            continue;
        }
        let mut text = std::fs::read_to_string(&src).unwrap();
        text = text
            .replace("@ROOT@", root.to_str().unwrap())
            .replace("@PG_PORT@", &p.pg_port.to_string())
            .replace("@SSH_PORT@", &p.ssh_port.to_string());
        if let Some(node) = node {
            text = text.replace("@SSH_USER@", &(p.account_of)(node));
        }
        assert!(
            !text.contains("@SSH_USER@"),
            "{}: @SSH_USER@ outside sites/<node>/",
            src.display()
        );
        std::fs::write(dst, text).unwrap();
    }
}

/// Site copy `counter` as the original splitter (`parse_slon_logs.pl`) wrote it: slon's
/// archive with only the site's changes, then its `-- EOL` marker line.
pub fn original_copy(cluster: &str, counter: u64, changes: &[Change]) -> String {
    workload::render(cluster, counter, changes, Format::Copy22) + "-- EOL\n"
}

/// The original client, written into `dir`, or `None` (with the reason) when no copy
/// of the original tools is at hand.
pub fn original_client(dir: &Path) -> Result<PathBuf, String> {
    let source = std::env::var_os("SLONY_ORIGINAL_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MIRROR));
    let checkout = source.join(CLIENT_PATH);
    let text = if checkout.is_file() {
        std::fs::read(&checkout).map_err(|e| format!("{}: {e}", checkout.display()))?
    } else {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&source)
            .args(["show", &format!("HEAD:{CLIENT_PATH}")])
            .output()
            .map_err(|e| format!("git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "no copy of lm-jps/drms at {} (set SLONY_ORIGINAL_TOOLS to a checkout): {}",
                source.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        out.stdout
    };
    let path = dir.join("get_slony_logs.pl");
    std::fs::write(&path, text).unwrap();
    Ok(path)
}

/// Writes `ssh` and `scp` wrappers into `bin` that log in to `ssh` with its client key
/// and known hosts (the original client runs `ssh_cmd` and `scp_cmd` as given).
pub fn write_ssh_wrappers(bin: &Path, ssh: &SshServer) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).unwrap();
    let config = bin.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n",
            ssh.client_key().display(),
            ssh.known_hosts().display()
        ),
    )
    .unwrap();
    for tool in ["ssh", "scp"] {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec /usr/bin/{tool} -F {} \"$@\"\n",
                config.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Runs the original client on `config` (bounded: killed after two minutes), returning
/// its exit code and output.
pub fn run_original_client(client: &Path, config: &Path) -> (i32, String) {
    let log = config.with_extension("client.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("perl")
        .arg(client)
        .arg(config)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("perl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}
