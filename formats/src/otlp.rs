//! OTLP trace requests to archtrace's span model. Every transport (gRPC, HTTP protobuf, HTTP
//! JSON, file import) ends here, so a span means the same thing whichever way it came.

use std::sync::Arc;

use archtrace_analyzer::sampling::{self, JaegerSampler};
use archtrace_analyzer::span::{service_node_name, OptionalDetail, SpanDetail};
use archtrace_analyzer::{
    Link, PeerAttributes, PeerKey, Span, SpanId, SpanKind, StatusCode, TraceId,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan};

use prost::Message;

use crate::json::{push_json_string, write_value};

#[cfg(test)]
mod equivalence;
#[cfg(test)]
mod reference;
pub(crate) mod wire;

pub use wire::WireError;
use wire::{Depth, Value};

/// `google.rpc.Status`, the body of OTLP/HTTP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

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
                let checked = span_ids(&span.trace_id, &span.span_id, &span.parent_span_id);
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

/// A span's own ids: trace, span and parent (`None` for a root), checked.
fn span_ids(
    trace: &[u8],
    span: &[u8],
    parent: &[u8],
) -> Result<(TraceId, SpanId, Option<SpanId>), String> {
    let span_trace_id = trace_id(trace, "trace_id")?;
    let own_span_id = span_id(span, "span_id")?;
    let parent_span_id = if parent.is_empty() {
        None
    } else {
        // Some exporters write eight zero bytes for "no parent"; the spec means the same.
        let parent = span_id_or_zero(parent, "parent_span_id")?;
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

/// Converts a decoded request's valid spans onto the end of `spans`. Conversion reads protobuf
/// bytes, so the request is encoded first: decoded requests come from files and OTLP/JSON,
/// where decoding costs far more than encoding.
pub fn convert_into(
    mut request: ExportTraceServiceRequest,
    conversion: &Conversion,
    spans: &mut Vec<Span>,
) -> Rejections {
    let encoded = request.encode_to_vec();
    convert_encoded(&encoded, conversion, spans).unwrap_or_else(|_| {
        // Only values nested deeper than the reader takes (from OTLP/JSON, whose parser allows
        // more, or built by hand) get here.
        flatten_deep_values(&mut request);
        convert_encoded(&request.encode_to_vec(), conversion, spans).unwrap_or_else(|err| {
            let mut rejections = Rejections::default();
            for _ in 0..span_count(&request) {
                rejections.reject(|| format!("the request cannot be converted: {err}"));
            }
            rejections
        })
    })
}

/// [`convert_encoded`] for any request prost decodes: one with values nested deeper than the
/// reader takes is converted from its decoded form, with its deepest values as JSON text. Files
/// from other tools may nest that deep, and so may requests an archtrace logged before its
/// receivers read requests in place (they took what prost takes): such requests still in a log
/// at an upgrade are not dropped.
pub fn convert_decodable(
    request: &[u8],
    conversion: &Conversion,
    spans: &mut Vec<Span>,
) -> Result<Rejections, WireError> {
    convert_encoded(request, conversion, spans).or_else(|err| {
        let mut decoded = ExportTraceServiceRequest::decode(request).map_err(|_| err)?;
        flatten_deep_values(&mut decoded);
        convert_encoded(&decoded.encode_to_vec(), conversion, spans)
    })
}

/// Values nest at most this deep once flattened: well within what the reader takes.
const FLATTENED_DEPTH: u32 = 16;

/// Replaces every attribute value nested deeper than [`FLATTENED_DEPTH`] with its JSON text.
fn flatten_deep_values(request: &mut ExportTraceServiceRequest) {
    fn flatten_attributes(attributes: &mut [KeyValue]) {
        for attribute in attributes {
            if let Some(value) = &mut attribute.value {
                flatten(value, 0);
            }
        }
    }
    fn flatten(value: &mut AnyValue, depth: u32) {
        let nested: Vec<&mut AnyValue> = match &mut value.value {
            Some(any_value::Value::ArrayValue(array)) => array.values.iter_mut().collect(),
            Some(any_value::Value::KvlistValue(list)) => list
                .values
                .iter_mut()
                .filter_map(|pair| pair.value.as_mut())
                .collect(),
            _ => return,
        };
        if depth < FLATTENED_DEPTH {
            for value in nested {
                flatten(value, depth + 1);
            }
            return;
        }
        let encoded = value.encode_to_vec();
        let mut text = String::new();
        // prost decoded it, so it is well formed, and `Checked` reads it without a depth limit.
        if let Ok(read) = wire::any_value(&encoded, Depth::Checked) {
            write_value(&mut text, read);
        }
        value.value = Some(any_value::Value::StringValue(text));
    }
    for resource_spans in &mut request.resource_spans {
        if let Some(resource) = &mut resource_spans.resource {
            flatten_attributes(&mut resource.attributes);
        }
        for scope_spans in &mut resource_spans.scope_spans {
            if let Some(scope) = &mut scope_spans.scope {
                flatten_attributes(&mut scope.attributes);
            }
            for span in &mut scope_spans.spans {
                flatten_attributes(&mut span.attributes);
                for event in &mut span.events {
                    flatten_attributes(&mut event.attributes);
                }
                for link in &mut span.links {
                    flatten_attributes(&mut link.attributes);
                }
            }
        }
    }
}

/// What [`scan`] found in an encoded request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Spans in the request, valid or not.
    pub spans: u64,
    pub rejections: Rejections,
}

/// Checks an encoded request as decoding it with prost and then [`retain_valid`] would, without
/// building it: what passes with no rejection converts whole with [`convert_encoded`].
pub fn scan(request: &[u8]) -> Result<Scanned, WireError> {
    let mut scan = Scan::default();
    walk(request, &mut scan)?;
    Ok(scan.found)
}

/// Converts an encoded request's valid spans onto the end of `spans`, reading the bytes in
/// place. On an error nothing is added.
pub fn convert_encoded(
    request: &[u8],
    conversion: &Conversion,
    spans: &mut Vec<Span>,
) -> Result<Rejections, WireError> {
    let before = spans.len();
    let mut converter = Converter {
        detail: conversion.detail,
        multiplier_key: conversion.multiplier_key.as_deref(),
        spans,
        rejections: Rejections::default(),
        resource: None,
        scope: Default::default(),
        attributes: Vec::new(),
        links: Vec::new(),
        remaining: Vec::new(),
        peer: Vec::new(),
        json: String::new(),
    };
    match walk(request, &mut converter) {
        Ok(()) => Ok(converter.rejections),
        Err(err) => {
            spans.truncate(before);
            Err(err)
        }
    }
}

/// What [`walk`] shows of a request, in order.
trait Visitor<'a> {
    /// A `ResourceSpans` message, its resource checked, before its spans.
    fn resource(&mut self, resource_spans: &'a [u8]) -> Result<(), WireError>;
    /// The scope of the spans that follow, before them.
    fn scope(&mut self, name: &'a str, version: &'a str);
    fn span(&mut self, place: SpanPlace, span: &'a [u8]) -> Result<(), WireError>;
}

/// Where a span sits in its request, for rejection messages.
#[derive(Clone, Copy)]
struct SpanPlace {
    resource: usize,
    span: usize,
}

/// Walks every resource, scope and span of an encoded request. A resource and a scope may come
/// after the spans they describe, so each message is read twice: for them, then for its spans.
fn walk<'a>(request: &'a [u8], visitor: &mut impl Visitor<'a>) -> Result<(), WireError> {
    let mut resource = 0;
    wire::for_each_field(request, "ExportTraceServiceRequest", |number, field| {
        if number != 1 {
            return Ok(());
        }
        let resource_spans = field.bytes(number)?;
        wire::for_each_field(resource_spans, "ResourceSpans", |number, field| {
            match number {
                1 => wire::check_resource(field.bytes(number)?)?,
                3 => {
                    field.text(number)?;
                }
                _ => {}
            }
            Ok(())
        })?;
        visitor.resource(resource_spans)?;
        wire::for_each_field(resource_spans, "ResourceSpans", |number, field| {
            if number == 2 {
                walk_scope_spans(field.bytes(number)?, resource, visitor)?;
            }
            Ok(())
        })?;
        resource += 1;
        Ok(())
    })
}

fn walk_scope_spans<'a>(
    scope_spans: &'a [u8],
    resource: usize,
    visitor: &mut impl Visitor<'a>,
) -> Result<(), WireError> {
    let (mut name, mut version) = ("", "");
    wire::for_each_field(scope_spans, "ScopeSpans", |number, field| {
        match number {
            // A scope given twice is merged, as prost does: what the later one sets counts.
            1 => {
                let (scope_name, scope_version) = wire::read_scope(field.bytes(number)?)?;
                name = scope_name.unwrap_or(name);
                version = scope_version.unwrap_or(version);
            }
            3 => {
                field.text(number)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    visitor.scope(name, version);
    let mut span = 0;
    wire::for_each_field(scope_spans, "ScopeSpans", |number, field| {
        if number == 2 {
            visitor.span(SpanPlace { resource, span }, field.bytes(number)?)?;
            span += 1;
        }
        Ok(())
    })
}

impl SpanPlace {
    fn reject(self, rejections: &mut Rejections, problem: String) {
        let SpanPlace { resource, span } = self;
        rejections.reject(|| format!("resource_spans[{resource}] span {span}: {problem}"));
    }
}

#[derive(Default)]
struct Scan<'a> {
    found: Scanned,
    attributes: Vec<(&'a str, Value<'a>)>,
    links: Vec<wire::LinkFields<'a>>,
}

impl<'a> Visitor<'a> for Scan<'a> {
    fn resource(&mut self, _: &'a [u8]) -> Result<(), WireError> {
        Ok(())
    }

    fn scope(&mut self, _: &'a str, _: &'a str) {}

    fn span(&mut self, place: SpanPlace, span: &'a [u8]) -> Result<(), WireError> {
        let fields = wire::read_span(span, &mut self.attributes, &mut self.links)?;
        self.found.spans += 1;
        if let Err(problem) = span_ids(fields.trace_id, fields.span_id, fields.parent_span_id) {
            place.reject(&mut self.found.rejections, problem);
        }
        Ok(())
    }
}

/// Converts the spans [`walk`] shows; the vectors are reused from span to span.
struct Converter<'a, 'o> {
    detail: Detail,
    multiplier_key: Option<&'o str>,
    spans: &'o mut Vec<Span>,
    rejections: Rejections,
    resource: Option<ResourceInfo>,
    scope: (Arc<str>, Arc<str>),
    attributes: Vec<(&'a str, Value<'a>)>,
    links: Vec<wire::LinkFields<'a>>,
    /// The attributes not taken into the peer attributes, for the JSON.
    remaining: Vec<(&'a str, Value<'a>)>,
    peer: Vec<(PeerKey, Box<str>)>,
    json: String,
}

impl<'a> Visitor<'a> for Converter<'a, '_> {
    fn resource(&mut self, resource_spans: &'a [u8]) -> Result<(), WireError> {
        self.resource = Some(ResourceInfo::read(
            resource_spans,
            self.detail,
            self.multiplier_key,
        )?);
        Ok(())
    }

    fn scope(&mut self, name: &'a str, version: &'a str) {
        self.scope = match self.detail {
            Detail::Keep => (name.into(), version.into()),
            Detail::Drop => Default::default(),
        };
    }

    fn span(&mut self, place: SpanPlace, message: &'a [u8]) -> Result<(), WireError> {
        let fields = wire::read_span(message, &mut self.attributes, &mut self.links)?;
        let (trace, span, parent) =
            match span_ids(fields.trace_id, fields.span_id, fields.parent_span_id) {
                Ok(ids) => ids,
                Err(problem) => {
                    place.reject(&mut self.rejections, problem);
                    return Ok(());
                }
            };
        let resource = self
            .resource
            .as_ref()
            .expect("walk reads the resource first");
        let mut ports = (None, None);
        let mut evidence = sampling::Evidence {
            trace_state: sampling::trace_state_count(fields.trace_state),
            ..sampling::Evidence::default()
        };
        let mut resend_count = 0;
        self.remaining.clear();
        for &(key, value) in &self.attributes {
            if !take_peer_attribute(&mut self.peer, &mut ports, key, value) {
                note_sampling(&mut evidence, key, value, self.multiplier_key);
                if let Some(count) = resend_count_of(key, value) {
                    resend_count = count;
                }
                self.remaining.push((key, value));
            }
        }
        evidence.multiplier = evidence.multiplier.or(resource.multiplier);
        let keep = self.detail == Detail::Keep;
        let mut peer = PeerAttributes::from_pairs(&mut self.peer);
        (peer.server_port, peer.network_peer_port) = ports;
        let mut attributes_json = String::new();
        if keep {
            // Written where it does not have to grow, then copied once to its exact size: the
            // spans hold these strings while they wait for their traces to complete.
            self.json.clear();
            write_attributes(&mut self.json, self.remaining.iter().copied());
            attributes_json = self.json.as_str().to_owned();
        }
        let mut links = Vec::with_capacity(self.links.len());
        for link in &self.links {
            let (Ok(trace_id), Ok(span_id)) = (
                trace_id(link.trace_id, "link trace_id"),
                span_id(link.span_id, "link span_id"),
            ) else {
                continue;
            };
            let mut attributes_json = String::new();
            if keep {
                let mut attributes = Vec::new();
                wire::for_each_field(link.message, "Link", |number, field| {
                    if number == 4 {
                        attributes.push(wire::key_value(field.bytes(number)?, Depth::Checked)?);
                    }
                    Ok(())
                })?;
                write_attributes(&mut attributes_json, attributes.into_iter());
            }
            links.push(Link {
                trace_id,
                span_id,
                attributes_json,
            });
        }
        self.spans.push(Span {
            trace_id: trace,
            span_id: span,
            parent_span_id: parent,
            service: resource.service.clone(),
            name: fields.name.to_owned(),
            kind: SpanKind::from_otlp(fields.kind),
            start_ns: clamp_time(fields.start_time_unix_nano),
            end_ns: clamp_time(fields.end_time_unix_nano),
            status: StatusCode::from_otlp(fields.status_code),
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
                    trace_state: fields.trace_state.to_owned(),
                    status_message: fields.status_message.to_owned(),
                    scope_name: self.scope.0.clone(),
                    scope_version: self.scope.1.clone(),
                    attributes_json,
                    resource_attributes_json: resource.attributes_json.clone(),
                    resource_id: resource.id,
                    events_count: fields.events,
                }
                .into()
            },
        });
        Ok(())
    }
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
    /// What the spans of a `ResourceSpans` message share: the attributes of its resource (of
    /// all of them, in order, should it hold several: prost merges them).
    fn read(
        resource_spans: &[u8],
        detail: Detail,
        multiplier_key: Option<&str>,
    ) -> Result<Self, WireError> {
        let mut attributes = Vec::new();
        wire::for_each_field(resource_spans, "ResourceSpans", |number, field| {
            if number == 1 {
                wire::for_each_field(field.bytes(number)?, "Resource", |number, field| {
                    if number == 1 {
                        attributes.push(wire::key_value(field.bytes(number)?, Depth::Checked)?);
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        // The first attribute of a key counts, even when it has no value.
        let find = |key: &str| {
            attributes
                .iter()
                .find(|(held, _)| *held == key)
                .and_then(|&(_, value)| string_value(value))
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
            write_attributes(&mut json, attributes.iter().copied());
        }
        let multiplier = multiplier_key.and_then(|key| {
            attributes
                .iter()
                .find(|(held, _)| *held == key)
                .and_then(|&(_, value)| number_value(value))
        });
        Ok(ResourceInfo {
            service: Arc::from(service),
            environment,
            version,
            multiplier,
            id: archtrace_analyzer::span::stable_hash(json.as_bytes()),
            attributes_json: Arc::from(json),
        })
    }
}

/// Reads what an attribute says of the span's sampling, if anything.
fn note_sampling(
    evidence: &mut sampling::Evidence,
    key: &str,
    value: Value<'_>,
    multiplier_key: Option<&str>,
) {
    if value == Value::Empty {
        return;
    }
    match key {
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
fn resend_count_of(key: &str, value: Value<'_>) -> Option<u32> {
    match key {
        "http.request.resend_count" | "http.resend_count" => u32::try_from(int_value(value)?).ok(),
        _ => None,
    }
}

/// A number however it was sent: Jaeger's `const` sampler sends its parameter as a boolean,
/// some SDKs send numbers as strings.
fn number_value(value: Value<'_>) -> Option<f64> {
    match value {
        Value::Double(d) => Some(d),
        Value::Int(i) => Some(i as f64),
        Value::Bool(b) => Some(f64::from(u8::from(b))),
        Value::Text(s) => sampling::parse_number(s),
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

fn string_value(value: Value<'_>) -> Option<String> {
    match value {
        Value::Text(s) => Some(s.to_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

fn int_value(value: Value<'_>) -> Option<i64> {
    match value {
        Value::Int(i) => Some(i),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Takes an attribute the edge derivation reads into `peer` (its texts) or `ports` (server,
/// network peer); false when it is not one.
fn take_peer_attribute(
    peer: &mut Vec<(PeerKey, Box<str>)>,
    ports: &mut (Option<i64>, Option<i64>),
    key: &str,
    value: Value<'_>,
) -> bool {
    if value == Value::Empty {
        return false;
    }
    let key = match key {
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
    let text: Box<str> = match value {
        Value::Text(text) => text.into(),
        other => match string_value(other) {
            Some(text) => text.into_boxed_str(),
            None => return false,
        },
    };
    peer.push((key, text));
    true
}

fn set_int(slot: &mut Option<i64>, value: Value<'_>) -> bool {
    match int_value(value) {
        Some(number) => {
            *slot = Some(number);
            true
        }
        None => false,
    }
}

/// Writes attributes as one JSON object, in the order they came.
fn write_attributes<'a>(out: &mut String, attributes: impl Iterator<Item = (&'a str, Value<'a>)>) {
    out.push('{');
    for (index, (key, value)) in attributes.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_json_string(out, key);
        out.push(':');
        write_value(out, value);
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
