//! Times the server-side rendering of the overview of a 500-service graph (metrics, findings,
//! layout, SVG and page): `cargo run --release -p archtrace-web --example overview_bench`.

use std::time::Instant;

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::snapshot::Snapshot;
use serde_json::json;

fn snapshot(services: usize) -> Snapshot {
    let name = |i: usize| format!("service-{i:03}");
    let mut nodes = vec![json!({"id": "user", "type": "client", "entry_point": false})];
    let mut edges = Vec::new();
    let edge = |from: String, to: String, calls: u64| {
        json!({"from": from, "to": to, "kind": "sync", "calls": calls, "errors": calls / 50,
               "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 5.0}, "server_latency_ms": null,
               "calls_per_trace": 1.0, "max_calls_per_trace": 1,
               "first_seen": "2026-11-26T00:00:00.000000Z", "last_seen": "2026-11-26T00:59:00.000000Z"})
    };
    for i in 0..services {
        nodes.push(json!({"id": name(i), "type": "service", "entry_point": i < 10}));
        if i < 10 {
            edges.push(edge("user".into(), name(i), 10_000));
        }
        for step in [7, 31, 97, 211] {
            if i + step < services {
                edges.push(edge(name(i), name(i + step), 100 + (i * step % 900) as u64));
            }
        }
    }
    let snapshot: Snapshot = serde_json::from_value(json!({
        "schema": "archtrace.snapshot/v1",
        "window": {"start": "2026-11-26T00:00:00.000000Z", "end": "2026-11-26T01:00:00.000000Z"},
        "diagnostics": {"spans": 0, "traces": 0, "observations": 0, "orphaned_spans": 0,
            "unresolved_client_spans": 0, "late_spans_paired": 0, "late_spans_dropped": 0,
            "traces_cut_short": 0},
        "nodes": nodes, "edges": edges, "operations": []
    }))
    .unwrap();
    snapshot
}

fn main() {
    let built = snapshot(500);
    println!("{} nodes, {} edges", built.nodes.len(), built.edges.len());
    for run in 0..3 {
        let started = Instant::now();
        let analyzed = Analyzed::new(built.clone(), &Settings::default());
        let analysed = started.elapsed().as_secs_f64() * 1e3;
        let html = archtrace_web::server::overview_html(&analyzed, &Default::default(), &[], None);
        let total = started.elapsed().as_secs_f64() * 1e3;
        println!(
            "run {run}: metrics and findings {analysed:.1} ms, layout + SVG + page {:.1} ms, total {total:.1} ms ({} KiB)",
            total - analysed,
            html.len() / 1024
        );
    }
}
