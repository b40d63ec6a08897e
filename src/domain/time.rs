//! The engine's clock and the SPEC's timestamp format: UTC, stored truncated to milliseconds,
//! written as RFC 3339 with exactly three fractional digits and `Z`.

use chrono::{DateTime, DurationRound, NaiveDateTime, TimeDelta, Utc};

/// Now, truncated to milliseconds (what is stored and what the API shows).
pub fn now() -> NaiveDateTime {
    truncate_ms(Utc::now().naive_utc())
}

/// Now, to the clock's full precision: for timers, which must not fire before a deadline.
pub fn now_precise() -> NaiveDateTime {
    Utc::now().naive_utc()
}

pub fn truncate_ms(at: NaiveDateTime) -> NaiveDateTime {
    at.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(at)
}

/// `2026-11-26T12:00:00.123Z`
pub fn format(at: &NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an input timestamp, which must carry an offset, and normalises it to UTC
/// milliseconds.
pub fn parse(text: &str) -> Result<NaiveDateTime, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| truncate_ms(at.with_timezone(&Utc).naive_utc()))
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp with an offset: {e}"))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: &NaiveDateTime) -> i64 {
    at.and_utc().timestamp_millis()
}

/// serde helpers for `#[serde(with = "...")]` on API objects.
pub mod serde_ts {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

pub mod serde_ts_opt {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&super::format(at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => super::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_three_fractional_digits_in_utc() {
        let at = parse("2026-11-26T13:00:00.123456+01:00").unwrap();
        assert_eq!(format(&at), "2026-11-26T12:00:00.123Z");
        let whole = parse("2026-11-26T12:00:00Z").unwrap();
        assert_eq!(format(&whole), "2026-11-26T12:00:00.000Z");
    }

    #[test]
    fn rejects_timestamps_without_offset() {
        assert!(parse("2026-11-26T12:00:00").is_err());
        assert!(parse("yesterday").is_err());
    }
}
