//! `GET /healthz` (liveness with a real database query) and `GET /metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db;
use crate::metrics::NodeView;
use crate::state::AppState;

/// How long the database may take to answer a health check.
const DB_TIMEOUT: Duration = Duration::from_secs(3);

/// `{"status":"ok","node":…,"epoch":…,"database":{"engine":…,"answered":true}}`,
/// or 503 with a reason when the database does not answer (a load
/// balancer takes the replica out; the node id says which one answered).
pub async fn healthz(State(state): State<AppState>) -> Response {
    let engine = if db::is_postgres(&state.db) {
        "postgresql"
    } else {
        "sqlite"
    };
    let body = |status: &str, answered: bool| {
        json!({
            "status": status,
            "node": state.config.cluster.node,
            "epoch": state.engine.epoch(),
            "database": { "engine": engine, "answered": answered },
        })
    };
    let reason = match tokio::time::timeout(DB_TIMEOUT, db::ping(&state.db)).await {
        Ok(Ok(())) => return Json(body("ok", true)).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database query failed");
            "the database query failed (the server log has the cause)".to_string()
        }
        Err(_) => format!(
            "the database did not answer within {} s",
            DB_TIMEOUT.as_secs()
        ),
    };
    let mut unavailable = body("unavailable", false);
    unavailable["reason"] = reason.into();
    (StatusCode::SERVICE_UNAVAILABLE, Json(unavailable)).into_response()
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
    let mut text = state.metrics.render(&counts);
    text.push_str(&state.metrics.render_nodes(&node_view(&state).await));
    text.push_str(&format!(
        "# HELP opsdeck_live_connections Shared live connections (/api/live) open here: one per browser, however many tabs and jobs it follows.\n\
         # TYPE opsdeck_live_connections gauge\n\
         opsdeck_live_connections {}\n",
        state.live.len()
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// This node and how many nodes the database knows alive and lost (by the
/// database's clock, as the heartbeats are judged).
async fn node_view(state: &AppState) -> NodeView {
    let mut view = NodeView {
        node: state.config.cluster.node.clone(),
        epoch: state.engine.epoch(),
        ..NodeView::default()
    };
    let read = async {
        let now = db::nodes::clock(&state.reader).await?;
        db::nodes::all(&state.reader).await.map(|rows| (now, rows))
    };
    match read.await {
        Ok((now, rows)) => {
            let timeout = chrono::Duration::from_std(state.config.cluster.node_timeout)
                .unwrap_or(chrono::Duration::seconds(15));
            for row in rows {
                if row.lost_at.is_none() && now - row.heartbeat_at <= timeout {
                    view.alive += 1;
                } else {
                    view.lost += 1;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the nodes"),
    }
    view
}
