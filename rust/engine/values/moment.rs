//! Times as the readers give them. A `timestamptz` arrives as microseconds
//! since 2000-01-01 UTC (its binary form; `infinity` and `-infinity` are the
//! two ends of `i64`). A reader gives a time as microseconds since the Unix
//! epoch when it falls within the years 1 to 9999 in UTC, what the clients'
//! datetime types hold (Python's among them), and any other as text: only
//! SQL written by hand stores one (durable's own writes refuse them), and a
//! listing shows such a row as it is rather than failing as a whole.

use std::error::Error;

use tokio_postgres::types::{FromSql, Type, accepts};

/// A time read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moment {
    /// Within the years 1 to 9999 in UTC: microseconds since the Unix epoch.
    Micros(i64),
    /// Outside them, as text: `infinity`, `-infinity`, or the time in UTC
    /// (`10000-01-01T00:00:00.000000Z`, `0001-12-31T10:00:00.000000Z BC`).
    Beyond(String),
}

/// 0001-01-01T00:00:00Z, the first microsecond in range, since the Unix epoch.
const FIRST: i128 = -62_135_596_800_000_000;
/// 10000-01-01T00:00:00Z, the first microsecond past the range.
const END: i128 = 253_402_300_800_000_000;
/// 2000-01-01T00:00:00Z (Postgres's epoch) since the Unix epoch.
const POSTGRES_EPOCH: i128 = 946_684_800_000_000;
const MICROS_PER_DAY: i128 = 86_400_000_000;

impl Moment {
    /// The time `micros` microseconds after 2000-01-01 UTC (the binary form
    /// of `timestamptz`).
    pub fn from_postgres(micros: i64) -> Moment {
        match micros {
            i64::MAX => Moment::Beyond("infinity".to_owned()),
            i64::MIN => Moment::Beyond("-infinity".to_owned()),
            _ => {
                let unix = i128::from(micros) + POSTGRES_EPOCH;
                match i64::try_from(unix) {
                    Ok(unix) if (FIRST..END).contains(&i128::from(unix)) => Moment::Micros(unix),
                    _ => Moment::Beyond(utc_text(unix)),
                }
            }
        }
    }
}

/// `micros` since the Unix epoch as an ISO 8601 time in UTC to the
/// microsecond, a year before 1 written as Postgres writes it (`0001 ... BC`
/// for the year before 1).
fn utc_text(micros: i128) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (seconds, fraction) = (of_day / 1_000_000, of_day % 1_000_000);
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let (shown, era) = if year <= 0 { (1 - year, " BC") } else { (year, "") };
    format!("{shown:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{fraction:06}Z{era}")
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01;
/// the year before 1 is 0 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

impl<'a> FromSql<'a> for Moment {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "a timestamp is 8 bytes")?;
        Ok(Moment::from_postgres(i64::from_be_bytes(bytes)))
    }

    accepts!(TIMESTAMPTZ, TIMESTAMP);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microseconds since 2000-01-01 of `unix` microseconds since 1970.
    fn postgres(unix: i128) -> i64 {
        i64::try_from(unix - POSTGRES_EPOCH).unwrap()
    }

    #[test]
    fn the_years_1_to_9999_are_microseconds_since_the_unix_epoch() {
        assert_eq!(Moment::from_postgres(0), Moment::Micros(946_684_800_000_000));
        let first = i64::try_from(FIRST).unwrap();
        assert_eq!(Moment::from_postgres(postgres(FIRST)), Moment::Micros(first));
        let last = i64::try_from(END - 1).unwrap();
        assert_eq!(Moment::from_postgres(postgres(END - 1)), Moment::Micros(last));
    }

    #[test]
    fn others_are_text_as_postgres_means_them() {
        let text = |unix: i128| match Moment::from_postgres(postgres(unix)) {
            Moment::Beyond(text) => text,
            Moment::Micros(micros) => panic!("{micros} read as in range"),
        };
        assert_eq!(text(END), "10000-01-01T00:00:00.000000Z");
        assert_eq!(text(FIRST - 1), "0001-12-31T23:59:59.999999Z BC");
        // 0001-01-01T00:00:00+14:00, 14 hours before the year 1 in UTC.
        assert_eq!(text(FIRST - 14 * 3_600_000_000), "0001-12-31T10:00:00.000000Z BC");
        // Postgres's first and last microseconds (as Postgres counts them).
        assert_eq!(text(-210_835_180_800_000_000), "4713-11-24T00:00:00.000000Z BC");
        assert_eq!(text(9_224_318_015_999_999_999), "294276-12-31T23:59:59.999999Z");
        assert_eq!(Moment::from_postgres(i64::MAX), Moment::Beyond("infinity".to_owned()));
        assert_eq!(Moment::from_postgres(i64::MIN), Moment::Beyond("-infinity".to_owned()));
    }
}
