//! Logging for both binaries: tracing lines on stderr, at `level` unless `RUST_LOG`
//! says otherwise. As text: compact with colours on a terminal, plain lines for
//! journald, cron mail and log files. As JSON: one object per line, the event's fields
//! flattened beside `timestamp`, `level`, `target` and `message`, for log shippers.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Installs the process's tracing subscriber (once, at start).
pub fn init(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Server NOTICEs (one per archive) are logged by tokio-postgres at info: too chatty.
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},tokio_postgres=warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text if std::io::stderr().is_terminal() => builder.compact().init(),
        LogFormat::Text => builder.with_ansi(false).with_target(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_ones_are_named() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert!(e.contains("\"xml\"") && e.contains("text or json"), "{e}");
    }
}
