//! opsdeck's integration tests: one test binary (one link step), one module
//! per capability. Every test starts a real server on 127.0.0.1:0 with a
//! fresh SQLite file (or a fresh PostgreSQL database), or runs the real
//! `opsdeck` binary.

mod accounts;
mod agents;
mod authz;
mod cli;
mod cluster;
mod engine;
mod foundation;
mod hardening;
mod history;
mod lifecycle;
mod live;
mod replicas;
mod restic;
mod retries;
mod schedules;
mod secure;
mod ship;
mod status;
mod streams;
mod support;
mod terminal;
mod webhooks;
