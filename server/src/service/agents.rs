//! Agents as use cases: enrolling one (its token shown once, kept hashed),
//! listing them with their status, revoking one (its connections close
//! within a heartbeat, on every replica), authenticating an agent's
//! connection, and an admin's "Mark failed" on a job whose agent is gone.

use std::sync::Arc;

use app::backend::Caller;
use app::error::AppError;
use app::model::agent::{AgentInfo, AgentStatus, NewAgent};
use app::model::job::Job;
use axum::http::{header, HeaderMap};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DbErr};
use serde_json::json;

use crate::auth::{policy, secret};
use crate::config::Config;
use crate::db::agents::{self, Agent};
use crate::db::{audit, jobs};
use crate::engine::transition::{Actor, Transition};
use crate::http::error::db_error;
use crate::state::AppState;

/// A new agent token: `oda_` and 43 random characters.
fn new_token() -> String {
    format!("oda_{}", secret::random_secret(43))
}

/// Agent names: the configuration's rule for ids (a target names its
/// agent with `agent = "NAME"`, checked by the same expression).
fn validate_name(name: &str) -> Result<(), AppError> {
    if crate::config::ID_RE.is_match(name) {
        Ok(())
    } else {
        Err(AppError::field(
            "name",
            format!("`{name}` is not an agent name: use ^[a-z0-9][a-z0-9_.-]{{0,62}}$"),
        ))
    }
}

/// The status and details of `agent`, as a page shows them.
pub async fn info(
    db: &impl ConnectionTrait,
    config: &Config,
    agent: &Agent,
) -> Result<AgentInfo, DbErr> {
    let now = Utc::now();
    let unreachable = chrono::Duration::from_std(config.agents.unreachable_after)
        .unwrap_or(chrono::Duration::seconds(30));
    let status = if agent.revoked_at.is_some() {
        AgentStatus::Revoked
    } else if agent.connected_at.is_none() {
        AgentStatus::Offline
    } else if agent.last_seen_at.is_some_and(|at| now - at <= unreachable) {
        AgentStatus::Online
    } else {
        AgentStatus::Unreachable
    };
    let running = jobs::active_on_agent(db, &agent.name).await?.len() as u64;
    Ok(AgentInfo {
        name: agent.name.clone(),
        status,
        hostname: agent.hostname.clone(),
        version: agent.version.clone(),
        connected_since: agent.connected_at,
        last_heartbeat: agent.last_seen_at,
        running_jobs: running,
        targets: config
            .targets
            .iter()
            .filter(|t| t.agent() == Some(&agent.name))
            .map(|t| t.id.clone())
            .collect(),
        created_at: agent.created_at,
    })
}

/// Tells the feed what `name` is now.
async fn announce(state: &AppState, name: &str) {
    match agents::by_name(&state.db, name).await {
        Ok(Some(agent)) => match info(&state.db, &state.config, &agent).await {
            Ok(i) => state.hub.agent_changed(i),
            Err(e) => tracing::warn!(agent = name, error = %e, "cannot read the agent's jobs"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(agent = name, error = %e, "cannot read the agent"),
    }
}

/// Enrols an agent by `actor` (an admin, or `cli` on the server host).
pub async fn create(
    db: &impl ConnectionTrait,
    config: &Config,
    actor: &str,
    ip: Option<&str>,
    name: &str,
) -> Result<NewAgent, AppError> {
    validate_name(name)?;
    if agents::by_name(db, name)
        .await
        .map_err(|e| db_error(e, "looking up an agent"))?
        .is_some()
    {
        return Err(AppError::Conflict(format!(
            "an agent named `{name}` is already enrolled: revoke it first, or choose another name"
        )));
    }
    let token = new_token();
    let agent = agents::insert(db, name, &secret::sha256_hex(&token), actor)
        .await
        .map_err(|e| db_error(e, "enrolling an agent"))?;
    audit::insert(
        db,
        audit::Record {
            actor,
            action: "agent.add",
            subject: name,
            detail: None,
            ip,
        },
    )
    .await
    .map_err(|e| db_error(e, "writing the audit log"))?;
    let info = info(db, config, &agent)
        .await
        .map_err(|e| db_error(e, "reading the agent"))?;
    Ok(NewAgent { info, token })
}

/// Revokes `name`'s token by `actor`; its connections close.
pub async fn revoke(
    db: &impl ConnectionTrait,
    actor: &str,
    ip: Option<&str>,
    name: &str,
) -> Result<(), AppError> {
    let known = agents::by_name(db, name)
        .await
        .map_err(|e| db_error(e, "looking up an agent"))?;
    if known.is_none() {
        return Err(AppError::NotFound(format!("no agent named `{name}`")));
    }
    if !agents::revoke(db, name)
        .await
        .map_err(|e| db_error(e, "revoking an agent"))?
    {
        return Err(AppError::Conflict(format!(
            "agent `{name}` is already revoked"
        )));
    }
    audit::insert(
        db,
        audit::Record {
            actor,
            action: "agent.revoke",
            subject: name,
            detail: None,
            ip,
        },
    )
    .await
    .map_err(|e| db_error(e, "writing the audit log"))
}

/// Every enrolled agent (admins).
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<AgentInfo>, AppError> {
    policy::require_admin(caller)?;
    let all = agents::all(&state.reader)
        .await
        .map_err(|e| db_error(e, "listing agents"))?;
    let mut out = Vec::with_capacity(all.len());
    for a in &all {
        out.push(
            info(&state.reader, &state.config, a)
                .await
                .map_err(|e| db_error(e, "reading an agent's jobs"))?,
        );
    }
    Ok(out)
}

/// Enrols an agent (admins); the token is in the answer, once.
pub async fn add(state: &AppState, caller: &Caller, name: String) -> Result<NewAgent, AppError> {
    let user = policy::require_admin(caller)?;
    create(
        &state.db,
        &state.config,
        &user.username,
        caller.ip.as_deref(),
        &name,
    )
    .await
}

/// Revokes an agent (admins): its connection here closes at once, on
/// other replicas within a heartbeat.
pub async fn revoke_as(state: &AppState, caller: &Caller, name: String) -> Result<(), AppError> {
    let user = policy::require_admin(caller)?;
    revoke(&state.db, &user.username, caller.ip.as_deref(), &name).await?;
    state.agents.disconnect(&name);
    announce(state, &name).await;
    Ok(())
}

/// The agent whose token a connection carries, or 401.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Agent, AppError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with("oda_"))
        .ok_or_else(|| {
            AppError::Unauthorized(
                "send the agent's token as `Authorization: Bearer oda_…` (from `opsdeck agent add NAME`)"
                    .into(),
            )
        })?;
    let agent = agents::by_token_hash(&state.reader, &secret::sha256_hex(token))
        .await
        .map_err(|e| db_error(e, "checking an agent token"))?;
    match agent {
        Some(a) if a.revoked_at.is_none() => Ok(a),
        _ => Err(AppError::Unauthorized(
            "the agent token is unknown or revoked: enrol the agent again (`opsdeck agent add NAME`)"
                .into(),
        )),
    }
}

/// The agent connected to this node.
pub async fn connected(
    state: &AppState,
    name: &str,
    hostname: &str,
    version: &str,
) -> Result<(), DbErr> {
    let node = &state.config.cluster.node;
    agents::connected(&state.db, name, hostname, version, node, Utc::now()).await?;
    announce(state, name).await;
    Ok(())
}

/// The agent's connection to this node closed.
pub async fn disconnected(state: &AppState, name: &str) -> Result<(), DbErr> {
    agents::disconnected(&state.db, name, &state.config.cluster.node).await?;
    announce(state, name).await;
    Ok(())
}

/// The agent was heard from.
pub async fn seen(state: &AppState, name: &str) -> Result<(), DbErr> {
    agents::seen(&state.db, name, Utc::now()).await
}

/// Whether `name`'s token still stands.
pub async fn still_enrolled(state: &AppState, name: &str) -> Result<bool, DbErr> {
    Ok(agents::by_name(&state.reader, name)
        .await?
        .is_some_and(|a| a.revoked_at.is_none()))
}

/// Something an agent sent was refused: audited, and logged.
pub async fn refused(
    state: &AppState,
    name: &str,
    ip: Option<&str>,
    job: Option<i64>,
    detail: &str,
) {
    tracing::warn!(agent = name, "refused: {detail}");
    let actor = format!("agent:{name}");
    let subject = job.map_or_else(|| format!("agent {name}"), |id| format!("job {id}"));
    if let Err(e) = audit::insert(
        &state.db,
        audit::Record {
            actor: &actor,
            action: "agent.refused",
            subject: &subject,
            detail: Some(json!({ "reason": detail })),
            ip,
        },
    )
    .await
    {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

/// "Mark failed" (admins): a job on an agent that is gone fails now
/// instead of at `[agents].lost_after`; audited. The agent, if it comes
/// back, is told to forget the job.
pub async fn mark_failed(state: &AppState, caller: &Caller, id: i64) -> Result<Job, AppError> {
    let user = policy::require_admin(caller)?;
    let row = jobs::by_id(&state.db, id)
        .await
        .map_err(|e| db_error(e, "reading a job"))?
        .ok_or_else(|| AppError::NotFound(format!("no job {id}")))?;
    let Some(agent) = row.agent.clone().filter(|_| row.state.is_active()) else {
        return Err(AppError::Conflict(format!(
            "job {id} is not running on an agent: cancel it instead"
        )));
    };
    let line = format!(
        "marked failed by {} while agent `{agent}` could not be reached; what the job did on the host after that is unknown",
        user.username
    );
    let error = format!("agent lost (marked failed by {})", user.username);
    let actor = Actor {
        name: user.username.clone(),
        ip: caller.ip.clone(),
    };
    let t = Arc::new(Transition::fail_as(
        &state.hub,
        &row,
        line,
        error,
        actor,
        "job.mark_failed",
    ));
    state
        .committer
        .commit(t.clone())
        .await
        .map_err(|e| db_error(e, "failing a job"))?;
    let Some(done) = t.row() else {
        return Err(AppError::Conflict(format!("job {id} ended meanwhile")));
    };
    state.agents.send(
        &agent,
        app::model::agent::ServerMsg::Forget {
            job_id: id,
            dispatch: row.dispatch,
            reason: format!("marked failed by {}", user.username),
        },
    );
    Ok(done.to_job())
}
