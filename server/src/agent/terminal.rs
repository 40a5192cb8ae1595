//! A console on the agent's host: on `terminal.open` the agent starts the
//! shell on a PTY (the same `terminal::shell` as the server's own
//! terminals, with this host's terminal environment) and dials back with a
//! WebSocket of its own for the session (`/api/agent/terminal/{id}`), so a
//! busy terminal never holds up the job link, and the reverse. Output goes
//! as `output` frames; input, resizes and the hang-up come back.

use std::sync::Arc;
use std::time::Duration;

use app::model::agent::{AgentMsg, RelayIn, RelayOut, TerminalOpen};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::Agent;
use crate::proc::Environment;
use crate::terminal::shell::Pty;

/// Opens the terminal the server asked for and relays it until the shell
/// ends or the server hangs up.
pub async fn open(agent: Arc<Agent>, open: TerminalOpen) {
    let failed = |error: String| {
        tracing::warn!(session = %open.session, "cannot open the terminal: {error}");
        agent.say(AgentMsg::TerminalFailed {
            session: open.session.clone(),
            error,
        });
    };
    let env = Environment::for_terminal(&agent.base_env, None);
    let (pty, child) = match Pty::start(&open.argv, &env, open.cols, open.rows) {
        Ok(started) => started,
        Err(e) => {
            return failed(format!(
                "cannot start `{}` on {}: {e}",
                open.argv.join(" "),
                agent.hostname
            ))
        }
    };
    let url = format!("{}/terminal/{}", agent.url, open.session);
    let ws = match super::connect_to(&agent, &url).await {
        Ok(ws) => ws,
        Err(e) => {
            pty.hang_up(Duration::from_secs(1), CancellationToken::new());
            return failed(format!("cannot dial back to the server: {e}"));
        }
    };
    tracing::info!(session = %open.session, "terminal opened");
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<RelayOut>(4);
    let ended = CancellationToken::new();
    // Writes frames to the server, in order; a slow server holds the pump
    // (and the kernel then holds the shell) back.
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            let text = serde_json::to_string(&frame).unwrap_or_default();
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let pump = {
        let out = out_tx.clone();
        pty.pump(child, move |data| {
            let out = out.clone();
            async move {
                let _ = out.send(RelayOut::Output { data }).await;
            }
        })
    };
    tokio::pin!(pump);
    let mut server_there = true;
    let code = loop {
        tokio::select! {
            code = &mut pump => break code,
            frame = stream.next(), if server_there => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<RelayIn>(&text) {
                    Ok(RelayIn::Input { data }) => {
                        if let Err(e) = pty.write(data.as_bytes()).await {
                            tracing::debug!(error = %e, "input to a closed terminal");
                        }
                    }
                    Ok(RelayIn::Resize { cols, rows }) => {
                        let _ = pty.resize(cols, rows);
                    }
                    Ok(RelayIn::Hangup) => pty.hang_up(Duration::from_secs(2), ended.clone()),
                    Err(e) => tracing::warn!(error = %e, "ignored a terminal frame from the server"),
                },
                Some(Ok(_)) => {}
                // The server is gone: hang up, as a dropped terminal does.
                Some(Err(_)) | None => {
                    server_there = false;
                    pty.hang_up(Duration::from_secs(2), ended.clone());
                }
            },
        }
    };
    ended.cancel();
    let _ = out_tx.send(RelayOut::Exit { code }).await;
    drop(out_tx);
    let _ = writer.await;
    tracing::info!(session = %open.session, code, "terminal closed");
}
