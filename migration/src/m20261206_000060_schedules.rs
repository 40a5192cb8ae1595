//! Schedules (server/src/schedules): each `[[schedules]]` entry's state
//! (paused or not, since when it counts its fires), and every fire with
//! what became of it.
//!
//! N.B.: the partial unique index `schedule_fires_once` over a schedule's
//! fire times is what makes a fire happen once: every replica decides the
//! same fires, and the one whose insert wins launches the job in the same
//! transaction. "Run now" rows (`manual_by` set) stand outside it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Schedules::Table)
                    .if_not_exists()
                    .col(string(Schedules::Id).primary_key())
                    .col(boolean(Schedules::Paused).default(false))
                    .col(string_null(Schedules::PausedBy))
                    .col(timestamp_with_time_zone_null(Schedules::PausedAt))
                    // Fires before this are not its business: when it was
                    // first seen, or last resumed.
                    .col(timestamp_with_time_zone(Schedules::Since))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScheduleFires::Table)
                    .if_not_exists()
                    .col(
                        big_integer(ScheduleFires::Id)
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(ScheduleFires::Schedule))
                    .col(timestamp_with_time_zone(ScheduleFires::ScheduledFor))
                    // A run of missed fires: the last one, and how many.
                    .col(timestamp_with_time_zone_null(ScheduleFires::Until))
                    .col(big_integer(ScheduleFires::Count).default(1))
                    .col(timestamp_with_time_zone(ScheduleFires::RecordedAt))
                    // launched | waiting | skipped
                    .col(string(ScheduleFires::Outcome))
                    .col(string_null(ScheduleFires::Reason))
                    .col(big_integer_null(ScheduleFires::JobId))
                    .col(string_null(ScheduleFires::ManualBy))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX schedule_fires_once ON schedule_fires (schedule, scheduled_for) \
             WHERE manual_by IS NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX schedule_fires_by_schedule ON schedule_fires (schedule, id)",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX schedule_fires_waiting ON schedule_fires (schedule) \
             WHERE outcome = 'waiting'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ScheduleFires::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Schedules::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Id,
    Paused,
    PausedBy,
    PausedAt,
    Since,
}

#[derive(DeriveIden)]
enum ScheduleFires {
    Table,
    Id,
    Schedule,
    ScheduledFor,
    Until,
    Count,
    RecordedAt,
    Outcome,
    Reason,
    JobId,
    ManualBy,
}
