//! The ops journal: short notes operators leave for each other ("rotated the
//! TLS key on web-1"), shown newest first on the dashboard.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// Longest journal note, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// One journal note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub id: i64,
    pub author: String,
    pub text: String,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub created_at: DateTime<Utc>,
}

/// Checks a note before it is stored; the same rule runs in the browser's
/// counter and on the server. Returns the trimmed text.
pub fn validate_note(text: &str) -> Result<String, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AppError::field("text", "write something first"));
    }
    let chars = text.chars().count();
    if chars > MAX_NOTE_CHARS {
        return Err(AppError::field(
            "text",
            format!("a note holds at most {MAX_NOTE_CHARS} characters; this one has {chars}"),
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_note_is_refused_with_its_field() {
        let err = validate_note("   ").unwrap_err();
        assert_eq!(err.field_name(), Some("text"));
    }

    #[test]
    fn a_note_is_trimmed_and_limited_by_characters_not_bytes() {
        assert_eq!(validate_note("  hi  ").unwrap(), "hi");
        let long = "é".repeat(MAX_NOTE_CHARS);
        assert!(validate_note(&long).is_ok());
        assert!(validate_note(&format!("{long}x")).is_err());
    }
}
