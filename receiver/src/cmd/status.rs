//! `slony-receiver status`.

use slony_shared::config::ReceiverConfig;

/// Runs `status`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig, _json: bool) -> anyhow::Result<u8> {
    anyhow::bail!("`status` is not available yet in this version (config {})", cfg.source.display())
}
