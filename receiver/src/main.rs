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
use slony_shared::ident::QualifiedTable;
use std::process::ExitCode;
use tokio::runtime::Runtime;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = match cli.take_command() {
        Ok(command) => command,
        Err(code) => return code,
    };
    slony_shared::logging::init(&cli.log_level, cli.log_format);
    match run(command) {
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

/// Runs the subcommand on a runtime of two workers; returns its exit code.
fn run(command: Command) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match command {
        Command::Pull {
            config,
            once,
            fail_if_paused,
        } => pull(&runtime, &config, once, fail_if_paused),
        Command::Init {
            config,
            counter,
            created,
            apply_role,
            no_schema,
        } => init(
            &runtime,
            &config,
            counter,
            &created,
            apply_role.as_deref(),
            no_schema,
        ),
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
            let flags = subscribe::Overrides {
                attempts,
                interval_secs,
                archive,
                retention,
                tapegroup,
            };
            let opts = subscribe::Options::new(&cfg.subscribe, flags, list, abort);
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
        } => verify(
            &runtime,
            &config,
            &reference,
            reference_password_env.as_deref(),
            &tables,
        ),
        Command::Check {
            config,
            json,
            nagios,
            mail,
        } => {
            let format = slony_shared::check::Format::from_flags(json, nagios);
            runtime.block_on(cmd::check::run(load_config(&config), format, mail))
        }
        Command::Migrate {
            legacy_config,
            output,
            force,
        } => runtime.block_on(cmd::migrate::run(&cmd::migrate::Request {
            legacy_config: &legacy_config,
            output: output.as_deref(),
            force,
        })),
        Command::Promote { config } => {
            let cfg = load_config(&config)?;
            runtime.block_on(cmd::promote::run(&cfg))
        }
    }
}

/// `pull`, which may load the configuration again while it runs.
fn pull(
    runtime: &Runtime,
    config: &ConfigArg,
    once: bool,
    fail_if_paused: bool,
) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let reload = || load_config(config);
    runtime.block_on(cmd::pull::run(&cfg, reload, once, fail_if_paused))
}

/// `init`: the tracking schema at a counter, or with `--apply-role`, the apply role.
fn init(
    runtime: &Runtime,
    config: &ConfigArg,
    counter: u64,
    created: &str,
    apply_role: Option<&str>,
    no_schema: bool,
) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let counter: slony_shared::counter::Counter =
        counter.to_string().parse().context("--counter")?;
    match apply_role {
        Some(role) => runtime.block_on(privilege::apply_role(
            &cfg,
            &privilege::ApplyRole {
                role,
                create_schema: !no_schema,
                counter,
                created,
            },
        )),
        None => runtime.block_on(cmd::init::run(&cfg, counter, created)),
    }
}

/// `verify`, with the reference database's password read from the environment variable
/// `--reference-password-env` names.
fn verify(
    runtime: &Runtime,
    config: &ConfigArg,
    reference: &str,
    password_env: Option<&str>,
    tables: &[QualifiedTable],
) -> anyhow::Result<u8> {
    let cfg = load_config(config)?;
    let password = match password_env {
        Some(var) => Some(
            std::env::var(var).map_err(|_| crate::config::ConfigError::Invalid {
                path: cfg.source.clone(),
                key: "--reference-password-env".into(),
                reason: format!("environment variable {var} is not set (or not UTF-8)"),
            })?,
        ),
        None => None,
    };
    runtime.block_on(cmd::verify::run(
        &cfg,
        reference,
        password.as_deref(),
        tables,
    ))
}
