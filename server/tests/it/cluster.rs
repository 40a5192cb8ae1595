//! Several replicas on one PostgreSQL (docs/cluster.md): real `opsdeck`
//! processes sharing one database, with a short `[cluster].node_timeout`
//! so a lost replica is noticed in seconds. Killed with SIGKILL, stopped
//! with SIGSTOP, started all at once with the CLI beside them.
//!
//! Every replica test needs PostgreSQL (several processes on one SQLite
//! file is not a supported set-up): on a SQLite run it returns at once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::*;

/// `[cluster].node_timeout` of these tests.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// Targets t1..t4 and the templates these tests run. Every template that
/// runs appends its job id to `ran` first: a count of real runs, outside
/// the database.
fn cluster_config(ran: &Path) -> String {
    let ran = ran.display();
    format!(
        r#"
[jobs]
poll_interval = "200ms"

[cluster]
node_timeout = "{timeout}s"

[[targets]]
id = "t1"
kind = "local"

[[targets]]
id = "t2"
kind = "local"

[[targets]]
id = "t3"
kind = "local"

[[targets]]
id = "t4"
kind = "local"

[[templates]]
id = "mark"
script = 'echo "$OPSDECK_JOB_ID" >> {ran}; echo "marker $OPSDECK_JOB_ID"'

[[templates]]
id = "mark-global"
script = 'echo "$OPSDECK_JOB_ID" >> {ran}; echo "marker $OPSDECK_JOB_ID"'
exclusive = "global"

[[templates]]
id = "hold"
script = 'echo "$OPSDECK_JOB_ID" >> {ran}; echo started; sleep 120'

[[templates]]
id = "ticker"
script = 'echo "$OPSDECK_JOB_ID" >> {ran}; i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.1; done'
"#,
        timeout = NODE_TIMEOUT.as_secs()
    )
}

/// Replicas of one cluster: each its own directory (configuration, log),
/// all on one PostgreSQL database, sharing the `ran` file.
struct Cluster {
    pg: PgDatabase,
    shared: TempDir,
    dirs: Vec<TempDir>,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster {
            pg: PgDatabase::create().await,
            shared: tempfile::tempdir().unwrap(),
            dirs: Vec::new(),
        }
    }

    fn ran_file(&self) -> std::path::PathBuf {
        self.shared.path().join("ran")
    }

    /// A directory whose servers use this cluster's database.
    fn dir(&mut self) -> std::path::PathBuf {
        let dir = tempfile::tempdir().unwrap();
        // N.B.: support::bin_database reads the URL from this file.
        std::fs::write(dir.path().join("postgres-url"), self.pg.url()).unwrap();
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }

    /// Starts one more replica (waits until it is healthy).
    fn replica(&mut self) -> BinServer {
        self.replica_with("")
    }

    /// Starts one more replica with these keys of `[server]` too.
    fn replica_with(&mut self, server_keys: &str) -> BinServer {
        let dir = self.dir();
        let config = format!("{server_keys}\n{}", cluster_config(&self.ran_file()));
        BinServer::start(&dir, &config)
    }

    /// How many times each job id ran (from the `ran` file).
    fn runs(&self) -> HashMap<i64, usize> {
        let text = std::fs::read_to_string(self.ran_file()).unwrap_or_default();
        let mut runs = HashMap::new();
        for id in text.lines() {
            *runs.entry(id.trim().parse::<i64>().unwrap()).or_default() += 1;
        }
        runs
    }

    async fn column(&self, sql: &str) -> Vec<String> {
        query_column(&self.pg.url(), sql).await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.column(sql).await[0].parse().unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An admin client of `server` (a session, valid on every replica).
fn admin_of(server: &BinServer) -> Client {
    Client {
        http: reqwest::Client::new(),
        base: server.url(""),
        cookie: Some(server.admin_cookie()),
        bearer: None,
    }
}

/// The same caller, talking to `server`.
fn via(client: &Client, server: &BinServer) -> Client {
    Client {
        base: server.url(""),
        ..client.clone()
    }
}

async fn health(client: &Client) -> (u16, Value) {
    client.get_json("/healthz").await
}

/// The value of an unlabelled metric of `server`.
async fn metric(client: &Client, name: &str) -> Option<f64> {
    let text = client
        .get("/metrics")
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// Polls `check` every 50 ms until it is true; the time it took. Panics
/// with `what` after `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// A timestamp column as microseconds since the epoch (PostgreSQL).
fn micros(col: &str) -> String {
    format!("(EXTRACT(EPOCH FROM {col}) * 1000000)::bigint")
}

#[test]
fn a_thousand_jobs_over_two_replicas_run_once_each_never_overlapping_on_a_target_and_globals_alone()
{
    // PostgreSQL only: replicas share a PostgreSQL database.
    if !on_postgres() {
        return;
    }
    let rt = runtime();
    let mut cluster = rt.block_on(Cluster::new());
    // Two jobs at once on each replica, so neither can hold all four
    // targets and both claim, however the timing falls. (With four
    // workers each, a replica that won the first claims kept every
    // target now and then: each runner's end claims the next job on its
    // target in the same transaction.)
    let a = cluster.replica_with("workers = 2");
    let b = cluster.replica_with("workers = 2");
    let admin_a = admin_of(&a);
    let admin_b = via(&admin_a, &b);

    const JOBS: usize = 1000;
    let t0 = Instant::now();
    let ids: Vec<i64> = rt.block_on(async {
        let mut ids = Vec::with_capacity(JOBS);
        // 16 launches in flight, alternating between the replicas.
        for chunk in (0..JOBS).collect::<Vec<_>>().chunks(16) {
            let launches = chunk.iter().map(|&i| {
                let client = if i % 2 == 0 { &admin_a } else { &admin_b };
                let template = if i % 100 == 50 { "mark-global" } else { "mark" };
                let target = format!("t{}", i % 4 + 1);
                async move { client.launch_ok(template, &target, json!({})).await }
            });
            ids.extend(futures::future::join_all(launches).await);
        }
        ids
    });
    let launched = t0.elapsed();
    let c = &cluster;
    let finished = rt.block_on(until(
        Duration::from_secs(180),
        "every job finished",
        move || async move {
            c.count("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running', 'cancelling')")
                .await
                == 0
        },
    ));
    eprintln!(
        "{JOBS} jobs over two replicas: launched in {launched:?}, all finished {:?} after that",
        finished
    );

    rt.block_on(async {
        assert_eq!(
            cluster
                .count("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
                .await,
            JOBS as i64
        );
        // Each job's log carries its own marker exactly once.
        assert_eq!(
            cluster
                .count(
                    "SELECT COUNT(*) FROM jobs j WHERE (SELECT COUNT(*) FROM job_logs l \
                     WHERE l.job_id = j.id AND l.text = 'marker ' || j.id) <> 1"
                )
                .await,
            0
        );
        let nodes = cluster.column("SELECT DISTINCT node FROM jobs").await;
        assert_eq!(nodes.len(), 2, "both replicas claimed: {nodes:?}");
    });
    // Each job ran exactly once (counted by the jobs themselves).
    let runs = cluster.runs();
    assert_eq!(runs.len(), JOBS);
    for id in &ids {
        assert_eq!(runs.get(id), Some(&1), "job {id}");
    }

    // (target, exclusive, started, finished) of every job.
    let rows = rt.block_on(cluster.column(&format!(
        "SELECT target || ' ' || exclusive || ' ' || {} || ' ' || {} FROM jobs",
        micros("started_at"),
        micros("finished_at")
    )));
    let spans: Vec<(String, String, i64, i64)> = rows
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(' ').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let mut by_target: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (target, _, start, end) in &spans {
        by_target.entry(target).or_default().push((*start, *end));
    }
    for (target, mut runs) in by_target {
        runs.sort();
        for w in runs.windows(2) {
            assert!(w[0].1 <= w[1].0, "two runs overlapped on {target}: {w:?}");
        }
    }
    let globals: Vec<_> = spans.iter().filter(|s| s.1 == "global").collect();
    assert_eq!(globals.len(), JOBS / 100);
    for g in &globals {
        let beside = spans
            .iter()
            .filter(|s| (s.2, s.3) != (g.2, g.3) && s.2 < g.3 && g.2 < s.3)
            .count();
        assert_eq!(
            beside, 0,
            "a global job ran beside {beside} other(s): {g:?}"
        );
    }
}

#[test]
fn a_replica_killed_mid_job_has_its_jobs_failed_within_the_node_timeout_and_the_other_goes_on() {
    // PostgreSQL only: replicas share a PostgreSQL database.
    if !on_postgres() {
        return;
    }
    let rt = runtime();
    let mut cluster = rt.block_on(Cluster::new());
    let mut a = cluster.replica();
    let admin_a = admin_of(&a);
    let node_a = rt.block_on(health(&admin_a)).1["node"]
        .as_str()
        .unwrap()
        .to_string();
    // Four jobs running on A before B exists, so they are A's.
    let held: Vec<i64> = rt.block_on(async {
        let mut held = Vec::new();
        for t in 1..=4 {
            let id = admin_a.launch_ok("hold", &format!("t{t}"), json!({})).await;
            held.push(id);
        }
        for id in &held {
            let job = admin_a
                .wait_job(*id, 20, |j| j["last_seq"].as_i64() >= Some(2))
                .await;
            assert_eq!(job["node"], node_a.as_str());
        }
        held
    });
    let b = cluster.replica();
    let admin_b = via(&admin_a, &b);
    let node_b = rt.block_on(health(&admin_b)).1["node"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(
        node_a, node_b,
        "two replicas on one host have their own node ids"
    );
    // Queued behind A's job on t1: B may run it only once A's job is failed.
    let behind = rt.block_on(admin_b.launch_ok("mark", "t1", json!({})));
    let pgids: Vec<i32> = rt.block_on(async {
        let mut pgids = Vec::new();
        for id in &held {
            let pgid = cluster
                .column(&format!("SELECT pgid FROM jobs WHERE id = {id}"))
                .await;
            pgids.push(pgid[0].parse().unwrap());
        }
        pgids
    });

    a.signal(Signal::SIGKILL);
    assert_eq!(
        a.wait_exit(Duration::from_secs(5)),
        None,
        "killed: no exit code"
    );
    assert!(a.child.try_wait().unwrap().is_some(), "A is gone");
    let (c, node) = (&cluster, node_a.as_str());
    let recovered = rt.block_on(until(
        NODE_TIMEOUT + Duration::from_secs(10),
        "the killed replica's jobs were failed",
        move || async move {
            c.count(&format!(
                    "SELECT COUNT(*) FROM jobs WHERE node = '{node}' AND state IN ('running', 'cancelling')"
                ))
                .await
                == 0
        },
    ));
    eprintln!("a replica killed with SIGKILL: its jobs failed {recovered:?} later (node_timeout {NODE_TIMEOUT:?})");
    assert!(
        recovered <= NODE_TIMEOUT + Duration::from_secs(2),
        "failed within node_timeout plus a margin: {recovered:?}"
    );

    rt.block_on(async {
        for id in &held {
            let job = admin_b.job(*id).await;
            assert_eq!(job["state"], "failed", "{job}");
            assert_eq!(job["error"], format!("interrupted: node {node_a} lost"));
            let lines = admin_b.all_lines(*id).await;
            let last = lines.last().unwrap();
            assert_eq!(last["stream"], "system");
            let text = last["text"].as_str().unwrap();
            assert!(
                text.starts_with(&format!("interrupted: node {node_a} lost")),
                "{text}"
            );
            assert!(
                text.contains(&format!("could not be killed from node {node_b}")),
                "{text}"
            );
            assert_eq!(
                cluster
                    .count(&format!(
                        "SELECT COUNT(*) FROM audit_log WHERE subject = 'job {id}' \
                         AND action = 'job.interrupted' AND actor = 'system'"
                    ))
                    .await,
                1
            );
        }
        // B goes on serving and claiming: the job behind A's runs on B.
        let job = admin_b.wait_finished(behind, 20).await;
        assert_eq!(
            (job["state"].as_str(), job["node"].as_str()),
            (Some("succeeded"), Some(node_b.as_str()))
        );
        assert_eq!(health(&admin_b).await.0, 200);
        assert_eq!(metric(&admin_b, "opsdeck_jobs_lost_total").await, Some(4.0));
    });
    let runs = cluster.runs();
    for id in held.iter().chain([&behind]) {
        assert_eq!(runs.get(id), Some(&1), "job {id} ran once");
    }

    // What B could not do: the killed server's processes live on...
    for pgid in &pgids {
        assert!(
            group_has_members(*pgid),
            "the orphans of group {pgid} outlive their server"
        );
    }
    // ...until A starts again (same address, same node id), and kills them.
    a.restart();
    rt.block_on(async {
        let pgids = &pgids;
        until(Duration::from_secs(10), "the restarted replica killed the orphans", move || async move {
            pgids.iter().all(|p| !group_has_members(*p))
        })
        .await;
        assert_eq!(
            cluster
                .count("SELECT COUNT(*) FROM audit_log WHERE action = 'job.orphans_killed' AND actor = 'system'")
                .await,
            4
        );
        for id in &held {
            assert_eq!(admin_b.job(*id).await["state"], "failed", "it stays failed");
        }
    });
    drop(b);
}

#[test]
fn a_replica_stopped_past_the_timeout_cannot_touch_the_job_failed_meanwhile_and_rejoins() {
    // PostgreSQL only: replicas share a PostgreSQL database.
    if !on_postgres() {
        return;
    }
    let rt = runtime();
    let mut cluster = rt.block_on(Cluster::new());
    let a = cluster.replica();
    let admin_a = admin_of(&a);
    let node_a = rt.block_on(health(&admin_a)).1["node"]
        .as_str()
        .unwrap()
        .to_string();
    // A job printing ten lines a second, running on A.
    let id = rt.block_on(async {
        let id = admin_a.launch_ok("ticker", "t1", json!({})).await;
        admin_a
            .wait_job(id, 20, |j| j["last_seq"].as_i64() >= Some(5))
            .await;
        id
    });
    let mut b = cluster.replica();
    let admin_b = via(&admin_a, &b);
    let pgid: i32 = rt.block_on(cluster.column(&format!("SELECT pgid FROM jobs WHERE id = {id}")))
        [0]
    .parse()
    .unwrap();

    a.signal(Signal::SIGSTOP);
    let (job, lines) = rt.block_on(async {
        let job = admin_b.wait_job(id, 20, |j| j["state"] == "failed").await;
        (job, admin_b.all_lines(id).await)
    });
    let last = lines.last().unwrap()["text"].as_str().unwrap().to_string();
    assert!(
        last.starts_with(&format!("interrupted: node {node_a} lost")),
        "{last}"
    );
    assert_eq!(
        job["last_seq"].as_i64(),
        lines.last().unwrap()["seq"].as_i64()
    );
    assert!(
        group_has_members(pgid),
        "the ticker runs on while its server is stopped"
    );

    a.signal(Signal::SIGCONT);
    rt.block_on(async {
        // A reads what the ticker printed meanwhile, finds the job is not
        // its own any more, kills it, and registers under a new epoch.
        let a_client = &admin_a;
        until(
            Duration::from_secs(15),
            "A stopped the job it lost",
            move || async move { metric(a_client, "opsdeck_jobs_fenced_total").await == Some(1.0) },
        )
        .await;
        until(
            Duration::from_secs(10),
            "the ticker's processes are gone",
            move || async move { !group_has_members(pgid) },
        )
        .await;
        until(Duration::from_secs(10), "A registered again", move || async move {
            metric(a_client, "opsdeck_node_rejoins_total").await == Some(1.0)
        })
        .await;
        // Nothing of what A did after SIGCONT reached the job.
        let after = admin_a.job(id).await;
        for key in ["state", "error", "last_seq", "finished_at", "node"] {
            assert_eq!(after[key], job[key], "{key}");
        }
        assert_eq!(
            admin_a.all_lines(id).await,
            lines,
            "the log is as B left it"
        );
        let (status, h) = health(&admin_a).await;
        assert_eq!(status, 200);
        // 1 at start, 2 when B declared it lost, 3 when it registered again.
        assert_eq!(h["epoch"], 3, "{h}");
        let lost = cluster
            .column(&format!(
                "SELECT COALESCE(lost_at::text, 'none') FROM nodes WHERE node = '{node_a}'"
            ))
            .await;
        assert_eq!(lost, ["none"], "A is alive again");
    });
    assert_eq!(cluster.runs().get(&id), Some(&1));

    // A claims again, under its new epoch: with B gone, a job runs on A.
    b.signal(Signal::SIGTERM);
    assert_eq!(b.wait_exit(Duration::from_secs(30)), Some(0));
    rt.block_on(async {
        let next = admin_a.launch_ok("mark", "t1", json!({})).await;
        let job = admin_a.wait_finished(next, 20).await;
        assert_eq!(
            (job["state"].as_str(), job["node"].as_str()),
            (Some("succeeded"), Some(node_a.as_str()))
        );
        let epoch = cluster
            .column(&format!("SELECT epoch FROM jobs WHERE id = {next}"))
            .await;
        assert_eq!(epoch, ["3"]);
    });
}

#[test]
fn three_replicas_and_the_cli_started_at_once_on_an_empty_database_migrate_once_and_all_start() {
    // PostgreSQL only: replicas share a PostgreSQL database.
    if !on_postgres() {
        return;
    }
    let rt = runtime();
    let mut cluster = rt.block_on(Cluster::new());
    let dirs: Vec<_> = (0..3).map(|_| cluster.dir()).collect();
    let config = cluster_config(&cluster.ran_file());
    let cli_config = cluster.shared.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        format!("[server]\ndatabase_url = \"{}\"\n", cluster.pg.url()),
    )
    .unwrap();

    let go = Arc::new(Barrier::new(4));
    let servers: Vec<_> = dirs
        .into_iter()
        .map(|dir| {
            let (go, config) = (go.clone(), config.clone());
            std::thread::spawn(move || {
                go.wait();
                BinServer::start(&dir, &config)
            })
        })
        .collect();
    let cli = {
        let go = go.clone();
        std::thread::spawn(move || {
            let mut child = Command::new(opsdeck_bin())
                .arg("--config")
                .arg(&cli_config)
                .args(["user", "add", "alice", "--role", "operator"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            go.wait();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{USER_PASSWORD}\n").as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        })
    };
    let servers: Vec<BinServer> = servers
        .into_iter()
        .map(|t| t.join().expect("a replica started"))
        .collect();
    let out = cli.join().unwrap();
    assert!(
        out.status.success(),
        "the CLI: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    use migration::MigratorTrait;
    let expected: Vec<String> = migration::Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let admins: Vec<Client> = servers.iter().map(admin_of).collect();
    rt.block_on(async {
        let applied = cluster
            .column("SELECT version FROM seaql_migrations ORDER BY version")
            .await;
        assert_eq!(applied, expected, "each migration recorded once");
        let users = cluster
            .column("SELECT username FROM users ORDER BY username")
            .await;
        assert_eq!(users, ["admin", "alice"]);
        let nodes = cluster.column("SELECT node FROM nodes").await;
        assert_eq!(nodes.len(), 3, "three node ids: {nodes:?}");
        for admin in &admins {
            assert_eq!(health(admin).await.0, 200);
        }
    });
    for s in &servers {
        assert!(!s.log().contains("cannot migrate"), "{}", s.log());
    }
}

#[tokio::test]
async fn metrics_name_this_node_and_count_the_nodes_alive() {
    let app = TestApp::start().await;
    let admin = app.admin_bearer().await;
    let node = app.state.config.cluster.node.clone();
    let client = &admin;
    until(
        Duration::from_secs(10),
        "the node registered",
        move || async move { metric(client, "opsdeck_node_epoch").await == Some(1.0) },
    )
    .await;
    let text = admin
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("opsdeck_node_info{{node=\"{node}\"}} 1\n")),
        "{text}"
    );
    assert!(
        text.contains("opsdeck_nodes{state=\"alive\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("opsdeck_nodes{state=\"lost\"} 0\n"), "{text}");
    assert!(text.contains("opsdeck_jobs_lost_total 0\n"), "{text}");
}

/// The claim reads its start time once it holds the claim lock: a claim
/// that waited for another replica's end-and-claim transaction starts its
/// job after that end, not at the moment it began to wait (which made two
/// runs on one target seem to overlap in the thousand-jobs test above).
#[tokio::test]
async fn a_claim_that_waited_for_the_lock_starts_its_job_after_the_end_it_waited_for() {
    use app::model::template::Exclusive;
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    use server::db::jobs::{self, ClaimScope, Enqueue, Owner, Retry};
    use server::db::{nodes, txn::Txn};

    if !on_postgres() {
        return;
    }
    let pg = PgDatabase::create().await;
    let db = server::db::connect(&pg.url()).await.unwrap();
    let now = chrono::Utc::now();
    let owner = |node: &str, epoch| Owner {
        node: node.to_string(),
        epoch,
    };
    let a = owner("a", nodes::register(&db, "a", now).await.unwrap());
    let b = owner("b", nodes::register(&db, "b", now).await.unwrap());
    let params = serde_json::Map::new();
    let enqueue = || Enqueue {
        template: "mark",
        target: "t1",
        params: &params,
        exclusive: Exclusive::Target,
        owner_id: 1,
        owner: "admin",
        rerun_of: None,
        retry: Retry::first(None),
    };
    let first = jobs::insert(&db, enqueue()).await.unwrap();
    let second = jobs::insert(&db, enqueue()).await.unwrap();
    let local = ClaimScope::Local { agent_targets: &[] };
    let txn = Txn::begin(&db).await.unwrap();
    let claimed = jobs::claim_in(&txn, &a, local).await.unwrap().unwrap();
    txn.commit().await.unwrap();
    assert_eq!(claimed.id, first.id);

    // Replica a ends the first job and claims its next one (none may
    // start: the second waits for t1) in one transaction, as a runner does.
    let ending = Txn::begin(&db).await.unwrap();
    assert!(jobs::claim_in(&ending, &a, local).await.unwrap().is_none());
    // Meanwhile replica b's claim waits for the lock a holds.
    let waiting = {
        let db = db.clone();
        let b = b.clone();
        tokio::spawn(async move {
            let txn = Txn::begin(&db).await.unwrap();
            let job = jobs::claim_in(&txn, &b, local).await.unwrap();
            txn.commit().await.unwrap();
            job
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "b's claim waits for the lock");
    ending
        .execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET state = 'succeeded', finished_at = $1 WHERE id = $2",
            [chrono::Utc::now().into(), first.id.into()],
        ))
        .await
        .unwrap();
    ending.commit().await.unwrap();

    let started = waiting.await.unwrap().expect("b claims the second job");
    assert_eq!(started.id, second.id);
    let ended = jobs::by_id(&db, first.id).await.unwrap().unwrap();
    let (start, end) = (started.started_at.unwrap(), ended.finished_at.unwrap());
    assert!(
        start >= end,
        "the second run starts ({start}) before the first ended ({end})"
    );
    db.close().await.ok();
}
