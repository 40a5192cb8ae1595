//! Who is asking and what they may do.
//!
//! - [`guard`] is the one middleware every route passes: it authenticates (session
//!   cookie or bearer token), refuses cross-site requests, and applies the
//!   route table's access level.
//! - [`policy`] makes every finer decision (which jobs a caller sees, which
//!   targets they may launch on); handlers and the backend ask it, never decide
//!   themselves.
//! - [`revocation`] ends the streams and terminals a revoked credential
//!   (session or token) holds open, checked per credential;
//! - [`session`] resolves a session cookie or an API token into a user (the
//!   guard's one way to know who asks); [`password`] and [`secret`] hash.
//!
//! Signing in and managing users are use cases: `service::signin`,
//! `service::accounts`.

pub mod bootstrap;
pub mod guard;
pub mod password;
pub mod policy;
pub mod revocation;
pub mod secret;
pub mod session;
