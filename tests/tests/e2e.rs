//! End-to-end tests.

mod fixtures_selftest;
mod pull;
mod support;
