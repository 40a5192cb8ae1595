//! The figures behind the charts: a target's history per template over
//! 30 days, and the dashboard's running and queued jobs over the last
//! hours, each for what the caller may see.

use app::jobs::{RecentActivity, TargetStats};
use chrono::Utc;
use leptos::server_fn::ServerFn;
use sea_orm::ConnectionTrait;
use serde_json::{json, Value};

use crate::support::EngineApp;

fn template<'a>(stats: &'a Value, id: &str) -> &'a Value {
    stats["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template"] == id)
        .unwrap_or_else(|| panic!("no `{id}` in {stats}"))
}

#[tokio::test]
async fn a_targets_history_counts_each_templates_jobs_of_the_last_thirty_days() {
    let e = EngineApp::start().await;
    let mut ids = Vec::new();
    for code in [0, 0, 3, 1, 0] {
        ids.push(e.alice.launch_ok("exit", "t1", json!({"code": code})).await);
    }
    ids.push(e.alice.launch_ok("sleep", "t1", json!({"s": "1.2"})).await);
    let cancelled = e.alice.launch_ok("sleep", "t1", json!({"s": "30"})).await;
    e.alice
        .post_json(&format!("/api/jobs/{cancelled}/cancel"), json!({}))
        .await;
    ids.push(cancelled);
    // Elsewhere: not this target's.
    ids.push(e.alice.launch_ok("exit", "t2", json!({"code": 1})).await);
    for id in &ids {
        e.alice.wait_finished(*id, 30).await;
    }
    // One of the successes finished 40 days ago.
    let long_ago = (Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    e.app
        .state
        .db
        .execute_unprepared(&format!(
            "UPDATE jobs SET finished_at = '{long_ago}' WHERE id = {}",
            ids[4]
        ))
        .await
        .unwrap();

    let (status, stats) = e
        .alice
        .call_fn(TargetStats::PATH, &[("target", "t1")])
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["days"], 30);
    assert_eq!(stats["templates"].as_array().unwrap().len(), 2, "{stats}");
    let exit = template(&stats, "exit");
    assert_eq!(
        [
            &exit["succeeded"],
            &exit["warnings"],
            &exit["failed"],
            &exit["cancelled"]
        ],
        [3, 1, 1, 0],
        "{exit}"
    );
    assert_eq!(exit["p50_secs"], 0, "{exit}");
    let sleep = template(&stats, "sleep");
    assert_eq!(
        [&sleep["succeeded"], &sleep["failed"], &sleep["cancelled"]],
        [1, 0, 1],
        "{sleep}"
    );
    // The one sleep that ran took 1.2 s.
    assert_eq!([&sleep["p50_secs"], &sleep["p95_secs"]], [1, 1], "{sleep}");

    // bob may not use t1: it is not there for him.
    let (status, body) = e.bob.call_fn(TargetStats::PATH, &[("target", "t1")]).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = e.bob.call_fn(TargetStats::PATH, &[("target", "t3")]).await;
    assert_eq!(
        (status, body["templates"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, _) = e
        .admin
        .call_fn(TargetStats::PATH, &[("target", "nowhere")])
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_recent_load_counts_the_jobs_running_and_queued_at_once() {
    let e = EngineApp::start().await;
    // One target at a time: the second waits while the first runs.
    let first = e.alice.launch_ok("sleep", "t1", json!({"s": "1"})).await;
    let second = e.alice.launch_ok("sleep", "t1", json!({"s": "0.2"})).await;
    e.alice.wait_finished(first, 20).await;
    e.alice.wait_finished(second, 20).await;

    let (status, load) = e.alice.call_fn(RecentActivity::PATH, &[]).await;
    assert_eq!(status, 200, "{load}");
    assert_eq!(load["step_secs"], 600);
    let running = load["running"].as_array().unwrap();
    let queued = load["queued"].as_array().unwrap();
    assert_eq!((running.len(), queued.len()), (36, 36));
    // Never two at once on one target; the second waited.
    assert_eq!(running[35], 1, "{load}");
    assert!(queued[35].as_u64().unwrap() >= 1, "{load}");
    assert!(running[..35].iter().chain(&queued[..35]).all(|v| v == 0));

    // bob sees none of alice's jobs.
    let (_, theirs) = e.bob.call_fn(RecentActivity::PATH, &[]).await;
    let all_zero = |k: &str| theirs[k].as_array().unwrap().iter().all(|v| v == 0);
    assert!(all_zero("running") && all_zero("queued"), "{theirs}");
}
