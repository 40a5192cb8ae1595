//! `/api/templates`, `/api/targets`, `/api/jobs…`: launching, listing,
//! reading, cancelling and re-running jobs, and reading their logs.

use app::backend::{Backend, Caller};
use app::error::AppError;
use app::model::job::{Job, JobFilter, JobPage, LogPage, NewJob};
use app::model::template::{TargetInfo, TemplateInfo};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::routes::{Access, Kind, Rule};
use crate::service::jobs as service;
use crate::state::AppState;

pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    let r = |m: Method, p: &str| Rule::new(m, p, Kind::Api, Access::Authenticated);
    let stream = |p: &str| Rule::new(Method::GET, p, Kind::EventStream, Access::Authenticated);
    vec![
        (r(Method::GET, "/api/templates"), get(templates)),
        (r(Method::GET, "/api/targets"), get(targets)),
        (r(Method::POST, "/api/jobs"), post(create)),
        (r(Method::GET, "/api/jobs"), get(list)),
        (r(Method::GET, "/api/jobs/{id}"), get(one)),
        (r(Method::POST, "/api/jobs/{id}/cancel"), post(cancel)),
        (r(Method::POST, "/api/jobs/{id}/rerun"), post(rerun)),
        (r(Method::GET, "/api/jobs/{id}/log"), get(log)),
        (stream("/api/jobs/{id}/events"), get(events)),
        (stream("/api/events"), get(feed)),
    ]
}

type ApiResult<T> = Result<T, ApiError>;

/// A job id from the path.
pub fn job_id(raw: &str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        AppError::field("id", format!("`{raw}` is not a job id (a positive number)"))
    })
}

async fn templates(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<TemplateInfo>>> {
    Ok(Json(s.templates(&c).await?))
}

async fn targets(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> ApiResult<Json<Vec<TargetInfo>>> {
    Ok(Json(s.targets(&c).await?))
}

/// `POST /api/jobs`: 201 with the queued job.
async fn create(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(new): ApiJson<NewJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((StatusCode::CREATED, Json(s.launch(&c, new).await?)))
}

async fn list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiQuery(f): ApiQuery<JobFilter>,
) -> ApiResult<Json<JobPage>> {
    Ok(Json(s.jobs(&c, f).await?))
}

async fn one(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(s.job(&c, job_id(&id)?).await?))
}

async fn cancel(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    Ok(Json(s.cancel_job(&c, job_id(&id)?).await?))
}

/// `POST /api/jobs/{id}/rerun`: 201 with the new job.
async fn rerun(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((
        StatusCode::CREATED,
        Json(s.rerun_job(&c, job_id(&id)?).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<u64>,
    format: Option<String>,
}

/// `GET /api/jobs/{id}/log?after=N&limit=M`, or `?format=text` to download
/// the whole log as plain text (streamed from the database in pages).
async fn log(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Response> {
    let id = job_id(&id)?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json::<LogPage>(
            s.job_log(&c, id, q.after.unwrap_or(0), q.limit.unwrap_or(1000))
                .await?,
        )
        .into_response()),
        Some("text") => {
            let (filename, body) = service::log_text(&s, &c, id, q.after).await?;
            Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        "text/plain; charset=utf-8".to_string(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                Body::from_stream(body),
            )
                .into_response())
        }
        Some(other) => Err(AppError::field(
            "format",
            format!("`{other}` is not a log format: use json or text"),
        )
        .into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<i64>,
}

/// `GET /api/jobs/{id}/events?after=N` (or `Last-Event-ID`, which wins).
async fn events(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| {
            AppError::field("Last-Event-ID", "`Last-Event-ID` is a seq: a whole number")
        })?),
        None => None,
    };
    let lease = service::lease(&s, &c)?;
    let stream = service::stream(&s, &c, job_id(&id)?, q.after, last_event_id).await?;
    Ok(crate::streams::leased_response(
        stream,
        lease,
        |mut st| async move { st.next_chunk().await.map(|b| (b, st)) },
    ))
}

/// `GET /api/events`: the feed of job changes the caller may see.
async fn feed(State(s): State<AppState>, Extension(c): Extension<Caller>) -> ApiResult<Response> {
    let lease = service::lease(&s, &c)?;
    let stream = service::feed(&s, &c)?;
    Ok(crate::streams::leased_response(
        stream,
        lease,
        |mut st| async move { st.next_chunk().await.map(|b| (b, st)) },
    ))
}
