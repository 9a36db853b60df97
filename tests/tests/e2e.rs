//! End-to-end tests.

mod fixtures_selftest;
mod housekeeping;
mod pull;
mod status;
mod support;
