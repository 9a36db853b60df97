//! One module per subcommand; each turns a validated config into an exit code.

pub mod pull;
