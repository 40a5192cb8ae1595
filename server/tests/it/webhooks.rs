//! Webhook notifications (`[[notify]]`): a real HTTP receiver started by
//! the test gets every event, signed, with one event id, through an outage
//! of the receiver and a restart of opsdeck.
//!
//! N.B.: the hooks here retry after 200 ms, doubling up to 1 s (`backoff`,
//! `backoff_max`): the receiver's outage lasts a minute of the real clock,
//! and its events arrive within about a second after it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

pub(crate) const SECRET: &str = "a-test-secret-of-some-length";

/// One POST the receiver took.
#[derive(Debug, Clone)]
pub(crate) struct Receipt {
    pub hook: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl Receipt {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// An HTTP receiver on 127.0.0.1:0 that records every POST to `/{hook}`
/// and answers 500 while `failing`, 204 otherwise.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    log: Arc<Mutex<Vec<Receipt>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = axum::Router::new()
            .route("/{hook}", axum::routing::post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, url)
    }

    fn fail(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn receipts(&self) -> Vec<Receipt> {
        self.log.lock().unwrap().clone()
    }

    /// The accepted receipts of `hook`, by job id.
    fn accepted(&self, hook: &str) -> HashMap<i64, Vec<Receipt>> {
        let mut out: HashMap<i64, Vec<Receipt>> = HashMap::new();
        for r in self.receipts() {
            if r.hook == hook && r.status < 300 {
                let job = r.json()["job"]["id"].as_i64().unwrap();
                out.entry(job).or_default().push(r);
            }
        }
        out
    }

    /// Waits until `pred` holds of the receipts (or panics after `secs`).
    pub async fn wait(&self, secs: u64, what: &str, pred: impl Fn(&[Receipt]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(&self.receipts()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; got {:#?}",
                self.receipts()
                    .iter()
                    .map(|r| (r.hook.clone(), r.status, r.json()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = if r.failing.load(std::sync::atomic::Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    r.log.lock().unwrap().push(Receipt {
        hook,
        headers,
        body,
        status: status.as_u16(),
    });
    status
}

/// What a receiver does: HMAC-SHA256 of the raw body with the secret.
pub(crate) fn verify(r: &Receipt) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        r.header("x-opsdeck-signature"),
        expected,
        "signature of {r:?}"
    );
    let body = r.json();
    assert_eq!(r.header("x-opsdeck-event-id"), body["id"].as_str().unwrap());
    assert_eq!(r.header("x-opsdeck-event"), body["kind"].as_str().unwrap());
    assert_eq!(r.header("content-type"), "application/json");
}

fn hooks(url: &str) -> String {
    format!(
        r#"
[[notify]]
id = "all"
url = "{url}/all"
secret = "{SECRET}"
backoff = "200ms"
backoff_max = "1s"

[[notify]]
id = "failures"
url = "{url}/failures"
events = ["job.failed"]
templates = ["exit"]
secret = "{SECRET}"
backoff = "200ms"
backoff_max = "1s"
"#
    )
}

#[tokio::test]
async fn every_job_end_arrives_signed_once_per_id_through_an_outage_and_a_restart() {
    let (receiver, url) = Receiver::start().await;
    let work = tempfile::tempdir().unwrap();
    // The database outlives the first server: the second one reads its outbox.
    let (db_url, _pg) = fresh_database(work.path()).await;
    let config = format!("{ENGINE_CONFIG}\n{}", hooks(&url));
    let app = TestApp::builder()
        .config(&config)
        .database_url(&db_url)
        .start()
        .await;
    let admin = app.admin_bearer().await;

    // One job of each end.
    let ok = admin.launch_ok("exit", "t1", json!({"code": 0})).await;
    let warn = admin.launch_ok("exit", "t2", json!({"code": 3})).await;
    let failed = admin.launch_ok("exit", "t3", json!({"code": 1})).await;
    let sleeper = admin.launch_ok("sleep", "t1", json!({"s": "30"})).await;
    admin
        .wait_job(sleeper, 20, |j| j["state"] == "running")
        .await;
    let (status, body) = admin
        .post_json(&format!("/api/jobs/{sleeper}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let want = [
        (ok, "job.succeeded"),
        (warn, "job.succeeded_with_warnings"),
        (failed, "job.failed"),
        (sleeper, "job.cancelled"),
    ];
    receiver
        .wait(20, "the four ends", |_| {
            let got = receiver.accepted("all");
            want.iter().all(|(id, _)| got.contains_key(id))
        })
        .await;
    let got = receiver.accepted("all");
    for (id, kind) in want {
        let r = &got[&id][0];
        verify(r);
        let body = r.json();
        assert_eq!(body["kind"], kind, "{body}");
        assert_eq!(body["job"]["id"], id);
    }
    assert_eq!(got[&failed][0].json()["job"]["exit_code"], 1);
    assert_eq!(got[&failed][0].json()["job"]["state"], "failed");
    // The filtered hook: the failed job of template `exit` only.
    receiver
        .wait(10, "the failure hook", |_| {
            receiver.accepted("failures").contains_key(&failed)
        })
        .await;

    // The receiver answers 500 for a minute: two ends meanwhile.
    receiver.fail(true);
    let outage = Instant::now();
    let during_a = admin.launch_ok("exit", "t2", json!({"code": 1})).await;
    let during_b = admin.launch_ok("seq", "t3", json!({"n": 3})).await;
    admin.wait_finished(during_a, 20).await;
    admin.wait_finished(during_b, 20).await;
    receiver
        .wait(20, "several refused tries of each", |rs| {
            [during_a, during_b].iter().all(|id| {
                rs.iter()
                    .filter(|r| r.hook == "all" && r.status == 500)
                    .filter(|r| r.json()["job"]["id"] == *id)
                    .count()
                    >= 3
            })
        })
        .await;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed())).await;
    receiver.fail(false);
    receiver
        .wait(20, "both after the receiver recovered", |_| {
            let got = receiver.accepted("all");
            got.contains_key(&during_a) && got.contains_key(&during_b)
        })
        .await;
    assert!(receiver.accepted("failures").contains_key(&during_a));

    // opsdeck stops with an event not delivered yet (the receiver refuses
    // it): the next start delivers it.
    receiver.fail(true);
    let before_stop = admin.launch_ok("exit", "t1", json!({"code": 1})).await;
    admin.wait_finished(before_stop, 20).await;
    receiver
        .wait(20, "a refused try before the stop", |rs| {
            rs.iter()
                .any(|r| r.json()["job"]["id"] == before_stop && r.status == 500)
        })
        .await;
    app.stop().await;
    receiver.fail(false);
    let app = TestApp::builder()
        .config(&config)
        .database_url(&db_url)
        .start()
        .await;
    receiver
        .wait(20, "the event after the restart", |_| {
            receiver.accepted("all").contains_key(&before_stop)
        })
        .await;

    // Every receipt is signed; each event keeps one id through its tries
    // and across hooks, and no two jobs share one.
    let mut id_of_job: HashMap<i64, String> = HashMap::new();
    for r in receiver.receipts() {
        verify(&r);
        let body = r.json();
        let job = body["job"]["id"].as_i64().unwrap();
        let id = body["id"].as_str().unwrap().to_string();
        let first = id_of_job.entry(job).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "job {job} was announced under two ids");
    }
    let ids: std::collections::HashSet<_> = id_of_job.values().collect();
    assert_eq!(ids.len(), id_of_job.len(), "two jobs share an event id");
    assert_eq!(id_of_job.len(), 7);

    // The delivery log says what happened to each.
    let admin = app.admin_bearer().await;
    let (status, page) = admin.get_json("/api/webhooks").await;
    assert_eq!(status, 200, "{page}");
    let all = page
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "all")
        .unwrap();
    assert!(all["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let deliveries = all["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 7, "{deliveries:#?}");
    assert!(deliveries.iter().all(|d| d["state"] == "delivered"));
    assert!(
        deliveries
            .iter()
            .filter(|d| d["attempts"].as_i64().unwrap() >= 3)
            .count()
            >= 2,
        "the outage shows as several tries: {deliveries:#?}"
    );
    let refused_before_stop = deliveries
        .iter()
        .find(|d| {
            receiver
                .receipts()
                .iter()
                .any(|r| r.json()["job"]["id"] == before_stop && r.json()["id"] == d["event_id"])
        })
        .unwrap();
    assert!(refused_before_stop["attempts"].as_i64().unwrap() >= 2);
    // Only an admin reads it.
    let bob = {
        app.create_user("bob", "operator").await;
        app.bearer_for("bob").await
    };
    assert_eq!(bob.get_json("/api/webhooks").await.0, 403);
}

/// An event no hook wants is not written to the outbox at all: a job's
/// end then costs no row and no fan-out. Only the wanted one is stored
/// (and delivered).
#[tokio::test]
async fn an_end_that_no_hook_wants_writes_no_event() {
    let (receiver, url) = Receiver::start().await;
    let work = tempfile::tempdir().unwrap();
    let (db_url, _pg) = fresh_database(work.path()).await;
    let config = format!(
        r#"{ENGINE_CONFIG}
[[notify]]
id = "failures"
url = "{url}/failures"
events = ["job.failed"]
secret = "{SECRET}"
"#
    );
    let app = TestApp::builder()
        .config(&config)
        .database_url(&db_url)
        .start()
        .await;
    let admin = app.admin_bearer().await;
    let ok = admin.launch_ok("exit", "t1", json!({"code": 0})).await;
    let failed = admin.launch_ok("exit", "t2", json!({"code": 1})).await;
    assert_eq!(admin.wait_finished(ok, 20).await["state"], "succeeded");
    receiver
        .wait(20, "the failure", |_| {
            receiver.accepted("failures").contains_key(&failed)
        })
        .await;
    let stored = query_column(
        &db_url,
        "SELECT kind || ' ' || template || ' ' || target FROM webhook_events ORDER BY id",
    )
    .await;
    assert_eq!(stored, ["job.failed exit t2"]);
    app.stop().await;
}
