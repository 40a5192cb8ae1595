//! A target's actual state (docs/automation.md, "A target's actual
//! state"): one row per target, written by its status probe (`state`,
//! the first line of its output as `message`, when it was `checked_at`
//! and when the state last `changed_at`), by the replica that claims the
//! next interval probe (`claimed_at`), and by the end of each job on it
//! (`last_error`: the last failed job's error, cleared by the next
//! success). In the database, so every replica and a restart see it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TargetState::Table)
                    .if_not_exists()
                    .col(string(TargetState::Target).primary_key())
                    .col(string_null(TargetState::State))
                    .col(text(TargetState::Message).default(""))
                    .col(timestamp_with_time_zone_null(TargetState::CheckedAt))
                    .col(timestamp_with_time_zone_null(TargetState::ChangedAt))
                    .col(timestamp_with_time_zone_null(TargetState::ClaimedAt))
                    .col(text_null(TargetState::LastError))
                    .col(big_integer_null(TargetState::LastErrorJob))
                    .col(timestamp_with_time_zone_null(TargetState::LastErrorAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TargetState::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum TargetState {
    Table,
    Target,
    State,
    Message,
    CheckedAt,
    ChangedAt,
    ClaimedAt,
    LastError,
    LastErrorJob,
    LastErrorAt,
}
