//! The log pipeline of one job running here. Its supervisor
//! (`engine::supervise`: stdout, stderr, system lines) sends to one writer
//! task, which
//! - numbers and caps the lines ([`CappedLog`]: the head, a marker, the
//!   last `tail_lines`), in arrival order, so seqs are 1, 2, 3, … with no gap;
//! - commits them through `db::commit` in batches (1,000 lines, or 5 ms
//!   after the first line of a batch, whichever comes first; a writer
//!   that fell behind takes what is waiting, up to 10,000 lines or 8 MiB)
//!   in one transaction with the job's `last_seq`;
//! - has them published to the hub by the commit itself (the batch's
//!   [`Work::committed`]), so subscribers only ever see committed lines;
//! - parses progress, stored on the job at most once a second and published
//!   at most four times a second;
//! - stores the job's process group with its first batch (N.B.: so a job
//!   that ends at once costs one commit; a crash in those few milliseconds
//!   leaves a group that recovery cannot find, as one between the spawn and
//!   any write would);
//! - ends the job with its last batch: its summary line is the last line of
//!   that batch, and the job's [`Transition`] (state, finish fields, the
//!   log's final position) rides in the same transaction, with the claim of
//!   the slot's next job when asked;
//! - is fenced: each batch first checks, in the statement that stores the
//!   log's position, that the job still runs under this runner's node and
//!   epoch ([`Owner`]); when it does not (the node was declared lost and
//!   the job failed by another), the batch writes nothing, the writer
//!   stops the job's process group (`StopReason::Lost`) and stores nothing
//!   more.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::job::{Gap, LogStream, Progress};
use app::model::template::ProgressKind;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::db::commit::Work;
use crate::db::jobs::{self, Finish, JobRow, LogPosition, Owner};
use crate::db::logs;
use crate::db::txn::Txn;
use crate::engine::logcap::{CappedLog, Flush};
use crate::engine::progress;
use crate::engine::supervise::{Out, StopReason, StopSwitch};
use crate::engine::transition::Transition;
use crate::engine::{ClaimFor, Sink};
use crate::hub::{LogBatch, Update};
use crate::sync::Locked;

/// Lines after which a batch stops waiting for more.
const BATCH_LINES: usize = 1000;
/// Lines and bytes a batch takes at most from what is already waiting.
/// N.B.: a writer behind its job (lines arrived while it committed) takes
/// them in one larger commit, not in several of 1,000: on PostgreSQL each
/// commit waits for the WAL to reach the disk (about 1.6 ms here), which
/// was a third of the time of a 1,000,000-line job.
const BACKLOG_LINES: usize = 10_000;
const BACKLOG_BYTES: usize = 8 << 20;
/// How long a batch waits for more lines after its first.
const BATCH_WAIT: Duration = Duration::from_millis(5);
/// Chunks the channel holds before readers wait (bounded memory).
const CHANNEL: usize = 256;
const PROGRESS_STORE_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// How a run ended, for its last batch.
#[derive(Debug, Clone)]
pub struct End {
    pub finish: Finish,
    /// The `system` line that says so.
    pub summary: String,
    /// Claim this node's next job in the same transaction.
    pub claim_for: Option<ClaimFor>,
}

/// Limits of one job's log.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_log_bytes: u64,
    pub tail_lines: usize,
    pub progress: ProgressKind,
}

/// What the writer leaves behind.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub last_seq: i64,
    /// The finished row, if the end was stored (the job was still running
    /// or cancelling).
    pub finished: Option<JobRow>,
    /// The job claimed next, with the end.
    pub next: Option<JobRow>,
}

/// Handle to a running writer.
pub struct LogWriter {
    tx: mpsc::Sender<Out>,
    /// The end, handed over by [`LogWriter::finish`].
    end: Arc<Mutex<Option<End>>>,
    task: JoinHandle<Summary>,
}

impl LogWriter {
    /// Starts the writer of `job_id`, whose last stored seq is `last_seq`,
    /// run by `owner`; `stop` is the run's switch, pulled if the job turns
    /// out to be someone else's.
    pub fn start(
        sink: Sink,
        job_id: i64,
        last_seq: i64,
        limits: Limits,
        owner: Owner,
        stop: StopSwitch,
    ) -> LogWriter {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let end = Arc::new(Mutex::new(None));
        let writer = Writer {
            sink,
            job_id,
            owner,
            stop,
            lost: false,
            progress_kind: limits.progress,
            log: CappedLog::new(last_seq, limits.max_log_bytes, limits.tail_lines),
            progress: None,
            progress_unstored: false,
            progress_unpublished: false,
            progress_stored: Instant::now() - PROGRESS_STORE_EVERY,
            progress_published: Instant::now() - PROGRESS_PUBLISH_EVERY,
            process: None,
            end_slot: end.clone(),
            end: None,
            finished: None,
            next: None,
        };
        let task = tokio::spawn(writer.run(rx));
        LogWriter { tx, end, task }
    }

    /// A sender for the job's output.
    pub fn sender(&self) -> mpsc::Sender<Out> {
        self.tx.clone()
    }

    /// Commits everything still pending with the job's end (its progress
    /// filled in from the log) and stops, once every sender is gone.
    pub async fn finish(self, end: End) -> Summary {
        *self.end.locked() = Some(end);
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

struct Writer {
    sink: Sink,
    job_id: i64,
    owner: Owner,
    stop: StopSwitch,
    /// A batch was refused: store nothing more.
    lost: bool,
    progress_kind: ProgressKind,
    log: CappedLog,
    progress: Option<Progress>,
    progress_unstored: bool,
    progress_unpublished: bool,
    progress_stored: Instant,
    progress_published: Instant,
    /// A process group not stored yet.
    process: Option<(i32, i64)>,
    /// Where [`LogWriter::finish`] leaves the end.
    end_slot: Arc<Mutex<Option<End>>>,
    /// The job's end, stored with the last batch.
    end: Option<End>,
    finished: Option<JobRow>,
    next: Option<JobRow>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Out>) -> Summary {
        let mut closed = false;
        while !closed {
            let received = if self.progress_unstored || self.progress_unpublished {
                // Progress not yet out: come back for it even if no line arrives.
                match tokio::time::timeout(PROGRESS_PUBLISH_EVERY, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        self.commit(false).await;
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = received else { break };
            let mut bytes = size(&first);
            let mut urgent = self.accept(first);
            let deadline = Instant::now() + BATCH_WAIT;
            while !urgent && self.log.pending() < BACKLOG_LINES && bytes < BACKLOG_BYTES {
                let full = self.log.pending() >= BATCH_LINES;
                let m = match rx.try_recv() {
                    Ok(m) => m,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                    // A full batch takes only what is already waiting.
                    Err(mpsc::error::TryRecvError::Empty) if full => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(m)) => m,
                            Ok(None) => {
                                closed = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                };
                bytes += size(&m);
                urgent |= self.accept(m);
            }
            if !closed {
                self.commit(false).await;
            }
        }
        // Whatever is pending goes with the end: one commit.
        self.end = self.end_slot.locked().take();
        self.commit(true).await;
        Summary {
            last_seq: self
                .finished
                .as_ref()
                .map_or(self.log.last_seq(), |r| r.last_seq),
            finished: self.finished.take(),
            next: self.next.take(),
        }
    }

    /// Takes a message; true if it should be committed at once.
    fn accept(&mut self, msg: Out) -> bool {
        match msg {
            Out::Lines(stream, texts, ts) => {
                for text in texts {
                    if self.progress_kind != ProgressKind::None {
                        if let Some(p) = progress::parse(self.progress_kind, &text) {
                            self.progress = Some(p);
                            self.progress_unstored = true;
                            self.progress_unpublished = true;
                        }
                    }
                    self.log.push(stream, text, ts);
                }
                false
            }
            Out::System(text) => {
                self.log.push(LogStream::System, text, logs::now_millis());
                true
            }
            Out::Note(text) => {
                self.log.push(LogStream::System, text, logs::now_millis());
                false
            }
            Out::Process { pgid, start } => {
                self.process = Some((pgid, start));
                false
            }
        }
    }

    /// Commits pending lines (and the cut's deletions); the commit
    /// publishes them. A failed commit is retried: a line is never dropped.
    async fn commit(&mut self, last: bool) {
        if self.lost {
            // Drained, never stored: the job is another's now.
            self.log.flush(last);
            self.log.flushed();
            return;
        }
        // N.B.: the summary is numbered and capped like any line (it is the
        // last of the tail), and stored with the end in one transaction.
        if let Some(end) = self.end.as_mut().filter(|_| last) {
            let summary = std::mem::take(&mut end.summary);
            self.log
                .push(LogStream::System, summary, logs::now_millis());
        }
        let progress_due = self.progress_unstored
            && (last || self.progress_stored.elapsed() >= PROGRESS_STORE_EVERY);
        let publish_progress = self.progress_unpublished
            && (last || self.progress_published.elapsed() >= PROGRESS_PUBLISH_EVERY);
        let nothing_to_do = self.log.pending() == 0
            && !progress_due
            && !publish_progress
            && self.process.is_none()
            && !(last && self.end.is_some());
        // The final commit of a cut log also rewrites its marker.
        if nothing_to_do && !(last && self.log.is_cut()) {
            return;
        }
        let flush = self.log.flush(last);
        let position = LogPosition {
            last_seq: flush.last_seq,
            log_bytes: flush.stored_bytes,
            omitted: flush.gap,
            process: self.process,
        };
        let end = self.end.take().filter(|_| last).map(|end| {
            let mut finish = end.finish;
            if finish.progress.is_none() {
                finish.progress = self.progress.clone();
            }
            let t = Transition::finish(&self.sink.hub, self.job_id, &finish, position)
                .owned_by(self.owner.clone());
            (t, end.claim_for)
        });
        let (end, claim_for) = match end {
            Some((t, claim)) => (Some(t), claim),
            None => (None, None),
        };
        let Flush {
            lines,
            delete,
            marker,
            gap,
            ..
        } = flush;
        let batch = Arc::new(Batch {
            job_id: self.job_id,
            owner: self.owner.clone(),
            sink: self.sink.clone(),
            lines: Arc::new(LogBatch::new(lines)),
            delete,
            marker,
            gap,
            position,
            progress: self.progress.clone().filter(|_| progress_due),
            publish_progress: self.progress.clone().filter(|_| publish_progress),
            end,
            claim_for,
            next: Mutex::new(None),
            refused: Mutex::new(false),
        });
        let mut delay = Duration::from_millis(50);
        loop {
            match self.sink.committer.commit(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(job = self.job_id, error = %e, "cannot store log lines; retrying");
                    if self.sink.shutdown.is_cancelled() && delay > Duration::from_secs(2) {
                        tracing::error!(
                            job = self.job_id,
                            lines = batch.lines.lines.len(),
                            "giving up storing log lines at shutdown"
                        );
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if *batch.refused.locked() {
            tracing::warn!(
                job = self.job_id,
                node = %self.owner.node,
                epoch = self.owner.epoch,
                "the job is no longer this node's (failed by another node meanwhile): stopping its processes, storing nothing more"
            );
            if self.stop.stop(StopReason::Lost) {
                self.sink.metrics.job_fenced();
            }
            self.lost = true;
            self.log.flushed();
            return;
        }
        if let Some(t) = &batch.end {
            self.finished = t.row();
        }
        self.next = batch.next.locked().take();
        self.log.flushed();
        self.process = None;
        if progress_due {
            self.progress_stored = Instant::now();
            self.progress_unstored = false;
        }
        if publish_progress {
            self.progress_published = Instant::now();
            self.progress_unpublished = false;
        }
    }
}

/// The text bytes `m` carries.
fn size(m: &Out) -> usize {
    match m {
        Out::Lines(_, texts, _) => texts.iter().map(String::len).sum(),
        Out::System(text) | Out::Note(text) => text.len(),
        Out::Process { .. } => 0,
    }
}

/// One commit of a job's log: its lines, the cut's deletions and marker,
/// the job's log position, progress, process group and, last, its end.
struct Batch {
    job_id: i64,
    /// Who writes: every write checks the job still runs under it.
    owner: Owner,
    sink: Sink,
    /// The lines; the same batch goes to the subscribers once committed.
    lines: Arc<LogBatch>,
    /// Seqs `[from, to)` to delete (pushed out of a cut log's tail).
    delete: Option<(i64, i64)>,
    /// The cut marker's final text.
    marker: Option<(i64, String)>,
    gap: Option<Gap>,
    position: LogPosition,
    /// Progress to store (not with the end: the end carries it).
    progress: Option<Progress>,
    /// Progress to publish.
    publish_progress: Option<Progress>,
    end: Option<Transition>,
    /// Claim this node's next job after the end.
    claim_for: Option<ClaimFor>,
    next: Mutex<Option<JobRow>>,
    /// The job was not the owner's any more: nothing was written.
    refused: Mutex<bool>,
}

#[async_trait::async_trait]
impl Work for Batch {
    fn job(&self) -> Option<i64> {
        Some(self.job_id)
    }

    async fn apply(&self, txn: &Txn) -> Result<(), sea_orm::DbErr> {
        let id = self.job_id;
        let lines = &self.lines.lines;
        *self.next.locked() = None;
        // N.B.: fencing first. A batch that only appends (with or without
        // the end) is fenced by its own first statement: the one that
        // stores the position, or the end's compare-and-set, which checks
        // the owner too and writes nothing (the lines neither) if it loses.
        // A batch that also rewrites a cut log checks first, in a
        // statement that only writes `updated_at`. On PostgreSQL the row
        // stays locked until the commit either way, so nobody ends the job
        // in between.
        let rewrites = self.delete.is_some() || self.marker.is_some();
        let owned = match &self.end {
            Some(_) if !rewrites => true,
            Some(_) => jobs::hold_if_owned(txn, id, &self.owner).await?,
            None => {
                jobs::store_position(txn, id, &self.owner, &self.position, self.progress.as_ref())
                    .await?
            }
        };
        if !owned {
            *self.refused.locked() = true;
            return Ok(());
        }
        if let Some((from, to)) = self.delete {
            logs::delete_range(txn, id, from, to).await?;
        }
        if let Some((seq, text)) = &self.marker {
            logs::set_text(txn, id, *seq, text).await?;
        }
        // The end (its state, summary line and the log's last position) and
        // the lines in one go.
        match &self.end {
            Some(t) => {
                if !t.apply_with(txn, lines).await? {
                    if rewrites {
                        // Held above, so only a bug gets here: write nothing.
                        return Err(sea_orm::DbErr::Custom(format!(
                            "job {id}: its end was refused although its runner holds it"
                        )));
                    }
                    // No longer this runner's job: nothing was written.
                    *self.refused.locked() = true;
                    return Ok(());
                }
            }
            None => logs::store_batch(txn, id, lines).await?,
        }
        *self.refused.locked() = false;
        let next = match &self.claim_for {
            Some(c) => jobs::claim_in(txn, &c.owner, c.scope()).await?,
            None => None,
        };
        *self.next.locked() = next;
        Ok(())
    }

    fn committed(&self) {
        if *self.refused.locked() {
            return;
        }
        let hub = &self.sink.hub;
        self.sink
            .metrics
            .lines_written(self.lines.lines.len() as u64);
        if !self.lines.lines.is_empty() {
            hub.publish(self.job_id, Update::Lines(self.lines.clone()));
        }
        if let Some(g) = self.gap {
            hub.publish(self.job_id, Update::Gap(g));
        }
        if let Some(p) = &self.publish_progress {
            hub.publish(self.job_id, Update::Progress(Arc::new(p.clone())));
        }
        if let Some(t) = &self.end {
            t.announce();
        }
    }
}
