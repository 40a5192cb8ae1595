//! The audit log, for admins.

use app::backend::Caller;
use app::error::AppError;
use app::model::user::{AuditPage, AuditQuery};

use crate::auth::policy;
use crate::db;
use crate::http::error::db_error;
use crate::state::AppState;

/// A page of entries, newest first.
pub async fn page(
    state: &AppState,
    caller: &Caller,
    query: AuditQuery,
) -> Result<AuditPage, AppError> {
    policy::require_admin(caller)?;
    let (entries, next_before) = db::audit::page(&state.reader, &query)
        .await
        .map_err(|e| db_error(e, "reading the audit log"))?;
    Ok(AuditPage {
        entries,
        next_before,
    })
}
