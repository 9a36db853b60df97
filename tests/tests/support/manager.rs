/*!
Running `slony-manager run` from tests: a child process that appends its log to a file,
is killed on drop, and can be stopped cleanly or with SIGKILL.
*/

use super::bin_path;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `slony-manager run` as a child process; killed (SIGKILL) on drop.
pub struct ManagerDaemon {
    child: Child,
}

impl ManagerDaemon {
    /// Starts `slony-manager run --config <config>` with `RUST_LOG=info` and `env` added,
    /// appending its log to `log`.
    pub fn start(config: &Path, log: &Path, env: &[(&str, &str)]) -> ManagerDaemon {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let child = Command::new(bin_path("slony-manager"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
