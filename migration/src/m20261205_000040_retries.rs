//! Retries (a template's `retry = { … }`): each attempt is its own job,
//! linked to the chain's first (`retry_of`) and numbered (`attempt`, 1
//! for a launch); a retry waits in the queue until `not_before`; `retry`
//! is the policy the chain started with (JSON), so a chain follows the
//! policy it was launched under even if the configuration changes.
//!
//! N.B.: the claim (`db::jobs::claim_in`) reads queued jobs through the
//! partial index `jobs_queued` (created_at, id) and skips those whose
//! `not_before` is still ahead: a row filter on the few delayed rows, so
//! the claim keeps its plan. `jobs_delayed` holds only the queued jobs
//! that wait (a handful), for the engine's "when is the next one due".

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const DELAYED: &str = "jobs_delayed";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            integer(Jobs::Attempt).default(1).to_owned(),
            big_integer_null(Jobs::RetryOf),
            timestamp_with_time_zone_null(Jobs::NotBefore),
            text_null(Jobs::Retry),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE INDEX {DELAYED} ON jobs (not_before) \
             WHERE state = 'queued' AND not_before IS NOT NULL"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE INDEX jobs_by_retry_of ON jobs (retry_of) WHERE retry_of IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX jobs_by_retry_of").await?;
        db.execute_unprepared(&format!("DROP INDEX {DELAYED}"))
            .await?;
        for col in [Jobs::Retry, Jobs::NotBefore, Jobs::RetryOf, Jobs::Attempt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Attempt,
    RetryOf,
    NotBefore,
    Retry,
}
