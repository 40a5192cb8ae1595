//! opsdeck's Leptos app: the HTML shell, the routes, the pages and their
//! server functions, and the models shared by the server and the browser.
//!
//! Compiled twice: with `ssr` into the server (rendering, server functions'
//! bodies) and with `hydrate` into the wasm (components, server functions'
//! client stubs). Server-only code sits behind `ssr`.

// The pages' nested views are deep types; the wasm build computes their
// layouts, which can pass the default limit of 128 (the charts did).
#![recursion_limit = "256"]

pub mod account;
pub mod admin;
pub mod ansi;
pub mod auth;
pub mod codec;
pub mod components;
pub mod console;
pub mod dashboard;
pub mod error;
pub mod jobs;
pub mod journal;
pub mod model;
pub mod routes;
pub mod targets;
pub mod tokens;

#[cfg(feature = "ssr")]
pub mod backend;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, Lazy, SsrMode};

/// Bare module names that wasm-bindgen emits, mapped to content-hashed URLs:
/// the npm front-end packages to `/xterm-lazy.mjs` (at `shim`), a shim
/// that loads opsdeck's own copies under `/vendor/xterm` (installed from npm
/// at build time; never a CDN) only when the console page asks, and
/// `opsdeck-live` to `/live.mjs` (at `live`), the hub of the browser's one
/// live connection (docs/live.md). It must precede the hydration scripts.
pub fn import_map(shim: &str, live: &str) -> String {
    format!(
        r#"{{"imports":{{"xterm":"{shim}","xterm-addon-fit":"{shim}","opsdeck-live":"{live}"}}}}"#
    )
}

/// The content-hashed URLs of the site's files, by their plain path
/// (`/favicon.ico` → `/favicon.3f9a….ico`), provided by the server for the
/// shell's links. A path it does not know stays as it is.
#[derive(Clone, Debug, Default)]
pub struct AssetUrls(pub std::sync::Arc<std::collections::HashMap<String, String>>);

impl AssetUrls {
    pub fn url(&self, path: &str) -> String {
        self.0
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_string())
    }
}

/// The HTML document around the app, rendered on the server.
///
/// N.B.: the stylesheet is linked here, not with `<Stylesheet>` in [`App`]:
/// its name carries the build's hash (`options.output_name`, the same as the
/// JS and wasm `<HydrationScripts>` loads), which only the server knows.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    let assets = use_context::<AssetUrls>().unwrap_or_default();
    let css = format!("/{}/{}.css", options.site_pkg_dir, options.output_name);
    let import_map = import_map(&assets.url("/xterm-lazy.mjs"), &assets.url("/live.mjs"));
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href=assets.url("/favicon.ico") sizes="32x32" />
                <link rel="icon" href=assets.url("/favicon.svg") type="image/svg+xml" />
                <link rel="stylesheet" id="leptos" href=css />
                // N.B.: an inline script: it runs only with the response's CSP
                // nonce (server/src/http/security.rs).
                <script type="importmap" nonce=leptos::nonce::use_nonce() inner_html=import_map></script>
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The app: header, routes, footer.
///
/// N.B.: every route renders with `SsrMode::Async`: the server waits for the
/// page's data before sending it, so a page works with JavaScript off (no
/// out-of-order chunks to move into place) and can answer with a real status
/// (404, 403) decided while loading.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    auth::provide_auth();
    jobs::widgets::provide_clock();
    jobs::live::Feed::provide();

    view! {
        <Title formatter=|page: String| {
            if page.is_empty() { "opsdeck".to_string() } else { format!("{page} · opsdeck") }
        } />
        <Router>
            <a class="skip-link" href="#main">
                "Skip to content"
            </a>
            <header class="topbar">
                <a class="brand" href="/">
                    "opsdeck"
                </a>
                <nav class="mainnav" aria-label="Main">
                    <a href="/">"Dashboard"</a>
                    <a href="/jobs">"Jobs"</a>
                </nav>
                <auth::UserMenu />
            </header>
            <main id="main">
                <jobs::live::FeedBanner />
                <Routes fallback=NotFound>
                    <Route path=path!("/") view=dashboard::Dashboard ssr=SsrMode::Async />
                    <Route path=path!("/jobs") view={Lazy::<routes::JobsRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/jobs/:id") view={Lazy::<routes::JobRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/launch/:template") view={Lazy::<routes::LaunchRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/targets/:id") view={Lazy::<routes::TargetRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/targets/:id/jobs") view={Lazy::<routes::TargetJobsRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/targets/:id/console") view={Lazy::<routes::ConsoleRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/jobs") view={Lazy::<routes::AdminJobsRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/login") view={Lazy::<routes::LoginRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/account") view={Lazy::<routes::AccountRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/users") view={Lazy::<routes::UsersRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/agents") view={Lazy::<routes::AgentsRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/audit") view={Lazy::<routes::AuditRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/webhooks") view={Lazy::<routes::WebhooksRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/schedules") view={Lazy::<routes::SchedulesRoute>::new()} ssr=SsrMode::Async />
                    <Route path=path!("/admin/recordings/:id") view={Lazy::<routes::RecordingRoute>::new()} ssr=SsrMode::Async />
                </Routes>
            </main>
        </Router>
    }
}

/// Any path no route matches: a real 404.
#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found" />
        <h1>"Not found"</h1>
        <p>"Nothing lives at this address. " <a href="/">"Back to the dashboard"</a></p>
    }
}
