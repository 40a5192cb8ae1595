//! Periodic housekeeping: purge idle sessions. Runs until shutdown.

use std::time::Duration;

use chrono::Utc;

use crate::db::sessions;
use crate::state::AppState;

/// How often housekeeping runs.
const EVERY: Duration = Duration::from_secs(3600);

pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let idle = chrono::Duration::from_std(state.config.auth.session_idle)
            .unwrap_or(chrono::Duration::days(7));
        match sessions::delete_idle(&state.db, Utc::now() - idle).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "purged idle sessions"),
            Err(e) => tracing::warn!(error = %e, "could not purge idle sessions"),
        }
    }
}
