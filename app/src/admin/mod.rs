//! Admin pages: users and tokens, agents, the audit log.

pub mod agents;
pub mod audit;
pub mod recordings;
pub mod users;
