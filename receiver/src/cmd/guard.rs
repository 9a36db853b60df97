//! `slony-receiver guard on|off|check`: keep the replica read-only for ordinary sessions
//! (see [`crate::guard`] for the rule that picks the tables and how archives pass).
//!
//! - `on` installs or repairs the guard on every replicated table (idempotent);
//! - `off` removes it from every table, and the guard function;
//! - `check` lists the replicated tables without a working guard and exits
//!   [`exit::UNHEALTHY`] if there is any.

use crate::cli::GuardAction;
use crate::config::ReceiverConfig;
use crate::exit;
use crate::guard;
use crate::promote;

/// Runs `guard`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig, action: GuardAction) -> anyhow::Result<u8> {
    let mut client = crate::replica::connect(cfg).await?;
    // Only a database initialised for log shipping is a replica to guard.
    crate::replica::read_position(&client, &cfg.cluster).await?;
    let promoted = promote::read_marker(cfg)?;
    match action {
        GuardAction::On => {
            if let Some(m) = promoted {
                eprintln!(
                    "slony-receiver: this replica was promoted on {} at archive {} ({}); it is the writable database now, so the guard is not installed",
                    m.promoted_at,
                    m.counter,
                    promote::marker_path(cfg).display()
                );
                return Ok(exit::PROMOTED);
            }
            let done = guard::protect_with(cfg, &mut client).await?;
            if done.guarded.is_empty() {
                println!("guard on: no replicated tables found in this database; nothing to guard");
            } else {
                println!(
                    "guard on: {} replicated table(s) refuse INSERT, UPDATE, DELETE and TRUNCATE from ordinary sessions; archives still apply",
                    done.guarded.len()
                );
                if done.changed.is_empty() {
                    println!("  all were already guarded");
                } else {
                    println!("  newly guarded or repaired: {}", join(&done.changed));
                }
            }
            Ok(exit::OK)
        }
        GuardAction::Off => {
            let removed = guard::disable(&mut client, &cfg.cluster, None).await?;
            if removed.is_empty() {
                println!("guard off: no table was guarded; nothing to remove");
            } else {
                println!(
                    "guard off: removed from {} table(s): {}",
                    removed.len(),
                    removed.join(", ")
                );
                if promoted.is_none() {
                    println!("  ordinary sessions can write to them now. A local change makes the replica differ from the provider (`slony-receiver verify` shows it) and can make a later archive fail; run `slony-receiver guard on` to restore the guard");
                }
            }
            Ok(exit::OK)
        }
        GuardAction::Check => {
            let tables = guard::replicated_tables(&client, &cfg.cluster).await?;
            let states = guard::inspect(&client, &cfg.cluster, &tables.tables).await?;
            let bad: Vec<(String, String)> = states
                .iter()
                .filter_map(|g| g.problem().map(|p| (g.table.to_string(), p)))
                .collect();
            if let Some(m) = promoted {
                println!(
                    "guard check: this replica was promoted on {} at archive {}; the guard was removed on purpose ({} of {} table(s) unguarded)",
                    m.promoted_at,
                    m.counter,
                    bad.len(),
                    states.len()
                );
                return Ok(exit::OK);
            }
            if bad.is_empty() {
                println!(
                    "guard check: all {} replicated table(s) are guarded",
                    states.len()
                );
                return Ok(exit::OK);
            }
            println!(
                "guard check: {} of {} replicated table(s) are NOT guarded (ordinary sessions can write to them):",
                bad.len(),
                states.len()
            );
            let width = bad.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
            for (t, why) in &bad {
                println!("  {t:<width$}  {why}");
            }
            println!(
                "run `slony-receiver guard on {}` to guard them",
                cfg.config_arg()
            );
            Ok(exit::UNHEALTHY)
        }
    }
}

fn join(tables: &[slony_shared::ident::QualifiedTable]) -> String {
    tables
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
