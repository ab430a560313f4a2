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
