//! Signing in and out. Failed attempts are counted from the audit log (so the
//! limit holds across restarts and replicas): after `login_max_failures`
//! failures for one username or one address within `login_window`, further
//! attempts answer 429 until the window has passed. The password check takes
//! the same time whether or not the user exists, and the error never says
//! which of the two was wrong.

use app::backend::{Caller, SignedIn};
use app::error::AppError;
use chrono::Utc;
use serde_json::json;

use crate::auth::{password, session};
use crate::db::audit::{self, FailureKey, Record};
use crate::db::{sessions, users};
use crate::http::error::db_error;
use crate::metrics::Limit;
use crate::state::AppState;

/// The one message for every failed sign-in.
const BAD_CREDENTIALS: &str = "wrong username or password";

/// Checks the credentials and starts a session.
pub async fn login(
    state: &AppState,
    caller: &Caller,
    username: &str,
    password: String,
) -> Result<SignedIn, AppError> {
    let db = &state.db;
    let cfg = &state.config.auth;
    // Whatever was typed, bounded, for the audit log and the counters.
    let typed: String = username
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let ip = caller.ip.as_deref();

    let window =
        chrono::Duration::from_std(cfg.login_window).unwrap_or(chrono::Duration::minutes(15));
    let now = Utc::now();
    let keys = [Some(FailureKey::Username(&typed)), ip.map(FailureKey::Ip)];
    for key in keys.into_iter().flatten() {
        let (count, oldest) = audit::failures_since(db, key, now - window)
            .await
            .map_err(|e| db_error(e, "counting failed logins"))?;
        if count >= u64::from(cfg.login_max_failures) {
            let until = oldest.unwrap_or(now) + window;
            let retry_after_secs = (until - now).num_seconds().max(1) as u64;
            state.metrics.refusals().count(Limit::LoginAttempts);
            return Err(AppError::TooManyRequests { retry_after_secs });
        }
    }

    let user = users::by_name(db, &typed)
        .await
        .map_err(|e| db_error(e, "looking up a user"))?;
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map(|u| u.password_hash.clone());
    let ok = password::verify(password, hash).await;
    let user = match user {
        Some(u) if ok => u,
        other => {
            let reason = match other {
                None => "unknown user",
                Some(u) if u.disabled => "user disabled",
                Some(_) => "wrong password",
            };
            audit::insert(
                db,
                Record {
                    actor: "-",
                    action: "login.failure",
                    subject: &typed,
                    detail: Some(json!({ "reason": reason })),
                    ip,
                },
            )
            .await
            .map_err(|e| db_error(e, "recording a failed login"))?;
            return Err(AppError::Unauthorized(BAD_CREDENTIALS.into()));
        }
    };

    let token = session::start(db, user.id, caller.ip.clone(), caller.user_agent.clone())
        .await
        .map_err(|e| db_error(e, "starting a session"))?;
    users::update(db, user.id, users::Change::LoggedIn)
        .await
        .map_err(|e| db_error(e, "recording a login"))?;
    audit::insert(
        db,
        Record {
            actor: &user.username,
            action: "login.success",
            subject: &user.username,
            detail: None,
            ip,
        },
    )
    .await
    .map_err(|e| db_error(e, "recording a login"))?;
    Ok(SignedIn {
        user: session::current(&user),
        set_cookie: session::set_cookie(&token, cfg.session_idle, caller.secure),
    })
}

/// Ends the caller's session server-side; returns the cookie-clearing header.
pub async fn logout(state: &AppState, caller: &Caller) -> Result<String, AppError> {
    let user = caller.user()?;
    if let Some(id) = &caller.session {
        sessions::delete(&state.db, id)
            .await
            .map_err(|e| db_error(e, "ending a session"))?;
        state.revocations.check_now();
    }
    audit::insert(
        &state.db,
        Record {
            actor: &user.username,
            action: "logout",
            subject: &user.username,
            detail: None,
            ip: caller.ip.as_deref(),
        },
    )
    .await
    .map_err(|e| db_error(e, "recording a logout"))?;
    Ok(session::clear_cookie(caller.secure))
}
