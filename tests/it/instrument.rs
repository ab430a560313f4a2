//! OpenTelemetry instrumentation for the real services the tests run: axum servers that call
//! each other over HTTP with W3C trace context and export OTLP over gRPC.

use axum::http::HeaderMap;
use axum::Router;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (key.parse::<axum::http::HeaderName>(), value.parse()) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

pub fn provider(service: &str, endpoint: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build()
}

/// Starts an axum server span from the request's trace context.
pub fn server_span(tracer: &SdkTracer, headers: &HeaderMap, route: &str) -> Context {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span = tracer
        .span_builder(format!("GET {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.request.method", "GET"),
        ])
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// An HTTP call with a client span whose context travels in the headers.
pub async fn call(tracer: &SdkTracer, cx: &Context, url: String, peer: &str) {
    let span = tracer
        .span_builder("GET")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("server.address", peer.to_owned())])
        .start_with_context(tracer, cx);
    let cx = cx.with_span(span);
    let mut headers = HeaderMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
    let response = reqwest::Client::new()
        .get(url)
        .headers(headers)
        .send()
        .await
        .unwrap();
    if !response.status().is_success() {
        cx.span().set_status(Status::error("call failed"));
    }
    cx.span().end();
}

pub fn database_call(tracer: &SdkTracer, cx: &Context, system: &str, namespace: &str) {
    tracer
        .span_builder(format!("SELECT {namespace}"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("db.system.name", system.to_owned()),
            KeyValue::new("db.namespace", namespace.to_owned()),
        ])
        .start_with_context(tracer, cx)
        .end();
}

/// Serves a router on a free local port and returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

/// Sends `count` GET requests, one after the other, each of which must succeed.
pub async fn get_ok(url: &str, count: u64) {
    for _ in 0..count {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
    }
}

/// Shuts the providers down, which exports every span they still hold.
pub async fn shutdown(providers: Vec<SdkTracerProvider>) {
    for provider in providers {
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .unwrap()
            .unwrap();
    }
}
