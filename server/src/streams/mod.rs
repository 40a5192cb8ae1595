//! Live streams over Server-Sent Events: one job's log and state
//! (`/api/jobs/{id}/events`) and the feed of job changes (`/api/events`).
//! Both are written as plain chunked bodies of pre-encoded events, so a
//! batch of lines is one write per subscriber.

pub mod feed;
pub mod job;
pub mod sse;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::future::Future;

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
