//! Test helpers: a real server per test, the real binary, and PostgreSQL.
//!
//! Every server a test starts gets a database of its own on the engine
//! `OPSDECK_TEST_DB` names: `sqlite` (the default: a file in the test's temp
//! dir) or `postgres` (a fresh database on the machine's PostgreSQL, dropped
//! afterwards). `make test` runs the whole suite once with each.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use server::config::{Config, FileSource};
use server::startup::Server;
use server::state::AppState;
use tempfile::TempDir;

/// A server running in this process on an ephemeral port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub dir: TempDir,
    pub client: reqwest::Client,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Its PostgreSQL database, when it made one (dropped with it).
    _pg: Option<PgDatabase>,
}

/// Whether this run's servers use PostgreSQL (`OPSDECK_TEST_DB=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("OPSDECK_TEST_DB").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("OPSDECK_TEST_DB is `{other}`: use sqlite or postgres"),
    }
}

/// A database for one server of a test: a SQLite file in `dir`, or a
/// fresh PostgreSQL database (kept alive by the returned handle).
pub async fn fresh_database(dir: &Path) -> (String, Option<PgDatabase>) {
    if on_postgres() {
        let pg = PgDatabase::create().await;
        (pg.url(), Some(pg))
    } else {
        (
            format!("sqlite://{}", dir.join("opsdeck.db").display()),
            None,
        )
    }
}

/// Rows of `sql` (one column, as text) from the database at `url`, read
/// without the server (which may be dead).
pub async fn query_column(url: &str, sql: &str) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let out = rows
        .iter()
        .map(|r| {
            r.try_get_by_index::<String>(0)
                .or_else(|_| r.try_get_by_index::<i64>(0).map(|n| n.to_string()))
                .or_else(|_| r.try_get_by_index::<i32>(0).map(|n| n.to_string()))
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
        .collect();
    db.close().await.ok();
    out
}

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    config: String,
    database_url: Option<String>,
    addr: Option<SocketAddr>,
}

impl TestApp {
    /// A server with an empty config (defaults) and a fresh SQLite file.
    pub async fn start() -> TestApp {
        TestApp::builder().start().await
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            config: String::new(),
            database_url: None,
            addr: None,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        self.state.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

impl TestAppBuilder {
    /// Config file text (TOML); `[server]` addr and database are overridden.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_string();
        self
    }

    /// Listen here instead of 127.0.0.1:0.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    pub fn database_url(mut self, url: &str) -> Self {
        self.database_url = Some(url.to_string());
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::parse(
            &self.config,
            "test.toml",
            &FileSource::Dir(dir.path().into()),
        )
        .unwrap_or_else(|e| panic!("test config: {e}"));
        config.server.addr = self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        config.auth.bootstrap_password = Some(ADMIN_PASSWORD.to_string());
        let (url, pg) = match self.database_url {
            Some(url) => (url, None),
            None => fresh_database(dir.path()).await,
        };
        config.server.database_url = url;
        let server = Server::build(config)
            .await
            .unwrap_or_else(|e| panic!("server start: {e}"));
        let addr = server.local_addr();
        let state = server.state.clone();
        let task = Some(tokio::spawn(server.run()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestApp {
            addr,
            state,
            dir,
            client,
            task,
            _pg: pg,
        }
    }
}

/// The `opsdeck` binary cargo built for these tests.
pub fn opsdeck_bin() -> &'static str {
    env!("CARGO_BIN_EXE_opsdeck")
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary, serving with a config file in a temp dir.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub stderr_path: PathBuf,
    /// Its database (`OPSDECK_TEST_DB`): the same for every start in `dir`.
    pub database_url: String,
    command: Command,
}

/// The database URL of the servers started in `dir`: a SQLite file there,
/// or a PostgreSQL database named after the directory, created once.
pub fn bin_database(dir: &Path) -> String {
    if !on_postgres() {
        return format!("sqlite://{}/opsdeck.db", dir.display());
    }
    let marker = dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url;
    }
    let name = format!(
        "opsdeck_bin_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let status = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-q",
            "-c",
        ])
        .arg(format!("CREATE DATABASE {name}"))
        .status()
        .expect("psql");
    assert!(status.success(), "cannot create {name}");
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    std::fs::write(&marker, &url).unwrap();
    url
}

impl BinServer {
    /// Writes `config` (which must set addr/database from `{addr}` and
    /// `{dir}`) and starts the binary; waits for /healthz.
    pub fn start(dir: &Path, extra_toml: &str) -> BinServer {
        BinServer::start_with(dir, extra_toml, Some(ADMIN_PASSWORD))
    }

    /// Like [`BinServer::start`]; `admin_password` goes to OPSDECK_ADMIN_PASSWORD.
    pub fn start_with(dir: &Path, extra_toml: &str, admin_password: Option<&str>) -> BinServer {
        BinServer::start_env(dir, extra_toml, admin_password, &[])
    }

    /// Like [`BinServer::start_with`], with more variables in the server's
    /// own environment.
    pub fn start_env(
        dir: &Path,
        extra_toml: &str,
        admin_password: Option<&str>,
        env: &[(&str, &str)],
    ) -> BinServer {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let database_url = bin_database(dir);
        let config = format!(
            "[server]\naddr = \"{addr}\"\ndatabase_url = \"{database_url}\"\nshutdown_timeout = \"20s\"\n{extra_toml}"
        );
        let path = dir.join("opsdeck.toml");
        std::fs::write(&path, config).unwrap();
        let stderr_path = dir.join("server.log");
        let mut cmd = Command::new(opsdeck_bin());
        match admin_password {
            Some(p) => cmd.env("OPSDECK_ADMIN_PASSWORD", p),
            None => cmd.env_remove("OPSDECK_ADMIN_PASSWORD"),
        };
        cmd.envs(env.iter().copied());
        cmd.arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null());
        let child = cmd
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start opsdeck");
        let server = BinServer {
            child,
            addr,
            dir: dir.to_path_buf(),
            stderr_path,
            database_url,
            command: cmd,
        };
        server.wait_healthy();
        server
    }

    /// Starts the server again, same address, configuration and database
    /// (after it was killed, or to restart it); its log goes on.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.stderr_path)
            .unwrap();
        self.child = self.command.stderr(log).spawn().expect("restart opsdeck");
        self.wait_healthy();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let _ = write!(s, "GET /healthz HTTP/1.0\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("opsdeck did not become healthy; its log:\n{}", self.log());
    }

    /// Signs in as admin; the session cookie's value.
    pub fn admin_cookie(&self) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let res = reqwest::Client::new()
                .post(self.url("/api/auth/login"))
                .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "admin login");
            session_cookie(&res).unwrap()
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server the PostgreSQL tests use (`.ci/run` starts it).
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty PostgreSQL database, dropped on drop.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sea_orm::{ConnectionTrait, Database};
        let admin = Database::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is needed at {PG_ADMIN_URL} for this test ({e}); .ci/run starts it with pg_ctlcluster")
        });
        let name = format!(
            "opsdeck_it_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        PgDatabase { name }
    }

    pub fn url_via(&self, host_port: &str) -> String {
        format!("postgres://postgres@{host_port}/{}", self.name)
    }

    pub fn url(&self) -> String {
        self.url_via("127.0.0.1:5432")
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on a thread of its own (Drop cannot await).
        let _ = std::thread::spawn(move || {
            let _ = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "test",
                    "-q",
                    "-c",
                ])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        })
        .join();
    }
}

/// A TCP proxy to `upstream` that can be cut, to make a dependency unreachable.
pub struct CuttableProxy {
    pub addr: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
}

impl CuttableProxy {
    pub async fn start(upstream: &str) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = tokio_util::sync::CancellationToken::new();
        let upstream = upstream.to_string();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    acc = listener.accept() => match acc { Ok(a) => a, Err(_) => return },
                };
                let upstream = upstream.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

/// The first admin's password in every [`TestApp`].
pub const ADMIN_PASSWORD: &str = "admin-password-123";
/// The password the helpers give every other user.
pub const USER_PASSWORD: &str = "user-password-123";

/// An HTTP client acting as one caller: a session cookie, a bearer token, or
/// nothing; it sends our own `Origin` on unsafe requests, as a browser would.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
    pub bearer: Option<String>,
}

impl Client {
    pub fn anonymous(app: &TestApp) -> Client {
        Client {
            http: app.client.clone(),
            base: app.url(""),
            cookie: None,
            bearer: None,
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", format!("opsdeck_session={c}"));
        }
        if let Some(t) = &self.bearer {
            rb = rb.bearer_auth(t);
        }
        if method != reqwest::Method::GET && method != reqwest::Method::HEAD {
            rb = rb.header("origin", self.base.clone());
        }
        rb
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// Posts JSON and returns (status, body as JSON or Null).
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let res = self.post(path).json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let res = self.get(path).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Calls a server function the way the app's own client does.
    pub async fn call_fn(&self, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let res = self
            .post(path)
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// The value of the session cookie a response sets.
pub fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("opsdeck_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .filter(|v| !v.is_empty())
}

impl TestApp {
    /// Signs in through the API; a client carrying the session cookie.
    pub async fn login(&self, username: &str, password: &str) -> Client {
        let res = self
            .client
            .post(self.url("/api/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "login as {username}");
        let cookie = session_cookie(&res).expect("a session cookie");
        Client {
            cookie: Some(cookie),
            ..Client::anonymous(self)
        }
    }

    /// `opsdeck_limit_refusals_total{limit="…"}` from `/metrics`.
    pub async fn refusals(&self, limit: &str) -> u64 {
        let name = format!("opsdeck_limit_refusals_total{{limit=\"{limit}\"}}");
        self.metric(&name).await as u64
    }

    /// A counter or gauge from `/metrics` (the line of exactly `name`,
    /// labels included).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    pub async fn admin(&self) -> Client {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user (as admin) with [`USER_PASSWORD`].
    pub async fn create_user(&self, username: &str, role: &str) {
        let admin = self.admin_bearer().await;
        let (status, body) = admin
            .post_json(
                "/api/users",
                serde_json::json!({"username": username, "role": role, "password": USER_PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "create {username}: {body}");
    }

    /// A client using a fresh API token of `username` (created by the admin).
    pub async fn bearer_for(&self, username: &str) -> Client {
        let admin = self.admin().await;
        let (status, body) = admin
            .post_json(
                "/api/tokens",
                serde_json::json!({"label": "test", "username": username}),
            )
            .await;
        assert_eq!(status, 201, "token for {username}: {body}");
        Client {
            bearer: Some(body["token"].as_str().unwrap().to_string()),
            ..Client::anonymous(self)
        }
    }

    pub async fn admin_bearer(&self) -> Client {
        let admin = self.admin().await;
        let (status, body) = admin
            .post_json("/api/tokens", serde_json::json!({"label": "test"}))
            .await;
        assert_eq!(status, 201, "{body}");
        Client {
            bearer: Some(body["token"].as_str().unwrap().to_string()),
            ..Client::anonymous(self)
        }
    }
}

/// Targets and templates for engine tests. alice owns t1 and t2, bob t3.
pub const ENGINE_CONFIG: &str = r#"
[jobs]
poll_interval = "200ms"

[[targets]]
id = "t1"
kind = "local"
owners = ["alice"]
terminal = true
terminal_roles = ["admin", "operator"]

[[targets]]
id = "t2"
kind = "local"
owners = ["alice"]

[[targets]]
id = "t3"
kind = "local"
owners = ["bob"]

[[templates]]
id = "seq"
command = ["seq", "1", "{n}"]
params = [{ name = "n", type = "int", default = 10, min = 1, max = 10000000 }]
exclusive = "none"

[[templates]]
id = "interleave"
script = 'i=1; while [ $i -le "$1" ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done'
args = ["{n}"]
params = [{ name = "n", type = "int", default = 10 }]
exclusive = "none"

[[templates]]
id = "sleep"
command = ["sleep", "{s}"]
params = [{ name = "s", type = "string", default = "0.4", pattern = "[0-9.]+" }]

[[templates]]
id = "sleep-global"
command = ["sleep", "{s}"]
params = [{ name = "s", type = "string", default = "0.4", pattern = "[0-9.]+" }]
exclusive = "global"

[[templates]]
id = "exit"
script = 'echo "exiting with $1"; echo "something went wrong" >&2; exit "$1"'
args = ["{code}"]
params = [{ name = "code", type = "int", default = 0 }]
warning_exit_codes = [3]
exclusive = "none"

[[templates]]
id = "stubborn"
script = 'trap "" TERM; sleep 600 & sleep 600 & echo started; wait'
kill_grace = "1s"
exclusive = "none"

[[templates]]
id = "timeout"
command = ["sleep", "30"]
timeout = "1s"
kill_grace = "1s"
exclusive = "none"

[[templates]]
id = "leftover"
script = 'sleep 600 & echo "main exits"'
kill_grace = "1s"
exclusive = "none"

[[templates]]
id = "bytes"
script = 'printf "ok \377\376 end\n"; printf "nul \0 byte\n"; printf "10%%\r20%%\rdone\n"; printf "no newline at the end"'
exclusive = "none"

[[templates]]
id = "escapes"
script = 'printf "%s\ttab back\\\\slash\n" $(seq 1 150); printf "\\\\.\n"; sleep 0.2; printf "end\ttab %s\n" $(seq 1 100)'
exclusive = "none"

[[templates]]
id = "longline"
script = 'head -c 10000000 /dev/zero | tr "\0" x'
exclusive = "none"

[[templates]]
id = "progress"
script = 'echo "::progress 25 quarter"; sleep 1.3; echo "::progress 100 all done"'
progress = "marker"
exclusive = "none"

[[templates]]
id = "capped"
command = ["seq", "1", "{n}"]
params = [{ name = "n", type = "int", default = 100000 }]
max_log_bytes = "64KiB"
tail_lines = 100
exclusive = "none"

[[templates]]
id = "missing"
command = ["/nonexistent/program", "--flag"]
exclusive = "none"

[[templates]]
id = "types"
command = ["echo", "{name}", "{colour}", "{count}", "{loud}", "{dir}"]
params = [
  { name = "name", type = "string", pattern = "[a-z]+", required = true },
  { name = "colour", type = "enum", choices = ["red", "green"], required = true },
  { name = "count", type = "int", min = 1, max = 5, required = true },
  { name = "loud", type = "bool" },
  { name = "dir", type = "path", required = true },
]
exclusive = "none"
"#;

impl Client {
    /// Launches a job; (status, body).
    pub async fn launch(
        &self,
        template: &str,
        target: &str,
        params: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.post_json(
            "/api/jobs",
            serde_json::json!({"template": template, "target": target, "params": params}),
        )
        .await
    }

    /// Launches a job that must be accepted; its id.
    pub async fn launch_ok(&self, template: &str, target: &str, params: serde_json::Value) -> i64 {
        let (status, body) = self.launch(template, target, params).await;
        assert_eq!(status, 201, "launch {template} on {target}: {body}");
        body["id"].as_i64().unwrap()
    }

    pub async fn job(&self, id: i64) -> serde_json::Value {
        let (status, body) = self.get_json(&format!("/api/jobs/{id}")).await;
        assert_eq!(status, 200, "job {id}: {body}");
        body
    }

    /// Polls a job until `pred` holds (or panics after `secs`).
    pub async fn wait_job(
        &self,
        id: i64,
        secs: u64,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(id).await;
            if pred(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not get there in {secs} s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job has finished; the job.
    pub async fn wait_finished(&self, id: i64, secs: u64) -> serde_json::Value {
        self.wait_job(id, secs, |j| {
            matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await
    }

    /// Every stored line of a job, paging through `/log`.
    pub async fn all_lines(&self, id: i64) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = self
                .get_json(&format!("/api/jobs/{id}/log?after={after}&limit=10000"))
                .await;
            assert_eq!(status, 200, "{page}");
            let lines = page["lines"].as_array().unwrap().clone();
            if lines.is_empty() {
                return out;
            }
            after = lines.last().unwrap()["seq"].as_i64().unwrap();
            out.extend(lines);
        }
    }
}

/// The text of every line of one stream.
pub fn texts(lines: &[serde_json::Value], stream: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["stream"] == stream)
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

/// The engine test app: [`ENGINE_CONFIG`], with alice and bob, and clients.
pub struct EngineApp {
    pub app: TestApp,
    pub admin: Client,
    pub alice: Client,
    pub bob: Client,
}

impl EngineApp {
    pub async fn start() -> EngineApp {
        EngineApp::start_with("").await
    }

    pub async fn start_with(extra: &str) -> EngineApp {
        EngineApp::start_on(extra, None).await
    }

    /// [`EngineApp::start_with`], listening on `addr` (a test host's
    /// address) instead of 127.0.0.1.
    pub async fn start_on(extra: &str, addr: Option<SocketAddr>) -> EngineApp {
        let mut builder = TestApp::builder().config(&format!("{ENGINE_CONFIG}\n{extra}"));
        if let Some(addr) = addr {
            builder = builder.addr(addr);
        }
        let app = builder.start().await;
        app.create_user("alice", "operator").await;
        app.create_user("bob", "operator").await;
        let admin = app.admin_bearer().await;
        let alice = app.bearer_for("alice").await;
        let bob = app.bearer_for("bob").await;
        EngineApp {
            app,
            admin,
            alice,
            bob,
        }
    }
}

/// Whether any live process (not a zombie waiting for init) is in process
/// group `pgid`.
pub fn group_has_members(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            fields.first() != Some(&"Z")
                && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
        })
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// A minimal SSE client over a reqwest response body.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
    pub keepalives: usize,
}

impl Sse {
    /// Opens `path`; (status, the stream if 200).
    pub async fn open(
        client: &Client,
        path: &str,
        last_event_id: Option<i64>,
    ) -> (u16, Option<Sse>) {
        let mut rb = client.get(path).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id.to_string());
        }
        let res = rb.send().await.unwrap();
        let status = res.status().as_u16();
        if status != 200 {
            return (status, None);
        }
        (
            status,
            Some(Sse {
                body: Box::pin(res.bytes_stream()),
                buf: Vec::new(),
                keepalives: 0,
            }),
        )
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block[..end]).to_string();
                let mut ev = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in text.lines() {
                    if line.starts_with(':') {
                        self.keepalives += 1;
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "event" => ev.event = value.to_string(),
                        "id" => ev.id = Some(value.to_string()),
                        "data" => {
                            // Several data lines join with newlines (the spec).
                            if any {
                                ev.data.push('\n');
                            }
                            ev.data.push_str(value);
                            any = true;
                        }
                        _ => {}
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// Reads events until `end`; checks every log seq follows the previous
    /// one starting after `after`; returns (last seq, texts, end job).
    pub async fn follow_to_end(&mut self, after: i64) -> (i64, Vec<String>, serde_json::Value) {
        let mut last = after;
        let mut texts = Vec::new();
        while let Some(ev) = self.next().await {
            match ev.event.as_str() {
                "log" => {
                    let line = ev.json();
                    let seq = line["seq"].as_i64().unwrap();
                    assert_eq!(seq, last + 1, "lines must come once each, in order");
                    assert_eq!(ev.id.as_deref(), Some(seq.to_string().as_str()));
                    last = seq;
                    texts.push(line["text"].as_str().unwrap().to_string());
                }
                "end" => return (last, texts, ev.json()),
                _ => {}
            }
        }
        panic!("the stream closed without `end` (last seq {last})");
    }
}

/// The server process's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A real `opsdeck agent` process.
pub struct AgentProc {
    pub child: Child,
    pub log_path: PathBuf,
}

impl AgentProc {
    /// Starts `opsdeck agent --server URL` with `token` (in a file) and its
    /// spool in `spool`; `extra`: more arguments; `wrap`: a command prefix
    /// (`ip netns exec NS`).
    pub fn start(
        server: &str,
        token: &str,
        spool: &Path,
        extra: &[&str],
        wrap: &[&str],
    ) -> AgentProc {
        let token_file = spool.with_extension("token");
        std::fs::write(&token_file, token).unwrap();
        let log_path = spool.with_extension("log");
        let mut argv: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
        argv.push(opsdeck_bin().to_string());
        argv.extend(["agent", "--server", server, "--token-file"].map(String::from));
        argv.push(token_file.display().to_string());
        argv.push("--spool".into());
        argv.push(spool.display().to_string());
        argv.extend(extra.iter().map(|s| s.to_string()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("RUST_LOG", "info")
            .env_remove("OPSDECK_AGENT_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start opsdeck agent");
        AgentProc { child, log_path }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy that drops every open connection when asked, and keeps
/// accepting new ones: a flaky network between an agent and the server.
pub struct DroppingProxy {
    pub addr: SocketAddr,
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    blocked: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

impl DroppingProxy {
    pub async fn start(bind: &str, upstream: SocketAddr) -> DroppingProxy {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = std::sync::Arc::new(tx);
        let stop = tokio_util::sync::CancellationToken::new();
        let blocked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (gen, token, block) = (generation.clone(), stop.clone(), blocked.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    acc = listener.accept() => match acc { Ok(a) => a, Err(_) => return },
                };
                if block.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut dropped = gen.subscribe();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = dropped.changed() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        DroppingProxy {
            addr,
            generation,
            blocked,
            stop,
        }
    }

    /// Drops every connection open now.
    pub fn drop_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Cuts the network (drops every connection and refuses new ones), or
    /// mends it.
    pub fn block(&self, cut: bool) {
        self.blocked.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            self.drop_all();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DroppingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Enrols an agent through the API as `admin`; its token.
pub async fn enrol_agent(admin: &Client, name: &str) -> String {
    let (status, body) = admin
        .post_json("/api/agents", serde_json::json!({ "name": name }))
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// Waits until the server says `name` is online.
pub async fn wait_agent_online(admin: &Client, name: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, list) = admin.get_json("/api/agents").await;
        let online = list.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["name"] == name && x["status"] == "online")
        });
        if online {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "agent {name} did not come online: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
