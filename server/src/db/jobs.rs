//! `jobs`: the queue. Every state change is a compare-and-set on `state`
//! ([`change_state`], applied only by `engine::transition`), so two replicas
//! (or a cancel racing an exit) can never both win; the claim is one
//! statement ([`claim_in`]).

use app::model::job::{Gap, Job, JobFilter, JobState, Progress, StateSet};
use app::model::retry::{Attempt, RetryPolicy};
use app::model::template::Exclusive;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    entity::prelude::*, ActiveValue::Set, Condition, ConnectionTrait, DbBackend, FromQueryResult,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
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
        pub dispatch: i64,
        pub agent: Option<String>,
        pub epoch: Option<i64>,
        pub attempt: i32,
        pub retry_of: Option<i64>,
        pub not_before: Option<DateTimeUtc>,
        pub retry: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{ActiveModel, Column, Entity};

use super::txn::Txn;

/// A row of `jobs`, typed: what every function here returns.
/// N.B.: a value in the database that no version of opsdeck writes (a
/// state, an exclusivity) is an error naming the row, never a guess.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub template: String,
    pub target: String,
    /// The parameters as stored (a JSON object).
    pub params: String,
    pub state: JobState,
    pub exclusive: Exclusive,
    pub owner_id: i64,
    pub owner: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
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
    /// How many times it was dispatched to an agent (messages about an
    /// older dispatch are refused).
    pub dispatch: i64,
    /// The agent it was dispatched to.
    pub agent: Option<String>,
    /// The epoch of `node` it was claimed under (fencing: see [`Owner`]).
    pub epoch: Option<i64>,
    /// Its number in its chain of attempts (1: launched, not a retry).
    pub attempt: i32,
    /// The chain's first job, for a retry.
    pub retry_of: Option<i64>,
    /// Not claimed before this (a retry waiting its backoff).
    pub not_before: Option<DateTime<Utc>>,
    /// The retry policy its chain was launched under.
    pub retry: Option<RetryPolicy>,
}

impl TryFrom<entity::Model> for JobRow {
    type Error = DbErr;

    fn try_from(m: entity::Model) -> Result<JobRow, DbErr> {
        let state = JobState::parse(&m.state).ok_or_else(|| {
            DbErr::Type(format!(
                "job {}: `{}` in jobs.state is not a job state",
                m.id, m.state
            ))
        })?;
        let exclusive = Exclusive::parse(&m.exclusive).ok_or_else(|| {
            DbErr::Type(format!(
                "job {}: `{}` in jobs.exclusive is not target, global or none",
                m.id, m.exclusive
            ))
        })?;
        let retry = match m.retry.as_deref() {
            None => None,
            Some(text) => Some(serde_json::from_str::<RetryPolicy>(text).map_err(|e| {
                DbErr::Type(format!(
                    "job {}: jobs.retry is not a retry policy: {e}",
                    m.id
                ))
            })?),
        };
        Ok(JobRow {
            id: m.id,
            template: m.template,
            target: m.target,
            params: m.params,
            state,
            exclusive,
            owner_id: m.owner_id,
            owner: m.owner,
            created_at: m.created_at,
            started_at: m.started_at,
            finished_at: m.finished_at,
            updated_at: m.updated_at,
            exit_code: m.exit_code,
            error: m.error,
            warnings: m.warnings,
            progress: m.progress,
            cancel_requested_by: m.cancel_requested_by,
            node: m.node,
            pgid: m.pgid,
            pgid_start: m.pgid_start,
            last_seq: m.last_seq,
            log_bytes: m.log_bytes,
            omitted_from: m.omitted_from,
            omitted_to: m.omitted_to,
            omitted_bytes: m.omitted_bytes,
            rerun_of: m.rerun_of,
            dispatch: m.dispatch,
            agent: m.agent,
            epoch: m.epoch,
            attempt: m.attempt,
            retry_of: m.retry_of,
            not_before: m.not_before,
            retry,
        })
    }
}

/// Types every row of a query.
fn typed(models: Vec<entity::Model>) -> Result<Vec<JobRow>, DbErr> {
    models.into_iter().map(JobRow::try_from).collect()
}

fn typed_one(model: Option<entity::Model>) -> Result<Option<JobRow>, DbErr> {
    model.map(JobRow::try_from).transpose()
}

impl JobRow {
    /// The stored parameters (an empty map if they do not parse).
    pub fn params(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&self.params).unwrap_or_default()
    }

    pub fn to_job(&self) -> Job {
        Job {
            id: self.id,
            template: self.template.clone(),
            target: self.target.clone(),
            params: self.params(),
            state: self.state,
            owner: self.owner.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            error: self.error.clone(),
            warnings: self.warnings,
            progress: self.progress(),
            last_seq: self.last_seq,
            cancel_requested_by: self.cancel_requested_by.clone(),
            node: self.node.clone(),
            rerun_of: self.rerun_of,
            agent: self.agent.clone(),
            omitted: match (self.omitted_from, self.omitted_to) {
                (Some(from), Some(to)) if to >= from => Some(Gap {
                    from,
                    to,
                    bytes: self.omitted_bytes,
                }),
                _ => None,
            },
            attempt: self.retry.as_ref().map(|p| Attempt {
                number: u32::try_from(self.attempt).unwrap_or(1),
                of: p.max.saturating_add(1),
                retry_of: self.retry_of,
                not_before: self.not_before,
            }),
        }
    }

    /// The first job of its chain of attempts (itself, for a launch).
    pub fn chain_root(&self) -> i64 {
        self.retry_of.unwrap_or(self.id)
    }

    /// The node and epoch it was claimed under, if it was claimed.
    pub fn owner(&self) -> Option<Owner> {
        Some(Owner {
            node: self.node.clone()?,
            epoch: self.epoch?,
        })
    }

    /// The stored progress, if any.
    pub fn progress(&self) -> Option<Progress> {
        self.progress
            .as_deref()
            .and_then(|p| serde_json::from_str::<Progress>(p).ok())
    }
}

/// A job to enqueue (already validated).
pub struct Enqueue<'a> {
    pub template: &'a str,
    pub target: &'a str,
    pub params: &'a serde_json::Map<String, serde_json::Value>,
    pub exclusive: Exclusive,
    pub owner_id: i64,
    pub owner: &'a str,
    pub rerun_of: Option<i64>,
    pub retry: Retry<'a>,
}

/// Where a new job stands in a chain of attempts.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// The template's policy (none: never retried).
    pub policy: Option<&'a RetryPolicy>,
    /// 1 for a launch.
    pub attempt: i32,
    /// The chain's first job (a retry's).
    pub retry_of: Option<i64>,
    /// Claimed no earlier than this.
    pub not_before: Option<DateTime<Utc>>,
}

impl<'a> Retry<'a> {
    /// A launch: the first attempt, under `policy` if the template has one.
    pub fn first(policy: Option<&'a RetryPolicy>) -> Retry<'a> {
        Retry {
            policy,
            attempt: 1,
            retry_of: None,
            not_before: None,
        }
    }
}

pub async fn insert(db: &impl ConnectionTrait, e: Enqueue<'_>) -> Result<JobRow, DbErr> {
    let now = Utc::now();
    ActiveModel {
        template: Set(e.template.to_string()),
        target: Set(e.target.to_string()),
        params: Set(serde_json::Value::Object(e.params.clone()).to_string()),
        state: Set(JobState::Queued.as_str().to_string()),
        exclusive: Set(e.exclusive.as_str().to_string()),
        owner_id: Set(e.owner_id),
        owner: Set(e.owner.to_string()),
        created_at: Set(now),
        updated_at: Set(now),
        warnings: Set(false),
        last_seq: Set(0),
        log_bytes: Set(0),
        omitted_bytes: Set(0),
        rerun_of: Set(e.rerun_of),
        dispatch: Set(0),
        attempt: Set(e.retry.attempt),
        retry_of: Set(e.retry.retry_of),
        not_before: Set(e.retry.not_before),
        retry: Set(e.retry.policy.map(|p| serde_json::json!(p).to_string())),
        ..Default::default()
    }
    .insert(db)
    .await
    .and_then(JobRow::try_from)
}

pub async fn by_id(db: &impl ConnectionTrait, id: i64) -> Result<Option<JobRow>, DbErr> {
    typed_one(Entity::find_by_id(id).one(db).await?)
}

/// The jobs of `ids` that exist (in no particular order).
pub async fn by_ids(db: &impl ConnectionTrait, ids: &[i64]) -> Result<Vec<JobRow>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    typed(
        Entity::find()
            .filter(Column::Id.is_in(ids.iter().copied()))
            .all(db)
            .await?,
    )
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

impl Visible<'_> {
    /// The condition that keeps only these jobs (`None`: every job).
    pub fn condition(&self) -> Option<Condition> {
        match self {
            Visible::All => None,
            Visible::Own { user_id } => Some(Condition::all().add(Column::OwnerId.eq(*user_id))),
            Visible::OwnOrTargets { user_id, targets } => Some(
                Condition::any()
                    .add(Column::OwnerId.eq(*user_id))
                    .add(Column::Target.is_in(targets.iter().cloned())),
            ),
        }
    }
}

/// A page of jobs, newest first; `limit` is clamped to 1..=500.
pub async fn list(
    db: &DatabaseConnection,
    f: &JobFilter,
    visible: Visible<'_>,
) -> Result<(Vec<JobRow>, Option<i64>), DbErr> {
    let limit = f.limit.unwrap_or(50).clamp(1, 500);
    let mut q = Entity::find().order_by_desc(Column::Id);
    if let Some(c) = visible.condition() {
        q = q.filter(c);
    }
    if let Some(states) = f.state.as_ref().filter(|s| !s.is_empty()) {
        q = q.filter(Column::State.is_in(states.states().iter().map(|s| s.as_str())));
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
    let mut rows = typed(q.limit(limit + 1).all(db).await?)?;
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
/// that: under READ COMMITTED the claim's reads see every claim committed
/// before the lock was granted), and selects with FOR UPDATE SKIP LOCKED.
/// Two partial unique indexes (migration `m20261205_000020_cluster`) make
/// the database refuse what this statement must never do: two running
/// `target` jobs on one target, two running `global` jobs.
///
/// A retry waiting its backoff (`not_before` still ahead) is neither
/// taken nor holds anything back; the partial index `jobs_queued` still
/// gives the candidates in order (the wait is a filter on the few rows
/// that have one: migration `m20261205_000040_retries`).
///
/// N.B.: a node claims only under the epoch its `nodes` row holds (the
/// `EXISTS` above): once another node has declared it lost (which bumps
/// that epoch), it claims nothing until it has registered again.
const CLAIM_SQL: &str = "
UPDATE jobs SET state = 'running', started_at = $1, updated_at = $1, node = $2, epoch = $3{SET}
WHERE EXISTS (SELECT 1 FROM nodes n WHERE n.node = $2 AND n.epoch = $3)
  AND id = (
  SELECT j.id FROM jobs j
  WHERE j.state = 'queued'{SCOPE}
    AND (j.not_before IS NULL OR j.not_before <= $1)
    AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state IN ('running', 'cancelling') AND r.exclusive = 'global')
    AND NOT EXISTS (
      SELECT 1 FROM jobs q WHERE q.state = 'queued' AND q.exclusive = 'global'
        AND (q.not_before IS NULL OR q.not_before <= $1)
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

/// Which queued jobs a claim may take.
#[derive(Debug, Clone, Copy)]
pub enum ClaimScope<'a> {
    /// Jobs this node runs itself: on any target but these (the agents').
    Local { agent_targets: &'a [String] },
    /// Jobs on these targets, dispatched to `agent` (its dispatch counted).
    Agent {
        agent: &'a str,
        targets: &'a [String],
    },
}

/// Who runs a claimed job: a node under one of its epochs. Every write of
/// a running job by its runner names it, and changes nothing unless the
/// job is still running under it (fencing: a node declared lost, then
/// back, cannot touch the jobs failed meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub epoch: i64,
}

/// Claims the next job for `owner` inside `txn`, if one may start now.
pub async fn claim_in(
    txn: &Txn,
    owner: &Owner,
    scope: ClaimScope<'_>,
) -> Result<Option<JobRow>, DbErr> {
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
    // N.B.: the start time is read only now, with the lock held: a job's
    // `started_at` then comes after the `finished_at` of every job whose end
    // this claim sees (an end commits with its runner's next claim, under
    // this lock). Read before a wait for the lock, two runs on one target
    // seemed to overlap by the length of that wait.
    let now = Utc::now();
    let mut values: Vec<sea_orm::Value> =
        vec![now.into(), owner.node.as_str().into(), owner.epoch.into()];
    let mut set = String::new();
    let list = |values: &mut Vec<sea_orm::Value>, targets: &[String]| {
        let first = values.len() + 1;
        values.extend(targets.iter().map(|t| t.as_str().into()));
        (first..first + targets.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scope = match scope {
        ClaimScope::Local { agent_targets: [] } => String::new(),
        ClaimScope::Local { agent_targets } => {
            format!(
                " AND j.target NOT IN ({})",
                list(&mut values, agent_targets)
            )
        }
        ClaimScope::Agent { targets: [], .. } => return Ok(None),
        ClaimScope::Agent { agent, targets } => {
            values.push(agent.into());
            set = format!(", agent = ${}, dispatch = dispatch + 1", values.len());
            format!(" AND j.target IN ({})", list(&mut values, targets))
        }
    };
    let sql = CLAIM_SQL
        .replace("{LOCK}", lock)
        .replace("{SET}", &set)
        .replace("{SCOPE}", &scope);
    typed_one(
        entity::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values))
            .one(txn)
            .await?,
    )
}

/// A compare-and-set of one job's state: what `engine::transition` applies.
pub struct StateChange<'a> {
    pub id: i64,
    /// The states the job must be in; otherwise nothing is written.
    pub from: &'a [JobState],
    pub to: JobState,
    /// Other columns set with it.
    pub set: Vec<(Column, sea_orm::Value)>,
    /// Lines appended to the log with it: `last_seq` grows by this many
    /// (from `position`'s, if given, else from the stored one).
    pub lines: i64,
    /// Their bytes, added to `log_bytes` likewise.
    pub bytes: i64,
    /// The log's position as its writer left it, stored with the change.
    pub position: Option<&'a LogPosition>,
    /// The dispatch the change is about (an agent's job): a change about
    /// an older dispatch writes nothing.
    pub dispatch: Option<i64>,
    /// The runner that asks (a local job's end): a change by a runner
    /// that no longer owns the job writes nothing.
    pub owner: Option<&'a Owner>,
}

/// Applies a [`StateChange`] in one statement; the row as it is now, or
/// `None` if the job was in none of `from` (then nothing was written).
pub async fn change_state(
    db: &impl ConnectionTrait,
    c: StateChange<'_>,
) -> Result<Option<JobRow>, DbErr> {
    let cols = [
        (Column::State, c.to.as_str().into()),
        (Column::UpdatedAt, Utc::now().into()),
    ];
    let mut q = setting(cols.into_iter().chain(c.set))
        .filter(Column::Id.eq(c.id))
        .filter(Column::State.is_in(c.from.iter().map(|s| s.as_str())));
    if let Some(d) = c.dispatch {
        q = q.filter(Column::Dispatch.eq(d));
    }
    if let Some(o) = c.owner {
        q = owned_by(q, o);
    }
    match c.position {
        Some(p) => {
            let moved = LogPosition {
                last_seq: p.last_seq + c.lines,
                log_bytes: p.log_bytes + c.bytes,
                ..*p
            };
            q = moved.apply(q);
        }
        None if c.lines > 0 => {
            q = q
                .col_expr(Column::LastSeq, Expr::col(Column::LastSeq).add(c.lines))
                .col_expr(Column::LogBytes, Expr::col(Column::LogBytes).add(c.bytes));
        }
        None => {}
    }
    if db.get_database_backend().support_returning() {
        typed_one(q.exec_with_returning(db).await?.into_iter().next())
    } else if q.exec(db).await?.rows_affected == 1 {
        by_id(db, c.id).await
    } else {
        Ok(None)
    }
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

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub state: JobState,
    /// Why it failed, if it did (what a retry policy matches).
    pub failure: Option<app::model::retry::Failure>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub warnings: bool,
    pub progress: Option<Progress>,
}

impl Finish {
    /// The columns a finish sets.
    pub fn columns(&self) -> Vec<(Column, sea_orm::Value)> {
        let progress = self
            .progress
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_default());
        vec![
            (Column::FinishedAt, Utc::now().into()),
            (Column::ExitCode, self.exit_code.into()),
            (Column::Error, self.error.clone().into()),
            (Column::Warnings, self.warnings.into()),
            (Column::Progress, progress.into()),
        ]
    }
}

/// Where a job's stored log stands, and its process group once known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogPosition {
    pub last_seq: i64,
    pub log_bytes: i64,
    /// The range cut from the middle of an over-long log.
    pub omitted: Option<Gap>,
    /// The process group and its leader's start time.
    pub process: Option<(i32, i64)>,
}

impl LogPosition {
    /// Sets this position's columns in `q`.
    fn apply(&self, q: sea_orm::UpdateMany<Entity>) -> sea_orm::UpdateMany<Entity> {
        let mut cols: Vec<(Column, sea_orm::Value)> = vec![
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
        cols.into_iter()
            .fold(q, |q, (col, value)| q.col_expr(col, Expr::value(value)))
    }
}

/// Only the rows of jobs still running or cancelling under `owner`.
fn owned_by(q: sea_orm::UpdateMany<Entity>, owner: &Owner) -> sea_orm::UpdateMany<Entity> {
    q.filter(Column::Node.eq(owner.node.as_str()))
        .filter(Column::Epoch.eq(owner.epoch))
        .filter(Column::State.is_in([JobState::Running.as_str(), JobState::Cancelling.as_str()]))
}

/// Stores the log's position (and `progress`) of a job its runner owns,
/// in one statement that checks it still does (fencing); false, and
/// nothing written, if it does not. On PostgreSQL the statement also locks
/// the row until the commit, so the job cannot be ended by anyone else
/// between this check and the batch's other writes.
pub async fn store_position(
    db: &impl ConnectionTrait,
    id: i64,
    owner: &Owner,
    p: &LogPosition,
    progress: Option<&Progress>,
) -> Result<bool, DbErr> {
    let mut q = owned_by(p.apply(Entity::update_many()), owner).filter(Column::Id.eq(id));
    if let Some(progress) = progress {
        q = q.col_expr(
            Column::Progress,
            Expr::value(serde_json::to_string(progress).unwrap_or_default()),
        );
    }
    Ok(q.exec(db).await?.rows_affected == 1)
}

/// Whether `owner` still runs job `id` (checked, and the row locked until
/// the commit on PostgreSQL, by a write of `updated_at` only).
pub async fn hold_if_owned(
    db: &impl ConnectionTrait,
    id: i64,
    owner: &Owner,
) -> Result<bool, DbErr> {
    let q = owned_by(setting([(Column::UpdatedAt, Utc::now().into())]), owner)
        .filter(Column::Id.eq(id));
    Ok(q.exec(db).await?.rows_affected == 1)
}

/// Moves a job's log position by `lines` lines of `bytes` bytes (a line
/// its transition adds once it knows it).
pub async fn extend_log(
    db: &impl ConnectionTrait,
    id: i64,
    lines: i64,
    bytes: i64,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::LastSeq, Expr::col(Column::LastSeq).add(lines))
        .col_expr(Column::LogBytes, Expr::col(Column::LogBytes).add(bytes))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map(|_| ())
}

/// Stores the process group an agent started for `dispatch` of a job.
pub async fn set_process(
    db: &impl ConnectionTrait,
    id: i64,
    dispatch: i64,
    pgid: i32,
    start: i64,
) -> Result<(), DbErr> {
    setting([
        (Column::Pgid, pgid.into()),
        (Column::PgidStart, start.into()),
    ])
    .filter(Column::Id.eq(id))
    .filter(Column::Dispatch.eq(dispatch))
    .exec(db)
    .await
    .map(|_| ())
}

/// Stores an agent's batch's log position (and progress) on its job, if
/// the job still runs that `dispatch` and the position moves forward.
pub async fn advance_log(
    db: &impl ConnectionTrait,
    id: i64,
    dispatch: i64,
    p: &LogPosition,
    progress: Option<&Progress>,
) -> Result<bool, DbErr> {
    let mut q = p
        .apply(Entity::update_many())
        .filter(Column::Id.eq(id))
        .filter(Column::Dispatch.eq(dispatch))
        .filter(Column::State.is_in([JobState::Running.as_str(), JobState::Cancelling.as_str()]))
        .filter(Column::LastSeq.lte(p.last_seq));
    if let Some(progress) = progress {
        q = q.col_expr(
            Column::Progress,
            Expr::value(serde_json::to_string(progress).unwrap_or_default()),
        );
    }
    Ok(q.exec(db).await?.rows_affected == 1)
}

fn active() -> sea_orm::Select<Entity> {
    Entity::find()
        .filter(Column::State.is_in([JobState::Running.as_str(), JobState::Cancelling.as_str()]))
}

/// Jobs `node` was running or cancelling itself (not on an agent) under
/// an epoch up to `epoch` (or before epochs were recorded).
pub async fn active_on_node(
    db: &impl ConnectionTrait,
    node: &str,
    epoch: i64,
) -> Result<Vec<JobRow>, DbErr> {
    typed(
        active()
            .filter(Column::Node.eq(node))
            .filter(Column::Agent.is_null())
            .filter(
                Condition::any()
                    .add(Column::Epoch.is_null())
                    .add(Column::Epoch.lte(epoch)),
            )
            .order_by_asc(Column::Id)
            .all(db)
            .await?,
    )
}

/// This node's finished jobs that ended with `error` and had a process
/// group (a lost node's jobs, failed by another node).
pub async fn failed_with(
    db: &impl ConnectionTrait,
    node: &str,
    error: &str,
) -> Result<Vec<JobRow>, DbErr> {
    typed(
        Entity::find()
            .filter(Column::Node.eq(node))
            .filter(Column::State.eq(JobState::Failed.as_str()))
            .filter(Column::Error.eq(error))
            .filter(Column::Pgid.is_not_null())
            .order_by_asc(Column::Id)
            .all(db)
            .await?,
    )
}

/// Jobs running or cancelling on `agent`.
pub async fn active_on_agent(db: &impl ConnectionTrait, agent: &str) -> Result<Vec<JobRow>, DbErr> {
    typed(active().filter(Column::Agent.eq(agent)).all(db).await?)
}

/// Jobs running or cancelling on any agent.
pub async fn active_on_agents(db: &impl ConnectionTrait) -> Result<Vec<JobRow>, DbErr> {
    typed(active().filter(Column::Agent.is_not_null()).all(db).await?)
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
        .filter(Column::State.is_in(StateSet::finished().states().iter().map(|s| s.as_str())))
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
pub async fn count_by_state(db: &DatabaseConnection) -> Result<Vec<(JobState, i64)>, DbErr> {
    #[derive(FromQueryResult)]
    struct Count {
        state: String,
        n: i64,
    }
    Entity::find()
        .select_only()
        .column(Column::State)
        .column_as(Column::Id.count(), "n")
        .group_by(Column::State)
        .into_model::<Count>()
        .all(db)
        .await?
        .into_iter()
        .map(|c| {
            JobState::parse(&c.state).map(|s| (s, c.n)).ok_or_else(|| {
                DbErr::Type(format!(
                    "{} job(s) have `{}` in jobs.state, which is not a job state",
                    c.n, c.state
                ))
            })
        })
        .collect()
}

/// When the next retry waiting in the queue is due (after `now`), if any:
/// the engine sleeps no longer than that (index `jobs_delayed`).
pub async fn next_due(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    Ok(Entity::find()
        .filter(Column::State.eq(JobState::Queued.as_str()))
        .filter(Column::NotBefore.gt(now))
        .order_by_asc(Column::NotBefore)
        .one(db)
        .await?
        .and_then(|m| m.not_before))
}

/// Every attempt of the chain whose first job is `root`, first to last.
pub async fn chain(db: &impl ConnectionTrait, root: i64) -> Result<Vec<JobRow>, DbErr> {
    typed(
        Entity::find()
            .filter(
                Condition::any()
                    .add(Column::Id.eq(root))
                    .add(Column::RetryOf.eq(root)),
            )
            .order_by_asc(Column::Attempt)
            .order_by_asc(Column::Id)
            .all(db)
            .await?,
    )
}

/// The newest job on `target`.
pub async fn latest_on_target(
    db: &DatabaseConnection,
    target: &str,
) -> Result<Option<JobRow>, DbErr> {
    typed_one(
        Entity::find()
            .filter(Column::Target.eq(target))
            .order_by_desc(Column::Id)
            .one(db)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(state: &str, exclusive: &str) -> entity::Model {
        let now = Utc::now();
        entity::Model {
            id: 7,
            template: "t".into(),
            target: "web-1".into(),
            params: "{}".into(),
            state: state.into(),
            exclusive: exclusive.into(),
            owner_id: 1,
            owner: "admin".into(),
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            exit_code: None,
            error: None,
            warnings: false,
            progress: None,
            cancel_requested_by: None,
            node: None,
            pgid: None,
            pgid_start: None,
            last_seq: 0,
            log_bytes: 0,
            omitted_from: None,
            omitted_to: None,
            omitted_bytes: 0,
            rerun_of: None,
            dispatch: 0,
            agent: None,
            epoch: None,
            attempt: 1,
            retry_of: None,
            not_before: None,
            retry: None,
        }
    }

    #[test]
    fn a_row_reads_back_typed() {
        let row = JobRow::try_from(model("cancelling", "global")).unwrap();
        assert_eq!(row.state, JobState::Cancelling);
        assert_eq!(row.exclusive, Exclusive::Global);
    }

    #[test]
    fn an_unknown_value_is_an_error_that_names_the_row() {
        let err = JobRow::try_from(model("exploded", "target")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Type Error: job 7: `exploded` in jobs.state is not a job state"
        );
        let err = JobRow::try_from(model("queued", "sometimes")).unwrap_err();
        assert!(
            err.to_string()
                .contains("job 7: `sometimes` in jobs.exclusive"),
            "{err}"
        );
    }
}
