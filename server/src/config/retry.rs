//! A template's `retry = { max = N, backoff = "10s", factor = 2,
//! max_delay = "10m", on = ["failed", "timeout", "interrupted",
//! "agent_lost"] }`, validated into an `app::model::retry::RetryPolicy`
//! (docs/automation.md).

use std::ops::Range;
use std::time::Duration;

use app::model::retry::{Failure, RetryPolicy};
use serde::Deserialize;

use super::{ConfigDuration, ConfigError, Ctx};

/// The most retries a template may ask for: a larger number is a typo
/// (a job that fails a hundred times in a row needs a person).
pub const MAX_RETRIES: u32 = 100;

/// `retry` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    max: u32,
    backoff: Option<ConfigDuration>,
    factor: Option<f64>,
    max_delay: Option<ConfigDuration>,
    on: Option<Vec<Failure>>,
}

impl RawRetry {
    /// Validates `templates[i].retry` (`span`: where it is written).
    pub(super) fn validate(
        self,
        ctx: &Ctx,
        key: &str,
        span: Range<usize>,
    ) -> Result<RetryPolicy, ConfigError> {
        let err = |k: &str, m: String| ctx.error(span.clone(), &format!("{key}.{k}"), m);
        if self.max == 0 || self.max > MAX_RETRIES {
            return Err(err(
                "max",
                format!(
                    "{} is not a number of retries: use 1 to {MAX_RETRIES} (or remove `retry`)",
                    self.max
                ),
            ));
        }
        let backoff = self.backoff.map_or(Duration::from_secs(10), |d| d.0);
        let max_delay = self.max_delay.map_or(Duration::from_secs(600), |d| d.0);
        let factor = self.factor.unwrap_or(2.0);
        if !(1.0..=100.0).contains(&factor) {
            return Err(err(
                "factor",
                format!("{factor} is not a backoff factor: use a number from 1 to 100"),
            ));
        }
        if max_delay < backoff {
            return Err(err(
                "max_delay",
                format!(
                    "is shorter than `backoff` ({}ms < {}ms): the first wait would already be cut",
                    max_delay.as_millis(),
                    backoff.as_millis()
                ),
            ));
        }
        let on = self.on.unwrap_or_else(|| Failure::ALL.to_vec());
        if on.is_empty() {
            return Err(err(
                "on",
                "lists no failure: name at least one of failed, timeout, interrupted, agent_lost"
                    .into(),
            ));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(RetryPolicy {
            max: self.max,
            backoff_ms: millis(backoff),
            factor,
            max_delay_ms: millis(max_delay),
            on,
        })
    }
}
