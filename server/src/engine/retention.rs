//! Retention: when `[retention].days` is set, finished jobs older than that
//! are deleted with their logs, every `[retention].interval`; list pages are
//! told through the feed (`job.deleted`).

use chrono::Utc;

use crate::db::jobs;
use crate::state::AppState;

/// Jobs deleted per transaction.
const CHUNK: u64 = 200;

pub async fn run(state: AppState) {
    let Some(days) = state.config.retention.days else {
        return;
    };
    let mut tick = tokio::time::interval(state.config.retention.interval);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&state, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, days, "retention deleted old jobs"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}

/// Deletes finished jobs older than `days`; returns how many.
pub async fn sweep(state: &AppState, days: u32) -> Result<usize, sea_orm::DbErr> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
    let mut total = 0;
    loop {
        let ids = jobs::finished_before(&state.db, cutoff, CHUNK).await?;
        if ids.is_empty() {
            return Ok(total);
        }
        jobs::delete(&state.db, &ids).await?;
        for id in &ids {
            state.hub.deleted(*id);
        }
        total += ids.len();
        if state.shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}
