//! The configuration: one TOML file (`--config` or `OPSDECK_CONFIG`), or the
//! built-in demo configuration (`examples/opsdeck.toml`, compiled in).
//!
//! Read once at start and validated completely: unknown keys, bad values and
//! broken cross-references (a placeholder naming no parameter, a template on an
//! unknown target) stop the server with an error that names the file, the line
//! and the key. Nothing else in the server reads configuration or environment.

pub mod notify;
mod retry;
pub mod schedule;
pub mod units;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use app::model::template::{check_path, Exclusive, ParamSpec, ParamType, ProgressKind, TargetKind};
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

pub use units::{parse_bytes, parse_duration, ByteSize, ConfigDuration};

/// The demo configuration compiled into the binary, and the files it refers to.
pub const DEMO_CONFIG: &str = include_str!("../../../examples/opsdeck.toml");
const DEMO_FILES: &[(&str, &str)] = &[
    (
        "scripts/demo-backup.sh",
        include_str!("../../../examples/scripts/demo-backup.sh"),
    ),
    (
        "scripts/flaky.sh",
        include_str!("../../../examples/scripts/flaky.sh"),
    ),
    (
        "scripts/install-runtime.sh",
        include_str!("../../../examples/scripts/install-runtime.sh"),
    ),
];
/// How the built-in configuration is named in messages.
pub const DEMO_NAME: &str = "<built-in demo configuration>";

/// `[server].max_body_bytes` unless set: far above any form or API call
/// opsdeck takes (a launch with 64 parameters of the longest value is
/// 256 KiB), and what nginx allows by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// `[terminal].max_frame_bytes` unless set: a paste of a long script still
/// fits; a larger one closes the socket (the shell stays).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 10;
/// `[terminal].max_frames_per_second` unless set: xterm.js sends a frame
/// per keystroke, paste or mouse report; no person types, and no mouse
/// reports, this fast for a whole second.
pub const DEFAULT_MAX_FRAMES_PER_SECOND: u32 = 200;

/// `[server].max_streams_per_user` unless set: a user's browser tabs (each
/// page holds the feed and, on a job page, the job's stream) and scripts.
pub const DEFAULT_MAX_STREAMS_PER_USER: usize = 100;
/// `[server].max_streams_per_address` unless set: a few users behind one
/// NAT or proxy address.
pub const DEFAULT_MAX_STREAMS_PER_ADDRESS: usize = 200;

/// Target and template ids: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
pub(crate) static ID_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9_.-]{0,62}$").expect("valid regex"));
/// Parameter names, usable in placeholders.
static PARAM_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z_][a-z0-9_]{0,31}$").expect("valid regex"));
/// Docker container names, as docker itself allows them.
/// Unix user and group names (`user`, `group` of a target).
static UNIX_NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$").expect("valid regex"));
static CONTAINER_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$").expect("valid regex"));
/// ssh destinations: `[user@]host`, no option-like or shell-special text.
static SSH_HOST_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([a-zA-Z0-9_][a-zA-Z0-9_.-]*@)?[a-zA-Z0-9][a-zA-Z0-9.-]*$").expect("valid regex")
});

/// Why the configuration could not be used. Displayed as-is to the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}; check the path given with --config or OPSDECK_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a path, or [`DEMO_NAME`].
    pub source: String,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub jobs: JobsConfig,
    pub retention: RetentionConfig,
    pub terminal: TerminalConfig,
    pub agents: AgentsConfig,
    pub cluster: ClusterConfig,
    pub targets: Vec<Target>,
    pub templates: Vec<Template>,
    /// `[[notify]]`: webhook hooks (config/notify.rs).
    pub notify: Vec<notify::Hook>,
    /// `[[schedules]]`: launches by the clock (config/schedule.rs).
    pub schedules: Vec<schedule::Schedule>,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// `sqlite://path` (created if missing) or `postgres://…`.
    pub database_url: String,
    /// Concurrent job runners in this process.
    pub workers: usize,
    /// The URL browsers use, when opsdeck sits behind a proxy: its origin is
    /// accepted for cross-site checks, and `https://` makes cookies Secure.
    pub public_url: Option<String>,
    /// A built front-end directory (cargo-leptos' site root) to serve
    /// instead of the one the executable carries (development).
    pub site_root: Option<PathBuf>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// that sets it).
    pub trust_forwarded_for: bool,
    /// How often an idle event stream sends a keepalive comment (a closed
    /// client is noticed within one interval).
    pub stream_keepalive: Duration,
    /// The largest request body accepted on any route (413 beyond).
    pub max_body_bytes: usize,
    /// Open event streams one user may hold on this server (429 beyond).
    pub max_streams_per_user: usize,
    /// Open event streams one client address may hold on this server.
    pub max_streams_per_address: usize,
}

/// `[auth]`
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// Failed logins per username or address within `login_window` before 429.
    pub login_max_failures: u32,
    pub login_window: Duration,
    /// The first admin's password (`OPSDECK_ADMIN_PASSWORD`; never from the file).
    pub bootstrap_password: Option<String>,
}

/// `[jobs]`: defaults for every template.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub max_line_bytes: usize,
    pub max_log_bytes: u64,
    pub tail_lines: usize,
    pub kill_grace: Duration,
    /// Fallback poll of the queue; an enqueue wakes the workers at once.
    pub poll_interval: Duration,
    /// The environment every job starts with (besides its template's `env`):
    /// these variables of the server's own environment, read once at start.
    /// Nothing else of the server's environment (which may hold secrets)
    /// reaches a job.
    pub base_env: Vec<(String, String)>,
}

/// `[cluster]`: this replica among the others on one database
/// (docs/cluster.md).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This replica's node id, recorded on the jobs it runs. Unless set,
    /// the host name and the port the server listens on (`vm-3000`): unique
    /// for two replicas on one host, and the same when a replica restarts,
    /// so its start-up recovery finds its own jobs. [`ClusterConfig::settle`]
    /// fills in the port actually bound.
    pub node: String,
    /// Whether `node` was written in the file (else it is the default).
    pub node_set: bool,
    /// A replica whose heartbeat is older than this is lost: another one
    /// fails its running jobs.
    pub node_timeout: Duration,
}

/// `[cluster].node_timeout` unless set.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(15);

impl ClusterConfig {
    /// How often this replica writes its heartbeat and looks for lost
    /// ones: five beats per timeout, so one late or failed beat (a slow
    /// disk, a busy database) never makes a live replica look lost.
    pub fn heartbeat_interval(&self) -> Duration {
        self.node_timeout / 5
    }

    /// The default node id once the listening port is known (the server
    /// calls this after binding, so port 0 and `--addr` give the real one).
    pub fn settle(&mut self, port: u16) {
        if !self.node_set {
            self.node = default_node_name(port);
        }
    }
}

/// The server's environment variables a job inherits.
const PASSED_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];

/// The variables of this process's own environment a job starts with
/// (`PASSED_ENV`): nothing else of it, which may hold secrets.
pub fn passed_env() -> Vec<(String, String)> {
    PASSED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// `[retention]`
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Delete finished jobs older than this many days; `None` keeps everything.
    pub days: Option<u32>,
    pub interval: Duration,
}

/// `[agents]`: remote agents' liveness.
#[derive(Debug, Clone)]
pub struct AgentsConfig {
    /// Silent this long, an agent shows as unreachable on its targets and
    /// jobs (its jobs keep running: they are only failed when it is lost).
    pub unreachable_after: Duration,
    /// Silent this long, an agent's running jobs are failed "agent lost".
    pub lost_after: Duration,
    /// How often agent and server send each other a heartbeat.
    pub heartbeat_interval: Duration,
    /// Connections one agent token may hold open at once.
    pub max_connections_per_token: usize,
}

/// `[terminal]`
#[derive(Debug, Clone)]
pub struct TerminalConfig {
    /// The shell a local target starts (`/bin/bash -l`).
    pub shell: Vec<String>,
    /// How long a dropped session waits for its user to come back.
    pub grace: Duration,
    /// A session with no input for this long is closed.
    pub idle_timeout: Duration,
    pub max_sessions_per_user: usize,
    /// Record sessions as asciicast v2 files under `recordings_dir`.
    pub record: bool,
    pub recordings_dir: PathBuf,
    /// The largest message a browser may send on a terminal socket (closed
    /// with 1009 beyond).
    pub max_frame_bytes: usize,
    /// Messages per second a terminal socket may send, on average; a burst
    /// of one second's worth is allowed (closed with 1008 beyond).
    pub max_frames_per_second: u32,
}

/// Who may do something on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Admin,
    Operator,
}

/// How a target is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAccess {
    Local,
    Docker {
        container: String,
    },
    Ssh {
        host: String,
        port: Option<u16>,
    },
    /// On the host of the agent enrolled under this name.
    Agent {
        agent: String,
    },
}

/// `[[targets]]`
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub access: TargetAccess,
    /// Operators who may launch on it and see its jobs.
    pub owners: Vec<String>,
    /// Whether a terminal may be opened on it, and by which roles.
    pub terminal: bool,
    pub terminal_roles: Vec<RoleName>,
    /// The shell for its terminal, instead of `[terminal].shell`.
    pub shell: Option<Vec<String>>,
    /// The Unix user (and group) its jobs and terminals run as (`local`
    /// targets, `user = "NAME"`); else the server's own user.
    pub run_as: Option<crate::proc::RunAs>,
    /// Its status probe (`status = [...]`), which tells its actual state
    /// (`status::probe`).
    pub status: Option<StatusProbe>,
}

/// A target's status probe: an argv run on the target, as its jobs are
/// reached, whose exit code says whether it is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusProbe {
    /// Run as written: no placeholders (a probe has no parameters).
    pub argv: Vec<String>,
    /// How often it runs besides after every job (`status_interval`).
    pub interval: Duration,
    /// How long it may run before its process group is killed and the
    /// state is `unknown` (`status_timeout`).
    pub timeout: Duration,
    /// Variables it gets besides the base ones (`status_env`): a probe
    /// runs no template, so no template's `env` applies.
    pub env: BTreeMap<String, String>,
}

/// `status_interval` unless set.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// `status_timeout` unless set.
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    /// Whether its console is a shell as the server's own user: a `local`
    /// target with a terminal and no `user` (the server warns at start).
    pub fn console_as_server(&self) -> bool {
        self.terminal && matches!(self.access, TargetAccess::Local) && self.run_as.is_none()
    }

    pub fn kind(&self) -> TargetKind {
        match self.access {
            TargetAccess::Local => TargetKind::Local,
            TargetAccess::Docker { .. } => TargetKind::Docker,
            TargetAccess::Ssh { .. } => TargetKind::Ssh,
            TargetAccess::Agent { .. } => TargetKind::Agent,
        }
    }

    /// The agent this target is reached through, if any.
    pub fn agent(&self) -> Option<&str> {
        match &self.access {
            TargetAccess::Agent { agent } => Some(agent),
            _ => None,
        }
    }
}

/// `[[templates]]`
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    /// The argv, with `{param}` placeholders; element 0 is always literal.
    pub command: Vec<String>,
    /// The argv as logs and the API show it: for a script, its name
    /// (`<scripts/demo-backup.sh>`) instead of its whole text.
    pub shown: Vec<String>,
    pub params: Vec<ParamSpec>,
    /// Compiled `pattern`s of string parameters, by parameter name.
    pub patterns: BTreeMap<String, Regex>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// Targets it may run on; `None` means all.
    pub targets: Option<Vec<String>>,
    pub exclusive: Exclusive,
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub warning_exit_codes: Vec<i32>,
    pub progress: ProgressKind,
    pub max_line_bytes: usize,
    pub max_log_bytes: u64,
    pub tail_lines: usize,
    /// Failed runs are tried again (docs/automation.md).
    pub retry: Option<app::model::retry::RetryPolicy>,
}

impl Template {
    /// Whether the template may run on the target.
    pub fn allows_target(&self, target: &str) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == target))
    }

    /// Whether a string value matches the parameter's pattern (full match).
    pub fn pattern_matches(&self, param: &str, value: &str) -> bool {
        self.patterns.get(param).is_none_or(|re| re.is_match(value))
    }
}

impl Config {
    /// The built-in demo configuration.
    pub fn demo() -> Result<Config, ConfigError> {
        Config::parse(DEMO_CONFIG, DEMO_NAME, &FileSource::Embedded)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &path.display().to_string(), &FileSource::Dir(dir))
    }

    /// Reads `path` if given, else the demo configuration.
    pub fn load_or_demo(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Config::demo(),
        }
    }

    /// Parses and validates config text; `file` names it in errors, `files`
    /// resolves `script_file`s.
    pub fn parse(text: &str, file: &str, files: &FileSource) -> Result<Config, ConfigError> {
        let ctx = Ctx { text, file };
        let raw: RawConfig = {
            let de = toml::de::Deserializer::parse(text).map_err(|e| ctx.toml_error("", e))?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                // Spanned<T> shows up in the path as a private field, inside
                // the path or at its end: hide it.
                let key = e
                    .path()
                    .to_string()
                    .replace("$__serde_spanned_private_value.", "")
                    .replace(".$__serde_spanned_private_value", "");
                ctx.toml_error(&key, e.into_inner())
            })?
        };
        raw.validate(&ctx, files)
    }

    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.id == id)
    }

    pub fn template(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }
}

/// Where `script_file` paths are read from.
pub enum FileSource {
    /// Relative to this directory (the config file's).
    Dir(PathBuf),
    /// From the files compiled in with the demo configuration.
    Embedded,
}

impl FileSource {
    fn read(&self, rel: &str) -> Result<String, String> {
        match self {
            FileSource::Dir(dir) => {
                let path = dir.join(rel);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            }
            FileSource::Embedded => DEMO_FILES
                .iter()
                .find(|(name, _)| *name == rel)
                .map(|(_, text)| text.to_string())
                .ok_or_else(|| format!("no built-in file {rel}")),
        }
    }
}

/// The text being validated, for turning spans into lines.
struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            key: if key.is_empty() {
                "(document)".into()
            } else {
                key.to_string()
            },
            message: message.into(),
        }
    }

    fn toml_error(&self, key: &str, e: toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        self.error(e.span().unwrap_or(0..0), key, message)
    }
}

// ---- the file as written ------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    jobs: RawJobs,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    terminal: RawTerminal,
    #[serde(default)]
    agents: RawAgents,
    #[serde(default)]
    cluster: RawCluster,
    #[serde(default)]
    targets: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    templates: Vec<Spanned<RawTemplate>>,
    #[serde(default)]
    notify: Vec<Spanned<notify::RawNotify>>,
    #[serde(default)]
    schedules: Vec<Spanned<schedule::RawSchedule>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    addr: Option<Spanned<String>>,
    database_url: Option<String>,
    workers: Option<Spanned<usize>>,
    public_url: Option<Spanned<String>>,
    site_root: Option<PathBuf>,
    /// Moved to `[cluster].node`: named in the error.
    node: Option<Spanned<toml::Value>>,
    shutdown_timeout: Option<ConfigDuration>,
    trust_forwarded_for: Option<bool>,
    stream_keepalive: Option<ConfigDuration>,
    max_body_bytes: Option<Spanned<ByteSize>>,
    max_streams_per_user: Option<Spanned<usize>>,
    max_streams_per_address: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    session_idle: Option<ConfigDuration>,
    login_max_failures: Option<u32>,
    login_window: Option<ConfigDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    max_line_bytes: Option<Spanned<ByteSize>>,
    max_log_bytes: Option<Spanned<ByteSize>>,
    tail_lines: Option<usize>,
    kill_grace: Option<ConfigDuration>,
    poll_interval: Option<ConfigDuration>,
    /// Replaced by `[cluster].node_timeout`: named in the error.
    heartbeat_interval: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node: Option<Spanned<String>>,
    node_timeout: Option<Spanned<ConfigDuration>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    days: Option<Spanned<u32>>,
    interval: Option<ConfigDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    unreachable_after: Option<ConfigDuration>,
    lost_after: Option<Spanned<ConfigDuration>>,
    heartbeat_interval: Option<ConfigDuration>,
    max_connections_per_token: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTerminal {
    shell: Option<Spanned<Vec<String>>>,
    grace: Option<ConfigDuration>,
    idle_timeout: Option<ConfigDuration>,
    max_sessions_per_user: Option<usize>,
    record: Option<bool>,
    recordings_dir: Option<PathBuf>,
    max_frame_bytes: Option<Spanned<ByteSize>>,
    max_frames_per_second: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    id: Spanned<String>,
    title: Option<String>,
    description: Option<String>,
    kind: Spanned<TargetKind>,
    #[serde(default)]
    owners: Vec<String>,
    #[serde(default)]
    terminal: bool,
    terminal_roles: Option<Vec<RoleName>>,
    shell: Option<Spanned<Vec<String>>>,
    container: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<u16>,
    agent: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    status: Option<Spanned<Vec<String>>>,
    status_interval: Option<Spanned<ConfigDuration>>,
    status_timeout: Option<Spanned<ConfigDuration>>,
    status_env: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    id: Spanned<String>,
    title: Option<String>,
    description: Option<String>,
    command: Option<Spanned<Vec<String>>>,
    script: Option<Spanned<String>>,
    script_file: Option<Spanned<String>>,
    interpreter: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    params: Vec<Spanned<ParamSpec>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<Spanned<String>>,
    targets: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    exclusive: Exclusive,
    timeout: Option<ConfigDuration>,
    kill_grace: Option<ConfigDuration>,
    #[serde(default)]
    warning_exit_codes: Vec<i32>,
    #[serde(default)]
    progress: ProgressKind,
    max_line_bytes: Option<ByteSize>,
    max_log_bytes: Option<ByteSize>,
    tail_lines: Option<usize>,
    retry: Option<Spanned<retry::RawRetry>>,
}

impl RawConfig {
    fn validate(self, ctx: &Ctx, files: &FileSource) -> Result<Config, ConfigError> {
        let s = self.server;
        let addr = match s.addr {
            Some(a) => a.get_ref().parse::<SocketAddr>().map_err(|_| {
                ctx.error(
                    a.span(),
                    "server.addr",
                    format!(
                        "`{}` is not an address: write e.g. \"127.0.0.1:3000\"",
                        a.get_ref()
                    ),
                )
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        };
        let workers = match s.workers {
            Some(w) if !(1..=256).contains(w.get_ref()) => {
                return Err(ctx.error(w.span(), "server.workers", "must be between 1 and 256"))
            }
            Some(w) => w.into_inner(),
            None => 4,
        };
        if let Some(url) = &s.public_url {
            let u = url.get_ref();
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ctx.error(
                    url.span(),
                    "server.public_url",
                    "must start with http:// or https://",
                ));
            }
        }
        if let Some(n) = &s.node {
            return Err(ctx.error(
                n.span(),
                "server.node",
                "moved to [cluster].node: write it there (see docs/cluster.md)",
            ));
        }
        let server = ServerConfig {
            addr,
            database_url: s
                .database_url
                .unwrap_or_else(|| "sqlite://data/opsdeck.db".to_string()),
            workers,
            public_url: s
                .public_url
                .map(|u| u.into_inner().trim_end_matches('/').to_string()),
            site_root: s.site_root,
            shutdown_timeout: dur(s.shutdown_timeout, 30),
            trust_forwarded_for: s.trust_forwarded_for.unwrap_or(false),
            stream_keepalive: s.stream_keepalive.map_or(Duration::from_secs(15), |d| {
                d.0.max(Duration::from_millis(100))
            }),
            max_body_bytes: size_within(
                ctx,
                s.max_body_bytes,
                "server.max_body_bytes",
                1 << 10..=64 << 20,
            )?
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            max_streams_per_user: count_within(
                ctx,
                s.max_streams_per_user,
                "server.max_streams_per_user",
                1..=1_000_000,
            )?
            .unwrap_or(DEFAULT_MAX_STREAMS_PER_USER),
            max_streams_per_address: count_within(
                ctx,
                s.max_streams_per_address,
                "server.max_streams_per_address",
                1..=1_000_000,
            )?
            .unwrap_or(DEFAULT_MAX_STREAMS_PER_ADDRESS),
        };

        let a = self.auth;
        let auth = AuthConfig {
            session_idle: dur(a.session_idle, 7 * 86_400),
            login_max_failures: a.login_max_failures.unwrap_or(10),
            login_window: dur(a.login_window, 15 * 60),
            bootstrap_password: None,
        };

        let j = self.jobs;
        if let Some(h) = &j.heartbeat_interval {
            return Err(ctx.error(
                h.span(),
                "jobs.heartbeat_interval",
                "replaced by [cluster].node_timeout (heartbeats go every fifth of it): \
                 write e.g. node_timeout = \"15s\" under [cluster]",
            ));
        }
        let jobs = JobsConfig {
            max_line_bytes: line_bytes(ctx, j.max_line_bytes, "jobs.max_line_bytes")?
                .unwrap_or(64 << 10),
            max_log_bytes: log_bytes(ctx, j.max_log_bytes, "jobs.max_log_bytes")?
                .unwrap_or(64 << 20),
            tail_lines: j.tail_lines.unwrap_or(10_000),
            kill_grace: dur(j.kill_grace, 10),
            poll_interval: j.poll_interval.map_or(Duration::from_secs(2), |d| d.0),
            base_env: passed_env(),
        };

        let retention = RetentionConfig {
            days: match self.retention.days {
                Some(d) if *d.get_ref() == 0 => {
                    return Err(ctx.error(
                        d.span(),
                        "retention.days",
                        "must be at least 1 (leave it out to keep everything)",
                    ))
                }
                d => d.map(Spanned::into_inner),
            },
            interval: dur(self.retention.interval, 3_600),
        };

        let t = self.terminal;
        let shell = match t.shell {
            Some(sh) => {
                check_argv(ctx, &sh, "terminal.shell")?;
                sh.into_inner()
            }
            None => vec!["/bin/bash".into(), "-l".into()],
        };
        let terminal = TerminalConfig {
            shell,
            grace: dur(t.grace, 60),
            idle_timeout: dur(t.idle_timeout, 30 * 60),
            max_sessions_per_user: t.max_sessions_per_user.unwrap_or(4).max(1),
            record: t.record.unwrap_or(false),
            recordings_dir: t
                .recordings_dir
                .unwrap_or_else(|| PathBuf::from("data/recordings")),
            max_frame_bytes: size_within(
                ctx,
                t.max_frame_bytes,
                "terminal.max_frame_bytes",
                1 << 10..=16 << 20,
            )?
            .unwrap_or(DEFAULT_MAX_FRAME_BYTES),
            max_frames_per_second: match t.max_frames_per_second {
                Some(r) if !(1..=100_000).contains(r.get_ref()) => {
                    return Err(ctx.error(
                        r.span(),
                        "terminal.max_frames_per_second",
                        "must be between 1 and 100000",
                    ))
                }
                Some(r) => r.into_inner(),
                None => DEFAULT_MAX_FRAMES_PER_SECOND,
            },
        };

        let a = self.agents;
        let unreachable_after = dur(a.unreachable_after, 30);
        let lost_after = match a.lost_after {
            Some(l) if l.get_ref().0 <= unreachable_after => {
                return Err(ctx.error(
                    l.span(),
                    "agents.lost_after",
                    format!(
                        "must be longer than agents.unreachable_after ({}s)",
                        unreachable_after.as_secs()
                    ),
                ))
            }
            Some(l) => l.into_inner().0,
            None => Duration::from_secs(600).max(unreachable_after * 2),
        };
        let agents = AgentsConfig {
            unreachable_after,
            lost_after,
            heartbeat_interval: dur(a.heartbeat_interval, 5).max(Duration::from_millis(100)),
            max_connections_per_token: a.max_connections_per_token.unwrap_or(2).max(1),
        };

        let c = self.cluster;
        let (node, node_set) = match c.node {
            Some(n) if !ID_RE.is_match(n.get_ref()) => {
                return Err(ctx.error(
                    n.span(),
                    "cluster.node",
                    format!(
                        "`{}` is not a node id: it must match ^[a-z0-9][a-z0-9_.-]{{0,62}}$",
                        n.get_ref()
                    ),
                ))
            }
            Some(n) => (n.into_inner(), true),
            None => (default_node_name(addr.port()), false),
        };
        let node_timeout = match c.node_timeout {
            Some(t)
                if !(Duration::from_secs(1)..=Duration::from_secs(3600))
                    .contains(&t.get_ref().0) =>
            {
                return Err(ctx.error(
                    t.span(),
                    "cluster.node_timeout",
                    "must be between 1s and 1h",
                ))
            }
            Some(t) => t.into_inner().0,
            None => DEFAULT_NODE_TIMEOUT,
        };
        let cluster = ClusterConfig {
            node,
            node_set,
            node_timeout,
        };

        let mut targets = Vec::new();
        let mut seen = HashSet::new();
        for (i, raw) in self.targets.into_iter().enumerate() {
            let span = raw.span();
            let target = raw.into_inner().validate(ctx, i, span.clone())?;
            if !seen.insert(target.id.clone()) {
                return Err(ctx.error(
                    span,
                    &format!("targets[{i}].id"),
                    format!("target `{}` is defined twice", target.id),
                ));
            }
            targets.push(target);
        }

        let mut templates = Vec::new();
        let mut seen = HashSet::new();
        for (i, raw) in self.templates.into_iter().enumerate() {
            let span = raw.span();
            let template = raw.into_inner().validate(ctx, i, &jobs, &targets, files)?;
            if !seen.insert(template.id.clone()) {
                return Err(ctx.error(
                    span,
                    &format!("templates[{i}].id"),
                    format!("template `{}` is defined twice", template.id),
                ));
            }
            templates.push(template);
        }
        let notify = notify::validate(ctx, self.notify, &targets, &templates, files)?;
        let schedules = schedule::validate(ctx, self.schedules, &targets, &templates)?;

        Ok(Config {
            source: ctx.file.to_string(),
            server,
            auth,
            jobs,
            retention,
            terminal,
            agents,
            cluster,
            targets,
            templates,
            notify,
            schedules,
        })
    }
}

fn dur(d: Option<ConfigDuration>, default_secs: u64) -> Duration {
    d.map_or(Duration::from_secs(default_secs), |d| d.0)
}

/// A byte size that must lie in `range`, named in the error as the config
/// file writes sizes.
fn size_within(
    ctx: &Ctx,
    v: Option<Spanned<ByteSize>>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<usize>, ConfigError> {
    match v {
        Some(b) if !range.contains(&b.get_ref().0) => Err(ctx.error(
            b.span(),
            key,
            format!(
                "must be between {} and {}",
                human_size(*range.start()),
                human_size(*range.end())
            ),
        )),
        Some(b) => Ok(Some(b.get_ref().0 as usize)),
        None => Ok(None),
    }
}

/// A count that must lie in `range`.
fn count_within(
    ctx: &Ctx,
    v: Option<Spanned<usize>>,
    key: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<Option<usize>, ConfigError> {
    match v {
        Some(n) if !range.contains(n.get_ref()) => Err(ctx.error(
            n.span(),
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        )),
        Some(n) => Ok(Some(n.into_inner())),
        None => Ok(None),
    }
}

/// `1KiB`, `64MiB`, or bytes.
fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

fn line_bytes(
    ctx: &Ctx,
    v: Option<Spanned<ByteSize>>,
    key: &str,
) -> Result<Option<usize>, ConfigError> {
    match v {
        Some(b) if !(256..=(16 << 20)).contains(&b.get_ref().0) => {
            Err(ctx.error(b.span(), key, "must be between 256 bytes and 16MiB"))
        }
        Some(b) => Ok(Some(b.get_ref().0 as usize)),
        None => Ok(None),
    }
}

fn log_bytes(
    ctx: &Ctx,
    v: Option<Spanned<ByteSize>>,
    key: &str,
) -> Result<Option<u64>, ConfigError> {
    match v {
        Some(b) if b.get_ref().0 < 4096 => Err(ctx.error(b.span(), key, "must be at least 4KiB")),
        Some(b) => Ok(Some(b.get_ref().0)),
        None => Ok(None),
    }
}

/// An argv from the config: not empty, element 0 a literal program.
fn check_argv(ctx: &Ctx, argv: &Spanned<Vec<String>>, key: &str) -> Result<(), ConfigError> {
    match argv.get_ref().first() {
        None => Err(ctx.error(argv.span(), key, "must name a program")),
        Some(p) if p.is_empty() => {
            Err(ctx.error(argv.span(), key, "the program must not be empty"))
        }
        Some(p) if p.contains('{') => Err(ctx.error(
            argv.span(),
            key,
            "the program (first element) must be literal: a parameter must never choose what runs",
        )),
        Some(_) => Ok(()),
    }
}

/// The names of the `{placeholders}` in an argv element. `{{` and `}}` are
/// literal braces.
pub fn placeholders(element: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut chars = element.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("`{element}` has an unclosed `{{`")),
                    }
                }
                names.push(name);
            }
            '}' => {
                return Err(format!(
                    "`{element}` has a lone `}}`: write `}}}}` for a brace"
                ))
            }
            _ => {}
        }
    }
    Ok(names)
}

impl RawTarget {
    fn validate(self, ctx: &Ctx, i: usize, span: Range<usize>) -> Result<Target, ConfigError> {
        let key = |k: &str| format!("targets[{i}].{k}");
        let id = self.id.get_ref().clone();
        if !ID_RE.is_match(&id) {
            return Err(ctx.error(
                self.id.span(),
                &key("id"),
                format!("`{id}` is not a valid id: use ^[a-z0-9][a-z0-9_.-]{{0,62}}$"),
            ));
        }
        let agent_key = self.agent.clone();
        let access = match self.kind.get_ref() {
            TargetKind::Local => TargetAccess::Local,
            TargetKind::Docker => {
                let c = self.container.ok_or_else(|| {
                    ctx.error(
                        span.clone(),
                        &key("container"),
                        "a docker target needs `container`",
                    )
                })?;
                if !CONTAINER_RE.is_match(c.get_ref()) {
                    return Err(ctx.error(
                        c.span(),
                        &key("container"),
                        "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                    ));
                }
                TargetAccess::Docker {
                    container: c.into_inner(),
                }
            }
            TargetKind::Ssh => {
                let h = self.host.ok_or_else(|| {
                    ctx.error(span.clone(), &key("host"), "an ssh target needs `host`")
                })?;
                if !SSH_HOST_RE.is_match(h.get_ref()) {
                    return Err(ctx.error(
                        h.span(),
                        &key("host"),
                        "must be a host name or user@host",
                    ));
                }
                TargetAccess::Ssh {
                    host: h.into_inner(),
                    port: self.port,
                }
            }
            TargetKind::Agent => {
                let a = self.agent.clone().ok_or_else(|| {
                    ctx.error(
                        span.clone(),
                        &key("agent"),
                        "an agent target needs `agent`: the name it was enrolled under (`opsdeck agent add NAME`)",
                    )
                })?;
                if !ID_RE.is_match(a.get_ref()) {
                    return Err(ctx.error(
                        a.span(),
                        &key("agent"),
                        "an agent name must match ^[a-z0-9][a-z0-9_.-]{0,62}$",
                    ));
                }
                TargetAccess::Agent {
                    agent: a.into_inner(),
                }
            }
        };
        if let (Some(a), false) = (&agent_key, matches!(access, TargetAccess::Agent { .. })) {
            return Err(ctx.error(
                a.span(),
                &key("agent"),
                "`agent` is only for targets of kind \"agent\"",
            ));
        }
        if let Some(sh) = &self.shell {
            check_argv(ctx, sh, &key("shell"))?;
        }
        let status = status_probe(
            ctx,
            StatusKeys {
                argv: self.status,
                interval: self.status_interval,
                timeout: self.status_timeout,
                env: self.status_env,
            },
            &key,
        )?;
        let run_as = run_as(ctx, self.user, self.group, &access, &key, span)?;
        Ok(Target {
            title: self.title.unwrap_or_else(|| id.clone()),
            id,
            description: self.description,
            access,
            owners: self.owners,
            terminal: self.terminal,
            terminal_roles: self.terminal_roles.unwrap_or_else(|| vec![RoleName::Admin]),
            shell: self.shell.map(Spanned::into_inner),
            run_as,
            status,
        })
    }
}

/// A target's `status*` keys as written.
struct StatusKeys {
    argv: Option<Spanned<Vec<String>>>,
    interval: Option<Spanned<ConfigDuration>>,
    timeout: Option<Spanned<ConfigDuration>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
}

/// A target's status probe: a literal argv (no placeholders: a probe has
/// no parameters, and nothing a user types reaches it; `{{`/`}}` for
/// braces, as in a `command`), an interval of 1s
/// to 1d, a timeout of 1s to 1h (on an agent target, its agent runs it);
/// the other keys only with `status`.
fn status_probe(
    ctx: &Ctx,
    keys: StatusKeys,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<StatusProbe>, ConfigError> {
    let Some(argv) = keys.argv else {
        let stray = [
            ("status_interval", keys.interval.as_ref().map(Spanned::span)),
            ("status_timeout", keys.timeout.as_ref().map(Spanned::span)),
            ("status_env", keys.env.as_ref().map(Spanned::span)),
        ];
        if let Some((k, Some(span))) = stray.into_iter().find(|(_, s)| s.is_some()) {
            return Err(ctx.error(
                span,
                &key(k),
                format!("`{k}` goes with `status`: give the probe's argv, e.g. status = [\"systemctl\", \"is-active\", \"nginx\"]"),
            ));
        }
        return Ok(None);
    };
    check_argv(ctx, &argv, &key("status"))?;
    for element in argv.get_ref() {
        match placeholders(element) {
            Ok(names) if names.is_empty() => {}
            Ok(names) => {
                return Err(ctx.error(
                    argv.span(),
                    &key("status"),
                    format!(
                        "a status probe has no parameters: `{{{}}}` cannot be filled; write the argv literally",
                        names[0]
                    ),
                ))
            }
            Err(m) => return Err(ctx.error(argv.span(), &key("status"), m)),
        }
    }
    let within = |d: Option<Spanned<ConfigDuration>>,
                  k: &str,
                  range: std::ops::RangeInclusive<Duration>,
                  words: &str,
                  default: Duration| match d {
        Some(d) if !range.contains(&d.get_ref().0) => {
            Err(ctx.error(d.span(), &key(k), format!("must be between {words}")))
        }
        Some(d) => Ok(d.into_inner().0),
        None => Ok(default),
    };
    let interval = within(
        keys.interval,
        "status_interval",
        Duration::from_secs(1)..=Duration::from_secs(86_400),
        "1s and 1d",
        DEFAULT_STATUS_INTERVAL,
    )?;
    let timeout = within(
        keys.timeout,
        "status_timeout",
        Duration::from_secs(1)..=Duration::from_secs(3_600),
        "1s and 1h",
        DEFAULT_STATUS_TIMEOUT,
    )?;
    Ok(Some(StatusProbe {
        // `{{` and `}}` are literal braces, as in a template's `command`
        // (no single brace is left: checked above).
        argv: argv
            .into_inner()
            .into_iter()
            .map(|e| e.replace("{{", "{").replace("}}", "}"))
            .collect(),
        interval,
        timeout,
        env: keys.env.map(Spanned::into_inner).unwrap_or_default(),
    }))
}

/// A target's `user` and `group`: Unix names, on a `local` target, that
/// exist here, and a server that runs as root (only root may start
/// processes as another user).
fn run_as(
    ctx: &Ctx,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    access: &TargetAccess,
    key: &dyn Fn(&str) -> String,
    span: Range<usize>,
) -> Result<Option<crate::proc::RunAs>, ConfigError> {
    use nix::unistd::{Group, User};
    let Some(user) = user else {
        if let Some(g) = group {
            return Err(ctx.error(
                g.span(),
                &key("group"),
                "`group` goes with `user`: name the user the target's work runs as",
            ));
        }
        return Ok(None);
    };
    if !matches!(access, TargetAccess::Local) {
        return Err(ctx.error(
            user.span(),
            &key("user"),
            "`user` is for local targets (an ssh target names its user in `host = \"user@host\"`; an agent's work runs as the agent's user)",
        ));
    }
    for (name, k) in std::iter::once((&user, "user")).chain(group.iter().map(|g| (g, "group"))) {
        if !UNIX_NAME_RE.is_match(name.get_ref()) {
            return Err(ctx.error(
                name.span(),
                &key(k),
                "must be a Unix name: ^[A-Za-z_][A-Za-z0-9_.-]{0,31}$",
            ));
        }
    }
    if !crate::proc::user::can_switch_users() {
        return Err(ctx.error(
            user.span(),
            &key("user"),
            format!(
                "opsdeck runs as uid {} and cannot start processes as another user: only a server running as root can; run it as root, or remove `user` (work then runs as the server's own user)",
                nix::unistd::Uid::effective()
            ),
        ));
    }
    match User::from_name(user.get_ref()) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(ctx.error(
                user.span(),
                &key("user"),
                format!(
                    "there is no user `{}` on this host: create it (`useradd --system {}`) or fix the name",
                    user.get_ref(),
                    user.get_ref()
                ),
            ))
        }
        Err(e) => return Err(ctx.error(span, &key("user"), format!("cannot look the user up: {e}"))),
    }
    if let Some(g) = &group {
        if !matches!(Group::from_name(g.get_ref()), Ok(Some(_))) {
            return Err(ctx.error(
                g.span(),
                &key("group"),
                format!("there is no group `{}` on this host", g.get_ref()),
            ));
        }
    }
    Ok(Some(crate::proc::RunAs {
        user: user.into_inner(),
        group: group.map(Spanned::into_inner),
    }))
}

impl RawTemplate {
    fn validate(
        self,
        ctx: &Ctx,
        i: usize,
        jobs: &JobsConfig,
        targets: &[Target],
        files: &FileSource,
    ) -> Result<Template, ConfigError> {
        let key = |k: &str| format!("templates[{i}].{k}");
        let id = self.id.get_ref().clone();
        if !ID_RE.is_match(&id) {
            return Err(ctx.error(
                self.id.span(),
                &key("id"),
                format!("`{id}` is not a valid id: use ^[a-z0-9][a-z0-9_.-]{{0,62}}$"),
            ));
        }

        // Parameters first: the command refers to them.
        let mut params = Vec::new();
        let mut patterns = BTreeMap::new();
        for (j, p) in self.params.into_iter().enumerate() {
            let pkey = |k: &str| format!("templates[{i}].params[{j}].{k}");
            let span = p.span();
            let p = p.into_inner();
            if !PARAM_RE.is_match(&p.name) {
                return Err(ctx.error(
                    span,
                    &pkey("name"),
                    format!(
                        "`{}` is not a valid parameter name: use ^[a-z_][a-z0-9_]{{0,31}}$",
                        p.name
                    ),
                ));
            }
            if params.iter().any(|q: &ParamSpec| q.name == p.name) {
                return Err(ctx.error(
                    span,
                    &pkey("name"),
                    format!("parameter `{}` is defined twice", p.name),
                ));
            }
            match p.kind {
                ParamType::Enum if p.choices.is_empty() => {
                    return Err(ctx.error(
                        span,
                        &pkey("choices"),
                        "an enum parameter needs `choices`",
                    ))
                }
                ParamType::String => {
                    if let Some(pat) = &p.pattern {
                        let re = Regex::new(&format!("^(?:{pat})$")).map_err(|e| {
                            ctx.error(
                                span.clone(),
                                &pkey("pattern"),
                                format!("not a valid regex: {e}"),
                            )
                        })?;
                        patterns.insert(p.name.clone(), re);
                    }
                }
                ParamType::Int => {
                    if let (Some(min), Some(max)) = (p.min, p.max) {
                        if min > max {
                            return Err(ctx.error(
                                span,
                                &pkey("min"),
                                "`min` is larger than `max`",
                            ));
                        }
                    }
                }
                _ => {}
            }
            let misplaced = [
                (
                    "pattern",
                    p.pattern.is_some() && p.kind != ParamType::String,
                ),
                (
                    "choices",
                    !p.choices.is_empty() && p.kind != ParamType::Enum,
                ),
                ("min", p.min.is_some() && p.kind != ParamType::Int),
                ("max", p.max.is_some() && p.kind != ParamType::Int),
            ];
            if let Some((k, _)) = misplaced.iter().find(|(_, bad)| *bad) {
                return Err(ctx.error(
                    span,
                    &pkey(k),
                    format!("`{k}` does not apply to a parameter of this type"),
                ));
            }
            if let Some(default) = &p.default {
                let re = patterns.get(&p.name);
                p.check(default, &|_, v| re.is_none_or(|re| re.is_match(v)))
                    .map_err(|m| {
                        ctx.error(span.clone(), &pkey("default"), format!("the default {m}"))
                    })?;
            }
            params.push(p);
        }

        // The argv: either `command`, or an inline/file script run by `interpreter`.
        let mut shown = None;
        let args_len = self.args.len();
        let (command, command_span, command_key) =
            match (self.command, self.script, self.script_file) {
                (Some(c), None, None) => {
                    check_argv(ctx, &c, &key("command"))?;
                    let span = c.span();
                    (c.into_inner(), span, key("command"))
                }
                (None, script, file) if script.is_some() != file.is_some() => {
                    let (text, span, k) = match (script, file) {
                        (Some(s), _) => {
                            let span = s.span();
                            shown = Some("<script>".to_string());
                            (s.into_inner(), span, key("script"))
                        }
                        (_, Some(f)) => {
                            let text = files
                                .read(f.get_ref())
                                .map_err(|m| ctx.error(f.span(), &key("script_file"), m))?;
                            shown = Some(format!("<{}>", f.get_ref()));
                            (text, f.span(), key("script_file"))
                        }
                        _ => unreachable!("one of script and script_file is set"),
                    };
                    let interpreter = match self.interpreter {
                        Some(it) => {
                            check_argv(ctx, &it, &key("interpreter"))?;
                            it.into_inner()
                        }
                        None => vec!["/bin/sh".into(), "-c".into()],
                    };
                    // `sh -c SCRIPT NAME ARGS…`: the arguments arrive as "$1"…, never
                    // inside the script text.
                    let mut argv = interpreter;
                    argv.push(text.replace('{', "{{").replace('}', "}}"));
                    argv.push(id.clone());
                    argv.extend(self.args);
                    (argv, span, k)
                }
                _ => {
                    return Err(ctx.error(
                        self.id.span(),
                        &key("command"),
                        "give exactly one of `command`, `script` or `script_file`",
                    ))
                }
            };
        for element in &command {
            let names = placeholders(element)
                .map_err(|m| ctx.error(command_span.clone(), &command_key, m))?;
            if let Some(unknown) = names.iter().find(|n| !params.iter().any(|p| &p.name == *n)) {
                return Err(ctx.error(
                    command_span.clone(),
                    &command_key,
                    format!("placeholder `{{{unknown}}}` names no parameter of this template"),
                ));
            }
        }

        if let Some(wd) = &self.workdir {
            check_path(wd.get_ref())
                .map_err(|m| ctx.error(wd.span(), &key("workdir"), format!("workdir {m}")))?;
        }
        if let Some(ts) = &self.targets {
            if let Some(unknown) = ts
                .get_ref()
                .iter()
                .find(|t| !targets.iter().any(|x| &x.id == *t))
            {
                return Err(ctx.error(
                    ts.span(),
                    &key("targets"),
                    format!("no target `{unknown}` is defined"),
                ));
            }
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(ctx.error(self.id.span(), &key("timeout"), "must be longer than 0s"));
        }

        let retry = match self.retry {
            Some(r) => {
                let span = r.span();
                Some(r.into_inner().validate(ctx, &key("retry"), span)?)
            }
            None => None,
        };

        // A script's text is replaced by its name; its interpreter is kept.
        let shown = match shown {
            Some(name) => {
                let at = command.len() - 2 - args_len;
                let mut s = command[..at].to_vec();
                s.push(name);
                s.extend(command[at + 2..].iter().cloned());
                s
            }
            None => command.clone(),
        };
        Ok(Template {
            title: self.title.unwrap_or_else(|| id.clone()),
            id,
            description: self.description,
            shown,
            command,
            params,
            patterns,
            env: self.env,
            workdir: self.workdir.map(Spanned::into_inner),
            targets: self.targets.map(Spanned::into_inner),
            exclusive: self.exclusive,
            timeout: self.timeout.map(|d| d.0),
            kill_grace: self.kill_grace.map_or(jobs.kill_grace, |d| d.0),
            warning_exit_codes: self.warning_exit_codes,
            progress: self.progress,
            max_line_bytes: self
                .max_line_bytes
                .map_or(jobs.max_line_bytes, |b| b.0 as usize),
            max_log_bytes: self.max_log_bytes.map_or(jobs.max_log_bytes, |b| b.0),
            tail_lines: self.tail_lines.unwrap_or(jobs.tail_lines),
            retry,
        })
    }
}

/// The default node id: this host's name and `port`.
fn default_node_name(port: u16) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    node_name(&host, port)
}

/// `host` made into a node id with `-port` after it (`vm-3000`): the
/// host name lower-cased, other characters than `[a-z0-9_.-]` as `-`, cut
/// so the whole stays within 63 characters; `node-PORT` if nothing is left.
fn node_name(host: &str, port: u16) -> String {
    let suffix = format!("-{port}");
    let cleaned: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63 - suffix.len())
        .collect();
    let id = format!("{cleaned}{suffix}");
    if ID_RE.is_match(&id) {
        id
    } else {
        format!("node{suffix}")
    }
}

#[cfg(test)]
mod tests;
