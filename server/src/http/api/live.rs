//! `/api/live`: the one live connection a browser shares among its tabs
//! (`GET`, an event stream served bare like the others), and the requests
//! beside it that add and drop its subscriptions. docs/live.md is the
//! protocol.

use app::backend::Caller;
use app::error::AppError;
use app::model::live::{Subscribe, Subscription, Unsubscribe, MAX_SUBSCRIPTIONS};
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Extension;

use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::routes::{Access, Kind, Rule};
use crate::service::{jobs, live as service};
use crate::state::AppState;
use crate::streams::mux;

pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    let r = |m: Method, p: &str| Rule::new(m, p, Kind::Api, Access::Authenticated);
    vec![
        (
            Rule::new(
                Method::GET,
                "/api/live",
                Kind::EventStream,
                Access::Authenticated,
            ),
            get(open),
        ),
        (
            r(Method::POST, "/api/live/{conn}/subscribe"),
            post(subscribe),
        ),
        (
            r(Method::POST, "/api/live/{conn}/unsubscribe"),
            post(unsubscribe),
        ),
    ]
}

/// The subscriptions a connection's URL names: `?sub=1:feed&sub=3:job:12:57`.
fn subscriptions(query: Option<&str>) -> Result<Vec<Subscription>, AppError> {
    let mut subs: Vec<Subscription> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "sub" {
            return Err(AppError::field(
                key.to_string(),
                format!("unknown parameter `{key}`: a live connection takes only `sub`"),
            ));
        }
        let sub: Subscription = value.parse().map_err(|e| AppError::field("sub", e))?;
        if subs.iter().any(|s| s.sub == sub.sub) {
            return Err(AppError::field(
                "sub",
                format!("subscription {} is named twice", sub.sub),
            ));
        }
        subs.push(sub);
    }
    if subs.len() > MAX_SUBSCRIPTIONS {
        return Err(AppError::field(
            "sub",
            format!("a live connection carries at most {MAX_SUBSCRIPTIONS} subscriptions"),
        ));
    }
    Ok(subs)
}

/// `GET /api/live?sub=…`: the connection; `hello` on sub 0 names it.
async fn open(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let subs = subscriptions(query.as_deref())?;
    let lease = jobs::lease(&s, &c)?;
    let conn = service::open(&s, &c, &subs).await?;
    Ok(crate::streams::leased_response_framed(
        conn,
        lease,
        mux::revoked_frame,
        |mut conn| async move { conn.next_chunk().await.map(|b| (b, conn)) },
    ))
}

/// `POST /api/live/{conn}/subscribe` `{"sub", "stream", "after"}`: 204.
async fn subscribe(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(conn): Path<String>,
    ApiJson(req): ApiJson<Subscribe>,
) -> Result<StatusCode, ApiError> {
    service::subscribe(&s, &c, &conn, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/live/{conn}/unsubscribe` `{"sub"}`: 204.
async fn unsubscribe(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(conn): Path<String>,
    ApiJson(req): ApiJson<Unsubscribe>,
) -> Result<StatusCode, ApiError> {
    service::unsubscribe(&s, &c, &conn, req.sub)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_url_names_its_subscriptions_and_a_bad_one_names_the_field() {
        let subs = subscriptions(Some("sub=1:feed&sub=3%3Ajob%3A12%3A57")).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[1].after, Some(57));
        assert!(subscriptions(None).unwrap().is_empty());
        let err = subscriptions(Some("sub=1:feed&sub=1:job:2")).unwrap_err();
        assert_eq!(err.field_name(), Some("sub"));
        let err = subscriptions(Some("after=3")).unwrap_err();
        assert_eq!(err.field_name(), Some("after"));
        let err = subscriptions(Some("sub=2:job:x")).unwrap_err();
        assert_eq!(err.field_name(), Some("sub"));
    }
}
