//! A target's actual state, as its status probe last found it
//! (docs/automation.md, "A target's actual state"), and the last error of
//! a job on it. Listed with each target (`GET /api/targets`,
//! [`crate::model::template::TargetInfo::status`]) and sent live on the
//! feed (`target` events) whenever either changes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    /// The probe exited 0.
    Up,
    /// The probe exited with another code (or was killed by a signal).
    Down,
    /// The probe could not run, or ran past its timeout.
    Unknown,
}

impl ProbeState {
    pub const ALL: [ProbeState; 3] = [ProbeState::Up, ProbeState::Down, ProbeState::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeState::Up => "up",
            ProbeState::Down => "down",
            ProbeState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<ProbeState> {
        ProbeState::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The last failed job on a target, until a job on it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub job_id: i64,
    /// The job's error ("exited with code 2", "timed out after 10m").
    pub error: String,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub at: DateTime<Utc>,
}

/// One target's actual state and last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    /// `None` until its probe first ran (or when it has none).
    pub state: Option<ProbeState>,
    /// The first line of the probe's output (or why it could not run),
    /// trimmed and capped.
    pub message: String,
    /// When the probe that found `state` started.
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub checked_at: Option<DateTime<Utc>>,
    /// When `state` last became what it is.
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub changed_at: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_one_name_each_both_ways() {
        for s in ProbeState::ALL {
            assert_eq!(ProbeState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(ProbeState::parse("sideways"), None);
    }
}
