//! Failure mail over SMTP, sent once per failure, as a daily reminder, and on recovery.
//!
//! The receiver usually runs from cron every few minutes. Mailing every failed run would
//! bury the operator in identical mail, and mailing nothing would leave a stuck replica
//! unnoticed. So every run reports its outcome here ([`Alerter::report_failure`] or
//! [`Alerter::report_success`]), and a small JSON state file remembers which failure is
//! active, since when, and when it was last mailed. A failure is identified by its
//! [`Failure::key`] (for example `gap:124`), not by its text, which may vary between runs.
//!
//! What to mail is decided by the pure function [`decide`], so the policy is unit-tested
//! without SMTP or clocks:
//!
//! - a new failure is mailed at once ([`MailKind::Started`]);
//! - the same failure again is mailed only when the reminder interval has passed since the
//!   last mail ([`MailKind::Reminder`]);
//! - a different failure replacing the active one is mailed as new ([`MailKind::Changed`]);
//! - the first success after a failure is mailed ([`MailKind::Cleared`]) and empties the
//!   state; a success with no active failure mails nothing.
//!
//! A mail that could not be sent is not recorded as sent, so the next run tries again, and
//! the send error is returned for the caller to log next to (never instead of) the original
//! failure. With no recipients configured, the state is still kept, so `status` can show the
//! last error, but nothing is sent.
//!
//! The state file is not locked here: callers run under the per-cluster run lock
//! ([`slony_shared::lock`]), so only one process updates it at a time.

use crate::config::{AlertConfig, ReceiverConfig};
use serde::{Deserialize, Serialize};
use slony_shared::mail::{one_line, send_mail, MailError};
use slony_shared::time::format_utc;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every mail subject starts with this, so recipients can filter on it.
pub const SUBJECT_PREFIX: &str = "[slony-receiver] ";

/// One failed run, as reported by a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Identifies "the same failure" across runs (for example `gap:124`, `apply:57`,
    /// `remote:hostkey`); the subject and body may change from run to run, the key may not.
    pub key: String,
    /// One line saying what failed; becomes part of the mail subject.
    pub subject: String,
    /// The details (the error chain, what to do about it); becomes the mail body.
    pub body: String,
    /// Whether waiting cannot cure it: someone must act ([`crate::backoff`]).
    pub permanent: bool,
}

/// The outcome of one run, as seen by [`decide`].
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The run failed.
    Failure(&'a Failure),
    /// The run succeeded.
    Success,
}

/// Which mail a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// A failure was seen for the first time (or was never mailed successfully).
    Started,
    /// The same failure is still there and the reminder interval has passed.
    Reminder,
    /// A different failure replaced the active one; mailed as a new failure.
    Changed,
    /// The run succeeded after a failure.
    Cleared,
}

/// The active failure, as stored in the state file between runs.
///
/// Times are seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureState {
    /// [`Failure::key`] of the active failure.
    pub key: String,
    /// The subject of the latest run that saw it.
    pub subject: String,
    /// The body of the latest run that saw it (quoted in the recovery mail).
    pub body: String,
    /// The first run that saw it.
    pub since: u64,
    /// The latest run that saw it.
    pub last_seen: u64,
    /// When a mail about it was last sent; `None` if none has gone out yet (mail disabled,
    /// or sending failed), so the next run mails it as new.
    pub last_mailed: Option<u64>,
    /// How many runs saw it.
    pub runs: u64,
    /// Set when a run succeeded but the recovery mail could not be sent: the failure is
    /// over, and the next run retries the recovery mail.
    #[serde(default)]
    pub recovered: Option<u64>,
    /// Whether the latest run that saw it found it permanent ([`Failure::permanent`]).
    #[serde(default)]
    pub permanent: bool,
}

impl FailureState {
    /// The state of a failure first seen at `now`, not mailed yet.
    fn new(failure: &Failure, now: u64) -> Self {
        FailureState {
            key: failure.key.clone(),
            subject: failure.subject.clone(),
            body: failure.body.clone(),
            since: now,
            last_seen: now,
            last_mailed: None,
            runs: 1,
            recovered: None,
            permanent: failure.permanent,
        }
    }

    /// The same state, recorded as mailed at `now`.
    fn mailed(&self, now: u64) -> Self {
        FailureState {
            last_mailed: Some(now),
            ..self.clone()
        }
    }
}

/// What one run should do: the mail to send (if any) and the state to store afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The mail this run sends, if any.
    pub mail: Option<MailKind>,
    /// The state to store once the mail has been sent (or when no mail is due).
    /// `None` means no failure is active.
    pub sent: Option<FailureState>,
    /// The state to store when the mail could not be sent: the attempt is not recorded,
    /// so the next run mails again.
    pub unsent: Option<FailureState>,
}

/// Decides which mail a run sends and what state follows, from the previous state, the
/// run's outcome, the current time (seconds since the Unix epoch) and the reminder interval.
///
/// Pure: no I/O, no clock. A clock that went backwards never triggers a reminder.
pub fn decide(
    prev: Option<&FailureState>,
    event: Event<'_>,
    now: u64,
    reminder: Duration,
) -> Decision {
    match (prev, event) {
        (None, Event::Success) => Decision {
            mail: None,
            sent: None,
            unsent: None,
        },
        (Some(p), Event::Success) => Decision {
            mail: Some(MailKind::Cleared),
            sent: None,
            unsent: Some(FailureState {
                recovered: Some(p.recovered.unwrap_or(now)),
                ..p.clone()
            }),
        },
        (Some(p), Event::Failure(f)) if p.key == f.key => {
            let next = FailureState {
                subject: f.subject.clone(),
                body: f.body.clone(),
                last_seen: now,
                runs: p.runs.saturating_add(1),
                permanent: f.permanent,
                // A failure that comes back before its recovery mail went out simply
                // continues: the recipients still believe it is active.
                recovered: None,
                ..p.clone()
            };
            let mail = match p.last_mailed {
                None => Some(MailKind::Started),
                Some(t) if now.saturating_sub(t) >= reminder.as_secs() => Some(MailKind::Reminder),
                Some(_) => None,
            };
            let sent = if mail.is_some() {
                next.mailed(now)
            } else {
                next.clone()
            };
            Decision {
                mail,
                sent: Some(sent),
                unsent: Some(next),
            }
        }
        (prev, Event::Failure(f)) => {
            let next = FailureState::new(f, now);
            Decision {
                mail: Some(if prev.is_some() {
                    MailKind::Changed
                } else {
                    MailKind::Started
                }),
                sent: Some(next.mailed(now)),
                unsent: Some(next),
            }
        }
    }
}

/// Why alerting did not complete. The failure being reported is not part of this error:
/// callers log it separately and keep it as the run's result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    /// The mail could not be sent.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// A test mail was asked for, but no recipient is configured.
    #[error("no alert.recipients are configured: there is nobody to mail")]
    NoRecipients,
    /// The state file could not be read or written.
    #[error("cannot {action} alert state file {path}: {source}")]
    StateIo {
        /// What was being done ("read", "write", ...).
        action: &'static str,
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("alert state file {path} is corrupt: {source}")]
    StateFormat {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// On-disk shape of the state file. `active: null` means no failure is active.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    active: Option<FailureState>,
}

/// Reads the state file; a missing file means no active failure.
///
/// # Errors
///
/// [`AlertError::StateIo`] if the file exists but cannot be read,
/// [`AlertError::StateFormat`] if it is not a state file.
pub fn load_state(path: &Path) -> Result<Option<FailureState>, AlertError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AlertError::StateIo {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: StateFile =
        serde_json::from_slice(&text).map_err(|source| AlertError::StateFormat {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(file.active)
}

/// Writes the state file atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over the old one, so a crash leaves either the old or the new state.
///
/// # Errors
///
/// [`AlertError::StateIo`] if any step fails (the temporary file is removed).
pub fn save_state(path: &Path, state: Option<&FailureState>) -> Result<(), AlertError> {
    let io_err = |action, source| AlertError::StateIo {
        action,
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec_pretty(&StateFile {
        active: state.cloned(),
    })
    .map_err(|e| io_err("serialise", io::Error::other(e)))?;
    let name = path.file_name().ok_or_else(|| {
        io_err(
            "write",
            io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        let mut f = slony_shared::private::create(&tmp)
            .map_err(|e| io_err("create temporary file for", e))?;
        f.write_all(&json).map_err(|e| io_err("write", e))?;
        f.write_all(b"\n").map_err(|e| io_err("write", e))?;
        f.sync_all().map_err(|e| io_err("flush", e))?;
        fs::rename(&tmp, path).map_err(|e| io_err("replace", e))
    })();
    if result.is_err() {
        // Best effort: the original error is what matters.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The active failure, as shown by a status command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFailure {
    /// [`Failure::key`].
    pub key: String,
    /// The subject of the latest run that saw it.
    pub subject: String,
    /// The first run that saw it.
    pub since: SystemTime,
    /// The latest run that saw it.
    pub last_seen: SystemTime,
    /// How many runs saw it.
    pub runs: u64,
    /// Whether it needs someone to act (pull then retries slowly).
    pub permanent: bool,
}

/// The failure still active according to the state file, for a status command.
///
/// `None` when no failure is active (including a failure that has recovered but whose
/// recovery mail is still pending), and when the file is missing or unreadable: status
/// output must not fail because of the alert state.
pub fn last_failure(state_file: &Path) -> Option<LastFailure> {
    let s = load_state(state_file).ok().flatten()?;
    if s.recovered.is_some() {
        return None;
    }
    Some(LastFailure {
        key: s.key,
        subject: s.subject,
        since: UNIX_EPOCH + Duration::from_secs(s.since),
        last_seen: UNIX_EPOCH + Duration::from_secs(s.last_seen),
        runs: s.runs,
        permanent: s.permanent,
    })
}

/// A composed mail, before addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mail {
    subject: String,
    body: String,
}

/// Writes the subject and body of a mail of `kind`. `prev` is the state before the run and
/// `next` the state after it (as if sent); `context` says which cluster, site and host.
fn compose(
    kind: MailKind,
    prev: Option<&FailureState>,
    next: Option<&FailureState>,
    context: &str,
    now: u64,
    reminder: Duration,
) -> Mail {
    // The state the mail is about: the new one, or for a recovery the one that ended.
    let about = match kind {
        MailKind::Cleared => prev,
        _ => next,
    };
    let (key, subject, body, since, last_seen, runs) = match about {
        Some(s) => (
            s.key.as_str(),
            s.subject.as_str(),
            s.body.as_str(),
            s.since,
            s.last_seen,
            s.runs,
        ),
        None => ("unknown", "unknown failure", "", now, now, 0),
    };
    let subject_line = one_line(subject);
    let mail_subject = match kind {
        MailKind::Started | MailKind::Changed => format!("{SUBJECT_PREFIX}FAILED: {subject_line}"),
        MailKind::Reminder => format!(
            "{SUBJECT_PREFIX}STILL FAILING (since {}): {subject_line}",
            format_utc(since)
        ),
        MailKind::Cleared => format!("{SUBJECT_PREFIX}RECOVERED: {subject_line}"),
    };

    let mut text = String::new();
    let reminder_text = format_duration(reminder.as_secs());
    match kind {
        MailKind::Started | MailKind::Changed => {
            text.push_str(&format!("Failure on {context}.\n\n{body}\n\n"));
            text.push_str(&format!("First seen: {}\n", format_utc(since)));
            text.push_str(&format!("Failure key: {key}\n"));
            if let (MailKind::Changed, Some(p)) = (kind, prev) {
                text.push_str(&format!(
                    "\nThis replaces the earlier failure {} ({}), first seen {} and last seen {}, \
                     which no longer occurs.\n",
                    p.key,
                    one_line(&p.subject),
                    format_utc(p.since),
                    format_utc(p.last_seen)
                ));
            }
            text.push_str(&format!(
                "\nWhile this failure persists you will get a reminder every {reminder_text}, \
                 and a mail when it clears.\n"
            ));
        }
        MailKind::Reminder => {
            text.push_str(&format!(
                "Still failing on {context}, for {} now ({runs} runs).\n\n{body}\n\n",
                format_duration(now.saturating_sub(since))
            ));
            text.push_str(&format!("First seen: {}\n", format_utc(since)));
            text.push_str(&format!("Last seen: {}\n", format_utc(last_seen)));
            text.push_str(&format!("Failure key: {key}\n"));
            text.push_str(&format!(
                "\nNext reminder in {reminder_text} if it persists; a mail will follow when it \
                 clears.\n"
            ));
        }
        MailKind::Cleared => {
            let recovered = prev.and_then(|p| p.recovered).unwrap_or(now);
            text.push_str(&format!(
                "Recovered on {context}: a run succeeded at {}.\n\n",
                format_utc(recovered)
            ));
            text.push_str(&format!("The failure was: {subject}\n"));
            text.push_str(&format!("First seen: {}\n", format_utc(since)));
            text.push_str(&format!("Last seen: {}\n", format_utc(last_seen)));
            text.push_str(&format!(
                "Lasted: {} ({runs} failed runs)\n",
                format_duration(recovered.saturating_sub(since))
            ));
            text.push_str(&format!("Failure key: {key}\n"));
            if !body.is_empty() {
                text.push_str(&format!("\nLast report:\n\n{body}\n"));
            }
        }
    }
    Mail {
        subject: mail_subject,
        body: text,
    }
}

/// Sends failure mail and keeps the state file; one per receiver (cluster and site).
#[derive(Debug, Clone)]
pub struct Alerter {
    /// Recipients, sender, SMTP server and reminder interval.
    config: AlertConfig,
    /// Where the active failure is remembered between runs.
    state_file: PathBuf,
    /// Which cluster, site and host; included in every mail so a recipient of mail from
    /// many sites knows where to look.
    context: String,
}

impl Alerter {
    /// An alerter mailing as `config` says, remembering the active failure in `state_file`,
    /// and naming `context` (for example "cluster lab, site site1 on host X") in every mail.
    ///
    /// Nothing is checked or connected here: a bad address or an unreachable server is
    /// reported when a mail is due, so a broken mail setup never stops a run.
    pub fn new(
        config: &AlertConfig,
        state_file: impl Into<PathBuf>,
        context: impl Into<String>,
    ) -> Self {
        Alerter {
            config: config.clone(),
            state_file: state_file.into(),
            context: context.into(),
        }
    }

    /// The alerter of the site `cfg` describes: its `[alert]` settings, its state file,
    /// and [`context`] in every mail.
    pub fn for_site(cfg: &ReceiverConfig) -> Self {
        Alerter::new(&cfg.alert, cfg.alert_state_file(), context(cfg))
    }

    /// Sends a test mail through the same settings and context as a failure mail, and
    /// records nothing: `slony-receiver check --mail`.
    ///
    /// # Errors
    ///
    /// The mail could not be sent (or no recipient is configured).
    pub fn send_test(&self) -> Result<(), AlertError> {
        if !self.mail_enabled() {
            return Err(AlertError::NoRecipients);
        }
        let mail = Mail {
            subject: format!("{SUBJECT_PREFIX}TEST: alert mail from {}", self.context),
            body: format!(
                "This is a test of the alert mail of {}, sent by `slony-receiver check --mail`.\n\n\
                 Failures of pull are mailed to these recipients the same way: once when they \
                 start, again every {} while they last, and once on recovery.\n",
                self.context,
                format_duration(self.config.reminder.as_secs())
            ),
        };
        self.send(&mail)
    }

    /// Whether any recipient is configured (otherwise only the state is kept).
    pub fn mail_enabled(&self) -> bool {
        !self.config.recipients.is_empty()
    }

    /// Records a failed run and mails it if due (see the module documentation).
    ///
    /// # Returns
    ///
    /// The mail sent, or `None` if none was due or mail is disabled.
    ///
    /// # Errors
    ///
    /// If the mail could not be sent (the state then records it as not mailed, so the next
    /// run tries again) or the state file could not be written. The caller logs this error
    /// in addition to `failure`, which remains the run's result.
    pub fn report_failure(&self, failure: &Failure) -> Result<Option<MailKind>, AlertError> {
        self.report(Event::Failure(failure), unix_now())
    }

    /// Records a successful run, and mails the recovery if a failure was active.
    ///
    /// Cheap when no failure is active (one read of the state file, nothing written), so a
    /// daemon may call it after every poll.
    ///
    /// # Returns
    ///
    /// `Some(MailKind::Cleared)` if the recovery was mailed, otherwise `None`.
    ///
    /// # Errors
    ///
    /// As for [`Alerter::report_failure`]; an unsent recovery mail is retried next run.
    pub fn report_success(&self) -> Result<Option<MailKind>, AlertError> {
        self.report(Event::Success, unix_now())
    }

    /// [`Alerter::report_failure`] / [`Alerter::report_success`] at a given time.
    fn report(&self, event: Event<'_>, now: u64) -> Result<Option<MailKind>, AlertError> {
        let prev = match load_state(&self.state_file) {
            Ok(p) => p,
            Err(e) => {
                // Never let a damaged state file silence the alert: start afresh, and the
                // save below replaces the file.
                tracing::warn!("{e}; starting with no recorded failure");
                None
            }
        };
        let decision = decide(prev.as_ref(), event, now, self.config.reminder);

        let Some(kind) = decision.mail else {
            if prev.is_some() || decision.sent.is_some() {
                save_state(&self.state_file, decision.sent.as_ref())?;
            }
            return Ok(None);
        };

        if !self.mail_enabled() {
            // Nobody waits for a recovery mail, so a recovery empties the state; a failure
            // stays "not mailed", so it is mailed at once if recipients are added later.
            let keep = match kind {
                MailKind::Cleared => decision.sent.as_ref(),
                _ => decision.unsent.as_ref(),
            };
            save_state(&self.state_file, keep)?;
            return Ok(None);
        }

        let mail = compose(
            kind,
            prev.as_ref(),
            decision.sent.as_ref(),
            &self.context,
            now,
            self.config.reminder,
        );
        match self.send(&mail) {
            Ok(()) => {
                tracing::info!(kind = ?kind, subject = %mail.subject, "alert mail sent");
                save_state(&self.state_file, decision.sent.as_ref())?;
                Ok(Some(kind))
            }
            Err(send_err) => {
                if let Err(e) = save_state(&self.state_file, decision.unsent.as_ref()) {
                    // The send error is the one returned; this one is only logged.
                    tracing::warn!("{e}");
                }
                Err(send_err)
            }
        }
    }

    /// Sends `mail` to every recipient over SMTP, as configured.
    fn send(&self, mail: &Mail) -> Result<(), AlertError> {
        Ok(send_mail(&self.config, &mail.subject, &mail.body)?)
    }
}

/// Which cluster, site, host and config a mail is about, so a recipient of mail from
/// many sites knows where to look.
pub fn context(cfg: &ReceiverConfig) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    format!(
        "cluster {}, site {} on host {} (config {})",
        cfg.cluster,
        cfg.node,
        host,
        cfg.source.display()
    )
}

/// Seconds since the Unix epoch; 0 if the clock is before 1970.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A human duration with its two largest units: `3d 4h`, `2h 5m`, `7m`, `30s`.
fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slony_shared::config::TlsMode;
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    const DAY: Duration = Duration::from_secs(86_400);
    const T0: u64 = 1_700_000_000;

    fn failure(key: &str) -> Failure {
        Failure {
            key: key.into(),
            subject: format!("failure {key}"),
            body: format!("details of {key}"),
            permanent: false,
        }
    }

    fn config(recipients: &[&str], port: u16) -> AlertConfig {
        AlertConfig {
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            from: "receiver@example.org".into(),
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            tls: TlsMode::None,
            credentials: None,
            reminder: DAY,
        }
    }

    /// A loopback port nobody listens on (bound, then released).
    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.local_addr().expect("local addr").port()
    }

    #[test]
    fn new_failure_is_mailed() {
        let f = failure("gap:124");
        let d = decide(None, Event::Failure(&f), T0, DAY);
        assert_eq!(d.mail, Some(MailKind::Started));
        let s = d.sent.expect("state after mail");
        assert_eq!(s.key, "gap:124");
        assert_eq!((s.since, s.last_seen, s.runs), (T0, T0, 1));
        assert_eq!(s.last_mailed, Some(T0));
        assert_eq!(d.unsent.expect("unsent state").last_mailed, None);
    }

    #[test]
    fn same_failure_within_interval_is_not_mailed() {
        let f = failure("gap:124");
        let s1 = decide(None, Event::Failure(&f), T0, DAY).sent;
        let changed_text = Failure {
            subject: "other wording".into(),
            ..f.clone()
        };
        let d = decide(s1.as_ref(), Event::Failure(&changed_text), T0 + 300, DAY);
        assert_eq!(d.mail, None);
        assert_eq!(d.sent, d.unsent);
        let s2 = d.sent.expect("state");
        assert_eq!(s2.since, T0);
        assert_eq!(s2.last_seen, T0 + 300);
        assert_eq!(s2.last_mailed, Some(T0));
        assert_eq!(s2.runs, 2);
        assert_eq!(s2.subject, "other wording");
        // Just short of a day: still nothing.
        let d = decide(Some(&s2), Event::Failure(&f), T0 + DAY.as_secs() - 1, DAY);
        assert_eq!(d.mail, None);
        // A clock that went backwards never mails.
        let d = decide(Some(&s2), Event::Failure(&f), T0 - 1000, DAY);
        assert_eq!(d.mail, None);
    }

    #[test]
    fn reminder_after_interval_since_last_mail() {
        let f = failure("apply:57");
        let s1 = decide(None, Event::Failure(&f), T0, DAY).sent;
        let t1 = T0 + DAY.as_secs();
        let d = decide(s1.as_ref(), Event::Failure(&f), t1, DAY);
        assert_eq!(d.mail, Some(MailKind::Reminder));
        let s2 = d.sent.expect("state");
        assert_eq!((s2.since, s2.last_mailed, s2.runs), (T0, Some(t1), 2));
        // The next reminder counts from the last mail, not from the start.
        let d = decide(Some(&s2), Event::Failure(&f), t1 + 3600, DAY);
        assert_eq!(d.mail, None);
        let d = decide(Some(&s2), Event::Failure(&f), t1 + DAY.as_secs(), DAY);
        assert_eq!(d.mail, Some(MailKind::Reminder));
    }

    #[test]
    fn different_key_is_mailed_as_new() {
        let s1 = decide(None, Event::Failure(&failure("gap:124")), T0, DAY).sent;
        let f2 = failure("remote:hostkey");
        let d = decide(s1.as_ref(), Event::Failure(&f2), T0 + 60, DAY);
        assert_eq!(d.mail, Some(MailKind::Changed));
        let s2 = d.sent.expect("state");
        assert_eq!(s2.key, "remote:hostkey");
        assert_eq!(
            (s2.since, s2.runs, s2.last_mailed),
            (T0 + 60, 1, Some(T0 + 60))
        );
    }

    #[test]
    fn success_clears_an_active_failure_and_nothing_otherwise() {
        let d = decide(None, Event::Success, T0, DAY);
        assert_eq!(
            d,
            Decision {
                mail: None,
                sent: None,
                unsent: None
            }
        );
        let s1 = decide(None, Event::Failure(&failure("gap:124")), T0, DAY).sent;
        let d = decide(s1.as_ref(), Event::Success, T0 + 600, DAY);
        assert_eq!(d.mail, Some(MailKind::Cleared));
        assert_eq!(d.sent, None);
        let after = decide(d.sent.as_ref(), Event::Success, T0 + 900, DAY);
        assert_eq!(after.mail, None);
    }

    #[test]
    fn unsent_mail_is_not_recorded_and_is_retried() {
        let f = failure("gap:124");
        // Start: the mail fails, so the next run (even a minute later) mails again.
        let d = decide(None, Event::Failure(&f), T0, DAY);
        let unsent = d.unsent.expect("state");
        assert_eq!(unsent.last_mailed, None);
        let d = decide(Some(&unsent), Event::Failure(&f), T0 + 60, DAY);
        assert_eq!(d.mail, Some(MailKind::Started));
        assert_eq!(d.sent.as_ref().map(|s| (s.since, s.runs)), Some((T0, 2)));

        // Reminder: a failed reminder keeps the old last_mailed, so it is due again.
        let mailed = d.sent.expect("state");
        let t1 = T0 + 60 + DAY.as_secs();
        let d = decide(Some(&mailed), Event::Failure(&f), t1, DAY);
        assert_eq!(d.mail, Some(MailKind::Reminder));
        let unsent = d.unsent.expect("state");
        assert_eq!(unsent.last_mailed, Some(T0 + 60));
        let d = decide(Some(&unsent), Event::Failure(&f), t1 + 300, DAY);
        assert_eq!(d.mail, Some(MailKind::Reminder));

        // Recovery: a failed recovery mail keeps the failure, marked recovered, and the
        // next success retries the recovery mail.
        let d = decide(Some(&mailed), Event::Success, T0 + 120, DAY);
        assert_eq!(d.mail, Some(MailKind::Cleared));
        let pending = d.unsent.expect("state kept");
        assert_eq!(pending.recovered, Some(T0 + 120));
        let d = decide(Some(&pending), Event::Success, T0 + 180, DAY);
        assert_eq!(d.mail, Some(MailKind::Cleared));
        assert_eq!(d.unsent.and_then(|s| s.recovered), Some(T0 + 120));
        // If the same failure comes back first, it simply continues (no new mail yet).
        let d = decide(Some(&pending), Event::Failure(&f), T0 + 180, DAY);
        assert_eq!(d.mail, None);
        assert_eq!(d.sent.and_then(|s| s.recovered), None);
    }

    #[test]
    fn mail_text() {
        let f = Failure {
            key: "gap:124".into(),
            subject: "gap after\narchive 123".into(),
            body: "archive 124 is missing".into(),
            permanent: true,
        };
        let ctx = "cluster lab, site site1 on host h1";
        let s1 = decide(None, Event::Failure(&f), T0, DAY).sent;
        let m = compose(MailKind::Started, None, s1.as_ref(), ctx, T0, DAY);
        assert_eq!(m.subject, "[slony-receiver] FAILED: gap after archive 123");
        assert!(m.body.contains("archive 124 is missing"), "{}", m.body);
        assert!(m.body.contains(ctx), "{}", m.body);
        assert!(
            m.body.contains("First seen: 2023-11-14 22:13:20 UTC"),
            "{}",
            m.body
        );

        let now = T0 + 2 * DAY.as_secs() + 3 * 3600;
        let d = decide(s1.as_ref(), Event::Failure(&f), now, DAY);
        let m = compose(
            MailKind::Reminder,
            s1.as_ref(),
            d.sent.as_ref(),
            ctx,
            now,
            DAY,
        );
        assert_eq!(
            m.subject,
            "[slony-receiver] STILL FAILING (since 2023-11-14 22:13:20 UTC): gap after archive 123"
        );
        assert!(m.body.contains("for 2d 3h now"), "{}", m.body);
        assert!(m.body.contains(ctx), "{}", m.body);

        let f2 = failure("remote:hostkey");
        let d = decide(s1.as_ref(), Event::Failure(&f2), now, DAY);
        let m = compose(
            MailKind::Changed,
            s1.as_ref(),
            d.sent.as_ref(),
            ctx,
            now,
            DAY,
        );
        assert_eq!(m.subject, "[slony-receiver] FAILED: failure remote:hostkey");
        assert!(
            m.body.contains("replaces the earlier failure gap:124"),
            "{}",
            m.body
        );

        let m = compose(MailKind::Cleared, s1.as_ref(), None, ctx, now, DAY);
        assert_eq!(
            m.subject,
            "[slony-receiver] RECOVERED: gap after archive 123"
        );
        assert!(m.body.contains(ctx), "{}", m.body);
        assert!(m.body.contains("Lasted: 2d 3h"), "{}", m.body);
    }

    #[test]
    fn time_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(T0), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_duration(30), "30s");
        assert_eq!(format_duration(7 * 60 + 5), "7m");
        assert_eq!(format_duration(2 * 3600 + 5 * 60), "2h 5m");
        assert_eq!(format_duration(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alert.json");
        assert_eq!(load_state(&path).expect("missing file is fine"), None);
        assert_eq!(last_failure(&path), None);

        let s = decide(None, Event::Failure(&failure("apply:57")), T0, DAY)
            .sent
            .expect("state");
        save_state(&path, Some(&s)).expect("save");
        assert_eq!(load_state(&path).expect("load"), Some(s.clone()));
        let lf = last_failure(&path).expect("active failure");
        assert_eq!(lf.key, "apply:57");
        assert_eq!(lf.subject, "failure apply:57");
        assert_eq!(lf.since, UNIX_EPOCH + Duration::from_secs(T0));
        assert_eq!(lf.last_seen, UNIX_EPOCH + Duration::from_secs(T0));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("alert.json")]);

        save_state(&path, None).expect("save empty");
        assert_eq!(load_state(&path).expect("load"), None);
        assert_eq!(last_failure(&path), None);

        fs::write(&path, "not json").expect("write");
        assert!(matches!(
            load_state(&path),
            Err(AlertError::StateFormat { .. })
        ));
        assert_eq!(last_failure(&path), None);
    }

    #[test]
    fn without_recipients_state_is_kept_but_nothing_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alert.json");
        // The port is never used: nothing may be sent.
        let a = Alerter::new(&config(&[], 1), &path, "test");
        assert!(!a.mail_enabled());
        assert_eq!(a.report_success().expect("success"), None);
        assert!(!path.exists(), "no state written while all is well");

        let f = failure("gap:124");
        assert_eq!(a.report(Event::Failure(&f), T0).expect("report"), None);
        assert_eq!(a.report(Event::Failure(&f), T0 + 60).expect("report"), None);
        let s = load_state(&path).expect("load").expect("state kept");
        assert_eq!(
            (s.key.as_str(), s.runs, s.last_mailed),
            ("gap:124", 2, None)
        );
        assert!(last_failure(&path).is_some());

        assert_eq!(a.report(Event::Success, T0 + 120).expect("report"), None);
        assert_eq!(load_state(&path).expect("load"), None);
    }

    #[test]
    fn send_failure_is_returned_and_not_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alert.json");
        let port = free_port();
        let a = Alerter::new(&config(&["ops@example.org"], port), &path, "test");
        let f = failure("gap:124");
        let err = a
            .report(Event::Failure(&f), T0)
            .expect_err("nobody listens");
        assert!(
            matches!(err, AlertError::Mail(MailError::Send { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        let s = load_state(&path).expect("load").expect("failure recorded");
        assert_eq!((s.runs, s.last_mailed), (1, None));
        // Still failing to send a minute later: tried again, still not recorded as mailed.
        assert!(a.report(Event::Failure(&f), T0 + 60).is_err());
        let s = load_state(&path).expect("load").expect("failure recorded");
        assert_eq!((s.runs, s.last_mailed), (2, None));
    }

    /// A debugging SMTP server (`python3 -m aiosmtpd`) printing every message it receives
    /// to stdout; killed on drop, also when the test panics.
    struct SmtpSink {
        child: Child,
        output: Arc<Mutex<String>>,
        port: u16,
    }

    impl SmtpSink {
        fn start() -> Self {
            let python = "/usr/bin/python3";
            let port = free_port();
            let mut child = Command::new(python)
                .args(["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Debugging"])
                .arg("-l")
                .arg(format!("127.0.0.1:{port}"))
                .env("PYTHONUNBUFFERED", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run {python} -m aiosmtpd ({e}); install python3-aiosmtpd")
                });
            let stdout = child.stdout.take().expect("piped stdout");
            let output = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                // Ends at EOF, when the server is killed.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut out = sink.lock().expect("output lock");
                    out.push_str(&line);
                    out.push('\n');
                }
            });
            let sink = SmtpSink {
                child,
                output,
                port,
            };
            for _ in 0..200 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return sink;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("aiosmtpd did not accept connections on 127.0.0.1:{port} within 10 s");
        }

        /// Waits (bounded) until `n` complete messages were printed; returns the output.
        fn wait_messages(&self, n: usize) -> String {
            for _ in 0..200 {
                let out = self.output.lock().expect("output lock").clone();
                if out.matches("------------ END MESSAGE ------------").count() >= n {
                    return out;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = self.output.lock().expect("output lock").clone();
            panic!("expected {n} messages within 10 s, got:\n{out}");
        }
    }

    impl Drop for SmtpSink {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn sends_real_mail_once_and_on_recovery() {
        let smtp = SmtpSink::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alert.json");
        let a = Alerter::new(
            &config(&["ops@example.org"], smtp.port),
            &path,
            "cluster lab, site site1 on host h1",
        );
        let f = Failure {
            key: "gap:124".into(),
            subject: "gap after archive 123".into(),
            body: "archive 124 is missing on the provider".into(),
            permanent: true,
        };
        assert_eq!(
            a.report_failure(&f).expect("mail sent"),
            Some(MailKind::Started)
        );
        let out = smtp.wait_messages(1);
        assert!(
            out.contains("Subject: [slony-receiver] FAILED: gap after archive 123"),
            "{out}"
        );
        assert!(out.contains("To: ops@example.org"), "{out}");
        assert!(out.contains("From: receiver@example.org"), "{out}");
        assert!(
            out.contains("archive 124 is missing on the provider"),
            "{out}"
        );
        assert!(out.contains("cluster lab, site site1 on host h1"), "{out}");

        // The next run with the same failure sends nothing; a success sends the recovery.
        assert_eq!(a.report_failure(&f).expect("no mail due"), None);
        assert_eq!(
            a.report_success().expect("mail sent"),
            Some(MailKind::Cleared)
        );
        let out = smtp.wait_messages(2);
        assert_eq!(
            out.matches("---------- MESSAGE FOLLOWS").count(),
            2,
            "{out}"
        );
        assert!(
            out.contains("Subject: [slony-receiver] RECOVERED: gap after archive 123"),
            "{out}"
        );
        assert_eq!(load_state(&path).expect("load"), None);
    }
}
