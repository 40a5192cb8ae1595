//! Live job streams (SSE) and the job feed: exact resume, slow-subscriber
//! isolation, ending, permissions.

use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::*;

/// Templates for stream tests, on top of the engine's.
const STREAM_TEMPLATES: &str = r#"
[[templates]]
id = "paced"
script = 'i=0; while [ $i -lt "$1" ]; do seq 1 500; sleep 0.05; i=$((i+1)); done'
args = ["{rounds}"]
params = [{ name = "rounds", type = "int", default = 100 }]
exclusive = "none"

[[templates]]
id = "burst"
script = 'i=0; while [ $i -lt 20 ]; do seq 1 10000; sleep 0.1; i=$((i+1)); done'
exclusive = "none"

[[templates]]
id = "quiet"
command = ["sleep", "30"]
exclusive = "none"
"#;

async fn stream_app() -> EngineApp {
    EngineApp::start_with(&format!(
        "{STREAM_TEMPLATES}\n[server]\nstream_keepalive = \"300ms\"\n"
    ))
    .await
}

#[tokio::test]
async fn fifty_subscribers_each_get_every_line_once_in_order_then_end() {
    let e = stream_app().await;
    // Hold the target so the streams open while the job is still queued.
    let blocker = e.alice.launch_ok("sleep", "t1", json!({"s": "1.5"})).await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 100_000})).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = e.alice.clone();
        tasks.push(tokio::spawn(async move {
            let (status, sse) = Sse::open(&client, &format!("/api/jobs/{id}/events"), None).await;
            assert_eq!(status, 200);
            sse.unwrap().follow_to_end(0).await
        }));
    }
    assert_eq!(
        e.alice.job(id).await["state"],
        "queued",
        "subscribed before it started"
    );
    let mut ends = Vec::new();
    for t in tasks {
        let (last, texts, end) = t.await.unwrap();
        assert_eq!(last, 100_002, "1..N exactly once each");
        assert_eq!(texts[1], "1");
        assert_eq!(texts[100_000], "100000");
        ends.push(end);
    }
    assert!(ends.iter().all(|j| j["state"] == "succeeded"));
    e.alice.wait_finished(blocker, 5).await;
}

#[tokio::test]
async fn a_client_that_keeps_dropping_and_resuming_ends_with_exactly_the_stored_log() {
    let e = stream_app().await;
    let id = e
        .alice
        .launch_ok("paced", "t1", json!({"rounds": 100}))
        .await;
    let mut last = 0i64;
    let mut texts: Vec<String> = Vec::new();
    let mut drops_while_running = 0;
    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    let end = 'outer: loop {
        let (status, sse) =
            Sse::open(&e.alice, &format!("/api/jobs/{id}/events"), Some(last)).await;
        assert_eq!(status, 200);
        let mut sse = sse.unwrap();
        // xorshift: how many events to take before dropping the connection.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let take = 1 + (rng_state % 150) as usize;
        let mut taken = 0;
        let mut running = false;
        while let Some(ev) = sse.next().await {
            match ev.event.as_str() {
                "state" => running = ev.json()["state"] == "running",
                "log" => {
                    let line = ev.json();
                    let seq = line["seq"].as_i64().unwrap();
                    assert_eq!(seq, last + 1, "no line twice, none skipped (after {last})");
                    last = seq;
                    texts.push(line["text"].as_str().unwrap().to_string());
                    taken += 1;
                    if taken >= take {
                        break;
                    }
                }
                "end" => break 'outer ev.json(),
                _ => {}
            }
        }
        if running {
            drops_while_running += 1;
        }
        drop(sse);
    };
    assert_eq!(end["state"], "succeeded");
    assert!(
        drops_while_running >= 200,
        "dropped and resumed {drops_while_running} times during the job"
    );
    let mut mine = Sha256::new();
    for t in &texts {
        mine.update(t.as_bytes());
        mine.update(b"\n");
    }
    let stored = e
        .alice
        .get(&format!("/api/jobs/{id}/log?format=text"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(mine.finalize()),
        hex::encode(Sha256::digest(&stored)),
        "same bytes as the stored log"
    );
    assert_eq!(last, end["last_seq"].as_i64().unwrap());
}

#[tokio::test]
async fn the_stream_of_a_finished_job_replays_everything_and_ends_at_once() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 1000})).await;
    e.alice.wait_finished(id, 20).await;
    let started = Instant::now();
    let (status, sse) = Sse::open(&e.alice, &format!("/api/jobs/{id}/events"), None).await;
    assert_eq!(status, 200);
    let mut sse = sse.unwrap();
    let (last, texts, end) = sse.follow_to_end(0).await;
    assert_eq!(last, 1002);
    assert_eq!(texts.len(), 1002);
    assert_eq!(end["state"], "succeeded");
    assert!(
        sse.next().await.is_none(),
        "the server closes the stream after `end`"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_stream_of_a_queued_job_shows_its_state_changes_as_it_starts() {
    let e = stream_app().await;
    let blocker = e.alice.launch_ok("sleep", "t1", json!({"s": "0.5"})).await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 3})).await;
    let (_, sse) = Sse::open(&e.alice, &format!("/api/jobs/{id}/events"), None).await;
    let mut sse = sse.unwrap();
    let mut states = Vec::new();
    let mut logs = 0;
    while let Some(ev) = sse.next().await {
        match ev.event.as_str() {
            "state" => states.push(ev.json()["state"].as_str().unwrap().to_string()),
            "log" => logs += 1,
            "end" => break,
            _ => {}
        }
    }
    states.dedup();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    assert_eq!(logs, 5);
    e.alice.wait_finished(blocker, 5).await;
}

#[tokio::test]
async fn resume_is_exact_with_after_or_last_event_id_and_a_garbage_after_is_refused() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 100})).await;
    e.alice.wait_finished(id, 20).await;
    let (_, sse) = Sse::open(&e.alice, &format!("/api/jobs/{id}/events?after=95"), None).await;
    let (last, texts, _) = sse.unwrap().follow_to_end(95).await;
    assert_eq!((last, texts.len()), (102, 7));
    // The header wins over the query.
    let (_, sse) = Sse::open(
        &e.alice,
        &format!("/api/jobs/{id}/events?after=5"),
        Some(100),
    )
    .await;
    let (last, texts, _) = sse.unwrap().follow_to_end(100).await;
    assert_eq!((last, texts.len()), (102, 2));
    for bad in ["after=abc", "after=-3"] {
        let (s, b) = e
            .alice
            .get_json(&format!("/api/jobs/{id}/events?{bad}"))
            .await;
        assert_eq!((s, b["field"].as_str()), (400, Some("after")), "{bad}");
    }
    let res = e
        .alice
        .get(&format!("/api/jobs/{id}/events"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Headers of the contract.
    let res = e
        .alice
        .get(&format!("/api/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
}

#[tokio::test]
async fn an_after_beyond_the_end_simply_waits_for_new_lines() {
    let e = stream_app().await;
    let id = e
        .alice
        .launch_ok("paced", "t1", json!({"rounds": 10}))
        .await;
    e.alice
        .wait_job(id, 20, |j| j["last_seq"].as_i64() >= Some(2))
        .await;
    let after = e.alice.job(id).await["last_seq"].as_i64().unwrap() + 700;
    let (_, sse) = Sse::open(
        &e.alice,
        &format!("/api/jobs/{id}/events?after={after}"),
        None,
    )
    .await;
    let mut sse = sse.unwrap();
    let first = loop {
        let ev = sse.next().await.expect("an event");
        if ev.event == "log" {
            break ev.json()["seq"].as_i64().unwrap();
        }
    };
    assert_eq!(first, after + 1);
}

#[tokio::test]
async fn a_resume_inside_an_omitted_middle_is_told_of_the_gap() {
    let e = stream_app().await;
    let id = e
        .alice
        .launch_ok("capped", "t1", json!({"n": 100000}))
        .await;
    let job = e.alice.wait_finished(id, 60).await;
    let (from, to) = (
        job["omitted"]["from"].as_i64().unwrap(),
        job["omitted"]["to"].as_i64().unwrap(),
    );
    let (_, sse) = Sse::open(&e.alice, &format!("/api/jobs/{id}/events"), Some(from + 10)).await;
    let mut sse = sse.unwrap();
    let gap = loop {
        let ev = sse.next().await.expect("an event");
        assert_ne!(ev.event, "log", "the gap comes before any line");
        if ev.event == "gap" {
            break ev.json();
        }
    };
    assert_eq!(
        (gap["from"].as_i64(), gap["to"].as_i64()),
        (Some(from + 11), Some(to))
    );
    let (last, texts, _) = sse.follow_to_end(to).await;
    assert_eq!(last, job["last_seq"].as_i64().unwrap());
    assert_eq!(texts.len(), 100);
}

async fn open_streams(e: &EngineApp) -> u64 {
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
    text.lines()
        .find_map(|l| l.strip_prefix("opsdeck_stream_subscribers "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_stream_within_one_keepalive_and_the_job_goes_on() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("quiet", "t1", json!({})).await;
    e.alice.wait_job(id, 20, |j| j["state"] == "running").await;
    let (_, sse) = Sse::open(&e.alice, &format!("/api/jobs/{id}/events"), None).await;
    let mut sse = sse.unwrap();
    // An idle stream gets keepalive comments.
    tokio::time::timeout(Duration::from_secs(3), async {
        while sse.keepalives == 0 {
            sse.next().await;
        }
    })
    .await
    .ok();
    assert!(sse.keepalives > 0, "keepalive comments arrive");
    assert_eq!(open_streams(&e).await, 1);
    drop(sse);
    let deadline = Instant::now() + Duration::from_secs(2);
    while open_streams(&e).await > 0 {
        assert!(Instant::now() < deadline, "the stream was not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        e.alice.job(id).await["state"],
        "running",
        "closing the browser never stops a job"
    );
}

#[tokio::test]
async fn streams_answer_like_the_job_itself_to_other_callers() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("seq", "t1", json!({})).await;
    assert_eq!(
        Sse::open(&e.bob, &format!("/api/jobs/{id}/events"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        Sse::open(
            &Client::anonymous(&e.app),
            &format!("/api/jobs/{id}/events"),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        Sse::open(&e.admin, &format!("/api/jobs/{id}/events"), None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn the_feed_carries_the_jobs_a_caller_may_see_and_their_deletion() {
    let e = stream_app().await;
    let (_, feed) = Sse::open(&e.alice, "/api/events", None).await;
    let mut feed = feed.unwrap();
    let bobs = e.bob.launch_ok("seq", "t3", json!({})).await;
    let mine = e.alice.launch_ok("seq", "t1", json!({"n": 2})).await;
    e.alice.wait_finished(mine, 20).await;
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("succeeded") {
        let ev = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .unwrap()
            .unwrap();
        if ev.event == "job" {
            let job = ev.json();
            assert_ne!(
                job["id"], bobs,
                "bob's job on bob's target is not alice's business"
            );
            if job["id"] == mine {
                states.push(job["state"].as_str().unwrap().to_string());
            }
        }
    }
    states.dedup();
    assert_eq!(states, ["queued", "running", "succeeded"]);

    use sea_orm::ConnectionTrait;
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    e.app
        .state
        .db
        .execute_unprepared(&format!(
            "UPDATE jobs SET finished_at = '{long_ago}' WHERE id = {mine}"
        ))
        .await
        .unwrap();
    server::engine::retention::sweep(&e.app.state.db, e.app.state.engine.sink(), 30)
        .await
        .unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .unwrap()
            .unwrap();
        if ev.event == "job.deleted" {
            assert_eq!(ev.json()["id"], mine);
            break;
        }
    }
}

#[test]
fn a_subscriber_that_never_reads_slows_neither_the_job_nor_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinServer::start(dir.path(), &format!("{ENGINE_CONFIG}\n{STREAM_TEMPLATES}"));
    let pid = server.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let login = http
            .post(server.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        let admin = Client {
            http,
            base: server.url(""),
            cookie: session_cookie(&login),
            bearer: None,
        };
        // Run the job with two reading subscribers; `stalled` adds one that
        // never reads. Returns the job's duration and the server's peak RSS.
        let run = |stalled: bool| {
            let admin = admin.clone();
            let addr = server.addr;
            async move {
                let blocker = admin.launch_ok("sleep", "t1", json!({"s": "0.5"})).await;
                let id = admin.launch_ok("burst", "t1", json!({})).await;
                let mut _raw = None;
                if stalled {
                    use tokio::io::AsyncWriteExt;
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let req = format!(
                        "GET /api/jobs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nCookie: opsdeck_session={}\r\n\r\n",
                        admin.cookie.as_ref().unwrap()
                    );
                    s.write_all(req.as_bytes()).await.unwrap();
                    _raw = Some(s); // held open, never read
                }
                let readers: Vec<_> = (0..2)
                    .map(|_| {
                        let c = admin.clone();
                        tokio::spawn(async move {
                            let (_, sse) = Sse::open(&c, &format!("/api/jobs/{id}/events"), None).await;
                            sse.unwrap().follow_to_end(0).await.0
                        })
                    })
                    .collect();
                let before = rss_kib(pid);
                let mut peak = before;
                loop {
                    let j = admin.job(id).await;
                    peak = peak.max(rss_kib(pid));
                    if j["state"] == "succeeded" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for r in readers {
                    assert_eq!(r.await.unwrap(), 200_002, "the other subscribers got every line");
                }
                admin.wait_finished(blocker, 5).await;
                let j = admin.job(id).await;
                let started: chrono::DateTime<chrono::Utc> = j["started_at"].as_str().unwrap().parse().unwrap();
                let finished: chrono::DateTime<chrono::Utc> = j["finished_at"].as_str().unwrap().parse().unwrap();
                ((finished - started).num_milliseconds(), peak.saturating_sub(before))
            }
        };
        let (baseline, baseline_growth) = run(false).await;
        eprintln!("baseline run: RSS +{baseline_growth} KiB");
        let (with_stalled, growth_kib) = run(true).await;
        assert!(
            (with_stalled as f64) < baseline as f64 * 1.10,
            "the job took {with_stalled} ms with a stalled subscriber, {baseline} ms without"
        );
        assert!(growth_kib < 64 * 1024, "server memory grew by {growth_kib} KiB");
        eprintln!("burst job: {baseline} ms, {with_stalled} ms with a stalled subscriber; RSS +{growth_kib} KiB");
    });
}

// ---- the connection of an event stream, on the wire --------------------------
// A connection whose first request opens a stream is served without hyper
// (server/src/http/serve.rs): these speak raw HTTP/1 to it.

/// Sends `head` in `pieces` (with a pause between) and reads until the
/// server closes; returns everything it answered.
async fn raw_exchange(e: &EngineApp, head: &str, pieces: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = e
        .app
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let bytes = head.as_bytes();
    let step = bytes.len().div_ceil(pieces);
    for piece in bytes.chunks(step) {
        conn.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn auth_of(c: &Client) -> String {
    format!(
        "Authorization: Bearer {}",
        c.bearer.as_deref().expect("a token")
    )
}

#[tokio::test]
async fn a_stream_request_arriving_in_pieces_is_answered_in_chunks_and_closed() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 3})).await;
    e.alice.wait_finished(id, 20).await;
    let head = format!(
        "GET /api/jobs/{id}/events HTTP/1.1\r\nHost: x\r\n{}\r\nLast-Event-ID: 1\r\n\r\n",
        auth_of(&e.alice)
    );
    // The request line itself is cut: the server waits for the rest.
    let answer = raw_exchange(&e, &head, 7).await;
    let (top, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(top.starts_with("HTTP/1.1 200 OK\r\n"), "{top}");
    let top = top.to_ascii_lowercase();
    assert!(top.contains("content-type: text/event-stream"), "{top}");
    assert!(top.contains("transfer-encoding: chunked"), "{top}");
    assert!(top.contains("connection: close"), "{top}");
    assert!(top.contains("x-accel-buffering: no"), "{top}");
    // Decode the chunks: the last is empty.
    let mut rest = body;
    let mut text = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            assert_eq!(after, "\r\n", "nothing after the last chunk");
            break;
        }
        text.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n");
        rest = &after[size + 2..];
    }
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["2", "3", "4", "5"], "resumed after seq 1 ({text})");
    assert!(text.contains("event: end\n"), "{text}");
}

#[tokio::test]
async fn an_http10_stream_ends_with_the_connection() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 2})).await;
    e.alice.wait_finished(id, 20).await;
    let head = format!(
        "GET /api/jobs/{id}/events HTTP/1.0\r\n{}\r\n\r\n",
        auth_of(&e.alice)
    );
    let answer = raw_exchange(&e, &head, 1).await;
    let (top, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(top.starts_with("HTTP/1.1 200 OK\r\n"), "{top}");
    assert!(
        !top.to_ascii_lowercase().contains("transfer-encoding"),
        "{top}"
    );
    assert!(body.starts_with("retry: 2000\n\nevent: state\n"), "{body}");
    assert!(
        body.ends_with("\n\n") && body.contains("event: end\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_bad_stream_request_is_refused_and_the_guard_still_answers() {
    let e = stream_app().await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 2})).await;
    let auth = auth_of(&e.alice);
    let with_body =
        format!("GET /api/jobs/{id}/events HTTP/1.1\r\n{auth}\r\nContent-Length: 5\r\n\r\nhello");
    let answer = raw_exchange(&e, &with_body, 1).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("an event stream request has no body\n"),
        "{answer}"
    );

    let huge = format!(
        "GET /api/jobs/{id}/events HTTP/1.1\r\n{auth}\r\nX-Filler: {}\r\n\r\n",
        "y".repeat(20_000)
    );
    let answer = raw_exchange(&e, &huge, 1).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // Through the router as ever: no session, no stream.
    let anonymous = format!("GET /api/jobs/{id}/events HTTP/1.1\r\nHost: x\r\n\r\n");
    let answer = raw_exchange(&e, &anonymous, 1).await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}
