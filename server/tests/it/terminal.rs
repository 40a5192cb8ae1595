//! The browser terminal over a real WebSocket: a real shell on a real PTY.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config(recordings: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[terminal]
shell = ["/bin/bash", "--norc", "--noprofile"]
grace = "2s"
record = true
recordings_dir = "{}"
{extra}

[[targets]]
id = "web-1"
kind = "local"
owners = ["alice"]
terminal = true
terminal_roles = ["admin", "operator"]

[[targets]]
id = "db-1"
kind = "local"
owners = ["bob"]
terminal = true
terminal_roles = ["admin", "operator"]

[[targets]]
id = "locked"
kind = "local"
owners = ["alice"]
"#,
        recordings.display()
    )
}

pub struct Term {
    pub ws: Ws,
    /// All output so far.
    pub screen: String,
    pub session: String,
    pub resumed: bool,
}

/// The handshake request: the session cookie and our own Origin.
fn request(
    app: &TestApp,
    who: &Client,
    path: &str,
    origin: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("ws://{}{}", app.addr, path);
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    if let Some(c) = &who.cookie {
        h.insert("cookie", format!("opsdeck_session={c}").parse().unwrap());
    }
    if let Some(t) = &who.bearer {
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let own = app.url("");
    h.insert("origin", origin.unwrap_or(&own).parse().unwrap());
    req
}

/// The HTTP status a refused handshake got.
async fn refused(app: &TestApp, who: &Client, path: &str, origin: Option<&str>) -> u16 {
    match tokio_tungstenite::connect_async(request(app, who, path, origin)).await {
        Ok(_) => panic!("{path}: the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("{path}: {e}"),
    }
}

impl Term {
    pub async fn open(app: &TestApp, who: &Client, path: &str) -> Term {
        let (ws, _) = tokio_tungstenite::connect_async(request(app, who, path, None))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut t = Term {
            ws,
            screen: String::new(),
            session: String::new(),
            resumed: false,
        };
        let hello = t.frame().await.expect("a session frame");
        assert_eq!(hello["type"], "session", "{hello}");
        t.session = hello["id"].as_str().unwrap().to_string();
        t.resumed = hello["resumed"].as_bool().unwrap();
        t
    }

    /// The next JSON frame (pings skipped); None when the socket closed.
    pub async fn frame(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("a frame within 15 s")?;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn type_line(&mut self, line: &str) {
        self.send(json!({"type": "input", "data": format!("{line}\r")}))
            .await;
    }

    /// Reads output until `needle` shows up after `from` bytes of screen.
    pub async fn wait_for(&mut self, needle: &str) {
        let from = self.screen.len();
        self.wait_for_after(needle, from).await
    }

    async fn wait_for_after(&mut self, needle: &str, from: usize) {
        while !self.screen[from..].contains(needle) {
            match self.frame().await {
                Some(f) if f["type"] == "output" => {
                    self.screen.push_str(f["data"].as_str().unwrap())
                }
                Some(f) => panic!("waiting for {needle:?}, got {f}\nscreen: {}", self.screen),
                None => panic!(
                    "closed while waiting for {needle:?}\nscreen: {}",
                    self.screen
                ),
            }
        }
    }

    /// Reads until the server closes the socket; its close code and reason.
    async fn close_frame(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("a close within 15 s");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
                Some(Ok(Message::Close(None))) => panic!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error instead of a close frame: {e}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    }

    /// Reads until the `exit` frame; returns its code.
    pub async fn exit_code(&mut self) -> i64 {
        loop {
            match self.frame().await {
                Some(f) if f["type"] == "output" => {
                    self.screen.push_str(f["data"].as_str().unwrap())
                }
                Some(f) if f["type"] == "exit" => return f["code"].as_i64().unwrap(),
                Some(f) if f["type"] == "closed" => continue,
                other => panic!("expected exit, got {other:?}"),
            }
        }
    }
}

async fn start(extra: &str) -> (TestApp, std::path::PathBuf) {
    let rec = tempfile::tempdir().unwrap().keep();
    let app = TestApp::builder()
        .config(&config(&rec, extra))
        .start()
        .await;
    app.create_user("alice", "operator").await;
    app.create_user("bob", "operator").await;
    (app, rec)
}

async fn audit(app: &TestApp, action: &str) -> Vec<Value> {
    let admin = app.admin_bearer().await;
    let (s, body) = admin.get_json(&format!("/api/audit?action={action}")).await;
    assert_eq!(s, 200, "{body}");
    body["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_shell_runs_commands_resizes_and_exits_with_its_code() {
    let (app, rec) = start("").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut t = Term::open(&app, &alice, "/api/targets/web-1/terminal?cols=80&rows=24").await;
    assert!(!t.resumed);
    t.type_line("echo hi-$((6*7))").await;
    t.wait_for("hi-42").await;
    t.send(json!({"type": "resize", "cols": 100, "rows": 30}))
        .await;
    t.type_line("stty size").await;
    t.wait_for("30 100").await;
    t.type_line("exit 3").await;
    assert_eq!(t.exit_code().await, 3);
    assert!(t.frame().await.is_none(), "the socket closes after exit");

    // Audited, start and end, and recorded as asciicast v2.
    let mut ends = Vec::new();
    for _ in 0..50 {
        ends = audit(&app, "terminal.end").await;
        if !ends.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let starts = audit(&app, "terminal.start").await;
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0]["actor"], "alice");
    assert_eq!(starts[0]["subject"], "web-1");
    assert_eq!(ends.len(), 1, "{ends:?}");
    let detail: Value = match &ends[0]["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    assert_eq!(detail["code"], 3);
    let cast = std::fs::read_to_string(rec.join(format!("{}.cast", t.session))).unwrap();
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 80);
    assert!(cast.contains("hi-42"));
    assert!(cast.contains(r#""r","100x30""#));

    // Admins download it and find a Replay link in the audit log.
    let admin = app.admin().await;
    let res = admin
        .get(&format!("/api/recordings/{}", t.session))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("hi-42"));
    let res = alice
        .get(&format!("/api/recordings/{}", t.session))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let html = admin
        .get("/admin/audit?action=terminal.end")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("/admin/recordings/{}", t.session)),
        "{html}"
    );
}

#[tokio::test]
async fn unknown_foreign_locked_cross_origin_and_anonymous_upgrades_are_refused() {
    let (app, _rec) = start("").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    assert_eq!(
        refused(&app, &alice, "/api/targets/nope/terminal", None).await,
        404
    );
    assert_eq!(
        refused(&app, &alice, "/api/targets/db-1/terminal", None).await,
        404
    );
    assert_eq!(
        refused(&app, &alice, "/api/targets/locked/terminal", None).await,
        403
    );
    assert_eq!(
        refused(
            &app,
            &alice,
            "/api/targets/web-1/terminal",
            Some("https://evil.example")
        )
        .await,
        403
    );
    assert_eq!(
        refused(
            &app,
            &Client::anonymous(&app),
            "/api/targets/web-1/terminal",
            None
        )
        .await,
        401
    );
    assert_eq!(
        refused(&app, &alice, "/api/targets/web-1/terminal?cols=0", None).await,
        400
    );
    // An operator's API token works (bearer requests carry no cookie to forge).
    let token = app.bearer_for("alice").await;
    let mut t = Term::open(&app, &token, "/api/targets/web-1/terminal").await;
    t.type_line("echo ok-$((1+1))").await;
    t.wait_for("ok-2").await;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_reattaches_to_the_same_shell() {
    let (app, _rec) = start("").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut t = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    t.type_line("MARK=kept-$((40+2)); echo before-$((1+1))")
        .await;
    t.wait_for("before-2").await;
    let id = t.session.clone();
    drop(t); // the TCP connection goes away without a close frame

    let mut again = Term::open(
        &app,
        &alice,
        &format!("/api/targets/web-1/terminal?session={id}"),
    )
    .await;
    assert!(again.resumed, "reattached");
    assert_eq!(again.session, id);
    // The recent output is replayed first.
    again.wait_for("before-2").await;
    again.type_line("echo $MARK").await;
    again.wait_for("kept-42").await;

    // Another user cannot take it: they get a shell of their own.
    let admin = app.admin().await;
    let other = Term::open(
        &app,
        &admin,
        &format!("/api/targets/web-1/terminal?session={id}"),
    )
    .await;
    assert!(!other.resumed);
    assert_ne!(other.session, id);
}

#[tokio::test]
async fn after_the_grace_no_process_of_the_session_is_left() {
    let (app, _rec) = start("").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut t = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    // A background process that ignores SIGHUP, in the shell's group.
    t.type_line("trap '' HUP; sleep 600 & echo started-$((2+2))")
        .await;
    t.wait_for("started-4").await;
    let session = app.state.terminals.get(&t.session).expect("the session");
    let pgid = session.pgid().expect("a local shell");
    assert!(group_has_members(pgid));
    drop(t);
    // Still alive during the grace (2 s)…
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        group_has_members(pgid),
        "the shell lives on during the grace"
    );
    // …and gone after it (SIGHUP, then SIGKILL for what ignores it).
    let mut gone = false;
    for _ in 0..100 {
        if !group_has_members(pgid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "processes of group {pgid} are left after the grace");
    for _ in 0..50 {
        if app.state.terminals.get(&session.id).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.state.terminals.get(&session.id).is_none());
}

#[tokio::test]
async fn wide_output_arrives_whole_and_in_order() {
    let (app, _rec) = start("").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut t = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    // 200,000 two-byte characters, cut wherever the PTY's reads fall.
    t.type_line("printf 'é%.0s' $(seq 1 200000); echo; echo done-$((3*3))")
        .await;
    t.wait_for("done-9").await;
    assert!(!t.screen.contains('\u{FFFD}'), "a character was split");
    let most = t
        .screen
        .split(|c: char| c != 'é')
        .map(|run| run.chars().count())
        .max()
        .unwrap();
    // One unbroken run of exactly 200,000 (the echoed command line holds
    // one more é of its own).
    assert_eq!(most, 200_000);
}

#[tokio::test]
async fn the_per_user_limit_refuses_one_more_session() {
    let (app, _rec) = start("max_sessions_per_user = 2").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let _a = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    let _b = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    assert_eq!(
        refused(&app, &alice, "/api/targets/web-1/terminal", None).await,
        409
    );
    // Others are not affected.
    let bob = app.login("bob", USER_PASSWORD).await;
    let _c = Term::open(&app, &bob, "/api/targets/db-1/terminal").await;
}

#[test]
fn neither_a_terminal_shell_nor_a_job_sees_the_servers_own_environment() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{ENGINE_CONFIG}\n[terminal]\nshell = [\"/bin/bash\", \"--norc\", \"--noprofile\"]\n\n[[templates]]\nid = \"env\"\nscript = 'echo \"probe=[${{OPSDECK_PROBE_SECRET:-unset}}] pass=[${{OPSDECK_ADMIN_PASSWORD:-unset}}]\"'\nexclusive = \"none\"\n"
    );
    let server = BinServer::start_env(
        dir.path(),
        &toml,
        Some(ADMIN_PASSWORD),
        &[("OPSDECK_PROBE_SECRET", "s3cret")],
    );
    let cookie = server.admin_cookie();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = format!("ws://{}/api/targets/t1/terminal", server.addr)
            .into_client_request()
            .unwrap();
        let h = req.headers_mut();
        h.insert("cookie", format!("opsdeck_session={cookie}").parse().unwrap());
        h.insert("origin", server.url("").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let input = json!({"type": "input", "data": "echo \"probe=[${OPSDECK_PROBE_SECRET:-unset}] pass=[${OPSDECK_ADMIN_PASSWORD:-unset}] term=[$TERM] home=[${HOME:+set}]\"; exit\r"});
        ws.send(Message::Text(input.to_string().into())).await.unwrap();
        let mut screen = String::new();
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_secs(15), ws.next()).await
        {
            if let Message::Text(t) = msg {
                let frame: Value = serde_json::from_str(&t).unwrap();
                match frame["type"].as_str() {
                    Some("output") => screen.push_str(frame["data"].as_str().unwrap()),
                    Some("exit") => break,
                    _ => {}
                }
            }
        }
        assert!(
            screen.contains("probe=[unset] pass=[unset] term=[xterm-256color] home=[set]"),
            "the shell saw: {screen}"
        );

        let admin = Client {
            http: reqwest::Client::new(),
            base: server.url(""),
            cookie: Some(cookie.clone()),
            bearer: None,
        };
        let id = admin.launch_ok("env", "t2", json!({})).await;
        admin.wait_finished(id, 20).await;
        let lines = admin.all_lines(id).await;
        assert_eq!(texts(&lines, "stdout"), ["probe=[unset] pass=[unset]"]);
    });
}

#[tokio::test]
async fn an_input_frame_over_the_size_limit_closes_the_socket_with_1009_and_the_shell_lives_on() {
    let (app, _rec) = start("max_frame_bytes = \"1KiB\"").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut t = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    t.type_line("MARK=still-$((40+2))").await;
    // Within the limit: typed as usual.
    t.send(json!({"type": "input", "data": format!("echo {}\r", "y".repeat(900))}))
        .await;
    t.wait_for(&"y".repeat(900)).await;

    t.send(json!({"type": "input", "data": "x".repeat(2000)}))
        .await;
    let (code, reason) = t.close_frame().await;
    assert_eq!(code, 1009, "message too big: {reason}");
    assert!(
        reason.contains("1024 bytes"),
        "the reason says the limit: {reason}"
    );
    assert_eq!(app.refusals("terminal_frame_size").await, 1);
    assert_eq!(app.refusals("terminal_frame_rate").await, 0);

    // The shell was not touched: the page reattaches to it.
    let path = format!("/api/targets/web-1/terminal?session={}", t.session);
    let mut again = Term::open(&app, &alice, &path).await;
    assert!(again.resumed);
    again.type_line("echo $MARK").await;
    again.wait_for("still-42").await;
}

#[tokio::test]
async fn input_faster_than_the_rate_limit_closes_the_socket_with_1008() {
    let (app, _rec) = start("max_frames_per_second = 20").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let mut t = Term::open(&app, &alice, "/api/targets/web-1/terminal").await;
    // A second's burst is allowed.
    for _ in 0..15 {
        t.send(json!({"type": "input", "data": "z"})).await;
    }
    t.type_line("").await;
    t.type_line("echo burst-$((1+1))").await;
    t.wait_for("burst-2").await;
    assert_eq!(app.refusals("terminal_frame_rate").await, 0);

    // A flood is not.
    for _ in 0..200 {
        if t.ws
            .send(Message::Text(r#"{"type":"input","data":"z"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = t.close_frame().await;
    assert_eq!(code, 1008, "policy violation: {reason}");
    assert!(
        reason.contains("20 frames a second"),
        "the reason says the limit: {reason}"
    );
    assert_eq!(app.refusals("terminal_frame_rate").await, 1);
    assert_eq!(app.refusals("terminal_frame_size").await, 0);
}
