//! Configuration of the receiver: a TOML file (see `etc/receiver.toml.example`), or the
//! original tools' `key=value` client config.
//!
//! [`raw`] mirrors the file and is only checked for syntax; [`ReceiverConfig`] is the
//! validated, resolved form the commands use (names validated, paths absolute, secrets
//! read from the environment).

mod database;
mod legacy;
mod raw;
mod receiver;

pub use database::{DatabaseConfig, RawDatabase};
pub use receiver::{
    AlertConfig, HousekeepingConfig, LocalConfig, PullConfig, ReceiverConfig, RemoteConfig,
    SshAuth, StatusConfig, TlsMode,
};

use std::path::PathBuf;

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
