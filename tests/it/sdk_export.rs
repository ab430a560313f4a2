//! Spans exported by the real OpenTelemetry Rust SDK through `opentelemetry-otlp` arrive in the
//! store with everything the analyzer reads.

use archtrace_collector::ServerSettings;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::support::{count, InProcessServer};

/// Emits one small trace (a server span calling a database and another service) and returns
/// its trace id and the server span's id, both as hex.
async fn emit_trace(exporter: SpanExporter) -> (String, String) {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("orders")
                .with_attribute(KeyValue::new("deployment.environment.name", "staging"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("archtrace-e2e");
    let root = tracer
        .span_builder("GET /orders/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.route", "/orders/{id}"),
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("custom.tag", "kept"),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let root_id = root.span_context().span_id().to_string();
    let cx = Context::current_with_span(root);
    tracer
        .span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.namespace", "orders_db"),
        ])
        .start_with_context(&tracer, &cx)
        .end();
    let mut call = tracer
        .span_builder("GET /stock")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("peer.service", "inventory"),
            KeyValue::new("server.port", 8080_i64),
        ])
        .start_with_context(&tracer, &cx);
    call.set_status(Status::error("stock service timed out"));
    call.end();
    cx.span().end();
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("the SDK flushed every span to the server");
    (trace_id, root_id)
}

async fn check_arrival(server: InProcessServer, trace_id: &str, root_id: &str) {
    let stopped = server.stop().await;
    let store = &stopped.store;
    let in_trace = format!("FROM spans WHERE trace_id = unhex('{trace_id}')");
    assert_eq!(count(store, &format!("SELECT count(*) {in_trace}")), 3);
    assert_eq!(
        count(
            store,
            &format!("SELECT count(*) {in_trace} AND service_name = 'orders' AND environment = 'staging'")
        ),
        3
    );
    assert_eq!(
        count(
            store,
            &format!(
                "SELECT count(*) {in_trace} AND span_id = '0x{root_id}'::UBIGINT AND parent_span_id IS NULL \
                 AND span_kind = 2 /* server */ AND http_route = '/orders/{{id}}' AND http_method = 'GET' \
                 AND json_extract_string(attributes, '$.\"custom.tag\"') = 'kept'"
            )
        ),
        1,
        "the server span keeps its route, method and remaining attributes"
    );
    assert_eq!(
        count(
            store,
            &format!(
                "SELECT count(*) {in_trace} AND parent_span_id = '0x{root_id}'::UBIGINT AND span_kind = 3 /* client */ \
                 AND db_system_name = 'postgresql' AND db_namespace = 'orders_db'"
            )
        ),
        1,
        "the database call is a child of the server span"
    );
    assert_eq!(
        count(
            store,
            &format!(
                "SELECT count(*) {in_trace} AND parent_span_id = '0x{root_id}'::UBIGINT AND peer_service = 'inventory' \
                 AND server_port = 8080 AND status_code = 2 /* error */ \
                 AND status_message = 'stock service timed out'"
            )
        ),
        1,
        "the failed call keeps its peer and its error"
    );
    assert_eq!(
        count(
            store,
            &format!(
                "SELECT count(*) {in_trace} AND resource_id IN (SELECT resource_id FROM resources \
                 WHERE json_extract_string(attributes, '$.\"service.name\"') = 'orders') \
                 AND scope_name = 'archtrace-e2e' AND end_ns >= start_ns AND start_ns > 0"
            )
        ),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_exporter_spans_arrive() {
    let server = InProcessServer::start(ServerSettings::default()).await;
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .build()
        .unwrap();
    let (trace_id, root_id) = emit_trace(exporter).await;
    check_arrival(server, &trace_id, &root_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_exporter_spans_arrive() {
    let server = InProcessServer::start(ServerSettings::default()).await;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(server.http_url())
        .build()
        .unwrap();
    let (trace_id, root_id) = emit_trace(exporter).await;
    check_arrival(server, &trace_id, &root_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_json_exporter_spans_arrive() {
    let server = InProcessServer::start(ServerSettings::default()).await;
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(server.http_url())
        .build()
        .unwrap();
    let (trace_id, root_id) = emit_trace(exporter).await;
    check_arrival(server, &trace_id, &root_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exporters_with_the_bearer_token_are_let_in() {
    let settings = ServerSettings {
        auth_token: Some("t0ken".into()),
        ..ServerSettings::default()
    };
    let server = InProcessServer::start(settings).await;
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", "Bearer t0ken".parse().unwrap());
    let grpc = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .with_metadata(metadata)
        .build()
        .unwrap();
    let (grpc_trace, _) = emit_trace(grpc).await;
    let http = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(server.http_url())
        .with_headers([("authorization".to_owned(), "Bearer t0ken".to_owned())].into())
        .build()
        .unwrap();
    let (http_trace, _) = emit_trace(http).await;
    let stopped = server.stop().await;
    for trace in [grpc_trace, http_trace] {
        assert_eq!(
            count(
                &stopped.store,
                &format!("SELECT count(*) FROM spans WHERE trace_id = unhex('{trace}')")
            ),
            3
        );
    }
}
