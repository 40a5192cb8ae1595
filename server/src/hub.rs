//! The hub: per-job fan-out of committed log lines and state changes to
//! live subscribers, and one feed of job changes for the list pages.
//!
//! N.B.: only what the database already holds is published (the log writer
//! commits first), so a subscriber that falls behind can always catch up
//! from the database. Each job has one bounded broadcast channel: publishing
//! never waits for a subscriber, and a subscriber that lags is told how far
//! (and rebuilds from the database); memory does not grow with slow readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use app::model::job::{Gap, Job, LogLine, Progress};
use bytes::Bytes;
use tokio::sync::broadcast;

use crate::sync::Locked;

/// Batches a job channel holds for subscribers that are behind.
const JOB_CHANNEL: usize = 32;
/// Events the job feed holds.
const FEED_CHANNEL: usize = 1024;

/// A committed batch of lines, with its SSE encoding made once, on first use,
/// and shared by every subscriber.
pub struct LogBatch {
    pub lines: Vec<LogLine>,
    encoded: OnceLock<EncodedBatch>,
}

/// The SSE text of a batch and where each line starts in it.
pub struct EncodedBatch {
    pub bytes: Bytes,
    /// (seq, byte offset of its event).
    pub offsets: Vec<(i64, usize)>,
}

impl LogBatch {
    pub fn new(lines: Vec<LogLine>) -> LogBatch {
        LogBatch {
            lines,
            encoded: OnceLock::new(),
        }
    }

    pub fn first_seq(&self) -> i64 {
        self.lines.first().map_or(0, |l| l.seq)
    }

    pub fn last_seq(&self) -> i64 {
        self.lines.last().map_or(0, |l| l.seq)
    }

    /// The SSE events of the lines with `seq > after`.
    pub fn sse_after(&self, after: i64) -> Bytes {
        let enc = self
            .encoded
            .get_or_init(|| crate::streams::sse::encode_lines(&self.lines));
        match enc.offsets.iter().find(|(seq, _)| *seq > after) {
            Some((_, offset)) => enc.bytes.slice(*offset..),
            None => Bytes::new(),
        }
    }
}

/// What happens to one job.
#[derive(Clone)]
pub enum JobEvent {
    Lines(Arc<LogBatch>),
    /// Its state (or other fields) changed.
    State(Arc<Job>),
    Progress(Arc<Progress>),
    /// Lines were removed from the middle of its log (byte cap).
    Gap(Gap),
}

/// What happens to jobs in general, for list pages.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    Job(Arc<Job>),
    Deleted(i64),
}

/// The hub (one per server process).
pub struct Hub {
    jobs: Mutex<HashMap<i64, broadcast::Sender<JobEvent>>>,
    feed: broadcast::Sender<FeedEvent>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            jobs: Mutex::new(HashMap::new()),
            feed: broadcast::channel(FEED_CHANNEL).0,
        }
    }
}

impl Hub {
    /// Subscribes to a job's events (creating its channel).
    pub fn subscribe(&self, job_id: i64) -> broadcast::Receiver<JobEvent> {
        let mut jobs = self.jobs.locked();
        jobs.entry(job_id)
            .or_insert_with(|| broadcast::channel(JOB_CHANNEL).0)
            .subscribe()
    }

    /// Publishes to a job's subscribers, if it has any. Never waits.
    pub fn publish(&self, job_id: i64, event: JobEvent) {
        let jobs = self.jobs.locked();
        if let Some(tx) = jobs.get(&job_id) {
            let _ = tx.send(event);
        }
    }

    /// Publishes a job's new state to its subscribers and the feed.
    pub fn job_changed(&self, job: Job) {
        let job = Arc::new(job);
        self.publish(job.id, JobEvent::State(job.clone()));
        let _ = self.feed.send(FeedEvent::Job(job));
    }

    /// The job finished: its channel closes once its last events are out,
    /// so its subscribers finish from the database.
    pub fn close(&self, job_id: i64) {
        self.jobs.locked().remove(&job_id);
    }

    /// Drops channels nobody listens to (of jobs that are still running).
    pub fn prune(&self) {
        self.jobs.locked().retain(|_, tx| tx.receiver_count() > 0);
    }

    pub fn feed(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }

    pub fn deleted(&self, job_id: i64) {
        let _ = self.feed.send(FeedEvent::Deleted(job_id));
    }

    /// Jobs with a live channel (for metrics and tests).
    pub fn channels(&self) -> usize {
        self.jobs.locked().len()
    }
}
