//! Remote agents: each enrolled agent with its hashed token and what it
//! last said of itself; and, on jobs, the agent a job was dispatched to and
//! its dispatch number (every message about a job carries it: one about an
//! older dispatch is refused).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .if_not_exists()
                    .col(big_integer(Agents::Id).auto_increment().primary_key())
                    .col(string_uniq(Agents::Name))
                    .col(string_uniq(Agents::TokenHash))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .col(string(Agents::CreatedBy))
                    .col(timestamp_with_time_zone_null(Agents::RevokedAt))
                    .col(string_null(Agents::Hostname))
                    .col(string_null(Agents::Version))
                    .col(timestamp_with_time_zone_null(Agents::ConnectedAt))
                    .col(timestamp_with_time_zone_null(Agents::LastSeenAt))
                    .col(string_null(Agents::Node))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(big_integer(Jobs::Dispatch).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(string_null(Jobs::Agent))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Jobs::Agent, Jobs::Dispatch] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(Agents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    Name,
    TokenHash,
    CreatedAt,
    CreatedBy,
    RevokedAt,
    Hostname,
    Version,
    ConnectedAt,
    LastSeenAt,
    Node,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Dispatch,
    Agent,
}
