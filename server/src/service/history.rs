//! The figures behind the charts: a target's per-template success rate
//! and duration percentiles over the last 30 days, and the dashboard's
//! running and queued jobs over the last hours.
//!
//! Both are read as a few columns per job and computed here: percentiles
//! need the sorted durations anyway (neither SQLite nor PostgreSQL's
//! `percentile_cont` is portable between the two), and the load over time
//! is derived from each job's created, started and finished times (so no
//! sampler has to run, and the history is there from the first job on).

use std::collections::BTreeMap;

use app::backend::Caller;
use app::error::AppError;
use app::model::history::{
    peaks, percentile, Activity, TargetStats, TemplateStats, ACTIVITY_HOURS, ACTIVITY_STEP_SECS,
    STATS_DAYS,
};
use app::model::job::JobState;
use chrono::{Duration, Utc};

use crate::auth::policy;
use crate::db::history::{self, Run, Span};
use crate::http::error::db_error;
use crate::state::AppState;

/// Per template, the finished jobs on `target` over the last [`STATS_DAYS`]
/// (404 for a target the caller may not use).
pub async fn target_stats(
    state: &AppState,
    caller: &Caller,
    target: &str,
) -> Result<TargetStats, AppError> {
    let user = policy::require_user(caller)?;
    let config = &state.config;
    config
        .target(target)
        .filter(|t| policy::may_launch(user, t))
        .ok_or_else(|| AppError::NotFound(format!("no target `{target}` you can use")))?;
    let since = Utc::now() - Duration::days(STATS_DAYS);
    let runs = history::finished_on_target(&state.reader, target, since)
        .await
        .map_err(|e| db_error(e, "reading a target's history"))?;
    let order = |id: &str| config.templates.iter().position(|t| t.id == id);
    let mut templates = per_template(&runs, |id| {
        config
            .template(id)
            .map_or_else(|| id.to_string(), |t| t.title.clone())
    });
    templates.sort_by_key(|t| (order(&t.template).unwrap_or(usize::MAX), t.template.clone()));
    Ok(TargetStats {
        target: target.to_string(),
        days: STATS_DAYS,
        templates,
    })
}

/// Counts and percentiles per template, in no particular order.
fn per_template(runs: &[Run], title: impl Fn(&str) -> String) -> Vec<TemplateStats> {
    let mut by: BTreeMap<&str, (TemplateStats, Vec<i64>)> = BTreeMap::new();
    for run in runs {
        let (s, durations) = by.entry(run.template.as_str()).or_insert_with(|| {
            let stats = TemplateStats {
                template: run.template.clone(),
                title: title(&run.template),
                succeeded: 0,
                warnings: 0,
                failed: 0,
                cancelled: 0,
                p50_secs: None,
                p95_secs: None,
            };
            (stats, Vec::new())
        });
        match run.state {
            JobState::Succeeded => {
                s.succeeded += 1;
                s.warnings += u32::from(run.warnings);
                if let (Some(a), Some(b)) = (run.started_at, run.finished_at) {
                    durations.push((b - a).num_seconds().max(0));
                }
            }
            JobState::Failed => s.failed += 1,
            JobState::Cancelled => s.cancelled += 1,
            _ => {}
        }
    }
    by.into_values()
        .map(|(mut s, mut durations)| {
            durations.sort_unstable();
            s.p50_secs = percentile(&durations, 50.0);
            s.p95_secs = percentile(&durations, 95.0);
            s
        })
        .collect()
}

/// The most jobs the caller may see that ran, and waited, at once in each
/// 10-minute interval of the last [`ACTIVITY_HOURS`].
pub async fn activity(state: &AppState, caller: &Caller) -> Result<Activity, AppError> {
    let user = policy::require_user(caller)?;
    let owned: Vec<String> = policy::launchable_targets(user, &state.config)
        .into_iter()
        .map(|t| t.id.clone())
        .collect();
    let visible = policy::visible_jobs(user, &owned);
    let now = Utc::now();
    let n = (ACTIVITY_HOURS * 3600 / ACTIVITY_STEP_SECS) as usize;
    let start = now - Duration::seconds(ACTIVITY_STEP_SECS * n as i64);
    let spans = history::alive_since(&state.reader, &visible, start)
        .await
        .map_err(|e| db_error(e, "reading the recent jobs"))?;
    let (running, queued) = load(&spans, start.timestamp_millis(), now.timestamp_millis(), n);
    Ok(Activity {
        start,
        step_secs: ACTIVITY_STEP_SECS,
        running,
        queued,
    })
}

/// Peaks of running and of queued jobs in `n` intervals from `start` to
/// `now` (milliseconds). A job waits from its creation until it starts (or
/// ends without starting: cancelled in the queue) and runs from its start
/// to its end; one not over yet lasts until `now`.
fn load(spans: &[Span], start: i64, now: i64, n: usize) -> (Vec<u32>, Vec<u32>) {
    let step = ((now - start) / n.max(1) as i64).max(1);
    let mut running = Vec::new();
    let mut queued = Vec::new();
    for s in spans {
        let end = s.finished_at.map_or(now, |t| t.timestamp_millis());
        let created = s.created_at.timestamp_millis();
        match s.started_at {
            Some(started) => {
                let started = started.timestamp_millis();
                queued.push((created, started));
                running.push((started, end));
            }
            None => queued.push((created, end)),
        }
    }
    (
        peaks(&running, start, step, n),
        peaks(&queued, start, step, n),
    )
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone};

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn run(template: &str, state: JobState, warnings: bool, secs: Option<i64>) -> Run {
        Run {
            template: template.into(),
            state,
            warnings,
            started_at: secs.map(|_| at(0)),
            finished_at: Some(at(secs.unwrap_or(0))),
        }
    }

    #[test]
    fn each_template_gets_its_counts_and_the_percentiles_of_its_successes() {
        let mut runs: Vec<Run> = (1..=20)
            .map(|d| run("backup", JobState::Succeeded, d == 3, Some(d * 10)))
            .collect();
        runs.push(run("backup", JobState::Failed, false, Some(5000)));
        runs.push(run("backup", JobState::Cancelled, false, None));
        runs.push(run("restore", JobState::Failed, false, Some(1)));
        let mut stats = per_template(&runs, |id| id.to_uppercase());
        stats.sort_by(|a, b| a.template.cmp(&b.template));
        let b = &stats[0];
        assert_eq!(
            (b.title.as_str(), b.succeeded, b.warnings),
            ("BACKUP", 20, 1)
        );
        assert_eq!((b.failed, b.cancelled, b.runs()), (1, 1, 22));
        // The failed job's 5,000 s is not a duration of a backup that worked.
        assert_eq!((b.p50_secs, b.p95_secs), (Some(100), Some(190)));
        let r = &stats[1];
        assert_eq!(
            (r.failed, r.success_rate(), r.p50_secs),
            (1, Some(0.0), None)
        );
    }

    #[test]
    fn the_load_splits_each_job_into_its_wait_and_its_run() {
        let ms = |s: i64| at(s).timestamp_millis();
        let spans = [
            // Waited 0–100 s, ran 100–700 s.
            Span {
                created_at: at(0),
                started_at: Some(at(100)),
                finished_at: Some(at(700)),
            },
            // Cancelled in the queue at 650 s.
            Span {
                created_at: at(50),
                started_at: None,
                finished_at: Some(at(650)),
            },
            // Still running since 1,000 s.
            Span {
                created_at: at(900),
                started_at: Some(at(1000)),
                finished_at: None,
            },
        ];
        let (running, queued) = load(&spans, ms(0), ms(1200), 2);
        assert_eq!(running, [1, 1]);
        // Two waited at once before 600 s; one after.
        assert_eq!(queued, [2, 1]);
    }
}
