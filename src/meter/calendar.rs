//! Calendar periods in UTC from a millisecond clock: which day or month a
//! time falls in and when that period ends. A wasm filter has no time-zone
//! database, and budgets reset on UTC boundaries, so the civil calendar is
//! computed here (proleptic Gregorian, days since 1970-01-01).

use super::Period;

const DAY_MS: u64 = 86_400_000;

/// (year, month 1..=12, day 1..=31) of a day number since 1970-01-01.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days end a (March-based) year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Day number since 1970-01-01 of a civil date (year ≥ 1970).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// The period `now_ms` falls in, as a number that grows by one per period,
/// and the first millisecond of the next period.
pub fn period_of(period: Period, now_ms: u64) -> (u64, u64) {
    let days = now_ms / DAY_MS;
    match period {
        Period::Day => (days, (days + 1) * DAY_MS),
        Period::Month => {
            let (year, month, _) = civil_from_days(days);
            let (next_year, next_month) = match month {
                12 => (year + 1, 1),
                m => (year, m + 1),
            };
            (
                year * 12 + month - 1,
                days_from_civil(next_year, next_month, 1) * DAY_MS,
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
            days_from_civil(year.min(1_000_000), month, 1).saturating_mul(DAY_MS)
        }
    }
}

/// RFC 3339 text of a UTC time (what a refusal says a budget resets at).
pub fn rfc3339(ms: u64) -> String {
    let days = ms / DAY_MS;
    let (y, mo, d) = civil_from_days(days);
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
    fn civil_dates_round_trip_across_leap_years_and_centuries() {
        // (days since 1970-01-01, date)
        let cases = [
            (0, (1970, 1, 1)),
            (59, (1970, 3, 1)),
            (10_956, (1999, 12, 31)),
            (11_016, (2000, 2, 29)),
            (20_792, (2026, 12, 5)),
            (47_541, (2100, 3, 1)),
        ];
        for (days, date) in cases {
            assert_eq!(civil_from_days(days), date, "{days}");
            assert_eq!(days_from_civil(date.0, date.1, date.2), days, "{date:?}");
        }
        for days in 0..80_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn periods_end_at_the_next_utc_boundary() {
        let at = |date: (u64, u64, u64), h: u64| {
            days_from_civil(date.0, date.1, date.2) * DAY_MS + h * 3_600_000
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
