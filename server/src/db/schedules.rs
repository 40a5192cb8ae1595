//! `schedules` (each schedule's pause state and since when it counts) and
//! `schedule_fires` (every fire, run of missed fires and "run now", with
//! what became of it). Written by the scheduler (server/src/schedules);
//! the partial unique index over `(schedule, scheduled_for)` makes a fire
//! happen once, whichever replica decides it first.

use app::model::schedule::{FireInfo, FireOutcome};
use chrono::{DateTime, Utc};
use sea_orm::{
    entity::prelude::*, ConnectionTrait, FromQueryResult, QueryOrder, QuerySelect, Statement,
};

pub mod state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub paused: bool,
        pub paused_by: Option<String>,
        pub paused_at: Option<DateTimeUtc>,
        pub since: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod fires {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedule_fires")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub schedule: String,
        pub scheduled_for: DateTimeUtc,
        pub until: Option<DateTimeUtc>,
        pub count: i64,
        pub recorded_at: DateTimeUtc,
        pub outcome: String,
        pub reason: Option<String>,
        pub job_id: Option<i64>,
        pub manual_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use state::Model as StateRow;

/// Records each of `ids` that has no row yet, as counting from `now`
/// (a new schedule runs no fire from before it existed).
pub async fn ensure(
    db: &impl ConnectionTrait,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    for id in ids {
        db.execute(Statement::from_sql_and_values(
            backend,
            "INSERT INTO schedules (id, paused, since) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [id.as_str().into(), false.into(), now.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Every schedule's state.
pub async fn states(db: &impl ConnectionTrait) -> Result<Vec<StateRow>, DbErr> {
    state::Entity::find().all(db).await
}

pub async fn state_of(db: &impl ConnectionTrait, id: &str) -> Result<Option<StateRow>, DbErr> {
    state::Entity::find_by_id(id.to_string()).one(db).await
}

/// Pauses or resumes `id`; whether it changed. A resume counts from `now`:
/// the fires while it was paused are neither run nor missed.
pub async fn set_paused(
    db: &impl ConnectionTrait,
    id: &str,
    paused: bool,
    by: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let res = if paused {
        db.execute(Statement::from_sql_and_values(
            backend,
            "UPDATE schedules SET paused = $1, paused_by = $2, paused_at = $3 WHERE id = $4 AND paused = $5",
            [true.into(), by.into(), now.into(), id.into(), false.into()],
        ))
        .await?
    } else {
        db.execute(Statement::from_sql_and_values(
            backend,
            "UPDATE schedules SET paused = $1, paused_by = NULL, paused_at = NULL, since = $2 WHERE id = $3 AND paused = $4",
            [false.into(), now.into(), id.into(), true.into()],
        ))
        .await?
    };
    Ok(res.rows_affected() == 1)
}

/// The newest fire time `id`'s fires have decided (a run of missed fires
/// counts by its last), if any. Fires are recorded oldest first by every
/// replica, so the newest is among the last rows written.
pub async fn last_decided(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let rows = fires::Entity::find()
        .filter(fires::Column::Schedule.eq(id))
        .filter(fires::Column::ManualBy.is_null())
        .order_by_desc(fires::Column::Id)
        .limit(50)
        .all(db)
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.until.unwrap_or(r.scheduled_for))
        .max())
}

/// A fire to record.
#[derive(Debug, Clone)]
pub struct NewFire<'a> {
    pub schedule: &'a str,
    pub scheduled_for: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
    pub count: i64,
    pub outcome: FireOutcome,
    pub reason: Option<String>,
    /// Set for "run now": such rows stand outside the once-per-time index.
    pub manual_by: Option<&'a str>,
}

#[derive(FromQueryResult)]
struct Id {
    id: i64,
}

/// Records a fire; its id, or `None` if this schedule's fire at that time
/// is already recorded (another replica decided it).
pub async fn insert_fire(db: &impl ConnectionTrait, f: NewFire<'_>) -> Result<Option<i64>, DbErr> {
    let backend = db.get_database_backend();
    let row = Id::find_by_statement(Statement::from_sql_and_values(
        backend,
        "INSERT INTO schedule_fires \
         (schedule, scheduled_for, until, count, recorded_at, outcome, reason, manual_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING id",
        [
            f.schedule.into(),
            f.scheduled_for.into(),
            f.until.into(),
            f.count.into(),
            Utc::now().into(),
            f.outcome.as_str().into(),
            f.reason.into(),
            f.manual_by.map(str::to_string).into(),
        ],
    ))
    .one(db)
    .await?;
    Ok(row.map(|r| r.id))
}

/// Links a recorded fire to the job it launched.
pub async fn set_job(db: &impl ConnectionTrait, fire: i64, job: i64) -> Result<(), DbErr> {
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE schedule_fires SET job_id = $1 WHERE id = $2",
        [job.into(), fire.into()],
    ))
    .await
    .map(|_| ())
}

/// Moves a waiting fire to `outcome`; whether it was still waiting (so
/// this caller, and no other replica, decides it).
pub async fn settle_waiting(
    db: &impl ConnectionTrait,
    fire: i64,
    outcome: FireOutcome,
    reason: Option<String>,
) -> Result<bool, DbErr> {
    let res = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE schedule_fires SET outcome = $1, reason = $2, recorded_at = $3 \
             WHERE id = $4 AND outcome = $5",
            [
                outcome.as_str().into(),
                reason.into(),
                Utc::now().into(),
                fire.into(),
                FireOutcome::Waiting.as_str().into(),
            ],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// The job of `id`'s latest run (a fire or "run now" that launched one).
pub async fn latest_job(db: &impl ConnectionTrait, id: &str) -> Result<Option<i64>, DbErr> {
    Ok(fires::Entity::find()
        .filter(fires::Column::Schedule.eq(id))
        .filter(fires::Column::JobId.is_not_null())
        .order_by_desc(fires::Column::Id)
        .one(db)
        .await?
        .and_then(|f| f.job_id))
}

/// `id`'s waiting fire, if one waits.
pub async fn waiting(db: &impl ConnectionTrait, id: &str) -> Result<Option<fires::Model>, DbErr> {
    fires::Entity::find()
        .filter(fires::Column::Schedule.eq(id))
        .filter(fires::Column::Outcome.eq(FireOutcome::Waiting.as_str()))
        .order_by_asc(fires::Column::Id)
        .one(db)
        .await
}

/// The schedules that have a waiting fire.
pub async fn with_waiting(db: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let rows = fires::Entity::find()
        .filter(fires::Column::Outcome.eq(FireOutcome::Waiting.as_str()))
        .all(db)
        .await?;
    let mut ids: Vec<String> = rows.into_iter().map(|r| r.schedule).collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// `id`'s newest `limit` fires, newest first.
pub async fn recent(
    db: &impl ConnectionTrait,
    id: &str,
    limit: u64,
) -> Result<Vec<fires::Model>, DbErr> {
    fires::Entity::find()
        .filter(fires::Column::Schedule.eq(id))
        .order_by_desc(fires::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

impl fires::Model {
    /// As the admin page shows it, with its job's state now.
    pub fn info(&self, job_state: Option<app::model::job::JobState>) -> FireInfo {
        FireInfo {
            id: self.id,
            scheduled_for: self.scheduled_for,
            until: self.until,
            count: self.count,
            recorded_at: self.recorded_at,
            outcome: FireOutcome::parse(&self.outcome).unwrap_or(FireOutcome::Skipped),
            reason: self.reason.clone(),
            job: self.job_id,
            job_state,
            manual_by: self.manual_by.clone(),
        }
    }
}

/// Deletes fires recorded before `before`, and beyond each schedule's
/// newest `keep` (a schedule every second writes 86,400 a day); how many.
/// A waiting fire is kept.
pub async fn prune(
    db: &DatabaseConnection,
    before: DateTime<Utc>,
    keep: u64,
) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let waiting = FireOutcome::Waiting.as_str();
    let mut deleted = db
        .execute(Statement::from_sql_and_values(
            backend,
            "DELETE FROM schedule_fires WHERE recorded_at < $1 AND outcome <> $2",
            [before.into(), waiting.into()],
        ))
        .await?
        .rows_affected();
    let ids: Vec<String> = states(db).await?.into_iter().map(|s| s.id).collect();
    for id in ids {
        let cut = fires::Entity::find()
            .filter(fires::Column::Schedule.eq(id.as_str()))
            .order_by_desc(fires::Column::Id)
            .offset(keep)
            .one(db)
            .await?;
        if let Some(cut) = cut {
            deleted += db
                .execute(Statement::from_sql_and_values(
                    backend,
                    "DELETE FROM schedule_fires WHERE schedule = $1 AND id <= $2 AND outcome <> $3",
                    [id.as_str().into(), cut.id.into(), waiting.into()],
                ))
                .await?
                .rows_affected();
        }
    }
    Ok(deleted)
}
