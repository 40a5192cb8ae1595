//! The journal: short notes signed-in users leave for each other.

use app::backend::Caller;
use app::error::AppError;
use app::model::journal::{validate_note, JournalEntry};

use crate::auth::policy;
use crate::db;
use crate::http::error::db_error;
use crate::state::AppState;

/// The newest notes, newest first (at most 100).
pub async fn newest(
    state: &AppState,
    caller: &Caller,
    limit: u64,
) -> Result<Vec<JournalEntry>, AppError> {
    policy::require_user(caller)?;
    db::journal::newest(&state.reader, limit.min(100))
        .await
        .map_err(|e| db_error(e, "listing journal notes"))
}

/// Stores a note by the caller.
pub async fn post(
    state: &AppState,
    caller: &Caller,
    text: String,
) -> Result<JournalEntry, AppError> {
    let user = policy::require_user(caller)?;
    let text = validate_note(&text)?;
    db::journal::insert(&state.db, &user.username, &text)
        .await
        .map_err(|e| db_error(e, "storing a journal note"))
}
