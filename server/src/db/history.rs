//! The reads behind the charts: a target's finished jobs over a period,
//! and the jobs whose life overlaps the last hours. Only the columns the
//! charts need; the figures are computed by `service::history`.

use app::model::job::{JobState, StateSet};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect,
};

use crate::db::jobs::entity::{Column, Entity};
use crate::db::jobs::Visible;

/// A finished job, as the per-template figures count it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub template: String,
    pub state: JobState,
    pub warnings: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(FromQueryResult)]
struct RunRow {
    template: String,
    state: String,
    warnings: bool,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// The jobs on `target` that finished at or after `since`.
pub async fn finished_on_target(
    db: &DatabaseConnection,
    target: &str,
    since: DateTime<Utc>,
) -> Result<Vec<Run>, DbErr> {
    let rows = Entity::find()
        .select_only()
        .columns([
            Column::Template,
            Column::State,
            Column::Warnings,
            Column::StartedAt,
            Column::FinishedAt,
        ])
        .filter(Column::Target.eq(target))
        .filter(Column::FinishedAt.gte(since))
        .filter(Column::State.is_in(StateSet::finished().states().iter().map(|s| s.as_str())))
        .into_model::<RunRow>()
        .all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            let state = JobState::parse(&r.state).ok_or_else(|| {
                DbErr::Type(format!("`{}` in jobs.state is not a job state", r.state))
            })?;
            Ok(Run {
                template: r.template,
                state,
                warnings: r.warnings,
                started_at: r.started_at,
                finished_at: r.finished_at,
            })
        })
        .collect()
}

/// When a job was created, started and finished.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct Span {
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The jobs `visible` keeps that were queued or running at some time
/// after `since`: not finished before it.
pub async fn alive_since(
    db: &DatabaseConnection,
    visible: &Visible<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<Span>, DbErr> {
    let mut q = Entity::find()
        .select_only()
        .columns([Column::CreatedAt, Column::StartedAt, Column::FinishedAt])
        .filter(
            Condition::any()
                .add(Column::FinishedAt.is_null())
                .add(Column::FinishedAt.gt(since)),
        );
    if let Some(c) = visible.condition() {
        q = q.filter(c);
    }
    q.into_model::<Span>().all(db).await
}
