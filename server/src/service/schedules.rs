//! Schedules as a use case (admins): the list with each schedule's next
//! fires and latest fires, pause and resume (kept in the database, so
//! every replica and a restart honour them), and "run now". Each change
//! is audited.

use app::backend::Caller;
use app::error::AppError;
use app::model::job::Job;
use app::model::schedule::ScheduleInfo;
use chrono::Utc;
use sea_orm::TransactionTrait;

use crate::auth::policy;
use crate::config::schedule::Schedule;
use crate::db::{audit, jobs, schedules as store};
use crate::http::error::db_error;
use crate::schedules::{plan, record, Done, What};
use crate::service::jobs::actor_of;
use crate::state::AppState;

/// Fires listed per schedule, and upcoming fire times.
const SHOWN_FIRES: u64 = 20;
const SHOWN_NEXT: usize = 5;

fn find<'a>(state: &'a AppState, id: &str) -> Result<&'a Schedule, AppError> {
    state
        .config
        .schedules
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| AppError::NotFound(format!("there is no schedule `{id}`")))
}

pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<ScheduleInfo>, AppError> {
    policy::require_admin(caller)?;
    let now = Utc::now();
    // A schedule without its row yet (the scheduler writes it at its first
    // round) is not paused.
    let states = store::states(&state.reader)
        .await
        .map_err(|e| db_error(e, "reading schedules"))?;
    let mut out = Vec::with_capacity(state.config.schedules.len());
    for s in &state.config.schedules {
        let st = states.iter().find(|x| x.id == s.id);
        let paused = st.is_some_and(|x| x.paused);
        let fires = store::recent(&state.reader, &s.id, SHOWN_FIRES)
            .await
            .map_err(|e| db_error(e, "reading a schedule's fires"))?;
        let job_ids: Vec<i64> = fires.iter().filter_map(|f| f.job_id).collect();
        let rows = jobs::by_ids(&state.reader, &job_ids)
            .await
            .map_err(|e| db_error(e, "reading a schedule's jobs"))?;
        let next = if paused {
            Vec::new()
        } else {
            plan::upcoming(&s.cron, s.timezone, now, SHOWN_NEXT)
        };
        out.push(ScheduleInfo {
            id: s.id.clone(),
            template: s.template.clone(),
            target: s.target.clone(),
            params: s.params.clone(),
            cron: s.cron_text.clone(),
            timezone: s.timezone.name().to_string(),
            misfire: s.misfire,
            max_catchup: s.max_catchup,
            overlap: s.overlap,
            jitter_ms: u64::try_from(s.jitter.as_millis()).unwrap_or(u64::MAX),
            paused,
            paused_by: st.and_then(|x| x.paused_by.clone()),
            paused_at: st.and_then(|x| x.paused_at),
            next,
            fires: fires
                .iter()
                .map(|f| f.info(crate::schedules::job_state(&rows, f.job_id)))
                .collect(),
        });
    }
    Ok(out)
}

/// Pauses (`paused`) or resumes schedule `id`. Doing it twice is no error.
pub async fn set_paused(
    state: &AppState,
    caller: &Caller,
    id: &str,
    paused: bool,
) -> Result<(), AppError> {
    policy::require_admin(caller)?;
    let actor = actor_of(caller)?;
    find(state, id)?;
    let now = Utc::now();
    let txn = state
        .db
        .begin()
        .await
        .map_err(|e| db_error(e, "changing a schedule"))?;
    store::ensure(&txn, &[id.to_string()], now)
        .await
        .map_err(|e| db_error(e, "changing a schedule"))?;
    let changed = store::set_paused(&txn, id, paused, &actor.name, now)
        .await
        .map_err(|e| db_error(e, "changing a schedule"))?;
    if changed {
        audit::insert(
            &txn,
            audit::Record {
                actor: &actor.name,
                action: if paused {
                    "schedule.pause"
                } else {
                    "schedule.resume"
                },
                subject: &format!("schedule {id}"),
                detail: None,
                ip: actor.ip.as_deref(),
            },
        )
        .await
        .map_err(|e| db_error(e, "writing the audit log"))?;
    }
    txn.commit()
        .await
        .map_err(|e| db_error(e, "changing a schedule"))?;
    state.scheduler.wake();
    Ok(())
}

/// Launches schedule `id`'s job now, owned by the caller, whatever its
/// pause state and overlap policy (the template's `exclusive` still
/// applies); recorded among its fires and audited as a launch.
pub async fn run_now(state: &AppState, caller: &Caller, id: &str) -> Result<Job, AppError> {
    let user = policy::require_admin(caller)?;
    let user_id = user.id;
    let by = actor_of(caller)?;
    let schedule = find(state, id)?;
    match record(state, schedule, What::Manual { by, user_id })
        .await
        .map_err(|e| db_error(e, "running a schedule"))?
    {
        Done::Launched { job, .. } => Ok(job.to_job()),
        other => Err(AppError::Conflict(format!(
            "schedule `{id}` did not launch a job: {other:?}"
        ))),
    }
}
