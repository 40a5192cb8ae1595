//! Retries (a template's `retry = { … }`, docs/automation.md): each
//! attempt is its own job linked to the first; the waits are honoured
//! (measured, on the real clock) also across a restart, which the engine
//! does not poll for (`poll_interval` is far longer than the waits here);
//! a cancel stops the chain.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::{fresh_database, Client, TestApp};

/// One local target; templates that fail, with retry policies. The poll
/// is slow on purpose: a retry must start when it is due, not when the
/// engine happens to look.
const CONFIG: &str = r#"
[jobs]
poll_interval = "60s"

[[targets]]
id = "t1"
kind = "local"

[[templates]]
id = "fails"
script = 'echo "attempt of job $OPSDECK_JOB_ID"; echo "no luck" >&2; exit 1'
exclusive = "none"
retry = { max = 2, backoff = "1s", factor = 2, max_delay = "10s", on = ["failed"] }

[[templates]]
id = "fails-then-hangs"
script = 'if [ -e "$1" ]; then echo hanging; sleep 60; fi; touch "$1"; exit 1'
args = ["{marker}"]
params = [{ name = "marker", type = "path", required = true }]
exclusive = "none"
retry = { max = 5, backoff = "300ms", on = ["failed"] }

[[templates]]
id = "waits"
script = 'echo "attempt of job $OPSDECK_JOB_ID"; exit 1'
exclusive = "none"
retry = { max = 1, backoff = "30s", on = ["failed"] }

[[templates]]
id = "restart-sensitive"
script = 'if [ -e "$1" ]; then echo "done"; exit 0; fi; touch "$1"; echo started; sleep 60'
args = ["{marker}"]
params = [{ name = "marker", type = "path", required = true }]
exclusive = "none"
retry = { max = 1, backoff = "5s", on = ["interrupted"] }
"#;

fn at(job: &Value, key: &str) -> DateTime<Utc> {
    job[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {job}"))
        .parse()
        .unwrap()
}

/// The jobs of `template`, oldest first.
async fn chain_of(client: &Client, template: &str) -> Vec<Value> {
    let (status, page) = client
        .get_json(&format!("/api/jobs?template={template}&limit=100"))
        .await;
    assert_eq!(status, 200, "{page}");
    let mut jobs = page["jobs"].as_array().unwrap().clone();
    jobs.reverse();
    jobs
}

/// Waits until `template` has `n` jobs; them, oldest first.
async fn wait_chain(client: &Client, template: &str, n: usize, secs: u64) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let jobs = chain_of(client, template).await;
        if jobs.len() >= n {
            return jobs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{template}: {} of {n} attempts after {secs} s: {jobs:?}",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_job_is_tried_three_times_with_growing_waits_and_its_page_shows_the_chain() {
    let app = TestApp::builder().config(CONFIG).start().await;
    let admin = app.admin().await;
    let first = admin.launch_ok("fails", "t1", json!({})).await;
    let launched = admin.job(first).await;
    assert_eq!(
        launched["attempt"],
        json!({"number": 1, "of": 3, "retry_of": null, "not_before": null})
    );

    let jobs = wait_chain(&admin, "fails", 3, 20).await;
    let last = admin
        .wait_finished(jobs[2]["id"].as_i64().unwrap(), 20)
        .await;
    let jobs = [&jobs[0], &jobs[1], &last];
    let ids: Vec<i64> = jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids[0], first);
    let mut finished = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let job = admin.wait_finished(*id, 20).await;
        assert_eq!(job["state"], "failed", "{job}");
        assert_eq!(job["attempt"]["number"], i + 1);
        assert_eq!(job["attempt"]["of"], 3);
        if i > 0 {
            assert_eq!(job["attempt"]["retry_of"], first, "linked to the first");
        }
        finished.push(job);
    }
    // The waits: 1 s, then 2 s (backoff × factor), from the end of the
    // attempt before to the start of the next; never early, and on time
    // although the engine polls only every minute.
    for (i, wait_ms) in [(1, 1_000), (2, 2_000)] {
        let waited = (at(&finished[i], "started_at") - at(&finished[i - 1], "finished_at"))
            .num_milliseconds();
        let not_before = at(&finished[i]["attempt"], "not_before");
        println!(
            "attempt {}: waited {waited} ms (backoff {wait_ms} ms)",
            i + 1
        );
        assert!(
            waited >= wait_ms,
            "attempt {} started early: {waited} ms",
            i + 1
        );
        assert!(at(&finished[i], "started_at") >= not_before);
        assert!(
            waited < wait_ms + 1_500,
            "attempt {} started {waited} ms after the one before, not when due",
            i + 1
        );
    }
    // max = 2: the third failure is the last; each failure says what follows.
    assert_eq!(chain_of(&admin, "fails").await.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        let lines = admin.all_lines(*id).await;
        let last = lines.last().unwrap()["text"].as_str().unwrap().to_string();
        if i < 2 {
            let says = format!(
                "attempt {} of 3 failed (failed): retrying as job {} in {}s, not before ",
                i + 1,
                ids[i + 1],
                i + 1
            );
            assert!(last.starts_with(&says), "{last}");
        } else {
            assert_eq!(last, "exited with code 1");
        }
    }
    // Each retry is audited as launched by opsdeck itself.
    let (_, audit) = admin.get_json("/api/audit?action=job.retry").await;
    let entries = audit["entries"].as_array().unwrap();
    for id in &ids[1..] {
        let subject = format!("job {id}");
        assert!(
            entries
                .iter()
                .any(|e| e["actor"] == "system" && e["subject"] == subject.as_str()),
            "{subject} is audited as a retry by system: {audit}"
        );
    }
    // The page of the middle attempt lists the whole chain.
    let html = admin
        .get(&format!("/jobs/{}", ids[1]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (i, id) in ids.iter().enumerate() {
        let n = i + 1;
        assert!(
            html.contains(&format!("data-attempt=\"{n}\"")),
            "attempt {n} is listed"
        );
        if i != 1 {
            assert!(
                html.contains(&format!("href=\"/jobs/{id}\"")),
                "attempt {n} links to job {id}"
            );
        }
    }
    assert!(html.contains("Attempt 3 of 3"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_cancel_stops_the_chain_while_it_waits_and_while_it_runs() {
    let app = TestApp::builder().config(CONFIG).start().await;
    let admin = app.admin().await;

    // Waiting its backoff: the retry is a queued job; cancelling it ends
    // the chain.
    let first = admin.launch_ok("waits", "t1", json!({})).await;
    let jobs = wait_chain(&admin, "waits", 2, 20).await;
    let retry = jobs[1]["id"].as_i64().unwrap();
    assert_eq!(jobs[1]["state"], "queued");
    assert_eq!(admin.job(first).await["state"], "failed");
    let (status, cancelled) = admin
        .post_json(&format!("/api/jobs/{retry}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["started_at"], Value::Null, "it never ran");

    // Running: a cancelled attempt is not a failure, and nothing follows.
    let marker = app.dir.path().join("hang-marker");
    let marker = marker.to_str().unwrap();
    admin
        .launch_ok("fails-then-hangs", "t1", json!({"marker": marker}))
        .await;
    let jobs = wait_chain(&admin, "fails-then-hangs", 2, 20).await;
    let second = jobs[1]["id"].as_i64().unwrap();
    admin
        .wait_job(second, 20, |j| {
            j["state"] == "running" && j["last_seq"].as_i64() >= Some(2)
        })
        .await;
    let (status, body) = admin
        .post_json(&format!("/api/jobs/{second}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let ended = admin.wait_finished(second, 20).await;
    assert_eq!(ended["state"], "cancelled");
    // N.B.: the next attempt would be created in the same transaction as
    // this end: none exists now, so none ever will.
    let all = chain_of(&admin, "fails-then-hangs").await;
    assert_eq!(all.len(), 2, "the chain stopped: {all:?}");
    let (_, audit) = admin.get_json("/api/audit?action=job.retry").await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        2,
        "one retry per chain: {audit}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_job_interrupted_by_a_restart_is_retried_on_time_by_the_next_server() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _pg) = fresh_database(dir.path()).await;
    let marker = dir.path().join("restart-marker");
    let marker = marker.to_str().unwrap().to_string();

    let app = TestApp::builder()
        .config(CONFIG)
        .database_url(&url)
        .start()
        .await;
    let admin = app.admin_bearer().await;
    let first = admin
        .launch_ok("restart-sensitive", "t1", json!({"marker": marker}))
        .await;
    admin
        .wait_job(first, 20, |j| {
            j["state"] == "running" && j["last_seq"].as_i64() >= Some(2)
        })
        .await;
    // The server stops while the job runs: the job is interrupted (not
    // its own failure), which this template retries, 5 s later.
    app.stop().await;

    let app = TestApp::builder()
        .config(CONFIG)
        .database_url(&url)
        .start()
        .await;
    let admin = Client {
        base: app.url(""),
        ..admin
    };
    let interrupted = admin.job(first).await;
    assert_eq!(interrupted["state"], "failed");
    assert!(
        interrupted["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{interrupted}"
    );
    let jobs = chain_of(&admin, "restart-sensitive").await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let retry = jobs[1]["id"].as_i64().unwrap();
    let not_before = at(&jobs[1]["attempt"], "not_before");
    let done = admin.wait_finished(retry, 20).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let late = (at(&done, "started_at") - not_before).num_milliseconds();
    println!("the retry started {late} ms after it was due");
    assert!(late >= 0, "it started {late} ms early");
    assert!(
        late < 1_500,
        "the new server started it {late} ms after it was due, not when due"
    );
    assert_eq!(chain_of(&admin, "restart-sensitive").await.len(), 2);
    app.stop().await;
}
