//! The guard: one middleware in front of every route. It
//! 1. authenticates — `Authorization: Bearer <token>`, else the session cookie —
//!    and puts a [`Caller`] in the request's extensions for handlers and
//!    server functions;
//! 2. refuses cross-site state changes: an unsafe method or a WebSocket
//!    upgrade carrying the session cookie (or any `Origin`) must come from
//!    our own origin; bearer requests are exempt;
//! 3. applies the route's [`Access`] from the route table: anonymous page
//!    visits go to `/login?next=…`, anonymous API calls get 401, non-admins
//!    get 403 (admin pages render the 403 page themselves, with status 403).
//!
//! N.B.: a matched route with no rule in the table is refused (fail closed).

use std::net::SocketAddr;
use std::sync::Arc;

use app::backend::Caller;
use app::error::AppError;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::auth::session;
use crate::http::error::{db_error, ApiError};
use crate::http::routes::{Access, Kind, RouteTable};
use crate::state::AppState;

/// The guard's state: the server and its route table.
#[derive(Clone)]
pub struct GuardState {
    pub app: AppState,
    pub table: Arc<RouteTable>,
}

pub async fn guard(State(g): State<GuardState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        return next.run(req).await;
    };
    let Some(rule) = g.table.lookup(&method, &path).cloned() else {
        tracing::error!(%method, %path, "route has no access rule in the route table; refusing");
        return ApiError(AppError::Forbidden("this route has no access rule".into()))
            .into_response();
    };
    let config = &g.app.config;
    if rule.access == Access::Agent {
        let caller = Caller {
            ip: client_ip(&req, config.server.trust_forwarded_for),
            ..Caller::default()
        };
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    let headers = req.headers();

    let mut caller = Caller {
        ip: client_ip(&req, config.server.trust_forwarded_for),
        secure: is_secure(headers, config.server.public_url.as_deref()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
        ..Caller::default()
    };
    let mut refresh = None;
    let mut clear_stale_cookie = false;

    let bearer = headers.get(header::AUTHORIZATION);
    if let Some(value) = bearer {
        let Some(token) = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return unauthorized("use `Authorization: Bearer <token>`");
        };
        match session::resolve_token(&g.app.reader, &g.app.db, token).await {
            Ok(Some((user, token_id))) => {
                caller.user = Some(user);
                caller.token = Some(token_id);
            }
            Ok(None) => {
                return unauthorized(
                    "the API token is invalid or revoked: create a new one on your Account page",
                )
            }
            Err(e) => return ApiError(db_error(e, "checking an API token")).into_response(),
        }
    } else if let Some(token) = session::cookie_token(headers) {
        match session::resolve(&g.app.reader, &g.app.db, &token, config.auth.session_idle).await {
            Ok(Some(s)) => {
                if s.touched {
                    refresh = Some(session::set_cookie(
                        &token,
                        config.auth.session_idle,
                        caller.secure,
                    ));
                }
                caller.user = Some(s.user);
                caller.session = Some(s.id_hash);
            }
            Ok(None) => clear_stale_cookie = true,
            Err(e) => return ApiError(db_error(e, "checking a session")).into_response(),
        }
    }

    // A WebSocket upgrade is a GET that opens a channel for commands: it
    // gets the same origin check as a state change (cross-site WebSocket
    // hijacking).
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if (!method.is_safe() || upgrade) && bearer.is_none() {
        let has_origin = headers.contains_key(header::ORIGIN);
        if (caller.session.is_some() || has_origin)
            && !same_origin(headers, config.server.public_url.as_deref())
        {
            tracing::warn!(%method, %path, ip = ?caller.ip, "refused a cross-site request");
            return ApiError(AppError::Forbidden(
                "cross-site request refused: send it from opsdeck's own pages, or use an API token"
                    .into(),
            ))
            .into_response();
        }
    }

    let signed_in = caller.user.is_some();
    let admin = caller.user.as_ref().is_some_and(|u| u.is_admin());
    match (rule.access, rule.kind) {
        (Access::Public | Access::Agent, _) => {}
        (_, Kind::Page) if !signed_in => {
            let target = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            return Redirect::to(&format!("/login?next={}", encode_component(&target)))
                .into_response();
        }
        (_, _) if !signed_in => return unauthorized("sign in to continue"),
        (Access::Admin, Kind::Page) => {} // the page renders the 403 page with status 403
        (Access::Admin, _) if !admin => return ApiError(AppError::admin_only()).into_response(),
        _ => {}
    }

    req.extensions_mut().insert(caller.clone());
    let mut res = next.run(req).await;
    let cookie =
        refresh.or_else(|| clear_stale_cookie.then(|| session::clear_cookie(caller.secure)));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

fn unauthorized(message: &str) -> Response {
    let mut res = ApiError(AppError::Unauthorized(message.into())).into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"opsdeck\""),
    );
    *res.status_mut() = StatusCode::UNAUTHORIZED;
    res
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when
/// `[server].trust_forwarded_for` says a proxy sets it.
fn client_ip(req: &Request, trust_forwarded_for: bool) -> Option<String> {
    if trust_forwarded_for {
        if let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        {
            return Some(ip);
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// Whether the browser sees opsdeck over https.
fn is_secure(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    public_url.is_some_and(|u| u.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<&str> {
    let scheme_end = url.find("://")? + 3;
    let end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    Some(&url[..end])
}

/// Whether the request's `Origin` (or, without one, its `Referer`) is
/// opsdeck itself: the configured public URL, or the `Host` it was sent to.
fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let claimed = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(origin_of)
        });
    let Some(claimed) = claimed else {
        return false;
    };
    if public_url
        .and_then(origin_of)
        .is_some_and(|o| o.eq_ignore_ascii_case(claimed))
    {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    claimed.split_once("://").is_some_and(|(scheme, rest)| {
        (scheme == "http" || scheme == "https") && rest.eq_ignore_ascii_case(host)
    })
}

/// Percent-encodes a value for a query string.
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn same_origin_accepts_our_host_or_public_url_only() {
        let ours = headers(&[
            ("host", "ops.local:3000"),
            ("origin", "http://ops.local:3000"),
        ]);
        assert!(same_origin(&ours, None));
        let evil = headers(&[
            ("host", "ops.local:3000"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!same_origin(&evil, None));
        let by_referer = headers(&[
            ("host", "ops.local:3000"),
            ("referer", "http://ops.local:3000/jobs/4"),
        ]);
        assert!(same_origin(&by_referer, None));
        let neither = headers(&[("host", "ops.local:3000")]);
        assert!(!same_origin(&neither, None));
        let proxied = headers(&[
            ("host", "10.0.0.5:3000"),
            ("origin", "https://ops.example.com"),
        ]);
        assert!(same_origin(&proxied, Some("https://ops.example.com")));
        assert!(!same_origin(&proxied, Some("https://other.example.com")));
        let suffix_trick = headers(&[
            ("host", "ops.local"),
            ("origin", "http://ops.local.evil.example"),
        ]);
        assert!(!same_origin(&suffix_trick, None));
    }

    #[test]
    fn next_is_encoded_for_the_login_redirect() {
        assert_eq!(
            encode_component("/jobs?state=running&x=1"),
            "/jobs%3Fstate%3Drunning%26x%3D1"
        );
    }
}
