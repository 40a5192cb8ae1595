//! Admin pages: users and tokens, agents, the audit log, webhooks.

pub mod agents;
pub mod audit;
pub mod recordings;
pub mod users;
pub mod webhooks;
