//! The window every view shows: parsed once here for the CLI, the admin API and the viewer, with
//! one validation and one default.

use archtrace_analyzer::time::{parse_instant, rfc3339, InstantError};

/// How far back a window reaches when `since` is not given.
pub const DEFAULT_SINCE: &str = "1h";

/// A time window in Unix nanoseconds, `[since, until)`, optionally narrowed to the traces of one
/// `deployment.environment.name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub since_ns: i64,
    pub until_ns: i64,
    pub environment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("since: {0}")]
    Since(InstantError),
    #[error("until: {0}")]
    Until(InstantError),
    #[error("at: {0}")]
    At(InstantError),
    #[error("the window's start ({since}) must be before its end ({until})")]
    Empty { since: String, until: String },
}

impl Window {
    /// Everything, for trace files read without `--since`/`--until`: the snapshot's window is
    /// then the range of the spans read.
    pub const ALL: Window = Window {
        since_ns: i64::MIN,
        until_ns: i64::MAX,
        environment: None,
    };

    /// A window from what a user typed: `since` a duration before `now` (`2h`) or an RFC 3339
    /// time, [`DEFAULT_SINCE`] when absent; `until` likewise, `now` when absent.
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        now_ns: i64,
    ) -> Result<Window, WindowError> {
        let since_ns =
            parse_instant(since.unwrap_or(DEFAULT_SINCE), now_ns).map_err(WindowError::Since)?;
        let until_ns = match until {
            Some(until) => parse_instant(until, now_ns).map_err(WindowError::Until)?,
            None => now_ns,
        };
        Window::new(since_ns, until_ns)
    }

    /// A window over input that has its own extent (trace files): a bound not given is open,
    /// and neither given is [`Window::ALL`].
    /// The architecture as it was at `at`: the hour before it (the default window's length).
    pub fn at(at: &str, now_ns: i64) -> Result<Window, WindowError> {
        let until_ns = parse_instant(at, now_ns).map_err(WindowError::At)?;
        let length = now_ns - parse_instant(DEFAULT_SINCE, now_ns).expect("a valid default");
        Window::new(until_ns.saturating_sub(length), until_ns)
    }

    pub fn parse_open(
        since: Option<&str>,
        until: Option<&str>,
        now_ns: i64,
    ) -> Result<Window, WindowError> {
        let since_ns = since
            .map(|s| parse_instant(s, now_ns).map_err(WindowError::Since))
            .transpose()?
            .unwrap_or(i64::MIN);
        let until_ns = until
            .map(|u| parse_instant(u, now_ns).map_err(WindowError::Until))
            .transpose()?
            .unwrap_or(i64::MAX);
        Window::new(since_ns, until_ns)
    }

    /// A window of explicit bounds; empty or reversed ones are refused.
    pub fn new(since_ns: i64, until_ns: i64) -> Result<Window, WindowError> {
        if since_ns >= until_ns {
            return Err(WindowError::Empty {
                since: rfc3339(since_ns),
                until: rfc3339(until_ns),
            });
        }
        Ok(Window {
            since_ns,
            until_ns,
            environment: None,
        })
    }

    pub fn in_environment(self, environment: Option<String>) -> Window {
        Window {
            environment,
            ..self
        }
    }

    /// Whether this is [`Window::ALL`] in time (any environment).
    pub fn is_all(&self) -> bool {
        self.since_ns == i64::MIN && self.until_ns == i64::MAX
    }

    /// The window of the same length just before this one, in the same environment.
    pub fn previous(&self) -> Window {
        let length = self.until_ns.saturating_sub(self.since_ns);
        Window {
            since_ns: self.since_ns.saturating_sub(length),
            until_ns: self.since_ns,
            environment: self.environment.clone(),
        }
    }

    pub fn length_ns(&self) -> i64 {
        self.until_ns.saturating_sub(self.since_ns)
    }

    /// `start – end` in RFC 3339, for labels.
    pub fn describe(&self) -> String {
        format!("{} – {}", rfc3339(self.since_ns), rfc3339(self.until_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000_000_000_000;
    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn at_is_the_hour_before_an_instant() {
        let window = Window::at("2h", NOW).unwrap();
        assert_eq!(
            (window.since_ns, window.until_ns),
            (NOW - 3 * HOUR, NOW - 2 * HOUR)
        );
        let err = Window::at("yesterday-ish", NOW).unwrap_err().to_string();
        assert!(err.starts_with("at: "), "{err}");
    }

    #[test]
    fn the_default_window_is_the_last_hour() {
        let window = Window::parse(None, None, NOW).unwrap();
        assert_eq!((window.since_ns, window.until_ns), (NOW - HOUR, NOW));
        let window = Window::parse(Some("2h"), Some("1h"), NOW).unwrap();
        assert_eq!(
            (window.since_ns, window.until_ns),
            (NOW - 2 * HOUR, NOW - HOUR)
        );
    }

    #[test]
    fn an_empty_or_reversed_window_is_an_error_everywhere() {
        for (since, until) in [("1h", "1h"), ("1h", "2h")] {
            let err = Window::parse(Some(since), Some(until), NOW).unwrap_err();
            assert!(matches!(err, WindowError::Empty { .. }), "{err}");
            let err = Window::parse_open(Some(since), Some(until), NOW).unwrap_err();
            assert!(matches!(err, WindowError::Empty { .. }), "{err}");
        }
        assert!(err_text(Window::parse(None, Some("2h"), NOW)).contains("must be before its end"));
    }

    #[test]
    fn bad_instants_name_the_bound() {
        assert!(err_text(Window::parse(Some("yesterday"), None, NOW)).starts_with("since: "));
        assert!(err_text(Window::parse_open(None, Some("soon"), NOW)).starts_with("until: "));
    }

    #[test]
    fn open_windows_keep_missing_bounds_open() {
        assert!(Window::parse_open(None, None, NOW).unwrap().is_all());
        let from = Window::parse_open(Some("2h"), None, NOW).unwrap();
        assert_eq!((from.since_ns, from.until_ns), (NOW - 2 * HOUR, i64::MAX));
    }

    #[test]
    fn the_previous_window_has_the_same_length() {
        let window = Window::parse(Some("2h"), Some("1h"), NOW)
            .unwrap()
            .in_environment(Some("staging".into()));
        let previous = window.previous();
        assert_eq!(
            (previous.since_ns, previous.until_ns),
            (NOW - 3 * HOUR, NOW - 2 * HOUR)
        );
        assert_eq!(previous.environment.as_deref(), Some("staging"));
    }

    fn err_text(result: Result<Window, WindowError>) -> String {
        result.unwrap_err().to_string()
    }
}
