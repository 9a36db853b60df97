//! The command line (what the user typed, checked only for syntax).

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use slony_shared::generate::{self, Artefact};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Slony-I log-shipping provider manager: subscription requests and per-site streams.
#[derive(Debug, Parser)]
#[command(name = "slony-manager", version, about, arg_required_else_help = true)]
pub struct Cli {
    /// Log level filter (e.g. info, debug, slony_manager=trace); RUST_LOG also works.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,

    /// Log line format: text (default) or json (one object per line, for log shippers).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: slony_shared::logging::LogFormat,

    /// Print a man page or a shell's completions for this command line, and exit (for
    /// packaging; see `shared::generate`).
    #[arg(long, hide = true, value_name = "WHAT")]
    pub generate: Option<Artefact>,

    /// The subcommand: required, except with `--generate`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The subcommand to run, or the exit code once `--generate` printed its artefact.
    /// Exits with a usage error when neither or both are given.
    pub fn take_command(&mut self) -> Result<Command, ExitCode> {
        match (self.generate, self.command.take()) {
            (None, Some(command)) => Ok(command),
            (Some(what), None) => {
                let mut out = std::io::stdout().lock();
                match generate::write(Cli::command(), what, &mut out).and_then(|()| out.flush()) {
                    Ok(()) => Err(ExitCode::SUCCESS),
                    Err(e) => {
                        eprintln!("slony-manager: --generate: {e}");
                        Err(ExitCode::FAILURE)
                    }
                }
            }
            (Some(_), Some(_)) => Cli::command()
                .error(
                    ErrorKind::ArgumentConflict,
                    "--generate takes no subcommand",
                )
                .exit(),
            (None, None) => Cli::command()
                .error(
                    ErrorKind::MissingSubcommand,
                    "'slony-manager' requires a subcommand (see --help)",
                )
                .exit(),
        }
    }
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
    /// Check that the provider is set up to serve its sites: one line per check, OK or
    /// FAILED (exit 1 if any failed; with --nagios, Nagios's codes).
    Check {
        /// The TOML configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object instead of lines.
        #[arg(long, conflicts_with = "nagios")]
        json: bool,
        /// Print one Nagios plugin line and exit 0 (OK) or 2 (CRITICAL).
        #[arg(long)]
        nagios: bool,
        /// The newest archive in archive_dir may be at most this old (slon writes one
        /// every SYNC).
        #[arg(long, value_name = "SECS", default_value_t = 900)]
        max_archive_age_secs: u64,
        /// A site may be at most this many archives behind what was cut for it.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        max_lag_archives: u64,
    },
    /// Take over a provider the original tools ran: read their repserver.cfg, parser
    /// configuration and site lists, print the plan, and (without --dry-run, once every
    /// inconsistency is acknowledged) write the manager's state and configuration.
    ImportLegacy {
        /// The original tools' repserver.cfg (read, never run).
        #[arg(long, value_name = "FILE")]
        legacy_config: PathBuf,
        /// The manager's state directory to fill (its subscribers_dir): absent or
        /// holding no site.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The manager configuration to write (never overwritten).
        #[arg(long, value_name = "FILE")]
        write_config: PathBuf,
        /// Print the plan and every inconsistency; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// A site's Unix account (default: the node's name); once per site.
        #[arg(long = "account", value_name = "NODE=USER")]
        accounts: Vec<String>,
        /// Accept the inconsistency with this id (as the plan names it); once per item.
        #[arg(long = "acknowledge", value_name = "ID")]
        acknowledged: Vec<String>,
        /// The environment variable holding the provider database's password (also
        /// written into the configuration as database.password_env).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, as the man page and the completions must name it.
    const SUBCOMMANDS: [&str; 6] = [
        "run",
        "cut",
        "housekeeping",
        "cancel",
        "status",
        "import-legacy",
    ];

    fn generated(what: Artefact) -> String {
        let mut out = Vec::new();
        generate::write(Cli::command(), what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_man_page_and_completions_name_every_subcommand() {
        let page = generated(Artefact::Man);
        assert!(page.contains("\n.TH slony-manager 1"), "{page}");
        for what in [
            Artefact::CompleteBash,
            Artefact::CompleteZsh,
            Artefact::CompleteFish,
        ] {
            let script = generated(what);
            for name in SUBCOMMANDS {
                assert!(script.contains(name), "{what:?} lacks {name}");
            }
        }
        for name in SUBCOMMANDS {
            let entry = format!(".SS \"slony-manager {name}\"");
            assert!(page.contains(&entry), "the man page lacks {entry}");
        }
        assert!(
            !page.contains("\\-\\-generate"),
            "the man page shows --generate"
        );
    }

    #[test]
    fn generate_stands_alone() {
        let cli = Cli::try_parse_from(["slony-manager", "--generate", "man"]).unwrap();
        assert_eq!(cli.generate, Some(Artefact::Man));
        assert!(cli.command.is_none());
    }
}
