//! `GET /api/jobs/{id}/events`: a job's log and state over SSE.
//!
//! The stream first subscribes to the hub, then replays stored lines with
//! `seq > after` from the database in batches, then follows the hub live.
//! N.B.: it keeps the last seq it sent and never sends a line twice or skips
//! one: a live batch that starts past `last + 1` (it lagged, or lines were
//! published while it replayed) sends it back to the database to catch up,
//! and a batch it already sent is dropped. Lines missing from the database
//! (cut from the middle of an over-long log) are announced with a `gap`
//! event. When the job has finished and every line is out, it sends the
//! final `state`, then `end`, and closes.

use std::time::Duration;

use app::model::job::{Gap, Job};
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::db::{jobs, logs};
use crate::hub::JobEvent;
use crate::state::AppState;
use crate::streams::sse;

/// Lines per replay query (one chunk on the wire).
const REPLAY_BATCH: u64 = 2000;
/// Live events coalesced into one write, at most (and at most this many bytes).
const COALESCE: usize = 64;
const COALESCE_BYTES: usize = 256 * 1024;
/// A live subscriber writes at most once per this interval: an event that
/// comes sooner after the last write waits out the rest of it, and goes out
/// with whatever else arrived meanwhile. A quiet job's line goes out at
/// once; a busy job's lines reach 1,000 subscribers in ~40 writes/s each
/// instead of one write per log batch (the fan-out benchmark's lever).
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

enum Phase {
    /// Catching up from the database; `ending`: the job has finished.
    Replay {
        ending: bool,
    },
    Live,
    Done,
}

/// One subscriber's stream state.
pub struct JobStream {
    state: AppState,
    job_id: i64,
    /// The last seq sent.
    last: i64,
    rx: Option<broadcast::Receiver<JobEvent>>,
    phase: Phase,
    keepalive: tokio::time::Interval,
    /// The opening `state` event, sent first.
    opening: Option<Bytes>,
    /// When the last live chunk was handed out (see [`LINGER`]).
    last_write: Option<tokio::time::Instant>,
}

impl JobStream {
    /// A stream of `job` from `after` (the job is already permission-checked).
    pub fn new(state: AppState, job: Job, after: i64) -> JobStream {
        let finished = job.state.is_finished();
        // Subscribe before reading anything, so nothing falls between.
        let rx = (!finished).then(|| state.hub.subscribe(job.id));
        let every = state.config.server.stream_keepalive;
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut opening = BytesMut::from(&b"retry: 2000\n\n"[..]);
        opening.extend_from_slice(&sse::event("state", &job));
        state.metrics.stream(true);
        JobStream {
            job_id: job.id,
            last: after,
            rx,
            phase: Phase::Replay { ending: finished },
            keepalive,
            opening: Some(opening.freeze()),
            state,
            last_write: None,
        }
    }

    /// The next chunk to write, or `None` when the stream is over.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::Replay { ending } => {
                    // N.B.: the database futures are boxed, here and below:
                    // inline, they would make every idle stream's future as
                    // large as the largest of them (kilobytes) for its life.
                    if let Some(chunk) = Box::pin(self.replay_page()).await {
                        return Some(chunk);
                    }
                    if ending {
                        self.phase = Phase::Done;
                        return Some(Box::pin(self.ending()).await);
                    }
                    self.phase = Phase::Live;
                }
                Phase::Live => {
                    let Some(rx) = self.rx.as_mut() else {
                        self.phase = Phase::Replay { ending: true };
                        continue;
                    };
                    let event = tokio::select! {
                        ev = rx.recv() => ev,
                        _ = self.keepalive.tick() => return Some(sse::keepalive()),
                        _ = self.state.shutdown.cancelled() => return None,
                    };
                    let mut out = BytesMut::new();
                    self.handle(event, &mut out).await;
                    if let Some(due) = self.last_write.map(|t| t + LINGER) {
                        if matches!(self.phase, Phase::Live) && tokio::time::Instant::now() < due {
                            tokio::select! {
                                _ = tokio::time::sleep_until(due) => {}
                                _ = self.state.shutdown.cancelled() => return None,
                            }
                        }
                    }
                    // Coalesce what else is already waiting into one write.
                    for _ in 0..COALESCE {
                        if !matches!(self.phase, Phase::Live) || out.len() >= COALESCE_BYTES {
                            break;
                        }
                        let Some(rx) = self.rx.as_mut() else { break };
                        match rx.try_recv() {
                            Ok(ev) => self.handle(Ok(ev), &mut out).await,
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Lagged(n)) => {
                                self.handle(Err(RecvError::Lagged(n)), &mut out).await
                            }
                            Err(TryRecvError::Closed) => {
                                self.handle(Err(RecvError::Closed), &mut out).await
                            }
                        }
                    }
                    if !out.is_empty() {
                        self.last_write = Some(tokio::time::Instant::now());
                        return Some(out.freeze());
                    }
                }
            }
        }
    }

    /// Takes one live event; appends what it sends to `out`.
    async fn handle(&mut self, event: Result<JobEvent, RecvError>, out: &mut BytesMut) {
        match event {
            Ok(JobEvent::Lines(batch)) => {
                if batch.last_seq() <= self.last {
                    // Already sent (from the database).
                } else if batch.first_seq() > self.last + 1 {
                    // Something is missing: the database has it.
                    self.phase = Phase::Replay { ending: false };
                } else {
                    out.extend_from_slice(&batch.sse_after(self.last));
                    self.last = batch.last_seq();
                }
            }
            Ok(JobEvent::State(job)) => {
                if job.state.is_finished() {
                    // Send every remaining line first, then the end.
                    self.phase = Phase::Replay { ending: true };
                } else {
                    out.extend_from_slice(&sse::event("state", &*job));
                }
            }
            Ok(JobEvent::Progress(p)) => out.extend_from_slice(&sse::event("progress", &*p)),
            // A live subscriber already has these lines; one that is behind
            // learns of the gap when it catches up from the database.
            Ok(JobEvent::Gap(_)) => {}
            Err(RecvError::Lagged(_)) => self.phase = Phase::Replay { ending: false },
            Err(RecvError::Closed) => {
                // The job finished (or its channel was pruned): look.
                let finished = match Box::pin(jobs::by_id(&self.state.reader, self.job_id)).await {
                    Ok(Some(row)) => row.state().is_finished(),
                    _ => true,
                };
                if finished {
                    self.rx = None;
                    self.phase = Phase::Replay { ending: true };
                } else {
                    self.rx = Some(self.state.hub.subscribe(self.job_id));
                    self.phase = Phase::Replay { ending: false };
                }
            }
        }
    }

    /// The next stored lines after `last`, as one chunk (with a `gap` event
    /// first if lines are missing); `None` when caught up.
    async fn replay_page(&mut self) -> Option<Bytes> {
        let lines = loop {
            match logs::page(&self.state.reader, self.job_id, self.last, REPLAY_BATCH).await {
                Ok(lines) => break lines,
                Err(e) => {
                    tracing::warn!(job = self.job_id, error = %e, "stream: cannot read the log; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = self.state.shutdown.cancelled() => { self.phase = Phase::Done; return None; }
                    }
                }
            }
        };
        let first = lines.first()?.seq;
        let mut out = BytesMut::new();
        if first > self.last + 1 {
            let gap = Gap {
                from: self.last + 1,
                to: first - 1,
                bytes: 0,
            };
            out.extend_from_slice(&sse::event("gap", &gap));
        }
        self.last = lines.last().map_or(self.last, |l| l.seq);
        out.extend_from_slice(&sse::encode_lines(&lines).bytes);
        Some(out.freeze())
    }

    /// The final `state` and `end` events.
    async fn ending(&mut self) -> Bytes {
        let job = match jobs::by_id(&self.state.reader, self.job_id).await {
            Ok(Some(row)) => row.to_job(),
            _ => return Bytes::from_static(b"event: end\ndata: null\n\n"),
        };
        let mut out = BytesMut::new();
        out.extend_from_slice(&sse::event("state", &job));
        out.extend_from_slice(&sse::event("end", &job));
        out.freeze()
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        self.state.metrics.stream(false);
    }
}
