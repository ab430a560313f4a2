//! The conversion as it was done before requests were read from their bytes: prost's decoding,
//! then the decoded request converted. Kept as the reference the byte reader is tested against.

use std::fmt::Write;
use std::sync::Arc;

use archtrace_analyzer::sampling::{self, JaegerSampler};
use archtrace_analyzer::span::{service_node_name, OptionalDetail, SpanDetail};
use archtrace_analyzer::{Link, PeerAttributes, PeerKey, Span, SpanKind, StatusCode};
use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;

use super::{clamp_time, span_id, span_ids, trace_id, Conversion, Detail, Rejections};
use crate::json::push_json_string;

/// Converts a request's valid spans onto the end of `spans`: a span is large, and collecting
/// many requests' spans through vectors of their own would copy each one again.
pub fn convert_into(
    request: ExportTraceServiceRequest,
    conversion: &Conversion,
    spans: &mut Vec<Span>,
) -> Rejections {
    let detail = conversion.detail;
    let multiplier_key = conversion.multiplier_key.as_deref();
    let mut rejections = Rejections::default();
    let mut scratch = Scratch::default();
    for (resource_index, resource_spans) in request.resource_spans.into_iter().enumerate() {
        let attributes = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let resource = ResourceInfo::from_attributes(&attributes, detail, multiplier_key);
        for scope_spans in resource_spans.scope_spans {
            let (scope_name, scope_version): (Arc<str>, Arc<str>) = match scope_spans.scope {
                Some(scope) if detail == Detail::Keep => (scope.name.into(), scope.version.into()),
                _ => Default::default(),
            };
            for (span_index, span) in scope_spans.spans.into_iter().enumerate() {
                let scope = (&scope_name, &scope_version);
                match convert_span(span, &resource, scope, detail, multiplier_key, &mut scratch) {
                    Ok(span) => spans.push(span),
                    Err(problem) => rejections.reject(|| {
                        format!("resource_spans[{resource_index}] span {span_index}: {problem}")
                    }),
                }
            }
        }
    }
    rejections
}

struct ResourceInfo {
    service: Arc<str>,
    environment: Option<Arc<str>>,
    version: Option<Arc<str>>,
    attributes_json: Arc<str>,
    id: u64,
    /// The multiplier attribute's value on the resource.
    multiplier: Option<f64>,
}

impl ResourceInfo {
    fn from_attributes(
        attributes: &[KeyValue],
        detail: Detail,
        multiplier_key: Option<&str>,
    ) -> Self {
        let find = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(string_value)
        };
        let service = service_node_name(
            find("service.name").as_deref(),
            find("service.namespace").as_deref(),
        );
        let environment = find("deployment.environment.name")
            .or_else(|| find("deployment.environment"))
            .map(Arc::from);
        let version = find("service.version").map(Arc::from);
        let mut json = String::new();
        if detail == Detail::Keep {
            write_attributes(&mut json, attributes.iter());
        }
        let multiplier = multiplier_key.and_then(|key| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| number_value(kv.value.as_ref()?))
        });
        ResourceInfo {
            service: Arc::from(service),
            environment,
            version,
            multiplier,
            id: archtrace_analyzer::span::stable_hash(json.as_bytes()),
            attributes_json: Arc::from(json),
        }
    }
}

fn convert_span(
    span: OtlpSpan,
    resource: &ResourceInfo,
    (scope_name, scope_version): (&Arc<str>, &Arc<str>),
    detail: Detail,
    multiplier_key: Option<&str>,
    scratch: &mut Scratch,
) -> Result<Span, String> {
    let (span_trace_id, own_span_id, parent_span_id) =
        span_ids(&span.trace_id, &span.span_id, &span.parent_span_id)?;
    let mut ports = (None, None);
    let mut remaining = Vec::with_capacity(span.attributes.len());
    let mut evidence = sampling::Evidence {
        trace_state: sampling::trace_state_count(&span.trace_state),
        ..sampling::Evidence::default()
    };
    let mut resend_count = 0;
    for kv in &span.attributes {
        if !take_peer_attribute(&mut scratch.peer, &mut ports, kv) {
            note_sampling(&mut evidence, kv, multiplier_key);
            if let Some(count) = resend_count_of(kv) {
                resend_count = count;
            }
            remaining.push(kv);
        }
    }
    evidence.multiplier = evidence.multiplier.or(resource.multiplier);
    let keep = detail == Detail::Keep;
    let mut peer = PeerAttributes::from_pairs(&mut scratch.peer);
    (peer.server_port, peer.network_peer_port) = ports;
    let mut attributes_json = String::new();
    if keep {
        // Written where it does not have to grow, then copied once to its exact size: the
        // spans hold these strings while they wait for their traces to complete.
        scratch.json.clear();
        write_attributes(&mut scratch.json, remaining.into_iter());
        attributes_json = scratch.json.as_str().to_owned();
    }
    let links = span
        .links
        .iter()
        .filter_map(|link| {
            let mut attributes_json = String::new();
            if keep {
                write_attributes(&mut attributes_json, link.attributes.iter());
            }
            Some(Link {
                trace_id: trace_id(&link.trace_id, "link trace_id").ok()?,
                span_id: span_id(&link.span_id, "link span_id").ok()?,
                attributes_json,
            })
        })
        .collect();
    let (status, status_message) = span
        .status
        .map(|s| (StatusCode::from_otlp(s.code), s.message))
        .unwrap_or_default();
    Ok(Span {
        trace_id: span_trace_id,
        span_id: own_span_id,
        parent_span_id,
        service: resource.service.clone(),
        name: span.name,
        kind: SpanKind::from_otlp(span.kind),
        start_ns: clamp_time(span.start_time_unix_nano),
        end_ns: clamp_time(span.end_time_unix_nano),
        status,
        links,
        peer,
        environment: resource.environment.clone(),
        version: resource.version.clone(),
        adjusted_count: sampling::adjusted_count(&evidence),
        resend_count,
        detail: if !keep {
            OptionalDetail::default()
        } else {
            SpanDetail {
                trace_state: span.trace_state,
                status_message,
                scope_name: scope_name.clone(),
                scope_version: scope_version.clone(),
                attributes_json,
                resource_attributes_json: resource.attributes_json.clone(),
                resource_id: resource.id,
                events_count: u32::try_from(span.events.len()).unwrap_or(u32::MAX),
            }
            .into()
        },
    })
}

/// Reads what an attribute says of the span's sampling, if anything.
fn note_sampling(evidence: &mut sampling::Evidence, kv: &KeyValue, multiplier_key: Option<&str>) {
    let Some(value) = kv.value.as_ref() else {
        return;
    };
    match kv.key.as_str() {
        key if Some(key) == multiplier_key => evidence.multiplier = number_value(value),
        "sampler.type" => {
            evidence.jaeger_type = string_value(value).and_then(|t| JaegerSampler::parse(&t));
        }
        "sampler.param" => evidence.jaeger_param = number_value(value),
        "sampling.priority" => evidence.priority = number_value(value),
        _ => {}
    }
}

/// `http.request.resend_count`, or its legacy name; negative or absurd values are ignored.
fn resend_count_of(kv: &KeyValue) -> Option<u32> {
    match kv.key.as_str() {
        "http.request.resend_count" | "http.resend_count" => {
            u32::try_from(int_value(kv.value.as_ref()?)?).ok()
        }
        _ => None,
    }
}

/// A number however it was sent: Jaeger's `const` sampler sends its parameter as a boolean,
/// some SDKs send numbers as strings.
fn number_value(value: &AnyValue) -> Option<f64> {
    match value.value.as_ref()? {
        any_value::Value::DoubleValue(d) => Some(*d),
        any_value::Value::IntValue(i) => Some(*i as f64),
        any_value::Value::BoolValue(b) => Some(f64::from(u8::from(*b))),
        any_value::Value::StringValue(s) => sampling::parse_number(s),
        _ => None,
    }
}

fn string_value(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn int_value(value: &AnyValue) -> Option<i64> {
    match value.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What one conversion reuses from span to span.
#[derive(Default)]
struct Scratch {
    peer: Vec<(PeerKey, Box<str>)>,
    json: String,
}

/// Takes an attribute the edge derivation reads into `peer` (its texts) or `ports` (server,
/// network peer); false when it is not one.
fn take_peer_attribute(
    peer: &mut Vec<(PeerKey, Box<str>)>,
    ports: &mut (Option<i64>, Option<i64>),
    kv: &KeyValue,
) -> bool {
    let Some(value) = kv.value.as_ref() else {
        return false;
    };
    let key = match kv.key.as_str() {
        "server.port" => return set_int(&mut ports.0, value),
        "network.peer.port" => return set_int(&mut ports.1, value),
        "peer.service" => PeerKey::PeerService,
        "server.address" => PeerKey::ServerAddress,
        "network.peer.address" => PeerKey::NetworkPeerAddress,
        "net.peer.name" => PeerKey::NetPeerName,
        "net.sock.peer.addr" => PeerKey::NetSockPeerAddr,
        "db.system" => PeerKey::DbSystem,
        "db.system.name" => PeerKey::DbSystemName,
        "db.namespace" => PeerKey::DbNamespace,
        "db.name" => PeerKey::DbName,
        "messaging.system" => PeerKey::MessagingSystem,
        "messaging.destination.name" => PeerKey::MessagingDestinationName,
        "rpc.service" => PeerKey::RpcService,
        "http.route" => PeerKey::HttpRoute,
        "http.request.method" => PeerKey::HttpMethod,
        // The legacy name only fills in when the current one is absent.
        "http.method" if !peer.iter().any(|(key, _)| *key == PeerKey::HttpMethod) => {
            PeerKey::HttpMethod
        }
        _ => return false,
    };
    match string_value(value) {
        Some(text) => {
            peer.push((key, text.into_boxed_str()));
            true
        }
        None => false,
    }
}

fn set_int(slot: &mut Option<i64>, value: &AnyValue) -> bool {
    match int_value(value) {
        Some(number) => {
            *slot = Some(number);
            true
        }
        None => false,
    }
}

/// Writes attributes as one JSON object, in the order they came.
fn write_attributes<'a>(out: &mut String, attributes: impl Iterator<Item = &'a KeyValue>) {
    out.push('{');
    let mut first = true;
    for kv in attributes {
        if !first {
            out.push(',');
        }
        first = false;
        push_json_string(out, &kv.key);
        out.push(':');
        match &kv.value {
            Some(value) => write_any_value(out, value),
            None => out.push_str("null"),
        }
    }
    out.push('}');
}

fn write_any_value(out: &mut String, value: &AnyValue) {
    let Some(value) = &value.value else {
        out.push_str("null");
        return;
    };
    match value {
        any_value::Value::StringValue(s) => push_json_string(out, s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) if d.is_finite() => {
            let _ = write!(out, "{d:?}");
        }
        // JSON has no NaN or infinity; keep them readable as strings.
        any_value::Value::DoubleValue(d) => push_json_string(out, &d.to_string()),
        any_value::Value::BytesValue(bytes) => push_json_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        any_value::Value::ArrayValue(array) => {
            out.push('[');
            for (index, item) in array.values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_any_value(out, item);
            }
            out.push(']');
        }
        any_value::Value::KvlistValue(list) => {
            out.push('{');
            for (index, kv) in list.values.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_json_string(out, &kv.key);
                out.push(':');
                match &kv.value {
                    Some(v) => write_any_value(out, v),
                    None => out.push_str("null"),
                }
            }
            out.push('}');
        }
        any_value::Value::StringValueStrindex(index) => {
            let _ = write!(out, "{{\"string_index\":{index}}}");
        }
    }
}
