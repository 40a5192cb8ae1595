//! Job operations as the API and the pages offer them: list templates and
//! targets, launch (validate, enqueue, wake), read, cancel, rerun, read the
//! log. Every one asks `auth::policy` first.

use app::backend::Caller;
use app::error::AppError;
use app::model::job::{
    Job, JobFilter, JobPage, JobState, JobView, LogPage, LogStream, NewJob, TargetSummary,
};
use app::model::template::{validate_params, Exclusive, TargetInfo, TemplateInfo};
use app::model::user::CurrentUser;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::auth::policy;
use crate::config::Template;
use crate::db::audit::{self, Record};
use crate::db::commit::Work;
use crate::db::jobs::{self, Enqueue, JobRow};
use crate::db::logs;
use crate::engine::runner::StopReason;
use crate::http::error::db_error;
use crate::state::AppState;
use crate::sync::Locked;

/// The most lines one log page holds.
pub const MAX_LOG_PAGE: u64 = 10_000;

fn exclusive_str(e: Exclusive) -> &'static str {
    match e {
        Exclusive::Target => "target",
        Exclusive::Global => "global",
        Exclusive::None => "none",
    }
}

/// Templates the caller may run, with the targets they may run them on.
pub fn templates(state: &AppState, caller: &Caller) -> Result<Vec<TemplateInfo>, AppError> {
    let user = policy::require_user(caller)?;
    let targets = policy::launchable_targets(user, &state.config);
    Ok(state
        .config
        .templates
        .iter()
        .filter_map(|t| {
            let on: Vec<String> = targets
                .iter()
                .filter(|x| t.allows_target(&x.id))
                .map(|x| x.id.clone())
                .collect();
            (!on.is_empty()).then(|| TemplateInfo {
                id: t.id.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                params: t.params.clone(),
                targets: on,
                exclusive: t.exclusive,
                progress: t.progress,
                command: t.shown.clone(),
            })
        })
        .collect())
}

/// Targets the caller may launch on, with the templates for each.
pub fn targets(state: &AppState, caller: &Caller) -> Result<Vec<TargetInfo>, AppError> {
    let user = policy::require_user(caller)?;
    Ok(policy::launchable_targets(user, &state.config)
        .into_iter()
        .map(|t| TargetInfo {
            id: t.id.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            kind: t.kind(),
            owners: t.owners.clone(),
            terminal: crate::auth::policy::may_open_terminal(user, t),
            templates: state
                .config
                .templates
                .iter()
                .filter(|tpl| tpl.allows_target(&t.id))
                .map(|tpl| tpl.id.clone())
                .collect(),
        })
        .collect())
}

/// Validates and enqueues a job; wakes the engine.
pub async fn launch(
    state: &AppState,
    caller: &Caller,
    new: NewJob,
    rerun_of: Option<i64>,
) -> Result<Job, AppError> {
    let user = policy::require_user(caller)?;
    let config = &state.config;
    let template = config.template(&new.template).ok_or_else(|| {
        AppError::field(
            "template",
            format!("there is no template `{}`", new.template),
        )
    })?;
    let target = config
        .target(&new.target)
        .filter(|t| policy::may_launch(user, t))
        .ok_or_else(|| {
            AppError::field(
                "target",
                format!("there is no target `{}` you can launch on", new.target),
            )
        })?;
    if !template.allows_target(&target.id) {
        let on = template
            .targets
            .as_ref()
            .map(|t| t.join(", "))
            .unwrap_or_default();
        return Err(AppError::field(
            "target",
            format!(
                "template `{}` does not run on `{}`; it runs on: {on}",
                template.id, target.id
            ),
        ));
    }
    let params = validate_params(&template.params, &new.params, &|p, v| {
        regex_match(template, p, v)
    })?;
    // N.B.: `queued` is published inside the inserting transaction, so it
    // reaches the feed before any runner can claim the job (a claim needs
    // the committed row, or comes later in the same transaction) and never
    // after its `running` or its end.
    let launch = Arc::new(Launch {
        state: state.clone(),
        template: template.id.clone(),
        target: target.id.clone(),
        params,
        exclusive: exclusive_str(template.exclusive),
        owner_id: user.id,
        owner: user.username.clone(),
        rerun_of,
        ip: caller.ip.clone(),
        row: Mutex::new(None),
    });
    let committed = state.committer.commit(launch.clone()).await;
    let row = launch.row.locked().take();
    let row = match (committed, row) {
        (Ok(()), Some(row)) => row,
        (result, row) => {
            if let Some(row) = row {
                state.hub.deleted(row.id);
            }
            let e = result
                .err()
                .unwrap_or_else(|| sea_orm::DbErr::Custom("the job was not stored".into()));
            return Err(db_error(e, "enqueueing a job"));
        }
    };
    let job = row.to_job();
    state.engine.wake();
    tracing::info!(job = row.id, template = %row.template, target = %row.target, owner = %row.owner, "job queued");
    Ok(job)
}

/// The string-pattern check: the pattern is the template's compiled regex.
fn regex_match(template: &Template, pattern_of: &str, value: &str) -> bool {
    template
        .params
        .iter()
        .find(|p| p.pattern.as_deref() == Some(pattern_of))
        .is_none_or(|p| template.pattern_matches(&p.name, value))
}

/// A launch, applied in the writer's next group transaction: the `queued`
/// row, its audit entry, and the `queued` event.
struct Launch {
    state: AppState,
    template: String,
    target: String,
    params: serde_json::Map<String, serde_json::Value>,
    exclusive: &'static str,
    owner_id: i64,
    owner: String,
    rerun_of: Option<i64>,
    ip: Option<String>,
    /// The stored row (the last try's, if a group was retried).
    row: Mutex<Option<JobRow>>,
}

#[async_trait::async_trait]
impl Work for Launch {
    async fn apply(&self, txn: &sea_orm::DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
        let row = jobs::insert(
            txn,
            Enqueue {
                template: &self.template,
                target: &self.target,
                params: &self.params,
                exclusive: self.exclusive,
                owner_id: self.owner_id,
                owner: &self.owner,
                rerun_of: self.rerun_of,
            },
        )
        .await?;
        let before = self.row.locked().replace(row.clone());
        // Applied again after its group rolled back: the first try's row,
        // already announced, never was (PostgreSQL does not reuse its id).
        if let Some(gone) = before.filter(|b| b.id != row.id) {
            self.state.hub.deleted(gone.id);
        }
        let subject = format!("job {}", row.id);
        let record = job_record(
            &self.owner,
            "job.launch",
            &subject,
            &row,
            self.ip.as_deref(),
        );
        audit::insert(txn, record).await?;
        self.state.hub.job_changed(row.to_job());
        Ok(())
    }
}

/// The audit entry of an action on a job.
fn job_record<'a>(
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    row: &JobRow,
    ip: Option<&'a str>,
) -> Record<'a> {
    Record {
        actor,
        action,
        subject,
        detail: Some(json!({
            "template": row.template,
            "target": row.target,
            "params": serde_json::from_str::<serde_json::Value>(&row.params).unwrap_or_default(),
        })),
        ip,
    }
}

async fn audit_job(
    db: &impl sea_orm::ConnectionTrait,
    caller: &Caller,
    user: &CurrentUser,
    action: &str,
    row: &JobRow,
) -> Result<(), AppError> {
    let subject = format!("job {}", row.id);
    let record = job_record(&user.username, action, &subject, row, caller.ip.as_deref());
    audit::insert(db, record)
        .await
        .map_err(|e| db_error(e, "writing the audit log"))
}

/// A job the caller may see, or 404.
pub async fn visible_row(state: &AppState, caller: &Caller, id: i64) -> Result<JobRow, AppError> {
    let user = policy::require_user(caller)?;
    jobs::by_id(&state.reader, id)
        .await
        .map_err(|e| db_error(e, "reading a job"))?
        .filter(|row| policy::may_see_job(user, row, &state.config))
        .ok_or_else(|| AppError::NotFound(format!("no job {id}")))
}

pub async fn get(state: &AppState, caller: &Caller, id: i64) -> Result<Job, AppError> {
    Ok(visible_row(state, caller, id).await?.to_job())
}

/// Jobs the caller may see, newest first.
pub async fn list(
    state: &AppState,
    caller: &Caller,
    filter: JobFilter,
) -> Result<JobPage, AppError> {
    let user = policy::require_user(caller)?;
    if let Some(s) = filter.state.as_deref().filter(|s| !s.is_empty()) {
        if let Some(bad) = s
            .split(',')
            .map(str::trim)
            .find(|x| JobState::parse(x).is_none())
        {
            return Err(AppError::field(
                "state",
                format!("`{bad}` is not a job state: use queued, running, cancelling, succeeded, failed or cancelled"),
            ));
        }
    }
    let owned: Vec<String> = policy::launchable_targets(user, &state.config)
        .into_iter()
        .map(|t| t.id.clone())
        .collect();
    let visible = if filter.mine == Some(true) {
        jobs::Visible::Own { user_id: user.id }
    } else {
        policy::visible_jobs(user, &owned)
    };
    let (rows, next_before) = jobs::list(&state.reader, &filter, visible)
        .await
        .map_err(|e| db_error(e, "listing jobs"))?;
    Ok(JobPage {
        jobs: rows.iter().map(JobRow::to_job).collect(),
        next_before,
    })
}

/// Cancels a job: queued → cancelled at once; running → cancelling, and
/// the runner stops its process group. 409 once it has finished.
pub async fn cancel(state: &AppState, caller: &Caller, id: i64) -> Result<Job, AppError> {
    let user = policy::require_user(caller)?.clone();
    let row = visible_row(state, caller, id).await?;
    let db = &state.db;
    let by = user.username.as_str();
    match row.state() {
        s if s.is_finished() => {
            return Err(AppError::Conflict(format!(
                "job {id} has already finished ({s}); there is nothing to cancel"
            )))
        }
        JobState::Cancelling => return Ok(row.to_job()),
        JobState::Queued => {
            if jobs::cancel_queued(db, id, by)
                .await
                .map_err(|e| db_error(e, "cancelling a job"))?
            {
                logs::append_system(db, id, &format!("cancelled by {by} before it started"))
                    .await
                    .map_err(|e| db_error(e, "writing a system line"))?;
                state.hub.close(id);
            } else {
                // It was claimed meanwhile: cancel it as a running job.
                cancel_running(state, id, by).await?;
            }
        }
        _ => cancel_running(state, id, by).await?,
    }
    audit_job(&state.db, caller, &user, "job.cancel", &row).await?;
    let job = jobs::by_id(db, id)
        .await
        .map_err(|e| db_error(e, "reading a job"))?
        .map(|r| r.to_job())
        .ok_or_else(|| AppError::NotFound(format!("no job {id}")))?;
    state.hub.job_changed(job.clone());
    Ok(job)
}

async fn cancel_running(state: &AppState, id: i64, by: &str) -> Result<(), AppError> {
    if jobs::mark_cancelling(&state.db, id, by)
        .await
        .map_err(|e| db_error(e, "cancelling a job"))?
    {
        // Here, the runner hears it now; elsewhere, its replica polls.
        state
            .engine
            .stop_job(id, StopReason::Cancel { by: by.to_string() });
        Ok(())
    } else {
        let now = jobs::by_id(&state.db, id)
            .await
            .ok()
            .flatten()
            .map(|r| r.state());
        match now {
            Some(s) if s.is_finished() => Err(AppError::Conflict(format!(
                "job {id} has already finished ({s})"
            ))),
            _ => Ok(()),
        }
    }
}

/// Enqueues a copy of a finished job (re-validated against today's config).
pub async fn rerun(state: &AppState, caller: &Caller, id: i64) -> Result<Job, AppError> {
    let row = visible_row(state, caller, id).await?;
    let job = row.to_job();
    launch(
        state,
        caller,
        NewJob {
            template: job.template,
            target: job.target,
            params: job.params,
        },
        Some(id),
    )
    .await
}

/// Stored lines with `seq > after`, at most `limit` (≤ 10,000).
pub async fn log(
    state: &AppState,
    caller: &Caller,
    id: i64,
    after: i64,
    limit: u64,
) -> Result<LogPage, AppError> {
    let row = visible_row(state, caller, id).await?;
    if after < 0 {
        return Err(AppError::field("after", "`after` is a seq: 0 or more"));
    }
    let lines = logs::page(&state.reader, id, after, limit.clamp(1, MAX_LOG_PAGE))
        .await
        .map_err(|e| db_error(e, "reading a log"))?;
    let job = row.to_job();
    Ok(LogPage {
        lines,
        last_seq: job.last_seq,
        omitted: job.omitted,
    })
}

/// Lines the job page shows at first load, and stderr lines its failure
/// panel shows.
const VIEW_LINES: u64 = 200;
const STDERR_TAIL: u64 = 20;

/// The job page's first load.
pub async fn view(state: &AppState, caller: &Caller, id: i64) -> Result<JobView, AppError> {
    let row = visible_row(state, caller, id).await?;
    let job = row.to_job();
    let from = (job.last_seq + 1).max(1);
    let lines = logs::page_before(&state.reader, id, from, VIEW_LINES)
        .await
        .map_err(|e| db_error(e, "reading a log"))?;
    let stderr_tail = if job.state == JobState::Failed {
        logs::tail_of_stream(&state.reader, id, LogStream::Stderr, STDERR_TAIL)
            .await
            .map_err(|e| db_error(e, "reading a log"))?
    } else {
        Vec::new()
    };
    let config = &state.config;
    Ok(JobView {
        template_title: config
            .template(&job.template)
            .map_or_else(|| job.template.clone(), |t| t.title.clone()),
        target_title: config
            .target(&job.target)
            .map_or_else(|| job.target.clone(), |t| t.title.clone()),
        job,
        lines,
        stderr_tail,
    })
}

/// The seqs of lines containing `q`.
pub async fn search(
    state: &AppState,
    caller: &Caller,
    id: i64,
    q: &str,
    limit: u64,
) -> Result<Vec<i64>, AppError> {
    visible_row(state, caller, id).await?;
    let q = q.trim();
    if q.is_empty() || q.len() > 200 {
        return Err(AppError::field("q", "search for 1 to 200 characters"));
    }
    logs::search(&state.reader, id, q, limit.clamp(1, 10_000))
        .await
        .map_err(|e| db_error(e, "searching a log"))
}

/// The caller's targets with their newest job.
pub async fn overview(state: &AppState, caller: &Caller) -> Result<Vec<TargetSummary>, AppError> {
    let mut out = Vec::new();
    for target in targets(state, caller)? {
        let last_job = jobs::latest_on_target(&state.reader, &target.id)
            .await
            .map_err(|e| db_error(e, "reading a target's jobs"))?
            .map(|r| r.to_job());
        out.push(TargetSummary { target, last_job });
    }
    Ok(out)
}
