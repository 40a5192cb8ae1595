//! The server's side of `app::backend::Backend`: what server functions and
//! REST handlers call. Each method asks `auth::policy` first, then does the
//! work through the service modules.

use app::backend::{Backend, Caller, SignedIn};
use app::error::AppError;
use app::model::job::{Job, JobFilter, JobPage, JobView, LogPage, NewJob, TargetSummary};
use app::model::journal::{validate_note, JournalEntry};
use app::model::template::{TargetInfo, TemplateInfo};
use app::model::user::{AuditPage, AuditQuery, NewToken, Role, TokenInfo, UserInfo};

use crate::auth::accounts::{self, Actor};
use crate::auth::{login, policy};
use crate::db;
use crate::engine::service;
use crate::http::error::db_error;
use crate::state::AppState;

fn actor(caller: &Caller) -> Result<Actor<'_>, AppError> {
    Ok(Actor {
        name: &caller.user()?.username,
        ip: caller.ip.as_deref(),
    })
}

#[async_trait::async_trait]
impl Backend for AppState {
    async fn journal(&self, caller: &Caller, limit: u64) -> Result<Vec<JournalEntry>, AppError> {
        policy::require_user(caller)?;
        db::journal::newest(&self.reader, limit.min(100))
            .await
            .map_err(|e| db_error(e, "listing journal notes"))
    }

    async fn post_journal(&self, caller: &Caller, text: String) -> Result<JournalEntry, AppError> {
        let user = policy::require_user(caller)?;
        let text = validate_note(&text)?;
        db::journal::insert(&self.db, &user.username, &text)
            .await
            .map_err(|e| db_error(e, "storing a journal note"))
    }

    async fn login(
        &self,
        caller: &Caller,
        username: String,
        password: String,
    ) -> Result<SignedIn, AppError> {
        login::login(self, caller, &username, password).await
    }

    async fn logout(&self, caller: &Caller) -> Result<String, AppError> {
        login::logout(self, caller).await
    }

    async fn change_own_password(
        &self,
        caller: &Caller,
        current: String,
        new: String,
    ) -> Result<(), AppError> {
        let user = policy::require_user(caller)?;
        accounts::change_own_password(
            &self.db,
            actor(caller)?,
            &user.username,
            current,
            new,
            caller.session.as_deref(),
        )
        .await
    }

    async fn users(&self, caller: &Caller) -> Result<Vec<UserInfo>, AppError> {
        policy::require_admin(caller)?;
        accounts::list_users(&self.db).await
    }

    async fn create_user(
        &self,
        caller: &Caller,
        username: String,
        role: Role,
        password: String,
    ) -> Result<UserInfo, AppError> {
        policy::require_admin(caller)?;
        accounts::create_user(&self.db, actor(caller)?, &username, role, password).await
    }

    async fn set_role(
        &self,
        caller: &Caller,
        username: String,
        role: Role,
    ) -> Result<UserInfo, AppError> {
        policy::require_admin(caller)?;
        accounts::set_role(&self.db, actor(caller)?, &username, role).await
    }

    async fn set_disabled(
        &self,
        caller: &Caller,
        username: String,
        disabled: bool,
    ) -> Result<UserInfo, AppError> {
        policy::require_admin(caller)?;
        accounts::set_disabled(&self.db, actor(caller)?, &username, disabled).await
    }

    async fn reset_password(
        &self,
        caller: &Caller,
        username: String,
        password: String,
    ) -> Result<(), AppError> {
        policy::require_admin(caller)?;
        accounts::set_password(&self.db, actor(caller)?, &username, password, None).await
    }

    async fn tokens(&self, caller: &Caller, all: bool) -> Result<Vec<TokenInfo>, AppError> {
        let user = policy::require_user(caller)?;
        if all {
            policy::require_admin(caller)?;
            accounts::list_tokens(&self.db, None).await
        } else {
            accounts::list_tokens(&self.db, Some(user.id)).await
        }
    }

    async fn create_token(
        &self,
        caller: &Caller,
        username: Option<String>,
        label: String,
    ) -> Result<NewToken, AppError> {
        let user = policy::require_user(caller)?;
        let owner = match username {
            Some(name) if name != user.username => {
                policy::require_admin(caller)?;
                name
            }
            _ => user.username.clone(),
        };
        accounts::create_token(&self.db, actor(caller)?, &owner, &label).await
    }

    async fn revoke_token(&self, caller: &Caller, id: i64) -> Result<TokenInfo, AppError> {
        let user = policy::require_user(caller)?;
        let (_, owner) = accounts::find_token(&self.db, id).await?;
        if !policy::may_manage_tokens_of(user, owner.id) {
            // N.B.: someone else's token is reported as missing, not forbidden.
            return Err(AppError::NotFound(format!("no token {id}")));
        }
        accounts::revoke_token(&self.db, actor(caller)?, id).await
    }

    async fn audit(&self, caller: &Caller, query: AuditQuery) -> Result<AuditPage, AppError> {
        policy::require_admin(caller)?;
        let (entries, next_before) = db::audit::page(&self.reader, &query)
            .await
            .map_err(|e| db_error(e, "reading the audit log"))?;
        Ok(AuditPage {
            entries,
            next_before,
        })
    }

    async fn templates(&self, caller: &Caller) -> Result<Vec<TemplateInfo>, AppError> {
        service::templates(self, caller)
    }

    async fn targets(&self, caller: &Caller) -> Result<Vec<TargetInfo>, AppError> {
        service::targets(self, caller)
    }

    async fn launch(&self, caller: &Caller, new: NewJob) -> Result<Job, AppError> {
        service::launch(self, caller, new, None).await
    }

    async fn job(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        service::get(self, caller, id).await
    }

    async fn jobs(&self, caller: &Caller, filter: JobFilter) -> Result<JobPage, AppError> {
        service::list(self, caller, filter).await
    }

    async fn cancel_job(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        service::cancel(self, caller, id).await
    }

    async fn rerun_job(&self, caller: &Caller, id: i64) -> Result<Job, AppError> {
        service::rerun(self, caller, id).await
    }

    async fn job_log(
        &self,
        caller: &Caller,
        id: i64,
        after: i64,
        limit: u64,
    ) -> Result<LogPage, AppError> {
        service::log(self, caller, id, after, limit).await
    }

    async fn job_view(&self, caller: &Caller, id: i64) -> Result<JobView, AppError> {
        service::view(self, caller, id).await
    }

    async fn log_search(
        &self,
        caller: &Caller,
        id: i64,
        q: String,
        limit: u64,
    ) -> Result<Vec<i64>, AppError> {
        service::search(self, caller, id, &q, limit).await
    }

    async fn target_overview(&self, caller: &Caller) -> Result<Vec<TargetSummary>, AppError> {
        service::overview(self, caller).await
    }
}
