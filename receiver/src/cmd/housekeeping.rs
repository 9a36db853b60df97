//! `slony-receiver housekeeping`.

use slony_shared::config::ReceiverConfig;

/// Runs `housekeeping`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig) -> anyhow::Result<u8> {
    anyhow::bail!("`housekeeping` is not available yet in this version (config {})", cfg.source.display())
}
