//! Rows of the table the OpenTelemetry Collector's clickhouse exporter writes (`otel_traces`),
//! made from archtrace's spans: the ClickHouse tests and `examples/clickhouse_bench.rs` load
//! traces into ClickHouse as the exporter would.

use archtrace_analyzer::span::{SpanKind, StatusCode};
use archtrace_analyzer::Span;
use clickhouse::Row;
use serde::Serialize;

/// The table as the OpenTelemetry Collector's clickhouse exporter creates it.
pub const OTEL_TRACES_DDL: &str = "CREATE TABLE otel_traces (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1";

/// One row of `otel_traces`, as the exporter writes a span (events left empty).
#[derive(Row, Serialize)]
pub struct OtelSpan {
    #[serde(rename = "Timestamp")]
    timestamp: i64,
    #[serde(rename = "TraceId")]
    trace_id: String,
    #[serde(rename = "SpanId")]
    span_id: String,
    #[serde(rename = "ParentSpanId")]
    parent_span_id: String,
    #[serde(rename = "TraceState")]
    trace_state: String,
    #[serde(rename = "SpanName")]
    span_name: String,
    #[serde(rename = "SpanKind")]
    span_kind: String,
    #[serde(rename = "ServiceName")]
    service_name: String,
    #[serde(rename = "ResourceAttributes")]
    resource_attributes: Vec<(String, String)>,
    #[serde(rename = "ScopeName")]
    scope_name: String,
    #[serde(rename = "ScopeVersion")]
    scope_version: String,
    #[serde(rename = "SpanAttributes")]
    span_attributes: Vec<(String, String)>,
    #[serde(rename = "Duration")]
    duration: u64,
    #[serde(rename = "StatusCode")]
    status_code: String,
    #[serde(rename = "StatusMessage")]
    status_message: String,
    #[serde(rename = "Links.TraceId")]
    link_trace_ids: Vec<String>,
    #[serde(rename = "Links.SpanId")]
    link_span_ids: Vec<String>,
    #[serde(rename = "Links.TraceState")]
    link_trace_states: Vec<String>,
    #[serde(rename = "Links.Attributes")]
    link_attributes: Vec<Vec<(String, String)>>,
}

/// Attribute values as the exporter writes them: strings as they are, the rest as text.
fn attribute_map(json: &str) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(text) => (key, text),
            other => (key, other.to_string()),
        })
        .collect()
}

/// The exporter's row for a span; `legacy` spells kinds and statuses as exporters before
/// v0.100 did (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`).
pub fn otel_row(span: &Span, legacy: bool) -> OtelSpan {
    let mut resource = attribute_map(&span.detail.resource_attributes_json);
    if let Some(version) = &span.version {
        resource.retain(|(key, _)| key != "service.version");
        resource.push(("service.version".to_owned(), version.to_string()));
    }
    let service_name = resource
        .iter()
        .find(|(key, _)| key == "service.name")
        .map_or_else(|| span.service.to_string(), |(_, name)| name.clone());
    let mut attributes = attribute_map(&span.detail.attributes_json);
    let peer = &span.peer;
    let port = |port: Option<i64>| port.map(|p| p.to_string());
    for (key, value) in [
        ("peer.service", peer.peer_service().map(str::to_owned)),
        ("server.address", peer.server_address().map(str::to_owned)),
        ("server.port", port(peer.server_port)),
        (
            "network.peer.address",
            peer.network_peer_address().map(str::to_owned),
        ),
        ("network.peer.port", port(peer.network_peer_port)),
        ("net.peer.name", peer.net_peer_name().map(str::to_owned)),
        (
            "net.sock.peer.addr",
            peer.net_sock_peer_addr().map(str::to_owned),
        ),
        ("db.system", peer.db_system().map(str::to_owned)),
        ("db.system.name", peer.db_system_name().map(str::to_owned)),
        ("db.namespace", peer.db_namespace().map(str::to_owned)),
        ("db.name", peer.db_name().map(str::to_owned)),
        (
            "messaging.system",
            peer.messaging_system().map(str::to_owned),
        ),
        (
            "messaging.destination.name",
            peer.messaging_destination_name().map(str::to_owned),
        ),
        ("rpc.service", peer.rpc_service().map(str::to_owned)),
        ("http.route", peer.http_route().map(str::to_owned)),
        ("http.request.method", peer.http_method().map(str::to_owned)),
    ] {
        if let Some(value) = value {
            attributes.push((key.to_owned(), value));
        }
    }
    if span.resend_count > 0 {
        attributes.push((
            "http.request.resend_count".to_owned(),
            span.resend_count.to_string(),
        ));
    }
    let kind = match span.kind {
        SpanKind::Unspecified => "Unspecified",
        SpanKind::Internal => "Internal",
        SpanKind::Server => "Server",
        SpanKind::Client => "Client",
        SpanKind::Producer => "Producer",
        SpanKind::Consumer => "Consumer",
    };
    let status = match span.status {
        StatusCode::Unset => "Unset",
        StatusCode::Ok => "Ok",
        StatusCode::Error => "Error",
    };
    OtelSpan {
        timestamp: span.start_ns,
        trace_id: hex::encode(span.trace_id),
        span_id: hex::encode(span.span_id),
        parent_span_id: span.parent_span_id.map(hex::encode).unwrap_or_default(),
        trace_state: span.detail.trace_state.clone(),
        span_name: span.name.clone(),
        span_kind: if legacy {
            format!("SPAN_KIND_{}", kind.to_uppercase())
        } else {
            kind.to_owned()
        },
        service_name,
        resource_attributes: resource,
        scope_name: span.detail.scope_name.to_string(),
        scope_version: span.detail.scope_version.to_string(),
        span_attributes: attributes,
        duration: (span.end_ns - span.start_ns).max(0) as u64,
        status_code: if legacy {
            format!("STATUS_CODE_{}", status.to_uppercase())
        } else {
            status.to_owned()
        },
        status_message: span.detail.status_message.clone(),
        link_trace_ids: span.links.iter().map(|l| hex::encode(l.trace_id)).collect(),
        link_span_ids: span.links.iter().map(|l| hex::encode(l.span_id)).collect(),
        link_trace_states: span.links.iter().map(|_| String::new()).collect(),
        link_attributes: span
            .links
            .iter()
            .map(|l| attribute_map(&l.attributes_json))
            .collect(),
    }
}
