//! The delivery worker: one per replica, until shutdown. Every tick it
//! fans new outbox events out into deliveries (one per matching hook),
//! takes the due ones under a lease, posts them concurrently and records
//! each try; a failed try is due again after the hook's backoff (doubling
//! up to `backoff_max`) until `retry_for` after the event, then given up.
//! Replicas share the work through the claims (SKIP LOCKED on PostgreSQL,
//! the one writer on SQLite).

use std::sync::Arc;
use std::time::Duration;

use app::model::webhook::{DeliveryState, EventKind};
use chrono::Utc;
use sea_orm::DatabaseConnection;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{signature, HEADER_DELIVERY, HEADER_EVENT, HEADER_EVENT_ID, HEADER_SIGNATURE};
use crate::config::notify::Hook;
use crate::db::webhooks::{self as store, Attempt, Claimed};

/// How often the worker looks for work: a new event is posted within
/// about this long of its commit.
pub const TICK: Duration = Duration::from_millis(500);
/// Deliveries taken per tick.
const BATCH: u64 = 32;
/// Finished deliveries and their events are kept this long (the admin
/// page's log), then deleted.
const KEEP: chrono::Duration = chrono::Duration::days(30);

/// What the worker needs.
pub struct Deliverer {
    pub db: DatabaseConnection,
    pub hooks: Arc<Vec<Hook>>,
    pub shutdown: CancellationToken,
}

impl Deliverer {
    pub async fn run(self) {
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("opsdeck/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: cannot build the HTTP client; no notifications are sent");
                return;
            }
        };
        // N.B.: a lease outlasts the longest POST, so a delivery is posted
        // again only if the replica posting it died (or missed its record).
        let lease = self
            .hooks
            .iter()
            .map(|h| h.timeout)
            .max()
            .unwrap_or(Duration::ZERO)
            + Duration::from_secs(30);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_cleanup = None::<chrono::DateTime<Utc>>;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.round(&client, lease).await {
                tracing::warn!(error = %e, "webhooks: a delivery round failed; trying again");
            }
            let now = Utc::now();
            if last_cleanup.is_none_or(|t| now - t > chrono::Duration::hours(1)) {
                last_cleanup = Some(now);
                match store::delete_finished_before(&self.db, now - KEEP).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deliveries = n, "webhooks: deleted old deliveries"),
                    Err(e) => tracing::warn!(error = %e, "webhooks: cannot delete old deliveries"),
                }
            }
        }
    }

    async fn round(&self, client: &reqwest::Client, lease: Duration) -> Result<(), sea_orm::DbErr> {
        let hooks = self.hooks.clone();
        let hooks_for = move |e: &store::events::Model| -> Vec<String> {
            let Some(kind) = EventKind::parse(&e.kind) else {
                return Vec::new();
            };
            hooks
                .iter()
                .filter(|h| h.wants(kind, e.template.as_deref(), e.target.as_deref()))
                .map(|h| h.id.clone())
                .collect()
        };
        while store::fan_out(&self.db, 100, &hooks_for).await? == 100 {}
        if self.hooks.is_empty() {
            return Ok(());
        }
        loop {
            let now = Utc::now();
            let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
            let claimed = store::claim_due(&self.db, now, lease_until, BATCH).await?;
            let n = claimed.len() as u64;
            let mut posts = JoinSet::new();
            for c in claimed {
                let hook = self.hooks.iter().find(|h| h.id == c.delivery.hook).cloned();
                let client = client.clone();
                let db = self.db.clone();
                posts.spawn(async move {
                    let id = c.delivery.id;
                    let attempt = match hook {
                        Some(hook) => post(&client, &hook, &c).await,
                        None => Attempt {
                            at: Utc::now(),
                            status: None,
                            error: Some(format!(
                                "hook `{}` is no longer configured",
                                c.delivery.hook
                            )),
                            state: DeliveryState::Failed,
                            next_at: Utc::now(),
                        },
                    };
                    if let Err(e) = store::record(&db, id, attempt).await {
                        tracing::warn!(delivery = id, error = %e, "webhooks: cannot record a try (it is tried again after its lease)");
                    }
                });
            }
            while posts.join_next().await.is_some() {}
            if n < BATCH || self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }
}

/// Posts one delivery; how it went and what comes next.
async fn post(client: &reqwest::Client, hook: &Hook, c: &Claimed) -> Attempt {
    let d = &c.delivery;
    let result = client
        .post(hook.url.clone())
        .timeout(hook.timeout)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(HEADER_EVENT, &d.kind)
        .header(HEADER_EVENT_ID, &d.event_id)
        .header(HEADER_DELIVERY, d.id.to_string())
        .header(HEADER_SIGNATURE, signature(&hook.secret, c.body.as_bytes()))
        .body(c.body.clone())
        .send()
        .await;
    let at = Utc::now();
    let (status, error) = match result {
        Ok(res) if res.status().is_success() => {
            tracing::debug!(hook = %hook.id, event = %d.event_id, "webhooks: delivered");
            return Attempt {
                at,
                status: Some(i32::from(res.status().as_u16())),
                error: None,
                state: DeliveryState::Delivered,
                next_at: at,
            };
        }
        Ok(res) => (
            Some(i32::from(res.status().as_u16())),
            format!("the receiver answered {}", res.status()),
        ),
        Err(e) if e.is_timeout() => (None, format!("no answer within {:?}", hook.timeout)),
        Err(e) if e.is_connect() => (None, format!("cannot connect: {}", root_cause(&e))),
        Err(e) => (None, root_cause(&e)),
    };
    // Tries so far, this one included.
    let tries = d.attempts.saturating_add(1).max(1) as u32;
    let wait = hook
        .backoff
        .saturating_mul(2u32.saturating_pow(tries - 1))
        .min(hook.backoff_max);
    let give_up_at = d.created_at + chrono::Duration::from_std(hook.retry_for).unwrap_or_default();
    let next_at = at + chrono::Duration::from_std(wait).unwrap_or_default();
    let (state, next_at) = if at >= give_up_at {
        tracing::warn!(hook = %hook.id, event = %d.event_id, tries, error = %error, "webhooks: gave up on a delivery");
        (DeliveryState::Failed, at)
    } else {
        tracing::info!(hook = %hook.id, event = %d.event_id, tries, error = %error, "webhooks: a delivery failed; trying again later");
        // The last try comes at the deadline, not after it.
        (DeliveryState::Pending, next_at.min(give_up_at))
    };
    Attempt {
        at,
        status,
        error: Some(error),
        state,
        next_at,
    }
}

/// The innermost cause of an HTTP client error (what an operator can act on).
fn root_cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}
