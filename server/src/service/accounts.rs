//! Managing users and API tokens by an actor, with an audit entry for every
//! change. Used by [`super::users`] (a signed-in caller, after the policy
//! checks) and by the `opsdeck user` / `opsdeck token` commands (as `cli`).

use app::error::AppError;
use app::model::user::{
    validate_password, validate_token_label, validate_username, NewToken, Role, TokenInfo, UserInfo,
};
use sea_orm::{DatabaseConnection, DbErr};
use serde_json::json;

use crate::auth::{password, secret};
use crate::db::audit::{self, Record};
use crate::db::{sessions, tokens, users};
use crate::http::error::db_error;

/// Who made a change, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub ip: Option<&'a str>,
}

impl Actor<'_> {
    /// The command line on the server host.
    pub const CLI: Actor<'static> = Actor {
        name: "cli",
        ip: None,
    };
}

fn dberr(doing: &'static str) -> impl Fn(DbErr) -> AppError {
    move |e| db_error(e, doing)
}

async fn record(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    action: &str,
    subject: &str,
    detail: Option<serde_json::Value>,
) -> Result<(), AppError> {
    audit::insert(
        db,
        Record {
            actor: actor.name,
            action,
            subject,
            detail,
            ip: actor.ip,
        },
    )
    .await
    .map_err(dberr("writing the audit log"))
}

/// The user named `username`, or 404.
pub async fn find_user(db: &DatabaseConnection, username: &str) -> Result<users::User, AppError> {
    users::by_name(db, username)
        .await
        .map_err(dberr("looking up a user"))?
        .ok_or_else(|| AppError::NotFound(format!("no user named `{username}`")))
}

pub async fn list_users(db: &DatabaseConnection) -> Result<Vec<UserInfo>, AppError> {
    Ok(users::all(db)
        .await
        .map_err(dberr("listing users"))?
        .iter()
        .map(users::User::info)
        .collect())
}

pub async fn create_user(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    username: &str,
    role: Role,
    password: String,
) -> Result<UserInfo, AppError> {
    validate_username(username)?;
    validate_password(&password)?;
    if users::by_name(db, username)
        .await
        .map_err(dberr("looking up a user"))?
        .is_some()
    {
        return Err(AppError::Conflict(format!(
            "a user named `{username}` already exists"
        )));
    }
    let hash = password::hash(password).await?;
    let user = users::insert(db, username, &hash, role)
        .await
        .map_err(dberr("creating a user"))?;
    record(
        db,
        actor,
        "user.create",
        username,
        Some(json!({ "role": role })),
    )
    .await?;
    Ok(user.info())
}

/// Refuses to leave the system without an active admin.
async fn keep_an_admin(db: &DatabaseConnection, user: &users::User) -> Result<(), AppError> {
    if user.role() == Role::Admin
        && !user.disabled
        && users::active_admins(db)
            .await
            .map_err(dberr("counting admins"))?
            <= 1
    {
        return Err(AppError::Conflict(format!(
            "`{}` is the last active admin: make another user admin first",
            user.username
        )));
    }
    Ok(())
}

pub async fn set_role(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    username: &str,
    role: Role,
) -> Result<UserInfo, AppError> {
    let user = find_user(db, username).await?;
    if user.role() == role {
        return Ok(user.info());
    }
    if role != Role::Admin {
        keep_an_admin(db, &user).await?;
    }
    let user = users::update(db, user.id, users::Change::Role(role))
        .await
        .map_err(dberr("changing a role"))?;
    record(
        db,
        actor,
        "user.role",
        username,
        Some(json!({ "role": role })),
    )
    .await?;
    Ok(user.info())
}

pub async fn set_disabled(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    username: &str,
    disabled: bool,
) -> Result<UserInfo, AppError> {
    let user = find_user(db, username).await?;
    if user.disabled == disabled {
        return Ok(user.info());
    }
    if disabled {
        keep_an_admin(db, &user).await?;
    }
    let updated = users::update(db, user.id, users::Change::Disabled(disabled))
        .await
        .map_err(dberr("disabling a user"))?;
    if disabled {
        sessions::delete_for_user(db, user.id, None)
            .await
            .map_err(dberr("ending sessions"))?;
    }
    record(
        db,
        actor,
        if disabled {
            "user.disable"
        } else {
            "user.enable"
        },
        username,
        None,
    )
    .await?;
    Ok(updated.info())
}

/// Sets a user's password and ends their sessions (except `keep_session`).
pub async fn set_password(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    username: &str,
    password: String,
    keep_session: Option<&str>,
) -> Result<(), AppError> {
    validate_password(&password)?;
    let user = find_user(db, username).await?;
    let hash = password::hash(password).await?;
    users::update(db, user.id, users::Change::PasswordHash(hash))
        .await
        .map_err(dberr("setting a password"))?;
    sessions::delete_for_user(db, user.id, keep_session)
        .await
        .map_err(dberr("ending sessions"))?;
    record(db, actor, "user.password", username, None).await
}

/// Checks `current` before setting the user's own new password.
pub async fn change_own_password(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    username: &str,
    current: String,
    new: String,
    keep_session: Option<&str>,
) -> Result<(), AppError> {
    let user = find_user(db, username).await?;
    if !password::verify(current, Some(user.password_hash.clone())).await {
        return Err(AppError::field("current", "the current password is wrong"));
    }
    set_password(db, actor, username, new, keep_session).await
}

fn token_info(t: &tokens::Token, username: &str) -> TokenInfo {
    TokenInfo {
        id: t.id,
        username: username.to_string(),
        label: t.label.clone(),
        created_at: t.created_at,
        last_used_at: t.last_used_at,
        revoked_at: t.revoked_at,
    }
}

/// Tokens of one user, or of everyone.
pub async fn list_tokens(
    db: &DatabaseConnection,
    user_id: Option<i64>,
) -> Result<Vec<TokenInfo>, AppError> {
    let names: std::collections::HashMap<i64, String> = users::all(db)
        .await
        .map_err(dberr("listing users"))?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect();
    Ok(tokens::list(db, user_id)
        .await
        .map_err(dberr("listing tokens"))?
        .iter()
        .map(|t| token_info(t, names.get(&t.user_id).map_or("?", String::as_str)))
        .collect())
}

/// Creates a token; the secret is returned once and stored hashed.
pub async fn create_token(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    username: &str,
    label: &str,
) -> Result<NewToken, AppError> {
    let label = validate_token_label(label)?;
    let user = find_user(db, username).await?;
    let secret = secret::new_api_token();
    let t = tokens::insert(db, user.id, &label, &secret::sha256_hex(&secret))
        .await
        .map_err(dberr("creating a token"))?;
    record(
        db,
        actor,
        "token.create",
        username,
        Some(json!({ "token_id": t.id, "label": label })),
    )
    .await?;
    Ok(NewToken {
        info: token_info(&t, &user.username),
        token: secret,
    })
}

/// A token and its owner, or 404.
pub async fn find_token(
    db: &DatabaseConnection,
    id: i64,
) -> Result<(tokens::Token, users::User), AppError> {
    let not_found = || AppError::NotFound(format!("no token {id}"));
    let t = tokens::by_id(db, id)
        .await
        .map_err(dberr("looking up a token"))?
        .ok_or_else(not_found)?;
    let owner = users::by_id(db, t.user_id)
        .await
        .map_err(dberr("looking up a user"))?
        .ok_or_else(not_found)?;
    Ok((t, owner))
}

/// Revokes a token (409 if it already was).
pub async fn revoke_token(
    db: &DatabaseConnection,
    actor: Actor<'_>,
    id: i64,
) -> Result<TokenInfo, AppError> {
    let (_, owner) = find_token(db, id).await?;
    if !tokens::revoke(db, id)
        .await
        .map_err(dberr("revoking a token"))?
    {
        return Err(AppError::Conflict(format!("token {id} is already revoked")));
    }
    record(
        db,
        actor,
        "token.revoke",
        &owner.username,
        Some(json!({ "token_id": id })),
    )
    .await?;
    let (t, owner) = find_token(db, id).await?;
    Ok(token_info(&t, &owner.username))
}
