//! The browser-facing security headers, set in one place for every
//! response (pages, server functions, the API, static files, errors):
//!
//! - every page gets a Content-Security-Policy that lets scripts, styles,
//!   connections, images and fonts come only from opsdeck's own origin.
//!   Inline scripts (Leptos' hydration bootstrap and resource data, the
//!   import map) run only with this response's nonce; the wasm needs
//!   `'wasm-unsafe-eval'` (nothing else of eval). Nothing may frame a page
//!   (`frame-ancestors 'none'`);
//! - every other response gets `default-src 'none'`, so a response that is
//!   not a page can never act as one; a script adds `connect-src 'self'`
//!   (a script's own policy applies only when it runs as a worker, and the
//!   shared worker of `public/live.mjs` opens the live connection);
//! - `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`
//!   everywhere; `Cache-Control: no-store` on the API and on pages (which
//!   show what one user may see, and carry a nonce that must not be
//!   replayed from a cache) unless a handler chose its own (event streams
//!   say `no-cache`).
//!
//! The nonce is made here, per request, and handed to Leptos
//! ([`provide_nonce`]), which writes it on the inline scripts it renders;
//! the header is written from the same value, so the two cannot differ.
//!
//! N.B.: styles. `<style>` elements need the nonce (xterm.js creates three;
//! `public/xterm-lazy.mjs` stamps the nonce on them), but style *attributes*
//! are allowed (`style-src-attr 'unsafe-inline'`): the virtualised log
//! positions its rows with them, ANSI 256-colour and RGB output is coloured
//! with them, and xterm.js colours its cells with them. An attribute can
//! neither run script nor load anything from elsewhere (`img-src`,
//! `font-src` stay `'self'`).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use leptos::prelude::{provide_context, use_context};

/// This request's CSP nonce: 128 random bits, hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CspNonce(Arc<str>);

impl CspNonce {
    pub fn new() -> CspNonce {
        CspNonce(hex::encode(rand::random::<[u8; 16]>()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CspNonce {
    fn default() -> Self {
        CspNonce::new()
    }
}

/// The policy of a page rendered with `nonce`.
pub fn page_policy(nonce: &CspNonce) -> String {
    let n = nonce.as_str();
    [
        "default-src 'self'".to_string(),
        format!("script-src 'self' 'nonce-{n}' 'wasm-unsafe-eval'"),
        format!("style-src 'self' 'nonce-{n}'"),
        "style-src-attr 'unsafe-inline'".to_string(),
        "img-src 'self'".to_string(),
        "font-src 'self'".to_string(),
        "connect-src 'self'".to_string(),
        "frame-src 'none'".to_string(),
        "frame-ancestors 'none'".to_string(),
        "object-src 'none'".to_string(),
        "base-uri 'none'".to_string(),
        "form-action 'self'".to_string(),
    ]
    .join("; ")
}

/// The policy of every response that is not a page.
pub const NOT_A_PAGE_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// The policy of a script: as [`NOT_A_PAGE_POLICY`], but a worker started
/// from it may reach its own origin (the live connection's shared worker).
pub const SCRIPT_POLICY: &str = "default-src 'none'; connect-src 'self'; frame-ancestors 'none'";

/// The middleware: makes the nonce, runs the request, sets the headers.
pub async fn security_headers(mut req: Request, next: Next) -> Response {
    let nonce = CspNonce::new();
    let api = req.uri().path().starts_with("/api/");
    req.extensions_mut().insert(nonce.clone());
    let mut res = next.run(req).await;
    apply(res.headers_mut(), &nonce, api);
    res
}

fn apply(h: &mut HeaderMap, nonce: &CspNonce, api: bool) {
    let html = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/html"));
    let script = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("javascript"));
    let policy = if html {
        HeaderValue::from_str(&page_policy(nonce))
            .unwrap_or(HeaderValue::from_static(NOT_A_PAGE_POLICY))
    } else if script {
        HeaderValue::from_static(SCRIPT_POLICY)
    } else {
        HeaderValue::from_static(NOT_A_PAGE_POLICY)
    };
    h.insert(CONTENT_SECURITY_POLICY, policy);
    if html {
        // For browsers that predate `frame-ancestors`.
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if (api || html) && !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Hands this request's nonce to Leptos, replacing the one `leptos_axum`
/// made (it runs before this), so every inline script Leptos renders carries
/// the nonce the header names. Called in the router's additional context.
pub fn provide_nonce() {
    let nonce = use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<CspNonce>().cloned());
    if let Some(nonce) = nonce {
        provide_context(leptos::nonce::Nonce::from_value(nonce.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str, api: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        apply(&mut h, &CspNonce::from_value("abc123"), api);
        h
    }

    impl CspNonce {
        fn from_value(v: &str) -> CspNonce {
            CspNonce(v.into())
        }
    }

    #[test]
    fn a_page_allows_only_its_own_origin_and_nonce() {
        let h = headers("text/html; charset=utf-8", false);
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        let directive = |name: &str| {
            csp.split("; ")
                .find(|d| d.split(' ').next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} in {csp}"))
        };
        // No 'unsafe-inline', no 'unsafe-eval', no other origin.
        assert_eq!(
            directive("script-src"),
            "script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval'"
        );
        assert_eq!(directive("style-src"), "style-src 'self' 'nonce-abc123'");
        assert_eq!(directive("connect-src"), "connect-src 'self'");
        assert_eq!(directive("frame-ancestors"), "frame-ancestors 'none'");
        assert_eq!(directive("default-src"), "default-src 'self'");
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[REFERRER_POLICY], "same-origin");
        assert_eq!(h[X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[CACHE_CONTROL], "no-store");
    }

    #[test]
    fn other_responses_can_never_act_as_a_page_and_the_api_is_not_stored() {
        let h = headers("application/json", true);
        assert_eq!(h[CONTENT_SECURITY_POLICY], NOT_A_PAGE_POLICY);
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");

        let mut stream = HeaderMap::new();
        stream.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        stream.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        apply(&mut stream, &CspNonce::new(), true);
        assert_eq!(
            stream[CACHE_CONTROL], "no-cache",
            "a handler's choice stays"
        );
    }

    #[test]
    fn a_script_may_connect_to_its_own_origin_when_it_runs_as_a_worker() {
        let h = headers("text/javascript", false);
        assert_eq!(h[CONTENT_SECURITY_POLICY], SCRIPT_POLICY);
        assert!(!h.contains_key(CACHE_CONTROL));
    }

    #[test]
    fn each_request_gets_its_own_nonce() {
        assert_ne!(CspNonce::new(), CspNonce::new());
        assert_eq!(CspNonce::new().as_str().len(), 32);
    }
}
