//! `jobs`: the queue. Every state change is a compare-and-set on `state`, so
//! two replicas (or a cancel racing an exit) can never both win; the claim is
//! one statement.

use app::model::job::{Gap, Job, JobFilter, JobState, Progress};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    entity::prelude::*, ActiveValue::Set, Condition, ConnectionTrait, DatabaseTransaction,
    DbBackend, FromQueryResult, QueryOrder, QuerySelect, Statement, TransactionTrait,
};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub template: String,
        pub target: String,
        pub params: String,
        pub state: String,
        pub exclusive: String,
        pub owner_id: i64,
        pub owner: String,
        pub created_at: DateTimeUtc,
        pub started_at: Option<DateTimeUtc>,
        pub finished_at: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
        pub exit_code: Option<i32>,
        pub error: Option<String>,
        pub warnings: bool,
        pub progress: Option<String>,
        pub cancel_requested_by: Option<String>,
        pub node: Option<String>,
        pub pgid: Option<i32>,
        pub pgid_start: Option<i64>,
        pub last_seq: i64,
        pub log_bytes: i64,
        pub omitted_from: Option<i64>,
        pub omitted_to: Option<i64>,
        pub omitted_bytes: i64,
        pub rerun_of: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use entity::Model as JobRow;
use entity::{ActiveModel, Column, Entity};

impl JobRow {
    pub fn state(&self) -> JobState {
        JobState::parse(&self.state).unwrap_or(JobState::Failed)
    }

    pub fn to_job(&self) -> Job {
        Job {
            id: self.id,
            template: self.template.clone(),
            target: self.target.clone(),
            params: serde_json::from_str(&self.params).unwrap_or_default(),
            state: self.state(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            error: self.error.clone(),
            warnings: self.warnings,
            progress: self
                .progress
                .as_deref()
                .and_then(|p| serde_json::from_str::<Progress>(p).ok()),
            last_seq: self.last_seq,
            cancel_requested_by: self.cancel_requested_by.clone(),
            node: self.node.clone(),
            rerun_of: self.rerun_of,
            omitted: match (self.omitted_from, self.omitted_to) {
                (Some(from), Some(to)) if to >= from => Some(Gap {
                    from,
                    to,
                    bytes: self.omitted_bytes,
                }),
                _ => None,
            },
        }
    }
}

/// A job to enqueue (already validated).
pub struct Enqueue<'a> {
    pub template: &'a str,
    pub target: &'a str,
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    pub exclusive: &'a str,
    pub owner_id: i64,
    pub owner: &'a str,
    pub rerun_of: Option<i64>,
}

pub async fn insert(db: &impl ConnectionTrait, e: Enqueue<'_>) -> Result<JobRow, DbErr> {
    let now = Utc::now();
    ActiveModel {
        template: Set(e.template.to_string()),
        target: Set(e.target.to_string()),
        params: Set(serde_json::Value::Object(e.params.clone()).to_string()),
        state: Set(JobState::Queued.as_str().to_string()),
        exclusive: Set(e.exclusive.to_string()),
        owner_id: Set(e.owner_id),
        owner: Set(e.owner.to_string()),
        created_at: Set(now),
        updated_at: Set(now),
        warnings: Set(false),
        last_seq: Set(0),
        log_bytes: Set(0),
        omitted_bytes: Set(0),
        rerun_of: Set(e.rerun_of),
        ..Default::default()
    }
    .insert(db)
    .await
}

pub async fn by_id(db: &impl ConnectionTrait, id: i64) -> Result<Option<JobRow>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

/// Which jobs a caller may see.
pub enum Visible<'a> {
    All,
    /// Only the caller's own (admins asking for `mine`).
    Own {
        user_id: i64,
    },
    /// Their own, and those on these targets.
    OwnOrTargets {
        user_id: i64,
        targets: &'a [String],
    },
}

/// A page of jobs, newest first; `limit` is clamped to 1..=500.
pub async fn list(
    db: &DatabaseConnection,
    f: &JobFilter,
    visible: Visible<'_>,
) -> Result<(Vec<JobRow>, Option<i64>), DbErr> {
    let limit = f.limit.unwrap_or(50).clamp(1, 500);
    let mut q = Entity::find().order_by_desc(Column::Id);
    match visible {
        Visible::All => {}
        Visible::Own { user_id } => q = q.filter(Column::OwnerId.eq(user_id)),
        Visible::OwnOrTargets { user_id, targets } => {
            q = q.filter(
                Condition::any()
                    .add(Column::OwnerId.eq(user_id))
                    .add(Column::Target.is_in(targets.iter().cloned())),
            )
        }
    }
    if let Some(state) = f.state.as_deref().filter(|s| !s.is_empty()) {
        let states: Vec<&str> = state.split(',').map(str::trim).collect();
        q = q.filter(Column::State.is_in(states));
    }
    if let Some(t) = f.template.as_deref().filter(|s| !s.is_empty()) {
        q = q.filter(Column::Template.eq(t));
    }
    if let Some(t) = f.target.as_deref().filter(|s| !s.is_empty()) {
        q = q.filter(Column::Target.eq(t));
    }
    if let Some(before) = f.before {
        q = q.filter(Column::Id.lt(before));
    }
    let mut rows = q.limit(limit + 1).all(db).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok((rows, next))
}

/// N.B.: the one claim statement. It takes the oldest queued job that may
/// start now — `created_at`, then `id` — honouring exclusivity:
/// nothing starts while a `global` job runs; a `global` job starts only when
/// nothing runs, and a queued `global` job holds back every younger job (so
/// it cannot starve); a `target` job never runs beside another job on its
/// target; a `none` job never runs beside a `target` job on its target.
/// Cancelling jobs still own their processes, so they count as running.
///
/// On SQLite it is a single UPDATE … RETURNING, which SQLite runs as one
/// write transaction taking the write lock before it reads (an immediate
/// transaction). On PostgreSQL it runs in a transaction that first takes an
/// advisory lock, so claims across replicas are serialised (exclusivity needs
/// that), and selects with FOR UPDATE SKIP LOCKED.
const CLAIM_SQL: &str = "
UPDATE jobs SET state = 'running', started_at = $1, updated_at = $1, node = $2
WHERE id = (
  SELECT j.id FROM jobs j
  WHERE j.state = 'queued'
    AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state IN ('running', 'cancelling') AND r.exclusive = 'global')
    AND NOT EXISTS (
      SELECT 1 FROM jobs q WHERE q.state = 'queued' AND q.exclusive = 'global'
        AND (q.created_at < j.created_at OR (q.created_at = j.created_at AND q.id < j.id)))
    AND CASE j.exclusive
      WHEN 'global' THEN NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state IN ('running', 'cancelling'))
      WHEN 'target' THEN NOT EXISTS (
        SELECT 1 FROM jobs r WHERE r.state IN ('running', 'cancelling') AND r.target = j.target)
      ELSE NOT EXISTS (
        SELECT 1 FROM jobs r WHERE r.state IN ('running', 'cancelling') AND r.target = j.target
          AND r.exclusive = 'target')
    END
  ORDER BY j.created_at, j.id
  LIMIT 1
  {LOCK}
)
RETURNING *";

/// A key for `pg_advisory_xact_lock`: "opsdeck" claims.
const CLAIM_LOCK_KEY: i64 = 0x6f70_7364_6563_6b01;

/// Claims the next job for `node` inside `txn`, if one may start now.
pub async fn claim_in(txn: &DatabaseTransaction, node: &str) -> Result<Option<JobRow>, DbErr> {
    let now = Utc::now();
    let backend = txn.get_database_backend();
    let lock = match backend {
        DbBackend::Postgres => {
            // Claims of all replicas take turns until their commit.
            txn.execute(Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock($1)",
                [CLAIM_LOCK_KEY.into()],
            ))
            .await?;
            "FOR UPDATE SKIP LOCKED"
        }
        // SQLite: the transaction already holds the one write lock.
        _ => "",
    };
    JobRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        CLAIM_SQL.replace("{LOCK}", lock),
        [now.into(), node.into()],
    ))
    .one(txn)
    .await
}

/// Moves `id` from one of `from` to `to`, setting `extra` columns; true if it
/// was in one of `from` (the compare-and-set succeeded).
async fn transition(
    db: &impl ConnectionTrait,
    id: i64,
    from: &[JobState],
    to: JobState,
    extra: Vec<(Column, sea_orm::Value)>,
) -> Result<bool, DbErr> {
    let r = transition_query(id, from, to, extra).exec(db).await?;
    Ok(r.rows_affected == 1)
}

/// The compare-and-set update of [`transition`].
fn transition_query(
    id: i64,
    from: &[JobState],
    to: JobState,
    extra: impl IntoIterator<Item = (Column, sea_orm::Value)>,
) -> sea_orm::UpdateMany<Entity> {
    let cols = [
        (Column::State, to.as_str().into()),
        (Column::UpdatedAt, Utc::now().into()),
    ];
    setting(cols.into_iter().chain(extra))
        .filter(Column::Id.eq(id))
        .filter(Column::State.is_in(from.iter().map(|s| s.as_str())))
}

/// An update of every job (filter it) that sets `cols`.
fn setting(
    cols: impl IntoIterator<Item = (Column, sea_orm::Value)>,
) -> sea_orm::UpdateMany<Entity> {
    cols.into_iter()
        .fold(Entity::update_many(), |q, (col, value)| {
            q.col_expr(col, Expr::value(value))
        })
}

/// running → queued again: a claim that will not run (shutdown began
/// between the claim and its start).
pub async fn unclaim(db: &impl ConnectionTrait, id: i64) -> Result<bool, DbErr> {
    transition(
        db,
        id,
        &[JobState::Running],
        JobState::Queued,
        vec![
            (Column::StartedAt, Option::<DateTime<Utc>>::None.into()),
            (Column::Node, Option::<String>::None.into()),
        ],
    )
    .await
}

/// queued → cancelled at once.
pub async fn cancel_queued(db: &impl ConnectionTrait, id: i64, by: &str) -> Result<bool, DbErr> {
    let now = Utc::now();
    transition(
        db,
        id,
        &[JobState::Queued],
        JobState::Cancelled,
        vec![
            (Column::CancelRequestedBy, by.into()),
            (Column::FinishedAt, now.into()),
        ],
    )
    .await
}

/// running → cancelling.
pub async fn mark_cancelling(db: &impl ConnectionTrait, id: i64, by: &str) -> Result<bool, DbErr> {
    transition(
        db,
        id,
        &[JobState::Running],
        JobState::Cancelling,
        vec![(Column::CancelRequestedBy, by.into())],
    )
    .await
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Finish {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub warnings: bool,
    pub progress: Option<Progress>,
}

/// running/cancelling → a finished state, in one statement; the finished
/// row, or `None` if the job was no longer running or cancelling (then
/// nothing was written).
pub async fn finish(
    db: &impl ConnectionTrait,
    id: i64,
    f: &Finish,
) -> Result<Option<JobRow>, DbErr> {
    finish_setting(db, id, f, Vec::new()).await
}

/// [`finish`], setting `extra` columns too.
async fn finish_setting(
    db: &impl ConnectionTrait,
    id: i64,
    f: &Finish,
    extra: Vec<(Column, sea_orm::Value)>,
) -> Result<Option<JobRow>, DbErr> {
    let q = transition_query(
        id,
        &[JobState::Running, JobState::Cancelling],
        f.state,
        finish_columns(f).into_iter().chain(extra),
    );
    if db.get_database_backend().support_returning() {
        Ok(q.exec_with_returning(db).await?.into_iter().next())
    } else if q.exec(db).await?.rows_affected == 1 {
        by_id(db, id).await
    } else {
        Ok(None)
    }
}

fn finish_columns(f: &Finish) -> Vec<(Column, sea_orm::Value)> {
    let progress = f
        .progress
        .as_ref()
        .map(|p| serde_json::to_string(p).unwrap_or_default());
    vec![
        (Column::FinishedAt, Utc::now().into()),
        (Column::ExitCode, f.exit_code.into()),
        (Column::Error, f.error.clone().into()),
        (Column::Warnings, f.warnings.into()),
        (Column::Progress, progress.into()),
    ]
}

/// Where a job's stored log stands, and its process group once known.
#[derive(Debug, Clone, Copy)]
pub struct LogPosition {
    pub last_seq: i64,
    pub log_bytes: i64,
    /// The range cut from the middle of an over-long log.
    pub omitted: Option<Gap>,
    /// The process group and its leader's start time.
    pub process: Option<(i32, i64)>,
}

impl LogPosition {
    fn columns(&self) -> Vec<(Column, sea_orm::Value)> {
        let mut cols = vec![
            (Column::LastSeq, self.last_seq.into()),
            (Column::LogBytes, self.log_bytes.into()),
        ];
        if let Some(g) = self.omitted {
            cols.push((Column::OmittedFrom, g.from.into()));
            cols.push((Column::OmittedTo, g.to.into()));
            cols.push((Column::OmittedBytes, g.bytes.into()));
        }
        if let Some((pgid, start)) = self.process {
            cols.push((Column::Pgid, pgid.into()));
            cols.push((Column::PgidStart, start.into()));
        }
        cols
    }
}

/// Stores the log's position (one statement).
pub async fn set_log_position(
    db: &impl ConnectionTrait,
    id: i64,
    p: &LogPosition,
) -> Result<(), DbErr> {
    setting(p.columns())
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map(|_| ())
}

/// [`finish`] with the log's final position, in one statement.
pub async fn finish_with_log(
    db: &impl ConnectionTrait,
    id: i64,
    f: &Finish,
    p: &LogPosition,
) -> Result<Option<JobRow>, DbErr> {
    finish_setting(db, id, f, p.columns()).await
}

pub async fn set_progress(db: &impl ConnectionTrait, id: i64, p: &Progress) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(
            Column::Progress,
            Expr::value(serde_json::to_string(p).unwrap_or_default()),
        )
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map(|_| ())
}

/// Jobs a node was running or cancelling.
pub async fn active_on_node(db: &DatabaseConnection, node: &str) -> Result<Vec<JobRow>, DbErr> {
    Entity::find()
        .filter(Column::State.is_in([JobState::Running.as_str(), JobState::Cancelling.as_str()]))
        .filter(Column::Node.eq(node))
        .all(db)
        .await
}

/// Jobs running or cancelling on nodes other than `node`.
pub async fn active_elsewhere(db: &DatabaseConnection, node: &str) -> Result<Vec<JobRow>, DbErr> {
    Entity::find()
        .filter(Column::State.is_in([JobState::Running.as_str(), JobState::Cancelling.as_str()]))
        .filter(Column::Node.ne(node))
        .all(db)
        .await
}

/// Finished jobs older than `cutoff`, oldest first, at most `limit`.
pub async fn finished_before(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<i64>, DbErr> {
    #[derive(FromQueryResult)]
    struct Id {
        id: i64,
    }
    Ok(Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::FinishedAt.lt(cutoff))
        .filter(Column::State.is_in([
            JobState::Succeeded.as_str(),
            JobState::Failed.as_str(),
            JobState::Cancelled.as_str(),
        ]))
        .order_by_asc(Column::Id)
        .limit(limit)
        .into_model::<Id>()
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// Deletes jobs and their log lines.
pub async fn delete(db: &DatabaseConnection, ids: &[i64]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    let txn = db.begin().await?;
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    txn.execute_unprepared(&format!("DELETE FROM job_logs WHERE job_id IN ({list})"))
        .await?;
    Entity::delete_many()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .exec(&txn)
        .await?;
    txn.commit().await
}

/// How many jobs are in each state.
pub async fn count_by_state(db: &DatabaseConnection) -> Result<Vec<(String, i64)>, DbErr> {
    #[derive(FromQueryResult)]
    struct Count {
        state: String,
        n: i64,
    }
    Ok(Entity::find()
        .select_only()
        .column(Column::State)
        .column_as(Column::Id.count(), "n")
        .group_by(Column::State)
        .into_model::<Count>()
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.state, c.n))
        .collect())
}

/// Records that `node` is alive.
pub async fn heartbeat(
    db: &DatabaseConnection,
    node: &str,
    started_at: DateTime<Utc>,
) -> Result<(), DbErr> {
    use super::nodes;
    let now = Utc::now();
    nodes::Entity::insert(nodes::ActiveModel {
        node: Set(node.to_string()),
        started_at: Set(started_at),
        heartbeat_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(nodes::Column::Node)
            .update_columns([nodes::Column::HeartbeatAt, nodes::Column::StartedAt])
            .to_owned(),
    )
    .exec(db)
    .await
    .map(|_| ())
}

/// The last heartbeat of a node.
pub async fn last_heartbeat(
    db: &DatabaseConnection,
    node: &str,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    use super::nodes;
    Ok(nodes::Entity::find_by_id(node.to_string())
        .one(db)
        .await?
        .map(|n| n.heartbeat_at))
}

/// The newest job on `target`.
pub async fn latest_on_target(
    db: &DatabaseConnection,
    target: &str,
) -> Result<Option<JobRow>, DbErr> {
    Entity::find()
        .filter(Column::Target.eq(target))
        .order_by_desc(Column::Id)
        .one(db)
        .await
}
