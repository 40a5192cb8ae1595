//! Remote agents: real `opsdeck agent` processes (the same binary) against
//! a real server, running real subprocesses, over loopback, a network
//! namespace, and a proxy that cuts the connection.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::*;

/// ENGINE_CONFIG's templates and targets, and two agent targets.
pub fn agent_config() -> String {
    format!(
        r#"{ENGINE_CONFIG}
[agents]
heartbeat_interval = "500ms"
unreachable_after = "3s"
lost_after = "6s"

[[targets]]
id = "remote-1"
kind = "agent"
agent = "a1"
owners = ["alice"]
terminal = true
terminal_roles = ["admin", "operator"]

[[targets]]
id = "remote-2"
kind = "agent"
agent = "a2"
owners = ["alice"]
"#
    )
}

/// A server with the agent targets, alice, and the admin's client.
pub struct Fleet {
    pub e: EngineApp,
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn start() -> Fleet {
        Fleet {
            e: EngineApp::start_with(&agent_config().replace(ENGINE_CONFIG, "")).await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn spool(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Enrols `name` and starts its agent against `server` (the app, or a
    /// proxy in front of it).
    pub async fn agent(&self, name: &str, server: &str, extra: &[&str]) -> (AgentProc, String) {
        let token = enrol_agent(&self.e.admin, name).await;
        let proc = AgentProc::start(server, &token, &self.spool(name), extra, &[]);
        (proc, token)
    }
}

/// SHA-256 of lines joined as a file would hold them.
fn digest(lines: impl IntoIterator<Item = String>) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The seqs of a log: 1..=N, each once.
fn assert_contiguous(lines: &[Value], job: &Value) {
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    let last = job["last_seq"].as_i64().unwrap();
    assert_eq!(
        seqs.len() as i64,
        last,
        "one line per seq, none twice: {job}"
    );
    assert!(
        seqs.iter().copied().eq(1..=last),
        "seqs 1..={last} in order"
    );
}

#[tokio::test]
async fn a_job_on_an_agent_runs_there_and_its_log_arrives_whole() {
    let f = Fleet::start().await;
    let (mut agent, _) = f.agent("a1", &f.e.app.url(""), &[]).await;
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let id =
        f.e.alice
            .launch_ok("seq", "remote-1", json!({"n": 2000}))
            .await;
    let job = f.e.alice.wait_finished(id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", agent.log());
    assert_eq!(job["agent"], "a1");
    let lines = f.e.alice.all_lines(id).await;
    assert_contiguous(&lines, &job);
    let out = texts(&lines, "stdout");
    assert_eq!(digest(out), digest((1..=2000).map(|i| i.to_string())));
    let system = texts(&lines, "system");
    assert!(
        system[0].starts_with("running on remote-1 (agent a1): seq 1 2000"),
        "{system:?}"
    );
    assert_eq!(system.last().unwrap(), "exited with code 0");
    agent.kill();
}

#[tokio::test]
async fn a_job_for_an_offline_agent_waits_and_runs_when_it_connects_and_jobs_on_one_target_never_overlap(
) {
    let f = Fleet::start().await;
    let token = enrol_agent(&f.e.admin, "a1").await;
    let local =
        f.e.alice
            .launch_ok("sleep", "t1", json!({"s": "0.2"}))
            .await;
    let first =
        f.e.alice
            .launch_ok("sleep", "remote-1", json!({"s": "0.5"}))
            .await;
    let second =
        f.e.alice
            .launch_ok("sleep", "remote-1", json!({"s": "0.5"}))
            .await;
    // Other targets are not held back by the offline agent.
    assert_eq!(
        f.e.alice.wait_finished(local, 20).await["state"],
        "succeeded"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.e.alice.job(first).await["state"], "queued");
    let _agent = AgentProc::start(&f.e.app.url(""), &token, &f.spool("a1"), &[], &[]);
    let a = f.e.alice.wait_finished(first, 30).await;
    let b = f.e.alice.wait_finished(second, 30).await;
    assert_eq!(
        (a["state"].as_str(), b["state"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    let (a_end, b_start) = (
        a["finished_at"].as_str().unwrap(),
        b["started_at"].as_str().unwrap(),
    );
    assert!(
        a_end <= b_start,
        "two jobs on one agent target overlapped: {a_end} > {b_start}"
    );
}
