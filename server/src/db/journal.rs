//! `journal_entries`: the ops journal's notes.

use app::model::journal::JournalEntry;
use sea_orm::{entity::prelude::*, ActiveValue::Set, QueryOrder, QuerySelect};

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "journal_entries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub author: String,
        pub text: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{ActiveModel, Column, Entity};

impl From<entity::Model> for JournalEntry {
    fn from(m: entity::Model) -> Self {
        JournalEntry {
            id: m.id,
            author: m.author,
            text: m.text,
            created_at: m.created_at,
        }
    }
}

/// The newest `limit` notes, newest first.
pub async fn newest(db: &DatabaseConnection, limit: u64) -> Result<Vec<JournalEntry>, DbErr> {
    let rows = Entity::find()
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Stores a note (already validated).
pub async fn insert(
    db: &DatabaseConnection,
    author: &str,
    text: &str,
) -> Result<JournalEntry, DbErr> {
    let model = ActiveModel {
        author: Set(author.to_string()),
        text: Set(text.to_string()),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(model.into())
}
