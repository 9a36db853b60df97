//! Sending one mail over SMTP (lettre), as both binaries' alerts do: the receiver's
//! failure mail and the manager's alerts about what a site did.

use crate::config::{AlertConfig, TlsMode};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};
use std::time::Duration;

/// Bound on connecting to the SMTP server and on each SMTP command.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a mail could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// A sender or recipient address in the alert config is not a mail address.
    #[error("invalid mail address {address:?} in the alert config: {source}")]
    Address {
        /// The address as configured.
        address: String,
        /// The parse error.
        #[source]
        source: lettre::address::AddressError,
    },
    /// The mail could not be put together (a header lettre refused).
    #[error("cannot compose the alert mail: {source}")]
    Compose {
        /// The underlying error.
        #[source]
        source: lettre::error::Error,
    },
    /// The TLS settings for the SMTP server could not be set up.
    #[error("cannot set up TLS for SMTP server {server}: {source}")]
    Tls {
        /// `host:port`.
        server: String,
        /// The underlying error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The SMTP server accepted the connection but did not answer as an SMTP server.
    #[error("SMTP server {server} did not answer the session test")]
    Unanswered {
        /// `host:port`.
        server: String,
    },
    /// The SMTP server could not be reached or refused the mail.
    #[error("cannot send alert mail via SMTP server {server}: {source}")]
    Send {
        /// `host:port`.
        server: String,
        /// The underlying error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// Sends one mail with `subject` and `body` to every recipient of `config`, at once and
/// without any state: for events that are each worth a mail (a refused file, say), not
/// for failures that repeat run after run (the receiver's alerter keeps such state). Nothing is sent when there
/// are no recipients.
///
/// # Errors
///
/// A bad address, or the SMTP server refused or could not be reached.
pub fn send_mail(config: &AlertConfig, subject: &str, body: &str) -> Result<(), MailError> {
    if config.recipients.is_empty() {
        return Ok(());
    }
    let (from, to) = mailboxes(config)?;
    let mut builder = Message::builder()
        .from(from)
        .subject(one_line(subject))
        .header(ContentType::TEXT_PLAIN);
    for r in to {
        builder = builder.to(r);
    }
    let message = builder
        .body(body.to_string())
        .map_err(|source| MailError::Compose { source })?;
    transport(config)?
        .send(&message)
        .map(|_| ())
        .map_err(|source| MailError::Send {
            server: server(config),
            source,
        })
}

/// Checks the mail settings without sending anything: the sender and every recipient
/// parse as mail addresses, and the SMTP server answers (connection, greeting, TLS and
/// login as configured), each step bounded by the SMTP timeout (20 s). Nothing is
/// checked when there are no recipients.
///
/// # Errors
///
/// A bad address, or the SMTP server could not be reached or refused the session.
pub fn check_settings(config: &AlertConfig) -> Result<(), MailError> {
    if config.recipients.is_empty() {
        return Ok(());
    }
    mailboxes(config)?;
    match transport(config)?.test_connection() {
        Ok(true) => Ok(()),
        Ok(false) => Err(MailError::Unanswered {
            server: server(config),
        }),
        Err(source) => Err(MailError::Send {
            server: server(config),
            source,
        }),
    }
}

/// `host:port` of the SMTP server, for messages.
fn server(config: &AlertConfig) -> String {
    format!("{}:{}", config.smtp_host, config.smtp_port)
}

/// The sender and the recipients, parsed.
fn mailboxes(config: &AlertConfig) -> Result<(Mailbox, Vec<Mailbox>), MailError> {
    let parse = |a: &str| {
        a.parse::<Mailbox>().map_err(|source| MailError::Address {
            address: a.to_string(),
            source,
        })
    };
    let from = parse(&config.from)?;
    let to = config
        .recipients
        .iter()
        .map(|r| parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((from, to))
}

/// The SMTP transport the settings describe: TLS mode, port, timeout, credentials.
fn transport(config: &AlertConfig) -> Result<SmtpTransport, MailError> {
    let host = config.smtp_host.as_str();
    let tls_err = |source| MailError::Tls {
        server: server(config),
        source,
    };
    let mut transport = match config.tls {
        TlsMode::None => SmtpTransport::builder_dangerous(host),
        TlsMode::StartTls => SmtpTransport::starttls_relay(host).map_err(tls_err)?,
        TlsMode::Tls => SmtpTransport::relay(host).map_err(tls_err)?,
    }
    .port(config.smtp_port)
    .timeout(Some(SMTP_TIMEOUT));
    if let Some((user, password)) = &config.credentials {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(transport.build())
}

/// Collapses line breaks and other control characters, which have no place in a subject.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_control() || c.is_whitespace()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}
