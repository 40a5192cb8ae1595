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

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::record::Recorder;
use super::shell::Pty;
use super::text::Ring;
use crate::agents::terminal::Relay;
use crate::auth::revocation::Hold;
use crate::proc::{Child, Environment};
use crate::sync::Locked;

/// How much recent output a reattaching browser gets back.
pub const RING_BYTES: usize = 128 * 1024;
/// Chunks in flight to one socket before the pump waits.
const QUEUE: usize = 4;

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
    pub shell: Shell,
    pub cols: u16,
    pub rows: u16,
    pub recorder: Option<Recorder>,
    pub id: String,
}

/// Where a session's shell runs.
pub enum Shell {
    /// Here, on a PTY: `argv` with exactly the environment `env`, as
    /// `user` (else the server's own user).
    Local {
        argv: Vec<String>,
        env: Environment,
        user: Option<crate::proc::RunAs>,
    },
    /// On an agent's host, relayed over the agent's socket for it.
    Relayed(Relay),
}

/// How the session reaches its shell.
enum Io {
    Local(Pty),
    Relayed(Relay),
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
    io: Io,
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
    /// The credential of the socket attached last: when it is revoked
    /// (signed out, disabled, token revoked) the session ends, attached
    /// or in its grace.
    credential: Hold,
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
        let (io, child) = match spec.shell {
            Shell::Local { argv, env, user } => {
                let (pty, child) = Pty::start_as(&argv, &env, user.as_ref(), spec.cols, spec.rows)?;
                (Io::Local(pty), Some(child))
            }
            Shell::Relayed(relay) => (Io::Relayed(relay), None),
        };
        let session = Arc::new(Session {
            id: spec.id,
            user_id: spec.user_id,
            username: spec.username,
            target: spec.target,
            io,
            state: Mutex::new(State {
                ring: Ring::new(RING_BYTES),
                attached: None,
                next_attach: 1,
                detached_at: Some(Instant::now()),
                last_input: Instant::now(),
                recorder: spec.recorder,
                closing: None,
                credential: Hold::none(),
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

    /// Attaches a socket opened with `credential`, detaching any other one
    /// (whose channel closes); the session now depends on that credential.
    pub fn attach(&self, credential: Hold) -> Attachment {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut st = self.state();
        st.credential = credential;
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

    /// The shell's process group, when it runs here.
    pub fn pgid(&self) -> Option<i32> {
        match &self.io {
            Io::Local(pty) => Some(pty.pgid),
            Io::Relayed(_) => None,
        }
    }

    pub async fn input(&self, data: &str) -> std::io::Result<()> {
        self.state().last_input = Instant::now();
        match &self.io {
            Io::Local(pty) => pty.write(data.as_bytes()).await,
            Io::Relayed(relay) => relay.input(data).await,
        }
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        match &self.io {
            Io::Local(pty) => pty.resize(cols, rows)?,
            Io::Relayed(relay) => relay.resize(cols, rows)?,
        }
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
        match &self.io {
            Io::Local(pty) => pty.hang_up(kill_after, self.ended.clone()),
            Io::Relayed(relay) => relay.hang_up(),
        }
    }

    /// Ends the session when its browser stayed away longer than `grace`,
    /// when no input came for `idle` (zero: never), when the credential it
    /// was attached with is revoked (checked each tick, at most 1 s apart:
    /// a look at a shared flag, no database read), or at shutdown.
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
            let (away, quiet, revoked) = {
                let st = self.state();
                (
                    st.detached_at.map(|t| t.elapsed()),
                    st.last_input.elapsed(),
                    st.credential.reason(),
                )
            };
            if let Some(reason) = revoked {
                self.terminate(&reason, Duration::from_secs(2));
                return;
            }
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

    /// Reads the shell's output until it is over; returns how it ended.
    async fn pump(self: Arc<Self>, child: Option<Child>) -> Ending {
        let deliver = |text: String| {
            let s = self.clone();
            async move { s.deliver(text).await }
        };
        let code = match (&self.io, child) {
            (Io::Local(pty), Some(child)) => pty.pump(child, deliver).await,
            (Io::Relayed(relay), _) => relay.pump(deliver).await,
            (Io::Local(_), None) => -1,
        };
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
