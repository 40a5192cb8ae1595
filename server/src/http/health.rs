//! `GET /healthz` (liveness with a real database query) and `GET /metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db;
use crate::state::AppState;

/// How long the database may take to answer a health check.
const DB_TIMEOUT: Duration = Duration::from_secs(3);

/// `{"status":"ok"}`, or 503 with a reason when the database does not answer.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let reason = match tokio::time::timeout(DB_TIMEOUT, db::ping(&state.db)).await {
        Ok(Ok(())) => return Json(json!({ "status": "ok" })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database query failed");
            "the database query failed (the server log has the cause)".to_string()
        }
        Err(_) => format!(
            "the database did not answer within {} s",
            DB_TIMEOUT.as_secs()
        ),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unavailable", "reason": reason })),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let counts = match crate::db::jobs::count_by_state(&state.reader).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count jobs");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response();
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(&counts),
    )
        .into_response()
}
