//! Human units in the config file: durations (`"90s"`, `"2h"`, `"1h30m"`, or
//! whole seconds) and byte sizes (`"64MiB"`, `"10 KB"`, or whole bytes).
//! Both fail inside deserialization, so the error carries the value's line.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration read from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

/// The longest duration the config takes (100 years). A longer one is a
/// typo, and a deadline computed from it (`Instant::now() + timeout`) could
/// overflow and panic at run time.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

fn too_long(text: &str) -> String {
    format!("`{text}` is longer than 100 years, the most a duration may be")
}

/// Parses `1h30m`, `90s`, `250ms`, `7d`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return seconds(secs).ok_or_else(|| too_long(text));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: write e.g. 30s, 10m, 2h, 1h30m or 7d"
            ));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long(text))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        // N.B.: checked: the fuzz target found `018446744073709551609h` overflowing.
        let secs_per = match unit {
            "ms" => None,
            "s" | "sec" | "secs" => Some(1),
            "m" | "min" | "mins" => Some(60),
            "h" | "hour" | "hours" => Some(3_600),
            "d" | "day" | "days" => Some(86_400),
            _ => {
                return Err(format!(
                    "`{text}` has an unknown unit `{unit}`: use ms, s, m, h or d"
                ))
            }
        };
        let step = match secs_per {
            None => Some(Duration::from_millis(n)),
            Some(k) => n.checked_mul(k).and_then(seconds),
        };
        total = step
            .and_then(|step| total.checked_add(step))
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(|| too_long(text))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// `secs` seconds, if within [`MAX_DURATION`].
fn seconds(secs: u64) -> Option<Duration> {
    Some(Duration::from_secs(secs)).filter(|d| *d <= MAX_DURATION)
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"10m\", \"2h\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                let secs =
                    u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(secs)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                seconds(v)
                    .map(ConfigDuration)
                    .ok_or_else(|| E::custom(too_long(&v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size read from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Parses `64MiB`, `10 KB`, `512k`, `1GiB`; a bare number means bytes.
/// K/M/G mean powers of 1024, as operators expect for log sizes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split]
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write e.g. 65536, 64KiB or 64MiB"))?;
    let mult: u64 = match t[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}` has an unknown unit `{other}`: use KiB, MiB or GiB"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_bytes(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("2 h"), Ok(Duration::from_secs(7_200)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn a_duration_too_long_to_use_is_refused_not_wrapped_or_panicking() {
        // Found by the config fuzz target: the multiplication overflowed.
        let e = parse_duration("018446744073709551609h30m").unwrap_err();
        assert!(e.contains("longer than 100 years"), "{e}");
        assert!(parse_duration("18446744073709551615s1s").is_err());
        assert!(parse_duration("18446744073709551615").is_err());
        assert!(parse_duration("99999999999999999999ms").is_err());
        assert!(parse_duration("36501d").is_err());
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
    }

    #[test]
    fn sizes_use_binary_multiples() {
        assert_eq!(parse_bytes("65536"), Ok(65_536));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
