//! Safe to expose: the browser-facing headers of every kind of response,
//! and the request body limit on every kind of route.

use app::journal::PostJournalNote;
use futures::stream;
use leptos::server_fn::ServerFn;
use serde_json::{json, Value};

use crate::support::*;

/// The nonce a page's Content-Security-Policy names.
fn nonce_of(csp: &str) -> &str {
    let start = csp.find("'nonce-").expect("a nonce in the policy") + "'nonce-".len();
    let len = csp[start..].find('\'').expect("a closed nonce source");
    &csp[start..start + len]
}

/// Every `<script …>` start tag of a page.
fn script_tags(html: &str) -> Vec<&str> {
    html.match_indices("<script")
        .map(|(i, _)| &html[i..i + html[i..].find('>').expect("a closed tag") + 1])
        .collect()
}

/// Asserts the headers every page carries, and that each inline script
/// carries the policy's nonce; the nonce.
fn assert_page_is_locked_down(h: &reqwest::header::HeaderMap, html: &str) -> String {
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "style-src 'self' 'nonce-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    let nonce = nonce_of(csp).to_string();
    assert!(
        csp.contains(&format!(
            "script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval';"
        )),
        "{csp}"
    );
    assert!(!csp.contains("'unsafe-eval'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");

    let tags = script_tags(html);
    let inline: Vec<&&str> = tags.iter().filter(|t| !t.contains(" src=")).collect();
    assert!(
        inline.len() >= 2,
        "the import map and the hydration script are inline: {tags:?}"
    );
    for tag in inline {
        assert!(
            tag.contains(&format!("nonce=\"{nonce}\"")),
            "an inline script without the nonce: {tag}"
        );
    }
    nonce
}

#[tokio::test]
async fn every_page_carries_a_policy_whose_nonce_is_on_each_inline_script() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let mut nonces = Vec::new();
    for path in ["/", "/jobs", "/admin/audit", "/no/such/page", "/jobs/999"] {
        let res = admin.get(path).send().await.unwrap();
        let status = res.status().as_u16();
        assert!(status == 200 || status == 404, "{path}: {status}");
        let headers = res.headers().clone();
        let html = res.text().await.unwrap();
        nonces.push(assert_page_is_locked_down(&headers, &html));
    }
    let res = Client::anonymous(&app).get("/login").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    nonces.push(assert_page_is_locked_down(
        &headers,
        &res.text().await.unwrap(),
    ));

    let all = nonces.len();
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), all, "a new nonce for every response");
}

#[tokio::test]
async fn api_answers_are_never_stored_and_cannot_act_as_a_page() {
    let app = TestApp::start().await;
    let admin = app.admin_bearer().await;
    for path in [
        "/api/jobs",
        "/api/templates",
        "/api/jobs/1/log",
        "/healthz",
        "/metrics",
    ] {
        let res = admin.get(path).send().await.unwrap();
        let h = res.headers();
        assert_eq!(
            h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        if path.starts_with("/api/") {
            assert_eq!(h["cache-control"], "no-store", "{path}");
        }
    }
}

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

#[tokio::test]
async fn the_plain_text_log_downloads_whole_when_compressed() {
    // Found by the end-to-end markup test: every gzip download of a log was
    // cut by a reset after its last line.
    let app = TestApp::builder()
        .config(
            "[[targets]]\nid = \"t1\"\nkind = \"local\"\n\n[[templates]]\nid = \"seq\"\ncommand = [\"seq\", \"1\", \"{n}\"]\nparams = [{ name = \"n\", type = \"int\", default = 3 }]\n",
        )
        .start()
        .await;
    let admin = app.admin().await;
    let id = admin.launch_ok("seq", "t1", json!({"n": 5000})).await;
    admin.wait_finished(id, 60).await;
    let res = admin
        .get(&format!("/api/jobs/{id}/log?format=text"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let body = res.bytes().await.expect("the whole body, not a reset");
    assert!(body.len() > 100, "{} bytes", body.len());
}
