//! `slony-receiver subscribe-series`: create or change this site's subscription (the
//! protocol is [`crate::subscribe`]). The list is validated first, before any login or
//! change, and the command holds the run lock, so no pull applies archives meanwhile.
//! The list may be the original tools' `subscribe_list.cfg`: what it asks that the
//! request cannot carry (the JMD flags) is printed, never sent.

use crate::config::ReceiverConfig;
use crate::exit;
use crate::local;
use crate::subscribe::{self, Options};

/// Runs `subscribe-series`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig, opts: &Options) -> anyhow::Result<u8> {
    if cfg.remote.trigger_dir.is_empty() {
        anyhow::bail!(crate::config::ConfigError::Invalid {
            path: cfg.source.clone(),
            key: "remote.trigger_dir".into(),
            reason: "missing: subscribe-series needs the provider's trigger directory".into(),
        });
    }
    let _lock = match local::take_run_lock(cfg)? {
        Ok(lock) => lock,
        Err(held) => {
            eprintln!("slony-receiver: {held}; subscribe-series waits for no pull: run it again when that run has finished");
            return Ok(exit::ALREADY_RUNNING);
        }
    };
    // A bad list is a usage error (exit 2), naming the line.
    let series = match &opts.list {
        Some(list) => match subscribe::read_list(list) {
            Ok(read) => {
                // What the list asks that the request cannot carry, or what the original
                // tools did differently with a line: the operator reads it before the
                // pause begins.
                for note in &read.notes {
                    eprintln!(
                        "slony-receiver: subscribe list {} line {}: {}",
                        list.display(),
                        note.line,
                        note.message
                    );
                }
                Some(read.series)
            }
            Err(e) => {
                eprintln!("slony-receiver: {e:#}");
                return Ok(exit::CONFIG);
            }
        },
        None => None,
    };
    subscribe::run(cfg, opts, series).await
}
