//! Browser terminals as use cases: who may open one on which target, and
//! the audit entries of a session's start and end. The PTY, the session
//! registry and the WebSocket are `crate::terminal`'s.

use app::backend::Caller;
use app::error::AppError;
use app::model::user::CurrentUser;
use serde_json::json;

use crate::auth::policy;
use crate::config::Target;
use crate::db::audit;
use crate::http::error::db_error;
use crate::state::AppState;

/// The caller and the target they may open a terminal on: 404 for a
/// target they cannot see, 403 when it allows no terminal or not for
/// their role.
pub fn authorize(
    state: &AppState,
    caller: &Caller,
    target_id: &str,
) -> Result<(CurrentUser, Target), AppError> {
    let user = policy::require_user(caller)?.clone();
    let target = state
        .config
        .target(target_id)
        .filter(|t| user.is_admin() || policy::may_launch(&user, t))
        .ok_or_else(|| AppError::NotFound(format!("no target `{target_id}`")))?
        .clone();
    if !policy::may_open_terminal(&user, &target) {
        return Err(AppError::Forbidden(if target.terminal {
            format!(
                "your role may not open a terminal on `{}`: ask an admin",
                target.id
            )
        } else {
            format!(
                "target `{}` does not allow terminals (`terminal = true` in its config)",
                target.id
            )
        }));
    }
    Ok((user, target))
}

/// A session started: `terminal.start` in the audit log.
pub async fn started(
    state: &AppState,
    user: &CurrentUser,
    ip: Option<&str>,
    target: &Target,
    session: &str,
    argv: &[String],
    recorded: bool,
) -> Result<(), AppError> {
    audit::insert(
        &state.db,
        audit::Record {
            actor: &user.username,
            action: "terminal.start",
            subject: &target.id,
            detail: Some(json!({
                "session": session,
                // Where it lives: a reattach that another replica receives
                // says so (`elsewhere`).
                "node": state.config.cluster.node,
                "kind": target.kind(),
                "command": argv,
                "recording": recorded.then_some(session),
            })),
            ip,
        },
    )
    .await
    .map_err(|e| db_error(e, "writing the audit log"))
}

/// A reattach to `session` reached this replica, which does not hold it:
/// why it cannot be resumed here, if it is open on another replica
/// (sessions live in the process that started them).
pub async fn elsewhere(
    state: &AppState,
    target: &Target,
    session: &str,
) -> Result<Option<String>, AppError> {
    if state.replicas.is_none() {
        return Ok(None);
    }
    let node = audit::open_terminal_node(&state.db, &target.id, session)
        .await
        .map_err(|e| db_error(e, "reading the audit log"))?;
    Ok(node
        .filter(|node| *node != state.config.cluster.node)
        .map(|node| {
            format!(
                "this terminal session lives on the opsdeck node `{node}`, but the reconnect \
                 reached the node `{}`: the load balancer must route /api/targets/*/terminal \
                 stickily, so a browser always reaches the same replica (docs/deploy.md); \
                 open the console in a new tab to start a session here",
                state.config.cluster.node
            )
        }))
}

/// How a session ended, for `terminal.end`.
pub struct Ended<'a> {
    pub username: &'a str,
    pub ip: Option<&'a str>,
    pub target: &'a str,
    pub session: &'a str,
    pub code: i32,
    pub seconds: u64,
    pub reason: Option<&'a str>,
    pub recorded: bool,
}

/// A session ended: `terminal.end` in the audit log (logged if it cannot
/// be written: the session is over either way).
pub async fn ended(db: &sea_orm::DatabaseConnection, e: Ended<'_>) {
    let detail = json!({
        "session": e.session,
        "code": e.code,
        "seconds": e.seconds,
        "reason": e.reason,
        "recording": e.recorded.then_some(e.session),
    });
    let record = audit::Record {
        actor: e.username,
        action: "terminal.end",
        subject: e.target,
        detail: Some(detail),
        ip: e.ip,
    };
    if let Err(err) = audit::insert(db, record).await {
        tracing::error!(error = %err, "cannot write the audit log");
    }
}

/// A recording may be read (admins).
pub fn may_read_recording(caller: &Caller) -> Result<(), AppError> {
    policy::require_admin(caller).map(|_| ())
}
