//! Time formatting shared by server-rendered and hydrated views, so both
//! render the same text (a mismatch would break hydration). The server
//! renders UTC; once hydrated, `jobs::widgets::Time` switches to the
//! browser's zone and, in lists, to the relative form.
//!
//! N.B.: the fields are written out with `format!`, not with chrono's
//! `format("%Y-%m-%d …")`: chrono's strftime engine (its parser of the
//! format string, every specifier's writer, and the Unicode lower-case
//! table that `%p` needs) took kilobytes of the main wasm that the first
//! visit downloads, for the same text (docs/benchmarks.md, issue 16).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};

/// `2026-11-23 19:40` (with `:07` when `seconds`): `t` as read in its own zone.
fn date_time<Tz: TimeZone>(t: &DateTime<Tz>, seconds: bool) -> String {
    let (date, time) = (t.date_naive(), t.time());
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        date.year(),
        date.month(),
        date.day(),
        time.hour(),
        time.minute()
    );
    if seconds {
        out.push_str(&format!(":{:02}", time.second()));
    }
    out
}

/// `2026-11-23 19:40:07 UTC`: absolute, unambiguous, the same on server and browser.
pub fn format_utc(t: &DateTime<Utc>) -> String {
    format!("{} UTC", date_time(t, true))
}

/// `2026-11-23 19:40`, in UTC: the short form lists show until the page
/// has hydrated.
pub fn format_utc_minutes(t: &DateTime<Utc>) -> String {
    date_time(t, false)
}

/// `2026-11-23 20:40:07 UTC+01:00`: `t` in the zone `offset_minutes` east
/// of UTC (the browser's, at `t`); `UTC` itself when that is 0.
pub fn format_in_offset(t: &DateTime<Utc>, offset_minutes: i32) -> String {
    match FixedOffset::east_opt(offset_minutes * 60).filter(|_| offset_minutes != 0) {
        Some(zone) => {
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let off = offset_minutes.unsigned_abs();
            format!(
                "{} UTC{sign}{:02}:{:02}",
                date_time(&t.with_timezone(&zone), true),
                off / 60,
                off % 60
            )
        }
        None => format_utc(t),
    }
}

/// An RFC 3339 timestamp (`2026-11-23T19:40:07.123456Z`,
/// `2026-11-23T20:40:07+01:00`) as an instant; `None` if `s` is not one.
///
/// N.B.: hand-written, for the browser: chrono's own `Deserialize` reads
/// with its general parser (RFC 2822, month and weekday names, ISO weeks,
/// resolving partial dates): 6.8 KB of the main wasm after brotli
/// (docs/benchmarks.md, issue 16). The browser only reads timestamps the
/// server wrote with chrono, always in this form; the server keeps chrono's
/// more lenient parser for what it reads. [`de`] applies it to the models.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if !seps.iter().all(|&(i, c)| b.get(i) == Some(&c))
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    let (hour, minute, mut second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut nano = 0;
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Nanoseconds: the first nine digits, padded; any further are cut.
        nano = fraction[..digits]
            .iter()
            .chain(std::iter::repeat(&b'0'))
            .take(9)
            .fold(0, |n, &c| n * 10 + u32::from(c - b'0'));
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| i32::from(c - b'0'));
            let secs = (digit(h1)? * 10 + digit(h2)?) * 3600 + (digit(m1)? * 10 + digit(m2)?) * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    // A leap second, as chrono keeps it: the 59th with a nanosecond past 10^9.
    if second == 60 {
        second = 59;
        nano += 1_000_000_000;
    }
    let local = date.and_time(NaiveTime::from_hms_nano_opt(hour, minute, second, nano)?);
    FixedOffset::east_opt(offset_secs)?
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde's side of [`parse_rfc3339`], for the models' timestamp fields in
/// the browser: `#[cfg_attr(feature = "hydrate", serde(deserialize_with =
/// "crate::model::time::de::one"))]` (`de::option` with `default` for an
/// `Option`, `de::list` for a `Vec`).
pub mod de {
    use chrono::{DateTime, Utc};
    use serde::de::{Deserialize, Deserializer, Error, Visitor};

    struct Timestamp(DateTime<Utc>);

    impl<'de> Deserialize<'de> for Timestamp {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Rfc3339;
            impl Visitor<'_> for Rfc3339 {
                type Value = Timestamp;

                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an RFC 3339 date and time")
                }

                fn visit_str<E: Error>(self, s: &str) -> Result<Timestamp, E> {
                    super::parse_rfc3339(s)
                        .map(Timestamp)
                        .ok_or_else(|| E::custom(format!("`{s}` is not an RFC 3339 date and time")))
                }
            }
            d.deserialize_str(Rfc3339)
        }
    }

    pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        Timestamp::deserialize(d).map(|t| t.0)
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<Timestamp>::deserialize(d).map(|t| t.map(|t| t.0))
    }

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DateTime<Utc>>, D::Error> {
        Vec::<Timestamp>::deserialize(d).map(|v| v.into_iter().map(|t| t.0).collect())
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
    fn timestamps_parse_as_chrono_parses_what_it_writes() {
        let written = [
            "2026-11-23T19:40:07Z",
            "2026-11-23T19:40:07.5Z",
            "2026-11-23T19:40:07.123456789Z",
            "2026-11-23T19:40:07.123456789123Z",
            "2026-12-06T02:29:03.195708770Z",
            "2026-11-23T20:40:07+01:00",
            "2027-01-01T00:30:00-05:30",
            "2026-11-23t19:40:07z",
            "2026-11-23 19:40:07.001+00:00",
            "2016-12-31T23:59:60Z",
            "0001-01-01T00:00:00Z",
        ];
        for s in written {
            let chrono = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            assert_eq!(parse_rfc3339(s), Some(chrono), "{s}");
        }
        let t = Utc::now();
        assert_eq!(parse_rfc3339(&t.to_rfc3339()), Some(t));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(parse_rfc3339(json.trim_matches('"')), Some(t));
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23T19:40:07",
            "2026-11-23T19:40:07.Z",
            "2026-02-30T19:40:07Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T19:40:07+1:00",
            "2026-11-23T19:40:07Z ",
            "2026-11-23X19:40:07Z",
            "+2026-11-23T19:40:07Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_models_timestamps_deserialize_with_it() {
        #[derive(serde::Deserialize)]
        struct Row {
            #[serde(deserialize_with = "de::one")]
            at: DateTime<Utc>,
            #[serde(default, deserialize_with = "de::option")]
            maybe: Option<DateTime<Utc>>,
            #[serde(default, deserialize_with = "de::option")]
            missing: Option<DateTime<Utc>>,
            #[serde(deserialize_with = "de::list")]
            all: Vec<DateTime<Utc>>,
        }
        let row: Row = serde_json::from_str(
            r#"{"at":"2026-11-23T19:40:07Z","maybe":null,"all":["2026-11-23T19:40:07.5Z"]}"#,
        )
        .unwrap();
        assert_eq!(format_utc(&row.at), "2026-11-23 19:40:07 UTC");
        assert_eq!((row.maybe, row.missing, row.all.len()), (None, None, 1));
        let err = serde_json::from_str::<Row>(r#"{"at":"yesterday","all":[]}"#).err();
        assert!(err
            .unwrap()
            .to_string()
            .contains("`yesterday` is not an RFC 3339"));
    }

    #[test]
    fn times_read_in_a_zone_and_as_time_ago() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T19:40:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_in_offset(&t, 0), "2026-11-23 19:40:07 UTC");
        assert_eq!(format_in_offset(&t, 60), "2026-11-23 20:40:07 UTC+01:00");
        assert_eq!(format_in_offset(&t, -330), "2026-11-23 14:10:07 UTC-05:30");
        assert_eq!(format_utc(&t), "2026-11-23 19:40:07 UTC");
        assert_eq!(format_utc_minutes(&t), "2026-11-23 19:40");
        // A zone that moves the date, and the year's first days.
        let t = DateTime::parse_from_rfc3339("2027-01-01T02:05:09.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_in_offset(&t, -180), "2026-12-31 23:05:09 UTC-03:00");
        assert_eq!(format_in_offset(&t, 840), "2027-01-01 16:05:09 UTC+14:00");
        // The same text as chrono's own formatting, which this replaced.
        for (t, offset) in [(t, 345), (t, -570), (t, 0)] {
            let zone = FixedOffset::east_opt(offset * 60).unwrap();
            let chrono_text = if offset == 0 {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            } else {
                t.with_timezone(&zone)
                    .format("%Y-%m-%d %H:%M:%S UTC%:z")
                    .to_string()
            };
            assert_eq!(format_in_offset(&t, offset), chrono_text);
            assert_eq!(
                format_utc_minutes(&t),
                t.format("%Y-%m-%d %H:%M").to_string()
            );
        }
        assert_eq!(format_ago(-3), "just now");
        assert_eq!(format_ago(42), "42 s ago");
        assert_eq!(format_ago(187), "3 min ago");
        assert_eq!(format_ago(7_500), "2 h ago");
        assert_eq!(format_ago(90_000), "1 day ago");
        assert_eq!(format_ago(5 * 86_400), "5 days ago");
    }
}
