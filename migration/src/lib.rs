//! opsdeck's schema, one migration per change. The server runs them at start
//! (`Migrator::up`), so a new database needs no setup step.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_journal;
mod m20261123_000002_create_accounts;
mod m20261123_000003_create_jobs;
mod m20261123_000004_index_jobs_by_target;
mod m20261205_000010_agents;
mod m20261205_000020_cluster;
mod m20261205_000030_claim_indexes;
mod m20261205_000040_retries;
mod m20261205_000050_webhooks;
mod m20261206_000060_schedules;
mod m20261206_000070_target_state;

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_journal::Migration),
            Box::new(m20261123_000002_create_accounts::Migration),
            Box::new(m20261123_000003_create_jobs::Migration),
            Box::new(m20261123_000004_index_jobs_by_target::Migration),
            Box::new(m20261205_000010_agents::Migration),
            Box::new(m20261205_000020_cluster::Migration),
            Box::new(m20261205_000030_claim_indexes::Migration),
            Box::new(m20261205_000040_retries::Migration),
            Box::new(m20261205_000050_webhooks::Migration),
            Box::new(m20261206_000060_schedules::Migration),
            Box::new(m20261206_000070_target_state::Migration),
        ]
    }
}
