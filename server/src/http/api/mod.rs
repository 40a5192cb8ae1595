//! The REST API under `/api`: JSON in and out, errors as
//! `{"error": "...", "field": "..."}`. Each handler calls the same backend
//! methods the pages' server functions call, so both enforce one policy.

mod accounts;
mod agents;
pub mod jobs;
mod live;
mod schedules;
mod webhooks;

use axum::routing::MethodRouter;

use crate::http::routes::{Access, Kind, Rule};
use crate::state::AppState;

/// Every API route with its rule; the router registers exactly these.
pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    let mut all = accounts::routes();
    all.extend(jobs::routes());
    all.extend(agents::routes());
    all.extend(live::routes());
    all.extend(webhooks::routes());
    all.extend(schedules::routes());
    all.push((
        Rule::new(
            axum::http::Method::GET,
            "/api/targets/{id}/terminal",
            Kind::Api,
            Access::Authenticated,
        ),
        axum::routing::get(crate::terminal::open),
    ));
    all.push((
        Rule::new(
            axum::http::Method::GET,
            "/api/recordings/{id}",
            Kind::Api,
            Access::Admin,
        ),
        axum::routing::get(crate::terminal::recording),
    ));
    all
}
