//! The transaction the committer ([`super::commit`]) applies its work in.
//!
//! On SQLite it is sea-orm's own `DatabaseTransaction`. On PostgreSQL it
//! is a sqlx transaction taken from sea-orm's pool, because a log batch
//! goes in with `COPY` ([`Txn::copy_in`]), in the same transaction as the
//! log position it moves, and sea-orm's transaction does not hand out its
//! connection. `COPY` stores a line in about half the time of the fastest
//! `INSERT … SELECT` (docs/benchmarks.md, "PostgreSQL ingest").
//!
//! Everything else goes through [`ConnectionTrait`] exactly as through
//! sea-orm: the same statements, bound by the same binder
//! (sea-query-binder, which sea-orm itself uses), prepared and cached by
//! sqlx the same way, with the same `DbErr` for each failure. So the data
//! functions in `db::*` take a `Txn` as they take any connection.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, TransactionTrait, Value, Values,
};
use sea_query_binder::SqlxValues;
use sqlx::{Postgres, Transaction};
use tokio::sync::Mutex;

/// An open transaction: commit or roll it back. Dropped open, it rolls
/// back (both kinds do).
pub enum Txn {
    Sea(DatabaseTransaction),
    /// N.B.: a mutex because [`ConnectionTrait`] takes `&self`; the
    /// committer's items use it one statement at a time.
    Pg(Mutex<Transaction<'static, Postgres>>),
}

impl Txn {
    /// Begins a transaction on `db`.
    pub async fn begin(db: &DatabaseConnection) -> Result<Txn, DbErr> {
        if db.get_database_backend() != DbBackend::Postgres {
            return db.begin().await.map(Txn::Sea);
        }
        db.get_postgres_connection_pool()
            .begin()
            .await
            .map(|t| Txn::Pg(Mutex::new(t)))
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(e)))
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Txn::Sea(t) => t.commit().await,
            Txn::Pg(t) => t.into_inner().commit().await.map_err(exec_err),
        }
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Txn::Sea(t) => t.rollback().await,
            Txn::Pg(t) => t.into_inner().rollback().await.map_err(exec_err),
        }
    }

    /// Runs `statement` (a `COPY … FROM STDIN`) with `data` in this
    /// transaction and returns the rows it stored. PostgreSQL only: on
    /// SQLite, which has no `COPY`, it is an error.
    pub async fn copy_in(&self, statement: &str, data: &[u8]) -> Result<u64, DbErr> {
        let Txn::Pg(t) = self else {
            return Err(DbErr::Custom(format!(
                "`{statement}` needs PostgreSQL; this database is {:?}",
                self.get_database_backend()
            )));
        };
        let mut t = t.lock().await;
        let mut copy = t.copy_in_raw(statement).await.map_err(exec_err)?;
        if let Err(e) = copy.send(data).await {
            // The connection stays usable only once the copy is aborted.
            let _ = copy.abort(e.to_string()).await;
            return Err(exec_err(e));
        }
        copy.finish().await.map_err(exec_err)
    }
}

fn exec_err(e: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(e))
}

fn query_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(e))
}

/// The statement as sqlx runs it, bound as sea-orm binds it.
fn bound(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt
        .values
        .clone()
        .unwrap_or_else(|| Values(Vec::<Value>::new()));
    sqlx::query_with(&stmt.sql, SqlxValues(values))
}

#[async_trait::async_trait]
impl ConnectionTrait for Txn {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Txn::Sea(t) => t.get_database_backend(),
            Txn::Pg(_) => DbBackend::Postgres,
        }
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Txn::Sea(t) => t.execute(stmt).await,
            Txn::Pg(t) => {
                let mut t = t.lock().await;
                bound(&stmt)
                    .execute(&mut **t)
                    .await
                    .map(Into::into)
                    .map_err(exec_err)
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Txn::Sea(t) => t.execute_unprepared(sql).await,
            Txn::Pg(t) => {
                let mut t = t.lock().await;
                let conn: &mut sqlx::PgConnection = &mut t;
                sqlx::Executor::execute(conn, sql)
                    .await
                    .map(Into::into)
                    .map_err(exec_err)
            }
        }
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Txn::Sea(t) => t.query_one(stmt).await,
            Txn::Pg(t) => {
                let mut t = t.lock().await;
                bound(&stmt)
                    .fetch_optional(&mut **t)
                    .await
                    .map(|row| row.map(Into::into))
                    .map_err(query_err)
            }
        }
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Txn::Sea(t) => t.query_all(stmt).await,
            Txn::Pg(t) => {
                let mut t = t.lock().await;
                bound(&stmt)
                    .fetch_all(&mut **t)
                    .await
                    .map(|rows| rows.into_iter().map(Into::into).collect())
                    .map_err(query_err)
            }
        }
    }
}
