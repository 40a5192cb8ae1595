//! `GET /api/webhooks`: each `[[notify]]` hook with its latest deliveries
//! (admins; the admin page at /admin/webhooks shows the same).

use app::backend::Caller;
use app::model::webhook::HookInfo;
use axum::extract::State;
use axum::http::Method;
use axum::routing::{get, MethodRouter};
use axum::{Extension, Json};

use crate::http::error::ApiError;
use crate::http::routes::{Access, Kind, Rule};
use crate::service::webhooks as service;
use crate::state::AppState;

pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    vec![(
        Rule::new(Method::GET, "/api/webhooks", Kind::Api, Access::Admin),
        get(list),
    )]
}

async fn list(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Result<Json<Vec<HookInfo>>, ApiError> {
    Ok(Json(service::list(&s, &c).await?))
}
