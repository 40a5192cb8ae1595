//! Never leave a job "running": at start, a server marks the jobs it owned
//! that are still running or cancelling as failed ("interrupted: server
//! restarted") and kills what is left of their process groups (guarded
//! against pid reuse). With several replicas, each proves it is alive with
//! heartbeats, and the jobs of a replica that stopped beating are failed by
//! the others. Every such end is the job's one transition, audited as
//! `job.interrupted` by `system`.

use std::sync::Arc;

use chrono::Utc;

use crate::db::jobs::{self, JobRow};
use crate::engine::transition::Transition;
use crate::engine::{runner, Engine};
use crate::proc::group as process;

/// Recovers this node's jobs. Runs before the first claim.
pub async fn recover(engine: &Engine) {
    let node = &engine.config().server.node;
    let rows = match jobs::active_on_node(&engine.0.db, node).await {
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
        interrupt(engine, &row, text, "interrupted: server restarted").await;
    }
}

/// Fails an active job that nothing runs any more.
async fn interrupt(engine: &Engine, row: &JobRow, line: String, error: &str) {
    let sink = engine.sink();
    let t = Arc::new(Transition::fail(
        &sink.hub,
        row,
        line,
        error.to_string(),
        true,
    ));
    match sink.committer.commit(t.clone()).await {
        Ok(()) if t.row().is_some() => {}
        // Finished meanwhile by someone else: say what it is now.
        Ok(()) => runner::announce_current(engine, row.id).await,
        Err(e) => tracing::error!(job = row.id, error = %e, "cannot fail the interrupted job"),
    }
}

/// Beats every `heartbeat_interval`; fails the jobs of replicas silent for
/// three intervals.
pub async fn heartbeats(engine: Engine) {
    let every = engine.config().jobs.heartbeat_interval;
    let node = engine.config().server.node.clone();
    let shutdown = engine.sink().shutdown.clone();
    let db = engine.0.db.clone();
    let started = Utc::now();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = jobs::heartbeat(&db, &node, started).await {
            tracing::warn!(error = %e, "cannot record the heartbeat");
            continue;
        }
        let Ok(others) = jobs::active_elsewhere(&db, &node).await else {
            continue;
        };
        let silent_for =
            chrono::Duration::from_std(every * 3).unwrap_or(chrono::Duration::seconds(30));
        for row in others {
            let Some(other) = row.node.clone() else {
                continue;
            };
            let last = jobs::last_heartbeat(&db, &other).await.ok().flatten();
            if last.is_none_or(|at| Utc::now() - at > silent_for) {
                let text = format!("interrupted: node `{other}` stopped sending heartbeats");
                tracing::warn!(job = row.id, node = %other, "{text}");
                interrupt(&engine, &row, text.clone(), &text).await;
            }
        }
        crate::agents::fail_lost(&db, engine.sink(), engine.config()).await;
        engine.sink().hub.prune();
    }
}
