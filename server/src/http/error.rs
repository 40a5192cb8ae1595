//! How errors leave the HTTP API: `{"error": "...", "field": "..."}` with the
//! status DESIGN.md assigns. Internal causes are logged here, never sent.

use app::error::AppError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sea_orm::DbErr;
use serde_json::json;

/// An [`AppError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({ "error": self.0.to_string() });
        if let Some(field) = self.0.field_name() {
            body["field"] = json!(field);
        }
        let mut res = (status, Json(body)).into_response();
        if let AppError::TooManyRequests { retry_after_secs } = self.0 {
            if let Ok(v) = retry_after_secs.to_string().parse() {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        res
    }
}

/// Logs a database error with what was being done, and says only as much to
/// the user as helps: unavailable (retry) or internal.
pub fn db_error(e: DbErr, doing: &str) -> AppError {
    tracing::error!(error = %e, "database error while {doing}");
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
            AppError::Unavailable("the database is unavailable right now; try again shortly".into())
        }
        _ => AppError::Internal,
    }
}
