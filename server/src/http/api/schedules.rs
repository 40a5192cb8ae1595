//! `/api/schedules` (admins): each `[[schedules]]` entry with its next and
//! latest fires; pause, resume and "run now" (the admin page at
//! /admin/schedules does the same).

use app::backend::Caller;
use app::model::job::Job;
use app::model::schedule::ScheduleInfo;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};

use crate::http::error::ApiError;
use crate::http::routes::{Access, Kind, Rule};
use crate::service::schedules as service;
use crate::state::AppState;

pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    let r = |m: Method, p: &str| Rule::new(m, p, Kind::Api, Access::Admin);
    vec![
        (r(Method::GET, "/api/schedules"), get(list)),
        (r(Method::POST, "/api/schedules/{id}/pause"), post(pause)),
        (r(Method::POST, "/api/schedules/{id}/resume"), post(resume)),
        (r(Method::POST, "/api/schedules/{id}/run"), post(run_now)),
    ]
}

async fn list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<ScheduleInfo>>, ApiError> {
    Ok(Json(service::list(&s, &c).await?))
}

async fn pause(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service::set_paused(&s, &c, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resume(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    service::set_paused(&s, &c, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/schedules/{id}/run`: 201 with the job.
async fn run_now(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(service::run_now(&s, &c, &id).await?),
    ))
}
