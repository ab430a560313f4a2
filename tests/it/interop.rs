//! Answers other tools read as their own: Jaeger's dependencies API.

use std::collections::BTreeMap;

use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{quick_assembly, InProcessServer};

async fn get_json(server: &InProcessServer, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(server.admin_url(path)).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn jaeger_dependencies_answer_as_jaeger_does_from_the_live_graph() {
    let server = InProcessServer::start(quick_assembly()).await;
    let now = archtrace_analyzer::time::now_ns();
    let start = now - 120_000_000_000;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    client
        .export(Simulation::starting_at(41, start as u64).request_of_spans(600))
        .await
        .unwrap();
    let snapshot = server.live_snapshot_when(|s| s.edges.len() >= 10).await;
    // Jaeger's links: one per caller and callee, sync and async summed, no synthetic caller.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for edge in snapshot.edges.iter().filter(|e| e.from != "user") {
        *expected
            .entry((edge.from.clone(), edge.to.clone()))
            .or_default() += edge.calls;
    }

    let (status, body) = get_json(&server, "/api/dependencies").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"], serde_json::Value::Null);
    assert_eq!(body["total"], 0);
    let links: BTreeMap<(String, String), u64> = body["data"]
        .as_array()
        .expect("data is a list")
        .iter()
        .map(|link| {
            (
                (
                    link["parent"].as_str().unwrap().to_owned(),
                    link["child"].as_str().unwrap().to_owned(),
                ),
                link["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(links, expected);
    assert!(links.keys().all(|(parent, _)| parent != "user"));

    // The window is endTs (ms) minus lookback (ms): one that ends before the traffic is empty.
    let before = (start / 1_000_000) - 60_000;
    let (status, body) = get_json(
        &server,
        &format!("/api/dependencies?endTs={before}&lookback=3600000"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], serde_json::json!([]));
    let around = now / 1_000_000;
    let (_, body) = get_json(
        &server,
        &format!("/api/dependencies?endTs={around}&lookback=600000"),
    )
    .await;
    assert_eq!(body["data"].as_array().unwrap().len(), expected.len());

    // Bad input is a 400 in Jaeger's error shape.
    let (status, body) = get_json(&server, "/api/dependencies?lookback=soon").await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], 400);
    assert!(
        body["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("lookback"),
        "{body}"
    );
    server.stop().await;
}

/// `/metrics` parsed by the Prometheus client's OpenMetrics parser (which refuses malformed
/// expositions): each sample as (name, labels, value).
async fn scrape(server: &InProcessServer) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let response = reqwest::get(server.admin_url("/metrics")).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps(samples))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/test installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "not valid OpenMetrics:\n{text}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The samples named `name`, by (client, server, connection_type).
fn by_edge(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
) -> BTreeMap<(String, String, String), f64> {
    samples
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, labels, value)| {
            (
                (
                    labels["client"].clone(),
                    labels["server"].clone(),
                    labels["connection_type"].clone(),
                ),
                *value,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_service_graph_series_count_every_call_of_the_live_graph() {
    use archtrace_analyzer::derive::{EdgeKind, NodeType};
    let server = InProcessServer::start(quick_assembly()).await;
    // Half an hour ago, so that all of the traffic is in the past and in the window.
    let start = archtrace_analyzer::time::now_ns() - 1_800_000_000_000;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut simulation = Simulation::starting_at(7, start as u64);
    // Enough of the seeded shop for a few of the payment provider's calls (4%) to fail.
    for _ in 0..8 {
        client
            .export(simulation.request_of_spans(1000))
            .await
            .unwrap();
    }
    // Every trace derived: the graph stops changing.
    let mut previous = server.live_snapshot_when(|s| s.edges.len() >= 10).await;
    let settled_by = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let snapshot = loop {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let now = server.live_snapshot_when(|_| true).await;
        if now.edges == previous.edges && now.diagnostics == previous.diagnostics {
            break now;
        }
        assert!(
            std::time::Instant::now() < settled_by,
            "the live graph kept changing for a minute: {:?} then {:?}",
            previous.diagnostics,
            now.diagnostics
        );
        previous = now;
    };
    let samples = scrape(&server).await;

    // What Tempo would count, from the snapshot: calls and errors per caller, callee and
    // connection type (through a queue, to a database, to or from an uninstrumented peer).
    let types: BTreeMap<&str, NodeType> = snapshot
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.node_type))
        .collect();
    let mut calls = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for edge in &snapshot.edges {
        let (from, to) = (types[edge.from.as_str()], types[edge.to.as_str()]);
        let connection = if edge.kind == EdgeKind::Async
            || from == NodeType::Messaging
            || to == NodeType::Messaging
        {
            "messaging_system"
        } else if to == NodeType::Database {
            "database"
        } else if to == NodeType::External || from == NodeType::Client {
            "virtual_node"
        } else {
            ""
        };
        let key = (edge.from.clone(), edge.to.clone(), connection.to_owned());
        *calls.entry(key.clone()).or_insert(0.0) += edge.calls as f64;
        if edge.errors > 0 {
            *errors.entry(key).or_insert(0.0) += edge.errors as f64;
        }
    }
    let connections: Vec<&str> = calls.keys().map(|(_, _, c)| c.as_str()).collect();
    for expected in ["", "database", "messaging_system", "virtual_node"] {
        assert!(
            connections.contains(&expected),
            "no {expected:?} edge in {calls:?}"
        );
    }
    assert_eq!(
        by_edge(&samples, "traces_service_graph_request_total"),
        calls
    );
    assert!(!errors.is_empty(), "no failed call in {calls:?}");
    let latest = snapshot
        .edges
        .iter()
        .map(|e| e.last_seen.as_str())
        .max()
        .unwrap();
    assert!(
        archtrace_analyzer::time::parse_rfc3339(latest).unwrap()
            < archtrace_analyzer::time::now_ns(),
        "the traffic must be in the past, or the window's graph keeps changing"
    );
    assert_eq!(
        by_edge(&samples, "traces_service_graph_request_failed_total"),
        errors
    );
    // The server histogram counts every call whose callee reported a span; entry calls from
    // outside have no client side.
    let server_counts = by_edge(
        &samples,
        "traces_service_graph_request_server_seconds_count",
    );
    let client_counts = by_edge(
        &samples,
        "traces_service_graph_request_client_seconds_count",
    );
    let entry = calls
        .keys()
        .find(|(from, _, _)| from == "user")
        .expect("an entry edge")
        .clone();
    assert_eq!(server_counts[&entry], calls[&entry]);
    assert!(!client_counts.contains_key(&entry));
    for (key, count) in &client_counts {
        assert_eq!(*count, calls[key], "{key:?}");
    }

    // The architecture gauges: findings by kind as the snapshot has them.
    let mut findings: BTreeMap<String, f64> = BTreeMap::new();
    for finding in &snapshot.findings {
        let kind = serde_json::to_value(finding.kind).unwrap();
        *findings
            .entry(kind.as_str().unwrap().to_owned())
            .or_default() += 1.0;
    }
    let mut exposed: BTreeMap<String, f64> = BTreeMap::new();
    for (name, labels, value) in &samples {
        if name == "archtrace_findings" {
            *exposed.entry(labels["kind"].clone()).or_default() += value;
        }
    }
    assert!(!findings.is_empty());
    assert_eq!(exposed, findings);
    let first_seen = samples
        .iter()
        .filter(|(name, _, _)| name == "archtrace_edge_first_seen_timestamp_seconds")
        .count();
    assert_eq!(first_seen, calls.len());

    // Counters only grow: more traffic, and every series is at least what it was.
    client
        .export(simulation.request_of_spans(200))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let later = by_edge(&scrape(&server).await, "traces_service_graph_request_total");
    for (key, before) in &calls {
        assert!(later[key] >= *before, "{key:?}");
    }
    assert!(later.values().sum::<f64>() > calls.values().sum::<f64>());
    server.stop().await;
}
