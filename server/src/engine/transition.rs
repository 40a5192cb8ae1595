//! The one transition. Every change of a job's state — a run that ends
//! (exit, spawn failure, timeout, cancel), a cancel of a queued or running
//! job, recovery at start, a claim given back at shutdown — is a
//! [`Transition`], applied through `db::commit` in one transaction with
//! everything that belongs to it:
//!
//! 1. the compare-and-set of the state (nothing is written if the job is
//!    not in one of the expected states: a cancel racing an exit, or two
//!    replicas, can never both win) with the columns that go with it (the
//!    finish fields, who cancelled, the log's last position);
//! 2. its `system` lines, numbered after the job's `last_seq` by the same
//!    rule as every other line (`db::logs::Seqs`), with `last_seq` and
//!    `log_bytes` moved in the same statement as the state (a run's end
//!    carries none of its own: the log writer numbered its summary line
//!    with the rest of its last batch, which this transition stores);
//! 3. its audit entry;
//! 4. for a job that ends, its webhook event in the outbox (`webhooks`):
//!    `job.failed`, `job.succeeded`, … and `agent.lost` for a job failed
//!    because its agent was lost (each only if a `[[notify]]` hook wants
//!    it: `webhooks::enqueue`);
//! 5. for a failed attempt whose chain's retry policy covers why it
//!    failed (`Failure`), the next attempt: a queued job waiting until
//!    its backoff has passed (`not_before`), linked to the chain's first,
//!    audited as `job.retry` by `system`, with a line in the failed
//!    attempt's log naming it. So a crash can neither lose a retry nor
//!    make two;
//! 6. for a job that ends, its target's last error (`db::target_state`):
//!    set by a failure, cleared by a success.
//!
//! Then, and only after the commit, the hub hears of it ([`Work::committed`]):
//! the lines, the new state, and for a finished job the end of its channel
//! (and, through the hub, its target's status probe runs again: `status`).
//! A crash at any moment leaves the job either before the transition or
//! after all of it.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use app::model::job::{JobState, LogLine, LogStream};
use app::model::retry::Failure;
use sea_orm::DbErr;
use serde_json::json;

use crate::db::commit::Work;
use crate::db::jobs::{
    self, entity::Column, Enqueue, Finish, JobRow, LogPosition, Owner, Retry, StateChange,
};
use crate::db::txn::Txn;
use crate::db::{audit, logs, target_state};
use crate::hub::{Hub, LogBatch, Update};
use crate::sync::Locked;
use crate::webhooks;

/// The states a job runs in: a process group may exist.
pub const ACTIVE: &[JobState] = &[JobState::Running, JobState::Cancelling];

/// The audit action of a job failed because its agent was lost (it also
/// announces `agent.lost`).
pub const AGENT_LOST: &str = "job.agent_lost";

/// Who an audit entry names, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub ip: Option<String>,
}

impl Actor {
    /// opsdeck itself (recovery, a lost node).
    pub fn system() -> Actor {
        Actor {
            name: "system".into(),
            ip: None,
        }
    }
}

/// The audit entry a transition writes.
#[derive(Debug, Clone)]
struct Audit {
    actor: Actor,
    action: &'static str,
}

/// One change of one job's state, with its lines and audit entry.
pub struct Transition {
    job_id: i64,
    from: &'static [JobState],
    to: JobState,
    set: Vec<(Column, sea_orm::Value)>,
    /// `system` lines appended with it.
    lines: Vec<String>,
    audit: Option<Audit>,
    /// The log's position as the job's writer leaves it (a run's end).
    position: Option<LogPosition>,
    /// Only if the job still runs this dispatch (an agent's job).
    dispatch: Option<i64>,
    /// Only if the job still runs under this node and epoch (a local
    /// runner's end: fencing).
    owner: Option<Owner>,
    /// Why the job fails, when it ends `failed` (what a retry policy's
    /// `on` is matched against).
    failure: Failure,
    hub: Hub,
    /// The row after the change, if it won (the last try's).
    row: Mutex<Option<JobRow>>,
    /// The next attempt it queued, if it did (the last try's).
    retried: Mutex<Option<JobRow>>,
    /// Its lines as stored.
    stored: Mutex<Vec<LogLine>>,
}

impl Transition {
    fn new(hub: &Hub, job_id: i64, from: &'static [JobState], to: JobState) -> Transition {
        Transition {
            job_id,
            from,
            to,
            set: Vec::new(),
            lines: Vec::new(),
            audit: None,
            position: None,
            dispatch: None,
            owner: None,
            failure: Failure::Failed,
            hub: hub.clone(),
            row: Mutex::new(None),
            retried: Mutex::new(None),
            stored: Mutex::new(Vec::new()),
        }
    }

    fn line(mut self, text: impl Into<String>) -> Transition {
        self.lines.push(text.into());
        self
    }

    fn audited(mut self, actor: Actor, action: &'static str) -> Transition {
        self.audit = Some(Audit { actor, action });
        self
    }

    /// A run ends as `finish` says, storing the log's final `position`:
    /// the log writer's last batch applies it, with the lines the writer
    /// numbered (its summary line the last of them).
    pub fn finish(hub: &Hub, job_id: i64, finish: &Finish, position: LogPosition) -> Transition {
        let mut t = Transition::new(hub, job_id, ACTIVE, finish.state);
        t.set = finish.columns();
        t.position = Some(position);
        t.failure = finish.failure.unwrap_or(Failure::Failed);
        t
    }

    /// Says why the job fails (a failure without a process is `failed`,
    /// and one by [`Transition::fail_as`] `agent_lost`, unless told).
    pub fn because(mut self, why: Failure) -> Transition {
        self.failure = why;
        self
    }

    /// A job that has no process (any more) fails: it could not start, or
    /// recovery found it interrupted. `line` says why in its log; `error`
    /// is its error; an audit entry by `system` is written when `audited`.
    pub fn fail(hub: &Hub, job: &JobRow, line: String, error: String, audited: bool) -> Transition {
        let finish = Finish {
            state: JobState::Failed,
            failure: Some(Failure::Failed),
            exit_code: None,
            error: Some(error),
            warnings: false,
            progress: job.progress(),
        };
        let mut t = Transition::new(hub, job.id, ACTIVE, JobState::Failed).line(line);
        t.set = finish.columns();
        if audited {
            t = t.audited(Actor::system(), "job.interrupted");
        }
        t
    }

    /// queued → cancelled at once, with a line saying who.
    pub fn cancel_queued(hub: &Hub, job_id: i64, by: Actor) -> Transition {
        let line = format!("cancelled by {} before it started", by.name);
        let mut t =
            Transition::new(hub, job_id, &[JobState::Queued], JobState::Cancelled).line(line);
        t.set = vec![
            (Column::CancelRequestedBy, by.name.clone().into()),
            (Column::FinishedAt, chrono::Utc::now().into()),
        ];
        t.audited(by, "job.cancel")
    }

    /// running → cancelling; the runner then stops the process group and
    /// ends the job `cancelled` (its lines say each step).
    pub fn cancel_running(hub: &Hub, job_id: i64, by: Actor) -> Transition {
        let mut t = Transition::new(hub, job_id, &[JobState::Running], JobState::Cancelling);
        t.set = vec![(Column::CancelRequestedBy, by.name.clone().into())];
        t.audited(by, "job.cancel")
    }

    /// running → queued again: a claim that will not run (shutdown began
    /// between the claim and its start).
    pub fn unclaim(hub: &Hub, job_id: i64) -> Transition {
        let mut t = Transition::new(hub, job_id, &[JobState::Running], JobState::Queued);
        t.set = vec![
            (
                Column::StartedAt,
                Option::<chrono::DateTime<chrono::Utc>>::None.into(),
            ),
            (Column::Node, Option::<String>::None.into()),
        ];
        t
    }

    /// Applies only while the job still runs `dispatch` on its agent: a
    /// message about an older dispatch changes nothing.
    pub fn for_dispatch(mut self, dispatch: i64) -> Transition {
        self.dispatch = Some(dispatch);
        self
    }

    /// Applies only while the job still runs under `owner` (its runner's
    /// node and epoch): a runner whose node was declared lost meanwhile
    /// changes nothing.
    pub fn owned_by(mut self, owner: Owner) -> Transition {
        self.owner = Some(owner);
        self
    }

    /// A job on an agent ends as the agent reports: its lines are stored
    /// already (each batch as it came); the end needs the whole log, up
    /// to `last_seq`.
    pub fn finish_on_agent(hub: &Hub, job_id: i64, finish: &Finish, dispatch: i64) -> Transition {
        let mut t = Transition::new(hub, job_id, ACTIVE, finish.state);
        t.set = finish.columns();
        t.failure = finish.failure.unwrap_or(Failure::Failed);
        t.for_dispatch(dispatch)
    }

    /// Fails an active job with `line` in its log, audited as `action` by
    /// `actor` (an agent lost, an admin's "Mark failed").
    pub fn fail_as(
        hub: &Hub,
        job: &JobRow,
        line: String,
        error: String,
        actor: Actor,
        action: &'static str,
    ) -> Transition {
        let mut t = Transition::fail(hub, job, line, error, false)
            .audited(actor, action)
            .because(Failure::AgentLost);
        if job.agent.is_some() {
            t.dispatch = Some(job.dispatch);
        }
        t
    }

    /// The row after the change, if it won (after the commit).
    pub fn row(&self) -> Option<JobRow> {
        self.row.locked().clone()
    }

    /// Applies the change inside `txn` (see the module comment).
    pub async fn apply_in(&self, txn: &Txn) -> Result<(), DbErr> {
        self.apply_with(txn, &[]).await.map(|_| ())
    }

    /// Applies the change inside `txn`, inserting `before` (lines its
    /// writer numbered, up to the position it carries) ahead of its own
    /// lines in the same statement; true if it won. If it lost, nothing is
    /// written (`before` neither: the caller stores those itself).
    pub async fn apply_with(&self, txn: &Txn, before: &[LogLine]) -> Result<bool, DbErr> {
        let bytes: usize = self.lines.iter().map(String::len).sum();
        let n = self.lines.len() as i64;
        let row = jobs::change_state(
            txn,
            StateChange {
                id: self.job_id,
                from: self.from,
                to: self.to,
                set: self.set.clone(),
                lines: n,
                bytes: bytes as i64,
                position: self.position.as_ref(),
                dispatch: self.dispatch,
                owner: self.owner.as_ref(),
            },
        )
        .await?;
        let Some(mut row) = row else {
            *self.row.locked() = None;
            *self.retried.locked() = None;
            self.stored.locked().clear();
            return Ok(false);
        };
        let mut texts = self.lines.clone();
        let retried = self.retry_in(txn, &mut row).await?;
        if let Some((_, line)) = &retried {
            texts.push(line.clone());
        }
        let mut seqs = logs::Seqs::after(row.last_seq - texts.len() as i64);
        let ts = logs::now_millis();
        let lines: Vec<LogLine> = texts
            .into_iter()
            .map(|text| seqs.line(LogStream::System, text, ts))
            .collect();
        // The writer's lines ahead of the end's own, in one batch (copied
        // together only when there are both).
        let all: Cow<[LogLine]> = match (before.is_empty(), lines.is_empty()) {
            (true, _) => lines.as_slice().into(),
            (false, true) => before.into(),
            (false, false) => [before, &lines].concat().into(),
        };
        logs::store_batch(txn, self.job_id, &all).await?;
        if let Some(a) = &self.audit {
            let subject = format!("job {}", row.id);
            audit::insert(txn, job_record(&a.actor, a.action, &subject, &row)).await?;
        }
        if row.state.is_finished() {
            target_state::job_ended_in(txn, &row).await?;
        }
        if let Some(event) = webhooks::Event::job_end(&row) {
            let hooks = self.hub.hooks();
            webhooks::enqueue(txn, hooks, &event).await?;
            if self.audit.as_ref().is_some_and(|a| a.action == AGENT_LOST) {
                webhooks::enqueue(txn, hooks, &webhooks::Event::agent_lost(&row)).await?;
            }
        }
        *self.row.locked() = Some(row);
        *self.retried.locked() = retried.map(|(next, _)| next);
        *self.stored.locked() = lines;
        Ok(true)
    }

    /// The next attempt of a job that just failed (`row`, as changed), if
    /// its chain's policy covers why: queued, waiting until its backoff
    /// has passed, audited; and the line that says so in the failed
    /// attempt's log (`row`'s log position is moved for it here).
    ///
    /// N.B.: a job whose cancel was asked is never retried, whatever it
    /// ended as: a cancel stops the chain.
    async fn retry_in(
        &self,
        txn: &Txn,
        row: &mut JobRow,
    ) -> Result<Option<(JobRow, String)>, DbErr> {
        let Some(policy) = row.retry.clone() else {
            return Ok(None);
        };
        let attempt = u32::try_from(row.attempt).unwrap_or(u32::MAX);
        if row.state != JobState::Failed
            || row.cancel_requested_by.is_some()
            || !policy.retries(attempt, self.failure)
        {
            return Ok(None);
        }
        let delay = policy.delay(attempt);
        let now = chrono::Utc::now();
        // (A validated policy waits at most 100 years: no overflow.)
        let not_before = chrono::TimeDelta::from_std(delay)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        let next = jobs::insert(
            txn,
            Enqueue {
                template: &row.template,
                target: &row.target,
                params: &row.params(),
                exclusive: row.exclusive,
                owner_id: row.owner_id,
                owner: &row.owner,
                rerun_of: None,
                retry: Retry {
                    policy: Some(&policy),
                    attempt: row.attempt + 1,
                    retry_of: Some(row.chain_root()),
                    not_before: Some(not_before),
                },
            },
        )
        .await?;
        let subject = format!("job {}", next.id);
        let system = Actor::system();
        let mut record = job_record(&system, "job.retry", &subject, &next);
        if let Some(serde_json::Value::Object(detail)) = record.detail.as_mut() {
            detail.insert("attempt".into(), json!(next.attempt));
            detail.insert("retry_of".into(), json!(row.id));
            detail.insert("failure".into(), json!(self.failure.as_str()));
        }
        audit::insert(txn, record).await?;
        let line = format!(
            "attempt {attempt} of {} failed ({}): retrying as job {} in {}, not before {}",
            policy.max.saturating_add(1),
            self.failure.as_str(),
            next.id,
            wait_text(delay),
            app::model::time::format_utc(&not_before),
        );
        // The failed attempt's log position moves for the line.
        jobs::extend_log(txn, row.id, 1, line.len() as i64).await?;
        row.last_seq += 1;
        row.log_bytes += line.len() as i64;
        Ok(Some((next, line)))
    }

    /// Announces the committed change: its lines, the new state, and the
    /// end of a finished job's channel.
    pub fn announce(&self) {
        let Some(row) = self.row.locked().clone() else {
            return;
        };
        let lines = std::mem::take(&mut *self.stored.locked());
        if !lines.is_empty() {
            self.hub
                .publish(row.id, Update::Lines(Arc::new(LogBatch::new(lines))));
        }
        self.hub.job_changed(row.to_job());
        if row.state.is_finished() {
            self.hub.close(row.id);
        }
        if let Some(next) = self.retried.locked().take() {
            self.hub.job_changed(next.to_job());
        }
    }
}

#[async_trait::async_trait]
impl Work for Transition {
    fn job(&self) -> Option<i64> {
        Some(self.job_id)
    }

    async fn apply(&self, txn: &Txn) -> Result<(), DbErr> {
        self.apply_in(txn).await
    }

    fn committed(&self) {
        self.announce();
    }
}

/// A retry's wait as its line says it: `750ms`, `10s`, `2m 00s`.
fn wait_text(d: std::time::Duration) -> String {
    if d.subsec_millis() != 0 && d.as_secs() < 60 {
        format!("{}ms", d.as_millis())
    } else {
        app::model::time::format_duration_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// The audit entry of an action on a job: who, and what the job is.
pub fn job_record<'a>(
    actor: &'a Actor,
    action: &'a str,
    subject: &'a str,
    row: &JobRow,
) -> audit::Record<'a> {
    audit::Record {
        actor: &actor.name,
        action,
        subject,
        detail: Some(json!({
            "template": row.template,
            "target": row.target,
            "params": serde_json::Value::Object(row.params()),
        })),
        ip: actor.ip.as_deref(),
    }
}
