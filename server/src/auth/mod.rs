//! Who is asking and what they may do.
//!
//! - [`guard`] is the one middleware every route passes: it authenticates (session
//!   cookie or bearer token), refuses cross-site requests, and applies the
//!   route table's access level.
//! - [`policy`] makes every finer decision (which jobs a caller sees, which
//!   targets they may launch on); handlers and the backend ask it, never decide
//!   themselves.
//! - [`login`] signs in with rate limiting and equal timing; [`accounts`]
//!   manages users and tokens, writing the audit log.

pub mod accounts;
pub mod bootstrap;
pub mod guard;
pub mod login;
pub mod password;
pub mod policy;
pub mod secret;
pub mod session;
