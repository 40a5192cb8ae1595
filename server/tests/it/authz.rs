//! The authorization matrix: every route of the route table, requested as
//! anonymous, an operator, another operator and an admin, with the status
//! each must get. A route missing from the matrix, or a route served that
//! is missing from the route table, fails the test.

use std::collections::BTreeSet;

use app::{account, admin, auth, jobs, journal, tokens};
use leptos::server_fn::ServerFn;
use serde_json::json;

use crate::support::*;

/// Who is asking, in the order of the status arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Operator,
    OtherOperator,
    Admin,
}
const WHO: [Who; 4] = [
    Who::Anonymous,
    Who::Operator,
    Who::OtherOperator,
    Who::Admin,
];

/// (method, path as routed, [anonymous, operator, other operator, admin]).
const MATRIX: &[(&str, &str, [u16; 4])] = &[
    // pages
    ("GET", "/login", [200, 200, 200, 200]),
    ("GET", "/", [303, 200, 200, 200]),
    ("GET", "/account", [303, 200, 200, 200]),
    ("GET", "/admin/users", [303, 403, 403, 200]),
    ("GET", "/admin/agents", [303, 403, 403, 200]),
    ("GET", "/admin/audit", [303, 403, 403, 200]),
    ("GET", "/admin/webhooks", [303, 403, 403, 200]),
    ("GET", "/admin/schedules", [303, 403, 403, 200]),
    ("GET", "/admin/jobs", [303, 403, 403, 200]),
    ("GET", "/admin/recordings/{id}", [303, 403, 403, 200]),
    ("GET", "/jobs", [303, 200, 200, 200]),
    ("GET", "/jobs/{id}", [303, 200, 404, 200]),
    ("GET", "/launch/{template}", [303, 200, 200, 200]),
    ("GET", "/targets/{id}", [303, 200, 404, 200]),
    ("GET", "/targets/{id}/jobs", [303, 200, 404, 200]),
    ("GET", "/targets/{id}/console", [303, 200, 404, 200]),
    // infra
    ("GET", "/healthz", [200, 200, 200, 200]),
    ("GET", "/metrics", [200, 200, 200, 200]),
    // REST API
    ("POST", "/api/auth/login", [401, 401, 401, 401]),
    ("POST", "/api/auth/logout", [401, 204, 204, 204]),
    ("GET", "/api/me", [401, 200, 200, 200]),
    ("GET", "/api/users", [401, 403, 403, 200]),
    ("POST", "/api/users", [401, 403, 403, 201]),
    ("GET", "/api/tokens", [401, 200, 200, 200]),
    ("POST", "/api/tokens", [401, 201, 201, 201]),
    ("POST", "/api/tokens/{id}/revoke", [401, 200, 404, 200]),
    ("GET", "/api/audit", [401, 403, 403, 200]),
    ("GET", "/api/templates", [401, 200, 200, 200]),
    ("GET", "/api/targets", [401, 200, 200, 200]),
    // alice (the operator) owns t1; bob (the other operator) does not.
    ("POST", "/api/jobs", [401, 201, 400, 201]),
    ("GET", "/api/jobs", [401, 200, 200, 200]),
    ("GET", "/api/jobs/{id}", [401, 200, 404, 200]),
    ("POST", "/api/jobs/{id}/cancel", [401, 200, 404, 200]),
    ("POST", "/api/jobs/{id}/rerun", [401, 201, 404, 201]),
    ("GET", "/api/jobs/{id}/log", [401, 200, 404, 200]),
    ("GET", "/api/jobs/{id}/events", [401, 200, 404, 200]),
    ("GET", "/api/events", [401, 200, 200, 200]),
    ("GET", "/api/live", [401, 200, 200, 200]),
    // No such connection (each user reaches only their own).
    ("POST", "/api/live/{conn}/subscribe", [401, 404, 404, 404]),
    ("POST", "/api/live/{conn}/unsubscribe", [401, 404, 404, 404]),
    // A plain GET (not a WebSocket upgrade) gets as far as 400.
    ("GET", "/api/targets/{id}/terminal", [401, 400, 404, 400]),
    ("GET", "/api/recordings/{id}", [401, 403, 403, 404]),
    // Agents' own routes take only an agent token (none of these has one).
    ("GET", "/api/agent", [401, 401, 401, 401]),
    ("GET", "/api/agent/terminal/{session}", [401, 401, 401, 401]),
    ("GET", "/api/agents", [401, 403, 403, 200]),
    ("POST", "/api/agents", [401, 403, 403, 201]),
    ("POST", "/api/agents/{name}/revoke", [401, 403, 403, 404]),
    ("POST", "/api/jobs/{id}/mark-failed", [401, 403, 403, 409]),
    ("GET", "/api/webhooks", [401, 403, 403, 200]),
    ("GET", "/api/schedules", [401, 403, 403, 200]),
    // No such schedule (the matrix's configuration has none).
    ("POST", "/api/schedules/{id}/pause", [401, 403, 403, 404]),
    ("POST", "/api/schedules/{id}/resume", [401, 403, 403, 404]),
    ("POST", "/api/schedules/{id}/run", [401, 403, 403, 404]),
    // server functions
    ("POST", auth::WhoAmI::PATH, [200, 200, 200, 200]),
    ("POST", auth::Login::PATH, [401, 401, 401, 401]),
    ("POST", auth::Logout::PATH, [401, 200, 200, 200]),
    ("POST", account::ChangePassword::PATH, [401, 400, 400, 400]),
    ("POST", tokens::ListTokens::PATH, [401, 200, 200, 200]),
    ("POST", tokens::CreateToken::PATH, [401, 200, 200, 200]),
    ("POST", tokens::RevokeToken::PATH, [401, 200, 404, 200]),
    ("POST", admin::users::ListUsers::PATH, [401, 403, 403, 200]),
    ("POST", admin::users::CreateUser::PATH, [401, 403, 403, 200]),
    (
        "POST",
        admin::users::SetUserRole::PATH,
        [401, 403, 403, 200],
    ),
    (
        "POST",
        admin::users::SetUserDisabled::PATH,
        [401, 403, 403, 200],
    ),
    (
        "POST",
        admin::users::ResetUserPassword::PATH,
        [401, 403, 403, 200],
    ),
    ("POST", admin::audit::AuditLog::PATH, [401, 403, 403, 200]),
    (
        "POST",
        admin::webhooks::ListWebhooks::PATH,
        [401, 403, 403, 200],
    ),
    (
        "POST",
        admin::schedules::ListSchedules::PATH,
        [401, 403, 403, 200],
    ),
    (
        "POST",
        admin::schedules::PauseSchedule::PATH,
        [401, 403, 403, 404],
    ),
    (
        "POST",
        admin::schedules::RunSchedule::PATH,
        [401, 403, 403, 404],
    ),
    ("POST", journal::ListJournal::PATH, [401, 200, 200, 200]),
    ("POST", journal::PostJournalNote::PATH, [401, 200, 200, 200]),
    ("POST", jobs::ListJobs::PATH, [401, 200, 200, 200]),
    ("POST", jobs::ViewJob::PATH, [401, 200, 404, 200]),
    ("POST", jobs::FetchLog::PATH, [401, 200, 404, 200]),
    ("POST", jobs::SearchLog::PATH, [401, 200, 404, 200]),
    ("POST", jobs::ListTemplates::PATH, [401, 200, 200, 200]),
    ("POST", jobs::ListTargets::PATH, [401, 200, 200, 200]),
    ("POST", jobs::TargetOverview::PATH, [401, 200, 200, 200]),
    ("POST", jobs::TargetStats::PATH, [401, 200, 404, 200]),
    ("POST", jobs::RecentActivity::PATH, [401, 200, 200, 200]),
    ("POST", jobs::LaunchJob::PATH, [401, 200, 400, 200]),
    ("POST", jobs::CancelJob::PATH, [401, 200, 404, 200]),
    ("POST", jobs::RerunJob::PATH, [401, 200, 404, 200]),
    ("POST", jobs::MarkJobFailed::PATH, [401, 403, 403, 409]),
    (
        "POST",
        admin::agents::ListAgents::PATH,
        [401, 403, 403, 200],
    ),
    ("POST", admin::agents::AddAgent::PATH, [401, 403, 403, 200]),
    (
        "POST",
        admin::agents::RevokeAgent::PATH,
        [401, 403, 403, 404],
    ),
];

struct Fixture {
    app: TestApp,
    clients: Vec<Client>,
    operator: Client,
    /// A finished job of the operator's, on her target.
    operator_job: i64,
}

/// Sends the matrix row's request as `who`; returns the status.
async fn send(fx: &Fixture, method: &str, path: &str, who: Who, n: usize) -> u16 {
    let c = &fx.clients[who as usize];
    let unique = format!("m{n}{}", who as usize);
    let status = |r: reqwest::Response| r.status().as_u16();
    // A fresh token of the operator, for the revoke rows.
    let operator_token = || async {
        let (s, body) = fx
            .operator
            .post_json("/api/tokens", json!({"label": "victim"}))
            .await;
        assert_eq!(s, 201);
        body["info"]["id"].as_i64().unwrap().to_string()
    };
    let job = fx.operator_job;
    match (method, path) {
        ("GET", p) if !p.contains('{') => status(c.get(p).send().await.unwrap()),
        ("GET", "/jobs/{id}") => status(c.get(&format!("/jobs/{job}")).send().await.unwrap()),
        ("GET", "/launch/{template}") => status(c.get("/launch/seq").send().await.unwrap()),
        ("GET", "/targets/{id}") => status(c.get("/targets/t1").send().await.unwrap()),
        ("GET", "/admin/recordings/{id}") => status(
            c.get("/admin/recordings/0123456789abcdef0123456789abcdef")
                .send()
                .await
                .unwrap(),
        ),
        ("GET", "/api/recordings/{id}") => status(
            c.get("/api/recordings/0123456789abcdef0123456789abcdef")
                .send()
                .await
                .unwrap(),
        ),
        ("GET", "/targets/{id}/console") => {
            status(c.get("/targets/t1/console").send().await.unwrap())
        }
        ("GET", "/api/targets/{id}/terminal") => {
            status(c.get("/api/targets/t1/terminal").send().await.unwrap())
        }
        ("GET", "/api/agent/terminal/{session}") => status(
            c.get("/api/agent/terminal/0123456789abcdef0123456789abcdef")
                .send()
                .await
                .unwrap(),
        ),
        ("POST", "/api/agents") => c.post_json(path, json!({"name": unique})).await.0,
        ("POST", "/api/live/{conn}/subscribe") => {
            c.post_json(
                "/api/live/0123456789abcdef0123456789abcdef/subscribe",
                json!({"sub": 1, "stream": "feed"}),
            )
            .await
            .0
        }
        ("POST", "/api/live/{conn}/unsubscribe") => {
            c.post_json(
                "/api/live/0123456789abcdef0123456789abcdef/unsubscribe",
                json!({"sub": 1}),
            )
            .await
            .0
        }
        ("POST", "/api/agents/{name}/revoke") => status(
            c.post("/api/agents/nobody-agent/revoke")
                .send()
                .await
                .unwrap(),
        ),
        ("POST", "/api/jobs/{id}/mark-failed") => status(
            c.post(&format!("/api/jobs/{job}/mark-failed"))
                .send()
                .await
                .unwrap(),
        ),
        ("POST", p) if p == jobs::MarkJobFailed::PATH => {
            c.call_fn(p, &[("id", &job.to_string())]).await.0
        }
        ("POST", p) if p == admin::agents::ListAgents::PATH => c.call_fn(p, &[]).await.0,
        ("POST", p) if p == admin::webhooks::ListWebhooks::PATH => c.call_fn(p, &[]).await.0,
        ("POST", p) if p == admin::schedules::ListSchedules::PATH => c.call_fn(p, &[]).await.0,
        ("POST", p) if p == admin::schedules::PauseSchedule::PATH => {
            c.call_fn(p, &[("id", "nope"), ("paused", "true")]).await.0
        }
        ("POST", p) if p == admin::schedules::RunSchedule::PATH => {
            c.call_fn(p, &[("id", "nope")]).await.0
        }
        ("POST", p) if p.starts_with("/api/schedules/{id}/") => {
            status(c.post(&p.replace("{id}", "nope")).send().await.unwrap())
        }
        ("POST", p) if p == admin::agents::AddAgent::PATH => {
            c.call_fn(p, &[("name", &unique)]).await.0
        }
        ("POST", p) if p == admin::agents::RevokeAgent::PATH => {
            c.call_fn(p, &[("name", "nobody-agent")]).await.0
        }
        ("GET", "/targets/{id}/jobs") => status(c.get("/targets/t1/jobs").send().await.unwrap()),
        ("GET", "/api/jobs/{id}") => {
            status(c.get(&format!("/api/jobs/{job}")).send().await.unwrap())
        }
        ("GET", "/api/jobs/{id}/log") => {
            status(c.get(&format!("/api/jobs/{job}/log")).send().await.unwrap())
        }
        ("GET", "/api/jobs/{id}/events") => status(
            c.get(&format!("/api/jobs/{job}/events"))
                .send()
                .await
                .unwrap(),
        ),
        ("POST", "/api/jobs") => c.launch("seq", "t1", json!({"n": 1})).await.0,
        ("POST", "/api/jobs/{id}/rerun") => status(
            c.post(&format!("/api/jobs/{job}/rerun"))
                .send()
                .await
                .unwrap(),
        ),
        ("POST", "/api/jobs/{id}/cancel") => {
            let victim = fx
                .operator
                .launch_ok("sleep", "t2", json!({"s": "30"}))
                .await;
            status(
                c.post(&format!("/api/jobs/{victim}/cancel"))
                    .send()
                    .await
                    .unwrap(),
            )
        }
        ("POST", "/api/auth/login") => {
            c.post_json(
                path,
                json!({"username": "nobody", "password": "wrong-password"}),
            )
            .await
            .0
        }
        ("POST", "/api/auth/logout") => status(c.post(path).send().await.unwrap()),
        ("POST", "/api/users") => {
            c.post_json(
                path,
                json!({"username": unique, "role": "operator", "password": USER_PASSWORD}),
            )
            .await
            .0
        }
        ("POST", "/api/tokens") => c.post_json(path, json!({"label": "matrix"})).await.0,
        ("POST", "/api/tokens/{id}/revoke") => {
            let id = operator_token().await;
            status(
                c.post(&format!("/api/tokens/{id}/revoke"))
                    .send()
                    .await
                    .unwrap(),
            )
        }
        ("POST", p) if p == auth::WhoAmI::PATH || p == auth::Logout::PATH => {
            c.call_fn(p, &[]).await.0
        }
        ("POST", p) if p == auth::Login::PATH => {
            c.call_fn(p, &[("username", "nobody"), ("password", "wrong-password")])
                .await
                .0
        }
        ("POST", p) if p == account::ChangePassword::PATH => {
            c.call_fn(
                p,
                &[
                    ("current", "not-the-password"),
                    ("password", "a-new-password-1"),
                ],
            )
            .await
            .0
        }
        ("POST", p) if p == tokens::ListTokens::PATH => c.call_fn(p, &[("all", "false")]).await.0,
        ("POST", p) if p == tokens::CreateToken::PATH => {
            c.call_fn(p, &[("label", "matrix")]).await.0
        }
        ("POST", p) if p == tokens::RevokeToken::PATH => {
            let id = operator_token().await;
            c.call_fn(p, &[("id", &id)]).await.0
        }
        ("POST", p) if p == admin::users::ListUsers::PATH => c.call_fn(p, &[]).await.0,
        ("POST", p) if p == admin::users::CreateUser::PATH => {
            c.call_fn(
                p,
                &[
                    ("username", &unique),
                    ("role", "operator"),
                    ("password", USER_PASSWORD),
                ],
            )
            .await
            .0
        }
        ("POST", p) if p == admin::users::SetUserRole::PATH => {
            c.call_fn(p, &[("username", "carol"), ("role", "operator")])
                .await
                .0
        }
        ("POST", p) if p == admin::users::SetUserDisabled::PATH => {
            c.call_fn(p, &[("username", "carol"), ("disabled", "false")])
                .await
                .0
        }
        ("POST", p) if p == admin::users::ResetUserPassword::PATH => {
            c.call_fn(p, &[("username", "carol"), ("password", USER_PASSWORD)])
                .await
                .0
        }
        ("POST", p) if p == admin::audit::AuditLog::PATH => {
            c.call_fn(p, &[("query[limit]", "5")]).await.0
        }
        ("POST", p) if p == journal::ListJournal::PATH => c.call_fn(p, &[]).await.0,
        ("POST", p) if p == journal::PostJournalNote::PATH => {
            c.call_fn(p, &[("text", "matrix note")]).await.0
        }
        ("POST", p) if p == jobs::ListJobs::PATH => c.call_fn(p, &[("filter[limit]", "5")]).await.0,
        ("POST", p) if p == jobs::ViewJob::PATH => {
            c.call_fn(p, &[("id", &job.to_string())]).await.0
        }
        ("POST", p) if p == jobs::FetchLog::PATH => {
            let id = job.to_string();
            c.call_fn(p, &[("id", &id), ("after", "0"), ("limit", "10")])
                .await
                .0
        }
        ("POST", p) if p == jobs::SearchLog::PATH => {
            c.call_fn(p, &[("id", &job.to_string()), ("q", "1")])
                .await
                .0
        }
        ("POST", p)
            if p == jobs::ListTemplates::PATH
                || p == jobs::ListTargets::PATH
                || p == jobs::TargetOverview::PATH
                || p == jobs::RecentActivity::PATH =>
        {
            c.call_fn(p, &[]).await.0
        }
        ("POST", p) if p == jobs::TargetStats::PATH => c.call_fn(p, &[("target", "t1")]).await.0,
        ("POST", p) if p == jobs::LaunchJob::PATH => {
            c.call_fn(
                p,
                &[("template", "seq"), ("target", "t1"), ("params[n]", "1")],
            )
            .await
            .0
        }
        ("POST", p) if p == jobs::CancelJob::PATH => {
            let victim = fx
                .operator
                .launch_ok("sleep", "t2", json!({"s": "30"}))
                .await;
            c.call_fn(p, &[("id", &victim.to_string())]).await.0
        }
        ("POST", p) if p == jobs::RerunJob::PATH => {
            c.call_fn(p, &[("id", &job.to_string())]).await.0
        }
        _ => panic!("the matrix has no request for {method} {path}: add one to `send`"),
    }
}

#[tokio::test]
async fn every_route_answers_each_kind_of_caller_as_the_matrix_says() {
    let app = TestApp::builder().config(ENGINE_CONFIG).start().await;
    app.create_user("alice", "operator").await;
    app.create_user("bob", "operator").await;
    app.create_user("carol", "operator").await;
    let operator = app.bearer_for("alice").await;
    let operator_job = operator.launch_ok("seq", "t1", json!({"n": 3})).await;
    operator.wait_finished(operator_job, 20).await;
    let clients = vec![
        Client::anonymous(&app),
        operator.clone(),
        app.bearer_for("bob").await,
        app.admin_bearer().await,
    ];
    let fx = Fixture {
        app,
        clients,
        operator,
        operator_job,
    };

    // The matrix covers exactly the route table.
    let table: BTreeSet<(String, String)> = server::http::route_table()
        .rules()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    let matrix: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        table.difference(&matrix).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes without a row in the authorization matrix"
    );
    assert_eq!(
        matrix.difference(&table).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "matrix rows for routes that no longer exist"
    );

    let mut failures = Vec::new();
    for (n, (method, path, expected)) in MATRIX.iter().enumerate() {
        for who in WHO {
            let got = send(&fx, method, path, who, n).await;
            if got != expected[who as usize] {
                failures.push(format!(
                    "{method} {path} as {who:?}: {got}, expected {}",
                    expected[who as usize]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix:\n{}",
        failures.join("\n")
    );
    drop(fx.app);
}

#[tokio::test]
async fn every_served_page_and_server_function_is_in_the_route_table() {
    let table = server::http::route_table();
    let pages = leptos_axum::generate_route_list(app::App);
    for page in &pages {
        assert!(
            table
                .lookup(&axum::http::Method::GET, page.path())
                .is_some(),
            "page {} has no rule in the route table",
            page.path()
        );
    }
    for (path, method) in leptos::server_fn::axum::server_fn_paths() {
        assert!(
            table.lookup(&method, path).is_some(),
            "server function {method} {path} has no rule in the route table"
        );
    }
}

#[tokio::test]
async fn an_operator_gets_a_real_403_page_on_admin_pages() {
    let app = TestApp::start().await;
    app.create_user("alice", "operator").await;
    let alice = app.login("alice", USER_PASSWORD).await;
    let res = alice.get("/admin/users").send().await.unwrap();
    assert_eq!(res.status(), 403);
    let html = res.text().await.unwrap();
    assert!(html.contains("Not allowed"), "a proper page:\n{html}");
    assert!(html.contains("Back to the dashboard"));
}
