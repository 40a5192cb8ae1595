//! A small client of opsdeck's REST API (bearer token), with the few calls
//! the benchmarks need: launch, read, cancel and wait for a job.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The token comes from `--token` or `OPSDECK_TOKEN`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Base URL of the opsdeck server.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    pub url: String,
    /// API token (`opsdeck token create`).
    #[arg(long, env = "OPSDECK_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(args: &ServerArgs) -> Result<Api> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api {
            base: args.url.trim_end_matches('/').to_string(),
            token: args.token.clone(),
            http,
        })
    }

    /// The same client and token against another replica of the server.
    pub fn at(&self, url: &str) -> Api {
        Api {
            base: url.trim_end_matches('/').to_string(),
            token: self.token.clone(),
            http: self.http.clone(),
        }
    }

    /// A request with the bearer token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// The same request on another client (e.g. one that never reuses
    /// connections).
    pub fn request_on(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        http.request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// GET a JSON document; any status but 200 is an error.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        json_body(resp, 200, &format!("GET {path}")).await
    }

    /// `POST /api/jobs`: the queued job.
    pub async fn launch(&self, template: &str, target: &str, params: Value) -> Result<Value> {
        let body = serde_json::json!({ "template": template, "target": target, "params": params });
        let resp = self
            .request(reqwest::Method::POST, "/api/jobs")
            .json(&body)
            .send()
            .await
            .context("POST /api/jobs")?;
        json_body(resp, 201, &format!("launching {template} on {target}")).await
    }

    pub async fn job(&self, id: i64) -> Result<Value> {
        self.get_json(&format!("/api/jobs/{id}")).await
    }

    pub async fn cancel(&self, id: i64) -> Result<Value> {
        let path = format!("/api/jobs/{id}/cancel");
        let resp = self
            .request(reqwest::Method::POST, &path)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        json_body(resp, 200, &format!("cancelling job {id}")).await
    }

    /// Polls the job every `every` until `done(state)` holds.
    pub async fn wait_for(
        &self,
        id: i64,
        every: Duration,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(id).await?;
            if done(job["state"].as_str().unwrap_or("")) {
                return Ok(job);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "job {id} is still {} after {timeout:?}",
                    job["state"].as_str().unwrap_or("?")
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Waits for the job to finish (succeeded, failed or cancelled).
    pub async fn wait_finished(
        &self,
        id: i64,
        every: Duration,
        timeout: Duration,
    ) -> Result<Value> {
        self.wait_for(id, every, timeout, |s| {
            matches!(s, "succeeded" | "failed" | "cancelled")
        })
        .await
    }
}

/// The JSON body of a response with the expected status.
pub async fn json_body(resp: reqwest::Response, status: u16, what: &str) -> Result<Value> {
    let got = resp.status();
    let text = resp.text().await.with_context(|| what.to_string())?;
    if got.as_u16() != status {
        bail!("{what}: HTTP {got} (expected {status}): {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

/// The id of a job document.
pub fn job_id(job: &Value) -> Result<i64> {
    job["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no job id in {job}"))
}

/// A timestamp field (RFC 3339) of a job document.
pub fn time_field(job: &Value, field: &str) -> Result<DateTime<Utc>> {
    let raw = job[field]
        .as_str()
        .ok_or_else(|| anyhow!("job has no {field}: {job}"))?;
    Ok(DateTime::parse_from_rfc3339(raw)
        .with_context(|| format!("{field} `{raw}` is not RFC 3339"))?
        .with_timezone(&Utc))
}
