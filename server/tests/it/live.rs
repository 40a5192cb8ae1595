//! The one live connection a browser shares (`/api/live`, docs/live.md):
//! the feed and several job streams on one connection, each exactly once
//! and resumed from its own seq, subscriptions added and dropped beside it,
//! the same permissions, limits and revocation as the single streams, and
//! the count in `/metrics`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const TEMPLATES: &str = r#"
[[templates]]
id = "paced"
script = 'i=0; while [ $i -lt "$1" ]; do seq 1 500; sleep 0.05; i=$((i+1)); done'
args = ["{rounds}"]
params = [{ name = "rounds", type = "int", default = 10 }]
exclusive = "none"
"#;

fn config(server: &str) -> String {
    format!("[server]\nstream_keepalive = \"300ms\"\n{server}\n{TEMPLATES}")
}

/// One event of the connection: (sub, name, cursor, data).
struct Frame {
    sub: u32,
    name: String,
    cursor: Option<i64>,
    data: serde_json::Value,
}

async fn frame(sse: &mut Sse) -> Option<Frame> {
    let ev = tokio::time::timeout(Duration::from_secs(20), sse.next())
        .await
        .expect("the live connection went quiet")?;
    assert_eq!(ev.event, "message", "the connection's events are unnamed");
    let (header, data) = ev.data.split_once('\n').expect("a header line");
    let mut parts = header.split(' ');
    let sub = parts.next().unwrap().parse().unwrap();
    let name = parts.next().unwrap().to_string();
    let cursor = parts.next().unwrap();
    Some(Frame {
        sub,
        name,
        cursor: (cursor != "-").then(|| cursor.parse().unwrap()),
        data: serde_json::from_str(data).unwrap(),
    })
}

/// Opens `/api/live?…`; returns the stream and the connection's id.
async fn connect(who: &Client, query: &str) -> (Sse, String) {
    let (status, sse) = Sse::open(who, &format!("/api/live?{query}"), None).await;
    assert_eq!(status, 200, "{query}");
    let mut sse = sse.unwrap();
    let hello = frame(&mut sse).await.unwrap();
    assert_eq!((hello.sub, hello.name.as_str()), (0, "hello"));
    (sse, hello.data["conn"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn one_connection_carries_the_feed_and_several_jobs_each_line_once_and_resumes_each_from_its_own_seq(
) {
    let e = EngineApp::start_with(&config("")).await;
    let a = e
        .alice
        .launch_ok("paced", "t1", json!({"rounds": 16}))
        .await;
    let b = e
        .alice
        .launch_ok("paced", "t2", json!({"rounds": 16}))
        .await;
    let (mut sse, conn) = connect(&e.alice, &format!("sub=1:feed&sub=2:job:{a}:0")).await;
    assert_eq!(e.app.metric("opsdeck_live_connections").await, 1.0);

    // Job b joins the open connection by a request beside it.
    let (status, body) = e
        .alice
        .post_json(
            &format!("/api/live/{conn}/subscribe"),
            json!({"sub": 3, "stream": format!("job:{b}"), "after": 0}),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    // Each subscription's seqs, in the order they came.
    let mut seqs: HashMap<u32, Vec<i64>> = HashMap::new();
    let mut ended = Vec::new();
    let mut drops = 0;
    while ended.len() < 2 {
        let Some(f) = frame(&mut sse).await else {
            panic!("the connection closed")
        };
        match (f.sub, f.name.as_str()) {
            (0, "ended") => ended.push(f.data["sub"].as_u64().unwrap() as u32),
            (sub @ (2 | 3), "log") => {
                let seq = f.data["seq"].as_i64().unwrap();
                assert_eq!(f.cursor, Some(seq), "a line's cursor is its seq");
                seqs.entry(sub).or_default().push(seq);
            }
            _ => {}
        }
        // Drop the connection twice mid-job, and open a new one from
        // each subscription's own last seq.
        let got_b = seqs.get(&3).map_or(0, Vec::len);
        if (drops == 0 && got_b >= 1000) || (drops == 1 && got_b >= 4000) {
            drops += 1;
            let last = |s: u32| seqs.get(&s).and_then(|v| v.last().copied()).unwrap_or(0);
            let query = format!(
                "sub=1:feed&sub=2:job:{a}:{}&sub=3:job:{b}:{}",
                last(2),
                last(3)
            );
            drop(sse);
            sse = connect(&e.alice, &query).await.0;
        }
    }
    assert_eq!(drops, 2);
    ended.sort();
    assert_eq!(ended, [2, 3], "each job subscription ends on its own");
    for (sub, job) in [(2, a), (3, b)] {
        let stored = e.alice.job(job).await["last_seq"].as_i64().unwrap();
        assert_eq!(
            seqs[&sub],
            (1..=stored).collect::<Vec<_>>(),
            "job {job}: every stored line exactly once, in order, across 2 reconnects"
        );
    }

    // The feed is still on the connection: a new job shows up on it.
    let c = e.alice.launch_ok("seq", "t1", json!({"n": 3})).await;
    loop {
        let f = frame(&mut sse).await.expect("open");
        if f.sub == 1 && f.name == "job" && f.data["id"] == c {
            break;
        }
    }
    // Dropped beside the connection, it is gone from it.
    let (status, _) = e
        .alice
        .post_json(&format!("/api/live/{conn}/unsubscribe"), json!({"sub": 1}))
        .await;
    assert_eq!(status, 404, "that was the first connection, dropped since");
    drop(sse);
    let mut waited = 0;
    while e.app.metric("opsdeck_live_connections").await != 0.0 {
        assert!(waited < 100, "the dropped connection is still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
}

#[tokio::test]
async fn subscriptions_follow_the_single_streams_rules_and_bad_ones_name_the_field() {
    let e = EngineApp::start_with(&config("max_streams_per_user = 1")).await;
    let alices = e.alice.launch_ok("sleep", "t1", json!({"s": "30"})).await;
    let (mut sse, conn) = connect(&e.alice, "sub=1:feed").await;

    // One connection is one stream slot, however much it carries.
    let (status, _) = Sse::open(&e.alice, "/api/live?sub=1:feed", None).await;
    assert_eq!(status, 429);

    // Bad requests name their field.
    for (query, field) in [
        ("sub=0:feed", "sub"),
        ("sub=1:jobs:2", "sub"),
        ("after=3", "after"),
    ] {
        let res = e
            .bob
            .get(&format!("/api/live?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let path = format!("/api/live/{conn}/subscribe");
    let (status, body) = e
        .alice
        .post_json(&path, json!({"sub": 2, "stream": "jobs"}))
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("stream")));
    let (status, body) = e
        .alice
        .post_json(
            &path,
            json!({"sub": 2, "stream": format!("job:{alices}"), "after": -1}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("after")));

    // Another user can neither use alice's connection nor follow her job.
    let (status, _) = e
        .bob
        .post_json(&path, json!({"sub": 2, "stream": "feed"}))
        .await;
    assert_eq!(status, 404, "bob does not see alice's connection");
    let (mut bobs, _) = connect(&e.bob, &format!("sub=5:job:{alices}:0")).await;
    let refused = frame(&mut bobs).await.unwrap();
    assert_eq!((refused.sub, refused.name.as_str()), (5, "refused"));
    assert_eq!(refused.data["status"], 404);
    let ended = frame(&mut bobs).await.unwrap();
    assert_eq!((ended.sub, ended.name.as_str()), (0, "ended"));
    assert_eq!(ended.data["sub"], 5);

    // Revoking the credential ends the whole connection with `revoked`.
    let (_, tokens) = e.alice.get_json("/api/tokens").await;
    for token in tokens.as_array().unwrap() {
        let id = token["id"].as_i64().unwrap();
        let (status, _) = e
            .alice
            .post_json(&format!("/api/tokens/{id}/revoke"), json!({}))
            .await;
        assert_eq!(status, 200);
    }
    loop {
        let f = tokio::time::timeout(Duration::from_secs(5), frame(&mut sse))
            .await
            .expect("revoked within 5 s");
        match f {
            Some(f) if f.sub == 0 && f.name == "revoked" => {
                assert!(f.data["reason"].as_str().is_some());
                break;
            }
            Some(_) => {}
            None => panic!("the connection ended without `revoked`"),
        }
    }
    assert!(frame(&mut sse).await.is_none(), "and closes");
}
