//! The one error type that crosses the wire.
//!
//! Server functions return `Result<_, AppError>`, the REST API maps it to the
//! status codes of DESIGN.md, and the browser renders its `Display` text. Each
//! user-facing variant says what to do; internal causes are logged by the server
//! and reach the user only as [`AppError::Internal`].

use crate::codec::JsonText;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What went wrong, as the user may be told.
///
/// On the wire: `{"kind": "not_found", "detail": "no job 4"}`, the detail
/// a message, the fields of `BadRequest` or `TooManyRequests`, or absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
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

/// N.B.: written out, for the same wire form as the derived `Serialize`.
/// serde's derived `Deserialize` of an adjacently tagged enum buffers its
/// input in serde's generic `Content` tree, code that only this type used
/// in the browser's main wasm; here the detail is read as a JSON value (the
/// browser decodes those anyway, for job parameters). Saved 3.9 KB of the
/// main wasm after brotli (docs/benchmarks.md, issue 16).
/// `every_variant_survives_the_wire` holds the two sides together.
impl<'de> Deserialize<'de> for AppError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            kind: String,
            #[serde(default)]
            detail: Value,
        }
        let Wire { kind, detail } = Wire::deserialize(d)?;
        let bad = |what: &str| D::Error::custom(format!("`{kind}` error: {what}"));
        let text = |detail: &Value| {
            detail
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("its detail is not a message"))
        };
        Ok(match kind.as_str() {
            "bad_request" => AppError::BadRequest {
                message: detail
                    .get("message")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("no message"))?
                    .to_string(),
                field: detail
                    .get("field")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            },
            "unauthorized" => AppError::Unauthorized(text(&detail)?),
            "forbidden" => AppError::Forbidden(text(&detail)?),
            "not_found" => AppError::NotFound(text(&detail)?),
            "conflict" => AppError::Conflict(text(&detail)?),
            "too_large" => AppError::TooLarge(text(&detail)?),
            "too_many_requests" => AppError::TooManyRequests {
                retry_after_secs: detail
                    .get("retry_after_secs")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("no retry_after_secs"))?,
            },
            "limit_reached" => AppError::LimitReached(text(&detail)?),
            "unavailable" => AppError::Unavailable(text(&detail)?),
            "internal" => AppError::Internal,
            "transport" => AppError::Transport(text(&detail)?),
            _ => return Err(bad("not a kind of error this version knows")),
        })
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

    /// Every variant (and `BadRequest` without a field). The match fails
    /// to compile when a variant is added: add it here, and to the
    /// hand-written `Deserialize`.
    fn one_of_each() -> Vec<AppError> {
        let all = vec![
            AppError::field("path", "must be absolute"),
            AppError::bad_request("no such template"),
            AppError::sign_in(),
            AppError::admin_only(),
            AppError::NotFound("no job 4".into()),
            AppError::Conflict("finished".into()),
            AppError::TooLarge("over 1 MiB".into()),
            AppError::TooManyRequests {
                retry_after_secs: 5,
            },
            AppError::LimitReached("streams".into()),
            AppError::Unavailable("db".into()),
            AppError::Internal,
            AppError::Transport("offline \"quoted\"".into()),
        ];
        for e in &all {
            match e {
                AppError::BadRequest { .. }
                | AppError::Unauthorized(_)
                | AppError::Forbidden(_)
                | AppError::NotFound(_)
                | AppError::Conflict(_)
                | AppError::TooLarge(_)
                | AppError::TooManyRequests { .. }
                | AppError::LimitReached(_)
                | AppError::Unavailable(_)
                | AppError::Internal
                | AppError::Transport(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_variant_survives_the_wire() {
        for e in one_of_each() {
            let bytes = e.ser();
            assert_eq!(AppError::de(bytes), e);
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(serde_json::from_value::<AppError>(json).unwrap(), e);
        }
    }

    #[test]
    fn the_wire_form_is_kind_and_detail_in_any_order() {
        let read = |s: &str| serde_json::from_str::<AppError>(s);
        assert_eq!(
            read(r#"{"detail":"no job 4","kind":"not_found"}"#).unwrap(),
            AppError::NotFound("no job 4".into())
        );
        assert_eq!(
            read(r#"{"kind":"bad_request","detail":{"message":"m"}}"#).unwrap(),
            AppError::bad_request("m")
        );
        assert_eq!(read(r#"{"kind":"internal"}"#).unwrap(), AppError::Internal);
        assert_eq!(
            serde_json::to_string(&AppError::Internal).unwrap(),
            r#"{"kind":"internal"}"#
        );
        for bad in [
            r#"{"kind":"teapot","detail":"short and stout"}"#,
            r#"{"kind":"not_found"}"#,
            r#"{"kind":"not_found","detail":4}"#,
            r#"{"kind":"too_many_requests","detail":{}}"#,
            r#"{"detail":"no kind"}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
