//! The pages whose code the browser loads only when one is opened: every
//! route but the dashboard (`/`, the first page most visits open). Each is
//! a [`LazyRoute`] whose view `#[lazy_route]` moves into a wasm part of its
//! own (cargo-leptos' `--split` build cuts them out of the main wasm); code
//! two parts share goes into a shared part, and code the dashboard or the
//! shell (header, user menu, live feed) also uses stays in the main wasm.
//!
//! A page's data is loaded by its component (its resources), as before:
//! `data()` holds nothing. On the server the view renders at once; in the
//! browser a page opened directly is hydrated after its part arrived
//! (`hydrate_lazy` in the frontend crate), and a link to one fetches its
//! part first.
//!
//! N.B.: `#[lazy_route]` names the split part after the type and the place
//! of the macro call, so each route is written out here in full rather
//! than by a `macro_rules!` (whose expansions would share one place).

use leptos::prelude::*;
use leptos_router::{lazy_route, LazyRoute};

use crate::{account, admin, auth, console, jobs, targets};

/// `/jobs`.
pub struct JobsRoute;

#[lazy_route]
impl LazyRoute for JobsRoute {
    fn data() -> Self {
        JobsRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <jobs::lists::JobsPage /> }.into_any()
    }
}

/// `/jobs/:id`.
pub struct JobRoute;

#[lazy_route]
impl LazyRoute for JobRoute {
    fn data() -> Self {
        JobRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <jobs::page::JobPage /> }.into_any()
    }
}

/// `/launch/:template`.
pub struct LaunchRoute;

#[lazy_route]
impl LazyRoute for LaunchRoute {
    fn data() -> Self {
        LaunchRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <jobs::launch::LaunchPage /> }.into_any()
    }
}

/// `/targets/:id`.
pub struct TargetRoute;

#[lazy_route]
impl LazyRoute for TargetRoute {
    fn data() -> Self {
        TargetRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <targets::TargetPage /> }.into_any()
    }
}

/// `/targets/:id/jobs`.
pub struct TargetJobsRoute;

#[lazy_route]
impl LazyRoute for TargetJobsRoute {
    fn data() -> Self {
        TargetJobsRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <targets::TargetJobsPage /> }.into_any()
    }
}

/// `/targets/:id/console`: xterm.js's bindings and the terminal client.
pub struct ConsoleRoute;

#[lazy_route]
impl LazyRoute for ConsoleRoute {
    fn data() -> Self {
        ConsoleRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <console::ConsolePage /> }.into_any()
    }
}

/// `/admin/jobs`.
pub struct AdminJobsRoute;

#[lazy_route]
impl LazyRoute for AdminJobsRoute {
    fn data() -> Self {
        AdminJobsRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <jobs::lists::AdminJobsPage /> }.into_any()
    }
}

/// `/login`.
pub struct LoginRoute;

#[lazy_route]
impl LazyRoute for LoginRoute {
    fn data() -> Self {
        LoginRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <auth::LoginPage /> }.into_any()
    }
}

/// `/account`.
pub struct AccountRoute;

#[lazy_route]
impl LazyRoute for AccountRoute {
    fn data() -> Self {
        AccountRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <account::AccountPage /> }.into_any()
    }
}

/// `/admin/users`.
pub struct UsersRoute;

#[lazy_route]
impl LazyRoute for UsersRoute {
    fn data() -> Self {
        UsersRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <admin::users::UsersPage /> }.into_any()
    }
}

/// `/admin/agents`.
pub struct AgentsRoute;

#[lazy_route]
impl LazyRoute for AgentsRoute {
    fn data() -> Self {
        AgentsRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <admin::agents::AgentsPage /> }.into_any()
    }
}

/// `/admin/audit`.
pub struct AuditRoute;

#[lazy_route]
impl LazyRoute for AuditRoute {
    fn data() -> Self {
        AuditRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <admin::audit::AuditPageView /> }.into_any()
    }
}

/// `/admin/webhooks`.
pub struct WebhooksRoute;

#[lazy_route]
impl LazyRoute for WebhooksRoute {
    fn data() -> Self {
        WebhooksRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <admin::webhooks::WebhooksPage /> }.into_any()
    }
}

/// `/admin/schedules`.
pub struct SchedulesRoute;

#[lazy_route]
impl LazyRoute for SchedulesRoute {
    fn data() -> Self {
        SchedulesRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <admin::schedules::SchedulesPage /> }.into_any()
    }
}

/// `/admin/recordings/:id`: the recording player (xterm.js).
pub struct RecordingRoute;

#[lazy_route]
impl LazyRoute for RecordingRoute {
    fn data() -> Self {
        RecordingRoute
    }

    fn view(_this: Self) -> AnyView {
        view! { <admin::recordings::RecordingPage /> }.into_any()
    }
}
