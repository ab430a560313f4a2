//! How long the events of 30 days of hour buckets of a 500-service system take (#14: under
//! 1 s). A store file is filled with 720 hour buckets: each service calls four others and
//! uses a database, with latency sketches of a spread of durations; every day a few services
//! release a new version, gain a call and drop one; every week one service stops and one
//! starts. The days are rolled up, as a server's deriver does once a day is over. Then the
//! events of the 30 days are read back three times from the store as written, and three times
//! from the store opened again (as `archtrace events --db` opens it).
//!
//!   cargo run --release -p archtrace-query --example history_bench

use std::sync::Arc;
use std::time::Instant;

use archtrace_analyzer::aggregate::{Aggregate, Buckets, EdgeKey, EdgeStats, Seen, VersionPair};
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_query::store::StoreSource;
use archtrace_query::{HistoryQuery, SnapshotSource, Window};
use archtrace_store::{Location, Store};

const HOUR: i64 = 3_600_000_000_000;
const SERVICES: usize = 500;
const DAYS: i64 = 30;

fn name(i: usize) -> Arc<str> {
    Arc::from(format!("service-{i:03}"))
}

/// The hour `h` (from the start) of the synthetic system.
fn hour(h: i64, start: i64) -> Aggregate {
    let day = h / 24;
    let week = day / 7;
    let mut aggregate = Aggregate::default();
    let at = start + h * HOUR;
    for i in 0..SERVICES {
        // One service a week stops (the one numbered by the week), one starts after it.
        if i == week as usize || (i == SERVICES - 1 - week as usize && week == 0) {
            continue;
        }
        let from = name(i);
        let version: Arc<str> = Arc::from(format!("1.{}", (day + i as i64) / 7));
        let facts = aggregate.nodes.entry(from.clone()).or_default();
        facts.reports_spans = true;
        facts.note_seen(&Seen::at(at));
        facts.versions.insert(
            version.clone(),
            Seen {
                first_ns: at,
                last_ns: at + HOUR - 1,
                count: 400,
            },
        );
        // Four callees; a few services a day swap one for another.
        let swap = (i as i64 + day) % 97 == 0;
        let mut callees = vec![(i + 1) % SERVICES, (i + 7) % SERVICES, (i + 31) % SERVICES];
        callees.push(if swap {
            (i + 101) % SERVICES
        } else {
            (i + 53) % SERVICES
        });
        let database: Arc<str> = Arc::from(format!("db-{:03}", i / 5));
        aggregate
            .nodes
            .entry(database.clone())
            .or_default()
            .peer_types
            .insert(NodeType::Database);
        let targets = callees
            .into_iter()
            .map(name)
            .chain([database])
            .collect::<Vec<_>>();
        for (n, to) in targets.into_iter().enumerate() {
            let mut stats = EdgeStats {
                calls: 100,
                estimated_calls: 100.0,
                errors: ((h + n as i64) % 13 == 0) as u64 * 3,
                traces: 90,
                max_calls_per_trace: 2,
                first_seen_ns: at + n as i64,
                last_seen_ns: at + HOUR - 1,
                ..EdgeStats::default()
            };
            for k in 0..100 {
                // 1–200 ms, and a slow hour a day for the service numbered by the day.
                let slow = if h % 24 == 13 && n == 0 && i as i64 == day {
                    5
                } else {
                    1
                };
                stats
                    .latency
                    .add((1 + (k * 37 + i as i64) % 200) * 1_000_000 * slow);
            }
            stats.versions.insert(
                VersionPair {
                    from: version.clone(),
                    to: Arc::from(""),
                },
                Seen {
                    first_ns: at,
                    last_ns: at + HOUR - 1,
                    count: 100,
                },
            );
            aggregate.edges.insert(
                EdgeKey {
                    from: from.clone(),
                    to,
                    kind: EdgeKind::Sync,
                },
                stats,
            );
        }
    }
    aggregate
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.duckdb");
    let store = Store::open(&Location::File(path.clone())).unwrap();
    // Whole days, so that the days findings are compared over cut the weekly and daily
    // changes the same way at any time of day.
    let now = archtrace_analyzer::time::now_ns().div_euclid(24 * HOUR) * 24 * HOUR;
    let start = now - DAYS * 24 * HOUR;
    let writer = store.bucket_writer().unwrap();
    let filling = Instant::now();
    let mut rows = 0;
    for day in 0..DAYS {
        let mut buckets = Buckets::new(HOUR);
        for h in day * 24..(day + 1) * 24 {
            let aggregate = hour(h, start);
            rows += aggregate.edges.len();
            buckets.buckets.insert(start + h * HOUR, aggregate);
        }
        writer.write(&buckets).unwrap();
    }
    println!(
        "filled {} hour buckets, {rows} edge rows, in {:.1} s",
        DAYS * 24,
        filling.elapsed().as_secs_f64()
    );
    // As a server's deriver does, once a day is over.
    let rolling = Instant::now();
    let days = writer.roll_up_days(now).unwrap();
    println!(
        "rolled up {days} days in {:.1} s",
        rolling.elapsed().as_secs_f64()
    );
    store.checkpoint().unwrap();
    let source = StoreSource::open(&store).unwrap();
    let query = HistoryQuery::default();
    {
        let day = Window::new(now - 48 * HOUR, now - 24 * HOUR).unwrap();
        let started = Instant::now();
        let snapshot = source.snapshot(&day).unwrap();
        let read = started.elapsed();
        let started = Instant::now();
        let analyzed = archtrace_analyzer::analysis::Analyzed::new(snapshot, &Default::default());
        println!(
            "one day: snapshot {:?}, analysis {:?}, {} findings",
            read,
            started.elapsed(),
            analyzed.snapshot.findings.len()
        );
        let started = Instant::now();
        let periods = source.periods(start - 25 * HOUR, now, HOUR).unwrap();
        let read = started.elapsed();
        let started = Instant::now();
        let _ = archtrace_analyzer::history::replay(&periods, start, now, &query.history);
        println!("periods {:?}, replay {:?}", read, started.elapsed());
    }
    // As the server that wrote them reads them, then as `archtrace events --db` does: a new
    // process opening the store, whose tables it reads as they were checkpointed.
    runs(&source, start, now, "right after writing");
    drop(source);
    drop(writer);
    drop(store);
    let store = Store::open(&Location::File(path)).unwrap();
    runs(
        &StoreSource::open(&store).unwrap(),
        start,
        now,
        "store opened again",
    );
}

/// Three runs of the events of the 30 days.
fn runs(source: &StoreSource, start: i64, now: i64, case: &str) {
    let window = Window::new(start, now).unwrap();
    let query = HistoryQuery::default();
    for run in 1..=3 {
        let started = Instant::now();
        let periods = source.periods(start - 25 * HOUR, now, HOUR).unwrap();
        let read = started.elapsed();
        let started = Instant::now();
        let history = source.history(&window, &query).unwrap();
        let total = started.elapsed();
        let mut kinds = std::collections::BTreeMap::new();
        for event in &history.events {
            *kinds.entry(event.kind.as_str()).or_insert(0) += 1;
        }
        println!(
            "{case}, run {run}: events of 30 days of hours, 500 services: {:.0} ms ({} steps read alone: {:.0} ms); {} events {:?}; {} trend points",
            total.as_secs_f64() * 1e3,
            periods.steps.len(),
            read.as_secs_f64() * 1e3,
            history.events.len(),
            kinds,
            history.trends.len()
        );
    }
}
