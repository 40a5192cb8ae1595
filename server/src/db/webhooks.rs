//! `webhook_events` (the outbox) and `webhook_deliveries` (one per event
//! and hook: the delivery log). Written by `webhooks::enqueue` inside the
//! transaction of what an event announces, then by the delivery worker.

use app::model::webhook::{DeliveryInfo, DeliveryState};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    entity::prelude::*, ActiveValue::Set, DbBackend, FromQueryResult, QueryOrder, QuerySelect,
    Statement, TransactionTrait,
};

pub mod events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: String,
        pub kind: String,
        pub template: Option<String>,
        pub target: Option<String>,
        pub body: String,
        pub created_at: DateTimeUtc,
        pub fanned_out: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod deliveries {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub event_id: String,
        pub kind: String,
        pub hook: String,
        pub state: String,
        pub attempts: i32,
        pub next_at: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub last_at: Option<DateTimeUtc>,
        pub last_status: Option<i32>,
        pub last_error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An event to store.
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub kind: &'a str,
    pub template: Option<&'a str>,
    pub target: Option<&'a str>,
    pub body: String,
    pub at: DateTime<Utc>,
}

pub async fn insert_event(db: &impl ConnectionTrait, e: NewEvent<'_>) -> Result<(), DbErr> {
    events::ActiveModel {
        event_id: Set(e.event_id.to_string()),
        kind: Set(e.kind.to_string()),
        template: Set(e.template.map(str::to_string)),
        target: Set(e.target.map(str::to_string)),
        body: Set(e.body),
        created_at: Set(e.at),
        fanned_out: Set(false),
        ..Default::default()
    }
    .insert(db)
    .await
    .map(|_| ())
}

/// Makes the deliveries of up to `limit` events not fanned out yet: one per
/// hook `hooks_for` names for the event (kind, template, target), due now;
/// marks the events fanned out. One transaction; on PostgreSQL the events
/// are taken with SKIP LOCKED, so replicas never fan one out twice.
/// Returns how many events it took.
pub async fn fan_out(
    db: &DatabaseConnection,
    limit: u64,
    hooks_for: &(dyn Fn(&events::Model) -> Vec<String> + Sync),
) -> Result<usize, DbErr> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let taken = events::Model::find_by_statement(Statement::from_sql_and_values(
        backend,
        format!("SELECT * FROM webhook_events WHERE fanned_out = $1 ORDER BY id LIMIT $2{lock}"),
        [false.into(), (limit as i64).into()],
    ))
    .all(&txn)
    .await?;
    if taken.is_empty() {
        txn.commit().await?;
        return Ok(0);
    }
    let now = Utc::now();
    for e in &taken {
        for hook in hooks_for(e) {
            deliveries::ActiveModel {
                event_id: Set(e.event_id.clone()),
                kind: Set(e.kind.clone()),
                hook: Set(hook),
                state: Set(DeliveryState::Pending.as_str().into()),
                attempts: Set(0),
                next_at: Set(now),
                created_at: Set(e.created_at),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
    }
    events::Entity::update_many()
        .col_expr(events::Column::FannedOut, Expr::value(true))
        .filter(events::Column::Id.is_in(taken.iter().map(|e| e.id)))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(taken.len())
}

/// A delivery taken to be posted, with the body to post.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: deliveries::Model,
    pub body: String,
}

/// Takes up to `limit` pending deliveries due at `now`, leasing each until
/// `lease_until` (a replica that dies while posting one leaves it due again
/// then: at least once, never lost).
pub async fn claim_due(
    db: &DatabaseConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Claimed>, DbErr> {
    let backend = db.get_database_backend();
    let lock = if backend == DbBackend::Postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET next_at = $1 WHERE id IN (\
           SELECT id FROM webhook_deliveries WHERE state = $2 AND next_at <= $3 \
           ORDER BY next_at LIMIT $4{lock}) RETURNING *"
    );
    let rows = deliveries::Model::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [
            lease_until.into(),
            DeliveryState::Pending.as_str().into(),
            now.into(),
            (limit as i64).into(),
        ],
    ))
    .all(db)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    #[derive(FromQueryResult)]
    struct Body {
        event_id: String,
        body: String,
    }
    let bodies: Vec<Body> = events::Entity::find()
        .select_only()
        .column(events::Column::EventId)
        .column(events::Column::Body)
        .filter(events::Column::EventId.is_in(rows.iter().map(|r| r.event_id.clone())))
        .into_model()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|d| {
            let body = bodies
                .iter()
                .find(|b| b.event_id == d.event_id)?
                .body
                .clone();
            Some(Claimed { delivery: d, body })
        })
        .collect())
}

/// How one try went.
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub status: Option<i32>,
    pub error: Option<String>,
    /// The new state and, if still pending, when to try next.
    pub state: DeliveryState,
    pub next_at: DateTime<Utc>,
}

/// Records a try of delivery `id`.
pub async fn record(db: &DatabaseConnection, id: i64, a: Attempt) -> Result<(), DbErr> {
    deliveries::Entity::update_many()
        .col_expr(
            deliveries::Column::Attempts,
            Expr::col(deliveries::Column::Attempts).add(1),
        )
        .col_expr(deliveries::Column::State, Expr::value(a.state.as_str()))
        .col_expr(deliveries::Column::NextAt, Expr::value(a.next_at))
        .col_expr(deliveries::Column::LastAt, Expr::value(a.at))
        .col_expr(deliveries::Column::LastStatus, Expr::value(a.status))
        .col_expr(deliveries::Column::LastError, Expr::value(a.error))
        .filter(deliveries::Column::Id.eq(id))
        .exec(db)
        .await
        .map(|_| ())
}

/// The latest `limit` deliveries to `hook`, newest first.
pub async fn latest_for_hook(
    db: &DatabaseConnection,
    hook: &str,
    limit: u64,
) -> Result<Vec<DeliveryInfo>, DbErr> {
    let rows = deliveries::Entity::find()
        .filter(deliveries::Column::Hook.eq(hook))
        .order_by_desc(deliveries::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(info).collect())
}

fn info(d: deliveries::Model) -> DeliveryInfo {
    let state = DeliveryState::parse(&d.state).unwrap_or(DeliveryState::Pending);
    DeliveryInfo {
        id: d.id,
        hook: d.hook,
        event_id: d.event_id,
        kind: d.kind,
        state,
        attempts: d.attempts,
        created_at: d.created_at,
        last_at: d.last_at,
        last_status: d.last_status,
        last_error: d.last_error,
        next_at: (state == DeliveryState::Pending).then_some(d.next_at),
    }
}

/// Deletes what is finished and older than `before`: deliveries no longer
/// pending, and fanned-out events none of whose deliveries is pending.
pub async fn delete_finished_before(
    db: &DatabaseConnection,
    before: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let gone = deliveries::Entity::delete_many()
        .filter(deliveries::Column::State.ne(DeliveryState::Pending.as_str()))
        .filter(deliveries::Column::CreatedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected;
    let backend = db.get_database_backend();
    db.execute(Statement::from_sql_and_values(
        backend,
        "DELETE FROM webhook_events WHERE fanned_out = $1 AND created_at < $2 AND NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.event_id)",
        [true.into(), before.into()],
    ))
    .await?;
    Ok(gone)
}
