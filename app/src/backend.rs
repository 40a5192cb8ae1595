//! The port between the Leptos app and the server (server-only).
//!
//! Server functions live in this crate because the browser needs their client
//! halves, but the database, the engine and the permission guard live in the
//! `server` crate, which depends on this one. So the server implements
//! [`Backend`] and provides it as context to every server function and SSR
//! render (`leptos_routes_with_context`); server functions stay thin: take the
//! backend and the caller, call one method.

use std::sync::Arc;

use leptos::prelude::*;

use crate::error::AppError;
use crate::model::journal::JournalEntry;

/// What the app asks of the server. Every method enforces its own permissions.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The newest journal notes, newest first.
    async fn journal(&self, limit: u64) -> Result<Vec<JournalEntry>, AppError>;
    /// Stores a note (validated with `validate_note`).
    async fn post_journal(&self, text: String) -> Result<JournalEntry, AppError>;
}

/// The backend as it travels through Leptos context.
pub type SharedBackend = Arc<dyn Backend>;

/// The backend provided by the server for this request.
pub fn backend() -> Result<SharedBackend, AppError> {
    use_context::<SharedBackend>().ok_or_else(|| {
        leptos::logging::error!("no Backend in context: the server must provide it");
        AppError::Internal
    })
}

/// Passes a server function's result through, giving an error the HTTP status
/// it deserves (400, 403, 404, …) when the call came from the app's own
/// client. A plain form post (JavaScript off) keeps leptos' redirect back to
/// the form, which carries the error in the URL; a page render keeps the
/// page's status.
pub fn respond<T>(result: Result<T, AppError>) -> Result<T, AppError> {
    if let Err(e) = &result {
        let browser_navigation = use_context::<http::request::Parts>()
            .and_then(|p| {
                p.headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.contains("text/html"))
            })
            .unwrap_or(false);
        if !browser_navigation {
            if let (Some(res), Ok(status)) = (
                use_context::<leptos_axum::ResponseOptions>(),
                http::StatusCode::from_u16(e.status()),
            ) {
                res.set_status(status);
            }
        }
    }
    result
}
