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

use crate::config::{Config, Target};
use crate::db::jobs::{JobRow, Visible};

/// Whether `user` may launch jobs on `target` (admins: any; operators: the
/// targets that list them as owners).
pub fn may_launch(user: &CurrentUser, target: &Target) -> bool {
    user.is_admin() || target.owners.iter().any(|o| o == &user.username)
}

/// The targets `user` may launch on.
pub fn launchable_targets<'a>(user: &CurrentUser, config: &'a Config) -> Vec<&'a Target> {
    config
        .targets
        .iter()
        .filter(|t| may_launch(user, t))
        .collect()
}

/// Whether `user` may see (and so cancel, rerun, stream) a job: admins all;
/// operators their own and those on their targets. Others' jobs answer 404.
pub fn may_see_job(user: &CurrentUser, job: &JobRow, config: &Config) -> bool {
    job.owner_id == user.id || may_see(user, &job.owner, &job.target, config)
}

/// The filter a job list applies for `user`.
pub fn visible_jobs<'a>(user: &CurrentUser, owned: &'a [String]) -> Visible<'a> {
    if user.is_admin() {
        Visible::All
    } else {
        Visible::OwnOrTargets {
            user_id: user.id,
            targets: owned,
        }
    }
}

/// Whether `user` may open a terminal on `target`: the target allows
/// terminals, and the user's role is among its `terminal_roles`.
pub fn may_open_terminal(user: &CurrentUser, target: &Target) -> bool {
    use crate::config::RoleName;
    if !target.terminal {
        return false;
    }
    let role = if user.is_admin() {
        RoleName::Admin
    } else {
        RoleName::Operator
    };
    target.terminal_roles.contains(&role) && (user.is_admin() || may_launch(user, target))
}

/// Whether `user` may see a job owned by `owner` on `target` (for the feed,
/// which carries jobs, not rows): the same rule as [`may_see_job`].
pub fn may_see(user: &CurrentUser, owner: &str, target: &str, config: &Config) -> bool {
    user.is_admin()
        || owner == user.username
        || config.target(target).is_some_and(|t| may_launch(user, t))
}

/// Whether `user` may see the agent `name`'s status: admins; operators
/// who may launch on one of its targets.
pub fn may_see_agent(user: &CurrentUser, name: &str, config: &Config) -> bool {
    user.is_admin()
        || config
            .targets
            .iter()
            .any(|t| t.agent() == Some(name) && may_launch(user, t))
}
