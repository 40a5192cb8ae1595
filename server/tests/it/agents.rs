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

[[templates]]
id = "drip"
script = 'c=0; while [ $c -lt "$1" ]; do seq $((c*1000)) $((c*1000+999)); c=$((c+1)); sleep "$2"; done'
args = ["{{chunks}}", "{{pause}}"]
params = [
  {{ name = "chunks", type = "int", default = 200, min = 1, max = 1000 }},
  {{ name = "pause", type = "string", default = "0.05", pattern = "[0-9.]+" }},
]
exclusive = "none"

[[templates]]
id = "drip-children"
script = 'sleep 600 & sleep 600 & c=0; while [ $c -lt "$1" ]; do seq $((c*1000)) $((c*1000+999)); c=$((c+1)); sleep 0.1; done; wait'
args = ["{{chunks}}"]
params = [{{ name = "chunks", type = "int", default = 100, min = 1, max = 1000 }}]
exclusive = "none"

[[templates]]
id = "whereami"
command = ["ls", "/sys/class/net"]
exclusive = "none"
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
        Fleet::start_on(None).await
    }

    pub async fn start_on(addr: Option<std::net::SocketAddr>) -> Fleet {
        Fleet {
            e: EngineApp::start_on(&agent_config().replace(ENGINE_CONFIG, ""), addr).await,
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

/// The stdout of `drip` with `chunks` chunks.
fn drip_output(chunks: i64) -> Vec<String> {
    (0..chunks * 1000).map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn a_log_crosses_a_hundred_dropped_connections_without_a_lost_or_repeated_line() {
    let f = Fleet::start().await;
    let proxy = DroppingProxy::start("127.0.0.1:0", f.e.app.addr).await;
    let (agent, _) = f.agent("a1", &proxy.url(), &[]).await;
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let id =
        f.e.alice
            .launch_ok("drip", "remote-1", json!({"chunks": 200, "pause": "0.05"}))
            .await;
    // N.B.: drops at random moments, also while the agent reconnects and
    // while it sends its spool again.
    for _ in 0..100 {
        let wait = 40 + rand::random::<u64>() % 120;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        proxy.drop_all();
    }
    let job = f.e.alice.wait_finished(id, 120).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", agent.log());
    let lines = f.e.alice.all_lines(id).await;
    assert_contiguous(&lines, &job);
    assert_eq!(
        digest(texts(&lines, "stdout")),
        digest(drip_output(200)),
        "the stored log is exactly the command's output"
    );
    let reconnects = agent.log().matches("welcomed").count();
    assert!(
        reconnects > 20,
        "the agent reconnected only {reconnects} times"
    );
}

/// A network namespace with a veth pair to this host: a second host.
struct Netns {
    name: String,
    host_ip: std::net::Ipv4Addr,
}

impl Netns {
    /// `None` (and why) where namespaces cannot be made (not root).
    fn create() -> Result<Netns, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() % 200) * 1000 + NEXT.fetch_add(1, Ordering::SeqCst);
        let id = n % 250 + 1;
        let name = format!("odk{n}");
        let (host_if, agent_if) = (format!("odkh{n}"), format!("odka{n}"));
        let host_ip = std::net::Ipv4Addr::new(10, 213, id as u8, 1);
        let agent_ip = std::net::Ipv4Addr::new(10, 213, id as u8, 2);
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            name: name.clone(),
            host_ip,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &agent_if,
        ])?;
        ip(&["link", "set", &agent_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{agent_ip}/30"), "dev", &agent_if])?;
        inside(&["link", "set", &agent_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn an_agent_on_a_second_host_runs_its_jobs_there() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED an_agent_on_a_second_host_runs_its_jobs_there: cannot make a network namespace here ({why}); run the tests as root");
            return;
        }
    };
    let f = Fleet::start_on(Some((ns.host_ip, 0).into())).await;
    let token = enrol_agent(&f.e.admin, "a1").await;
    let wrap = ["ip", "netns", "exec", &ns.name];
    let agent = AgentProc::start(&f.e.app.url(""), &token, &f.spool("a1"), &[], &wrap);
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let id = f.e.alice.launch_ok("whereami", "remote-1", json!({})).await;
    let job = f.e.alice.wait_finished(id, 30).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", agent.log());
    let mut seen = texts(&f.e.alice.all_lines(id).await, "stdout");
    seen.sort();
    let agent_if = ns.name.replace("odk", "odka");
    assert_eq!(
        seen,
        ["lo".to_string(), agent_if],
        "it ran on the other host"
    );
    let (_, agents) = f.e.admin.get_json("/api/agents").await;
    let a1 = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "a1")
        .unwrap()
        .clone();
    assert_eq!(a1["targets"], json!(["remote-1"]));
    assert!(
        a1["hostname"].is_string() && a1["version"].is_string(),
        "{a1}"
    );
}

#[test]
fn a_server_killed_mid_job_and_restarted_finds_the_job_going_on_on_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinServer::start(dir.path(), &agent_config());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = Client {
        http: reqwest::Client::new(),
        base: server.url(""),
        cookie: Some(server.admin_cookie()),
        bearer: None,
    };
    let spool = dir.path().join("spool");
    let (id, _agent) = rt.block_on(async {
        let token = enrol_agent(&admin, "a1").await;
        let agent = AgentProc::start(&server.url(""), &token, &spool, &[], &[]);
        wait_agent_online(&admin, "a1", 20).await;
        let id = admin
            .launch_ok("drip", "remote-1", json!({"chunks": 60, "pause": "0.1"}))
            .await;
        admin
            .wait_job(id, 20, |j| j["last_seq"].as_i64() >= Some(5000))
            .await;
        (id, agent)
    });
    server.signal(nix::sys::signal::Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    server.restart();
    let admin = Client {
        cookie: Some(server.admin_cookie()),
        ..admin
    };
    rt.block_on(async {
        let job = admin.wait_finished(id, 60).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", server.log());
        let lines = admin.all_lines(id).await;
        assert_contiguous(&lines, &job);
        assert_eq!(digest(texts(&lines, "stdout")), digest(drip_output(60)));
    });
}

#[tokio::test]
async fn an_agent_killed_mid_job_and_restarted_ends_it_interrupted_with_every_spooled_line_and_no_process_left(
) {
    let f = Fleet::start().await;
    let proxy = DroppingProxy::start("127.0.0.1:0", f.e.app.addr).await;
    let (mut agent, token) = f.agent("a1", &proxy.url(), &[]).await;
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let id =
        f.e.alice
            .launch_ok("drip-children", "remote-1", json!({"chunks": 100}))
            .await;
    f.e.alice
        .wait_job(id, 20, |j| j["last_seq"].as_i64() >= Some(3000))
        .await;
    // Cut off, the agent spools what the job prints; then it is killed
    // with those lines unsent.
    proxy.block(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    // What the killed agent had spooled: every batch must reach the log
    // (a file emptied by a full acknowledgement starts with the position
    // record, which has no lines).
    let spooled: Vec<i64> = std::fs::read_to_string(f.spool("a1").join(format!("{id}/log.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<app::model::agent::LogBatch>(l).ok())
        .flat_map(|b| b.lines.into_iter().map(|l| l.seq))
        .collect();
    let url = f.e.app.state.config.server.database_url.clone();
    let pgid: i32 = query_column(&url, &format!("SELECT pgid FROM jobs WHERE id = {id}")).await[0]
        .parse()
        .unwrap();
    assert!(
        group_has_members(pgid),
        "the job's processes outlive the killed agent"
    );

    let restarted = AgentProc::start(&f.e.app.url(""), &token, &f.spool("a1"), &[], &[]);
    let job = f.e.alice.wait_finished(id, 30).await;
    assert_eq!(job["state"], "failed", "{job}\n{}", restarted.log());
    assert_eq!(job["error"], "interrupted: agent restarted");
    let lines = f.e.alice.all_lines(id).await;
    assert_contiguous(&lines, &job);
    let stored: std::collections::HashSet<i64> =
        lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(!spooled.is_empty(), "the agent had lines spooled");
    assert!(
        spooled.iter().all(|s| stored.contains(s)),
        "every spooled line is stored"
    );
    let last = texts(&lines, "system").pop().unwrap();
    assert!(
        last.starts_with("interrupted: agent restarted (killed "),
        "{last}"
    );
    assert!(
        !group_has_members(pgid),
        "no process of the job is left on the host"
    );
}

#[tokio::test]
async fn cancel_reaches_a_connected_agent_at_once_and_a_disconnected_one_when_it_returns() {
    let f = Fleet::start().await;
    let proxy = DroppingProxy::start("127.0.0.1:0", f.e.app.addr).await;
    let (_agent, _) = f.agent("a1", &proxy.url(), &[]).await;
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let url = f.e.app.state.config.server.database_url.clone();

    // Connected: children that ignore SIGTERM are killed after the grace.
    let id = f.e.alice.launch_ok("stubborn", "remote-1", json!({})).await;
    f.e.alice
        .wait_job(id, 20, |j| j["last_seq"].as_i64() >= Some(2))
        .await;
    let pgid: i32 = query_column(&url, &format!("SELECT pgid FROM jobs WHERE id = {id}")).await[0]
        .parse()
        .unwrap();
    let (status, _) =
        f.e.alice
            .post_json(&format!("/api/jobs/{id}/cancel"), json!({}))
            .await;
    assert_eq!(status, 200);
    let job = f.e.alice.wait_finished(id, 20).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(!group_has_members(pgid), "nothing of the job is left");

    // Disconnected: the cancel waits for the agent.
    let id =
        f.e.alice
            .launch_ok("sleep", "remote-1", json!({"s": "60"}))
            .await;
    f.e.alice
        .wait_job(id, 20, |j| j["last_seq"].as_i64() >= Some(1))
        .await;
    proxy.block(true);
    let (status, job) =
        f.e.alice
            .post_json(&format!("/api/jobs/{id}/cancel"), json!({}))
            .await;
    assert_eq!((status, job["state"].as_str()), (200, Some("cancelling")));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.e.alice.job(id).await["state"],
        "cancelling",
        "the agent is away"
    );
    proxy.block(false);
    let job = f.e.alice.wait_finished(id, 30).await;
    assert_eq!(job["state"], "cancelled", "{job}");
}

/// A raw protocol client with an agent's token.
async fn raw_agent(app: &TestApp, token: &str) -> crate::terminal::Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/agent", app.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn say(ws: &mut crate::terminal::Ws, msg: Value) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        msg.to_string().into(),
    ))
    .await
    .unwrap();
}

/// The next message of `type` (others skipped); None when the socket closed.
async fn hear(ws: &mut crate::terminal::Ws, kind: &str) -> Option<Value> {
    use futures::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")?;
        match msg {
            Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == kind {
                    return Some(v);
                }
            }
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn hello(protocol: u32) -> Value {
    json!({"type": "hello", "protocol": protocol, "version": "test", "hostname": "forger", "jobs": []})
}

async fn refusals(admin: &Client) -> Vec<Value> {
    let (_, audit) = admin.get_json("/api/audit?action=agent.refused").await;
    audit["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn forged_jobs_old_dispatches_unknown_protocols_and_revoked_tokens_are_refused() {
    let f = Fleet::start().await;
    let (mut a1, _) = f.agent("a1", &f.e.app.url(""), &[]).await;
    let a2_token = enrol_agent(&f.e.admin, "a2").await;
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let theirs =
        f.e.alice
            .launch_ok("sleep", "remote-1", json!({"s": "30"}))
            .await;
    f.e.alice
        .wait_job(theirs, 20, |j| j["last_seq"].as_i64() >= Some(1))
        .await;

    // a2 reports on a1's job: refused, audited, and told to forget it.
    let mut forger = raw_agent(&f.e.app, &a2_token).await;
    say(&mut forger, hello(1)).await;
    assert!(hear(&mut forger, "welcome").await.is_some());
    let line =
        json!({"seq": 99, "stream": "stdout", "ts": "2026-12-05T10:00:00Z", "text": "forged"});
    let batch = json!({"lines": [line], "last_seq": 99, "stored_bytes": 6});
    say(
        &mut forger,
        json!({"type": "log", "job_id": theirs, "dispatch": 1, "batch": batch}),
    )
    .await;
    let forget = hear(&mut forger, "command.forget").await.unwrap();
    assert_eq!(forget["job_id"], theirs);
    assert!(forget["reason"]
        .as_str()
        .unwrap()
        .contains("not dispatched to this agent"));
    let texts_now = texts(&f.e.alice.all_lines(theirs).await, "stdout");
    assert!(!texts_now.contains(&"forged".to_string()));

    // An old dispatch of its own job: refused.
    let own =
        f.e.alice
            .launch_ok("sleep", "remote-2", json!({"s": "30"}))
            .await;
    let run = hear(&mut forger, "command.run").await.unwrap();
    assert_eq!(run["job_id"], own);
    let dispatch = run["dispatch"].as_i64().unwrap();
    say(&mut forger, json!({"type": "job.started", "job_id": own, "dispatch": dispatch - 1, "pid": 1, "start_time": 1})).await;
    let forget = hear(&mut forger, "command.forget").await.unwrap();
    assert!(
        forget["reason"]
            .as_str()
            .unwrap()
            .contains("not the job's current dispatch"),
        "{forget}"
    );
    let audited = refusals(&f.e.admin).await;
    assert!(
        audited.len() >= 2 && audited.iter().all(|a| a["actor"] == "agent:a2"),
        "{audited:?}"
    );

    // A token holds two sockets at most (a reconnect while its old socket
    // closes), not three: refused with 429 before any upgrade, counted.
    let twin = raw_agent(&f.e.app, &a2_token).await;
    let third = |token: String| {
        let app = f.e.app.client.clone();
        let url = f.e.app.url("/api/agent");
        async move { app.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let res = third(a2_token.clone()).await;
    assert_eq!(res.status(), 429);
    let body = res.text().await.unwrap();
    assert!(body.contains("max_connections_per_token"), "{body}");
    assert_eq!(f.e.app.refusals("agent_connections").await, 1);
    drop(twin);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while third(a2_token.clone()).await.status() == 429 {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed socket still counts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A protocol the server does not speak.
    let mut old = raw_agent(&f.e.app, &a2_token).await;
    say(&mut old, hello(99)).await;
    let refused = hear(&mut old, "refused").await.unwrap();
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("speaks agent protocol 1, 2 and not 99"),
        "{refused}"
    );

    // A revoked token: its agent is disconnected within seconds, and refused.
    let res =
        f.e.admin
            .post("/api/agents/a1/revoke")
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 204);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !a1.log().contains("revoked") {
        assert!(
            std::time::Instant::now() < deadline,
            "a1 was not told: {}",
            a1.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !a1.log().contains("refused with HTTP 401") {
        assert!(
            std::time::Instant::now() < deadline,
            "a1 was let in again: {}",
            a1.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, agents) = f.e.admin.get_json("/api/agents").await;
    assert!(agents
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "a1" && a["status"] == "revoked"));
    a1.kill();
}

#[tokio::test]
async fn a_console_on_an_agent_target_runs_on_its_host_with_resize_exit_and_reattach() {
    let f = Fleet::start().await;
    let (_agent, _) = f.agent("a1", &f.e.app.url(""), &[]).await;
    wait_agent_online(&f.e.admin, "a1", 20).await;
    let path = "/api/targets/remote-1/terminal?cols=100&rows=30";
    let mut t = crate::terminal::Term::open(&f.e.app, &f.e.alice, path).await;
    t.type_line("echo hi-$((40+2)); stty size").await;
    // One line, two answers: a loaded host may send both in one frame, and
    // `wait_for` looks only at what arrives after it is called.
    t.wait_for("30 100").await;
    assert!(t.screen.contains("hi-42"), "{}", t.screen);
    t.send(json!({"type": "resize", "cols": 120, "rows": 40}))
        .await;
    t.type_line("MARK=kept-$((6*7)); stty size").await;
    t.wait_for("40 120").await;
    // Drop the socket; the shell lives on; reattach and find it.
    let session = t.session.clone();
    drop(t);
    let again = format!("{path}&session={session}");
    let mut t = crate::terminal::Term::open(&f.e.app, &f.e.alice, &again).await;
    assert!(t.resumed, "reattached to the same shell");
    t.type_line("echo $MARK").await;
    t.wait_for("kept-42").await;
    t.type_line("exit 3").await;
    assert_eq!(t.exit_code().await, 3);
}

/// Targets probed on their agents: `probed` on a1 (started on a second
/// host, where the probe lists that host's network interfaces), `guarded`
/// on a2 (narrowed by `--allow-template` without `--allow-probes`), `old`
/// on a3 (a protocol-1 agent, spoken here by hand).
fn probed_config() -> String {
    let probe = r#"owners = ["alice"]
status = ["sh", "-c", "ls /sys/class/net | sort | tr '\n' ' '"]
status_interval = "1s"
status_timeout = "5s""#;
    format!(
        r#"{}
[[targets]]
id = "probed"
kind = "agent"
agent = "a1"
{probe}

[[targets]]
id = "guarded"
kind = "agent"
agent = "a2"
{probe}

[[targets]]
id = "old"
kind = "agent"
agent = "a3"
{probe}
"#,
        agent_config().replace(ENGINE_CONFIG, "")
    )
}

#[tokio::test]
async fn an_agent_targets_status_probe_runs_on_its_host_and_says_why_when_it_cannot() {
    use crate::status::wait_status;
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED an_agent_targets_status_probe_runs_on_its_host_and_says_why_when_it_cannot: cannot make a network namespace here ({why}); run the tests as root");
            return;
        }
    };
    let e = EngineApp::start_on(&probed_config(), Some((ns.host_ip, 0).into())).await;
    let dir = tempfile::tempdir().unwrap();
    let message = |s: &Value| s["message"].as_str().unwrap_or_default().to_string();

    // Connected nowhere: unknown, saying so (no replica runs it locally).
    let s = wait_status(&e.alice, "probed", 20, |s| s["state"] == "unknown").await;
    assert_eq!(message(&s), "agent `a1` is not connected", "{s}");

    // On its agent's host: that host's interfaces, not this one's.
    let token = enrol_agent(&e.admin, "a1").await;
    let wrap = ["ip", "netns", "exec", &ns.name];
    let mut a1 = AgentProc::start(&e.app.url(""), &token, &dir.path().join("a1"), &[], &wrap);
    let agent_if = ns.name.replace("odk", "odka");
    let s = wait_status(&e.alice, "probed", 20, |s| s["state"] == "up").await;
    assert_eq!(message(&s), format!("lo {agent_if}"), "{s}\n{}", a1.log());
    // It goes on on the interval (each result newer than the last).
    let first = s["checked_at"].as_str().unwrap().to_string();
    let s = wait_status(&e.alice, "probed", 10, |s| {
        s["checked_at"].as_str().is_some_and(|t| t > first.as_str())
    })
    .await;
    assert_eq!(s["state"], "up", "{s}");

    // An agent narrowed to some templates refuses probes, saying how.
    let token = enrol_agent(&e.admin, "a2").await;
    let mut a2 = AgentProc::start(
        &e.app.url(""),
        &token,
        &dir.path().join("a2"),
        &["--allow-template", "seq"],
        &[],
    );
    let s = wait_status(&e.alice, "guarded", 20, |s| {
        s["state"] == "unknown" && message(s).contains("refused by the agent")
    })
    .await;
    assert!(message(&s).contains("--allow-probes"), "{s}");

    // An agent of protocol 1 is never sent a probe: unknown, "upgrade it".
    let token = enrol_agent(&e.admin, "a3").await;
    let mut old = raw_agent(&e.app, &token).await;
    say(&mut old, hello(1)).await;
    assert!(hear(&mut old, "welcome").await.is_some());
    let s = wait_status(&e.alice, "old", 20, |s| {
        message(s).contains("cannot run status probes")
    })
    .await;
    assert_eq!(s["state"], "unknown", "{s}");
    assert!(message(&s).contains("agent protocol 1"), "{s}");

    // The agent gone: unknown again, from the server that lost it.
    a1.kill();
    let s = wait_status(&e.alice, "probed", 20, |s| s["state"] == "unknown").await;
    assert!(
        message(&s) == "agent `a1` is not connected"
            || message(&s) == "agent `a1` disconnected during the probe",
        "{s}"
    );
    a2.kill();
}
