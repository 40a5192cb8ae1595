//! Schedules (`[[schedules]]`, docs/automation.md): the policies a
//! schedule names, and a schedule and its fires as the admin page and
//! `/api/schedules` show them. The server decides and records every fire
//! (server/src/schedules); the browser only shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::JobState;

/// What happens to the fires that fell while opsdeck was not running (or
/// was too busy to fire them within the schedule's `misfire_grace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// None of them runs; each is recorded as missed.
    Skip,
    /// The latest of them runs once, the others are recorded as missed.
    #[default]
    Latest,
    /// Each of them runs, the newest `max_catchup` at most; older ones are
    /// recorded as missed.
    All,
}

impl Misfire {
    pub const ALL: [Misfire; 3] = [Misfire::Skip, Misfire::Latest, Misfire::All];

    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::Latest => "latest",
            Misfire::All => "all",
        }
    }
}

/// What a fire does while the schedule's previous run is still queued or
/// running (its retries included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is recorded as skipped.
    #[default]
    Skip,
    /// The fire waits and runs when the previous run has ended; at most one
    /// fire waits, a later one is skipped.
    Queue,
    /// The previous run is cancelled and the fire runs.
    CancelPrevious,
    /// The fire runs beside the previous one (as far as the template's
    /// `exclusive` lets it).
    Allow,
}

impl Overlap {
    pub const ALL: [Overlap; 4] = [
        Overlap::Skip,
        Overlap::Queue,
        Overlap::CancelPrevious,
        Overlap::Allow,
    ];

    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::CancelPrevious => "cancel_previous",
            Overlap::Allow => "allow",
        }
    }
}

/// What became of a fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    /// A job was launched for it.
    Launched,
    /// It waits for the previous run to end (`overlap = "queue"`).
    Waiting,
    /// It did not run; `reason` says why.
    Skipped,
}

impl FireOutcome {
    pub const ALL: [FireOutcome; 3] = [
        FireOutcome::Launched,
        FireOutcome::Waiting,
        FireOutcome::Skipped,
    ];

    /// The name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FireOutcome::Launched => "launched",
            FireOutcome::Waiting => "waiting",
            FireOutcome::Skipped => "skipped",
        }
    }

    pub fn parse(name: &str) -> Option<FireOutcome> {
        FireOutcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// One fire, or one run of consecutive missed fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FireInfo {
    pub id: i64,
    /// The time the cron expression named (for "run now", when it was asked).
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub scheduled_for: DateTime<Utc>,
    /// For a run of missed fires: the last one (`count` in all).
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub until: Option<DateTime<Utc>>,
    pub count: i64,
    /// When the fire was decided and recorded.
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub recorded_at: DateTime<Utc>,
    pub outcome: FireOutcome,
    pub reason: Option<String>,
    pub job: Option<i64>,
    /// The job's state now, when it still exists.
    pub job_state: Option<JobState>,
    /// Who asked, for a "run now" (otherwise the schedule fired).
    pub manual_by: Option<String>,
}

/// A schedule as configured, with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub id: String,
    pub template: String,
    pub target: String,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub cron: String,
    pub timezone: String,
    pub misfire: Misfire,
    pub max_catchup: u32,
    pub overlap: Overlap,
    /// The longest random delay added to each fire, in milliseconds.
    pub jitter_ms: u64,
    pub paused: bool,
    /// Who paused it and when, while paused.
    pub paused_by: Option<String>,
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub paused_at: Option<DateTime<Utc>>,
    /// The next few fire times (none while paused).
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::list")
    )]
    pub next: Vec<DateTime<Utc>>,
    /// The latest fires, newest first.
    pub fires: Vec<FireInfo>,
}
