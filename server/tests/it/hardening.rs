//! Safe to expose: the request body limit on every kind of route.

use app::journal::PostJournalNote;
use futures::stream;
use leptos::server_fn::ServerFn;
use serde_json::{json, Value};

use crate::support::*;

/// A server with a small body limit, and its admin.
async fn small_limit() -> (TestApp, Client) {
    let app = TestApp::builder()
        .config("[server]\nmax_body_bytes = \"4KiB\"\n")
        .start()
        .await;
    let admin = app.admin().await;
    (app, admin)
}

async fn assert_413(res: reqwest::Response) {
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("4 KiB (4096 bytes)") && error.contains("[server].max_body_bytes"),
        "the error says the limit and the key: {error}"
    );
}

#[tokio::test]
async fn an_api_body_over_the_limit_answers_413_saying_the_limit_and_is_counted() {
    let (app, admin) = small_limit().await;
    let big = json!({"template": "sleep", "target": "web-1", "params": {"p": "x".repeat(8192)}});

    // With a Content-Length: refused before the body is read.
    let res = admin.post("/api/jobs").json(&big).send().await.unwrap();
    assert_eq!(res.headers()["connection"], "close");
    assert_413(res).await;

    // Chunked, without a Content-Length: refused once it passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let res = admin
        .post("/api/jobs")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_413(res).await;

    // Within the limit the body reaches the handler whole.
    let small = json!({"template": "no-such-template", "target": "web-1", "params": {}});
    let (status, body) = admin.post_json("/api/jobs", small).await;
    assert_ne!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no-such-template"),
        "{body}"
    );
    assert_eq!(app.refusals("request_body").await, 2);
}

#[tokio::test]
async fn a_server_function_form_post_over_the_limit_answers_413_and_is_counted() {
    let (app, admin) = small_limit().await;
    let big = "x".repeat(8192);
    let res = admin
        .post(PostJournalNote::PATH)
        .header("accept", "application/json")
        .form(&[("text", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_413(res).await;
    // The same post without JavaScript (a browser's plain form post).
    let res = admin
        .post(PostJournalNote::PATH)
        .header("accept", "text/html")
        .header("referer", app.url("/"))
        .form(&[("text", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_413(res).await;

    // A note within the limit is stored as before.
    let (status, body) = admin
        .call_fn(PostJournalNote::PATH, &[("text", "rotated the logs")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.refusals("request_body").await, 2);
}
