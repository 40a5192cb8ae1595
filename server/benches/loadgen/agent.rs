//! The agent benchmarks (issue 14), against a real server and a real
//! `opsdeck agent` that this client starts behind its own TCP proxy:
//!
//! - `agent-reconnect`: a job on the agent prints 100 lines a second; the
//!   proxy cuts the agent off (every connection dropped, new ones refused)
//!   for 0.3 to 1.5 s, then lets it back; the time from the network's
//!   return to the first line that reaches a subscriber of the job's stream
//!   is one sample. 100 cuts: p50, p99, max.
//! - `agent-cancel`: a job on the agent (`sleep`), cancelled once it runs;
//!   the time from the cancel to the job `cancelled` (the agent reported
//!   its process group gone) is one sample.
//!
//! The ingest figure (lines a second from a job on the agent to committed
//! rows, beside the same job run locally) reuses `ingest` with the agent's
//! target.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::json;

use crate::api::{job_id, Api, ServerArgs};
use crate::print_result;
use crate::stats::percentile_sorted;

#[derive(clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The opsdeck binary (the agent is `opsdeck agent`).
    #[arg(long)]
    opsdeck: PathBuf,
    /// The agent's token file.
    #[arg(long)]
    token_file: PathBuf,
    /// The agent's spool directory.
    #[arg(long)]
    spool: PathBuf,
    /// Its target, and the template that prints 100 lines a second there.
    #[arg(long, default_value = "remote")]
    target: String,
    #[arg(long, default_value = "drip-agent")]
    template: String,
    /// How many cuts (or cancels).
    #[arg(long, default_value_t = 100)]
    samples: usize,
}

/// A proxy in front of the server that can cut the agent off.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start(upstream: String) -> Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let (c, g) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let mut dropped = g.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = out.set_nodelay(true);
                    tokio::select! {
                        _ = dropped.changed() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            cut,
            generation,
        })
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

/// Starts the agent, through `proxy_port` if given; waits until the server
/// says it is online.
async fn start_agent(
    a: &AgentArgs,
    api: &Api,
    proxy_port: Option<u16>,
) -> Result<std::process::Child> {
    let server = match proxy_port {
        Some(p) => format!("http://127.0.0.1:{p}"),
        None => api.base.clone(),
    };
    let _ = std::fs::remove_dir_all(&a.spool);
    let child = std::process::Command::new(&a.opsdeck)
        .args(["agent", "--server", &server, "--token-file"])
        .arg(&a.token_file)
        .arg("--spool")
        .arg(&a.spool)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the agent")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = api.get_json("/api/agents").await?;
        let online = list
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["status"] == "online"));
        if online {
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!("the agent did not come online: {list}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "samples": ms.len(),
        "p50_ms": percentile_sorted(&ms, 0.50),
        "p99_ms": percentile_sorted(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(0.0),
    })
}

pub async fn reconnect(a: AgentArgs) -> Result<()> {
    let api = Api::new(&a.server)?;
    let upstream = a.server.url.trim_start_matches("http://").to_string();
    let proxy = Proxy::start(upstream).await?;
    let mut agent = start_agent(&a, &api, Some(proxy.port)).await?;
    let job = api.launch(&a.template, &a.target, json!({})).await?;
    let id = job_id(&job)?;
    // A subscriber of the job's stream: when did a line last arrive?
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let stream = api
        .request(reqwest::Method::GET, &format!("/api/jobs/{id}/events"))
        .send()
        .await?;
    let reader = tokio::spawn(async move {
        let mut body = stream.bytes_stream();
        let mut parser = crate::sse::Parser::default();
        while let Some(Ok(chunk)) = body.next().await {
            let at = Instant::now();
            let mut lines = 0;
            parser.feed(&chunk, |ev| {
                if ev.event == b"log" {
                    lines += 1;
                }
            });
            if lines > 0 && seen_tx.send(at).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::with_capacity(a.samples);
    for i in 0..a.samples {
        proxy.set_cut(true);
        let away = Duration::from_millis(300 + rand::random::<u64>() % 1200);
        tokio::time::sleep(away).await;
        while seen_rx.try_recv().is_ok() {}
        let back = Instant::now();
        proxy.set_cut(false);
        let first = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
            .await
            .context("no line came back within 30 s")?
            .context("the stream ended")?;
        let ms = first.duration_since(back).as_secs_f64() * 1e3;
        samples.push(ms);
        eprintln!(
            "cut {}: away {} ms, first line {ms:.0} ms after the return",
            i + 1,
            away.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.cancel(id).await?;
    reader.abort();
    let _ = agent.kill();
    let _ = agent.wait();
    let mut out = summary(samples);
    out["bench"] = json!("agent-reconnect");
    print_result(&out);
    Ok(())
}

pub async fn cancel(a: AgentArgs) -> Result<()> {
    let api = Api::new(&a.server)?;
    let mut agent = start_agent(&a, &api, None).await?;
    let mut samples = Vec::with_capacity(a.samples);
    for i in 0..a.samples {
        let job = api.launch("hold-agent", &a.target, json!({})).await?;
        let id = job_id(&job)?;
        // Running, and its process group known.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let j = api.job(id).await?;
            if j["last_seq"].as_i64().unwrap_or(0) >= 1 {
                break;
            }
            if Instant::now() > deadline {
                bail!("job {id} did not start: {j}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        api.cancel(id).await?;
        let done = api
            .wait_for(id, Duration::from_millis(5), Duration::from_secs(60), |s| {
                s == "cancelled" || s == "failed" || s == "succeeded"
            })
            .await?;
        if done["state"] != "cancelled" {
            bail!("job {id} ended {}: {done}", done["state"]);
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        eprintln!("cancel {}: {ms:.0} ms", i + 1);
        samples.push(ms);
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let mut out = summary(samples);
    out["bench"] = json!("agent-cancel");
    print_result(&out);
    Ok(())
}
