//! Webhook notifications (server/src/webhooks): the outbox of events,
//! written in the same transaction as what they announce (a job's end),
//! and one delivery per event and `[[notify]]` hook, with its attempts so
//! far, when to try next and how the last try went (the delivery log).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEvents::Table)
                    .if_not_exists()
                    .col(
                        big_integer(WebhookEvents::Id)
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string_uniq(WebhookEvents::EventId))
                    .col(string(WebhookEvents::Kind))
                    .col(string_null(WebhookEvents::Template))
                    .col(string_null(WebhookEvents::Target))
                    .col(text(WebhookEvents::Body))
                    .col(timestamp_with_time_zone(WebhookEvents::CreatedAt))
                    // Whether its deliveries were made (one per matching hook).
                    .col(boolean(WebhookEvents::FannedOut).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_events_to_fan_out")
                    .table(WebhookEvents::Table)
                    .col(WebhookEvents::FannedOut)
                    .col(WebhookEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(
                        big_integer(WebhookDeliveries::Id)
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(string(WebhookDeliveries::EventId))
                    .col(string(WebhookDeliveries::Kind))
                    .col(string(WebhookDeliveries::Hook))
                    // pending | delivered | failed (gave up)
                    .col(string(WebhookDeliveries::State))
                    .col(integer(WebhookDeliveries::Attempts).default(0))
                    // When it is due; while a replica posts it, the end of
                    // that replica's lease.
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::LastAt))
                    .col(integer_null(WebhookDeliveries::LastStatus))
                    .col(string_null(WebhookDeliveries::LastError))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::State)
                    .col(WebhookDeliveries::NextAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_by_hook")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Hook)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookEvents {
    Table,
    Id,
    EventId,
    Kind,
    Template,
    Target,
    Body,
    CreatedAt,
    FannedOut,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EventId,
    Kind,
    Hook,
    State,
    Attempts,
    NextAt,
    CreatedAt,
    LastAt,
    LastStatus,
    LastError,
}
