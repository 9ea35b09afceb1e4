//! Calendar periods in UTC from a millisecond clock: which day or month a
//! time falls in and when that period ends (the civil calendar is
//! `time_window`'s, which time windows read too).

use super::Period;
use crate::time_window::{civil_from_days, days_from_civil};

const DAY_MS: u64 = 86_400_000;

/// (year, month 1..=12) of day number `days` since 1970-01-01.
fn year_month(days: u64) -> (u64, u64) {
    let (year, month, _) = civil_from_days(i128::from(days));
    (u64::try_from(year).unwrap_or(0), u64::from(month))
}

/// Day number since 1970-01-01 of the first of a month (0 before 1970).
fn first_of_month(year: u64, month: u64) -> u64 {
    let month = u32::try_from(month).unwrap_or(1);
    u64::try_from(days_from_civil(i128::from(year), month, 1)).unwrap_or(0)
}

/// The period `now_ms` falls in, as a number that grows by one per period,
/// and the first millisecond of the next period.
pub fn period_of(period: Period, now_ms: u64) -> (u64, u64) {
    let days = now_ms / DAY_MS;
    match period {
        Period::Day => (days, (days + 1) * DAY_MS),
        Period::Month => {
            let (year, month) = year_month(days);
            let (next_year, next_month) = match month {
                12 => (year + 1, 1),
                m => (year, m + 1),
            };
            (
                year * 12 + month - 1,
                first_of_month(next_year, next_month) * DAY_MS,
            )
        }
    }
}

/// The first millisecond of period number `n` (as [`period_of`] numbers
/// them), in constant time whatever `n` is (a stored number is data).
pub fn period_start(period: Period, n: u64) -> u64 {
    match period {
        Period::Day => n.saturating_mul(DAY_MS),
        Period::Month => {
            let (year, month) = (n / 12, n % 12 + 1);
            if year < 1970 {
                return 0;
            }
            // Past any clock this filter will read: no overflow below.
            first_of_month(year.min(1_000_000), month).saturating_mul(DAY_MS)
        }
    }
}

/// RFC 3339 text of a UTC time (what a refusal says a budget resets at).
pub fn rfc3339(ms: u64) -> String {
    let (y, mo, d) = civil_from_days(i128::from(ms / DAY_MS));
    let secs = (ms % DAY_MS) / 1000;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_end_at_the_next_utc_boundary() {
        let at = |date: (i128, u32, u32), h: u64| {
            u64::try_from(days_from_civil(date.0, date.1, date.2)).unwrap_or(0) * DAY_MS
                + h * 3_600_000
        };
        // (name, period, now, end)
        let cases = [
            (
                "day_mid",
                Period::Day,
                at((2026, 12, 5), 10),
                at((2026, 12, 6), 0),
            ),
            (
                "day_last_ms",
                Period::Day,
                at((2026, 12, 6), 0) - 1,
                at((2026, 12, 6), 0),
            ),
            (
                "month_mid",
                Period::Month,
                at((2026, 12, 5), 10),
                at((2027, 1, 1), 0),
            ),
            (
                "month_february_leap",
                Period::Month,
                at((2028, 2, 29), 23),
                at((2028, 3, 1), 0),
            ),
            (
                "month_first_ms",
                Period::Month,
                at((2026, 11, 1), 0),
                at((2026, 12, 1), 0),
            ),
        ];
        for (name, period, now, end) in cases {
            assert_eq!(period_of(period, now).1, end, "{name}");
        }
        // A period number read back from storage maps to its start directly,
        // however large (no walk from the clock's period).
        for period in [Period::Day, Period::Month] {
            let (n, end) = period_of(period, at((2026, 12, 5), 10));
            assert_eq!(period_start(period, n + 1), end);
            assert!(period_start(period, u64::MAX / 2) >= end);
        }
        let (nov, _) = period_of(Period::Month, at((2026, 11, 30), 23));
        let (dec, _) = period_of(Period::Month, at((2026, 12, 1), 0));
        assert_eq!(dec, nov + 1);
        assert_eq!(rfc3339(at((2027, 1, 1), 0)), "2027-01-01T00:00:00Z");
    }
}
