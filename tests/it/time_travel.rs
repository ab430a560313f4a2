//! Time travel: `--at WHEN` and `at=WHEN` give the architecture as it was at an instant (the
//! hour before it), the same as the explicit window, in the CLI, the API and the viewer.

use std::process::Command;

use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::time::{parse_rfc3339, rfc3339};
use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{binary, json_files, quick_assembly, succeeded, InProcessServer};

fn graph_json(args: &[&str]) -> Snapshot {
    let output = succeeded(
        Command::new(binary())
            .args(["graph", "--format", "json"])
            .args(args)
            .arg("--traces")
            .args(json_files("jaeger-hotel-reservation")),
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn calls(snapshot: &Snapshot) -> u64 {
    snapshot.edges.iter().map(|e| e.calls).sum()
}

#[test]
fn at_is_the_hour_before_the_instant_in_the_cli() {
    let all = graph_json(&[]);
    // The recorded traces run over about a minute; an instant inside it cuts them.
    let start = parse_rfc3339(&all.window.start).unwrap();
    let end = parse_rfc3339(&all.window.end).unwrap();
    let middle = rfc3339(start + (end - start) / 2);
    let before = rfc3339(start + (end - start) / 2 - 3_600_000_000_000);
    let at = graph_json(&["--at", &middle]);
    let explicit = graph_json(&["--since", &before, "--until", &middle]);
    assert_eq!(at.edges, explicit.edges);
    assert_eq!(at.window, explicit.window);
    assert!(
        calls(&at) > 0 && calls(&at) < calls(&all),
        "{} of {}",
        calls(&at),
        calls(&all)
    );

    let conflict = Command::new(binary())
        .args(["graph", "--at", "1h", "--since", "2h", "--traces"])
        .args(json_files("jaeger-hotel-reservation"))
        .output()
        .unwrap();
    assert_eq!(conflict.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("--at"));
}

#[tokio::test(flavor = "multi_thread")]
async fn at_travels_in_the_api_and_the_viewer() {
    let server = InProcessServer::start(quick_assembly()).await;
    let now = archtrace_analyzer::time::now_ns();
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    // Traffic three hours ago; nothing since.
    client
        .export(
            Simulation::starting_at(3, (now - 3 * 3_600_000_000_000) as u64).request_of_spans(500),
        )
        .await
        .unwrap();
    server.live_snapshot_when(|_| true).await;
    let then = server
        .snapshot_when("at=2h30m", |s| s.edges.len() >= 10)
        .await;
    let start = &then.window.start;
    let end = &then.window.end;
    let explicit = server
        .snapshot_when(&format!("since={start}&until={end}"), |_| true)
        .await;
    assert_eq!(then.edges, explicit.edges);
    assert!(
        server.snapshot_when("", |_| true).await.edges.is_empty(),
        "nothing in the last hour"
    );

    // The overview at that instant: its graph, and its window by date and clock time.
    let page = reqwest::get(server.admin_url("/?at=2h30m"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // "4 Dec 05:38–06:38 UTC", or with both days when the window crosses midnight.
    let clock = |time: &str| time[11..16].to_owned();
    let note = page
        .split("<p class=\"window-note\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_else(|| panic!("no window note in {page}"));
    assert!(
        note.contains(&clock(start)) && note.contains(&clock(end)) && note.contains("UTC"),
        "{note} should name {start} and {end}"
    );
    assert!(
        page.contains("<g class=\"node"),
        "the graph of that hour is drawn"
    );
    server.stop().await;
}
