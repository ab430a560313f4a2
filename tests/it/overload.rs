//! Overload is refused, not buffered: a request log over its bound or too many requests in
//! flight are answered UNAVAILABLE / 503 with Retry-After, and every request that was
//! acknowledged is stored. Each
//! test holds the server busy on purpose, so both outcomes happen whatever the scheduling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use archtrace_collector::ingest::{Ingest, IngestError, IngestMetrics};
use archtrace_collector::journal::{Journal, LogLimits, LogState};
use archtrace_collector::live::Derivable;
use archtrace_collector::loader::{DeriverFeed, Loader, LoaderMetrics};
use archtrace_collector::ServerSettings;
use archtrace_store::log::LogWriter;
use archtrace_store::{Location, Store};
use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{count, InProcessServer};

fn shop_request(seed: u64) -> ExportTraceServiceRequest {
    Simulation::starting_at(seed, 1_700_000_000_000_000_000).request_of_spans(200)
}

fn spans_in(request: &ExportTraceServiceRequest) -> i64 {
    archtrace_formats::otlp::span_count(request) as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_refuses_while_the_loader_lags_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::File(dir.path().join("spans.duckdb"))).unwrap();
    let log_dir = dir.path().join("spans.duckdb.log");
    // Any request that would add to an unloaded log is refused.
    let limits = LogLimits {
        max_log_bytes: 1,
        min_free_disk_bytes: 0,
        segment_bytes: 1 << 20,
    };
    let (writer, _) = LogWriter::open(&log_dir, limits.segment_bytes, 0).unwrap();
    let state = Arc::new(LogState::default());
    let (journal, journal_thread) = Journal::spawn(writer, &log_dir, limits, state.clone());
    // A deriver that commits what it is handed, and after its first batch waits to be
    // released: a slow deriver, which the log must wait for.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (feed, derivables) = std::sync::mpsc::sync_channel::<Derivable>(0);
    state.derive.commit(0, 0);
    let deriver_state = state.clone();
    let deriver = std::thread::spawn(move || {
        let mut first_batch = true;
        for derivable in derivables {
            deriver_state
                .derive
                .commit(derivable.end, derivable.received_ns);
            if std::mem::take(&mut first_batch) {
                let _ = released.recv();
            }
        }
    });
    let loader = Loader::spawn(
        Some(store.another_writer().unwrap()),
        &log_dir,
        state.clone(),
        Arc::new(LoaderMetrics::default()),
        Some(DeriverFeed {
            sender: feed,
            from: 0,
            samples: false,
        }),
        None,
    )
    .unwrap();
    let ingest = Ingest::new(journal, Arc::new(IngestMetrics::default()), 64);
    let requests: Vec<_> = (1..=4).map(shop_request).collect();
    let loaded_all = |state: &LogState| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.lag_bytes() > 0 {
            assert!(Instant::now() < deadline, "the loader never caught up");
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    ingest
        .ingest(requests[0].encode_to_vec().into())
        .await
        .expect("an empty log takes a request");
    // Loaded, and the loader now held: the next request is taken, and stays in the log...
    loaded_all(&state);
    ingest
        .ingest(requests[1].encode_to_vec().into())
        .await
        .expect("the log is empty again");
    assert!(state.lag_bytes() > 0);
    // ...so the one after it is refused, with advice to retry.
    let refused = ingest
        .ingest(requests[2].encode_to_vec().into())
        .await
        .expect_err("the log is over its bound");
    assert!(matches!(refused, IngestError::Overloaded(_)), "{refused}");
    assert!(
        refused.to_string().contains("request log is full"),
        "{refused}"
    );
    let status = tonic::Status::from(refused);
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "OTLP clients retry it"
    );

    // Once the loader catches up, requests are taken again.
    release.send(()).unwrap();
    loaded_all(&state);
    ingest
        .ingest(requests[3].encode_to_vec().into())
        .await
        .expect("ingest resumes");
    assert_eq!(
        ingest
            .metrics()
            .spans_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        spans_in(&requests[2]) as u64
    );
    drop(ingest);
    journal_thread.join().unwrap();
    loader.join();
    deriver.join().unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM spans"),
        spans_in(&requests[0]) + spans_in(&requests[1]) + spans_in(&requests[3]),
        "exactly the acknowledged requests were stored"
    );
}

/// A real HTTP upload that has sent its headers and half its body, and waits.
struct HeldUpload {
    stream: tokio::net::TcpStream,
    rest: Vec<u8>,
}

impl HeldUpload {
    async fn start(addr: std::net::SocketAddr, body: &[u8]) -> HeldUpload {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let half = body.len() / 2;
        stream.write_all(&body[..half]).await.unwrap();
        HeldUpload {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest of the body and returns the response's status line.
    async fn finish(mut self) -> String {
        self.stream.write_all(&self.rest).await.unwrap();
        let mut response = Vec::new();
        self.stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_in_flight_limit_are_refused_before_they_are_decoded() {
    let settings = ServerSettings {
        max_requests_in_flight: 2,
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let request = shop_request(9);
    let body = request.encode_to_vec();

    // Two uploads take both places and hold them.
    let held = [
        HeldUpload::start(server.addrs.http, &body).await,
        HeldUpload::start(server.addrs.http, &body).await,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric_line("archtrace_requests_in_flight ").await
        != "archtrace_requests_in_flight 2"
    {
        assert!(
            Instant::now() < deadline,
            "the held uploads were never admitted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Everything sent meanwhile, over either transport, is refused with retry advice.
    let client = reqwest::Client::new();
    let mut http = Vec::new();
    for _ in 0..16 {
        let (client, url, body) = (client.clone(), server.http_url(), body.clone());
        http.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (
                response.status().as_u16(),
                retry_after,
                response.text().await.unwrap(),
            )
        }));
    }
    let mut grpc = Vec::new();
    for _ in 0..16 {
        let (url, request) = (server.grpc_url(), request.clone());
        grpc.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.unwrap();
            client.export(request).await.map(|_| ()).unwrap_err()
        }));
    }
    for task in http {
        let (status, retry_after, text) = task.await.unwrap();
        assert_eq!(status, 503, "{text}");
        assert!(retry_after.is_some(), "503 carries Retry-After");
        assert!(text.contains("2 requests are already in flight"), "{text}");
    }
    for task in grpc {
        let status = task.await.unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status
                .message()
                .contains("2 requests are already in flight"),
            "{status:?}"
        );
    }

    // Once the held uploads finish, they are stored, and the server takes requests again.
    for upload in held {
        let status_line = upload.finish().await;
        assert!(status_line.contains(" 200 "), "{status_line}");
    }
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    client.export(request.clone()).await.unwrap();

    assert_eq!(
        server
            .metric_line("archtrace_requests_total{transport=\"http\",outcome=\"unavailable\"}")
            .await,
        "archtrace_requests_total{transport=\"http\",outcome=\"unavailable\"} 16"
    );
    assert_eq!(
        server
            .metric_line("archtrace_requests_total{transport=\"grpc\",outcome=\"unavailable\"}")
            .await,
        "archtrace_requests_total{transport=\"grpc\",outcome=\"unavailable\"} 16"
    );
    assert_eq!(
        server.metric_line("archtrace_requests_in_flight ").await,
        "archtrace_requests_in_flight 0"
    );
    let stopped = server.stop().await;
    assert_eq!(
        count(&stopped.store, "SELECT count(*) FROM spans"),
        3 * spans_in(&request),
        "exactly the acknowledged requests were stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_short_of_its_free_space_refuses_with_retry_advice_and_stores_nothing() {
    // More free space kept than any disk has: every request finds the disk short.
    let settings = ServerSettings {
        log: LogLimits {
            min_free_disk_bytes: u64::MAX / 2,
            ..LogLimits::default()
        },
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let request = shop_request(5);
    let response = reqwest::Client::new()
        .post(server.http_url())
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    let text = response.text().await.unwrap();
    assert!(
        text.contains("bytes free") && text.contains("--min-free-disk-bytes"),
        "{text}"
    );
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let status = client.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("--min-free-disk-bytes"),
        "{status:?}"
    );
    let stopped = server.stop().await;
    assert_eq!(count(&stopped.store, "SELECT count(*) FROM spans"), 0);
}
