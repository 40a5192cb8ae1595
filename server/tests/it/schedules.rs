//! Schedules (`[[schedules]]`, docs/automation.md) on the real clock: a
//! schedule every second fires once a second, a restart's missed fires
//! follow each misfire policy (and are announced to a webhook), each
//! overlap policy with jobs that outlast the interval, pause, resume and
//! "run now", and two replicas on one PostgreSQL firing each fire once.
//! The time-zone and DST rules are unit tests of the pure schedule code
//! (server/src/schedules/plan.rs).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{json, Value};
use server::db::schedules::{self as store, fires};

use crate::support::*;
use crate::webhooks::{verify, Receiver, SECRET};

const TARGETS: &str = r#"
[[targets]]
id = "t1"
kind = "local"

[[targets]]
id = "t2"
kind = "local"

[[targets]]
id = "t3"
kind = "local"

[[targets]]
id = "t4"
kind = "local"

[[templates]]
id = "tick"
command = ["true"]
exclusive = "none"

[[templates]]
id = "slow"
command = ["sleep", "{secs}"]
params = [{ name = "secs", type = "string", default = "2.5", pattern = "[0-9.]+" }]
exclusive = "none"
"#;

/// Every fire of `schedule` recorded in the database at `url`, oldest first.
async fn fires_of(url: &str, schedule: &str) -> Vec<fires::Model> {
    let db = sea_orm::Database::connect(url).await.unwrap();
    let mut rows = store::recent(&db, schedule, 100_000).await.unwrap();
    db.close().await.ok();
    rows.sort_by_key(|f| (f.scheduled_for, f.id));
    rows
}

/// The seconds a fire row stands for (a run of missed fires: each).
fn seconds_of(f: &fires::Model) -> Vec<i64> {
    let first = f.scheduled_for.timestamp();
    let last = f.until.unwrap_or(f.scheduled_for).timestamp();
    assert_eq!(
        last - first + 1,
        f.count,
        "a run of missed fires counts each second it spans: {f:?}"
    );
    (first..=last).collect()
}

/// Asserts that the cron fires of a schedule every second cover each
/// second from the first to the last exactly once; the launched ones.
fn assert_once_a_second(rows: &[fires::Model]) -> Vec<fires::Model> {
    let cron: Vec<&fires::Model> = rows.iter().filter(|f| f.manual_by.is_none()).collect();
    let mut seconds: Vec<i64> = cron.iter().flat_map(|f| seconds_of(f)).collect();
    let n = seconds.len();
    seconds.sort();
    seconds.dedup();
    assert_eq!(seconds.len(), n, "a second fired twice: {cron:#?}");
    let (first, last) = (seconds[0], seconds[n - 1]);
    assert_eq!(
        (last - first + 1) as usize,
        n,
        "a second between {first} and {last} was neither fired nor recorded as missed: {cron:#?}"
    );
    cron.into_iter()
        .filter(|f| f.outcome == "launched")
        .cloned()
        .collect()
}

/// `second` seconds of the minute as a cron list, from `from` on.
fn seconds_list(from: DateTime<Utc>, offsets: std::ops::RangeInclusive<i64>) -> String {
    offsets
        .map(|o| ((from.second() as i64 + o) % 60).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        tokio::time::sleep(d).await;
    }
}

#[tokio::test]
async fn a_schedule_every_second_fires_once_a_second_and_a_restart_follows_each_misfire_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _pg) = fresh_database(dir.path()).await;
    let (receiver, hook_url) = Receiver::start().await;
    // The clock of this test, in whole seconds: up from t0 to t0+4, down
    // until t0+11.5. The three policy schedules fire only at t0+6..t0+9,
    // while nothing runs: at the restart all four are late (more than the
    // 1 s grace), and no fire of theirs is on time.
    let t0 = Utc::now().with_nanosecond(0).unwrap() + chrono::Duration::seconds(1);
    let outage = seconds_list(t0, 6..=9);
    let config = format!(
        r#"{TARGETS}
[[schedules]]
id = "every"
template = "tick"
target = "t1"
cron = "* * * * * *"
misfire = "skip"
misfire_grace = "1s"
overlap = "allow"

[[schedules]]
id = "skip"
template = "tick"
target = "t2"
cron = "{outage} * * * * *"
misfire = "skip"
misfire_grace = "1s"

[[schedules]]
id = "latest"
template = "tick"
target = "t3"
cron = "{outage} * * * * *"
misfire = "latest"
misfire_grace = "1s"

[[schedules]]
id = "all"
template = "tick"
target = "t4"
cron = "{outage} * * * * *"
misfire = "all"
max_catchup = 2
misfire_grace = "1s"
overlap = "allow"

[[notify]]
id = "missed"
url = "{hook_url}/missed"
events = ["schedule.missed"]
secret = "{SECRET}"
backoff = "200ms"
"#
    );
    let start = || {
        TestApp::builder()
            .config(&config)
            .database_url(&url)
            .start()
    };
    sleep_until(t0).await;
    let app = start().await;
    sleep_until(t0 + chrono::Duration::seconds(4) + chrono::Duration::milliseconds(300)).await;
    let stopped_at = Utc::now();
    app.stop().await;
    sleep_until(t0 + chrono::Duration::milliseconds(11_500)).await;
    let app = start().await;
    let restarted_at = Utc::now();
    tokio::time::sleep(Duration::from_millis(4_300)).await;
    let admin = app.admin_bearer().await;

    // Once a second, before and after the restart; the outage recorded as
    // one run of missed fires.
    let every = fires_of(&url, "every").await;
    let launched = assert_once_a_second(&every);
    let before: Vec<_> = launched
        .iter()
        .filter(|f| f.scheduled_for < stopped_at)
        .collect();
    let after: Vec<_> = launched
        .iter()
        .filter(|f| f.scheduled_for > restarted_at)
        .collect();
    assert!(before.len() >= 3, "fires before the stop: {every:#?}");
    assert!(after.len() >= 3, "fires after the restart: {every:#?}");
    let missed: Vec<_> = every.iter().filter(|f| f.outcome == "skipped").collect();
    assert_eq!(missed.len(), 1, "one run of missed fires: {every:#?}");
    assert!(missed[0].count >= 6, "{:?}", missed[0]);
    assert!(missed[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("misfire = \"skip\""));
    assert!(missed[0].scheduled_for > stopped_at - chrono::Duration::seconds(1));
    // Each launched fire has its job, owned by `system`, and it ran.
    for f in &launched {
        let job = admin
            .job(f.job_id.expect("a launched fire has a job"))
            .await;
        assert_eq!(job["template"], "tick");
        assert_eq!(job["owner"], "system");
    }

    // The three policies over the same four late fires (the catch-up fires
    // of "all" run back to back: `overlap = "allow"` lets them).
    let by_policy = |rows: &[fires::Model]| {
        let runs: Vec<DateTime<Utc>> = rows
            .iter()
            .filter(|f| f.outcome == "launched")
            .map(|f| f.scheduled_for)
            .collect();
        let missed: i64 = rows
            .iter()
            .filter(|f| f.outcome == "skipped")
            .map(|f| f.count)
            .sum();
        (runs, missed)
    };
    let late = |o: i64| t0 + chrono::Duration::seconds(o);
    let (runs, missed) = by_policy(&fires_of(&url, "skip").await);
    assert_eq!((runs, missed), (vec![], 4), "skip: none runs");
    let (runs, missed) = by_policy(&fires_of(&url, "latest").await);
    assert_eq!(
        (runs, missed),
        (vec![late(9)], 3),
        "latest: the newest runs"
    );
    let (runs, missed) = by_policy(&fires_of(&url, "all").await);
    assert_eq!(
        (runs, missed),
        (vec![late(8), late(9)], 2),
        "all: the newest max_catchup run"
    );

    // Each run of missed fires is announced once, signed.
    receiver
        .wait(10, "schedule.missed for all four schedules", |r| {
            r.iter().filter(|r| r.status < 300).count() >= 4
        })
        .await;
    let mut announced: HashMap<String, Value> = HashMap::new();
    for r in receiver.receipts() {
        verify(&r);
        let body = r.json();
        assert_eq!(body["kind"], "schedule.missed");
        let schedule = body["schedule"].as_str().unwrap().to_string();
        assert!(
            announced.insert(schedule.clone(), body).is_none(),
            "{schedule} announced twice"
        );
    }
    assert_eq!(announced["skip"]["count"], 4);
    assert_eq!(announced["latest"]["count"], 3);
    assert_eq!(announced["all"]["count"], 2);
    assert_eq!(announced["every"]["target"], "t1");
    assert!(announced["every"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("missed"));
    app.stop().await;
}

/// The schedules' jobs, with (started, finished) of each that ran.
async fn runs(
    admin: &Client,
    url: &str,
    schedule: &str,
) -> Vec<(Value, Option<(DateTime<Utc>, DateTime<Utc>)>)> {
    let mut out = Vec::new();
    for f in fires_of(url, schedule).await {
        if let Some(id) = f.job_id {
            let job = admin.job(id).await;
            let span = match (job["started_at"].as_str(), job["finished_at"].as_str()) {
                (Some(s), Some(e)) => Some((s.parse().unwrap(), e.parse().unwrap())),
                _ => None,
            };
            out.push((job, span));
        }
    }
    out
}

fn overlapping(spans: &[(DateTime<Utc>, DateTime<Utc>)]) -> bool {
    spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1))
}

#[tokio::test]
async fn each_overlap_policy_with_jobs_that_outlast_the_interval() {
    // A run takes 2.5 s; the schedules fire every second for about 7 s.
    let mut config = TARGETS.to_string();
    for (id, target, overlap) in [
        ("skip", "t1", "skip"),
        ("queue", "t2", "queue"),
        ("cancel", "t3", "cancel_previous"),
        ("allow", "t4", "allow"),
    ] {
        config.push_str(&format!(
            "\n[[schedules]]\nid = \"{id}\"\ntemplate = \"slow\"\ntarget = \"{target}\"\n\
             cron = \"* * * * * *\"\noverlap = \"{overlap}\"\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, _pg) = fresh_database(dir.path()).await;
    let app = TestApp::builder()
        .config(&config)
        .database_url(&url)
        .start()
        .await;
    let admin = app.admin_bearer().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    for id in ["skip", "queue", "cancel", "allow"] {
        admin
            .post(&format!("/api/schedules/{id}/pause"))
            .send()
            .await
            .unwrap();
    }
    // Let what runs (and what waits) finish.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // skip: never two at once; the fires in between skipped, saying why.
    let fires = fires_of(&url, "skip").await;
    let spans: Vec<_> = runs(&admin, &url, "skip")
        .await
        .into_iter()
        .filter_map(|r| r.1)
        .collect();
    assert!(spans.len() >= 2, "{fires:#?}");
    assert!(!overlapping(&spans), "skip ran two at once: {spans:?}");
    let skipped: Vec<_> = fires.iter().filter(|f| f.outcome == "skipped").collect();
    assert!(skipped.len() >= 3, "{fires:#?}");
    for f in &skipped {
        assert!(
            f.reason
                .as_deref()
                .unwrap()
                .starts_with("overlap: the previous run still runs"),
            "{f:?}"
        );
    }

    // queue: never two at once, one waits at a time (later fires skipped),
    // and a waiting fire runs when the run before it ends.
    let fires = fires_of(&url, "queue").await;
    let jobs = runs(&admin, &url, "queue").await;
    let spans: Vec<_> = jobs.iter().filter_map(|r| r.1).collect();
    assert!(spans.len() >= 2, "{fires:#?}");
    assert!(!overlapping(&spans), "queue ran two at once: {spans:?}");
    assert!(
        fires.iter().all(|f| f.outcome != "waiting"),
        "a fire still waits: {fires:#?}"
    );
    assert!(
        fires
            .iter()
            .any(|f| f.outcome == "skipped"
                && f.reason.as_deref().unwrap().contains("already waits")),
        "{fires:#?}"
    );
    let mut sorted = spans.clone();
    sorted.sort();
    for pair in sorted.windows(2) {
        let gap = (pair[1].0 - pair[0].1).num_milliseconds();
        assert!(
            gap < 1_500,
            "a waiting fire ran {gap} ms after the run before it ended: {sorted:?}"
        );
    }

    // cancel_previous: each run but the last was cancelled by the next.
    let jobs = runs(&admin, &url, "cancel").await;
    assert!(jobs.len() >= 4, "{jobs:#?}");
    let states: Vec<&str> = jobs
        .iter()
        .map(|j| j.0["state"].as_str().unwrap())
        .collect();
    assert!(
        states[..states.len() - 1].iter().all(|s| *s == "cancelled"),
        "{states:?}"
    );
    let fires = fires_of(&url, "cancel").await;
    assert!(fires.iter().any(|f| f
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("overlap: cancels the previous run"))));

    // allow: runs overlap.
    let spans: Vec<_> = runs(&admin, &url, "allow")
        .await
        .into_iter()
        .filter_map(|r| r.1)
        .collect();
    assert!(spans.len() >= 5, "{spans:?}");
    assert!(
        overlapping(&spans),
        "allow never ran two at once: {spans:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn pause_resume_and_run_now_are_kept_and_audited() {
    let config = format!(
        "{TARGETS}\n[[schedules]]\nid = \"nightly\"\ntemplate = \"tick\"\ntarget = \"t1\"\n\
         cron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\n\n\
         [[schedules]]\nid = \"often\"\ntemplate = \"tick\"\ntarget = \"t2\"\ncron = \"* * * * * *\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let (url, _pg) = fresh_database(dir.path()).await;
    let start = || {
        TestApp::builder()
            .config(&config)
            .database_url(&url)
            .start()
    };
    let app = start().await;
    let admin = app.admin_bearer().await;
    app.create_user("alice", "operator").await;
    let alice = app.bearer_for("alice").await;

    let (status, list) = admin.get_json("/api/schedules").await;
    assert_eq!(status, 200, "{list}");
    let nightly = &list[0];
    assert_eq!(nightly["id"], "nightly");
    assert_eq!(nightly["timezone"], "Europe/Berlin");
    assert_eq!(nightly["paused"], false);
    let next: Vec<DateTime<Utc>> = nightly["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(next.len(), 5);
    for t in &next {
        let local = t.with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!((local.hour(), local.minute()), (2, 30), "{t}");
    }
    // Operators neither see nor change schedules.
    assert_eq!(alice.get_json("/api/schedules").await.0, 403);
    let res = alice
        .post("/api/schedules/often/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = admin
        .post("/api/schedules/nope/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Paused: no fire while paused, also across a restart.
    let res = admin
        .post("/api/schedules/often/pause")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = fires_of(&url, "often").await.len();
    app.stop().await;
    let app = start().await;
    let admin = app.admin_bearer().await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        fires_of(&url, "often").await.len(),
        count,
        "fired while paused"
    );
    let (_, list) = admin.get_json("/api/schedules").await;
    assert_eq!(list[1]["paused"], true);
    assert_eq!(list[1]["paused_by"], "admin");
    assert_eq!(list[1]["next"], json!([]));

    // Resumed: it fires again, and the fires while paused are not missed.
    let res = admin
        .post("/api/schedules/often/resume")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let fires = fires_of(&url, "often").await;
    assert!(fires.len() >= count + 2, "{fires:#?}");
    assert!(fires.iter().all(|f| f.outcome == "launched"), "{fires:#?}");

    // Run now: a job owned by the admin, recorded among the fires.
    let (status, job) = admin
        .post_json("/api/schedules/nightly/run", json!({}))
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["owner"], "admin");
    assert_eq!(job["template"], "tick");
    admin.wait_finished(job["id"].as_i64().unwrap(), 10).await;
    let fires = fires_of(&url, "nightly").await;
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0].manual_by.as_deref(), Some("admin"));
    assert_eq!(fires[0].job_id, job["id"].as_i64());

    let (_, audit) = admin.get_json("/api/audit?limit=200").await;
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("admin", "schedule.pause"),
        ("admin", "schedule.resume"),
        ("admin", "job.launch"),
        ("system", "job.launch"),
    ] {
        assert!(
            actions.contains(&(want.0.to_string(), want.1.to_string())),
            "no {want:?} in {actions:?}"
        );
    }
    let by_schedule = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["actor"] == "system" && e["action"] == "job.launch")
        .unwrap();
    let detail: Value = match &by_schedule["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    assert_eq!(detail["schedule"], "often", "{by_schedule}");
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_fire_each_second_once() {
    // PostgreSQL only: on SQLite there is no other replica.
    if !on_postgres() {
        return;
    }
    let pg = PgDatabase::create().await;
    let config = format!(
        "{TARGETS}\n[[schedules]]\nid = \"every\"\ntemplate = \"tick\"\ntarget = \"t1\"\n\
         cron = \"* * * * * *\"\noverlap = \"allow\"\n"
    );
    let replica = |node: &'static str| {
        TestApp::builder()
            .database_url(&pg.url())
            .config(&format!("{config}\n[cluster]\nnode = \"{node}\"\n"))
            .start()
    };
    let a = replica("replica-a").await;
    let b = replica("replica-b").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.stop().await;
    b.stop().await;
    let fires = fires_of(&pg.url(), "every").await;
    let launched = assert_once_a_second(&fires);
    assert!(launched.len() >= 5, "{fires:#?}");
    // One job per fire, and no job of the schedule without its fire.
    let jobs = query_column(
        &pg.url(),
        "SELECT id FROM jobs WHERE template = 'tick' ORDER BY id",
    )
    .await;
    let mut fired: Vec<String> = launched
        .iter()
        .map(|f| f.job_id.unwrap().to_string())
        .collect();
    fired.sort_by_key(|s| s.parse::<i64>().unwrap());
    assert_eq!(jobs, fired);
}
