//! End-to-end tests.

mod fixtures_selftest;
mod guard;
mod housekeeping;
mod manager;
mod pull;
mod status;
mod subscribe;
mod support;
