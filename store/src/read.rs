//! Spans back out of the store, a trace at a time, for derivation.

use std::collections::HashMap;
use std::sync::Arc;

use archtrace_analyzer::span::OptionalDetail;
use archtrace_analyzer::{Link, PeerAttributes, PeerKey, Span, SpanKind, StatusCode};
use arrow::array::{
    Array, ArrayRef, BinaryArray, Float64Array, Int64Array, StringArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use duckdb::Connection;

use crate::QueryError;

/// A connection for queries, beside the writer's (DuckDB serializes them internally).
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub(crate) fn new(conn: Connection) -> Reader {
        // Parsing and planning a query costs more than running it on a day's buckets: a
        // history reads tens of windows with the same few queries.
        conn.set_prepared_statement_cache_capacity(64);
        Reader { conn }
    }

    /// Another reader of the same store, on a connection of its own: reads on the two run
    /// side by side.
    pub fn try_clone(&self) -> Result<Reader, QueryError> {
        Ok(Reader::new(self.conn.try_clone()?))
    }

    /// Calls `each` with the spans of every trace that has a span starting in `[since, until)`
    /// (Unix nanoseconds). Whole traces are read, so a trace crossing the window's edge is not cut.
    pub fn for_each_trace(
        &self,
        since_ns: i64,
        until_ns: i64,
        each: &mut dyn FnMut(&[Span]),
    ) -> Result<(), QueryError> {
        for_each_trace(&self.conn, since_ns, until_ns, SPANS_PER_SLICE, each)
    }

    /// The derived edges of `[since, until)`, summed from the stored buckets.
    pub fn read_window(
        &self,
        since_ns: i64,
        until_ns: i64,
        releases: crate::buckets::Releases,
    ) -> Result<archtrace_analyzer::aggregate::Aggregate, QueryError> {
        crate::buckets::read_window(&self.conn, since_ns, until_ns, releases)
    }

    /// What was derived in each step of `[since, until)`, for history
    /// ([`crate::buckets::read_steps`]).
    pub fn read_steps(
        &self,
        step_ns: i64,
        since_ns: i64,
        until_ns: i64,
        each: &mut dyn FnMut(i64, archtrace_analyzer::aggregate::Aggregate),
    ) -> Result<(), QueryError> {
        crate::buckets::read_steps(&self.conn, step_ns, since_ns, until_ns, each)
    }

    /// The steps of `[since, until)` for history ([`crate::history::read_periods`]).
    pub fn read_periods(
        &self,
        step_ns: i64,
        since_ns: i64,
        until_ns: i64,
        periods: &mut archtrace_analyzer::history::Periods,
    ) -> Result<(), QueryError> {
        crate::history::read_periods(&self.conn, step_ns, since_ns, until_ns, periods)
    }

    /// The releases a replay of `periods` missed ([`crate::history::read_period_versions`]).
    pub fn read_period_versions(
        &self,
        step_ns: i64,
        periods: &mut archtrace_analyzer::history::Periods,
        missing: &archtrace_analyzer::history::MissingVersions,
    ) -> Result<(), QueryError> {
        crate::history::read_period_versions(&self.conn, step_ns, periods, missing)
    }

    /// The edges into or out of `node` per bucket of `width` in `[since, until)`.
    pub fn node_edges(
        &self,
        width_ns: i64,
        since_ns: i64,
        until_ns: i64,
        node: &str,
    ) -> Result<
        Vec<(
            i64,
            archtrace_analyzer::aggregate::EdgeKey,
            archtrace_analyzer::aggregate::EdgeStats,
        )>,
        QueryError,
    > {
        crate::buckets::node_edges(&self.conn, width_ns, since_ns, until_ns, node)
    }

    /// The `deployment.environment.name` values of the stored spans, sorted (at most 100).
    pub fn environments(&self) -> Result<Vec<String>, QueryError> {
        let mut statement = self.conn.prepare(
            "SELECT DISTINCT environment FROM spans WHERE environment IS NOT NULL ORDER BY 1 LIMIT 100",
        )?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The range of span start times in the store, for telling a user where the data is.
    pub fn span_time_range(&self) -> Result<Option<(i64, i64)>, QueryError> {
        let range: (Option<i64>, Option<i64>) = self.conn.query_row(
            "SELECT min(start_ns), max(start_ns) FROM spans",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(range.0.zip(range.1))
    }
}

fn for_each_trace(
    conn: &Connection,
    since_ns: i64,
    until_ns: i64,
    spans_per_slice: i64,
    each: &mut dyn FnMut(&[Span]),
) -> Result<(), QueryError> {
    // Traces are read in slices of about a million spans (by a hash of their id), so that the
    // sorted result DuckDB holds stays bounded however large the window.
    let spans_in_window: i64 = conn.query_row(
        "SELECT count(*) FROM spans WHERE start_ns >= ? AND start_ns < ?",
        [since_ns, until_ns],
        |row| row.get(0),
    )?;
    let slices = (spans_in_window / spans_per_slice.max(1) + 1).max(1);
    // A second connection queries the next slice while this thread turns the previous one
    // into traces and derives them: DuckDB's sort and our work overlap.
    let querying = conn.try_clone()?;
    // A rendezvous: at most one slice waits while another is derived.
    let (sender, slice_batches) = std::sync::mpsc::sync_channel(0);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let query = || -> Result<_, QueryError> {
                Ok(querying.prepare(
                    "SELECT trace_id, span_id, parent_span_id, service_name, span_name, span_kind,
                            start_ns, end_ns, status_code, peer_service, server_address, server_port,
                            network_peer_address, network_peer_port, net_peer_name, net_sock_peer_addr,
                            db_system, db_system_name, db_namespace, db_name, messaging_system,
                            messaging_destination_name, rpc_service, http_route, http_method, environment, links,
                            adjusted_count, resend_count::BIGINT, service_version
                     FROM spans
                     WHERE hash(trace_id) % ? = ?
                       AND trace_id IN (SELECT DISTINCT trace_id FROM spans
                                        WHERE start_ns >= ? AND start_ns < ? AND hash(trace_id) % ? = ?)
                     ORDER BY trace_id",
                )?)
            };
            let mut statement = match query() {
                Ok(statement) => statement,
                Err(err) => {
                    let _ = sender.send(Err(err));
                    return;
                }
            };
            for slice in 0..slices {
                // Arrow batches: columnar reads cost less than fetching 27 values row by row.
                let batches = statement
                    .query_arrow(duckdb::params![
                        slices as u64,
                        slice as u64,
                        since_ns,
                        until_ns,
                        slices as u64,
                        slice as u64
                    ])
                    .map(|batches| batches.collect::<Vec<_>>())
                    .map_err(QueryError::from);
                // The reader stopped (an error on its side): stop querying too.
                if sender.send(batches).is_err() {
                    return;
                }
            }
        });
        derive_slices(slice_batches, each)
    })
}

/// Turns the slices' rows (sorted by trace id) into traces for `each`.
fn derive_slices(
    slice_batches: std::sync::mpsc::Receiver<Result<Vec<RecordBatch>, QueryError>>,
    each: &mut dyn FnMut(&[Span]),
) -> Result<(), QueryError> {
    // Services and environments repeat on every row; share one allocation each.
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |text: &str| -> Arc<str> {
        match names.get(text) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(text);
                names.insert(text.to_owned(), name.clone());
                name
            }
        }
    };
    let mut trace: Vec<Span> = Vec::new();
    for batches in slice_batches {
        for batch in batches? {
            let columns = Columns::of(&batch)?;
            for row in 0..batch.num_rows() {
                let trace_id = columns.trace_id(0, row);
                if trace.last().is_some_and(|s| s.trace_id != trace_id) {
                    each(&trace);
                    trace.clear();
                }
                let owned = |i: usize| columns.text(i, row).map(str::to_owned);
                trace.push(Span {
                    trace_id,
                    span_id: columns.id(1, row).unwrap_or_default().to_be_bytes(),
                    parent_span_id: columns.id(2, row).map(u64::to_be_bytes),
                    service: intern(columns.text(3, row).unwrap_or_default()),
                    name: owned(4).unwrap_or_default(),
                    kind: SpanKind::from_otlp(columns.number(5, row).unwrap_or_default() as i32),
                    start_ns: columns.number(6, row).unwrap_or_default(),
                    end_ns: columns.number(7, row).unwrap_or_default(),
                    status: StatusCode::from_otlp(
                        columns.number(8, row).unwrap_or_default() as i32,
                    ),
                    links: columns.text(26, row).map(parse_links).unwrap_or_default(),
                    peer: {
                        let mut peer = PeerAttributes::from_texts([
                            (PeerKey::PeerService, owned(9)),
                            (PeerKey::ServerAddress, owned(10)),
                            (PeerKey::NetworkPeerAddress, owned(12)),
                            (PeerKey::NetPeerName, owned(14)),
                            (PeerKey::NetSockPeerAddr, owned(15)),
                            (PeerKey::DbSystem, owned(16)),
                            (PeerKey::DbSystemName, owned(17)),
                            (PeerKey::DbNamespace, owned(18)),
                            (PeerKey::DbName, owned(19)),
                            (PeerKey::MessagingSystem, owned(20)),
                            (PeerKey::MessagingDestinationName, owned(21)),
                            (PeerKey::RpcService, owned(22)),
                            (PeerKey::HttpRoute, owned(23)),
                            (PeerKey::HttpMethod, owned(24)),
                        ]);
                        peer.server_port = columns.number(11, row);
                        peer.network_peer_port = columns.number(13, row);
                        peer
                    },
                    environment: columns.text(25, row).map(&mut intern),
                    version: columns.text(29, row).map(&mut intern),
                    adjusted_count: columns.real(27, row),
                    resend_count: columns
                        .number(28, row)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    // Derivation needs none of the detail; reading it would only cost time.
                    detail: OptionalDetail::default(),
                });
            }
        }
    }
    if !trace.is_empty() {
        each(&trace);
    }
    Ok(())
}

/// Spans read per slice of traces when deriving from the store.
const SPANS_PER_SLICE: i64 = 1_000_000;

/// The columns of one batch of the span query, as text or numbers.
struct Columns {
    columns: Vec<ArrayRef>,
}

impl Columns {
    fn of(batch: &RecordBatch) -> Result<Columns, QueryError> {
        let columns = batch
            .columns()
            .iter()
            .map(|column| match column.data_type() {
                DataType::Utf8
                | DataType::Int64
                | DataType::UInt64
                | DataType::Binary
                | DataType::Float64 => Ok(column.clone()),
                DataType::Null => Ok(column.clone()),
                other if other.is_integer() => cast(column, &DataType::Int64),
                _ => cast(column, &DataType::Utf8),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| QueryError::Arrow(err.to_string()))?;
        Ok(Columns { columns })
    }

    fn text(&self, index: usize, row: usize) -> Option<&str> {
        let column = self.columns[index].as_any().downcast_ref::<StringArray>()?;
        (!column.is_null(row)).then(|| column.value(row))
    }

    fn number(&self, index: usize, row: usize) -> Option<i64> {
        let column = self.columns[index].as_any().downcast_ref::<Int64Array>()?;
        (!column.is_null(row)).then(|| column.value(row))
    }

    fn real(&self, index: usize, row: usize) -> Option<f64> {
        let column = self.columns[index]
            .as_any()
            .downcast_ref::<Float64Array>()?;
        (!column.is_null(row)).then(|| column.value(row))
    }

    /// A span id: UBIGINT, kept unsigned since the top bit is part of the id.
    fn id(&self, index: usize, row: usize) -> Option<u64> {
        let column = self.columns[index].as_any().downcast_ref::<UInt64Array>()?;
        (!column.is_null(row)).then(|| column.value(row))
    }

    fn trace_id(&self, index: usize, row: usize) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Some(column) = self.columns[index].as_any().downcast_ref::<BinaryArray>() {
            if let Ok(bytes) = <[u8; 16]>::try_from(column.value(row)) {
                out = bytes;
            }
        }
        out
    }
}

/// Link ids are written by this crate as lowercase hex of the right length.
fn decode<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let _ = hex::decode_to_slice(text, &mut out);
    out
}

fn parse_links(json: &str) -> Vec<Link> {
    #[derive(serde::Deserialize)]
    struct Stored {
        trace_id: String,
        span_id: String,
    }
    serde_json::from_str::<Vec<Stored>>(json)
        .unwrap_or_default()
        .into_iter()
        .map(|link| Link {
            trace_id: decode::<16>(&link.trace_id),
            span_id: decode::<8>(&link.span_id),
            attributes_json: String::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Location, Store};

    fn span(trace: u8, id: u8, parent: Option<u8>) -> Span {
        Span::new(
            [trace; 16],
            [trace, id, 0, 0, 0, 0, 0, 1],
            &format!("service-{id}"),
            SpanKind::Server,
        )
        .with_parent(parent.map(|p| [trace, p, 0, 0, 0, 0, 0, 1]))
        .with_name("op")
        .with_time(
            1_000 * i64::from(trace) + i64::from(id),
            1_000 * i64::from(trace) + 500,
        )
    }

    #[test]
    fn every_trace_comes_once_and_whole_however_many_slices() {
        let mut store = Store::open(&Location::Memory).unwrap();
        let spans: Vec<Span> = (1..=7u8)
            .flat_map(|t| [span(t, 1, None), span(t, 2, Some(1)), span(t, 3, Some(2))])
            .collect();
        store.append(&spans.iter().collect::<Vec<_>>()).unwrap();
        let reader = store.reader().unwrap();
        for spans_per_slice in [1_000_000, 4, 1] {
            let mut seen: Vec<(u8, usize)> = Vec::new();
            for_each_trace(
                &reader.conn,
                i64::MIN,
                i64::MAX,
                spans_per_slice,
                &mut |trace| {
                    assert!(trace.iter().all(|s| s.trace_id == trace[0].trace_id));
                    seen.push((trace[0].trace_id[0], trace.len()));
                },
            )
            .unwrap();
            seen.sort();
            let expected: Vec<(u8, usize)> = (1..=7).map(|t| (t, 3)).collect();
            assert_eq!(seen, expected, "{spans_per_slice} spans a slice");
        }
        // A window selects whole traces by their spans' start.
        let mut seen = Vec::new();
        for_each_trace(&reader.conn, 3_000, 5_000, 2, &mut |trace| {
            seen.push((trace[0].trace_id[0], trace.len()));
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, [(3, 3), (4, 3)]);
    }
}
