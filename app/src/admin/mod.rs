//! Admin pages: users and tokens, the audit log.

pub mod audit;
pub mod recordings;
pub mod users;
