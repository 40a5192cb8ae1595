//! Jobs (the queue) and their log lines, and the replicas' heartbeats.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .if_not_exists()
                    .col(big_integer(Jobs::Id).auto_increment().primary_key())
                    .col(string(Jobs::Template))
                    .col(string(Jobs::Target))
                    .col(text(Jobs::Params))
                    .col(string(Jobs::State))
                    // The template's exclusivity when the job was created: the
                    // claim statement needs it without the config.
                    .col(string(Jobs::Exclusive))
                    .col(big_integer(Jobs::OwnerId))
                    .col(string(Jobs::Owner))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone_null(Jobs::StartedAt))
                    .col(timestamp_with_time_zone_null(Jobs::FinishedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .col(integer_null(Jobs::ExitCode))
                    .col(text_null(Jobs::Error))
                    .col(boolean(Jobs::Warnings).default(false))
                    .col(text_null(Jobs::Progress))
                    .col(string_null(Jobs::CancelRequestedBy))
                    .col(string_null(Jobs::Node))
                    // The process group (its leader's pid) and the leader's
                    // start time in clock ticks since boot: together they
                    // name the group even if the pid is reused later.
                    .col(integer_null(Jobs::Pgid))
                    .col(big_integer_null(Jobs::PgidStart))
                    .col(big_integer(Jobs::LastSeq).default(0))
                    .col(big_integer(Jobs::LogBytes).default(0))
                    // Lines dropped from the middle of an over-long log.
                    .col(big_integer_null(Jobs::OmittedFrom))
                    .col(big_integer_null(Jobs::OmittedTo))
                    .col(big_integer(Jobs::OmittedBytes).default(0))
                    .col(big_integer_null(Jobs::RerunOf))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "jobs_state_created",
                vec![Jobs::State, Jobs::CreatedAt, Jobs::Id],
            ),
            ("jobs_target_state", vec![Jobs::Target, Jobs::State]),
            ("jobs_owner_id", vec![Jobs::OwnerId, Jobs::Id]),
            ("jobs_template_id", vec![Jobs::Template, Jobs::Id]),
            ("jobs_finished_at", vec![Jobs::FinishedAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Jobs::Table);
            for c in cols {
                index.col(c);
            }
            manager.create_index(index.to_owned()).await?;
        }

        // job_logs: one row per line, keyed (job_id, seq). On SQLite a
        // WITHOUT ROWID table stores the rows in key order: appends and range
        // reads touch contiguous pages.
        let backend = manager.get_database_backend();
        if backend == sea_orm::DatabaseBackend::Sqlite {
            manager
                .get_connection()
                .execute_unprepared(
                    "CREATE TABLE IF NOT EXISTS job_logs (
                        job_id INTEGER NOT NULL,
                        seq INTEGER NOT NULL,
                        stream INTEGER NOT NULL,
                        ts INTEGER NOT NULL,
                        text TEXT NOT NULL,
                        PRIMARY KEY (job_id, seq)
                    ) WITHOUT ROWID",
                )
                .await?;
        } else {
            manager
                .create_table(
                    Table::create()
                        .table(JobLogs::Table)
                        .if_not_exists()
                        .col(big_integer(JobLogs::JobId))
                        .col(big_integer(JobLogs::Seq))
                        .col(small_integer(JobLogs::Stream))
                        .col(big_integer(JobLogs::Ts))
                        .col(text(JobLogs::Text))
                        .primary_key(Index::create().col(JobLogs::JobId).col(JobLogs::Seq))
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .if_not_exists()
                    .col(string(Nodes::Node).primary_key())
                    .col(timestamp_with_time_zone(Nodes::StartedAt))
                    .col(timestamp_with_time_zone(Nodes::HeartbeatAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Nodes::Table.into_iden(),
            JobLogs::Table.into_iden(),
            Jobs::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Template,
    Target,
    Params,
    State,
    Exclusive,
    OwnerId,
    Owner,
    CreatedAt,
    StartedAt,
    FinishedAt,
    UpdatedAt,
    ExitCode,
    Error,
    Warnings,
    Progress,
    CancelRequestedBy,
    Node,
    Pgid,
    PgidStart,
    LastSeq,
    LogBytes,
    OmittedFrom,
    OmittedTo,
    OmittedBytes,
    RerunOf,
}

#[derive(DeriveIden)]
enum JobLogs {
    Table,
    JobId,
    Seq,
    Stream,
    Ts,
    Text,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Node,
    StartedAt,
    HeartbeatAt,
}
