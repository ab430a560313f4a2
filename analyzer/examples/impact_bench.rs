//! Impact analysis on a large architecture: 2,000 services with 20,000 edges (a tenth through
//! queues), four operations each and two operation calls per edge (about 39,000 distinct
//! operation edges), 200 entry operations. Prints the time of `impact::impact` for one
//! service, for ten failing together, and for one dependency, each the best of 5; then of the
//! recommended actions for every finding of the analysis, and of the resilience findings (a
//! tenth of the edges retry, a twenty-fifth time out, a fiftieth wait 30 s with no timeout).
//!
//!   cargo run --release -p archtrace-analyzer --example impact_bench

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use archtrace_analyzer::actions::recommend;
use archtrace_analyzer::aggregate::{Aggregate, EdgeKey, EntryKey, OperationKey};
use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::derive::EdgeKind;
use archtrace_analyzer::findings::Thresholds;
use archtrace_analyzer::impact::{impact, Impact, Target};
use archtrace_analyzer::resilience::findings;
use archtrace_analyzer::snapshot::{FindingKind, Snapshot};

const SERVICES: usize = 2_000;
const EDGES: usize = 20_000;
const OPERATIONS: usize = 4;
const ENTRIES: usize = 200;

fn main() {
    let name = |i: usize| -> Arc<str> { Arc::from(format!("svc-{i:04}")) };
    let op = |i: usize| -> Arc<str> { Arc::from(format!("op-{i}")) };
    // A small deterministic generator (xorshift), so every run measures the same graph.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    let mut pairs = BTreeSet::new();
    while pairs.len() < EDGES {
        // Mostly calls to services further down, as layered systems do; some back (cycles).
        let from = next(SERVICES);
        let to = if next(100) < 95 {
            (from + 1 + next(SERVICES / 20)).min(SERVICES - 1)
        } else {
            next(SERVICES)
        };
        if from != to {
            pairs.insert((from, to));
        }
    }
    let mut aggregate = Aggregate::default();
    for service in 0..SERVICES {
        aggregate
            .nodes
            .entry(name(service))
            .or_default()
            .reports_spans = true;
    }
    for &(from, to) in &pairs {
        let kind = if next(10) == 0 {
            EdgeKind::Async
        } else {
            EdgeKind::Sync
        };
        let key = EdgeKey {
            from: name(from),
            to: name(to),
            kind,
        };
        let stats = aggregate.edges.entry(key).or_default();
        stats.calls = 100;
        stats.estimated_calls = 100.0;
        for ms in [5, 10, 20, 40] {
            stats.latency.add(ms * 1_000_000);
            stats.server_latency.add(ms * 1_000_000);
        }
        if next(10) == 0 {
            stats.retries = 5;
            stats.max_attempts = 2 + next(2) as u64;
        }
        match next(50) {
            0..=1 => {
                for _ in 0..5 {
                    stats.errors += 1;
                    stats.latency.add(2_000_000_000);
                    stats.error_latency.add(2_000_000_000);
                }
            }
            2 => stats.latency.add(30_000_000_000),
            _ => {}
        }
        // Each operation of the caller calls one operation of the callee.
        for (caller_op, callee_op) in [(0, next(OPERATIONS)), (next(OPERATIONS), next(OPERATIONS))]
        {
            let calls = aggregate
                .operations
                .entry(OperationKey {
                    from_service: name(from),
                    from_operation: op(caller_op),
                    to_service: name(to),
                    to_operation: op(callee_op),
                })
                .or_default();
            calls.calls += 50;
        }
    }
    for entry in 0..ENTRIES {
        let service = name(entry * SERVICES / ENTRIES / 4);
        aggregate
            .entries
            .entry(EntryKey {
                service: service.clone(),
                operation: op(entry % OPERATIONS),
            })
            .or_default()
            .traces += 1_000;
        aggregate.nodes.entry(service).or_default().entry_point = true;
    }
    let snapshot = Snapshot::from_aggregate(&aggregate, (0, 600_000_000_000));
    let operation_edges = snapshot.operations.len();

    let measure = |label: &str, targets: Vec<Target>| {
        let mut best = f64::MAX;
        let mut found: Option<Impact> = None;
        for _ in 0..5 {
            let started = Instant::now();
            found = Some(impact(&snapshot, &targets).expect("known targets"));
            best = best.min(started.elapsed().as_secs_f64());
        }
        let found = found.expect("five runs");
        println!(
            "{label}: {:.1} ms (best of 5): {} entry operations fail ({:.1}% of traffic), {} degrade",
            best * 1e3,
            found
                .entries
                .iter()
                .filter(|e| e.outcome == archtrace_analyzer::impact::Outcome::Fails)
                .count(),
            100.0 * found.failing_share,
            found
                .entries
                .iter()
                .filter(|e| e.outcome == archtrace_analyzer::impact::Outcome::Degrades)
                .count(),
        );
    };
    println!(
        "{SERVICES} services, {} edges, {operation_edges} operation edges, {} entry operations",
        snapshot.edges.len(),
        snapshot.entry_operations.len()
    );
    measure(
        "one service (svc-1000)",
        vec![Target::Node("svc-1000".into())],
    );
    measure(
        "ten services together",
        (0..10)
            .map(|i| Target::Node(format!("svc-{:04}", 1_000 + 97 * i)))
            .collect(),
    );
    let analysed = Analyzed::new(snapshot.clone(), &Settings::default()).snapshot;
    let started = Instant::now();
    let actions = recommend(&analysed);
    println!(
        "recommended actions for {} findings: {:.0} ms",
        actions.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut best = f64::MAX;
    let mut found = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        found = findings(&snapshot, &Thresholds::default());
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "resilience findings: {:.1} ms (best of 5): {} retry amplification, {} missing timeout, {} long timeout, {} inverted timeouts",
        best * 1e3,
        found.iter().filter(|f| f.kind == FindingKind::RetryAmplification).count(),
        found.iter().filter(|f| f.kind == FindingKind::MissingTimeout).count(),
        found.iter().filter(|f| f.kind == FindingKind::LongTimeout).count(),
        found.iter().filter(|f| f.kind == FindingKind::InvertedTimeouts).count(),
    );
    let edge = &snapshot.edges[snapshot.edges.len() / 2];
    measure(
        &format!("one dependency ({} -> {})", edge.from, edge.to),
        vec![Target::Edge {
            from: edge.from.clone(),
            to: edge.to.clone(),
        }],
    );
}
