//! Every permission decision, in one place. The guard applies route-level
//! access (signed in, admin) from the route table; everything finer (whose
//! tokens, which jobs and targets) is decided here and nowhere else.

use app::backend::Caller;
use app::error::AppError;
use app::model::user::CurrentUser;

/// The signed-in user, or 401.
pub fn require_user(caller: &Caller) -> Result<&CurrentUser, AppError> {
    caller.user()
}

/// The signed-in admin, or 401/403.
pub fn require_admin(caller: &Caller) -> Result<&CurrentUser, AppError> {
    let user = caller.user()?;
    if user.is_admin() {
        Ok(user)
    } else {
        Err(AppError::admin_only())
    }
}

/// Whether `user` may list and revoke the tokens of the user `owner_id`.
pub fn may_manage_tokens_of(user: &CurrentUser, owner_id: i64) -> bool {
    user.is_admin() || user.id == owner_id
}
