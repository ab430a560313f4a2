//! Architecture history of a window from any source: the steps it derived, replayed by
//! [`archtrace_analyzer::history`], plus the findings that appeared or were resolved between
//! consecutive slices of the window.

use archtrace_analyzer::analysis::{findings_only, Settings};
use archtrace_analyzer::history::{
    self, check_step, finding_events, parse_kinds, EventFilter, History, HistorySettings, HOUR_NS,
};
use std::sync::atomic::{AtomicUsize, Ordering};

use archtrace_analyzer::snapshot::{Finding, Severity};

use crate::{QueryError, SnapshotSource, Window};

const DAY_NS: i64 = 24 * HOUR_NS;
/// Findings are compared between at most about this many slices (one analysis each).
const MAX_FINDING_SLICES: i64 = 48;

/// What a history is asked for with.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    pub history: HistorySettings,
    /// For the findings compared between slices.
    pub analysis: Settings,
}

impl HistoryQuery {
    /// The history settings, with fan-in and fan-out thresholds taken from the analysis'.
    pub fn new(history: HistorySettings, analysis: Settings) -> HistoryQuery {
        HistoryQuery {
            history: HistorySettings {
                fan_in: analysis.thresholds.hub_min_fan_in,
                fan_out: analysis.thresholds.hub_min_fan_out,
                ..history
            },
            analysis,
        }
    }
}

/// The slice findings are compared over: the step, or a day (a week) when the window holds
/// more than [`MAX_FINDING_SLICES`] of them.
pub fn finding_slice(step_ns: i64, window_ns: i64) -> i64 {
    [step_ns, DAY_NS, 7 * DAY_NS]
        .into_iter()
        .find(|slice| window_ns / slice <= MAX_FINDING_SLICES)
        .unwrap_or(7 * DAY_NS)
        .max(step_ns)
}

/// The history of `window` from `source`: events (structural ones from the steps, finding
/// ones from an analysis per slice) and trend points.
pub fn history<S: SnapshotSource + ?Sized>(
    source: &S,
    window: &Window,
    query: &HistoryQuery,
) -> Result<History, QueryError> {
    let bounded;
    let window = if window.since_ns == i64::MIN || window.until_ns == i64::MAX {
        // An open window (all of some trace files) is where the data is.
        let seen = source.snapshot(window)?.window;
        let parse = archtrace_analyzer::time::parse_rfc3339;
        let (Some(since), Some(until)) = (parse(&seen.start), parse(&seen.end)) else {
            return Err(QueryError::Unsupported(
                "history needs a bounded window: give --since (e.g. --since 7d)",
            ));
        };
        bounded = Window::new(since, until.max(since + 1))?;
        &bounded
    } else {
        window
    };
    if window.environment.is_some() {
        return Err(QueryError::Unsupported(
            "history is kept for all environments together: leave out the environment",
        ));
    }
    let settings = &query.history;
    let step = settings.step_ns.max(1);
    let since = window.since_ns.div_euclid(step) * step;

    // Slices on whole multiples of their length, so that runs over overlapping windows (the
    // notifier's) judge the same slices at the same times; the slice holding `since` is
    // compared with the one before it, and each slice with the last one that had traffic.
    let slice = finding_slice(step, window.until_ns - since);
    let first = since.div_euclid(slice) * slice;
    // Whole slices only: a slice cut short by the window's end has less traffic, and its
    // thresholds on counts would "resolve" findings that are still there.
    let starts: Vec<i64> = (0..)
        .map(|n| first - slice + n * slice)
        .take_while(|start| start + slice <= window.until_ns)
        .collect();
    // The steps are read and replayed while the slices are analysed: neither needs the other.
    let (history, findings) = std::thread::scope(|scope| {
        let findings = scope.spawn(|| slice_findings(source, &starts, slice, query));
        let history = replay(source, window, since, settings);
        let findings = findings
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (history, findings)
    });
    let mut history = history?;
    let mut slices = Vec::new();
    for (start, findings) in starts.iter().zip(findings?) {
        // A slice without traffic tells nothing: its findings are not resolved, only unseen.
        if let Some(findings) = findings {
            slices.push((*start, findings));
        }
    }
    history.events.extend(finding_events(&slices));
    history::sort_events(&mut history.events);
    Ok(history)
}

/// The structural events and trends of `window`, replayed from its steps and those before it
/// that tell what existed already.
fn replay<S: SnapshotSource + ?Sized>(
    source: &S,
    window: &Window,
    since: i64,
    settings: &HistorySettings,
) -> Result<History, QueryError> {
    let step = settings.step_ns.max(1);
    // What existed before the window must be known to tell what is new in it.
    let lookback = since.saturating_sub(settings.gone_after_ns.div_euclid(step) * step + step);
    let mut periods = source.periods(lookback, window.until_ns, step)?;
    let mut replayed = history::replay(&periods, window.since_ns, window.until_ns, settings);
    if !replayed.missing.is_empty() {
        // The releases of the few steps whose events name them; the set of events is the same
        // without them, so a second replay words them.
        source.fill_versions(step, &mut periods, &replayed.missing)?;
        replayed = history::replay(&periods, window.since_ns, window.until_ns, settings);
    }
    Ok(replayed.history)
}

/// A slice's findings; `None` when it had no traffic.
type SliceFindings = Option<Vec<Finding>>;

/// The findings of the slices starting at `starts`, `None` for one without traffic. Analysed
/// on every core but one, which reads the steps meanwhile ([`history`]): the source reads one
/// slice at a time, the analyses run side by side.
fn slice_findings<S: SnapshotSource + ?Sized>(
    source: &S,
    starts: &[i64],
    slice: i64,
    query: &HistoryQuery,
) -> Result<Vec<SliceFindings>, QueryError> {
    let next = AtomicUsize::new(0);
    let analyse = || -> Result<Vec<(usize, SliceFindings)>, QueryError> {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(start) = starts.get(index) else {
                return Ok(done);
            };
            let snapshot =
                source.snapshot_without_releases(&Window::new(*start, start + slice)?)?;
            let traffic = !snapshot.edges.is_empty();
            done.push((
                index,
                traffic.then(|| findings_only(&snapshot, &query.analysis)),
            ));
        }
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .clamp(1, starts.len().max(1));
    let mut out = vec![None; starts.len()];
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..workers).map(|_| scope.spawn(analyse)).collect();
        for worker in running {
            let done = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            for (index, findings) in done {
                out[index] = findings;
            }
        }
        Ok(out)
    })
}

/// The parameters of `GET /api/v1/events` and the History page, as given.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct EventsRequest {
    pub since: Option<String>,
    pub until: Option<String>,
    pub at: Option<String>,
    pub step: Option<String>,
    pub gone_after: Option<String>,
    /// Comma-separated event kinds.
    pub kind: Option<String>,
    /// The lowest severity shown.
    pub severity: Option<String>,
    pub service: Option<String>,
    /// Finding thresholds as a JSON object of a thresholds file's fields (those left out keep
    /// their defaults): what `archtrace events --server --thresholds` sends.
    pub thresholds: Option<String>,
}

/// What [`EventsRequest::resolve`] makes of a request.
pub struct ResolvedEvents {
    pub window: Window,
    pub query: HistoryQuery,
    pub filter: EventFilter,
}

impl EventsRequest {
    /// The window (the last 7 days unless given), the history settings and the filter; an
    /// error names the parameter at fault.
    pub fn resolve(&self, now_ns: i64, analysis: &Settings) -> Result<ResolvedEvents, String> {
        fn given(value: &Option<String>) -> Option<&str> {
            value.as_deref().filter(|v| !v.trim().is_empty())
        }
        let window = match given(&self.at) {
            Some(at) => Window::at(at, now_ns),
            None => Window::parse(
                Some(given(&self.since).unwrap_or("7d")),
                given(&self.until),
                now_ns,
            ),
        }
        .map_err(|err| err.to_string())?;
        let duration = |name: &str, value: Option<&str>, default_ns: i64| match value {
            None => Ok(default_ns),
            Some(text) => humantime::parse_duration(text.trim())
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .map_err(|err| format!("{name}={text:?}: {err} (e.g. 1h, 30m, 2d)")),
        };
        let defaults = HistorySettings::default();
        let step_ns = duration("step", given(&self.step), defaults.step_ns)?;
        check_step(step_ns).map_err(|why| format!("step: {why}"))?;
        let gone_after_ns = duration(
            "gone_after",
            given(&self.gone_after),
            defaults.gone_after_ns,
        )?
        .max(step_ns);
        let kinds = match given(&self.kind) {
            Some(text) => parse_kinds(text)?,
            None => Default::default(),
        };
        let min_severity = match given(&self.severity) {
            Some(text) => Severity::parse(text)
                .ok_or_else(|| format!("severity={text:?}: expected info, warning or error"))?,
            None => Severity::Info,
        };
        let analysis = match given(&self.thresholds) {
            Some(json) => Settings {
                thresholds: serde_json::from_str(json).map_err(|err| {
                    format!(
                        "thresholds: {err} (expected a JSON object of thresholds, \
                         e.g. {{\"hub_min_fan_in\":5}})"
                    )
                })?,
                ..analysis.clone()
            },
            None => analysis.clone(),
        };
        Ok(ResolvedEvents {
            window,
            query: HistoryQuery::new(
                HistorySettings {
                    step_ns,
                    gone_after_ns,
                    ..defaults
                },
                analysis,
            ),
            filter: EventFilter {
                kinds,
                min_severity,
                service: given(&self.service).map(str::to_owned),
            },
        })
    }
}
