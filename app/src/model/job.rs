//! Jobs, their log lines and progress: the models the REST API, the SSE
//! encoder, the server functions and the browser share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a job is in its life.
///
/// ```text
/// queued ──claim──▶ running ──exit──▶ succeeded | failed
///    │                 │
///  cancel           cancel ──▶ cancelling ──process group gone──▶ cancelled
///    ▼
/// cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Cancelling,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Succeeded, failed or cancelled: nothing more will happen.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Running or cancelling: a process group exists.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Running | JobState::Cancelling)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's progress as its template reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Progress {
    /// 0–100, when known.
    pub percent: Option<f64>,
    /// "1.2 GiB of 3.2 GiB · 2m 10s left".
    pub message: Option<String>,
}

/// Lines dropped from the middle of a log longer than its byte cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The first omitted seq.
    pub from: i64,
    /// The last omitted seq.
    pub to: i64,
    /// Their total size in bytes.
    pub bytes: i64,
}

/// A job, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub template: String,
    pub target: String,
    pub params: Map<String, Value>,
    pub state: JobState,
    pub owner: String,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub created_at: DateTime<Utc>,
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub finished_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Succeeded with a warning exit code (restic's 3).
    pub warnings: bool,
    pub progress: Option<Progress>,
    /// The seq of the last stored line (0: none yet).
    pub last_seq: i64,
    /// Who asked to cancel it.
    pub cancel_requested_by: Option<String>,
    /// The replica that ran it.
    pub node: Option<String>,
    /// The job this one re-runs.
    pub rerun_of: Option<i64>,
    /// The agent it runs (or ran) on, for an agent target.
    #[serde(default)]
    pub agent: Option<String>,
    /// Lines omitted from the middle of an over-long log.
    pub omitted: Option<Gap>,
    /// Its place in a chain of attempts (a template with `retry`).
    #[serde(default)]
    pub attempt: Option<crate::model::retry::Attempt>,
}

impl Job {
    /// "succeeded with warnings" is its own pill.
    pub fn state_label(&self) -> &'static str {
        match self.state {
            JobState::Succeeded if self.warnings => "succeeded with warnings",
            s => s.as_str(),
        }
    }

    /// Seconds it ran (or has run so far, given `now`).
    pub fn duration_secs(&self, now: DateTime<Utc>) -> Option<i64> {
        let start = self.started_at?;
        Some(
            (self.finished_at.unwrap_or(now) - start)
                .num_seconds()
                .max(0),
        )
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by opsdeck itself (cancel requested, killed, interrupted, …).
    System,
}

impl LogStream {
    pub fn code(self) -> i16 {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
            LogStream::System => 2,
        }
    }

    /// The stream stored as `code`; `None` for a code no version wrote.
    pub fn from_code(code: i16) -> Option<LogStream> {
        match code {
            0 => Some(LogStream::Stdout),
            1 => Some(LogStream::Stderr),
            2 => Some(LogStream::System),
            _ => None,
        }
    }
}

/// One stored output line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: i64,
    pub stream: LogStream,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub ts: DateTime<Utc>,
    pub text: String,
}

/// A slice of a job's log (`GET /api/jobs/{id}/log`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// The job's last stored seq when this page was read.
    pub last_seq: i64,
    /// Lines omitted from the middle of the log, if any.
    pub omitted: Option<Gap>,
}

/// What a launch asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub template: String,
    pub target: String,
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// A set of job states, written `queued,running` on the wire (query
/// strings, forms): parsed once, here, with an error naming a bad value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSet(Vec<JobState>);

impl StateSet {
    pub fn new(states: impl IntoIterator<Item = JobState>) -> StateSet {
        let mut v: Vec<JobState> = Vec::new();
        for s in states {
            if !v.contains(&s) {
                v.push(s);
            }
        }
        StateSet(v)
    }

    /// Queued, running or cancelling: what the dashboard calls active.
    pub fn active() -> StateSet {
        StateSet::new([JobState::Queued, JobState::Running, JobState::Cancelling])
    }

    /// Succeeded, failed or cancelled.
    pub fn finished() -> StateSet {
        StateSet::new(JobState::ALL.into_iter().filter(|s| s.is_finished()))
    }

    pub fn contains(&self, state: JobState) -> bool {
        self.0.contains(&state)
    }

    pub fn states(&self) -> &[JobState] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for StateSet {
    type Err = String;

    /// `queued, running` → both; an empty string → the empty set.
    fn from_str(s: &str) -> Result<StateSet, String> {
        let mut states = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let state = JobState::parse(part).ok_or_else(|| {
                format!("`{part}` is not a job state: use queued, running, cancelling, succeeded, failed or cancelled")
            })?;
            states.push(state);
        }
        Ok(StateSet::new(states))
    }
}

impl std::fmt::Display for StateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl Serialize for StateSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StateSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StateSet, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Filters for job lists (`GET /api/jobs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Any of these states (none or empty: every state).
    pub state: Option<StateSet>,
    pub template: Option<String>,
    pub target: Option<String>,
    /// Only jobs with a smaller id (the next page).
    pub before: Option<i64>,
    pub limit: Option<u64>,
    /// Only the caller's own jobs.
    pub mine: Option<bool>,
}

/// Everything the job page shows at first load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job: Job,
    pub template_title: String,
    pub target_title: String,
    /// The last lines of the log (the page shows these first).
    pub lines: Vec<LogLine>,
    /// The last stderr lines, for the failure panel.
    pub stderr_tail: Vec<LogLine>,
    /// The agent the job runs on, when it does (is it connected?).
    #[serde(default)]
    pub agent: Option<crate::model::agent::AgentInfo>,
    /// Every attempt of its chain, first to last (empty without `retry`).
    #[serde(default)]
    pub attempts: Vec<Job>,
    /// The template's parameters (the page shows each value by its label),
    /// empty when the template is no longer configured.
    #[serde(default)]
    pub param_specs: Vec<crate::model::template::ParamSpec>,
}

/// A target with the state of its most recent job and the templates the
/// caller may launch on it (dashboard cards).
///
/// N.B.: the templates as their buttons need them, not the whole
/// [`crate::model::template::TemplateInfo`] (parameters, command): the
/// dashboard is in the main wasm, and every type it decodes is code the
/// first visit downloads (docs/benchmarks.md, issue 16).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub target: crate::model::template::TargetInfo,
    pub last_job: Option<Job>,
    pub templates: Vec<crate::model::template::TemplateChoice>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `before` for the next (older) page.
    pub next_before: Option<i64>,
}

/// Size for people: `1.2 GiB`, `512 KiB`, `80 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A job in `state`, for tests.
    pub fn sample_job(state: JobState) -> Job {
        Job {
            id: 42,
            template: "backup".into(),
            target: "web-1".into(),
            params: serde_json::json!({"path": "/srv"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            state,
            owner: "alice".into(),
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            finished_at: None,
            exit_code: None,
            error: None,
            warnings: false,
            progress: Some(Progress {
                percent: Some(37.5),
                message: Some("1.2 GiB of 3.2 GiB".into()),
            }),
            last_seq: 118,
            cancel_requested_by: None,
            node: Some("n1".into()),
            rerun_of: None,
            agent: None,
            omitted: None,
            attempt: None,
        }
    }

    #[test]
    fn state_sets_parse_once_and_name_a_bad_value() {
        let set: StateSet = " queued, running ,queued".parse().unwrap();
        assert_eq!(set.states(), [JobState::Queued, JobState::Running]);
        assert_eq!(set.to_string(), "queued,running");
        assert!(set.contains(JobState::Running) && !set.contains(JobState::Failed));
        assert!("".parse::<StateSet>().unwrap().is_empty());
        let err = "queued,done".parse::<StateSet>().unwrap_err();
        assert!(err.starts_with("`done` is not a job state"), "{err}");
        let f: JobFilter = serde_json::from_str(r#"{"state":"failed,cancelled"}"#).unwrap();
        assert_eq!(
            f.state,
            Some(StateSet::new([JobState::Failed, JobState::Cancelled]))
        );
        assert_eq!(
            serde_json::to_value(&f).unwrap()["state"],
            "failed,cancelled"
        );
    }

    #[test]
    fn states_round_trip_and_classify() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert!(JobState::Cancelled.is_finished());
        assert!(!JobState::Cancelling.is_finished());
        assert!(JobState::Cancelling.is_active());
    }

    #[test]
    fn the_job_json_has_the_fields_of_the_contract() {
        let job = sample_job(JobState::Running);
        let v = serde_json::to_value(&job).unwrap();
        for key in [
            "id",
            "template",
            "target",
            "params",
            "state",
            "owner",
            "created_at",
            "started_at",
            "finished_at",
            "exit_code",
            "error",
            "warnings",
            "progress",
            "last_seq",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["state"], "running");
        assert_eq!(v["progress"]["percent"], 37.5);
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(80), "80 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3_435_973_836), "3.2 GiB");
    }
}
