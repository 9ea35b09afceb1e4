//! Time windows: the `time` leaf of a `when` condition (POLICY.md,
//! "Conditions"), and the calendar arithmetic it and the CLI's `--at` need.
//!
//! A window is days of the week and a span of hours on the clock of one
//! *fixed* UTC offset. There is no time-zone database in a Wasm filter (and
//! none should decide a security policy from whatever the host happens to
//! ship), so a place with daylight saving time needs two policies or a
//! window wide enough for both offsets.
//!
//! Hours are half-open, `[start, end)`, in whole minutes. A window whose end
//! is not after its start (`22:00-06:00`) wraps past midnight, and its `days`
//! name the day it *opens*: `fri 22:00-06:00` runs from Friday 22:00 to
//! Saturday 06:00, and Saturday 05:59 is inside it while Friday 05:59 is not.
//!
//! Time is the request's, given by the caller of the decision (the filter
//! reads the host clock when it decides, the CLI takes `--at`), so a window
//! is a pure function of that instant and the tests are deterministic.

use crate::config::{
    index, keyword_at, keyword_list, keywords, type_name, Errors, Keyword, ObjReader,
};
use serde_json::Value;

const MINUTE_MS: i128 = 60_000;
const DAY_MINUTES: u16 = 24 * 60;
const DAY_MS: i128 = DAY_MINUTES as i128 * MINUTE_MS;
/// The widest offset in use anywhere (Kiribati, +14:00; the lowest is
/// −12:00). Anything beyond is a typo, not a place.
const MAX_OFFSET_MINUTES: u16 = 14 * 60;

/// A day of the week, as a policy spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

keywords!(Weekday {
    Mon => "mon",
    Tue => "tue",
    Wed => "wed",
    Thu => "thu",
    Fri => "fri",
    Sat => "sat",
    Sun => "sun",
});

impl Weekday {
    /// Monday is 0 (ISO 8601 order).
    fn index(self) -> u8 {
        self as u8
    }

    fn from_index(i: u8) -> Weekday {
        match i % 7 {
            0 => Weekday::Mon,
            1 => Weekday::Tue,
            2 => Weekday::Wed,
            3 => Weekday::Thu,
            4 => Weekday::Fri,
            5 => Weekday::Sat,
            _ => Weekday::Sun,
        }
    }

    /// The weekday of day `days` counted from 1970-01-01, a Thursday.
    fn of_day(days: i128) -> Weekday {
        // rem_euclid keeps days before the epoch (a negative offset at the
        // epoch's first hours) on the right weekday.
        Weekday::from_index(u8::try_from((days + 3).rem_euclid(7)).unwrap_or(0))
    }

    fn before(self) -> Weekday {
        Weekday::from_index(self.index() + 6)
    }
}

/// A compiled `time` leaf: when on a fixed-offset clock a request may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    /// Bit `d` set: the window opens on weekday `d` (Monday = 0).
    days: u8,
    /// Minutes after local midnight, `[start, end)`; `end` up to 1440; a
    /// window with `end <= start` wraps into the next day.
    start: u16,
    end: u16,
    /// Minutes east of UTC.
    offset: i16,
}

/// Where a request falls on a window's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub weekday: Weekday,
    /// Minutes after local midnight.
    pub minute: u16,
    /// Days since 1970-01-01 on the local calendar (for showing the date).
    pub day: i128,
}

const ALL_DAYS: u8 = 0b111_1111;

impl TimeWindow {
    /// Compile a `time` leaf's value found at `path` (the object under the
    /// `time` key). `None` if there was any mistake, each recorded at its path.
    pub fn compile(v: &Value, path: &str, errs: &mut Errors) -> Option<TimeWindow> {
        let before = errs.0.len();
        let mut r = ObjReader::new(v, path, errs)?;
        let (has_days, has_hours) = (r.has("days"), r.has("hours"));
        let days = match r.get("days") {
            None => Some(ALL_DAYS),
            Some(d) => compile_days(d, &r.field_path("days"), errs),
        };
        let hours = match r.string("hours", errs) {
            None => Some((0, DAY_MINUTES)),
            Some(h) => parse_hours(h)
                .map_err(|m| errs.push(r.field_path("hours"), m))
                .ok(),
        };
        let offset = match r.required("utc_offset", errs) {
            None => None,
            Some(Value::String(s)) => parse_offset(s)
                .map_err(|m| errs.push(r.field_path("utc_offset"), m))
                .ok(),
            Some(other) => {
                errs.push(
                    r.field_path("utc_offset"),
                    format!(
                        "expected a string such as \"+01:00\", found {}",
                        type_name(other)
                    ),
                );
                None
            }
        };
        // A window with neither would always hold: almost certainly a
        // mistake, like an empty `all`.
        if !has_days && !has_hours {
            errs.push(path, "a time window needs days, hours or both");
        }
        r.finish(errs);
        let ((start, end), days, offset) = (hours?, days?, offset?);
        (errs.0.len() == before).then_some(TimeWindow {
            days,
            start,
            end,
            offset,
        })
    }

    /// Where `now_ms` (milliseconds since the Unix epoch, UTC) falls on this
    /// window's clock.
    pub fn local(&self, now_ms: u64) -> LocalTime {
        let local_ms = i128::from(now_ms) + i128::from(self.offset) * MINUTE_MS;
        let day = local_ms.div_euclid(DAY_MS);
        let minute = u16::try_from(local_ms.rem_euclid(DAY_MS) / MINUTE_MS).unwrap_or(0);
        LocalTime {
            weekday: Weekday::of_day(day),
            minute,
            day,
        }
    }

    /// Whether a request at `now_ms` is inside the window.
    pub fn contains(&self, now_ms: u64) -> bool {
        let t = self.local(now_ms);
        let opens_on = |d: Weekday| self.days & (1 << d.index()) != 0;
        if self.start < self.end {
            opens_on(t.weekday) && (self.start..self.end).contains(&t.minute)
        } else {
            // Wrapping: the evening part belongs to today's window, the
            // morning part to the window that opened yesterday.
            (t.minute >= self.start && opens_on(t.weekday))
                || (t.minute < self.end && opens_on(t.weekday.before()))
        }
    }

    /// `mon,tue 09:00-17:30 +01:00` (`every day`, `all day` when not given).
    pub fn describe(&self) -> String {
        let days = match self.days {
            ALL_DAYS => "every day".to_owned(),
            bits => Weekday::ALL
                .iter()
                .filter(|d| bits & (1 << d.index()) != 0)
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(","),
        };
        let hours = match (self.start, self.end) {
            (0, DAY_MINUTES) => "all day".to_owned(),
            (s, e) => format!("{}-{}", clock(s), clock(e)),
        };
        format!("{days} {hours} {}", offset_text(self.offset))
    }

    /// `2026-12-05 sat 11:00 +01:00`: a request's time as the window reads it.
    pub fn describe_time(&self, now_ms: u64) -> String {
        let t = self.local(now_ms);
        let (y, m, d) = civil_from_days(t.day);
        format!(
            "{y:04}-{m:02}-{d:02} {} {} {}",
            t.weekday.as_str(),
            clock(t.minute),
            offset_text(self.offset)
        )
    }
}

fn compile_days(v: &Value, path: &str, errs: &mut Errors) -> Option<u8> {
    let Value::Array(items) = v else {
        errs.push(
            path,
            format!(
                "expected a non-empty array of days ({}), found {}",
                keyword_list::<Weekday>(),
                type_name(v)
            ),
        );
        return None;
    };
    if items.is_empty() {
        // It would never hold: a rule that can never apply is a mistake.
        errs.push(
            path,
            format!(
                "expected a non-empty array of days ({})",
                keyword_list::<Weekday>()
            ),
        );
        return None;
    }
    let mut bits = 0u8;
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Value::String(s) = item else {
            errs.push(
                item_path,
                format!("expected a day, found {}", type_name(item)),
            );
            ok = false;
            continue;
        };
        match keyword_at::<Weekday>(s, &item_path, errs) {
            Some(d) if bits & (1 << d.index()) != 0 => {
                errs.push(item_path, format!("{s:?} is listed twice"));
                ok = false;
            }
            Some(d) => bits |= 1 << d.index(),
            None => ok = false,
        }
    }
    ok.then_some(bits)
}

/// `HH:MM`, 24-hour, two digits each; `24:00` only when `end_of_day`.
fn parse_clock(s: &str, end_of_day: bool) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return None;
    }
    let digit = |i: usize| u16::from(b[i] - b'0');
    let (h, m) = (digit(0) * 10 + digit(1), digit(3) * 10 + digit(4));
    match (h, m) {
        (24, 0) if end_of_day => Some(DAY_MINUTES),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `"09:00-17:30"` as minutes `(start, end)`.
fn parse_hours(s: &str) -> Result<(u16, u16), String> {
    let bad = || {
        format!(
            "{s:?} is not HH:MM-HH:MM (24-hour, start 00:00 to 23:59, end 00:00 to 24:00, \
             e.g. \"09:00-17:30\")"
        )
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = parse_clock(a, false).ok_or_else(bad)?;
    let end = parse_clock(b, true).ok_or_else(bad)?;
    // Equal ends could mean no time or all of it: say which instead.
    if start == end {
        return Err(format!(
            "{s:?} starts where it ends: for the whole day write \"00:00-24:00\" or leave hours out"
        ));
    }
    // A start is at most 23:59, so an end of `24:00` never wraps:
    // `22:00-24:00` is the day's last two hours.
    Ok((start, end))
}

/// `"+01:00"`, `"-05:30"`: minutes east of UTC, at most 14 hours either way.
fn parse_offset(s: &str) -> Result<i16, String> {
    let bad = || {
        format!(
            "{s:?} is not a UTC offset +HH:MM or -HH:MM between -14:00 and +14:00 \
             (a fixed offset: time-zone names are not read)"
        )
    };
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let minutes = parse_clock(rest, false).ok_or_else(bad)?;
    if minutes > MAX_OFFSET_MINUTES {
        return Err(bad());
    }
    i16::try_from(minutes).map(|m| sign * m).map_err(|_| bad())
}

fn clock(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

fn offset_text(offset: i16) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    format!("{sign}{}", clock(offset.unsigned_abs()))
}

/// The proleptic Gregorian date `(year, month, day)` of day `days` since
/// 1970-01-01. Counted in 400-year eras (146097 days, which repeat exactly),
/// each read with years starting on 1 March so the leap day ends the year.
pub fn civil_from_days(days: i128) -> (i128, u32, u32) {
    // Shift the epoch to 0000-03-01, the start of an era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    // Years of the era: 365 days each, plus a leap day every 4th except
    // every 100th, except every 400th.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 153 days every 5 months (31,30,31,30,31).
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`civil_from_days`]); the month and day are not range-checked here.
pub fn days_from_civil(year: i128, month: u32, day: u32) -> i128 {
    // January and February count as months 11 and 12 of the year before.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let m = i128::from(month);
    let month_from_march = if m > 2 { m - 3 } else { m + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + i128::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i128, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An RFC 3339 timestamp (`2026-12-05T10:00:00Z`, `2026-12-05T11:00:00+01:00`,
/// fractions of a second allowed) as milliseconds since the Unix epoch: what
/// the CLI's `--at` and a test case's `at` give. Leap seconds (`:60`) and
/// times before 1970 are refused.
pub fn parse_timestamp(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("{s:?} is not an RFC 3339 time such as \"2026-12-05T10:00:00Z\" ({why})")
    };
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let sep = |i: usize, want: &[u8]| b.get(i).is_some_and(|c| want.contains(c));
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        digits(0, 4),
        digits(5, 2),
        digits(8, 2),
        digits(11, 2),
        digits(14, 2),
        digits(17, 2),
    ) else {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    };
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let year = i128::from(year);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("no such time of day"));
    }
    let mut i = 19;
    let mut millis = 0i128;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            // Digits past the millisecond are read and dropped.
            if i - start < 3 {
                millis = millis * 10 + i128::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return Err(bad("a '.' needs digits after it"));
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match &s[i.min(s.len())..] {
        "Z" | "z" => 0,
        zone => i128::from(parse_offset(zone).map_err(|_| bad("expected Z or an offset ±HH:MM"))?),
    };
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i128::from(hour * 3600 + minute * 60 + second) - offset_minutes * 60;
    u64::try_from(seconds * 1000 + millis).map_err(|_| bad("before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Milliseconds of a UTC time, through the parser under test elsewhere.
    fn at(s: &str) -> u64 {
        parse_timestamp(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn window(v: Value) -> TimeWindow {
        let mut errs = Errors::default();
        match TimeWindow::compile(&v, "$.w", &mut errs) {
            Some(w) if errs.is_empty() => w,
            _ => panic!("{:?}", errs.0),
        }
    }

    fn errors(v: Value) -> Vec<String> {
        let mut errs = Errors::default();
        let w = TimeWindow::compile(&v, "$.w", &mut errs);
        assert!(w.is_none(), "{v} compiled");
        errs.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn calendar_round_trips_and_knows_its_weekdays() {
        // 2026-12-05 is a Saturday; 2000-02-29 a Tuesday; 1970-01-01 a Thursday.
        let cases: &[(i128, u32, u32, Weekday)] = &[
            (1970, 1, 1, Weekday::Thu),
            (1969, 12, 31, Weekday::Wed),
            (2000, 2, 29, Weekday::Tue),
            (2000, 3, 1, Weekday::Wed),
            (2100, 3, 1, Weekday::Mon),
            (2026, 12, 5, Weekday::Sat),
            (2024, 12, 31, Weekday::Tue),
            (9999, 12, 31, Weekday::Fri),
        ];
        for &(y, m, d, wd) in cases {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_from_days(days), (y, m, d), "{y}-{m}-{d}");
            assert_eq!(Weekday::of_day(days), wd, "{y}-{m}-{d}");
        }
        // Every day of four centuries, both ways.
        let (from, to) = (days_from_civil(1900, 1, 1), days_from_civil(2300, 1, 1));
        let mut prev = civil_from_days(from - 1);
        for days in from..to {
            let ymd = civil_from_days(days);
            assert_eq!(days_from_civil(ymd.0, ymd.1, ymd.2), days);
            assert!(ymd > prev, "{ymd:?} after {prev:?}");
            assert!(ymd.2 <= days_in_month(ymd.0, ymd.1));
            prev = ymd;
        }
    }

    #[test]
    fn timestamps_are_read_as_rfc_3339() {
        let ok: &[(&str, u64)] = &[
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01T00:00:01.5Z", 1500),
            ("1970-01-01T00:00:00.123456789z", 123),
            ("1970-01-01T01:00:00+01:00", 0),
            ("1969-12-31T19:00:00-05:00", 0),
            ("2026-12-05t10:00:00Z", 1_796_464_800_000),
            ("2026-12-05T11:00:00+01:00", 1_796_464_800_000),
        ];
        for (s, want) in ok {
            assert_eq!(parse_timestamp(s), Ok(*want), "{s}");
        }
        let refused: &[(&str, &str)] = &[
            ("2026-12-05", "expected YYYY-MM-DDTHH:MM:SS"),
            ("2026-12-05 10:00:00Z", "expected YYYY-MM-DDTHH:MM:SS"),
            ("2026-12-05T10:00Z", "expected YYYY-MM-DDTHH:MM:SS"),
            ("2026-02-29T10:00:00Z", "no such date"),
            ("2026-13-01T10:00:00Z", "no such date"),
            ("2026-12-05T24:00:00Z", "no such time of day"),
            ("2026-12-31T23:59:60Z", "no such time of day"),
            ("2026-12-05T10:00:00", "expected Z or an offset"),
            ("2026-12-05T10:00:00+1:00", "expected Z or an offset"),
            ("2026-12-05T10:00:00.Z", "a '.' needs digits"),
            ("1969-12-31T23:59:59Z", "before 1970"),
        ];
        for (s, want) in refused {
            match parse_timestamp(s) {
                Err(e) => assert!(e.contains(want), "{s}: {e}"),
                Ok(ms) => panic!("{s} read as {ms}"),
            }
        }
    }

    #[test]
    fn window_edges_decide_as_documented() {
        let weekdays = json!(["mon", "tue", "wed", "thu", "fri"]);
        // 2026-12-04 is a Friday, 2026-12-05 a Saturday, 2026-12-07 a Monday.
        let cases: &[(&str, Value, &str, bool)] = &[
            // Half-open: the start minute is in, the end minute is out.
            (
                "start_minute_is_inside",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+00:00"}),
                "2026-12-04T09:00:00Z",
                true,
            ),
            (
                "just_before_start_is_outside",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+00:00"}),
                "2026-12-04T08:59:59.999Z",
                false,
            ),
            (
                "last_millisecond_is_inside",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+00:00"}),
                "2026-12-04T17:29:59.999Z",
                true,
            ),
            (
                "end_minute_is_outside",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+00:00"}),
                "2026-12-04T17:30:00Z",
                false,
            ),
            (
                "a_day_not_listed_is_outside",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+00:00"}),
                "2026-12-05T10:00:00Z",
                false,
            ),
            // The offset moves the clock and the day: 08:30 UTC is 09:30 at +01:00.
            (
                "offset_moves_the_clock_in",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+01:00"}),
                "2026-12-04T08:30:00Z",
                true,
            ),
            (
                "offset_moves_the_clock_out",
                json!({"days": weekdays, "hours": "09:00-17:30", "utc_offset": "+01:00"}),
                "2026-12-04T16:30:00Z",
                false,
            ),
            // Friday 23:30 UTC is already Saturday 00:30 at +01:00.
            (
                "positive_offset_crosses_into_the_next_day",
                json!({"days": ["sat"], "utc_offset": "+01:00"}),
                "2026-12-04T23:30:00Z",
                true,
            ),
            (
                "positive_offset_leaves_the_day_before",
                json!({"days": ["fri"], "utc_offset": "+01:00"}),
                "2026-12-04T23:30:00Z",
                false,
            ),
            // Monday 03:00 UTC is still Sunday 22:00 at -05:00.
            (
                "negative_offset_stays_on_the_day_before",
                json!({"days": ["sun"], "utc_offset": "-05:00"}),
                "2026-12-07T03:00:00Z",
                true,
            ),
            (
                "negative_offset_is_not_yet_monday",
                json!({"days": ["mon"], "utc_offset": "-05:00"}),
                "2026-12-07T03:00:00Z",
                false,
            ),
            // The extremes: +14:00 and -14:00 put one UTC instant on two dates.
            (
                "plus_14_is_saturday_already",
                json!({"days": ["sat"], "hours": "09:00-10:00", "utc_offset": "+14:00"}),
                "2026-12-04T19:30:00Z",
                true,
            ),
            (
                "minus_14_is_still_thursday",
                json!({"days": ["thu"], "hours": "19:00-20:00", "utc_offset": "-14:00"}),
                "2026-12-05T09:30:00Z",
                false,
            ),
            (
                "minus_14_is_friday_evening",
                json!({"days": ["fri"], "hours": "19:00-20:00", "utc_offset": "-14:00"}),
                "2026-12-05T09:30:00Z",
                true,
            ),
            (
                "quarter_hour_offset",
                json!({"hours": "09:00-09:01", "utc_offset": "+05:45"}),
                "2026-12-04T03:15:00Z",
                true,
            ),
            // Wrapping past midnight: days name the day the window opens.
            (
                "wrap_evening_on_the_opening_day",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+00:00"}),
                "2026-12-04T22:00:00Z",
                true,
            ),
            (
                "wrap_just_before_opening",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+00:00"}),
                "2026-12-04T21:59:00Z",
                false,
            ),
            (
                "wrap_midnight_belongs_to_the_opening_day",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+00:00"}),
                "2026-12-05T00:00:00Z",
                true,
            ),
            (
                "wrap_morning_after_the_opening_day",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+00:00"}),
                "2026-12-05T05:59:59Z",
                true,
            ),
            (
                "wrap_end_minute_is_outside",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+00:00"}),
                "2026-12-05T06:00:00Z",
                false,
            ),
            (
                "wrap_morning_of_the_opening_day_is_outside",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+00:00"}),
                "2026-12-04T05:00:00Z",
                false,
            ),
            (
                "wrap_sunday_night_into_monday",
                json!({"days": ["sun"], "hours": "23:00-01:00", "utc_offset": "+00:00"}),
                "2026-12-07T00:30:00Z",
                true,
            ),
            (
                "wrap_under_an_offset",
                json!({"days": ["fri"], "hours": "22:00-06:00", "utc_offset": "+09:00"}),
                "2026-12-04T20:00:00Z",
                true,
            ),
            // An end of `00:00` wraps into nothing: the day's last hour.
            (
                "wrap_to_midnight_last_minute",
                json!({"days": ["fri"], "hours": "23:00-00:00", "utc_offset": "+00:00"}),
                "2026-12-04T23:59:59Z",
                true,
            ),
            (
                "wrap_to_midnight_ends_at_midnight",
                json!({"days": ["fri"], "hours": "23:00-00:00", "utc_offset": "+00:00"}),
                "2026-12-05T00:00:00Z",
                false,
            ),
            // `24:00` ends at midnight without wrapping.
            (
                "end_of_day_last_minute",
                json!({"days": ["fri"], "hours": "22:00-24:00", "utc_offset": "+00:00"}),
                "2026-12-04T23:59:00Z",
                true,
            ),
            (
                "end_of_day_is_not_the_next_day",
                json!({"days": ["fri"], "hours": "22:00-24:00", "utc_offset": "+00:00"}),
                "2026-12-05T00:00:00Z",
                false,
            ),
            (
                "days_alone_are_the_whole_day",
                json!({"days": ["sat", "sun"], "utc_offset": "+00:00"}),
                "2026-12-05T00:00:00Z",
                true,
            ),
            (
                "hours_alone_are_every_day",
                json!({"hours": "00:00-00:01", "utc_offset": "+00:00"}),
                "2026-12-06T00:00:30Z",
                true,
            ),
            (
                "epoch_under_a_negative_offset",
                json!({"days": ["wed"], "hours": "19:00-20:00", "utc_offset": "-05:00"}),
                "1970-01-01T00:00:00Z",
                true,
            ),
        ];
        for (name, w, when, want) in cases {
            let w = window(w.clone());
            assert_eq!(
                w.contains(at(when)),
                *want,
                "{name}: {} at {}",
                w.describe(),
                w.describe_time(at(when))
            );
        }
    }

    #[test]
    fn descriptions_read_like_the_policy() {
        let w =
            window(json!({"days": ["fri", "mon"], "hours": "22:00-06:00", "utc_offset": "-05:30"}));
        assert_eq!(w.describe(), "mon,fri 22:00-06:00 -05:30");
        assert_eq!(
            w.describe_time(at("2026-12-05T03:00:00Z")),
            "2026-12-04 fri 21:30 -05:30"
        );
        let w = window(json!({"days": ["sat"], "utc_offset": "+00:00"}));
        assert_eq!(w.describe(), "sat all day +00:00");
        let w = window(json!({"hours": "00:00-24:00", "utc_offset": "+14:00"}));
        assert_eq!(w.describe(), "every day all day +14:00");
    }

    #[test]
    fn mistakes_are_named_by_their_path() {
        let cases: &[(&str, Value, &[&str])] = &[
            ("not_an_object", json!("09:00-17:00"), &["$.w: expected an object, found a string"]),
            ("neither_days_nor_hours", json!({"utc_offset": "+00:00"}), &["$.w: a time window needs days, hours or both"]),
            ("offset_missing", json!({"hours": "09:00-17:00"}), &["$.w.utc_offset: required field is missing"]),
            ("offset_a_number", json!({"hours": "09:00-17:00", "utc_offset": 1}), &["$.w.utc_offset: expected a string such as \"+01:00\", found a number"]),
            ("offset_a_zone_name", json!({"hours": "09:00-17:00", "utc_offset": "Europe/Paris"}), &["$.w.utc_offset: \"Europe/Paris\" is not a UTC offset"]),
            ("offset_beyond_14_hours", json!({"hours": "09:00-17:00", "utc_offset": "+14:01"}), &["$.w.utc_offset: \"+14:01\" is not a UTC offset"]),
            ("offset_without_sign", json!({"hours": "09:00-17:00", "utc_offset": "01:00"}), &["$.w.utc_offset: \"01:00\" is not"]),
            ("offset_z", json!({"hours": "09:00-17:00", "utc_offset": "Z"}), &["$.w.utc_offset: \"Z\" is not"]),
            ("hours_one_digit", json!({"hours": "9:00-17:00", "utc_offset": "+00:00"}), &["$.w.hours: \"9:00-17:00\" is not HH:MM-HH:MM"]),
            ("hours_start_24", json!({"hours": "24:00-06:00", "utc_offset": "+00:00"}), &["$.w.hours: \"24:00-06:00\" is not HH:MM-HH:MM"]),
            ("hours_minute_60", json!({"hours": "09:60-17:00", "utc_offset": "+00:00"}), &["$.w.hours: \"09:60-17:00\" is not"]),
            ("hours_with_spaces", json!({"hours": "09:00 - 17:00", "utc_offset": "+00:00"}), &["$.w.hours: \"09:00 - 17:00\" is not"]),
            ("hours_empty", json!({"hours": "09:00-09:00", "utc_offset": "+00:00"}), &["$.w.hours: \"09:00-09:00\" starts where it ends"]),
            ("hours_midnight_to_midnight", json!({"hours": "00:00-00:00", "utc_offset": "+00:00"}), &["$.w.hours: \"00:00-00:00\" starts where it ends"]),
            ("hours_a_list", json!({"hours": ["09:00", "17:00"], "utc_offset": "+00:00"}), &["$.w.hours: expected a string, found an array"]),
            ("days_empty", json!({"days": [], "utc_offset": "+00:00"}), &["$.w.days: expected a non-empty array of days (mon, tue, wed, thu, fri, sat, sun)"]),
            ("days_a_string", json!({"days": "mon", "utc_offset": "+00:00"}), &["$.w.days: expected a non-empty array of days (mon, tue, wed, thu, fri, sat, sun), found a string"]),
            ("day_capitalised", json!({"days": ["Mon"], "utc_offset": "+00:00"}), &["$.w.days[0]: \"Mon\" is not one of mon, tue, wed, thu, fri, sat, sun"]),
            ("day_spelled_out", json!({"days": ["mon", "tuesday"], "utc_offset": "+00:00"}), &["$.w.days[1]: \"tuesday\" is not one of"]),
            ("day_twice", json!({"days": ["mon", "mon"], "utc_offset": "+00:00"}), &["$.w.days[1]: \"mon\" is listed twice"]),
            ("day_a_number", json!({"days": [1], "utc_offset": "+00:00"}), &["$.w.days[0]: expected a day, found a number"]),
            ("unknown_field", json!({"days": ["mon"], "utc_offset": "+00:00", "tz": "CET"}), &["$.w.tz: unknown field"]),
            ("every_mistake_at_once", json!({"days": ["xx"], "hours": "x", "utc_offset": "x"}), &["$.w.days[0]", "$.w.hours", "$.w.utc_offset"]),
        ];
        for (name, v, want) in cases {
            let got = errors(v.clone());
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(g.starts_with(w), "{name}: {g:?} does not start with {w:?}");
            }
        }
    }
}
