//! Never leave a job "running": at start, once it has registered under its
//! new epoch (`engine::cluster`), a server marks the jobs it owned under
//! its earlier epochs that are still running or cancelling as failed
//! ("interrupted: server restarted") and kills what is left of their
//! process groups (guarded against pid reuse). The jobs of a replica that
//! stopped beating are failed by the others (`engine::cluster`), who
//! cannot reach its processes: when it starts again after that, it kills
//! what is left of those jobs' groups too (audited as `job.orphans_killed`).
//! Every end of a job is its one transition, audited as `job.interrupted`
//! by `system`.

use std::sync::Arc;

use crate::db::audit;
use crate::db::jobs::{self, JobRow};
use crate::engine::cluster::{self, Joined};
use crate::engine::transition::Transition;
use crate::engine::{runner, Engine};
use crate::proc::group as process;

/// Recovers this node's jobs of the epochs before the one it just took.
/// Runs before the first claim.
pub async fn recover(engine: &Engine, joined: Joined) {
    let node = &engine.config().cluster.node;
    if joined.was_lost {
        kill_lost_orphans(engine, node).await;
    }
    let rows = match jobs::active_on_node(&engine.0.db, node, joined.epoch - 1).await {
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

/// Kills what is left of the process groups of this node's jobs that
/// another node failed while this one was lost (it said it could not).
async fn kill_lost_orphans(engine: &Engine, node: &str) {
    let db = &engine.0.db;
    let rows = match jobs::failed_with(db, node, &cluster::lost_error(node)).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot look for the jobs failed while this node was lost");
            return;
        }
    };
    for row in rows {
        let Some(pgid) = row.pgid else { continue };
        let killed = process::kill_orphaned_group(pgid, row.pgid_start);
        if killed == 0 {
            continue;
        }
        tracing::warn!(
            job = row.id,
            killed,
            "killed the leftover processes of a job failed while this node was lost"
        );
        let subject = format!("job {}", row.id);
        let record = audit::Record {
            actor: "system",
            action: "job.orphans_killed",
            subject: &subject,
            detail: Some(serde_json::json!({ "node": node, "killed": killed })),
            ip: None,
        };
        if let Err(e) = audit::insert(db, record).await {
            tracing::warn!(job = row.id, error = %e, "cannot audit the killed leftovers");
        }
    }
}

/// Fails an active job that nothing runs any more.
async fn interrupt(engine: &Engine, row: &JobRow, line: String, error: &str) {
    let sink = engine.sink();
    let t = Arc::new(
        Transition::fail(&sink.hub, row, line, error.to_string(), true)
            .because(app::model::retry::Failure::Interrupted),
    );
    match sink.committer.commit(t.clone()).await {
        Ok(()) if t.row().is_some() => {}
        // Finished meanwhile by someone else: say what it is now.
        Ok(()) => runner::announce_current(engine, row.id).await,
        Err(e) => tracing::error!(job = row.id, error = %e, "cannot fail the interrupted job"),
    }
}
