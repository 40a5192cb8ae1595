//! The job engine against a real server, real SQLite file and real
//! subprocesses: every outcome, exclusivity, log integrity and hygiene,
//! cancellation of whole process trees, timeouts, recovery, retention.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::support::*;

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// The job's process group, once its process has started.
async fn pgid_of(app: &TestApp, id: i64) -> i32 {
    for _ in 0..200 {
        if let Some(pgid) = server::db::jobs::by_id(&app.state.db, id)
            .await
            .unwrap()
            .unwrap()
            .pgid
        {
            return pgid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never recorded its process group")
}

#[tokio::test]
async fn a_job_runs_and_succeeds_with_its_output_stored_in_order() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 5})).await;
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["owner"], "alice");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    let lines = e.alice.all_lines(id).await;
    assert_eq!(texts(&lines, "stdout"), ["1", "2", "3", "4", "5"]);
    let system = texts(&lines, "system");
    assert_eq!(system.first().unwrap(), "running on t1: seq 1 5");
    assert_eq!(system.last().unwrap(), "exited with code 0");
    assert_eq!(job["last_seq"], lines.len() as i64);
}

#[tokio::test]
async fn exit_codes_give_failed_or_succeeded_with_warnings() {
    let e = EngineApp::start().await;
    let warn = e.alice.launch_ok("exit", "t1", json!({"code": 3})).await;
    let fail = e.alice.launch_ok("exit", "t1", json!({"code": 2})).await;
    let warn = e.alice.wait_finished(warn, 20).await;
    assert_eq!(
        (
            warn["state"].as_str(),
            warn["warnings"].as_bool(),
            warn["exit_code"].as_i64()
        ),
        (Some("succeeded"), Some(true), Some(3))
    );
    let fail = e.alice.wait_finished(fail, 20).await;
    assert_eq!(
        (fail["state"].as_str(), fail["exit_code"].as_i64()),
        (Some("failed"), Some(2))
    );
    assert_eq!(fail["error"], "exited with code 2");
    let lines = e.alice.all_lines(fail["id"].as_i64().unwrap()).await;
    assert_eq!(texts(&lines, "stderr"), ["something went wrong"]);
}

#[tokio::test]
async fn a_program_that_cannot_start_fails_with_a_clear_error() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("missing", "t1", json!({})).await;
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("/nonexistent/program") && error.contains("PATH"),
        "{error}"
    );
    assert!(texts(&e.alice.all_lines(id).await, "system")
        .iter()
        .any(|l| l.contains("cannot start")));
}

#[tokio::test]
async fn jobs_on_one_target_never_overlap() {
    let e = EngineApp::start().await;
    let ids = [
        e.alice.launch_ok("sleep", "t1", json!({"s": "0.3"})).await,
        e.alice.launch_ok("sleep", "t1", json!({"s": "0.3"})).await,
        e.alice.launch_ok("sleep", "t1", json!({"s": "0.3"})).await,
    ];
    let mut spans = Vec::new();
    for id in ids {
        let j = e.alice.wait_finished(id, 30).await;
        assert_eq!(j["state"], "succeeded");
        spans.push((time(&j["started_at"]), time(&j["finished_at"])));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap on one target: {w:?}");
    }
    // Oldest first.
    let first = e.alice.job(ids[0]).await;
    let last = e.alice.job(ids[2]).await;
    assert!(time(&first["started_at"]) < time(&last["started_at"]));
}

#[tokio::test]
async fn jobs_on_different_targets_run_together() {
    let e = EngineApp::start().await;
    let a = e.alice.launch_ok("sleep", "t1", json!({"s": "1"})).await;
    let b = e.alice.launch_ok("sleep", "t2", json!({"s": "1"})).await;
    let c = e.bob.launch_ok("sleep", "t3", json!({"s": "1"})).await;
    let a = e.admin.wait_finished(a, 30).await;
    let b = e.admin.wait_finished(b, 30).await;
    let c = e.admin.wait_finished(c, 30).await;
    let latest_start = [&a, &b, &c]
        .iter()
        .map(|j| time(&j["started_at"]))
        .max()
        .unwrap();
    let earliest_end = [&a, &b, &c]
        .iter()
        .map(|j| time(&j["finished_at"]))
        .min()
        .unwrap();
    assert!(
        latest_start < earliest_end,
        "all three ran at the same time"
    );
}

#[tokio::test]
async fn a_global_job_runs_alone_and_holds_back_younger_jobs() {
    let e = EngineApp::start().await;
    let before = e.alice.launch_ok("sleep", "t1", json!({"s": "0.6"})).await;
    let global = e
        .admin
        .launch_ok("sleep-global", "t2", json!({"s": "0.6"}))
        .await;
    let after = e.bob.launch_ok("sleep", "t3", json!({"s": "0.3"})).await;
    let before = e.admin.wait_finished(before, 30).await;
    let global = e.admin.wait_finished(global, 30).await;
    let after = e.admin.wait_finished(after, 30).await;
    assert!(
        time(&before["finished_at"]) <= time(&global["started_at"]),
        "the global job waited for the running one"
    );
    assert!(
        time(&global["finished_at"]) <= time(&after["started_at"]),
        "the younger job waited for the global one"
    );
}

#[tokio::test]
async fn seqs_are_contiguous_and_complete_with_interleaved_stdout_and_stderr() {
    let e = EngineApp::start().await;
    let n = 5000;
    let id = e.alice.launch_ok("interleave", "t1", json!({"n": n})).await;
    let job = e.alice.wait_finished(id, 60).await;
    assert_eq!(job["state"], "succeeded");
    let lines = e.alice.all_lines(id).await;
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "1, 2, 3, … with no gap"
    );
    assert_eq!(job["last_seq"], seqs.len() as i64);
    let expected_out: Vec<String> = (1..=n).map(|i| format!("out {i}")).collect();
    let expected_err: Vec<String> = (1..=n).map(|i| format!("err {i}")).collect();
    assert_eq!(texts(&lines, "stdout"), expected_out);
    assert_eq!(texts(&lines, "stderr"), expected_err);
}

#[tokio::test]
async fn a_million_line_job_is_stored_completely() {
    let e = EngineApp::start().await;
    let id = e
        .alice
        .launch_ok("seq", "t1", json!({"n": 1_000_000}))
        .await;
    let job = e.alice.wait_finished(id, 180).await;
    assert_eq!(job["state"], "succeeded");
    // 1,000,000 output lines and two system lines.
    assert_eq!(job["last_seq"], 1_000_002);
    let text = e
        .alice
        .get(&format!("/api/jobs/{id}/log?format=text"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        text.headers()["content-disposition"],
        format!("attachment; filename=\"job-{id}-seq.log\"")
    );
    let body = text.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 1_000_002);
    assert_eq!(lines[1], "1");
    assert_eq!(lines[1_000_000], "1000000");
    assert!(lines
        .iter()
        .skip(1)
        .take(1_000_000)
        .enumerate()
        .all(|(i, l)| *l == (i + 1).to_string()));
}

#[tokio::test]
async fn output_hygiene_replaces_bad_utf8_keeps_what_a_terminal_shows_and_ends_partial_lines() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("bytes", "t1", json!({})).await;
    e.alice.wait_finished(id, 20).await;
    let out = texts(&e.alice.all_lines(id).await, "stdout");
    assert_eq!(
        out,
        [
            "ok \u{fffd}\u{fffd} end",
            "nul \u{fffd} byte",
            "done",
            "no newline at the end"
        ]
    );
}

#[tokio::test]
async fn tabs_and_backslashes_in_large_batches_are_stored_as_printed() {
    // N.B.: the 151 lines before the pause commit as one batch, the 100
    // after it (most likely) with the job's end: both large enough for
    // `COPY` on PostgreSQL, whose text format gives tab and backslash a
    // meaning.
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("escapes", "t1", json!({})).await;
    e.alice.wait_finished(id, 20).await;
    let out = texts(&e.alice.all_lines(id).await, "stdout");
    let mut want: Vec<String> = (1..=150).map(|i| format!("{i}\ttab back\\slash")).collect();
    want.push("\\.".into());
    want.extend((1..=100).map(|i| format!("end\ttab {i}")));
    assert_eq!(out, want);
}

#[tokio::test]
async fn a_ten_megabyte_line_without_newline_is_split_and_kept_whole() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("longline", "t1", json!({})).await;
    let job = e.alice.wait_finished(id, 60).await;
    assert_eq!(job["state"], "succeeded");
    let out = texts(&e.alice.all_lines(id).await, "stdout");
    assert!(out.iter().all(|l| l.len() <= 64 * 1024));
    assert_eq!(out.iter().map(String::len).sum::<usize>(), 10_000_000);
    assert_eq!(out.len(), 10_000_000usize.div_ceil(64 * 1024));
}

#[tokio::test]
async fn progress_is_parsed_and_stored_on_the_job() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("progress", "t1", json!({})).await;
    let running = e
        .alice
        .wait_job(id, 20, |j| j["progress"]["percent"] == 25.0)
        .await;
    assert_eq!(running["progress"]["message"], "quarter");
    assert_eq!(running["state"], "running");
    let done = e.alice.wait_finished(id, 20).await;
    assert_eq!(done["progress"]["percent"], 100.0);
    assert_eq!(done["progress"]["message"], "all done");
}

#[tokio::test]
async fn cancelling_a_queued_job_cancels_it_at_once() {
    let e = EngineApp::start().await;
    let running = e.alice.launch_ok("sleep", "t1", json!({"s": "2"})).await;
    e.alice
        .wait_job(running, 20, |j| j["state"] == "running")
        .await;
    let queued = e.alice.launch_ok("sleep", "t1", json!({"s": "2"})).await;
    assert_eq!(e.alice.job(queued).await["state"], "queued");
    let (status, job) = e
        .alice
        .post_json(&format!("/api/jobs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["cancel_requested_by"], "alice");
    assert_eq!(
        texts(&e.alice.all_lines(queued).await, "system"),
        ["cancelled by alice before it started"]
    );
    // A finished job cannot be cancelled.
    let (status, body) = e
        .alice
        .post_json(&format!("/api/jobs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn cancelling_a_running_job_kills_its_process_group() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("sleep", "t1", json!({"s": "60"})).await;
    e.alice.wait_job(id, 20, |j| j["state"] == "running").await;
    let pgid = pgid_of(&e.app, id).await;
    assert!(group_has_members(pgid));
    let (status, job) = e
        .admin
        .post_json(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    assert!(
        matches!(job["state"].as_str(), Some("cancelling" | "cancelled")),
        "{job}"
    );
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["cancel_requested_by"], "admin");
    assert!(!group_has_members(pgid), "no process of the job is left");
    let system = texts(&e.alice.all_lines(id).await, "system");
    assert!(
        system
            .iter()
            .any(|l| l.starts_with("cancel requested by admin: sending SIGTERM")),
        "{system:?}"
    );
    assert!(
        system.last().unwrap().starts_with("cancelled"),
        "{system:?}"
    );
}

#[tokio::test]
async fn cancelling_a_job_whose_children_ignore_sigterm_leaves_no_process_behind() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("stubborn", "t1", json!({})).await;
    e.alice
        .wait_job(id, 20, |j| {
            j["state"] == "running" && j["last_seq"].as_i64() >= Some(2)
        })
        .await;
    let pgid = pgid_of(&e.app, id).await;
    let (status, _) = e
        .alice
        .post_json(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "cancelled");
    assert!(!group_has_members(pgid), "sh and both sleeps are gone");
    let system = texts(&e.alice.all_lines(id).await, "system");
    assert!(
        system.iter().any(|l| l.contains("sending SIGKILL")),
        "escalated to SIGKILL: {system:?}"
    );
}

#[tokio::test]
async fn a_job_that_outlives_its_timeout_is_killed_and_fails() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("timeout", "t1", json!({})).await;
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"], "timed out after 1s");
    let started = time(&job["started_at"]);
    let finished = time(&job["finished_at"]);
    assert!((finished - started).num_milliseconds() < 5000);
}

#[tokio::test]
async fn processes_left_behind_by_a_finished_main_process_are_killed() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("leftover", "t1", json!({})).await;
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "succeeded");
    assert!(!group_has_members(pgid_of(&e.app, id).await));
    let system = texts(&e.alice.all_lines(id).await, "system");
    assert!(
        system
            .iter()
            .any(|l| l.contains("still run: sending SIGTERM")),
        "{system:?}"
    );
}

#[tokio::test]
async fn a_log_over_its_byte_cap_keeps_head_and_tail_and_marks_the_gap() {
    let e = EngineApp::start().await;
    let id = e
        .alice
        .launch_ok("capped", "t1", json!({"n": 100000}))
        .await;
    let job = e.alice.wait_finished(id, 60).await;
    assert_eq!(job["state"], "succeeded");
    let gap = &job["omitted"];
    assert!(gap.is_object(), "{job}");
    let lines = e.alice.all_lines(id).await;
    let out = texts(&lines, "stdout");
    // The head: the first lines up to the cap.
    assert_eq!(out[0], "1");
    // The tail: the last 100 lines of the log (99 of output, then the exit line).
    let marker_at = lines
        .iter()
        .position(|l| l["text"].as_str().unwrap().contains("omitted here"))
        .expect("marker");
    let tail = &lines[marker_at + 1..];
    assert_eq!(tail.len(), 100);
    let tail_out: Vec<String> = (99902..=100000).map(|i| i.to_string()).collect();
    assert_eq!(texts(tail, "stdout"), tail_out);
    assert_eq!(tail.last().unwrap()["text"], "exited with code 0");
    let marker = &lines[marker_at];
    assert_eq!(marker["stream"], "system");
    assert_eq!(
        marker["seq"].as_i64().unwrap() + 1,
        gap["from"].as_i64().unwrap()
    );
    // Seqs jump exactly over the omitted range.
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    let jump = seqs
        .windows(2)
        .find(|w| w[1] != w[0] + 1)
        .expect("one jump");
    assert_eq!(
        (jump[0] + 1, jump[1] - 1),
        (gap["from"].as_i64().unwrap(), gap["to"].as_i64().unwrap())
    );
    let stored: usize = lines
        .iter()
        .map(|l| l["text"].as_str().unwrap().len())
        .sum();
    assert!(stored <= 64 * 1024 + 4096, "stored {stored} bytes");
}

#[tokio::test]
async fn every_parameter_type_refuses_bad_input_naming_the_field() {
    let e = EngineApp::start().await;
    let good = json!({"name": "abc", "colour": "red", "count": 3, "loud": true, "dir": "/srv"});
    assert_eq!(e.alice.launch("types", "t1", good.clone()).await.0, 201);
    let cases = [
        ("name", json!("ABC"), "must match the pattern"),
        ("name", json!(""), "is required"),
        ("colour", json!("blue"), "must be one of: red, green"),
        ("count", json!(9), "must be at most 5"),
        ("count", json!(0), "must be at least 1"),
        ("count", json!("three"), "whole number"),
        ("loud", json!("maybe"), "true or false"),
        ("dir", json!("relative/path"), "absolute path"),
        ("dir", json!("/srv/../etc"), "`..`"),
    ];
    for (field, value, message) in cases {
        let mut params = good.clone();
        params[field] = value.clone();
        let (status, body) = e.alice.launch("types", "t1", params).await;
        assert_eq!(status, 400, "{field}={value}: {body}");
        assert_eq!(body["field"], field, "{field}={value}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(message),
            "{field}={value}: {body}"
        );
    }
    let mut extra = good.clone();
    extra["evil"] = json!("x");
    assert_eq!(
        e.alice.launch("types", "t1", extra).await.1["field"],
        "evil"
    );
    let (s, b) = e.alice.launch("no-such", "t1", json!({})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("template")));
    let (s, b) = e.alice.launch("seq", "no-such", json!({})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("target")));
    // bob does not own t1: to him it does not exist.
    let (s, b) = e.bob.launch("seq", "t1", json!({})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("target")));
    let (s, b) = e
        .alice
        .post_json("/api/jobs", json!({"template": "seq", "target": 7}))
        .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("target")), "{b}");
}

#[tokio::test]
async fn operators_see_their_own_jobs_and_their_targets_jobs_only() {
    let e = EngineApp::start().await;
    let mine = e.alice.launch_ok("seq", "t1", json!({})).await;
    let bobs = e.bob.launch_ok("seq", "t3", json!({})).await;
    let by_admin_on_t1 = e.admin.launch_ok("seq", "t1", json!({})).await;
    e.admin.wait_finished(by_admin_on_t1, 20).await;
    assert_eq!(e.bob.get_json(&format!("/api/jobs/{mine}")).await.0, 404);
    assert_eq!(
        e.bob.get_json(&format!("/api/jobs/{mine}/log")).await.0,
        404
    );
    assert_eq!(
        e.bob
            .post_json(&format!("/api/jobs/{mine}/cancel"), json!({}))
            .await
            .0,
        404
    );
    assert_eq!(
        e.alice.job(by_admin_on_t1).await["owner"],
        "admin",
        "a job on her target"
    );
    let (_, page) = e.alice.get_json("/api/jobs").await;
    let ids: HashSet<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert!(ids.contains(&mine) && ids.contains(&by_admin_on_t1) && !ids.contains(&bobs));
    let (_, page) = e.admin.get_json("/api/jobs").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn job_lists_filter_and_page_newest_first() {
    let e = EngineApp::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(e.alice.launch_ok("seq", "t1", json!({"n": 1})).await);
    }
    ids.push(e.alice.launch_ok("exit", "t2", json!({"code": 1})).await);
    for id in &ids {
        e.alice.wait_finished(*id, 30).await;
    }
    let (_, page) = e.alice.get_json("/api/jobs?template=seq&limit=2").await;
    let got: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [ids[4], ids[3]]);
    let before = page["next_before"].as_i64().unwrap();
    let (_, page) = e
        .alice
        .get_json(&format!("/api/jobs?template=seq&limit=2&before={before}"))
        .await;
    let got: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [ids[2], ids[1]]);
    let (_, failed) = e.alice.get_json("/api/jobs?state=failed").await;
    assert_eq!(failed["jobs"].as_array().unwrap().len(), 1);
    let (_, on_t2) = e.alice.get_json("/api/jobs?target=t2").await;
    assert_eq!(on_t2["jobs"][0]["id"], ids[5]);
    let (s, b) = e.alice.get_json("/api/jobs?state=exploded").await;
    assert_eq!((s, b["field"].as_str()), (400, Some("state")));
    let (s, b) = e.alice.get_json("/api/jobs?before=yesterday").await;
    assert_eq!((s, b["field"].as_str()), (400, Some("before")));
}

#[tokio::test]
async fn rerun_enqueues_a_copy_and_launch_and_cancel_are_audited() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("sleep", "t1", json!({"s": "30"})).await;
    e.alice.wait_job(id, 20, |j| j["state"] == "running").await;
    e.alice
        .post_json(&format!("/api/jobs/{id}/cancel"), json!({}))
        .await;
    e.alice.wait_finished(id, 20).await;
    let (status, copy) = e
        .alice
        .post_json(&format!("/api/jobs/{id}/rerun"), json!({}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(copy["rerun_of"], id);
    assert_eq!(copy["params"], json!({"s": "30"}));
    e.alice
        .post_json(&format!("/api/jobs/{}/cancel", copy["id"]), json!({}))
        .await;

    let (_, audit) = e.admin.get_json("/api/audit?action=job").await;
    let entries: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().into(),
                a["action"].as_str().unwrap().into(),
                a["subject"].as_str().unwrap().into(),
            )
        })
        .collect();
    let subject = format!("job {id}");
    assert!(
        entries.contains(&("alice".into(), "job.launch".into(), subject.clone())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("alice".into(), "job.cancel".into(), subject)),
        "{entries:?}"
    );
}

#[tokio::test]
async fn the_log_endpoint_pages_by_seq_and_refuses_bad_arguments() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 50})).await;
    e.alice.wait_finished(id, 20).await;
    let (_, page) = e
        .alice
        .get_json(&format!("/api/jobs/{id}/log?after=10&limit=5"))
        .await;
    let seqs: Vec<i64> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [11, 12, 13, 14, 15]);
    assert_eq!(page["last_seq"], 52);
    let (_, page) = e
        .alice
        .get_json(&format!("/api/jobs/{id}/log?after=999"))
        .await;
    assert!(page["lines"].as_array().unwrap().is_empty());
    for bad in ["after=abc", "after=-1", "limit=x", "format=pdf"] {
        let (s, b) = e.alice.get_json(&format!("/api/jobs/{id}/log?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert_eq!(b["field"], bad.split('=').next().unwrap(), "{bad}: {b}");
    }
    assert_eq!(e.alice.get_json("/api/jobs/abc").await.0, 400);
    assert_eq!(e.alice.get_json("/api/jobs/999999").await.0, 404);
}

#[tokio::test]
async fn templates_and_targets_list_what_the_caller_may_run() {
    let e = EngineApp::start().await;
    let (_, targets) = e.bob.get_json("/api/targets").await;
    let ids: Vec<&str> = targets
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t3"]);
    let (_, templates) = e.bob.get_json("/api/templates").await;
    let seq = templates
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "seq")
        .unwrap();
    assert_eq!(seq["targets"], json!(["t3"]));
    assert_eq!(seq["params"][0]["type"], "int");
    let (_, all) = e.admin.get_json("/api/targets").await;
    assert_eq!(all.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn metrics_expose_jobs_by_state_queue_depth_lines_and_claim_latency() {
    let e = EngineApp::start().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 100})).await;
    e.alice.wait_finished(id, 20).await;
    let text = e
        .app
        .client
        .get(e.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("opsdeck_jobs{state=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(text.contains("opsdeck_queue_depth 0"));
    assert!(
        text.contains("opsdeck_log_lines_written_total 102"),
        "{text}"
    );
    assert!(text.contains("opsdeck_claim_to_start_seconds_count 1"));
}

#[tokio::test]
async fn retention_deletes_old_finished_jobs_and_their_logs() {
    let e = EngineApp::start().await;
    let old = e.alice.launch_ok("seq", "t1", json!({"n": 3})).await;
    let recent = e.alice.launch_ok("seq", "t1", json!({"n": 3})).await;
    e.alice.wait_finished(old, 20).await;
    e.alice.wait_finished(recent, 20).await;
    use sea_orm::ConnectionTrait;
    let long_ago = (Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    e.app
        .state
        .db
        .execute_unprepared(&format!(
            "UPDATE jobs SET finished_at = '{long_ago}' WHERE id = {old}"
        ))
        .await
        .unwrap();
    let deleted = server::engine::retention::sweep(&e.app.state.db, e.app.state.engine.sink(), 30)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_eq!(e.alice.get_json(&format!("/api/jobs/{old}")).await.0, 404);
    assert!(server::db::logs::page(&e.app.state.db, old, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(e.alice.job(recent).await["state"], "succeeded");
}

#[test]
fn a_server_killed_mid_job_marks_it_interrupted_at_restart_and_kills_its_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{ENGINE_CONFIG}\n");
    let mut server = BinServer::start(dir.path(), &config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = server.url("");
    let (id, pgid) = rt.block_on(async {
        let client = reqwest::Client::new();
        let login = client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        let cookie = session_cookie(&login).unwrap();
        let admin = Client {
            http: client,
            base: base.clone(),
            cookie: Some(cookie),
            bearer: None,
        };
        let id = admin.launch_ok("stubborn", "t1", json!({})).await;
        admin
            .wait_job(id, 20, |j| {
                j["state"] == "running" && j["last_seq"].as_i64() >= Some(2)
            })
            .await;
        (id, admin)
    });
    let (id, admin) = (id, pgid);
    // SIGKILL: no chance to clean up. Its job's processes run on as orphans.
    server.signal(nix::sys::signal::Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(5));
    let pgid: i32 = rt.block_on(query_column(
        &server.database_url,
        &format!("SELECT pgid FROM jobs WHERE id = {id}"),
    ))[0]
        .parse()
        .unwrap();
    assert!(
        group_has_members(pgid),
        "the orphans still run after the SIGKILL"
    );

    // The same replica again: same address, so the same default node id.
    server.restart();
    let restarted = &server;
    let job = rt.block_on(async {
        let admin = Client {
            base: restarted.url(""),
            ..admin
        };
        admin.wait_finished(id, 20).await
    });
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error"], "interrupted: server restarted");
    let lines = rt.block_on(async {
        let admin = Client {
            http: reqwest::Client::new(),
            base: restarted.url(""),
            cookie: None,
            bearer: None,
        };
        let login = admin
            .http
            .post(format!("{}/api/auth/login", admin.base))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        let admin = Client {
            cookie: session_cookie(&login),
            ..admin
        };
        let (_, audit) = admin.get_json("/api/audit?action=job.interrupted").await;
        let subject = format!("job {id}");
        assert!(
            audit["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["actor"] == "system" && a["subject"] == subject.as_str()),
            "the interruption is audited with it: {audit}"
        );
        admin.all_lines(id).await
    });
    let last = lines.last().unwrap();
    assert_eq!(last["stream"], "system");
    assert!(
        last["text"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: server restarted (killed 3 leftover"),
        "{last}"
    );
    for _ in 0..50 {
        if !group_has_members(pgid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !group_has_members(pgid),
        "the orphans were killed at restart"
    );
}

#[tokio::test]
async fn on_postgresql_two_replicas_share_one_queue_and_never_overlap_on_a_target() {
    let pg = PgDatabase::create().await;
    let replica = |node: &'static str| {
        let url = pg.url();
        async move {
            TestApp::builder()
                .database_url(&url)
                .config(&format!("{ENGINE_CONFIG}\n[cluster]\nnode = \"{node}\"\n"))
                .start()
                .await
        }
    };
    let a = replica("replica-a").await;
    let b = replica("replica-b").await;
    a.create_user("alice", "operator").await;
    let alice_a = a.bearer_for("alice").await;
    let alice_b = Client {
        base: b.url(""),
        ..alice_a.clone()
    };
    let mut ids = Vec::new();
    for i in 0..6 {
        let client = if i % 2 == 0 { &alice_a } else { &alice_b };
        ids.push(client.launch_ok("sleep", "t1", json!({"s": "0.3"})).await);
    }
    let lines = alice_b
        .launch_ok("interleave", "t2", json!({"n": 500}))
        .await;
    let mut spans = Vec::new();
    for id in &ids {
        let j = alice_a.wait_finished(*id, 60).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        spans.push((time(&j["started_at"]), time(&j["finished_at"])));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "two replicas overlapped on one target: {w:?}"
        );
    }
    assert_eq!(alice_a.wait_finished(lines, 60).await["state"], "succeeded");
    let all = alice_a.all_lines(lines).await;
    let seqs: Vec<i64> = all.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=1002).collect::<Vec<_>>());
    assert_eq!(texts(&all, "stderr").len(), 500);
    a.stop().await;
    b.stop().await;
}
