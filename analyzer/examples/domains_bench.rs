//! Candidate domains of a large call graph: 2,000 services in 40 planted domains, 20,000 edges
//! (mostly inside the domains). Prints the time of `domains::domains` (best of 5) and whether
//! the planted domains were found.
//!
//!   cargo run --release -p archtrace-analyzer --example domains_bench

use std::collections::BTreeSet;
use std::time::Instant;

use archtrace_analyzer::aggregate::Diagnostics;
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_analyzer::domains::domains;
use archtrace_analyzer::snapshot::{Edge, MetricNotes, Node, Snapshot, Window, SNAPSHOT_SCHEMA};

fn main() {
    const SERVICES: usize = 2_000;
    const DOMAINS: usize = 40;
    const EDGES: usize = 20_000;
    let name = |i: usize| format!("svc-{i:04}");
    let domain_of = |i: usize| i % DOMAINS;
    // A small deterministic generator (xorshift), so every run measures the same graph.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut pairs = BTreeSet::new();
    while pairs.len() < EDGES {
        let a = next() as usize % SERVICES;
        // 95% of the edges stay inside the caller's domain.
        let b = if next() % 100 < 95 {
            let member = next() as usize % (SERVICES / DOMAINS);
            member * DOMAINS + domain_of(a)
        } else {
            next() as usize % SERVICES
        };
        if a != b {
            pairs.insert((a, b));
        }
    }
    let snapshot = Snapshot {
        schema: SNAPSHOT_SCHEMA.into(),
        window: Window {
            start: "2026-01-01T00:00:00.000000Z".into(),
            end: "2026-01-01T01:00:00.000000Z".into(),
        },
        diagnostics: Diagnostics::default(),
        nodes: (0..SERVICES)
            .map(|i| Node {
                id: name(i),
                node_type: NodeType::Service,
                entry_point: false,
                spans_without_sampling: 0,
                metrics: None,
                first_seen: String::new(),
                last_seen: String::new(),
                versions: Vec::new(),
            })
            .collect(),
        edges: pairs
            .iter()
            .map(|&(a, b)| Edge {
                from: name(a),
                to: name(b),
                kind: EdgeKind::Sync,
                calls: 10 + next() % 90,
                estimated_calls: None,
                errors: 0,
                latency_ms: None,
                server_latency_ms: None,
                calls_per_trace: 1.0,
                max_calls_per_trace: 1,
                first_seen: String::new(),
                last_seen: String::new(),
                resilience: Default::default(),
                versions: Vec::new(),
            })
            .collect(),
        operations: Vec::new(),
        entry_operations: Vec::new(),
        findings: Vec::new(),
        metric_notes: MetricNotes::default(),
    };
    let mut best = f64::MAX;
    let mut found = None;
    for _ in 0..5 {
        let started = Instant::now();
        found = Some(domains(&snapshot));
        best = best.min(started.elapsed().as_secs_f64());
    }
    let found = found.expect("five runs");
    let planted: BTreeSet<BTreeSet<String>> = (0..DOMAINS)
        .map(|d| {
            (0..SERVICES)
                .filter(|i| domain_of(*i) == d)
                .map(name)
                .collect()
        })
        .collect();
    let recovered: BTreeSet<BTreeSet<String>> = found
        .domains
        .iter()
        .map(|d| d.services.iter().cloned().collect())
        .collect();
    println!(
        "{SERVICES} services, {} edges: {:.0} ms (best of 5); {} domains found, modularity {:.3}; planted domains recovered exactly: {}",
        snapshot.edges.len(),
        best * 1e3,
        found.domains.len(),
        found.modularity,
        planted == recovered
    );
}
