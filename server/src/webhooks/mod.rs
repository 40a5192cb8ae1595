//! Webhook notifications (`[[notify]]`, docs/automation.md).
//!
//! An event is written to the outbox (`webhook_events`) by [`enqueue`]
//! inside the transaction of what it announces: a job's end goes through
//! `engine::transition`, which enqueues its `job.*` event (and `agent.lost`
//! for a job failed because its agent was lost) in the same commit, so a
//! crash can never keep the end and lose the event, nor the reverse. The
//! delivery worker ([`deliver`]) then makes one delivery per matching hook
//! and posts each until the receiver answers 2xx, with backoff, for the
//! hook's `retry_for` (24 h by default): at least once, and a restart
//! resumes where it stopped, since every step is a row.
//!
//! Every POST carries the event's JSON body and these headers:
//! - `X-Opsdeck-Event`: the kind (`job.failed`, …);
//! - `X-Opsdeck-Event-Id`: the event's id (a UUID), the same on every try
//!   and for every hook: receivers deduplicate on it;
//! - `X-Opsdeck-Delivery`: the delivery's number (one per event and hook);
//! - `X-Opsdeck-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body
//!   bytes with the hook's secret.

pub mod deliver;

use std::sync::Arc;

use app::model::webhook::EventKind;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::config::notify::Hook;
use crate::db::jobs::JobRow;
use crate::db::webhooks::{self as store, NewEvent};

/// The header names, as receivers read them.
pub const HEADER_EVENT: &str = "x-opsdeck-event";
pub const HEADER_EVENT_ID: &str = "x-opsdeck-event-id";
pub const HEADER_DELIVERY: &str = "x-opsdeck-delivery";
pub const HEADER_SIGNATURE: &str = "x-opsdeck-signature";

/// An event to announce.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// The template and target it concerns, if any (hooks filter on them).
    pub template: Option<String>,
    pub target: Option<String>,
    /// The payload's fields besides `id`, `kind` and `at`.
    pub data: Map<String, Value>,
}

impl Event {
    /// An event with `data` (a JSON object; anything else is put under
    /// `"data"`).
    pub fn new(
        kind: EventKind,
        template: Option<&str>,
        target: Option<&str>,
        data: Value,
    ) -> Event {
        let data = match data {
            Value::Object(m) => m,
            other => Map::from_iter([("data".to_string(), other)]),
        };
        Event {
            kind,
            template: template.map(str::to_string),
            target: target.map(str::to_string),
            data,
        }
    }

    /// The `job.*` event of a job that has just ended (None if it has not).
    pub fn job_end(row: &JobRow) -> Option<Event> {
        let kind = EventKind::of_job_end(row.state, row.warnings)?;
        Some(Event::new(
            kind,
            Some(&row.template),
            Some(&row.target),
            json!({ "job": row.to_job() }),
        ))
    }

    /// `agent.lost` for a job failed because its agent was lost.
    pub fn agent_lost(row: &JobRow) -> Event {
        Event::new(
            EventKind::AgentLost,
            Some(&row.template),
            Some(&row.target),
            json!({ "agent": row.agent, "job": row.to_job() }),
        )
    }

    /// The body every hook is sent: `{"id", "kind", "at", …data}`.
    fn body(&self, id: &str, at: DateTime<Utc>) -> String {
        let mut m = Map::new();
        m.insert("id".into(), id.into());
        m.insert("kind".into(), self.kind.name().into());
        m.insert(
            "at".into(),
            at.to_rfc3339_opts(SecondsFormat::Millis, true).into(),
        );
        for (k, v) in &self.data {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(m).to_string()
    }
}

/// The configured hooks, as the writers of events see them: an event that
/// no hook wants is not written to the outbox at all (a job's end then
/// costs no row and no fan-out). The delivery worker filters again with
/// its own replica's hooks (replicas share one configuration).
#[derive(Clone, Default)]
pub struct Hooks(Arc<[Hook]>);

impl Hooks {
    pub fn new(hooks: &[Hook]) -> Hooks {
        Hooks(hooks.into())
    }

    /// Whether any hook wants `event`.
    pub fn want(&self, event: &Event) -> bool {
        self.0.iter().any(|h| {
            h.wants(
                event.kind,
                event.template.as_deref(),
                event.target.as_deref(),
            )
        })
    }
}

/// Writes `event` to the outbox inside `txn` (the transaction of what it
/// announces) if one of `hooks` wants it; its id, or `None` if none does
/// (then nothing is written). Nothing is sent before that transaction
/// commits.
pub async fn enqueue(
    txn: &impl ConnectionTrait,
    hooks: &Hooks,
    event: &Event,
) -> Result<Option<String>, DbErr> {
    if !hooks.want(event) {
        return Ok(None);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let at = Utc::now();
    store::insert_event(
        txn,
        NewEvent {
            event_id: &id,
            kind: event.kind.name(),
            template: event.template.as_deref(),
            target: event.target.as_deref(),
            body: event.body(&id, at),
            at,
        },
    )
    .await?;
    Ok(Some(id))
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` with `secret`, as the
/// `X-Opsdeck-Signature` header carries it.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // N.B.: HMAC takes a key of any length; `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_body_carries_id_kind_and_time_before_the_data() {
        let e = Event::new(
            EventKind::ScheduleMissed,
            Some("backup"),
            None,
            json!({"schedule": "nightly", "id": "not this one"}),
        );
        let at = DateTime::parse_from_rfc3339("2026-12-05T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let body: Value = serde_json::from_str(&e.body("e-1", at)).unwrap();
        assert_eq!(body["id"], "e-1");
        assert_eq!(body["kind"], "schedule.missed");
        assert_eq!(body["at"], "2026-12-05T03:00:00.000Z");
        assert_eq!(body["schedule"], "nightly");
    }
}
