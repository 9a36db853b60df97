/*!
The manager's alerts: what a site did that it may not do (a file that does not come
from it, a file named for another site, a directory of an unknown site).

Each alert is one `ALERT:` log line at error level and, with `[alert] recipients` set,
one mail. They are events, each worth a mail, not a failure that repeats run after
run, so no state is kept; the callers make sure one file alerts once (it is moved
aside, or remembered as reported).
*/

use crate::config::ManagerConfig;

/// Mail subjects start with this.
const SUBJECT_PREFIX: &str = "[slony-manager] ";

/// Logs the alert and mails it, without waiting for the mail (a slow SMTP server
/// must not hold up the daemon).
pub fn raise(cfg: &ManagerConfig, subject: &str, details: &str) {
    tracing::error!(details, "ALERT: {subject}");
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
        if let Err(e) = slony_shared::alert::send_mail(&config, &subject, &body) {
            tracing::warn!(error = %e, "cannot mail the alert");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(send);
        }
        // A short command (housekeeping): send before it exits.
        Err(_) => send(),
    }
}
