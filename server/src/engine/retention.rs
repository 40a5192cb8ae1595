//! Retention: when `[retention].days` is set, finished jobs older than that
//! are deleted with their logs, every `[retention].interval`; list pages are
//! told through the feed (`job.deleted`), after each deletion committed.

use chrono::Utc;
use sea_orm::DatabaseConnection;

use crate::config::RetentionConfig;
use crate::db::jobs;
use crate::engine::Sink;

/// Jobs deleted per transaction.
const CHUNK: u64 = 200;

pub async fn run(db: DatabaseConnection, sink: Sink, config: RetentionConfig) {
    let Some(days) = config.days else {
        return;
    };
    let mut tick = tokio::time::interval(config.interval);
    loop {
        tokio::select! {
            _ = sink.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&db, &sink, days).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, days, "retention deleted old jobs"),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
    }
}

/// Deletes finished jobs older than `days`; returns how many.
pub async fn sweep(
    db: &DatabaseConnection,
    sink: &Sink,
    days: u32,
) -> Result<usize, sea_orm::DbErr> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
    let mut total = 0;
    loop {
        let ids = jobs::finished_before(db, cutoff, CHUNK).await?;
        if ids.is_empty() {
            return Ok(total);
        }
        jobs::delete(db, &ids).await?;
        for id in &ids {
            sink.hub.deleted(*id);
        }
        total += ids.len();
        if sink.shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}
