//! One module per subcommand; each turns a validated config into an exit code.

pub mod check;
pub mod guard;
pub mod housekeeping;
pub mod init;
pub mod migrate;
pub mod promote;
pub mod pull;
pub mod status;
pub mod subscribe_series;
pub mod verify;
