//! Edge derivation speed, compared in the same run with what a user would otherwise write: a
//! DuckDB SQL self-join of spans on parent id where services differ.
//!
//! 1. Offline: derive ≥ 1,000,000 generated spans in memory (spans/s on one thread, peak RSS).
//! 2. From the store: N spans (default 10,000,000) appended to a DuckDB file, then read back
//!    trace by trace and derived, against the SQL self-join over the same table.
//! 3. A snapshot query over a week of 1-minute buckets of a 200-service graph.
//!
//! Run: `cargo run --release -p archtrace-query --example derive_bench [-- STORE_SPANS]`

use std::collections::BTreeMap;
use std::time::Instant;

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::derive::NoLookup;
use archtrace_analyzer::Span;
use archtrace_formats::otlp;
use archtrace_query::store::StoreSource;
use archtrace_query::{SnapshotSource, Window};
use archtrace_store::buckets::{HOUR_NS, MINUTE_NS};
use archtrace_store::{Location, Store};
use archtrace_workload::shop::Simulation;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Generated traces, each a Vec of spans (the generator emits whole traces per request).
fn traces(seed: u64, min_spans: usize) -> Vec<Vec<Span>> {
    let mut shop = Simulation::starting_at(seed, 1_700_000_000_000_000_000);
    let mut traces: BTreeMap<[u8; 16], Vec<Span>> = BTreeMap::new();
    let mut count = 0;
    while count < min_spans {
        let spans = otlp::convert(shop.request_of_spans(4096)).spans;
        count += spans.len();
        for span in spans {
            traces.entry(span.trace_id).or_default().push(span);
        }
    }
    traces.into_values().collect()
}

fn main() {
    let store_spans: usize = std::env::args()
        .nth(1)
        .map_or(10_000_000, |a| a.parse().expect("a number"));

    // 1. Offline derivation.
    let traces_1m = traces(1, 1_000_000);
    let spans_1m: usize = traces_1m.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut aggregate = Aggregate::default();
    let mut scratch = Vec::new();
    for trace in &traces_1m {
        aggregate.add_trace(trace, &NoLookup, &mut scratch);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "offline: derived {spans_1m} spans ({} traces, {} edges) in {seconds:.3} s = {:.0} spans/s on one thread; peak RSS {:.0} MB",
        traces_1m.len(),
        aggregate.edges.len(),
        spans_1m as f64 / seconds,
        peak_rss_mb()
    );
    drop(traces_1m);

    // 2. From the store.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&Location::File(dir.path().join("bench.duckdb"))).unwrap();
    let mut written = 0;
    let mut seed = 100;
    let loading = Instant::now();
    while written < store_spans {
        let mut shop =
            Simulation::starting_at(seed, 1_700_000_000_000_000_000 + seed * 1_000_000_000);
        seed += 1;
        let mut batch = Vec::new();
        while batch.len() < 200_000 {
            batch.extend(otlp::convert(shop.request_of_spans(4096)).spans);
        }
        written += batch.len();
        let refs: Vec<&Span> = batch.iter().collect();
        store.append(&refs).unwrap();
    }
    eprintln!(
        "loaded {written} spans into DuckDB in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let reader = store.reader().unwrap();

    let started = Instant::now();
    let mut from_store = Aggregate::default();
    let mut read = 0;
    reader
        .for_each_trace(i64::MIN, i64::MAX, &mut |spans| {
            read += spans.len();
            from_store.add_trace(spans, &NoLookup, &mut scratch);
        })
        .unwrap();
    let ours = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut statement = store
        .connection()
        .prepare(
            "SELECT p.service_name, c.service_name, count(*)
             FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
             WHERE c.service_name <> p.service_name
             GROUP BY ALL",
        )
        .unwrap();
    let joined: Vec<(String, String, i64)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let sql = started.elapsed().as_secs_f64();
    println!(
        "store: {read} spans read and derived in {ours:.2} s = {:.0} spans/s ({} edges incl. databases, queues, entry points); \
         SQL self-join in {sql:.2} s = {:.0} spans/s ({} service pairs only); ours/SQL time = {:.2}; peak RSS {:.0} MB",
        read as f64 / ours,
        from_store.edges.len(),
        read as f64 / sql,
        joined.len(),
        ours / sql,
        peak_rss_mb()
    );

    // 3. A week of buckets for 200 services: each calls 3 others every minute.
    let week_start = 1_700_006_400_000_000_000 / HOUR_NS * HOUR_NS;
    let services = archtrace_workload::graphs::services(200);
    let bucket = |start: i64| archtrace_workload::graphs::busy_minute(&services, start);
    let loading = Instant::now();
    let writer = store.bucket_writer().unwrap();
    let mut minutes = Buckets::new(MINUTE_NS);
    for minute in 0..7 * 24 * 60 {
        let start = week_start + minute * MINUTE_NS;
        minutes.buckets.insert(start, bucket(start));
        if minutes.buckets.len() == 1_440 {
            writer.write(&minutes).unwrap();
            minutes.buckets.clear();
        }
    }
    writer.write(&minutes).unwrap();
    let mut hours = Buckets::new(HOUR_NS);
    for hour in 0..7 * 24 {
        let start = week_start + hour * HOUR_NS;
        let mut merged = Aggregate::default();
        let one = bucket(start);
        for _ in 0..60 {
            merged.merge(&one);
        }
        hours.buckets.insert(start, merged);
    }
    writer.write(&hours).unwrap();
    let source = StoreSource::open(&store).unwrap();
    eprintln!(
        "wrote a week of buckets (600 edges) in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    // A window that is not hour-aligned, so both widths are read.
    let (since, until) = (
        week_start + 17 * MINUTE_NS,
        week_start + 7 * 24 * HOUR_NS - 23 * MINUTE_NS,
    );
    let mut best = f64::MAX;
    let mut edges = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let snapshot = source
            .snapshot(&Window::new(since, until).unwrap())
            .unwrap();
        best = best.min(started.elapsed().as_secs_f64());
        edges = snapshot.edges.len();
        assert_eq!(
            snapshot.edges[0].calls,
            60 * ((until - since) / MINUTE_NS) as u64
        );
    }
    println!(
        "snapshot: a week of 1-minute buckets, 200 services, {edges} edges: best of 5 = {:.0} ms",
        best * 1e3
    );
}
