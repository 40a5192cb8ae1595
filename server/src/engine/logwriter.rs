//! The log pipeline of one running job. Readers (stdout, stderr) and the
//! runner (system lines) send to one writer task, which
//! - assigns every line the next `seq` (N.B.: the one place that does, while
//!   a job runs), in arrival order, so seqs are 1, 2, 3, … with no gap;
//! - commits lines to `job_logs` in batches (1,000 lines, or 5 ms after the
//!   first line of a batch, whichever comes first) in one transaction with
//!   the job's `last_seq`;
//! - then, and only then, publishes the batch to the hub;
//! - keeps the log within `max_log_bytes`: past the cap the head stays, a
//!   system line marks the cut, and only the last `tail_lines` lines after it
//!   are kept (older ones are deleted as new ones arrive); the job row records
//!   the omitted range, and subscribers are told of the gap;
//! - parses progress, stored on the job at most once a second and published
//!   at most four times a second;
//! - stores the job's process group with its first batch (N.B.: so a job
//!   that ends at once costs one commit; a crash in those few milliseconds
//!   leaves a group that recovery cannot find, as one between the spawn and
//!   any write would).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::job::{human_bytes, Gap, LogLine, LogStream, Progress};
use app::model::template::ProgressKind;
use chrono::{DateTime, Utc};

use sea_orm::DatabaseTransaction;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::db::commit::Work;
use crate::db::jobs::{self, Finish, JobRow};
use crate::db::logs;
use crate::engine::progress;
use crate::hub::{JobEvent, LogBatch};
use crate::state::AppState;
use crate::sync::Locked;

/// Lines per committed batch, at most.
const BATCH_LINES: usize = 1000;
/// How long a batch waits for more lines after its first.
const BATCH_WAIT: Duration = Duration::from_millis(5);
/// Chunks the channel holds before readers wait (bounded memory).
const CHANNEL: usize = 256;
const PROGRESS_STORE_EVERY: Duration = Duration::from_secs(1);
const PROGRESS_PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// What the writer receives.
pub enum Msg {
    /// Lines read from one stream at `ts`.
    Lines(LogStream, Vec<String>, DateTime<Utc>),
    /// A line from opsdeck itself; committed at once.
    System(String),
    /// A line from opsdeck itself that may wait for the batch (the opening
    /// `running on …` line: a job that ends at once then costs one commit).
    Note(String),
    /// The job's process group and its leader's start time, stored with
    /// the next batch (within `BATCH_WAIT`).
    Process { pgid: i32, start: i64 },
    /// How the job ended: stored with the last batch, in its transaction
    /// (with the claim of the next job for the node, if given).
    Finish(Finish, Option<String>),
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
    pub progress: Option<Progress>,
    /// The finished row, if the finish was stored (the job was still
    /// running or cancelling).
    pub finished: Option<JobRow>,
    /// The job claimed next, with the end.
    pub next: Option<JobRow>,
}

/// Handle to a running writer.
pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<Summary>,
}

impl LogWriter {
    /// Starts the writer of `job_id`, whose last stored seq is `last_seq`.
    pub fn start(state: AppState, job_id: i64, last_seq: i64, limits: Limits) -> LogWriter {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let writer = Writer {
            state,
            job_id,
            limits,
            next_seq: last_seq + 1,
            bytes: 0,
            pending: Vec::new(),
            cut: None,
            progress: None,
            progress_unstored: false,
            progress_unpublished: false,
            progress_stored: Instant::now() - PROGRESS_STORE_EVERY,
            progress_published: Instant::now() - PROGRESS_PUBLISH_EVERY,
            process: None,
            finish: None,
            claim_for: None,
            finished: None,
            next: None,
        };
        let task = tokio::spawn(writer.run(rx));
        LogWriter { tx, task }
    }

    /// A sender for a reader.
    pub fn sender(&self) -> mpsc::Sender<Msg> {
        self.tx.clone()
    }

    /// Writes a system line.
    pub async fn system(&self, text: impl Into<String>) {
        let _ = self.tx.send(Msg::System(text.into())).await;
    }

    /// Writes a system line with the next batch.
    pub async fn note(&self, text: impl Into<String>) {
        let _ = self.tx.send(Msg::Note(text.into())).await;
    }

    /// Records the job's process group with the next batch.
    pub async fn process(&self, pgid: i32, start: i64) {
        let _ = self.tx.send(Msg::Process { pgid, start }).await;
    }

    /// Commits everything still pending with the job's end (its progress
    /// filled in from the log) and stops; with `claim_for` (a node), claims
    /// that node's next job in the same transaction.
    pub async fn finish(self, f: Finish, claim_for: Option<String>) -> Summary {
        let _ = self.tx.send(Msg::Finish(f, claim_for)).await;
        drop(self.tx);
        self.task.await.unwrap_or_default()
    }
}

/// The cut made when the log outgrew its cap.
struct Cut {
    /// The marker line's seq.
    marker: i64,
    /// Seqs below this (and above the marker) are omitted.
    tail_start: i64,
    /// Deleted from the database up to here (exclusive).
    deleted_to: i64,
    /// (seq, bytes) of the lines kept after the marker, oldest first.
    tail: VecDeque<(i64, u64)>,
    tail_bytes: u64,
    omitted_bytes: u64,
    omitted_lines: u64,
}

struct Writer {
    state: AppState,
    job_id: i64,
    limits: Limits,
    next_seq: i64,
    /// Bytes stored (head, marker and tail).
    bytes: u64,
    pending: Vec<LogLine>,
    cut: Option<Cut>,
    progress: Option<Progress>,
    progress_unstored: bool,
    progress_unpublished: bool,
    progress_stored: Instant,
    progress_published: Instant,
    /// A process group not stored yet.
    process: Option<(i32, i64)>,
    /// The job's end, stored with the last batch.
    finish: Option<Finish>,
    claim_for: Option<String>,
    finished: Option<JobRow>,
    next: Option<JobRow>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Summary {
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
            let mut urgent = self.accept(first);
            let deadline = Instant::now() + BATCH_WAIT;
            while self.pending.len() < BATCH_LINES && !urgent {
                match rx.try_recv() {
                    Ok(m) => urgent |= self.accept(m),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(m)) => urgent |= self.accept(m),
                            Ok(None) => {
                                closed = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            if !closed {
                self.commit(false).await;
            }
        }
        // Whatever is pending goes with the end: one commit.
        self.commit(true).await;
        Summary {
            last_seq: self.next_seq - 1,
            progress: self.progress.clone(),
            finished: self.finished.take(),
            next: self.next.take(),
        }
    }

    /// Takes a message; true if it should be committed at once.
    fn accept(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Lines(stream, texts, ts) => {
                for text in texts {
                    if self.limits.progress != ProgressKind::None {
                        if let Some(p) = progress::parse(self.limits.progress, &text) {
                            self.progress = Some(p);
                            self.progress_unstored = true;
                            self.progress_unpublished = true;
                        }
                    }
                    self.push(stream, text, ts);
                }
                false
            }
            Msg::System(text) => {
                self.push(LogStream::System, text, logs::now_millis());
                true
            }
            Msg::Note(text) => {
                self.push(LogStream::System, text, logs::now_millis());
                false
            }
            Msg::Process { pgid, start } => {
                self.process = Some((pgid, start));
                false
            }
            Msg::Finish(f, claim_for) => {
                self.finish = Some(f);
                self.claim_for = claim_for;
                false
            }
        }
    }

    fn push(&mut self, stream: LogStream, text: String, ts: DateTime<Utc>) {
        let len = text.len() as u64;
        if self.cut.is_none() && self.bytes + len > self.limits.max_log_bytes {
            let marker = self.next_seq;
            self.next_seq += 1;
            let note = self.marker_text(0, 0);
            self.bytes += note.len() as u64;
            self.pending.push(LogLine {
                seq: marker,
                stream: LogStream::System,
                ts,
                text: note,
            });
            self.cut = Some(Cut {
                marker,
                tail_start: marker + 1,
                deleted_to: marker + 1,
                tail: VecDeque::new(),
                tail_bytes: 0,
                omitted_bytes: 0,
                omitted_lines: 0,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(cut) = &mut self.cut {
            cut.tail.push_back((seq, len));
            cut.tail_bytes += len;
            // Keep the last `tail_lines`, and never more than the cap again.
            while cut.tail.len() > self.limits.tail_lines.max(1)
                || cut.tail_bytes > self.limits.max_log_bytes
            {
                let Some((old_seq, old_len)) = cut.tail.pop_front() else {
                    break;
                };
                cut.tail_bytes -= old_len;
                cut.omitted_bytes += old_len;
                cut.omitted_lines += 1;
                cut.tail_start = old_seq + 1;
            }
        } else {
            self.bytes += len;
        }
        self.pending.push(LogLine {
            seq,
            stream,
            ts,
            text,
        });
    }

    fn marker_text(&self, lines: u64, bytes: u64) -> String {
        let cap = human_bytes(self.limits.max_log_bytes);
        if lines == 0 {
            format!(
                "output reached the log limit of {cap} (max_log_bytes): from here only the last {} lines are kept",
                self.limits.tail_lines
            )
        } else {
            format!(
                "output reached the log limit of {cap} (max_log_bytes): {lines} lines ({}) omitted here; the last {} lines follow",
                human_bytes(bytes),
                self.limits.tail_lines
            )
        }
    }

    /// Commits pending lines (and the cut's deletions), then publishes them.
    /// A failed commit is retried: a line is never dropped.
    async fn commit(&mut self, last: bool) {
        let progress_due = self.progress_unstored
            && (last || self.progress_stored.elapsed() >= PROGRESS_STORE_EVERY);
        let publish_progress = self.progress_unpublished
            && (last || self.progress_published.elapsed() >= PROGRESS_PUBLISH_EVERY);
        let nothing_to_do = self.pending.is_empty()
            && !progress_due
            && !publish_progress
            && self.process.is_none()
            && !(last && self.finish.is_some());
        // The final commit of a cut log also rewrites its marker.
        if nothing_to_do && !(last && self.cut.is_some()) {
            return;
        }
        // Lines already pushed out of the tail need not be written at all.
        if let Some(cut) = &self.cut {
            let (marker, tail_start) = (cut.marker, cut.tail_start);
            self.pending
                .retain(|l| l.seq <= marker || l.seq >= tail_start);
        }
        let gap = self
            .cut
            .as_ref()
            .filter(|c| c.omitted_lines > 0)
            .map(|c| Gap {
                from: c.marker + 1,
                to: c.tail_start - 1,
                bytes: c.omitted_bytes as i64,
            });
        let stored = self.bytes + self.cut.as_ref().map_or(0, |c| c.tail_bytes);
        let last_seq = self.next_seq - 1;
        let final_marker = match (&self.cut, last) {
            (Some(c), true) if c.omitted_lines > 0 => {
                Some((c.marker, self.marker_text(c.omitted_lines, c.omitted_bytes)))
            }
            _ => None,
        };
        let finish = if last {
            self.finish.take().map(|mut f| {
                if f.progress.is_none() {
                    f.progress = self.progress.clone();
                }
                f
            })
        } else {
            None
        };
        let batch = Arc::new(Batch {
            job_id: self.job_id,
            lines: std::mem::take(&mut self.pending),
            delete: self
                .cut
                .as_ref()
                .filter(|c| c.tail_start > c.deleted_to)
                .map(|c| (c.deleted_to, c.tail_start)),
            marker: final_marker,
            last_seq,
            stored: stored as i64,
            gap,
            progress: self.progress.clone().filter(|_| progress_due),
            process: self.process,
            claim_for: if last { self.claim_for.take() } else { None },
            finish,
            finished: Mutex::new(None),
            next: Mutex::new(None),
        });
        let mut delay = Duration::from_millis(50);
        loop {
            match self.state.committer.commit(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(job = self.job_id, error = %e, "cannot store log lines; retrying");
                    if self.state.shutdown.is_cancelled() && delay > Duration::from_secs(2) {
                        tracing::error!(
                            job = self.job_id,
                            lines = batch.lines.len(),
                            "giving up storing log lines at shutdown"
                        );
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Some(row) = batch.finished.locked().take() {
            self.finished = Some(row);
        }
        self.next = batch.next.locked().take();
        // The committer let go of the batch before answering: the lines
        // move on to the subscribers without a copy.
        let lines = match Arc::try_unwrap(batch) {
            Ok(b) => b.lines,
            Err(shared) => shared.lines.clone(),
        };
        if let Some(cut) = &mut self.cut {
            cut.deleted_to = cut.tail_start;
        }
        self.process = None;
        let count = lines.len() as u64;
        self.state.metrics.lines_written(count);
        let hub = &self.state.hub;
        if !lines.is_empty() {
            hub.publish(self.job_id, JobEvent::Lines(Arc::new(LogBatch::new(lines))));
        }
        if let Some(g) = gap {
            hub.publish(self.job_id, JobEvent::Gap(g));
        }
        if progress_due {
            self.progress_stored = Instant::now();
            self.progress_unstored = false;
        }
        if publish_progress {
            if let Some(p) = &self.progress {
                hub.publish(self.job_id, JobEvent::Progress(Arc::new(p.clone())));
            }
            self.progress_published = Instant::now();
            self.progress_unpublished = false;
        }
    }
}

/// One commit of a job's log: its lines, the cut's deletions and marker,
/// the job's log position, progress, process group and, last, its end.
struct Batch {
    job_id: i64,
    lines: Vec<LogLine>,
    /// Seqs `[from, to)` to delete (pushed out of a cut log's tail).
    delete: Option<(i64, i64)>,
    /// The cut marker's final text.
    marker: Option<(i64, String)>,
    last_seq: i64,
    stored: i64,
    gap: Option<Gap>,
    progress: Option<Progress>,
    process: Option<(i32, i64)>,
    finish: Option<Finish>,
    /// Claim this node's next job after the finish.
    claim_for: Option<String>,
    /// The finished row, if the finish found the job running or cancelling.
    finished: Mutex<Option<JobRow>>,
    next: Mutex<Option<JobRow>>,
}

#[async_trait::async_trait]
impl Work for Batch {
    async fn apply(&self, txn: &DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
        let id = self.job_id;
        logs::insert_batch(txn, id, &self.lines).await?;
        if let Some((from, to)) = self.delete {
            logs::delete_range(txn, id, from, to).await?;
        }
        if let Some((seq, text)) = &self.marker {
            logs::set_text(txn, id, *seq, text).await?;
        }
        let position = jobs::LogPosition {
            last_seq: self.last_seq,
            log_bytes: self.stored,
            omitted: self.gap,
            process: self.process,
        };
        if let Some(p) = self.progress.as_ref().filter(|_| self.finish.is_none()) {
            jobs::set_progress(txn, id, p).await?;
        }
        // The end and the log's last position in one statement (the end
        // carries the progress too); if the job was no longer running, only
        // the position.
        let finished = match &self.finish {
            Some(f) => jobs::finish_with_log(txn, id, f, &position).await?,
            None => None,
        };
        if finished.is_none() {
            jobs::set_log_position(txn, id, &position).await?;
        }
        *self.finished.locked() = finished;
        let next = match &self.claim_for {
            Some(node) => jobs::claim_in(txn, node).await?,
            None => None,
        };
        *self.next.locked() = next;
        Ok(())
    }
}
