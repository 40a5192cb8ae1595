//! What the charts show: a target's history per template (success rate,
//! duration percentiles) and the recent load of the queue (running and
//! queued jobs over the last hours). The server computes them
//! (`server::service::history`) with the pure functions here, which the
//! tests below pin down.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How far back a target's per-template figures reach.
pub const STATS_DAYS: i64 = 30;
/// How far back the dashboard's load chart reaches, and its interval.
pub const ACTIVITY_HOURS: i64 = 6;
pub const ACTIVITY_STEP_SECS: i64 = 600;

/// One template's finished jobs on a target over the last [`STATS_DAYS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateStats {
    pub template: String,
    pub title: String,
    /// Succeeded, warnings included.
    pub succeeded: u32,
    /// Of those, how many with warnings.
    pub warnings: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// The median and 95th percentile of the succeeded jobs' durations.
    pub p50_secs: Option<i64>,
    pub p95_secs: Option<i64>,
}

impl TemplateStats {
    /// Every finished job counted.
    pub fn runs(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Succeeded out of succeeded or failed (a cancel is an operator's
    /// choice, not the job's outcome); `None` before any such job.
    pub fn success_rate(&self) -> Option<f64> {
        let decided = self.succeeded + self.failed;
        (decided > 0).then(|| f64::from(self.succeeded) / f64::from(decided))
    }
}

/// A target's per-template figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    pub target: String,
    pub days: i64,
    pub templates: Vec<TemplateStats>,
}

/// The most jobs running, and queued, at once in each interval of
/// `step_secs` from `start` (the last interval ends now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub start: DateTime<Utc>,
    pub step_secs: i64,
    pub running: Vec<u32>,
    pub queued: Vec<u32>,
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The most spans `[from, to)` open at once within each of `n` intervals
/// of `step` starting at `start` (any unit: the server uses milliseconds).
/// A span that ends where another starts does not overlap it.
pub fn peaks(spans: &[(i64, i64)], start: i64, step: i64, n: usize) -> Vec<u32> {
    let end = start + step * n as i64;
    let mut events: Vec<(i64, i32)> = Vec::with_capacity(spans.len() * 2);
    for &(from, to) in spans {
        if to <= from || to <= start || from >= end {
            continue;
        }
        events.push((from.max(start), 1));
        if to < end {
            events.push((to, -1));
        }
    }
    // N.B.: at one instant ends sort before starts (-1 < 1), so spans that
    // touch are never counted together.
    events.sort_unstable();
    let mut out = Vec::with_capacity(n);
    let (mut open, mut next) = (0i32, 0usize);
    for k in 1..=n as i64 {
        let until = start + step * k;
        let mut peak = open;
        while let Some(&(_, delta)) = events.get(next).filter(|e| e.0 < until) {
            open += delta;
            peak = peak.max(open);
            next += 1;
        }
        out.push(peak.max(0) as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 95.0), Some(7));
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&v, 100.0), Some(20));
        assert_eq!(percentile(&[1, 2, 3], 0.0), Some(1));
    }

    #[test]
    fn the_success_rate_leaves_cancels_out() {
        let s = TemplateStats {
            template: "b".into(),
            title: "B".into(),
            succeeded: 3,
            warnings: 1,
            failed: 1,
            cancelled: 4,
            p50_secs: None,
            p95_secs: None,
        };
        assert_eq!(s.runs(), 8);
        assert_eq!(s.success_rate(), Some(0.75));
        let none = TemplateStats {
            succeeded: 0,
            failed: 0,
            ..s
        };
        assert_eq!(none.success_rate(), None);
    }

    #[test]
    fn peaks_count_the_spans_open_at_once_in_each_interval() {
        // Intervals [0,10) [10,20) [20,30).
        let spans = [
            (-5, 3),   // open at the start
            (2, 4),    // overlaps the first: 2 at once
            (4, 12),   // starts as (2,4) ends: not 3
            (12, 15),  // after (4,12): 1 at a time
            (25, 100), // runs past the end
            (26, 27),
            (40, 50), // after the window
            (5, 5),   // empty
        ];
        assert_eq!(peaks(&spans, 0, 10, 3), [2, 1, 2]);
        assert_eq!(peaks(&[], 0, 10, 2), [0, 0]);
        // A span over several intervals counts in each.
        assert_eq!(peaks(&[(1, 29)], 0, 10, 3), [1, 1, 1]);
    }
}
