//! Derived buckets written to and read from ClickHouse's tables (see [`crate::schema`]): one
//! window's buckets at a time, in; any time window summed by the engine, out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use archtrace_analyzer::aggregate::{
    note_version, Aggregate, Buckets, Diagnostics, EdgeKey, EdgeStats, EntryKey, EntryStats,
    Histogram, NodeFacts, OperationKey, OperationStats, PathStats, Seen, VersionPair,
};
use archtrace_analyzer::derive::EdgeKind;
use archtrace_analyzer::sketch::LatencySketch;
use archtrace_store::buckets::{parse_node_type, plan, MINUTE_NS, STEPS_PER_READ};
use clickhouse::{Row, RowWrite};
use serde::{Deserialize, Serialize};

use crate::{Connection, Error};

/// Who wrote a window's rows and when: rows of the same key and a later version replace them.
#[derive(Clone, Copy, Debug)]
pub struct Provenance<'a> {
    pub worker: &'a str,
    pub window_ns: i64,
    pub version: u64,
}

#[derive(Row, Serialize)]
struct EdgeRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    source: &'a str,
    target: &'a str,
    kind: &'a str,
    calls: u64,
    errors: u64,
    traces: u64,
    max_calls_per_trace: u64,
    latency_zeros: u64,
    latency_max_ns: i64,
    latency_index: Vec<i32>,
    latency_counts: Vec<u64>,
    server_zeros: u64,
    server_max_ns: i64,
    server_index: Vec<i32>,
    server_counts: Vec<u64>,
    first_seen_ns: i64,
    last_seen_ns: i64,
    estimated_calls: f64,
    retries: u64,
    max_attempts: u64,
    fallbacks: u64,
    error_zeros: u64,
    error_max_ns: i64,
    error_index: Vec<i32>,
    error_counts: Vec<u64>,
}

#[derive(Row, Serialize)]
struct OperationRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    from_service: &'a str,
    from_operation: &'a str,
    to_service: &'a str,
    to_operation: &'a str,
    calls: u64,
    errors: u64,
    latency_zeros: u64,
    latency_max_ns: i64,
    latency_index: Vec<i32>,
    latency_counts: Vec<u64>,
    retries: u64,
    fallbacks: u64,
    first_seen_ns: i64,
    last_seen_ns: i64,
}

#[derive(Row, Serialize)]
struct NodeRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    node: &'a str,
    reports_spans: u8,
    peer_types: Vec<&'static str>,
    entry_point: u8,
    spans_without_sampling: u64,
    first_seen_ns: Option<i64>,
    last_seen_ns: Option<i64>,
}

#[derive(Row, Serialize)]
struct VersionRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    node: &'a str,
    /// The node's `service.version` (`version` is the row's, as in every bucket table).
    release: &'a str,
    first_seen_ns: i64,
    last_seen_ns: i64,
    spans: u64,
}

#[derive(Row, Serialize)]
struct EdgeVersionRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    source: &'a str,
    target: &'a str,
    kind: &'a str,
    from_release: &'a str,
    to_release: &'a str,
    first_seen_ns: i64,
    last_seen_ns: i64,
    calls: u64,
}

#[derive(Row, Serialize)]
struct EntryRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    service: &'a str,
    operation: &'a str,
    traces: u64,
    sync_depth_values: Vec<u32>,
    sync_depth_counts: Vec<u64>,
    services_values: Vec<u32>,
    services_counts: Vec<u64>,
    latency_zeros: u64,
    latency_max_ns: i64,
    latency_index: Vec<i32>,
    latency_counts: Vec<u64>,
}

#[derive(Row, Serialize)]
struct PathRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    service: &'a str,
    operation: &'a str,
    path_service: &'a str,
    traces: u64,
    total_ns: i64,
    time_zeros: u64,
    time_max_ns: i64,
    time_index: Vec<i32>,
    time_counts: Vec<u64>,
}

#[derive(Row, Serialize)]
struct DiagnosticRow<'a> {
    bucket_ns: i64,
    width_s: u32,
    worker: &'a str,
    window_ns: i64,
    version: u64,
    spans: u64,
    traces: u64,
    observations: u64,
    orphaned_spans: u64,
    unresolved_client_spans: u64,
    late_spans_paired: u64,
    late_spans_dropped: u64,
    traces_cut_short: u64,
    span_min_ns: Option<i64>,
    span_max_ns: Option<i64>,
    spans_without_sampling: u64,
}

fn sketch_columns(sketch: &LatencySketch) -> (u64, i64, Vec<i32>, Vec<u64>) {
    let (index, counts) = sketch.buckets().unzip();
    (sketch.zeros(), sketch.max_ns(), index, counts)
}

fn histogram_columns(histogram: &Histogram) -> (Vec<u32>, Vec<u64>) {
    histogram.counts().unzip()
}

fn width_seconds(width_ns: i64) -> u32 {
    (width_ns / 1_000_000_000) as u32
}

/// Every bucket of every width, with its width in seconds.
fn each_bucket<'a>(all: &'a [&Buckets]) -> impl Iterator<Item = (u32, i64, &'a Aggregate)> {
    all.iter().flat_map(|buckets| {
        let width_s = width_seconds(buckets.width_ns);
        buckets
            .buckets
            .iter()
            .map(move |(&bucket_ns, aggregate)| (width_s, bucket_ns, aggregate))
    })
}

/// Inserts `rows` into `table` in one request.
fn insert_all<T: RowWrite>(
    conn: &Connection,
    table: &str,
    rows: &[T::Value<'_>],
) -> Result<(), Error> {
    conn.run(&format!("write {table}"), async {
        let mut insert = conn.client().insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await
    })
}

/// Writes buckets of every width, one insert per table. Not atomic across tables: a worker
/// that dies half-way derives the window again, and the same keys replace what was written.
pub fn write(conn: &Connection, all: &[&Buckets], provenance: Provenance) -> Result<(), Error> {
    let Provenance {
        worker,
        window_ns,
        version,
    } = provenance;
    let edges: Vec<EdgeRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.edges.iter().map(move |(key, stats)| {
                let latency = sketch_columns(&stats.latency);
                let server = sketch_columns(&stats.server_latency);
                let failed = sketch_columns(&stats.error_latency);
                EdgeRow {
                    bucket_ns,
                    width_s,
                    worker,
                    window_ns,
                    version,
                    source: &key.from,
                    target: &key.to,
                    kind: key.kind.as_str(),
                    calls: stats.calls,
                    errors: stats.errors,
                    traces: stats.traces,
                    max_calls_per_trace: stats.max_calls_per_trace,
                    latency_zeros: latency.0,
                    latency_max_ns: latency.1,
                    latency_index: latency.2,
                    latency_counts: latency.3,
                    server_zeros: server.0,
                    server_max_ns: server.1,
                    server_index: server.2,
                    server_counts: server.3,
                    first_seen_ns: stats.first_seen_ns,
                    last_seen_ns: stats.last_seen_ns,
                    estimated_calls: stats.estimated_calls,
                    retries: stats.retries,
                    max_attempts: stats.max_attempts,
                    fallbacks: stats.fallbacks,
                    error_zeros: failed.0,
                    error_max_ns: failed.1,
                    error_index: failed.2,
                    error_counts: failed.3,
                }
            })
        })
        .collect();
    insert_all::<EdgeRow>(conn, "edge_buckets", &edges)?;
    let operations: Vec<OperationRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.operations.iter().map(move |(key, stats)| {
                let latency = sketch_columns(&stats.latency);
                OperationRow {
                    bucket_ns,
                    width_s,
                    worker,
                    window_ns,
                    version,
                    from_service: &key.from_service,
                    from_operation: &key.from_operation,
                    to_service: &key.to_service,
                    to_operation: &key.to_operation,
                    calls: stats.calls,
                    errors: stats.errors,
                    latency_zeros: latency.0,
                    latency_max_ns: latency.1,
                    latency_index: latency.2,
                    latency_counts: latency.3,
                    retries: stats.retries,
                    fallbacks: stats.fallbacks,
                    first_seen_ns: stats.first_seen_ns,
                    last_seen_ns: stats.last_seen_ns,
                }
            })
        })
        .collect();
    insert_all::<OperationRow>(conn, "operation_buckets", &operations)?;
    let nodes: Vec<NodeRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.nodes.iter().map(move |(node, facts)| NodeRow {
                bucket_ns,
                width_s,
                worker,
                window_ns,
                version,
                node,
                reports_spans: facts.reports_spans.into(),
                peer_types: facts.peer_types.iter().map(|t| t.as_str()).collect(),
                entry_point: facts.entry_point.into(),
                spans_without_sampling: facts.spans_without_sampling,
                first_seen_ns: facts.seen.map(|s| s.first_ns),
                last_seen_ns: facts.seen.map(|s| s.last_ns),
            })
        })
        .collect();
    insert_all::<NodeRow>(conn, "node_buckets", &nodes)?;
    let releases: Vec<VersionRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.nodes.iter().flat_map(move |(node, facts)| {
                facts
                    .versions
                    .iter()
                    .map(move |(release, seen)| VersionRow {
                        bucket_ns,
                        width_s,
                        worker,
                        window_ns,
                        version,
                        node,
                        release,
                        first_seen_ns: seen.first_ns,
                        last_seen_ns: seen.last_ns,
                        spans: seen.count,
                    })
            })
        })
        .collect();
    insert_all::<VersionRow>(conn, "release_buckets", &releases)?;
    let edge_releases: Vec<EdgeVersionRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.edges.iter().flat_map(move |(key, stats)| {
                stats
                    .versions
                    .iter()
                    .map(move |(pair, seen)| EdgeVersionRow {
                        bucket_ns,
                        width_s,
                        worker,
                        window_ns,
                        version,
                        source: &key.from,
                        target: &key.to,
                        kind: key.kind.as_str(),
                        from_release: &pair.from,
                        to_release: &pair.to,
                        first_seen_ns: seen.first_ns,
                        last_seen_ns: seen.last_ns,
                        calls: seen.count,
                    })
            })
        })
        .collect();
    insert_all::<EdgeVersionRow>(conn, "edge_release_buckets", &edge_releases)?;
    let entries: Vec<EntryRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.entries.iter().map(move |(key, stats)| {
                let depth = histogram_columns(&stats.sync_depth);
                let touched = histogram_columns(&stats.services_touched);
                let latency = sketch_columns(&stats.latency);
                EntryRow {
                    bucket_ns,
                    width_s,
                    worker,
                    window_ns,
                    version,
                    service: &key.service,
                    operation: &key.operation,
                    traces: stats.traces,
                    sync_depth_values: depth.0,
                    sync_depth_counts: depth.1,
                    services_values: touched.0,
                    services_counts: touched.1,
                    latency_zeros: latency.0,
                    latency_max_ns: latency.1,
                    latency_index: latency.2,
                    latency_counts: latency.3,
                }
            })
        })
        .collect();
    insert_all::<EntryRow>(conn, "entry_buckets", &entries)?;
    let paths: Vec<PathRow> = each_bucket(all)
        .flat_map(|(width_s, bucket_ns, aggregate)| {
            aggregate.entries.iter().flat_map(move |(key, stats)| {
                stats.critical_path.iter().map(move |(service, path)| {
                    let time = sketch_columns(&path.time);
                    PathRow {
                        bucket_ns,
                        width_s,
                        worker,
                        window_ns,
                        version,
                        service: &key.service,
                        operation: &key.operation,
                        path_service: service,
                        traces: path.traces,
                        total_ns: path.total_ns,
                        time_zeros: time.0,
                        time_max_ns: time.1,
                        time_index: time.2,
                        time_counts: time.3,
                    }
                })
            })
        })
        .collect();
    insert_all::<PathRow>(conn, "critical_path_buckets", &paths)?;
    let diagnostics: Vec<DiagnosticRow> = each_bucket(all)
        .map(|(width_s, bucket_ns, aggregate)| {
            let d = &aggregate.diagnostics;
            DiagnosticRow {
                bucket_ns,
                width_s,
                worker,
                window_ns,
                version,
                spans: d.spans,
                traces: d.traces,
                observations: d.observations,
                orphaned_spans: d.orphaned_spans,
                unresolved_client_spans: d.unresolved_client_spans,
                late_spans_paired: d.late_spans_paired,
                late_spans_dropped: d.late_spans_dropped,
                traces_cut_short: d.traces_cut_short,
                span_min_ns: aggregate.span_range.map(|r| r.0),
                span_max_ns: aggregate.span_range.map(|r| r.1),
                spans_without_sampling: d.spans_without_sampling,
            }
        })
        .collect();
    insert_all::<DiagnosticRow>(conn, "diagnostic_buckets", &diagnostics)
}

/// Deletes a window's rows older than `provenance`'s version: keys that a new derivation of
/// the window no longer has (a client span that now pairs with its server span names the
/// service instead of the peer address). Same keys are already replaced by the version.
pub fn delete_stale(conn: &Connection, provenance: Provenance) -> Result<(), Error> {
    for table in crate::schema::bucket_tables() {
        conn.run(
            "delete a window's stale buckets",
            conn.client()
                .query(&format!(
                    "DELETE FROM {table} WHERE worker = ? AND window_ns = ? AND version < ?"
                ))
                .bind(provenance.worker)
                .bind(provenance.window_ns)
                .bind(provenance.version)
                .execute(),
        )?;
    }
    Ok(())
}

/// The `[since, until)` window as the same whole buckets the DuckDB store reads (hours in the
/// middle, minutes at the ends), as a SQL condition.
fn window_filter(since_ns: i64, until_ns: i64) -> Option<String> {
    let ranges: Vec<String> = plan(since_ns, until_ns)
        .into_iter()
        .filter(|(_, from, to)| from < to)
        .map(|(width, from, to)| {
            format!(
                "(width_s = {} AND bucket_ns >= {from} AND bucket_ns < {to})",
                width_seconds(width)
            )
        })
        .collect();
    (!ranges.is_empty()).then(|| ranges.join(" OR "))
}

#[derive(Row, Deserialize)]
struct EdgeSum {
    /// The start of the step the row sums.
    step_ns: i64,
    source: String,
    target: String,
    kind: String,
    total_calls: u64,
    total_errors: u64,
    total_traces: u64,
    most_calls_per_trace: u64,
    all_latency_zeros: u64,
    most_latency_ns: i64,
    latency_sum: (Vec<i32>, Vec<u64>),
    all_server_zeros: u64,
    most_server_ns: i64,
    server_sum: (Vec<i32>, Vec<u64>),
    first_seen: i64,
    last_seen: i64,
    total_estimated_calls: f64,
    total_retries: u64,
    most_attempts: u64,
    total_fallbacks: u64,
    all_error_zeros: u64,
    most_error_ns: i64,
    error_sum: (Vec<i32>, Vec<u64>),
}

#[derive(Row, Deserialize)]
struct OperationSum {
    from_service: String,
    from_operation: String,
    to_service: String,
    to_operation: String,
    total_calls: u64,
    total_errors: u64,
    all_latency_zeros: u64,
    most_latency_ns: i64,
    latency_sum: (Vec<i32>, Vec<u64>),
    total_retries: u64,
    total_fallbacks: u64,
    first_seen: i64,
    last_seen: i64,
}

#[derive(Row, Deserialize)]
struct NodeSum {
    /// The start of the step the row sums.
    step_ns: i64,
    node: String,
    any_reports_spans: u8,
    all_peer_types: Vec<String>,
    any_entry_point: u8,
    all_spans_without_sampling: u64,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    seen_rows: u64,
}

#[derive(Row, Deserialize)]
struct ReleaseSum {
    /// The start of the step the row sums.
    step_ns: i64,
    node: String,
    release: String,
    first_seen: i64,
    last_seen: i64,
    total_spans: u64,
}

#[derive(Row, Deserialize)]
struct EdgeReleaseSum {
    /// The start of the step the row sums.
    step_ns: i64,
    source: String,
    target: String,
    kind: String,
    from_release: String,
    to_release: String,
    first_seen: i64,
    last_seen: i64,
    total_calls: u64,
}

#[derive(Row, Deserialize)]
struct EntrySum {
    service: String,
    operation: String,
    total_traces: u64,
    sync_depth: (Vec<u32>, Vec<u64>),
    services_touched: (Vec<u32>, Vec<u64>),
    all_latency_zeros: u64,
    most_latency_ns: i64,
    latency_sum: (Vec<i32>, Vec<u64>),
}

#[derive(Row, Deserialize)]
struct PathSum {
    service: String,
    operation: String,
    path_service: String,
    total_traces: u64,
    all_ns: i64,
    all_time_zeros: u64,
    most_time_ns: i64,
    time_sum: (Vec<i32>, Vec<u64>),
}

#[derive(Row, Deserialize)]
struct DiagnosticSum {
    total_spans: u64,
    total_traces: u64,
    total_observations: u64,
    total_orphaned_spans: u64,
    total_unresolved_client_spans: u64,
    total_late_spans_paired: u64,
    total_late_spans_dropped: u64,
    total_traces_cut_short: u64,
    first_span_ns: Option<i64>,
    last_span_ns: Option<i64>,
    total_spans_without_sampling: u64,
}

const EDGE_SUMS: &str = "sum(calls) AS total_calls, sum(errors) AS total_errors,
    sum(latency_zeros) AS all_latency_zeros, max(latency_max_ns) AS most_latency_ns,
    sumMap(latency_index, latency_counts) AS latency_sum";

fn sketch(zeros: u64, max_ns: i64, (index, counts): (Vec<i32>, Vec<u64>)) -> LatencySketch {
    // A sketch that does not rebuild (rows not written by archtrace) counts as empty, as a
    // damaged sketch does in DuckDB.
    LatencySketch::from_buckets(zeros, max_ns, index.into_iter().zip(counts)).unwrap_or_default()
}

/// Names of one read, shared: rows repeat them, and shared keys compare by address first.
#[derive(Default)]
struct Names(HashMap<String, Arc<str>>);

impl Names {
    fn intern(&mut self, text: String) -> Arc<str> {
        self.0
            .entry(text)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone()
    }

    fn edge_key(&mut self, source: String, target: String, kind: &str) -> EdgeKey {
        EdgeKey {
            from: self.intern(source),
            to: self.intern(target),
            kind: EdgeKind::from_name(kind),
        }
    }
}

/// Which bucket rows a read sums (`filter`), and into which step each goes: `step` is an SQL
/// expression of a row's `bucket_ns` giving its step's start.
struct StepRead {
    filter: String,
    step: String,
}

/// The edges and nodes of each step, with their releases: what history reads of a step.
fn read_step_graph(
    conn: &Connection,
    read: &StepRead,
    names: &mut Names,
    steps: &mut BTreeMap<i64, Aggregate>,
) -> Result<(), Error> {
    let StepRead { filter, step } = read;
    let client = conn.client();
    let edges: Vec<EdgeSum> = conn.run(
        "read edge buckets",
        client
            .query(&format!(
                "SELECT {step} AS step_ns, source, target, kind, {EDGE_SUMS}, sum(traces) AS total_traces,
                    max(max_calls_per_trace) AS most_calls_per_trace,
                    sum(server_zeros) AS all_server_zeros, max(server_max_ns) AS most_server_ns,
                    sumMap(server_index, server_counts) AS server_sum,
                    min(first_seen_ns) AS first_seen, max(last_seen_ns) AS last_seen,
                    sum(estimated_calls) AS total_estimated_calls,
                    sum(retries) AS total_retries, max(max_attempts) AS most_attempts,
                    sum(fallbacks) AS total_fallbacks, sum(error_zeros) AS all_error_zeros,
                    max(error_max_ns) AS most_error_ns,
                    sumMap(error_index, error_counts) AS error_sum
                 FROM edge_buckets FINAL WHERE ({filter}) AND calls > 0
                 GROUP BY step_ns, source, target, kind"
            ))
            .fetch_all(),
    )?;
    for row in edges {
        let key = names.edge_key(row.source, row.target, &row.kind);
        let stats = EdgeStats {
            calls: row.total_calls,
            estimated_calls: row.total_estimated_calls,
            errors: row.total_errors,
            latency: sketch(row.all_latency_zeros, row.most_latency_ns, row.latency_sum),
            server_latency: sketch(row.all_server_zeros, row.most_server_ns, row.server_sum),
            traces: row.total_traces,
            max_calls_per_trace: row.most_calls_per_trace,
            first_seen_ns: row.first_seen,
            last_seen_ns: row.last_seen,
            retries: row.total_retries,
            max_attempts: row.most_attempts,
            fallbacks: row.total_fallbacks,
            error_latency: sketch(row.all_error_zeros, row.most_error_ns, row.error_sum),
            versions: Default::default(),
        };
        steps
            .entry(row.step_ns)
            .or_default()
            .edges
            .entry(key)
            .or_default()
            .merge(&stats);
    }

    let edge_releases: Vec<EdgeReleaseSum> = conn.run(
        "read edge release buckets",
        client
            .query(&format!(
                "SELECT {step} AS step_ns, source, target, kind, from_release, to_release,
                    min(first_seen_ns) AS first_seen, max(last_seen_ns) AS last_seen,
                    sum(calls) AS total_calls
                 FROM edge_release_buckets FINAL WHERE {filter}
                 GROUP BY step_ns, source, target, kind, from_release, to_release"
            ))
            .fetch_all(),
    )?;
    for row in edge_releases {
        let key = names.edge_key(row.source, row.target, &row.kind);
        let pair = VersionPair {
            from: names.intern(row.from_release),
            to: names.intern(row.to_release),
        };
        let seen = Seen {
            first_ns: row.first_seen,
            last_ns: row.last_seen,
            count: row.total_calls,
        };
        if let Some(stats) = steps
            .get_mut(&row.step_ns)
            .and_then(|aggregate| aggregate.edges.get_mut(&key))
        {
            note_version(&mut stats.versions, pair, &seen);
        }
    }

    let nodes: Vec<NodeSum> = conn.run(
        "read node buckets",
        client
            .query(&format!(
                "SELECT {step} AS step_ns, node, max(reports_spans) AS any_reports_spans,
                    arrayMap(t -> toString(t), groupUniqArrayArray(peer_types)) AS all_peer_types,
                    max(entry_point) AS any_entry_point,
                    sum(spans_without_sampling) AS all_spans_without_sampling,
                    min(first_seen_ns) AS first_seen, max(last_seen_ns) AS last_seen,
                    count(first_seen_ns) AS seen_rows
                 FROM node_buckets FINAL WHERE {filter} GROUP BY step_ns, node"
            ))
            .fetch_all(),
    )?;
    for row in nodes {
        let facts = NodeFacts {
            reports_spans: row.any_reports_spans > 0,
            peer_types: row
                .all_peer_types
                .iter()
                .filter_map(|t| parse_node_type(t))
                .collect(),
            entry_point: row.any_entry_point > 0,
            spans_without_sampling: row.all_spans_without_sampling,
            seen: row
                .first_seen
                .zip(row.last_seen)
                .map(|(first_ns, last_ns)| Seen {
                    first_ns,
                    last_ns,
                    count: row.seen_rows,
                }),
            versions: Default::default(),
        };
        steps
            .entry(row.step_ns)
            .or_default()
            .nodes
            .entry(names.intern(row.node))
            .or_default()
            .merge(&facts);
    }

    let releases: Vec<ReleaseSum> = conn.run(
        "read release buckets",
        client
            .query(&format!(
                "SELECT {step} AS step_ns, node, release, min(first_seen_ns) AS first_seen,
                    max(last_seen_ns) AS last_seen, sum(spans) AS total_spans
                 FROM release_buckets FINAL WHERE {filter} GROUP BY step_ns, node, release"
            ))
            .fetch_all(),
    )?;
    for row in releases {
        let seen = Seen {
            first_ns: row.first_seen,
            last_ns: row.last_seen,
            count: row.total_spans,
        };
        let facts = steps
            .entry(row.step_ns)
            .or_default()
            .nodes
            .entry(names.intern(row.node))
            .or_default();
        note_version(&mut facts.versions, names.intern(row.release), &seen);
    }
    Ok(())
}

/// Everything derived in `[since, until)`, summed by the engine.
pub fn read_window(conn: &Connection, since_ns: i64, until_ns: i64) -> Result<Aggregate, Error> {
    let Some(filter) = window_filter(since_ns, until_ns) else {
        return Ok(Aggregate::default());
    };
    let read = StepRead {
        filter,
        step: format!("toInt64({since_ns})"),
    };
    let mut names = Names::default();
    let mut steps = BTreeMap::new();
    read_step_graph(conn, &read, &mut names, &mut steps)?;
    let mut aggregate = steps.remove(&since_ns).unwrap_or_default();
    let filter = &read.filter;
    let client = conn.client();

    let operations: Vec<OperationSum> = conn.run(
        "read operation buckets",
        client
            .query(&format!(
                "SELECT from_service, from_operation, to_service, to_operation, {EDGE_SUMS},
                    sum(retries) AS total_retries, sum(fallbacks) AS total_fallbacks,
                    min(first_seen_ns) AS first_seen, max(last_seen_ns) AS last_seen
                 FROM operation_buckets FINAL WHERE {filter}
                 GROUP BY from_service, from_operation, to_service, to_operation"
            ))
            .fetch_all(),
    )?;
    for row in operations {
        let key = OperationKey {
            from_service: names.intern(row.from_service),
            from_operation: names.intern(row.from_operation),
            to_service: names.intern(row.to_service),
            to_operation: names.intern(row.to_operation),
        };
        let stats = OperationStats {
            calls: row.total_calls,
            errors: row.total_errors,
            latency: sketch(row.all_latency_zeros, row.most_latency_ns, row.latency_sum),
            retries: row.total_retries,
            fallbacks: row.total_fallbacks,
            first_seen_ns: row.first_seen,
            last_seen_ns: row.last_seen,
        };
        aggregate.operations.entry(key).or_default().merge(&stats);
    }

    let entries: Vec<EntrySum> = conn.run(
        "read entry buckets",
        client
            .query(&format!(
                "SELECT service, operation, sum(traces) AS total_traces,
                    sumMap(sync_depth_values, sync_depth_counts) AS sync_depth,
                    sumMap(services_values, services_counts) AS services_touched,
                    sum(latency_zeros) AS all_latency_zeros,
                    max(latency_max_ns) AS most_latency_ns,
                    sumMap(latency_index, latency_counts) AS latency_sum
                 FROM entry_buckets FINAL WHERE {filter} GROUP BY service, operation"
            ))
            .fetch_all(),
    )?;
    for row in entries {
        let key = EntryKey {
            service: names.intern(row.service),
            operation: names.intern(row.operation),
        };
        let histogram = |(values, counts): (Vec<u32>, Vec<u64>)| {
            Histogram::from_counts(values.into_iter().zip(counts))
        };
        let stats = EntryStats {
            traces: row.total_traces,
            sync_depth: histogram(row.sync_depth),
            services_touched: histogram(row.services_touched),
            latency: sketch(row.all_latency_zeros, row.most_latency_ns, row.latency_sum),
            critical_path: Default::default(),
        };
        aggregate.entries.entry(key).or_default().merge(&stats);
    }

    let paths: Vec<PathSum> = conn.run(
        "read critical path buckets",
        client
            .query(&format!(
                "SELECT service, operation, path_service, sum(traces) AS total_traces,
                    sum(total_ns) AS all_ns, sum(time_zeros) AS all_time_zeros,
                    max(time_max_ns) AS most_time_ns,
                    sumMap(time_index, time_counts) AS time_sum
                 FROM critical_path_buckets FINAL WHERE {filter}
                 GROUP BY service, operation, path_service"
            ))
            .fetch_all(),
    )?;
    for row in paths {
        let key = EntryKey {
            service: names.intern(row.service),
            operation: names.intern(row.operation),
        };
        let path = PathStats {
            traces: row.total_traces,
            total_ns: row.all_ns,
            time: sketch(row.all_time_zeros, row.most_time_ns, row.time_sum),
        };
        aggregate
            .entries
            .entry(key)
            .or_default()
            .critical_path
            .entry(names.intern(row.path_service))
            .or_default()
            .merge(&path);
    }

    let totals: DiagnosticSum = conn.run(
        "read diagnostic buckets",
        client
            .query(&format!(
                "SELECT sum(spans) AS total_spans, sum(traces) AS total_traces,
                    sum(observations) AS total_observations,
                    sum(orphaned_spans) AS total_orphaned_spans,
                    sum(unresolved_client_spans) AS total_unresolved_client_spans,
                    sum(late_spans_paired) AS total_late_spans_paired,
                    sum(late_spans_dropped) AS total_late_spans_dropped,
                    sum(traces_cut_short) AS total_traces_cut_short,
                    min(span_min_ns) AS first_span_ns, max(span_max_ns) AS last_span_ns,
                    sum(spans_without_sampling) AS total_spans_without_sampling
                 FROM diagnostic_buckets FINAL WHERE {filter}"
            ))
            .fetch_one(),
    )?;
    aggregate.diagnostics.merge(&Diagnostics {
        spans: totals.total_spans,
        traces: totals.total_traces,
        observations: totals.total_observations,
        orphaned_spans: totals.total_orphaned_spans,
        unresolved_client_spans: totals.total_unresolved_client_spans,
        late_spans_paired: totals.total_late_spans_paired,
        late_spans_dropped: totals.total_late_spans_dropped,
        traces_cut_short: totals.total_traces_cut_short,
        spans_without_sampling: totals.total_spans_without_sampling,
    });
    aggregate.span_range = totals.first_span_ns.zip(totals.last_span_ns);
    Ok(aggregate)
}

/// The edges and nodes, with their releases, derived in each step of `step_ns` from `since`
/// to `until` (the last step may be shorter), each as [`read_window`] reads it, passed to
/// `each` oldest first; steps with nothing derived are left out. Steps are read a day of them
/// per query: a month of hours is 30 rounds of queries, not 720.
pub fn read_steps(
    conn: &Connection,
    since_ns: i64,
    until_ns: i64,
    step_ns: i64,
    each: &mut dyn FnMut(i64, &Aggregate),
) -> Result<(), Error> {
    let step_ns = step_ns.max(1);
    // On whole minutes every bucket a step reads lies within it, and the engine can tell its
    // step from its start; otherwise the ends of neighbouring steps share a minute, read by both.
    let per_read = if since_ns % MINUTE_NS == 0 && step_ns % MINUTE_NS == 0 {
        STEPS_PER_READ
    } else {
        1
    };
    let mut round = since_ns;
    while round < until_ns {
        let round_end = round
            .saturating_add(step_ns.saturating_mul(per_read))
            .min(until_ns);
        let mut ranges = Vec::new();
        let mut start = round;
        while start < round_end {
            let end = start.saturating_add(step_ns).min(round_end);
            ranges.extend(window_filter(start, end));
            start = end;
        }
        if !ranges.is_empty() {
            let step = if per_read == 1 {
                format!("toInt64({round})")
            } else {
                format!(
                    "toInt64(toInt64({round}) + intDiv(bucket_ns - toInt64({round}), \
                     toInt64({step_ns})) * toInt64({step_ns}))"
                )
            };
            let read = StepRead {
                filter: format!("({})", ranges.join(" OR ")),
                step,
            };
            let mut names = Names::default();
            let mut steps = BTreeMap::new();
            read_step_graph(conn, &read, &mut names, &mut steps)?;
            for (start, aggregate) in &steps {
                each(*start, aggregate);
            }
        }
        round = round_end;
    }
    Ok(())
}

#[derive(Row, Deserialize)]
struct NodeEdgeSum {
    bucket_ns: i64,
    source: String,
    target: String,
    kind: String,
    total_calls: u64,
    total_errors: u64,
    all_latency_zeros: u64,
    most_latency_ns: i64,
    latency_sum: (Vec<i32>, Vec<u64>),
    total_estimated_calls: f64,
}

/// The edges into or out of `node` per stored bucket of `width` starting in `[since, until)`,
/// ordered by bucket: a service's series.
pub fn node_edges(
    conn: &Connection,
    width_ns: i64,
    since_ns: i64,
    until_ns: i64,
    node: &str,
) -> Result<Vec<(i64, EdgeKey, EdgeStats)>, Error> {
    let rows: Vec<NodeEdgeSum> = conn.run(
        "read a service's series",
        conn.client()
            .query(&format!(
                "SELECT bucket_ns, source, target, kind, {EDGE_SUMS},
                    sum(estimated_calls) AS total_estimated_calls
                 FROM edge_buckets FINAL
                 WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ?
                    AND (source = ? OR target = ?)
                 GROUP BY bucket_ns, source, target, kind ORDER BY bucket_ns"
            ))
            .bind(width_seconds(width_ns))
            .bind(since_ns)
            .bind(until_ns)
            .bind(node)
            .bind(node)
            .fetch_all(),
    )?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let key = EdgeKey {
                from: Arc::from(row.source),
                to: Arc::from(row.target),
                kind: EdgeKind::from_name(&row.kind),
            };
            let stats = EdgeStats {
                calls: row.total_calls,
                estimated_calls: row.total_estimated_calls,
                errors: row.total_errors,
                latency: sketch(row.all_latency_zeros, row.most_latency_ns, row.latency_sum),
                ..EdgeStats::default()
            };
            (row.bucket_ns, key, stats)
        })
        .collect())
}
