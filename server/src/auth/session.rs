//! Session cookies and API tokens: turning what a request carries into a user.

use std::time::Duration;

use app::model::user::CurrentUser;
use axum::http::{header, HeaderMap};
use chrono::Utc;
use sea_orm::{DatabaseConnection, DbErr};

use crate::auth::secret::{random_secret, sha256_hex};
use crate::db::{sessions, tokens, users};

/// The session cookie's name.
pub const COOKIE: &str = "opsdeck_session";

/// How often `last_seen_at` (and the cookie) are refreshed: not on every request.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// The `Set-Cookie` value for a session token.
pub fn set_cookie(token: &str, idle: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        idle.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The session token in the request's cookies, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

pub fn current(user: &users::User) -> CurrentUser {
    CurrentUser {
        id: user.id,
        username: user.username.clone(),
        role: user.role(),
    }
}

/// Starts a session; returns the token for the cookie (only its hash is stored).
pub async fn start(
    db: &DatabaseConnection,
    user_id: i64,
    ip: Option<String>,
    user_agent: Option<String>,
) -> Result<String, DbErr> {
    let token = random_secret(43);
    sessions::insert(db, &sha256_hex(&token), user_id, ip, user_agent).await?;
    Ok(token)
}

/// A valid session behind a cookie.
pub struct ResolvedSession {
    pub user: CurrentUser,
    pub id_hash: String,
    /// The session was touched now: send the cookie again to extend it.
    pub touched: bool,
}

/// The session behind a cookie token: `None` if unknown, idle for longer
/// than `idle`, or its user is disabled (expired sessions are deleted).
/// Every request asks this: it reads through `reader` and writes (now and
/// then) through `db`.
pub async fn resolve(
    reader: &DatabaseConnection,
    db: &DatabaseConnection,
    token: &str,
    idle: Duration,
) -> Result<Option<ResolvedSession>, DbErr> {
    let id_hash = sha256_hex(token);
    let Some(session) = sessions::by_id(reader, &id_hash).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let idle = chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::days(7));
    if now - session.last_seen_at > idle {
        sessions::delete(db, &id_hash).await?;
        return Ok(None);
    }
    let Some(user) = users::by_id(reader, session.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        return Ok(None);
    };
    let touched = now - session.last_seen_at > TOUCH_EVERY;
    if touched {
        sessions::touch(db, &id_hash, now).await?;
    }
    Ok(Some(ResolvedSession {
        user: current(&user),
        id_hash,
        touched,
    }))
}

/// The user behind a bearer token, and the token's id: `None` if unknown,
/// revoked, or its user is disabled. Reads through `reader`, writes through
/// `db` (as [`resolve`]).
pub async fn resolve_token(
    reader: &DatabaseConnection,
    db: &DatabaseConnection,
    token: &str,
) -> Result<Option<(CurrentUser, i64)>, DbErr> {
    let Some(t) = tokens::holder(reader, &sha256_hex(token)).await? else {
        return Ok(None);
    };
    if t.revoked_at.is_some() || t.disabled {
        return Ok(None);
    }
    let now = Utc::now();
    if t.last_used_at.is_none_or(|at| now - at > TOUCH_EVERY) {
        tokens::mark_used(db, t.token_id, now).await?;
    }
    Ok(Some((
        CurrentUser {
            id: t.user_id,
            username: t.username,
            role: users::stored_role(&t.role),
        },
        t.token_id,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_lax_and_secure_over_https() {
        let c = set_cookie("abc", Duration::from_secs(60), false);
        assert_eq!(
            c,
            "opsdeck_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        assert!(set_cookie("abc", Duration::from_secs(60), true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn the_session_token_is_found_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "theme=dark; opsdeck_session=tok123".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("tok123"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "opsdeck_session=".parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }
}
