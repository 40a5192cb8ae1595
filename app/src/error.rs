//! The one error type that crosses the wire.
//!
//! Server functions return `Result<_, AppError>`, the REST API maps it to the
//! status codes of DESIGN.md, and the browser renders its `Display` text. Each
//! user-facing variant says what to do; internal causes are logged by the server
//! and reach the user only as [`AppError::Internal`].

use crate::codec::JsonText;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

/// What went wrong, as the user may be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum AppError {
    /// Bad input (400): the message names the problem, `field` the input it came from.
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// No or invalid credentials (401); the message says which and what to do.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Missing, or not visible to the caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The request is larger than the server accepts (413); the message
    /// says the limit.
    #[error("{0}")]
    TooLarge(String),
    /// Too many attempts (429).
    #[error("too many failed attempts: try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// Over a limit on what one caller may hold open at once (429); the
    /// message names the limit and its setting.
    #[error("{0}")]
    LimitReached(String),
    /// A dependency (the database) is down (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500). The server log has the cause.
    #[error("something went wrong on the server; its log has the details")]
    Internal,
    /// The browser could not talk to the server (network, decoding).
    #[error("could not reach the server ({0}); check the connection and try again")]
    Transport(String),
}

impl AppError {
    /// A 400 for one input field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// The 401 for a request without credentials.
    pub fn sign_in() -> Self {
        AppError::Unauthorized("sign in to continue".into())
    }

    /// A 403 for a non-admin.
    pub fn admin_only() -> Self {
        AppError::Forbidden("this needs the admin role: ask an admin".into())
    }

    /// A 400 not tied to one field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest { .. } => 400,
            AppError::Unauthorized(_) => 401,
            AppError::Forbidden(_) => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::TooLarge(_) => 413,
            AppError::TooManyRequests { .. } | AppError::LimitReached(_) => 429,
            AppError::Unavailable(_) => 503,
            AppError::Internal | AppError::Transport(_) => 500,
        }
    }

    /// The input field a 400 refers to, if any.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            AppError::BadRequest { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The message for one field, if this error is about that field.
    pub fn message_for(&self, field: &str) -> Option<String> {
        (self.field_name() == Some(field)).then(|| self.to_string())
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonText;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(msg) | ServerFnErrorErr::MissingArg(msg) => {
                AppError::bad_request(format!("the form was incomplete: {msg}"))
            }
            other => AppError::Transport(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_survives_the_wire() {
        let all = [
            AppError::field("path", "must be absolute"),
            AppError::sign_in(),
            AppError::admin_only(),
            AppError::NotFound("no job 4".into()),
            AppError::Conflict("finished".into()),
            AppError::TooManyRequests {
                retry_after_secs: 5,
            },
            AppError::LimitReached("streams".into()),
            AppError::Unavailable("db".into()),
            AppError::Internal,
            AppError::Transport("offline".into()),
        ];
        for e in all {
            let bytes = e.ser();
            assert_eq!(AppError::de(bytes), e);
        }
    }
}
