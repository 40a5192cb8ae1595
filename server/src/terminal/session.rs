//! Terminal sessions: a shell on a PTY that outlives its WebSocket for a
//! grace period, so a browser that drops (a closed laptop lid, a flaky
//! train Wi-Fi) reattaches to the same shell and sees the recent screen.
//!
//! One `pump` task per session reads the PTY: it coalesces a burst into one
//! chunk (reading until the PTY has nothing more, so a lone keystroke's echo
//! goes out at once), keeps the chunk in the replay ring and the recording,
//! and hands it to the attached socket through a small bounded channel. A
//! browser that reads slowly fills the channel, the pump waits, and the
//! kernel's PTY buffer then holds the shell back: memory stays bounded.
//! Ring and attachment change under one lock, so a reattaching browser gets
//! every chunk exactly once: in the replay or live, never both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::record::Recorder;
use super::text::{Ring, Utf8Stream};
use crate::proc::group::{group_alive, signal_group};
use crate::proc::pty::{self, Master, Read};
use crate::proc::{Child, Environment};
use crate::sync::Locked;

/// How much recent output a reattaching browser gets back.
pub const RING_BYTES: usize = 128 * 1024;
/// The largest read from the PTY, and so the largest chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight to one socket before the pump waits.
const QUEUE: usize = 4;
/// How long output is still read after the shell itself ended (what its
/// last background processes print), before the session ends anyway.
const AFTER_EXIT: Duration = Duration::from_millis(500);

/// What the pump hands to the attached socket.
#[derive(Debug)]
pub enum Out {
    Data(String),
    /// The server is ending the session; `Exit` follows.
    Closed(String),
    Exit(i32),
}

/// The sessions of this server, by id.
#[derive(Clone, Default)]
pub struct Terminals {
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

/// What a new session needs.
pub struct Spec {
    pub user_id: i64,
    pub username: String,
    pub target: String,
    pub argv: Vec<String>,
    /// Exactly the shell's environment (`proc::env`).
    pub env: Environment,
    pub cols: u16,
    pub rows: u16,
    pub recorder: Option<Recorder>,
    pub id: String,
}

/// How a session ended, for the audit log.
#[derive(Debug, Clone)]
pub struct Ending {
    pub code: i32,
    pub reason: Option<String>,
    pub duration: Duration,
}

pub struct Session {
    pub id: String,
    pub user_id: i64,
    pub username: String,
    pub target: String,
    /// The shell's pid, which is also its process group and session id.
    pub pgid: i32,
    master: Master,
    state: Mutex<State>,
    /// Cancelled when the session is over (the pump has finished).
    pub ended: CancellationToken,
    started: Instant,
}

struct State {
    ring: Ring,
    attached: Option<(u64, mpsc::Sender<Out>)>,
    next_attach: u64,
    detached_at: Option<Instant>,
    last_input: Instant,
    recorder: Option<Recorder>,
    closing: Option<String>,
}

/// A socket's hold on a session.
pub struct Attachment {
    pub id: u64,
    pub rx: mpsc::Receiver<Out>,
    /// The recent output to show first (empty for a new session).
    pub replay: String,
}

impl Terminals {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.locked()
    }

    /// How many sessions `user_id` has open (attached or in their grace).
    pub fn count_for(&self, user_id: i64) -> usize {
        self.map()
            .values()
            .filter(|s| s.user_id == user_id && !s.ended.is_cancelled())
            .count()
    }

    /// A running session of `user_id` on `target`.
    pub fn find(&self, id: &str, user_id: i64, target: &str) -> Option<Arc<Session>> {
        self.map()
            .get(id)
            .filter(|s| s.user_id == user_id && s.target == target && !s.ended.is_cancelled())
            .cloned()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map().get(id).cloned()
    }

    /// Starts a shell and its pump; `on_end` runs once the session is over.
    pub fn open<F>(&self, spec: Spec, on_end: F) -> std::io::Result<Arc<Session>>
    where
        F: FnOnce(Arc<Session>, Ending) + Send + 'static,
    {
        let home = spec
            .env
            .get("HOME")
            .map(std::path::Path::new)
            .filter(|h| h.is_dir());
        let (master, child) = pty::spawn(&spec.argv, &spec.env, home, spec.cols, spec.rows)?;
        let pgid = child.id();
        let session = Arc::new(Session {
            id: spec.id,
            user_id: spec.user_id,
            username: spec.username,
            target: spec.target,
            pgid,
            master,
            state: Mutex::new(State {
                ring: Ring::new(RING_BYTES),
                attached: None,
                next_attach: 1,
                detached_at: Some(Instant::now()),
                last_input: Instant::now(),
                recorder: spec.recorder,
                closing: None,
            }),
            ended: CancellationToken::new(),
            started: Instant::now(),
        });
        self.map().insert(session.id.clone(), session.clone());
        let this = self.clone();
        let s = session.clone();
        tokio::spawn(async move {
            let ending = s.clone().pump(child).await;
            this.map().remove(&s.id);
            s.ended.cancel();
            on_end(s, ending);
        });
        Ok(session)
    }
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Attaches a socket, detaching any other one (whose channel closes).
    pub fn attach(&self) -> Attachment {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut st = self.state();
        let id = st.next_attach;
        st.next_attach += 1;
        st.attached = Some((id, tx));
        st.detached_at = None;
        st.last_input = Instant::now();
        Attachment {
            id,
            rx,
            replay: st.ring.contents(),
        }
    }

    /// The socket `attach_id` went away: the grace period starts.
    pub fn detach(&self, attach_id: u64) {
        let mut st = self.state();
        if st.attached.as_ref().is_some_and(|(id, _)| *id == attach_id) {
            st.attached = None;
            st.detached_at = Some(Instant::now());
        }
    }

    pub async fn input(&self, data: &str) -> std::io::Result<()> {
        self.state().last_input = Instant::now();
        self.master.write_all(data.as_bytes()).await
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        self.master.resize(cols, rows)?;
        if let Some(r) = self.state().recorder.as_mut() {
            r.resize(cols, rows);
        }
        Ok(())
    }

    /// Ends the session: the attached browser is told why, the shell's
    /// process group gets SIGHUP (as when a terminal hangs up), then SIGKILL
    /// after `kill_after` if anything of it is left.
    pub fn terminate(self: &Arc<Self>, reason: &str, kill_after: Duration) {
        let tx = {
            let mut st = self.state();
            if st.closing.is_some() {
                return;
            }
            st.closing = Some(reason.to_string());
            st.attached.as_ref().map(|(_, tx)| tx.clone())
        };
        if let Some(tx) = tx {
            let _ = tx.try_send(Out::Closed(reason.to_string()));
        }
        tracing::info!(session = %self.id, target = %self.target, reason, "ending terminal session");
        signal_group(self.pgid, Signal::SIGHUP);
        signal_group(self.pgid, Signal::SIGCONT);
        let s = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = s.ended.cancelled() => {}
                _ = tokio::time::sleep(kill_after) => {}
            }
            if group_alive(s.pgid) {
                signal_group(s.pgid, Signal::SIGKILL);
            }
        });
    }

    /// Ends the session when its browser stayed away longer than `grace`,
    /// when no input came for `idle` (zero: never), or at shutdown.
    pub async fn watch(
        self: Arc<Self>,
        grace: Duration,
        idle: Duration,
        shutdown: CancellationToken,
    ) {
        let tick = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = shutdown.cancelled() => {
                    self.terminate("the server is shutting down", Duration::from_secs(1));
                    return;
                }
                _ = tokio::time::sleep(tick) => {}
            }
            let (away, quiet) = {
                let st = self.state();
                (st.detached_at.map(|t| t.elapsed()), st.last_input.elapsed())
            };
            if away.is_some_and(|a| a >= grace) {
                self.terminate(
                    "nobody came back within the grace period",
                    Duration::from_secs(2),
                );
                return;
            }
            if !idle.is_zero() && quiet >= idle {
                self.terminate(
                    &format!("no input for {} s (the idle timeout)", idle.as_secs()),
                    Duration::from_secs(2),
                );
                return;
            }
        }
    }

    /// Reads the PTY until the shell and everything holding the terminal
    /// are gone; returns the exit code (128 + signal when killed).
    async fn pump(self: Arc<Self>, mut child: Child) -> Ending {
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
                    tracing::warn!(session = %self.id, error = %e, "reading the terminal failed");
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
            self.deliver(text.push(&buf[..n])).await;
            if closed {
                break;
            }
        }
        self.deliver(text.finish()).await;
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
        let (tx, reason, recorder) = {
            let mut st = self.state();
            (
                st.attached.take().map(|(_, tx)| tx),
                st.closing.clone(),
                st.recorder.take(),
            )
        };
        if let Some(r) = recorder {
            r.finish();
        }
        if let Some(tx) = tx {
            let _ = tx.send(Out::Exit(code)).await;
        }
        Ending {
            code,
            reason,
            duration: self.started.elapsed(),
        }
    }

    /// Keeps `text` for replay and recording and hands it to the attached
    /// socket, waiting while its queue is full (flow control).
    async fn deliver(&self, text: String) {
        if text.is_empty() {
            return;
        }
        let tx = {
            let mut st = self.state();
            st.ring.push(&text);
            if let Some(r) = st.recorder.as_mut() {
                r.output(&text);
            }
            st.attached.as_ref().map(|(_, tx)| tx.clone())
        };
        if let Some(tx) = tx {
            // Fails only when the socket went away meanwhile: the ring has it.
            let _ = tx.send(Out::Data(text)).await;
        }
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
