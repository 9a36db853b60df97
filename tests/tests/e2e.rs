//! End-to-end tests.

mod check;
mod cut;
mod fixtures_selftest;
mod guard;
mod housekeeping;
mod legacy_provider;
mod legacy_site;
mod manager;
mod migration;
mod privilege;
mod provider_sql;
mod pull;
mod real_slony;
mod reliability;
mod secrets;
mod sites;
mod status;
mod subscribe;
mod support;
mod systemd;
mod tls;
