//! The live stream benchmarks, against opsdeck or, for comparison, nginx
//! with the nchan module.
//!
//! - `fanout`: N subscribers follow one stream while lines are produced at
//!   R lines/s for S seconds. opsdeck: a `hold` job (sleep) keeps the target
//!   busy while the N subscribers open `GET /api/jobs/{id}/events` on the
//!   queued `emit` job; then the hold job is cancelled and the emit job runs
//!   `loadgen emit R S`, whose lines carry their emission time. nchan: the
//!   N subscribers open `GET /sub?id=…` (EventSource), then a publisher
//!   thread POSTs one message per line to `/pub?id=…` at R/s, each carrying
//!   its emission time. Every subscriber checks it got every line exactly
//!   once, in order, and records receipt − emission for each (an upper bound
//!   of commit → receipt, since emission precedes the commit). A rate passes
//!   when every subscriber got every line, p99 ≤ 100 ms, and the lines were
//!   really produced at ≥ 97 % of R. The search doubles the rate from
//!   `--start-rate` until it fails (or halves it until it passes), then tries
//!   once between the best pass and the first failure.
//! - `resume`: reconnects to a finished job with `Last-Event-ID` and times
//!   the request until the first `log` event is read, on a new connection
//!   each time.
//! - `idle`: opens many streams that carry nothing, and reports the
//!   server's RSS growth per stream.
//!
//! The client CPU time (getrusage) and the server's (/proc) over each run
//! are reported as % of one core, so a saturated client shows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::api::{job_id, Api, ServerArgs};
use crate::sse::{json_text, parse_stamp, parse_u64, Parser};
use crate::stats::{percentile_sorted, Histogram};
use crate::sys::{mean_rss_kib, now_ns, CpuMeter};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Opsdeck,
    Nchan,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Opsdeck => "opsdeck",
            System::Nchan => "nchan",
        }
    }
}

/// A client that opens a new connection for every request (each stream
/// holds its own anyway).
fn stream_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(0)
        .build()
        .context("cannot build the HTTP client")
}

// ---- fan-out ------------------------------------------------------------------

#[derive(clap::Args)]
pub struct FanoutArgs {
    #[arg(long, value_enum)]
    system: System,
    /// opsdeck's or nginx's base URL.
    #[arg(long)]
    url: String,
    /// opsdeck's API token (not used for nchan).
    #[arg(
        long,
        env = "OPSDECK_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// Subscribers.
    #[arg(long)]
    subs: usize,
    /// Seconds each rate is held.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// The first rate tried (lines/s).
    #[arg(long, default_value_t = 1000)]
    start_rate: u64,
    #[arg(long, default_value_t = 25)]
    min_rate: u64,
    #[arg(long, default_value_t = 64000)]
    max_rate: u64,
    /// Test exactly these rates (comma-separated) instead of searching.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// The p99 latency a rate must stay within.
    #[arg(long, default_value_t = 100.0)]
    p99_ms: f64,
    /// The server process (opsdeck, or nginx's worker) for its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// opsdeck's target for the hold and emit jobs.
    #[arg(long, default_value = "fan")]
    target: String,
    /// Subscriptions being opened at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
}

/// What one subscriber saw.
struct SubStats {
    /// The next emitter line number expected.
    next_k: u64,
    received: u64,
    duplicates: u64,
    missing: u64,
    /// opsdeck: SSE ids that did not follow the previous one.
    id_breaks: u64,
    last_id: u64,
    gaps: u64,
    ended: bool,
    error: Option<String>,
    first_recv_ns: u64,
    last_recv_ns: u64,
    min_emit_ns: u64,
    max_emit_ns: u64,
}

impl SubStats {
    fn new() -> SubStats {
        SubStats {
            next_k: 1,
            received: 0,
            duplicates: 0,
            missing: 0,
            id_breaks: 0,
            last_id: 0,
            gaps: 0,
            ended: false,
            error: None,
            first_recv_ns: u64::MAX,
            last_recv_ns: 0,
            min_emit_ns: u64::MAX,
            max_emit_ns: 0,
        }
    }

    fn on_event(&mut self, system: System, ev: crate::sse::Event<'_>, now: u64, hist: &Histogram) {
        match system {
            System::Opsdeck => match ev.event {
                b"log" => {
                    if let Some(id) = parse_u64(ev.id) {
                        if self.last_id != 0 && id != self.last_id + 1 {
                            self.id_breaks += 1;
                        }
                        self.last_id = id;
                    }
                    // Else a system line ("running on …", "exited with …").
                    if let Some((k, emitted)) = json_text(ev.data).and_then(parse_stamp) {
                        self.line(k, emitted, now, hist);
                    }
                }
                b"gap" => self.gaps += 1,
                b"end" => self.ended = true,
                _ => {}
            },
            System::Nchan => {
                if ev.data == b"end" {
                    self.ended = true;
                } else if let Some((k, emitted)) = parse_stamp(ev.data) {
                    self.line(k, emitted, now, hist);
                }
            }
        }
    }

    fn line(&mut self, k: u64, emitted: u64, now: u64, hist: &Histogram) {
        hist.record(emitted, now);
        if k < self.next_k {
            self.duplicates += 1;
            return;
        }
        self.missing += k - self.next_k;
        self.next_k = k + 1;
        self.received += 1;
        self.first_recv_ns = self.first_recv_ns.min(now);
        self.last_recv_ns = self.last_recv_ns.max(now);
        self.min_emit_ns = self.min_emit_ns.min(emitted);
        self.max_emit_ns = self.max_emit_ns.max(emitted);
    }
}

#[derive(Default)]
struct Shared {
    hist: Histogram,
    connected: AtomicUsize,
    notify: Notify,
}

impl Shared {
    fn mark_connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    async fn wait_connected(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.connected.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {n} subscribers connected after {timeout:?}",
                    self.connected.load(Ordering::Relaxed)
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), self.notify.notified()).await;
        }
        Ok(())
    }
}

/// One subscriber: reads its stream until the end (or the deadline).
/// opsdeck sends its opening `state` event at once, which marks the
/// subscriber connected; nchan counts as connected once its headers are in.
async fn subscriber(
    req: reqwest::RequestBuilder,
    system: System,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    deadline: Instant,
) -> SubStats {
    let mut st = SubStats::new();
    let mut permit = Some(permit);
    let mut connected = false;
    let connect = |permit: &mut Option<OwnedSemaphorePermit>| {
        permit.take();
        shared.mark_connected();
    };
    let resp = match req.send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            st.error = Some(format!("HTTP {}", r.status()));
            connect(&mut permit);
            return st;
        }
        Err(e) => {
            st.error = Some(format!("connect: {e}"));
            connect(&mut permit);
            return st;
        }
    };
    if system == System::Nchan {
        connected = true;
        connect(&mut permit);
    }
    let mut body = resp.bytes_stream();
    let mut parser = Parser::default();
    // One timer for the whole stream (not one per chunk).
    let reading = async {
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    st.error = Some(format!("read: {e}"));
                    break;
                }
            };
            let now = now_ns();
            if !connected {
                connected = true;
                connect(&mut permit);
            }
            parser.feed(&chunk, |ev| st.on_event(system, ev, now, &shared.hist));
            if st.ended {
                break;
            }
        }
    };
    if tokio::time::timeout_at(deadline, reading).await.is_err() {
        st.error = Some("timed out before the end of the stream".into());
    }
    if !connected {
        connect(&mut permit);
    }
    if !st.ended && st.error.is_none() {
        st.error = Some("the stream closed before its end".into());
    }
    st
}

/// Opens `n` subscriptions, at most `concurrency` connecting at once.
async fn open_subscribers(
    n: usize,
    concurrency: usize,
    system: System,
    shared: &Arc<Shared>,
    deadline: Instant,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Vec<tokio::task::JoinHandle<SubStats>>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await?;
        handles.push(tokio::spawn(subscriber(
            request(),
            system,
            shared.clone(),
            permit,
            deadline,
        )));
    }
    shared
        .wait_connected(n, Duration::from_secs(120))
        .await
        .context("opening the subscriptions")?;
    Ok(handles)
}

/// What the publisher (nchan) or the job (opsdeck) did, and the subscribers saw.
struct StepInput {
    rate: u64,
    total: u64,
    stats: Vec<SubStats>,
    client_cpu: f64,
    server_cpu: Option<f64>,
    /// Checks of the source itself (job state, publisher errors).
    source_problem: Option<String>,
    shared: Arc<Shared>,
}

pub async fn fanout(a: FanoutArgs) -> Result<()> {
    let api = Api::new(&ServerArgs {
        url: a.url.clone(),
        token: a.token.clone(),
    })?;
    if a.system == System::Opsdeck && a.token.is_empty() {
        bail!("fanout against opsdeck needs --token or OPSDECK_TOKEN");
    }
    let mut results: Vec<(u64, bool)> = Vec::new();
    let run = |rate: u64| {
        let api = api.clone();
        let a = &a;
        async move {
            let input = match a.system {
                System::Opsdeck => opsdeck_step(a, &api, rate).await?,
                System::Nchan => nchan_step(a, rate).await?,
            };
            let (value, pass) = summarize(a, input);
            crate::print_result(&value);
            Ok::<bool, anyhow::Error>(pass)
        }
    };
    if !a.rates.is_empty() {
        for &rate in &a.rates {
            let pass = run(rate).await?;
            results.push((rate, pass));
        }
    } else {
        let mut rate = a.start_rate;
        let first = run(rate).await?;
        results.push((rate, first));
        loop {
            rate = if first { rate * 2 } else { rate / 2 };
            if rate > a.max_rate || rate < a.min_rate {
                break;
            }
            let pass = run(rate).await?;
            results.push((rate, pass));
            if pass != first {
                break;
            }
        }
        // Once more between the best pass and the first failure above it.
        let best = results.iter().filter(|r| r.1).map(|r| r.0).max();
        let fail = results
            .iter()
            .filter(|r| !r.1 && best.is_none_or(|b| r.0 > b))
            .map(|r| r.0)
            .min();
        if let (Some(b), Some(f)) = (best, fail) {
            let mid = (b + f) / 2;
            if mid > b && f - b >= b / 4 {
                let pass = run(mid).await?;
                results.push((mid, pass));
            }
        }
    }
    let best = results.iter().filter(|r| r.1).map(|r| r.0).max();
    let first_fail = results
        .iter()
        .filter(|r| !r.1 && best.is_none_or(|b| r.0 > b))
        .map(|r| r.0)
        .min();
    let summary = json!({
        "bench": "fanout-summary",
        "system": a.system.name(),
        "subs": a.subs,
        "secs": a.secs,
        "best_rate": best,
        "lowest_failed_rate_above": first_fail,
        "tested": results.iter().map(|(r, p)| json!({"rate": r, "pass": p})).collect::<Vec<_>>(),
    });
    eprintln!(
        "fanout {} × {}: highest passing rate {}",
        a.system.name(),
        a.subs,
        best.map_or("none".to_string(), |b| format!("{b} lines/s"))
    );
    crate::print_result(&summary);
    Ok(())
}

/// One rate against opsdeck.
async fn opsdeck_step(a: &FanoutArgs, api: &Api, rate: u64) -> Result<StepInput> {
    let total = rate * a.secs;
    eprintln!(
        "fanout opsdeck: {} subscribers, {rate} lines/s for {} s …",
        a.subs, a.secs
    );
    // Keep the target busy so the emit job waits in the queue.
    let hold = job_id(&api.launch("hold", &a.target, json!({})).await?)?;
    api.wait_for(
        hold,
        Duration::from_millis(20),
        Duration::from_secs(30),
        |s| s == "running",
    )
    .await?;
    let job = job_id(
        &api.launch("emit", &a.target, json!({ "rate": rate, "secs": a.secs }))
            .await?,
    )?;
    let shared = Arc::new(Shared::default());
    let http = stream_client()?;
    let deadline = Instant::now() + Duration::from_secs(a.secs + 180);
    let path = format!("/api/jobs/{job}/events");
    let handles = open_subscribers(
        a.subs,
        a.connect_concurrency,
        System::Opsdeck,
        &shared,
        deadline,
        || api.request_on(&http, reqwest::Method::GET, &path),
    )
    .await?;
    let queued = api.job(job).await?;
    if queued["state"] != "queued" {
        bail!(
            "the emit job {job} is {} before the hold job was cancelled",
            queued["state"]
        );
    }
    let cpu = CpuMeter::start(a.server_pid);
    api.cancel(hold).await?;
    let mut stats = Vec::with_capacity(handles.len());
    for h in handles {
        stats.push(h.await.context("a subscriber task panicked")?);
    }
    let (client_cpu, server_cpu) = cpu.percent();
    let done = api
        .wait_finished(job, Duration::from_millis(50), Duration::from_secs(60))
        .await?;
    let source_problem = if done["state"] != "succeeded" {
        Some(format!("the emit job ended {}", done["state"]))
    } else if done["last_seq"].as_i64() != Some(total as i64 + 2) {
        Some(format!(
            "the emit job stored {} lines, expected {}",
            done["last_seq"],
            total + 2
        ))
    } else {
        None
    };
    Ok(StepInput {
        rate,
        total,
        stats,
        client_cpu,
        server_cpu,
        source_problem,
        shared,
    })
}

/// One rate against nchan.
async fn nchan_step(a: &FanoutArgs, rate: u64) -> Result<StepInput> {
    let total = rate * a.secs;
    eprintln!(
        "fanout nchan: {} subscribers, {rate} msgs/s for {} s …",
        a.subs, a.secs
    );
    let base = a.url.trim_end_matches('/').to_string();
    let channel = format!("fan-{}-{rate}-{}", a.subs, now_ns() / 1_000_000);
    let shared = Arc::new(Shared::default());
    let http = stream_client()?;
    let deadline = Instant::now() + Duration::from_secs(a.secs + 180);
    let sub_url = format!("{base}/sub?id={channel}");
    let handles = open_subscribers(
        a.subs,
        a.connect_concurrency,
        System::Nchan,
        &shared,
        deadline,
        || http.get(&sub_url).header("Accept", "text/event-stream"),
    )
    .await?;
    // Headers are in; wait until nchan counts every subscriber on the channel.
    let pub_url = format!("{base}/pub?id={channel}");
    let info_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = nchan_info(&http, &pub_url).await?;
        if info["subscribers"].as_u64().unwrap_or(0) >= a.subs as u64 {
            break;
        }
        if Instant::now() > info_deadline {
            bail!(
                "nchan reports {} subscribers, expected {}",
                info["subscribers"],
                a.subs
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = CpuMeter::start(a.server_pid);
    // The publisher runs on its own thread (and runtime), so the
    // subscribers' work does not delay its schedule.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let secs = a.secs;
    let publisher_url = pub_url.clone();
    std::thread::spawn(move || {
        let _ = tx.send(publish(&publisher_url, rate, secs));
    });
    let mut stats = Vec::with_capacity(handles.len());
    for h in handles {
        stats.push(h.await.context("a subscriber task panicked")?);
    }
    let (client_cpu, server_cpu) = cpu.percent();
    let published = rx.await.map_err(|_| anyhow!("the publisher thread died"))?;
    let _ = http.delete(&pub_url).send().await;
    let source_problem = match published {
        Ok(n) if n == total => None,
        Ok(n) => Some(format!("published {n} of {total} messages")),
        Err(e) => Some(format!("publisher: {e:#}")),
    };
    Ok(StepInput {
        rate,
        total,
        stats,
        client_cpu,
        server_cpu,
        source_problem,
        shared,
    })
}

/// nchan's channel info (`GET` on the publisher location).
async fn nchan_info(http: &reqwest::Client, pub_url: &str) -> Result<Value> {
    let resp = http
        .get(pub_url)
        .header("Accept", "text/json")
        .send()
        .await
        .context("nchan channel info")?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(json!({ "subscribers": 0 }));
    }
    crate::api::json_body(resp, 200, "nchan channel info").await
}

/// Publishes `<k> <unix nanos>` messages at `rate`/s for `secs` seconds,
/// one request at a time (so they stay in order), then `end`.
/// Returns how many line messages were published.
fn publish(pub_url: &str, rate: u64, secs: u64) -> Result<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("publisher runtime")?;
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .context("publisher client")?;
        let send = |body: String| {
            let req = http.post(pub_url).body(body);
            async move {
                let resp = req.send().await.context("publishing")?;
                let status = resp.status();
                let _ = resp.bytes().await;
                if !status.is_success() {
                    bail!("publishing: HTTP {status}");
                }
                Ok(())
            }
        };
        let total = rate * secs;
        let start = Instant::now();
        let mut next_tick = start;
        let mut k = 0u64;
        while k < total {
            let elapsed = start.elapsed().as_nanos();
            let due = (elapsed * rate as u128 / 1_000_000_000) as u64 + 1;
            while k < due.min(total) {
                k += 1;
                send(format!("{k} {}", now_ns())).await?;
            }
            next_tick += Duration::from_millis(1);
            let now = Instant::now();
            if next_tick > now {
                tokio::time::sleep_until(next_tick).await;
            } else {
                next_tick = now;
            }
        }
        send("end".to_string()).await?;
        Ok(k)
    })
}

/// One rate's result line, and whether it passed.
fn summarize(a: &FanoutArgs, input: StepInput) -> (Value, bool) {
    let StepInput {
        rate,
        total,
        stats,
        client_cpu,
        server_cpu,
        source_problem,
        shared,
    } = input;
    let subs = stats.len();
    let complete = stats
        .iter()
        .filter(|s| {
            s.ended
                && s.error.is_none()
                && s.received == total
                && s.duplicates == 0
                && s.missing == 0
                && s.id_breaks == 0
        })
        .count();
    let sum = |f: fn(&SubStats) -> u64| stats.iter().map(f).sum::<u64>();
    let (received, duplicates, missing) = (
        sum(|s| s.received),
        sum(|s| s.duplicates),
        sum(|s| s.missing),
    );
    let (id_breaks, gaps) = (sum(|s| s.id_breaks), sum(|s| s.gaps));
    let errors = stats.iter().filter(|s| s.error.is_some()).count();
    let first_error = stats.iter().find_map(|s| s.error.clone());
    let min_emit = stats.iter().map(|s| s.min_emit_ns).min().unwrap_or(0);
    let max_emit = stats.iter().map(|s| s.max_emit_ns).max().unwrap_or(0);
    let first_recv = stats.iter().map(|s| s.first_recv_ns).min().unwrap_or(0);
    let last_recv = stats.iter().map(|s| s.last_recv_ns).max().unwrap_or(0);
    // Line k is due (k-1)/rate after line 1.
    let achieved = if max_emit > min_emit && total > 1 {
        (total - 1) as f64 / ((max_emit - min_emit) as f64 / 1e9)
    } else {
        0.0
    };
    let delivered = if last_recv > first_recv {
        received as f64 / ((last_recv - first_recv) as f64 / 1e9)
    } else {
        0.0
    };
    let hist = &shared.hist;
    let (p50, p99, max) = (
        hist.percentile_ms(0.50),
        hist.percentile_ms(0.99),
        hist.max_ms(),
    );
    let mut why = Vec::new();
    // Wrong lines (repeated, missing, out of order) and lines that came too
    // late to count are told apart: the first breaks the contract, the
    // second is an overloaded server.
    let is_wrong = |s: &&SubStats| s.duplicates > 0 || s.missing > 0 || s.id_breaks > 0;
    let wrong = stats.iter().filter(is_wrong).count();
    if wrong > 0 {
        why.push(format!(
            "{wrong} of {subs} subscribers got a line twice, out of order or never"
        ));
    }
    if complete + wrong < subs {
        let reason = stats
            .iter()
            .filter(|s| !is_wrong(s))
            .find_map(|s| s.error.as_deref())
            .unwrap_or("the stream ended early");
        why.push(format!(
            "{} of {subs} subscribers did not get to the end ({reason})",
            subs - complete - wrong
        ));
    }
    if let Some(p) = &source_problem {
        why.push(p.clone());
    }
    if p99.is_nan() || p99 > a.p99_ms {
        why.push(format!("p99 {p99:.1} ms > {} ms", a.p99_ms));
    }
    if achieved < 0.97 * rate as f64 {
        why.push(format!(
            "lines were produced at {achieved:.0}/s, below 97 % of {rate}/s"
        ));
    }
    let pass = why.is_empty();
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let value = json!({
        "bench": "fanout",
        "system": a.system.name(),
        "subs": subs,
        "rate": rate,
        "secs": a.secs,
        "lines_per_sub": total,
        "subs_complete": complete,
        "subs_with_errors": errors,
        "first_error": first_error,
        "duplicates": duplicates,
        "missing": missing,
        "id_breaks": id_breaks,
        "gap_events": gaps,
        "latency_samples": hist.count(),
        "negative_latencies": hist.negative(),
        "p50_ms": round(p50),
        "p99_ms": round(p99),
        "max_ms": round(max),
        "produced_lines_per_s": round(achieved),
        "delivered_lines_per_s": round(delivered),
        "delivered_lines_per_s_per_sub": round(delivered / subs.max(1) as f64),
        "client_cpu_pct": round(client_cpu),
        "server_cpu_pct": server_cpu.map(round),
        "client_saturated": client_cpu >= 90.0,
        "pass": pass,
        "why": why,
    });
    eprintln!(
        "  {} × {subs} @ {rate}/s: {} complete, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, client CPU {client_cpu:.0} %, server CPU {} → {}",
        a.system.name(),
        complete,
        server_cpu.map_or("?".into(), |c| format!("{c:.0} %")),
        if pass { "pass".to_string() } else { format!("FAIL ({})", why.join("; ")) }
    );
    (value, pass)
}

// ---- resume -------------------------------------------------------------------

#[derive(clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A finished job with a long log.
    #[arg(long)]
    job: i64,
    #[arg(long, default_value_t = 999_000)]
    last_event_id: u64,
    #[arg(long, default_value_t = 100)]
    tries: usize,
}

pub async fn resume(a: ResumeArgs) -> Result<()> {
    let api = Api::new(&a.server)?;
    let job = api.job(a.job).await?;
    if job["finished_at"].is_null() {
        bail!("resume: job {} has not finished", a.job);
    }
    let http = stream_client()?;
    let path = format!("/api/jobs/{}/events", a.job);
    let mut samples = Vec::with_capacity(a.tries);
    for _ in 0..a.tries {
        let req = api
            .request_on(&http, reqwest::Method::GET, &path)
            .header("Last-Event-ID", a.last_event_id.to_string());
        let t0 = Instant::now();
        let resp = req.send().await.context("resume: request")?;
        if !resp.status().is_success() {
            bail!("resume: HTTP {}", resp.status());
        }
        let mut body = resp.bytes_stream();
        let mut parser = Parser::default();
        let mut first_id = None;
        while first_id.is_none() {
            let chunk = match body.next().await {
                Some(c) => c.context("resume: read")?,
                None => bail!("resume: the stream ended before any log event"),
            };
            parser.feed(&chunk, |ev| {
                if ev.event == b"log" && first_id.is_none() {
                    first_id = parse_u64(ev.id);
                }
            });
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if first_id != Some(a.last_event_id + 1) {
            bail!(
                "resume: the first log event has id {first_id:?}, expected {}",
                a.last_event_id + 1
            );
        }
        samples.push(ms);
        drop(body);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let (p50, p99) = (
        percentile_sorted(&samples, 0.5),
        percentile_sorted(&samples, 0.99),
    );
    eprintln!(
        "resume: first event after {p50:.2} ms (median), {p99:.2} ms (p99) over {} tries",
        a.tries
    );
    crate::print_result(&json!({
        "bench": "resume",
        "job": a.job,
        "job_last_seq": job["last_seq"],
        "last_event_id": a.last_event_id,
        "tries": a.tries,
        "min_ms": round(samples[0]),
        "p50_ms": round(p50),
        "p99_ms": round(p99),
        "max_ms": round(samples[samples.len() - 1]),
    }));
    Ok(())
}

// ---- idle streams ---------------------------------------------------------------

#[derive(clap::Args)]
pub struct IdleArgs {
    #[arg(long, value_enum)]
    system: System,
    #[arg(long)]
    url: String,
    #[arg(
        long,
        env = "OPSDECK_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// opsdeck: the running, silent job to follow.
    #[arg(long)]
    job: Option<i64>,
    /// nchan: the channel to follow.
    #[arg(long, default_value = "idle")]
    channel: String,
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Streams opened at once.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The process whose memory is measured (opsdeck, or nginx's worker).
    #[arg(long)]
    server_pid: u32,
}

pub async fn idle(a: IdleArgs) -> Result<()> {
    let api = Api::new(&ServerArgs {
        url: a.url.clone(),
        token: a.token.clone(),
    })?;
    let http = stream_client()?;
    let request = || match a.system {
        System::Opsdeck => api.request_on(
            &http,
            reqwest::Method::GET,
            &format!("/api/jobs/{}/events", a.job.unwrap_or(0)),
        ),
        System::Nchan => http
            .get(format!("{}/sub?id={}", api.base, a.channel))
            .header("Accept", "text/event-stream"),
    };
    if a.system == System::Opsdeck {
        let id = a
            .job
            .ok_or_else(|| anyhow!("idle against opsdeck needs --job"))?;
        let job = api.job(id).await?;
        if job["state"] != "running" {
            bail!("idle: job {id} is {}, not running", job["state"]);
        }
    }
    let every = Duration::from_millis(200);
    let rss_before = mean_rss_kib(a.server_pid, 5, every).await?;
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(a.streams);
    while held.len() < a.streams {
        let n = a.batch.min(a.streams - held.len());
        let batch = (0..n).map(|_| {
            let req = request();
            let system = a.system;
            async move {
                let mut resp = req.send().await.context("idle: connect")?;
                if !resp.status().is_success() {
                    bail!("idle: HTTP {}", resp.status());
                }
                // opsdeck sends the opening state event at once: the stream
                // is fully set up once it is here.
                if system == System::Opsdeck && resp.chunk().await?.is_none() {
                    bail!("idle: the stream closed at once");
                }
                Ok(resp)
            }
        });
        held.extend(futures::future::try_join_all(batch).await?);
    }
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = mean_rss_kib(a.server_pid, 5, every).await?;
    let counted = match a.system {
        System::Opsdeck => {
            let text = api
                .request(reqwest::Method::GET, "/metrics")
                .send()
                .await?
                .text()
                .await?;
            text.lines()
                .find_map(|l| l.strip_prefix("opsdeck_stream_subscribers "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        }
        System::Nchan => {
            let info = nchan_info(&http, &format!("{}/pub?id={}", api.base, a.channel)).await?;
            info["subscribers"].as_u64()
        }
    };
    let per_stream = (rss_after as f64 - rss_before as f64) * 1024.0 / a.streams as f64;
    eprintln!(
        "idle {}: {} streams open ({} counted by the server); RSS {:.1} → {:.1} MiB = {:.0} B per stream",
        a.system.name(),
        held.len(),
        counted.map_or("?".into(), |c| c.to_string()),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        per_stream
    );
    crate::print_result(&json!({
        "bench": "idle",
        "system": a.system.name(),
        "streams": held.len(),
        "counted_by_server": counted,
        "open_s": open_secs,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "bytes_per_stream": per_stream.round(),
    }));
    drop(held);
    Ok(())
}
