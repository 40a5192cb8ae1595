//! Seeing one job's process through, wherever it runs (this server, or an
//! agent on another host): start it through `proc::spawn` as the leader of
//! its own session with exactly its environment, read stdout and stderr
//! concurrently (`engine::output`'s hygiene) into a channel of [`Out`],
//! enforce cancel and timeout on the whole process group (SIGTERM, then
//! SIGKILL after `kill_grace`, each step a `system` line), make sure nothing
//! of the group outlives its main process, and classify the exit.
//!
//! What becomes of the output is the caller's: the local runner feeds it
//! to the log writer; an agent numbers and spools it for the server.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use app::model::job::{JobState, LogStream};
use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::logs;
use crate::engine::exit::{self, Ending, Outcome};
use crate::proc::{self, group as process, Environment};
use crate::sync::Locked;

/// How long the rest of a job's group may run on after its main process
/// exited, before it is terminated.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// Read buffer per stream.
const READ_CHUNK: usize = 64 * 1024;

/// What a supervised job writes to its log.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Lines read from one stream at `ts`.
    Lines(LogStream, Vec<String>, DateTime<Utc>),
    /// A line from opsdeck itself, to store at once.
    System(String),
    /// A line from opsdeck itself that may wait for the next batch.
    Note(String),
    /// The job's process group and its leader's start time.
    Process { pgid: i32, start: i64 },
}

/// What to run, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub argv: Vec<String>,
    /// Exactly the process's environment.
    pub env: Environment,
    pub cwd: Option<PathBuf>,
    /// The opening line: "running on web-1: restic backup /srv".
    pub opening: String,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub max_line_bytes: usize,
    pub warning_exit_codes: Vec<i32>,
    /// Where it runs, for messages: "the opsdeck server", "the agent".
    pub host: &'static str,
    /// The user it runs as (a target's `user =`), else the server's own.
    pub user: Option<proc::RunAs>,
}

/// Why a job is being stopped from outside.
#[derive(Debug, Clone)]
pub enum StopReason {
    Cancel {
        by: String,
    },
    Shutdown,
    /// The job is no longer this runner's (its node was declared lost and
    /// the job failed meanwhile): SIGKILL at once, with no grace and no
    /// line (nothing this runner writes is stored any more).
    Lost,
}

/// A running job's stop switch.
#[derive(Clone, Default)]
pub struct StopSwitch {
    token: CancellationToken,
    reason: std::sync::Arc<std::sync::Mutex<Option<StopReason>>>,
}

impl StopSwitch {
    /// Stops the job for `reason`; true if this is the first reason given
    /// (a later one changes nothing).
    pub fn stop(&self, reason: StopReason) -> bool {
        let mut r = self.reason.locked();
        let first = r.is_none();
        if first {
            *r = Some(reason);
        }
        self.token.cancel();
        first
    }

    fn reason(&self) -> Option<StopReason> {
        self.reason.locked().clone()
    }
}

/// Runs `spec` to its end; its output goes to `out` (dropped when it
/// returns), `started` hears the process group once it runs. Returns how
/// it ended.
pub async fn supervise(
    spec: &RunSpec,
    out: mpsc::Sender<Out>,
    stop: &StopSwitch,
    started: impl FnOnce(i32),
) -> Outcome {
    let _ = out.send(Out::Note(spec.opening.clone())).await;
    let out = &out;
    let system = |text: String| async move {
        let _ = out.send(Out::System(text)).await;
    };
    let mut child = match proc::spawn(proc::Spec {
        argv: &spec.argv,
        env: &spec.env,
        cwd: spec.cwd.as_deref(),
        io: proc::Io::Pipes,
        user: spec.user.as_ref(),
    }) {
        Ok(c) => c,
        Err(e) => {
            let error = format!(
                "cannot start `{}`: {e}; check that it is installed and on the PATH of {}",
                spec.argv.first().map_or("", String::as_str),
                spec.host
            );
            return Outcome {
                state: JobState::Failed,
                exit_code: None,
                error: Some(error.clone()),
                warnings: false,
                failure: Some(app::model::retry::Failure::Failed),
                summary: error,
            };
        }
    };
    let pgid = child.id();
    let start = process::start_time(pgid).unwrap_or(0);
    let _ = out.send(Out::Process { pgid, start }).await;
    started(pgid);

    let readers = [
        child.stdout.take().map(|o| {
            tokio::spawn(read_stream(
                o,
                LogStream::Stdout,
                out.clone(),
                spec.max_line_bytes,
            ))
        }),
        child.stderr.take().map(|e| {
            tokio::spawn(read_stream(
                e,
                LogStream::Stderr,
                out.clone(),
                spec.max_line_bytes,
            ))
        }),
    ];

    let grace = spec.kill_grace;
    let timeout_at = spec.timeout.map(|t| Instant::now() + t);
    let mut ending = Ending::Exited;
    let mut stopping = Stopping::No;
    let status: ExitStatus = loop {
        let kill_at = match stopping {
            Stopping::Term { kill_at } => Some(kill_at),
            _ => None,
        };
        tokio::select! {
            st = child.wait() => break st.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)),
            _ = stop.token.cancelled(), if stopping == Stopping::No => {
                if matches!(stop.reason(), Some(StopReason::Lost)) {
                    // N.B.: another job may already run on this target.
                    ending = Ending::Interrupted("interrupted: the job was lost to another node".into());
                    process::signal_group(pgid, Signal::SIGKILL);
                    stopping = Stopping::Killed;
                    continue;
                }
                let why = match stop.reason() {
                    Some(StopReason::Cancel { by }) => {
                        ending = Ending::Cancelled;
                        format!("cancel requested by {by}")
                    }
                    _ => {
                        ending = Ending::Interrupted(format!("interrupted: {} shut down", spec.host));
                        format!("{} is shutting down", spec.host)
                    }
                };
                stopping = terminate(pgid, grace, why, system).await;
            }
            _ = sleep_until_opt(timeout_at), if stopping == Stopping::No && timeout_at.is_some() => {
                let limit = secs(spec.timeout.unwrap_or_default());
                ending = Ending::TimedOut(limit.clone());
                stopping = terminate(pgid, grace, format!("timed out after {limit}"), system).await;
            }
            _ = sleep_until_opt(kill_at), if kill_at.is_some() => {
                kill(pgid, grace, system).await;
                stopping = Stopping::Killed;
            }
        }
    };

    // The main process is gone; the rest of its group must not outlive it.
    reap_group(pgid, grace, stopping, system).await;

    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
            system("a process outside the job's process group still holds its output open: stopped reading".into())
                .await;
        }
    }
    exit::classify(status, &ending, &spec.warning_exit_codes)
}

/// `why`: SIGTERM to the whole group, SIGKILL after `grace`; says so.
async fn terminate<F, Fut>(pgid: i32, grace: Duration, why: String, system: F) -> Stopping
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    system(format!(
        "{why}: sending SIGTERM to the process group (SIGKILL after {})",
        secs(grace)
    ))
    .await;
    process::signal_group(pgid, Signal::SIGTERM);
    Stopping::Term {
        kill_at: Instant::now() + grace,
    }
}

/// The grace is over: SIGKILL to the whole group; says so.
async fn kill<F, Fut>(pgid: i32, grace: Duration, system: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    system(format!(
        "still running after {}: sending SIGKILL to the process group",
        secs(grace)
    ))
    .await;
    process::signal_group(pgid, Signal::SIGKILL);
}

/// Where stopping a job's process group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    No,
    /// SIGTERM sent; SIGKILL at `kill_at`.
    Term {
        kill_at: Instant,
    },
    /// SIGKILL sent.
    Killed,
}

/// After the main process exited: if nobody was stopping the job, let the
/// rest of its group finish briefly, then SIGTERM it; then SIGKILL whatever
/// is left when the grace ends, and wait until the group is gone.
async fn reap_group<F, Fut>(pgid: i32, grace: Duration, stopping: Stopping, system: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if !process::group_alive(pgid) {
        return;
    }
    let kill_at = match stopping {
        Stopping::Term { kill_at } => Some(kill_at),
        Stopping::Killed => None,
        Stopping::No => {
            if wait_group_gone(pgid, LEFTOVER_GRACE).await {
                return;
            }
            let left = process::members(pgid).len();
            let why =
                format!("the main process exited but {left} process(es) of the job still run");
            match terminate(pgid, grace, why, &system).await {
                Stopping::Term { kill_at } => Some(kill_at),
                _ => None,
            }
        }
    };
    match kill_at {
        Some(at) if wait_group_gone(pgid, at.saturating_duration_since(Instant::now())).await => {
            return
        }
        Some(_) => kill(pgid, grace, &system).await,
        None => {
            process::signal_group(pgid, Signal::SIGKILL);
        }
    }
    if !wait_group_gone(pgid, Duration::from_secs(10)).await {
        system("some processes of the job could not be killed (stuck in the kernel?)".into()).await;
    }
}

async fn wait_group_gone(pgid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !process::group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn secs(d: Duration) -> String {
    app::model::time::format_duration_secs(d.as_secs() as i64)
}

/// Reads one stream to its end, splitting lines; never stops reading early,
/// so the process never blocks on a full pipe.
async fn read_stream(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    kind: LogStream,
    tx: mpsc::Sender<Out>,
    max_line: usize,
) {
    let mut splitter = crate::engine::output::LineSplitter::new(max_line);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut lines = Vec::new();
        splitter.push(&buf[..n], &mut lines);
        if !lines.is_empty()
            && tx
                .send(Out::Lines(kind, lines, logs::now_millis()))
                .await
                .is_err()
        {
            return;
        }
    }
    let mut lines = Vec::new();
    splitter.finish(&mut lines);
    if !lines.is_empty() {
        let _ = tx.send(Out::Lines(kind, lines, logs::now_millis())).await;
    }
}
