/*!
The manager's alerts: what a site did that it may not do (a file that does not come
from it, a file named for another site, a directory of an unknown site).

Each alert is one `ALERT:` log line at error level and, with `[alert] recipients` set,
one mail. They are events, each worth a mail, not a failure that repeats run after
run, so no state is kept on disk; the callers make sure one file alerts once (it is
moved aside, or remembered as reported). A site that plants thousands of files must not
bury the operator: each source (a site, or the trigger directory) raises at most
[`PER_HOUR`] alerts an hour, and the next one after that says how many were held back.
Names a site chose are shown with control characters replaced, so a file name cannot
forge a log line.
*/

use crate::config::ManagerConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Mail subjects start with this.
const SUBJECT_PREFIX: &str = "[slony-manager] ";

/// Alerts one source may raise an hour.
pub const PER_HOUR: u32 = 10;

/// One source's hour: when it began, alerts raised in it, alerts held back.
type Window = (Instant, u32, u64);

/// Raises alerts, each source at most [`PER_HOUR`] an hour. The daemon makes one and
/// passes clones to its tasks (clones share the windows); a command makes its own.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    /// Every source's hour.
    windows: Arc<Mutex<HashMap<String, Window>>>,
}

impl Alerts {
    /// An alerter that has raised nothing yet.
    pub fn new() -> Alerts {
        Alerts::default()
    }

    /// Whether `source` may raise an alert now, and how many were held back before it.
    fn admit(&self, source: &str) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let w = windows.entry(source.to_string()).or_insert((now, 0, 0));
        if now.duration_since(w.0) >= Duration::from_secs(3600) {
            *w = (now, 0, w.2);
        }
        if w.1 < PER_HOUR {
            w.1 += 1;
            let held = w.2;
            w.2 = 0;
            Some(held)
        } else {
            w.2 += 1;
            if w.2 == 1 {
                tracing::warn!(
                    source,
                    "more than {PER_HOUR} alerts from this source within an hour: the next are held back and counted"
                );
            }
            None
        }
    }

    /// Logs the alert and mails it, without waiting for the mail (a slow SMTP server
    /// must not hold up the daemon). `source` is the site it concerns, or "trigger_dir".
    pub fn raise(&self, cfg: &ManagerConfig, source: &str, subject: &str, details: &str) {
        let Some(held) = self.admit(source) else {
            return;
        };
        let subject = printable(subject);
        let mut details = printable(details);
        if held > 0 {
            details.push_str(&format!(
                " ({held} more alerts from {source} were held back within the last hour.)"
            ));
        }
        tracing::error!(details = %details, "ALERT: {subject}");
        if cfg.alert.recipients.is_empty() {
            return;
        }
        let config = cfg.alert.clone();
        let subject = format!("{SUBJECT_PREFIX}{subject}");
        let body = format!(
            "On the provider of cluster {} (config {}):\n\n{details}\n",
            cfg.cluster,
            cfg.source.display()
        );
        let send = move || {
            if let Err(e) = slony_shared::mail::send_mail(&config, &subject, &body) {
                tracing::warn!(error = %e, "cannot mail the alert");
            }
        };
        // lettre's SMTP transport blocks: in the daemon the mail goes out on the runtime's
        // blocking pool, never on an async worker; a short command (housekeeping), which
        // has no runtime, sends it before it exits.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(send);
            }
            Err(_) => send(),
        }
    }
}

/// Text a site may have chosen, safe in a log line or a mail subject.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_held_back_after_its_hourly_share() {
        let alerts = Alerts::new();
        for _ in 0..PER_HOUR {
            assert_eq!(alerts.admit("test-source"), Some(0));
        }
        assert_eq!(alerts.admit("test-source"), None);
        assert_eq!(alerts.admit("test-source"), None);
        // Another source is not affected, nor another alerter.
        assert_eq!(alerts.admit("test-other"), Some(0));
        assert_eq!(Alerts::new().admit("test-source"), Some(0));
        assert_eq!(printable("a\nb\u{1b}[31m"), "a?b?[31m");
    }
}
