//! OTLP trace requests to archtrace's span model. Every transport (gRPC, HTTP protobuf, HTTP
//! JSON, file import) ends here, so a span means the same thing whichever way it came.

use std::sync::Arc;

use archtrace_analyzer::sampling::{self, JaegerSampler};
use archtrace_analyzer::span::{service_node_name, SpanDetail};
use archtrace_analyzer::{
    Link, PeerAttributes, PeerKey, Span, SpanId, SpanKind, StatusCode, TraceId,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan};

use crate::json::{push_json_string, write_any_value};

/// Spans a request carried that failed validation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    pub count: u64,
    /// Why the first rejected span was rejected (OTLP's `partial_success.error_message`).
    pub first: Option<String>,
}

impl Rejections {
    fn reject(&mut self, message: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(message());
        }
    }

    /// The `partial_success` message: the first reason, and how many spans were rejected.
    pub fn summary(&self) -> Option<String> {
        self.first.as_ref().map(|first| {
            if self.count > 1 {
                format!("{} spans rejected; first: {first}", self.count)
            } else {
                format!("1 span rejected: {first}")
            }
        })
    }
}

/// The spans of one request that passed validation, and what was rejected.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<Span>,
    pub rejections: Rejections,
}

/// Drops the spans [`convert`] would reject, so that what is kept (and logged) converts whole.
pub fn retain_valid(request: &mut ExportTraceServiceRequest) -> Rejections {
    let mut rejections = Rejections::default();
    for (resource_index, resource_spans) in request.resource_spans.iter_mut().enumerate() {
        for scope_spans in &mut resource_spans.scope_spans {
            let mut span_index = 0;
            scope_spans.spans.retain(|span| {
                let checked = span_ids(span);
                if let Err(problem) = &checked {
                    rejections.reject(|| {
                        format!("resource_spans[{resource_index}] span {span_index}: {problem}")
                    });
                }
                span_index += 1;
                checked.is_ok()
            });
        }
    }
    rejections
}

/// The span's own ids: trace, span and parent (`None` for a root), checked.
fn span_ids(span: &OtlpSpan) -> Result<(TraceId, SpanId, Option<SpanId>), String> {
    let span_trace_id = trace_id(&span.trace_id, "trace_id")?;
    let own_span_id = span_id(&span.span_id, "span_id")?;
    let parent_span_id = if span.parent_span_id.is_empty() {
        None
    } else {
        // Some exporters write eight zero bytes for "no parent"; the spec means the same.
        let parent = span_id_or_zero(&span.parent_span_id, "parent_span_id")?;
        (parent != [0; 8]).then_some(parent)
    };
    Ok((span_trace_id, own_span_id, parent_span_id))
}

/// A string attribute, for the OTLP that importers, the demo and the load generator build.
pub fn string_attribute(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

pub fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

/// The spans of one resource, in one unnamed scope.
pub fn resource_spans(attributes: Vec<KeyValue>, spans: Vec<OtlpSpan>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

/// Whether a conversion keeps what only the store needs: [`SpanDetail`] and link attributes.
/// Derivation reads none of it, so offline analysis drops it and saves most of the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    Keep,
    Drop,
}

/// How requests are converted: the detail kept, and the attribute that multiplies a span's
/// count when the operator names one (as Tempo's `span_multiplier_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    pub detail: Detail,
    /// Looked up on the span, then on its resource; a number ≥ 1.
    pub multiplier_key: Option<Arc<str>>,
}

impl Conversion {
    pub fn new(detail: Detail) -> Conversion {
        Conversion {
            detail,
            multiplier_key: None,
        }
    }

    pub fn with_multiplier_key(mut self, key: Option<Arc<str>>) -> Conversion {
        self.multiplier_key = key.filter(|key| !key.is_empty());
        self
    }
}

pub fn convert(request: ExportTraceServiceRequest) -> Converted {
    convert_with(request, &Conversion::new(Detail::Keep))
}

/// The spans a request carries, valid or not.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

pub fn convert_with(request: ExportTraceServiceRequest, conversion: &Conversion) -> Converted {
    let mut spans = Vec::new();
    let rejections = convert_into(request, conversion, &mut spans);
    Converted { spans, rejections }
}

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
    spans.reserve(span_count(&request));
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
    let (span_trace_id, own_span_id, parent_span_id) = span_ids(&span)?;
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
            SpanDetail::default()
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
pub fn resend_count_of(kv: &KeyValue) -> Option<u32> {
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

/// Unix nanoseconds fit in i64 until the year 2262; later values are clamped, not wrapped.
fn clamp_time(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

fn trace_id(bytes: &[u8], field: &str) -> Result<TraceId, String> {
    let id: TraceId = bytes.try_into().map_err(|_| {
        format!(
            "invalid {field}: expected 16 bytes (32 hex digits), got {}",
            bytes.len()
        )
    })?;
    if id == [0; 16] {
        return Err(format!("invalid {field}: all zero"));
    }
    Ok(id)
}

fn span_id(bytes: &[u8], field: &str) -> Result<SpanId, String> {
    let id = span_id_or_zero(bytes, field)?;
    if id == [0; 8] {
        return Err(format!("invalid {field}: all zero"));
    }
    Ok(id)
}

fn span_id_or_zero(bytes: &[u8], field: &str) -> Result<SpanId, String> {
    bytes.try_into().map_err(|_| {
        format!(
            "invalid {field}: expected 8 bytes (16 hex digits), got {}",
            bytes.len()
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp_span(id: u8, trace_state: &str, attributes: Vec<KeyValue>) -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            trace_state: trace_state.to_owned(),
            attributes,
            ..Default::default()
        }
    }

    fn adjusted_counts(
        resource: Vec<KeyValue>,
        spans: Vec<OtlpSpan>,
        multiplier_key: Option<&str>,
    ) -> Vec<Option<f64>> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(resource, spans)],
        };
        let conversion =
            Conversion::new(Detail::Drop).with_multiplier_key(multiplier_key.map(Arc::from));
        let converted = convert_with(request, &conversion);
        converted.spans.iter().map(|s| s.adjusted_count).collect()
    }

    #[test]
    fn a_client_span_says_how_often_it_resent_its_request() {
        let spans = vec![
            otlp_span(1, "", vec![int_attribute("http.request.resend_count", 2)]),
            otlp_span(2, "", vec![string_attribute("http.resend_count", "1")]),
            otlp_span(3, "", vec![int_attribute("http.request.resend_count", -4)]),
            otlp_span(4, "", Vec::new()),
        ];
        let request = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(Vec::new(), spans)],
        };
        let converted = convert_with(request, &Conversion::new(Detail::Keep));
        let counts: Vec<u32> = converted.spans.iter().map(|s| s.resend_count).collect();
        assert_eq!(counts, [2, 1, 0, 0], "a negative count is none");
        // The attribute stays with the span's other attributes.
        assert!(converted.spans[0]
            .detail
            .attributes_json
            .contains("\"http.request.resend_count\":2"));
    }

    #[test]
    fn spans_get_the_adjusted_count_their_sampling_information_gives() {
        let double = |key: &str, value: f64| KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(value)),
            }),
            key_strindex: 0,
        };
        let counts = adjusted_counts(
            Vec::new(),
            vec![
                otlp_span(1, "ot=th:c", Vec::new()),
                otlp_span(
                    2,
                    "",
                    vec![
                        string_attribute("sampler.type", "probabilistic"),
                        double("sampler.param", 0.1),
                    ],
                ),
                otlp_span(3, "", vec![int_attribute("sampling.priority", 1)]),
                otlp_span(
                    4,
                    "",
                    vec![string_attribute("sampler.type", "ratelimiting")],
                ),
                otlp_span(5, "", Vec::new()),
            ],
            None,
        );
        assert_eq!(counts[0], Some(4.0));
        assert!((counts[1].unwrap() - 10.0).abs() < 1e-9, "{counts:?}");
        assert_eq!(counts[2..], [Some(1.0), None, None]);
    }

    #[test]
    fn the_multiplier_attribute_is_read_from_the_span_then_its_resource() {
        let resource = vec![string_attribute("sample.weight", "20")];
        let spans = || {
            vec![
                otlp_span(1, "ot=th:c", vec![int_attribute("sample.weight", 50)]),
                otlp_span(2, "ot=th:c", Vec::new()),
            ]
        };
        assert_eq!(
            adjusted_counts(resource.clone(), spans(), Some("sample.weight")),
            [Some(50.0), Some(20.0)]
        );
        // Without the setting the attribute means nothing: the threshold counts.
        assert_eq!(
            adjusted_counts(resource, spans(), None),
            [Some(4.0), Some(4.0)]
        );
    }
}
