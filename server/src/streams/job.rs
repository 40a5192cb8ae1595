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

use app::model::event::JobEventKind;
use app::model::job::{Gap, Job};
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::db::{jobs, logs};
use crate::hub::Update;
use crate::streams::{sse, StreamDeps};

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

/// What a live batch of lines `first..=last` means to a subscriber that
/// has sent everything up to `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catch {
    /// Already sent (from the database): drop it.
    Skip,
    /// It continues the stream: send the lines after `sent`.
    Send,
    /// Lines between are missing (it lagged, or they were published while
    /// it replayed): catch up from the database, then rejoin.
    CatchUp,
}

/// N.B.: the rule that keeps a stream exact: never a line twice, never one
/// skipped.
pub fn catch(sent: i64, first: i64, last: i64) -> Catch {
    if last <= sent {
        Catch::Skip
    } else if first > sent + 1 {
        Catch::CatchUp
    } else {
        Catch::Send
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    deps: StreamDeps,
    job_id: i64,
    /// The last seq sent.
    last: i64,
    rx: Option<broadcast::Receiver<Update>>,
    phase: Phase,
    keepalive: tokio::time::Interval,
    /// The opening `state` event, sent first.
    opening: Option<Bytes>,
    /// When the last live chunk was handed out (see [`LINGER`]).
    last_write: Option<tokio::time::Instant>,
}

impl JobStream {
    /// A stream of `job` from `after` (the job is already permission-checked).
    pub fn new(deps: StreamDeps, job: Job, after: i64) -> JobStream {
        let finished = job.state.is_finished();
        // Subscribe before reading anything, so nothing falls between.
        let rx = (!finished).then(|| deps.follow(job.id));
        let mut opening = BytesMut::from(&b"retry: 2000\n\n"[..]);
        opening.extend_from_slice(&sse::event(JobEventKind::State.name(), &job));
        deps.metrics.stream(true);
        JobStream {
            job_id: job.id,
            last: after,
            rx,
            phase: Phase::Replay { ending: finished },
            keepalive: deps.keepalive_timer(),
            opening: Some(opening.freeze()),
            deps,
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
                        _ = self.deps.shutdown.cancelled() => return None,
                    };
                    let mut out = BytesMut::new();
                    self.handle(event, &mut out).await;
                    if let Some(due) = self.last_write.map(|t| t + LINGER) {
                        if matches!(self.phase, Phase::Live) && tokio::time::Instant::now() < due {
                            tokio::select! {
                                _ = tokio::time::sleep_until(due) => {}
                                _ = self.deps.shutdown.cancelled() => return None,
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

    /// Takes one live update; appends what it sends to `out`.
    async fn handle(&mut self, update: Result<Update, RecvError>, out: &mut BytesMut) {
        match update {
            Ok(Update::Lines(batch)) => {
                match catch(self.last, batch.first_seq(), batch.last_seq()) {
                    Catch::Skip => {}
                    Catch::CatchUp => self.phase = Phase::Replay { ending: false },
                    Catch::Send => {
                        out.extend_from_slice(&batch.sse_after(self.last));
                        self.last = batch.last_seq();
                    }
                }
            }
            Ok(Update::State(job)) => {
                if job.state.is_finished() {
                    // Send every remaining line first, then the end.
                    self.phase = Phase::Replay { ending: true };
                } else {
                    out.extend_from_slice(&sse::event(JobEventKind::State.name(), &*job));
                }
            }
            Ok(Update::Progress(p)) => {
                out.extend_from_slice(&sse::event(JobEventKind::Progress.name(), &*p))
            }
            // A live subscriber already has these lines; one that is behind
            // learns of the gap when it catches up from the database.
            Ok(Update::Gap(_)) => {}
            Err(RecvError::Lagged(_)) => self.phase = Phase::Replay { ending: false },
            Err(RecvError::Closed) => {
                // The job finished (or its channel was pruned): look.
                let finished = match Box::pin(jobs::by_id(&self.deps.reader, self.job_id)).await {
                    Ok(Some(row)) => row.state.is_finished(),
                    _ => true,
                };
                if finished {
                    self.rx = None;
                    self.phase = Phase::Replay { ending: true };
                } else {
                    self.rx = Some(self.deps.follow(self.job_id));
                    self.phase = Phase::Replay { ending: false };
                }
            }
        }
    }

    /// The next stored lines after `last`, as one chunk (with a `gap` event
    /// first if lines are missing); `None` when caught up.
    async fn replay_page(&mut self) -> Option<Bytes> {
        let lines = loop {
            match logs::page(&self.deps.reader, self.job_id, self.last, REPLAY_BATCH).await {
                Ok(lines) => break lines,
                Err(e) => {
                    tracing::warn!(job = self.job_id, error = %e, "stream: cannot read the log; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = self.deps.shutdown.cancelled() => { self.phase = Phase::Done; return None; }
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
            out.extend_from_slice(&sse::event(JobEventKind::Gap.name(), &gap));
        }
        self.last = lines.last().map_or(self.last, |l| l.seq);
        out.extend_from_slice(&sse::encode_lines(&lines).bytes);
        Some(out.freeze())
    }

    /// The final `state` and `end` events.
    async fn ending(&mut self) -> Bytes {
        let job = match jobs::by_id(&self.deps.reader, self.job_id).await {
            Ok(Some(row)) => row.to_job(),
            _ => return sse::event_json(JobEventKind::End.name(), "null"),
        };
        let mut out = BytesMut::new();
        out.extend_from_slice(&sse::event(JobEventKind::State.name(), &job));
        out.extend_from_slice(&sse::event(JobEventKind::End.name(), &job));
        out.freeze()
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        self.deps.metrics.stream(false);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use app::model::job::{JobState, LogLine, LogStream};
    use app::model::template::Exclusive;

    use super::*;
    use crate::db::jobs::{Enqueue, JobRow, StateChange};
    use crate::hub::{Hub, LogBatch};

    #[test]
    fn a_batch_is_sent_skipped_or_sends_the_stream_back_to_the_database() {
        assert_eq!(catch(5, 6, 9), Catch::Send, "continues the stream");
        assert_eq!(catch(5, 3, 9), Catch::Send, "overlaps: only 6..=9 go out");
        assert_eq!(catch(5, 2, 5), Catch::Skip, "all sent already");
        assert_eq!(catch(5, 7, 9), Catch::CatchUp, "6 is missing");
        assert_eq!(catch(0, 1, 1), Catch::Send);
    }

    fn lines(seqs: std::ops::RangeInclusive<i64>) -> Vec<LogLine> {
        seqs.map(|seq| LogLine {
            seq,
            stream: LogStream::Stdout,
            ts: crate::db::logs::now_millis(),
            text: format!("line {seq}"),
        })
        .collect()
    }

    /// The seqs (`id:`) and event names a chunk carries, in order.
    fn events(chunk: &Bytes) -> Vec<(String, Option<i64>)> {
        let text = std::str::from_utf8(chunk).unwrap();
        text.split("\n\n")
            .filter_map(|block| {
                let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))
                    .map(|i| i.parse().unwrap());
                Some((name.to_string(), id))
            })
            .collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: sea_orm::DatabaseConnection,
        hub: Hub,
        job: JobRow,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            let db = crate::db::connect(&url).await.unwrap();
            let params = serde_json::Map::new();
            let job = jobs::insert(
                &db,
                Enqueue {
                    template: "t",
                    target: "web-1",
                    params: &params,
                    exclusive: Exclusive::Target,
                    owner_id: 1,
                    owner: "admin",
                    rerun_of: None,
                    retry: jobs::Retry::first(None),
                },
            )
            .await
            .unwrap();
            Fixture {
                _dir: dir,
                db,
                hub: Hub::default(),
                job,
            }
        }

        fn deps(&self) -> StreamDeps {
            StreamDeps {
                reader: self.db.clone(),
                hub: self.hub.clone(),
                metrics: Arc::default(),
                shutdown: tokio_util::sync::CancellationToken::new(),
                keepalive: Duration::from_secs(60),
                tails: None,
            }
        }

        /// Commits lines, as the log writer would (without publishing).
        async fn store(&self, seqs: std::ops::RangeInclusive<i64>) {
            logs::insert_batch(&self.db, self.job.id, &lines(seqs))
                .await
                .unwrap();
        }

        fn publish(&self, seqs: std::ops::RangeInclusive<i64>) {
            let batch = Arc::new(LogBatch::new(lines(seqs)));
            self.hub.publish(self.job.id, Update::Lines(batch));
        }
    }

    /// Reads chunks until `n` more log lines came, or the stream ended.
    async fn read(stream: &mut JobStream, log: &mut Vec<i64>, names: &mut Vec<String>, n: usize) {
        let want = log.len() + n;
        while log.len() < want {
            let next = tokio::time::timeout(Duration::from_secs(5), stream.next_chunk())
                .await
                .expect("the stream went quiet");
            let Some(chunk) = next else { return };
            for (name, id) in events(&chunk) {
                if let Some(id) = id {
                    log.push(id);
                }
                names.push(name);
            }
        }
    }

    #[tokio::test]
    async fn a_stream_catches_up_from_the_database_and_rejoins_live_without_a_gap_or_a_repeat() {
        let f = Fixture::new().await;
        let mut running = f.job.to_job();
        running.state = JobState::Running;
        f.store(1..=5).await;
        let mut stream = JobStream::new(f.deps(), running.clone(), 2);
        let (mut log, mut names) = (Vec::new(), Vec::new());

        // Replay from the database after the resume point.
        read(&mut stream, &mut log, &mut names, 3).await;
        assert_eq!(names[0], JobEventKind::State.name(), "the opening state");
        assert_eq!(log, [3, 4, 5]);

        // A live batch that overlaps what was sent: only the new lines.
        f.store(6..=7).await;
        f.publish(4..=7);
        read(&mut stream, &mut log, &mut names, 2).await;
        assert_eq!(log[3..], [6, 7]);

        // A live batch past a hole: back to the database, then live again.
        f.store(8..=11).await;
        f.publish(10..=11);
        read(&mut stream, &mut log, &mut names, 4).await;
        assert_eq!(log[5..], [8, 9, 10, 11]);
        f.publish(8..=9);
        f.store(12..=12).await;
        f.publish(12..=12);
        read(&mut stream, &mut log, &mut names, 1).await;
        assert_eq!(log[9..], [12], "the stale batch was dropped");

        // Far behind the channel (it lagged): the database has everything.
        for seq in 13..=80 {
            f.store(seq..=seq).await;
            f.publish(seq..=seq);
        }
        read(&mut stream, &mut log, &mut names, 68).await;

        // The end: remaining lines first, then `state` and `end`.
        f.store(81..=82).await;
        let done = jobs::change_state(
            &f.db,
            StateChange {
                id: f.job.id,
                from: &[JobState::Queued],
                to: JobState::Succeeded,
                set: Vec::new(),
                lines: 0,
                bytes: 0,
                position: None,
                dispatch: None,
                owner: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
        f.hub.job_changed(done.to_job());
        read(&mut stream, &mut log, &mut names, usize::MAX / 2).await;
        assert_eq!(
            log,
            (3..=82).collect::<Vec<_>>(),
            "every line once, in order"
        );
        let tail: Vec<&str> = names.iter().rev().take(2).map(String::as_str).collect();
        assert_eq!(tail, [JobEventKind::End.name(), JobEventKind::State.name()]);
    }
}
