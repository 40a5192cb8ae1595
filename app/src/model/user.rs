//! Users, roles, API tokens and the audit log, as the API and pages see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What a user may do: admins everything, operators their own targets' work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is asking: set by the server's guard on every authenticated request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A user as the admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub created_at: DateTime<Utc>,
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub last_login_at: Option<DateTime<Utc>>,
}

/// An API token's metadata (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub username: String,
    pub label: String,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub created_at: DateTime<Utc>,
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub last_used_at: Option<DateTime<Utc>>,
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly created token: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub info: TokenInfo,
    pub token: String,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub at: DateTime<Utc>,
    /// The username, or `-` for an anonymous request, or `cli`.
    pub actor: String,
    /// `login.success`, `job.cancel`, …
    pub action: String,
    /// What it acted on: a username, `job 42`, a target id.
    pub subject: String,
    pub detail: Option<serde_json::Value>,
    pub ip: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page.
    pub next_before: Option<i64>,
}

/// Filters for the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<u64>,
}

/// Usernames: what may be typed at the login form and shown everywhere.
pub fn validate_username(name: &str) -> Result<(), AppError> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AppError::field(
            "username",
            "a username is 1 to 32 characters: lowercase letters, digits, `_`, `.` or `-`, starting with a letter",
        ))
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Passwords: long enough, not absurdly long (argon2 input).
pub fn validate_password(password: &str) -> Result<(), AppError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(AppError::field(
            "password",
            format!("a password needs at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > 1024 {
        return Err(AppError::field(
            "password",
            "a password holds at most 1024 bytes",
        ));
    }
    Ok(())
}

/// Token labels: what the token is for ("ci", "laptop").
pub fn validate_token_label(label: &str) -> Result<String, AppError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err(AppError::field(
            "label",
            "a label is 1 to 64 characters, e.g. \"ci\" or \"laptop\"",
        ));
    }
    Ok(label.to_string())
}

/// Where to go after signing in: only a local path (`/jobs/4`), never
/// another site (`//evil.example`, `https://…`, `/\evil`).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.chars().any(|c| c.is_control() || c == '\\')
                && !n.starts_with("/login") =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_only_ever_points_at_a_local_path() {
        assert_eq!(safe_next(Some("/jobs/42?x=1#L3")), "/jobs/42?x=1#L3");
        assert_eq!(safe_next(None), "/");
        for evil in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "javascript:alert(1)",
            "/login?next=/x",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil:?}");
        }
    }

    #[test]
    fn usernames_are_simple_lowercase_slugs() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("ops.bob-2").is_ok());
        assert!(validate_username("Alice").is_err());
        assert!(validate_username("1alice").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("").is_err());
    }

    #[test]
    fn passwords_need_ten_characters() {
        assert_eq!(
            validate_password("short").unwrap_err().field_name(),
            Some("password")
        );
        assert!(validate_password("long enough!").is_ok());
    }
}
