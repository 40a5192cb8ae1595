//! The job engine: the database is the queue; a pool of `workers` runners in
//! this process claims queued jobs (one claim statement per free slot, all
//! in one of the writer's group transactions: `db::jobs`, `db::commit`), runs
//! them (`runner`), and finishes them. An enqueue wakes the pool at once;
//! polling is only the fallback (jobs enqueued by another replica, a slot
//! freed by exclusivity). Also owned here: recovery at start, heartbeats,
//! retention.

pub mod command;
pub mod exit;
pub mod logwriter;
pub mod output;
pub mod process;
pub mod progress;
pub mod recovery;
pub mod retention;
pub mod runner;
pub mod service;
pub mod spawn;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::db::commit::Work;
use crate::db::jobs::{self, JobRow};
use crate::state::AppState;
use crate::sync::Locked;
use runner::{StopReason, StopSwitch};

/// The engine's handle in the server state.
#[derive(Default)]
pub struct Engine {
    wake: Notify,
    running: Mutex<HashMap<i64, StopSwitch>>,
}

impl Engine {
    /// Something changed (a job was enqueued): look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops a job running in this process; false if it does not run here.
    pub fn stop_job(&self, id: i64, reason: StopReason) -> bool {
        match self.running.locked().get(&id) {
            Some(switch) => {
                switch.stop(reason);
                true
            }
            None => false,
        }
    }

    /// How many jobs run in this process.
    pub fn running(&self) -> usize {
        self.running.locked().len()
    }
}

/// The engine's main loop: recover, then claim and run until shutdown; at
/// shutdown, stop running jobs (they are recorded as interrupted) and wait
/// for them.
pub async fn run(state: AppState) {
    recovery::recover(&state).await;
    let background = [
        tokio::spawn(recovery::heartbeats(state.clone())),
        tokio::spawn(retention::run(state.clone())),
    ];
    let workers = state.config.server.workers;
    let slots = Arc::new(Semaphore::new(workers));
    let mut tasks: JoinSet<Ran> = JoinSet::new();
    let mut tick = tokio::time::interval(state.config.jobs.poll_interval);
    let node = state.config.server.node.clone();
    tracing::info!(workers, node = %node, "job engine started");

    loop {
        // Fill every free slot with a claimable job, in one claim.
        let permits: Vec<_> =
            std::iter::from_fn(|| slots.clone().try_acquire_owned().ok()).collect();
        if !permits.is_empty() {
            let claimed = match claim(&state, &node, permits.len()).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a job");
                    Vec::new()
                }
            };
            // Unused permits go back when dropped.
            for (job, permit) in claimed.into_iter().zip(permits) {
                start(&state, &mut tasks, job, permit);
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = state.engine.wake.notified() => {}
            _ = tick.tick() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Some((next, permit)) = forget(&state, done) {
                    start(&state, &mut tasks, next, permit);
                }
            }
        }
    }

    let stopping: Vec<StopSwitch> = state.engine.running.locked().values().cloned().collect();
    if !stopping.is_empty() {
        tracing::info!(jobs = stopping.len(), "stopping running jobs for shutdown");
    }
    for switch in stopping {
        switch.stop(StopReason::Shutdown);
    }
    while let Some(done) = tasks.join_next().await {
        // N.B.: runners claim no next job once shutdown began.
        if let Some((next, _)) = forget(&state, done) {
            if let Err(e) = jobs::unclaim(&state.db, next.id).await {
                tracing::error!(job = next.id, error = %e, "cannot put a job claimed during shutdown back in the queue");
            }
        }
    }
    for task in background {
        let _ = task.await;
    }
    tracing::info!("job engine stopped");
}

/// Claims up to `slots` jobs for `node`, oldest first, in one transaction
/// of the writer (`db::commit`).
async fn claim(state: &AppState, node: &str, slots: usize) -> Result<Vec<JobRow>, sea_orm::DbErr> {
    let work = Arc::new(Claim {
        node: node.to_string(),
        slots,
        claimed: Mutex::new(Vec::new()),
    });
    state.committer.commit(work.clone()).await?;
    let claimed = std::mem::take(&mut *work.claimed.locked());
    Ok(claimed)
}

struct Claim {
    node: String,
    slots: usize,
    claimed: Mutex<Vec<JobRow>>,
}

#[async_trait::async_trait]
impl Work for Claim {
    async fn apply(&self, txn: &sea_orm::DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
        let mut claimed = Vec::new();
        while claimed.len() < self.slots {
            match jobs::claim_in(txn, &self.node).await? {
                Some(job) => claimed.push(job),
                None => break,
            }
        }
        *self.claimed.locked() = claimed;
        Ok(())
    }
}

/// What a runner task leaves: its job, and the next job it claimed for
/// its slot with its end (and the slot's permit to run it).
type Ran = (i64, Option<JobRow>, OwnedSemaphorePermit);

/// Runs `job` in a task holding one of the slots.
fn start(state: &AppState, tasks: &mut JoinSet<Ran>, job: JobRow, permit: OwnedSemaphorePermit) {
    let claimed_at = Instant::now();
    let switch = StopSwitch::default();
    state.engine.running.locked().insert(job.id, switch.clone());
    let st = state.clone();
    tasks.spawn(async move {
        let id = job.id;
        let next = runner::run(st, job, switch, claimed_at).await;
        (id, next, permit)
    });
}

/// A runner task ended: forget its job; its next job, if it claimed one.
fn forget(
    state: &AppState,
    done: Result<Ran, tokio::task::JoinError>,
) -> Option<(JobRow, OwnedSemaphorePermit)> {
    match done {
        Ok((id, next, permit)) => {
            state.engine.running.locked().remove(&id);
            next.map(|job| (job, permit))
        }
        Err(e) => {
            tracing::error!(error = %e, "a job runner failed");
            None
        }
    }
}
