//! The job engine: the database is the queue; a pool of `workers` runners in
//! this process claims queued jobs (one claim statement, `db::jobs`), runs
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::db::jobs;
use crate::state::AppState;
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
        match self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            Some(switch) => {
                switch.stop(reason);
                true
            }
            None => false,
        }
    }

    /// How many jobs run in this process.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
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
    let mut tasks: JoinSet<i64> = JoinSet::new();
    let mut tick = tokio::time::interval(state.config.jobs.poll_interval);
    let node = state.config.server.node.clone();
    tracing::info!(workers, node = %node, "job engine started");

    loop {
        // Fill every free slot with a claimable job.
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            let job = match jobs::claim_next(&state.db, &node).await {
                Ok(Some(job)) => job,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a job");
                    break;
                }
            };
            let claimed_at = Instant::now();
            let switch = StopSwitch::default();
            state
                .engine
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id, switch.clone());
            let st = state.clone();
            tasks.spawn(async move {
                let id = job.id;
                runner::run(st, job, switch, claimed_at).await;
                drop(permit);
                id
            });
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = state.engine.wake.notified() => {}
            _ = tick.tick() => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => forget(&state, done),
        }
    }

    let stopping: Vec<StopSwitch> = state
        .engine
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    if !stopping.is_empty() {
        tracing::info!(jobs = stopping.len(), "stopping running jobs for shutdown");
    }
    for switch in stopping {
        switch.stop(StopReason::Shutdown);
    }
    while let Some(done) = tasks.join_next().await {
        forget(&state, done);
    }
    for task in background {
        let _ = task.await;
    }
    tracing::info!("job engine stopped");
}

fn forget(state: &AppState, done: Result<i64, tokio::task::JoinError>) {
    match done {
        Ok(id) => {
            state
                .engine
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
        Err(e) => tracing::error!(error = %e, "a job runner failed"),
    }
}
