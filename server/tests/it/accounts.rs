//! Accounts, sessions and their protections: login and logout, cookies and
//! bearer tokens, cross-site refusals, rate limiting, bootstrap, the CLI and
//! the audit log.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use app::journal::PostJournalNote;
use leptos::server_fn::ServerFn;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn login_sets_an_http_only_lax_cookie_and_logout_ends_the_session_server_side() {
    let app = TestApp::start().await;
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.headers());
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain http: no Secure flag");
    let admin = Client {
        cookie: session_cookie(&res),
        ..Client::anonymous(&app)
    };
    assert_eq!(admin.get_json("/api/me").await.1["username"], "admin");

    assert_eq!(
        admin
            .post("/api/auth/logout")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // The same cookie no longer opens anything.
    assert_eq!(admin.get_json("/api/me").await.0, 401);
}

#[tokio::test]
async fn the_cookie_is_secure_when_served_over_https() {
    let app = TestApp::start().await;
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = TestApp::start().await;
    let anon = Client::anonymous(&app);
    let (s1, wrong_pw) = anon
        .post_json(
            "/api/auth/login",
            json!({"username": "admin", "password": "nope-nope-nope"}),
        )
        .await;
    let (s2, no_user) = anon
        .post_json(
            "/api/auth/login",
            json!({"username": "nobody", "password": "nope-nope-nope"}),
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong_pw, no_user);
    assert_eq!(wrong_pw["error"], "wrong username or password");
}

#[tokio::test]
async fn the_password_check_takes_as_long_for_an_unknown_user() {
    let app = TestApp::builder()
        .config("[auth]\nlogin_max_failures = 1000\n")
        .start()
        .await;
    let anon = Client::anonymous(&app);
    let time = |user: &'static str| {
        let anon = anon.clone();
        async move {
            let start = Instant::now();
            for _ in 0..5 {
                anon.post_json(
                    "/api/auth/login",
                    json!({"username": user, "password": "wrong-password-x"}),
                )
                .await;
            }
            start.elapsed()
        }
    };
    // Warm up, then compare.
    time("admin").await;
    let existing = time("admin").await;
    let missing = time("nobody").await;
    let ratio = missing.as_secs_f64() / existing.as_secs_f64();
    assert!(
        (0.6..1.67).contains(&ratio),
        "unknown user {missing:?} vs existing user {existing:?}: the check must take the same time"
    );
}

#[tokio::test]
async fn a_cross_origin_form_post_with_the_session_cookie_is_refused() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let post = |origin: Option<&'static str>, referer: Option<&'static str>| {
        let mut rb = app
            .client
            .post(app.url(PostJournalNote::PATH))
            .header(
                "cookie",
                format!("opsdeck_session={}", admin.cookie.as_ref().unwrap()),
            )
            .header("accept", "application/json")
            .form(&[("text", "csrf?")]);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        if let Some(r) = referer {
            rb = rb.header("referer", r);
        }
        rb.send()
    };
    let evil = post(Some("http://evil.example"), None).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil
        .text()
        .await
        .unwrap()
        .contains("cross-site request refused"));
    assert_eq!(
        post(None, None).await.unwrap().status(),
        403,
        "no Origin and no Referer"
    );
    assert_eq!(
        post(None, Some("http://evil.example/x"))
            .await
            .unwrap()
            .status(),
        403
    );
    let ours = app.url("");
    let ok = app
        .client
        .post(app.url(PostJournalNote::PATH))
        .header(
            "cookie",
            format!("opsdeck_session={}", admin.cookie.as_ref().unwrap()),
        )
        .header("origin", ours)
        .header("accept", "application/json")
        .form(&[("text", "same origin")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // A cross-site login form is refused too (login CSRF).
    let res = app
        .client
        .post(app.url("/api/auth/login"))
        .header("origin", "http://evil.example")
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_bearer_token_is_accepted_without_origin_and_a_revoked_one_is_refused() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let (_, created) = admin
        .post_json("/api/tokens", json!({"label": "script"}))
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["info"]["id"].as_i64().unwrap();

    // A script: no cookie, no Origin, a state-changing request.
    let res = app
        .client
        .post(app.url(PostJournalNote::PATH))
        .bearer_auth(&token)
        .header("accept", "application/json")
        .form(&[("text", "from a script")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let (status, _) = admin
        .post_json(&format!("/api/tokens/{id}/revoke"), json!({}))
        .await;
    assert_eq!(status, 200);
    let res = app
        .client
        .get(app.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("revoked"));
    // Revoking twice is a conflict.
    assert_eq!(
        admin
            .post_json(&format!("/api/tokens/{id}/revoke"), json!({}))
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn a_garbage_bearer_token_answers_401_even_on_public_routes() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .bearer_auth("odk_nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_disabled_user_is_refused_everywhere() {
    let app = TestApp::start().await;
    app.create_user("alice", "operator").await;
    let alice_cookie = app.login("alice", USER_PASSWORD).await;
    let alice_token = app.bearer_for("alice").await;
    let admin = app.admin_bearer().await;

    let (s, body) = admin
        .call_fn(
            app::admin::users::SetUserDisabled::PATH,
            &[("username", "alice"), ("disabled", "true")],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        alice_cookie.get_json("/api/me").await.0,
        401,
        "session ended"
    );
    assert_eq!(
        alice_token.get_json("/api/me").await.0,
        401,
        "token refused"
    );
    let (s, body) = Client::anonymous(&app)
        .post_json(
            "/api/auth/login",
            json!({"username": "alice", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (401, Some("wrong username or password"))
    );
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = TestApp::builder()
        .config("[auth]\nsession_idle = \"1s\"\n")
        .start()
        .await;
    let admin = app.admin().await;
    assert_eq!(admin.get_json("/api/me").await.0, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(admin.get_json("/api/me").await.0, 401);
}

#[tokio::test]
async fn failed_logins_for_one_user_answer_429_after_ten() {
    let app = TestApp::start().await;
    let anon = Client::anonymous(&app);
    for i in 0..10 {
        let (s, _) = anon
            .post_json(
                "/api/auth/login",
                json!({"username": "admin", "password": format!("wrong-{i}-xxxxx")}),
            )
            .await;
        assert_eq!(s, 401, "attempt {i}");
    }
    let res = anon
        .post("/api/auth/login")
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        429,
        "even the right password waits for the window"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "retry-after {retry}");
    assert_eq!(
        app.refusals("login_attempts").await,
        1,
        "counted in /metrics"
    );
}

#[tokio::test]
async fn failed_logins_from_one_address_answer_429_after_ten() {
    let app = TestApp::start().await;
    let anon = Client::anonymous(&app);
    for i in 0..10 {
        let (s, _) = anon
            .post_json(
                "/api/auth/login",
                json!({"username": format!("user{i}"), "password": "wrong-password"}),
            )
            .await;
        assert_eq!(s, 401);
    }
    let (s, _) = anon
        .post_json(
            "/api/auth/login",
            json!({"username": "someone-else", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn the_rate_limit_window_passes() {
    let app = TestApp::builder()
        .config("[auth]\nlogin_max_failures = 2\nlogin_window = \"2s\"\n")
        .start()
        .await;
    let anon = Client::anonymous(&app);
    for _ in 0..2 {
        anon.post_json(
            "/api/auth/login",
            json!({"username": "admin", "password": "wrong-password"}),
        )
        .await;
    }
    assert_eq!(
        anon.post_json(
            "/api/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD})
        )
        .await
        .0,
        429
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        anon.post_json(
            "/api/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD})
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn anonymous_page_visits_go_to_login_with_a_local_next() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/admin/audit?action=login"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        "/login?next=/admin/audit%3Faction%3Dlogin"
    );

    // Signing in with a `next` goes there; a foreign `next` goes home.
    for (next, expected) in [("/admin/users", "/admin/users"), ("//evil.example/x", "/")] {
        let res = app
            .client
            .post(app.url(app::auth::Login::PATH))
            .header("accept", "text/html")
            .header("origin", app.url(""))
            .header("referer", app.url("/login"))
            .form(&[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        assert_eq!(res.headers()["location"], expected);
        assert!(session_cookie(&res).is_some());
    }
}

#[tokio::test]
async fn admins_manage_users_and_the_last_admin_is_kept() {
    let app = TestApp::start().await;
    let admin = app.admin_bearer().await;
    let (s, body) = admin
        .post_json(
            "/api/users",
            json!({"username": "Bad Name", "role": "operator", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!((s, body["field"].as_str()), (400, Some("username")));
    let (s, body) = admin
        .post_json(
            "/api/users",
            json!({"username": "dave", "role": "operator", "password": "short"}),
        )
        .await;
    assert_eq!((s, body["field"].as_str()), (400, Some("password")));
    let (s, body) = admin
        .post_json(
            "/api/users",
            json!({"username": "dave", "role": "wizard", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!((s, body["field"].as_str()), (400, Some("role")));
    app.create_user("dave", "operator").await;
    let (s, _) = admin
        .post_json(
            "/api/users",
            json!({"username": "dave", "role": "operator", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(s, 409);

    let (s, body) = admin
        .call_fn(
            app::admin::users::SetUserRole::PATH,
            &[("username", "admin"), ("role", "operator")],
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body.to_string().contains("last active admin"));

    let (s, _) = admin
        .call_fn(
            app::admin::users::ResetUserPassword::PATH,
            &[("username", "dave"), ("password", "a-brand-new-pw")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = Client::anonymous(&app)
        .post_json(
            "/api/auth/login",
            json!({"username": "dave", "password": "a-brand-new-pw"}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn the_audit_log_records_logins_logouts_users_and_tokens() {
    let app = TestApp::start().await;
    Client::anonymous(&app)
        .post_json(
            "/api/auth/login",
            json!({"username": "admin", "password": "wrong-password"}),
        )
        .await;
    let admin = app.admin().await;
    app.create_user("erin", "operator").await;
    let erin = app.login("erin", USER_PASSWORD).await;
    erin.post("/api/auth/logout").send().await.unwrap();

    let (s, page) = admin.get_json("/api/audit?limit=100").await;
    assert_eq!(s, 200);
    let actions: Vec<(String, String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("-", "login.failure", "admin"),
        ("admin", "login.success", "admin"),
        ("admin", "user.create", "erin"),
        ("admin", "token.create", "admin"),
        ("erin", "login.success", "erin"),
        ("erin", "logout", "erin"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()) == expected),
            "{expected:?} missing from {actions:?}"
        );
    }
    // Newest first, filtered by user and action family.
    let (_, page) = admin.get_json("/api/audit?actor=erin&action=login").await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["action"], "login.success");
    assert!(entries[0]["ip"].as_str().unwrap().starts_with("127.0.0.1"));

    // Paging: a `before` cursor walks to older entries.
    let (_, first) = admin.get_json("/api/audit?limit=2").await;
    let before = first["next_before"].as_i64().expect("more pages");
    let (_, second) = admin
        .get_json(&format!("/api/audit?limit=2&before={before}"))
        .await;
    assert!(second["entries"][0]["id"].as_i64().unwrap() < before);
    let (s, body) = admin.get_json("/api/audit?limit=lots").await;
    assert_eq!((s, body["field"].as_str()), (400, Some("limit")));
}

/// Runs the binary's account commands against `db_url`, with `stdin`.
///
/// N.B.: on a blocking thread, so that the test's own runtime, which runs the
/// server, goes on serving meanwhile: a server frozen in the middle of a
/// write transaction would keep the command waiting on the database lock.
async fn cli(db_url: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let db_url = db_url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || cli_blocking(&db_url, &args, &stdin))
        .await
        .unwrap()
}

fn cli_blocking(db_url: &str, args: &[String], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(opsdeck_bin())
        .args(args)
        .env("DATABASE_URL", db_url)
        .env_remove("OPSDECK_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn the_cli_adds_users_and_tokens_that_the_server_accepts() {
    let app = TestApp::start().await;
    let db_url = app.state.config.server.database_url.clone();
    let (code, out, err) = cli(
        &db_url,
        &["user", "add", "frank", "--role", "operator"],
        "frank-password-1\n",
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, token, err) = cli(
        &db_url,
        &["token", "create", "--user", "frank", "--label", "laptop"],
        "",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("odk_"));
    let frank = Client {
        bearer: Some(token.clone()),
        ..Client::anonymous(&app)
    };
    assert_eq!(frank.get_json("/api/me").await.1["username"], "frank");

    let (code, list, _) = cli(&db_url, &["token", "list"], "").await;
    assert_eq!(code, 0);
    assert!(
        list.contains("laptop") && !list.contains(&token),
        "ids and labels, never secrets:\n{list}"
    );
    let id = list
        .lines()
        .find(|l| l.contains("laptop"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, out, err) = cli(&db_url, &["token", "revoke", &id], "").await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(frank.get_json("/api/me").await.0, 401);

    assert_eq!(
        cli(&db_url, &["user", "passwd", "frank"], "another-password\n")
            .await
            .0,
        0
    );
    assert_eq!(
        Client::anonymous(&app)
            .post_json(
                "/api/auth/login",
                json!({"username": "frank", "password": "another-password"})
            )
            .await
            .0,
        200
    );
    assert_eq!(cli(&db_url, &["user", "disable", "frank"], "").await.0, 0);
    assert_eq!(
        Client::anonymous(&app)
            .post_json(
                "/api/auth/login",
                json!({"username": "frank", "password": "another-password"})
            )
            .await
            .0,
        401
    );
    let (code, _, err) = cli(
        &db_url,
        &["user", "add", "frank", "--role", "operator"],
        "whatever-password\n",
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = cli(
        &db_url,
        &["user", "add", "gina", "--role", "operator"],
        "short\n",
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("at least 10 characters"), "{err}");

    let (_, page) = app.admin().await.get_json("/api/audit?actor=cli").await;
    assert!(
        page["entries"].as_array().unwrap().len() >= 5,
        "CLI changes are audited: {page}"
    );
}

#[test]
fn the_first_start_creates_admin_with_a_random_password_written_once_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinServer::start_with(dir.path(), "", None);
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("created the first user `admin`"))
        .unwrap_or_else(|| panic!("no bootstrap line in:\n{log}"));
    assert!(line.contains("change it"), "says how to change it: {line}");
    let password = line
        .split("with the password `")
        .nth(1)
        .unwrap()
        .split('`')
        .next()
        .unwrap();
    assert!(password.len() >= 16);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(server.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    drop(server);

    // A second start (same database) creates nothing and logs no password.
    let again = BinServer::start_with(dir.path(), "", None);
    assert!(!again.log().contains("created the first user"));
}

#[test]
fn the_first_admin_password_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = bin_database(dir.path());
    std::fs::write(
        dir.path().join("c.toml"),
        format!("[server]\ndatabase_url = \"{db_url}\"\n"),
    )
    .unwrap();
    // `user list` opens (and bootstraps nothing in) the database; then serve once.
    let out = Command::new(opsdeck_bin())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("DATABASE_URL", &db_url)
        .env("OPSDECK_ADMIN_PASSWORD", "from-the-environment")
        .env_remove("OPSDECK_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(out.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = out.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("OPSDECK_ADMIN_PASSWORD"), "{log}");
    assert!(
        !log.contains("from-the-environment"),
        "the password itself is never logged"
    );
    let (code, list, _) = cli_blocking(&db_url, &["user".into(), "list".into()], "");
    assert_eq!(code, 0);
    assert!(list.contains("admin"));
}
