//! When a `[[schedules]]` entry is due (SPEC "Schedules and webhooks"): a five-field cron
//! pattern in an IANA time zone, every N seconds counted from the Unix epoch, or once at an
//! instant. Pure: the scheduler (`crate::schedules`) and the claim (`crate::db::schedules`)
//! ask it for due times around the instant they are given, so tests drive it with any clock.
//!
//! All instants are UTC milliseconds, as the engine stores them ([`super::time`]).

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A schedule's name: 1-64 letters, digits, `_`, `-` or `.` (it is part of its runs'
/// `webhook-id`s and of the dashboard's URLs).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// One schedule's due times.
#[derive(Clone)]
pub enum Timing {
    /// A five-field cron pattern (minute hour day-of-month month day-of-week) read in `zone`:
    /// a local time skipped by a DST change runs at the end of the gap, a local time that
    /// occurs twice runs once, at its first occurrence (croner's OCPS rules).
    Cron {
        cron: Box<Cron>,
        pattern: String,
        zone: chrono_tz::Tz,
    },
    /// Every `secs` seconds from 1970-01-01T00:00:00Z: `every_secs = 3600` is due on the hour.
    Every { secs: u64 },
    /// Once.
    At(NaiveDateTime),
}

impl Timing {
    /// A five-field pattern (no seconds, no year; `@daily` and the other nicknames are taken)
    /// in the IANA zone named `zone`.
    pub fn cron(pattern: &str, zone: &str) -> Result<Timing, String> {
        let zone: chrono_tz::Tz = zone
            .parse()
            .map_err(|_| format!("{zone:?} is not an IANA time zone name"))?;
        let fields = pattern.split_whitespace().count();
        if fields != 5 && !pattern.trim_start().starts_with('@') {
            return Err(format!(
                "{pattern:?} is not a five-field cron pattern (minute hour day-of-month month \
                 day-of-week), it has {fields} fields"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| format!("{pattern:?} is not a cron pattern: {e}"))?;
        // A pattern that never matches (`0 0 30 2 *`) would leave the schedule without a due
        // time; say so now rather than never run.
        let probe = Utc::now().with_timezone(&zone);
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| format!("{pattern:?} never comes due: {e}"))?;
        Ok(Timing::Cron {
            cron: Box::new(cron),
            pattern: pattern.split_whitespace().collect::<Vec<_>>().join(" "),
            zone,
        })
    }

    /// The first due time strictly after `t`; `None` when there is none (an `at` that has
    /// passed, or a cron pattern with no later match).
    pub fn first_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            Timing::Cron { cron, zone, .. } => {
                let local = t.and_utc().with_timezone(zone);
                let next = cron.find_next_occurrence(&local, false).ok()?;
                Some(next.with_timezone(&Utc).naive_utc())
            }
            Timing::Every { secs } => {
                let period = period_ms(*secs);
                let ms = t.and_utc().timestamp_millis();
                let next = (ms.div_euclid(period) + 1).checked_mul(period)?;
                DateTime::from_timestamp_millis(next).map(|at| at.naive_utc())
            }
            Timing::At(at) => (*at > t).then_some(*at),
        }
    }

    /// The latest due time at or before `t`: where runs missed while every process was down
    /// collapse to.
    pub fn latest_at_or_before(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        match self {
            Timing::Cron { cron, zone, .. } => {
                let local = t.and_utc().with_timezone(zone);
                let previous = cron.find_previous_occurrence(&local, true).ok()?;
                Some(previous.with_timezone(&Utc).naive_utc())
            }
            Timing::Every { secs } => {
                let period = period_ms(*secs);
                let ms = t.and_utc().timestamp_millis();
                DateTime::from_timestamp_millis(ms.div_euclid(period) * period)
                    .map(|at| at.naive_utc())
            }
            Timing::At(at) => (*at <= t).then_some(*at),
        }
    }

    /// The due time a run claimed at `now` is for, given the earliest unclaimed one
    /// (`next`): `next` itself while it is less than `misfire` old, else the latest due time
    /// at or before `now` (missed runs collapse into one). `None` when nothing is due.
    pub fn due(
        &self,
        next: NaiveDateTime,
        now: NaiveDateTime,
        misfire: TimeDelta,
    ) -> Option<NaiveDateTime> {
        if next > now {
            return None;
        }
        if now - next < misfire {
            return Some(next);
        }
        Some(
            self.latest_at_or_before(now)
                .map_or(next, |latest| latest.max(next)),
        )
    }
}

fn period_ms(secs: u64) -> i64 {
    i64::try_from(secs.max(1))
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// How the schedule is shown (`GET /admin/schedules`' `schedule`) and stored: a change of it
/// re-plans the schedule's next due time.
impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timing::Cron { pattern, zone, .. } => write!(f, "cron {pattern} {}", zone.name()),
            Timing::Every { secs } => write!(f, "every {secs}s"),
            Timing::At(at) => write!(f, "at {}", super::time::format(at)),
        }
    }
}

impl fmt::Debug for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse;

    fn at(text: &str) -> NaiveDateTime {
        parse(text).unwrap()
    }

    #[test]
    fn every_counts_from_the_epoch() {
        let every = Timing::Every { secs: 60 };
        let t = at("2026-12-03T10:00:30.500Z");
        assert_eq!(every.first_after(t), Some(at("2026-12-03T10:01:00Z")));
        assert_eq!(
            every.latest_at_or_before(t),
            Some(at("2026-12-03T10:00:00Z"))
        );
        let on = at("2026-12-03T10:01:00Z");
        assert_eq!(every.first_after(on), Some(at("2026-12-03T10:02:00Z")));
        assert_eq!(every.latest_at_or_before(on), Some(on));
        assert_eq!(every.to_string(), "every 60s");
    }

    #[test]
    fn at_is_due_once() {
        let once = Timing::At(at("2026-12-03T10:00:00Z"));
        assert_eq!(
            once.first_after(at("2026-12-03T09:59:59.999Z")),
            Some(at("2026-12-03T10:00:00Z"))
        );
        assert_eq!(once.first_after(at("2026-12-03T10:00:00Z")), None);
        assert_eq!(
            once.latest_at_or_before(at("2026-12-03T09:59:59.999Z")),
            None
        );
        assert_eq!(
            once.latest_at_or_before(at("2027-01-01T00:00:00Z")),
            Some(at("2026-12-03T10:00:00Z"))
        );
        assert_eq!(once.to_string(), "at 2026-12-03T10:00:00.000Z");
    }

    #[test]
    fn cron_in_a_zone_east_of_utc_crosses_the_day_boundary() {
        // Midnight in Shanghai (UTC+8) is 16:00 UTC of the day before.
        let daily = Timing::cron("0 0 * * *", "Asia/Shanghai").unwrap();
        assert_eq!(
            daily.first_after(at("2026-12-03T15:59:59.999Z")),
            Some(at("2026-12-03T16:00:00Z"))
        );
        assert_eq!(
            daily.first_after(at("2026-12-03T16:00:00Z")),
            Some(at("2026-12-04T16:00:00Z"))
        );
        assert_eq!(
            daily.latest_at_or_before(at("2026-12-04T15:59:00Z")),
            Some(at("2026-12-03T16:00:00Z"))
        );
        // Mondays in Shanghai: 2026-12-07 is a Monday there, still Sunday in UTC.
        let mondays = Timing::cron("30 0 * * MON", "Asia/Shanghai").unwrap();
        assert_eq!(
            mondays.first_after(at("2026-12-03T00:00:00Z")),
            Some(at("2026-12-06T16:30:00Z"))
        );
        assert_eq!(daily.to_string(), "cron 0 0 * * * Asia/Shanghai");
    }

    #[test]
    fn cron_in_a_dst_gap_runs_at_its_end_and_a_repeated_time_once() {
        // New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
        let gap = Timing::cron("30 2 * * *", "America/New_York").unwrap();
        assert_eq!(
            gap.first_after(at("2026-03-07T12:00:00Z")),
            Some(at("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            gap.first_after(at("2026-03-08T07:00:00Z")),
            Some(at("2026-03-09T06:30:00Z"))
        );
        // It falls back on 2026-11-01: 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
        let repeated = Timing::cron("30 1 * * *", "America/New_York").unwrap();
        assert_eq!(
            repeated.first_after(at("2026-10-31T12:00:00Z")),
            Some(at("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            repeated.first_after(at("2026-11-01T05:30:00Z")),
            Some(at("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn bad_cron_settings_are_refused() {
        for (pattern, zone) in [
            ("0 0 * * *", "Mars/Olympus"),
            ("0 0 * *", "UTC"),
            ("0 0 0 * * *", "UTC"),
            ("61 0 * * *", "UTC"),
            ("0 0 30 2 *", "UTC"),
            ("", "UTC"),
        ] {
            assert!(Timing::cron(pattern, zone).is_err(), "{pattern:?} {zone:?}");
        }
        assert!(Timing::cron("@daily", "UTC").is_ok());
    }

    #[test]
    fn missed_due_times_collapse_into_the_latest() {
        let every = Timing::Every { secs: 10 };
        let misfire = TimeDelta::seconds(5);
        let next = at("2026-12-03T10:00:00Z");
        assert_eq!(
            every.due(next, at("2026-12-03T09:59:59.999Z"), misfire),
            None
        );
        // Late by less than the misfire threshold: that very due time.
        assert_eq!(
            every.due(next, at("2026-12-03T10:00:04Z"), misfire),
            Some(next)
        );
        // Later: one run, for the latest due time.
        assert_eq!(
            every.due(next, at("2026-12-03T10:01:35Z"), misfire),
            Some(at("2026-12-03T10:01:30Z"))
        );
        let once = Timing::At(next);
        assert_eq!(
            once.due(next, at("2026-12-04T00:00:00Z"), misfire),
            Some(next)
        );
    }
}
