//! Time formatting shared by server-rendered and hydrated views, so both
//! render the same text (a mismatch would break hydration). The server
//! renders UTC; once hydrated, `jobs::widgets::Time` switches to the
//! browser's zone and, in lists, to the relative form.

use chrono::{DateTime, FixedOffset, Utc};

/// `2026-11-23 19:40:07 UTC`: absolute, unambiguous, the same on server and browser.
pub fn format_utc(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `2026-11-23 20:40:07 UTC+01:00`: `t` in the zone `offset_minutes` east
/// of UTC (the browser's, at `t`); `UTC` itself when that is 0.
pub fn format_in_offset(t: &DateTime<Utc>, offset_minutes: i32) -> String {
    match FixedOffset::east_opt(offset_minutes * 60).filter(|_| offset_minutes != 0) {
        Some(zone) => t
            .with_timezone(&zone)
            .format("%Y-%m-%d %H:%M:%S UTC%:z")
            .to_string(),
        None => format_utc(t),
    }
}

/// How long ago, as lists say it: `just now`, `42 s ago`, `3 min ago`,
/// `5 h ago`, `2 days ago` (a time ahead of the clock is `just now`).
pub fn format_ago(secs: i64) -> String {
    match secs {
        s if s < 5 => "just now".to_string(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3_600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3_600),
        s if s < 2 * 86_400 => "1 day ago".to_string(),
        s => format!("{} days ago", s / 86_400),
    }
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

    #[test]
    fn times_read_in_a_zone_and_as_time_ago() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T19:40:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_in_offset(&t, 0), "2026-11-23 19:40:07 UTC");
        assert_eq!(format_in_offset(&t, 60), "2026-11-23 20:40:07 UTC+01:00");
        assert_eq!(format_in_offset(&t, -330), "2026-11-23 14:10:07 UTC-05:30");
        assert_eq!(format_ago(-3), "just now");
        assert_eq!(format_ago(42), "42 s ago");
        assert_eq!(format_ago(187), "3 min ago");
        assert_eq!(format_ago(7_500), "2 h ago");
        assert_eq!(format_ago(90_000), "1 day ago");
        assert_eq!(format_ago(5 * 86_400), "5 days ago");
    }
}
