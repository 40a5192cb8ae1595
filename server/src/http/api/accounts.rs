//! `/api/auth/*`, `/api/me`, `/api/users`, `/api/tokens`, `/api/audit`.

use app::backend::{Backend, Caller};
use app::model::user::{AuditPage, AuditQuery, CurrentUser, NewToken, Role, TokenInfo, UserInfo};
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::routes::{Access, Kind, Rule};
use crate::state::AppState;

pub fn routes() -> Vec<(Rule, MethodRouter<AppState>)> {
    use Access::*;
    let r = |m: Method, p: &str, a: Access| Rule::new(m, p, Kind::Api, a);
    vec![
        (r(Method::POST, "/api/auth/login", Public), post(login)),
        (
            r(Method::POST, "/api/auth/logout", Authenticated),
            post(logout),
        ),
        (r(Method::GET, "/api/me", Authenticated), get(me)),
        (r(Method::GET, "/api/users", Admin), get(list_users)),
        (r(Method::POST, "/api/users", Admin), post(create_user)),
        (
            r(Method::GET, "/api/tokens", Authenticated),
            get(list_tokens),
        ),
        (
            r(Method::POST, "/api/tokens", Authenticated),
            post(create_token),
        ),
        (
            r(Method::POST, "/api/tokens/{id}/revoke", Authenticated),
            post(revoke_token),
        ),
        (r(Method::GET, "/api/audit", Admin), get(audit)),
    ]
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/auth/login`: sets the session cookie, answers the user.
async fn login(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Response> {
    let signed_in = state.login(&caller, body.username, body.password).await?;
    Ok((
        [(header::SET_COOKIE, signed_in.set_cookie)],
        Json(serde_json::json!({ "user": signed_in.user })),
    )
        .into_response())
}

/// `POST /api/auth/logout`: ends the session, clears the cookie.
async fn logout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Response> {
    let clear = state.logout(&caller).await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// `GET /api/me`
async fn me(Extension(caller): Extension<Caller>) -> ApiResult<Json<CurrentUser>> {
    Ok(Json(caller.user()?.clone()))
}

/// `GET /api/users`
async fn list_users(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<UserInfo>>> {
    Ok(Json(state.users(&caller).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    username: String,
    role: Role,
    password: String,
}

/// `POST /api/users`: 201 with the user.
async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<NewUserBody>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    let user = state
        .create_user(&caller, body.username, body.role, body.password)
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /api/tokens[?all=true]`: the caller's tokens (admins: everyone's).
async fn list_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<TokensQuery>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(state.tokens(&caller, q.all).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    label: String,
    /// Admins may create a token for another user.
    username: Option<String>,
}

/// `POST /api/tokens`: 201 with the token, shown this once.
async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<NewTokenBody>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    let token = state
        .create_token(&caller, body.username, body.label)
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// `POST /api/tokens/{id}/revoke`
async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let id = id
        .parse::<i64>()
        .map_err(|_| app::error::AppError::field("id", "a token id is a number"))?;
    Ok(Json(state.revoke_token(&caller, id).await?))
}

/// `GET /api/audit?actor=&action=&before=&limit=`
async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    Ok(Json(state.audit(&caller, q).await?))
}
