//! Time formatting shared by server-rendered and hydrated views, so both
//! render the same text (a mismatch would break hydration).

use chrono::{DateTime, Utc};

/// `2026-11-23 19:40:07 UTC`: absolute, unambiguous, the same on server and browser.
pub fn format_utc(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration as an operator reads it: `42s`, `3m 07s`, `2h 05m`, `3d 4h`.
pub fn format_duration_secs(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(format_duration_secs(0), "0s");
        assert_eq!(format_duration_secs(42), "42s");
        assert_eq!(format_duration_secs(187), "3m 07s");
        assert_eq!(format_duration_secs(7_500), "2h 05m");
        assert_eq!(format_duration_secs(3 * 86_400 + 4 * 3_600 + 5), "3d 4h");
        assert_eq!(format_duration_secs(-5), "0s");
    }
}
