//! `api_tokens`: bearer tokens for scripts and the CLI, stored as SHA-256.

use chrono::{DateTime, Utc};
use sea_orm::{entity::prelude::*, ActiveValue::Set, FromQueryResult, QueryOrder};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub label: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use entity::Model as Token;
use entity::{ActiveModel, Column, Entity};

pub async fn insert(
    db: &impl ConnectionTrait,
    user_id: i64,
    label: &str,
    token_hash: &str,
) -> Result<Token, DbErr> {
    ActiveModel {
        user_id: Set(user_id),
        label: Set(label.to_string()),
        token_hash: Set(token_hash.to_string()),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// A token with what checking a request needs of its user, in one query
/// (every API request asks).
#[derive(Debug, FromQueryResult)]
pub struct Holder {
    pub token_id: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub user_id: i64,
    pub username: String,
    pub role: String,
    pub disabled: bool,
}

pub async fn holder(db: &DatabaseConnection, token_hash: &str) -> Result<Option<Holder>, DbErr> {
    let backend = db.get_database_backend();
    Holder::find_by_statement(sea_orm::Statement::from_sql_and_values(
        backend,
        "SELECT t.id AS token_id, t.last_used_at, t.revoked_at, \
                u.id AS user_id, u.username, u.role, u.disabled \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        [token_hash.into()],
    ))
    .one(db)
    .await
}

pub async fn by_id(db: &DatabaseConnection, id: i64) -> Result<Option<Token>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

/// Tokens of one user, or of everyone; newest first.
pub async fn list(db: &DatabaseConnection, user_id: Option<i64>) -> Result<Vec<Token>, DbErr> {
    let mut q = Entity::find().order_by_desc(Column::Id);
    if let Some(u) = user_id {
        q = q.filter(Column::UserId.eq(u));
    }
    q.all(db).await
}

pub async fn mark_used(db: &DatabaseConnection, id: i64, at: DateTime<Utc>) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::LastUsedAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map(|_| ())
}

/// Revokes a token; false if it was already revoked or does not exist.
pub async fn revoke(db: &DatabaseConnection, id: i64) -> Result<bool, DbErr> {
    let r = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(Utc::now()))
        .filter(Column::Id.eq(id))
        .filter(Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}
