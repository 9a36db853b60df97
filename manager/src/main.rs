//! `slony-manager`: the provider-side daemon (subscription requests, per-site streams).
//!
//! Only the command-line surface exists so far; the daemon is built on top of the
//! receiver core.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Slony-I log-shipping provider manager")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the trigger directory and cut per-site streams.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            eprintln!(
                "slony-manager: `run` is not available yet in this version (config {})",
                config.display()
            );
            ExitCode::from(2)
        }
    }
}
