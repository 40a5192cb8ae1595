//! Jobs in the browser: the server functions the pages call, and the pages
//! and components — job tables, the launch form, the job page with its live
//! log — that render them.

pub mod activity;
pub mod filters;
pub mod history;
pub mod launch;
pub mod lists;
pub mod live;
pub mod log;
pub mod page;
pub mod rows;
pub mod table;
pub mod widgets;

use std::collections::HashMap;

use leptos::prelude::*;

use crate::error::AppError;
use crate::model::history::{Activity, TargetStats as Stats};
use crate::model::job::{Job, JobFilter, JobPage, JobView, LogPage, TargetSummary};
use crate::model::template::{TargetInfo, TemplateInfo};

/// Jobs the caller may see, newest first.
#[server(output = crate::codec::Json)]
pub async fn list_jobs(filter: JobFilter) -> Result<JobPage, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.jobs(&caller(), filter).await }.await)
}

/// The job page's first load.
#[server(output = crate::codec::Json)]
pub async fn view_job(id: i64) -> Result<JobView, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.job_view(&caller(), id).await }.await)
}

/// Stored lines with `seq > after`.
#[server(output = crate::codec::Json)]
pub async fn fetch_log(id: i64, after: i64, limit: u64) -> Result<LogPage, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.job_log(&caller(), id, after, limit).await }.await)
}

/// The seqs of lines containing `q`.
#[server(output = crate::codec::Json)]
pub async fn search_log(id: i64, q: String) -> Result<Vec<i64>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.log_search(&caller(), id, q, 1000).await }.await)
}

/// Templates the caller may run.
#[server(output = crate::codec::Json)]
pub async fn list_templates() -> Result<Vec<TemplateInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.templates(&caller()).await }.await)
}

/// The caller's targets with their newest job and the templates the
/// caller may launch on each.
#[server(output = crate::codec::Json)]
pub async fn target_overview() -> Result<Vec<TargetSummary>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.target_overview(&caller()).await }.await)
}

/// A target's finished jobs per template over the last 30 days.
#[server(output = crate::codec::Json)]
pub async fn target_stats(target: String) -> Result<Stats, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.target_stats(&caller(), target).await }.await)
}

/// Running and queued jobs over the last hours (the dashboard's chart).
#[server(output = crate::codec::Json)]
pub async fn recent_activity() -> Result<Activity, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.activity(&caller()).await }.await)
}

/// Targets the caller may launch on.
#[server(output = crate::codec::Json)]
pub async fn list_targets() -> Result<Vec<TargetInfo>, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.targets(&caller()).await }.await)
}

/// Launches a job from the form and goes to its page (a 303 without JavaScript).
#[server(output = crate::codec::Json)]
pub async fn launch_job(
    template: String,
    target: String,
    params: Option<HashMap<String, String>>,
) -> Result<Job, AppError> {
    use crate::backend::{backend, caller, respond, see_other};
    respond(
        async {
            let params = params
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            let new = crate::model::job::NewJob {
                template,
                target,
                params,
            };
            let job = backend()?.launch(&caller(), new).await?;
            see_other(&format!("/jobs/{}", job.id));
            Ok(job)
        }
        .await,
    )
}

/// Fails a job whose agent cannot be reached (admins).
#[server(output = crate::codec::Json)]
pub async fn mark_job_failed(id: i64) -> Result<Job, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.mark_job_failed(&caller(), id).await }.await)
}

/// Cancels a job.
#[server(output = crate::codec::Json)]
pub async fn cancel_job(id: i64) -> Result<Job, AppError> {
    use crate::backend::{backend, caller, respond};
    respond(async { backend()?.cancel_job(&caller(), id).await }.await)
}

/// Enqueues a copy of a job and goes to its page.
#[server(output = crate::codec::Json)]
pub async fn rerun_job(id: i64) -> Result<Job, AppError> {
    use crate::backend::{backend, caller, respond, see_other};
    respond(
        async {
            let job = backend()?.rerun_job(&caller(), id).await?;
            see_other(&format!("/jobs/{}", job.id));
            Ok(job)
        }
        .await,
    )
}
