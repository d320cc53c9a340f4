//! q's temporal types and their epochs, with conversions to and from chrono and std types.
//!
//! Temporal atoms and vectors keep q's raw numbers (reference §4.1): every type counts a unit
//! from q's epoch, 2000.01.01 (not 1970.01.01), or from midnight for the times of day.
//!
//! | q type        | raw     | unit                                   |
//! |---------------|---------|----------------------------------------|
//! | timestamp `p` | `i64`   | nanoseconds since 2000.01.01D00:00     |
//! | month `m`     | `i32`   | months since 2000.01                   |
//! | date `d`      | `i32`   | days since 2000.01.01                  |
//! | datetime `z`  | `f64`   | days since 2000.01.01, fraction = time |
//! | timespan `n`  | `i64`   | nanoseconds                            |
//! | minute `u`    | `i32`   | minutes                                |
//! | second `v`    | `i32`   | seconds                                |
//! | time `t`      | `i32`   | milliseconds                           |
//!
//! Each integer width reserves three values: null (the minimum), infinity (the maximum) and
//! negative infinity (minus the maximum). The float types use NaN and IEEE infinities.
//! Conversions to chrono return `None` for those, and conversions from chrono return `None` for
//! a value that does not fit or that would land on one of them.
//! Times of day are not range-limited on the wire (q sends `-00:01` and `25:00:00`), so the
//! conversions to [`NaiveTime`] return `None` outside a day while the ones to [`TimeDelta`] do not.

use std::time::{Duration, SystemTime};

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike};

use crate::value::Atom;

/// q's epoch as a Unix time in seconds: 2000.01.01D00:00 is 1970.01.01 plus 946684800 s.
pub const EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// q's epoch as a Unix time in nanoseconds.
pub const EPOCH_UNIX_NANOS: i64 = EPOCH_UNIX_SECONDS * NANOS_PER_SECOND;

/// The year of q's epoch: months count from 2000.01.
pub const EPOCH_YEAR: i32 = 2000;

/// q's epoch as a date: dates count days from 2000.01.01.
pub const EPOCH_DATE: NaiveDate = match NaiveDate::from_ymd_opt(EPOCH_YEAR, 1, 1) {
    Some(date) => date,
    None => panic!("2000-01-01 is a valid date"),
};

/// q's epoch as a date and time: timestamps count nanoseconds from 2000.01.01D00:00.
pub const EPOCH: NaiveDateTime = NaiveDateTime::new(EPOCH_DATE, NaiveTime::MIN);

/// Nanoseconds in a second: the unit of timestamps and timespans.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Nanoseconds in a day.
pub const NANOS_PER_DAY: i64 = SECONDS_PER_DAY * NANOS_PER_SECOND;

/// Milliseconds in a second: the unit of times (`t`) and the precision q shows for datetimes.
pub const MILLIS_PER_SECOND: i64 = 1_000;

/// Milliseconds in a day.
pub const MILLIS_PER_DAY: i64 = SECONDS_PER_DAY * MILLIS_PER_SECOND;

/// Seconds in a day: the unit of seconds (`v`).
pub const SECONDS_PER_DAY: i64 = 86_400;

/// Minutes in a day: the unit of minutes (`u`).
pub const MINUTES_PER_DAY: i64 = 1_440;

/// Months in a year.
pub const MONTHS_PER_YEAR: i32 = 12;

/// The null short `0Nh`.
pub const NULL_I16: i16 = i16::MIN;
/// The short infinity `0Wh`.
pub const INF_I16: i16 = i16::MAX;
/// The negative short infinity `-0Wh`.
pub const NEG_INF_I16: i16 = -i16::MAX;

/// The null of the 32-bit types: `0Ni`, `0Nm`, `0Nd`, `0Nu`, `0Nv`, `0Nt`.
pub const NULL_I32: i32 = i32::MIN;
/// The infinity of the 32-bit types: `0Wi`, `0Wm`, `0Wd`, `0Wu`, `0Wv`, `0Wt`.
pub const INF_I32: i32 = i32::MAX;
/// The negative infinity of the 32-bit types: `-0Wi` and so on.
pub const NEG_INF_I32: i32 = -i32::MAX;

/// The null of the 64-bit types: `0N` (long), `0Np`, `0Nn`.
pub const NULL_I64: i64 = i64::MIN;
/// The infinity of the 64-bit types: `0W`, `0Wp`, `0Wn`.
pub const INF_I64: i64 = i64::MAX;
/// The negative infinity of the 64-bit types: `-0W`, `-0Wp`, `-0Wn`.
pub const NEG_INF_I64: i64 = -i64::MAX;

/// Whether a short is the null `0Nh`.
pub const fn is_null_i16(value: i16) -> bool {
    value == NULL_I16
}

/// Whether a short is `0Wh` or `-0Wh`.
pub const fn is_inf_i16(value: i16) -> bool {
    value == INF_I16 || value == NEG_INF_I16
}

/// Whether a 32-bit value (int, month, date, minute, second, time) is null.
pub const fn is_null_i32(value: i32) -> bool {
    value == NULL_I32
}

/// Whether a 32-bit value is an infinity of either sign.
pub const fn is_inf_i32(value: i32) -> bool {
    value == INF_I32 || value == NEG_INF_I32
}

/// Whether a 64-bit value (long, timestamp, timespan) is null.
pub const fn is_null_i64(value: i64) -> bool {
    value == NULL_I64
}

/// Whether a 64-bit value is an infinity of either sign.
pub const fn is_inf_i64(value: i64) -> bool {
    value == INF_I64 || value == NEG_INF_I64
}

/// Whether a real is null `0Ne`: any NaN, whatever its bits.
pub const fn is_null_f32(value: f32) -> bool {
    value.is_nan()
}

/// Whether a float or datetime is null (`0n`, `0Nz`): any NaN, whatever its bits.
pub const fn is_null_f64(value: f64) -> bool {
    value.is_nan()
}

/// Whether a 32-bit value is null or an infinity.
const fn is_special_i32(value: i32) -> bool {
    is_null_i32(value) || is_inf_i32(value)
}

/// Whether a 64-bit value is null or an infinity.
const fn is_special_i64(value: i64) -> bool {
    is_null_i64(value) || is_inf_i64(value)
}

/// `Some(value)` unless it is null or an infinity, which a real date or duration must not become.
fn ordinary_i32(value: i32) -> Option<i32> {
    (!is_special_i32(value)).then_some(value)
}

/// `Some(value)` unless it is null or an infinity.
fn ordinary_i64(value: i64) -> Option<i64> {
    (!is_special_i64(value)).then_some(value)
}

// Timestamps.

/// The date and time of a timestamp (nanoseconds since 2000.01.01D00:00).
///
/// `None` for `0Np`, `0Wp` and `-0Wp`; every other value is in chrono's range.
pub fn timestamp_to_datetime(nanos: i64) -> Option<NaiveDateTime> {
    EPOCH.checked_add_signed(TimeDelta::nanoseconds(ordinary_i64(nanos)?))
}

/// The timestamp of a date and time.
///
/// `None` outside q's timestamp range (about 1707.09.22 to 2292.04.10).
pub fn datetime_to_timestamp(datetime: NaiveDateTime) -> Option<i64> {
    ordinary_i64(datetime.signed_duration_since(EPOCH).num_nanoseconds()?)
}

/// The system time of a timestamp; `None` for null and the infinities.
pub fn timestamp_to_system_time(nanos: i64) -> Option<SystemTime> {
    let unix = i128::from(ordinary_i64(nanos)?) + i128::from(EPOCH_UNIX_NANOS);
    let magnitude = u64::try_from(unix.unsigned_abs()).ok()?;
    let offset = Duration::from_nanos(magnitude);
    if unix >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
}

/// The timestamp of a system time; `None` outside q's timestamp range.
pub fn system_time_to_timestamp(time: SystemTime) -> Option<i64> {
    let unix = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok()?,
        Err(before) => -i128::try_from(before.duration().as_nanos()).ok()?,
    };
    ordinary_i64(i64::try_from(unix - i128::from(EPOCH_UNIX_NANOS)).ok()?)
}

// Months and dates.

/// The first day of a month (months since 2000.01); `None` for null, the infinities and
/// months beyond chrono's range.
pub fn month_to_naive(months: i32) -> Option<NaiveDate> {
    let months = ordinary_i32(months)?;
    let year = EPOCH_YEAR.checked_add(months.div_euclid(MONTHS_PER_YEAR))?;
    let month = u32::try_from(months.rem_euclid(MONTHS_PER_YEAR)).ok()? + 1;
    NaiveDate::from_ymd_opt(year, month, 1)
}

/// The month of a date (months since 2000.01); the day is ignored.
///
/// Every chrono date has a month that fits, and none lands on null or an infinity.
pub fn naive_to_month(date: NaiveDate) -> i32 {
    let month0 = i32::try_from(date.month0()).unwrap_or_default();
    (date.year() - EPOCH_YEAR) * MONTHS_PER_YEAR + month0
}

/// The date of a q date (days since 2000.01.01); `None` for null, the infinities and dates
/// beyond chrono's range (about ±262000 years).
pub fn date_to_naive(days: i32) -> Option<NaiveDate> {
    EPOCH_DATE.checked_add_signed(TimeDelta::days(i64::from(ordinary_i32(days)?)))
}

/// The q date (days since 2000.01.01) of a date.
///
/// Every chrono date fits, and none lands on null or an infinity.
pub fn naive_to_date(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - EPOCH_DATE.num_days_from_ce()
}

// Datetimes.

/// The date and time of a datetime (fractional days since 2000.01.01), rounded to the
/// millisecond as q shows it.
///
/// `None` for `0Nz`, the infinities and values beyond chrono's range.
pub fn datetime_f64_to_naive(days: f64) -> Option<NaiveDateTime> {
    if !days.is_finite() {
        return None;
    }
    let millis = (days * MILLIS_PER_DAY as f64).round();
    // ±2^53 ms is ±285000 years, past chrono's range, and still exact in an f64.
    if millis.abs() > 9_007_199_254_740_992.0 {
        return None;
    }
    EPOCH.checked_add_signed(TimeDelta::try_milliseconds(millis as i64)?)
}

/// The datetime (fractional days since 2000.01.01) of a date and time.
pub fn naive_to_datetime_f64(datetime: NaiveDateTime) -> f64 {
    let since = datetime.signed_duration_since(EPOCH);
    let seconds = since.num_seconds() as f64 + f64::from(since.subsec_nanos()) / 1e9;
    seconds / SECONDS_PER_DAY as f64
}

// Timespans and times of day.

/// The duration of a timespan (nanoseconds); `None` for `0Nn`, `0Wn` and `-0Wn`.
pub fn timespan_to_duration(nanos: i64) -> Option<TimeDelta> {
    Some(TimeDelta::nanoseconds(ordinary_i64(nanos)?))
}

/// The timespan (nanoseconds) of a duration; `None` when it does not fit (about ±292 years).
pub fn duration_to_timespan(duration: TimeDelta) -> Option<i64> {
    ordinary_i64(duration.num_nanoseconds()?)
}

/// The duration of a minute value; `None` for null and the infinities.
pub fn minute_to_duration(minutes: i32) -> Option<TimeDelta> {
    TimeDelta::try_minutes(i64::from(ordinary_i32(minutes)?))
}

/// The duration of a second value; `None` for null and the infinities.
pub fn second_to_duration(seconds: i32) -> Option<TimeDelta> {
    TimeDelta::try_seconds(i64::from(ordinary_i32(seconds)?))
}

/// The duration of a time value (milliseconds); `None` for null and the infinities.
pub fn time_to_duration(millis: i32) -> Option<TimeDelta> {
    TimeDelta::try_milliseconds(i64::from(ordinary_i32(millis)?))
}

/// The time of day of a duration since midnight, when it is within a day.
fn duration_to_time_of_day(since_midnight: TimeDelta) -> Option<NaiveTime> {
    if since_midnight < TimeDelta::zero() || since_midnight >= TimeDelta::days(1) {
        return None;
    }
    let seconds = u32::try_from(since_midnight.num_seconds()).ok()?;
    let nanos = u32::try_from(since_midnight.subsec_nanos()).ok()?;
    NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos)
}

/// The time of day of a minute value; `None` for null, the infinities, and values outside
/// `00:00` to `23:59` (q allows negative minutes and minutes past a day).
pub fn minute_to_naive_time(minutes: i32) -> Option<NaiveTime> {
    duration_to_time_of_day(minute_to_duration(minutes)?)
}

/// The time of day of a second value; `None` for null, the infinities, and values outside a day.
pub fn second_to_naive_time(seconds: i32) -> Option<NaiveTime> {
    duration_to_time_of_day(second_to_duration(seconds)?)
}

/// The time of day of a time value (milliseconds); `None` for null, the infinities, and values
/// outside a day.
pub fn time_to_naive_time(millis: i32) -> Option<NaiveTime> {
    duration_to_time_of_day(time_to_duration(millis)?)
}

/// The time of day of a timespan; `None` for null, the infinities, and spans outside a day.
pub fn timespan_to_naive_time(nanos: i64) -> Option<NaiveTime> {
    duration_to_time_of_day(timespan_to_duration(nanos)?)
}

/// The minute value of a time of day; seconds are dropped.
pub fn naive_time_to_minute(time: NaiveTime) -> i32 {
    naive_time_to_second(time) / 60
}

/// The second value of a time of day; the fraction is dropped.
pub fn naive_time_to_second(time: NaiveTime) -> i32 {
    // At most 86399 (86400 in a leap second): always fits.
    i32::try_from(time.num_seconds_from_midnight()).unwrap_or_default()
}

/// The time value (milliseconds) of a time of day; finer digits are dropped.
pub fn naive_time_to_time(time: NaiveTime) -> i32 {
    // A leap second shows as 1000 ms or more past the second; q has no leap seconds, so clamp.
    let millis = (time.nanosecond() / 1_000_000).min(999);
    naive_time_to_second(time) * 1000 + i32::try_from(millis).unwrap_or_default()
}

/// The minute value of a duration, truncated; `None` when it does not fit.
pub fn duration_to_minute(duration: TimeDelta) -> Option<i32> {
    ordinary_i32(i32::try_from(duration.num_minutes()).ok()?)
}

/// The second value of a duration, truncated; `None` when it does not fit.
pub fn duration_to_second(duration: TimeDelta) -> Option<i32> {
    ordinary_i32(i32::try_from(duration.num_seconds()).ok()?)
}

/// The time value (milliseconds) of a duration, truncated; `None` when it does not fit.
pub fn duration_to_time(duration: TimeDelta) -> Option<i32> {
    ordinary_i32(i32::try_from(duration.num_milliseconds()).ok()?)
}

/// Constructors from chrono and std types, and accessors back to them.
impl Atom {
    /// A timestamp atom; `None` outside q's timestamp range (about 1707 to 2292).
    pub fn timestamp_from(datetime: NaiveDateTime) -> Option<Self> {
        datetime_to_timestamp(datetime).map(Self::Timestamp)
    }

    /// A timestamp atom for a system time, such as `SystemTime::now()`; `None` outside q's
    /// timestamp range.
    pub fn timestamp_from_system_time(time: SystemTime) -> Option<Self> {
        system_time_to_timestamp(time).map(Self::Timestamp)
    }

    /// A month atom for the month of `date`.
    pub fn month_from(date: NaiveDate) -> Self {
        Self::Month(naive_to_month(date))
    }

    /// A date atom.
    pub fn date_from(date: NaiveDate) -> Self {
        Self::Date(naive_to_date(date))
    }

    /// A datetime atom (q's deprecated `z` type).
    pub fn datetime_from(datetime: NaiveDateTime) -> Self {
        Self::Datetime(naive_to_datetime_f64(datetime))
    }

    /// A timespan atom; `None` when the duration does not fit 64-bit nanoseconds.
    pub fn timespan_from(duration: TimeDelta) -> Option<Self> {
        duration_to_timespan(duration).map(Self::Timespan)
    }

    /// A minute atom for a time of day; seconds are dropped.
    pub fn minute_from(time: NaiveTime) -> Self {
        Self::Minute(naive_time_to_minute(time))
    }

    /// A second atom for a time of day; the fraction is dropped.
    pub fn second_from(time: NaiveTime) -> Self {
        Self::Second(naive_time_to_second(time))
    }

    /// A time atom for a time of day, to the millisecond.
    pub fn time_from(time: NaiveTime) -> Self {
        Self::Time(naive_time_to_time(time))
    }

    /// The date and time of a timestamp, datetime or date (at midnight).
    ///
    /// `None` for other atoms, nulls, infinities and values beyond chrono's range.
    pub fn as_datetime(&self) -> Option<NaiveDateTime> {
        match *self {
            Self::Timestamp(nanos) => timestamp_to_datetime(nanos),
            Self::Datetime(days) => datetime_f64_to_naive(days),
            Self::Date(days) => Some(date_to_naive(days)?.and_time(NaiveTime::MIN)),
            _ => None,
        }
    }

    /// The date of a date, month (its first day), timestamp or datetime.
    ///
    /// `None` for other atoms, nulls, infinities and values beyond chrono's range.
    pub fn as_date(&self) -> Option<NaiveDate> {
        match *self {
            Self::Date(days) => date_to_naive(days),
            Self::Month(months) => month_to_naive(months),
            Self::Timestamp(_) | Self::Datetime(_) => Some(self.as_datetime()?.date()),
            _ => None,
        }
    }

    /// The time of day of a minute, second, time or timespan.
    ///
    /// `None` for other atoms, nulls, infinities, and values outside a day.
    pub fn as_time(&self) -> Option<NaiveTime> {
        match *self {
            Self::Minute(minutes) => minute_to_naive_time(minutes),
            Self::Second(seconds) => second_to_naive_time(seconds),
            Self::Time(millis) => time_to_naive_time(millis),
            Self::Timespan(nanos) => timespan_to_naive_time(nanos),
            _ => None,
        }
    }

    /// The duration of a timespan, minute, second or time, negative and past a day included.
    ///
    /// `None` for other atoms, nulls and infinities.
    pub fn as_duration(&self) -> Option<TimeDelta> {
        match *self {
            Self::Timespan(nanos) => timespan_to_duration(nanos),
            Self::Minute(minutes) => minute_to_duration(minutes),
            Self::Second(seconds) => second_to_duration(seconds),
            Self::Time(millis) => time_to_duration(millis),
            _ => None,
        }
    }

    /// The system time of a timestamp; `None` for other atoms, null and the infinities.
    pub fn as_system_time(&self) -> Option<SystemTime> {
        match *self {
            Self::Timestamp(nanos) => timestamp_to_system_time(nanos),
            _ => None,
        }
    }

    /// Whether this atom is its type's null: `0Nh`, `0Ni`, `0N`, `0Ne`, `0n`, `0Ng`, `" "`,
    /// `` ` ``, `0Np` and so on. Booleans and bytes have no null.
    pub fn is_null(&self) -> bool {
        match self {
            Self::Boolean(_) | Self::Byte(_) => false,
            Self::Guid(guid) => guid.iter().all(|&b| b == 0),
            Self::Short(v) => is_null_i16(*v),
            Self::Int(v)
            | Self::Month(v)
            | Self::Date(v)
            | Self::Minute(v)
            | Self::Second(v)
            | Self::Time(v) => is_null_i32(*v),
            Self::Long(v) | Self::Timestamp(v) | Self::Timespan(v) => is_null_i64(*v),
            Self::Real(v) => is_null_f32(*v),
            Self::Float(v) | Self::Datetime(v) => is_null_f64(*v),
            Self::Char(c) => *c == b' ',
            Self::Symbol(name) => name.is_empty(),
        }
    }

    /// Whether this atom is an infinity of either sign (`0W`, `-0Wi`, `0w`, `0Wp` and so on).
    pub fn is_infinite(&self) -> bool {
        match self {
            Self::Short(v) => is_inf_i16(*v),
            Self::Int(v)
            | Self::Month(v)
            | Self::Date(v)
            | Self::Minute(v)
            | Self::Second(v)
            | Self::Time(v) => is_inf_i32(*v),
            Self::Long(v) | Self::Timestamp(v) | Self::Timespan(v) => is_inf_i64(*v),
            Self::Real(v) => v.is_infinite(),
            Self::Float(v) | Self::Datetime(v) => v.is_infinite(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn hms_nano(h: u32, m: u32, s: u32, nano: u32) -> NaiveTime {
        NaiveTime::from_hms_nano_opt(h, m, s, nano).expect("valid time")
    }

    fn at(date: NaiveDate, time: NaiveTime) -> NaiveDateTime {
        date.and_time(time)
    }

    #[test]
    fn epoch_is_unix_946684800() {
        assert_eq!(EPOCH.and_utc().timestamp(), EPOCH_UNIX_SECONDS);
        assert_eq!(naive_to_date(EPOCH_DATE), 0);
        assert_eq!(naive_to_month(EPOCH_DATE), 0);
    }

    #[test]
    fn timestamps_match_the_reference_vectors() {
        let cases = [
            // 2018.01.26D01:49:00.884361000 (kdbgo).
            (
                at(ymd(2018, 1, 26), hms_nano(1, 49, 0, 884_361_000)),
                570_246_540_884_361_000,
            ),
            // 2000.01.04D05:36:57.600 (qPython).
            (
                at(ymd(2000, 1, 4), hms_nano(5, 36, 57, 600_000_000)),
                279_417_600_000_000,
            ),
            (EPOCH, 0),
            // One nanosecond before the epoch.
            (at(ymd(1999, 12, 31), hms_nano(23, 59, 59, 999_999_999)), -1),
            (at(ymd(1970, 1, 1), NaiveTime::MIN), -EPOCH_UNIX_NANOS),
        ];
        for (datetime, nanos) in cases {
            assert_eq!(timestamp_to_datetime(nanos), Some(datetime), "{nanos}");
            assert_eq!(datetime_to_timestamp(datetime), Some(nanos), "{datetime}");
            assert_eq!(Atom::timestamp_from(datetime), Some(Atom::Timestamp(nanos)));
            assert_eq!(Atom::Timestamp(nanos).as_datetime(), Some(datetime));
        }
    }

    #[test]
    fn timestamp_extremes() {
        for special in [NULL_I64, INF_I64, NEG_INF_I64] {
            assert_eq!(timestamp_to_datetime(special), None);
            assert_eq!(timestamp_to_system_time(special), None);
        }
        // The last and first ordinary values are representable.
        let last = timestamp_to_datetime(INF_I64 - 1).expect("in range");
        assert_eq!(last.year(), 2292);
        assert_eq!(datetime_to_timestamp(last), Some(INF_I64 - 1));
        let first = timestamp_to_datetime(NEG_INF_I64 + 1).expect("in range");
        assert_eq!(first.year(), 1707);
        assert_eq!(datetime_to_timestamp(first), Some(NEG_INF_I64 + 1));
        // Past them, nothing fits.
        assert_eq!(
            datetime_to_timestamp(at(ymd(2300, 1, 1), NaiveTime::MIN)),
            None
        );
        assert_eq!(
            datetime_to_timestamp(at(ymd(1700, 1, 1), NaiveTime::MIN)),
            None
        );
        assert_eq!(
            datetime_to_timestamp(last + TimeDelta::nanoseconds(1)),
            None
        );
    }

    #[test]
    fn system_time_round_trips() {
        let unix_epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            system_time_to_timestamp(unix_epoch),
            Some(-EPOCH_UNIX_NANOS)
        );
        assert_eq!(
            timestamp_to_system_time(-EPOCH_UNIX_NANOS),
            Some(unix_epoch)
        );
        let later = unix_epoch + Duration::new(EPOCH_UNIX_SECONDS as u64 + 5, 7);
        assert_eq!(
            system_time_to_timestamp(later),
            Some(5 * NANOS_PER_SECOND + 7)
        );
        assert_eq!(
            timestamp_to_system_time(5 * NANOS_PER_SECOND + 7),
            Some(later)
        );
        let earlier = unix_epoch - Duration::from_secs(1);
        let nanos = -EPOCH_UNIX_NANOS - NANOS_PER_SECOND;
        assert_eq!(system_time_to_timestamp(earlier), Some(nanos));
        assert_eq!(timestamp_to_system_time(nanos), Some(earlier));
        assert_eq!(Atom::Timestamp(nanos).as_system_time(), Some(earlier));
        assert_eq!(
            Atom::timestamp_from_system_time(earlier),
            Some(Atom::Timestamp(nanos))
        );
    }

    #[test]
    fn months_match_the_reference_vectors() {
        let cases = [
            (ymd(2001, 1, 1), 12),
            (ymd(2000, 1, 1), 0),
            (ymd(1999, 12, 1), -1),
            (ymd(1999, 1, 1), -12),
            (ymd(1998, 12, 1), -13),
            (ymd(2013, 6, 1), 161),
        ];
        for (date, months) in cases {
            assert_eq!(month_to_naive(months), Some(date), "{months}");
            assert_eq!(naive_to_month(date), months, "{date}");
            assert_eq!(Atom::month_from(date), Atom::Month(months));
            assert_eq!(Atom::Month(months).as_date(), Some(date));
        }
        // The day is dropped.
        assert_eq!(naive_to_month(ymd(2001, 1, 31)), 12);
        for special in [NULL_I32, INF_I32, NEG_INF_I32] {
            assert_eq!(month_to_naive(special), None);
        }
        // Months beyond chrono's years.
        assert_eq!(month_to_naive(INF_I32 - 1), None);
    }

    #[test]
    fn dates_match_the_reference_vectors() {
        let cases = [
            (ymd(2001, 1, 1), 366),
            (ymd(2000, 1, 1), 0),
            (ymd(1999, 12, 31), -1),
            (ymd(2013, 6, 10), 4909),
            (ymd(1970, 1, 1), -10957),
        ];
        for (date, days) in cases {
            assert_eq!(date_to_naive(days), Some(date), "{days}");
            assert_eq!(naive_to_date(date), days, "{date}");
            assert_eq!(Atom::date_from(date), Atom::Date(days));
            assert_eq!(Atom::Date(days).as_date(), Some(date));
            assert_eq!(
                Atom::Date(days).as_datetime(),
                Some(date.and_time(NaiveTime::MIN))
            );
        }
        for special in [NULL_I32, INF_I32, NEG_INF_I32] {
            assert_eq!(date_to_naive(special), None);
        }
        assert_eq!(date_to_naive(INF_I32 - 1), None);
        assert_eq!(
            naive_to_date(NaiveDate::MAX),
            NaiveDate::MAX.num_days_from_ce() - 730_120
        );
    }

    #[test]
    fn datetimes_are_fractional_days() {
        let noon = at(ymd(2000, 1, 2), hms_nano(12, 0, 0, 0));
        assert_eq!(datetime_f64_to_naive(1.5), Some(noon));
        assert_eq!(naive_to_datetime_f64(noon), 1.5);
        assert_eq!(Atom::datetime_from(noon), Atom::Datetime(1.5));
        assert_eq!(Atom::Datetime(1.5).as_datetime(), Some(noon));
        let before = at(ymd(1999, 12, 31), hms_nano(18, 0, 0, 0));
        assert_eq!(datetime_f64_to_naive(-0.25), Some(before));
        assert_eq!(naive_to_datetime_f64(before), -0.25);
        // 2001.01.01T00:00:00.000 is 366, and q rounds to the millisecond.
        assert_eq!(
            datetime_f64_to_naive(366.0),
            Some(at(ymd(2001, 1, 1), NaiveTime::MIN))
        );
        let almost = 366.0 + 0.4 / MILLIS_PER_DAY as f64;
        assert_eq!(
            datetime_f64_to_naive(almost),
            Some(at(ymd(2001, 1, 1), NaiveTime::MIN))
        );
        for special in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert_eq!(datetime_f64_to_naive(special), None);
        }
    }

    #[test]
    fn timespans_are_nanoseconds() {
        // 0D05:36:57.600000000 (qPython).
        let span = TimeDelta::nanoseconds(20_217_600_000_000);
        assert_eq!(timespan_to_duration(20_217_600_000_000), Some(span));
        assert_eq!(duration_to_timespan(span), Some(20_217_600_000_000));
        assert_eq!(
            Atom::timespan_from(span),
            Some(Atom::Timespan(20_217_600_000_000))
        );
        assert_eq!(
            Atom::Timespan(20_217_600_000_000).as_time(),
            Some(hms_nano(5, 36, 57, 600_000_000))
        );
        assert_eq!(timespan_to_duration(-1), Some(TimeDelta::nanoseconds(-1)));
        assert_eq!(timespan_to_naive_time(-1), None);
        assert_eq!(timespan_to_naive_time(NANOS_PER_DAY), None);
        assert_eq!(
            timespan_to_naive_time(NANOS_PER_DAY - 1),
            Some(hms_nano(23, 59, 59, 999_999_999))
        );
        for special in [NULL_I64, INF_I64, NEG_INF_I64] {
            assert_eq!(timespan_to_duration(special), None);
            assert_eq!(Atom::Timespan(special).as_duration(), None);
        }
        assert_eq!(duration_to_timespan(TimeDelta::MAX), None);
    }

    #[test]
    fn times_of_day_match_the_reference_vectors() {
        // 12:01 is 721 minutes.
        let minute = hms_nano(12, 1, 0, 0);
        assert_eq!(minute_to_naive_time(721), Some(minute));
        assert_eq!(naive_time_to_minute(minute), 721);
        assert_eq!(Atom::minute_from(minute), Atom::Minute(721));
        assert_eq!(
            Atom::Minute(721).as_duration(),
            Some(TimeDelta::minutes(721))
        );
        // 12:05:00 is 43500 seconds.
        let second = hms_nano(12, 5, 0, 0);
        assert_eq!(second_to_naive_time(43_500), Some(second));
        assert_eq!(naive_time_to_second(second), 43_500);
        assert_eq!(Atom::second_from(second), Atom::Second(43_500));
        assert_eq!(Atom::Second(43_500).as_time(), Some(second));
        // 12:04:59.123 is 43499123 milliseconds.
        let time = hms_nano(12, 4, 59, 123_000_000);
        assert_eq!(time_to_naive_time(43_499_123), Some(time));
        assert_eq!(naive_time_to_time(time), 43_499_123);
        assert_eq!(Atom::time_from(time), Atom::Time(43_499_123));
        assert_eq!(Atom::Time(43_499_123).as_time(), Some(time));
        // Finer digits are dropped.
        assert_eq!(naive_time_to_time(hms_nano(0, 0, 1, 999_999_999)), 1999);
        assert_eq!(naive_time_to_minute(hms_nano(0, 1, 59, 0)), 1);
    }

    #[test]
    fn times_beyond_a_day_are_durations_only() {
        // javakdb's 155554567 ms time: 43:12:34.567.
        assert_eq!(time_to_naive_time(155_554_567), None);
        assert_eq!(
            time_to_duration(155_554_567),
            Some(TimeDelta::milliseconds(155_554_567))
        );
        assert_eq!(minute_to_naive_time(-1), None);
        assert_eq!(minute_to_duration(-1), Some(TimeDelta::minutes(-1)));
        assert_eq!(minute_to_naive_time(1440), None);
        assert_eq!(minute_to_naive_time(1439), Some(hms_nano(23, 59, 0, 0)));
        assert_eq!(second_to_naive_time(86_400), None);
        assert_eq!(second_to_duration(-5), Some(TimeDelta::seconds(-5)));
        assert_eq!(duration_to_minute(TimeDelta::minutes(-3)), Some(-3));
        assert_eq!(duration_to_second(TimeDelta::seconds(90_000)), Some(90_000));
        assert_eq!(
            duration_to_time(TimeDelta::milliseconds(155_554_567)),
            Some(155_554_567)
        );
        assert_eq!(duration_to_time(TimeDelta::days(30)), None);
        for special in [NULL_I32, INF_I32, NEG_INF_I32] {
            assert_eq!(minute_to_naive_time(special), None);
            assert_eq!(second_to_duration(special), None);
            assert_eq!(time_to_duration(special), None);
        }
    }

    #[test]
    fn nulls_and_infinities() {
        assert!(is_null_i16(i16::MIN) && !is_null_i16(0));
        assert!(is_inf_i16(i16::MAX) && is_inf_i16(-i16::MAX) && !is_inf_i16(i16::MIN));
        assert!(is_null_i32(i32::MIN) && is_inf_i32(-i32::MAX) && !is_inf_i32(0));
        assert!(is_null_i64(i64::MIN) && is_inf_i64(i64::MAX) && !is_inf_i64(i64::MIN));
        assert!(is_null_f32(f32::NAN) && !is_null_f32(f32::INFINITY));
        assert!(is_null_f64(f64::NAN) && !is_null_f64(0.0));
        assert!(Atom::Guid([0; 16]).is_null());
        assert!(Atom::Char(b' ').is_null());
        assert!(Atom::Symbol(Vec::new()).is_null());
        assert!(Atom::Datetime(f64::NAN).is_null());
        assert!(Atom::Time(NULL_I32).is_null());
        assert!(!Atom::Boolean(false).is_null());
        assert!(Atom::Timestamp(NEG_INF_I64).is_infinite());
        assert!(Atom::Real(f32::NEG_INFINITY).is_infinite());
        assert!(!Atom::Long(NULL_I64).is_infinite());
        assert_eq!(Atom::Timestamp(NULL_I64).as_datetime(), None);
        assert_eq!(Atom::Date(NULL_I32).as_date(), None);
        assert_eq!(Atom::Long(5).as_datetime(), None);
    }
}
