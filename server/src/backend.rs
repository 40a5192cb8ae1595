//! The server's side of `app::backend::Backend`: what server functions call.
//! Each method validates, decides permissions and calls the data layer.

use app::backend::Backend;
use app::error::AppError;
use app::model::journal::{validate_note, JournalEntry};

use crate::db;
use crate::http::error::db_error;
use crate::state::AppState;

#[async_trait::async_trait]
impl Backend for AppState {
    async fn journal(&self, limit: u64) -> Result<Vec<JournalEntry>, AppError> {
        db::journal::newest(&self.db, limit.min(100))
            .await
            .map_err(|e| db_error(e, "listing journal notes"))
    }

    async fn post_journal(&self, text: String) -> Result<JournalEntry, AppError> {
        let text = validate_note(&text)?;
        db::journal::insert(&self.db, "anonymous", &text)
            .await
            .map_err(|e| db_error(e, "storing a journal note"))
    }
}
