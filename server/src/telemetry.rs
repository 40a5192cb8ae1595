//! Structured logs with `tracing` on stderr; the level comes from `RUST_LOG`
//! (default `info`, quieter for the SQL layer).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
