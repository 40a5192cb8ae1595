//! The request body limit, for every route: pages, server functions (JSON
//! and form posts), the REST API. A body over `[server].max_body_bytes`
//! answers 413 with a JSON error that says the limit, and is counted in
//! `/metrics` (`opsdeck_limit_refusals_total{limit="request_body"}`).
//!
//! A declared `Content-Length` over the limit is refused before a byte of
//! the body is read; a body without one (chunked) is read through
//! `http_body_util::Limited` up to the limit and refused as soon as it
//! passes it. A body within the limit is handed on already read, so every
//! handler (axum extractors and Leptos' server functions alike) sees it
//! whole and none needs its own limit.

use std::sync::Arc;

use app::error::AppError;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::header::CONNECTION;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::http::error::ApiError;
use crate::metrics::{Limit, Refusals};

/// The body limit layer's state.
#[derive(Clone)]
pub struct BodyLimit {
    /// `[server].max_body_bytes`.
    pub max: usize,
    pub refusals: Arc<Refusals>,
}

pub async fn limit_body(State(limit): State<BodyLimit>, req: Request, next: Next) -> Response {
    let hint = req.body().size_hint();
    if hint.exact() == Some(0) {
        return next.run(req).await;
    }
    if hint.lower() > limit.max as u64 {
        return too_large(&limit);
    }
    let (parts, body) = req.into_parts();
    match Limited::new(body, limit.max).collect().await {
        Ok(collected) => {
            let req = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(req).await
        }
        Err(e) if e.is::<LengthLimitError>() => too_large(&limit),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a request body");
            ApiError(AppError::bad_request(
                "the request body could not be read to its end: send it again",
            ))
            .into_response()
        }
    }
}

fn too_large(limit: &BodyLimit) -> Response {
    limit.refusals.count(Limit::RequestBody);
    let mut res = ApiError(AppError::TooLarge(format!(
        "the request body is larger than {}, the most this server accepts: send less, or ask the operator to raise [server].max_body_bytes",
        describe(limit.max)
    )))
    .into_response();
    // N.B.: the rest of the body is never read, so the connection cannot
    // carry another request.
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

/// `1 MiB (1048576 bytes)`, or plain bytes below 1 KiB.
fn describe(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB ({n} bytes)", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB ({n} bytes)", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_said_in_units_and_bytes() {
        assert_eq!(describe(1 << 20), "1 MiB (1048576 bytes)");
        assert_eq!(describe(64 << 10), "64 KiB (65536 bytes)");
        assert_eq!(describe(1500), "1500 bytes");
    }
}
