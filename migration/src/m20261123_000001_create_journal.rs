//! The ops journal.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JournalEntries::Table)
                    .if_not_exists()
                    .col(
                        big_integer(JournalEntries::Id)
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(JournalEntries::Author))
                    .col(text(JournalEntries::Text))
                    .col(timestamp_with_time_zone(JournalEntries::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("journal_entries_created_at")
                    .table(JournalEntries::Table)
                    .col(JournalEntries::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JournalEntries::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum JournalEntries {
    Table,
    Id,
    Author,
    Text,
    CreatedAt,
}
