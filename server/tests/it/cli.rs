//! The client commands of the binary (`run`, `jobs`, `cancel`, `logs`)
//! against a real server.

use std::process::Command;

use serde_json::json;

use crate::support::*;

fn opsdeck(app: &TestApp, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(opsdeck_bin())
        .args(args)
        .env("OPSDECK_URL", app.url(""))
        .env("OPSDECK_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn token(app: &TestApp, user: &str) -> String {
    app.bearer_for(user).await.bearer.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follow_prints_the_log_as_it_arrives_and_exits_with_the_jobs_exit_code() {
    let e = EngineApp::start().await;
    let alice = token(&e.app, "alice").await;
    let app = &e.app;
    let (code, out, err) = tokio::task::block_in_place(|| {
        opsdeck(
            app,
            &alice,
            &["run", "exit", "--target", "t1", "-p", "code=3", "--follow"],
        )
    });
    assert_eq!(code, 3, "{err}");
    assert_eq!(
        out.trim(),
        "exiting with 3",
        "stdout carries the job's stdout"
    );
    assert!(
        err.contains("something went wrong"),
        "stderr carries the job's stderr: {err}"
    );
    assert!(err.contains("succeeded with warnings"), "{err}");

    let (code, out, _) = tokio::task::block_in_place(|| {
        opsdeck(
            app,
            &alice,
            &["run", "seq", "--target", "t2", "-p", "n=3", "-f"],
        )
    });
    assert_eq!((code, out.as_str()), (0, "1\n2\n3\n"));

    // Without --follow: the job id, at once.
    let (code, out, _) = tokio::task::block_in_place(|| {
        opsdeck(
            app,
            &alice,
            &["run", "sleep", "--target", "t1", "-p", "s=30"],
        )
    });
    assert_eq!(code, 0);
    let id: i64 = out.trim().parse().unwrap();
    let (code, out, _) =
        tokio::task::block_in_place(|| opsdeck(app, &alice, &["cancel", &id.to_string()]));
    assert_eq!(code, 0);
    assert!(out.contains(&format!("job {id} cancel")), "{out}");
    let job = e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_logs_show_what_the_server_has() {
    let e = EngineApp::start().await;
    let alice = token(&e.app, "alice").await;
    let id = e.alice.launch_ok("seq", "t1", json!({"n": 4})).await;
    e.alice.wait_finished(id, 20).await;
    let app = &e.app;
    let (code, out, _) = tokio::task::block_in_place(|| opsdeck(app, &alice, &["jobs"]));
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .expect("the job is listed");
    assert!(
        row.contains("succeeded")
            && row.contains("seq")
            && row.contains("t1")
            && row.contains("alice"),
        "{row}"
    );
    let (code, out, err) =
        tokio::task::block_in_place(|| opsdeck(app, &alice, &["logs", &id.to_string()]));
    assert_eq!((code, out.as_str()), (0, "1\n2\n3\n4\n"));
    assert!(
        err.contains("running on t1: seq 1 4"),
        "system lines go to stderr: {err}"
    );
    let (code, out, _) = tokio::task::block_in_place(|| {
        opsdeck(app, &alice, &["logs", &id.to_string(), "--follow"])
    });
    assert_eq!((code, out.as_str()), (0, "1\n2\n3\n4\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_says_what_is_wrong() {
    let e = EngineApp::start().await;
    let alice = token(&e.app, "alice").await;
    let app = &e.app;
    let (code, _, err) = tokio::task::block_in_place(|| opsdeck(app, &alice, &["run", "sleep"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("several of your targets (t1, t2)") && err.contains("--target"),
        "{err}"
    );
    let (code, _, err) = tokio::task::block_in_place(|| {
        opsdeck(
            app,
            &alice,
            &["run", "types", "--target", "t1", "-p", "count=9"],
        )
    });
    assert_eq!(code, 1);
    assert!(err.contains("field `"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| opsdeck(app, "", &["jobs"]));
    assert_eq!(code, 1);
    assert!(err.contains("OPSDECK_TOKEN"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| opsdeck(app, "odk_wrong", &["jobs"]));
    assert_eq!(code, 1);
    assert!(err.contains("invalid or revoked"), "{err}");
}
