//! The terminal benchmark: `seq 1 N` through PTY → WebSocket → this client
//! (MB/s), and keystroke echo round trips through `stty raw -echo; exec cat`
//! (p50/p99), for opsdeck and terminado; and the PTY's own limit, read
//! straight from the master side by this process.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::print_result;
use crate::stats::percentile_sorted;
use crate::sys::self_cpu_secs;

#[derive(clap::Args)]
pub struct TermArgs {
    /// `pty` (no server), `opsdeck` or `terminado`.
    #[arg(long)]
    system: String,
    /// `throughput` or `echo`.
    #[arg(long)]
    mode: String,
    /// The WebSocket URL (opsdeck: `/api/targets/ID/terminal`; terminado: `/websocket`).
    #[arg(long)]
    url: Option<String>,
    /// `seq 1 LINES` for throughput.
    #[arg(long, default_value_t = 3_000_000)]
    lines: u64,
    /// Keystrokes for echo.
    #[arg(long, default_value_t = 2000)]
    keys: usize,
    #[arg(long, default_value_t = 1)]
    run: u32,
}

pub async fn term(a: TermArgs) -> Result<()> {
    let cpu0 = self_cpu_secs();
    let mut result = match (a.system.as_str(), a.mode.as_str()) {
        ("pty", "throughput") => pty_throughput(a.lines).await?,
        ("pty", _) => bail!("the pty baseline measures throughput only"),
        (system @ ("opsdeck" | "terminado"), "throughput") => {
            let url = a.url.as_deref().ok_or_else(|| anyhow!("--url is needed"))?;
            ws_throughput(system, url).await?
        }
        (system @ ("opsdeck" | "terminado"), "echo") => {
            let url = a.url.as_deref().ok_or_else(|| anyhow!("--url is needed"))?;
            ws_echo(system, url, a.keys).await?
        }
        (s, m) => bail!("unknown system/mode {s}/{m}"),
    };
    result["bench"] = json!(format!("term-{}", a.mode));
    result["system"] = json!(a.system);
    result["run"] = json!(a.run);
    result["client_cpu_secs"] = json!(self_cpu_secs() - cpu0);
    print_result(&result);
    Ok(())
}

/// `seq 1 N` on a PTY of our own, read as fast as we can.
async fn pty_throughput(lines: u64) -> Result<Value> {
    use server::proc::pty::{spawn, Read};
    let argv = vec!["seq".to_string(), "1".into(), lines.to_string()];
    let env = server::proc::Environment::for_terminal(&[], None);
    let t0 = Instant::now();
    let (master, mut child) = spawn(&argv, &env, None, None, 200, 50)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        match master.read(&mut buf).await? {
            Read::Data(n) => bytes += n as u64,
            Read::Empty => {}
            Read::Closed => break,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    child.wait().await?;
    Ok(json!({"bytes": bytes, "secs": secs, "mb_per_s": bytes as f64 / secs / 1e6}))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(system: &str, url: &str) -> Result<Ws> {
    let mut req = url.into_client_request()?;
    if system == "opsdeck" {
        let token = std::env::var("OPSDECK_TOKEN").context("OPSDECK_TOKEN is not set")?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(ws)
}

/// What one text frame carried.
enum Frame {
    Output(usize, bool),
    End,
    Other,
}

/// Output bytes of a frame (and whether it holds `probe`), or the end.
fn classify(system: &str, text: &str, probe: Option<char>) -> Frame {
    match system {
        // {"type":"output","data":…} / {"type":"exit",…}
        "opsdeck" => match serde_json::from_str::<Value>(text) {
            Ok(v) if v["type"] == "output" => {
                let d = v["data"].as_str().unwrap_or_default();
                Frame::Output(d.len(), probe.is_some_and(|p| d.contains(p)))
            }
            Ok(v) if v["type"] == "exit" => Frame::End,
            _ => Frame::Other,
        },
        // ["stdout", …] / ["disconnect", 1]
        _ => match serde_json::from_str::<Value>(text) {
            Ok(v) if v[0] == "stdout" => {
                let d = v[1].as_str().unwrap_or_default();
                Frame::Output(d.len(), probe.is_some_and(|p| d.contains(p)))
            }
            Ok(v) if v[0] == "disconnect" => Frame::End,
            _ => Frame::Other,
        },
    }
}

async fn next_text(ws: &mut Ws) -> Result<Option<String>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Err(_) => bail!("no frame within 60 s"),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Ok(None),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(Some(t.to_string())),
            Ok(Some(Ok(Message::Binary(b)))) => {
                return Ok(Some(String::from_utf8_lossy(&b).into_owned()))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e.into()),
        }
    }
}

/// The server's terminal runs `seq 1 N` as its shell: from connecting to
/// the end of the output.
async fn ws_throughput(system: &str, url: &str) -> Result<Value> {
    let t0 = Instant::now();
    let mut ws = connect(system, url).await?;
    let mut bytes = 0u64;
    let mut frames = 0u64;
    while let Some(text) = next_text(&mut ws).await? {
        match classify(system, &text, None) {
            Frame::Output(n, _) => {
                bytes += n as u64;
                frames += 1;
            }
            Frame::End => break,
            Frame::Other => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(
        json!({"bytes": bytes, "frames": frames, "secs": secs, "mb_per_s": bytes as f64 / secs / 1e6}),
    )
}

fn input_frame(system: &str, data: &str) -> String {
    match system {
        "opsdeck" => json!({"type": "input", "data": data}).to_string(),
        _ => json!(["stdin", data]).to_string(),
    }
}

/// The server's terminal runs `stty raw -echo; exec cat`: one byte out,
/// wait for it to come back, `keys` times.
async fn ws_echo(system: &str, url: &str, keys: usize) -> Result<Value> {
    let mut ws = connect(system, url).await?;
    // Let `stty` take effect, then drain whatever the start printed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    ws.send(Message::Text(input_frame(system, "z").into()))
        .await?;
    loop {
        let text = next_text(&mut ws)
            .await?
            .ok_or_else(|| anyhow!("closed while warming up"))?;
        if let Frame::Output(_, true) = classify(system, &text, Some('z')) {
            break;
        }
    }
    let mut rtts = Vec::with_capacity(keys);
    let letters = ['a', 'b', 'c', 'd'];
    for i in 0..keys {
        let key = letters[i % letters.len()];
        let t0 = Instant::now();
        ws.send(Message::Text(input_frame(system, &key.to_string()).into()))
            .await?;
        loop {
            let text = next_text(&mut ws)
                .await?
                .ok_or_else(|| anyhow!("closed during echo"))?;
            if let Frame::Output(_, true) = classify(system, &text, Some(key)) {
                break;
            }
        }
        rtts.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = ws.close(None).await;
    rtts.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "keys": keys,
        "p50_ms": percentile_sorted(&rtts, 0.50),
        "p99_ms": percentile_sorted(&rtts, 0.99),
        "max_ms": rtts.last().copied().unwrap_or(0.0),
    }))
}
