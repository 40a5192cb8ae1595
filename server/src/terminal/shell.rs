//! A shell on a PTY, read as text: what a browser terminal shows, whether
//! the shell runs here (a local target's session) or on an agent's host
//! (the agent relays it). Started through `proc::pty` (the one spawn, with
//! the PTY as controlling terminal and an explicit environment).
//!
//! [`Pty::pump`] reads until the shell and everything holding the terminal
//! are gone: it coalesces a burst into one chunk (reading until the PTY has
//! nothing more, so a lone keystroke's echo goes out at once), cuts it at
//! whole UTF-8 characters, and hands it to its caller, who may make it wait
//! (flow control: the kernel's PTY buffer then holds the shell back).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use super::text::Utf8Stream;
use crate::proc::group::{group_alive, signal_group};
use crate::proc::pty::{self, Master, Read};
use crate::proc::{Child, Environment};

/// The largest read from the PTY, and so the largest chunk.
const CHUNK: usize = 64 * 1024;
/// How long output is still read after the shell itself ended (what its
/// last background processes print), before the pump ends anyway.
const AFTER_EXIT: Duration = Duration::from_millis(500);

/// The master side of a running shell's PTY, and its process group.
pub struct Pty {
    master: Master,
    /// The shell's pid, which is also its process group and session id.
    pub pgid: i32,
}

impl Pty {
    /// Starts `argv` with exactly `env` on a new PTY, in `HOME` if `env`
    /// names a directory there.
    pub fn start(
        argv: &[String],
        env: &Environment,
        cols: u16,
        rows: u16,
    ) -> std::io::Result<(Pty, Child)> {
        Pty::start_as(argv, env, None, cols, rows)
    }

    /// [`Pty::start`] as `user` (a target's `user =`): in that user's home,
    /// with its `HOME`; `None` is the server's own user.
    pub fn start_as(
        argv: &[String],
        env: &Environment,
        user: Option<&crate::proc::RunAs>,
        cols: u16,
        rows: u16,
    ) -> std::io::Result<(Pty, Child)> {
        let home = match user {
            Some(_) => None,
            None => env.get("HOME").map(Path::new).filter(|h| h.is_dir()),
        };
        let (master, child) = pty::spawn(argv, env, home, user, cols, rows)?;
        let pgid = child.id();
        Ok((Pty { master, pgid }, child))
    }

    pub async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        self.master.write_all(data).await
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        self.master.resize(cols, rows)
    }

    /// Hangs up, as a closed terminal does: SIGHUP (and SIGCONT, for a
    /// stopped job) to the shell's group, SIGKILL after `kill_after` unless
    /// `ended` comes first.
    pub fn hang_up(&self, kill_after: Duration, ended: CancellationToken) {
        signal_group(self.pgid, Signal::SIGHUP);
        signal_group(self.pgid, Signal::SIGCONT);
        let pgid = self.pgid;
        tokio::spawn(async move {
            tokio::select! {
                _ = ended.cancelled() => {}
                _ = tokio::time::sleep(kill_after) => {}
            }
            if group_alive(pgid) {
                signal_group(pgid, Signal::SIGKILL);
            }
        });
    }

    /// Reads the PTY until the shell and everything holding the terminal
    /// are gone, handing each chunk of text to `deliver`; kills what the
    /// shell left in its group; returns its exit code (128 + the signal
    /// when killed).
    pub async fn pump<F, Fut>(&self, mut child: Child, mut deliver: F) -> i32
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut buf = vec![0u8; CHUNK];
        let mut text = Utf8Stream::default();
        let mut code: Option<i32> = None;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let first = tokio::select! {
                r = self.master.read(&mut buf) => r,
                status = child.wait(), if code.is_none() => {
                    code = Some(exit_code(status));
                    deadline = Some(tokio::time::Instant::now() + AFTER_EXIT);
                    continue;
                }
                _ = sleep_until(deadline), if deadline.is_some() => break,
            };
            let mut n = match first {
                Ok(Read::Data(n)) => n,
                Ok(Read::Empty) => continue,
                Ok(Read::Closed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the terminal failed");
                    break;
                }
            };
            // Coalesce what is already there; stop as soon as the PTY is empty.
            let mut closed = false;
            while n < buf.len() {
                match self.master.try_read(&mut buf[n..]) {
                    Ok(Read::Data(m)) => n += m,
                    Ok(Read::Empty) => break,
                    Ok(Read::Closed) | Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            let chunk = text.push(&buf[..n]);
            if !chunk.is_empty() {
                deliver(chunk).await;
            }
            if closed {
                break;
            }
        }
        let rest = text.finish();
        if !rest.is_empty() {
            deliver(rest).await;
        }
        let code = match code {
            Some(c) => c,
            None => match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(status) => exit_code(status),
                Err(_) => {
                    signal_group(self.pgid, Signal::SIGKILL);
                    exit_code(child.wait().await)
                }
            },
        };
        // Whatever the shell left running in its group goes with it.
        if group_alive(self.pgid) {
            signal_group(self.pgid, Signal::SIGHUP);
            tokio::time::sleep(Duration::from_millis(200)).await;
            if group_alive(self.pgid) {
                signal_group(self.pgid, Signal::SIGKILL);
            }
        }
        code
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(-1),
        Err(_) => -1,
    }
}
