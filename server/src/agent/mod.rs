//! `opsdeck agent`: the same binary, on another host, running the jobs of
//! the targets that name it. It only dials out: one WebSocket to the
//! server's `GET /api/agent` (`wss://` when the server's URL is https),
//! reconnecting with backoff and jitter forever.
//!
//! - It says `hello` with the jobs it holds; the server answers where each
//!   stands (`ack`), sends `command.run` for new ones (a template's argv,
//!   built by the server; with `--allow-template` the agent runs only
//!   those templates), `command.cancel`, `command.forget`,
//!   `terminal.open` for a console on this host, and `command.probe` for a
//!   target's status probe ([`probe`]).
//! - A job runs under `engine::supervise`, as on the server; its lines are
//!   numbered and capped here ([`job`]) and every batch is spooled on disk
//!   ([`spool`]) before it is sent. What the server has not acknowledged is
//!   sent again after any reconnect, from where the server says it stands:
//!   no line is lost, none is stored twice.
//! - A restarted agent finds its spools: jobs whose process it no longer
//!   has are ended "interrupted: agent restarted" (what is left of their
//!   process groups killed) once their spooled lines are stored.
//! - The token is read from `--token-file` or `OPSDECK_AGENT_TOKEN`; it is
//!   never logged.

pub mod job;
pub mod probe;
pub mod spool;
pub mod terminal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::model::agent::{AgentMsg, HeldJob, RunCommand, ServerMsg, PROTOCOL};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::config::units::parse_bytes;
use crate::engine::supervise::StopReason;
use crate::sync::Locked;
use job::Job;
use spool::{Meta, Spool};

/// `opsdeck agent --server URL …`: what the agent runs with.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The opsdeck server's URL (`http://…` or `https://…`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The agent's token. Visible in the process list: prefer --token-file
    /// or OPSDECK_AGENT_TOKEN.
    #[arg(
        long,
        env = "OPSDECK_AGENT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A file holding the agent's token (as `opsdeck agent add` printed it).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where unacknowledged log lines wait (one directory per job).
    #[arg(long, value_name = "DIR", default_value = "data/agent-spool")]
    pub spool: PathBuf,
    /// The name this agent was enrolled under: refuse a server that says
    /// otherwise.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Run only these templates (repeat the option); by default, every
    /// template the server sends.
    #[arg(long = "allow-template", value_name = "ID")]
    pub allow_templates: Vec<String>,
    /// With --allow-template: run the status probes of this agent's
    /// targets too (without --allow-template they always run).
    #[arg(long)]
    pub allow_probes: bool,
    /// The most unacknowledged log the spool keeps for all jobs together.
    #[arg(long, value_name = "BYTES", default_value = "1GiB", value_parser = parse_bytes_arg)]
    pub spool_max: u64,
}

fn parse_bytes_arg(s: &str) -> Result<u64, String> {
    parse_bytes(s)
}

/// The agent's state, across reconnects.
pub struct Agent {
    /// `ws://host:port/api/agent` or `wss://…`.
    url: String,
    token: String,
    name: Option<String>,
    allow: Vec<String>,
    allow_probes: bool,
    spool_root: PathBuf,
    spool_max: u64,
    hostname: String,
    /// The variables of this host's own environment a job starts with.
    pub base_env: Vec<(String, String)>,
    jobs: Mutex<BTreeMap<i64, Arc<Job>>>,
    /// Something to send: a batch spooled, a job ended, a message said.
    pub changed: Notify,
    /// Messages said outside a batch (job.started, terminal.failed).
    said: Mutex<Vec<AgentMsg>>,
}

impl Agent {
    /// Queues a message for the connection (sent when there is one; a
    /// `job.started` lost to a drop is harmless: the server learns the
    /// group from the next one, or never needs it).
    pub fn say(&self, msg: AgentMsg) {
        self.said.locked().push(msg);
        self.changed.notify_one();
    }

    /// The log cap of a new job: its template's, or less when the spool's
    /// bound is shared by many running jobs (each may spool about twice
    /// its cap before compaction keeps it there).
    pub fn log_cap(&self, template_cap: u64) -> u64 {
        let running = self
            .jobs
            .locked()
            .values()
            .filter(|j| j.is_running())
            .count() as u64;
        template_cap.min(self.spool_max / 2 / running.max(1))
    }

    /// A job's spool is compacted past this many unacknowledged bytes.
    pub fn compact_above(&self) -> u64 {
        let running = self.jobs.locked().len().max(1) as u64;
        (self.spool_max / running).max(1 << 20)
    }

    fn held(&self) -> Vec<HeldJob> {
        self.jobs
            .locked()
            .values()
            .map(|j| HeldJob {
                job_id: j.id,
                dispatch: j.dispatch,
                running: j.is_running(),
            })
            .collect()
    }

    fn job(&self, id: i64, dispatch: i64) -> Option<Arc<Job>> {
        self.jobs
            .locked()
            .get(&id)
            .filter(|j| j.dispatch == dispatch)
            .cloned()
    }

    /// Drops a job and its spool (the server has all of it, or does not
    /// want it).
    fn drop_job(&self, id: i64) {
        let Some(job) = self.jobs.locked().remove(&id) else {
            return;
        };
        job.forgotten.store(true, Ordering::SeqCst);
        let dir = self.spool_root.join(id.to_string());
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(job = id, error = %e, "cannot remove the job's spool");
            }
        }
    }
}

/// Runs the agent until it is killed; the exit code on a start-up error.
pub fn main(args: RunArgs) -> ExitCode {
    crate::telemetry::init();
    let agent = match setup(args) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("opsdeck agent: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("opsdeck agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        resume_spools(&agent);
        run(agent).await;
    });
    ExitCode::SUCCESS
}

fn setup(args: RunArgs) -> Result<Agent, String> {
    let server = args
        .server
        .ok_or("say which server to connect to: --server https://opsdeck.example.com")?;
    let url = agent_url(&server)?;
    let token = match (&args.token_file, &args.token) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
            .trim()
            .to_string(),
        (None, Some(t)) => {
            if std::env::var_os("OPSDECK_AGENT_TOKEN").is_none() {
                eprintln!("opsdeck agent: warning: --token shows the token in the process list; use --token-file or OPSDECK_AGENT_TOKEN");
            }
            t.trim().to_string()
        }
        (None, None) => {
            return Err(
                "give the agent its token: --token-file FILE (or OPSDECK_AGENT_TOKEN)".into(),
            )
        }
    };
    if !token.starts_with("oda_") {
        return Err("that is not an agent token (they start with `oda_`): create one with `opsdeck agent add NAME` on the server host".into());
    }
    std::fs::create_dir_all(&args.spool).map_err(|e| {
        format!(
            "cannot create the spool directory {}: {e}; choose a writable one with --spool",
            args.spool.display()
        )
    })?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    Ok(Agent {
        url,
        token,
        name: args.name,
        allow: args.allow_templates,
        allow_probes: args.allow_probes,
        spool_root: args.spool,
        spool_max: args.spool_max,
        hostname,
        base_env: crate::config::passed_env(),
        jobs: Mutex::new(BTreeMap::new()),
        changed: Notify::new(),
        said: Mutex::new(Vec::new()),
    })
}

/// `https://host/base` → `wss://host/base/api/agent`.
fn agent_url(server: &str) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    let rest = if let Some(r) = server.strip_prefix("https://") {
        format!("wss://{r}")
    } else if let Some(r) = server.strip_prefix("http://") {
        format!("ws://{r}")
    } else {
        return Err(format!(
            "`{server}` is not a server URL: use http://host:port or https://host"
        ));
    };
    Ok(format!("{rest}/api/agent"))
}

/// The jobs an earlier run left in the spool: each is held again, and one
/// whose process this run does not have ends "interrupted: agent
/// restarted".
fn resume_spools(agent: &Arc<Agent>) {
    let spools = match Spool::load_all(&agent.spool_root) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(dir = %agent.spool_root.display(), error = %e, "cannot read the spool");
            return;
        }
    };
    for spool in spools {
        let ended = spool.meta.ended.is_some();
        let job = Arc::new(Job::new(spool, false));
        tracing::info!(
            job = job.id,
            ended,
            "found a spooled job from an earlier run"
        );
        agent.jobs.locked().insert(job.id, job.clone());
        if !ended {
            job::interrupted(agent, &job);
        }
    }
}

/// The first wait before reconnecting, and the longest.
/// N.B.: short on purpose: a refused connection costs the server nothing,
/// and an agent must be back within about a second of its server (the
/// benchmark's target: the first line sent again within 1 s at p99).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(600);

/// Connects, serves, and reconnects with backoff and jitter, forever.
async fn run(agent: Arc<Agent>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&agent).await {
            Ok(ws) => {
                tracing::info!(server = %agent.url, "connected");
                let (why, welcomed) = serve(&agent, ws).await;
                tracing::warn!(server = %agent.url, "disconnected: {why}");
                if welcomed {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(e) => tracing::warn!(server = %agent.url, "cannot connect: {e}"),
        }
        // N.B.: jitter, so a hundred agents cut off together do not all
        // come back in the same instant.
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let wait = backoff.mul_f64(jitter);
        tracing::info!("reconnecting in {} ms", wait.as_millis());
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A plain or TLS connection to the server.
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

type Ws = WebSocketStream<Box<dyn Conn>>;

async fn connect(agent: &Agent) -> Result<Ws, String> {
    connect_to(agent, &agent.url).await
}

/// A WebSocket to `url` on the server, carrying the agent's token.
async fn connect_to(agent: &Agent, url: &str) -> Result<Ws, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", agent.token)
            .parse()
            .map_err(|_| "the token has characters a header cannot carry".to_string())?,
    );
    let uri = req.uri().clone();
    let host = uri.host().ok_or("the server URL has no host")?.to_string();
    let tls = uri.scheme_str() == Some("wss");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| "timed out connecting".to_string())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Conn> = if tls {
        Box::new(tls_connect(&host, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .map_err(|_| "timed out in the WebSocket handshake".to_string())?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(res) => {
            let body = res
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            format!("refused with HTTP {}: {body}", res.status())
        }
        e => e.to_string(),
    })?;
    Ok(ws)
}

/// TLS with the web's roots (webpki-roots), rustls with ring: what the
/// server's own client (reqwest) uses too.
async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use tokio_rustls::rustls;
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}`: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

async fn send(ws: &mut Ws, msg: &AgentMsg) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// What this connection has sent of each job.
#[derive(Default)]
struct Sent {
    /// The last seq sent per job; a job not in here waits for the
    /// server's `ack` (it says where to start).
    upto: HashMap<i64, i64>,
    /// Jobs whose `job.finished` went out on this connection.
    finished: HashSet<i64>,
}

/// One connection, until it drops; why it ended, and whether the server
/// had welcomed it.
async fn serve(agent: &Arc<Agent>, ws: Ws) -> (String, bool) {
    let mut welcomed = false;
    let why = session(agent, ws, &mut welcomed).await;
    (why, welcomed)
}

async fn session(agent: &Arc<Agent>, mut ws: Ws, welcomed: &mut bool) -> String {
    let hello = AgentMsg::Hello {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: agent.hostname.clone(),
        jobs: agent.held(),
    };
    if let Err(e) = send(&mut ws, &hello).await {
        return e;
    }
    let heartbeat = match tokio::time::timeout(Duration::from_secs(10), next(&mut ws)).await {
        Ok(Some(ServerMsg::Welcome {
            agent: name,
            heartbeat_secs,
            ..
        })) => {
            if agent.name.as_ref().is_some_and(|n| *n != name) {
                let why = format!(
                    "the server knows this token as agent `{name}`, not `{}` (--name)",
                    agent.name.as_deref().unwrap_or_default()
                );
                tracing::error!("{why}");
                let _ = ws.close(None).await;
                return why;
            }
            tracing::info!(agent = %name, "welcomed");
            *welcomed = true;
            Duration::from_secs(heartbeat_secs.max(1))
        }
        Ok(Some(ServerMsg::Refused { reason })) => return format!("refused: {reason}"),
        Ok(_) => return "no welcome from the server".into(),
        Err(_) => return "the server did not answer the hello".into(),
    };
    let mut sent = Sent::default();
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    let mut heard = Instant::now();
    loop {
        if let Err(e) = pump(agent, &mut ws, &mut sent).await {
            return e;
        }
        tokio::select! {
            msg = next(&mut ws) => match msg {
                Some(ServerMsg::Refused { reason }) => return format!("refused: {reason}"),
                Some(msg) => {
                    heard = Instant::now();
                    handle(agent, &mut sent, msg);
                }
                None => return "the connection closed".into(),
            },
            _ = agent.changed.notified() => {}
            _ = tick.tick() => {
                if heard.elapsed() > heartbeat * 4 {
                    return format!("the server was silent for {} s", heard.elapsed().as_secs());
                }
                let beat = AgentMsg::Heartbeat { at: chrono::Utc::now() };
                if let Err(e) = send(&mut ws, &beat).await {
                    return e;
                }
            }
        }
    }
}

/// The next server message; `None` once the connection is gone.
async fn next(ws: &mut Ws) -> Option<ServerMsg> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                Ok(msg) => return Some(msg),
                Err(e) => {
                    tracing::warn!(error = %e, "ignored a message this agent does not understand")
                }
            },
            Ok(Message::Close(frame)) => {
                if let Some(f) = frame {
                    tracing::warn!(code = %f.code, reason = %f.reason, "the server closed the connection");
                }
                return None;
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Sends what is waiting: said messages, each job's unsent batches in
/// order, and the end of a job whose every line went out.
async fn pump(agent: &Agent, ws: &mut Ws, sent: &mut Sent) -> Result<(), String> {
    let said = std::mem::take(&mut *agent.said.locked());
    for msg in &said {
        send(ws, msg).await?;
    }
    let jobs: Vec<Arc<Job>> = agent.jobs.locked().values().cloned().collect();
    for job in jobs {
        let Some(&upto) = sent.upto.get(&job.id) else {
            continue;
        };
        let (batches, ended, last_seq) = {
            let mut spool = job.spool.locked();
            let batches = spool.batches_after(upto).map_err(|e| e.to_string())?;
            (batches, spool.meta.ended.clone(), spool.last_seq())
        };
        for (seq, json) in batches {
            // The batch goes as it was spooled, inside its envelope.
            let text = format!(
                "{{\"type\":\"log\",\"job_id\":{},\"dispatch\":{},\"batch\":{}}}",
                job.id,
                job.dispatch,
                json.trim_end()
            );
            ws.send(Message::Text(text.into()))
                .await
                .map_err(|e| e.to_string())?;
            sent.upto.insert(job.id, seq);
        }
        if let Some((ended, end_seq)) = ended {
            let all_sent = sent.upto.get(&job.id).copied().unwrap_or(0) >= end_seq.max(last_seq);
            if all_sent && sent.finished.insert(job.id) {
                let msg = AgentMsg::JobFinished {
                    job_id: job.id,
                    dispatch: job.dispatch,
                    ended,
                    last_seq: end_seq,
                };
                send(ws, &msg).await?;
            }
        }
    }
    Ok(())
}

/// Handles one server message.
fn handle(agent: &Arc<Agent>, sent: &mut Sent, msg: ServerMsg) {
    match msg {
        ServerMsg::Welcome { .. } | ServerMsg::Heartbeat { .. } | ServerMsg::Refused { .. } => {}
        ServerMsg::Run(cmd) => start(agent, sent, cmd),
        ServerMsg::Cancel {
            job_id,
            dispatch,
            by,
        } => match agent.job(job_id, dispatch) {
            Some(job) if job.is_running() => {
                tracing::info!(job = job_id, %by, "cancel");
                job.stop.stop(StopReason::Cancel { by });
            }
            _ => tracing::info!(job = job_id, "a cancel for a job that no longer runs here"),
        },
        ServerMsg::Ack {
            job_id,
            dispatch,
            seq,
            done,
        } => {
            let Some(job) = agent.job(job_id, dispatch) else {
                return;
            };
            if let Err(e) = job.spool.locked().ack(seq) {
                tracing::warn!(job = job_id, error = %e, "cannot trim the spool");
            }
            if done {
                tracing::info!(job = job_id, "the server has the whole job");
                agent.drop_job(job_id);
                sent.upto.remove(&job_id);
                sent.finished.remove(&job_id);
                return;
            }
            let upto = sent.upto.entry(job_id).or_insert(seq);
            if seq < *upto {
                // The server is missing lines it was sent: from `seq` again.
                *upto = seq;
                sent.finished.remove(&job_id);
            }
        }
        ServerMsg::Forget {
            job_id,
            dispatch,
            reason,
        } => {
            if let Some(job) = agent.job(job_id, dispatch) {
                tracing::warn!(job = job_id, %reason, "the server says to forget this job");
                if job.is_running() {
                    job.stop.stop(StopReason::Cancel {
                        by: "the server".into(),
                    });
                    let pgid = job.spool.locked().meta.process;
                    if let Some((pgid, start)) = pgid {
                        crate::proc::group::kill_orphaned_group(pgid, Some(start));
                    }
                }
                agent.drop_job(job_id);
                sent.upto.remove(&job_id);
                sent.finished.remove(&job_id);
            }
        }
        ServerMsg::TerminalOpen(open) => {
            tokio::spawn(terminal::open(agent.clone(), open));
        }
        ServerMsg::Probe(cmd) => {
            tokio::spawn(probe::run(agent.clone(), cmd));
        }
    }
}

/// Starts a job the server dispatched (once per dispatch).
fn start(agent: &Arc<Agent>, sent: &mut Sent, cmd: RunCommand) {
    if agent.job(cmd.job_id, cmd.dispatch).is_some() {
        return;
    }
    let meta = Meta {
        job_id: cmd.job_id,
        dispatch: cmd.dispatch,
        template: cmd.template.clone(),
        process: None,
        after_seq: cmd.after_seq,
        ended: None,
    };
    let spool = match Spool::create(&agent.spool_root, meta) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(job = cmd.job_id, error = %e, "cannot create the job's spool; not running it");
            return;
        }
    };
    let allowed = agent.allow.is_empty() || agent.allow.contains(&cmd.template);
    let job = Arc::new(Job::new(spool, allowed));
    agent.jobs.locked().insert(job.id, job.clone());
    sent.upto.insert(job.id, cmd.after_seq);
    if !allowed {
        let why = format!(
            "refused by the agent on {}: template `{}` is not among its --allow-template ({})",
            agent.hostname,
            cmd.template,
            agent.allow.join(", ")
        );
        tracing::warn!(job = job.id, "{why}");
        job::refuse(agent, &job, cmd.after_seq, why);
        return;
    }
    tracing::info!(job = job.id, template = %cmd.template, "running");
    tokio::spawn(job::run(agent.clone(), job, cmd));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_dials_the_websocket_of_the_servers_url() {
        assert_eq!(
            agent_url("https://ops.example.com/").unwrap(),
            "wss://ops.example.com/api/agent"
        );
        assert_eq!(
            agent_url("http://127.0.0.1:3000").unwrap(),
            "ws://127.0.0.1:3000/api/agent"
        );
        assert!(agent_url("ops.example.com").is_err());
    }
}
