//! OpenTelemetry instrumentation for the real services the tests run: axum servers that call
//! each other over HTTP with W3C trace context and export OTLP over gRPC.

use std::time::{Duration, SystemTime};

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
    provider_of_release(service, None, endpoint)
}

/// A provider whose resource also says `service.version`, when given.
pub fn provider_of_release(
    service: &str,
    version: Option<&str>,
    endpoint: &str,
) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .unwrap();
    let mut resource = Resource::builder().with_service_name(service.to_owned());
    if let Some(version) = version {
        resource = resource.with_attribute(KeyValue::new("service.version", version.to_owned()));
    }
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build()
}

/// The time spans are stamped with: now, or a fixed time before now (a test that replays a
/// deployment of hours ago runs the real services with their clock set back).
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    behind: Duration,
}

impl Clock {
    pub fn behind(behind: Duration) -> Clock {
        Clock { behind }
    }

    pub fn now(&self) -> SystemTime {
        SystemTime::now() - self.behind
    }
}

/// Starts an axum server span from the request's trace context.
pub fn server_span(tracer: &SdkTracer, headers: &HeaderMap, route: &str) -> Context {
    server_span_at(&Clock::default(), tracer, headers, route)
}

pub fn server_span_at(
    clock: &Clock,
    tracer: &SdkTracer,
    headers: &HeaderMap,
    route: &str,
) -> Context {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span = tracer
        .span_builder(format!("GET {route}"))
        .with_kind(SpanKind::Server)
        .with_start_time(clock.now())
        .with_attributes([
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.request.method", "GET"),
        ])
        .start_with_context(tracer, &parent);
    parent.with_span(span)
}

/// An HTTP call with a client span whose context travels in the headers.
pub async fn call(tracer: &SdkTracer, cx: &Context, url: String, peer: &str) {
    call_at(&Clock::default(), tracer, cx, url, peer).await
}

pub async fn call_at(clock: &Clock, tracer: &SdkTracer, cx: &Context, url: String, peer: &str) {
    let span = tracer
        .span_builder("GET")
        .with_kind(SpanKind::Client)
        .with_start_time(clock.now())
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
    cx.span().end_with_timestamp(clock.now());
}

pub fn database_call(tracer: &SdkTracer, cx: &Context, system: &str, namespace: &str) {
    database_call_at(&Clock::default(), tracer, cx, system, namespace)
}

pub fn database_call_at(
    clock: &Clock,
    tracer: &SdkTracer,
    cx: &Context,
    system: &str,
    namespace: &str,
) {
    tracer
        .span_builder(format!("SELECT {namespace}"))
        .with_kind(SpanKind::Client)
        .with_start_time(clock.now())
        .with_attributes([
            KeyValue::new("db.system.name", system.to_owned()),
            KeyValue::new("db.namespace", namespace.to_owned()),
        ])
        .start_with_context(tracer, cx)
        .end_with_timestamp(clock.now());
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
