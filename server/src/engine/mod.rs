//! The job engine: the database is the queue; a pool of `workers` runners in
//! this process claims queued jobs (one claim statement per free slot, all
//! in one of the writer's group transactions: `db::jobs`, `db::commit`), runs
//! them (`runner`), and ends them through the one [`transition`]. An enqueue
//! wakes the pool at once; polling is only the fallback (jobs enqueued by
//! another replica, a slot freed by exclusivity). Also owned here: this
//! node among the replicas (`cluster`: its epoch, heartbeats, lost nodes),
//! recovery at start, retention.
//!
//! The engine is wired by `AppState` but does not know it: it runs with
//! the configuration, the database handles and a [`Sink`] (committer, hub,
//! metrics, shutdown), and nothing else.

pub mod cluster;
pub mod command;
pub mod exit;
pub mod logcap;
pub mod logwriter;
pub mod output;
pub mod progress;
pub mod recovery;
pub mod retention;
pub mod runner;
pub mod supervise;
pub mod transition;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use app::model::agent::ServerMsg;

use crate::agents::Agents;
use crate::config::Config;
use crate::db::commit::{Committer, Work};
use crate::db::jobs::{self, ClaimScope, JobRow, Owner};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::sync::Locked;
use runner::{StopReason, StopSwitch};
use transition::Transition;

/// Where the engine's writes and announcements go: what the log writer,
/// the runner and recovery use of the server.
#[derive(Clone)]
pub struct Sink {
    /// Group commit on the writer connection.
    pub committer: Committer,
    /// Live fan-out, fed by the commits.
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

/// The engine's handle (clones share it).
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

struct Inner {
    config: Arc<Config>,
    /// The agents connected here (their jobs are dispatched to them).
    agents: Agents,
    /// The targets reached through agents: never claimed for this node.
    agent_targets: Arc<[String]>,
    /// The writer connection (recovery, heartbeats, retention).
    db: DatabaseConnection,
    /// Reads beside the writer (a running job's cancel poll).
    reader: DatabaseConnection,
    sink: Sink,
    wake: Notify,
    /// Whether a retry may have been queued (or become due) since the
    /// loop last read when the next one is due: the loop reads it again
    /// only then, not after every job.
    due_changed: AtomicBool,
    running: Mutex<HashMap<i64, StopSwitch>>,
    /// This node's epoch (`engine::cluster`): 0 until it has registered.
    epoch: AtomicI64,
}

impl Engine {
    pub fn new(
        config: Arc<Config>,
        db: DatabaseConnection,
        reader: DatabaseConnection,
        sink: Sink,
        agents: Agents,
    ) -> Engine {
        let agent_targets = config
            .targets
            .iter()
            .filter(|t| t.agent().is_some())
            .map(|t| t.id.clone())
            .collect();
        Engine(Arc::new(Inner {
            agents,
            agent_targets,
            config,
            db,
            reader,
            sink,
            wake: Notify::new(),
            due_changed: AtomicBool::new(true),
            running: Mutex::new(HashMap::new()),
            epoch: AtomicI64::new(0),
        }))
    }

    /// Something changed (a job was enqueued, maybe one that waits: a
    /// retry; another replica's queue changed): look at the queue now.
    pub fn wake(&self) {
        self.0.due_changed.store(true, Ordering::Relaxed);
        self.0.wake.notify_one();
    }

    /// A job was enqueued here to run now (a launch: it waits for nothing):
    /// look at the queue now; when a retry is due did not change.
    pub fn enqueued(&self) {
        self.0.wake.notify_one();
    }

    /// Stops a job running in this process; false if it does not run here.
    pub fn stop_job(&self, id: i64, reason: StopReason) -> bool {
        match self.0.running.locked().get(&id) {
            Some(switch) => {
                switch.stop(reason);
                true
            }
            None => false,
        }
    }

    /// How many jobs run in this process.
    pub fn running(&self) -> usize {
        self.0.running.locked().len()
    }

    pub fn sink(&self) -> &Sink {
        &self.0.sink
    }

    fn config(&self) -> &Config {
        &self.0.config
    }

    /// This node's epoch (0 before it registered).
    pub fn epoch(&self) -> i64 {
        self.0.epoch.load(Ordering::Relaxed)
    }

    /// This node under its current epoch: who claims now.
    fn owner(&self) -> Owner {
        Owner {
            node: self.config().cluster.node.clone(),
            epoch: self.epoch(),
        }
    }

    /// How a finishing job claims its slot's next job on this node.
    fn claim_for(&self) -> ClaimFor {
        ClaimFor {
            owner: self.owner(),
            agent_targets: self.0.agent_targets.clone(),
        }
    }

    /// The engine's main loop: recover, then claim and run until shutdown;
    /// at shutdown, stop running jobs (they are recorded as interrupted)
    /// and wait for them.
    pub async fn run(self) {
        let Some(joined) = cluster::join(&self).await else {
            return;
        };
        let epoch = joined.epoch;
        recovery::recover(&self, joined).await;
        let background = [
            tokio::spawn(cluster::heartbeats(self.clone())),
            tokio::spawn(retention::run(
                self.0.db.clone(),
                self.0.sink.clone(),
                self.0.config.retention.clone(),
            )),
        ];
        let shutdown = self.0.sink.shutdown.clone();
        let workers = self.config().server.workers;
        let slots = Arc::new(Semaphore::new(workers));
        let mut tasks: JoinSet<Ran> = JoinSet::new();
        let mut tick = tokio::time::interval(self.config().jobs.poll_interval);
        let mut due = None;
        tracing::info!(workers, node = %self.config().cluster.node, epoch, "job engine started");

        loop {
            // Fill every free slot with a claimable job, in one claim.
            let permits: Vec<_> =
                std::iter::from_fn(|| slots.clone().try_acquire_owned().ok()).collect();
            if !permits.is_empty() {
                let claimed = match self.claim(permits.len()).await {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim a job");
                        Vec::new()
                    }
                };
                // Unused permits go back when dropped.
                for (job, permit) in claimed.into_iter().zip(permits) {
                    self.start(&mut tasks, job, permit);
                }
            }
            self.dispatch_to_agents().await;
            // A retry waiting its backoff is claimed when it is due, not
            // at the next poll. N.B.: read again only when that may have
            // changed (a wake, the poll, a retry coming due, a job that
            // failed here and may have queued its retry), not after every
            // job: on PostgreSQL it was a tenth of a job's statements.
            if self.0.due_changed.swap(false, Ordering::Relaxed) {
                due = self.next_due().await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.0.wake.notified() => {}
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.0.due_changed.store(true, Ordering::Relaxed);
                }
                _ = self.0.agents.connected() => {}
                _ = tick.tick() => self.0.due_changed.store(true, Ordering::Relaxed),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Some((next, permit)) = self.forget(done) {
                        self.start(&mut tasks, next, permit);
                    }
                }
            }
        }

        let stopping: Vec<StopSwitch> = self.0.running.locked().values().cloned().collect();
        if !stopping.is_empty() {
            tracing::info!(jobs = stopping.len(), "stopping running jobs for shutdown");
        }
        for switch in stopping {
            switch.stop(StopReason::Shutdown);
        }
        while let Some(done) = tasks.join_next().await {
            // N.B.: runners claim no next job once shutdown began.
            if let Some((next, _)) = self.forget(done) {
                let back = Arc::new(Transition::unclaim(&self.0.sink.hub, next.id));
                if let Err(e) = self.0.sink.committer.commit(back).await {
                    tracing::error!(job = next.id, error = %e, "cannot put a job claimed during shutdown back in the queue");
                }
            }
        }
        for task in background {
            let _ = task.await;
        }
        tracing::info!("job engine stopped");
    }

    /// When the next retry waiting in the queue is due, if one is (on
    /// this clock; a moment late rather than early).
    async fn next_due(&self) -> Option<Instant> {
        let now = chrono::Utc::now();
        match jobs::next_due(&self.0.reader, now).await {
            Ok(due) => due.map(|at| {
                let wait = (at - now).to_std().unwrap_or_default();
                Instant::now() + wait + std::time::Duration::from_millis(5)
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read when the next retry is due");
                None
            }
        }
    }

    /// Claims up to `slots` jobs for this node under its current epoch,
    /// oldest first, in one transaction of the writer (`db::commit`).
    async fn claim(&self, slots: usize) -> Result<Vec<JobRow>, sea_orm::DbErr> {
        self.claim_scoped(slots, None).await
    }

    async fn claim_scoped(
        &self,
        slots: usize,
        agent: Option<(&str, &[String])>,
    ) -> Result<Vec<JobRow>, sea_orm::DbErr> {
        let work = Arc::new(Claim {
            owner: self.owner(),
            slots,
            agent: agent.map(|(a, t)| (a.to_string(), t.to_vec())),
            agent_targets: self.0.agent_targets.clone(),
            claimed: Mutex::new(Vec::new()),
        });
        self.0.sink.committer.commit(work.clone()).await?;
        let claimed = std::mem::take(&mut *work.claimed.locked());
        Ok(claimed)
    }

    /// Claims the queued jobs of each agent connected here and sends them
    /// to it. A job whose `command.run` does not reach the agent (it just
    /// went away) stays `running`, never started: it is sent again when
    /// the agent reconnects (`agents::link`).
    async fn dispatch_to_agents(&self) {
        for name in self.0.agents.online() {
            let targets: Vec<String> = self
                .config()
                .targets
                .iter()
                .filter(|t| t.agent() == Some(name.as_str()))
                .map(|t| t.id.clone())
                .collect();
            if targets.is_empty() {
                continue;
            }
            let claimed = match self.claim_scoped(usize::MAX, Some((&name, &targets))).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(agent = %name, error = %e, "cannot claim jobs for an agent");
                    continue;
                }
            };
            for row in claimed {
                self.0.sink.hub.job_changed(row.to_job());
                match crate::agents::dispatch::run_command(self.config(), &row) {
                    Ok(cmd) => {
                        tracing::info!(job = row.id, agent = %name, dispatch = row.dispatch, "dispatched to the agent");
                        if !self.0.agents.send(&name, ServerMsg::Run(cmd)) {
                            tracing::warn!(job = row.id, agent = %name, "the agent went away: the job is sent again when it reconnects");
                        }
                    }
                    Err(why) => {
                        crate::agents::dispatch::fail_unrunnable(&self.0.sink, &row, why).await
                    }
                }
            }
        }
    }

    /// Runs `job` in a task holding one of the slots.
    fn start(&self, tasks: &mut JoinSet<Ran>, job: JobRow, permit: OwnedSemaphorePermit) {
        let claimed_at = Instant::now();
        let switch = StopSwitch::default();
        self.0.running.locked().insert(job.id, switch.clone());
        let engine = self.clone();
        tasks.spawn(async move {
            let id = job.id;
            let ran = runner::run(&engine, job, switch, claimed_at).await;
            (id, ran, permit)
        });
    }

    /// A runner task ended: forget its job; its next job, if it claimed one.
    fn forget(
        &self,
        done: Result<Ran, tokio::task::JoinError>,
    ) -> Option<(JobRow, OwnedSemaphorePermit)> {
        match done {
            Ok((id, ran, permit)) => {
                self.0.running.locked().remove(&id);
                if ran.failed {
                    // Its end may have queued a retry.
                    self.0.due_changed.store(true, Ordering::Relaxed);
                }
                ran.next.map(|job| (job, permit))
            }
            Err(e) => {
                tracing::error!(error = %e, "a job runner failed");
                self.0.due_changed.store(true, Ordering::Relaxed);
                None
            }
        }
    }
}

/// How a finishing job claims its slot's next job (this node's, never an
/// agent's).
#[derive(Debug, Clone)]
pub struct ClaimFor {
    pub owner: Owner,
    pub agent_targets: Arc<[String]>,
}

impl ClaimFor {
    pub fn scope(&self) -> ClaimScope<'_> {
        ClaimScope::Local {
            agent_targets: &self.agent_targets,
        }
    }
}

struct Claim {
    owner: Owner,
    slots: usize,
    /// Claim for this agent, on these targets (else for this node).
    agent: Option<(String, Vec<String>)>,
    agent_targets: Arc<[String]>,
    claimed: Mutex<Vec<JobRow>>,
}

#[async_trait::async_trait]
impl Work for Claim {
    async fn apply(&self, txn: &crate::db::txn::Txn) -> Result<(), sea_orm::DbErr> {
        let scope = match &self.agent {
            Some((agent, targets)) => ClaimScope::Agent { agent, targets },
            None => ClaimScope::Local {
                agent_targets: &self.agent_targets,
            },
        };
        let mut claimed = Vec::new();
        while claimed.len() < self.slots {
            match jobs::claim_in(txn, &self.owner, scope).await? {
                Some(job) => claimed.push(job),
                None => break,
            }
        }
        *self.claimed.locked() = claimed;
        Ok(())
    }
}

/// What a runner task leaves: its job, how it ended (with the next job
/// it claimed for its slot), and the slot's permit to run that.
type Ran = (i64, runner::Ran, OwnedSemaphorePermit);
