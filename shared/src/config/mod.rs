//! What both binaries' configurations share: the `[database]` and `[alert]` sections, the
//! error type, and how a config file's names and relative paths are resolved. Each
//! binary's own configuration is in its crate.

mod alert;
mod database;
pub mod shell;

pub use alert::{alert_config, env_var, AlertConfig, RawAlert, TlsMode};
pub(crate) use database::percent_decode;
pub use database::{redact_conninfo, DatabaseConfig, RawDatabase};

use crate::ident::ClusterName;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// A key holds a value that cannot be used.
    #[error("config file {path}: key `{key}`: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key (dotted path).
        key: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// A [`ConfigError::Invalid`] for `key` of the config file at `path`.
pub fn invalid(path: &Path, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The directory the relative paths of the config file `path` are resolved against.
pub fn base_dir(path: &Path) -> PathBuf {
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::path::absolute(&base).unwrap_or(base)
}

/// `p`, made absolute against `base` (the config file's directory).
pub fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// The required `cluster` key of the config file `path`, validated.
pub fn cluster_name(path: &Path, value: Option<&str>) -> Result<ClusterName, ConfigError> {
    let cluster =
        value.ok_or_else(|| invalid(path, "cluster", "missing: set the Slony cluster name"))?;
    ClusterName::new(cluster).map_err(|e| invalid(path, "cluster", e.to_string()))
}
