//! Several replicas on one database: each node's epoch (bumped at every
//! start, and by the replica that declares the node lost), when it was
//! declared lost, the epoch a job was claimed under (every write of its
//! runner checks it: fencing), and the exclusivity of running jobs as
//! constraints of the database itself.
//!
//! N.B.: the two partial unique indexes are the database's own guarantee
//! of what the claim statement (`db::jobs::claim_in`) already decides:
//! at most one running or cancelling job of `exclusive = "target"` per
//! target, and at most one of `exclusive = "global"` at all. A write that
//! would break either fails instead of overlapping two jobs. The same SQL
//! (a partial index, `WHERE`) works on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const ONE_PER_TARGET: &str = "jobs_one_running_per_target";
const ONE_GLOBAL: &str = "jobs_one_running_global";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(big_integer(Nodes::Epoch).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .add_column(timestamp_with_time_zone_null(Nodes::LostAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(big_integer_null(Jobs::Epoch))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX {ONE_PER_TARGET} ON jobs (target) \
             WHERE state IN ('running', 'cancelling') AND exclusive = 'target'"
        ))
        .await?;
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX {ONE_GLOBAL} ON jobs (exclusive) \
             WHERE state IN ('running', 'cancelling') AND exclusive = 'global'"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in [ONE_GLOBAL, ONE_PER_TARGET] {
            manager
                .drop_index(Index::drop().name(index).table(Jobs::Table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::Epoch)
                    .to_owned(),
            )
            .await?;
        for col in [Nodes::LostAt, Nodes::Epoch] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Epoch,
    LostAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Epoch,
}
