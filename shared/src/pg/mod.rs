//! PostgreSQL connections and error texts, the same for both binaries: one way to
//! connect (bounded by the configured timeout, the connection driven by its own task)
//! and one way to tell an operator what the server said. TLS follows libpq's
//! `sslmode` ([`tls`]).

pub mod tls;

use crate::config::DatabaseConfig;
use std::time::Duration;
use tokio_postgres::Client;

/// Why a connection could not be made. The texts never quote the connection string.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings do not parse. tokio-postgres' own message may quote a character
    /// of the string (of a password, say), so none is shown.
    #[error("the settings do not parse as a libpq connection string or URL")]
    Settings,
    /// The TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsConfigError),
    /// The TLS handshake failed: what was wrong, and what to do.
    #[error(transparent)]
    Handshake(#[from] tls::HandshakeError),
    /// The server did not answer within the timeout.
    #[error("timed out")]
    TimedOut,
    /// The server refused or the connection failed: [`describe_error`].
    #[error("{0}")]
    Failed(String),
}

/// Where and how to connect. Its `Debug` shows neither the password nor the
/// connection string (which may hold one).
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// A libpq-style connection string or URL.
    pub conninfo: &'a str,
    /// The password, kept out of `conninfo`.
    pub password: Option<&'a str>,
    /// Bound on connecting.
    pub timeout: Duration,
    /// What `pg_stat_activity` shows for the session.
    pub application_name: &'a str,
}

impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("conninfo", &crate::config::redact_conninfo(self.conninfo))
            .field("password", &self.password.map(|_| "********"))
            .field("timeout", &self.timeout)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl<'a> Target<'a> {
    /// The database of a `[database]` section.
    pub fn of(db: &'a DatabaseConfig, application_name: &'a str) -> Self {
        Target {
            conninfo: &db.conninfo,
            password: db.password.as_deref(),
            timeout: db.connect_timeout,
            application_name,
        }
    }
}

/// Connects, within the target's timeout; the connection runs on a task of its own
/// until the client is dropped.
///
/// # Errors
///
/// [`ConnectError`]: the settings, a timeout, or the server's answer.
pub async fn connect(target: Target<'_>) -> Result<Client, ConnectError> {
    let (conninfo, settings) = tls::split(target.conninfo)?;
    let mut pg: tokio_postgres::Config = conninfo
        .parse()
        .map_err(|_: tokio_postgres::Error| ConnectError::Settings)?;
    if let Some(pw) = target.password {
        pg.password(pw);
    }
    pg.connect_timeout(target.timeout);
    pg.application_name(target.application_name);
    pg.ssl_mode(settings.negotiation());
    let connector = settings.connector()?;
    let failed = |e: tokio_postgres::Error| {
        let text = describe_error(&e);
        match settings.handshake_error(
            connector.as_ref().and_then(tls::Connector::take_rejection),
            &text,
        ) {
            Some(why) => ConnectError::Handshake(why),
            None => ConnectError::Failed(text),
        }
    };
    let name = target.application_name.to_string();
    let client = match &connector {
        None => {
            let (client, connection) =
                tokio::time::timeout(target.timeout, pg.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| ConnectError::TimedOut)?
                    .map_err(failed)?;
            drive(connection, name);
            client
        }
        Some(tls) => {
            let (client, connection) =
                tokio::time::timeout(target.timeout, pg.connect(tls.make.clone()))
                    .await
                    .map_err(|_| ConnectError::TimedOut)?
                    .map_err(failed)?;
            drive(connection, name);
            client
        }
    };
    Ok(client)
}

/// Runs a connection on a task of its own until its client is dropped.
fn drive<S, T>(connection: tokio_postgres::Connection<S, T>, name: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(application = %name, error = %e, "database connection ended");
        }
    });
}

/// The server's message as psql shows it (severity, message, detail, hint, context and
/// SQLSTATE); for a connection error, the error and its causes (tokio-postgres' own
/// text says only "db error").
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}:  {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!("\n  DETAIL:  {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("\n  HINT:  {h}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("\n  CONTEXT:  {w}"));
            }
            s.push_str(&format!(" (SQLSTATE {})", db.code().code()));
            s
        }
        None => {
            // Connection errors keep their cause (e.g. "Connection refused") in the source.
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

/// Whether the error means the connection is gone (rather than a statement failing).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // A FATAL or PANIC report ends the session (a server shutdown says 57P01 this
        // way); class 08 is a connection exception. Neither is about the statement.
        Some(db) => {
            matches!(
                db.parsed_severity(),
                Some(
                    tokio_postgres::error::Severity::Fatal | tokio_postgres::error::Severity::Panic
                )
            ) || db.code().code().starts_with("08")
        }
        None => e.code().is_none(),
    }
}

/// A failed statement, with what was being done: `<what>: <describe_error>`.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct PgError {
    /// What was being done.
    pub what: String,
    /// [`describe_error`] of the failure.
    pub message: String,
}

/// For `map_err`: the error of a statement run while doing `what`.
pub fn doing(what: &str) -> impl FnOnce(tokio_postgres::Error) -> PgError + '_ {
    move |e| PgError {
        what: what.to_string(),
        message: describe_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_s_debug_hides_its_passwords() {
        let t = Target {
            conninfo: "host=db user=app password=hunter2",
            password: Some("sekrit"),
            timeout: Duration::from_secs(5),
            application_name: "test",
        };
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("sekrit"),
            "{shown}"
        );
        assert!(shown.contains("host=db"), "{shown}");
    }
}
