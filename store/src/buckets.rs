//! Derived edges in time buckets: written by live assembly, imports and rebuilds; read back
//! and merged into one aggregate for any window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use archtrace_analyzer::aggregate::{
    note_version, Aggregate, Buckets, EdgeKey, EdgeStats, EntryKey, EntryStats, Histogram,
    NodeFacts, OperationKey, OperationStats, PathStats, Seen, VersionPair,
};
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_analyzer::sketch::LatencySketch;
use arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use duckdb::{params, Connection};

use crate::QueryError;

pub const MINUTE_NS: i64 = 60_000_000_000;
pub const HOUR_NS: i64 = 60 * MINUTE_NS;

/// Every bucket is kept at two widths: minutes for the edges of a window, hours for its middle.
pub const WIDTHS_NS: [i64; 2] = [MINUTE_NS, HOUR_NS];
/// Days that are over are also kept whole, "rolled up" from their hours ([`roll_up_days`]), so
/// that whole days of long windows read one row per edge. A write into a rolled-up day
/// deletes its day rows in the same transaction; the day is rolled up again later.
pub const DAY_NS: i64 = 24 * HOUR_NS;

pub(crate) fn width_seconds(width_ns: i64) -> i64 {
    width_ns / 1_000_000_000
}

fn node_type_name(node_type: NodeType) -> &'static str {
    node_type.as_str()
}

/// The node type a bucket names, as [`NodeType::as_str`] writes it.
pub fn parse_node_type(name: &str) -> Option<NodeType> {
    [
        NodeType::Service,
        NodeType::Database,
        NodeType::Messaging,
        NodeType::External,
        NodeType::Client,
    ]
    .into_iter()
    .find(|t| t.as_str() == name)
}

/// A connection of its own that writes derived buckets: live assembly, imports and rebuilds.
pub struct BucketWriter {
    conn: Connection,
}

impl BucketWriter {
    pub(crate) fn new(conn: Connection) -> BucketWriter {
        BucketWriter { conn }
    }

    /// Appends buckets (of one width) in one transaction.
    pub fn write(&self, buckets: &Buckets) -> Result<(), QueryError> {
        in_transaction(&self.conn, || append(&self.conn, buckets))
    }

    /// Rolls up the days over before `before_ns` ([`roll_up_days`]).
    pub fn roll_up_days(&self, before_ns: i64) -> Result<usize, QueryError> {
        roll_up_days(&self.conn, before_ns)
    }

    /// Replaces every bucket, of every width, that starts in `[since, until)` with `fresh`, in
    /// one transaction: a reader sees the old buckets or the new ones, never a mix or none.
    /// Buckets of `fresh` outside the range are left out.
    pub fn replace(
        &self,
        since_ns: i64,
        until_ns: i64,
        fresh: &[&Buckets],
    ) -> Result<(), QueryError> {
        in_transaction(&self.conn, || {
            delete(&self.conn, since_ns, until_ns)?;
            for buckets in fresh {
                let mut inside = Buckets::new(buckets.width_ns);
                for (start, bucket) in buckets.buckets.range(since_ns..until_ns.max(since_ns)) {
                    inside.buckets.insert(*start, bucket.clone());
                }
                append(&self.conn, &inside)?;
            }
            Ok(())
        })
    }
}

pub(crate) fn in_transaction(
    conn: &Connection,
    work: impl FnOnce() -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    match work() {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(err) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// Appends buckets of one width inside the caller's transaction.
pub(crate) fn append(conn: &Connection, buckets: &Buckets) -> Result<(), QueryError> {
    if buckets.width_ns < DAY_NS {
        let days = buckets
            .buckets
            .keys()
            .map(|start| start.div_euclid(DAY_NS) * DAY_NS);
        unroll_days(conn, &days.collect())?;
    }
    let width = width_seconds(buckets.width_ns);
    let buckets = &buckets.buckets;
    {
        let mut edges = conn.appender("edge_buckets")?;
        let mut operations = conn.appender("operation_buckets")?;
        let mut nodes = conn.appender("node_buckets")?;
        let mut diagnostics = conn.appender("diagnostic_buckets")?;
        let mut entries = conn.appender("entry_buckets")?;
        let mut paths = conn.appender("critical_path_buckets")?;
        let mut versions = conn.appender("release_buckets")?;
        let mut edge_versions = conn.appender("edge_release_buckets")?;
        for (&bucket, aggregate) in buckets {
            for (key, stats) in &aggregate.edges {
                edges.append_row(params![
                    bucket,
                    width,
                    &*key.from,
                    &*key.to,
                    key.kind.as_str(),
                    stats.calls,
                    stats.errors,
                    stats.traces,
                    stats.max_calls_per_trace,
                    stats.latency.to_bytes(),
                    stats.server_latency.to_bytes(),
                    stats.first_seen_ns,
                    stats.last_seen_ns,
                    stats.estimated_calls,
                    stats.retries,
                    stats.max_attempts,
                    stats.fallbacks,
                    stats.error_latency.to_bytes(),
                    stats.latency.quantile_ns(0.99)
                ])?;
                for (pair, seen) in &stats.versions {
                    edge_versions.append_row(params![
                        bucket,
                        width,
                        &*key.from,
                        &*key.to,
                        key.kind.as_str(),
                        &*pair.from,
                        &*pair.to,
                        seen.first_ns,
                        seen.last_ns,
                        seen.count
                    ])?;
                }
            }
            for (key, stats) in &aggregate.operations {
                operations.append_row(params![
                    bucket,
                    width,
                    &*key.from_service,
                    &*key.from_operation,
                    &*key.to_service,
                    &*key.to_operation,
                    stats.calls,
                    stats.errors,
                    stats.latency.to_bytes(),
                    stats.retries,
                    stats.fallbacks,
                    stats.first_seen_ns,
                    stats.last_seen_ns
                ])?;
            }
            for (name, facts) in &aggregate.nodes {
                let types: Vec<&str> = facts
                    .peer_types
                    .iter()
                    .map(|t| node_type_name(*t))
                    .collect();
                nodes.append_row(params![
                    bucket,
                    width,
                    &**name,
                    facts.reports_spans,
                    types.join(","),
                    facts.entry_point,
                    facts.spans_without_sampling,
                    facts.seen.map(|s| s.first_ns),
                    facts.seen.map(|s| s.last_ns)
                ])?;
                for (version, seen) in &facts.versions {
                    versions.append_row(params![
                        bucket,
                        width,
                        &**name,
                        &**version,
                        seen.first_ns,
                        seen.last_ns,
                        seen.count
                    ])?;
                }
            }
            for (key, stats) in &aggregate.entries {
                entries.append_row(params![
                    bucket,
                    width,
                    &*key.service,
                    &*key.operation,
                    stats.traces,
                    stats.sync_depth.to_text(),
                    stats.services_touched.to_text(),
                    stats.latency.to_bytes()
                ])?;
                for (service, path) in &stats.critical_path {
                    paths.append_row(params![
                        bucket,
                        width,
                        &*key.service,
                        &*key.operation,
                        &**service,
                        path.traces,
                        path.total_ns,
                        path.time.to_bytes()
                    ])?;
                }
            }
            let mut all_calls = LatencySketch::default();
            for stats in aggregate.edges.values().filter(|s| s.calls > 0) {
                all_calls.merge(&stats.latency);
            }
            let d = &aggregate.diagnostics;
            let (min, max) = aggregate
                .span_range
                .map_or((None, None), |(a, b)| (Some(a), Some(b)));
            diagnostics.append_row(params![
                bucket,
                width,
                d.spans,
                d.traces,
                d.observations,
                d.orphaned_spans,
                d.unresolved_client_spans,
                d.late_spans_paired,
                d.late_spans_dropped,
                d.traces_cut_short,
                min,
                max,
                d.spans_without_sampling,
                all_calls.to_bytes()
            ])?;
        }
        edges.flush()?;
        operations.flush()?;
        nodes.flush()?;
        diagnostics.flush()?;
        entries.flush()?;
        paths.flush()?;
        versions.flush()?;
        edge_versions.flush()?;
        Ok(())
    }
}

/// Deletes the day rows of those of `days` that were rolled up: a write changes them.
fn unroll_days(conn: &Connection, days: &BTreeSet<i64>) -> Result<(), QueryError> {
    if days.is_empty() {
        return Ok(());
    }
    // Our own numbers: safe to write into the query.
    let list = days
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let day = width_seconds(DAY_NS);
    let rolled: i64 = conn.query_row(
        &format!("SELECT count(*) FROM diagnostic_buckets WHERE width_s = {day} AND bucket_ns IN ({list})"),
        [],
        |row| row.get(0),
    )?;
    if rolled > 0 {
        for table in BUCKET_TABLES {
            conn.execute(
                &format!("DELETE FROM {table} WHERE width_s = {day} AND bucket_ns IN ({list})"),
                [],
            )?;
        }
    }
    Ok(())
}

/// Rolls up each day that is over before `before_ns`, has hour buckets and is not rolled up
/// yet: its hours summed into one bucket a day, one transaction per day. Returns how many
/// days were rolled up.
pub fn roll_up_days(conn: &Connection, before_ns: i64) -> Result<usize, QueryError> {
    let (hour, day) = (width_seconds(HOUR_NS), width_seconds(DAY_NS));
    let mut statement = conn.prepare(&format!(
        "SELECT DISTINCT bucket_ns // {DAY_NS} * {DAY_NS} AS day FROM diagnostic_buckets
         WHERE width_s = {hour} AND bucket_ns < ?
         EXCEPT SELECT bucket_ns FROM diagnostic_buckets WHERE width_s = {day}
         ORDER BY day"
    ))?;
    let days: Vec<i64> = statement
        .query_map([before_ns.div_euclid(DAY_NS) * DAY_NS], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for &start in &days {
        in_transaction(conn, || {
            let mut whole = Aggregate::default();
            read(
                conn,
                &[(HOUR_NS, start, start + DAY_NS)],
                Releases::Read,
                &mut whole,
            )?;
            let mut rolled = Buckets::new(DAY_NS);
            rolled.buckets.insert(start, whole);
            append(conn, &rolled)
        })?;
    }
    Ok(days.len())
}

/// The rolled-up days that start in `[since, until)`.
fn rolled_up_days(
    conn: &Connection,
    since_ns: i64,
    until_ns: i64,
) -> Result<BTreeSet<i64>, QueryError> {
    let mut statement = conn.prepare_cached(
        "SELECT bucket_ns FROM diagnostic_buckets WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ?",
    )?;
    let days = statement
        .query_map(params![width_seconds(DAY_NS), since_ns, until_ns], |row| {
            row.get(0)
        })?
        .collect::<Result<_, _>>()?;
    Ok(days)
}

/// Every table of derived buckets.
pub(crate) const BUCKET_TABLES: [&str; 8] = [
    "edge_buckets",
    "operation_buckets",
    "node_buckets",
    "diagnostic_buckets",
    "entry_buckets",
    "critical_path_buckets",
    "release_buckets",
    "edge_release_buckets",
];

/// Removes the buckets of every width that start in `[since, until)`, and the rolled-up days
/// that overlap it.
fn delete(conn: &Connection, since_ns: i64, until_ns: i64) -> Result<(), QueryError> {
    let first_day = since_ns.div_euclid(DAY_NS) * DAY_NS;
    for table in BUCKET_TABLES {
        conn.execute(
            &format!(
                "DELETE FROM {table} WHERE bucket_ns < ?
                 AND (bucket_ns >= ? OR (width_s = ? AND bucket_ns >= ?))"
            ),
            params![until_ns, since_ns, width_seconds(DAY_NS), first_day],
        )?;
    }
    Ok(())
}

/// [`plan`], with the rolled-up days among its hours read as days.
pub fn plan_with_days(since_ns: i64, until_ns: i64, days: &BTreeSet<i64>) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    for (width, from, to) in plan(since_ns, until_ns) {
        if width != HOUR_NS {
            out.push((width, from, to));
            continue;
        }
        let mut at = from;
        for &day in days.range(from..to) {
            if day + DAY_NS > to {
                break;
            }
            out.push((HOUR_NS, at, day));
            out.push((DAY_NS, day, day + DAY_NS));
            at = day + DAY_NS;
        }
        out.push((HOUR_NS, at, to));
    }
    out.retain(|(_, from, to)| from < to);
    out
}

/// The `[since, until)` window as ranges of whole buckets: hours for the middle, minutes for
/// the ragged ends.
pub fn plan(since_ns: i64, until_ns: i64) -> Vec<(i64, i64, i64)> {
    let floor = |t: i64, w: i64| t.div_euclid(w) * w;
    let first_minute = floor(since_ns, MINUTE_NS);
    let first_hour = floor(since_ns + HOUR_NS - 1, HOUR_NS).max(first_minute);
    let last_hour = floor(until_ns, HOUR_NS);
    if first_hour < last_hour {
        vec![
            (MINUTE_NS, first_minute, first_hour),
            (HOUR_NS, first_hour, last_hour),
            (MINUTE_NS, last_hour, until_ns),
        ]
    } else {
        vec![(MINUTE_NS, first_minute, until_ns)]
    }
}

/// Merges every bucket of the given `(width, since, until)` ranges into `into`, with one query
/// per table: a week reads one scan of each, not one per range.
fn read(
    conn: &Connection,
    ranges: &[(i64, i64, i64)],
    releases: Releases,
    into: &mut Aggregate,
) -> Result<(), QueryError> {
    let ranges: Vec<_> = ranges.iter().filter(|(_, from, to)| from < to).collect();
    if ranges.is_empty() {
        return Ok(());
    }
    let filter =
        vec!["(width_s = ? AND bucket_ns >= ? AND bucket_ns < ?)"; ranges.len()].join(" OR ");
    let values: Vec<i64> = ranges
        .iter()
        .flat_map(|(width, from, to)| [width_seconds(*width), *from, *to])
        .collect();
    let mut names: std::collections::HashMap<String, Arc<str>> = std::collections::HashMap::new();
    let mut intern = |text: String| -> Arc<str> {
        names
            .entry(text)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone()
    };

    // Rows come as Arrow batches and are summed here, keyed without allocating per row: a week
    // is about a hundred thousand rows, and their sketches merge from the stored bytes.
    let mut statement = conn.prepare_cached(&format!(
        "SELECT source, target, kind, calls, errors, traces, max_calls_per_trace, latency,
                server_latency, first_seen_ns, last_seen_ns,
                coalesce(estimated_calls, calls::DOUBLE), coalesce(retries, 0),
                coalesce(max_attempts, 0), coalesce(fallbacks, 0), error_latency
         FROM edge_buckets WHERE ({filter}) AND calls > 0"
    ))?;
    let mut edge_index: std::collections::HashMap<String, EdgeStats> =
        std::collections::HashMap::new();
    let mut key_text = String::new();
    for batch in statement.query_arrow(duckdb::params_from_iter(values.iter()))? {
        let edges = EdgeColumns::of(&batch)?;
        for row in 0..batch.num_rows() {
            key_text.clear();
            for column in 0..3 {
                key_text.push_str(edges.text(column, row));
                key_text.push('\0');
            }
            let stats = match edge_index.get_mut(key_text.as_str()) {
                Some(stats) => stats,
                None => edge_index.entry(key_text.clone()).or_default(),
            };
            edges.add_row(row, stats);
        }
    }
    for (key_text, stats) in edge_index {
        let mut parts = key_text.split('\0');
        let (Some(from), Some(to), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let key = EdgeKey {
            from: intern(from.to_owned()),
            to: intern(to.to_owned()),
            kind: EdgeKind::from_name(kind),
        };
        match into.edges.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut known) => known.get_mut().merge(&stats),
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(stats);
            }
        }
    }

    let mut statement = conn.prepare_cached(&format!(
        "SELECT from_service, from_operation, to_service, to_operation, calls, errors, latency,
                coalesce(retries, 0), coalesce(fallbacks, 0),
                -- Rows from before v8 tell no times: the bucket's start stands for them.
                coalesce(first_seen_ns, bucket_ns), coalesce(last_seen_ns, bucket_ns)
         FROM operation_buckets WHERE {filter}"
    ))?;
    let mut rows = statement.query(duckdb::params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let key = OperationKey {
            from_service: intern(row.get(0)?),
            from_operation: intern(row.get(1)?),
            to_service: intern(row.get(2)?),
            to_operation: intern(row.get(3)?),
        };
        let stats = OperationStats {
            calls: row.get(4)?,
            errors: row.get(5)?,
            latency: sketch(&row.get::<_, Vec<u8>>(6)?),
            retries: row.get(7)?,
            fallbacks: row.get(8)?,
            first_seen_ns: row.get(9)?,
            last_seen_ns: row.get(10)?,
        };
        into.operations.entry(key).or_default().merge(&stats);
    }

    // Of when a node was seen, first and last are kept; a count of rows would depend on the
    // widths read (minutes, hours or days), so it counts as one.
    let mut statement = conn.prepare_cached(&format!(
        "SELECT node, bool_or(reports_spans), string_agg(peer_types, ','), bool_or(entry_point),
                sum(coalesce(spans_without_sampling, 0))::UBIGINT, min(first_seen_ns),
                max(last_seen_ns), least(count(first_seen_ns), 1)::UBIGINT
         FROM node_buckets WHERE {filter} GROUP BY node"
    ))?;
    let mut rows = statement.query(duckdb::params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let types: Option<String> = row.get(2)?;
        let facts = NodeFacts {
            reports_spans: row.get(1)?,
            peer_types: types
                .iter()
                .flat_map(|t| t.split(','))
                .filter_map(parse_node_type)
                .collect(),
            entry_point: row.get(3)?,
            spans_without_sampling: row.get(4)?,
            seen: row
                .get::<_, Option<i64>>(5)?
                .zip(row.get::<_, Option<i64>>(6)?)
                .map(|(first_ns, last_ns)| Seen {
                    first_ns,
                    last_ns,
                    count: row.get(7).unwrap_or(0),
                }),
            versions: BTreeMap::new(),
        };
        into.nodes
            .entry(intern(row.get(0)?))
            .or_default()
            .merge(&facts);
    }

    let mut statement = conn.prepare_cached(&format!(
        "SELECT service, operation, traces, sync_depth, services_touched, latency
         FROM entry_buckets WHERE {filter}"
    ))?;
    let mut rows = statement.query(duckdb::params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let key = EntryKey {
            service: intern(row.get(0)?),
            operation: intern(row.get(1)?),
        };
        let stats = EntryStats {
            traces: row.get(2)?,
            sync_depth: Histogram::from_text(&row.get::<_, String>(3)?),
            services_touched: Histogram::from_text(&row.get::<_, String>(4)?),
            latency: sketch(&row.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default()),
            critical_path: BTreeMap::new(),
        };
        into.entries.entry(key).or_default().merge(&stats);
    }
    let mut statement = conn.prepare_cached(&format!(
        "SELECT service, operation, path_service, traces, total_ns, time
         FROM critical_path_buckets WHERE {filter}"
    ))?;
    let mut rows = statement.query(duckdb::params_from_iter(values.iter()))?;
    while let Some(row) = rows.next()? {
        let key = EntryKey {
            service: intern(row.get(0)?),
            operation: intern(row.get(1)?),
        };
        let path = PathStats {
            traces: row.get(3)?,
            total_ns: row.get(4)?,
            time: sketch(&row.get::<_, Vec<u8>>(5)?),
        };
        into.entries
            .entry(key)
            .or_default()
            .critical_path
            .entry(intern(row.get(2)?))
            .or_default()
            .merge(&path);
    }

    if releases == Releases::Read {
        let mut statement = conn.prepare_cached(&format!(
            "SELECT node, release, min(first_seen_ns), max(last_seen_ns), sum(spans)::UBIGINT
             FROM release_buckets WHERE {filter} GROUP BY node, release"
        ))?;
        let mut rows = statement.query(duckdb::params_from_iter(values.iter()))?;
        while let Some(row) = rows.next()? {
            let seen = Seen {
                first_ns: row.get(2)?,
                last_ns: row.get(3)?,
                count: row.get(4)?,
            };
            let facts = into.nodes.entry(intern(row.get(0)?)).or_default();
            note_version(&mut facts.versions, intern(row.get(1)?), &seen);
        }
        let mut statement = conn.prepare_cached(&format!(
            "SELECT source, target, kind, from_release, to_release, min(first_seen_ns),
                    max(last_seen_ns), sum(calls)::UBIGINT
             FROM edge_release_buckets WHERE {filter}
             GROUP BY source, target, kind, from_release, to_release"
        ))?;
        let mut rows = statement.query(duckdb::params_from_iter(values.iter()))?;
        while let Some(row) = rows.next()? {
            let key = EdgeKey {
                from: intern(row.get(0)?),
                to: intern(row.get(1)?),
                kind: EdgeKind::from_name(&row.get::<_, String>(2)?),
            };
            let pair = VersionPair {
                from: intern(row.get(3)?),
                to: intern(row.get(4)?),
            };
            let seen = Seen {
                first_ns: row.get(5)?,
                last_ns: row.get(6)?,
                count: row.get(7)?,
            };
            if let Some(stats) = into.edges.get_mut(&key) {
                note_version(&mut stats.versions, pair, &seen);
            }
        }
    }

    let totals = conn
        .prepare_cached(&format!(
            "SELECT sum(spans), sum(traces), sum(observations), sum(orphaned_spans),
                sum(unresolved_client_spans), sum(late_spans_paired), sum(late_spans_dropped),
                sum(traces_cut_short), min(span_min_ns), max(span_max_ns),
                sum(coalesce(spans_without_sampling, spans))
         FROM diagnostic_buckets WHERE {filter}"
        ))?
        .query_row(duckdb::params_from_iter(values.iter()), |row| {
            let n = |i: usize| -> duckdb::Result<u64> {
                Ok(row.get::<_, Option<i128>>(i)?.unwrap_or(0) as u64)
            };
            Ok((
                archtrace_analyzer::aggregate::Diagnostics {
                    spans: n(0)?,
                    traces: n(1)?,
                    observations: n(2)?,
                    orphaned_spans: n(3)?,
                    unresolved_client_spans: n(4)?,
                    late_spans_paired: n(5)?,
                    late_spans_dropped: n(6)?,
                    traces_cut_short: n(7)?,
                    spans_without_sampling: n(10)?,
                },
                row.get::<_, Option<i64>>(8)?
                    .zip(row.get::<_, Option<i64>>(9)?),
            ))
        })?;
    into.diagnostics.merge(&totals.0);
    if let Some((min, max)) = totals.1 {
        let range = into.span_range.get_or_insert((min, max));
        range.0 = range.0.min(min);
        range.1 = range.1.max(max);
    }
    Ok(())
}

/// The width of the buckets steps of `step_ns` are read from: hours when it is a whole
/// number of hours, else minutes.
pub fn step_width(step_ns: i64) -> i64 {
    if step_ns % HOUR_NS == 0 {
        HOUR_NS
    } else {
        MINUTE_NS
    }
}

/// Steps read per round of queries: a month of hours is read a day at a time, so that only a
/// day's sketches are held at once.
pub const STEPS_PER_READ: i64 = 24;

/// What was derived in each step of `step_ns` (a whole number of minutes; hours are read when
/// it is a whole number of hours) from `since` (a step boundary) to `until`, oldest first:
/// edges (with the callers' latency only), nodes and releases. Steps with nothing derived are
/// left out.
pub fn read_steps(
    conn: &Connection,
    step_ns: i64,
    since_ns: i64,
    until_ns: i64,
    each: &mut dyn FnMut(i64, Aggregate),
) -> Result<(), QueryError> {
    let width = step_width(step_ns);
    let step_ns = step_ns.max(width) / width * width;
    let mut names: std::collections::HashMap<String, Arc<str>> = std::collections::HashMap::new();
    let mut intern = |text: &str| -> Arc<str> {
        match names.get(text) {
            Some(name) => name.clone(),
            None => names
                .entry(text.to_owned())
                .or_insert_with(|| Arc::from(text))
                .clone(),
        }
    };
    let mut chunk_start = since_ns;
    while chunk_start < until_ns {
        let chunk_end = chunk_start
            .saturating_add(step_ns.saturating_mul(STEPS_PER_READ))
            .min(until_ns);
        let range = params![width_seconds(width), chunk_start, chunk_end];
        let step_of = |bucket: i64| since_ns + (bucket - since_ns).div_euclid(step_ns) * step_ns;
        let mut steps: BTreeMap<i64, Aggregate> = BTreeMap::new();

        let mut statement = conn.prepare(
            "SELECT source, target, kind, calls, errors, traces, max_calls_per_trace, latency,
                    ''::BLOB, first_seen_ns, last_seen_ns, coalesce(estimated_calls, calls::DOUBLE),
                    0::UBIGINT, 0::UBIGINT, 0::UBIGINT, ''::BLOB, bucket_ns
             FROM edge_buckets
             WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ? AND calls > 0",
        )?;
        for batch in statement.query_arrow(range)? {
            let edges = EdgeColumns::of(&batch)?;
            for row in 0..batch.num_rows() {
                let key = EdgeKey {
                    from: intern(edges.text(0, row)),
                    to: intern(edges.text(1, row)),
                    kind: EdgeKind::from_name(edges.text(2, row)),
                };
                let step = steps.entry(step_of(edges.signed(16, row))).or_default();
                // Summed in place: no sketch is copied.
                edges.add_row(row, step.edges.entry(key).or_default());
            }
        }

        let mut statement = conn.prepare(
            "SELECT bucket_ns, node, reports_spans, peer_types, entry_point, first_seen_ns,
                    last_seen_ns
             FROM node_buckets WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ?",
        )?;
        let mut rows = statement.query(range)?;
        while let Some(row) = rows.next()? {
            let types: String = row.get(3)?;
            let facts = NodeFacts {
                reports_spans: row.get(2)?,
                peer_types: types.split(',').filter_map(parse_node_type).collect(),
                entry_point: row.get(4)?,
                seen: row
                    .get::<_, Option<i64>>(5)?
                    .zip(row.get::<_, Option<i64>>(6)?)
                    .map(|(first_ns, last_ns)| Seen {
                        first_ns,
                        last_ns,
                        count: 1,
                    }),
                ..NodeFacts::default()
            };
            let step = steps.entry(step_of(row.get(0)?)).or_default();
            step.nodes
                .entry(intern(&row.get::<_, String>(1)?))
                .or_default()
                .merge(&facts);
        }

        let mut statement = conn.prepare(
            "SELECT bucket_ns, node, release, first_seen_ns, last_seen_ns, spans
             FROM release_buckets WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ?",
        )?;
        let mut rows = statement.query(range)?;
        while let Some(row) = rows.next()? {
            let seen = Seen {
                first_ns: row.get(3)?,
                last_ns: row.get(4)?,
                count: row.get(5)?,
            };
            let step = steps.entry(step_of(row.get(0)?)).or_default();
            let facts = step
                .nodes
                .entry(intern(&row.get::<_, String>(1)?))
                .or_default();
            note_version(
                &mut facts.versions,
                intern(&row.get::<_, String>(2)?),
                &seen,
            );
        }

        let mut statement = conn.prepare(
            "SELECT bucket_ns, source, target, kind, from_release, to_release, first_seen_ns,
                    last_seen_ns, calls
             FROM edge_release_buckets WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ?",
        )?;
        let mut rows = statement.query(range)?;
        while let Some(row) = rows.next()? {
            let key = EdgeKey {
                from: intern(&row.get::<_, String>(1)?),
                to: intern(&row.get::<_, String>(2)?),
                kind: EdgeKind::from_name(&row.get::<_, String>(3)?),
            };
            let pair = VersionPair {
                from: intern(&row.get::<_, String>(4)?),
                to: intern(&row.get::<_, String>(5)?),
            };
            let seen = Seen {
                first_ns: row.get(6)?,
                last_ns: row.get(7)?,
                count: row.get(8)?,
            };
            let step = steps.entry(step_of(row.get(0)?)).or_default();
            if let Some(stats) = step.edges.get_mut(&key) {
                note_version(&mut stats.versions, pair, &seen);
            }
        }

        for (start, aggregate) in steps {
            each(start, aggregate);
        }
        chunk_start = chunk_end;
    }
    Ok(())
}

/// The edges into or out of `node` in each bucket of `width` starting in `[since, until)`, for
/// charts over time. Rows come ordered by bucket.
pub fn node_edges(
    conn: &Connection,
    width_ns: i64,
    since_ns: i64,
    until_ns: i64,
    node: &str,
) -> Result<Vec<(i64, EdgeKey, EdgeStats)>, QueryError> {
    let mut statement = conn.prepare(
        "SELECT bucket_ns, source, target, kind, calls, errors, latency,
                coalesce(estimated_calls, calls::DOUBLE)
         FROM edge_buckets
         WHERE width_s = ? AND bucket_ns >= ? AND bucket_ns < ? AND (source = ? OR target = ?)
         ORDER BY bucket_ns",
    )?;
    let mut rows = statement.query(params![
        width_seconds(width_ns),
        since_ns,
        until_ns,
        node,
        node
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let key = EdgeKey {
            from: Arc::from(row.get::<_, String>(1)?.as_str()),
            to: Arc::from(row.get::<_, String>(2)?.as_str()),
            kind: EdgeKind::from_name(&row.get::<_, String>(3)?),
        };
        let stats = EdgeStats {
            calls: row.get(4)?,
            estimated_calls: row.get(7)?,
            errors: row.get(5)?,
            latency: sketch(&row.get::<_, Vec<u8>>(6)?),
            ..EdgeStats::default()
        };
        out.push((row.get(0)?, key, stats));
    }
    Ok(out)
}

/// The columns of the grouped edge query.
struct EdgeColumns(Columns);

impl EdgeColumns {
    fn of(batch: &RecordBatch) -> Result<EdgeColumns, QueryError> {
        use DataType::{Binary, Float64, Int64, UInt64, Utf8};
        let mut types = vec![
            Utf8, Utf8, Utf8, UInt64, UInt64, UInt64, UInt64, Binary, Binary, Int64, Int64,
            Float64, UInt64, UInt64, UInt64, Binary,
        ];
        // A 17th column, when asked for, is the bucket's start.
        if batch.num_columns() == 17 {
            types.push(Int64);
        }
        Columns::of(batch, &types).map(EdgeColumns)
    }

    /// Adds one row of the edge bucket query to `stats`.
    fn add_row(&self, row: usize, stats: &mut EdgeStats) {
        let (first, last) = (self.signed(9, row), self.signed(10, row));
        if stats.calls == 0 {
            (stats.first_seen_ns, stats.last_seen_ns) = (first, last);
        }
        let c = &self.0;
        stats.calls += c.number(3, row);
        stats.estimated_calls += c.real(11, row).unwrap_or(0.0);
        stats.errors += c.number(4, row);
        stats.traces += c.number(5, row);
        stats.max_calls_per_trace = stats.max_calls_per_trace.max(c.number(6, row));
        stats.first_seen_ns = stats.first_seen_ns.min(first);
        stats.last_seen_ns = stats.last_seen_ns.max(last);
        // A sketch that does not decode (a damaged file, or left out as empty) adds nothing.
        stats.latency.merge_bytes(self.bytes(7, row));
        stats.server_latency.merge_bytes(self.bytes(8, row));
        stats.retries += c.number(12, row);
        stats.max_attempts = stats.max_attempts.max(c.number(13, row));
        stats.fallbacks += c.number(14, row);
        stats.error_latency.merge_bytes(self.bytes(15, row));
    }

    fn text(&self, index: usize, row: usize) -> &str {
        self.0.text(index, row)
    }

    /// The query's times are never NULL.
    fn signed(&self, index: usize, row: usize) -> i64 {
        self.0.signed(index, row).unwrap_or(0)
    }

    /// A stored sketch; empty when NULL.
    fn bytes(&self, index: usize, row: usize) -> &[u8] {
        self.0.bytes(index, row).unwrap_or(&[])
    }
}

/// Columns of an Arrow batch, cast to the types read.
pub(crate) struct Columns(Vec<ArrayRef>);

impl Columns {
    pub(crate) fn of(batch: &RecordBatch, types: &[DataType]) -> Result<Columns, QueryError> {
        if batch.num_columns() != types.len() {
            return Err(QueryError::Arrow(
                "unexpected columns in a bucket query".to_owned(),
            ));
        }
        batch
            .columns()
            .iter()
            .zip(types)
            .map(|(column, to)| cast(column, to))
            .collect::<Result<Vec<_>, _>>()
            .map(Columns)
            .map_err(|err| QueryError::Arrow(err.to_string()))
    }

    pub(crate) fn text(&self, i: usize, row: usize) -> &str {
        self.0[i].as_string::<i32>().value(row)
    }

    pub(crate) fn number(&self, i: usize, row: usize) -> u64 {
        self.0[i].as_primitive::<UInt64Type>().value(row)
    }

    pub(crate) fn signed(&self, i: usize, row: usize) -> Option<i64> {
        let column = self.0[i].as_primitive::<Int64Type>();
        (!column.is_null(row)).then(|| column.value(row))
    }

    pub(crate) fn real(&self, i: usize, row: usize) -> Option<f64> {
        let column = self.0[i].as_primitive::<Float64Type>();
        (!column.is_null(row)).then(|| column.value(row))
    }

    pub(crate) fn flag(&self, i: usize, row: usize) -> bool {
        self.0[i].as_boolean().value(row)
    }

    pub(crate) fn bytes(&self, i: usize, row: usize) -> Option<&[u8]> {
        let column = self.0[i].as_any().downcast_ref::<BinaryArray>()?;
        (!column.is_null(row)).then(|| column.value(row))
    }
}

/// A stored sketch; one that does not decode (a damaged file) counts as empty.
fn sketch(bytes: &[u8]) -> LatencySketch {
    LatencySketch::from_bytes(bytes).unwrap_or_default()
}

/// What a read of buckets includes of the releases nodes and edges were seen with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Releases {
    Read,
    /// Left out, for readers that do not show them (history's findings): they are a good
    /// part of a read's rows.
    Skipped,
}

/// Reads a window from whatever widths cover it best.
pub fn read_window(
    conn: &Connection,
    since_ns: i64,
    until_ns: i64,
    releases: Releases,
) -> Result<Aggregate, QueryError> {
    let mut aggregate = Aggregate::default();
    let days = rolled_up_days(conn, since_ns, until_ns)?;
    read(
        conn,
        &plan_with_days(since_ns, until_ns, &days),
        releases,
        &mut aggregate,
    )?;
    Ok(aggregate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute_bucket(minute: i64) -> Aggregate {
        let mut aggregate = Aggregate::default();
        let start = minute * MINUTE_NS;
        let mut edge = |from: &str, to: &str, kind, calls: u64| {
            let mut stats = EdgeStats {
                calls,
                // Sampled at 1 in 4 in even minutes, kept whole in odd ones.
                estimated_calls: calls as f64 * if minute % 2 == 0 { 4.0 } else { 1.0 },
                errors: calls % 3,
                traces: calls / 2 + 1,
                max_calls_per_trace: calls % 7 + 1,
                first_seen_ns: start + 5,
                last_seen_ns: start + MINUTE_NS - 5,
                retries: calls % 2,
                max_attempts: calls % 4 + 1,
                fallbacks: calls % 5,
                ..EdgeStats::default()
            };
            for n in 0..calls as i64 {
                stats.latency.add(1_000_000 * (n % 50 + minute));
                stats.server_latency.add(500_000 * (n % 50 + 1));
            }
            for n in 0..stats.errors as i64 {
                stats.error_latency.add(2_000_000_000 + n);
            }
            // A release of the caller at minute 90, and a callee that never says its own.
            let release = if minute < 90 { "1.0" } else { "1.1" };
            let pair = VersionPair {
                from: Arc::from(release),
                to: Arc::from(""),
            };
            let seen = Seen {
                first_ns: start + 7,
                last_ns: start + 9,
                count: calls,
            };
            stats.versions.insert(pair, seen);
            let key = EdgeKey {
                from: Arc::from(from),
                to: Arc::from(to),
                kind,
            };
            aggregate.edges.insert(key, stats);
        };
        edge("gateway", "orders", EdgeKind::Sync, minute as u64 % 11 + 1);
        if minute % 2 == 0 {
            edge("orders", "kafka/orders", EdgeKind::Async, 3);
        }
        let entry = aggregate
            .entries
            .entry(EntryKey {
                service: Arc::from("gateway"),
                operation: Arc::from("GET /orders"),
            })
            .or_default();
        entry.traces = minute as u64 % 4 + 1;
        entry.latency.add(1_000_000 * (minute + 10));
        for (service, time_ms) in [("gateway", minute % 7 + 1), ("orders", minute % 5 + 2)] {
            let path = entry.critical_path.entry(Arc::from(service)).or_default();
            path.traces = 1;
            path.total_ns = time_ms * 1_000_000;
            path.time.add(time_ms * 1_000_000);
        }
        aggregate.diagnostics.spans = minute as u64;
        aggregate.diagnostics.spans_without_sampling = minute as u64 % 3;
        let gateway = aggregate.nodes.entry(Arc::from("gateway")).or_default();
        gateway.spans_without_sampling = minute as u64 % 5;
        gateway.seen = Some(Seen {
            first_ns: start + 1,
            last_ns: start + 2,
            count: 2,
        });
        let release = if minute < 90 { "1.0" } else { "1.1" };
        gateway
            .versions
            .insert(Arc::from(release), Seen::at(start + 1));
        let operation = aggregate
            .operations
            .entry(OperationKey {
                from_service: Arc::from("gateway"),
                from_operation: Arc::from("GET /orders"),
                to_service: Arc::from("orders"),
                to_operation: Arc::from("list"),
            })
            .or_default();
        operation.calls = 2;
        operation.first_seen_ns = start + 3;
        operation.last_seen_ns = start + 4;
        aggregate
    }

    /// A day rolled up reads as its hours did; a later write into it undoes the roll-up
    /// until the day is rolled up again.
    #[test]
    fn rolled_up_days_read_as_their_hours_until_written_again() {
        let store = crate::Store::open(&crate::Location::Memory).unwrap();
        let conn = store.connection();
        let writer = store.bucket_writer().unwrap();
        let (minutes, hours) = minutes_and_hours((0..51 * 60).step_by(7), minute_bucket);
        writer.write(&minutes).unwrap();
        writer.write(&hours).unwrap();
        let (since, until) = (30 * MINUTE_NS, 50 * HOUR_NS + 30 * MINUTE_NS);
        let before = read_window(conn, since, until, Releases::Read).unwrap();
        // Without releases, the same read less its releases.
        let mut unreleased = before.clone();
        assert!(unreleased.edges.values().any(|s| !s.versions.is_empty()));
        assert!(unreleased.nodes.values().any(|n| !n.versions.is_empty()));
        unreleased
            .edges
            .values_mut()
            .for_each(|s| s.versions.clear());
        unreleased
            .nodes
            .values_mut()
            .for_each(|n| n.versions.clear());
        assert_eq!(
            read_window(conn, since, until, Releases::Skipped).unwrap(),
            unreleased
        );

        // Days 0 and 1 are over by hour 50; day 2 is not.
        assert_eq!(writer.roll_up_days(50 * HOUR_NS).unwrap(), 2);
        assert_eq!(writer.roll_up_days(50 * HOUR_NS).unwrap(), 0);
        assert_eq!(
            rolled_up_days(conn, 0, 3 * DAY_NS).unwrap(),
            BTreeSet::from([0, DAY_NS])
        );
        // Only day 1 lies whole in the window.
        assert!(
            plan_with_days(since, until, &BTreeSet::from([0, DAY_NS])).contains(&(
                DAY_NS,
                DAY_NS,
                2 * DAY_NS
            ))
        );
        assert_eq!(
            read_window(conn, since, until, Releases::Read).unwrap(),
            before
        );

        // A late minute of day 1 (and its hour): the day is read from hours again, with it.
        let late = 30 * 60 + 1;
        let mut one = Buckets::new(MINUTE_NS);
        one.buckets.insert(late * MINUTE_NS, minute_bucket(late));
        let mut its_hour = Buckets::new(HOUR_NS);
        its_hour.buckets.insert(30 * HOUR_NS, minute_bucket(late));
        writer.write(&one).unwrap();
        writer.write(&its_hour).unwrap();
        assert_eq!(
            rolled_up_days(conn, 0, 3 * DAY_NS).unwrap(),
            BTreeSet::from([0])
        );
        let mut expected = before.clone();
        expected.merge(&minute_bucket(late));
        let calls = |a: &Aggregate| a.edges.values().map(|e| e.calls).sum::<u64>();
        let with_late = read_window(conn, since, until, Releases::Read).unwrap();
        assert_eq!(calls(&with_late), calls(&expected));
        assert_eq!(writer.roll_up_days(50 * HOUR_NS).unwrap(), 1);
        assert_eq!(
            read_window(conn, since, until, Releases::Read).unwrap(),
            with_late
        );

        // Replacing an hour of day 1 (a rebuild that found nothing) undoes its roll-up too.
        writer.replace(30 * HOUR_NS, 31 * HOUR_NS, &[]).unwrap();
        assert_eq!(
            rolled_up_days(conn, 0, 3 * DAY_NS).unwrap(),
            BTreeSet::from([0])
        );
        let mut hour_30 = Aggregate::default();
        for m in (30 * 60..31 * 60).filter(|m| m % 7 == 0).chain([late]) {
            hour_30.merge(&minute_bucket(m));
        }
        let replaced = read_window(conn, since, until, Releases::Read).unwrap();
        assert_eq!(calls(&replaced), calls(&with_late) - calls(&hour_30));
        assert_eq!(writer.roll_up_days(50 * HOUR_NS).unwrap(), 1);
        assert_eq!(
            read_window(conn, since, until, Releases::Read).unwrap(),
            replaced
        );
    }

    /// Reading a window that starts and ends inside hours takes the minutes at the ends and
    /// the hours between; what comes out must be exactly the merge of its minutes.
    #[test]
    fn a_window_reads_as_the_merge_of_its_minutes() {
        let store = crate::Store::open(&crate::Location::Memory).unwrap();
        let conn = store.connection();
        let (minute_buckets, hour_buckets) = three_hours();
        let writer = store.bucket_writer().unwrap();
        writer.write(&minute_buckets).unwrap();
        writer.write(&hour_buckets).unwrap();
        let minutes = &minute_buckets.buckets;

        let (since, until) = (17 * MINUTE_NS, 157 * MINUTE_NS);
        let mut expected = Aggregate::default();
        for bucket in minutes.range(since..until).map(|(_, b)| b) {
            expected.merge(bucket);
        }
        let read = read_window(conn, since, until, Releases::Read).unwrap();
        assert_eq!(read.edges.len(), 2);
        for (key, want) in &expected.edges {
            let got = &read.edges[key];
            let figures = |s: &EdgeStats| {
                (
                    s.calls,
                    s.estimated_calls,
                    s.errors,
                    s.traces,
                    s.max_calls_per_trace,
                    s.first_seen_ns,
                    s.last_seen_ns,
                    s.latency.count(),
                    s.server_latency.count(),
                    (s.retries, s.max_attempts, s.fallbacks),
                    (s.error_latency.count(), s.error_latency.max_ns()),
                )
            };
            assert_eq!(figures(got), figures(want), "{key:?}");
            for q in [0.5, 0.9, 0.99] {
                assert_eq!(got.latency.quantile_ns(q), want.latency.quantile_ns(q));
            }
        }
        assert_eq!(read.entries.len(), 1);
        for (key, want) in &expected.entries {
            let got = &read.entries[key];
            assert_eq!(got.traces, want.traces);
            assert_eq!(
                got.latency.quantile_ns(0.99),
                want.latency.quantile_ns(0.99)
            );
            let path = |e: &EntryStats| -> Vec<(String, u64, i64, u64, Option<f64>)> {
                e.critical_path
                    .iter()
                    .map(|(s, p)| {
                        let p99 = p.time.quantile_ns(0.99);
                        (s.to_string(), p.traces, p.total_ns, p.time.count(), p99)
                    })
                    .collect()
            };
            assert_eq!(path(got), path(want));
            assert_eq!(path(want).len(), 2);
        }
        assert_eq!(read.diagnostics.spans, (17..157).sum::<u64>());
        assert_eq!(
            read.diagnostics.spans_without_sampling,
            (17..157).map(|m| m % 3).sum::<u64>()
        );
        assert_eq!(
            read.nodes["gateway"].spans_without_sampling,
            (17..157).map(|m| m % 5).sum::<u64>()
        );
        // History: when things were seen, and in which releases.
        for (key, want) in &expected.edges {
            assert_eq!(read.edges[key].versions, want.versions, "{key:?}");
            assert_eq!(want.versions.len(), 2, "both releases of the caller");
        }
        let (gateway, want) = (&read.nodes["gateway"], &expected.nodes["gateway"]);
        assert_eq!(gateway.versions, want.versions);
        assert_eq!(
            gateway.seen.map(|s| (s.first_ns, s.last_ns)),
            Some((17 * MINUTE_NS + 1, 156 * MINUTE_NS + 2))
        );
        let operation = read.operations.values().next().unwrap();
        assert_eq!(
            (
                operation.first_seen_ns,
                operation.last_seen_ns,
                operation.calls
            ),
            (17 * MINUTE_NS + 3, 156 * MINUTE_NS + 4, 2 * 140)
        );
    }

    /// Three hours of minute buckets made by `bucket`, and the hour buckets that sum them.
    fn three_hours_of(bucket: impl Fn(i64) -> Aggregate) -> (Buckets, Buckets) {
        minutes_and_hours(0..180, bucket)
    }

    /// The buckets of `minutes` made by `bucket`, and the hour buckets that sum them.
    fn minutes_and_hours(
        minutes_numbered: impl Iterator<Item = i64>,
        bucket: impl Fn(i64) -> Aggregate,
    ) -> (Buckets, Buckets) {
        let mut minutes = Buckets::new(MINUTE_NS);
        let mut hours = Buckets::new(HOUR_NS);
        for m in minutes_numbered {
            let bucket = bucket(m);
            hours
                .buckets
                .entry((m * MINUTE_NS).div_euclid(HOUR_NS) * HOUR_NS)
                .or_default()
                .merge(&bucket);
            minutes.buckets.insert(m * MINUTE_NS, bucket);
        }
        (minutes, hours)
    }

    fn three_hours() -> (Buckets, Buckets) {
        three_hours_of(minute_bucket)
    }

    fn calls_in(conn: &Connection, since: i64, until: i64) -> u64 {
        read_window(conn, since, until, Releases::Read)
            .unwrap()
            .edges
            .values()
            .map(|s| s.calls)
            .sum()
    }

    #[test]
    fn replacing_a_range_swaps_its_buckets_of_every_width_at_once() {
        let store = crate::Store::open(&crate::Location::Memory).unwrap();
        let conn = store.connection();
        let writer = store.bucket_writer().unwrap();
        let (minutes, hours) = three_hours();
        writer.write(&minutes).unwrap();
        writer.write(&hours).unwrap();
        let before = calls_in(conn, 0, 3 * HOUR_NS);
        assert!(before > 0);

        // The second hour again, with one call a minute; the buckets around it stay as they were.
        let (fresh_minutes, fresh_hour) = three_hours_of(|_| {
            let mut bucket = Aggregate::default();
            bucket.edges.insert(
                EdgeKey {
                    from: Arc::from("gateway"),
                    to: Arc::from("orders"),
                    kind: EdgeKind::Sync,
                },
                EdgeStats {
                    calls: 1,
                    traces: 1,
                    ..EdgeStats::default()
                },
            );
            bucket
        });
        writer
            .replace(HOUR_NS, 2 * HOUR_NS, &[&fresh_minutes, &fresh_hour])
            .unwrap();
        assert_eq!(calls_in(conn, HOUR_NS, 2 * HOUR_NS), 60);
        assert_eq!(calls_in(conn, HOUR_NS + 30 * MINUTE_NS, 2 * HOUR_NS), 30);
        assert_eq!(
            calls_in(conn, 0, HOUR_NS),
            calls_in_memory(&minutes, 0, HOUR_NS)
        );
        assert_eq!(
            calls_in(conn, 2 * HOUR_NS, 3 * HOUR_NS),
            calls_in_memory(&minutes, 2 * HOUR_NS, 3 * HOUR_NS)
        );

        // A replace that fails half way (one table gone) leaves every bucket as it was.
        let after_first = calls_in(conn, 0, 3 * HOUR_NS);
        conn.execute_batch("ALTER TABLE entry_buckets RENAME TO entry_buckets_away")
            .unwrap();
        assert!(writer.replace(0, 3 * HOUR_NS, &[&fresh_minutes]).is_err());
        conn.execute_batch("ALTER TABLE entry_buckets_away RENAME TO entry_buckets")
            .unwrap();
        assert_eq!(calls_in(conn, 0, 3 * HOUR_NS), after_first);
        assert_eq!(calls_in(conn, HOUR_NS, 2 * HOUR_NS), 60);
    }

    fn calls_in_memory(buckets: &Buckets, since: i64, until: i64) -> u64 {
        buckets
            .buckets
            .range(since..until)
            .flat_map(|(_, b)| b.edges.values())
            .map(|s| s.calls)
            .sum()
    }

    #[test]
    fn windows_use_hours_in_the_middle_and_minutes_at_the_ends() {
        let t = |h: i64, m: i64| h * HOUR_NS + m * MINUTE_NS;
        assert_eq!(
            plan(t(10, 30), t(13, 15)),
            vec![
                (MINUTE_NS, t(10, 30), t(11, 0)),
                (HOUR_NS, t(11, 0), t(13, 0)),
                (MINUTE_NS, t(13, 0), t(13, 15))
            ]
        );
        assert_eq!(
            plan(t(10, 30), t(10, 45)),
            vec![(MINUTE_NS, t(10, 30), t(10, 45))]
        );
        assert_eq!(
            plan(t(10, 0), t(12, 0)),
            vec![
                (MINUTE_NS, t(10, 0), t(10, 0)),
                (HOUR_NS, t(10, 0), t(12, 0)),
                (MINUTE_NS, t(12, 0), t(12, 0))
            ]
        );
    }
}
