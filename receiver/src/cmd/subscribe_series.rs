//! `slony-receiver subscribe-series`: see [`crate::subscribe`].

use crate::config::ReceiverConfig;
use crate::subscribe::{self, Options};

/// Runs `subscribe-series`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig, opts: &Options) -> anyhow::Result<u8> {
    subscribe::run(cfg, opts).await
}
