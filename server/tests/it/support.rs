//! Test helpers: a real server per test, the real binary, and PostgreSQL.

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
}

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    config: String,
    database_url: Option<String>,
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
        config.server.addr = "127.0.0.1:0".parse().unwrap();
        config.auth.bootstrap_password = Some(ADMIN_PASSWORD.to_string());
        config.server.database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("opsdeck.db").display()));
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
}

impl BinServer {
    /// Writes `config` (which must set addr/database from `{addr}` and
    /// `{dir}`) and starts the binary; waits for /healthz.
    pub fn start(dir: &Path, extra_toml: &str) -> BinServer {
        BinServer::start_with(dir, extra_toml, Some(ADMIN_PASSWORD))
    }

    /// Like [`BinServer::start`]; `admin_password` goes to OPSDECK_ADMIN_PASSWORD.
    pub fn start_with(dir: &Path, extra_toml: &str, admin_password: Option<&str>) -> BinServer {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = format!(
            "[server]\naddr = \"{addr}\"\ndatabase_url = \"sqlite://{}/opsdeck.db\"\nshutdown_timeout = \"20s\"\n{extra_toml}",
            dir.display()
        );
        let path = dir.join("opsdeck.toml");
        std::fs::write(&path, config).unwrap();
        let stderr_path = dir.join("server.log");
        let mut cmd = Command::new(opsdeck_bin());
        match admin_password {
            Some(p) => cmd.env("OPSDECK_ADMIN_PASSWORD", p),
            None => cmd.env_remove("OPSDECK_ADMIN_PASSWORD"),
        };
        let child = cmd
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start opsdeck");
        let server = BinServer {
            child,
            addr,
            dir: dir.to_path_buf(),
            stderr_path,
        };
        server.wait_healthy();
        server
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
