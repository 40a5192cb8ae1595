//! Typed models shared by the server (REST API, SSE encoder, server functions)
//! and the browser (WASM components). Defined once, here.

pub mod agent;
pub mod event;
pub mod history;
pub mod job;
pub mod journal;
pub mod live;
pub mod retry;
pub mod schedule;
pub mod status;
pub mod template;
pub mod terminal;
pub mod time;
pub mod user;
pub mod webhook;
