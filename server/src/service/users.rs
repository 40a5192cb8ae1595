//! Users and tokens for a signed-in caller: the policy decides, then
//! [`super::accounts`] does the work with the caller as the audit's actor.
//! A change that revokes a credential (a disabled user, a password changed
//! or reset, a revoked token) asks `auth::revocation` to check at once, so
//! what that credential holds open here ends without waiting for its tick.

use app::backend::Caller;
use app::error::AppError;
use app::model::user::{NewToken, Role, TokenInfo, UserInfo};

use super::accounts::{self, Actor};
use crate::auth::policy;
use crate::state::AppState;

fn actor(caller: &Caller) -> Result<Actor<'_>, AppError> {
    Ok(Actor {
        name: &caller.user()?.username,
        ip: caller.ip.as_deref(),
    })
}

/// Changes the caller's own password (the current one is checked); their
/// other sessions end, this one stays.
pub async fn change_own_password(
    state: &AppState,
    caller: &Caller,
    current: String,
    new: String,
) -> Result<(), AppError> {
    let user = policy::require_user(caller)?;
    accounts::change_own_password(
        &state.db,
        actor(caller)?,
        &user.username,
        current,
        new,
        caller.session.as_deref(),
    )
    .await?;
    state.revocations.check_now();
    Ok(())
}

/// Every user (admins).
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<UserInfo>, AppError> {
    policy::require_admin(caller)?;
    accounts::list_users(&state.db).await
}

/// Creates a user (admins).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    username: String,
    role: Role,
    password: String,
) -> Result<UserInfo, AppError> {
    policy::require_admin(caller)?;
    accounts::create_user(&state.db, actor(caller)?, &username, role, password).await
}

/// Changes a user's role (admins).
pub async fn set_role(
    state: &AppState,
    caller: &Caller,
    username: String,
    role: Role,
) -> Result<UserInfo, AppError> {
    policy::require_admin(caller)?;
    accounts::set_role(&state.db, actor(caller)?, &username, role).await
}

/// Disables or enables a user (admins).
pub async fn set_disabled(
    state: &AppState,
    caller: &Caller,
    username: String,
    disabled: bool,
) -> Result<UserInfo, AppError> {
    policy::require_admin(caller)?;
    let user = accounts::set_disabled(&state.db, actor(caller)?, &username, disabled).await?;
    state.revocations.check_now();
    Ok(user)
}

/// Sets another user's password (admins); their sessions end.
pub async fn reset_password(
    state: &AppState,
    caller: &Caller,
    username: String,
    password: String,
) -> Result<(), AppError> {
    policy::require_admin(caller)?;
    accounts::set_password(&state.db, actor(caller)?, &username, password, None).await?;
    state.revocations.check_now();
    Ok(())
}

/// The caller's tokens, or everyone's (`all`, admins).
pub async fn tokens(
    state: &AppState,
    caller: &Caller,
    all: bool,
) -> Result<Vec<TokenInfo>, AppError> {
    let user = policy::require_user(caller)?;
    if all {
        policy::require_admin(caller)?;
        accounts::list_tokens(&state.db, None).await
    } else {
        accounts::list_tokens(&state.db, Some(user.id)).await
    }
}

/// Creates a token for the caller, or for `username` (admins).
pub async fn create_token(
    state: &AppState,
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
    accounts::create_token(&state.db, actor(caller)?, &owner, &label).await
}

/// Revokes one of the caller's tokens (admins: anyone's).
pub async fn revoke_token(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<TokenInfo, AppError> {
    let user = policy::require_user(caller)?;
    let (_, owner) = accounts::find_token(&state.db, id).await?;
    if !policy::may_manage_tokens_of(user, owner.id) {
        // N.B.: someone else's token is reported as missing, not forbidden.
        return Err(AppError::NotFound(format!("no token {id}")));
    }
    let token = accounts::revoke_token(&state.db, actor(caller)?, id).await?;
    state.revocations.check_now();
    Ok(token)
}
