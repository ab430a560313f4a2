//! Synthetic derived traffic for benchmarks of window reads: large graphs without deriving them.

use std::sync::Arc;

use archtrace_analyzer::aggregate::{Aggregate, EdgeKey, EdgeStats, NodeFacts};
use archtrace_analyzer::derive::EdgeKind;

/// `count` services named `service-000`, `service-001`, ...
pub fn services(count: usize) -> Vec<Arc<str>> {
    (0..count)
        .map(|i| Arc::from(format!("service-{i:03}")))
        .collect()
}

/// One minute starting at `start_ns` in which each service calls three others (1, 7 and 31
/// places on) 60 times, with three latencies each: the 200-service week of the read benchmarks.
pub fn busy_minute(services: &[Arc<str>], start_ns: i64) -> Aggregate {
    const MINUTE_NS: i64 = 60_000_000_000;
    let mut aggregate = Aggregate::default();
    for (i, from) in services.iter().enumerate() {
        aggregate.nodes.insert(
            from.clone(),
            NodeFacts {
                reports_spans: true,
                ..Default::default()
            },
        );
        for step in [1, 7, 31] {
            let mut stats = EdgeStats::default();
            for latency in [2_000_000, 3_000_000, 9_000_000] {
                stats.latency.add(latency);
                stats.server_latency.add(latency / 2);
            }
            stats.calls = 60;
            stats.traces = 50;
            stats.max_calls_per_trace = 3;
            stats.first_seen_ns = start_ns;
            stats.last_seen_ns = start_ns + MINUTE_NS - 1;
            aggregate.edges.insert(
                EdgeKey {
                    from: from.clone(),
                    to: services[(i + step) % services.len()].clone(),
                    kind: EdgeKind::Sync,
                },
                stats,
            );
        }
    }
    aggregate
}
