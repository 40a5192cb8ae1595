//! `opsdeck backup FILE`: a consistent copy of a running server's SQLite
//! database, taken online.
//!
//! SQLite's `VACUUM INTO` reads the database in one read transaction, so
//! the copy is the database as of one commit: every transaction committed
//! before it began is in it, none is half in it, and the server's writers go
//! on meanwhile (WAL: readers and the writer do not block each other). The
//! copy is a self-contained file (no `-wal`), compacted, written next to
//! FILE and renamed into place, so FILE is either absent or whole. It was
//! chosen over the online backup API (`sqlite3_backup_*`), which sqlx does
//! not expose and which restarts its copy whenever a writer commits during
//! it: with a job logging, it might never finish.
//!
//! PostgreSQL has its own tool: `pg_dump` (docs/install.md).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sea_orm::sqlx::sqlite::SqliteConnectOptions;
use sea_orm::sqlx::{ConnectOptions, Connection, Row};

/// Why a backup was not made. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the database is PostgreSQL: back it up with pg_dump, e.g. `pg_dump --format=custom --file=opsdeck.dump '{0}'` (docs/install.md)")]
    Postgres(String),
    #[error("`{0}` is not a database URL: use sqlite://path/to/file.db")]
    BadUrl(String),
    #[error("{}: the database file does not exist; check [server].database_url or DATABASE_URL", .0.display())]
    Missing(PathBuf),
    #[error("{}: already exists; choose a new file name (a backup never overwrites)", .0.display())]
    Exists(PathBuf),
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: sea_orm::sqlx::Error,
    },
    #[error("{}: the copy failed SQLite's check: {verdict}", path.display())]
    Check { path: PathBuf, verdict: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Copies the SQLite database at `url` to `out`; returns the copy's size.
pub async fn backup(url: &str, out: &Path) -> Result<u64, BackupError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres(super::redact(url)));
    }
    let Some(db_path) = super::sqlite_path(url) else {
        return Err(BackupError::BadUrl(super::redact(url)));
    };
    if !db_path.is_file() {
        return Err(BackupError::Missing(db_path));
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let part = out.with_extension("part");
    let _ = std::fs::remove_file(&part);
    let sqlite = |path: &Path| {
        let path = path.to_path_buf();
        move |source: sea_orm::sqlx::Error| BackupError::Sqlite { path, source }
    };

    // A plain connection: never creates the file, sets no pragma that writes.
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(sqlite(&db_path))?
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(30));
    let mut conn = opts.connect().await.map_err(sqlite(&db_path))?;
    let target = part.to_string_lossy().to_string();
    let copied = sea_orm::sqlx::query("VACUUM INTO ?1")
        .bind(target)
        .execute(&mut conn)
        .await;
    conn.close().await.ok();
    copied.map_err(sqlite(&db_path))?;

    // The copy must open and pass SQLite's own check before it is FILE.
    let check = SqliteConnectOptions::new().filename(&part).read_only(true);
    let mut copy = check.connect().await.map_err(sqlite(&part))?;
    let verdict: String = sea_orm::sqlx::query("PRAGMA quick_check")
        .fetch_one(&mut copy)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(sqlite(&part))?;
    copy.close().await.ok();
    if verdict != "ok" {
        return Err(BackupError::Check {
            path: part,
            verdict,
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| BackupError::Io { path, source }
    };
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io(&part))?;
    std::fs::rename(&part, out).map_err(io(out))?;
    Ok(std::fs::metadata(out).map_err(io(out))?.len())
}
