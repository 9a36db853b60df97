//! `[alert]`: where and how mail goes, for both binaries.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The `[alert]` section exactly as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    pub recipients: Option<Vec<String>>,
    pub from: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub tls: Option<String>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub reminder_hours: Option<u64>,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP (a local relay).
    None,
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// Failure mail.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Who gets the mail; empty disables mail (failures are still logged).
    pub recipients: Vec<String>,
    /// Sender address.
    pub from: String,
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// SMTP credentials, read from the environment variables the config names.
    pub credentials: Option<(String, String)>,
    /// While a failure persists, mail again after this long.
    pub reminder: Duration,
}

/// The value of the environment variable `var` that the config's `key` names.
///
/// # Errors
///
/// [`ConfigError::Invalid`] naming the key when the variable is unset.
pub fn env_var(path: &Path, key: &str, var: &str) -> Result<String, ConfigError> {
    std::env::var(var).map_err(|_| {
        invalid(
            path,
            key,
            format!("environment variable {var} is not set (or not UTF-8)"),
        )
    })
}

/// `[alert]`: validated, credentials read from the environment; mail comes from
/// `<program>@<host>` unless `from` says otherwise.
///
/// # Errors
///
/// [`ConfigError::Invalid`] naming the key.
pub fn alert_config(p: &Path, a: RawAlert, program: &str) -> Result<AlertConfig, ConfigError> {
    let tls = match a.tls.as_deref().unwrap_or("none") {
        "none" => TlsMode::None,
        "starttls" => TlsMode::StartTls,
        "tls" => TlsMode::Tls,
        other => {
            return Err(invalid(
                p,
                "alert.tls",
                format!("{other:?} is not one of \"none\", \"starttls\", \"tls\""),
            ))
        }
    };
    let credentials = match (a.username_env, a.password_env) {
        (None, None) => None,
        (Some(u), Some(pw)) => Some((
            env_var(p, "alert.username_env", &u)?,
            env_var(p, "alert.password_env", &pw)?,
        )),
        _ => {
            return Err(invalid(
                p,
                "alert.password_env",
                "set both alert.username_env and alert.password_env, or neither",
            ))
        }
    };
    let recipients = a.recipients.unwrap_or_default();
    for r in &recipients {
        if !r.contains('@') || r.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(invalid(
                p,
                "alert.recipients",
                format!("{r:?} is not a mail address"),
            ));
        }
    }
    Ok(AlertConfig {
        recipients,
        from: a
            .from
            .unwrap_or_else(|| format!("{program}@{}", local_hostname())),
        smtp_host: a.smtp_host.unwrap_or_else(|| "localhost".into()),
        smtp_port: a.smtp_port.unwrap_or(match tls {
            TlsMode::Tls => 465,
            TlsMode::StartTls => 587,
            TlsMode::None => 25,
        }),
        tls,
        credentials,
        reminder: Duration::from_secs(3600 * a.reminder_hours.unwrap_or(24).max(1)),
    })
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
