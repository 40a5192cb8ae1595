//! Tails: how a replica's streams follow a job whose lines another replica
//! commits. One task per job watched here, however many streams watch it:
//! it reads the job's committed rows after the last line this process's hub
//! carried and relays them into the hub, where the streams take them by
//! their one rule (`streams::job::catch`), exactly as a local commit's
//! batch. It wakes on the other replicas' log and job notifications, and
//! polls every [`POLL`] for what a notification missed; it ends when the
//! job has finished and its last lines and state are out, or when no stream
//! watches the job any more.
//!
//! N.B.: a tail only relays rows it read after their commit, so what it
//! publishes is committed (commit, then publish, across replicas too); a
//! batch the hub already carried (the job runs here after all, or two
//! reads overlapped) is skipped by the streams' rule, never sent twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::job::{JobState, Progress};
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{jobs, logs};
use crate::hub::{Hub, LogBatch, Update};
use crate::metrics::Metrics;
use crate::sync::Locked;

/// How often a tail reads the database when no notification came (the
/// fallback for a missed one; the listener's reconnect wakes every tail).
pub const POLL: Duration = Duration::from_secs(2);
/// Lines per read.
const PAGE: u64 = 2000;
/// Lines a new tail relays that were committed before it started (see
/// [`Tail::read`]).
const OVERLAP: i64 = 500;

/// The tails of this process (clones share them).
#[derive(Clone)]
pub struct Tails(Arc<Inner>);

struct Inner {
    reader: DatabaseConnection,
    hub: Hub,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// The job of each running tail, and how to wake it.
    running: Mutex<HashMap<i64, Arc<Notify>>>,
}

impl Tails {
    pub fn new(
        reader: DatabaseConnection,
        hub: Hub,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Tails {
        Tails(Arc::new(Inner {
            reader,
            hub,
            metrics,
            shutdown,
            running: Mutex::new(HashMap::new()),
        }))
    }

    /// A stream subscribed to `job_id` in the hub: make sure its rows are
    /// tailed. N.B.: call it after subscribing, so a tail that is about to
    /// end for want of watchers either sees the new subscriber or has left
    /// the map (and a new tail starts here).
    pub fn watch(&self, job_id: i64) {
        let mut running = self.0.running.locked();
        if running.contains_key(&job_id) {
            return;
        }
        let wake = Arc::new(Notify::new());
        running.insert(job_id, wake.clone());
        self.0.metrics.notify.tail(true);
        let tails = self.clone();
        tokio::spawn(async move {
            tails.run(job_id, wake).await;
            tails.0.metrics.notify.tail(false);
        });
    }

    /// Something of `job_id` was committed elsewhere: read it now.
    pub fn wake(&self, job_id: i64) {
        if let Some(wake) = self.0.running.locked().get(&job_id) {
            wake.notify_one();
        }
    }

    /// Notifications may have been missed: every tail reads now.
    pub fn wake_all(&self) {
        for wake in self.0.running.locked().values() {
            wake.notify_one();
        }
    }

    /// Tail tasks running now.
    pub fn len(&self) -> usize {
        self.0.running.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leaves if nothing but the tail itself watches `job_id` (decided
    /// under the map's lock: see [`Tails::watch`]).
    fn leave_if_unwatched(&self, job_id: i64) -> bool {
        let mut running = self.0.running.locked();
        if self.0.hub.watchers(job_id) <= 1 {
            running.remove(&job_id);
            return true;
        }
        false
    }

    async fn run(&self, job_id: i64, wake: Arc<Notify>) {
        let hub = &self.0.hub;
        let mut rx = hub.subscribe(job_id);
        let mut tail = Tail {
            job_id,
            last: None,
            state: None,
            progress: None,
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.leave_if_unwatched(job_id) {
                return;
            }
            match tail.read(&self.0.reader, hub).await {
                Ok(true) => {
                    // Finished, and everything is out: the streams finish
                    // from the database when the channel closes.
                    self.0.running.locked().remove(&job_id);
                    hub.close(job_id);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job = job_id, error = %e, "tail: cannot read the job; trying again");
                }
            }
            // Wait for a reason to read again; lines this process publishes
            // itself (the job runs here) only move the position.
            loop {
                tokio::select! {
                    _ = wake.notified() => break,
                    _ = poll.tick() => break,
                    _ = self.0.shutdown.cancelled() => {
                        self.0.running.locked().remove(&job_id);
                        return;
                    }
                    update = rx.recv() => match update {
                        Ok(Update::Lines(b)) => tail.seen(b.last_seq()),
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => {
                            // It finished here, or the hub dropped the
                            // channel: follow the new one and look.
                            rx = hub.subscribe(job_id);
                            break;
                        }
                    },
                }
            }
        }
    }
}

/// What one tail has relayed of its job.
struct Tail {
    job_id: i64,
    /// The last seq this process's hub carried (`None`: not read yet).
    last: Option<i64>,
    state: Option<JobState>,
    progress: Option<Progress>,
}

impl Tail {
    fn seen(&mut self, seq: i64) {
        if let Some(last) = self.last.as_mut() {
            *last = (*last).max(seq);
        }
    }

    /// Reads the job, then its lines after the last relayed, and relays
    /// what is new. `true` when the job has finished and all is out.
    async fn read(
        &mut self,
        reader: &DatabaseConnection,
        hub: &Hub,
    ) -> Result<bool, sea_orm::DbErr> {
        // N.B.: the row first, then the lines: lines read after a finished
        // row include every line the job will ever have.
        let Some(row) = jobs::by_id(reader, self.job_id).await? else {
            return Ok(true);
        };
        let mut last = match self.last {
            Some(last) => last,
            None => {
                // The first read: the streams replayed (nearly) up to here
                // themselves; the last lines go out again for one that
                // replayed just before they committed (it skips the rest).
                self.state = Some(row.state);
                self.progress = row.progress();
                (row.last_seq - OVERLAP).max(0)
            }
        };
        self.last = Some(last);
        loop {
            let lines = logs::page(reader, self.job_id, last, PAGE).await?;
            let Some(end) = lines.last().map(|l| l.seq) else {
                break;
            };
            let full = lines.len() as u64 == PAGE;
            hub.relay(self.job_id, Update::Lines(Arc::new(LogBatch::new(lines))));
            last = end;
            self.last = Some(last);
            if !full {
                break;
            }
        }
        self.announce(row, hub)
    }

    /// Relays a changed progress or state; `true` if the job has finished.
    fn announce(&mut self, row: jobs::JobRow, hub: &Hub) -> Result<bool, sea_orm::DbErr> {
        let progress = row.progress();
        if progress.is_some() && progress != self.progress {
            if let Some(p) = progress.clone() {
                hub.relay(self.job_id, Update::Progress(Arc::new(p)));
            }
            self.progress = progress;
        }
        let finished = row.state.is_finished();
        if self.state != Some(row.state) || finished {
            self.state = Some(row.state);
            hub.relay(self.job_id, Update::State(Arc::new(row.to_job())));
        }
        Ok(finished)
    }
}
