//! `agents`: the enrolled agents, each with its token's SHA-256 (the token
//! itself is shown once, at enrolment) and what it last said of itself.

use chrono::{DateTime, Utc};
use sea_orm::{entity::prelude::*, ActiveValue::Set, QueryOrder};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agents")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        #[sea_orm(unique)]
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub created_by: String,
        pub revoked_at: Option<DateTimeUtc>,
        pub hostname: Option<String>,
        pub version: Option<String>,
        /// Set while a connection is open (on `node`).
        pub connected_at: Option<DateTimeUtc>,
        pub last_seen_at: Option<DateTimeUtc>,
        pub node: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use entity::Model as Agent;
use entity::{ActiveModel, Column, Entity};

pub async fn insert(
    db: &impl ConnectionTrait,
    name: &str,
    token_hash: &str,
    created_by: &str,
) -> Result<Agent, DbErr> {
    ActiveModel {
        name: Set(name.to_string()),
        token_hash: Set(token_hash.to_string()),
        created_at: Set(Utc::now()),
        created_by: Set(created_by.to_string()),
        ..Default::default()
    }
    .insert(db)
    .await
}

pub async fn by_name(db: &impl ConnectionTrait, name: &str) -> Result<Option<Agent>, DbErr> {
    Entity::find().filter(Column::Name.eq(name)).one(db).await
}

pub async fn by_token_hash(db: &impl ConnectionTrait, hash: &str) -> Result<Option<Agent>, DbErr> {
    Entity::find()
        .filter(Column::TokenHash.eq(hash))
        .one(db)
        .await
}

/// Every enrolled agent, by name.
pub async fn all(db: &impl ConnectionTrait) -> Result<Vec<Agent>, DbErr> {
    Entity::find().order_by_asc(Column::Name).all(db).await
}

/// Revokes an agent's token; false if it was already revoked or unknown.
pub async fn revoke(db: &impl ConnectionTrait, name: &str) -> Result<bool, DbErr> {
    let r = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(Utc::now()))
        .filter(Column::Name.eq(name))
        .filter(Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(r.rows_affected == 1)
}

/// The agent connected (to `node`), saying who it is.
pub async fn connected(
    db: &impl ConnectionTrait,
    name: &str,
    hostname: &str,
    version: &str,
    node: &str,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Hostname, Expr::value(hostname))
        .col_expr(Column::Version, Expr::value(version))
        .col_expr(Column::Node, Expr::value(node))
        .col_expr(Column::ConnectedAt, Expr::value(at))
        .col_expr(Column::LastSeenAt, Expr::value(at))
        .filter(Column::Name.eq(name))
        .exec(db)
        .await
        .map(|_| ())
}

/// The agent was heard from.
pub async fn seen(db: &impl ConnectionTrait, name: &str, at: DateTime<Utc>) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::LastSeenAt, Expr::value(at))
        .filter(Column::Name.eq(name))
        .exec(db)
        .await
        .map(|_| ())
}

/// Its connection to `node` closed (a newer one elsewhere is left alone).
pub async fn disconnected(db: &impl ConnectionTrait, name: &str, node: &str) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(
            Column::ConnectedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(Column::Name.eq(name))
        .filter(Column::Node.eq(node))
        .exec(db)
        .await
        .map(|_| ())
}
