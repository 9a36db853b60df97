//! `slony-receiver`: the subscriber-side agent.
//!
//! main parses the command line, loads the configuration, sets up logging, dispatches to
//! a subcommand in [`cmd`] and turns the result into an exit code (see [`exit`]).

mod alert;
mod backoff;
mod cli;
mod cmd;
mod config;
mod execute;
mod exit;
mod guard;
mod housekeeping;
mod local;
mod metrics;
mod privilege;
mod promote;
mod provider;
mod pull;
mod replica;
mod subscribe;

use crate::config::ReceiverConfig;
use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, ConfigArg};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    slony_shared::logging::init(&cli.log_level);
    match run(cli) {
        Ok(code) => exit::code(code),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("slony-receiver: {e:#}");
            exit::code(exit::for_error(&e))
        }
    }
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<ReceiverConfig> {
    match (&arg.config, &arg.legacy_config) {
        (Some(p), _) => Ok(ReceiverConfig::load(p)?),
        (None, Some(p)) => Ok(ReceiverConfig::load_legacy(p)?),
        (None, None) => anyhow::bail!("give --config FILE or --legacy-config FILE"),
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Pull {
            config,
            once,
            fail_if_paused,
        } => {
            let cfg = load_config(&config)?;
            let reload = || load_config(&config);
            runtime.block_on(cmd::pull::run(&cfg, reload, once, fail_if_paused))
        }
        Command::Init {
            config,
            counter,
            created,
            apply_role,
            no_schema,
        } => {
            let cfg = load_config(&config)?;
            let counter: slony_shared::counter::Counter =
                counter.to_string().parse().context("--counter")?;
            match apply_role {
                Some(role) => runtime.block_on(privilege::apply_role(
                    &cfg,
                    &privilege::ApplyRole {
                        role: &role,
                        create_schema: !no_schema,
                        counter,
                        created: &created,
                    },
                )),
                None => runtime.block_on(cmd::init::run(&cfg, counter, &created)),
            }
        }
        Command::Housekeeping { config } => {
            let cfg = load_config(&config)?;
            runtime.block_on(cmd::housekeeping::run(&cfg))
        }
        Command::SubscribeSeries {
            config,
            list,
            attempts,
            interval_secs,
            archive,
            retention,
            tapegroup,
            abort,
        } => {
            let cfg = load_config(&config)?;
            let opts = subscribe::Options {
                list,
                attempts,
                interval: std::time::Duration::from_secs(interval_secs),
                archive,
                retention,
                tapegroup,
                abort,
            };
            runtime.block_on(cmd::subscribe_series::run(&cfg, &opts))
        }
        Command::Status { config, json } => {
            let cfg = load_config(&config)?;
            runtime.block_on(cmd::status::run(&cfg, json))
        }
        Command::Guard { config, action } => {
            let cfg = load_config(&config)?;
            runtime.block_on(cmd::guard::run(&cfg, action))
        }
        Command::Verify {
            config,
            reference,
            reference_password_env,
            tables,
        } => {
            let cfg = load_config(&config)?;
            let password =
                match reference_password_env {
                    Some(var) => Some(std::env::var(&var).map_err(|_| {
                        crate::config::ConfigError::Invalid {
                            path: cfg.source.clone(),
                            key: "--reference-password-env".into(),
                            reason: format!("environment variable {var} is not set (or not UTF-8)"),
                        }
                    })?),
                    None => None,
                };
            runtime.block_on(cmd::verify::run(
                &cfg,
                &reference,
                password.as_deref(),
                &tables,
            ))
        }
        Command::Promote { config } => {
            let cfg = load_config(&config)?;
            runtime.block_on(cmd::promote::run(&cfg))
        }
    }
}
