//! Overload is refused, not buffered: with a full queue the server answers UNAVAILABLE / 503 with
//! Retry-After, and every request it did acknowledge is stored.

use archtrace_collector::synth::Generator;
use archtrace_collector::ServerSettings;
use archtrace_store::QueueLimits;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{count, InProcessServer};

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_with_retry_advice_and_keeps_what_it_acknowledged() {
    // Room for one request at a time: every request that arrives while one waits is refused.
    let settings = ServerSettings {
        queue: QueueLimits {
            max_spans: 1,
            max_bytes: 1,
        },
        ..ServerSettings::default()
    };
    let refusals = send_at_once_and_check(settings).await;
    assert!(
        refusals.iter().all(|m| m.contains("queue is full")),
        "{refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_in_flight_limit_are_refused_before_they_are_decoded() {
    // The queue has room for everything; only the limit on requests in flight refuses.
    let settings = ServerSettings {
        max_requests_in_flight: 2,
        ..ServerSettings::default()
    };
    let refusals = send_at_once_and_check(settings).await;
    assert!(
        refusals
            .iter()
            .all(|m| m.contains("2 requests are already in flight")),
        "{refusals:?}"
    );
}

/// Sends 48 requests at once over each transport: each must be stored or refused as OTLP asks
/// (UNAVAILABLE, 503 with Retry-After), some of each, and exactly the acknowledged ones stored.
/// Returns the messages of the gRPC refusals.
async fn send_at_once_and_check(settings: ServerSettings) -> Vec<String> {
    let server = InProcessServer::start(settings).await;
    let request = Generator::new(9, 1_700_000_000_000_000_000).request(512);
    let spans_per_request = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as i64)
        .sum::<i64>();
    let body = request.encode_to_vec();

    let client = reqwest::Client::new();
    let mut http = Vec::new();
    for _ in 0..48 {
        let client = client.clone();
        let url = server.http_url();
        let body = body.clone();
        http.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status().as_u16(), retry_after)
        }));
    }
    let mut grpc = Vec::new();
    for _ in 0..48 {
        let url = server.grpc_url();
        let request = request.clone();
        grpc.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.unwrap();
            client
                .export(request)
                .await
                .map(|_| ())
                .map_err(|s| (s.code(), s.message().to_owned()))
        }));
    }
    let (mut http_ok, mut http_refused) = (0, 0);
    for task in http {
        match task.await.unwrap() {
            (200, _) => http_ok += 1,
            (503, retry_after) => {
                assert!(retry_after.is_some(), "503 carries Retry-After");
                http_refused += 1;
            }
            (other, _) => panic!("unexpected HTTP {other}"),
        }
    }
    let (mut grpc_ok, mut grpc_refusals) = (0, Vec::new());
    for task in grpc {
        match task.await.unwrap() {
            Ok(()) => grpc_ok += 1,
            Err((tonic::Code::Unavailable, message)) => grpc_refusals.push(message),
            Err(other) => panic!("unexpected gRPC answer {other:?}"),
        }
    }
    let grpc_refused = grpc_refusals.len();
    assert!(http_ok > 0 && grpc_ok > 0, "some requests got through");
    assert!(http_refused > 0, "some HTTP requests were refused");
    assert!(grpc_refused > 0, "some gRPC requests were refused");

    let metrics = reqwest::get(server.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "archtrace_requests_total{{transport=\"http\",outcome=\"unavailable\"}} {http_refused}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "archtrace_requests_total{{transport=\"grpc\",outcome=\"unavailable\"}} {grpc_refused}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("archtrace_queue_spans 0\n"),
        "the queue is empty again: {metrics}"
    );

    let stopped = server.stop().await;
    assert_eq!(
        count(&stopped.store, "SELECT count(*) FROM spans"),
        (http_ok + grpc_ok) * spans_per_request,
        "exactly the acknowledged requests were stored"
    );
    grpc_refusals
}
