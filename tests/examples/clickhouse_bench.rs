//! ClickHouse derive speed and window reads, next to the DuckDB path, in one run.
//!
//! 1. N spans of the simulated shop (default 300,000) go into `otel_traces` as the exporter
//!    writes them. The same traces are derived in memory (the ceiling), by the DuckDB path
//!    (bulk write, then `rebuild` reading them back), and by ClickHouse derive workers: one
//!    worker, then each of two workers (spans/s per worker).
//! 2. A week of buckets of a 200-service graph in ClickHouse (every minute and every hour of
//!    600 edges), and the snapshot of a week-long window read from them.
//!
//! Start the engine, then run the bench against it:
//!   python3 scripts/chdb-server.py --data /tmp/chdb &      # prints its port
//!   target/release/examples/clickhouse_bench http://127.0.0.1:PORT [SPANS]

#[path = "../it/otel_rows.rs"]
mod otel_rows;

use std::collections::BTreeMap;
use std::time::Instant;

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::derive::NoLookup;
use archtrace_analyzer::time::now_ns;
use archtrace_analyzer::Span;
use archtrace_clickhouse::buckets::Provenance;
use archtrace_clickhouse::{ClickHouseSource, Connection, Endpoint, Shard, Worker, WorkerSettings};
use archtrace_formats::otlp;
use archtrace_query::store::StoreSource;
use archtrace_query::{SnapshotSource, Window};
use archtrace_store::buckets::{HOUR_NS, MINUTE_NS};
use archtrace_store::bulk::BulkWriter;
use archtrace_store::{Location, Store};
use archtrace_workload::shop::Simulation;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: clickhouse_bench http://127.0.0.1:PORT [SPANS]");
    let wanted: usize = args.next().map_or(300_000, |n| n.parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = clickhouse::Client::default().with_url(&url);
    runtime.block_on(async {
        for sql in [
            "DROP DATABASE IF EXISTS bench_otel",
            "DROP DATABASE IF EXISTS bench_arch",
            "DROP DATABASE IF EXISTS bench_week",
            "CREATE DATABASE bench_otel",
        ] {
            server.query(sql).execute().await.unwrap();
        }
        let otel = server.clone().with_database("bench_otel");
        otel.query(otel_rows::OTEL_TRACES_DDL)
            .execute()
            .await
            .unwrap();
    });

    // The shop's traces, moved to end five minutes ago.
    let mut shop = Simulation::starting_at(7, 0);
    let mut spans: Vec<Span> = Vec::new();
    while spans.len() < wanted {
        spans.extend(otlp::convert(shop.request_of_spans(4096)).spans);
    }
    let last = spans.iter().map(|s| s.end_ns).max().unwrap();
    let shift = now_ns() - 5 * MINUTE_NS - last;
    for span in &mut spans {
        span.start_ns += shift;
        span.end_ns += shift;
    }
    let first = spans.iter().map(|s| s.start_ns).min().unwrap();
    let (since, until) = (first.div_euclid(MINUTE_NS) * MINUTE_NS, last + shift + 1);
    println!(
        "{} spans over {:.1} minutes",
        spans.len(),
        (until - since) as f64 / MINUTE_NS as f64
    );
    let started = Instant::now();
    runtime.block_on(async {
        let otel = server.clone().with_database("bench_otel");
        let mut insert = otel
            .with_validation(false)
            .insert::<otel_rows::OtelSpan>("otel_traces")
            .await
            .unwrap();
        for span in &spans {
            insert
                .write(&otel_rows::otel_row(span, false))
                .await
                .unwrap();
        }
        insert.end().await.unwrap();
    });
    println!(
        "loaded otel_traces: {:.0} spans/s",
        spans.len() as f64 / started.elapsed().as_secs_f64()
    );

    // In memory: the derivation alone, the ceiling of every path.
    let mut traces: BTreeMap<[u8; 16], Vec<Span>> = BTreeMap::new();
    for span in &spans {
        traces.entry(span.trace_id).or_default().push(span.clone());
    }
    let started = Instant::now();
    let (mut minute, mut hour) = (Buckets::new(MINUTE_NS), Buckets::new(HOUR_NS));
    let mut scratch = Vec::new();
    for trace in traces.values() {
        Buckets::add_trace_to_all(
            &mut [&mut minute, &mut hour],
            trace,
            &NoLookup,
            &mut scratch,
        );
    }
    let in_memory = spans.len() as f64 / started.elapsed().as_secs_f64();
    println!("in memory: {in_memory:.0} spans/s derived (one thread)");

    // DuckDB: the spans stored, then read back trace by trace and derived (`rebuild`).
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::File(dir.path().join("bench.duckdb"))).unwrap();
    let mut writer = BulkWriter::start(store);
    writer.push(spans.clone()).unwrap();
    let store = writer.finish().unwrap();
    let started = Instant::now();
    StoreSource::open(&store)
        .unwrap()
        .rebuild(since, until)
        .unwrap();
    let duckdb = spans.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "DuckDB rebuild: {duckdb:.0} spans/s ({:.2} of in memory)",
        duckdb / in_memory
    );

    // ClickHouse workers, each reading its share of the traces in one window.
    let from = Endpoint::parse(&format!("{url}/bench_otel")).unwrap();
    for count in [1, 2] {
        let to = Endpoint::parse(&format!("{url}/bench_arch{count}")).unwrap();
        for index in 0..count {
            let settings = WorkerSettings {
                shard: Shard { index, count },
                table: "otel_traces".into(),
                window_ns: HOUR_NS,
                slack_ns: MINUTE_NS,
                delay_ns: 0,
                since_ns: None,
                until_ns: None,
                retention_days: 90,
                multiplier_key: None,
            };
            let worker = Worker::new(&from, &to, settings).unwrap();
            let done = worker.derive_window(since, until, false).unwrap();
            let rate = done.counts.spans as f64 / done.elapsed.as_secs_f64();
            println!(
                "ClickHouse worker {index}/{count}: {} spans in {:.2} s, {rate:.0} spans/s ({:.2} of in memory, {:.2} of DuckDB)",
                done.counts.spans,
                done.elapsed.as_secs_f64(),
                rate / in_memory,
                rate / duckdb
            );
        }
    }

    week_of_buckets(&url, &runtime);
}

/// The 200-service week of `query/examples/derive_bench.rs`, in ClickHouse.
fn week_of_buckets(url: &str, runtime: &tokio::runtime::Runtime) {
    let week_start = 1_700_006_400_000_000_000 / HOUR_NS * HOUR_NS;
    let services = archtrace_workload::graphs::services(200);
    let bucket = |start: i64| archtrace_workload::graphs::busy_minute(&services, start);
    let endpoint = Endpoint::parse(&format!("{url}/bench_week")).unwrap();
    let conn = Connection::open(&endpoint).unwrap();
    archtrace_clickhouse::schema::ensure(&conn, 3650).unwrap();
    let loading = Instant::now();
    // The first hour's minutes and hour written by archtrace, the rest of the week copied from
    // them inside the engine (7 x 24 x 60 x 600 rows would take long over HTTP from here).
    let mut minutes = Buckets::new(MINUTE_NS);
    for minute in 0..60 {
        let start = week_start + minute * MINUTE_NS;
        minutes.buckets.insert(start, bucket(start));
    }
    let mut hours = Buckets::new(HOUR_NS);
    let mut merged = Aggregate::default();
    let one = bucket(week_start);
    for _ in 0..60 {
        merged.merge(&one);
    }
    hours.buckets.insert(week_start, merged);
    let provenance = Provenance {
        worker: "0/1",
        window_ns: week_start,
        version: 1,
    };
    archtrace_clickhouse::buckets::write(&conn, &[&minutes, &hours], provenance).unwrap();
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_database("bench_week");
    runtime.block_on(async {
        for table in ["edge_buckets", "node_buckets", "diagnostic_buckets"] {
            let columns: Vec<String> = client
                .query(&format!(
                    "SELECT name FROM system.columns WHERE database = 'bench_week' AND table = '{table}' ORDER BY position"
                ))
                .fetch_all()
                .await
                .unwrap();
            // Each copy moves the bucket (and its window) by whole hours.
            let moved: Vec<String> = columns
                .iter()
                .map(|c| match c.as_str() {
                    "bucket_ns" | "window_ns" | "first_seen_ns" | "last_seen_ns" => {
                        format!("{c} + number * {HOUR_NS}")
                    }
                    other => other.to_owned(),
                })
                .collect();
            client
                .query(&format!(
                    "INSERT INTO {table} ({}) SELECT {} FROM {table} AS copied, numbers(1, {}) AS hours WHERE window_ns = {week_start}",
                    columns.join(", "),
                    moved.join(", "),
                    7 * 24 - 1
                ))
                .execute()
                .await
                .unwrap();
        }
    });
    let rows: u64 = runtime.block_on(async {
        client
            .query("SELECT count() FROM edge_buckets")
            .fetch_one()
            .await
            .unwrap()
    });
    println!(
        "wrote a week of buckets (600 edges, {rows} edge rows) in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let source = ClickHouseSource::open(&endpoint).unwrap();
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
        "snapshot from ClickHouse: a week of buckets, 200 services, {edges} edges: best of 5 = {:.0} ms",
        best * 1e3
    );

    // History's hourly steps of the week: a day of steps per query, against a read per step
    // (how they were read before).
    let week_end = week_start + 7 * 24 * HOUR_NS;
    let started = Instant::now();
    let periods = source.periods(week_start, week_end, HOUR_NS).unwrap();
    let grouped = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut per_step = Vec::new();
    for hour in 0..7 * 24 {
        let start = week_start + hour * HOUR_NS;
        let aggregate =
            archtrace_clickhouse::buckets::read_window(&conn, start, start + HOUR_NS).unwrap();
        per_step.push(aggregate.edges.values().map(|e| e.calls).sum::<u64>());
    }
    let one_by_one = started.elapsed().as_secs_f64();
    let grouped_calls: Vec<u64> = periods.steps.values().map(|p| p.calls).collect();
    assert_eq!(
        grouped_calls, per_step,
        "both reads sum the same calls a step"
    );
    println!(
        "history steps from ClickHouse: {} hours of 600 edges in {:.2} s, read one by one {:.2} s ({:.1}x)",
        periods.steps.len(),
        grouped,
        one_by_one,
        one_by_one / grouped
    );
}
