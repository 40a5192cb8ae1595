//! `audit_log`: who did what, when, from where. Written by every launch,
//! cancel, login, logout, user and token change and terminal session.

use app::model::user::{AuditEntry, AuditQuery};
use chrono::{DateTime, Utc};
use sea_orm::{entity::prelude::*, ActiveValue::Set, QueryOrder, QuerySelect};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub at: DateTimeUtc,
        pub actor: String,
        pub action: String,
        pub subject: String,
        pub detail: Option<String>,
        pub ip: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{ActiveModel, Column, Entity};

/// One entry to write.
pub struct Record<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    pub detail: Option<serde_json::Value>,
    pub ip: Option<&'a str>,
}

pub async fn insert(db: &impl ConnectionTrait, r: Record<'_>) -> Result<(), DbErr> {
    ActiveModel {
        at: Set(Utc::now()),
        actor: Set(r.actor.to_string()),
        action: Set(r.action.to_string()),
        subject: Set(r.subject.to_string()),
        detail: Set(r.detail.map(|d| d.to_string())),
        ip: Set(r.ip.map(str::to_string)),
        ..Default::default()
    }
    .insert(db)
    .await
    .map(|_| ())
}

/// Whether a terminal session `session` (32 hex digits, checked by the
/// caller) on `target` is open: the `node` its `terminal.start` names,
/// if no `terminal.end` follows it.
pub async fn open_terminal_node(
    db: &DatabaseConnection,
    target: &str,
    session: &str,
) -> Result<Option<String>, DbErr> {
    let rows = Entity::find()
        .filter(Column::Subject.eq(target))
        .filter(Column::Action.is_in(["terminal.start", "terminal.end"]))
        .filter(Column::Detail.like(format!("%\"session\":\"{session}\"%")))
        .order_by_asc(Column::Id)
        .limit(4)
        .all(db)
        .await?;
    if rows.iter().any(|r| r.action == "terminal.end") {
        return Ok(None);
    }
    Ok(rows
        .iter()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r.detail.as_deref()?).ok())
        .find_map(|d| d["node"].as_str().map(str::to_string)))
}

/// A page of entries, newest first.
pub async fn page(
    db: &DatabaseConnection,
    q: &AuditQuery,
) -> Result<(Vec<AuditEntry>, Option<i64>), DbErr> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let mut find = Entity::find().order_by_desc(Column::Id);
    if let Some(actor) = q.actor.as_deref().filter(|s| !s.is_empty()) {
        find = find.filter(Column::Actor.eq(actor));
    }
    if let Some(action) = q.action.as_deref().filter(|s| !s.is_empty()) {
        // `login` matches login.success and login.failure.
        find = find.filter(
            Column::Action
                .eq(action)
                .or(Column::Action.starts_with(format!("{action}."))),
        );
    }
    if let Some(before) = q.before {
        find = find.filter(Column::Id.lt(before));
    }
    let mut rows = find.limit(limit + 1).all(db).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last().map(|r| r.id)).flatten();
    let entries = rows
        .into_iter()
        .map(|m| AuditEntry {
            id: m.id,
            at: m.at,
            actor: m.actor,
            action: m.action,
            subject: m.subject,
            detail: m.detail.and_then(|d| serde_json::from_str(&d).ok()),
            ip: m.ip,
        })
        .collect();
    Ok((entries, next))
}

/// Failed logins for a username, or from an address, since `since`: their
/// count and the oldest one's time.
pub async fn failures_since(
    db: &DatabaseConnection,
    by: FailureKey<'_>,
    since: DateTime<Utc>,
) -> Result<(u64, Option<DateTime<Utc>>), DbErr> {
    let mut find = Entity::find()
        .filter(Column::Action.eq("login.failure"))
        .filter(Column::At.gte(since));
    find = match by {
        FailureKey::Username(u) => find.filter(Column::Subject.eq(u)),
        FailureKey::Ip(ip) => find.filter(Column::Ip.eq(ip)),
    };
    let count = find.clone().count(db).await?;
    let oldest = if count > 0 {
        find.order_by_asc(Column::At).one(db).await?.map(|m| m.at)
    } else {
        None
    };
    Ok((count, oldest))
}

/// What failed logins are counted by.
pub enum FailureKey<'a> {
    Username(&'a str),
    Ip(&'a str),
}
