//! This node among the replicas that share one database (docs/cluster.md):
//!
//! - **Epoch.** At start the node registers in `nodes` under a new epoch
//!   ([`join`]) and claims jobs under it; each job records the node and
//!   epoch that claimed it, and every write of its runner checks both
//!   (`db::jobs::Owner`: fencing).
//! - **Heartbeats.** Every `[cluster].node_timeout / 5` the node writes its
//!   heartbeat, which succeeds only while its row still holds its epoch.
//! - **Lost nodes.** At each beat it looks for other nodes silent for
//!   longer than `node_timeout`, and again the moment the oldest heartbeat
//!   among the others turns `node_timeout` old (not only at its next beat,
//!   which could be a fifth of the timeout later); it declares each lost
//!   node lost in one transaction
//!   ([`LoseNode`]): the statement that bumps the lost node's epoch checks
//!   its heartbeat is still old (so a beat that lands first wins), and the
//!   lost node's running jobs are failed in the same transaction, each
//!   through its one transition, audited by `system`.
//! - **Coming back.** A node whose beat finds its epoch gone was declared
//!   lost (or another process took its node id): it registers again under
//!   a new epoch and goes on. N.B.: the rule is that it never claims
//!   under the old epoch again (the claim statement checks the node's
//!   row), and that the jobs failed meanwhile are no longer its own: their
//!   runners' writes are refused, and the runners kill their process
//!   groups (`StopReason::Lost`) at the first refused write or the next
//!   ownership check (`engine::runner`, every 2 s). Jobs nobody failed
//!   (no other replica was there to notice) keep running under the epoch
//!   they were claimed with.
//!
//! Every time is the database's clock on PostgreSQL (`db::nodes::clock`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DbErr;

use crate::db::commit::Work;
use crate::db::txn::Txn;
use crate::db::{jobs, nodes};
use crate::engine::transition::Transition;
use crate::engine::{Engine, Sink};
use crate::sync::Locked;

/// How this node joined at start.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    /// Its new epoch.
    pub epoch: i64,
    /// Whether another node had declared it lost while it was away (then
    /// start-up recovery looks for the processes of the jobs failed so).
    pub was_lost: bool,
}

/// Registers this node under a new epoch and records it in the engine;
/// tries again until it succeeds, or returns `None` at shutdown.
pub async fn join(engine: &Engine) -> Option<Joined> {
    let node = &engine.config().cluster.node;
    let db = &engine.0.db;
    let shutdown = engine.sink().shutdown.clone();
    loop {
        let registered = async {
            let now = nodes::clock(db).await?;
            let was_lost = nodes::get(db, node)
                .await?
                .is_some_and(|r| r.lost_at.is_some());
            let epoch = nodes::register(db, node, now).await?;
            Ok::<_, DbErr>(Joined { epoch, was_lost })
        }
        .await;
        match registered {
            Ok(joined) => {
                engine.0.epoch.store(joined.epoch, Ordering::Relaxed);
                tracing::info!(node = %node, epoch = joined.epoch, "registered this node");
                return Some(joined);
            }
            Err(e) => {
                tracing::error!(node = %node, error = %e, "cannot register this node; trying again")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Beats every `node_timeout / 5`; registers again when this node finds
/// it was declared lost; declares lost the other nodes silent for longer
/// than `node_timeout`, at a beat or as soon as one turns so; fails the
/// jobs of lost agents.
pub async fn heartbeats(engine: Engine) {
    let cluster = engine.config().cluster.clone();
    let node = cluster.node.clone();
    let timeout =
        chrono::Duration::from_std(cluster.node_timeout).unwrap_or(chrono::Duration::seconds(15));
    let shutdown = engine.sink().shutdown.clone();
    let db = engine.0.db.clone();
    let mut tick = tokio::time::interval(cluster.heartbeat_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the oldest heartbeat among the other nodes turns `timeout` old.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let beat = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => true,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => false,
        };
        let now = match nodes::clock(&db).await {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the database's clock for the heartbeat");
                continue;
            }
        };
        if beat {
            match nodes::beat(&db, &node, engine.epoch(), now).await {
                Ok(true) => {}
                Ok(false) => rejoin(&engine, now).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record the heartbeat");
                    continue;
                }
            }
        }
        sweep(&engine, now - timeout, now).await;
        if beat {
            crate::agents::fail_lost(&db, engine.sink(), engine.config()).await;
            engine.sink().hub.prune();
        }
        deadline = next_deadline(&engine, now, timeout).await;
    }
}

/// When to sweep next, besides the beats: just after the oldest heartbeat
/// among the other live nodes turns `timeout` old, as of `now` (the
/// database's clock). N.B.: a deadline already past means the sweep just
/// made could not declare that node lost (an error, logged): it tries
/// again a second later rather than at once.
async fn next_deadline(
    engine: &Engine,
    now: DateTime<Utc>,
    timeout: chrono::Duration,
) -> Option<tokio::time::Instant> {
    let oldest = match nodes::oldest_heartbeat(&engine.0.db, &engine.config().cluster.node).await {
        Ok(oldest) => oldest?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the other nodes' heartbeats");
            return None;
        }
    };
    let wait = match (oldest + timeout - now).to_std() {
        Ok(left) => left + Duration::from_millis(10),
        Err(_) => Duration::from_secs(1),
    };
    Some(tokio::time::Instant::now() + wait)
}

/// This node's row no longer holds its epoch: say why, and register under
/// a new one (never claiming under the old one again).
async fn rejoin(engine: &Engine, now: DateTime<Utc>) {
    let db = &engine.0.db;
    let node = &engine.config().cluster.node;
    let old = engine.epoch();
    match nodes::get(db, node).await {
        Ok(Some(row)) if row.lost_at.is_some() => tracing::warn!(
            node = %node,
            epoch = old,
            lost_at = %row.lost_at.map(|t| app::model::time::format_utc(&t)).unwrap_or_default(),
            "another replica declared this node lost (no heartbeat within [cluster].node_timeout): \
             the jobs it failed are no longer this node's, and their processes are killed; \
             registering again under a new epoch"
        ),
        Ok(_) => tracing::error!(
            node = %node,
            epoch = old,
            "another process registered this node id since this one started: two replicas share \
             one node id; give each its own [cluster].node (registering again under a new epoch)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read this node's row"),
    }
    match nodes::register(db, node, now).await {
        Ok(epoch) => {
            engine.0.epoch.store(epoch, Ordering::Relaxed);
            engine.sink().metrics.node_rejoined();
            tracing::info!(node = %node, epoch, "registered this node again");
        }
        Err(e) => tracing::error!(node = %node, error = %e, "cannot register this node again"),
    }
}

/// Declares lost each other node silent since before `cutoff` (and fails
/// what a lost node still holds).
async fn sweep(engine: &Engine, cutoff: DateTime<Utc>, now: DateTime<Utc>) {
    let me = &engine.config().cluster.node;
    let names = match nodes::to_sweep(&engine.0.db, me, cutoff).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for lost nodes");
            return;
        }
    };
    for name in names {
        let work = Arc::new(LoseNode {
            node: name.clone(),
            by: me.clone(),
            timeout: engine.config().cluster.node_timeout,
            cutoff,
            now,
            sink: engine.sink().clone(),
            failed: Mutex::new(Vec::new()),
        });
        if let Err(e) = engine.sink().committer.commit(work.clone()).await {
            tracing::error!(node = %name, error = %e, "cannot fail the jobs of a lost node");
        }
    }
}

/// Declares `node` lost (if its heartbeat is still older than `cutoff`)
/// and fails, in the same transaction, its running jobs of the epochs
/// before the one the declaration gave it.
struct LoseNode {
    node: String,
    /// This node, named in the jobs' lines.
    by: String,
    timeout: Duration,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    sink: Sink,
    /// The transitions that won (the last try's).
    failed: Mutex<Vec<Transition>>,
}

/// The error of a job failed because its node was lost (also how that
/// node finds those jobs when it returns).
pub fn lost_error(node: &str) -> String {
    format!("interrupted: node {node} lost")
}

/// The `system` line of a job failed because its node was lost: why, and
/// that its processes could not be killed from here.
pub fn lost_line(node: &str, by: &str, last_beat: &str, timeout: Duration) -> String {
    format!(
        "interrupted: node {node} lost (no heartbeat since {last_beat}, longer than \
         [cluster].node_timeout of {}); its processes could not be killed from node {by}: \
         {node} kills them when it returns",
        app::model::time::format_duration_secs(timeout.as_secs() as i64)
    )
}

#[async_trait::async_trait]
impl Work for LoseNode {
    async fn apply(&self, txn: &Txn) -> Result<(), DbErr> {
        self.failed.locked().clear();
        let declared = nodes::declare_lost(txn, &self.node, self.cutoff, self.now).await?;
        // Declared now, or before (then only what it claimed in the instant
        // before is left).
        let Some(row) = nodes::get(txn, &self.node)
            .await?
            .filter(|r| r.lost_at.is_some())
        else {
            return Ok(());
        };
        if let Some(epoch) = declared {
            tracing::warn!(node = %self.node, epoch, "declared lost: no heartbeat within [cluster].node_timeout");
        }
        let last_beat = app::model::time::format_utc(&row.heartbeat_at);
        let line = lost_line(&self.node, &self.by, &last_beat, self.timeout);
        let error = lost_error(&self.node);
        let mut failed = Vec::new();
        for job in jobs::active_on_node(txn, &self.node, row.epoch - 1).await? {
            let t = Transition::fail(&self.sink.hub, &job, line.clone(), error.clone(), true)
                .because(app::model::retry::Failure::Interrupted);
            if t.apply_with(txn, &[]).await? {
                failed.push(t);
            }
        }
        *self.failed.locked() = failed;
        Ok(())
    }

    fn committed(&self) {
        let failed = std::mem::take(&mut *self.failed.locked());
        for t in &failed {
            if let Some(row) = t.row() {
                tracing::warn!(job = row.id, node = %self.node, "failed: its node was lost");
            }
            t.announce();
            self.sink.metrics.job_lost();
            self.sink
                .metrics
                .job_finished(app::model::job::JobState::Failed);
        }
    }
}
