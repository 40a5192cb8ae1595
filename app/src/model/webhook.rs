//! Webhook notifications: the kinds of event a `[[notify]]` hook can ask
//! for (one enum: the server's outbox, the config check, the payload and
//! the admin page all spell them through it), and a delivery as the admin
//! page shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::JobState;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.succeeded_with_warnings")]
    JobSucceededWithWarnings,
    #[serde(rename = "job.cancelled")]
    JobCancelled,
    /// A schedule's run was missed (server/src/schedules).
    #[serde(rename = "schedule.missed")]
    ScheduleMissed,
    /// An agent went silent past `[agents].lost_after`: one event per job
    /// of it that was failed for that.
    #[serde(rename = "agent.lost")]
    AgentLost,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::JobFailed,
        EventKind::JobSucceeded,
        EventKind::JobSucceededWithWarnings,
        EventKind::JobCancelled,
        EventKind::ScheduleMissed,
        EventKind::AgentLost,
    ];

    /// Its name in the configuration, the payload and the headers.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::JobFailed => "job.failed",
            EventKind::JobSucceeded => "job.succeeded",
            EventKind::JobSucceededWithWarnings => "job.succeeded_with_warnings",
            EventKind::JobCancelled => "job.cancelled",
            EventKind::ScheduleMissed => "schedule.missed",
            EventKind::AgentLost => "agent.lost",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The event a job's end is, if its state is an end.
    pub fn of_job_end(state: JobState, warnings: bool) -> Option<EventKind> {
        match state {
            JobState::Failed => Some(EventKind::JobFailed),
            JobState::Succeeded if warnings => Some(EventKind::JobSucceededWithWarnings),
            JobState::Succeeded => Some(EventKind::JobSucceeded),
            JobState::Cancelled => Some(EventKind::JobCancelled),
            _ => None,
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: it is tried again at `next_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: no 2xx within the hook's `retry_for`.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One event's delivery to one hook: a row of the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryInfo {
    pub id: i64,
    pub hook: String,
    pub event_id: String,
    pub kind: String,
    pub state: DeliveryState,
    pub attempts: i32,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub created_at: DateTime<Utc>,
    /// The last try, if any.
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub last_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status on the last try.
    pub last_status: Option<i32>,
    /// Why the last try failed (a status other than 2xx, a refused
    /// connection, a timeout).
    pub last_error: Option<String>,
    /// When it is tried next (pending only).
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub next_at: Option<DateTime<Utc>>,
}

/// A configured hook as the admin page shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookInfo {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub templates: Vec<String>,
    pub targets: Vec<String>,
    /// Its latest deliveries, newest first.
    pub deliveries: Vec<DeliveryInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.name()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.name().into())
            );
        }
        assert_eq!(EventKind::parse("job.exploded"), None);
    }
}
