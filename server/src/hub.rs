//! The hub: per-job fan-out of committed log lines and state changes to
//! live subscribers in this process, and one feed of job changes for the
//! list pages. It also collects the targets whose jobs ended in this
//! process, for their status probes to run again (`status`).
//!
//! On PostgreSQL the hub also marks what each commit announces for the
//! other replicas (`notify::Outbox`); what they committed comes back into
//! this hub through [`Hub::relay`] (a job's tail, `notify::tail`) and
//! [`Hub::relay_feed`], which announce nothing further.
//!
//! N.B.: only what the database already holds is published: every
//! publisher is a `db::commit::Work` item's `committed` (or runs after its
//! own commit), so a subscriber that falls behind can always catch up from
//! the database, and nothing published is ever taken back. Each job has one
//! bounded broadcast channel: publishing never waits for a subscriber, and
//! a subscriber that lags is told how far (and rebuilds from the database);
//! memory does not grow with slow readers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use app::model::event::FeedEvent;
use app::model::job::{Gap, Job, JobState, LogLine, Progress};
use app::model::status::TargetStatus;
use bytes::Bytes;
use tokio::sync::{broadcast, Notify};

use crate::notify::{Channel, Outbox};
use crate::sync::Locked;
use crate::webhooks::Hooks;

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

/// What happens to one job, as its live subscribers receive it.
#[derive(Clone)]
pub enum Update {
    Lines(Arc<LogBatch>),
    /// Its state (or other fields) changed.
    State(Arc<Job>),
    Progress(Arc<Progress>),
    /// Lines were removed from the middle of its log (byte cap).
    Gap(Gap),
}

/// The hub (one per server process; clones share it).
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

struct Inner {
    jobs: Mutex<HashMap<i64, broadcast::Sender<Update>>>,
    feed: broadcast::Sender<FeedEvent>,
    /// Where the other replicas hear of this process's commits (PostgreSQL).
    outbox: Option<Outbox>,
    /// The `[[notify]]` hooks: which events a commit writes for them.
    hooks: Hooks,
    /// Targets whose jobs ended here, not yet taken by [`Hub::ended_targets`]
    /// (at most one entry per target: bounded by the configuration).
    ended: Mutex<BTreeSet<String>>,
    ended_wake: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(None, Hooks::default())
    }
}

impl Hub {
    /// A hub whose commits are also announced to the other replicas
    /// through `outbox` (if given), and to `hooks`.
    pub fn new(outbox: Option<Outbox>, hooks: Hooks) -> Hub {
        Hub(Arc::new(Inner {
            jobs: Mutex::new(HashMap::new()),
            feed: broadcast::channel(FEED_CHANNEL).0,
            outbox,
            hooks,
            ended: Mutex::new(BTreeSet::new()),
            ended_wake: Notify::new(),
        }))
    }

    /// The `[[notify]]` hooks, for the events a commit writes
    /// (`webhooks::enqueue`).
    pub fn hooks(&self) -> &Hooks {
        &self.0.hooks
    }

    fn announce(&self, channel: Channel, job_id: i64) {
        if let Some(outbox) = &self.0.outbox {
            outbox.mark(channel, job_id);
        }
    }

    /// Subscribes to a job's updates (creating its channel).
    pub fn subscribe(&self, job_id: i64) -> broadcast::Receiver<Update> {
        let mut jobs = self.0.jobs.locked();
        jobs.entry(job_id)
            .or_insert_with(|| broadcast::channel(JOB_CHANNEL).0)
            .subscribe()
    }

    /// Publishes a commit of this process to a job's subscribers, if it
    /// has any, and to the other replicas. Never waits.
    pub fn publish(&self, job_id: i64, update: Update) {
        match update {
            Update::State(_) => self.announce(Channel::Job, job_id),
            _ => self.announce(Channel::Log, job_id),
        }
        self.relay(job_id, update);
    }

    /// Publishes what another replica committed (read back by a tail) to a
    /// job's subscribers here. Never waits.
    pub fn relay(&self, job_id: i64, update: Update) {
        let jobs = self.0.jobs.locked();
        if let Some(tx) = jobs.get(&job_id) {
            let _ = tx.send(update);
        }
    }

    /// Publishes a job's new state to its subscribers and the feed.
    pub fn job_changed(&self, job: Job) {
        self.announce(Channel::Job, job.id);
        match job.state {
            // N.B.: a job enqueued, or one whose end freed its slot (and
            // maybe its target): another replica may claim now.
            s if s == JobState::Queued || s.is_finished() => self.announce(Channel::Queue, job.id),
            JobState::Cancelling => self.announce(Channel::Cancel, job.id),
            _ => {}
        }
        if job.state.is_finished() {
            self.0.ended.locked().insert(job.target.clone());
            self.0.ended_wake.notify_one();
        }
        let job = Arc::new(job);
        self.relay(job.id, Update::State(job.clone()));
        let _ = self.0.feed.send(FeedEvent::Job(job));
    }

    /// The targets whose jobs ended in this process since the last call
    /// (a job's end here: other replicas' ends are theirs to follow up);
    /// waits until there is one. For the status probes (one caller).
    pub async fn ended_targets(&self) -> BTreeSet<String> {
        loop {
            let taken = std::mem::take(&mut *self.0.ended.locked());
            if !taken.is_empty() {
                return taken;
            }
            // N.B.: a notify_one with nobody waiting leaves a permit, so an
            // end between the take and this wait is not missed.
            self.0.ended_wake.notified().await;
        }
    }

    /// A target's actual state or last error changed (committed): to the
    /// feed here and, on PostgreSQL, to the other replicas' feeds.
    pub fn target_changed(&self, status: TargetStatus) {
        self.announce(Channel::Target, 0);
        let _ = self.0.feed.send(FeedEvent::Target(Arc::new(status)));
    }

    /// Sends what another replica changed (read back here) to the feed.
    pub fn relay_feed(&self, event: FeedEvent) {
        let _ = self.0.feed.send(event);
    }

    /// The job finished: its channel closes once its last updates are out,
    /// so its subscribers finish from the database.
    pub fn close(&self, job_id: i64) {
        self.0.jobs.locked().remove(&job_id);
    }

    /// Drops channels nobody listens to (of jobs that are still running).
    pub fn prune(&self) {
        self.0.jobs.locked().retain(|_, tx| tx.receiver_count() > 0);
    }

    pub fn feed(&self) -> broadcast::Receiver<FeedEvent> {
        self.0.feed.subscribe()
    }

    /// Retention removed a job.
    pub fn deleted(&self, job_id: i64) {
        self.announce(Channel::Job, job_id);
        let _ = self.0.feed.send(FeedEvent::Deleted(job_id));
    }

    /// An agent's status changed.
    pub fn agent_changed(&self, agent: app::model::agent::AgentInfo) {
        let _ = self.0.feed.send(FeedEvent::Agent(Arc::new(agent)));
    }

    /// How many subscribers a job's channel has (a tail counts itself).
    pub fn watchers(&self, job_id: i64) -> usize {
        self.0
            .jobs
            .locked()
            .get(&job_id)
            .map_or(0, |tx| tx.receiver_count())
    }

    /// Jobs with a live channel (for metrics and tests).
    pub fn channels(&self) -> usize {
        self.0.jobs.locked().len()
    }
}

#[cfg(test)]
mod tests {
    use app::model::job::LogStream;
    use chrono::Utc;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;

    fn line(seq: i64) -> LogLine {
        LogLine {
            seq,
            stream: LogStream::Stdout,
            ts: Utc::now(),
            text: format!("line {seq}"),
        }
    }

    fn job(id: i64, state: JobState) -> Job {
        let now = Utc::now();
        Job {
            id,
            template: "t".into(),
            target: "web-1".into(),
            params: Default::default(),
            state,
            owner: "admin".into(),
            created_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            warnings: false,
            progress: None,
            last_seq: 0,
            cancel_requested_by: None,
            node: None,
            rerun_of: None,
            agent: None,
            omitted: None,
            attempt: None,
        }
    }

    #[test]
    fn a_job_reaches_only_its_own_subscribers_and_the_feed() {
        let hub = Hub::default();
        let mut one = hub.subscribe(1);
        let mut two = hub.subscribe(2);
        let mut feed = hub.feed();
        hub.publish(1, Update::Lines(Arc::new(LogBatch::new(vec![line(1)]))));
        hub.job_changed(job(1, JobState::Running));
        assert!(matches!(one.try_recv(), Ok(Update::Lines(b)) if b.last_seq() == 1));
        assert!(matches!(one.try_recv(), Ok(Update::State(j)) if j.state == JobState::Running));
        assert!(matches!(two.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(feed.try_recv(), Ok(FeedEvent::Job(j)) if j.id == 1));
    }

    #[test]
    fn publishing_to_a_job_nobody_follows_costs_no_channel() {
        let hub = Hub::default();
        hub.publish(
            9,
            Update::Gap(Gap {
                from: 1,
                to: 2,
                bytes: 3,
            }),
        );
        hub.job_changed(job(9, JobState::Queued));
        assert_eq!(hub.channels(), 0);
    }

    #[test]
    fn a_slow_subscriber_is_told_it_lagged_instead_of_holding_the_publisher() {
        let hub = Hub::default();
        let mut slow = hub.subscribe(1);
        for seq in 1..=(JOB_CHANNEL as i64 + 5) {
            hub.publish(1, Update::Lines(Arc::new(LogBatch::new(vec![line(seq)]))));
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Lagged(5))));
        assert!(matches!(slow.try_recv(), Ok(Update::Lines(b)) if b.first_seq() == 6));
    }

    #[test]
    fn closing_a_job_ends_its_subscribers_and_prune_drops_unwatched_channels() {
        let hub = Hub::default();
        let mut rx = hub.subscribe(1);
        drop(hub.subscribe(2));
        assert_eq!(hub.channels(), 2);
        hub.prune();
        assert_eq!(hub.channels(), 1, "job 2 had no subscriber left");
        hub.close(1);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Closed)));
    }

    #[test]
    fn commits_are_marked_for_the_other_replicas_and_what_they_committed_is_not() {
        let outbox = Outbox::default();
        let hub = Hub::new(Some(outbox.clone()), Hooks::default());
        hub.relay(1, Update::Lines(Arc::new(LogBatch::new(vec![line(1)]))));
        hub.relay_feed(FeedEvent::Resync);
        assert_eq!(outbox.marked(Channel::Log), (false, vec![]));
        assert_eq!(outbox.marked(Channel::Job), (false, vec![]));

        hub.publish(1, Update::Lines(Arc::new(LogBatch::new(vec![line(1)]))));
        hub.job_changed(job(2, JobState::Cancelling));
        hub.job_changed(job(3, JobState::Running));
        assert_eq!(
            outbox.marked(Channel::Queue),
            (false, vec![]),
            "nothing freed or enqueued"
        );
        hub.job_changed(job(4, JobState::Succeeded));
        hub.deleted(5);
        assert_eq!(outbox.marked(Channel::Log), (true, vec![1]));
        assert_eq!(outbox.marked(Channel::Cancel), (true, vec![2]));
        assert_eq!(outbox.marked(Channel::Job), (true, vec![2, 3, 4, 5]));
        assert_eq!(
            outbox.marked(Channel::Queue),
            (true, vec![]),
            "ids are not sent"
        );
    }

    #[tokio::test]
    async fn the_targets_of_ended_jobs_are_collected_once_each_for_their_probes() {
        let hub = Hub::default();
        let mut ended = job(1, JobState::Failed);
        ended.target = "web-2".into();
        hub.job_changed(job(2, JobState::Running));
        hub.job_changed(ended);
        hub.job_changed(job(3, JobState::Succeeded));
        hub.job_changed(job(4, JobState::Cancelled));
        let taken = tokio::time::timeout(std::time::Duration::from_secs(1), hub.ended_targets())
            .await
            .expect("two targets ended");
        assert_eq!(taken.into_iter().collect::<Vec<_>>(), ["web-1", "web-2"]);
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), hub.ended_targets());
        assert!(none.await.is_err(), "nothing ended since");
    }

    #[test]
    fn a_batch_sends_only_the_lines_after_a_subscribers_position() {
        let batch = LogBatch::new(vec![line(4), line(5), line(6)]);
        let text = String::from_utf8(batch.sse_after(4).to_vec()).unwrap();
        assert!(!text.contains("id: 4\n") && text.contains("id: 5\n") && text.contains("id: 6\n"));
        assert!(batch.sse_after(6).is_empty());
        assert_eq!(batch.sse_after(0).len(), batch.sse_after(3).len());
    }
}
