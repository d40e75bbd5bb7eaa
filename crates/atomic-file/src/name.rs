//! The one backup naming scheme, for local backups and for the pipeline's on the node.

use std::time::{SystemTime, UNIX_EPOCH};

/// `<file_name>.<YYYYMMDDTHHMMSS>.<nanoseconds, 9 digits>Z`, in UTC: names sort by time, and
/// two backups in the same second still differ (a second's resolution let one enable
/// overwrite another's backup). A time before 1970 counts as 1970.
pub fn backup_file_name(file_name: &str, now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{file_name}.{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): std has no calendar, and one function does not warrant a date crate.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_utc_civil_dates_with_nanoseconds() {
        let at = |secs, nanos| backup_file_name("m.yaml", UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(0, 0), "m.yaml.19700101T000000.000000000Z");
        assert_eq!(at(951_782_400, 1), "m.yaml.20000229T000000.000000001Z");
        assert_eq!(
            at(1_795_651_200 + 3_723, 999_999_999),
            "m.yaml.20261126T010203.999999999Z"
        );
        assert_eq!(at(4_102_444_799, 0), "m.yaml.20991231T235959.000000000Z");
        // 2100 is not a leap year.
        assert_eq!(at(4_107_542_399, 0), "m.yaml.21000228T235959.000000000Z");
        assert_eq!(at(4_107_542_400, 0), "m.yaml.21000301T000000.000000000Z");
        assert_eq!(
            backup_file_name("m", UNIX_EPOCH - Duration::from_secs(1)),
            "m.19700101T000000.000000000Z"
        );
    }

    #[test]
    fn names_within_one_second_differ_and_sort_by_time() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_651_200);
        let names: Vec<_> = [0, 1, 10, 500_000_000, 1_000_000_000]
            .into_iter()
            .map(|n| backup_file_name("m", base + Duration::from_nanos(n)))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, names);
    }
}
