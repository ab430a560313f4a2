//! Bad input gets the OTLP answer, the valid part of a request is kept, and the server keeps
//! serving afterwards.

use std::io::Write;

use archtrace_collector::ServerSettings;
use archtrace_workload::shop::Simulation;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::support::{count, InProcessServer};

/// `google.rpc.Status` as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn post(url: &str, content_type: &str, gzip: bool, body: Vec<u8>) -> Answer {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    let response = request.body(body).send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, name: &str) -> Span {
    Span {
        trace_id,
        span_id,
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        ..Default::default()
    }
}

/// Two valid spans around three with bad ids.
fn mixed_request() -> ExportTraceServiceRequest {
    let trace = vec![7u8; 16];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(trace.clone(), vec![1; 8], "valid-1"),
                    span(vec![7u8; 8], vec![2; 8], "short-trace-id"),
                    span(vec![0u8; 16], vec![3; 8], "zero-trace-id"),
                    span(trace.clone(), vec![0; 8], "zero-span-id"),
                    span(trace, vec![5; 8], "valid-2"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn valid_request(seed: u64) -> ExportTraceServiceRequest {
    Simulation::starting_at(seed, 1_700_000_000_000_000_000).request_of_spans(50)
}

fn spans_in(request: &ExportTraceServiceRequest) -> i64 {
    archtrace_formats::otlp::span_count(request) as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn http_bad_input_gets_otlp_answers_and_the_server_keeps_serving() {
    let settings = ServerSettings {
        max_body_bytes: 1024 * 1024,
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let url = server.http_url();

    let malformed = post(
        &url,
        "application/x-protobuf",
        false,
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.content_type, "application/x-protobuf");
    let status = RpcStatus::decode(&malformed.body[..]).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.contains("malformed protobuf"),
        "{}",
        status.message
    );

    let bad_json = post(
        &url,
        "application/json",
        false,
        br#"{"resourceSpans": [ {"#.to_vec(),
    )
    .await;
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.content_type, "application/json");
    let message: serde_json::Value = serde_json::from_slice(&bad_json.body).unwrap();
    assert!(
        message["message"].as_str().unwrap().contains("line 1"),
        "the error says where: {message}"
    );

    let wrong_type = post(&url, "text/plain", false, b"hello".to_vec()).await;
    assert_eq!(wrong_type.status, 415);
    let status = RpcStatus::decode(&wrong_type.body[..]).unwrap();
    assert!(
        status.message.contains("application/x-protobuf"),
        "{}",
        status.message
    );

    let too_large = post(
        &url,
        "application/x-protobuf",
        false,
        vec![0; 2 * 1024 * 1024],
    )
    .await;
    assert_eq!(too_large.status, 413);

    // 64 MiB of zeros compress to about 64 KiB: a gzip bomb against a 1 MiB limit.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let bombed = post(&url, "application/x-protobuf", true, bomb).await;
    assert_eq!(bombed.status, 413);
    let status = RpcStatus::decode(&bombed.body[..]).unwrap();
    assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);

    let not_gzip = post(
        &url,
        "application/x-protobuf",
        true,
        b"plain bytes".to_vec(),
    )
    .await;
    assert_eq!(not_gzip.status, 400);

    let empty = post(&url, "application/x-protobuf", false, Vec::new()).await;
    assert_eq!(empty.status, 200, "an empty request succeeds");
    let empty_json = post(&url, "application/json", false, b"{}".to_vec()).await;
    assert_eq!(empty_json.status, 200);

    let mixed = post(
        &url,
        "application/x-protobuf",
        false,
        mixed_request().encode_to_vec(),
    )
    .await;
    assert_eq!(mixed.status, 200);
    let response = ExportTraceServiceResponse::decode(&mixed.body[..]).unwrap();
    let partial = response
        .partial_success
        .expect("partial success is reported");
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial.error_message.contains("trace_id"),
        "{}",
        partial.error_message
    );

    let mixed_json = post(
        &url,
        "application/json",
        false,
        archtrace_formats::otlp_json::encode(&mixed_request()),
    )
    .await;
    assert_eq!(mixed_json.status, 200);
    let response: serde_json::Value = serde_json::from_slice(&mixed_json.body).unwrap();
    assert_eq!(response["partialSuccess"]["rejectedSpans"], "3");

    // After all that, ordinary requests, plain and gzipped, still work.
    let plain = valid_request(1);
    let zipped = valid_request(2);
    assert_eq!(
        post(&url, "application/x-protobuf", false, plain.encode_to_vec())
            .await
            .status,
        200
    );
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            true,
            gzip(&zipped.encode_to_vec())
        )
        .await
        .status,
        200
    );

    let stopped = server.stop().await;
    let store = &stopped.store;
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM spans WHERE span_name LIKE 'valid-%'"
        ),
        4,
        "the valid spans of both mixed requests were stored"
    );
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM spans WHERE span_name NOT LIKE 'valid-%'"
        ),
        spans_in(&plain) + spans_in(&zipped),
        "nothing else but the two ordinary requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_bad_input_gets_otlp_codes_and_the_server_keeps_serving() {
    let settings = ServerSettings {
        max_body_bytes: 1024 * 1024,
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();

    let response = client.export(mixed_request()).await.unwrap().into_inner();
    let partial = response
        .partial_success
        .expect("partial success is reported");
    assert_eq!(partial.rejected_spans, 3);

    let empty = client
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(empty.partial_success, None);

    // A message over the limit, uncompressed and as a gzip bomb.
    let mut huge = valid_request(3);
    huge.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(2 * 1024 * 1024);
    let status = client.export(huge.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    huge.resource_spans[0].scope_spans[0].spans[0].name = "\0".repeat(64 * 1024 * 1024);
    let mut zipping = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let status = zipping.export(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // Malformed protobuf, sent as raw bytes on the same method.
    let status = raw_grpc_export(&server.grpc_url(), vec![0xff, 0xff, 0xff]).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let fine = valid_request(4);
    client.export(fine.clone()).await.unwrap();
    let zipped = valid_request(5);
    zipping.export(zipped.clone()).await.unwrap();

    let stopped = server.stop().await;
    assert_eq!(
        count(
            &stopped.store,
            "SELECT count(*) FROM spans WHERE span_name LIKE 'valid-%'"
        ),
        2
    );
    assert_eq!(
        count(
            &stopped.store,
            "SELECT count(*) FROM spans WHERE span_name NOT LIKE 'valid-%'"
        ),
        spans_in(&fine) + spans_in(&zipped)
    );
}

/// Sends arbitrary bytes as the body of `TraceService/Export`.
async fn raw_grpc_export(url: &str, body: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let request = http::Request::post(format!(
        "{url}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(tonic::body::Body::new(http_body_util::Full::new(
        bytes::Bytes::from(frame),
    )))
    .unwrap();
    use tower::ServiceExt;
    let response = channel.oneshot(request).await.unwrap();
    tonic::Status::from_header_map(response.headers()).expect("a trailers-only error response")
}

/// The load generator says why the server turned its requests down, in the server's words, on
/// every protocol: of an OTLP/HTTP error it reads the body, not only the status.
#[tokio::test(flavor = "multi_thread")]
async fn loadgen_reports_the_servers_reason_for_turning_requests_down() {
    use archtrace_workload::loadgen::{self, LoadgenOptions, Protocol};
    let settings = ServerSettings {
        auth_token: Some("s3cret".into()),
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let http = server.http_url().replace("/v1/traces", "");
    for (protocol, endpoint) in [
        (Protocol::Grpc, server.grpc_url()),
        (Protocol::HttpProtobuf, http.clone()),
        (Protocol::HttpJson, http),
    ] {
        let report = loadgen::run(LoadgenOptions {
            endpoint,
            protocol,
            spans_per_request: 20,
            concurrency: 1,
            rate: None,
            duration: std::time::Duration::from_millis(200),
            distinct_requests: 1,
            auth_token: None,
        })
        .await
        .unwrap();
        assert_eq!(report.spans_accepted, 0, "{protocol:?}");
        assert!(report.requests_failed > 0, "{protocol:?}");
        let error = report.first_error.expect("an error is reported");
        assert!(
            error.contains("missing or wrong bearer token"),
            "{protocol:?}: {error}"
        );
        if protocol != Protocol::Grpc {
            assert!(error.starts_with("HTTP 401 Unauthorized: "), "{error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_token_are_refused() {
    let settings = ServerSettings {
        auth_token: Some("s3cret".into()),
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let body = valid_request(6).encode_to_vec();
    assert_eq!(
        post(&server.http_url(), "application/x-protobuf", false, body)
            .await
            .status,
        401
    );
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let status = client.export(valid_request(7)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let metrics = reqwest::get(server.admin_url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 401);
    let metrics = reqwest::Client::new()
        .get(server.admin_url("/metrics"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("archtrace_requests_total{transport=\"grpc\",outcome=\"unauthenticated\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("archtrace_requests_total{transport=\"http\",outcome=\"unauthenticated\"} 1"),
        "{text}"
    );
    // The web viewer on the admin listener is behind the same token.
    for page in ["/", "/graph", "/drift", "/static/app.js"] {
        let refused = reqwest::get(server.admin_url(page)).await.unwrap();
        assert_eq!(refused.status(), 401, "{page}");
        let shown = reqwest::Client::new()
            .get(server.admin_url(page))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(shown.status(), 200, "{page}");
    }
    let stopped = server.stop().await;
    assert_eq!(count(&stopped.store, "SELECT count(*) FROM spans"), 0);
}
