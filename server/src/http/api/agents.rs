//! `/api/agent` (an agent's own connection), `/api/agent/terminal/{session}`
//! (an agent dialling back with a terminal), and the admins' `/api/agents`.

use app::backend::Caller;
use app::model::agent::{AgentInfo, NewAgent};
use app::model::job::Job;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::http::api::jobs::job_id;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::routes::{Access, Kind, Rule};
use crate::service::agents as service;
use crate::state::AppState;

pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    let r = |m: Method, p: &str, a: Access| Rule::new(m, p, Kind::Api, a);
    vec![
        (
            r(Method::GET, "/api/agent", Access::Agent),
            get(crate::agents::link::open),
        ),
        (
            r(Method::GET, "/api/agent/terminal/{session}", Access::Agent),
            get(crate::agents::terminal::dial_back),
        ),
        (r(Method::GET, "/api/agents", Access::Admin), get(list)),
        (r(Method::POST, "/api/agents", Access::Admin), post(add)),
        (
            r(Method::POST, "/api/agents/{name}/revoke", Access::Admin),
            post(revoke),
        ),
        (
            r(Method::POST, "/api/jobs/{id}/mark-failed", Access::Admin),
            post(mark_failed),
        ),
    ]
}

async fn list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<AgentInfo>>, ApiError> {
    Ok(Json(service::list(&s, &c).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddAgent {
    name: String,
}

/// `POST /api/agents {"name"}`: 201 with the token, shown once.
async fn add(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    ApiJson(body): ApiJson<AddAgent>,
) -> Result<(StatusCode, Json<NewAgent>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(service::add(&s, &c, body.name).await?),
    ))
}

async fn revoke(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    service::revoke_as(&s, &c, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn mark_failed(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(service::mark_failed(&s, &c, job_id(&id)?).await?))
}
