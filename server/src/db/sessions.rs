//! `sessions`: browser sessions, keyed by the SHA-256 of the cookie's token.

use chrono::{DateTime, Utc};
use sea_orm::{entity::prelude::*, ActiveValue::Set};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: i64,
        pub created_at: DateTimeUtc,
        pub last_seen_at: DateTimeUtc,
        pub ip: Option<String>,
        pub user_agent: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use entity::Model as Session;
use entity::{ActiveModel, Column, Entity};

pub async fn insert(
    db: &DatabaseConnection,
    id_hash: &str,
    user_id: i64,
    ip: Option<String>,
    user_agent: Option<String>,
) -> Result<(), DbErr> {
    let now = Utc::now();
    ActiveModel {
        id: Set(id_hash.to_string()),
        user_id: Set(user_id),
        created_at: Set(now),
        last_seen_at: Set(now),
        ip: Set(ip),
        user_agent: Set(user_agent),
    }
    .insert(db)
    .await
    .map(|_| ())
}

pub async fn by_id(db: &DatabaseConnection, id_hash: &str) -> Result<Option<Session>, DbErr> {
    Entity::find_by_id(id_hash.to_string()).one(db).await
}

pub async fn touch(db: &DatabaseConnection, id_hash: &str, at: DateTime<Utc>) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::LastSeenAt, Expr::value(at))
        .filter(Column::Id.eq(id_hash))
        .exec(db)
        .await
        .map(|_| ())
}

pub async fn delete(db: &DatabaseConnection, id_hash: &str) -> Result<(), DbErr> {
    Entity::delete_by_id(id_hash.to_string())
        .exec(db)
        .await
        .map(|_| ())
}

/// Ends every session of a user (disabled, password reset), except `keep`.
pub async fn delete_for_user(
    db: &DatabaseConnection,
    user_id: i64,
    keep: Option<&str>,
) -> Result<u64, DbErr> {
    let mut q = Entity::delete_many().filter(Column::UserId.eq(user_id));
    if let Some(keep) = keep {
        q = q.filter(Column::Id.ne(keep));
    }
    q.exec(db).await.map(|r| r.rows_affected)
}

/// Deletes sessions idle since before `cutoff`.
pub async fn delete_idle(db: &DatabaseConnection, cutoff: DateTime<Utc>) -> Result<u64, DbErr> {
    Entity::delete_many()
        .filter(Column::LastSeenAt.lt(cutoff))
        .exec(db)
        .await
        .map(|r| r.rows_affected)
}
