//! HTTP-date (RFC 9110 §5.6.7): parse all three accepted forms, format IMF-fixdate.
//!
//! Dates are converted to and from `SystemTime` through a proleptic Gregorian calendar so
//! that years before 1970 (old `Last-Modified` values) work too. Formatting clamps to the
//! four-digit years the grammar can express.
//!
//! Why not the `httpdate` crate (in the tree through hyper): what it does differently is
//! reachable from a backend's fields. Its `SystemTime` → date conversion panics before 1970
//! and after 9999, and this module formats times taken from upstream fields (a stored
//! `Last-Modified` of 1931 becomes the `If-Modified-Since` of a revalidation): a panic on
//! network input. Its parser refuses dates before 1970 (valid, and common in old
//! `Last-Modified` values), refuses a date whose weekday name does not match, reads a
//! two-digit RFC 850 year with a fixed pivot (00–69 → 20xx) where RFC 9110 asks for "more
//! than 50 years in the future means the past", and trims Unicode whitespace rather than
//! the OWS the grammar allows. The tests below pin each of these. Formatting on the
//! response path (`serve/h1/response.rs`) writes into a fixed array, cached per second.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const IMF_FIXDATE_LEN: usize = 29;

const SECS_PER_DAY: i64 = 86_400;
const DAY_NAMES: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const LONG_DAY_NAMES: [&[u8]; 7] = [
    b"Sunday",
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
/// Days from 1970-01-01 to 0000-01-01 and to 9999-12-31: the range formatting can express.
const MIN_DAYS: i64 = -719_528;
const MAX_DAYS: i64 = 2_932_896;

/// One date-valued header field as a cache sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateField {
    /// No field line.
    Absent,
    /// Exactly one valid value (or repeated identical lines).
    Valid(SystemTime),
    /// Unparsable, or several lines that disagree: callers treat it per field (an invalid
    /// `Expires` means "already expired", RFC 9111 §5.3).
    Invalid,
}

/// Parses an HTTP-date in any of the three forms; `None` when invalid.
///
/// `now` resolves the two-digit year of the obsolete RFC 850 form: a year that would be
/// more than 50 years in the future means the most recent past year with those digits.
pub fn parse_http_date(value: &[u8], now: SystemTime) -> Option<SystemTime> {
    let value = trim_ows(value);
    let civil = if value.len() == IMF_FIXDATE_LEN && value.get(3) == Some(&b',') {
        parse_imf_fixdate(value)?
    } else if value.contains(&b',') {
        parse_rfc850(value, year_of(now))?
    } else {
        parse_asctime(value)?
    };
    civil.to_system_time()
}

/// Formats `time` as an IMF-fixdate; sub-second precision is dropped.
pub fn format_http_date(time: SystemTime) -> [u8; IMF_FIXDATE_LEN] {
    let secs = unix_secs(time);
    let days = secs.div_euclid(SECS_PER_DAY).clamp(MIN_DAYS, MAX_DAYS);
    let secs_of_day = if days == secs.div_euclid(SECS_PER_DAY) {
        secs.rem_euclid(SECS_PER_DAY)
    } else if days == MIN_DAYS {
        0
    } else {
        SECS_PER_DAY - 1
    };
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[0..3].copy_from_slice(DAY_NAMES[index(weekday)]);
    put_digits(&mut out[5..7], i64::from(day));
    out[8..11].copy_from_slice(MONTHS[index(i64::from(month) - 1)]);
    put_digits(&mut out[12..16], year);
    put_digits(&mut out[17..19], secs_of_day / 3600);
    put_digits(&mut out[20..22], secs_of_day / 60 % 60);
    put_digits(&mut out[23..25], secs_of_day % 60);
    out
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-12-07T08:01:02.345Z`), for JSON documents.
pub fn rfc3339_ms(ms: u64) -> String {
    String::from_utf8_lossy(&rfc3339_ms_bytes(ms)).into_owned()
}

/// [`rfc3339_ms`] without the allocation, for documents written on the request path.
pub fn rfc3339_ms_bytes(ms: u64) -> [u8; 24] {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let days = secs.div_euclid(SECS_PER_DAY).clamp(MIN_DAYS, MAX_DAYS);
    let of_day = secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"1970-01-01T00:00:00.000Z";
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], i64::from(month));
    put_digits(&mut out[8..10], i64::from(day));
    put_digits(&mut out[11..13], of_day / 3600);
    put_digits(&mut out[14..16], of_day / 60 % 60);
    put_digits(&mut out[17..19], of_day % 60);
    put_digits(&mut out[20..23], (ms % 1000) as i64);
    out
}

/// `time` as an IMF-fixdate header value.
pub fn http_date_value(time: SystemTime) -> HeaderValue {
    match HeaderValue::from_bytes(&format_http_date(time)) {
        Ok(value) => value,
        Err(_) => {
            debug_assert!(false, "formatted HTTP-date is always a valid header value");
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")
        }
    }
}

/// Reads a date-valued field: absent, one valid value, or invalid (also when lines disagree).
pub fn date_field(headers: &HeaderMap, name: &HeaderName, now: SystemTime) -> DateField {
    let mut lines = headers.get_all(name).iter();
    let Some(first) = lines.next() else {
        return DateField::Absent;
    };
    if lines.any(|other| trim_ows(other.as_bytes()) != trim_ows(first.as_bytes())) {
        return DateField::Invalid;
    }
    match parse_http_date(first.as_bytes(), now) {
        Some(time) => DateField::Valid(time),
        None => DateField::Invalid,
    }
}

/// Broken-down UTC time as read from a date string, before range checks.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn to_system_time(&self) -> Option<SystemTime> {
        let in_range = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour <= 23
            && self.minute <= 59
            && self.second <= 60; // a leap second rolls into the next minute
        if !in_range {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        let magnitude = Duration::from_secs(secs.unsigned_abs());
        if secs >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(v: &[u8]) -> Option<Civil> {
    day_name(v.get(0..3)?)?;
    if v.get(3..5)? != b", " || v.get(7) != Some(&b' ') || v.get(11) != Some(&b' ') {
        return None;
    }
    let (hour, minute, second) = time_of_day(v.get(16..26)?)?;
    if v.get(26..)? != b"GMT" {
        return None;
    }
    Some(Civil {
        year: i64::from(digits(v.get(12..16)?)?),
        month: month(v.get(8..11)?)?,
        day: digits(v.get(5..7)?)?,
        hour,
        minute,
        second,
    })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn parse_rfc850(v: &[u8], this_year: i64) -> Option<Civil> {
    let comma = v.iter().position(|&b| b == b',')?;
    if !LONG_DAY_NAMES.contains(&v.get(..comma)?) {
        return None;
    }
    let rest = v.get(comma..)?;
    // ", 06-Nov-94 08:49:37 GMT" is 24 bytes.
    if rest.len() != 24 || rest.get(..2)? != b", " || rest.get(4) != Some(&b'-') {
        return None;
    }
    if rest.get(8) != Some(&b'-') || rest.get(11) != Some(&b' ') {
        return None;
    }
    let (hour, minute, second) = time_of_day(rest.get(11..21)?)?;
    if rest.get(21..)? != b"GMT" {
        return None;
    }
    Some(Civil {
        year: expand_two_digit_year(i64::from(digits(rest.get(9..11)?)?), this_year),
        month: month(rest.get(5..8)?)?,
        day: digits(rest.get(2..4)?)?,
        hour,
        minute,
        second,
    })
}

/// `Sun Nov  6 08:49:37 1994`
fn parse_asctime(v: &[u8]) -> Option<Civil> {
    if v.len() != 24 || v.get(3) != Some(&b' ') || v.get(7) != Some(&b' ') {
        return None;
    }
    day_name(v.get(0..3)?)?;
    let day = match v.get(8..10)? {
        [b' ', d] => digits(&[*d])?,
        two => digits(two)?,
    };
    let (hour, minute, second) = time_of_day(v.get(10..20)?)?;
    if v.get(19) != Some(&b' ') {
        return None;
    }
    Some(Civil {
        year: i64::from(digits(v.get(20..24)?)?),
        month: month(v.get(4..7)?)?,
        day,
        hour,
        minute,
        second,
    })
}

/// `␠HH:MM:SS␠` (the spaces on both sides are part of the slice).
fn time_of_day(v: &[u8]) -> Option<(u32, u32, u32)> {
    if v.len() != 10 || v[0] != b' ' || v[3] != b':' || v[6] != b':' || v[9] != b' ' {
        return None;
    }
    Some((digits(&v[1..3])?, digits(&v[4..6])?, digits(&v[7..9])?))
}

fn day_name(v: &[u8]) -> Option<()> {
    DAY_NAMES
        .iter()
        .any(|name| name.as_slice() == v)
        .then_some(())
}

fn month(v: &[u8]) -> Option<u32> {
    let found = MONTHS.iter().position(|name| name.as_slice() == v)?;
    u32::try_from(found + 1).ok()
}

/// A fixed run of ASCII digits (no sign, no spaces).
fn digits(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 4 {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn expand_two_digit_year(two_digits: i64, this_year: i64) -> i64 {
    let mut year = this_year - this_year.rem_euclid(100) + two_digits;
    if year > this_year + 50 {
        year -= 100;
    } else if year + 100 <= this_year + 50 {
        year += 100;
    }
    year
}

fn year_of(time: SystemTime) -> i64 {
    civil_from_days(unix_secs(time).div_euclid(SECS_PER_DAY)).0
}

/// Whole seconds since the Unix epoch, negative before it, saturating far outside.
fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        // Round towards the past so formatting a pre-epoch instant never moves it forward.
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years, March-based).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are small by construction (1..=31, 1..=12).
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

fn index(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

/// Writes `value` as zero-padded decimal filling `out`.
fn put_digits(out: &mut [u8], mut value: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(value.rem_euclid(10)).unwrap_or(0);
        value /= 10;
    }
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn rfc3339_ms_writes_utc_with_milliseconds() {
        assert_eq!(super::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_ms(1_796_630_462_345),
            "2026-12-07T08:01:02.345Z"
        );
    }

    use super::*;
    use proptest::prelude::*;

    /// 1994-11-06T08:49:37Z, the RFC's example instant.
    fn example() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn now_2026() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_780_000_000)
    }

    #[test]
    fn imf_fixdate_parses() {
        let parsed = parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT", now_2026());
        assert_eq!(parsed, Some(example()));
    }

    #[test]
    fn rfc850_date_parses_with_two_digit_year_in_the_past() {
        let parsed = parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT", now_2026());
        assert_eq!(parsed, Some(example()));
    }

    #[test]
    fn rfc850_year_less_than_50_years_ahead_stays_in_this_century() {
        let parsed = parse_http_date(b"Monday, 01-Jan-40 00:00:00 GMT", now_2026()).unwrap();
        assert_eq!(&format_http_date(parsed), b"Sun, 01 Jan 2040 00:00:00 GMT");
    }

    /// A fixed pivot at 70 would read 1975; in 2026, 2075 is less than 50 years ahead.
    #[test]
    fn rfc850_year_follows_the_50_year_rule_not_a_fixed_pivot() {
        let parsed = parse_http_date(b"Tuesday, 01-Jan-75 00:00:00 GMT", now_2026()).unwrap();
        assert_eq!(&format_http_date(parsed), b"Tue, 01 Jan 2075 00:00:00 GMT");
        let parsed = parse_http_date(b"Saturday, 01-Jan-77 00:00:00 GMT", now_2026()).unwrap();
        assert_eq!(&format_http_date(parsed), b"Sat, 01 Jan 1977 00:00:00 GMT");
    }

    /// The day name is redundant (RFC 9110 §5.6.7); a wrong one does not lose the date.
    #[test]
    fn a_wrong_day_name_does_not_invalidate_the_date() {
        let parsed = parse_http_date(b"Mon, 06 Nov 1994 08:49:37 GMT", now_2026());
        assert_eq!(parsed, Some(example()));
    }

    #[test]
    fn asctime_date_parses_with_space_padded_day() {
        let parsed = parse_http_date(b"Sun Nov  6 08:49:37 1994", now_2026());
        assert_eq!(parsed, Some(example()));
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let parsed = parse_http_date(b"  Sun, 06 Nov 1994 08:49:37 GMT ", now_2026());
        assert_eq!(parsed, Some(example()));
    }

    #[test]
    fn zero_and_garbage_are_invalid() {
        for value in [
            &b"0"[..],
            b"",
            b"-1",
            b"tomorrow",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
        ] {
            assert_eq!(parse_http_date(value, now_2026()), None, "{value:?}");
        }
    }

    #[test]
    fn lower_case_names_are_invalid_because_http_date_is_case_sensitive() {
        assert_eq!(
            parse_http_date(b"sun, 06 nov 1994 08:49:37 GMT", now_2026()),
            None
        );
    }

    #[test]
    fn out_of_range_fields_are_invalid() {
        for value in [
            &b"Sun, 31 Nov 1994 08:49:37 GMT"[..],
            b"Sun, 29 Feb 1995 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
        ] {
            assert_eq!(parse_http_date(value, now_2026()), None, "{value:?}");
        }
    }

    #[test]
    fn leap_day_in_a_leap_year_is_valid() {
        assert!(parse_http_date(b"Thu, 29 Feb 2024 00:00:00 GMT", now_2026()).is_some());
    }

    #[test]
    fn pre_epoch_date_round_trips() {
        let parsed = parse_http_date(b"Fri, 13 Feb 1931 23:31:30 GMT", now_2026()).unwrap();
        assert!(parsed < UNIX_EPOCH);
        assert_eq!(&format_http_date(parsed), b"Fri, 13 Feb 1931 23:31:30 GMT");
    }

    #[test]
    fn format_writes_imf_fixdate() {
        assert_eq!(
            &format_http_date(example()),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn format_drops_sub_second_precision() {
        let time = example() + Duration::from_millis(999);
        assert_eq!(&format_http_date(time), b"Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn format_clamps_years_beyond_9999() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(&format_http_date(far), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn format_clamps_years_before_0000() {
        let ancient = UNIX_EPOCH - Duration::from_secs(70_000_000_000);
        assert_eq!(&format_http_date(ancient), b"Sat, 01 Jan 0000 00:00:00 GMT");
    }

    #[test]
    fn repeated_identical_lines_are_one_value() {
        let mut headers = HeaderMap::new();
        headers.append(
            "expires",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        headers.append(
            "expires",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let name = http::header::EXPIRES;
        assert_eq!(
            date_field(&headers, &name, now_2026()),
            DateField::Valid(example())
        );
    }

    #[test]
    fn disagreeing_lines_are_invalid() {
        let mut headers = HeaderMap::new();
        headers.append(
            "expires",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        headers.append(
            "expires",
            HeaderValue::from_static("Mon, 07 Nov 1994 08:49:37 GMT"),
        );
        let name = http::header::EXPIRES;
        assert_eq!(date_field(&headers, &name, now_2026()), DateField::Invalid);
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_http_date(&bytes, now_2026());
        }

        #[test]
        fn format_then_parse_round_trips(secs in -60_000_000_000i64..250_000_000_000i64) {
            let magnitude = Duration::from_secs(secs.unsigned_abs());
            let time = if secs >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude };
            let text = format_http_date(time);
            prop_assert_eq!(parse_http_date(&text, now_2026()), Some(time));
        }
    }
}
