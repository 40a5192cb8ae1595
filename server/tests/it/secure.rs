//! Issue 17's promises that reach what is already open, and what runs:
//! revocation ends open event streams and terminals within 5 s (on this
//! replica and on another one on the same database), the limits on open
//! streams, and a target's `user =` running its jobs and console as that
//! Unix user.

use std::time::{Duration, Instant};

use leptos::server_fn::ServerFn;
use serde_json::json;

use crate::support::*;
use crate::terminal::Term;

/// How soon a revocation must reach what is open.
const WITHIN: Duration = Duration::from_secs(5);

fn config(extra_server: &str, extra: &str) -> String {
    format!(
        r#"
[server]
stream_keepalive = "500ms"
{extra_server}

[jobs]
poll_interval = "200ms"

[terminal]
shell = ["/bin/bash", "--norc", "--noprofile"]
grace = "30s"

[[targets]]
id = "web-1"
kind = "local"
owners = ["alice"]
terminal = true
terminal_roles = ["admin", "operator"]

[[templates]]
id = "sleep"
command = ["sleep", "{{s}}"]
params = [{{ name = "s", type = "string", default = "60", pattern = "[0-9.]+" }}]
exclusive = "none"
{extra}
"#
    )
}

async fn start(extra_server: &str) -> TestApp {
    let app = TestApp::builder()
        .config(&config(extra_server, ""))
        .start()
        .await;
    app.create_user("alice", "operator").await;
    app
}

/// Reads a stream until it ends; the `revoked` event's reason, if one
/// came. Panics if the stream is still open after `within`.
async fn ends_with_revoked(sse: &mut Sse, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut reason = None;
    loop {
        match tokio::time::timeout_at(deadline, sse.next()).await {
            Err(_) => panic!("the stream was still open after {within:?}"),
            Ok(None) => return reason,
            Ok(Some(ev)) if ev.event == "revoked" => {
                reason = Some(ev.json()["reason"].as_str().unwrap().to_string())
            }
            Ok(Some(_)) => {}
        }
    }
}

/// Asserts the stream stays open (and says nothing of revocation) for `d`.
async fn stays_open(sse: &mut Sse, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, sse.next()).await {
            Err(_) => return,
            Ok(None) => panic!("the stream ended"),
            Ok(Some(ev)) => assert_ne!(ev.event, "revoked", "{}", ev.data),
        }
    }
}

/// Reads a terminal until it ends: the `closed` frame's reason and the
/// `exit` frame's arrival.
async fn terminal_ends(t: &mut Term, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    let mut reason = None;
    loop {
        let frame = tokio::time::timeout_at(deadline, t.frame())
            .await
            .unwrap_or_else(|_| panic!("the terminal was still open after {within:?}"));
        match frame {
            Some(f) if f["type"] == "closed" => {
                reason = Some(f["reason"].as_str().unwrap().to_string())
            }
            Some(f) if f["type"] == "exit" => return reason.expect("a reason before the exit"),
            Some(_) => {}
            None => panic!("the socket closed without an exit frame"),
        }
    }
}

/// The status of a terminal upgrade that is refused.
async fn terminal_refused(app: &TestApp, who: &Client) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/targets/web-1/terminal", app.addr)
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    if let Some(c) = &who.cookie {
        h.insert("cookie", format!("opsdeck_session={c}").parse().unwrap());
    }
    if let Some(t) = &who.bearer {
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    h.insert("origin", app.url("").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("the terminal upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

async fn open(who: &Client, path: &str) -> Sse {
    let (status, sse) = Sse::open(who, path, None).await;
    assert_eq!(status, 200, "{path}");
    sse.unwrap()
}

#[tokio::test]
async fn signing_out_ends_the_sessions_streams_and_terminal_within_5_s_and_new_ones_are_refused() {
    let app = start("").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let admin = app.admin().await;
    let job = alice.launch_ok("sleep", "web-1", json!({"s": "60"})).await;
    let mut feed = open(&alice, "/api/events").await;
    let mut stream = open(&alice, &format!("/api/jobs/{job}/events")).await;
    let mut admins_feed = open(&admin, "/api/events").await;
    let mut term = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    term.type_line("echo ready-$((2*21))").await;
    term.wait_for("ready-42").await;

    let t0 = Instant::now();
    let res = alice.post("/api/auth/logout").send().await.unwrap();
    assert_eq!(res.status(), 204);
    let reason = ends_with_revoked(&mut feed, WITHIN).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("signed out")),
        "{reason:?}"
    );
    let reason = ends_with_revoked(&mut stream, WITHIN).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("signed out")),
        "{reason:?}"
    );
    let why = terminal_ends(&mut term, WITHIN).await;
    assert!(why.starts_with("signed out"), "{why}");
    let took = t0.elapsed();
    assert!(took < WITHIN, "took {took:?}");
    println!("sign-out reached 2 streams and a terminal in {took:?}");

    // New ones are refused; another user's stream goes on.
    let (status, _) = Sse::open(&alice, "/api/events", None).await;
    assert_eq!(status, 401);
    assert_eq!(terminal_refused(&app, &alice).await, 401);
    stays_open(&mut admins_feed, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn disabling_a_user_ends_the_streams_of_every_session_and_token_of_theirs() {
    let app = start("").await;
    let by_cookie = app.login("alice", USER_PASSWORD).await;
    let by_token = app.bearer_for("alice").await;
    let admin = app.admin_bearer().await;
    let job = by_cookie
        .launch_ok("sleep", "web-1", json!({"s": "60"}))
        .await;
    let mut feed = open(&by_cookie, "/api/events").await;
    let mut stream = open(&by_token, &format!("/api/jobs/{job}/events")).await;
    let term = Term::open(&app, &by_token, "/api/targets/web-1/terminal").await;
    // The shell goes on without its socket (the grace): detached, it must
    // end too.
    drop(term);
    let alice_id = user_id(&app, "alice").await;
    assert_eq!(app.state.terminals.count_for(alice_id), 1);

    let t0 = Instant::now();
    let (s, body) = admin
        .call_fn(
            app::admin::users::SetUserDisabled::PATH,
            &[("username", "alice"), ("disabled", "true")],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let reason = ends_with_revoked(&mut feed, WITHIN).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("signed out")),
        "{reason:?}"
    );
    let reason = ends_with_revoked(&mut stream, WITHIN).await;
    assert_eq!(
        reason.as_deref(),
        Some("signed out: the account was disabled")
    );
    let deadline = Instant::now() + WITHIN;
    while app.state.terminals.count_for(alice_id) > 0 {
        assert!(
            Instant::now() < deadline,
            "the detached terminal still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "disabling reached a feed, a job stream and a detached terminal in {:?}",
        t0.elapsed()
    );
    assert_eq!(Sse::open(&by_token, "/api/events", None).await.0, 401);
}

async fn user_id(app: &TestApp, name: &str) -> i64 {
    let admin = app.admin_bearer().await;
    let (_, users) = admin.get_json("/api/users").await;
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn revoking_a_token_ends_its_streams_and_terminal_and_leaves_the_others() {
    let app = start("").await;
    let a = app.bearer_for("alice").await;
    let b = app.bearer_for("alice").await;
    let mut on_a = open(&a, "/api/events").await;
    let mut on_b = open(&b, "/api/events").await;
    let mut term = Term::open(&app, &a, "/api/targets/web-1/terminal").await;

    let (_, tokens) = a.get_json("/api/tokens").await;
    let tokens = tokens.as_array().unwrap().clone();
    // Tokens are listed newest first: `a` is the older one.
    let id_a = tokens.last().unwrap()["id"].as_i64().unwrap();
    let res = b
        .post(&format!("/api/tokens/{id_a}/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let reason = ends_with_revoked(&mut on_a, WITHIN).await;
    assert_eq!(reason.as_deref(), Some("the API token was revoked"));
    assert_eq!(
        terminal_ends(&mut term, WITHIN).await,
        "the API token was revoked"
    );
    stays_open(&mut on_b, Duration::from_secs(3)).await;
    assert_eq!(Sse::open(&a, "/api/events", None).await.0, 401);
}

#[tokio::test]
async fn changing_or_resetting_a_password_ends_the_other_sessions_streams() {
    let app = start("").await;
    let here = app.login("alice", USER_PASSWORD).await;
    let elsewhere = app.login("alice", USER_PASSWORD).await;
    let mut mine = open(&here, "/api/events").await;
    let mut theirs = open(&elsewhere, "/api/events").await;

    let (s, body) = here
        .call_fn(
            app::account::ChangePassword::PATH,
            &[
                ("current", USER_PASSWORD),
                ("password", "a-new-password-42"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let reason = ends_with_revoked(&mut theirs, WITHIN).await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("signed out")),
        "{reason:?}"
    );
    stays_open(&mut mine, Duration::from_secs(3)).await;

    let admin = app.admin_bearer().await;
    let (s, _) = admin
        .call_fn(
            app::admin::users::ResetUserPassword::PATH,
            &[("username", "alice"), ("password", "reset-by-admin-1")],
        )
        .await;
    assert_eq!(s, 200);
    let reason = ends_with_revoked(&mut mine, WITHIN).await;
    assert!(reason.is_some(), "a reset ends this session too");
}

#[tokio::test]
async fn a_sign_out_on_one_replica_ends_the_sessions_streams_on_another() {
    let a = start("").await;
    let url = a.state.config.server.database_url.clone();
    let b = TestApp::builder()
        .config(&config("", "[cluster]\nnode = \"replica-b\"\n"))
        .database_url(&url)
        .start()
        .await;
    let on_a = a.login("alice", USER_PASSWORD).await;
    // The same session, used on replica B (as behind a load balancer).
    let on_b = Client {
        cookie: on_a.cookie.clone(),
        ..Client::anonymous(&b)
    };
    let mut feed_b = open(&on_b, "/api/events").await;
    let mut term_b = Term::open(&b, &on_b, "/api/targets/web-1/terminal").await;

    let t0 = Instant::now();
    let res = on_a.post("/api/auth/logout").send().await.unwrap();
    assert_eq!(res.status(), 204);
    let reason = ends_with_revoked(&mut feed_b, WITHIN).await;
    assert!(reason.is_some());
    let why = terminal_ends(&mut term_b, WITHIN).await;
    assert!(why.starts_with("signed out"), "{why}");
    println!(
        "a sign-out on replica A reached replica B in {:?}",
        t0.elapsed()
    );
    b.stop().await;
}

#[tokio::test]
async fn many_streams_of_one_session_cost_one_check_per_tick_not_one_per_stream() {
    let app = start("max_streams_per_user = 500\nmax_streams_per_address = 500").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(open(&alice, "/api/events").await);
    }
    assert_eq!(app.state.revocations.held(), 1, "one credential, held once");
    let before = app.state.revocations.queries();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let queries = app.state.revocations.queries() - before;
    // One query per 2 s tick for all 200 streams (plus a tick at an edge).
    assert!((2..=4).contains(&queries), "{queries} queries in 6 s");
    println!("200 open streams of one session: {queries} revocation queries in 6 s");
    drop(streams);
}

#[tokio::test]
async fn two_hundred_streams_of_one_user_and_the_next_is_refused_with_429_and_counted() {
    let app = start("max_streams_per_user = 200\nmax_streams_per_address = 1000").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let before = app.refusals("streams_per_user").await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(open(&alice, "/api/events").await);
    }
    let res = alice
        .get("/api/events")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("server.max_streams_per_user"),
        "{body}"
    );
    assert_eq!(app.refusals("streams_per_user").await, before + 1);

    // Closing one frees its place.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, s) = Sse::open(&alice, "/api/events", None).await;
        if status == 200 {
            drop(s);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn streams_past_the_per_address_limit_are_refused_whoever_asks() {
    let app = start("max_streams_per_address = 3").await;
    app.create_user("bob", "operator").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let bob = app.login("bob", USER_PASSWORD).await;
    let _a1 = open(&alice, "/api/events").await;
    let _a2 = open(&alice, "/api/events").await;
    let _b1 = open(&bob, "/api/events").await;
    let res = bob.get("/api/events").send().await.unwrap();
    assert_eq!(res.status(), 429);
    let body = res.text().await.unwrap();
    assert!(body.contains("server.max_streams_per_address"), "{body}");
    assert_eq!(app.refusals("streams_per_address").await, 1);
}

// ---- Least privilege: a target's `user =` ----

const TEST_USER: &str = "opsdeck-test";

/// Creates the test user once (root only); false, with a message, when the
/// tests do not run as root.
fn ensure_test_user() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        println!(
            "SKIPPED: running as another user than root needs root; these tests run as uid {}",
            nix::unistd::Uid::effective()
        );
        return false;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if matches!(nix::unistd::User::from_name(TEST_USER), Ok(Some(_))) {
            return;
        }
        let status = std::process::Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", TEST_USER])
            .status()
            .expect("useradd");
        // 9: it exists already (another test binary made it meanwhile).
        assert!(
            status.success() || status.code() == Some(9),
            "useradd {TEST_USER}: {status}"
        );
    });
    true
}

#[tokio::test]
async fn a_target_with_user_runs_its_jobs_and_console_as_that_user_who_cannot_read_the_database() {
    if !ensure_test_user() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().to_path_buf();
    // As a real install keeps it (docs/security.md): the data directory is
    // the server's alone, 0700.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&db_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        std::fs::metadata(&db_dir).unwrap().permissions().mode() & 0o077,
        0,
        "the test's data dir must not be open to others"
    );
    let db_file = db_dir.join("opsdeck.db");
    let (url, _pg) = if on_postgres() {
        let pg = PgDatabase::create().await;
        (pg.url(), Some(pg))
    } else {
        (format!("sqlite://{}", db_file.display()), None)
    };
    let probe = format!(
        r#"
[[targets]]
id = "confined"
kind = "local"
owners = ["alice"]
terminal = true
terminal_roles = ["operator"]
user = "{TEST_USER}"

[[templates]]
id = "whoami"
script = 'id -un; echo "home=$HOME"; pwd; if cat "$1" >/dev/null 2>&1; then echo READ-THE-DATABASE; else echo cannot-read-the-database; fi'
args = ["{db}"]
exclusive = "none"
"#,
        db = db_file.display()
    );
    let app = TestApp::builder()
        .config(&config("", &probe))
        .database_url(&url)
        .start()
        .await;
    app.create_user("alice", "operator").await;
    let alice = app.login("alice", USER_PASSWORD).await;

    let job = alice.launch_ok("whoami", "confined", json!({})).await;
    let done = alice.wait_finished(job, 20).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let out = texts(&alice.all_lines(job).await, "stdout");
    let home = format!("/home/{TEST_USER}");
    assert_eq!(
        out,
        [
            TEST_USER.to_string(),
            format!("home={home}"),
            home.clone(),
            "cannot-read-the-database".to_string()
        ],
        "{out:?}"
    );
    // The same job on a target without `user` runs as the server: it can.
    let job = alice.launch_ok("whoami", "web-1", json!({})).await;
    alice.wait_finished(job, 20).await;
    let out = texts(&alice.all_lines(job).await, "stdout");
    assert_eq!(out[0], "root");

    let mut t = Term::open(&app, &alice, "/api/targets/confined/terminal").await;
    t.type_line("echo \"who=$(id -un) in=$(pwd)\"").await;
    t.wait_for(&format!("who={TEST_USER} in={home}")).await;
    t.type_line(&format!(
        "cat {} | head -c 1; echo status=$?",
        db_file.display()
    ))
    .await;
    t.wait_for("Permission denied").await;
    t.type_line("tty; stat -c owner=%U \"$(tty)\"").await;
    t.wait_for(&format!("owner={TEST_USER}")).await;
    t.type_line("exit 0").await;
    assert_eq!(t.exit_code().await, 0);
}

#[tokio::test]
async fn the_targets_api_names_the_user_and_tells_admins_of_a_console_as_the_server() {
    if !ensure_test_user() {
        return;
    }
    let extra = format!(
        r#"
[[targets]]
id = "confined"
kind = "local"
owners = ["alice"]
terminal = true
user = "{TEST_USER}"
"#
    );
    let app = TestApp::builder().config(&config("", &extra)).start().await;
    app.create_user("alice", "operator").await;
    let admin = app.admin_bearer().await;
    let (s, targets) = admin.get_json("/api/targets").await;
    assert_eq!(s, 200, "{targets}");
    let by_id = |id: &str| {
        targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("confined")["runs_as"], TEST_USER);
    assert_eq!(by_id("confined")["console_as_server"], false);
    assert_eq!(by_id("web-1")["console_as_server"], true);
    let html = admin
        .get("/targets/web-1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("console is a shell as opsdeck&#39;s own user")
            || html.contains("console is a shell as opsdeck's own user"),
        "{html}"
    );
    // Operators are not told (they cannot change it).
    let alice = app.bearer_for("alice").await;
    let (_, targets) = alice.get_json("/api/targets").await;
    assert!(targets
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["console_as_server"] == false));
}
