//! The job engine benchmarks.
//!
//! - `ingest`: launches one job that prints N lines (the `ingest` template
//!   of bench/run.sh's config: awk printing 80-byte lines), waits for it to
//!   finish, and reports N / (finished_at − started_at), the server's own
//!   timestamps of claim and finish (the log writer commits every line
//!   before the job is finished). It checks that every line is stored:
//!   `last_seq` = N + 2 (opsdeck's "running on …" and "exited with code 0"
//!   lines), and the last lines read back through the log API are the
//!   expected ones. Meanwhile a thread samples the server's VmRSS every 20 ms.
//! - `queue`: enqueues N jobs running `true` through the API, C requests in
//!   flight, waits until none is queued or running, and reports N / (last
//!   `finished_at` − the moment of the first enqueue), checking that every
//!   job succeeded. With `--also-url` the launches go round-robin over
//!   several replicas of one server (one database).
//! - `latency`: launches N jobs at a fixed rate (each launch on time, however
//!   long the one before takes), waits for all, and reports the percentiles
//!   of `started_at` − `created_at`: the server's own timestamps of enqueue
//!   and claim, so neither the HTTP round trip nor the load generator's
//!   polling is counted. Replicas as for `queue`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::api::{job_id, time_field, Api, ServerArgs};
use crate::stats::percentile_sorted;
use crate::sys::{rss_kib, RssSampler};

#[derive(clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long, default_value = "ingest")]
    template: String,
    #[arg(long, default_value = "engine")]
    target: String,
    /// Lines the template prints.
    #[arg(long, default_value_t = 1_000_000)]
    lines: i64,
    /// The server's pid, for its RSS.
    #[arg(long)]
    server_pid: u32,
    /// A label for this run (1, 2, 3).
    #[arg(long, default_value_t = 1)]
    run: u32,
}

pub async fn ingest(a: IngestArgs) -> Result<()> {
    let api = Api::new(&a.server)?;
    let rss_before = rss_kib(a.server_pid)?;
    let sampler = RssSampler::start(a.server_pid, Duration::from_millis(20));
    let t0 = Instant::now();
    let job = api.launch(&a.template, &a.target, json!({})).await?;
    let id = job_id(&job)?;
    let done = api
        .wait_finished(id, Duration::from_millis(20), Duration::from_secs(900))
        .await;
    let client_secs = t0.elapsed().as_secs_f64();
    let (peak_kib, samples) = sampler.finish();
    let done = done?;
    if done["state"] != "succeeded" {
        bail!("ingest job {id} ended {}: {done}", done["state"]);
    }
    let last_seq = done["last_seq"].as_i64().unwrap_or(0);
    let expected = a.lines + 2;
    if last_seq != expected {
        bail!("ingest job {id}: last_seq {last_seq}, expected {expected} (lines lost?)");
    }
    // The last payload line and the exit line, read back from the database.
    let page = api
        .get_json(&format!(
            "/api/jobs/{id}/log?after={}&limit=10",
            a.lines - 1
        ))
        .await?;
    let texts: Vec<&str> = page["lines"]
        .as_array()
        .map(|ls| ls.iter().filter_map(|l| l["text"].as_str()).collect())
        .unwrap_or_default();
    let want_last = format!("{:079}", a.lines);
    if texts.len() != 3 || texts[1] != want_last || !texts[2].starts_with("exited with code 0") {
        bail!("ingest job {id}: unexpected end of log: {texts:?}");
    }
    let started = time_field(&done, "started_at")?;
    let finished = time_field(&done, "finished_at")?;
    let created = time_field(&done, "created_at")?;
    let secs = (finished - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let result = json!({
        "bench": "ingest",
        "run": a.run,
        "job": id,
        "lines": a.lines,
        "last_seq": last_seq,
        "claim_to_finish_s": secs,
        "lines_per_s": a.lines as f64 / secs,
        "created_to_claim_ms": (started - created).num_microseconds().unwrap_or(0) as f64 / 1e3,
        "client_launch_to_seen_finished_s": client_secs,
        "rss_before_kib": rss_before,
        "peak_rss_kib": peak_kib,
        "rss_samples": samples,
    });
    eprintln!(
        "ingest run {}: {} lines in {secs:.3} s = {:.0} lines/s, peak RSS {:.1} MiB",
        a.run,
        a.lines,
        a.lines as f64 / secs,
        peak_kib as f64 / 1024.0
    );
    crate::print_result(&result);
    Ok(())
}

#[derive(clap::Args)]
pub struct QueueArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Another replica of the same server (same database and token); the
    /// launches go round-robin over `--url` and these.
    #[arg(long = "also-url")]
    also_url: Vec<String>,
    #[arg(long, default_value = "true")]
    template: String,
    #[arg(long, default_value = "engine")]
    target: String,
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    /// Enqueue requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// One client per replica: `--url` first, then every `--also-url`.
fn replicas(server: &ServerArgs, also: &[String]) -> Result<Vec<Api>> {
    let first = Api::new(server)?;
    let mut apis: Vec<Api> = also.iter().map(|u| first.at(u)).collect();
    apis.insert(0, first);
    Ok(apis)
}

pub async fn queue(a: QueueArgs) -> Result<()> {
    let apis = replicas(&a.server, &a.also_url)?;
    let t0 = Instant::now();
    let first_enqueue = Utc::now();
    let ids: Vec<i64> = futures::stream::iter(0..a.jobs)
        .map(|i| {
            let api = apis[i % apis.len()].clone();
            let (template, target) = (a.template.clone(), a.target.clone());
            async move { job_id(&api.launch(&template, &target, json!({})).await?) }
        })
        .buffer_unordered(a.concurrency)
        .try_collect()
        .await?;
    let enqueue_secs = t0.elapsed().as_secs_f64();
    wait_idle(&apis[0], t0).await?;
    let seen_done_secs = t0.elapsed().as_secs_f64();
    let jobs = finished_jobs(&apis[0], &ids).await?;
    let mut last_finished = first_enqueue;
    for job in &jobs {
        let f = time_field(job, "finished_at").context("a job without finished_at")?;
        last_finished = last_finished.max(f);
    }
    let secs = (last_finished - first_enqueue)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    let result = json!({
        "bench": "queue",
        "jobs": a.jobs,
        "replicas": apis.len(),
        "concurrency": a.concurrency,
        "enqueue_s": enqueue_secs,
        "first_enqueue_to_last_finished_s": secs,
        "jobs_per_s": a.jobs as f64 / secs,
        "client_seen_done_s": seen_done_secs,
        "succeeded": jobs.len(),
    });
    eprintln!(
        "queue: {} jobs over {} replica(s) in {secs:.3} s = {:.0} jobs/s (all enqueued after {enqueue_secs:.3} s)",
        a.jobs,
        apis.len(),
        a.jobs as f64 / secs
    );
    crate::print_result(&result);
    Ok(())
}

#[derive(clap::Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Another replica of the same server; launches go round-robin.
    #[arg(long = "also-url")]
    also_url: Vec<String>,
    #[arg(long, default_value = "true")]
    template: String,
    #[arg(long, default_value = "engine")]
    target: String,
    #[arg(long, default_value_t = 500)]
    jobs: usize,
    /// Launches per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
}

pub async fn latency(a: LatencyArgs) -> Result<()> {
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a positive number of launches per second");
    }
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let apis = replicas(&a.server, &a.also_url)?;
    let t0 = Instant::now();
    let start = tokio::time::Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut ids = Vec::with_capacity(a.jobs);
    for i in 0..a.jobs {
        let due = start + Duration::from_secs_f64(i as f64 / a.rate);
        // N.B.: launches are not awaited one by one: a slow answer must not
        // push the next launch back (that would lower the rate exactly when
        // the server is slow, hiding its latency).
        loop {
            tokio::select! {
                biased;
                done = pending.next(), if !pending.is_empty() => {
                    if let Some(id) = done {
                        ids.push(id?);
                    }
                }
                () = tokio::time::sleep_until(due) => break,
            }
        }
        let api = apis[i % apis.len()].clone();
        let (template, target) = (a.template.clone(), a.target.clone());
        pending.push(async move { job_id(&api.launch(&template, &target, json!({})).await?) });
    }
    while let Some(id) = pending.next().await {
        ids.push(id?);
    }
    let launch_secs = t0.elapsed().as_secs_f64();
    wait_idle(&apis[0], t0).await?;
    let jobs = finished_jobs(&apis[0], &ids).await?;
    let mut ms = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let created = time_field(job, "created_at")?;
        let started = time_field(job, "started_at")?;
        ms.push((started - created).num_microseconds().unwrap_or(0) as f64 / 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let result = json!({
        "bench": "latency",
        "jobs": a.jobs,
        "replicas": apis.len(),
        "rate": a.rate,
        "launch_s": launch_secs,
        "p50_ms": percentile_sorted(&ms, 0.50),
        "p99_ms": percentile_sorted(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
        "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64,
    });
    eprintln!(
        "latency: {} jobs at {}/s over {} replica(s): created → started p50 {:.2} ms, p99 {:.2} ms",
        a.jobs,
        a.rate,
        apis.len(),
        percentile_sorted(&ms, 0.50),
        percentile_sorted(&ms, 0.99)
    );
    crate::print_result(&result);
    Ok(())
}

/// Waits until nothing is queued, running or cancelling (20 minutes at most).
async fn wait_idle(api: &Api, t0: Instant) -> Result<()> {
    loop {
        let page = api
            .get_json("/api/jobs?state=queued,running,cancelling&limit=1")
            .await?;
        if page["jobs"].as_array().is_none_or(|j| j.is_empty()) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(1200) {
            bail!("jobs still queued or running after 20 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The documents of the jobs `ids`, read back through the job list; an
/// error unless every one of them is listed and succeeded.
async fn finished_jobs(api: &Api, ids: &[i64]) -> Result<Vec<Value>> {
    let ours: HashSet<i64> = ids.iter().copied().collect();
    let (mut jobs, mut other) = (Vec::with_capacity(ids.len()), 0usize);
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/jobs?limit=500&before={b}"),
            None => "/api/jobs?limit=500".to_string(),
        };
        let page = api.get_json(&path).await?;
        for job in page["jobs"].as_array().into_iter().flatten() {
            if !ours.contains(&job_id(job)?) {
                continue;
            }
            if job["state"] == "succeeded" {
                jobs.push(job.clone());
            } else {
                other += 1;
            }
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    if jobs.len() != ids.len() {
        bail!(
            "{} of {} jobs listed as succeeded, {other} did not succeed",
            jobs.len(),
            ids.len()
        );
    }
    Ok(jobs)
}
