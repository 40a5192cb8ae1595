//! One way to start a process. Jobs and terminals both start here: a new
//! session (so the process leads its own process group, and cancel reaches
//! everything it starts), an explicit environment built by [`env`] (never
//! the server's own, which may hold `OPSDECK_ADMIN_PASSWORD` or
//! `DATABASE_URL`), and either pipes (a job's stdout and stderr) or a
//! PTY as its controlling terminal (a browser terminal).
//!
//! - [`spawn`]: `posix_spawn` with `POSIX_SPAWN_SETSID`, watched by a pidfd;
//! - [`pty`]: opening a PTY and the master side's async reads and writes;
//! - [`group`]: process groups: signals, liveness, orphan clean-up;
//! - [`env`]: the environment policy;
//! - [`user`]: running a target's work as another Unix user.

pub mod env;
pub mod group;
pub mod pty;
pub mod spawn;
pub mod user;

pub use env::Environment;
pub use spawn::{spawn, Child, Io, Spec};
pub use user::RunAs;
