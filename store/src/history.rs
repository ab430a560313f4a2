//! The steps of a window for history ([`archtrace_analyzer::history::replay`]), read as figures:
//! edges and nodes come numbered by DuckDB, each edge row brings its p99 and each bucket the
//! sketch of all its calls, so a month of hours is read without a string or a sketch per row.
//! A step whose rows cannot be taken as they are (several rows of one edge, as when the step is
//! wider than the buckets or late spans added a row; rows written before schema v9) is read
//! whole instead. Releases are read afterwards, for only the steps and numbers an event needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use archtrace_analyzer::aggregate::{note_version, Seen, VersionPair};
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_analyzer::history::{Id, MissingVersions, Period, PeriodEdge, PeriodNode, Periods};
use archtrace_analyzer::sketch::LatencySketch;
use arrow::datatypes::DataType;
use duckdb::{params, Connection};

use crate::buckets::{
    in_transaction, parse_node_type, read_steps, step_width, width_seconds, Columns,
};
use crate::QueryError;

const RANGE: &str = "width_s = ? AND bucket_ns >= ? AND bucket_ns < ?";

use DataType::{Binary, Boolean, Float64, Int64, UInt64, Utf8};

/// Runs `sql` with the range given `times` times and calls `each` with every batch.
fn each_batch(
    conn: &Connection,
    sql: &str,
    range: (i64, i64, i64),
    times: usize,
    types: &[DataType],
    each: &mut dyn FnMut(&Columns, usize),
) -> Result<(), QueryError> {
    let mut statement = conn.prepare(sql)?;
    let values: Vec<i64> = (0..times)
        .flat_map(|_| [range.0, range.1, range.2])
        .collect();
    for batch in statement.query_arrow(duckdb::params_from_iter(values))? {
        let columns = Columns::of(&batch, types)?;
        for row in 0..batch.num_rows() {
            each(&columns, row);
        }
    }
    Ok(())
}

/// Two queries over `table` in the range: its distinct `key`s in order, and its rows'
/// `columns` after the number of their key in that order.
fn numbered(table: &str, key: &str, columns: &str, filter: &str) -> (String, String) {
    let distinct = format!("SELECT DISTINCT {key} FROM {table} WHERE {RANGE}{filter}");
    (
        format!("SELECT {key} FROM ({distinct}) ORDER BY {key}"),
        format!(
            "WITH numbered AS (SELECT *, row_number() OVER (ORDER BY {key}) - 1 AS id FROM ({distinct}))
             SELECT numbered.id, {columns} FROM {table} t JOIN numbered USING ({key})
             WHERE t.{}{filter}",
            RANGE.replace(" AND ", " AND t.")
        ),
    )
}

#[derive(Default)]
struct StepRows {
    edges: Vec<PeriodEdge>,
    nodes: Vec<NodeRow>,
    all_calls: LatencySketch,
    bucket_rows: usize,
    /// Rows the figures alone do not sum: read the step whole.
    whole: bool,
}

impl StepRows {
    fn is_empty(&self) -> bool {
        // `whole` is only ever set with a bucket row.
        self.edges.is_empty() && self.nodes.is_empty() && self.bucket_rows == 0
    }
}

/// What history reads of a node's bucket row.
#[derive(Clone, Copy)]
struct NodeRow {
    id: Id,
    reports_spans: bool,
    /// The most specific type rules gave it.
    peer_type: Option<NodeType>,
    seen: Option<Seen>,
}

impl NodeRow {
    fn merge(&mut self, other: &NodeRow) {
        self.reports_spans |= other.reports_spans;
        self.peer_type = match (self.peer_type, other.peer_type) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.seen = match (self.seen, other.seen) {
            (Some(mut a), Some(b)) => {
                a.merge(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }

    fn period_node(&self) -> PeriodNode {
        PeriodNode {
            id: self.id,
            reports_spans: self.reports_spans,
            node_type: NodeType::of(self.reports_spans, self.peer_type),
            seen: self.seen,
        }
    }
}

/// Adds the steps of `step_ns` (a whole number of minutes) from `since` (a step boundary) to
/// `until` to `periods`. Steps with nothing derived are left out.
pub fn read_periods(
    conn: &Connection,
    step_ns: i64,
    since_ns: i64,
    until_ns: i64,
    periods: &mut Periods,
) -> Result<(), QueryError> {
    let width = step_width(step_ns);
    let step_ns = step_ns.max(width) / width * width;
    let range = (width_seconds(width), since_ns, until_ns);
    // By number from `since`: rows come in no order, and a month of hours has millions.
    let count =
        usize::try_from((until_ns - since_ns + step_ns - 1).div_euclid(step_ns)).unwrap_or(0);
    let mut steps: Vec<StepRows> = (0..count).map(|_| StepRows::default()).collect();
    let step_index = |bucket: i64| usize::try_from((bucket - since_ns).div_euclid(step_ns)).ok();
    // One transaction: the numbering and the numbered rows see the same data.
    in_transaction(conn, || {
        let (names, rows) = numbered(
            "edge_buckets",
            "source, target, kind",
            "t.bucket_ns, t.calls, t.errors, t.first_seen_ns, t.last_seen_ns, t.p99_ns",
            " AND calls > 0",
        );
        let mut edge_ids = Vec::new();
        each_batch(
            conn,
            &names,
            range,
            1,
            &[Utf8, Utf8, Utf8],
            &mut |c, row| {
                let kind = EdgeKind::from_name(c.text(2, row));
                edge_ids.push(periods.edge_id(c.text(0, row), c.text(1, row), kind));
            },
        )?;
        let types = [UInt64, Int64, UInt64, UInt64, Int64, Int64, Float64];
        each_batch(conn, &rows, range, 2, &types, &mut |c, row| {
            let (Some(bucket), Some(&id)) =
                (c.signed(1, row), edge_ids.get(c.number(0, row) as usize))
            else {
                return;
            };
            let Some(step) = step_index(bucket).and_then(|i| steps.get_mut(i)) else {
                return;
            };
            step.edges.push(PeriodEdge {
                id,
                calls: c.number(2, row),
                errors: c.number(3, row),
                p99_ns: c.real(6, row),
                first_seen_ns: c.signed(4, row).unwrap_or(bucket),
                last_seen_ns: c.signed(5, row).unwrap_or(bucket),
            });
        })?;

        let sql = format!("SELECT bucket_ns, latency FROM diagnostic_buckets WHERE {RANGE}");
        each_batch(conn, &sql, range, 1, &[Int64, Binary], &mut |c, row| {
            let Some(step) = c
                .signed(0, row)
                .and_then(step_index)
                .and_then(|i| steps.get_mut(i))
            else {
                return;
            };
            step.bucket_rows += 1;
            // Written before schema v9: the step's p99 needs its edges' sketches.
            match c.bytes(1, row) {
                Some(bytes) if step.all_calls.merge_bytes(bytes) => {}
                _ => step.whole = true,
            }
        })?;

        let (names, rows) = numbered(
            "node_buckets",
            "node",
            "t.bucket_ns, t.reports_spans, t.peer_types, t.first_seen_ns, t.last_seen_ns",
            "",
        );
        let mut name_ids = Vec::new();
        each_batch(conn, &names, range, 1, &[Utf8], &mut |c, row| {
            name_ids.push(periods.name_id(c.text(0, row)));
        })?;
        let mut types_of: HashMap<String, Option<NodeType>> = HashMap::new();
        let types = [UInt64, Int64, Boolean, Utf8, Int64, Int64];
        each_batch(conn, &rows, range, 2, &types, &mut |c, row| {
            let (Some(bucket), Some(&id)) =
                (c.signed(1, row), name_ids.get(c.number(0, row) as usize))
            else {
                return;
            };
            let Some(step) = step_index(bucket).and_then(|i| steps.get_mut(i)) else {
                return;
            };
            let peer_types = c.text(3, row);
            let peer_type = match types_of.get(peer_types) {
                Some(peer_type) => *peer_type,
                None => {
                    let peer_type = peer_types.split(',').filter_map(parse_node_type).min();
                    types_of.insert(peer_types.to_owned(), peer_type);
                    peer_type
                }
            };
            step.nodes.push(NodeRow {
                id,
                reports_spans: c.flag(2, row),
                peer_type,
                seen: c
                    .signed(4, row)
                    .zip(c.signed(5, row))
                    .map(|(first_ns, last_ns)| Seen {
                        first_ns,
                        last_ns,
                        count: 1,
                    }),
            });
        })?;
        Ok(())
    })?;

    let mut whole_steps = Vec::new();
    for (start, mut rows) in (since_ns..)
        .step_by(step_ns as usize)
        .zip(steps)
        .filter(|(_, rows)| !rows.is_empty())
    {
        match period_of(start, &mut rows) {
            Some(period) => {
                periods.steps.insert(start, period);
            }
            None => whole_steps.push(start),
        }
    }
    // Steps read whole, a run of consecutive ones per query.
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for start in whole_steps {
        match runs.last_mut() {
            Some((_, end)) if *end == start => *end = start + step_ns,
            _ => runs.push((start, start + step_ns)),
        }
    }
    for (since, until) in runs {
        read_steps(
            conn,
            step_ns,
            since,
            until.min(until_ns),
            &mut |start, aggregate| periods.add_aggregate(start, &aggregate),
        )?;
    }
    Ok(())
}

/// The step from its rows; `None` when they must be read whole.
fn period_of(start_ns: i64, rows: &mut StepRows) -> Option<Period> {
    if rows.whole || (rows.bucket_rows == 0 && !rows.edges.is_empty()) {
        return None;
    }
    rows.edges.sort_unstable_by_key(|edge| edge.id);
    let mut period = Period {
        start_ns,
        p99_ns: rows.all_calls.quantile_ns(0.99),
        ..Period::default()
    };
    for edge in rows.edges.drain(..) {
        if period.edges.last().is_some_and(|last| last.id == edge.id) {
            // Two rows of one edge: their p99s do not add up.
            return None;
        }
        period.calls += edge.calls;
        period.errors += edge.errors;
        period.edges.push(edge);
    }
    rows.nodes.sort_unstable_by_key(|node| node.id);
    let mut merged: Vec<NodeRow> = Vec::with_capacity(rows.nodes.len());
    for node in rows.nodes.drain(..) {
        match merged.last_mut() {
            Some(last) if last.id == node.id => last.merge(&node),
            _ => merged.push(node),
        }
    }
    period.nodes = merged.iter().map(NodeRow::period_node).collect();
    Some(period)
}

/// Steps per query when releases are read.
const RANGES_PER_QUERY: usize = 64;

/// Reads the releases `missing` names into `periods` (steps of `step_ns`); those with none
/// stored are known to have none.
pub fn read_period_versions(
    conn: &Connection,
    step_ns: i64,
    periods: &mut Periods,
    missing: &MissingVersions,
) -> Result<(), QueryError> {
    let width = step_width(step_ns);
    let step_ns = step_ns.max(width) / width * width;
    let mut starts: Vec<i64> = missing
        .edges
        .iter()
        .chain(&missing.nodes)
        .map(|(start, _)| *start)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let Some(&origin) = starts.first() else {
        return Ok(());
    };
    let step_of = |bucket: i64| origin + (bucket - origin).div_euclid(step_ns) * step_ns;
    let mut edges: HashMap<(i64, Id), BTreeMap<VersionPair, Seen>> = missing
        .edges
        .iter()
        .map(|wanted| (*wanted, BTreeMap::new()))
        .collect();
    let mut nodes: HashMap<(i64, Id), BTreeMap<Arc<str>, Seen>> = missing
        .nodes
        .iter()
        .map(|wanted| (*wanted, BTreeMap::new()))
        .collect();
    for chunk in starts.chunks(RANGES_PER_QUERY) {
        // Our own numbers, not input: safe to write into the query.
        let filter = chunk
            .iter()
            .map(|start| format!("(bucket_ns >= {start} AND bucket_ns < {})", start + step_ns))
            .collect::<Vec<_>>()
            .join(" OR ");
        let width_s = width_seconds(width);
        let mut statement = conn.prepare(&format!(
            "SELECT bucket_ns, source, target, kind, from_release, to_release, first_seen_ns,
                    last_seen_ns, calls
             FROM edge_release_buckets WHERE width_s = ? AND ({filter})"
        ))?;
        let types = [Int64, Utf8, Utf8, Utf8, Utf8, Utf8, Int64, Int64, UInt64];
        for batch in statement.query_arrow(params![width_s])? {
            let c = Columns::of(&batch, &types)?;
            for row in 0..batch.num_rows() {
                let kind = EdgeKind::from_name(c.text(3, row));
                let (Some(bucket), Some(id)) = (
                    c.signed(0, row),
                    periods.find_edge(c.text(1, row), c.text(2, row), kind),
                ) else {
                    continue;
                };
                if let Some(versions) = edges.get_mut(&(step_of(bucket), id)) {
                    let pair = VersionPair {
                        from: Arc::from(c.text(4, row)),
                        to: Arc::from(c.text(5, row)),
                    };
                    let seen = Seen {
                        first_ns: c.signed(6, row).unwrap_or(bucket),
                        last_ns: c.signed(7, row).unwrap_or(bucket),
                        count: c.number(8, row),
                    };
                    note_version(versions, pair, &seen);
                }
            }
        }
        let mut statement = conn.prepare(&format!(
            "SELECT bucket_ns, node, release, first_seen_ns, last_seen_ns, spans
             FROM release_buckets WHERE width_s = ? AND ({filter})"
        ))?;
        let types = [Int64, Utf8, Utf8, Int64, Int64, UInt64];
        for batch in statement.query_arrow(params![width_s])? {
            let c = Columns::of(&batch, &types)?;
            for row in 0..batch.num_rows() {
                let (Some(bucket), Some(id)) =
                    (c.signed(0, row), periods.find_name(c.text(1, row)))
                else {
                    continue;
                };
                if let Some(versions) = nodes.get_mut(&(step_of(bucket), id)) {
                    let seen = Seen {
                        first_ns: c.signed(3, row).unwrap_or(bucket),
                        last_ns: c.signed(4, row).unwrap_or(bucket),
                        count: c.number(5, row),
                    };
                    note_version(versions, Arc::from(c.text(2, row)), &seen);
                }
            }
        }
    }
    for ((start, id), versions) in edges {
        if let Some(period) = periods.steps.get_mut(&start) {
            period.edge_versions.insert(id, versions);
        }
    }
    for ((start, id), versions) in nodes {
        if let Some(period) = periods.steps.get_mut(&start) {
            period.node_versions.insert(id, versions);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use archtrace_analyzer::aggregate::{Aggregate, Buckets, EdgeKey, EdgeStats};
    use archtrace_analyzer::derive::NodeType;
    use archtrace_analyzer::history::{replay, EventKind, History, HistorySettings};

    use crate::buckets::HOUR_NS as H;

    const T0: i64 = 1_780_000_000 * 1_000_000_000 / H * H;

    /// `from -> to` with releases, `calls` calls of `latency_ms`, seen ten minutes into `hour`.
    fn call(
        aggregate: &mut Aggregate,
        hour: i64,
        (from, from_release): (&str, &str),
        (to, to_release): (&str, &str),
        calls: u64,
        latency_ms: i64,
    ) {
        let at = T0 + hour * H + 600_000_000_000;
        let mut stats = EdgeStats {
            calls,
            errors: 0,
            first_seen_ns: at,
            last_seen_ns: at + 1,
            ..EdgeStats::default()
        };
        for _ in 0..calls {
            stats.latency.add(latency_ms * 1_000_000);
        }
        stats.versions.insert(
            VersionPair {
                from: Arc::from(from_release),
                to: Arc::from(to_release),
            },
            Seen::at(at),
        );
        let key = EdgeKey {
            from: Arc::from(from),
            to: Arc::from(to),
            kind: EdgeKind::Sync,
        };
        aggregate.edges.entry(key).or_default().merge(&stats);
        for (node, release) in [(from, from_release), (to, to_release)] {
            let facts = aggregate.nodes.entry(Arc::from(node)).or_default();
            if release.is_empty() {
                facts.peer_types.insert(NodeType::Database);
                continue;
            }
            facts.reports_spans = true;
            facts.note_seen(&Seen::at(at));
            note_version(&mut facts.versions, Arc::from(release), &Seen::at(at));
        }
    }

    /// Eight hours: web → cart throughout (slow in hour 5), web → ads until hour 2, cart →
    /// orders-db from hour 3 (release cart 1.1), pay 2.0 called from hour 4.
    fn hour(h: i64) -> Aggregate {
        let mut aggregate = Aggregate::default();
        let cart = if h < 3 { "1.0" } else { "1.1" };
        let latency = if h == 5 { 80 } else { 10 };
        call(
            &mut aggregate,
            h,
            ("web", "1.0"),
            ("cart", cart),
            200,
            latency,
        );
        if h <= 2 {
            call(&mut aggregate, h, ("web", "1.0"), ("ads", "1.0"), 60, 5);
        }
        if h >= 3 {
            call(&mut aggregate, h, ("cart", cart), ("orders-db", ""), 100, 2);
        }
        if h >= 4 {
            call(&mut aggregate, h, ("cart", cart), ("pay", "2.0"), 100, 20);
        }
        aggregate
    }

    fn histories(conn: &Connection, settings: &HistorySettings) -> (Periods, History, History) {
        let (since, until) = (T0 + 2 * H, T0 + 8 * H);
        let mut figures = Periods::default();
        read_periods(conn, H, T0, until, &mut figures).unwrap();
        let first = replay(&figures, since, until, settings);
        assert!(
            !first.missing.is_empty(),
            "releases are read only when asked"
        );
        read_period_versions(conn, H, &mut figures, &first.missing).unwrap();
        let second = replay(&figures, since, until, settings);
        assert!(second.missing.is_empty());
        let mut whole = Periods::default();
        read_steps(conn, H, T0, until, &mut |start, aggregate| {
            whole.add_aggregate(start, &aggregate)
        })
        .unwrap();
        let expected = replay(&whole, since, until, settings);
        (figures, second.history, expected.history)
    }

    /// Figures (with releases read afterwards) replay to exactly what whole steps replay to:
    /// also where a late row, or rows written before schema v9, make a step be read whole.
    #[test]
    fn steps_read_as_figures_replay_as_steps_read_whole() {
        let store = crate::Store::open(&crate::Location::Memory).unwrap();
        let writer = store.bucket_writer().unwrap();
        let mut buckets = Buckets::new(H);
        for h in 0..8 {
            buckets.buckets.insert(T0 + h * H, hour(h));
        }
        writer.write(&buckets).unwrap();
        // A late call of hour 6, written on its own; hour 7 as schema v8 wrote it.
        let mut late = Buckets::new(H);
        let mut aggregate = Aggregate::default();
        call(&mut aggregate, 6, ("web", "1.0"), ("cart", "1.1"), 5, 10);
        late.buckets.insert(T0 + 6 * H, aggregate);
        writer.write(&late).unwrap();
        let conn = store.connection();
        conn.execute_batch(&format!(
            "UPDATE edge_buckets SET p99_ns = NULL WHERE bucket_ns = {0};
             UPDATE diagnostic_buckets SET latency = NULL WHERE bucket_ns = {0};",
            T0 + 7 * H
        ))
        .unwrap();

        let settings = HistorySettings {
            gone_after_ns: 2 * H,
            ..HistorySettings::default()
        };
        let (figures, history, expected) = histories(conn, &settings);
        let known: Vec<bool> = figures.steps.values().map(|p| p.versions_known).collect();
        // Only hours 6 (two rows of web → cart) and 7 (no p99s) were read whole.
        assert_eq!(
            known,
            [false, false, false, false, false, false, true, true]
        );
        assert_eq!(history, expected);

        // And what they agree on is right, worked out from `hour`:
        let events: Vec<(EventKind, String, Vec<String>, i64)> = history
            .events
            .iter()
            .map(|e| {
                let at = (e.time_ns - T0) / H;
                (e.kind, e.subjects.join(","), e.versions.clone(), at)
            })
            .filter(|e| !matches!(e.0, EventKind::FanInCrossed | EventKind::FanOutCrossed))
            .collect();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            events,
            [
                (
                    EventKind::NewDatabaseUse,
                    "cart -> orders-db".to_owned(),
                    words(&["cart 1.1 -> orders-db"]),
                    3
                ),
                // ads was last seen in hour 2: gone two steps later, at the hour's start
                // (before pay's calls, ten minutes in).
                (EventKind::ServiceGone, "ads".to_owned(), vec![], 4),
                (
                    EventKind::EdgeGone,
                    "web -> ads".to_owned(),
                    words(&["web 1.0 -> ads 1.0"]),
                    4
                ),
                (
                    EventKind::NewService,
                    "pay".to_owned(),
                    words(&["pay 2.0"]),
                    4
                ),
                (
                    EventKind::NewEdge,
                    "cart -> pay".to_owned(),
                    words(&["cart 1.1 -> pay 2.0"]),
                    4
                ),
                (
                    EventKind::P99Regressed,
                    "web -> cart".to_owned(),
                    words(&["web 1.0 -> cart 1.1"]),
                    5
                ),
            ]
        );
        // The trend's p99 of hour 5 is web → cart's 80 ms (200 of its 400 calls).
        let p99 = history.trends[3].p99_ms.unwrap();
        assert!((p99 - 80.0).abs() < 1.0, "{p99}");
    }
}
