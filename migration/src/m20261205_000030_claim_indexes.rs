//! The claim statement (`db::jobs::claim_in`) reads queued jobs oldest
//! first and probes running ones by target: without these, every claim
//! read and sorted the whole `jobs` table — finished jobs included — and
//! on PostgreSQL a queue of 4,000 jobs slowed claims to a few a second
//! (the `pg` benchmark, docs/benchmarks.md).
//!
//! N.B.: partial indexes, so each holds only the few rows it is for (the
//! queued jobs; the running ones) however long the history grows. The
//! same SQL works on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: [(&str, &str); 3] = [
    // The claim's candidates, in the claim's order.
    (
        "jobs_queued",
        "ON jobs (created_at, id) WHERE state = 'queued'",
    ),
    // "No older queued global job": a probe of a handful of rows.
    (
        "jobs_queued_global",
        "ON jobs (created_at, id) WHERE state = 'queued' AND exclusive = 'global'",
    ),
    // "Nothing running on this target" (and "nothing running at all").
    (
        "jobs_active_by_target",
        "ON jobs (target, exclusive) WHERE state IN ('running', 'cancelling')",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, def) in INDEXES {
            db.execute_unprepared(&format!("CREATE INDEX {name} {def}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX {name}")).await?;
        }
        Ok(())
    }
}
