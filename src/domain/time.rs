//! The engine's clock and the SPEC's timestamp format: UTC, stored truncated to milliseconds,
//! written as RFC 3339 with exactly three fractional digits and `Z`, from
//! 1970-01-01T00:00:00.000Z to 9999-12-31T23:59:59.999Z.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};

/// Now, truncated to milliseconds (what is stored and what the API shows).
pub fn now() -> NaiveDateTime {
    truncate_ms(Utc::now().naive_utc())
}

/// Now, to the clock's full precision: for timers, which must not fire before a deadline.
pub fn now_precise() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Drops the sub-millisecond digits, towards the past. Works on the field rather than on a
/// nanosecond timestamp, which overflows an `i64` after 2262.
pub fn truncate_ms(at: NaiveDateTime) -> NaiveDateTime {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 1_000_000).unwrap_or(at)
}

/// `2026-11-26T12:00:00.123Z`
pub fn format(at: &NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The first and last instants the SPEC accepts (and that print as four-digit years).
fn range() -> Option<(NaiveDateTime, NaiveDateTime)> {
    let first = NaiveDate::from_ymd_opt(1970, 1, 1)?.and_hms_milli_opt(0, 0, 0, 0)?;
    let last = NaiveDate::from_ymd_opt(9999, 12, 31)?.and_hms_milli_opt(23, 59, 59, 999)?;
    Some((first, last))
}

/// Parses an input timestamp, which must carry an offset, and normalises it to UTC
/// milliseconds. A 60th second (a leap second, which chrono would keep) and an instant outside
/// 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z after normalising are refused. The range is
/// checked on the stored, truncated value, so `9999-12-31T23:59:59.9999Z` is stored as
/// `.999` and accepted while `1969-12-31T23:59:59.9999Z` is not: the accepted instants are
/// exactly those from 1970 to 9999 in UTC.
pub fn parse(text: &str) -> Result<NaiveDateTime, String> {
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp with an offset: {e}"))?;
    // chrono keeps a leap second as a nanosecond field of 1_000_000_000 or more.
    if at.nanosecond() >= 1_000_000_000 {
        return Err(format!("{text:?} has a 60th second"));
    }
    let utc = truncate_ms(at.with_timezone(&Utc).naive_utc());
    match range() {
        Some((first, last)) if (first..=last).contains(&utc) => Ok(utc),
        _ => Err(format!(
            "{text:?} is outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z"
        )),
    }
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
    fn accepts_only_instants_from_1970_to_9999_in_utc() {
        for ok in [
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.000Z",
            "1970-01-01T01:00:00+01:00",
            "1969-12-31T23:00:00-01:00",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999999999Z",
            "9999-12-31T23:59:59+00:00",
            "9999-12-31T23:59:59.999-00:00",
            "1969-12-31T23:59:00-00:01",
        ] {
            assert!(parse(ok).is_ok(), "{ok} refused: {:?}", parse(ok));
        }
        for bad in [
            "1969-12-31T23:59:59.999Z",
            "1969-12-31T23:59:59.9999Z",
            "1969-12-31T23:59:59.999999999Z",
            "1970-01-01T00:59:59+01:00",
            "1970-01-01T00:00:00+00:01",
            "0000-01-01T00:00:00+23:59",
            "0001-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-00:01",
            "9999-12-31T00:01:00-23:59",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted as {:?}", parse(bad));
        }
        assert_eq!(
            format(&parse("1970-01-01T00:00:00Z").unwrap()),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format(&parse("9999-12-31T23:59:59.999Z").unwrap()),
            "9999-12-31T23:59:59.999Z"
        );
    }

    /// The range bounds what is stored, and what is stored is truncated to milliseconds: an
    /// input past `.999` of the last second of 9999 is stored as `.999` and accepted, so the
    /// accepted instants are exactly [1970-01-01T00:00:00Z, 10000-01-01T00:00:00Z).
    #[test]
    fn sub_millisecond_digits_are_truncated_before_the_range_check() {
        let last = parse("9999-12-31T23:59:59.999Z").unwrap();
        assert_eq!(parse("9999-12-31T23:59:59.9999Z").unwrap(), last);
        assert_eq!(parse("9999-12-31T23:59:59.999999999Z").unwrap(), last);
        // Truncation also holds past 2262, where nanosecond timestamps overflow an i64.
        let far = parse("2300-01-01T00:00:00.123456Z").unwrap();
        assert_eq!(far, parse("2300-01-01T00:00:00.123Z").unwrap());
        assert_eq!(format(&far), "2300-01-01T00:00:00.123Z");
    }

    #[test]
    fn rejects_a_sixtieth_second() {
        for bad in [
            "2026-06-30T23:59:60Z",
            "2026-06-30T23:59:60.000Z",
            "2026-06-30T23:59:60.999Z",
            "2026-07-01T08:59:60+09:00",
            "2026-11-26T12:34:60Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted as {:?}", parse(bad));
        }
        assert!(parse("2026-06-30T23:59:59.999Z").is_ok());
        assert!(parse("2026-07-01T00:00:00Z").is_ok());
    }

    #[test]
    fn rejects_timestamps_without_offset() {
        assert!(parse("2026-11-26T12:00:00").is_err());
        assert!(parse("yesterday").is_err());
    }
}
