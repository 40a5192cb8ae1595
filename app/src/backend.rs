//! The port between the Leptos app and the server (server-only).
//!
//! Server functions live in this crate because the browser needs their client
//! halves, but the database, the engine and the permission guard live in the
//! `server` crate, which depends on this one. So the server implements
//! [`Backend`] and provides it as context to every server function and SSR
//! render (`leptos_routes_with_context`); server functions stay thin: take the
//! backend and the [`Caller`], call one method. Every method decides its own
//! permissions through the server's one policy module.

use std::sync::Arc;

use leptos::prelude::*;

use crate::error::AppError;
use crate::model::agent::{AgentInfo, NewAgent};
use crate::model::history::{Activity, TargetStats};
use crate::model::job::{Job, JobFilter, JobPage, JobView, LogPage, NewJob, TargetSummary};
use crate::model::journal::JournalEntry;
use crate::model::schedule::ScheduleInfo;
use crate::model::template::{TargetInfo, TemplateInfo};
use crate::model::user::{AuditPage, AuditQuery, CurrentUser, NewToken, Role, TokenInfo, UserInfo};
use crate::model::webhook::HookInfo;

/// Who is asking and from where: the server's guard puts one in every
/// request's extensions (anonymous when no credentials came).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The signed-in user, if any.
    pub user: Option<CurrentUser>,
    /// The client's address.
    pub ip: Option<String>,
    /// The session's id hash, when authenticated by the session cookie.
    pub session: Option<String>,
    /// The API token's id, when authenticated by a bearer token.
    pub token: Option<i64>,
    /// Whether the request came over https (cookies get `Secure`).
    pub secure: bool,
    pub user_agent: Option<String>,
}

impl Caller {
    /// The signed-in user, or 401.
    pub fn user(&self) -> Result<&CurrentUser, AppError> {
        self.user.as_ref().ok_or_else(AppError::sign_in)
    }
}

/// A successful sign-in: the `Set-Cookie` value for the new session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: CurrentUser,
    pub set_cookie: String,
}

/// What the app asks of the server.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The newest journal notes, newest first.
    async fn journal(&self, caller: &Caller, limit: u64) -> Result<Vec<JournalEntry>, AppError>;
    /// Stores a note (validated with `validate_note`).
    async fn post_journal(&self, caller: &Caller, text: String) -> Result<JournalEntry, AppError>;

    /// Checks a username and password; starts a session.
    async fn login(
        &self,
        caller: &Caller,
        username: String,
        password: String,
    ) -> Result<SignedIn, AppError>;
    /// Ends the caller's session; the `Set-Cookie` value that clears it.
    async fn logout(&self, caller: &Caller) -> Result<String, AppError>;
    /// Changes the caller's own password (the current one is checked).
    async fn change_own_password(
        &self,
        caller: &Caller,
        current: String,
        new: String,
    ) -> Result<(), AppError>;

    /// Every user (admins).
    async fn users(&self, caller: &Caller) -> Result<Vec<UserInfo>, AppError>;
    /// Creates a user (admins).
    async fn create_user(
        &self,
        caller: &Caller,
        username: String,
        role: Role,
        password: String,
    ) -> Result<UserInfo, AppError>;
    /// Changes a user's role (admins; never demotes the last admin).
    async fn set_role(
        &self,
        caller: &Caller,
        username: String,
        role: Role,
    ) -> Result<UserInfo, AppError>;
    /// Disables or re-enables a user (admins); disabling ends their sessions.
    async fn set_disabled(
        &self,
        caller: &Caller,
        username: String,
        disabled: bool,
    ) -> Result<UserInfo, AppError>;
    /// Sets a new password for a user (admins); ends their sessions.
    async fn reset_password(
        &self,
        caller: &Caller,
        username: String,
        password: String,
    ) -> Result<(), AppError>;

    /// API tokens: the caller's own, or (admins) everyone's.
    async fn tokens(&self, caller: &Caller, all: bool) -> Result<Vec<TokenInfo>, AppError>;
    /// Creates a token for the caller, or (admins) for `username`.
    async fn create_token(
        &self,
        caller: &Caller,
        username: Option<String>,
        label: String,
    ) -> Result<NewToken, AppError>;
    /// Revokes one of the caller's tokens (admins: anyone's).
    async fn revoke_token(&self, caller: &Caller, id: i64) -> Result<TokenInfo, AppError>;

    /// A page of the audit log (admins).
    async fn audit(&self, caller: &Caller, query: AuditQuery) -> Result<AuditPage, AppError>;

    /// Templates the caller may run.
    async fn templates(&self, caller: &Caller) -> Result<Vec<TemplateInfo>, AppError>;
    /// Targets the caller may launch on.
    async fn targets(&self, caller: &Caller) -> Result<Vec<TargetInfo>, AppError>;
    /// Validates and enqueues a job.
    async fn launch(&self, caller: &Caller, new: NewJob) -> Result<Job, AppError>;
    /// One job the caller may see.
    async fn job(&self, caller: &Caller, id: i64) -> Result<Job, AppError>;
    /// Jobs the caller may see, newest first.
    async fn jobs(&self, caller: &Caller, filter: JobFilter) -> Result<JobPage, AppError>;
    /// Cancels a queued or running job.
    async fn cancel_job(&self, caller: &Caller, id: i64) -> Result<Job, AppError>;
    /// Enqueues a copy of a job.
    async fn rerun_job(&self, caller: &Caller, id: i64) -> Result<Job, AppError>;
    /// Stored lines of a job's log with `seq > after`.
    async fn job_log(
        &self,
        caller: &Caller,
        id: i64,
        after: i64,
        limit: u64,
    ) -> Result<LogPage, AppError>;
    /// The job page's first load: the job, the tail of its log, its stderr tail.
    async fn job_view(&self, caller: &Caller, id: i64) -> Result<JobView, AppError>;
    /// The seqs of the lines containing `q` (case-insensitive), at most `limit`.
    async fn log_search(
        &self,
        caller: &Caller,
        id: i64,
        q: String,
        limit: u64,
    ) -> Result<Vec<i64>, AppError>;
    /// The caller's targets with their latest job.
    async fn target_overview(&self, caller: &Caller) -> Result<Vec<TargetSummary>, AppError>;
    /// A target's finished jobs per template over the last 30 days.
    async fn target_stats(&self, caller: &Caller, target: String) -> Result<TargetStats, AppError>;
    /// The jobs the caller may see running and queued over the last hours.
    async fn activity(&self, caller: &Caller) -> Result<Activity, AppError>;

    /// Every enrolled agent with its status (admins).
    async fn agents(&self, caller: &Caller) -> Result<Vec<AgentInfo>, AppError>;
    /// Enrols an agent (admins); its token is in the answer, once.
    async fn add_agent(&self, caller: &Caller, name: String) -> Result<NewAgent, AppError>;
    /// Revokes an agent's token (admins).
    async fn revoke_agent(&self, caller: &Caller, name: String) -> Result<(), AppError>;
    /// Each `[[notify]]` hook with its latest deliveries (admins).
    async fn webhooks(&self, caller: &Caller) -> Result<Vec<HookInfo>, AppError>;
    /// Fails a job whose agent cannot be reached (admins).
    async fn mark_job_failed(&self, caller: &Caller, id: i64) -> Result<Job, AppError>;
    /// Every `[[schedules]]` entry with its next and latest fires (admins).
    async fn schedules(&self, caller: &Caller) -> Result<Vec<ScheduleInfo>, AppError>;
    /// Pauses or resumes a schedule (admins).
    async fn pause_schedule(
        &self,
        caller: &Caller,
        id: String,
        paused: bool,
    ) -> Result<(), AppError>;
    /// Launches a schedule's job now (admins).
    async fn run_schedule(&self, caller: &Caller, id: String) -> Result<Job, AppError>;
}

/// The backend as it travels through Leptos context.
pub type SharedBackend = Arc<dyn Backend>;

/// The backend provided by the server for this request.
pub fn backend() -> Result<SharedBackend, AppError> {
    use_context::<SharedBackend>().ok_or_else(|| {
        leptos::logging::error!("no Backend in context: the server must provide it");
        AppError::Internal
    })
}

/// The caller of the current request (anonymous if the guard found none).
pub fn caller() -> Caller {
    use_context::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>().cloned())
        .unwrap_or_default()
}

/// Whether this request is a plain HTML form post (JavaScript off).
fn is_plain_form_post() -> bool {
    use_context::<http::request::Parts>().is_some_and(|p| {
        p.method == http::Method::POST
            && p.headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/html"))
    })
}

/// Passes a server function's result through, giving an error the HTTP status
/// it deserves (400, 403, 404, …). A plain form post (JavaScript off) keeps
/// leptos' redirect back to the form, which carries the error in the URL.
pub fn respond<T>(result: Result<T, AppError>) -> Result<T, AppError> {
    if let Err(e) = &result {
        if !is_plain_form_post() {
            set_status(e.status());
        }
    }
    result
}

/// Sets the response status (during SSR or a server function call).
pub fn set_status(status: u16) {
    if let (Some(res), Ok(status)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::StatusCode::from_u16(status),
    ) {
        res.set_status(status);
    }
}

/// Adds a `Set-Cookie` header to the response.
pub fn set_cookie(value: &str) {
    if let (Some(res), Ok(v)) = (
        use_context::<leptos_axum::ResponseOptions>(),
        http::HeaderValue::from_str(value),
    ) {
        res.append_header(http::header::SET_COOKIE, v);
    }
}

/// Sends the browser to `path` after a server function: with JavaScript the
/// app navigates there itself; a plain form post gets a 303 See Other.
pub fn see_other(path: &str) {
    if is_plain_form_post() {
        if let (Some(res), Ok(v)) = (
            use_context::<leptos_axum::ResponseOptions>(),
            http::HeaderValue::from_str(path),
        ) {
            res.insert_header(http::header::LOCATION, v);
            res.set_status(http::StatusCode::SEE_OTHER);
        }
    } else {
        leptos_axum::redirect(path);
    }
}
