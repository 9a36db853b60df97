//! Logging for both binaries: tracing lines on stderr, at `level` unless `RUST_LOG`
//! says otherwise; compact with colours on a terminal, plain lines for journald, cron
//! mail and log files.

use std::io::IsTerminal;

/// Installs the process's tracing subscriber (once, at start).
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Server NOTICEs (one per archive) are logged by tokio-postgres at info: too chatty.
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},tokio_postgres=warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.compact().init();
    } else {
        builder.with_ansi(false).with_target(false).init();
    }
}
