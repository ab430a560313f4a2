//! OTLP/JSON (`ExportTraceServiceRequest` in the protobuf JSON mapping) to the protobuf types.
//!
//! The OTLP spec writes trace and span ids as hex, but protobuf's generic JSON mapping writes
//! bytes as base64 and real tools emit both, so both are accepted. 64-bit integers may be JSON
//! numbers or strings, enums may be numbers or their names; unknown fields are ignored, as the
//! spec asks of receivers.

use base64::Engine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Writes a request as OTLP/JSON with hex ids, through opentelemetry-proto's own serde mapping
/// (an implementation independent of [`decode`], which keeps round-trip tests honest).
pub fn encode(request: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(request).expect("protobuf messages serialize to JSON")
}

/// Parses one OTLP/JSON request.
pub fn decode(bytes: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let request: JsonRequest = serde_json::from_slice(bytes)?;
    Ok(request.into_proto())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsonRequest {
    #[serde(default, alias = "resource_spans")]
    resource_spans: Vec<JsonResourceSpans>,
}

impl JsonRequest {
    pub(crate) fn into_proto(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self
                .resource_spans
                .into_iter()
                .map(JsonResourceSpans::into_proto)
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonResourceSpans {
    #[serde(default)]
    resource: Option<JsonResource>,
    #[serde(default, alias = "scope_spans", alias = "instrumentationLibrarySpans")]
    scope_spans: Vec<JsonScopeSpans>,
    #[serde(default, alias = "schema_url")]
    schema_url: String,
}

impl JsonResourceSpans {
    fn into_proto(self) -> ResourceSpans {
        ResourceSpans {
            resource: self.resource.map(|r| Resource {
                attributes: key_values(r.attributes),
                dropped_attributes_count: r.dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
            scope_spans: self
                .scope_spans
                .into_iter()
                .map(JsonScopeSpans::into_proto)
                .collect(),
            schema_url: self.schema_url,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonResource {
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default, alias = "dropped_attributes_count")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonScopeSpans {
    #[serde(default, alias = "instrumentationLibrary")]
    scope: Option<JsonScope>,
    #[serde(default)]
    spans: Vec<JsonSpan>,
    #[serde(default, alias = "schema_url")]
    schema_url: String,
}

impl JsonScopeSpans {
    fn into_proto(self) -> ScopeSpans {
        ScopeSpans {
            scope: self.scope.map(|s| InstrumentationScope {
                name: s.name,
                version: s.version,
                attributes: key_values(s.attributes),
                dropped_attributes_count: s.dropped_attributes_count,
            }),
            spans: self.spans.into_iter().map(JsonSpan::into_proto).collect(),
            schema_url: self.schema_url,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonScope {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default, alias = "dropped_attributes_count")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSpan {
    #[serde(default, alias = "trace_id", deserialize_with = "id_bytes")]
    trace_id: Vec<u8>,
    #[serde(default, alias = "span_id", deserialize_with = "id_bytes")]
    span_id: Vec<u8>,
    #[serde(default, alias = "trace_state")]
    trace_state: String,
    #[serde(default, alias = "parent_span_id", deserialize_with = "id_bytes")]
    parent_span_id: Vec<u8>,
    #[serde(default, deserialize_with = "flexible_u64")]
    flags: u64,
    #[serde(default)]
    name: String,
    #[serde(default, deserialize_with = "span_kind")]
    kind: i32,
    #[serde(
        default,
        alias = "start_time_unix_nano",
        deserialize_with = "flexible_u64"
    )]
    start_time_unix_nano: u64,
    #[serde(
        default,
        alias = "end_time_unix_nano",
        deserialize_with = "flexible_u64"
    )]
    end_time_unix_nano: u64,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default, alias = "dropped_attributes_count")]
    dropped_attributes_count: u32,
    #[serde(default)]
    events: Vec<JsonEvent>,
    #[serde(default, alias = "dropped_events_count")]
    dropped_events_count: u32,
    #[serde(default)]
    links: Vec<JsonLink>,
    #[serde(default, alias = "dropped_links_count")]
    dropped_links_count: u32,
    #[serde(default)]
    status: Option<JsonStatus>,
}

impl JsonSpan {
    fn into_proto(self) -> Span {
        Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            trace_state: self.trace_state,
            parent_span_id: self.parent_span_id,
            flags: u32::try_from(self.flags).unwrap_or(0),
            name: self.name,
            kind: self.kind,
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
            attributes: key_values(self.attributes),
            dropped_attributes_count: self.dropped_attributes_count,
            events: self
                .events
                .into_iter()
                .map(|e| span::Event {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name,
                    attributes: key_values(e.attributes),
                    dropped_attributes_count: e.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: self.dropped_events_count,
            links: self
                .links
                .into_iter()
                .map(|l| span::Link {
                    trace_id: l.trace_id,
                    span_id: l.span_id,
                    trace_state: l.trace_state,
                    attributes: key_values(l.attributes),
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: u32::try_from(l.flags).unwrap_or(0),
                })
                .collect(),
            dropped_links_count: self.dropped_links_count,
            status: self.status.map(|s| Status {
                message: s.message,
                code: s.code,
            }),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEvent {
    #[serde(default, alias = "time_unix_nano", deserialize_with = "flexible_u64")]
    time_unix_nano: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default, alias = "dropped_attributes_count")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonLink {
    #[serde(default, alias = "trace_id", deserialize_with = "id_bytes")]
    trace_id: Vec<u8>,
    #[serde(default, alias = "span_id", deserialize_with = "id_bytes")]
    span_id: Vec<u8>,
    #[serde(default, alias = "trace_state")]
    trace_state: String,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default, alias = "dropped_attributes_count")]
    dropped_attributes_count: u32,
    #[serde(default, deserialize_with = "flexible_u64")]
    flags: u64,
}

#[derive(Deserialize)]
struct JsonStatus {
    #[serde(default)]
    message: String,
    #[serde(default, deserialize_with = "status_code")]
    code: i32,
}

#[derive(Deserialize)]
struct JsonKeyValue {
    key: String,
    #[serde(default)]
    value: Option<JsonAnyValue>,
}

fn key_values(list: Vec<JsonKeyValue>) -> Vec<KeyValue> {
    list.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(JsonAnyValue::into_proto),
            key_strindex: 0,
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonAnyValue {
    #[serde(default, alias = "string_value")]
    string_value: Option<String>,
    #[serde(default, alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(default, alias = "int_value", deserialize_with = "optional_i64")]
    int_value: Option<i64>,
    #[serde(default, alias = "double_value", deserialize_with = "optional_f64")]
    double_value: Option<f64>,
    #[serde(default, alias = "array_value")]
    array_value: Option<JsonValues<JsonAnyValue>>,
    #[serde(default, alias = "kvlist_value")]
    kvlist_value: Option<JsonValues<JsonKeyValue>>,
    #[serde(default, alias = "bytes_value")]
    bytes_value: Option<String>,
}

#[derive(Deserialize)]
struct JsonValues<T> {
    #[serde(default = "Vec::new")]
    values: Vec<T>,
}

impl JsonAnyValue {
    fn into_proto(self) -> AnyValue {
        use any_value::Value;
        let value = if let Some(s) = self.string_value {
            Some(Value::StringValue(s))
        } else if let Some(b) = self.bool_value {
            Some(Value::BoolValue(b))
        } else if let Some(i) = self.int_value {
            Some(Value::IntValue(i))
        } else if let Some(d) = self.double_value {
            Some(Value::DoubleValue(d))
        } else if let Some(array) = self.array_value {
            Some(Value::ArrayValue(ArrayValue {
                values: array.values.into_iter().map(Self::into_proto).collect(),
            }))
        } else if let Some(list) = self.kvlist_value {
            Some(Value::KvlistValue(KeyValueList {
                values: key_values(list.values),
            }))
        } else {
            self.bytes_value.map(|b| {
                // Undecodable base64 is kept as the text it was rather than dropped.
                match base64::engine::general_purpose::STANDARD.decode(b.as_bytes()) {
                    Ok(bytes) => Value::BytesValue(bytes),
                    Err(_) => Value::StringValue(b),
                }
            })
        };
        AnyValue { value }
    }
}

/// Decodes an id written as hex (the OTLP spec) or base64 (protobuf's JSON mapping). An id that
/// is neither is kept as its raw text, so that conversion rejects that one span with a message
/// about its length instead of failing the whole request.
pub(crate) fn decode_id(text: &str) -> Vec<u8> {
    if text.is_empty() {
        return Vec::new();
    }
    if text.len().is_multiple_of(2) {
        if let Ok(bytes) = hex::decode(text) {
            return bytes;
        }
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}

fn id_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.map(|t| decode_id(&t)).unwrap_or_default())
}

/// A protobuf 64-bit integer: JSON number or decimal string.
struct IntegerVisitor;

impl<'de> Visitor<'de> for IntegerVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer or a string holding one")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
        if v.fract() == 0.0 && v.is_finite() {
            Ok(v as i128)
        } else {
            Err(E::custom(format!("expected an integer, found {v}")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom(format!("expected an integer, found {v:?}")))
    }
}

fn flexible_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = deserializer.deserialize_any(IntegerVisitor)?;
    u64::try_from(value).map_err(|_| de::Error::custom(format!("{value} is out of range")))
}

fn optional_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let value = deserializer.deserialize_any(IntegerVisitor)?;
    i64::try_from(value)
        .map(Some)
        .map_err(|_| de::Error::custom(format!("{value} is out of range")))
}

fn optional_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    struct DoubleVisitor;
    impl Visitor<'_> for DoubleVisitor {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number, or \"NaN\", \"Infinity\", \"-Infinity\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => other
                    .parse()
                    .map_err(|_| E::custom(format!("expected a number, found {other:?}"))),
            }
        }
    }
    deserializer.deserialize_any(DoubleVisitor).map(Some)
}

/// An enum written as its number or as its name (`"SPAN_KIND_SERVER"`).
fn enum_value<'de, D: Deserializer<'de>>(
    deserializer: D,
    names: &'static [&'static str],
) -> Result<i32, D::Error> {
    struct EnumVisitor(&'static [&'static str]);
    impl Visitor<'_> for EnumVisitor {
        type Value = i32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a number or one of {:?}", self.0)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
            self.0
                .iter()
                .position(|name| *name == v)
                .map(|index| index as i32)
                .ok_or_else(|| E::custom(format!("unknown enum value {v:?}")))
        }
    }
    deserializer.deserialize_any(EnumVisitor(names))
}

fn span_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    enum_value(
        deserializer,
        &[
            "SPAN_KIND_UNSPECIFIED",
            "SPAN_KIND_INTERNAL",
            "SPAN_KIND_SERVER",
            "SPAN_KIND_CLIENT",
            "SPAN_KIND_PRODUCER",
            "SPAN_KIND_CONSUMER",
        ],
    )
}

fn status_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    enum_value(
        deserializer,
        &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_hex_or_base64() {
        let hex = decode_id("5b8efff798038103d269b633813fc60c");
        let base64 = decode_id("W47/95gDgQPSabYzgT/GDA==");
        assert_eq!(hex.len(), 16);
        assert_eq!(hex, base64);
        assert_eq!(decode_id("eee19b7ec3c1b174"), decode_id("7uGbfsPBsXQ="));
    }

    #[test]
    fn an_id_that_is_neither_hex_nor_base64_keeps_its_text() {
        assert_eq!(decode_id("not an id!"), b"not an id!".to_vec());
    }

    #[test]
    fn integers_and_enums_accept_both_spellings() {
        let request = decode(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
                {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
                 "kind":"SPAN_KIND_CLIENT","startTimeUnixNano":"1544712660000000000",
                 "endTimeUnixNano":1544712661000000000,"status":{"code":2},
                 "attributes":[{"key":"n","value":{"intValue":"42"}},
                               {"key":"d","value":{"doubleValue":"NaN"}}]},
                {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175",
                 "kind":2,"status":{"code":"STATUS_CODE_OK"}}]}]}]}"#,
        )
        .unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].kind, 3);
        assert_eq!(spans[0].start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(spans[0].end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(spans[0].status.as_ref().unwrap().code, 2);
        assert_eq!(
            spans[0].attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
        assert_eq!(spans[1].kind, 2);
        assert_eq!(spans[1].status.as_ref().unwrap().code, 1);
    }

    #[test]
    fn malformed_json_names_the_position() {
        let err = decode(br#"{"resourceSpans": [ {"scopeSpans": 5} ]}"#).unwrap_err();
        assert!(err.to_string().contains("column"), "{err}");
    }
}
