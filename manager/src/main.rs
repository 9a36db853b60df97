//! `slony-manager`: the provider-side (webdb) daemon.
//!
//! main parses the command line, sets up logging, loads the configuration, dispatches to
//! a subcommand and turns the result into an exit code: 0 success (including a clean
//! shutdown on SIGTERM), 1 a runtime failure, 2 a configuration or command-line error.
//!
//! # Layout
//!
//! - [`cli`]: the command line.
//! - [`config`]: the TOML configuration, validated.
//! - [`daemon`]: `run`: the event loop (file events, rescans, signals).
//! - [`context`]: what the daemon's loop and its request tasks share.
//! - [`retry`]: when the daemon tries a failed request step again.
//! - [`request`]: the request state machine and its state file; [`request::flow`], its
//!   steps (accept, generate, publish, finish).
//! - [`site`]: a site's table list and how a request changes it.
//! - [`sqlgen`]: the snapshot SQL (tracking schema, tables, data).
//! - [`cutter`]: the per-site archive streams cut from slon's archive directory.
//! - [`housekeeping`]: the `housekeeping` command: batches and retention per site.
//! - [`cancel`]: the `cancel` command: withdraw a request whose site went away.
//! - [`status`]: the `status` command.
//! - [`check`]: the `check` command: one verdict per check of the provider.
//! - [`import`]: the `import-legacy` command: a provider of the original tools taken over.
//! - [`rejected`]: refused files, moved aside.
//! - [`fsutil`]: atomic writes and idempotent removals.

mod alert;
mod cancel;
mod check;
mod cli;
mod config;
mod context;
mod cutter;
mod daemon;
mod exchange;
mod fsutil;
mod housekeeping;
mod import;
mod registry;
mod rejected;
mod request;
mod retry;
mod site;
mod sqlgen;
mod status;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command};
use config::ManagerConfig;
use std::process::ExitCode;

/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for a bad configuration (clap uses 2 for bad command lines too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = match cli.take_command() {
        Ok(command) => command,
        Err(code) => return code,
    };
    slony_shared::logging::init(&cli.log_level, cli.log_format);
    match run(command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("slony-manager: {e:#}");
            let config_error = e.chain().any(|c| {
                c.downcast_ref::<slony_shared::config::ConfigError>()
                    .is_some()
            });
            ExitCode::from(if config_error {
                EXIT_CONFIG
            } else {
                EXIT_FAILURE
            })
        }
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run { config } => {
            let cfg = ManagerConfig::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            // The daemon's loop runs on this thread; its tasks on the runtime's workers.
            runtime.block_on(daemon::run(cfg))
        }
        Command::Cut { config } => {
            let cfg = ManagerConfig::load(&config)?;
            cutter::run_once(&cfg)
        }
        Command::Housekeeping { config } => {
            let cfg = ManagerConfig::load(&config)?;
            housekeeping::run(&cfg)
        }
        Command::Cancel {
            config,
            node,
            reason,
        } => {
            let cfg = ManagerConfig::load(&config)?;
            cancel::run(&cfg, &node, reason.as_deref())
        }
        Command::Check {
            config,
            json,
            nagios,
            max_archive_age_secs,
            max_lag_archives,
        } => {
            let opts = check::Options {
                format: slony_shared::check::Format::from_flags(json, nagios),
                max_archive_age: std::time::Duration::from_secs(max_archive_age_secs),
                max_lag_archives,
            };
            check::run(ManagerConfig::load(&config).map_err(Into::into), &opts)
        }
        Command::ImportLegacy {
            legacy_config,
            state_dir,
            write_config,
            dry_run,
            accounts,
            acknowledged,
            password_env,
        } => import::run(&import::Options {
            legacy_config,
            state_dir,
            write_config,
            dry_run,
            accounts,
            acknowledged,
            password_env,
        }),
        Command::Status { config, json } => {
            let cfg = ManagerConfig::load(&config)?;
            status::run(&cfg, json)
        }
    }
}
