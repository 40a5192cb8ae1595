//! The opsdeck server: configuration, database, HTTP surface and the
//! command line. `main.rs` only calls [`cli::main`]; tests use the modules.

pub mod agent;
pub mod agents;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod db;
pub mod engine;
pub mod http;
pub mod hub;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod proc;
pub mod schedules;
pub mod service;
pub mod site;
pub mod startup;
pub mod state;
pub mod status;
pub mod streams;
pub mod sync;
pub mod telemetry;
pub mod terminal;
pub mod webhooks;
