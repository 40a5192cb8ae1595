//! The HTTP surface: one router holding the Leptos pages and server functions,
//! the REST API, health and the static site, with the guard in front of every
//! route. Built by [`router`] apart from `main`, so tests serve it on
//! `127.0.0.1:0`. The site's files (JS, wasm, CSS, `public/`) are served
//! from memory by the fallback (`crate::site`).

pub mod api;
pub mod bare;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod routes;
pub mod security;
pub mod serve;

use std::sync::Arc;

use app::backend::SharedBackend;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::guard::{guard, GuardState};
use crate::state::AppState;
use routes::RouteTable;

/// Every rule of the route table: pages, server functions, API, infra.
pub fn route_table() -> RouteTable {
    let mut rules = routes::pages();
    rules.extend(routes::server_fns());
    rules.extend(routes::infra());
    rules.extend(api::routes().into_iter().map(|(rule, _)| rule));
    RouteTable::new(rules)
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let leptos_routes = generate_route_list(app::App);
    let backend: SharedBackend = Arc::new(state.clone());
    let options = state.leptos.clone();
    let assets = app::AssetUrls(Arc::new(state.site.urls()));
    let page_assets = assets.clone();
    let guard_state = GuardState {
        app: state.clone(),
        table: Arc::new(route_table()),
    };
    let body_limit = limits::BodyLimit {
        max: state.config.server.max_body_bytes,
        refusals: state.metrics.refusals().clone(),
    };

    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics));
    for (rule, handler) in api::routes() {
        router = router.route(&rule.path, handler);
    }
    router
        .leptos_routes_with_context(
            &state,
            leptos_routes,
            move || {
                provide_context(backend.clone());
                provide_context(page_assets.clone());
                security::provide_nonce();
            },
            move || app::shell(options.clone()),
        )
        .route_layer(axum::middleware::from_fn_with_state(guard_state, guard))
        .fallback(move |State(state): State<AppState>, req: Request| {
            site_or_not_found(state, assets.clone(), req)
        })
        // axum's extractors get the same limit (their own default is 2 MB).
        .layer(DefaultBodyLimit::max(body_limit.max))
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            limits::limit_body,
        ))
        // Pages, server function answers and log downloads: brotli when
        // the browser takes it (it does over https and on localhost), else
        // gzip. N.B.: level 5 (for both), not the default: tower-http's
        // brotli 4 made the dashboard's page no smaller than gzip 6 (5,146 B
        // against 5,134 B), brotli 5 makes it 4,728 B (gzip 5: 5,245 B). The
        // price, measured on a 14 MB log on the 2-core VM: brotli 5 runs at
        // 38 MB/s (a quarter smaller than gzip), gzip 6 at 100 MB/s. The
        // site's files are precompressed (`site`) and pass through untouched.
        .layer(CompressionLayer::new().quality(CompressionLevel::Precise(5)))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(axum::middleware::from_fn(security::security_headers))
        .with_state(state)
}

/// Every request no route matched: a file of the site (from memory,
/// `crate::site`), else the app's own not-found page, rendered in full
/// before it is sent like every other page.
async fn site_or_not_found(state: AppState, assets: app::AssetUrls, req: Request) -> Response {
    if let Some(res) = state
        .site
        .respond(req.method(), req.uri().path(), req.headers())
    {
        return res;
    }
    let options = state.leptos.clone();
    let render = leptos_axum::render_app_async_with_context(
        move || {
            provide_context(state.clone());
            provide_context(assets.clone());
            security::provide_nonce();
        },
        move || app::shell(options.clone()),
    );
    render(req).await
}
