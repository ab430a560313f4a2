//! Retention while serving: raw spans older than `--retention` and derived edges older than
//! `--bucket-retention` are deleted in windows, and nothing newer is touched.

use std::time::{Duration, Instant};

use archtrace_analyzer::snapshot::Snapshot;
use archtrace_collector::retention::RetentionSettings;
use archtrace_collector::ServerSettings;
use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{count, quick_assembly, InProcessServer};

const MINUTE_NS: u64 = 60_000_000_000;

async fn snapshot(server: &InProcessServer, since: &str, until: &str) -> Snapshot {
    let url = server.admin_url(&format!("/api/v1/snapshot?since={since}&until={until}"));
    let response = reqwest::get(&url).await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_only_what_is_older_than_its_bounds_while_serving() {
    let settings = ServerSettings {
        retention: RetentionSettings {
            spans: Some(Duration::from_secs(3_600)),
            buckets: Some(Duration::from_secs(2 * 3_600)),
            every: Duration::from_millis(100),
        },
        ..quick_assembly()
    };
    let server = InProcessServer::start(settings).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let now = archtrace_analyzer::time::now_ns() as u64;
    // Traffic 3 hours, 90 minutes and 10 minutes ago.
    let mut sent = Vec::new();
    for (seed, minutes_ago) in [(1, 180), (2, 90), (3, 10)] {
        let request =
            Simulation::starting_at(seed, now - minutes_ago * MINUTE_NS).request_of_spans(100);
        sent.push(archtrace_formats::otlp::span_count(&request) as i64);
        client.export(request).await.unwrap();
    }

    // The graph of 4 to 2 hours ago empties once its buckets are pruned; the last 2 hours keep
    // theirs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let old = snapshot(&server, "4h", "2h").await;
        let recent = snapshot(&server, "2h", "1m").await;
        if old.edges.is_empty() && recent.diagnostics.spans as i64 == sent[1] + sent[2] {
            assert!(!recent.edges.is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old buckets were not pruned, or recent ones were: old {:?}, recent spans {}",
            old.edges.len(),
            recent.diagnostics.spans
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Still serving.
    let request = Simulation::starting_at(4, now).request_of_spans(100);
    let newest = archtrace_formats::otlp::span_count(&request) as i64;
    client.export(request).await.unwrap();
    let value = |name: &'static str| {
        let server = &server;
        async move {
            let line = server.metric_line(&format!("{name} ")).await;
            line[name.len() + 1..].parse::<i64>().unwrap()
        }
    };
    assert_eq!(
        value("archtrace_retention_spans_deleted_total").await,
        sent[0] + sent[1],
        "the spans older than an hour"
    );
    assert!(
        value("archtrace_retention_transactions_total").await >= 3,
        "an hour of spans, or a day of buckets, per transaction"
    );
    let stopped = server.stop().await;
    assert_eq!(
        count(&stopped.store, "SELECT count(*) FROM spans"),
        sent[2] + newest,
        "only the spans of the last hour are left"
    );
    let cutoff = (now - 60 * MINUTE_NS) as i64;
    assert_eq!(
        count(
            &stopped.store,
            &format!("SELECT count(*) FROM spans WHERE start_ns < {cutoff}")
        ),
        0
    );
}

/// A server rolls up the days that are over (here at its end, after the last checkpoint): a
/// day of a backfill is then read from one row per edge, and says what its spans said.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_rolls_up_the_days_that_are_over() {
    const DAY_NS: u64 = 24 * 60 * MINUTE_NS;
    let server = InProcessServer::start(quick_assembly()).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let now = archtrace_analyzer::time::now_ns() as u64;
    let day = (now / DAY_NS - 2) * DAY_NS;
    let request = Simulation::starting_at(5, day + 6 * 60 * MINUTE_NS).request_of_spans(200);
    let sent = archtrace_formats::otlp::span_count(&request) as u64;
    client.export(request).await.unwrap();
    let (since, until) = (
        archtrace_analyzer::time::rfc3339(day as i64),
        archtrace_analyzer::time::rfc3339((day + DAY_NS) as i64),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        let served = snapshot(&server, &since, &until).await;
        if served.diagnostics.spans == sent {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {sent} spans",
            served.diagnostics.spans
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!served.edges.is_empty());

    let stopped = server.stop().await;
    let stats = stopped.store.stats().unwrap();
    assert!(stats.day_bucket_rows > 0, "{stats:?}");
    let source = archtrace_query::store::StoreSource::open(&stopped.store).unwrap();
    let window = archtrace_query::Window::new(day as i64, (day + DAY_NS) as i64).unwrap();
    let read = archtrace_query::SnapshotSource::snapshot(&source, &window).unwrap();
    assert_eq!(read.diagnostics.spans, sent);
    assert_eq!(read.edges, served.edges);
}
