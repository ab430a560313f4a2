//! All metrics and findings for generated service graphs: 2,000 services / 20,000 edges and
//! 20,000 services / 200,000 edges (Alibaba- and Meta-scale service counts).
//!
//! Run: `cargo run --release -p archtrace-analyzer --example metrics_bench`

use std::time::Instant;

use archtrace_analyzer::aggregate::Diagnostics;
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_analyzer::findings::{findings, Thresholds};
use archtrace_analyzer::metrics::{node_metrics, MetricSettings};
use archtrace_analyzer::risk::hotspots;
use archtrace_analyzer::snapshot::{Edge, Node, Quantiles, Snapshot, Window, SNAPSHOT_SCHEMA};

/// A layered, mostly downward graph like real microservice call graphs (a few back edges make
/// cycles); 5% of nodes are databases, 2% entry points. Deterministic (an LCG), so runs compare.
fn generate(services: usize, edges: usize) -> Snapshot {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % bound
    };
    let name = |i: usize| format!("svc-{i:05}");
    let nodes: Vec<Node> = (0..services)
        .map(|i| Node {
            id: name(i),
            node_type: if i % 20 == 19 {
                NodeType::Database
            } else {
                NodeType::Service
            },
            entry_point: i % 50 == 0,
            spans_without_sampling: 0,
            metrics: None,
            first_seen: String::new(),
            last_seen: String::new(),
            versions: Vec::new(),
        })
        .collect();
    let mut pairs = std::collections::BTreeSet::new();
    while pairs.len() < edges {
        let from = next(services);
        // Mostly to later services (downstream), sometimes back (cycles).
        let to = if next(100) < 97 {
            (from + 1 + next(services / 10 + 1)).min(services - 1)
        } else {
            next(services)
        };
        if from != to {
            pairs.insert((from, to));
        }
    }
    let edges: Vec<Edge> = pairs
        .into_iter()
        .map(|(from, to)| {
            let calls = 10 + next(1_000) as u64;
            Edge {
                from: name(from),
                to: name(to),
                kind: if next(10) == 0 {
                    EdgeKind::Async
                } else {
                    EdgeKind::Sync
                },
                calls,
                estimated_calls: None,
                errors: if next(50) == 0 { calls / 10 } else { 0 },
                latency_ms: Some(Quantiles {
                    p50: 2.0,
                    p90: 5.0,
                    p99: 20.0,
                }),
                server_latency_ms: None,
                calls_per_trace: 1.0 + next(20) as f64,
                max_calls_per_trace: 25,
                first_seen: String::new(),
                last_seen: String::new(),
                resilience: Default::default(),
                versions: Vec::new(),
            }
        })
        .collect();
    Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        window: Window {
            start: "2026-11-25T00:00:00.000000Z".into(),
            end: "2026-11-25T01:00:00.000000Z".into(),
        },
        diagnostics: Diagnostics::default(),
        nodes,
        edges,
        operations: Vec::new(),
        entry_operations: Vec::new(),
        findings: Vec::new(),
        metric_notes: Default::default(),
    }
}

fn main() {
    for (services, edges) in [(2_000, 20_000), (20_000, 200_000)] {
        let snapshot = generate(services, edges);
        let started = Instant::now();
        let (metrics, notes) = node_metrics(&snapshot, &MetricSettings::default());
        let metrics_seconds = started.elapsed().as_secs_f64();
        let found = findings(&snapshot, &metrics, &Thresholds::default());
        let findings_seconds = started.elapsed().as_secs_f64() - metrics_seconds;
        let ranked = hotspots(&snapshot, &metrics, &found);
        let total = started.elapsed().as_secs_f64();
        println!(
            "{services} services / {edges} edges: metrics {metrics_seconds:.2} s, findings {findings_seconds:.2} s, total with ranking {total:.2} s; \
             {} findings; betweenness {}; top hotspot {} ({:.1})",
            found.len(),
            notes
                .betweenness_sampled_sources
                .map_or("exact".to_owned(), |n| format!("sampled from {n} sources")),
            ranked[0].service,
            ranked[0].score
        );
    }
}
