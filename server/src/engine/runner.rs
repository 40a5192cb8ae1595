//! Running one claimed job: build its argv, start it as the leader of its
//! own session, read stdout and stderr concurrently into the log writer,
//! enforce cancel and timeout on the whole process group, make sure nothing
//! of it outlives it, classify the exit and finish the job.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use app::model::job::{JobState, LogStream};
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Target, Template};
use crate::db::jobs::{self, Finish, JobRow};
use crate::db::logs;
use crate::engine::command::{self, Invocation};
use crate::engine::exit::{self, Ending, Outcome};
use crate::engine::logwriter::{End, Limits, LogWriter, Msg};
use crate::engine::transition::Transition;
use crate::engine::Engine;
use crate::proc::{self, group as process, Environment};
use crate::sync::Locked;

/// How long the rest of a job's group may run on after its main process
/// exited, before it is terminated.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// How often a running job looks in the database for a cancel requested
/// through another replica.
const CANCEL_POLL: Duration = Duration::from_secs(2);
/// Read buffer per stream.
const READ_CHUNK: usize = 64 * 1024;

/// Why a job is being stopped from outside.
#[derive(Debug, Clone)]
pub enum StopReason {
    Cancel { by: String },
    Shutdown,
}

/// A running job's stop switch.
#[derive(Clone, Default)]
pub struct StopSwitch {
    token: CancellationToken,
    reason: std::sync::Arc<std::sync::Mutex<Option<StopReason>>>,
}

impl StopSwitch {
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.locked();
        if r.is_none() {
            *r = Some(reason);
        }
        self.token.cancel();
    }

    fn reason(&self) -> Option<StopReason> {
        self.reason.locked().clone()
    }
}

/// Runs a claimed job to its end. Never panics on the job path; every way
/// out ends the job through its one transition. Returns the job claimed
/// next for this slot, in the same transaction as this one's end (none
/// once shutdown began).
pub async fn run(
    engine: &Engine,
    job: JobRow,
    stop: StopSwitch,
    claimed_at: Instant,
) -> Option<JobRow> {
    let span =
        tracing::info_span!("run", job = job.id, template = %job.template, target = %job.target);
    async move {
        let sink = engine.sink();
        sink.hub.job_changed(job.to_job());
        let config = engine.config();
        let (Some(template), Some(target)) =
            (config.template(&job.template), config.target(&job.target))
        else {
            let missing = if config.template(&job.template).is_none() {
                format!("template `{}`", job.template)
            } else {
                format!("target `{}`", job.target)
            };
            let error = format!("the {missing} is no longer in the configuration");
            fail_without_process(engine, &job, error).await;
            return None;
        };
        let limits = Limits {
            max_log_bytes: template.max_log_bytes,
            tail_lines: template.tail_lines,
            progress: template.progress,
        };
        let writer = LogWriter::start(sink.clone(), job.id, job.last_seq, limits);
        let outcome = execute(engine, &job, template, target, &writer, &stop, claimed_at).await;
        let ended = outcome.state;
        let claim_for = (!sink.shutdown.is_cancelled()).then(|| config.server.node.clone());
        let (finish, summary) = finish_of(outcome);
        // The last lines, the summary and the end, in one transaction.
        let done = writer
            .finish(End {
                finish,
                summary,
                claim_for,
            })
            .await;
        finished(engine, job.id, ended, done.finished).await;
        done.next
    }
    .instrument(span)
    .await
}

/// Fails a job that could not even start, with a system line saying why.
async fn fail_without_process(engine: &Engine, job: &JobRow, error: String) {
    tracing::warn!(job = job.id, "{error}");
    let sink = engine.sink();
    let t = Arc::new(Transition::fail(
        &sink.hub,
        job,
        error.clone(),
        error,
        false,
    ));
    let row = match sink.committer.commit(t.clone()).await {
        Ok(()) => t.row(),
        Err(e) => {
            tracing::error!(job = job.id, error = %e, "cannot record how the job ended");
            None
        }
    };
    finished(engine, job.id, JobState::Failed, row).await;
}

/// How the job ended, to store (the log writer fills in the progress), and
/// the line that says so.
fn finish_of(outcome: Outcome) -> (Finish, String) {
    (
        Finish {
            state: outcome.state,
            exit_code: outcome.exit_code,
            error: outcome.error,
            warnings: outcome.warnings,
            progress: None,
        },
        outcome.summary,
    )
}

/// After the end was stored (its row, already announced by the commit) or
/// not: count it; if the job was finished elsewhere meanwhile, tell the
/// subscribers what it is now.
async fn finished(engine: &Engine, id: i64, ended: JobState, row: Option<JobRow>) {
    match row {
        Some(_) => engine.sink().metrics.job_finished(ended),
        None => {
            tracing::warn!(job = id, "the job was finished elsewhere meanwhile");
            announce_current(engine, id).await;
        }
    }
}

/// Tells the subscribers what a job is now (read from the database), and
/// closes its channel if it has finished.
pub(super) async fn announce_current(engine: &Engine, id: i64) {
    let hub = &engine.sink().hub;
    match jobs::by_id(&engine.0.reader, id).await {
        Ok(Some(row)) => {
            let done = row.state.is_finished();
            hub.job_changed(row.to_job());
            if done {
                hub.close(id);
            }
        }
        Ok(None) => hub.close(id),
        Err(e) => tracing::warn!(job = id, error = %e, "cannot read the job back"),
    }
}

/// Starts the process and sees it through; returns how it ended.
async fn execute(
    engine: &Engine,
    job: &JobRow,
    template: &Template,
    target: &Target,
    writer: &LogWriter,
    stop: &StopSwitch,
    claimed_at: Instant,
) -> Outcome {
    let params = job.params();
    let inv = command::build(template, target, &params, job.id);
    let shown: Vec<String> = template
        .shown
        .iter()
        .filter_map(|e| command::fill(e, &params))
        .collect();
    writer
        .note(format!(
            "running on {}: {}",
            target.id,
            command::display(&shown)
        ))
        .await;

    let mut child = match spawn(&inv, &engine.config().jobs.base_env) {
        Ok(c) => c,
        Err(e) => {
            let error = format!(
                "cannot start `{}`: {e}; check that it is installed and on the PATH of the opsdeck server",
                inv.argv[0]
            );
            return Outcome {
                state: JobState::Failed,
                exit_code: None,
                error: Some(error.clone()),
                warnings: false,
                summary: error,
            };
        }
    };
    let pgid = child.id();
    let start = process::start_time(pgid).unwrap_or(0);
    writer.process(pgid, start).await;
    engine.sink().metrics.claim_to_start(claimed_at.elapsed());
    tracing::info!(pid = pgid, "started");

    let readers = [
        child.stdout.take().map(|out| {
            tokio::spawn(read_stream(
                out,
                LogStream::Stdout,
                writer.sender(),
                template.max_line_bytes,
            ))
        }),
        child.stderr.take().map(|err| {
            tokio::spawn(read_stream(
                err,
                LogStream::Stderr,
                writer.sender(),
                template.max_line_bytes,
            ))
        }),
    ];

    let grace = template.kill_grace;
    let timeout_at = template.timeout.map(|t| Instant::now() + t);
    let mut ending = Ending::Exited;
    let mut stopping = Stopping::No;
    let mut poll = tokio::time::interval(CANCEL_POLL);
    poll.tick().await;

    let status: ExitStatus = loop {
        let kill_at = match stopping {
            Stopping::Term { kill_at } => Some(kill_at),
            _ => None,
        };
        tokio::select! {
            st = child.wait() => break st.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8)),
            _ = stop.token.cancelled(), if stopping == Stopping::No => {
                let line = match stop.reason() {
                    Some(StopReason::Cancel { by }) => {
                        ending = Ending::Cancelled;
                        format!("cancel requested by {by}: sending SIGTERM to the process group (SIGKILL after {})", secs(grace))
                    }
                    _ => {
                        ending = Ending::Interrupted("interrupted: server shut down".into());
                        format!("the server is shutting down: sending SIGTERM to the process group (SIGKILL after {})", secs(grace))
                    }
                };
                writer.system(line).await;
                process::signal_group(pgid, Signal::SIGTERM);
                stopping = Stopping::Term { kill_at: Instant::now() + grace };
            }
            _ = sleep_until_opt(timeout_at), if stopping == Stopping::No && timeout_at.is_some() => {
                let limit = secs(template.timeout.unwrap_or_default());
                writer
                    .system(format!("timed out after {limit}: sending SIGTERM to the process group (SIGKILL after {})", secs(grace)))
                    .await;
                ending = Ending::TimedOut(limit);
                process::signal_group(pgid, Signal::SIGTERM);
                stopping = Stopping::Term { kill_at: Instant::now() + grace };
            }
            _ = sleep_until_opt(kill_at), if kill_at.is_some() => {
                writer.system(format!("still running after {}: sending SIGKILL to the process group", secs(grace))).await;
                process::signal_group(pgid, Signal::SIGKILL);
                stopping = Stopping::Killed;
            }
            _ = poll.tick(), if stopping == Stopping::No => {
                if let Ok(Some(row)) = jobs::by_id(&engine.0.reader, job.id).await {
                    if row.state == JobState::Cancelling {
                        let by = row.cancel_requested_by.unwrap_or_else(|| "someone".into());
                        stop.stop(StopReason::Cancel { by });
                    }
                }
            }
        }
    };

    // The main process is gone; the rest of its group must not outlive it.
    reap_group(pgid, grace, stopping, writer).await;

    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
            writer
                .system("a process outside the job's process group still holds its output open: stopped reading")
                .await;
        }
    }
    exit::classify(status, &ending, &template.warning_exit_codes)
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
async fn reap_group(pgid: i32, grace: Duration, stopping: Stopping, writer: &LogWriter) {
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
            writer
                .system(format!(
                    "the main process exited but {left} process(es) of the job still run: sending SIGTERM (SIGKILL after {})",
                    secs(grace)
                ))
                .await;
            process::signal_group(pgid, Signal::SIGTERM);
            Some(Instant::now() + grace)
        }
    };
    if let Some(at) = kill_at {
        if wait_group_gone(pgid, at.saturating_duration_since(Instant::now())).await {
            return;
        }
        writer
            .system(format!(
                "still running after {}: sending SIGKILL to the process group",
                secs(grace)
            ))
            .await;
    }
    process::signal_group(pgid, Signal::SIGKILL);
    if !wait_group_gone(pgid, Duration::from_secs(10)).await {
        writer
            .system("some processes of the job could not be killed (stuck in the kernel?)")
            .await;
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

/// Starts the process as the leader of a new session, with a clean
/// environment: the server's own (which may hold secrets) is not passed on.
fn spawn(inv: &Invocation, base_env: &[(String, String)]) -> std::io::Result<proc::Child> {
    let env = Environment::for_job(base_env, &inv.env);
    proc::spawn(proc::Spec {
        argv: &inv.argv,
        env: &env,
        cwd: inv.workdir.as_deref().map(std::path::Path::new),
        io: proc::Io::Pipes,
    })
}

/// Reads one stream to its end, splitting lines; never stops reading early,
/// so the process never blocks on a full pipe.
async fn read_stream(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    kind: LogStream,
    tx: mpsc::Sender<Msg>,
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
                .send(Msg::Lines(kind, lines, logs::now_millis()))
                .await
                .is_err()
        {
            return;
        }
    }
    let mut lines = Vec::new();
    splitter.finish(&mut lines);
    if !lines.is_empty() {
        let _ = tx.send(Msg::Lines(kind, lines, logs::now_millis())).await;
    }
}
