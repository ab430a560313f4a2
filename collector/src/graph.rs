//! Snapshots of the architecture: offline from trace files, or from the spans in a store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::derive::NoLookup;
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::{Span, TraceId};
use archtrace_store::buckets::MINUTE_NS;
use archtrace_store::read::Reader;
use archtrace_store::QueryError;
use archtrace_web::charts::{self, Point};

use crate::import::{self, Detail, Format, ImportError, OnBadInput, Source, Summary};

/// Spans grouped by trace, in order of first appearance, until the input ends.
#[derive(Default)]
pub struct TraceGroups {
    order: Vec<TraceId>,
    traces: HashMap<TraceId, Vec<Span>>,
}

impl TraceGroups {
    pub fn push(&mut self, spans: Vec<Span>) {
        for span in spans {
            match self.traces.get_mut(&span.trace_id) {
                Some(trace) => trace.push(span),
                None => {
                    self.order.push(span.trace_id);
                    self.traces.insert(span.trace_id, vec![span]);
                }
            }
        }
    }

    /// Derives every trace (complete, since the input has ended) into one aggregate; with a
    /// window, only the traces that have a span starting in it.
    pub fn aggregate(self, window: Option<(i64, i64)>) -> Aggregate {
        self.derive(window, None)
    }

    /// The earliest and latest span start of what was read.
    pub fn span_range(&self) -> Option<(i64, i64)> {
        self.traces
            .values()
            .flatten()
            .map(|s| s.start_ns)
            .fold(None, |range, t| match range {
                None => Some((t, t)),
                Some((a, b)) => Some((a.min(t), b.max(t))),
            })
    }

    /// Like [`TraceGroups::aggregate`], and also adds each trace's observations to `buckets`
    /// (derived once for both).
    pub fn derive(
        mut self,
        window: Option<(i64, i64)>,
        mut buckets: Option<&mut Buckets>,
    ) -> Aggregate {
        let mut aggregate = Aggregate::default();
        let mut scratch = Vec::new();
        for trace_id in self.order {
            let Some(spans) = self.traces.remove(&trace_id) else {
                continue;
            };
            let in_window = window.is_none_or(|(since, until)| {
                spans
                    .iter()
                    .any(|s| s.start_ns >= since && s.start_ns < until)
            });
            if in_window {
                aggregate.add_trace(&spans, &NoLookup, &mut scratch);
                if let Some(buckets) = buckets.as_deref_mut() {
                    scratch.sort_by_key(|o| o.start_ns);
                    buckets.add_sorted_observations(&scratch);
                }
            }
        }
        aggregate
    }
}

/// Reads trace files (any importable format) and derives their architecture, with no store.
/// Without a window, the window is everything in the files.
pub fn snapshot_from_files(
    paths: &[PathBuf],
    format: Option<Format>,
    on_bad: OnBadInput,
    window: Option<(i64, i64)>,
) -> Result<(Snapshot, Summary), ImportError> {
    let (groups, summary) = read_files(paths, format, on_bad)?;
    let aggregate = groups.aggregate(window);
    let window = window.or(aggregate.span_range).unwrap_or((0, 0));
    Ok((Snapshot::from_aggregate(&aggregate, window), summary))
}

/// Reads every span of the files, grouped by trace.
fn read_files(
    paths: &[PathBuf],
    format: Option<Format>,
    on_bad: OnBadInput,
) -> Result<(TraceGroups, Summary), ImportError> {
    let mut groups = TraceGroups::default();
    let mut summary = Summary::default();
    for path in paths {
        import::read_source(
            Source::open(path)?,
            format,
            on_bad,
            Detail::Drop,
            Arc::new(AtomicU64::new(0)),
            &mut summary,
            &mut |spans| {
                groups.push(spans);
                Ok(())
            },
        )?;
    }
    Ok((groups, summary))
}

/// Each service's traffic per time bucket.
pub type ServiceSeries = BTreeMap<String, Vec<Point>>;

/// Reads trace files for a report: the snapshot, and each service's traffic over time in at
/// most about 120 buckets of whole minutes.
pub fn report_from_files(
    paths: &[PathBuf],
    format: Option<Format>,
    on_bad: OnBadInput,
    window: Option<(i64, i64)>,
) -> Result<(Snapshot, ServiceSeries, Summary), ImportError> {
    let (groups, summary) = read_files(paths, format, on_bad)?;
    let range = groups.span_range().unwrap_or((0, 1));
    let (first, last) = match window {
        Some((since, until)) => (since.max(range.0), until.min(range.1)),
        None => range,
    };
    let minutes = ((last - first) / MINUTE_NS / 120).max(1);
    let mut buckets = Buckets::new(minutes * MINUTE_NS);
    let aggregate = groups.derive(window, Some(&mut buckets));
    let window = window.or(aggregate.span_range).unwrap_or((0, 0));
    let snapshot = Snapshot::from_aggregate(&aggregate, window);
    let series = snapshot
        .nodes
        .iter()
        .map(|node| {
            let points = charts::series_of_buckets(
                &node.id,
                buckets
                    .buckets
                    .iter()
                    .map(|(start, bucket)| (*start, bucket)),
            );
            (node.id.clone(), points)
        })
        .collect();
    Ok((snapshot, series, summary))
}

/// Each service's traffic over `[since, until)` from the store's buckets, for a report.
pub fn series_from_store(
    reader: &Reader,
    snapshot: &Snapshot,
    since_ns: i64,
    until_ns: i64,
) -> Result<ServiceSeries, QueryError> {
    use archtrace_store::buckets::HOUR_NS;
    let width = if until_ns - since_ns <= 3 * HOUR_NS {
        MINUTE_NS
    } else {
        HOUR_NS
    };
    let first = since_ns.div_euclid(width) * width;
    let mut out = BTreeMap::new();
    for node in &snapshot.nodes {
        let rows = reader.node_edges(width, first, until_ns, &node.id)?;
        let points = charts::series(&node.id, rows.iter().map(|(t, k, s)| (*t, k, s)));
        out.insert(node.id.clone(), points);
    }
    Ok(out)
}

/// The architecture of `[since, until)` from the store's derived buckets.
pub fn snapshot_from_store(
    reader: &Reader,
    since_ns: i64,
    until_ns: i64,
) -> Result<Snapshot, QueryError> {
    let aggregate = reader.read_window(since_ns, until_ns)?;
    Ok(Snapshot::from_aggregate(&aggregate, (since_ns, until_ns)))
}

/// Derives the raw spans of `[since, until)` again and replaces the derived buckets of the
/// whole hours that cover it. Returns the number of traces derived.
pub fn rebuild(reader: &Reader, since_ns: i64, until_ns: i64) -> Result<u64, QueryError> {
    use archtrace_store::buckets::{HOUR_NS, MINUTE_NS};
    let start = since_ns.div_euclid(HOUR_NS) * HOUR_NS;
    let end = until_ns.saturating_add(HOUR_NS - 1).div_euclid(HOUR_NS) * HOUR_NS;
    let mut minute = Buckets::new(MINUTE_NS);
    let mut hour = Buckets::new(HOUR_NS);
    let mut scratch = Vec::new();
    let mut traces = 0;
    reader.for_each_trace(start, end, &mut |spans| {
        traces += 1;
        Buckets::add_trace_to_all(
            &mut [&mut minute, &mut hour],
            spans,
            &NoLookup,
            &mut scratch,
        );
    })?;
    // A trace that crosses the range's edge also adds to buckets outside it; those buckets keep
    // what they had, so only the rebuilt range is replaced.
    for buckets in [&mut minute, &mut hour] {
        buckets
            .buckets
            .retain(|bucket, _| (start..end).contains(bucket));
    }
    reader.delete_buckets(start, end)?;
    reader.write_buckets(MINUTE_NS, &minute.buckets)?;
    reader.write_buckets(HOUR_NS, &hour.buckets)?;
    Ok(traces)
}

/// Asks a running archtrace (its admin address) for a snapshot.
pub async fn fetch_snapshot(
    server: &str,
    since: Option<&str>,
    until: Option<&str>,
    auth_token: Option<&str>,
) -> Result<Snapshot, String> {
    let url = format!("{}/api/v1/snapshot", server.trim_end_matches('/'));
    let mut query = Vec::new();
    if let Some(since) = since {
        query.push(("since", since));
    }
    if let Some(until) = until {
        query.push(("until", until));
    }
    let url = reqwest::Url::parse_with_params(&url, &query)
        .map_err(|err| format!("invalid server address {server:?}: {err}"))?;
    let mut request = reqwest::Client::new().get(url.clone());
    if let Some(token) = auth_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|err| format!("could not reach {url}: {err} (is `archtrace serve` running there? --server takes its admin address, port 4320 by default)"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| format!("could not read the answer from {url}: {err}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|err| format!("{url} did not answer with a snapshot: {err}"))
}

pub use archtrace_analyzer::time::parse_instant;

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
