//! The browser terminal: `GET /api/targets/{id}/terminal` upgrades to a
//! WebSocket bound to a shell on a PTY (DESIGN.md, "Terminal (WebSocket)").
//!
//! - `proc::pty` starts the shell (through the one spawn of `proc`) in its
//!   own session with the PTY as its controlling terminal and an explicit
//!   environment (`proc::env`), never the server's own;
//! - [`session`] keeps it alive across dropped sockets for a grace period,
//!   with flow control and a replay ring;
//! - [`text`] cuts output at whole UTF-8 characters; [`record`] writes
//!   asciicast v2 recordings;
//! - [`limits`] bounds what a browser may send: frame size and rate.
//!
//! The guard has already authenticated the caller and refused a cross-site
//! upgrade; [`open`] asks `service::terminals` whether this caller may
//! open one on this target.

pub mod limits;
pub mod record;
pub mod session;
pub mod shell;
pub mod text;

use std::sync::Arc;
use std::time::Duration;

use app::backend::Caller;
use app::error::AppError;
use app::model::terminal::{valid_size, ClientFrame, ServerFrame};
use app::model::user::CurrentUser;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use crate::auth::revocation::{Credential, Hold};
use crate::config::{Target, TargetAccess, TerminalConfig};
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::metrics::{Limit, Refusals};
use crate::proc::Environment;
use crate::service::terminals;
use crate::state::AppState;
pub use session::Terminals;
use session::{Out, Session, Shell, Spec};

/// How often an idle socket is pinged (keeps proxies from closing it).
const PING_EVERY: Duration = Duration::from_secs(20);
/// The most text one `output` frame carries.
const FRAME_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalQuery {
    cols: Option<u16>,
    rows: Option<u16>,
    /// A session to reattach to (from its `session` frame).
    session: Option<String>,
}

/// The argv that opens a shell on `target` (never a shell string: the
/// container and host names were validated when the config was read).
pub fn command_for(target: &Target, terminal: &TerminalConfig) -> Result<Vec<String>, AppError> {
    let shell = target
        .shell
        .clone()
        .unwrap_or_else(|| terminal.shell.clone());
    let mut argv: Vec<String> = Vec::new();
    match &target.access {
        TargetAccess::Local => argv.extend(shell),
        TargetAccess::Docker { container } => {
            argv.extend(["docker", "exec", "-it", "-e", "TERM=xterm-256color"].map(String::from));
            argv.push(container.clone());
            argv.extend(shell);
        }
        TargetAccess::Ssh { host, port } => {
            argv.extend(["ssh", "-tt"].map(String::from));
            if let Some(p) = port {
                argv.extend(["-p".to_string(), p.to_string()]);
            }
            argv.push("--".into());
            argv.push(host.clone());
            if target.shell.is_some() {
                argv.extend(shell);
            }
        }
        // The shell runs on the agent's host; the agent starts it.
        TargetAccess::Agent { .. } => argv.extend(shell),
    }
    Ok(argv)
}

/// The argv that asks docker whether `container` runs.
pub fn docker_inspect_argv(container: &str) -> Vec<String> {
    [
        "docker",
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Running}}",
        container,
    ]
    .map(String::from)
    .to_vec()
}

/// Refuses a docker target whose container is not running, saying why.
async fn check_container(container: &str) -> Result<(), AppError> {
    let argv = docker_inspect_argv(container);
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .await
        .map_err(|e| {
            AppError::Unavailable(format!(
                "cannot run `docker inspect`: {e}; is docker installed here?"
            ))
        })?;
    let answer = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && answer.trim() == "true" {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(AppError::Conflict(format!(
            "container `{container}` is not running{}: start it, then open the console again",
            if err.trim().is_empty() {
                String::new()
            } else {
                format!(" ({})", err.trim())
            }
        )))
    }
}

/// `GET /api/targets/{id}/terminal`.
pub async fn open(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(target_id): Path<String>,
    ApiQuery(q): ApiQuery<TerminalQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (user, target) = terminals::authorize(&s, &c, &target_id)?;
    let (cols, rows) = (q.cols.unwrap_or(80), q.rows.unwrap_or(24));
    if !valid_size(cols, rows) {
        return Err(
            AppError::field("cols", "the window is 2 to 1000 columns by 2 to 1000 rows").into(),
        );
    }
    if q.session.as_deref().is_some_and(|id| !record::valid_id(id)) {
        return Err(
            AppError::field("session", "not a session id (32 lowercase hex digits)").into(),
        );
    }
    let upgrade = upgrade
        .map_err(|e| AppError::field("upgrade", format!("connect with a WebSocket ({e})")))?
        .max_message_size(s.config.terminal.max_frame_bytes)
        .max_frame_size(s.config.terminal.max_frame_bytes);

    let resumed = q
        .session
        .as_deref()
        .and_then(|id| s.terminals.find(id, user.id, &target.id));
    if let (None, Some(id)) = (&resumed, q.session.as_deref()) {
        // N.B.: said over the socket, as the console shows a server's
        // reason (a failed handshake's body never reaches the page).
        if let Some(reason) = terminals::elsewhere(&s, &target, id).await? {
            return Ok(upgrade
                .on_upgrade(move |mut socket| async move {
                    send(&mut socket, &ServerFrame::Closed { reason }).await;
                    let _ = socket.send(Message::Close(None)).await;
                })
                .into_response());
        }
    }
    let (session, resumed) = match resumed {
        Some(session) => (session, true),
        None => (start(&s, &c, &user, &target, cols, rows).await?, false),
    };
    if resumed {
        let _ = session.resize(cols, rows);
    }
    let credential = s.revocations.hold(Credential::of(&c));
    let limits = InputLimits {
        max_frame_bytes: s.config.terminal.max_frame_bytes,
        max_frames_per_second: s.config.terminal.max_frames_per_second,
        refusals: s.metrics.refusals().clone(),
    };
    Ok(upgrade
        .on_upgrade(move |socket| serve(socket, session, resumed, credential, limits))
        .into_response())
}

/// Starts a new session for `user` on `target`.
async fn start(
    s: &AppState,
    c: &Caller,
    user: &CurrentUser,
    target: &Target,
    cols: u16,
    rows: u16,
) -> Result<Arc<Session>, AppError> {
    let cfg = &s.config.terminal;
    let open = s.terminals.count_for(user.id);
    if open >= cfg.max_sessions_per_user {
        return Err(AppError::Conflict(format!(
            "you have {open} terminal sessions open, the most allowed: end one (type `exit`) or wait for a closed tab's session to end"
        )));
    }
    let argv = command_for(target, cfg)?;
    if let TargetAccess::Docker { container } = &target.access {
        check_container(container).await?;
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let recorder = if cfg.record {
        match record::Recorder::create(
            &cfg.recordings_dir,
            &id,
            cols,
            rows,
            &format!("{}@{}", user.username, target.id),
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(dir = %cfg.recordings_dir.display(), error = %e, "cannot record the terminal session");
                return Err(AppError::Unavailable(format!(
                    "cannot write the session recording under {}: {e}",
                    cfg.recordings_dir.display()
                )));
            }
        }
    } else {
        None
    };
    let recorded = recorder.is_some();
    let shell = match target.agent() {
        Some(agent) => Shell::Relayed(relay_from(s, agent, &id, &argv, cols, rows).await?),
        None => Shell::Local {
            argv: argv.clone(),
            env: Environment::for_terminal(&s.config.jobs.base_env, None),
            user: target.run_as.clone(),
        },
    };
    let spec = Spec {
        user_id: user.id,
        username: user.username.clone(),
        target: target.id.clone(),
        shell,
        cols,
        rows,
        recorder,
        id: id.clone(),
    };
    let db = s.db.clone();
    let ip = c.ip.clone();
    let on_end = move |session: Arc<Session>, end: session::Ending| {
        tokio::spawn(async move {
            terminals::ended(
                &db,
                terminals::Ended {
                    username: &session.username,
                    ip: ip.as_deref(),
                    target: &session.target,
                    session: &session.id,
                    code: end.code,
                    seconds: end.duration.as_secs(),
                    reason: end.reason.as_deref(),
                    recorded,
                },
            )
            .await;
        });
    };
    let session = s
        .terminals
        .open(spec, on_end)
        .map_err(|e| AppError::Unavailable(format!("cannot start `{}`: {e}", argv.join(" "))))?;
    tokio::spawn(
        session
            .clone()
            .watch(cfg.grace, cfg.idle_timeout, s.shutdown.clone()),
    );
    terminals::started(s, user, c.ip.as_deref(), target, &id, &argv, recorded).await?;
    Ok(session)
}

/// Asks `agent` to open the shell `argv` for session `id`, and waits for
/// it to dial back with the terminal's socket.
async fn relay_from(
    s: &AppState,
    agent: &str,
    id: &str,
    argv: &[String],
    cols: u16,
    rows: u16,
) -> Result<crate::agents::terminal::Relay, AppError> {
    let waiting = s.agent_terminals.expect(agent, id);
    let open = app::model::agent::ServerMsg::TerminalOpen(app::model::agent::TerminalOpen {
        session: id.to_string(),
        argv: argv.to_vec(),
        cols,
        rows,
    });
    if !s.agents.send(agent, open) {
        s.agent_terminals.forget(id);
        return Err(AppError::Conflict(format!(
            "agent `{agent}` is not connected: the console opens once it is back"
        )));
    }
    match tokio::time::timeout(crate::agents::terminal::DIAL_BACK, waiting).await {
        Ok(Ok(Ok(socket))) => Ok(crate::agents::terminal::Relay::new(socket)),
        Ok(Ok(Err(error))) => Err(AppError::Unavailable(format!(
            "agent `{agent}` could not open the console: {error}"
        ))),
        _ => {
            s.agent_terminals.forget(id);
            Err(AppError::Unavailable(format!(
                "agent `{agent}` did not open the console within {} s",
                crate::agents::terminal::DIAL_BACK.as_secs()
            )))
        }
    }
}

/// `GET /api/recordings/{id}` (admins): a session's asciicast v2 file.
pub async fn recording(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    terminals::may_read_recording(&c)?;
    if !record::valid_id(&id) {
        return Err(AppError::field("id", "not a session id (32 lowercase hex digits)").into());
    }
    let path = record::path_of(&s.config.terminal.recordings_dir, &id);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            [
                (axum::http::header::CONTENT_TYPE, "application/x-asciicast"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(AppError::NotFound(format!("no recording of session {id}")).into())
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read a recording");
            Err(AppError::Internal.into())
        }
    }
}

/// What one socket may send ([`limits`]).
struct InputLimits {
    max_frame_bytes: usize,
    max_frames_per_second: u32,
    refusals: Arc<Refusals>,
}

impl InputLimits {
    /// Counts the refusal, closes the socket with `code` and `reason`, and
    /// waits a moment for the browser's reply, so it sees the code.
    async fn refuse(&self, socket: &mut WebSocket, limit: Limit, code: u16, reason: String) {
        self.refusals.count(limit);
        tracing::info!(code, %reason, "closed a terminal socket");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(limits::CLOSE_WAIT, async {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> bool {
    let text = serde_json::to_string(frame).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// One WebSocket attached to a session, until either ends.
async fn serve(
    mut socket: WebSocket,
    session: Arc<Session>,
    resumed: bool,
    credential: Hold,
    limits: InputLimits,
) {
    let mut att = session.attach(credential);
    let mut rate = limits::InputRate::new(limits.max_frames_per_second, std::time::Instant::now());
    let hello = ServerFrame::Session {
        id: session.id.clone(),
        resumed,
    };
    if !send(&mut socket, &hello).await {
        session.detach(att.id);
        return;
    }
    if !att.replay.is_empty()
        && !send(
            &mut socket,
            &ServerFrame::Output {
                data: std::mem::take(&mut att.replay),
            },
        )
        .await
    {
        session.detach(att.id);
        return;
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut held: Option<Out> = None;
    loop {
        tokio::select! {
            out = async { match held.take() { Some(o) => Some(o), None => att.rx.recv().await } } => {
                match out {
                    Some(Out::Data(mut data)) => {
                        // Coalesce what else is queued into one frame.
                        while data.len() < FRAME_BYTES {
                            match att.rx.try_recv() {
                                Ok(Out::Data(more)) => data.push_str(&more),
                                Ok(other) => { held = Some(other); break; }
                                Err(_) => break,
                            }
                        }
                        if !send(&mut socket, &ServerFrame::Output { data }).await {
                            break;
                        }
                    }
                    Some(Out::Closed(reason)) => {
                        if !send(&mut socket, &ServerFrame::Closed { reason }).await {
                            break;
                        }
                    }
                    Some(Out::Exit(code)) => {
                        send(&mut socket, &ServerFrame::Exit { code }).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                    None => {
                        // Another window attached to this session.
                        let reason = "this session was opened in another window".to_string();
                        send(&mut socket, &ServerFrame::Closed { reason }).await;
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(_) | Message::Binary(_)))
                    if !rate.allow(std::time::Instant::now()) =>
                {
                    let reason = format!(
                        "input faster than {} frames a second",
                        limits.max_frames_per_second
                    );
                    limits.refuse(&mut socket, Limit::TerminalFrameRate, limits::POLICY, reason).await;
                    break;
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(ClientFrame::Input { data }) => {
                        if let Err(e) = session.input(&data).await {
                            tracing::debug!(session = %session.id, error = %e, "input to a closed terminal");
                        }
                    }
                    Ok(ClientFrame::Resize { cols, rows }) if valid_size(cols, rows) => {
                        if let Err(e) = session.resize(cols, rows) {
                            tracing::debug!(session = %session.id, error = %e, "cannot resize the terminal");
                        }
                    }
                    Ok(ClientFrame::Resize { cols, rows }) => {
                        tracing::debug!(cols, rows, "ignored an impossible terminal size");
                    }
                    Err(e) => tracing::debug!(session = %session.id, error = %e, "ignored a bad terminal frame"),
                },
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = session.input(&String::from_utf8_lossy(&bytes)).await;
                }
                Some(Ok(_)) => {} // ping/pong: axum answers pings itself
                Some(Err(e)) if limits::is_too_big(&e) => {
                    let reason = format!(
                        "an input frame larger than {} bytes",
                        limits.max_frame_bytes
                    );
                    limits.refuse(&mut socket, Limit::TerminalFrameSize, limits::TOO_BIG, reason).await;
                    break;
                }
                Some(Err(_)) | None => break,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    session.detach(att.id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(access: TargetAccess, shell: Option<Vec<String>>) -> Target {
        Target {
            id: "t".into(),
            title: "t".into(),
            description: None,
            access,
            owners: vec![],
            terminal: true,
            terminal_roles: vec![],
            shell,
            run_as: None,
            status: None,
        }
    }

    fn terminal() -> TerminalConfig {
        TerminalConfig {
            shell: vec!["/bin/bash".into(), "-l".into()],
            grace: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(1800),
            max_sessions_per_user: 4,
            record: false,
            recordings_dir: "data/recordings".into(),
            max_frame_bytes: 64 << 10,
            max_frames_per_second: 200,
        }
    }

    #[test]
    fn each_kind_of_target_gets_its_argv() {
        let t = terminal();
        assert_eq!(
            command_for(&target(TargetAccess::Local, None), &t).unwrap(),
            ["/bin/bash", "-l"]
        );
        assert_eq!(
            command_for(
                &target(TargetAccess::Local, Some(vec!["/bin/sh".into()])),
                &t
            )
            .unwrap(),
            ["/bin/sh"]
        );
        let docker = TargetAccess::Docker {
            container: "web_1".into(),
        };
        assert_eq!(
            command_for(&target(docker, Some(vec!["sh".into()])), &t).unwrap(),
            [
                "docker",
                "exec",
                "-it",
                "-e",
                "TERM=xterm-256color",
                "web_1",
                "sh"
            ]
        );
        let ssh = TargetAccess::Ssh {
            host: "ops@db-1".into(),
            port: Some(2222),
        };
        assert_eq!(
            command_for(&target(ssh, None), &t).unwrap(),
            ["ssh", "-tt", "-p", "2222", "--", "ops@db-1"]
        );
        assert_eq!(
            docker_inspect_argv("web_1"),
            [
                "docker",
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.State.Running}}",
                "web_1"
            ]
        );
        let agent = TargetAccess::Agent { agent: "a1".into() };
        assert_eq!(
            command_for(&target(agent, None), &t).unwrap(),
            ["/bin/bash", "-l"],
            "the agent starts the shell on its host"
        );
    }
}
