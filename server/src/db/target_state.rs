//! `target_state`: each target's actual state as its status probe last
//! found it, and the last error of a job on it (`status`, docs/automation.md
//! "A target's actual state").
//!
//! Three writers, each one guarded statement:
//! - the replica whose interval probe is due claims it ([`claim`]): only
//!   if no replica claimed (or probed) the target within the interval, so
//!   with several replicas one of them runs each due probe;
//! - a probe's result ([`record`]) is written only if no probe that
//!   started later was recorded first: a slow probe never hides a newer
//!   state;
//! - a job's end ([`job_ended_in`], inside its transition): a failed job
//!   sets the last error, a succeeded one clears it.

use app::model::job::JobState;
use app::model::status::{LastError, ProbeState, TargetStatus};
use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, Statement};

use crate::db::jobs::JobRow;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "target_state")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub target: String,
    pub state: Option<String>,
    pub message: String,
    pub checked_at: Option<DateTimeUtc>,
    pub changed_at: Option<DateTimeUtc>,
    pub claimed_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub last_error_job: Option<i64>,
    pub last_error_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    pub fn to_status(&self) -> TargetStatus {
        TargetStatus {
            target: self.target.clone(),
            state: self.state.as_deref().and_then(ProbeState::parse),
            message: self.message.clone(),
            checked_at: self.checked_at,
            changed_at: self.changed_at,
            last_error: match (&self.last_error, self.last_error_job, self.last_error_at) {
                (Some(error), Some(job_id), Some(at)) => Some(LastError {
                    job_id,
                    error: error.clone(),
                    at,
                }),
                _ => None,
            },
        }
    }
}

/// Every target's row.
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<TargetStatus>, DbErr> {
    Ok(Entity::find()
        .all(db)
        .await?
        .iter()
        .map(Model::to_status)
        .collect())
}

/// One target's row, if it has one.
pub async fn get(db: &impl ConnectionTrait, target: &str) -> Result<Option<TargetStatus>, DbErr> {
    Ok(Entity::find_by_id(target.to_string())
        .one(db)
        .await?
        .map(|m| m.to_status()))
}

/// Makes sure each of `targets` has a row (a probe's claim updates it).
pub async fn ensure(db: &impl ConnectionTrait, targets: &[String]) -> Result<(), DbErr> {
    for target in targets {
        db.execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO target_state (target, message) VALUES ($1, '') \
             ON CONFLICT (target) DO NOTHING",
            [target.as_str().into()],
        ))
        .await?;
    }
    Ok(())
}

/// Claims `target`'s interval probe at `now` for this replica: true if
/// no probe was claimed or run on it since `cutoff`.
pub async fn claim(
    db: &impl ConnectionTrait,
    target: &str,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let res = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE target_state SET claimed_at = $2 \
             WHERE target = $1 AND (claimed_at IS NULL OR claimed_at <= $3)",
            [target.into(), now.into(), cutoff.into()],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Records what the probe of `target` that started at `started` found;
/// false if a probe that started later was recorded first (nothing is
/// written then). The probe counts as a claim too, so the next interval
/// probe waits a whole interval after it.
pub async fn record(
    db: &impl ConnectionTrait,
    target: &str,
    state: ProbeState,
    message: &str,
    started: DateTime<Utc>,
) -> Result<bool, DbErr> {
    // N.B.: every expression of a SET reads the row as it was, so
    // `changed_at` compares the old state with the new one.
    let res = db
        .execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE target_state SET \
               changed_at = CASE WHEN state = $2 THEN changed_at ELSE $4 END, \
               state = $2, message = $3, checked_at = $4, \
               claimed_at = CASE WHEN claimed_at IS NULL OR claimed_at < $4 THEN $4 ELSE claimed_at END \
             WHERE target = $1 AND (checked_at IS NULL OR checked_at < $4)",
            [
                target.into(),
                state.as_str().into(),
                message.into(),
                started.into(),
            ],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

/// A job on `row.target` ended as `row` says (inside its transition): a
/// failed one becomes the target's last error; a succeeded one clears it;
/// a cancelled one changes nothing (a cancel is neither).
pub async fn job_ended_in(db: &impl ConnectionTrait, row: &JobRow) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let stmt = match row.state {
        JobState::Failed => {
            let error = row.error.clone().unwrap_or_else(|| match row.exit_code {
                Some(code) => format!("exited with code {code}"),
                None => "failed".to_string(),
            });
            let at = row.finished_at.unwrap_or_else(Utc::now);
            Statement::from_sql_and_values(
                backend,
                "INSERT INTO target_state (target, message, last_error, last_error_job, last_error_at) \
                 VALUES ($1, '', $2, $3, $4) \
                 ON CONFLICT (target) DO UPDATE SET last_error = excluded.last_error, \
                   last_error_job = excluded.last_error_job, last_error_at = excluded.last_error_at",
                [
                    row.target.as_str().into(),
                    error.into(),
                    row.id.into(),
                    at.into(),
                ],
            )
        }
        JobState::Succeeded => Statement::from_sql_and_values(
            backend,
            "UPDATE target_state SET last_error = NULL, last_error_job = NULL, last_error_at = NULL \
             WHERE target = $1 AND last_error IS NOT NULL",
            [row.target.as_str().into()],
        ),
        _ => return Ok(()),
    };
    db.execute(stmt).await.map(|_| ())
}
