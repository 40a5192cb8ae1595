//! Live streams over Server-Sent Events: one job's log and state
//! (`/api/jobs/{id}/events`), the feed of job changes (`/api/events`), and
//! the one connection a browser shares among its tabs, which carries both
//! kinds as subscriptions (`/api/live`, [`mux`]).
//! Both are written as plain chunked bodies of pre-encoded events, so a
//! batch of lines is one write per subscriber.
//!
//! Every stream runs under a [`Lease`]: its place in the per-user and
//! per-address counts ([`limits`]) and a hold on the credential that opened
//! it (`auth::revocation`). When that credential is revoked the stream
//! sends `revoked` (with the reason) and ends ([`leased_response`]).

pub mod feed;
pub mod job;
pub mod limits;
pub mod mux;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sea_orm::DatabaseConnection;
use std::future::Future;
use tokio_util::sync::CancellationToken;

use app::model::event::Revoked;

use crate::auth::revocation::Hold;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// What a stream uses of the server: committed rows to catch up from, the
/// hub to follow (and the tails feeding it), counters, and the shutdown
/// signal.
#[derive(Clone)]
pub struct StreamDeps {
    /// Reads beside the writer (replays).
    pub reader: DatabaseConnection,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// How often an idle stream sends a keepalive comment.
    pub keepalive: Duration,
    /// On PostgreSQL: the tails that bring other replicas' commits of a
    /// watched job into the hub (`notify::tail`).
    pub tails: Option<crate::notify::tail::Tails>,
}

impl StreamDeps {
    /// Subscribes to a job in the hub and, on PostgreSQL, makes sure the
    /// job's committed rows are tailed for it.
    fn follow(&self, job_id: i64) -> tokio::sync::broadcast::Receiver<crate::hub::Update> {
        let rx = self.hub.subscribe(job_id);
        if let Some(tails) = &self.tails {
            tails.watch(job_id);
        }
        rx
    }
}

impl StreamDeps {
    /// The keepalive timer of a new stream (first tick one interval away).
    fn keepalive_timer(&self) -> tokio::time::Interval {
        let every = self.keepalive;
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    }
}

/// An SSE response whose body is produced chunk by chunk by `next`.
pub fn response<S, F, Fut>(source: S, next: F) -> Response
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Bytes, S)>> + Send + 'static,
{
    let body = futures::stream::unfold(source, move |s| {
        let fut = next(s);
        async move {
            fut.await
                .map(|(bytes, s)| (Ok::<_, std::convert::Infallible>(bytes), s))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// What keeps a stream allowed: its slot in the stream limits and its hold
/// on the caller's credential. Dropped with the stream.
pub struct Lease {
    pub hold: Hold,
    pub slot: limits::Slot,
}

/// [`response`] for a stream under `lease`: when the lease's credential is
/// revoked, the stream sends a last `revoked` event with the reason and
/// ends, whatever it was waiting for.
pub fn leased_response<S, F, Fut>(source: S, lease: Lease, next: F) -> Response
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Bytes, S)>> + Send + 'static,
{
    leased_response_framed(source, lease, revoked_event, next)
}

/// `revoked` as a single stream sends it.
fn revoked_event(event: &Revoked) -> Bytes {
    sse::event_json(Revoked::NAME, &event.data())
}

/// [`leased_response`] whose last `revoked` event is written by `revoked`
/// (the shared connection tags it: `mux::revoked_frame`).
pub fn leased_response_framed<S, F, Fut>(
    source: S,
    lease: Lease,
    revoked: fn(&Revoked) -> Bytes,
    next: F,
) -> Response
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<(Bytes, S)>> + Send + 'static,
{
    let next = Arc::new(next);
    response(
        (Some(source), lease),
        move |(source, mut lease): (Option<S>, Lease)| {
            let next = next.clone();
            async move {
                let source = source?;
                let chunk = next(source);
                tokio::select! {
                    biased;
                    reason = lease.hold.revoked() => {
                        let event = Revoked { reason: reason.to_string() };
                        Some((revoked(&event), (None, lease)))
                    }
                    chunk = chunk => chunk.map(|(bytes, s)| (bytes, (Some(s), lease))),
                }
            }
        },
    )
}
