//! The command line (what the user typed, checked only for syntax).

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use slony_shared::generate::{self, Artefact};
use slony_shared::ident::QualifiedTable;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Slony-I log-shipping receiver: pulls archives over SSH and applies them in order.
#[derive(Debug, Parser)]
#[command(name = "slony-receiver", version, about, arg_required_else_help = true)]
pub struct Cli {
    /// Log level filter (e.g. info, debug, slony_receiver=trace); RUST_LOG also works.
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
                        eprintln!("slony-receiver: --generate: {e}");
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
                    "'slony-receiver' requires a subcommand (see --help)",
                )
                .exit(),
        }
    }
}

/// Which configuration file to read.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ConfigArg {
    /// The TOML configuration (see etc/receiver.toml.example).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The original tools' key=value client config (repclient.cfg): read as bash assigns
    /// it, never run (see `migrate` to turn it into TOML).
    #[arg(long, value_name = "FILE")]
    pub legacy_config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch and apply every new archive (once with --once; otherwise keep polling).
    Pull {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Run once and exit (for cron or a systemd timer).
        #[arg(long)]
        once: bool,
        /// Exit with code 10 instead of 0 when the pause (die) file is present.
        #[arg(long)]
        fail_if_paused: bool,
    },
    /// Prepare the replica database for log shipping (the tracking schema), at a counter;
    /// or, with --apply-role, set up an ordinary role to apply archives.
    Init {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// The archive the replica's data corresponds to (0: nothing applied yet).
        #[arg(long, default_value_t = 0)]
        counter: u64,
        /// When the provider created that archive (as Slony writes it).
        #[arg(long, default_value = "1970-01-01 00:00:00")]
        created: String,
        /// Connected as a superuser, make ROLE (created if missing, LOGIN, no password) the
        /// one that applies archives: SET on session_replication_role, CONNECT and CREATE
        /// on the database, ownership of the tracking schema (created if missing, its
        /// functions re-created) and of the replicated tables and sequences. PostgreSQL
        /// 15 or later. Idempotent: run again, it fixes ownership and grants.
        #[arg(long, value_name = "ROLE")]
        apply_role: Option<String>,
        /// With --apply-role: do not create a missing tracking schema (a new site, whose
        /// subscribe-series creates it as ROLE).
        #[arg(long, requires = "apply_role")]
        no_schema: bool,
    },
    /// Pack applied archives into tar.gz batches and apply the retention policy.
    Housekeeping {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the replica's position, lag behind the provider, and health.
    Status {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check that this site is set up to work: one line per check, OK or FAILED (exit 20
    /// if any failed; with --nagios, Nagios's codes).
    Check {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of lines.
        #[arg(long, conflicts_with = "nagios")]
        json: bool,
        /// Print one Nagios plugin line and exit 0 (OK) or 2 (CRITICAL).
        #[arg(long)]
        nagios: bool,
        /// Also send a test alert mail through the alerter, and report it.
        #[arg(long)]
        mail: bool,
    },
    /// Keep the replica read-only: guard every replicated table against local writes
    /// (archives still apply), remove the guard, or check it.
    Guard {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// What to do.
        #[arg(value_enum)]
        action: GuardAction,
    },
    /// Compare row counts and row hashes of replicated tables with a reference database.
    Verify {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// The reference database (libpq-style connection string or URL), e.g. the
        /// provider or a copy of it. Keep its password out of it (the command line is
        /// visible to every local user): use --reference-password-env.
        #[arg(long, value_name = "CONNINFO")]
        reference: String,
        /// Environment variable holding the reference database's password.
        #[arg(long, value_name = "VAR")]
        reference_password_env: Option<String>,
        /// Only these tables (schema.table, comma-separated); default: every replicated table.
        #[arg(long, value_name = "TABLES", value_delimiter = ',', value_parser = parse_table)]
        tables: Vec<QualifiedTable>,
    },
    /// Make this replica a writable database for good (failover): pull never runs again.
    Promote {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Create or change this site's subscription (series = schema.table) with the provider.
    SubscribeSeries {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// The subscribe list: `schema.table subscribe|unsubscribe`, one per line (the
        /// original tools' subscribe_list.cfg is read as it is).
        #[arg(long, value_name = "FILE", required_unless_present = "abort")]
        list: Option<PathBuf>,
        /// How many times to look for each answer from the manager. Default: `[subscribe]
        /// attempts` of the configuration (120).
        #[arg(long)]
        attempts: Option<u32>,
        /// Seconds between looks. Default: `[subscribe] interval_secs` (5).
        #[arg(long)]
        interval_secs: Option<u64>,
        /// Original tools' archive flag (0 or 1), passed to the provider. Default:
        /// `[subscribe] archive` (0).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
        archive: Option<u8>,
        /// Original tools' retention in days, passed to the provider. Default:
        /// `[subscribe] retention` (21).
        #[arg(long)]
        retention: Option<u32>,
        /// Original tools' tape group, passed to the provider. Default: `[subscribe]
        /// tapegroup` (1).
        #[arg(long)]
        tapegroup: Option<u32>,
        /// Cancel the request in progress and lift the pause.
        #[arg(long)]
        abort: bool,
    },
    /// Write the TOML configuration that means what an original tools' client config
    /// (repclient.cfg) means, print what replaces the old get_slony_logs.pl cron line,
    /// and compare the old slony_counter.txt with the replica's counter. Changes nothing
    /// else.
    Migrate {
        /// The original tools' client config.
        #[arg(long, value_name = "FILE")]
        legacy_config: PathBuf,
        /// Where to write the TOML. Default: receiver.toml beside the legacy file.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Replace the output if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// `guard` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuardAction {
    /// Guard every replicated table (idempotent).
    On,
    /// Remove the guard from every table.
    Off,
    /// List replicated tables without the guard (exit 20 if any).
    Check,
}

fn parse_table(s: &str) -> Result<QualifiedTable, String> {
    QualifiedTable::parse(s.trim()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, as the man page and the completions must name it.
    const SUBCOMMANDS: [&str; 9] = [
        "pull",
        "subscribe-series",
        "housekeeping",
        "status",
        "guard",
        "verify",
        "promote",
        "init",
        "migrate",
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
        assert!(page.contains("\n.TH slony-receiver 1"), "{page}");
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
            let entry = format!(".SS \"slony-receiver {name}\"");
            assert!(page.contains(&entry), "the man page lacks {entry}");
        }
        assert!(
            !page.contains("\\-\\-generate"),
            "the man page shows --generate"
        );
    }

    #[test]
    fn generate_stands_alone() {
        let cli = Cli::try_parse_from(["slony-receiver", "--generate", "man"]).unwrap();
        assert_eq!(cli.generate, Some(Artefact::Man));
        assert!(cli.command.is_none());
    }
}
