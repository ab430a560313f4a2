//! RFC 3339 timestamps without a date library (the analyzer only formats UTC instants), and the
//! instants users type: `2h` before now or a timestamp.

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds, UTC).
pub fn rfc3339(unix_nanos: i64) -> String {
    let micros = unix_nanos.div_euclid(1_000);
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let time = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Written digit by digit: snapshots and events format hundreds of thousands of these.
    // Nanoseconds in an i64 are years 1677 to 2262: always four digits.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, digits: usize, mut value: i64| {
        for at in (end - digits..end).rev() {
            text[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(4, 4, year);
    put(7, 2, i64::from(month));
    put(10, 2, i64::from(day));
    put(13, 2, time / 3_600);
    put(16, 2, time % 3_600 / 60);
    put(19, 2, time % 60);
    put(26, 6, fraction);
    String::from_utf8_lossy(&text).into_owned()
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses what [`rfc3339`] writes (and any `YYYY-MM-DDTHH:MM:SS[.frac]Z`) back to Unix ns.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (
        clock_parts.next()??,
        clock_parts.next()??,
        clock_parts.next()??,
    );
    let nanos: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").get(..9)?.parse().ok()?
    };
    // Days from civil (Howard Hinnant's algorithm), the inverse of `civil_from_days`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000_000) + nanos)
}

/// An instant given as an RFC 3339 timestamp (`2026-11-25T10:00:00Z`) or as a duration before
/// `now` (`15m`, `2h`, `1d`). Returns Unix nanoseconds.
/// Text that is neither a duration before now nor an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a duration before now (15m, 2h, 7d) nor an RFC 3339 time (2026-11-25T10:00:00Z)")]
pub struct InstantError(pub String);

pub fn parse_instant(text: &str, now_ns: i64) -> Result<i64, InstantError> {
    let text = text.trim();
    if let Ok(duration) = humantime::parse_duration(text) {
        let back = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now_ns.saturating_sub(back));
    }
    humantime::parse_rfc3339_weak(text)
        .map(|time| {
            time.duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        })
        .map_err(|_| InstantError(text.to_owned()))
}

/// The current time in Unix nanoseconds (0 before 1970, `i64::MAX` after 2262).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_durations_before_now_or_timestamps() {
        let now = 1_000_000_000_000_000_000;
        assert_eq!(parse_instant("2h", now), Ok(now - 7_200_000_000_000));
        assert_eq!(
            parse_instant("1970-01-01T00:00:01Z", now),
            Ok(1_000_000_000)
        );
        let err = parse_instant("yesterday", now).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T12:34:56.789012Z, a leap day, computed independently.
        assert_eq!(
            rfc3339(1_709_210_096_789_012_345),
            "2024-02-29T12:34:56.789012Z"
        );
        assert_eq!(rfc3339(-1_000), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(i64::MIN), "1677-09-21T00:12:43.145224Z");
        assert_eq!(rfc3339(i64::MAX), "2262-04-11T23:47:16.854775Z");
    }

    #[test]
    fn digits_written_one_by_one_read_as_formatted_ones() {
        for nanos in (0..2_000).map(|i| i * 1_234_567_890_123_457 - 40_000_000_000_000_000) {
            let written = rfc3339(nanos);
            let micros = nanos.div_euclid(1_000);
            let seconds = micros.div_euclid(1_000_000);
            let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
            let time = seconds.rem_euclid(86_400);
            let formatted = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                time / 3_600,
                time % 3_600 / 60,
                time % 60,
                micros.rem_euclid(1_000_000)
            );
            assert_eq!(written, formatted);
        }
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parsing_inverts_formatting() {
        for nanos in [
            0,
            1_709_210_096_789_012_000,
            951_782_400_000_000_000,
            -1_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(nanos)), Some(nanos));
        }
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56Z"),
            Some(1_709_210_096_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
