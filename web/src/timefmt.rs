//! Times as a person reads them: clock times in UTC to the minute, windows as "last hour
//! (05:38–06:38 UTC)", ages as "3 min ago". Sub-second digits are for machines.

use archtrace_analyzer::time::{parse_rfc3339, rfc3339};

const MINUTE: i64 = 60_000_000_000;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// "05:38" (UTC).
pub fn clock(ns: i64) -> String {
    rfc3339(ns)[11..16].to_owned()
}

/// "4 Dec" (UTC).
pub fn day(ns: i64) -> String {
    let text = rfc3339(ns);
    let month: usize = text[5..7].parse().unwrap_or(1);
    let day: u32 = text[8..10].parse().unwrap_or(1);
    format!("{day} {}", MONTHS[(month - 1).min(11)])
}

/// "1 hour", "15 min", "24 hours", "7 days": a length, rounded to what it is closest to.
pub fn length(ns: i64) -> String {
    let minutes = (ns as f64 / MINUTE as f64).round() as i64;
    let plural = |n: i64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if minutes < 60 {
        format!("{} min", minutes.max(1))
    } else if minutes % (24 * 60) == 0 {
        plural(minutes / (24 * 60), "day")
    } else if minutes % 60 == 0 {
        plural(minutes / 60, "hour")
    } else {
        format!("{} h {} min", minutes / 60, minutes % 60)
    }
}

/// A window: "last hour (05:38–06:38 UTC)" when it ends now, else "4 Dec 05:38 – 5 Dec 06:38 UTC"
/// (one date when both ends are on the same day).
pub fn window(start_ns: i64, end_ns: i64, now_ns: i64) -> String {
    if start_ns == i64::MIN || end_ns == i64::MAX {
        return "all of the data".to_owned();
    }
    let (from, to) = (clock(start_ns), clock(end_ns));
    let same_day = day(start_ns) == day(end_ns);
    if now_ns.saturating_sub(end_ns).abs() < MINUTE {
        let length = match length(end_ns - start_ns).as_str() {
            "1 hour" => "hour".to_owned(),
            "1 day" => "day".to_owned(),
            other => other.to_owned(),
        };
        if same_day {
            format!("last {length} ({from}–{to} UTC)")
        } else {
            format!(
                "last {length} ({} {from} – {} {to} UTC)",
                day(start_ns),
                day(end_ns)
            )
        }
    } else if same_day {
        format!("{} {from}–{to} UTC", day(start_ns))
    } else {
        format!("{} {from} – {} {to} UTC", day(start_ns), day(end_ns))
    }
}

/// The window of RFC 3339 bounds, or the bounds as given when they do not parse.
pub fn window_of(start: &str, end: &str, now_ns: i64) -> String {
    match (parse_rfc3339(start), parse_rfc3339(end)) {
        (Some(s), Some(e)) => window(s, e, now_ns),
        _ => format!("{start} – {end}"),
    }
}

/// "just now", "3 min ago", "2 h ago", "5 days ago".
pub fn ago(ns: i64, now_ns: i64) -> String {
    let minutes = (now_ns - ns) / MINUTE;
    if minutes < 1 {
        "just now".to_owned()
    } else if minutes < 120 {
        format!("{minutes} min ago")
    } else if minutes < 48 * 60 {
        format!("{} h ago", minutes / 60)
    } else {
        format!("{} days ago", minutes / (24 * 60))
    }
}

/// An RFC 3339 time as an age ("3 min ago"), or as given when it does not parse.
pub fn ago_of(time: &str, now_ns: i64) -> String {
    parse_rfc3339(time).map_or_else(|| time.to_owned(), |ns| ago(ns, now_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-04T06:38:03.818668Z
    const NOW: i64 = 1_796_366_283_818_668_000;
    const HOUR: i64 = 60 * MINUTE;

    #[test]
    fn windows_read_as_a_person_reads_them() {
        assert_eq!(rfc3339(NOW), "2026-12-04T06:38:03.818668Z");
        assert_eq!(window(NOW - HOUR, NOW, NOW), "last hour (05:38–06:38 UTC)");
        assert_eq!(
            window(NOW - 15 * MINUTE, NOW, NOW),
            "last 15 min (06:23–06:38 UTC)"
        );
        assert_eq!(
            window(NOW - 24 * HOUR, NOW, NOW),
            "last day (3 Dec 06:38 – 4 Dec 06:38 UTC)"
        );
        assert_eq!(
            window(NOW - 2 * HOUR, NOW - HOUR, NOW),
            "4 Dec 04:38–05:38 UTC"
        );
        assert_eq!(
            window(NOW - 30 * HOUR, NOW - 2 * HOUR, NOW),
            "3 Dec 00:38 – 4 Dec 04:38 UTC"
        );
        assert_eq!(window(i64::MIN, i64::MAX, NOW), "all of the data");
        assert_eq!(length(90 * MINUTE), "1 h 30 min");
        assert_eq!(length(7 * 24 * HOUR), "7 days");
    }

    #[test]
    fn ages_are_rounded_to_what_helps() {
        assert_eq!(ago(NOW - 20_000_000_000, NOW), "just now");
        assert_eq!(ago(NOW - 3 * MINUTE, NOW), "3 min ago");
        assert_eq!(ago(NOW - 5 * HOUR, NOW), "5 h ago");
        assert_eq!(ago(NOW - 72 * HOUR, NOW), "3 days ago");
        assert_eq!(ago_of("not a time", NOW), "not a time");
    }
}
