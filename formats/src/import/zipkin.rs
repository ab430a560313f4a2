//! Zipkin v2 JSON (a span array, as `POST /api/v2/spans` and the Zipkin UI write it) to OTLP,
//! mapped as the OpenTelemetry Collector's Zipkin receiver does: `localEndpoint.serviceName` →
//! `service.name`, `remoteEndpoint.serviceName` → `peer.service`, remote address and port →
//! `network.peer.*`, the `error` tag → error status.
//!
//! Zipkin lets the client and server halves of one RPC share a span id. Such a server half is
//! given an id of its own and becomes a child of the client half, and the spans under it are
//! moved below it (as Jaeger's span-id uniquifier does), so that every RPC is one client span
//! and one server span. That needs the whole trace, so spans are grouped by trace first.
//! Pieces of one span (same id and local service, kinds agreeing) are merged first, as Zipkin
//! itself does.

use std::collections::{BTreeMap, HashMap, HashSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::ids::{span_id_bytes, trace_id_bytes};
use crate::otlp::{int_attribute, resource_spans, string_attribute};

#[derive(Deserialize)]
pub struct ZipkinSpan {
    #[serde(rename = "traceId")]
    trace_id: String,
    id: String,
    #[serde(rename = "parentId", default)]
    parent_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(rename = "localEndpoint", default)]
    local_endpoint: Option<Endpoint>,
    #[serde(rename = "remoteEndpoint", default)]
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    tags: Option<BTreeMap<String, serde_json::Value>>,
    // `shared: true` is not read: a server span is split exactly when a client span of the
    // same trace uses its id, which is what the flag announces (and old files omit it).
}

impl ZipkinSpan {
    /// The 128-bit trace id the span will get, used to group spans by trace.
    pub fn trace_key(&self) -> Vec<u8> {
        trace_id_bytes(&self.trace_id)
    }
}

#[derive(Deserialize, Default)]
struct Endpoint {
    #[serde(rename = "serviceName", default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

fn kind_of(span: &ZipkinSpan) -> span::SpanKind {
    match span.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("CLIENT") => span::SpanKind::Client,
        Some("SERVER") => span::SpanKind::Server,
        Some("PRODUCER") => span::SpanKind::Producer,
        Some("CONSUMER") => span::SpanKind::Consumer,
        // As in Zipkin: a span without a kind that names a remote endpoint is a client call.
        _ if span.remote_endpoint.is_some() => span::SpanKind::Client,
        _ => span::SpanKind::Internal,
    }
}

fn service_of(span: &ZipkinSpan) -> String {
    span.local_endpoint
        .as_ref()
        .and_then(|e| e.service_name.clone())
        .unwrap_or_default()
}

/// A derived id for a split server half: stable, non-zero and not used elsewhere in the trace.
fn derived_span_id(shared: &[u8], taken: &HashSet<Vec<u8>>) -> Vec<u8> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut salt = 0u8;
    loop {
        for byte in shared.iter().chain(b"server").chain([salt].iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let id = hash.to_be_bytes().to_vec();
        if hash != 0 && !taken.contains(&id) {
            return id;
        }
        salt = salt.wrapping_add(1);
    }
}

/// Merges the fragments of one span, as Zipkin does: entries with the same id and local service
/// whose kinds agree (or that have none) are one span, reported in pieces.
fn merge_fragments(spans: Vec<ZipkinSpan>) -> Vec<ZipkinSpan> {
    let mut merged: Vec<ZipkinSpan> = Vec::with_capacity(spans.len());
    let mut index: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for span in spans {
        let key = (span.id.clone(), service_of(&span));
        let slots = index.entry(key).or_default();
        let compatible = slots.iter().copied().find(|&i| {
            let other = &merged[i];
            other.kind.is_none()
                || span.kind.is_none()
                || other.kind.as_deref().map(str::to_ascii_uppercase)
                    == span.kind.as_deref().map(str::to_ascii_uppercase)
        });
        match compatible {
            Some(i) => absorb(&mut merged[i], span),
            None => {
                slots.push(merged.len());
                merged.push(span);
            }
        }
    }
    merged
}

fn absorb(into: &mut ZipkinSpan, piece: ZipkinSpan) {
    let end = |s: &ZipkinSpan| s.timestamp.map(|t| t + s.duration.unwrap_or(0));
    let latest_end = end(into).max(end(&piece));
    into.timestamp = match (into.timestamp, piece.timestamp) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let (Some(start), Some(finish)) = (into.timestamp, latest_end) {
        into.duration = Some(finish - start);
    }
    into.kind = into.kind.take().or(piece.kind);
    into.parent_id = into.parent_id.take().or(piece.parent_id);
    if into.name.as_deref().is_none_or(str::is_empty) {
        into.name = piece.name;
    }
    into.remote_endpoint = into.remote_endpoint.take().or(piece.remote_endpoint);
    into.local_endpoint = into.local_endpoint.take().or(piece.local_endpoint);
    if let Some(more) = piece.annotations {
        into.annotations.get_or_insert_with(Vec::new).extend(more);
    }
    if let Some(more) = piece.tags {
        let tags = into.tags.get_or_insert_with(BTreeMap::new);
        for (key, value) in more {
            tags.entry(key).or_insert(value);
        }
    }
}

/// Converts the spans of one trace.
pub fn trace_to_otlp(spans: Vec<ZipkinSpan>) -> ExportTraceServiceRequest {
    let mut converted: Vec<(String, Span)> = merge_fragments(spans)
        .into_iter()
        .map(|zipkin| {
            let service = service_of(&zipkin);
            (service, convert_span(zipkin))
        })
        .collect();
    split_shared_spans(&mut converted);

    let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
    for (service, span) in converted {
        match by_service.iter_mut().find(|(name, _)| *name == service) {
            Some((_, spans)) => spans.push(span),
            None => by_service.push((service, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| {
                let attributes = if service.is_empty() {
                    Vec::new()
                } else {
                    vec![string_attribute("service.name", service)]
                };
                resource_spans(attributes, spans)
            })
            .collect(),
    }
}

/// Gives each server half that shares its id with a client half an id of its own, below the
/// client half, and moves the shared span's children below the server half: in Zipkin's model
/// a shared span's children are the server side's work (as Jaeger's uniquifier also assumes),
/// whatever service names they report.
fn split_shared_spans(spans: &mut [(String, Span)]) {
    let client_ids: HashSet<Vec<u8>> = spans
        .iter()
        .filter(|(_, s)| s.kind == span::SpanKind::Client as i32)
        .map(|(_, s)| s.span_id.clone())
        .collect();
    let mut taken: HashSet<Vec<u8>> = spans.iter().map(|(_, s)| s.span_id.clone()).collect();
    // shared id -> the server half's new id
    let mut renamed: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (_, span) in spans.iter_mut() {
        if span.kind == span::SpanKind::Server as i32
            && client_ids.contains(&span.span_id)
            && !renamed.contains_key(&span.span_id)
        {
            let new_id = derived_span_id(&span.span_id, &taken);
            taken.insert(new_id.clone());
            let shared = std::mem::replace(&mut span.span_id, new_id.clone());
            span.parent_span_id = shared.clone();
            renamed.insert(shared, new_id);
        }
    }
    if renamed.is_empty() {
        return;
    }
    for (_, span) in spans.iter_mut() {
        if let Some(new_id) = renamed.get(&span.parent_span_id) {
            if span.span_id != *new_id {
                span.parent_span_id = new_id.clone();
            }
        }
    }
}

fn convert_span(zipkin: ZipkinSpan) -> Span {
    let kind = kind_of(&zipkin);
    let mut attributes = Vec::new();
    let mut status_code = status::StatusCode::Unset;
    let mut status_message = String::new();
    if let Some(remote) = &zipkin.remote_endpoint {
        if let Some(name) = remote.service_name.as_ref().filter(|n| !n.is_empty()) {
            attributes.push(string_attribute("peer.service", name.clone()));
        }
        if let Some(address) = remote.ipv4.as_ref().or(remote.ipv6.as_ref()) {
            attributes.push(string_attribute("network.peer.address", address.clone()));
        }
        if let Some(port) = remote.port {
            attributes.push(int_attribute("network.peer.port", i64::from(port)));
        }
    }
    if let Some(local) = &zipkin.local_endpoint {
        if let Some(address) = local.ipv4.as_ref().or(local.ipv6.as_ref()) {
            attributes.push(string_attribute("network.local.address", address.clone()));
        }
        if let Some(port) = local.port {
            attributes.push(int_attribute("network.local.port", i64::from(port)));
        }
    }
    for (key, value) in zipkin.tags.into_iter().flatten() {
        let text = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        match key.as_str() {
            // Zipkin's error tag holds the message; any value, even empty, means failure.
            "error" => {
                status_code = status::StatusCode::Error;
                status_message = text;
            }
            "otel.status_code" => match text.as_str() {
                "ERROR" => status_code = status::StatusCode::Error,
                "OK" => status_code = status::StatusCode::Ok,
                _ => {}
            },
            "otel.status_description" => status_message = text,
            _ => attributes.push(string_attribute(&key, text)),
        }
    }
    let start = zipkin.timestamp.unwrap_or(0).saturating_mul(1_000);
    Span {
        trace_id: trace_id_bytes(&zipkin.trace_id),
        span_id: span_id_bytes(&zipkin.id),
        parent_span_id: zipkin
            .parent_id
            .as_deref()
            .map(span_id_bytes)
            .unwrap_or_default(),
        name: zipkin.name.unwrap_or_default(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start
            .saturating_add(zipkin.duration.unwrap_or(0).saturating_mul(1_000)),
        attributes,
        events: (0..zipkin.annotations.map_or(0, |a| a.len()))
            .map(|_| span::Event::default())
            .collect(),
        status: (status_code != status::StatusCode::Unset).then_some(Status {
            code: status_code as i32,
            message: status_message,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Vec<ZipkinSpan> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_shared_server_half_becomes_a_child_of_its_client_half() {
        let request = trace_to_otlp(parse(
            r#"[
            {"traceId":"1","id":"a","kind":"SERVER","name":"root","localEndpoint":{"serviceName":"web"}},
            {"traceId":"1","parentId":"a","id":"b","kind":"CLIENT","name":"call","localEndpoint":{"serviceName":"web"}},
            {"traceId":"1","parentId":"a","id":"b","kind":"SERVER","shared":true,"name":"call","localEndpoint":{"serviceName":"api"}},
            {"traceId":"1","parentId":"b","id":"c","kind":"CLIENT","name":"db","localEndpoint":{"serviceName":"api"},"remoteEndpoint":{"serviceName":"mysql"}}
            ]"#,
        ));
        let spans: Vec<&Span> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let client = spans
            .iter()
            .find(|s| s.kind == span::SpanKind::Client as i32 && s.name == "call")
            .unwrap();
        let server = spans
            .iter()
            .find(|s| s.kind == span::SpanKind::Server as i32 && s.name == "call")
            .unwrap();
        let db = spans.iter().find(|s| s.name == "db").unwrap();
        assert_eq!(client.span_id, span_id_bytes("b"));
        assert_ne!(server.span_id, client.span_id);
        assert_eq!(
            server.parent_span_id, client.span_id,
            "server half below client half"
        );
        assert_eq!(
            db.parent_span_id, server.span_id,
            "the shared span's children move below the server half"
        );
    }

    #[test]
    fn fragments_of_one_span_are_merged() {
        let request = trace_to_otlp(parse(
            r#"[
            {"traceId":"1","parentId":"a","id":"b","name":"post","localEndpoint":{"serviceName":"api"},"tags":{"x":"1"}},
            {"traceId":"1","parentId":"a","id":"b","kind":"SERVER","name":"post","timestamp":10,"duration":5,"localEndpoint":{"serviceName":"api"},"tags":{"y":"2"}},
            {"traceId":"1","parentId":"a","id":"b","kind":"CLIENT","name":"post","timestamp":8,"duration":9,"localEndpoint":{"serviceName":"web"}}
            ]"#,
        ));
        let spans: Vec<&Span> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(
            spans.len(),
            2,
            "the kind-less piece belongs to the server half"
        );
        let server = spans
            .iter()
            .find(|s| s.kind == span::SpanKind::Server as i32)
            .unwrap();
        let keys: Vec<&str> = server.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["x", "y"]);
        assert_eq!(
            (server.start_time_unix_nano, server.end_time_unix_nano),
            (10_000, 15_000)
        );
    }

    #[test]
    fn a_span_without_kind_naming_a_remote_endpoint_is_a_client() {
        let request = trace_to_otlp(parse(
            r#"[{"traceId":"1","id":"a","name":"q","remoteEndpoint":{"serviceName":"redis","ipv4":"10.0.0.1","port":6379},"tags":{"error":"timeout"}}]"#,
        ));
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(span.status.as_ref().unwrap().message, "timeout");
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            ["peer.service", "network.peer.address", "network.peer.port"]
        );
    }
}
