//! One job on the agent: supervised exactly as the server runs its own
//! (`engine::supervise`: process group, clean environment, output hygiene,
//! timeout, TERM then KILL), its lines numbered and capped by the same
//! [`CappedLog`] as a local job's, each batch spooled before it is sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use app::model::agent::{AgentMsg, Ended, LogBatch, RunCommand};
use app::model::job::{JobState, LogStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::spool::Spool;
use super::Agent;
use crate::db::logs;
use crate::engine::logcap::{CappedLog, Flush};
use crate::engine::supervise::{self, Out, RunSpec, StopSwitch};
use crate::proc::Environment;
use crate::sync::Locked;

/// Lines per batch, at most, and how long a batch waits for more.
const BATCH_LINES: usize = 1000;
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// A job the agent holds: running, or ended with batches or its end not
/// yet acknowledged.
pub struct Job {
    pub id: i64,
    pub dispatch: i64,
    pub spool: std::sync::Mutex<Spool>,
    pub stop: StopSwitch,
    /// Its process still runs under this agent.
    pub running: AtomicBool,
    /// The server told the agent to forget it: nothing more is spooled.
    pub forgotten: AtomicBool,
}

impl Job {
    pub fn new(spool: Spool, running: bool) -> Job {
        Job {
            id: spool.meta.job_id,
            dispatch: spool.meta.dispatch,
            spool: std::sync::Mutex::new(spool),
            stop: StopSwitch::default(),
            running: AtomicBool::new(running),
            forgotten: AtomicBool::new(false),
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Spools a batch (unless the job was forgotten) and says so to the
    /// connection.
    fn spool(&self, agent: &Agent, flush: Flush) {
        if self.forgotten.load(Ordering::SeqCst) {
            return;
        }
        let batch = LogBatch {
            lines: flush.lines,
            delete: flush.delete,
            marker: flush.marker,
            gap: flush.gap,
            last_seq: flush.last_seq,
            stored_bytes: flush.stored_bytes,
        };
        let mut spool = self.spool.locked();
        if let Err(e) = spool.append(&batch) {
            // N.B.: the batch is still sent from memory on this connection;
            // only a restart of the agent could lose it.
            tracing::error!(job = self.id, error = %e, "cannot write the spool");
        }
        if spool.unacked_bytes() > agent.compact_above() {
            match spool.compact() {
                Ok(saved) => tracing::info!(job = self.id, saved, "compacted the spool"),
                Err(e) => tracing::error!(job = self.id, error = %e, "cannot compact the spool"),
            }
        }
        drop(spool);
        agent.changed.notify_one();
    }
}

/// Runs `cmd` to its end; everything it prints goes to the job's spool.
pub async fn run(agent: Arc<Agent>, job: Arc<Job>, cmd: RunCommand) {
    let spec = RunSpec {
        argv: cmd.argv.clone(),
        env: Environment::for_job(&agent.base_env, &cmd.env),
        cwd: cmd.cwd.as_ref().map(Into::into),
        opening: cmd.opening.clone(),
        timeout: cmd.timeout_secs.map(Duration::from_secs),
        kill_grace: Duration::from_secs(cmd.kill_grace_secs),
        max_line_bytes: cmd.max_line_bytes,
        warning_exit_codes: cmd.warning_exit_codes.clone(),
        host: "the opsdeck agent",
        user: None,
    };
    let cap = agent.log_cap(cmd.max_log_bytes);
    if cap < cmd.max_log_bytes {
        tracing::warn!(
            job = job.id,
            cap,
            "the spool's bound caps this job's log below its template's max_log_bytes"
        );
    }
    let mut log = CappedLog::new(cmd.after_seq, cap, cmd.tail_lines);
    let (tx, mut rx) = mpsc::channel::<Out>(256);
    let stop = job.stop.clone();
    let supervised =
        tokio::spawn(async move { supervise::supervise(&spec, tx, &stop, |_| {}).await });

    // Batches as the server's log writer makes them: up to 1,000 lines,
    // or 5 ms after the first; a system line goes at once.
    let mut closed = false;
    while !closed {
        let Some(first) = rx.recv().await else { break };
        let mut urgent = accept(&agent, &job, &mut log, first);
        let deadline = Instant::now() + BATCH_WAIT;
        while log.pending() < BATCH_LINES && !urgent {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => urgent |= accept(&agent, &job, &mut log, m),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if log.pending() > 0 {
            job.spool(&agent, log.flush(false));
            log.flushed();
        }
    }
    let outcome = match supervised.await {
        Ok(o) => o,
        Err(e) => {
            let error = format!("the agent's supervisor failed: {e}");
            crate::engine::exit::Outcome {
                state: JobState::Failed,
                exit_code: None,
                error: Some(error.clone()),
                warnings: false,
                failure: Some(app::model::retry::Failure::Failed),
                summary: error,
            }
        }
    };
    log.push(LogStream::System, outcome.summary, logs::now_millis());
    job.spool(&agent, log.flush(true));
    log.flushed();
    end(
        &agent,
        &job,
        Ended {
            state: outcome.state,
            exit_code: outcome.exit_code,
            error: outcome.error,
            warnings: outcome.warnings,
            failure: outcome.failure,
        },
    );
}

/// Records the job's end in its spool and tells the connection.
pub fn end(agent: &Agent, job: &Job, ended: Ended) {
    job.running.store(false, Ordering::SeqCst);
    if job.forgotten.load(Ordering::SeqCst) {
        return;
    }
    if let Err(e) = job.spool.locked().finish(ended) {
        tracing::error!(job = job.id, error = %e, "cannot write the job's end to the spool");
    }
    agent.changed.notify_one();
}

/// Takes one message of the supervisor; true if it goes out at once.
fn accept(agent: &Agent, job: &Job, log: &mut CappedLog, out: Out) -> bool {
    match out {
        Out::Lines(stream, texts, ts) => {
            for text in texts {
                log.push(stream, text, ts);
            }
            false
        }
        Out::System(text) => {
            log.push(LogStream::System, text, logs::now_millis());
            true
        }
        Out::Note(text) => {
            log.push(LogStream::System, text, logs::now_millis());
            false
        }
        Out::Process { pgid, start } => {
            if let Err(e) = job.spool.locked().set_process(pgid, start) {
                tracing::error!(job = job.id, error = %e, "cannot record the process group in the spool");
            }
            agent.say(AgentMsg::JobStarted {
                job_id: job.id,
                dispatch: job.dispatch,
                pid: pgid,
                start_time: start,
            });
            false
        }
    }
}

/// A job the server sent that this agent will not run: it ends at once,
/// failed, with a line saying why.
pub fn refuse(agent: &Agent, job: &Job, after_seq: i64, why: String) {
    fail(agent, job, after_seq, 0, why.clone(), why);
}

/// Ends `job` failed with `error`, after its last `system` line `line`
/// (numbered after `last_seq`; `stored` is what its log already holds).
fn fail(agent: &Agent, job: &Job, last_seq: i64, stored: i64, line: String, error: String) {
    let mut log = CappedLog::new(last_seq, u64::MAX, 1);
    log.push(LogStream::System, line, logs::now_millis());
    let mut flush = log.flush(true);
    flush.stored_bytes += stored;
    job.spool(agent, flush);
    end(
        agent,
        job,
        Ended {
            state: JobState::Failed,
            exit_code: None,
            error: Some(error),
            warnings: false,
            failure: Some(app::model::retry::Failure::Failed),
        },
    );
}

/// After the agent restarted: a job whose process it no longer has ends
/// "interrupted: agent restarted", once what is left of its process group
/// is killed.
pub fn interrupted(agent: &Agent, job: &Job) {
    let (process, last_seq) = {
        let spool = job.spool.locked();
        (spool.meta.process, spool.last_seq())
    };
    let killed = process.map_or(0, |(pgid, start)| {
        crate::proc::group::kill_orphaned_group(pgid, Some(start))
    });
    let line = if killed > 0 {
        format!("interrupted: agent restarted (killed {killed} leftover process(es) of the job)")
    } else {
        "interrupted: agent restarted".to_string()
    };
    tracing::warn!(job = job.id, killed, "{line}");
    let stored = job.spool.locked().stored_bytes();
    fail(
        agent,
        job,
        last_seq,
        stored,
        line,
        "interrupted: agent restarted".into(),
    );
}
