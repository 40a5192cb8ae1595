//! Retries: a template's `retry = { … }` policy, why an attempt failed
//! (what `on` names), and where a job stands in its chain of attempts.
//! The server decides a retry in the one transition that ends the failed
//! attempt (`engine::transition`); the browser shows the chain.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a failed attempt failed: what a policy's `on` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// It exited with a failing code or signal, or could not start.
    Failed,
    /// It ran past the template's `timeout`.
    Timeout,
    /// opsdeck stopped running it: the server restarted or shut down, or
    /// its replica was declared lost.
    Interrupted,
    /// The agent running it was lost (or an admin marked it failed while
    /// the agent could not be reached).
    AgentLost,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Failed,
        Failure::Timeout,
        Failure::Interrupted,
        Failure::AgentLost,
    ];

    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Failed => "failed",
            Failure::Timeout => "timeout",
            Failure::Interrupted => "interrupted",
            Failure::AgentLost => "agent_lost",
        }
    }
}

/// A template's retry policy, as validated from the configuration and as
/// stored with each job of a chain (so a chain keeps the policy it was
/// launched under).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt: at most `max + 1` attempts.
    pub max: u32,
    /// The wait before the first retry, in milliseconds.
    pub backoff_ms: u64,
    /// Each further wait is the one before times this (≥ 1).
    pub factor: f64,
    /// No wait is longer than this, in milliseconds.
    pub max_delay_ms: u64,
    /// The failures that are retried.
    pub on: Vec<Failure>,
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1 for the launch) that failed
    /// for `why` gets another one.
    pub fn retries(&self, attempt: u32, why: Failure) -> bool {
        attempt <= self.max && self.on.contains(&why)
    }

    /// The wait after attempt number `attempt` (1 for the launch) failed:
    /// `backoff × factor^(attempt − 1)`, at most `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let ms = (self.backoff_ms as f64) * self.factor.powi(exp);
        let capped = if ms.is_finite() {
            ms.min(self.max_delay_ms as f64)
        } else {
            self.max_delay_ms as f64
        };
        Duration::from_millis(capped.max(0.0) as u64)
    }
}

/// Where a job of a retried template stands in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// This attempt's number: 1 for the launch, 2 for the first retry, …
    pub number: u32,
    /// At most this many attempts (the policy's `max + 1`).
    pub of: u32,
    /// The chain's first job (the launch); `None` for the launch itself.
    pub retry_of: Option<i64>,
    /// A retry waits in the queue until then.
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub not_before: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max: 3,
            backoff_ms: 10_000,
            factor: 2.0,
            max_delay_ms: 25_000,
            on: vec![Failure::Failed, Failure::Timeout],
        }
    }

    #[test]
    fn waits_grow_by_the_factor_up_to_max_delay() {
        let p = policy();
        let secs: Vec<u64> = (1..=4).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [10, 20, 25, 25]);
        let huge = RetryPolicy {
            factor: 1e308,
            ..policy()
        };
        assert_eq!(huge.delay(60).as_secs(), 25);
    }

    #[test]
    fn only_the_listed_failures_are_retried_and_only_max_times() {
        let p = policy();
        assert!(p.retries(1, Failure::Failed));
        assert!(p.retries(3, Failure::Timeout));
        assert!(
            !p.retries(4, Failure::Failed),
            "max = 3 retries: 4 attempts"
        );
        assert!(!p.retries(1, Failure::Interrupted));
        assert!(!p.retries(1, Failure::AgentLost));
    }
}
