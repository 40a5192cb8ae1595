//! `users`: accounts with an argon2 password hash and a role.

use app::model::user::{Role, UserInfo};
use chrono::Utc;
use sea_orm::{entity::prelude::*, ActiveValue::Set, QueryOrder};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub username: String,
        pub password_hash: String,
        pub role: String,
        pub disabled: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub last_login_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use entity::Model as User;
use entity::{ActiveModel, Column, Entity};

/// A role as stored; an unknown value counts as operator (least power).
pub fn stored_role(role: &str) -> Role {
    Role::parse(role).unwrap_or(Role::Operator)
}

impl User {
    pub fn role(&self) -> Role {
        stored_role(&self.role)
    }

    pub fn info(&self) -> UserInfo {
        UserInfo {
            id: self.id,
            username: self.username.clone(),
            role: self.role(),
            disabled: self.disabled,
            created_at: self.created_at,
            last_login_at: self.last_login_at,
        }
    }
}

pub async fn count(db: &DatabaseConnection) -> Result<u64, DbErr> {
    Entity::find().count(db).await
}

pub async fn by_name(db: &DatabaseConnection, username: &str) -> Result<Option<User>, DbErr> {
    Entity::find()
        .filter(Column::Username.eq(username))
        .one(db)
        .await
}

pub async fn by_id(db: &DatabaseConnection, id: i64) -> Result<Option<User>, DbErr> {
    Entity::find_by_id(id).one(db).await
}

pub async fn all(db: &DatabaseConnection) -> Result<Vec<User>, DbErr> {
    Entity::find().order_by_asc(Column::Username).all(db).await
}

/// Inserts a user; the caller validated the name and hashed the password.
pub async fn insert(
    db: &impl ConnectionTrait,
    username: &str,
    password_hash: &str,
    role: Role,
) -> Result<User, DbErr> {
    let now = Utc::now();
    ActiveModel {
        username: Set(username.to_string()),
        password_hash: Set(password_hash.to_string()),
        role: Set(role.as_str().to_string()),
        disabled: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// What an admin can change about a user.
pub enum Change {
    Role(Role),
    Disabled(bool),
    PasswordHash(String),
    LoggedIn,
}

pub async fn update(db: &DatabaseConnection, id: i64, change: Change) -> Result<User, DbErr> {
    let mut m = ActiveModel {
        id: Set(id),
        updated_at: Set(Utc::now()),
        ..Default::default()
    };
    match change {
        Change::Role(r) => m.role = Set(r.as_str().to_string()),
        Change::Disabled(d) => m.disabled = Set(d),
        Change::PasswordHash(h) => m.password_hash = Set(h),
        Change::LoggedIn => {
            m.last_login_at = Set(Some(Utc::now()));
            m.updated_at = sea_orm::ActiveValue::NotSet;
        }
    }
    m.update(db).await
}

/// How many enabled admins there are (the last one may not be demoted).
pub async fn active_admins(db: &DatabaseConnection) -> Result<u64, DbErr> {
    Entity::find()
        .filter(Column::Role.eq(Role::Admin.as_str()))
        .filter(Column::Disabled.eq(false))
        .count(db)
        .await
}
