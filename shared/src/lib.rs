//! Library shared by `slony-receiver` (subscriber side) and `slony-manager` (provider side).
//!
//! # Layout
//!
//! - [`ack`]: the subscriber's acknowledgement of the last counter it applied.
//! - [`ident`]: validated names (cluster, node/site, `schema.table`) and identifier quoting.
//! - [`check`]: the report of both binaries' `check` command (text, JSON, Nagios), and
//!   the probes of the local file system it uses.
//! - [`counter`]: the archive counter, the replica's position in the stream.
//! - [`archive`]: Slony-I archive files: names, completeness check, the SQL/COPY splitter,
//!   and structural validation of an archive's statements.
//! - [`batch`]: `slony_logs_<from>-<to>.tar.gz` batches: safe reading and writing, and
//!   [`batch::plan`], which loose archives housekeeping packs into which batch.
//! - [`config`]: the receiver's TOML configuration and the original `key=value` format.
//! - [`generate`]: the man page and shell completions, from a binary's clap definition.
//! - [`mail`]: one mail over SMTP, for both binaries' alerts.
//! - [`logging`]: the tracing subscriber both binaries install.
//! - [`lock`]: the exclusive per-cluster run lock.
//! - [`offline`]: the SQL that prepares a replica database (what slony1_dump.sh creates).
//! - [`pg`]: connecting to PostgreSQL (TLS as libpq's sslmode), and the server's errors as an operator reads them.
//! - [`service`]: telling systemd the daemon is ready, what it is doing, and that it is alive.
//! - [`private`]: files (0600) and directories (0700) for their owner only.
//! - [`time`]: PostgreSQL's timestamps read, UTC times printed (chrono).
//! - [`trigger`]: the subscription protocol files exchanged in the trigger directory.

pub mod ack;
pub mod archive;
pub mod batch;
pub mod check;
pub mod config;
pub mod counter;
pub mod crash;
pub mod generate;
pub mod ident;
pub mod lock;
pub mod logging;
pub mod mail;
pub mod offline;
pub mod pg;
pub mod private;
pub mod service;
pub mod time;
pub mod trigger;
