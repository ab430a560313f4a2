//! The derived service graph of recorded traces equals the edges computed independently here,
//! from the raw JSON's parent/child links, with call counts.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use crate::support::snapshot_from_files;
use archtrace_analyzer::derive::NodeType;
use archtrace_analyzer::snapshot::Snapshot;
use serde_json::Value;

use crate::support::{binary, json_files, succeeded};

type Edges = BTreeMap<(String, String), u64>;

/// Service-to-service edges of a snapshot (both ends report spans), with calls.
fn service_edges(snapshot: &Snapshot) -> Edges {
    let services: Vec<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Service)
        .map(|n| n.id.as_str())
        .collect();
    let mut edges = Edges::new();
    for edge in &snapshot.edges {
        if services.contains(&edge.from.as_str()) && services.contains(&edge.to.as_str()) {
            *edges
                .entry((edge.from.clone(), edge.to.clone()))
                .or_default() += edge.calls;
        }
    }
    edges
}

fn user_calls(snapshot: &Snapshot) -> BTreeMap<String, u64> {
    snapshot
        .edges
        .iter()
        .filter(|e| e.from == "user")
        .map(|e| (e.to.clone(), e.calls))
        .collect()
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

#[test]
fn jaeger_service_edges_equal_parent_child_links() {
    let files = json_files("jaeger-hotel-reservation");
    let mut expected = Edges::new();
    let mut entries: BTreeMap<String, u64> = BTreeMap::new();
    for file in &files {
        let document: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        for trace in document["data"].as_array().unwrap() {
            let service = |span: &Value| {
                trace["processes"][span["processID"].as_str().unwrap()]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            let by_id: HashMap<&str, &Value> = trace["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["spanID"].as_str().unwrap(), s))
                .collect();
            for span in trace["spans"].as_array().unwrap() {
                let parent = span["references"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| by_id.get(r["spanID"].as_str().unwrap()));
                match parent {
                    Some(parent) if service(parent) != service(span) => {
                        *expected
                            .entry((service(parent), service(span)))
                            .or_default() += 1;
                    }
                    None if tag(span, "span.kind") == Some(&Value::from("server")) => {
                        *entries.entry(service(span)).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    let (snapshot, spans) = snapshot_from_files(&files);
    assert_eq!(spans, 1_100);
    assert!(!expected.is_empty());
    assert_eq!(service_edges(&snapshot), expected);
    assert_eq!(
        user_calls(&snapshot),
        entries,
        "root server spans are entry points called by the user"
    );
    for entry in entries.keys() {
        assert!(snapshot
            .nodes
            .iter()
            .any(|n| &n.id == entry && n.entry_point));
    }
    assert_eq!(snapshot.diagnostics.orphaned_spans, 0);
    assert_eq!(snapshot.diagnostics.traces, 100);
}

/// The raw Zipkin spans with the pieces of one span merged, as Zipkin's UI does: entries with
/// the same trace, id and local service whose kinds agree or are missing. Pieces keep the kind,
/// parent, remote endpoint and error tag any of them had.
pub fn merged_zipkin(source: Vec<Value>) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::new();
    for span in source {
        let same = merged.iter_mut().find(|m| {
            m["traceId"] == span["traceId"]
                && m["id"] == span["id"]
                && m["localEndpoint"]["serviceName"] == span["localEndpoint"]["serviceName"]
                && (m["kind"].is_null() || span["kind"].is_null() || m["kind"] == span["kind"])
        });
        match same {
            Some(m) => {
                for key in ["kind", "parentId", "remoteEndpoint", "timestamp"] {
                    if m[key].is_null() && !span[key].is_null() {
                        m[key] = span[key].clone();
                    }
                }
                if let Some(error) = span["tags"].get("error") {
                    m["tags"]["error"] = error.clone();
                }
            }
            None => merged.push(span),
        }
    }
    merged
}

/// Zipkin semantics, computed on the raw JSON: a server span is called by the client span that
/// shares its id, or else by the span its parentId names; a consumer by its parent (the
/// producer); a local span below another service's span is a call without a server span.
fn zipkin_expected(source: &[Value]) -> (Edges, Edges) {
    let service = |s: &Value| {
        s["localEndpoint"]["serviceName"]
            .as_str()
            .unwrap_or("unknown_service")
            .to_owned()
    };
    let kind = |s: &Value| s["kind"].as_str().unwrap_or("").to_owned();
    let mut by_id: HashMap<(String, String), Vec<&Value>> = HashMap::new();
    for span in source {
        let key = (
            span["traceId"].as_str().unwrap().to_owned(),
            span["id"].as_str().unwrap().to_owned(),
        );
        by_id.entry(key).or_default().push(span);
    }
    let mut edges = Edges::new();
    let mut entries = BTreeMap::new();
    for span in source {
        let trace = span["traceId"].as_str().unwrap().to_owned();
        let same_id = &by_id[&(trace.clone(), span["id"].as_str().unwrap().to_owned())];
        let client_twin = same_id.iter().find(|s| kind(s) == "CLIENT");
        let parent = span["parentId"]
            .as_str()
            .and_then(|p| by_id.get(&(trace.clone(), p.to_owned())))
            // Of two halves sharing the parent's id, the server half did the work below it.
            .map(|halves| {
                *halves
                    .iter()
                    .find(|h| kind(h) == "SERVER")
                    .unwrap_or(&halves[0])
            });
        match kind(span).as_str() {
            "SERVER" | "CONSUMER" => {
                let caller = if kind(span) == "SERVER" && client_twin.is_some() {
                    client_twin.copied()
                } else {
                    parent
                };
                match caller {
                    Some(caller) => {
                        let client_side = matches!(kind(caller).as_str(), "CLIENT" | "PRODUCER");
                        if service(caller) != service(span) || client_side {
                            *edges.entry((service(caller), service(span))).or_default() += 1;
                        }
                    }
                    // R3: the caller is the remote endpoint the span names, or the user.
                    None if span["parentId"].is_null() => {
                        let caller = span["remoteEndpoint"]["serviceName"]
                            .as_str()
                            .unwrap_or("user")
                            .to_owned();
                        *entries.entry((caller, service(span))).or_default() += 1;
                    }
                    None => {}
                }
            }
            _ => {
                if let Some(parent) = parent {
                    let is_rpc_client = span["remoteEndpoint"].is_object();
                    if service(parent) != service(span)
                        && (kind(span).is_empty() && !is_rpc_client
                            || kind(span) == "CLIENT"
                            || kind(span) == "PRODUCER")
                    {
                        *edges.entry((service(parent), service(span))).or_default() += 1;
                    }
                }
            }
        }
    }
    (edges, entries)
}

#[test]
fn zipkin_service_edges_equal_parent_child_links() {
    for file in json_files("zipkin") {
        let source = merged_zipkin(serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap());
        let (expected, entries) = zipkin_expected(&source);
        let (snapshot, _) = snapshot_from_files(std::slice::from_ref(&file));
        // Calls to uninstrumented peers named by remoteEndpoint that happen to be services of
        // the file are R2 edges, not parent/child links: leave them out of the comparison.
        let mut derived = service_edges(&snapshot);
        for span in &source {
            let remote = span["remoteEndpoint"]["serviceName"].as_str();
            let local = span["localEndpoint"]["serviceName"]
                .as_str()
                .unwrap_or("unknown_service");
            let has_server = source.iter().any(|s| {
                (s["parentId"] == span["id"] || (s["id"] == span["id"] && s["kind"] == "SERVER"))
                    && matches!(s["kind"].as_str(), Some("SERVER" | "CONSUMER"))
            });
            if let (Some(remote), false) = (remote, has_server) {
                if matches!(span["kind"].as_str(), Some("CLIENT" | "PRODUCER") | None) {
                    if let Some(calls) = derived.get_mut(&(local.to_owned(), remote.to_owned())) {
                        *calls -= 1;
                    }
                }
            }
        }
        derived.retain(|_, calls| *calls > 0);
        assert_eq!(derived, expected, "{}", file.display());
        // Calls from nodes that report no spans are the entry calls (R3); a named caller can also
        // be a peer other spans call, and then it is typed as that peer.
        let outside: Vec<&str> = snapshot
            .nodes
            .iter()
            .filter(|n| n.node_type != NodeType::Service)
            .map(|n| n.id.as_str())
            .collect();
        let derived_entries: Edges = snapshot
            .edges
            .iter()
            .filter(|e| outside.contains(&e.from.as_str()))
            .map(|e| ((e.from.clone(), e.to.clone()), e.calls))
            .collect();
        assert_eq!(derived_entries, entries, "{}", file.display());
    }
}

#[test]
fn graph_formats_from_the_binary_agree_with_the_library() {
    let files = json_files("jaeger-hotel-reservation");
    let output = succeeded(
        Command::new(binary())
            .args(["graph", "--format", "json", "--traces"])
            .args(&files),
    );
    let from_binary: Snapshot = serde_json::from_slice(&output.stdout).unwrap();
    let (from_library, _) = snapshot_from_files(&files);
    assert_eq!(from_binary, from_library);
    assert_eq!(from_binary.schema, "archtrace.snapshot/v1");

    for (format, marker) in [
        ("table", "CALLS/TRACE"),
        ("dot", "digraph archtrace"),
        ("mermaid", "flowchart LR"),
    ] {
        let output = Command::new(binary())
            .args(["graph", "--format", format, "--traces"])
            .args(&files)
            .output()
            .unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains(marker), "{format}: {text}");
        for edge in &from_library.edges {
            assert!(
                text.contains(&edge.from) && text.contains(&edge.to),
                "{format} shows {} -> {}",
                edge.from,
                edge.to
            );
        }
    }
    let operations = succeeded(
        Command::new(binary())
            .args(["graph", "--level", "operation", "--traces"])
            .args(&files),
    );
    let text = String::from_utf8(operations.stdout).unwrap();
    let operation = &from_library.operations[0];
    assert!(
        text.contains(&format!(
            "{}: {}",
            operation.to.service, operation.to.operation
        )),
        "{text}"
    );
}

#[test]
fn the_same_input_gives_byte_identical_snapshots() {
    let files = json_files("zipkin");
    let run = || {
        let output = succeeded(
            Command::new(binary())
                .args(["graph", "--format", "json", "--traces"])
                .args(&files),
        );
        output.stdout
    };
    let first = run();
    let snapshot: Snapshot = serde_json::from_slice(&first).unwrap();
    assert!(
        !snapshot.edges.is_empty(),
        "a real graph, not two empty outputs"
    );
    assert_eq!(first, run());
}

/// The offline snapshot and the one read back from the store's buckets after `import` describe
/// the same graph (the windows differ: offline it is the span range, from the store the query).
fn same_graph(a: &Snapshot, b: &Snapshot) {
    let ids = |s: &Snapshot| {
        s.nodes
            .iter()
            .map(|n| (n.id.clone(), n.node_type, n.entry_point))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(a), ids(b));
    assert_eq!(a.edges, b.edges);
    assert_eq!(a.operations, b.operations);
    assert_eq!(a.entry_operations, b.entry_operations);
    assert!(
        !a.entry_operations.is_empty(),
        "traces with roots have entry operations"
    );
    assert_eq!(a.diagnostics, b.diagnostics);
}

#[test]
fn import_then_graph_from_the_store_equals_offline_and_survives_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("graph.duckdb");
    let files = json_files("jaeger-hotel-reservation");
    let imported = Command::new(binary())
        .args(["import", "--db"])
        .arg(&db)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let (offline, _) = snapshot_from_files(&files);
    assert!(
        !offline.edges.is_empty(),
        "compare real graphs, not two empty ones"
    );
    // The recorded traces are from 2022: ask for a window around them.
    let graph = |db: &std::path::Path| {
        let output = succeeded(
            Command::new(binary())
                .args([
                    "graph",
                    "--format",
                    "json",
                    "--since",
                    "2022-01-01T00:00:00Z",
                    "--until",
                    "2023-01-01T00:00:00Z",
                    "--db",
                ])
                .arg(db),
        );
        serde_json::from_slice::<Snapshot>(&output.stdout).unwrap()
    };
    same_graph(&graph(&db), &offline);
    // The days imported are over: they are rolled up at once, and the window above, whole
    // days around them, read them from their day rows.
    let bucket_rows = |db: &std::path::Path| {
        let output = succeeded(
            Command::new(binary())
                .args(["stats", "--format", "json", "--db"])
                .arg(db),
        );
        let stats: Value = serde_json::from_slice(&output.stdout).unwrap();
        let rows = |key: &str| stats[key].as_u64().unwrap();
        (rows("hour_bucket_rows"), rows("day_bucket_rows"))
    };
    let (hour_rows, day_rows) = bucket_rows(&db);
    assert!(
        0 < day_rows && day_rows <= hour_rows,
        "{hour_rows} {day_rows}"
    );

    let rebuilt = Command::new(binary())
        .args([
            "rebuild",
            "--since",
            "2022-01-01T00:00:00Z",
            "--until",
            "2023-01-01T00:00:00Z",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(
        String::from_utf8(rebuilt.stdout).unwrap(),
        "derived 100 traces again\n"
    );
    same_graph(&graph(&db), &offline);
    assert_eq!(bucket_rows(&db), (hour_rows, day_rows));

    // The default window (the last hour) is empty; the user is told where the data is.
    let output = Command::new(binary())
        .args(["graph", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the store holds spans from 2022-"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_from_a_running_server_equals_the_api() {
    use archtrace_workload::shop::Simulation;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::ServerProcess::spawn(
        &dir.path().join("live.duckdb"),
        &["--trace-idle", "100ms"],
    );
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let now = archtrace_analyzer::time::now_ns() as u64;
    client
        .export(Simulation::starting_at(3, now - 60_000_000_000).request_of_spans(500))
        .await
        .unwrap();
    // Wait until the traces are derived (100 ms after their last span).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let live: Snapshot = reqwest::get(format!("{}/api/v1/snapshot?since=2h", server.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if live.edges.iter().any(|e| e.from == "gateway") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let cli = Command::new(binary())
        .args([
            "graph",
            "--format",
            "json",
            "--since",
            "2h",
            "--server",
            &server.admin,
        ])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let from_cli: Snapshot = serde_json::from_slice(&cli.stdout).unwrap();
    let from_api: Snapshot = reqwest::get(format!("{}/api/v1/snapshot?since=2h", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        from_cli.edges.len() >= 10,
        "the live graph was derived: {:#?}",
        from_cli.edges
    );
    assert_eq!(from_cli.edges, from_api.edges);
    assert_eq!(from_cli.findings, from_api.findings);

    let bad = reqwest::get(format!("{}/api/v1/snapshot?since=yesterday", server.admin))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("RFC 3339"));

    // A reversed window is the same error for the API and the CLI.
    let reversed = reqwest::get(format!(
        "{}/api/v1/snapshot?since=1h&until=2h",
        server.admin
    ))
    .await
    .unwrap();
    assert_eq!(reversed.status(), 400);
    let api_says = reversed.text().await.unwrap();
    assert!(api_says.contains("must be before its end"), "{api_says}");
    let cli = Command::new(binary())
        .args([
            "graph",
            "--since",
            "1h",
            "--until",
            "2h",
            "--server",
            &server.admin,
        ])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("must be before its end"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );

    // The level is honoured: the service level leaves out the operation-level edges.
    let level = |level: &str| {
        let url = format!("{}/api/v1/snapshot?since=2h&level={level}", server.admin);
        async move { reqwest::get(url).await.unwrap() }
    };
    let services: Snapshot = level("service").await.json().await.unwrap();
    assert!(services.operations.is_empty());
    assert_eq!(services.edges, from_api.edges);
    let operations: Snapshot = level("operation").await.json().await.unwrap();
    assert!(!operations.operations.is_empty());
    let unknown = level("endpoint").await;
    assert_eq!(unknown.status(), 400);
    assert!(unknown
        .text()
        .await
        .unwrap()
        .contains("\"endpoint\" is not a level"));
}
