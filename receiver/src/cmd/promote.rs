//! `slony-receiver promote`: turn the replica into a writable database, on purpose and
//! for good (a failover, or the end of the provider).
//!
//! 1. Refuses while another command holds the run lock (a `pull` applying archives), and
//!    while a subscription request is in progress.
//! 2. Writes the marker `<site_dir>/PROMOTED` (when, and the last archive applied with its
//!    creation time, from `sl_archive_tracking`). `pull` refuses to run while it exists
//!    ([`exit::PROMOTED`]): a promoted database must never receive the provider's
//!    archives again. The marker is written before anything changes in the database, so
//!    an interrupted promote never leaves a writable database that pull still feeds.
//! 3. Removes the guard triggers and the guard function.
//! 4. Checks the sequences that feed key columns and says what the operator must do next.
//!
//! Running it again reports that the replica is already promoted (and finishes step 3 if
//! an earlier run was interrupted); exit 0.

use crate::config::ReceiverConfig;
use crate::exit;
use crate::local;
use crate::promote::{self, Promoted, Promotion};
use std::path::Path;

/// Runs `promote`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig) -> anyhow::Result<u8> {
    let _lock = match local::take_run_lock(cfg)? {
        Ok(lock) => lock,
        Err(held) => {
            eprintln!(
                "slony-receiver: {held}: a pull may be applying archives right now. Not promoting. Stop it (and the cron line, timer or service that starts it), then run promote again"
            );
            return Ok(exit::ALREADY_RUNNING);
        }
    };
    let marker_file = promote::marker_path(cfg);
    match promote::promote(cfg).await? {
        Promotion::Already { marker: m, removed } => {
            println!(
                "already promoted: this database was promoted on {} at archive {} (created {}); nothing to do",
                m.promoted_at, m.counter, m.counter_created
            );
            println!(
                "  marker: {} (pull refuses to run while it exists)",
                marker_file.display()
            );
            if !removed.is_empty() {
                println!(
                    "  guard removed from {} table(s) left over: {}",
                    removed.len(),
                    removed.join(", ")
                );
            }
            Ok(exit::OK)
        }
        Promotion::SubscriptionInProgress(state) => {
            eprintln!(
                "slony-receiver: a subscription request is in progress ({}). Not promoting. Finish it with `slony-receiver subscribe-series {}`, or cancel it with --abort, then run promote again",
                state.display(),
                cfg.config_arg()
            );
            Ok(exit::ALREADY_RUNNING)
        }
        Promotion::Done(done) => {
            print!("{}", report(cfg, &marker_file, &done));
            Ok(exit::OK)
        }
    }
}

/// What promote did and what the operator must do next.
fn report(cfg: &ReceiverConfig, marker_file: &Path, done: &Promoted) -> String {
    let Promoted {
        marker,
        position,
        removed,
        sequences,
        waiting,
    } = done;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "promoted: site {} (cluster {}) is now a writable database",
        cfg.node, cfg.cluster
    ));
    line(format!("  promoted at:          {}", marker.promoted_at));
    line(format!(
        "  last archive applied: {} (created {} on the provider)",
        position.counter, marker.counter_created
    ));
    line(format!(
        "  marker:               {} (pull refuses to run while it exists)",
        marker_file.display()
    ));
    line(format!(
        "  guard:                {}",
        if removed.is_empty() {
            "no table was guarded".to_string()
        } else {
            format!(
                "removed from {} table(s): {}",
                removed.len(),
                removed.join(", ")
            )
        }
    ));
    if let (Some(first), Some(last)) = (waiting.first(), waiting.last()) {
        line(format!(
            "  NOTE: {} archive(s) were downloaded but not applied ({first}..{last} in {}); their changes are NOT in this database",
            waiting.len(),
            cfg.incoming_dir().display()
        ));
    }
    line(String::new());
    line("What to do next:".into());
    line(format!(
        "  1. Stop every scheduled pull of this site (config {}): remove its cron line, or run `systemctl disable --now slony-receiver-pull.timer slony-receiver.service`. Every pull run refuses from now on (exit {}).",
        cfg.source.display(),
        exit::PROMOTED
    ));
    line(format!(
        "  2. Point the applications at this database ({}) and give their users the write privileges they need.",
        cfg.database.redacted()
    ));
    line("  3. Sequences hold the values of the last archive applied, and only the sequences of the provider's replication set were ever updated: check every sequence that feeds a key before applications insert rows.".into());
    if sequences.is_empty() {
        line(
            "     No sequence feeding a key column of a replicated table is behind its column."
                .into(),
        );
    } else {
        for s in sequences {
            line(format!("     - {s}"));
        }
    }
    line(format!(
        "  4. The provider ({}) no longer feeds this database: changes made there after archive {} are not here, and changes made here never go back. To follow the provider again, re-initialise a replica (a fresh database and `slony-receiver subscribe-series`), then remove {}.",
        cfg.remote.host,
        position.counter,
        marker_file.display()
    ));
    line(format!(
        "  5. Tell the provider's operator that site {} is gone, so they stop cutting its stream (and can unsubscribe it).",
        cfg.node
    ));
    out
}
