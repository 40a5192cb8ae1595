//! Terminals on an agent's host, as the server sees them: the browser's
//! terminal session (`crate::terminal`) asks the agent to open a PTY
//! (`terminal.open` over its link), and the agent dials back with a
//! WebSocket of its own for that session (`GET /api/agent/terminal/{id}`),
//! which the session then reads and writes instead of a local PTY.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::backend::Caller;
use app::error::AppError;
use app::model::agent::{RelayIn, RelayOut};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tokio::sync::oneshot;

use crate::http::error::ApiError;
use crate::service::agents as service;
use crate::state::AppState;
use crate::sync::Locked;

/// How long an agent may take to dial back for a terminal.
pub const DIAL_BACK: Duration = Duration::from_secs(15);

/// What a waiting session gets: the agent's socket, or why there is none.
type Answer = Result<WebSocket, String>;

struct Pending {
    agent: String,
    answer: oneshot::Sender<Answer>,
}

/// Sessions waiting for their agent to dial back.
#[derive(Clone, Default)]
pub struct Relays(Arc<Mutex<HashMap<String, Pending>>>);

impl Relays {
    /// Waits for `agent` to dial back for `session` (after the caller sent
    /// it `terminal.open`).
    pub fn expect(&self, agent: &str, session: &str) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.0.locked().insert(
            session.to_string(),
            Pending {
                agent: agent.to_string(),
                answer: tx,
            },
        );
        rx
    }

    /// The session stopped waiting.
    pub fn forget(&self, session: &str) {
        self.0.locked().remove(session);
    }

    /// The agent could not open the terminal.
    pub fn failed(&self, agent: &str, session: &str, error: String) {
        let mut pending = self.0.locked();
        if pending.get(session).is_some_and(|p| p.agent == agent) {
            if let Some(p) = pending.remove(session) {
                let _ = p.answer.send(Err(error));
            }
        }
    }

    /// Whether `agent` is awaited for `session`.
    fn awaits(&self, agent: &str, session: &str) -> bool {
        self.0
            .locked()
            .get(session)
            .is_some_and(|p| p.agent == agent)
    }

    fn deliver(&self, agent: &str, session: &str, socket: WebSocket) {
        let mut pending = self.0.locked();
        if pending.get(session).is_some_and(|p| p.agent == agent) {
            if let Some(p) = pending.remove(session) {
                let _ = p.answer.send(Ok(socket));
            }
        }
    }
}

/// `GET /api/agent/terminal/{session}`: an agent dialling back with the
/// terminal it was asked to open. Only the agent that was asked may.
pub async fn dial_back(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(session): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let agent = service::authenticate(&s, &headers).await?;
    if !s.agent_terminals.awaits(&agent.name, &session) {
        let detail = format!(
            "dialled back for terminal session `{session}`, which it was not asked to open"
        );
        service::refused(&s, &agent.name, c.ip.as_deref(), None, &detail).await;
        return Err(AppError::NotFound(format!(
            "no terminal session `{session}` awaits this agent"
        ))
        .into());
    }
    let upgrade = upgrade
        .map_err(|e| AppError::field("upgrade", format!("connect with a WebSocket ({e})")))?;
    let relays = s.agent_terminals.clone();
    Ok(upgrade
        .on_upgrade(move |socket| async move { relays.deliver(&agent.name, &session, socket) })
        .into_response())
}

/// A terminal on an agent's host, seen from its server session: the
/// agent's socket for it. A writer task owns the sending half (input,
/// resizes and the hang-up queue up in order); the session's pump reads.
pub struct Relay {
    tx: tokio::sync::mpsc::Sender<RelayIn>,
    rx: tokio::sync::Mutex<futures::stream::SplitStream<WebSocket>>,
}

impl Relay {
    pub fn new(socket: WebSocket) -> Relay {
        use futures::{SinkExt, StreamExt};
        let (mut sink, stream) = socket.split();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RelayIn>(64);
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let text = serde_json::to_string(&frame).unwrap_or_default();
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        Relay {
            tx,
            rx: tokio::sync::Mutex::new(stream),
        }
    }

    pub async fn input(&self, data: &str) -> std::io::Result<()> {
        self.tx
            .send(RelayIn::Input {
                data: data.to_string(),
            })
            .await
            .map_err(|_| std::io::Error::other("the agent's terminal has closed"))
    }

    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        self.tx
            .try_send(RelayIn::Resize { cols, rows })
            .map_err(|_| std::io::Error::other("the agent's terminal has closed or is busy"))
    }

    /// Asks the agent to hang the shell up (it then reports its exit).
    pub fn hang_up(&self) {
        let _ = self.tx.try_send(RelayIn::Hangup);
    }

    /// Reads the agent's frames until the shell's exit (its code), handing
    /// each output to `deliver`; -1 if the agent's socket dropped first.
    pub async fn pump<F, Fut>(&self, mut deliver: F) -> i32
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        use futures::StreamExt;
        let mut rx = self.rx.lock().await;
        while let Some(msg) = rx.next().await {
            let Ok(Message::Text(text)) = msg else {
                match msg {
                    Ok(Message::Close(_)) | Err(_) => break,
                    _ => continue,
                }
            };
            match serde_json::from_str::<RelayOut>(&text) {
                Ok(RelayOut::Output { data }) => deliver(data).await,
                Ok(RelayOut::Exit { code }) => return code,
                Err(e) => tracing::warn!(error = %e, "ignored a terminal frame from the agent"),
            }
        }
        deliver("\r\n[opsdeck: the agent's connection for this terminal dropped]\r\n".into()).await;
        -1
    }
}
