//! Slony-I log-shipping archives.
//!
//! - [`name`]: file names of archives and batches.

pub mod name;

pub use name::{ArchiveName, BatchName};
