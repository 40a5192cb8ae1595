//! The first start: with no user at all, create `admin`.

use app::model::user::Role;
use sea_orm::{DatabaseConnection, DbErr};

use crate::auth::{password, secret};
use crate::db::{audit, users};

/// Creates `admin` when the users table is empty, with `password` (from
/// `OPSDECK_ADMIN_PASSWORD`) or a random one written once to the log.
pub async fn ensure_first_admin(
    db: &DatabaseConnection,
    password: Option<&str>,
    url: &str,
) -> Result<(), DbErr> {
    if users::count(db).await? > 0 {
        return Ok(());
    }
    let (password, generated) = match password {
        Some(p) if !p.is_empty() => (p.to_string(), false),
        _ => (secret::random_secret(20), true),
    };
    let hash = password::hash(password.clone())
        .await
        .map_err(|e| DbErr::Custom(format!("hashing the first admin's password: {e}")))?;
    match users::insert(db, "admin", &hash, Role::Admin).await {
        Ok(_) => {}
        // Another replica created it first.
        Err(_) if users::count(db).await? > 0 => return Ok(()),
        Err(e) => return Err(e),
    }
    audit::insert(
        db,
        audit::Record {
            actor: "system",
            action: "user.create",
            subject: "admin",
            detail: Some(serde_json::json!({ "role": "admin", "bootstrap": true })),
            ip: None,
        },
    )
    .await?;
    if generated {
        tracing::warn!(
            "created the first user `admin` with the password `{password}`: sign in at {url}/login and change it \
             on the Account page (or run `opsdeck user passwd admin`); this password is not shown again"
        );
    } else {
        tracing::info!(
            "created the first user `admin` with the password from OPSDECK_ADMIN_PASSWORD"
        );
    }
    Ok(())
}
