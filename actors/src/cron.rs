//! Schedules of `kind = "cron"` triggers: parsing, the next slot in a time
//! zone, and the misfire policies. Pure: the current time always comes in as
//! an argument, so every rule here is tested with fake time.
//!
//! A schedule is a 5-field cron expression (`minute hour day-of-month month
//! day-of-week`, with `*`, `a`, `a-b`, `*/n`, `a-b/n`, lists, and month and
//! weekday names), or `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`,
//! `@yearly`/`@annually`, or `@every <n><s|m|h|d>`.
//!
//! A **slot** is the instant (Unix milliseconds) a run is due; it is what the
//! log deduplicates on, so every node computes the same slots:
//!
//! - `@every` slots are multiples of the period since the Unix epoch (time
//!   zone independent).
//! - Cron slots are wall-clock times in the trigger's time zone. Across a DST
//!   gap (clocks jump forward) every wall-clock time inside the gap maps to the
//!   instant of the jump, so a job due in the skipped hour runs once, right
//!   after it. Across a fold (clocks go back) a wall-clock time that happens
//!   twice runs once, at its first occurrence. Day-of-month and day-of-week
//!   follow Vixie cron: when both are restricted, either one matching is enough.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// The shortest `@every` period.
pub const EVERY_MIN_MS: i64 = 1_000;
/// The longest `@every` period (a year).
pub const EVERY_MAX_MS: i64 = 366 * 24 * 3_600_000;
/// How far ahead the next cron slot is searched; a schedule with no slot in
/// this many days (e.g. `0 0 30 2 *`) is refused when parsed.
const SEARCH_DAYS_MAX: u32 = 4 * 366 + 1;
/// At most this many slots are counted as skipped (the count is only
/// reported; a long outage of an `@every 1s` trigger must not loop for ever).
pub const SKIPPED_COUNT_MAX: u64 = 100_000;

/// A parsed schedule with its time zone.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("kind", &self.kind)
            .field("tz", &self.tz.iana_name())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Every { period_ms: i64 },
    Cron(Fields),
}

/// Each field as a bit set of the values it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month / day-of-week was `*` (Vixie cron's rule).
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// What is wrong with a schedule, for the deploy error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("schedule {expr:?}: {reason}")]
    Schedule { expr: String, reason: String },
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Berlin\" or \"UTC\")")]
    TimeZone(String),
}

/// How missed slots are handled when the scheduler comes back (a new leader,
/// a restart after downtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfire {
    /// Missed slots are dropped; the schedule resumes with the next slot.
    Skip,
    /// One catch-up run (the latest missed slot), then the schedule resumes.
    FireOnce,
}

impl Misfire {
    pub fn parse(text: &str) -> Option<Misfire> {
        match text {
            "skip" => Some(Misfire::Skip),
            "fire_once" => Some(Misfire::FireOnce),
            _ => None,
        }
    }
}

/// The slots to fire now, in order, and how many were skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub fire: Vec<i64>,
    pub skipped: u64,
}

impl Schedule {
    /// Parses `expr` in the IANA time zone `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, CronError> {
        let tz = TimeZone::get(timezone).map_err(|_| CronError::TimeZone(timezone.to_string()))?;
        let bad = |reason: String| CronError::Schedule {
            expr: expr.to_string(),
            reason,
        };
        let text = expr.trim();
        let kind = if let Some(period) = text.strip_prefix("@every") {
            Kind::Every {
                period_ms: parse_period(period.trim()).map_err(bad)?,
            }
        } else if let Some(name) = text.strip_prefix('@') {
            let fields = match name {
                "hourly" => "0 * * * *",
                "daily" | "midnight" => "0 0 * * *",
                "weekly" => "0 0 * * 0",
                "monthly" => "0 0 1 * *",
                "yearly" | "annually" => "0 0 1 1 *",
                _ => return Err(bad(format!("unknown shorthand @{name}"))),
            };
            Kind::Cron(parse_fields(fields).map_err(bad)?)
        } else {
            Kind::Cron(parse_fields(text).map_err(bad)?)
        };
        let schedule = Schedule { kind, tz };
        if let Kind::Cron(fields) = &schedule.kind
            && !fields.has_any_day()
        {
            return Err(bad("no date ever matches".into()));
        }
        Ok(schedule)
    }

    /// The first slot strictly after `after_ms`; `None` only when there is
    /// none within the search horizon (or past the end of time).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match &self.kind {
            Kind::Every { period_ms } => {
                let next = after_ms.div_euclid(*period_ms).checked_add(1)?;
                next.checked_mul(*period_ms)
            }
            Kind::Cron(fields) => self.next_cron(fields, after_ms),
        }
    }

    fn next_cron(&self, fields: &Fields, after_ms: i64) -> Option<i64> {
        let after = Timestamp::from_millisecond(after_ms).ok()?;
        // Start at the wall-clock minute containing `after`: in a fold its
        // first occurrence may already be past, which the check below skips.
        let start = self.tz.to_datetime(after);
        let mut day = start.date();
        let mut from_minute = u32::from(start.hour() as u8) * 60 + u32::from(start.minute() as u8);
        for _ in 0..SEARCH_DAYS_MAX {
            if fields.matches_day(day) {
                for minute_of_day in from_minute..24 * 60 {
                    let (hour, minute) = (minute_of_day / 60, minute_of_day % 60);
                    if fields.hours & (1 << hour) == 0 {
                        continue;
                    }
                    if fields.minutes & (1 << minute) == 0 {
                        continue;
                    }
                    let wall = day.at(hour as i8, minute as i8, 0, 0);
                    if let Some(slot) = self.instant_of(wall)
                        && slot > after_ms
                    {
                        return Some(slot);
                    }
                }
            }
            day = day.tomorrow().ok()?;
            from_minute = 0;
        }
        None
    }

    /// The instant a wall-clock time stands for: itself when unambiguous, the
    /// first occurrence in a fold, the jump's instant in a gap.
    fn instant_of(&self, wall: DateTime) -> Option<i64> {
        let ambiguous = self.tz.to_ambiguous_timestamp(wall);
        match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
                ambiguous.earlier().ok().map(Timestamp::as_millisecond)
            }
            AmbiguousOffset::Gap { after, .. } => {
                // Read with the later offset, the wall time lies before the
                // jump; the jump is the next transition from there.
                let before_jump = after.to_timestamp(wall).ok()?;
                self.tz
                    .following(before_jump)
                    .next()
                    .map(|transition| transition.timestamp().as_millisecond())
            }
        }
    }

    /// The slots to fire at `now_ms`, given the last slot fired (`last_ms`;
    /// for a trigger that never fired, the time it was deployed). A slot more
    /// than `grace_ms` old is *missed*; newer ones are on time and always
    /// fire. Missed ones follow `misfire`.
    pub fn due(&self, last_ms: i64, now_ms: i64, grace_ms: i64, misfire: Misfire) -> Due {
        let mut fire = Vec::new();
        let mut missed = 0u64;
        let mut latest_missed = None;
        let mut cursor = last_ms;
        while let Some(slot) = self.next_after(cursor) {
            if slot > now_ms {
                break;
            }
            if now_ms - slot > grace_ms {
                missed += 1;
                latest_missed = Some(slot);
                if missed >= SKIPPED_COUNT_MAX {
                    // Jump ahead: count no further, resume near `now`.
                    cursor = now_ms - grace_ms - 1;
                    continue;
                }
            } else {
                fire.push(slot);
            }
            cursor = slot;
        }
        match (misfire, latest_missed) {
            (Misfire::FireOnce, Some(slot)) => {
                fire.insert(0, slot);
                Due {
                    fire,
                    skipped: missed - 1,
                }
            }
            _ => Due {
                fire,
                skipped: missed,
            },
        }
    }
}

fn parse_period(text: &str) -> Result<i64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("@every needs a unit (s, m, h or d): {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("@every needs a number and a unit, e.g. 30s: {text:?}"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?} (use s, m, h or d)")),
    };
    let period = number
        .checked_mul(unit_ms)
        .filter(|p| (EVERY_MIN_MS..=EVERY_MAX_MS).contains(p))
        .ok_or_else(|| {
            format!(
                "@every must be between {}s and {} days",
                EVERY_MIN_MS / 1000,
                EVERY_MAX_MS / 86_400_000
            )
        })?;
    Ok(period)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_fields(text: &str) -> Result<Fields, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = parts[..] else {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
            parts.len()
        ));
    };
    let weekdays = parse_field(weekday, "day-of-week", 0, 7, &WEEKDAYS)?;
    // 7 is Sunday too.
    let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
    Ok(Fields {
        minutes: parse_field(minute, "minute", 0, 59, &[])?,
        hours: parse_field(hour, "hour", 0, 23, &[])? as u32,
        days: parse_field(day, "day-of-month", 1, 31, &[])? as u32,
        months: (parse_field(month, "month", 1, 12, &MONTHS)? >> 1) as u16,
        weekdays: weekdays as u8,
        days_restricted: !day.starts_with('*'),
        weekdays_restricted: !weekday.starts_with('*'),
    })
}

/// One field as a bit set (bit `v` for value `v`). `names[i]` stands for the
/// value `min + i` (month names start at 1, weekday names at 0).
fn parse_field(text: &str, field: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let bad = |why: &str| format!("{field} field {text:?}: {why}");
    let value = |part: &str| -> Result<u32, String> {
        let lower = part.to_ascii_lowercase();
        if let Some(index) = names.iter().position(|name| *name == lower) {
            return Ok(min + index as u32);
        }
        let value: u32 = part
            .parse()
            .map_err(|_| bad(&format!("{part:?} is not a number")))?;
        if value < min || value > max {
            return Err(bad(&format!("{value} is outside {min}-{max}")));
        }
        Ok(value)
    };
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s >= 1 && *s <= max.max(1))
                    .ok_or_else(|| bad(&format!("step {step:?} must be 1-{max}")))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low)?, value(high)?)
        } else {
            let start = value(range)?;
            // `a/n` means from a to the end, stepping n.
            (start, if step > 1 { max } else { start })
        };
        if low > high {
            return Err(bad(&format!("range {low}-{high} is backwards")));
        }
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step;
        }
    }
    if set == 0 {
        return Err(bad("matches nothing"));
    }
    Ok(set)
}

impl Fields {
    fn matches_day(&self, date: Date) -> bool {
        if self.months & (1 << (date.month() - 1)) == 0 {
            return false;
        }
        let day = self.days & (1 << date.day()) != 0;
        let weekday = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            (true, false) => day,
            (false, true) => weekday,
            (false, false) => true,
        }
    }

    /// Whether some date (in a leap year, any month allowed) ever matches.
    fn has_any_day(&self) -> bool {
        // Every weekday occurs in every month.
        if self.weekdays_restricted {
            return true;
        }
        const DAYS_IN_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (0..12).any(|month| {
            self.months & (1 << month) != 0
                && (1..=DAYS_IN_MONTH[month]).any(|day| self.days & (1 << day) != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<Timestamp>()
            .expect("timestamp")
            .as_millisecond()
    }

    fn utc(slot: i64) -> String {
        Timestamp::from_millisecond(slot).expect("ts").to_string()
    }

    fn slots(schedule: &Schedule, from: &str, count: usize) -> Vec<String> {
        let mut cursor = ms(from);
        (0..count)
            .map(|_| {
                cursor = schedule.next_after(cursor).expect("a next slot");
                utc(cursor)
            })
            .collect()
    }

    #[test]
    fn parses_fields_lists_ranges_steps_and_names() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri", "UTC").expect("parse");
        // Friday 2026-11-27 17:50 UTC → next is Monday 09:00.
        assert_eq!(
            slots(&s, "2026-11-27T17:50:00Z", 2),
            ["2026-11-30T09:00:00Z", "2026-11-30T09:15:00Z"]
        );
        let s = Schedule::parse("0,30 12 1 jan,JUL *", "UTC").expect("parse");
        assert_eq!(
            slots(&s, "2026-06-01T00:00:00Z", 3),
            [
                "2026-07-01T12:00:00Z",
                "2026-07-01T12:30:00Z",
                "2027-01-01T12:00:00Z"
            ]
        );
        // `5/20` = 5, 25, 45; Sunday as 7.
        let s = Schedule::parse("5/20 0 * * 7", "UTC").expect("parse");
        assert_eq!(
            slots(&s, "2026-11-28T12:00:00Z", 4),
            [
                "2026-11-29T00:05:00Z",
                "2026-11-29T00:25:00Z",
                "2026-11-29T00:45:00Z",
                "2026-12-06T00:05:00Z"
            ]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        // The 13th, or any Friday.
        let s = Schedule::parse("0 0 13 * 5", "UTC").expect("parse");
        assert_eq!(
            slots(&s, "2026-11-01T00:00:00Z", 3),
            [
                "2026-11-06T00:00:00Z",
                "2026-11-13T00:00:00Z",
                "2026-11-20T00:00:00Z"
            ]
        );
    }

    #[test]
    fn shorthands_and_every() {
        let hourly = Schedule::parse("@hourly", "UTC").expect("parse");
        assert_eq!(
            slots(&hourly, "2026-11-28T10:00:00Z", 1),
            ["2026-11-28T11:00:00Z"]
        );
        let daily = Schedule::parse("@daily", "Europe/Berlin").expect("parse");
        assert_eq!(
            slots(&daily, "2026-11-28T10:00:00Z", 1),
            ["2026-11-28T23:00:00Z"],
            "midnight in Berlin (CET, +01:00)"
        );
        let every = Schedule::parse("@every 30s", "UTC").expect("parse");
        assert_eq!(every.next_after(0), Some(30_000));
        assert_eq!(every.next_after(29_999), Some(30_000));
        assert_eq!(every.next_after(30_000), Some(60_000));
        let every = Schedule::parse("@every 1s", "UTC").expect("parse");
        assert_eq!(every.next_after(1_500), Some(2_000));
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        let error = |expr: &str| Schedule::parse(expr, "UTC").expect_err(expr).to_string();
        assert!(error("* * * *").contains("expected 5 fields"));
        assert!(error("60 * * * *").contains("minute field \"60\": 60 is outside 0-59"));
        assert!(error("* * * foo *").contains("\"foo\" is not a number"));
        assert!(error("*/0 * * * *").contains("step"));
        assert!(error("5-1 * * * *").contains("backwards"));
        assert!(error("0 0 30 2 *").contains("no date ever matches"));
        assert!(error("@every 500ms").contains("unknown unit"));
        assert!(error("@every 0s").contains("between"));
        assert!(error("@every").contains("needs a unit"));
        assert!(error("@fortnightly").contains("unknown shorthand"));
        assert_eq!(
            Schedule::parse("@daily", "Mars/Olympus").expect_err("tz"),
            CronError::TimeZone("Mars/Olympus".into())
        );
        // February 29th exists (leap years).
        assert!(Schedule::parse("0 0 29 2 *", "UTC").is_ok());
    }

    #[test]
    fn a_dst_gap_runs_skipped_times_once_at_the_jump() {
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let s = Schedule::parse("*/30 * * * *", "Europe/Berlin").expect("parse");
        assert_eq!(
            slots(&s, "2026-03-29T00:10:00Z", 4),
            [
                "2026-03-29T00:30:00Z", // 01:30 CET
                "2026-03-29T01:00:00Z", // 02:00 and 02:30 (skipped) → the jump, once
                "2026-03-29T01:30:00Z", // 03:30 CEST
                "2026-03-29T02:00:00Z", // 04:00 CEST
            ]
        );
        // A job at 02:30 local runs at the jump on that day only.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("parse");
        assert_eq!(
            slots(&s, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z"
            ]
        );
    }

    #[test]
    fn a_dst_fold_runs_each_wall_clock_time_once() {
        // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00 UTC);
        // 02:00-03:00 local happens twice.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("parse");
        assert_eq!(
            slots(&s, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            "02:30 CEST (first occurrence) only, then 02:30 CET the next day"
        );
        let s = Schedule::parse("0 * * * *", "Europe/Berlin").expect("parse");
        assert_eq!(
            slots(&s, "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                // 02:00 CET (01:00 UTC) is the same wall time again: not repeated.
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T03:00:00Z",
                "2026-10-25T04:00:00Z",
            ]
        );
        // Asked from inside the second occurrence, the next slot is after it.
        assert_eq!(
            s.next_after(ms("2026-10-25T01:10:00Z")).map(utc),
            Some("2026-10-25T02:00:00Z".to_string())
        );
    }

    #[test]
    fn misfire_skip_drops_missed_slots_and_fires_on_time_ones() {
        let s = Schedule::parse("@every 1s", "UTC").expect("parse");
        // Last fired at 10 s; the scheduler is back at 14.3 s with 1 s grace:
        // 11, 12 and 13... 13 is 1.3 s old (missed), 14 is on time.
        let due = s.due(10_000, 14_300, 1_000, Misfire::Skip);
        assert_eq!(
            due,
            Due {
                fire: vec![14_000],
                skipped: 3
            }
        );
        // On time, nothing missed.
        let due = s.due(13_000, 14_001, 1_000, Misfire::Skip);
        assert_eq!(
            due,
            Due {
                fire: vec![14_000],
                skipped: 0
            }
        );
        // Nothing due yet.
        assert_eq!(
            s.due(14_000, 14_999, 1_000, Misfire::Skip),
            Due {
                fire: vec![],
                skipped: 0
            }
        );
    }

    #[test]
    fn misfire_fire_once_adds_one_catch_up_run() {
        let s = Schedule::parse("@every 1s", "UTC").expect("parse");
        let due = s.due(10_000, 14_300, 1_000, Misfire::FireOnce);
        assert_eq!(
            due,
            Due {
                fire: vec![13_000, 14_000],
                skipped: 2
            }
        );
        // A daily job down for three days: one catch-up run, the latest.
        let s = Schedule::parse("0 6 * * *", "UTC").expect("parse");
        let due = s.due(
            ms("2026-11-20T06:00:00Z"),
            ms("2026-11-23T12:00:00Z"),
            1_000,
            Misfire::FireOnce,
        );
        assert_eq!(
            due.fire.into_iter().map(utc).collect::<Vec<_>>(),
            ["2026-11-23T06:00:00Z"]
        );
        assert_eq!(due.skipped, 2);
    }

    #[test]
    fn a_long_outage_is_counted_up_to_a_bound() {
        let s = Schedule::parse("@every 1s", "UTC").expect("parse");
        let day = 86_400_000;
        let due = s.due(0, 30 * day + 300, 1_000, Misfire::Skip);
        assert_eq!(due.fire, vec![30 * day]);
        assert!(due.skipped >= SKIPPED_COUNT_MAX - 1, "{}", due.skipped);
    }
}
