//! The foundation: health, server rendering, a server function writing to
//! the database, configuration errors, start-up failures and clean shutdown.

use std::io::{Read, Write};
use std::time::Duration;

use app::journal::PostJournalNote;
use leptos::server_fn::ServerFn;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn health_answers_ok_after_a_real_database_query() {
    let app = TestApp::start().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let engine = if on_postgres() {
        "postgresql"
    } else {
        "sqlite"
    };
    let node = app.state.config.cluster.node.clone();
    assert!(
        node.ends_with(&format!("-{}", app.addr.port())),
        "the default node id names the port bound: {node}"
    );
    let mut body = res.json::<Value>().await.unwrap();
    // 0 until the engine has registered the node (it does so beside serving).
    let epoch = body["epoch"].take();
    assert!(
        epoch.as_i64().is_some_and(|e| (0..=1).contains(&e)),
        "{epoch}"
    );
    assert_eq!(
        body,
        json!({"status": "ok", "node": node, "epoch": null,
               "database": {"engine": engine, "answered": true}})
    );
}

#[tokio::test]
async fn health_answers_503_with_a_reason_when_the_database_is_unreachable() {
    let pg = PgDatabase::create().await;
    let proxy = CuttableProxy::start("127.0.0.1:5432").await;
    let app = TestApp::builder()
        .database_url(&pg.url_via(&proxy.addr.to_string()))
        .start()
        .await;
    let ok = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200, "healthy while PostgreSQL is reachable");

    proxy.cut();
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(
        body["database"],
        json!({"engine": "postgresql", "answered": false})
    );
    assert_eq!(body["node"], app.state.config.cluster.node.as_str());
    assert!(
        body["reason"].as_str().unwrap().contains("database"),
        "a reason naming the database: {body}"
    );
}

#[tokio::test]
async fn the_dashboard_is_rendered_on_the_server_with_the_import_map_before_the_hydration_scripts()
{
    let app = TestApp::start().await;
    let res = app.admin().await.get("/").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    // `<h1>Dashboard<!></h1>`: with erase_components (.cargo/config.toml) a
    // list of children ends with a hydration marker.
    assert!(
        html.contains("<h1>Dashboard<!></h1>") || html.contains("<h1>Dashboard</h1>"),
        "{html}"
    );
    let import_map = html
        .find(r#"<script type="importmap""#)
        .expect("import map");
    let hydration = html.find("/pkg/opsdeck.js").expect("hydration script");
    assert!(
        import_map < hydration,
        "the import map must precede the module scripts"
    );
    assert!(html.contains(r#""xterm":"/xterm-lazy.mjs""#));
}

#[tokio::test]
async fn a_note_posted_to_the_server_function_is_stored_and_rendered() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let text = "restarted web-1 after the kernel update";
    // A plain form post, as a browser without JavaScript sends it.
    let res = admin
        .post(PostJournalNote::PATH)
        .header("accept", "text/html")
        .header("referer", app.url("/"))
        .form(&[("text", text)])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "status {}", res.status());
    let html = admin.get("/").send().await.unwrap().text().await.unwrap();
    assert!(html.contains(text), "the note is on the page");
    assert!(
        html.contains("admin<!> ·") || html.contains("admin ·"),
        "signed by its author"
    );

    // A blank note is refused, and the error travels back in the redirect.
    let res = admin
        .post(PostJournalNote::PATH)
        .header("accept", "text/html")
        .header("referer", app.url("/"))
        .form(&[("text", "   ")])
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("__err="), "{location}");
}

#[tokio::test]
async fn an_unknown_path_answers_404() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[test]
fn help_lists_the_subcommands() {
    let out = std::process::Command::new(opsdeck_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for sub in ["serve", "check-config"] {
        assert!(text.contains(sub), "--help lists {sub}:\n{text}");
    }
}

#[test]
fn an_invalid_config_stops_with_file_line_and_key_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nworkers = 4\n\n[[targets]]\nid = \"Web 1\"\nkind = \"local\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(opsdeck_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:5:", path.display())),
        "file and line: {err}"
    );
    assert!(err.contains("targets[0].id"), "key: {err}");

    // The same through OPSDECK_CONFIG, with `check-config`.
    let out = std::process::Command::new(opsdeck_bin())
        .arg("check-config")
        .env("OPSDECK_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_unreadable_config_file_exits_2_saying_which() {
    let out = std::process::Command::new(opsdeck_bin())
        .args(["--config", "/nonexistent/opsdeck.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("/nonexistent/opsdeck.toml"));
}

#[test]
fn the_built_in_demo_configuration_is_the_default() {
    let out = std::process::Command::new(opsdeck_bin())
        .arg("check-config")
        .env_remove("OPSDECK_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("built-in demo configuration"), "{text}");
}

#[test]
fn a_database_directory_that_cannot_be_created_exits_2_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let url = format!("sqlite://{}/sub/opsdeck.db", blocker.display());
    let out = std::process::Command::new(opsdeck_bin())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("DATABASE_URL", &url)
        .env_remove("OPSDECK_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot create the database directory"),
        "{err}"
    );
    assert!(err.contains("database_url"), "says what to change: {err}");
}

#[test]
fn a_port_in_use_exits_2_saying_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(opsdeck_bin())
        .args(["serve", "--addr", &addr])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/o.db", dir.path().display()),
        )
        .env_remove("OPSDECK_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("--addr"), "{err}");
}

/// Sends a form post's headers and half its body, signals the server, then
/// the rest: the in-flight request must complete before the server exits 0.
fn in_flight_request_survives(sig: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinServer::start(dir.path(), "");
    let cookie = server.admin_cookie();
    let body = "text=written%20during%20shutdown";
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        conn,
        "POST {} HTTP/1.1\r\nHost: {}\r\nAccept: text/html\r\nReferer: {}\r\nOrigin: {}\r\nCookie: opsdeck_session={}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        PostJournalNote::PATH,
        server.addr,
        server.url("/"),
        server.url(""),
        cookie,
        body.len(),
        &body[..10]
    )
    .unwrap();
    conn.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal(sig);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still serving the in-flight request"
    );
    conn.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 302"),
        "the request completed: {response}"
    );
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "log:\n{}",
        server.log()
    );
    assert!(server.log().contains("stopped"));
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_cleanly() {
    in_flight_request_survives(Signal::SIGTERM);
}

#[test]
fn sigint_lets_in_flight_requests_finish_and_exits_cleanly() {
    in_flight_request_survives(Signal::SIGINT);
}
