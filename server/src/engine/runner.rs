//! Running one claimed job here: build its argv for the target, have it
//! supervised (`engine::supervise`) into the log writer, watch the database
//! for a cancel requested through another replica and for the job ceasing
//! to be this runner's (its node declared lost: fencing), and end the job
//! through its one transition.

use std::sync::Arc;
use std::time::Duration;

use app::model::job::JobState;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{Target, Template};
use crate::db::jobs::{self, Finish, JobRow, Owner};
use crate::engine::command;
use crate::engine::exit::Outcome;
use crate::engine::logwriter::{End, Limits, LogWriter};
use crate::engine::supervise::{self, RunSpec};
use crate::engine::transition::Transition;
use crate::engine::Engine;
use crate::proc::Environment;

pub use crate::engine::supervise::{StopReason, StopSwitch};

/// How often a running job looks in the database for a cancel requested
/// through another replica, and whether it is still this runner's. N.B.:
/// the cancel notification (`notify`) stops it sooner; this is the
/// fallback when that was missed (the listener was down), and keeps a
/// cancel within the 1 s the issue asks for even then.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// How a run ended, for the engine's loop.
#[derive(Debug)]
pub struct Ran {
    /// The job claimed next for this slot, in the same transaction as this
    /// one's end (none once shutdown began).
    pub next: Option<JobRow>,
    /// It ended `failed` (or its end could not be stored): its end may
    /// have queued a retry.
    pub failed: bool,
}

/// Runs a claimed job to its end. Never panics on the job path; every way
/// out ends the job through its one transition.
pub async fn run(engine: &Engine, job: JobRow, stop: StopSwitch, claimed_at: Instant) -> Ran {
    let span =
        tracing::info_span!("run", job = job.id, template = %job.template, target = %job.target);
    async move {
        let sink = engine.sink();
        sink.hub.job_changed(job.to_job());
        // The claim wrote both; this node's current owner only if a row
        // somehow lacks them.
        let owner = job.owner().unwrap_or_else(|| engine.owner());
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
            fail_without_process(engine, &job, owner, error).await;
            return Ran {
                next: None,
                failed: true,
            };
        };
        let limits = Limits {
            max_log_bytes: template.max_log_bytes,
            tail_lines: template.tail_lines,
            progress: template.progress,
        };
        let writer = LogWriter::start(
            sink.clone(),
            job.id,
            job.last_seq,
            limits,
            owner.clone(),
            stop.clone(),
        );
        let spec = run_spec(engine, &job, template, target);
        let outcome = {
            let watch = watch_job(engine, job.id, &owner, &stop);
            let started = |_pgid| engine.sink().metrics.claim_to_start(claimed_at.elapsed());
            let run = supervise::supervise(&spec, writer.sender(), &stop, started);
            tokio::select! {
                outcome = run => outcome,
                never = watch => match never {},
            }
        };
        let ended = outcome.state;
        let claim_for = (!sink.shutdown.is_cancelled()).then(|| engine.claim_for());
        let (finish, summary) = finish_of(outcome);
        // The last lines, the summary and the end, in one transaction.
        let done = writer
            .finish(End {
                finish,
                summary,
                claim_for,
            })
            .await;
        let failed = ended == JobState::Failed || done.finished.is_none();
        finished(engine, job.id, ended, done.finished).await;
        Ran {
            next: done.next,
            failed,
        }
    }
    .instrument(span)
    .await
}

/// Fails a job that could not even start, with a system line saying why.
async fn fail_without_process(engine: &Engine, job: &JobRow, owner: Owner, error: String) {
    tracing::warn!(job = job.id, "{error}");
    let sink = engine.sink();
    let t = Arc::new(Transition::fail(&sink.hub, job, error.clone(), error, false).owned_by(owner));
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
            failure: outcome.failure,
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

/// What the job runs, with its template's limits, in a clean environment.
fn run_spec(engine: &Engine, job: &JobRow, template: &Template, target: &Target) -> RunSpec {
    let params = job.params();
    let inv = command::build(template, target, &params, job.id);
    let shown: Vec<String> = template
        .shown
        .iter()
        .filter_map(|e| command::fill(e, &params))
        .collect();
    RunSpec {
        opening: format!("running on {}: {}", target.id, command::display(&shown)),
        env: Environment::for_job(&engine.config().jobs.base_env, &inv.env),
        argv: inv.argv,
        cwd: inv.workdir.map(Into::into),
        timeout: template.timeout,
        kill_grace: template.kill_grace,
        max_line_bytes: template.max_line_bytes,
        warning_exit_codes: template.warning_exit_codes.clone(),
        host: "the opsdeck server",
        user: target.run_as.clone(),
    }
}

/// Looks every [`CANCEL_POLL`] for a cancel that reached the database
/// through another replica, and stops the job when one did; kills it at
/// once when it is no longer `owner`'s (failed by another node while this
/// one was lost: a quiet job would otherwise run on unnoticed until its
/// next write). Never ends.
async fn watch_job(
    engine: &Engine,
    id: i64,
    owner: &Owner,
    stop: &StopSwitch,
) -> std::convert::Infallible {
    let mut poll = tokio::time::interval(CANCEL_POLL);
    poll.tick().await;
    loop {
        poll.tick().await;
        let Ok(Some(row)) = jobs::by_id(&engine.0.reader, id).await else {
            continue;
        };
        if !runs_under(&row, owner) {
            if stop.stop(StopReason::Lost) {
                tracing::warn!(job = id, node = %owner.node, epoch = owner.epoch, "the job is no longer this node's: killing its processes");
                engine.sink().metrics.job_fenced();
            }
        } else if row.state == JobState::Cancelling {
            let by = row.cancel_requested_by.unwrap_or_else(|| "someone".into());
            stop.stop(StopReason::Cancel { by });
        }
    }
}

/// Whether `row` is still running (or cancelling) under `owner`.
pub fn runs_under(row: &JobRow, owner: &Owner) -> bool {
    row.state.is_active() && row.owner().as_ref() == Some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: JobState, node: Option<&str>, epoch: Option<i64>) -> JobRow {
        let now = chrono::Utc::now();
        JobRow {
            id: 1,
            template: "t".into(),
            target: "t1".into(),
            params: "{}".into(),
            state,
            exclusive: app::model::template::Exclusive::Target,
            owner_id: 1,
            owner: "admin".into(),
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            updated_at: now,
            exit_code: None,
            error: None,
            warnings: false,
            progress: None,
            cancel_requested_by: None,
            node: node.map(Into::into),
            pgid: None,
            pgid_start: None,
            last_seq: 0,
            log_bytes: 0,
            omitted_from: None,
            omitted_to: None,
            omitted_bytes: 0,
            rerun_of: None,
            dispatch: 0,
            agent: None,
            epoch,
            attempt: 1,
            retry_of: None,
            not_before: None,
            retry: None,
        }
    }

    #[test]
    fn a_job_is_its_runners_only_while_it_runs_under_the_same_node_and_epoch() {
        let me = Owner {
            node: "a".into(),
            epoch: 2,
        };
        assert!(runs_under(&row(JobState::Running, Some("a"), Some(2)), &me));
        assert!(runs_under(
            &row(JobState::Cancelling, Some("a"), Some(2)),
            &me
        ));
        // Failed by another node while this one was lost.
        assert!(!runs_under(&row(JobState::Failed, Some("a"), Some(2)), &me));
        // The same node id, another epoch (this node started again, or
        // another process took the id).
        assert!(!runs_under(
            &row(JobState::Running, Some("a"), Some(3)),
            &me
        ));
        assert!(!runs_under(
            &row(JobState::Running, Some("b"), Some(2)),
            &me
        ));
        assert!(!runs_under(&row(JobState::Running, Some("a"), None), &me));
    }
}
