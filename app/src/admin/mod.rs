//! Admin pages: users and tokens, agents, the audit log, webhooks, schedules.

pub mod agents;
pub mod audit;
pub mod recordings;
pub mod schedules;
pub mod users;
pub mod webhooks;
