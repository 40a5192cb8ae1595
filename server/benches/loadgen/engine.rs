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
//!   job succeeded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::api::{job_id, time_field, Api, ServerArgs};
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

pub async fn queue(a: QueueArgs) -> Result<()> {
    let api = Api::new(&a.server)?;
    let t0 = Instant::now();
    let first_enqueue = Utc::now();
    let ids: Vec<i64> = futures::stream::iter(0..a.jobs)
        .map(|_| {
            let api = api.clone();
            let (template, target) = (a.template.clone(), a.target.clone());
            async move { job_id(&api.launch(&template, &target, json!({})).await?) }
        })
        .buffer_unordered(a.concurrency)
        .try_collect()
        .await?;
    let enqueue_secs = t0.elapsed().as_secs_f64();
    // Wait until nothing is left to run.
    loop {
        let page = api
            .get_json("/api/jobs?state=queued,running,cancelling&limit=1")
            .await?;
        if page["jobs"].as_array().is_none_or(|j| j.is_empty()) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1200) {
            bail!("jobs still queued or running after 20 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen_done_secs = t0.elapsed().as_secs_f64();
    // Every job, for its final state and finish time.
    let ours: HashSet<i64> = ids.iter().copied().collect();
    let (mut succeeded, mut other, mut seen) = (0usize, 0usize, 0usize);
    let mut last_finished = first_enqueue;
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
            seen += 1;
            if job["state"] == "succeeded" {
                succeeded += 1;
            } else {
                other += 1;
            }
            let f = time_field(job, "finished_at").context("a job without finished_at")?;
            last_finished = last_finished.max(f);
        }
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    if seen != a.jobs || succeeded != a.jobs {
        bail!(
            "queue: {seen} of {} jobs listed, {succeeded} succeeded, {other} did not",
            a.jobs
        );
    }
    let secs = (last_finished - first_enqueue)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    let result = json!({
        "bench": "queue",
        "jobs": a.jobs,
        "concurrency": a.concurrency,
        "enqueue_s": enqueue_secs,
        "first_enqueue_to_last_finished_s": secs,
        "jobs_per_s": a.jobs as f64 / secs,
        "client_seen_done_s": seen_done_secs,
        "succeeded": succeeded,
    });
    eprintln!(
        "queue: {} jobs in {secs:.3} s = {:.0} jobs/s (all enqueued after {enqueue_secs:.3} s)",
        a.jobs,
        a.jobs as f64 / secs
    );
    crate::print_result(&result);
    Ok(())
}
