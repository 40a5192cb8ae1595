//! Job operations as the API and the pages offer them: list templates and
//! targets, launch (validate, enqueue, wake), read, cancel, rerun, read the
//! log, open its event stream or the feed. Every one asks `auth::policy`
//! first.

use std::sync::{Arc, Mutex};

use app::backend::Caller;
use app::error::AppError;
use app::model::event::FeedEvent;
use app::model::job::{
    Job, JobFilter, JobPage, JobState, JobView, LogLine, LogPage, LogStream, NewJob, TargetSummary,
};
use app::model::retry::RetryPolicy;
use app::model::template::{validate_params, Exclusive, TargetInfo, TemplateChoice, TemplateInfo};
use sea_orm::DbErr;

use crate::auth::policy;
use crate::auth::revocation::Credential;
use crate::config::Template;
use crate::db::commit::Work;
use crate::db::jobs::{self, Enqueue, JobRow, Retry};
use crate::db::logs;
use crate::db::{audit, target_state};
use crate::engine::runner::StopReason;
use crate::engine::transition::{job_record, Actor, Transition};
use crate::http::error::db_error;
use crate::hub::Hub;
use crate::state::AppState;
use crate::streams::feed::FeedStream;
use crate::streams::job::JobStream;
use crate::streams::Lease;
use crate::sync::Locked;

/// The most lines one log page holds.
pub const MAX_LOG_PAGE: u64 = 10_000;

/// Where a reader resumes a job's log: after `after` (a query parameter)
/// or after `Last-Event-ID` (an EventSource reconnecting), which wins.
/// N.B.: the one check of a resume cursor.
pub fn resume_after(after: Option<i64>, last_event_id: Option<&str>) -> Result<i64, AppError> {
    let after = match last_event_id {
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            AppError::field("Last-Event-ID", "`Last-Event-ID` is a seq: a whole number")
        })?,
        None => after.unwrap_or(0),
    };
    if after < 0 {
        return Err(AppError::field("after", "`after` is a seq: 0 or more"));
    }
    Ok(after)
}

/// Who the caller acts as, for audit entries.
pub(crate) fn actor_of(caller: &Caller) -> Result<Actor, AppError> {
    Ok(Actor {
        name: caller.user()?.username.clone(),
        ip: caller.ip.clone(),
    })
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

/// Targets the caller may launch on, with the templates for each and
/// each one's actual state and last error (`status`).
pub async fn targets(state: &AppState, caller: &Caller) -> Result<Vec<TargetInfo>, AppError> {
    let user = policy::require_user(caller)?;
    let mut statuses = target_state::all(&state.reader)
        .await
        .map_err(|e| db_error(e, "reading the targets' state"))?;
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
            runs_as: t.run_as.as_ref().map(|r| r.user.clone()),
            console_as_server: user.is_admin() && t.console_as_server(),
            status: statuses
                .iter()
                .position(|s| s.target == t.id)
                .and_then(|i| crate::status::as_configured(t, statuses.swap_remove(i))),
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
    let launch = Arc::new(Launch {
        hub: state.hub.clone(),
        template: template.id.clone(),
        target: target.id.clone(),
        params,
        exclusive: template.exclusive,
        owner_id: user.id,
        actor: actor_of(caller)?,
        rerun_of,
        retry: template.retry.clone(),
        row: Mutex::new(None),
    });
    state
        .committer
        .commit(launch.clone())
        .await
        .map_err(|e| db_error(e, "enqueueing a job"))?;
    let row = launch.row.locked().take().ok_or_else(|| {
        db_error(
            DbErr::Custom("the job was not stored".into()),
            "enqueueing a job",
        )
    })?;
    // N.B.: a launch runs now (no retry wait), so when the next retry is
    // due did not change.
    state.engine.enqueued();
    tracing::info!(job = row.id, template = %row.template, target = %row.target, owner = %row.owner, "job queued");
    Ok(row.to_job())
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
/// row and its audit entry; announced once committed.
/// N.B.: the commit announces `queued` before it answers anyone, so the
/// feed has it before any runner can claim the job (a claim needs the
/// committed row) and never after its `running` or its end.
struct Launch {
    hub: Hub,
    template: String,
    target: String,
    params: serde_json::Map<String, serde_json::Value>,
    exclusive: Exclusive,
    owner_id: i64,
    actor: Actor,
    rerun_of: Option<i64>,
    /// The template's retry policy, stored with the job.
    retry: Option<RetryPolicy>,
    /// The stored row (the last try's, if a group was retried).
    row: Mutex<Option<JobRow>>,
}

#[async_trait::async_trait]
impl Work for Launch {
    async fn apply(&self, txn: &crate::db::txn::Txn) -> Result<(), DbErr> {
        let row = jobs::insert(
            txn,
            Enqueue {
                template: &self.template,
                target: &self.target,
                params: &self.params,
                exclusive: self.exclusive,
                owner_id: self.owner_id,
                owner: &self.actor.name,
                rerun_of: self.rerun_of,
                retry: Retry::first(self.retry.as_ref()),
            },
        )
        .await?;
        let subject = format!("job {}", row.id);
        audit::insert(txn, job_record(&self.actor, "job.launch", &subject, &row)).await?;
        *self.row.locked() = Some(row);
        Ok(())
    }

    fn committed(&self) {
        if let Some(row) = self.row.locked().as_ref() {
            self.hub.job_changed(row.to_job());
        }
    }
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
/// the runner stops its process group. 409 once it has finished. Each is
/// the job's one transition: state, line and audit entry together.
pub async fn cancel(state: &AppState, caller: &Caller, id: i64) -> Result<Job, AppError> {
    let actor = actor_of(caller)?;
    visible_row(state, caller, id).await?;
    cancel_as(state, actor, id).await
}

/// [`cancel`] by `actor`, who may (a schedule replacing its previous run
/// as `system`, or a caller already checked).
pub async fn cancel_as(state: &AppState, actor: Actor, id: i64) -> Result<Job, AppError> {
    let row = jobs::by_id(&state.db, id)
        .await
        .map_err(|e| db_error(e, "reading a job"))?
        .ok_or_else(|| AppError::NotFound(format!("no job {id}")))?;
    let changed = match row.state {
        s if s.is_finished() => {
            return Err(AppError::Conflict(format!(
                "job {id} has already finished ({s}); there is nothing to cancel"
            )))
        }
        JobState::Cancelling => return Ok(row.to_job()),
        JobState::Queued => {
            let queued = Transition::cancel_queued(&state.hub, id, actor.clone());
            match transition(state, queued).await? {
                Some(row) => Some(row),
                // It was claimed meanwhile: cancel it as a running job.
                None => cancel_running(state, id, actor).await?,
            }
        }
        _ => cancel_running(state, id, actor).await?,
    };
    if let Some(row) = changed {
        return Ok(row.to_job());
    }
    // Lost to another change: say what the job is now.
    let now = jobs::by_id(&state.db, id)
        .await
        .map_err(|e| db_error(e, "reading a job"))?
        .ok_or_else(|| AppError::NotFound(format!("no job {id}")))?;
    if now.state.is_finished() {
        return Err(AppError::Conflict(format!(
            "job {id} has already finished ({})",
            now.state
        )));
    }
    Ok(now.to_job())
}

/// Applies a transition; the row after it, or `None` if it lost.
async fn transition(state: &AppState, t: Transition) -> Result<Option<JobRow>, AppError> {
    let t = Arc::new(t);
    state
        .committer
        .commit(t.clone())
        .await
        .map_err(|e| db_error(e, "changing a job's state"))?;
    Ok(t.row())
}

async fn cancel_running(state: &AppState, id: i64, by: Actor) -> Result<Option<JobRow>, AppError> {
    let name = by.name.clone();
    let row = transition(state, Transition::cancel_running(&state.hub, id, by)).await?;
    match row
        .as_ref()
        .and_then(|r| r.agent.as_deref().map(|a| (a, r.dispatch)))
    {
        // On an agent: pushed now if it is connected here; otherwise it
        // hears it in the answer to its next `hello` (`agents::link`).
        Some((agent, dispatch)) => {
            let cancel = app::model::agent::ServerMsg::Cancel {
                job_id: id,
                dispatch,
                by: name,
            };
            state.agents.send(agent, cancel);
        }
        // Here, the runner hears it now; elsewhere, its replica polls.
        None if row.is_some() => {
            state.engine.stop_job(id, StopReason::Cancel { by: name });
        }
        None => {}
    }
    Ok(row)
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
    let after = resume_after(Some(after), None)?;
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
    // N.B.: every attempt of a chain has the first's owner and target, so
    // who may see one may see them all.
    let attempts = if row.retry.is_some() {
        jobs::chain(&state.reader, row.chain_root())
            .await
            .map_err(|e| db_error(e, "reading a job's attempts"))?
            .iter()
            .map(JobRow::to_job)
            .collect()
    } else {
        Vec::new()
    };
    let config = &state.config;
    let agent = match &job.agent {
        Some(name) => match crate::db::agents::by_name(&state.reader, name)
            .await
            .map_err(|e| db_error(e, "reading an agent"))?
        {
            Some(a) => Some(
                crate::service::agents::info(&state.reader, config, &a)
                    .await
                    .map_err(|e| db_error(e, "reading an agent"))?,
            ),
            None => None,
        },
        None => None,
    };
    Ok(JobView {
        param_specs: config
            .template(&job.template)
            .map(|t| t.params.clone())
            .unwrap_or_default(),
        template_title: config
            .template(&job.template)
            .map_or_else(|| job.template.clone(), |t| t.title.clone()),
        target_title: config
            .target(&job.target)
            .map_or_else(|| job.target.clone(), |t| t.title.clone()),
        job,
        lines,
        stderr_tail,
        agent,
        attempts,
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

/// The caller's targets with their newest job and the templates the
/// caller may launch on each.
pub async fn overview(state: &AppState, caller: &Caller) -> Result<Vec<TargetSummary>, AppError> {
    let templates = templates(state, caller)?;
    let mut out = Vec::new();
    for target in targets(state, caller).await? {
        let last_job = jobs::latest_on_target(&state.reader, &target.id)
            .await
            .map_err(|e| db_error(e, "reading a target's jobs"))?
            .map(|r| r.to_job());
        out.push(TargetSummary {
            templates: TemplateChoice::on_target(&templates, &target.id),
            target,
            last_job,
        });
    }
    Ok(out)
}

/// The whole log from `after` as plain text, read in pages as it is sent,
/// and the file name to offer it under.
pub async fn log_text(
    state: &AppState,
    caller: &Caller,
    id: i64,
    after: Option<i64>,
) -> Result<
    (
        String,
        impl futures::Stream<Item = std::io::Result<bytes::Bytes>>,
    ),
    AppError,
> {
    let row = visible_row(state, caller, id).await?;
    let after = resume_after(after, None)?;
    let filename = format!("job-{}-{}.log", row.id, row.template);
    let db = state.reader.clone();
    let body = futures::stream::unfold(Some(after), move |cursor| {
        let db = db.clone();
        async move {
            let after = cursor?;
            match logs::page(&db, id, after, MAX_LOG_PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map(|l: &LogLine| l.seq);
                    let mut text = String::with_capacity(lines.len() * 64);
                    for l in &lines {
                        text.push_str(&l.text);
                        text.push('\n');
                    }
                    Some((Ok(bytes::Bytes::from(text)), next))
                }
                Err(e) => {
                    tracing::error!(job = id, error = %e, "log download failed midway");
                    Some((Err(std::io::Error::other("database error")), None))
                }
            }
        }
    });
    // N.B.: fused: the gzip layer polls its body once more after the end,
    // and an unfused `unfold` panics there (the connection was reset
    // midway through every compressed download).
    Ok((filename, futures::StreamExt::fuse(body)))
}

/// A job's event stream for the caller, resuming after `after` or
/// `Last-Event-ID`.
pub async fn stream(
    state: &AppState,
    caller: &Caller,
    id: i64,
    after: Option<i64>,
    last_event_id: Option<&str>,
) -> Result<JobStream, AppError> {
    let after = resume_after(after, last_event_id)?;
    let job = get(state, caller, id).await?;
    Ok(JobStream::new(state.stream_deps(), job, after))
}

/// A place for one more event stream of the caller (429 past
/// `[server].max_streams_per_user` or `max_streams_per_address`), holding
/// the credential it was opened with, so the stream ends when that is
/// revoked.
pub fn lease(state: &AppState, caller: &Caller) -> Result<Lease, AppError> {
    let user = policy::require_user(caller)?;
    let slot = state.stream_slots.acquire(user.id, caller.ip.as_deref())?;
    let hold = state.revocations.hold(Credential::of(caller));
    Ok(Lease { hold, slot })
}

/// The feed of job changes, filtered to what the caller may see.
pub fn feed(state: &AppState, caller: &Caller) -> Result<FeedStream, AppError> {
    let user = policy::require_user(caller)?.clone();
    let config = state.config.clone();
    let visible = Arc::new(move |event: &FeedEvent| match event {
        FeedEvent::Job(job) => policy::may_see(&user, &job.owner, &job.target, &config),
        FeedEvent::Agent(agent) => policy::may_see_agent(&user, &agent.name, &config),
        FeedEvent::Target(status) => config
            .target(&status.target)
            .is_some_and(|t| policy::may_launch(&user, t)),
        FeedEvent::Deleted(_) | FeedEvent::Resync => true,
    });
    Ok(FeedStream::new(state.stream_deps(), visible))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_cursor_is_checked_once_and_last_event_id_wins() {
        assert_eq!(resume_after(None, None), Ok(0));
        assert_eq!(resume_after(Some(5), None), Ok(5));
        assert_eq!(resume_after(Some(5), Some(" 9 ")), Ok(9));
        let bad = resume_after(None, Some("nine")).unwrap_err();
        assert_eq!(bad.field_name(), Some("Last-Event-ID"));
        let negative = resume_after(Some(-1), None).unwrap_err();
        assert_eq!(negative.field_name(), Some("after"));
    }
}
