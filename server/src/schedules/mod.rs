//! The scheduler: `[[schedules]]` launch their template on their target
//! by the clock (docs/automation.md, "Schedules").
//!
//! Every replica runs one [`run`] loop. It sleeps until the next fire of
//! any schedule (or a few seconds, to see a pause or resume made on
//! another replica), asks [`plan`] which fires are due and which were
//! missed, and records each as one [`FireWork`] through the group
//! committer: the fire's row and, when it runs, its job and audit entry
//! in one transaction. The row's unique `(schedule, scheduled_for)` makes
//! each fire happen once, also when every replica decides it: the other
//! inserts find it there and do nothing. A restart loses nothing: the
//! loop starts from the newest fire recorded, so what fell while no
//! replica ran is late, and the schedule's misfire policy says what runs.

pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::job::JobState;
use app::model::retry::RetryPolicy;
use app::model::schedule::{FireOutcome, Misfire, Overlap};
use app::model::template::Exclusive;
use app::model::webhook::EventKind;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use sea_orm::DbErr;
use serde_json::json;
use tokio::sync::Notify;

use crate::config::schedule::Schedule;
use crate::db::commit::Work;
use crate::db::jobs::{self, Enqueue, JobRow, Retry};
use crate::db::txn::Txn;
use crate::db::{audit, schedules as store};
use crate::engine::transition::{job_record, Actor};
use crate::hub::Hub;
use crate::state::AppState;
use crate::sync::Locked;
use crate::webhooks;

use plan::{plan, Missed, Policy};

/// The longest the loop sleeps: a pause or resume made on another replica
/// is seen within this.
const RECHECK: Duration = Duration::from_secs(5);
/// How often a waiting fire (`overlap = "queue"`) looks whether the run
/// before it has ended.
const WAITING_CHECK: Duration = Duration::from_secs(1);
/// Fires kept per schedule, and for how long (`prune`).
const KEEP_FIRES: u64 = 10_000;
const KEEP_DAYS: i64 = 90;

/// The `owner_id` of a job a schedule launched: no user's (ids start at 1).
pub const SYSTEM_OWNER_ID: i64 = 0;

/// Wakes the loop at once (a pause, resume or "run now" here).
#[derive(Clone, Default)]
pub struct Handle {
    wake: Arc<Notify>,
}

impl Handle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What recording a fire did.
#[derive(Debug, Clone)]
pub enum Done {
    /// A job was launched; `cancel` lists the previous run's jobs to
    /// cancel (`overlap = "cancel_previous"`).
    Launched {
        fire: i64,
        job: Box<JobRow>,
        cancel: Vec<i64>,
    },
    /// It waits for the previous run (`overlap = "queue"`).
    Waiting { fire: i64 },
    /// It was recorded as skipped.
    Skipped { fire: i64, reason: String },
    /// Another replica had recorded this fire already.
    AlreadyDecided,
    /// The schedule is paused (nothing recorded), or a waiting fire still
    /// waits.
    NotNow,
}

/// What a [`FireWork`] records.
#[derive(Debug, Clone)]
pub enum What {
    /// The cron expression's fire at this time.
    Fire(DateTime<Utc>),
    /// A run of fires missed while no replica ran.
    Missed(Missed),
    /// "Run now", asked by a person (who owns the job).
    Manual { by: Actor, user_id: i64 },
    /// A waiting fire, to launch if the previous run has ended.
    Waiting { fire: i64 },
}

/// One fire, recorded in the committer's transaction.
pub struct FireWork {
    pub hub: Hub,
    pub schedule: Schedule,
    pub exclusive: Exclusive,
    pub retry: Option<RetryPolicy>,
    pub what: What,
    pub done: Mutex<Option<Done>>,
}

impl FireWork {
    async fn previous_active(&self, txn: &Txn) -> Result<Vec<JobRow>, DbErr> {
        let Some(job) = store::latest_job(txn, &self.schedule.id).await? else {
            return Ok(Vec::new());
        };
        let root = match jobs::by_id(txn, job).await? {
            Some(row) => row.chain_root(),
            None => return Ok(Vec::new()),
        };
        Ok(jobs::chain(txn, root)
            .await?
            .into_iter()
            .filter(|j| !j.state.is_finished())
            .collect())
    }

    /// Inserts the job of fire `fire` (scheduled for `at`), owned by
    /// `actor` (user `owner_id`), and its audit entry.
    async fn launch(
        &self,
        txn: &Txn,
        fire: i64,
        at: DateTime<Utc>,
        actor: &Actor,
        owner_id: i64,
    ) -> Result<JobRow, DbErr> {
        let jitter = self.schedule.jitter.as_millis() as i64;
        let not_before = (jitter > 0).then(|| {
            let delay = rand::thread_rng().gen_range(0..=jitter);
            at.max(Utc::now()) + chrono::Duration::milliseconds(delay)
        });
        let row = jobs::insert(
            txn,
            Enqueue {
                template: &self.schedule.template,
                target: &self.schedule.target,
                params: &self.schedule.params,
                exclusive: self.exclusive,
                owner_id,
                owner: &actor.name,
                rerun_of: None,
                retry: Retry {
                    not_before,
                    ..Retry::first(self.retry.as_ref())
                },
            },
        )
        .await?;
        store::set_job(txn, fire, row.id).await?;
        let subject = format!("job {}", row.id);
        let mut record = job_record(actor, "job.launch", &subject, &row);
        if let Some(serde_json::Value::Object(detail)) = record.detail.as_mut() {
            detail.insert("schedule".into(), self.schedule.id.clone().into());
            detail.insert(
                "scheduled_for".into(),
                at.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
            );
        }
        audit::insert(txn, record).await?;
        Ok(row)
    }

    async fn skip(&self, txn: &Txn, at: DateTime<Utc>, reason: String) -> Result<Done, DbErr> {
        let fire = store::insert_fire(
            txn,
            store::NewFire {
                schedule: &self.schedule.id,
                scheduled_for: at,
                until: None,
                count: 1,
                outcome: FireOutcome::Skipped,
                reason: Some(reason.clone()),
                manual_by: None,
            },
        )
        .await?;
        let Some(fire) = fire else {
            return Ok(Done::AlreadyDecided);
        };
        self.announce(txn, at, None, 1, &reason).await?;
        Ok(Done::Skipped { fire, reason })
    }

    /// `schedule.missed` into the webhook outbox, if a hook wants it.
    async fn announce(
        &self,
        txn: &Txn,
        first: DateTime<Utc>,
        last: Option<DateTime<Utc>>,
        count: u64,
        reason: &str,
    ) -> Result<(), DbErr> {
        let s = &self.schedule;
        let event = webhooks::Event::new(
            EventKind::ScheduleMissed,
            Some(&s.template),
            Some(&s.target),
            json!({
                "schedule": s.id,
                "template": s.template,
                "target": s.target,
                "scheduled_for": first.to_rfc3339_opts(SecondsFormat::Secs, true),
                "until": last.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                "count": count,
                "reason": reason,
            }),
        );
        webhooks::enqueue(txn, self.hub.hooks(), &event)
            .await
            .map(|_| ())
    }

    async fn record(&self, txn: &Txn) -> Result<Done, DbErr> {
        let id = &self.schedule.id;
        match &self.what {
            What::Fire(at) => {
                if store::state_of(txn, id).await?.is_none_or(|s| s.paused) {
                    return Ok(Done::NotNow);
                }
                let active = self.previous_active(txn).await?;
                let busy = active
                    .iter()
                    .map(|j| format!("job {} is {}", j.id, j.state))
                    .collect::<Vec<_>>()
                    .join(", ");
                // A waiting fire goes first: a newer one never overtakes it.
                if self.schedule.overlap == Overlap::Queue {
                    if let Some(w) = store::waiting(txn, id).await? {
                        return self
                            .skip(
                                txn,
                                *at,
                                format!(
                                    "overlap: an earlier fire already waits ({})",
                                    w.scheduled_for.to_rfc3339_opts(SecondsFormat::Secs, true)
                                ),
                            )
                            .await;
                    }
                }
                let cancel = match self.schedule.overlap {
                    _ if active.is_empty() => Vec::new(),
                    Overlap::Allow => Vec::new(),
                    Overlap::Skip => {
                        return self
                            .skip(
                                txn,
                                *at,
                                format!("overlap: the previous run still runs ({busy})"),
                            )
                            .await
                    }
                    Overlap::Queue => {
                        let fire = store::insert_fire(
                            txn,
                            store::NewFire {
                                schedule: id,
                                scheduled_for: *at,
                                until: None,
                                count: 1,
                                outcome: FireOutcome::Waiting,
                                reason: Some(format!("waits for the previous run ({busy})")),
                                manual_by: None,
                            },
                        )
                        .await?;
                        return Ok(fire.map_or(Done::AlreadyDecided, |fire| Done::Waiting { fire }));
                    }
                    Overlap::CancelPrevious => active.iter().map(|j| j.id).collect(),
                };
                let reason = (!cancel.is_empty())
                    .then(|| format!("overlap: cancels the previous run ({busy})"));
                let fire = store::insert_fire(
                    txn,
                    store::NewFire {
                        schedule: id,
                        scheduled_for: *at,
                        until: None,
                        count: 1,
                        outcome: FireOutcome::Launched,
                        reason,
                        manual_by: None,
                    },
                )
                .await?;
                let Some(fire) = fire else {
                    return Ok(Done::AlreadyDecided);
                };
                let job = self
                    .launch(txn, fire, *at, &Actor::system(), SYSTEM_OWNER_ID)
                    .await?;
                Ok(Done::Launched {
                    fire,
                    job: Box::new(job),
                    cancel,
                })
            }
            What::Missed(m) => {
                let reason = missed_reason(self.schedule.misfire, m);
                let fire = store::insert_fire(
                    txn,
                    store::NewFire {
                        schedule: id,
                        scheduled_for: m.first,
                        until: (m.count > 1).then_some(m.last),
                        count: i64::try_from(m.count).unwrap_or(i64::MAX),
                        outcome: FireOutcome::Skipped,
                        reason: Some(reason.clone()),
                        manual_by: None,
                    },
                )
                .await?;
                let Some(fire) = fire else {
                    return Ok(Done::AlreadyDecided);
                };
                self.announce(
                    txn,
                    m.first,
                    (m.count > 1).then_some(m.last),
                    m.count,
                    &reason,
                )
                .await?;
                Ok(Done::Skipped { fire, reason })
            }
            What::Manual { by, user_id } => {
                let now = Utc::now();
                let fire = store::insert_fire(
                    txn,
                    store::NewFire {
                        schedule: id,
                        scheduled_for: now,
                        until: None,
                        count: 1,
                        outcome: FireOutcome::Launched,
                        reason: Some(format!("run now by {}", by.name)),
                        manual_by: Some(&by.name),
                    },
                )
                .await?
                .ok_or_else(|| DbErr::Custom("the run-now fire was not stored".into()))?;
                let job = self.launch(txn, fire, now, by, *user_id).await?;
                Ok(Done::Launched {
                    fire,
                    job: Box::new(job),
                    cancel: Vec::new(),
                })
            }
            What::Waiting { fire } => {
                if !self.previous_active(txn).await?.is_empty() {
                    return Ok(Done::NotNow);
                }
                if !store::settle_waiting(txn, *fire, FireOutcome::Launched, None).await? {
                    return Ok(Done::AlreadyDecided);
                }
                let at = Utc::now();
                let job = self
                    .launch(txn, *fire, at, &Actor::system(), SYSTEM_OWNER_ID)
                    .await?;
                Ok(Done::Launched {
                    fire: *fire,
                    job: Box::new(job),
                    cancel: Vec::new(),
                })
            }
        }
    }
}

/// Why a run of fires was missed, in the schedule's words.
fn missed_reason(misfire: Misfire, m: &Missed) -> String {
    let n = if m.exact {
        m.count.to_string()
    } else {
        format!("at least {}", m.count)
    };
    let what = if m.count == 1 {
        "this fire".to_string()
    } else {
        format!("these {n} fires")
    };
    match misfire {
        Misfire::Skip => format!("missed: opsdeck did not run at {what} (misfire = \"skip\")"),
        Misfire::Latest => format!(
            "missed: opsdeck did not run at {what}; only the latest late fire runs (misfire = \"latest\")"
        ),
        Misfire::All => format!(
            "missed: opsdeck did not run at {what}, older than the newest max_catchup late fires (misfire = \"all\")"
        ),
    }
}

#[async_trait::async_trait]
impl Work for FireWork {
    async fn apply(&self, txn: &Txn) -> Result<(), DbErr> {
        let done = self.record(txn).await?;
        *self.done.locked() = Some(done);
        Ok(())
    }

    fn committed(&self) {
        if let Some(Done::Launched { job, .. }) = self.done.locked().as_ref() {
            self.hub.job_changed(job.to_job());
        }
    }
}

/// Records `what` for `schedule`, then wakes the engine and cancels what
/// `cancel_previous` replaces. What happened.
pub async fn record(state: &AppState, schedule: &Schedule, what: What) -> Result<Done, DbErr> {
    let template = state.config.template(&schedule.template);
    let work = Arc::new(FireWork {
        hub: state.hub.clone(),
        schedule: schedule.clone(),
        exclusive: template.map(|t| t.exclusive).unwrap_or_default(),
        retry: template.and_then(|t| t.retry.clone()),
        what,
        done: Mutex::new(None),
    });
    state.committer.commit(work.clone()).await?;
    let done = work
        .done
        .locked()
        .take()
        .ok_or_else(|| DbErr::Custom("the fire was not recorded".into()))?;
    if let Done::Launched { job, cancel, .. } = &done {
        state.engine.wake();
        tracing::info!(schedule = %schedule.id, job = job.id, "schedule launched a job");
        for id in cancel {
            let by = Actor::system();
            if let Err(e) = crate::service::jobs::cancel_as(state, by, *id).await {
                tracing::warn!(schedule = %schedule.id, job = id, error = %e, "could not cancel the previous run");
            }
        }
    }
    if let Done::Skipped { reason, .. } = &done {
        tracing::info!(schedule = %schedule.id, %reason, "schedule fire skipped");
    }
    Ok(done)
}

/// The scheduler loop of this replica, until shutdown.
pub async fn run(state: AppState) {
    if state.config.schedules.is_empty() {
        return;
    }
    let ids: Vec<String> = state
        .config
        .schedules
        .iter()
        .map(|s| s.id.clone())
        .collect();
    // Where each schedule's fires stand: the newest decided, from the
    // database at start, then as this loop decides them.
    let mut decided: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut last_prune = None::<DateTime<Utc>>;
    loop {
        let now = Utc::now();
        let sleep = match round(&state, &ids, &mut decided, now).await {
            Ok(sleep) => sleep,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: a round failed; trying again");
                decided.clear();
                RECHECK
            }
        };
        if last_prune.is_none_or(|t| now - t > chrono::Duration::hours(1)) {
            last_prune = Some(now);
            match store::prune(
                &state.db,
                now - chrono::Duration::days(KEEP_DAYS),
                KEEP_FIRES,
            )
            .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(fires = n, "scheduler: deleted old fires"),
                Err(e) => tracing::warn!(error = %e, "scheduler: cannot delete old fires"),
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = state.scheduler.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass over every schedule; how long to sleep after it.
async fn round(
    state: &AppState,
    ids: &[String],
    decided: &mut HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Duration, DbErr> {
    let mut states: HashMap<String, store::StateRow> = store::states(&state.db)
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    // A schedule new to the database counts from now (once: then its row
    // is there).
    if ids.iter().any(|id| !states.contains_key(id)) {
        store::ensure(&state.db, ids, now).await?;
        states = store::states(&state.db)
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
    }
    let mut next_wake = now + chrono::Duration::from_std(RECHECK).unwrap_or_default();
    // Waiting fires first: one whose run before it has ended starts before
    // any new fire is decided.
    let waiting = store::with_waiting(&state.db).await?;
    for id in &waiting {
        let Some(s) = state.config.schedules.iter().find(|s| &s.id == id) else {
            continue;
        };
        if let Some(fire) = store::waiting(&state.db, id).await? {
            record(state, s, What::Waiting { fire: fire.id }).await?;
        }
    }
    for s in &state.config.schedules {
        let Some(st) = states.get(&s.id) else {
            continue;
        };
        if st.paused {
            continue;
        }
        let after = match decided.get(&s.id) {
            Some(t) => *t,
            None => store::last_decided(&state.db, &s.id)
                .await?
                .unwrap_or(st.since),
        }
        .max(st.since);
        let policy = Policy {
            misfire: s.misfire,
            max_catchup: s.max_catchup,
            grace: chrono::Duration::from_std(s.misfire_grace).unwrap_or_default(),
        };
        let p = plan(&s.cron, s.timezone, policy, after, now);
        let mut newest = after;
        if let Some(m) = p.missed {
            newest = newest.max(m.last);
            if matches!(
                record(state, s, What::Missed(m)).await?,
                Done::AlreadyDecided
            ) {
                decided.remove(&s.id);
                continue;
            }
        }
        let mut lost = false;
        for at in p.fires {
            newest = newest.max(at);
            if matches!(
                record(state, s, What::Fire(at)).await?,
                Done::AlreadyDecided
            ) {
                lost = true;
            }
        }
        if lost {
            // Another replica decided some of them: read where it stands.
            decided.remove(&s.id);
        } else {
            decided.insert(s.id.clone(), newest);
        }
        if let Some(next) = plan::next_after(&s.cron, s.timezone, newest.max(now)) {
            next_wake = next_wake.min(next);
        }
    }
    if !waiting.is_empty() {
        next_wake = next_wake
            .min(Utc::now() + chrono::Duration::from_std(WAITING_CHECK).unwrap_or_default());
    }
    Ok((next_wake - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// The state shown for a job in a fire list (`None` once deleted).
pub fn job_state(rows: &[JobRow], id: Option<i64>) -> Option<JobState> {
    let id = id?;
    rows.iter().find(|r| r.id == id).map(|r| r.state)
}
