//! `GET /api/agent`: one agent's WebSocket. The agent authenticates with
//! its token (`Authorization: Bearer oda_…`), says `hello` (its protocol,
//! version, hostname and the jobs it holds), and the server answers
//! `welcome` and where each held job stands in the database. Then, until
//! either side hangs up:
//!
//! - `log` batches are stored like a local log writer's (lines after the
//!   job's `last_seq` only, so a batch sent twice is stored once), each
//!   through `db::commit`, and acknowledged with `ack` once committed;
//! - `job.started` records the process group; `job.finished` ends the job
//!   through its one transition once every line is stored (else the `ack`
//!   tells the agent from where to send again);
//! - every message about a job must name this agent's current dispatch of
//!   it: anything else is refused, audited (`agent.refused`), and the agent
//!   told to forget the job;
//! - heartbeats both ways; a revoked token or a silent agent closes the
//!   connection.
//!
//! N.B.: nothing about a job is lost when the connection drops: the job
//! stays `running` (its page says the agent is disconnected), the agent
//! keeps every unacknowledged batch, and sends them again when it is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::backend::Caller;
use app::error::AppError;
use app::model::agent::{AgentMsg, Ended, HeldJob, LogBatch, ServerMsg, PROTOCOLS};
use app::model::job::{JobState, LogLine, Progress};
use app::model::template::ProgressKind;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Utc;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use sea_orm::DbErr;
use tokio::time::Instant;

use super::{dispatch, LinkInfo};
use crate::db::commit::Work;
use crate::db::jobs::{self, Finish, JobRow, LogPosition};
use crate::db::txn::Txn;
use crate::db::{agents::Agent, logs};
use crate::engine::progress;
use crate::engine::transition::Transition;
use crate::http::error::ApiError;
use crate::hub::{Hub, LogBatch as HubBatch, Update};
use crate::metrics::{Limit, Metrics};
use crate::service::agents as service;
use crate::state::AppState;
use crate::sync::Locked;

/// Sends the replies to a message, or closes the connection when the
/// message broke it; whether the connection goes on.
async fn reply(socket: &mut WebSocket, replies: Result<Vec<ServerMsg>, Broken>) -> bool {
    match replies {
        Ok(replies) => {
            for reply in replies {
                if !send(socket, &reply).await {
                    return false;
                }
            }
            true
        }
        Err(Broken(reason)) => {
            close(socket, CLOSE_PROTOCOL, &reason).await;
            false
        }
    }
}

/// How long a new connection may take to say hello.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// Progress is published at most this often per job.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// WebSocket close code: the agent broke the protocol.
const CLOSE_PROTOCOL: u16 = 1002;
/// WebSocket close code: refused by policy (revoked, replaced, version).
const CLOSE_POLICY: u16 = 1008;

/// `GET /api/agent`.
pub async fn open(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let agent = service::authenticate(&s, &headers).await?;
    let max = s.config.agents.max_connections_per_token;
    let Some(counted) = s.agents.admit(&agent.name, max) else {
        s.metrics.refusals().count(Limit::AgentConnections);
        tracing::warn!(agent = %agent.name, max, "agent connection refused: its token already holds the most connections allowed");
        return Err(AppError::LimitReached(format!(
            "agent `{}` already holds {max} open connections ([agents].max_connections_per_token): is its token used on two hosts?",
            agent.name
        ))
        .into());
    };
    let upgrade = upgrade
        .map_err(|e| AppError::field("upgrade", format!("connect with a WebSocket ({e})")))?;
    let ip = c.ip.clone();
    Ok(upgrade
        .on_upgrade(move |socket| async move {
            serve(s, agent, ip, socket).await;
            drop(counted);
        })
        .into_response())
}

async fn send(socket: &mut WebSocket, msg: &ServerMsg) -> bool {
    let text = serde_json::to_string(msg).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let msg = ServerMsg::Refused {
        reason: reason.to_string(),
    };
    send(socket, &msg).await;
    let frame = CloseFrame {
        code,
        reason: reason.chars().take(100).collect::<String>().into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The next message from the agent: `None` when the socket closed,
/// `Err` for a frame that is not one.
async fn recv(socket: &mut WebSocket) -> Option<Result<AgentMsg, String>> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(&text).map_err(|e| e.to_string()))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// One agent's connection, from `hello` to its end.
async fn serve(state: AppState, agent: Agent, ip: Option<String>, mut socket: WebSocket) {
    let name = agent.name.clone();
    let hello = match tokio::time::timeout(HELLO_WAIT, recv(&mut socket)).await {
        Ok(Some(Ok(hello))) => hello,
        Ok(Some(Err(e))) => {
            close(
                &mut socket,
                CLOSE_PROTOCOL,
                &format!("not a protocol message: {e}"),
            )
            .await;
            return;
        }
        _ => return,
    };
    let AgentMsg::Hello {
        protocol,
        version,
        hostname,
        jobs: held,
    } = hello
    else {
        close(
            &mut socket,
            CLOSE_PROTOCOL,
            "the first message must be `hello`",
        )
        .await;
        return;
    };
    if !PROTOCOLS.contains(&protocol) {
        let reason = format!(
            "this server speaks agent protocol {} and not {protocol}: upgrade the agent or the server so both speak one",
            PROTOCOLS
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        service::refused(&state, &name, ip.as_deref(), None, &reason).await;
        close(&mut socket, CLOSE_POLICY, &reason).await;
        return;
    }
    let now = Utc::now();
    let mut attached = state.agents.attach(
        &name,
        LinkInfo {
            protocol,
            hostname: hostname.clone(),
            version: version.clone(),
            connected_at: now,
        },
    );
    tracing::info!(agent = %name, %hostname, %version, jobs = held.len(), "agent connected");
    if let Err(e) = service::connected(&state, &name, &hostname, &version).await {
        tracing::error!(agent = %name, error = %e, "cannot record the agent's connection");
    }
    let heartbeat = state.config.agents.heartbeat_interval;
    let welcome = ServerMsg::Welcome {
        agent: name.clone(),
        // The version spoken on this connection: the agent's own.
        protocol,
        heartbeat_secs: heartbeat.as_secs().max(1),
    };
    let mut link = Link {
        state: state.clone(),
        name: name.clone(),
        ip,
        progress_at: HashMap::new(),
        kinds: HashMap::new(),
        handed: HashMap::new(),
    };
    if send(&mut socket, &welcome).await {
        match link.reconcile(&held).await {
            Ok(msgs) => {
                for msg in msgs {
                    if !send(&mut socket, &msg).await {
                        break;
                    }
                }
            }
            Err(e) => tracing::error!(agent = %name, error = %e, "cannot look up the agent's jobs"),
        }
        state.engine.wake();
        link.run(&mut socket, &mut attached).await;
    }
    state.agents.detach(&name, attached.id);
    if let Err(e) = service::disconnected(&state, &name).await {
        tracing::error!(agent = %name, error = %e, "cannot record the agent's disconnection");
    }
    tracing::info!(agent = %name, "agent disconnected");
}

/// What is known of one connection.
struct Link {
    state: AppState,
    name: String,
    ip: Option<String>,
    /// When each job's progress was last published.
    progress_at: HashMap<i64, Instant>,
    /// Each job's template's progress format, read once per job.
    kinds: HashMap<i64, ProgressKind>,
    /// Per job and dispatch, the `last_seq` of the last batch handed to
    /// the committer from this connection: the next batch is stored only
    /// after it.
    handed: HashMap<(i64, i64), i64>,
}

/// A `log` batch handed to the committer, and its answer.
type InFlight = futures::future::BoxFuture<'static, (Arc<Batch>, Result<(), DbErr>)>;

/// Log batches whose commit the connection does not wait for before it
/// reads on, at most.
const PIPELINE: usize = 4;

/// What followed a log batch on the socket, already read.
enum Next {
    Msg(AgentMsg),
    Bad(String),
    Closed,
}

/// Lines one commit takes at most when an agent's batches queue up.
const MERGE_LINES: usize = 20_000;

/// A batch that only adds lines (no deletion, cut marker or gap).
fn plain(b: &LogBatch) -> bool {
    b.delete.is_none() && b.marker.is_none() && b.gap.is_none()
}

/// While the server is behind a fast job, the agent's batches queue on the
/// socket: the ones already there for the same job and dispatch join
/// `batch`, so one commit stores them (the local log writer gets the same
/// from group commit). Only plain batches whose lines all come after
/// `batch`'s join; the first message that cannot join is returned, to be
/// handled next. Nothing waits here: `None` when no message is ready.
fn take_queued(
    socket: &mut WebSocket,
    job_id: i64,
    dispatch: i64,
    batch: &mut LogBatch,
) -> Option<Next> {
    if !plain(batch) {
        return None;
    }
    while batch.lines.len() < MERGE_LINES {
        // `recv` is cancel-safe: a message is either returned or left.
        let msg = match recv(socket).now_or_never()? {
            None => return Some(Next::Closed),
            Some(Err(e)) => return Some(Next::Bad(e)),
            Some(Ok(msg)) => msg,
        };
        match msg {
            AgentMsg::Log {
                job_id: j,
                dispatch: d,
                batch: b,
            } if j == job_id
                && d == dispatch
                && plain(&b)
                && b.last_seq >= batch.last_seq
                && b.lines.first().is_none_or(|l| l.seq > batch.last_seq) =>
            {
                batch.lines.extend(b.lines);
                batch.last_seq = b.last_seq;
                batch.stored_bytes = b.stored_bytes;
            }
            other => return Some(Next::Msg(other)),
        }
    }
    None
}

impl Link {
    /// The messages that bring a reconnecting agent and the database into
    /// line: for each job it holds, where its log stands here (`ack`), a
    /// cancel that came while it was away, or `forget` for one the server no
    /// longer expects from it; for each job dispatched to it that it does
    /// not hold, the `command.run` again if it never started (else the job
    /// is failed: the agent lost it).
    async fn reconcile(&mut self, held: &[HeldJob]) -> Result<Vec<ServerMsg>, DbErr> {
        let state = &self.state;
        let active = jobs::active_on_agent(&state.db, &self.name).await?;
        let mut out = Vec::new();
        for h in held {
            match active.iter().find(|r| r.id == h.job_id && r.dispatch == h.dispatch) {
                Some(row) => {
                    out.push(ServerMsg::Ack {
                        job_id: row.id,
                        dispatch: row.dispatch,
                        seq: row.last_seq,
                        done: false,
                    });
                    if row.state == JobState::Cancelling {
                        out.push(ServerMsg::Cancel {
                            job_id: row.id,
                            dispatch: row.dispatch,
                            by: row.cancel_requested_by.clone().unwrap_or_default(),
                        });
                    }
                }
                None => out.push(ServerMsg::Forget {
                    job_id: h.job_id,
                    dispatch: h.dispatch,
                    reason: "the server does not expect this job from this agent any more (it ended, or was failed meanwhile)".into(),
                }),
            }
        }
        for row in &active {
            if held.iter().any(|h| h.job_id == row.id) {
                continue;
            }
            if row.pgid.is_none() {
                match dispatch::run_command(&state.config, row) {
                    Ok(cmd) => out.push(ServerMsg::Run(cmd)),
                    Err(e) => dispatch::fail_unrunnable(state.engine.sink(), row, e).await,
                }
            } else {
                let line = format!(
                    "interrupted: agent `{}` restarted and no longer holds the job (its spool was lost)",
                    self.name
                );
                let t = Transition::fail(&state.hub, row, line.clone(), line, true)
                    .because(app::model::retry::Failure::AgentLost)
                    .for_dispatch(row.dispatch);
                let t = Arc::new(t);
                state.committer.commit(t.clone()).await?;
                if t.row().is_some() {
                    state.engine.sink().metrics.job_finished(JobState::Failed);
                }
            }
        }
        Ok(out)
    }

    async fn run(&mut self, socket: &mut WebSocket, attached: &mut super::Attached) {
        let cfg = self.state.config.agents.clone();
        let mut tick = tokio::time::interval(cfg.heartbeat_interval);
        tick.tick().await;
        let mut heard = Instant::now();
        let shutdown = self.state.shutdown.clone();
        // N.B.: the log batches read from the socket are handed to the
        // committer without waiting for their commit, so reading and
        // decoding the next ones overlaps it; their acks go out in order as
        // the commits complete. Any other message first waits for them.
        let mut inflight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        loop {
            tokio::select! {
                _ = attached.close.cancelled() => {
                    close(socket, CLOSE_POLICY, "the server closed this connection: the token was revoked, or a newer connection of this agent took over").await;
                    return;
                }
                _ = shutdown.cancelled() => {
                    close(socket, 1001, "the server is shutting down").await;
                    return;
                }
                out = attached.rx.recv() => match out {
                    Some(msg) => if !send(socket, &msg).await { return },
                    None => return,
                },
                Some((work, result)) = inflight.next(), if !inflight.is_empty() => {
                    if !reply(socket, self.logged(work, result).await).await {
                        return;
                    }
                }
                msg = recv(socket), if inflight.len() < PIPELINE => match msg {
                    Some(Ok(msg)) => {
                        heard = Instant::now();
                        let mut next = Some(Next::Msg(msg));
                        while let Some(n) = next.take() {
                            let mut msg = match n {
                                Next::Msg(msg) => msg,
                                Next::Bad(e) => {
                                    close(socket, CLOSE_PROTOCOL, &format!("not a protocol message: {e}")).await;
                                    return;
                                }
                                Next::Closed => return,
                            };
                            if let AgentMsg::Log { job_id, dispatch, batch } = &mut msg {
                                next = take_queued(socket, *job_id, *dispatch, batch);
                            }
                            if let AgentMsg::Log { job_id, dispatch, batch } = msg {
                                match self.hand_over(job_id, dispatch, batch).await {
                                    Ok(answer) => inflight.push_back(answer),
                                    Err(Broken(reason)) => {
                                        close(socket, CLOSE_PROTOCOL, &reason).await;
                                        return;
                                    }
                                }
                                continue;
                            }
                            while let Some((work, result)) = inflight.next().await {
                                if !reply(socket, self.logged(work, result).await).await {
                                    return;
                                }
                            }
                            if !reply(socket, self.handle(msg).await).await {
                                return;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        close(socket, CLOSE_PROTOCOL, &format!("not a protocol message: {e}")).await;
                        return;
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if heard.elapsed() > cfg.unreachable_after {
                        tracing::warn!(agent = %self.name, "silent for {:?}: closing its connection", heard.elapsed());
                        return;
                    }
                    match service::still_enrolled(&self.state, &self.name).await {
                        Ok(true) => {}
                        Ok(false) => {
                            close(socket, CLOSE_POLICY, "the agent's token was revoked").await;
                            return;
                        }
                        Err(e) => tracing::warn!(agent = %self.name, error = %e, "cannot check the agent's token"),
                    }
                    if !send(socket, &ServerMsg::Heartbeat { at: Utc::now() }).await {
                        return;
                    }
                }
            }
        }
    }

    /// Hands a `log` batch to the committer; the answer to wait for.
    async fn hand_over(
        &mut self,
        job_id: i64,
        dispatch: i64,
        batch: LogBatch,
    ) -> Result<InFlight, Broken> {
        let kind = self.progress_kind(job_id).await;
        let due = self
            .progress_at
            .get(&job_id)
            .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        let after = self.handed.insert((job_id, dispatch), batch.last_seq);
        let work = Arc::new(Batch {
            hub: self.state.hub.clone(),
            metrics: self.state.metrics.clone(),
            agent: self.name.clone(),
            job_id,
            dispatch,
            after,
            batch,
            progress_kind: kind,
            publish_progress: due,
            outcome: Mutex::new(None),
            publish: Mutex::new(None),
        });
        let answer = self
            .state
            .committer
            .submit(work.clone())
            .await
            .map_err(|e| self.db_failed(e))?;
        Ok(answer.map(move |result| (work, result)).boxed())
    }

    /// The reply to a `log` batch once its commit is done: the `ack`.
    async fn logged(
        &mut self,
        work: Arc<Batch>,
        result: Result<(), DbErr>,
    ) -> Result<Vec<ServerMsg>, Broken> {
        result.map_err(|e| self.db_failed(e))?;
        let (job_id, dispatch) = (work.job_id, work.dispatch);
        let outcome = work.outcome.locked().take();
        match outcome {
            Some(Ok(stored)) => {
                if stored.progress && work.publish_progress {
                    self.progress_at.insert(job_id, Instant::now());
                }
                Ok(vec![ServerMsg::Ack {
                    job_id,
                    dispatch,
                    seq: stored.last_seq,
                    done: false,
                }])
            }
            Some(Err(reason)) => Ok(self.refusal(job_id, dispatch, Some(reason), "log").await),
            None => Ok(Vec::new()),
        }
    }

    /// What ends the connection when something the agent sent could not be
    /// stored.
    fn db_failed(&self, e: DbErr) -> Broken {
        tracing::error!(agent = %self.name, error = %e, "cannot store what the agent sent");
        // The agent sends it again after it reconnects.
        Broken("the server could not store this; send it again".into())
    }

    /// Handles one message; the replies to send.
    async fn handle(&mut self, msg: AgentMsg) -> Result<Vec<ServerMsg>, Broken> {
        match msg {
            AgentMsg::Hello { .. } => Err(Broken("`hello` comes once, first".into())),
            AgentMsg::Heartbeat { .. } => {
                if let Err(e) = service::seen(&self.state, &self.name).await {
                    tracing::warn!(agent = %self.name, error = %e, "cannot record the agent's heartbeat");
                }
                Ok(Vec::new())
            }
            AgentMsg::TerminalFailed { session, error } => {
                self.state
                    .agent_terminals
                    .failed(&self.name, &session, error);
                Ok(Vec::new())
            }
            AgentMsg::ProbeResult { id, state, message } => {
                if !self
                    .state
                    .agents
                    .probe_answered(&self.name, id, state, message)
                {
                    tracing::debug!(agent = %self.name, probe = id, "an answer to a probe nobody waits for");
                }
                Ok(Vec::new())
            }
            AgentMsg::JobStarted {
                job_id,
                dispatch,
                pid,
                start_time,
            } => {
                let work = Arc::new(Started {
                    agent: self.name.clone(),
                    job_id,
                    dispatch,
                    pgid: pid,
                    start: start_time,
                    refused: Mutex::new(None),
                });
                self.state
                    .committer
                    .commit(work.clone())
                    .await
                    .map_err(|e| self.db_failed(e))?;
                let refused = work.refused.locked().take();
                Ok(self.refusal(job_id, dispatch, refused, "job.started").await)
            }
            AgentMsg::Log {
                job_id,
                dispatch,
                batch,
            } => {
                let (work, result) = self.hand_over(job_id, dispatch, batch).await?.await;
                self.logged(work, result).await
            }
            AgentMsg::JobFinished {
                job_id,
                dispatch,
                ended,
                last_seq,
            } => self
                .finished(job_id, dispatch, ended, last_seq)
                .await
                .map_err(|e| self.db_failed(e)),
        }
    }

    async fn progress_kind(&mut self, job_id: i64) -> ProgressKind {
        if let Some(kind) = self.kinds.get(&job_id) {
            return *kind;
        }
        let row = jobs::by_id(&self.state.reader, job_id).await.ok().flatten();
        let kind = row
            .and_then(|r| self.state.config.template(&r.template).map(|t| t.progress))
            .unwrap_or_default();
        self.kinds.insert(job_id, kind);
        kind
    }

    /// A job's end as the agent reports it.
    async fn finished(
        &mut self,
        job_id: i64,
        dispatch: i64,
        ended: Ended,
        last_seq: i64,
    ) -> Result<Vec<ServerMsg>, DbErr> {
        let state = &self.state;
        let row = jobs::by_id(&state.db, job_id).await?;
        if let Err(reason) = check(row.as_ref(), &self.name, dispatch) {
            return Ok(self
                .refusal(job_id, dispatch, Some(reason), "job.finished")
                .await);
        }
        let Some(row) = row else {
            return Ok(Vec::new());
        };
        if row.last_seq < last_seq {
            // Lines are missing: have them sent again first.
            return Ok(vec![ServerMsg::Ack {
                job_id,
                dispatch,
                seq: row.last_seq,
                done: false,
            }]);
        }
        let finish = Finish {
            state: ended.state,
            failure: ended.failure,
            exit_code: ended.exit_code,
            error: ended.error,
            warnings: ended.warnings,
            progress: row.progress(),
        };
        let t = Arc::new(Transition::finish_on_agent(
            &state.hub, job_id, &finish, dispatch,
        ));
        state.committer.commit(t.clone()).await?;
        self.progress_at.remove(&job_id);
        self.kinds.remove(&job_id);
        self.handed.retain(|(job, _), _| *job != job_id);
        if t.row().is_some() {
            state.engine.sink().metrics.job_finished(finish.state);
            state.engine.wake();
            Ok(vec![ServerMsg::Ack {
                job_id,
                dispatch,
                seq: row.last_seq,
                done: true,
            }])
        } else {
            Ok(self
                .refusal(
                    job_id,
                    dispatch,
                    Some("the job had ended meanwhile".into()),
                    "job.finished",
                )
                .await)
        }
    }

    /// A refused message about a job: audited, and the agent told to
    /// forget the job; nothing when `reason` is `None` (accepted).
    async fn refusal(
        &self,
        job_id: i64,
        dispatch: i64,
        reason: Option<String>,
        what: &str,
    ) -> Vec<ServerMsg> {
        let Some(reason) = reason else {
            return Vec::new();
        };
        let detail = format!("{what} for job {job_id} (dispatch {dispatch}): {reason}");
        service::refused(
            &self.state,
            &self.name,
            self.ip.as_deref(),
            Some(job_id),
            &detail,
        )
        .await;
        vec![ServerMsg::Forget {
            job_id,
            dispatch,
            reason,
        }]
    }
}

/// The connection must end: the agent broke the protocol (or something
/// it sent could not be stored); the reason goes into the close frame.
struct Broken(String);

/// Whether `agent` may report on `row` for `dispatch`: the reason if not.
pub fn check(row: Option<&JobRow>, agent: &str, dispatch: i64) -> Result<(), String> {
    let Some(row) = row else {
        return Err("there is no such job".into());
    };
    if row.agent.as_deref() != Some(agent) {
        return Err("the job was not dispatched to this agent".into());
    }
    if row.dispatch != dispatch {
        return Err(format!(
            "dispatch {dispatch} is not the job's current dispatch ({})",
            row.dispatch
        ));
    }
    if !row.state.is_active() {
        return Err(format!("the job is {}", row.state));
    }
    Ok(())
}

/// `job.started`: the process group, stored on the job.
struct Started {
    agent: String,
    job_id: i64,
    dispatch: i64,
    pgid: i32,
    start: i64,
    refused: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Work for Started {
    fn job(&self) -> Option<i64> {
        Some(self.job_id)
    }

    async fn apply(&self, txn: &Txn) -> Result<(), DbErr> {
        let row = jobs::by_id(txn, self.job_id).await?;
        let refused = check(row.as_ref(), &self.agent, self.dispatch).err();
        if refused.is_none() {
            jobs::set_process(txn, self.job_id, self.dispatch, self.pgid, self.start).await?;
        }
        *self.refused.locked() = refused;
        Ok(())
    }
}

/// What storing a batch gave.
struct Stored {
    /// The job's last stored seq now (what the `ack` says).
    last_seq: i64,
    /// Whether the batch carried progress.
    progress: bool,
}

/// A `log` batch from an agent, stored like a local log writer's batch
/// and published once committed.
struct Batch {
    hub: Hub,
    metrics: Arc<Metrics>,
    agent: String,
    job_id: i64,
    dispatch: i64,
    /// The `last_seq` of the batch handed over before this one on the same
    /// connection, if any: this one is stored only once that one is.
    after: Option<i64>,
    batch: LogBatch,
    progress_kind: ProgressKind,
    publish_progress: bool,
    /// Stored, or refused with the reason (not this agent's dispatch).
    outcome: Mutex<Option<Result<Stored, String>>>,
    /// What `committed` publishes: the new lines and the progress.
    publish: Mutex<Option<(Vec<LogLine>, Option<Progress>)>>,
}

#[async_trait::async_trait]
impl Work for Batch {
    fn job(&self) -> Option<i64> {
        Some(self.job_id)
    }

    async fn apply(&self, txn: &Txn) -> Result<(), DbErr> {
        *self.publish.locked() = None;
        *self.outcome.locked() = None;
        let row = jobs::by_id(txn, self.job_id).await?;
        // N.B.: batches are handed over without waiting for the one before:
        // when that one was not stored (its commit failed, which ends the
        // connection, or it was refused), this one must not be either, or
        // its lines would leave a hole the agent never fills.
        if self
            .after
            .is_some_and(|after| row.as_ref().is_none_or(|r| r.last_seq < after))
        {
            return Ok(());
        }
        if let Err(reason) = check(row.as_ref(), &self.agent, self.dispatch) {
            *self.outcome.locked() = Some(Err(reason));
            return Ok(());
        }
        let Some(row) = row else { return Ok(()) };
        let b = &self.batch;
        if b.last_seq <= row.last_seq {
            // Sent again after its ack was lost: stored already.
            *self.outcome.locked() = Some(Ok(Stored {
                last_seq: row.last_seq,
                progress: false,
            }));
            return Ok(());
        }
        // N.B.: lines up to the stored `last_seq` are stored (or were cut
        // on purpose by a later batch): only the new ones go in.
        let new: Vec<LogLine> = b
            .lines
            .iter()
            .filter(|l| l.seq > row.last_seq)
            .cloned()
            .collect();
        logs::insert_batch_once(txn, self.job_id, &new).await?;
        if let Some((from, to)) = b.delete {
            logs::delete_range(txn, self.job_id, from, to).await?;
        }
        if let Some((seq, text)) = &b.marker {
            logs::set_text(txn, self.job_id, *seq, text).await?;
        }
        let progress: Option<Progress> = match self.progress_kind {
            ProgressKind::None => None,
            kind => new
                .iter()
                .rev()
                .find_map(|l| progress::parse(kind, &l.text)),
        };
        let position = LogPosition {
            last_seq: b.last_seq,
            log_bytes: b.stored_bytes,
            omitted: b.gap,
            process: None,
        };
        jobs::advance_log(
            txn,
            self.job_id,
            self.dispatch,
            &position,
            progress.as_ref(),
        )
        .await?;
        *self.outcome.locked() = Some(Ok(Stored {
            last_seq: b.last_seq,
            progress: progress.is_some(),
        }));
        *self.publish.locked() = Some((new, progress));
        Ok(())
    }

    fn committed(&self) {
        let Some((lines, progress)) = self.publish.locked().take() else {
            return;
        };
        self.metrics.lines_written(lines.len() as u64);
        if !lines.is_empty() {
            self.hub
                .publish(self.job_id, Update::Lines(Arc::new(HubBatch::new(lines))));
        }
        if let Some(g) = self.batch.gap {
            self.hub.publish(self.job_id, Update::Gap(g));
        }
        if let Some(p) = progress.filter(|_| self.publish_progress) {
            self.hub.publish(self.job_id, Update::Progress(Arc::new(p)));
        }
    }
}
