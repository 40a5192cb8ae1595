//! A target's actual state: its status probe run on the interval and right
//! after every job on it, recorded, listed with the targets and sent live
//! on the feed; the last failed job's error until a job succeeds; and, on
//! PostgreSQL, one replica per due probe and the other replica's feed told.
//! Every probe here is a real subprocess (`test -e FILE`, `sleep`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// A target `web` probed by whether `flag` exists (every `interval`),
/// templates that create and remove it, one that fails and one that
/// sleeps; a target `slow` whose probe outlives its timeout (its child's
/// pid in `flag` with the extension `pid`); a target `plain` without one.
/// No `[jobs]`: [`ENGINE_CONFIG`], which these tests add to, has one.
fn config(flag: &Path, interval: &str) -> String {
    let pid = flag.with_extension("pid");
    let (flag, pid) = (flag.display(), pid.display());
    format!(
        r#"
[[targets]]
id = "web"
kind = "local"
owners = ["alice"]
status = ["sh", "-c", 'if test -e "$1"; then echo "flag is there"; else echo "no flag" >&2; exit 1; fi', "probe", "{flag}"]
status_interval = "{interval}"

[[targets]]
id = "slow"
kind = "local"
status = ["sh", "-c", 'sleep 30 & echo $! > "$0"; wait', "{pid}"]
status_timeout = "1s"
status_interval = "1h"

[[targets]]
id = "plain"
kind = "local"
owners = ["alice"]

[[templates]]
id = "raise"
command = ["touch", "{flag}"]

[[templates]]
id = "lower"
command = ["rm", "-f", "{flag}"]

[[templates]]
id = "fail"
command = ["sh", "-c", "exit 7"]

[[templates]]
id = "nap"
command = ["sleep", "30"]
"#
    )
}

/// `target`'s status as `GET /api/targets` lists it.
async fn status_of(client: &Client, target: &str) -> Value {
    let (code, targets) = client.get_json("/api/targets").await;
    assert_eq!(code, 200, "{targets}");
    targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == target)
        .unwrap_or_else(|| panic!("no target {target} in {targets}"))["status"]
        .clone()
}

/// Polls `target`'s listed status until `pred` holds.
pub(crate) async fn wait_status(
    client: &Client,
    target: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status_of(client, target).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{target}'s status did not get there in {secs} s: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `target` event of the feed about `target` for which `pred`
/// holds (events of earlier probes may come first).
async fn target_event(
    feed: &mut Sse,
    target: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, feed.next())
            .await
            .unwrap_or_else(|_| panic!("no such `target` event for {target} within {secs} s"))
            .expect("the feed stays open");
        if ev.event == "target" && ev.json()["target"] == target && pred(&ev.json()) {
            return ev.json();
        }
    }
}

/// A time of the status, parsed.
fn at(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
}

fn state(s: &Value) -> &str {
    s["state"].as_str().unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_probe_runs_right_after_every_job_and_the_feed_tells_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("web.up");
    // An hour between interval probes: only the probe at start and the
    // ones after jobs can explain what changes here.
    let app = EngineApp::start_with(&config(&flag, "1h")).await;
    let alice = &app.alice;

    let first = wait_status(alice, "web", 10, |s| s["state"].is_string()).await;
    assert_eq!(state(&first), "down", "{first}");
    assert_eq!(
        first["message"], "no flag",
        "stderr's line when stdout has none"
    );
    assert!(first["last_error"].is_null());

    let (_, mut feed) = Sse::open(alice, "/api/events", None).await;
    let feed = feed.as_mut().expect("the feed opens");

    // A job raises the flag: the probe after it says up.
    let id = alice.launch_ok("raise", "web", json!({})).await;
    let job = alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let ev = target_event(feed, "web", 10, |s| state(s) == "up").await;
    assert_eq!(ev["message"], "flag is there", "{ev}");
    let checked = at(&ev["checked_at"]);
    assert_eq!(ev["changed_at"], ev["checked_at"], "it just changed: {ev}");
    assert_eq!(
        status_of(alice, "web").await,
        ev,
        "the list says what the feed said"
    );

    // A failed job becomes the last error; the state is probed again (and
    // is still up, so it has not changed since).
    let failed = alice.launch_ok("fail", "web", json!({})).await;
    assert_eq!(alice.wait_finished(failed, 20).await["state"], "failed");
    let ev = target_event(feed, "web", 10, |s| s["last_error"]["job_id"] == failed).await;
    assert_eq!(state(&ev), "up", "{ev}");
    assert_eq!(ev["last_error"]["error"], "exited with code 7", "{ev}");
    assert!(at(&ev["checked_at"]) > checked, "probed again: {ev}");
    assert_eq!(at(&ev["changed_at"]), checked, "still up since: {ev}");

    // A cancel is no rollback: the flag raised by hand while a job runs is
    // found by the probe after the cancel; the last error stays.
    std::fs::remove_file(&flag).unwrap();
    let nap = alice.launch_ok("nap", "web", json!({})).await;
    alice.wait_job(nap, 20, |j| j["state"] == "running").await;
    let (code, body) = alice
        .post_json(&format!("/api/jobs/{nap}/cancel"), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(alice.wait_finished(nap, 20).await["state"], "cancelled");
    let ev = target_event(feed, "web", 10, |s| state(s) == "down").await;
    assert_eq!(
        ev["last_error"]["job_id"], failed,
        "a cancel is not a success: {ev}"
    );

    // A succeeded job clears the last error.
    let id = alice.launch_ok("raise", "web", json!({})).await;
    alice.wait_finished(id, 20).await;
    let ev = target_event(feed, "web", 10, |s| s["last_error"].is_null()).await;
    assert_eq!(state(&ev), "up", "{ev}");

    // A target without a probe shows only its last error.
    let failed = alice.launch_ok("fail", "plain", json!({})).await;
    alice.wait_finished(failed, 20).await;
    let plain = wait_status(alice, "plain", 10, |s| !s.is_null()).await;
    assert!(plain["state"].is_null(), "{plain}");
    assert_eq!(plain["last_error"]["job_id"], failed, "{plain}");

    // Bob owns neither: he sees none of it.
    let (_, targets) = app.bob.get_json("/api/targets").await;
    assert!(
        targets.as_array().unwrap().iter().all(|t| t["id"] != "web"),
        "{targets}"
    );
    assert!(
        app.app
            .metric("opsdeck_status_probes_total{state=\"up\"}")
            .await
            >= 3.0
    );
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_probe_follows_the_target_and_a_hung_probe_is_killed_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("web.up");
    let app = EngineApp::start_with(&config(&flag, "1s")).await;
    let admin = &app.admin;

    wait_status(admin, "web", 10, |s| state(s) == "down").await;
    std::fs::write(&flag, "").unwrap();
    let up = wait_status(admin, "web", 10, |s| state(s) == "up").await;
    std::fs::remove_file(&flag).unwrap();
    let down = wait_status(admin, "web", 10, |s| state(s) == "down").await;
    assert!(
        at(&down["changed_at"]) > at(&up["changed_at"]),
        "{up} {down}"
    );

    let started = Instant::now();
    let slow = wait_status(admin, "slow", 10, |s| s["state"].is_string()).await;
    assert_eq!(state(&slow), "unknown", "{slow}");
    assert!(
        slow["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{slow}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    // Its whole process group was killed: the `sleep` it started too.
    let pid: i32 = std::fs::read_to_string(flag.with_extension("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        if !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the probe's `sleep` {pid} lives on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_one_runs_each_due_probe_and_both_feeds_hear_of_it() {
    // PostgreSQL only: on SQLite there is no other replica.
    if !on_postgres() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("web.up");
    let pg = PgDatabase::create().await;
    let replica = |node: &'static str| {
        TestApp::builder()
            .database_url(&pg.url())
            .config(&format!(
                "{}\n[cluster]\nnode = \"{node}\"\n",
                config(&flag, "2s")
            ))
            .start()
    };
    let a = replica("replica-a").await;
    let b = replica("replica-b").await;
    let admin_a = a.admin_bearer().await;
    let admin_b = Client {
        base: b.url(""),
        ..admin_a.clone()
    };
    let admins = [admin_a, admin_b];
    let mut feeds = Vec::new();
    for admin in &admins {
        feeds.push(
            Sse::open(admin, "/api/events", None)
                .await
                .1
                .expect("the feed opens"),
        );
    }

    // Over 7 s, a probe of `web` every 2 s (and one of `slow`): a handful,
    // not one per replica each time.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut ran = 0.0;
    for app in [&a, &b] {
        for s in ["up", "down", "unknown"] {
            ran += app
                .metric(&format!("opsdeck_status_probes_total{{state=\"{s}\"}}"))
                .await;
        }
    }
    assert!(
        (3.0..=7.0).contains(&ran),
        "{ran} probes in 7 s of one target every 2 s and one once"
    );

    // A job: the other replica's feed hears what the probe after it found.
    let id = admins[0].launch_ok("raise", "web", json!({})).await;
    let job = admins[0].wait_finished(id, 20).await;
    let other = if job["node"] == "replica-a" { 1 } else { 0 };
    target_event(&mut feeds[other], "web", 10, |s| state(s) == "up").await;
    let heard = [&a, &b][other]
        .metric("opsdeck_notifications_received_total{channel=\"target\"}")
        .await;
    assert!(heard >= 1.0, "{heard}");
    a.stop().await;
    b.stop().await;
}
