//! The command line (what the user typed, checked only for syntax).

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Slony-I log-shipping provider manager: subscription requests and per-site streams.
#[derive(Debug, Parser)]
#[command(name = "slony-manager", version, about)]
pub struct Cli {
    /// Log level filter (e.g. info, debug, slony_manager=trace); RUST_LOG also works.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Log line format: text (default) or json (one object per line, for log shippers).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: slony_shared::logging::LogFormat,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the trigger directory and serve subscription requests until SIGTERM.
    Run {
        /// The TOML configuration (see etc/manager.toml.example).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Cut every complete archive of archive_dir into the site directories, then exit
    /// (what `run` does continuously; refused while `run` is running).
    Cut {
        /// The TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Pack each site's archives into tar.gz batches and delete what the retention
    /// policy no longer keeps.
    Housekeeping {
        /// The TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Withdraw a site's published subscription request (its subscriber went away);
    /// the daemon rolls it back as if the site had reported a failure.
    Cancel {
        /// The TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The site whose request is withdrawn.
        #[arg(long, value_name = "NODE")]
        node: String,
        /// Why, for the site and the logs.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Show the sites, their tables and the requests in progress.
    Status {
        /// The TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}
