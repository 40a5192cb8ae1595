//! The database: connecting (SQLite by default, PostgreSQL for several
//! replicas), running migrations at start, and one module of thin data-access
//! functions per table group. These functions take a `&DatabaseConnection`,
//! return `Result<_, DbErr>` and know nothing of HTTP or Leptos.

pub mod agents;
pub mod audit;
pub mod backup;
pub mod commit;
pub mod history;
pub mod jobs;
pub mod journal;
pub mod logs;
pub mod nodes;
pub mod schedules;
pub mod sessions;
pub mod target_state;
pub mod tokens;
pub mod txn;
pub mod users;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    SqlxSqliteConnector, Statement,
};

/// Why the database could not be opened. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot create the database directory {dir}: {source}; choose a writable location with [server].database_url or DATABASE_URL")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database {url}: {source}; check [server].database_url or DATABASE_URL, and that the location is writable")]
    Open { url: String, source: DbErr },
    #[error(
        "`{0}` is not a database URL: use sqlite://path/to/file.db or postgres://user@host/db"
    )]
    BadUrl(String),
    #[error("cannot migrate the database {url}: {source}")]
    Migrate { url: String, source: DbErr },
}

/// Opens the database named by `url`, creating a SQLite file (and its
/// directory) if needed, and brings its schema up to date. This connection
/// takes every write; see [`connect_reader`] for the heavy reads.
///
/// N.B.: on SQLite it is a pool of one connection. SQLite has one writer at
/// a time, and writers that meet on the file wait in its busy handler, which
/// sleeps 1, 2, 5, 10… ms between tries: with the runners, the log writers
/// and the launches all writing, most of a short job's time went to those
/// sleeps. One connection queues the writers in the pool instead (first
/// come, first served, woken at once), and a read-then-write transaction can
/// no longer fail on a snapshot another writer moved.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbSetupError> {
    let db = if url.starts_with("sqlite:") {
        connect_sqlite(url, SqliteRole::Writer).await?
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut opts = ConnectOptions::new(url);
        opts.max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_postgres_opts(|o| {
                o.options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)])
            });
        Database::connect(opts)
            .await
            .map_err(|source| DbSetupError::Open {
                url: redact(url),
                source,
            })?
    } else {
        return Err(DbSetupError::BadUrl(redact(url)));
    };
    let migrated = if is_postgres(&db) {
        migrate_postgres(url).await
    } else {
        Migrator::up(&db, None).await
    };
    migrated.map_err(|source| DbSetupError::Migrate {
        url: redact(url),
        source,
    })?;
    Ok(db)
}

/// How long PostgreSQL lets one of our sessions sit inside a transaction
/// without a statement before it ends the session.
///
/// N.B.: opsdeck's transactions send their statements back to back (a few
/// ms). A session idle in one for seconds belongs to a replica that was
/// stopped (SIGSTOP, a frozen VM) or cut off mid-commit, and its row locks
/// would hold up every other replica's commits touching those rows (the
/// failing of its jobs among them) until it came back. Ended, its locks
/// go; the stopped replica finds its connection closed when it resumes,
/// and its writes are refused by fencing anyway (docs/cluster.md).
const IDLE_IN_TRANSACTION: &str = "5s";

/// A key for `pg_advisory_lock`: "opsdeck" migrations.
const MIGRATE_LOCK_KEY: i64 = 0x6f70_7364_6563_6b02;

/// Runs the migrations on PostgreSQL under a session advisory lock, on a
/// connection of its own (a session lock belongs to one connection, and a
/// pool would run the migrator's statements on others).
///
/// N.B.: several replicas and the CLI started at the same moment on an
/// empty database would otherwise each find no `seaql_migrations` table
/// and create the schema at once, and all but one would fail on the
/// others' tables. Under the lock they take turns: the first migrates,
/// the rest find nothing left to do (the migrator runs in one transaction
/// on PostgreSQL). SQLite is one replica's file: nothing to take turns with.
async fn migrate_postgres(url: &str) -> Result<(), DbErr> {
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(1)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let conn = Database::connect(opts).await?;
    let lock = |sql: &str| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, [MIGRATE_LOCK_KEY.into()])
    };
    let migrated = match conn.execute(lock("SELECT pg_advisory_lock($1)")).await {
        Ok(_) => {
            let up = Migrator::up(&conn, None).await;
            // Closing the connection would release it too.
            let _ = conn.execute(lock("SELECT pg_advisory_unlock($1)")).await;
            up
        }
        Err(e) => Err(e),
    };
    let _ = conn.close().await;
    migrated
}

/// A second handle for the reads that can take long or come in numbers (log
/// pages and downloads, stream replays, job lists, the audit log): on SQLite
/// a pool of query-only connections that read beside the writer (WAL), so a
/// long read never holds up a commit; on PostgreSQL the writer's own pool.
/// Open it after [`connect`] (which creates and migrates the database).
pub async fn connect_reader(
    url: &str,
    writer: &DatabaseConnection,
) -> Result<DatabaseConnection, DbSetupError> {
    if url.starts_with("sqlite:") {
        connect_sqlite(url, SqliteRole::Reader).await
    } else {
        Ok(writer.clone())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SqliteRole {
    Writer,
    Reader,
}

async fn connect_sqlite(url: &str, role: SqliteRole) -> Result<DatabaseConnection, DbSetupError> {
    let path = sqlite_path(url);
    if let Some(dir) = path
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| DbSetupError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let open_err = |e: sea_orm::sqlx::Error| DbSetupError::Open {
        url: url.to_string(),
        source: DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)),
    };
    // N.B.: WAL lets readers (pages, streams) run beside the one writer;
    // synchronous=NORMAL keeps every commit across a process crash (not across
    // power loss), which is what a log pipeline committing in batches needs.
    let mut opts = SqliteConnectOptions::from_str(url)
        .map_err(open_err)?
        .create_if_missing(role == SqliteRole::Writer)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        .pragma("temp_store", "memory");
    if role == SqliteRole::Reader {
        // A write through a reader is a bug: make it fail loudly.
        opts = opts.pragma("query_only", "ON");
    }
    let max = match role {
        SqliteRole::Writer => 1,
        SqliteRole::Reader => 8,
    };
    // N.B.: sqlx pings a connection before lending it by default, one more
    // round trip to its thread per statement; a SQLite file cannot hang up.
    let pool = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts)
        .await
        .map_err(open_err)?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// The file behind a `sqlite:` URL, if it names one.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let rest = rest.split('?').next().unwrap_or_default();
    (!rest.is_empty() && rest != ":memory:").then(|| PathBuf::from(rest))
}

/// A URL fit for messages: the password is hidden.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A real query against the schema, for health checks.
pub async fn ping(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    db.query_one(Statement::from_string(
        backend,
        "SELECT COUNT(*) FROM seaql_migrations",
    ))
    .await
    .map(|_| ())
}

/// Whether the database is PostgreSQL (else SQLite).
pub fn is_postgres(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite://data/opsdeck.db"),
            Some("data/opsdeck.db".into())
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/o.db?mode=rwc"),
            Some("/var/lib/o.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
