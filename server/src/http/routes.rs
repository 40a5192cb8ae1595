//! The route table: every route with its access level, in one place. The
//! router registers the REST API from it, the guard looks up every request's
//! rule in it (a route without a rule is refused), and the authorization
//! matrix test walks it.

use std::collections::HashMap;

use axum::http::Method;
use leptos::server_fn::ServerFn;

/// Who may use a route at all (finer decisions are in `auth::policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user.
    Authenticated,
    /// Admins only. A page answers operators with the 403 page.
    Admin,
    /// Agents: the handler authenticates the agent's own token; the guard
    /// neither signs in a user nor checks the origin (agents send no
    /// cookie, and no browser reaches these routes with one).
    Agent,
}

/// What kind of route, which decides how a refusal looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTML page: anonymous visitors are redirected to `/login?next=…`.
    Page,
    /// The REST API: refusals are JSON 401/403.
    Api,
    /// A long-lived event stream (SSE): served off hyper by the accept
    /// loop (`http::serve`); refusals are JSON like the API's.
    EventStream,
    /// A Leptos server function: refusals are JSON 401/403.
    ServerFn,
    /// Health and metrics.
    Infra,
}

/// One route and its access level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub method: Method,
    /// The path as axum matches it (`/api/jobs/{id}`).
    pub path: String,
    pub kind: Kind,
    pub access: Access,
}

impl Rule {
    pub fn new(method: Method, path: impl Into<String>, kind: Kind, access: Access) -> Rule {
        Rule {
            method,
            path: path.into(),
            kind,
            access,
        }
    }
}

/// The pages of the app (paths as leptos' route list gives them to axum).
pub fn pages() -> Vec<Rule> {
    use Access::*;
    [
        ("/login", Public),
        ("/", Authenticated),
        ("/account", Authenticated),
        ("/admin/users", Admin),
        ("/admin/agents", Admin),
        ("/admin/audit", Admin),
        ("/admin/webhooks", Admin),
        ("/admin/schedules", Admin),
        ("/admin/recordings/{id}", Admin),
        ("/admin/jobs", Admin),
        ("/jobs", Authenticated),
        ("/jobs/{id}", Authenticated),
        ("/launch/{template}", Authenticated),
        ("/targets/{id}", Authenticated),
        ("/targets/{id}/jobs", Authenticated),
        ("/targets/{id}/console", Authenticated),
    ]
    .into_iter()
    .map(|(path, access)| Rule::new(Method::GET, path, Kind::Page, access))
    .collect()
}

fn server_fn<F: ServerFn>(access: Access) -> Rule {
    Rule::new(Method::POST, F::PATH, Kind::ServerFn, access)
}

/// The server functions. Their bodies apply the finer policy themselves.
pub fn server_fns() -> Vec<Rule> {
    use app::{account, admin, auth, jobs, journal, tokens};
    use Access::*;
    vec![
        server_fn::<auth::WhoAmI>(Public),
        server_fn::<auth::Login>(Public),
        server_fn::<auth::Logout>(Authenticated),
        server_fn::<account::ChangePassword>(Authenticated),
        server_fn::<tokens::ListTokens>(Authenticated),
        server_fn::<tokens::CreateToken>(Authenticated),
        server_fn::<tokens::RevokeToken>(Authenticated),
        server_fn::<admin::users::ListUsers>(Admin),
        server_fn::<admin::users::CreateUser>(Admin),
        server_fn::<admin::users::SetUserRole>(Admin),
        server_fn::<admin::users::SetUserDisabled>(Admin),
        server_fn::<admin::users::ResetUserPassword>(Admin),
        server_fn::<admin::audit::AuditLog>(Admin),
        server_fn::<journal::ListJournal>(Authenticated),
        server_fn::<journal::PostJournalNote>(Authenticated),
        server_fn::<jobs::ListJobs>(Authenticated),
        server_fn::<jobs::ViewJob>(Authenticated),
        server_fn::<jobs::FetchLog>(Authenticated),
        server_fn::<jobs::SearchLog>(Authenticated),
        server_fn::<jobs::ListTemplates>(Authenticated),
        server_fn::<jobs::ListTargets>(Authenticated),
        server_fn::<jobs::TargetOverview>(Authenticated),
        server_fn::<jobs::TargetStats>(Authenticated),
        server_fn::<jobs::RecentActivity>(Authenticated),
        server_fn::<jobs::LaunchJob>(Authenticated),
        server_fn::<jobs::CancelJob>(Authenticated),
        server_fn::<jobs::RerunJob>(Authenticated),
        server_fn::<jobs::MarkJobFailed>(Admin),
        server_fn::<admin::agents::ListAgents>(Admin),
        server_fn::<admin::agents::AddAgent>(Admin),
        server_fn::<admin::agents::RevokeAgent>(Admin),
        server_fn::<admin::webhooks::ListWebhooks>(Admin),
        server_fn::<admin::schedules::ListSchedules>(Admin),
        server_fn::<admin::schedules::PauseSchedule>(Admin),
        server_fn::<admin::schedules::RunSchedule>(Admin),
    ]
}

/// Health and metrics.
pub fn infra() -> Vec<Rule> {
    vec![
        Rule::new(Method::GET, "/healthz", Kind::Infra, Access::Public),
        Rule::new(Method::GET, "/metrics", Kind::Infra, Access::Public),
    ]
}

/// Every rule, indexed for the guard.
#[derive(Debug, Default)]
pub struct RouteTable {
    rules: HashMap<(Method, String), Rule>,
}

impl RouteTable {
    pub fn new(rules: impl IntoIterator<Item = Rule>) -> RouteTable {
        let mut table = RouteTable::default();
        for rule in rules {
            let key = (rule.method.clone(), rule.path.clone());
            if table.rules.insert(key, rule.clone()).is_some() {
                panic!(
                    "route {} {} is in the route table twice",
                    rule.method, rule.path
                );
            }
        }
        table
    }

    /// The rule for a matched route. HEAD uses GET's rule.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<&Rule> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.rules.get(&(method.clone(), path.to_string()))
    }

    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }
}

/// Whether a request path matches a route pattern: `{name}` matches one
/// non-empty segment, anything else itself.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return true,
            (Some(w), Some(h)) if w.starts_with('{') && w.ends_with('}') => {
                if h.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return false,
        }
    }
}

impl RouteTable {
    /// The path patterns of the event-stream routes (GET).
    pub fn event_streams(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .rules
            .values()
            .filter(|r| r.kind == Kind::EventStream && r.method == Method::GET)
            .map(|r| r.path.clone())
            .collect();
        paths.sort();
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_whole_segments_only() {
        assert!(path_matches("/api/jobs/{id}/events", "/api/jobs/12/events"));
        assert!(path_matches("/api/events", "/api/events"));
        assert!(!path_matches("/api/jobs/{id}/events", "/api/jobs//events"));
        assert!(!path_matches(
            "/api/jobs/{id}/events",
            "/api/jobs/12/events/more"
        ));
        assert!(!path_matches("/api/events", "/api/events/more"));
        assert!(!path_matches("/api/jobs/{id}/events", "/api/jobs/12/log"));
    }
}
