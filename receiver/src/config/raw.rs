//! The receiver config exactly as written in the file: serde structs, defaults, no meaning yet.

use serde::Deserialize;
pub use slony_shared::config::{RawAlert, RawDatabase};
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReceiver {
    pub cluster: Option<String>,
    pub node: Option<String>,
    pub slony_node_id: Option<u32>,
    #[serde(default)]
    pub remote: RawRemote,
    #[serde(default)]
    pub local: RawLocal,
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub pull: RawPull,
    #[serde(default)]
    pub housekeeping: RawHousekeeping,
    #[serde(default)]
    pub alert: RawAlert,
    #[serde(default)]
    pub status: RawStatus,
    #[serde(default)]
    pub sql: RawSql,
    #[serde(default)]
    pub subscribe: RawSubscribe,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<PathBuf>,
    pub key_passphrase_env: Option<String>,
    pub use_agent: Option<bool>,
    pub known_hosts: Option<PathBuf>,
    pub log_dir: Option<String>,
    pub trigger_dir: Option<String>,
    pub allow_shared_account: Option<bool>,
    pub connect_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    pub log_dir: Option<PathBuf>,
    pub die_dir: Option<PathBuf>,
    pub original_client_lock: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPull {
    pub poll_interval_secs: Option<u64>,
    pub fetch_ahead: Option<usize>,
    pub fetch_ahead_mb: Option<u64>,
    pub fetch_sessions: Option<usize>,
    pub vacuum_every: Option<u64>,
    pub group_commit: Option<usize>,
    pub metrics_listen: Option<String>,
    pub acknowledge: Option<bool>,
    pub ddl_search_path: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHousekeeping {
    pub batch_size: Option<u64>,
    pub keep_days: Option<u64>,
    pub keep_count: Option<u64>,
    pub schedule: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    pub max_lag_archives: Option<u64>,
    pub max_lag_secs: Option<u64>,
}

/// `[sql]`: what the provider's SQL may do beyond the default rules.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    pub allow: Option<Vec<String>>,
}

/// `[subscribe]`: what `subscribe-series` does unless its command line says otherwise.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSubscribe {
    pub attempts: Option<u32>,
    pub interval_secs: Option<u64>,
    pub archive: Option<u8>,
    pub retention: Option<u32>,
    pub tapegroup: Option<u32>,
}
