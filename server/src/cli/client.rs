//! `opsdeck run | jobs | cancel | logs`: the command line against a running
//! server's API, authenticated with an API token (`OPSDECK_URL`,
//! `OPSDECK_TOKEN`). Following a job reads its event stream and resumes
//! after any disconnect with `Last-Event-ID`, like the browser does.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use app::model::event::JobEvent;
use app::model::job::{Job, JobPage, JobState, LogLine, LogPage, LogStream};
use app::model::template::TemplateInfo;
use app::model::time::{format_duration_secs, format_utc};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

/// Where the server is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The opsdeck server.
    #[arg(
        long = "url",
        env = "OPSDECK_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub url: String,
    /// An API token (create one on your Account page).
    #[arg(
        long = "token",
        env = "OPSDECK_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The template to run.
    pub template: String,
    /// The target (may be left out when the template runs on only one of yours).
    #[arg(long)]
    pub target: Option<String>,
    /// A parameter, `name=value` (repeat for several).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Print the log as it arrives and exit with the job's exit code.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Args, Debug, Default)]
pub struct JobsArgs {
    /// Only jobs in these states (comma-separated).
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    /// How many (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: u64,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub id: i64,
    /// Keep printing new lines until the job ends; exit with its exit code.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// A failure to show the user.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(e.to_string())
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(remote: &Remote) -> Result<Api, Fail> {
        let token = remote.token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
            Fail("no API token: set OPSDECK_TOKEN (create a token on your Account page, or with `opsdeck token create`)".into())
        })?;
        Ok(Api {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: remote.url.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, Fail> {
        let res = rb.send().await.map_err(|e| {
            Fail(format!(
                "cannot reach opsdeck at {} ({e}); check OPSDECK_URL",
                self.base
            ))
        })?;
        let status = res.status();
        if status.is_success() {
            return res
                .json::<T>()
                .await
                .map_err(|e| Fail(format!("unexpected answer from the server: {e}")));
        }
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let msg = body["error"].as_str().unwrap_or("no details").to_string();
        Err(Fail(match body["field"].as_str() {
            Some(f) => format!("{msg} (field `{f}`)"),
            None => format!("{msg} (HTTP {})", status.as_u16()),
        }))
    }
}

/// What a client command asks for.
pub enum Action {
    Run(RunArgs),
    Jobs(JobsArgs),
    Cancel(i64),
    Logs(LogsArgs),
}

/// Runs a client command; prints errors; the exit code.
pub fn main(remote: Remote, action: Action) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("opsdeck: cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let result = rt.block_on(async move {
        let api = Api::new(&remote)?;
        match action {
            Action::Run(a) => run(&api, a).await,
            Action::Jobs(a) => jobs(&api, a).await,
            Action::Cancel(id) => cancel(&api, id).await,
            Action::Logs(a) => logs(&api, a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(Fail(msg)) => {
            eprintln!("opsdeck: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(api: &Api, a: RunArgs) -> Result<ExitCode, Fail> {
    let mut params = Map::new();
    for p in &a.params {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            Fail(format!(
                "`{p}` is not a parameter: write --param name=value"
            ))
        })?;
        params.insert(k.trim().to_string(), Value::String(v.to_string()));
    }
    let target = match a.target {
        Some(t) => t,
        None => {
            let templates: Vec<TemplateInfo> = api
                .send(api.req(reqwest::Method::GET, "/api/templates"))
                .await?;
            let t = templates
                .iter()
                .find(|t| t.id == a.template)
                .ok_or_else(|| {
                    Fail(format!("there is no template `{}` you can run", a.template))
                })?;
            match t.targets.as_slice() {
                [only] => only.clone(),
                many => {
                    return Err(Fail(format!(
                    "template `{}` runs on several of your targets ({}): choose one with --target",
                    a.template,
                    many.join(", ")
                )))
                }
            }
        }
    };
    let job: Job = api
        .send(
            api.req(reqwest::Method::POST, "/api/jobs")
                .json(&json!({"template": a.template, "target": target, "params": params})),
        )
        .await?;
    eprintln!("job {} queued: {}/jobs/{}", job.id, api.base, job.id);
    if !a.follow {
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    follow(api, job.id, 0).await
}

/// The process exit code for a finished job.
fn exit_code(job: &Job) -> ExitCode {
    let code = match (job.state, job.exit_code) {
        (JobState::Succeeded, Some(c)) => c,
        (JobState::Succeeded, None) => 0,
        (JobState::Cancelled, _) => 130,
        (_, Some(c)) if c != 0 => c,
        _ => 1,
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn print_line(line: &LogLine, bar: Option<&ProgressBar>) {
    let text = match line.stream {
        LogStream::System => format!("opsdeck: {}", line.text),
        _ => line.text.clone(),
    };
    let out = |t: &str| match line.stream {
        LogStream::Stdout => {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{t}");
        }
        _ => eprintln!("{t}"),
    };
    match bar {
        Some(b) if !b.is_hidden() => b.suspend(|| out(&text)),
        _ => out(&text),
    }
}

/// Follows a job's event stream from `after` until `end`, reconnecting
/// with `Last-Event-ID` after any error.
async fn follow(api: &Api, id: i64, after: i64) -> Result<ExitCode, Fail> {
    let mut last = after;
    let mut bar: Option<ProgressBar> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let res = api
            .req(reqwest::Method::GET, &format!("/api/jobs/{id}/events"))
            .header("last-event-id", last.to_string())
            .send()
            .await;
        let res = match res {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().is_client_error() => {
                let body: Value = r.json().await.unwrap_or(Value::Null);
                return Err(Fail(
                    body["error"].as_str().unwrap_or("refused").to_string(),
                ));
            }
            other => {
                let why = other
                    .map(|r| format!("HTTP {}", r.status()))
                    .unwrap_or_else(|e| e.to_string());
                eprintln!(
                    "opsdeck: connection lost ({why}); reconnecting in {} ms",
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        let mut body = res.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..pos + 2).collect();
                let text = String::from_utf8_lossy(&block[..pos]);
                let (mut name, mut data) = (String::new(), String::new());
                for l in text.lines() {
                    if let Some(v) = l.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let event = match JobEvent::decode(&name, &data) {
                    Ok(Some(event)) => event,
                    Ok(None) => continue,
                    Err(e) => return Err(Fail(format!("the server sent {e}"))),
                };
                match event {
                    JobEvent::Log(line) => {
                        if line.seq > last {
                            last = line.seq;
                            print_line(&line, bar.as_ref());
                        }
                    }
                    JobEvent::Gap(g) => {
                        eprintln!(
                            "opsdeck: lines {}–{} were omitted (log over its size limit)",
                            g.from, g.to
                        );
                    }
                    JobEvent::Progress(p) => {
                        let b = bar.get_or_insert_with(|| {
                            let b = ProgressBar::new(1000);
                            b.set_style(
                                ProgressStyle::with_template(
                                    "{bar:40.cyan/blue} {percent:>3}% {msg}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            b
                        });
                        b.set_position((p.percent.unwrap_or(0.0) * 10.0) as u64);
                        b.set_message(p.message.unwrap_or_default());
                    }
                    JobEvent::End(job) => {
                        if let Some(b) = bar.take() {
                            b.finish_and_clear();
                        }
                        eprintln!("opsdeck: job {} {}", job.id, job.state_label());
                        return Ok(exit_code(&job));
                    }
                    JobEvent::State(_) => {}
                }
            }
        }
        eprintln!("opsdeck: stream ended early; resuming after line {last}");
    }
}

async fn jobs(api: &Api, a: JobsArgs) -> Result<ExitCode, Fail> {
    let mut q = vec![("limit", a.limit.to_string())];
    for (k, v) in [
        ("state", a.state),
        ("template", a.template),
        ("target", a.target),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    let page: JobPage = api
        .send(api.req(reqwest::Method::GET, "/api/jobs").query(&q))
        .await?;
    let now = chrono::Utc::now();
    println!(
        "{:<7} {:<24} {:<18} {:<10} {:<12} {:<24} DURATION",
        "ID", "STATE", "TEMPLATE", "TARGET", "OWNER", "CREATED"
    );
    for j in &page.jobs {
        println!(
            "{:<7} {:<24} {:<18} {:<10} {:<12} {:<24} {}",
            j.id,
            j.state_label(),
            j.template,
            j.target,
            j.owner,
            format_utc(&j.created_at),
            j.duration_secs(now)
                .map(format_duration_secs)
                .unwrap_or_default()
        );
    }
    if page.jobs.is_empty() && std::io::stdout().is_terminal() {
        eprintln!("no jobs");
    }
    Ok(ExitCode::SUCCESS)
}

async fn cancel(api: &Api, id: i64) -> Result<ExitCode, Fail> {
    let job: Job = api
        .send(api.req(reqwest::Method::POST, &format!("/api/jobs/{id}/cancel")))
        .await?;
    println!("job {} {}", job.id, job.state);
    Ok(ExitCode::SUCCESS)
}

async fn logs(api: &Api, a: LogsArgs) -> Result<ExitCode, Fail> {
    if a.follow {
        return follow(api, a.id, 0).await;
    }
    let mut after = 0;
    loop {
        let page: LogPage = api
            .send(api.req(
                reqwest::Method::GET,
                &format!("/api/jobs/{}/log?after={after}&limit=10000", a.id),
            ))
            .await?;
        let Some(last) = page.lines.last().map(|l| l.seq) else {
            break;
        };
        for l in &page.lines {
            print_line(l, None);
        }
        after = last;
    }
    Ok(ExitCode::SUCCESS)
}
