//! The server's side of `app::backend::Backend`: what server functions
//! call. Every method is one call into the [`service`] layer, which applies
//! the policy and does the work; the REST handlers call the same.

use app::backend::{Backend, Caller, SignedIn};
use app::error::AppError;
use app::model::agent::{AgentInfo, NewAgent};
use app::model::history::{Activity, TargetStats};
use app::model::job::{Job, JobFilter, JobPage, JobView, LogPage, NewJob, TargetSummary};
use app::model::journal::JournalEntry;
use app::model::schedule::ScheduleInfo;
use app::model::template::{TargetInfo, TemplateInfo};
use app::model::user::{AuditPage, AuditQuery, NewToken, Role, TokenInfo, UserInfo};
use app::model::webhook::HookInfo;

use crate::service::{agents, audit, history, jobs, journal, signin, users};
use crate::state::AppState;

#[async_trait::async_trait]
impl Backend for AppState {
    async fn journal(&self, caller: &Caller, limit: u64) -> Result<Vec<JournalEntry>, AppError> {
        journal::newest(self, caller, limit).await
    }

    async fn post_journal(&self, caller: &Caller, text: String) -> Result<JournalEntry, AppError> {
        journal::post(self, caller, text).await
    }

    async fn login(
        &self,
        caller: &Caller,
        username: String,
        password: String,
    ) -> Result<SignedIn, AppError> {
        signin::login(self, caller, &username, password).await
    }

    async fn logout(&self, caller: &Caller) -> Result<String, AppError> {
        signin::logout(self, caller).await
    }

    async fn change_own_password(
        &self,
        caller: &Caller,
        current: String,
        new: String,
    ) -> Result<(), AppError> {
        users::change_own_password(self, caller, current, new).await
    }

    async fn users(&self, caller: &Caller) -> Result<Vec<UserInfo>, AppError> {
        users::list(self, caller).await
    }

    async fn create_user(
        &self,
        caller: &Caller,
        username: String,
        role: Role,
        password: String,
    ) -> Result<UserInfo, AppError> {
        users::create(self, caller, username, role, password).await
    }

    async fn set_role(
        &self,
        caller: &Caller,
        username: String,
        role: Role,
    ) -> Result<UserInfo, AppError> {
        users::set_role(self, caller, username, role).await
    }

    async fn set_disabled(
        &self,
        caller: &Caller,
        username: String,
        disabled: bool,
    ) -> Result<UserInfo, AppError> {
        users::set_disabled(self, caller, username, disabled).await
    }

    async fn reset_password(
        &self,
        caller: &Caller,
        username: String,
        password: String,
    ) -> Result<(), AppError> {
        users::reset_password(self, caller, username, password).await
    }

    async fn tokens(&self, caller: &Caller, all: bool) -> Result<Vec<TokenInfo>, AppError> {
        users::tokens(self, caller, all).await
    }

    async fn create_token(
        &self,
        caller: &Caller,
        username: Option<String>,
        label: String,
    ) -> Result<NewToken, AppError> {
        users::create_token(self, caller, username, label).await
    }

    async fn revoke_token(&self, caller: &Caller, id: i64) -> Result<TokenInfo, AppError> {
        users::revoke_token(self, caller, id).await
    }

    async fn audit(&self, caller: &Caller, query: AuditQuery) -> Result<AuditPage, AppError> {
        audit::page(self, caller, query).await
    }

    async fn templates(&self, caller: &Caller) -> Result<Vec<TemplateInfo>, AppError> {
        jobs::templates(self, caller)
    }

    async fn targets(&self, caller: &Caller) -> Result<Vec<TargetInfo>, AppError> {
        jobs::targets(self, caller).await
    }

    async fn launch(&self, caller: &Caller, new: NewJob) -> Result<Job, AppError> {
        jobs::launch(self, caller, new, None).await
    }

    async fn job(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        jobs::get(self, caller, id).await
    }

    async fn jobs(&self, caller: &Caller, filter: JobFilter) -> Result<JobPage, AppError> {
        jobs::list(self, caller, filter).await
    }

    async fn cancel_job(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        jobs::cancel(self, caller, id).await
    }

    async fn rerun_job(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        jobs::rerun(self, caller, id).await
    }

    async fn job_log(
        &self,
        caller: &Caller,
        id: i64,
        after: i64,
        limit: u64,
    ) -> Result<LogPage, AppError> {
        jobs::log(self, caller, id, after, limit).await
    }

    async fn job_view(&self, caller: &Caller, id: i64) -> Result<JobView, AppError> {
        jobs::view(self, caller, id).await
    }

    async fn log_search(
        &self,
        caller: &Caller,
        id: i64,
        q: String,
        limit: u64,
    ) -> Result<Vec<i64>, AppError> {
        jobs::search(self, caller, id, &q, limit).await
    }

    async fn target_overview(&self, caller: &Caller) -> Result<Vec<TargetSummary>, AppError> {
        jobs::overview(self, caller).await
    }

    async fn target_stats(&self, caller: &Caller, target: String) -> Result<TargetStats, AppError> {
        history::target_stats(self, caller, &target).await
    }

    async fn activity(&self, caller: &Caller) -> Result<Activity, AppError> {
        history::activity(self, caller).await
    }

    async fn agents(&self, caller: &Caller) -> Result<Vec<AgentInfo>, AppError> {
        agents::list(self, caller).await
    }

    async fn add_agent(&self, caller: &Caller, name: String) -> Result<NewAgent, AppError> {
        agents::add(self, caller, name).await
    }

    async fn revoke_agent(&self, caller: &Caller, name: String) -> Result<(), AppError> {
        agents::revoke_as(self, caller, name).await
    }

    async fn webhooks(&self, caller: &Caller) -> Result<Vec<HookInfo>, AppError> {
        crate::service::webhooks::list(self, caller).await
    }

    async fn mark_job_failed(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        agents::mark_failed(self, caller, id).await
    }

    async fn schedules(&self, caller: &Caller) -> Result<Vec<ScheduleInfo>, AppError> {
        crate::service::schedules::list(self, caller).await
    }

    async fn pause_schedule(
        &self,
        caller: &Caller,
        id: String,
        paused: bool,
    ) -> Result<(), AppError> {
        crate::service::schedules::set_paused(self, caller, &id, paused).await
    }

    async fn run_schedule(&self, caller: &Caller, id: String) -> Result<Job, AppError> {
        crate::service::schedules::run_now(self, caller, &id).await
    }
}
