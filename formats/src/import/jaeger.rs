//! Jaeger JSON (the query API's and the UI's "Download JSON": `{"data":[trace, ...]}`, or one
//! trace object) to OTLP, mapped as the OpenTelemetry Collector's Jaeger receiver does:
//! `span.kind` tag → kind, `error=true` → error status, process → resource, 64-bit trace ids
//! widened to 128 bits with leading zeros.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::ids::{span_id_bytes, trace_id_bytes};
use crate::otlp::{resource_spans, string_attribute};

#[derive(Deserialize)]
pub struct JaegerTrace {
    spans: Vec<JaegerSpan>,
    #[serde(default)]
    processes: HashMap<String, JaegerProcess>,
}

#[derive(Deserialize)]
struct JaegerSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    /// Not in the query API's JSON, but in some older exports.
    #[serde(rename = "parentSpanID", default)]
    parent_span_id: Option<String>,
    #[serde(rename = "operationName", default)]
    operation_name: String,
    #[serde(default)]
    references: Option<Vec<JaegerReference>>,
    #[serde(rename = "startTime")]
    start_time_micros: u64,
    #[serde(default)]
    duration: u64,
    #[serde(default)]
    tags: Option<Vec<JaegerTag>>,
    #[serde(default)]
    logs: Option<Vec<IgnoredAny>>,
    #[serde(rename = "processID", default)]
    process_id: Option<String>,
    #[serde(default)]
    process: Option<JaegerProcess>,
}

#[derive(Deserialize)]
struct JaegerReference {
    #[serde(rename = "refType", default)]
    ref_type: String,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize, Clone)]
struct JaegerTag {
    key: String,
    #[serde(rename = "type", default)]
    value_type: Option<String>,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Deserialize, Clone)]
struct JaegerProcess {
    #[serde(rename = "serviceName", default)]
    service_name: String,
    #[serde(default)]
    tags: Option<Vec<JaegerTag>>,
}

fn tag_value(tag: &JaegerTag) -> AnyValue {
    use any_value::Value as V;
    use serde_json::Value as J;
    let value = match (tag.value_type.as_deref(), &tag.value) {
        (Some("bool"), J::Bool(b)) => V::BoolValue(*b),
        (Some("bool"), J::String(s)) => V::BoolValue(s.eq_ignore_ascii_case("true")),
        (Some("int64"), J::Number(n)) if n.as_i64().is_some() => {
            V::IntValue(n.as_i64().unwrap_or(0))
        }
        (Some("int64"), J::String(s)) if s.parse::<i64>().is_ok() => {
            V::IntValue(s.parse().unwrap_or(0))
        }
        (Some("float64"), J::Number(n)) => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        (_, J::String(s)) => V::StringValue(s.clone()),
        (_, J::Bool(b)) => V::BoolValue(*b),
        (_, J::Number(n)) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        (_, J::Null) => return AnyValue { value: None },
        (_, other) => V::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}

fn key_value(tag: &JaegerTag) -> KeyValue {
    KeyValue {
        key: tag.key.clone(),
        value: Some(tag_value(tag)),
        key_strindex: 0,
    }
}

fn is_true(tag: &JaegerTag) -> bool {
    match &tag.value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn span_kind(value: &str) -> span::SpanKind {
    match value.to_ascii_lowercase().as_str() {
        "client" => span::SpanKind::Client,
        "server" => span::SpanKind::Server,
        "producer" => span::SpanKind::Producer,
        "consumer" => span::SpanKind::Consumer,
        "internal" => span::SpanKind::Internal,
        _ => span::SpanKind::Unspecified,
    }
}

/// Converts one trace; spans are grouped into one resource per process.
pub fn to_otlp(trace: JaegerTrace) -> ExportTraceServiceRequest {
    let mut by_process: Vec<(String, JaegerProcess, Vec<Span>)> = Vec::new();
    for jaeger in trace.spans {
        let process_key = jaeger.process_id.clone().unwrap_or_default();
        let process = jaeger
            .process
            .clone()
            .or_else(|| trace.processes.get(&process_key).cloned())
            .unwrap_or(JaegerProcess {
                service_name: String::new(),
                tags: None,
            });
        let span = convert_span(jaeger);
        match by_process
            .iter_mut()
            .find(|(key, p, _)| *key == process_key && p.service_name == process.service_name)
        {
            Some((_, _, spans)) => spans.push(span),
            None => by_process.push((process_key, process, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_process
            .into_iter()
            .map(|(_, process, spans)| {
                let mut attributes = vec![string_attribute("service.name", process.service_name)];
                attributes.extend(process.tags.iter().flatten().map(key_value));
                resource_spans(attributes, spans)
            })
            .collect(),
    }
}

fn convert_span(jaeger: JaegerSpan) -> Span {
    let trace_id = trace_id_bytes(&jaeger.trace_id);
    let mut parent = jaeger
        .parent_span_id
        .as_deref()
        .map(span_id_bytes)
        .filter(|p| p.iter().any(|b| *b != 0));
    let mut links = Vec::new();
    let references = jaeger.references.unwrap_or_default();
    // The parent is the first CHILD_OF reference in the same trace (else the first FOLLOWS_FROM);
    // every other reference becomes a link.
    let parent_index = references
        .iter()
        .position(|r| {
            r.ref_type.eq_ignore_ascii_case("CHILD_OF") && trace_id_bytes(&r.trace_id) == trace_id
        })
        .or_else(|| {
            references
                .iter()
                .position(|r| trace_id_bytes(&r.trace_id) == trace_id)
        });
    for (index, reference) in references.iter().enumerate() {
        if Some(index) == parent_index && parent.is_none() {
            parent = Some(span_id_bytes(&reference.span_id));
        } else {
            links.push(span::Link {
                trace_id: trace_id_bytes(&reference.trace_id),
                span_id: span_id_bytes(&reference.span_id),
                ..Default::default()
            });
        }
    }
    let mut kind = span::SpanKind::Unspecified;
    let mut status_code = status::StatusCode::Unset;
    let mut status_message = String::new();
    let mut attributes = Vec::new();
    for tag in jaeger.tags.iter().flatten() {
        match tag.key.as_str() {
            "span.kind" => kind = span_kind(tag.value.as_str().unwrap_or_default()),
            "error" => {
                if is_true(tag) {
                    status_code = status::StatusCode::Error;
                }
            }
            "otel.status_code" => match tag.value.as_str().unwrap_or_default() {
                "ERROR" => status_code = status::StatusCode::Error,
                "OK" => status_code = status::StatusCode::Ok,
                _ => {}
            },
            "otel.status_description" => {
                status_message = tag.value.as_str().unwrap_or_default().to_owned()
            }
            _ => attributes.push(key_value(tag)),
        }
    }
    let start = jaeger.start_time_micros.saturating_mul(1_000);
    Span {
        trace_id,
        span_id: span_id_bytes(&jaeger.span_id),
        parent_span_id: parent.unwrap_or_default(),
        name: jaeger.operation_name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(jaeger.duration.saturating_mul(1_000)),
        attributes,
        events: (0..jaeger.logs.map_or(0, |logs| logs.len()))
            .map(|_| span::Event::default())
            .collect(),
        links,
        status: (status_code != status::StatusCode::Unset).then_some(Status {
            code: status_code as i32,
            message: status_message,
        }),
        ..Default::default()
    }
}
