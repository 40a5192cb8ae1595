//! Never leave a job "running": at start, a server marks the jobs it owned
//! that are still running or cancelling as failed ("interrupted: server
//! restarted") and kills what is left of their process groups (guarded
//! against pid reuse). With several replicas, each proves it is alive with
//! heartbeats, and the jobs of a replica that stopped beating are failed by
//! the others.

use chrono::Utc;

use crate::db::jobs::{self, Finish, JobRow};
use crate::db::logs;
use crate::engine::{process, runner};
use crate::state::AppState;
use app::model::job::JobState;

/// Recovers this node's jobs. Runs before the first claim.
pub async fn recover(state: &AppState) {
    let node = &state.config.server.node;
    let rows = match jobs::active_on_node(&state.db, node).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot look for interrupted jobs");
            return;
        }
    };
    for row in rows {
        let killed = row
            .pgid
            .map_or(0, |pgid| process::kill_orphaned_group(pgid, row.pgid_start));
        let text = if killed > 0 {
            format!(
                "interrupted: server restarted (killed {killed} leftover process(es) of the job)"
            )
        } else {
            "interrupted: server restarted".to_string()
        };
        tracing::warn!(job = row.id, killed, "{text}");
        interrupt(state, &row, &text, "interrupted: server restarted").await;
    }
}

/// Fails an active job that nothing runs any more.
async fn interrupt(state: &AppState, row: &JobRow, line: &str, error: &str) {
    if let Err(e) = logs::append_system(&state.db, row.id, line).await {
        tracing::error!(job = row.id, error = %e, "cannot write the system line");
    }
    let f = Finish {
        state: JobState::Failed,
        exit_code: None,
        error: Some(error.to_string()),
        warnings: false,
        progress: row.to_job().progress,
    };
    match jobs::finish(&state.db, row.id, &f).await {
        Ok(finished) => runner::announce_end(state, row.id, finished).await,
        Err(e) => tracing::error!(job = row.id, error = %e, "cannot fail the interrupted job"),
    }
}

/// Beats every `heartbeat_interval`; fails the jobs of replicas silent for
/// three intervals.
pub async fn heartbeats(state: AppState) {
    let every = state.config.jobs.heartbeat_interval;
    let node = state.config.server.node.clone();
    let started = Utc::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = jobs::heartbeat(&state.db, &node, started).await {
            tracing::warn!(error = %e, "cannot record the heartbeat");
            continue;
        }
        let Ok(others) = jobs::active_elsewhere(&state.db, &node).await else {
            continue;
        };
        let silent_for =
            chrono::Duration::from_std(every * 3).unwrap_or(chrono::Duration::seconds(30));
        for row in others {
            let Some(other) = row.node.clone() else {
                continue;
            };
            let last = jobs::last_heartbeat(&state.db, &other).await.ok().flatten();
            if last.is_none_or(|at| Utc::now() - at > silent_for) {
                let text = format!("interrupted: node `{other}` stopped sending heartbeats");
                tracing::warn!(job = row.id, node = %other, "{text}");
                interrupt(&state, &row, &text, &text).await;
            }
        }
        state.hub.prune();
    }
}
