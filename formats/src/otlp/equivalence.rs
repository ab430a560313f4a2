//! The byte reader against the reference: prost's decoding, then the conversion of the decoded
//! request. Whatever the bytes, both must accept the same requests and give the same spans.

use std::sync::Arc;

use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status,
};
use prost::Message;

use super::*;

fn value(value: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value,
        key_strindex: 0,
    }
}

/// A request with something of everything conversion reads: every kind of value (nested
/// ones too), peer attributes in current and legacy names, sampling evidence, links, events,
/// statuses, scopes, invalid ids, several resources.
fn varied_request() -> ExportTraceServiceRequest {
    use any_value::Value as V;
    let nested = V::KvlistValue(KeyValueList {
        values: vec![
            attribute(
                "list",
                value(V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(V::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(V::DoubleValue(f64::INFINITY)),
                        },
                        AnyValue { value: None },
                        AnyValue {
                            value: Some(V::BytesValue(vec![0, 255, 7])),
                        },
                    ],
                })),
            ),
            attribute("quote\"d", value(V::StringValue("line\nbreak ☃".into()))),
            attribute("missing", None),
        ],
    });
    let span = |id: u8, kind: i32, attributes: Vec<KeyValue>| OtlpSpan {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: if id == 1 { Vec::new() } else { vec![1; 8] },
        trace_state: if id.is_multiple_of(2) {
            "ot=th:8".into()
        } else {
            String::new()
        },
        name: format!("operation {id}"),
        kind,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id),
        end_time_unix_nano: u64::MAX - u64::from(id),
        attributes,
        events: vec![span::Event::default(); usize::from(id % 3)],
        links: vec![
            span::Link {
                trace_id: vec![9; 16],
                span_id: vec![id; 8],
                attributes: vec![attribute("link.kind", value(V::BoolValue(true)))],
                ..Default::default()
            },
            span::Link {
                trace_id: vec![9; 3],
                span_id: vec![id; 8],
                ..Default::default()
            },
        ],
        status: (id % 2 == 1).then(|| Status {
            message: format!("status {id}"),
            code: i32::from(id % 3),
        }),
        ..Default::default()
    };
    let spans = [
        span(
            1,
            2,
            vec![
                attribute("http.method", value(V::StringValue("GET".into()))),
                attribute("http.request.method", value(V::StringValue("POST".into()))),
                attribute("http.route", value(V::StringValue("/cart/{id}".into()))),
                attribute("server.port", value(V::StringValue(" 8080 ".into()))),
                attribute("sample.weight", value(V::StringValue("12.5".into()))),
                attribute("nested", value(nested)),
                attribute("index", value(V::StringValueStrindex(4))),
            ],
        ),
        span(
            2,
            3,
            vec![
                attribute("server.address", value(V::IntValue(10))),
                attribute("network.peer.port", value(V::IntValue(5432))),
                attribute("db.system", value(V::DoubleValue(1.5))),
                attribute("db.system.name", None),
                attribute("http.request.resend_count", value(V::IntValue(3))),
                attribute(
                    "sampler.type",
                    value(V::StringValue("probabilistic".into())),
                ),
                attribute("sampler.param", value(V::BoolValue(true))),
                attribute("peer.service", value(V::StringValue("a".into()))),
                attribute("peer.service", value(V::StringValue("b".into()))),
            ],
        ),
        span(
            3,
            4,
            vec![
                attribute("messaging.system", value(V::StringValue("kafka".into()))),
                attribute(
                    "messaging.destination.name",
                    value(V::StringValue("orders".into())),
                ),
                attribute("sampling.priority", value(V::IntValue(0))),
                attribute("http.resend_count", value(V::StringValue("-1".into()))),
                attribute("double", value(V::DoubleValue(f64::NAN))),
            ],
        ),
        OtlpSpan {
            span_id: vec![4; 5],
            ..span(4, 5, Vec::new())
        },
        OtlpSpan {
            trace_id: vec![0; 16],
            ..span(5, 1, Vec::new())
        },
        OtlpSpan {
            parent_span_id: vec![0; 8],
            ..span(6, 9, Vec::new())
        },
    ];
    let resource = |attributes| {
        Some(Resource {
            attributes,
            ..Default::default()
        })
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: resource(vec![
                    attribute("service.name", value(V::StringValue("cart".into()))),
                    attribute("service.namespace", value(V::StringValue("shop".into()))),
                    attribute("service.version", value(V::IntValue(3))),
                    attribute(
                        "deployment.environment",
                        value(V::StringValue("prod".into())),
                    ),
                    attribute("service.name", value(V::StringValue("second".into()))),
                    attribute("sample.weight", value(V::IntValue(20))),
                ]),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "io.opentelemetry.http".into(),
                            version: "1.2".into(),
                            ..Default::default()
                        }),
                        spans: spans[..3].to_vec(),
                        schema_url: String::new(),
                    },
                    ScopeSpans {
                        scope: None,
                        spans: spans[3..].to_vec(),
                        schema_url: "https://opentelemetry.io/schemas/1.4.0".into(),
                    },
                ],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: spans[..2].to_vec(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: resource(vec![attribute("service.name", None)]),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: spans[1..2].to_vec(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

fn conversions() -> Vec<Conversion> {
    vec![
        Conversion::new(Detail::Keep),
        Conversion::new(Detail::Drop),
        Conversion::new(Detail::Keep).with_multiplier_key(Some(Arc::from("sample.weight"))),
    ]
}

/// Converts `bytes` both ways and checks that they agree; whether the bytes were a request.
fn agree(bytes: &[u8], conversion: &Conversion) -> bool {
    let mut read = vec![Span::new([1; 16], [1; 8], "earlier", SpanKind::Server)];
    let converted = convert_encoded(bytes, conversion, &mut read);
    let scanned = scan(bytes);
    match ExportTraceServiceRequest::decode(bytes) {
        Ok(request) => {
            let spans_in = span_count(&request) as u64;
            let mut expected = read[..1].to_vec();
            let mut valid = request.clone();
            let rejections = reference::convert_into(request, conversion, &mut expected);
            assert_eq!(converted.as_ref(), Ok(&rejections), "{bytes:?}");
            assert_eq!(read, expected, "{bytes:?}");
            assert_eq!(
                scanned,
                Ok(Scanned {
                    spans: spans_in,
                    rejections: retain_valid(&mut valid),
                }),
                "{bytes:?}"
            );
            true
        }
        Err(err) => {
            assert!(
                converted.is_err(),
                "prost refused ({err}), the reader took {bytes:?}"
            );
            assert!(
                scanned.is_err(),
                "prost refused ({err}), the scan took {bytes:?}"
            );
            assert_eq!(read.len(), 1, "a refused request adds no span");
            false
        }
    }
}

#[test]
fn requests_read_from_their_bytes_convert_as_decoded_ones_do() {
    let mut requests = vec![varied_request(), ExportTraceServiceRequest::default()];
    let mut simulation = Simulation::new(7);
    requests.extend((0..4).map(|_| simulation.request_of_spans(300)));
    for request in requests {
        for conversion in conversions() {
            assert!(agree(&request.encode_to_vec(), &conversion));
            // The decoded request's own conversion goes through its encoding.
            let mut spans = Vec::new();
            let mut expected = Vec::new();
            assert_eq!(
                convert_into(request.clone(), &conversion, &mut spans),
                reference::convert_into(request.clone(), &conversion, &mut expected)
            );
            assert_eq!(spans, expected);
        }
    }
}

/// Appends field `number` holding `bytes` (length-delimited).
fn put(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    prost::encoding::bytes::encode(number, &bytes.to_vec(), out);
}

#[test]
fn fields_in_any_order_repeated_or_unknown_read_as_prost_reads_them() {
    let request = varied_request();
    let first = &request.resource_spans[0];
    // The resource after its spans, the scope after its spans, and each given twice (merged).
    let mut scope_spans = Vec::new();
    for span in &first.scope_spans[0].spans {
        put(&mut scope_spans, 2, &span.encode_to_vec());
    }
    let scope = first.scope_spans[0].scope.clone().unwrap();
    put(&mut scope_spans, 1, &scope.encode_to_vec());
    put(
        &mut scope_spans,
        1,
        &InstrumentationScope {
            version: "2.0".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let mut resource_spans = Vec::new();
    put(&mut resource_spans, 2, &scope_spans);
    let resource = first.resource.clone().unwrap();
    put(&mut resource_spans, 1, &resource.encode_to_vec());
    put(&mut resource_spans, 1, &resource.encode_to_vec());
    // Unknown fields of every wire type, and a group with a nested group.
    resource_spans.extend_from_slice(&[0xf8, 0x01, 0x96, 0x01]); // 31: varint
    resource_spans.extend_from_slice(&[0xf9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8]); // 31: 64-bit
    resource_spans.extend_from_slice(&[0xfd, 0x01, 1, 2, 3, 4]); // 31: 32-bit
    resource_spans.extend_from_slice(&[0xa3, 0x02, 0xab, 0x02, 0x08, 0x01, 0xac, 0x02, 0xa4, 0x02]);
    let mut bytes = Vec::new();
    put(&mut bytes, 1, &resource_spans);
    put(&mut bytes, 9, b"an unknown message");
    for conversion in conversions() {
        assert!(agree(&bytes, &conversion));
    }
}

#[test]
fn bytes_that_are_not_a_request_are_refused_as_prost_refuses_them() {
    let spans_field = |span: &[u8]| {
        let mut scope_spans = Vec::new();
        put(&mut scope_spans, 2, span);
        let mut resource_spans = Vec::new();
        put(&mut resource_spans, 2, &scope_spans);
        let mut request = Vec::new();
        put(&mut request, 1, &resource_spans);
        request
    };
    let broken: Vec<Vec<u8>> = vec![
        vec![0x0a, 0x05, 0x01], // longer than the message
        vec![0x08, 0x01],       // resource_spans as a varint
        vec![0x00],             // field number 0
        vec![0x0f],             // wire type 7
        vec![0x0c],             // an end group with no group
        vec![0x0b, 0x08, 0x01], // a group with no end
        // An unknown varint field whose tenth byte holds more than the 64th bit.
        vec![
            0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ],
        spans_field(&[0x2a, 0x02, 0xc3, 0x28]), // a name that is not UTF-8
        spans_field(&[0x39, 0x01, 0x02]),       // a 64-bit start time of 2 bytes
        spans_field(&[0x0a, 0x01]),             // a trace id past the span's end
    ];
    for bytes in broken {
        assert!(!agree(&bytes, &Conversion::new(Detail::Keep)), "{bytes:?}");
    }
    let deep = (0..150).fold(Vec::new(), |inner, _| {
        let mut array = Vec::new();
        put(&mut array, 1, &inner);
        let mut value = Vec::new();
        put(&mut value, 5, &array);
        value
    });
    let mut attribute = Vec::new();
    put(&mut attribute, 2, &deep);
    let mut span = Vec::new();
    put(&mut span, 9, &attribute);
    let err = scan(&spans_field(&span)).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

/// A small deterministic generator, so that a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[test]
fn damaged_requests_are_refused_or_read_as_prost_reads_them() {
    let valid = varied_request().encode_to_vec();
    let mut random = XorShift(0x5eed_1234_abcd_0001);
    let conversion = Conversion::new(Detail::Keep);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + random.below(3) {
            let at = random.below(bytes.len());
            match random.below(4) {
                0 => bytes[at] ^= 1 << random.below(8),
                1 => bytes[at] = random.next() as u8,
                2 => bytes.truncate(at),
                _ => bytes.insert(at, random.next() as u8),
            }
            if bytes.is_empty() {
                break;
            }
        }
        accepted += usize::from(agree(&bytes, &conversion));
    }
    // Both outcomes were exercised many times.
    assert!((1_000..19_000).contains(&accepted), "{accepted} accepted");
}

/// `levels` arrays (or key-value lists), one inside the other, around the string "bottom".
fn nested_value(levels: usize, list: bool) -> Option<AnyValue> {
    (0..levels).fold(
        value(any_value::Value::StringValue("bottom".into())),
        |inner, _| {
            value(if list {
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![attribute("in", inner)],
                })
            } else {
                any_value::Value::ArrayValue(ArrayValue {
                    values: inner.into_iter().collect(),
                })
            })
        },
    )
}

/// How deep `json` nests arrays or objects down to "bottom", reading through the JSON text a
/// flattened value left in a string.
fn levels_to_bottom(json: &serde_json::Value) -> usize {
    match json {
        serde_json::Value::Array(items) => 1 + levels_to_bottom(&items[0]),
        serde_json::Value::Object(fields) => 1 + levels_to_bottom(&fields["in"]),
        serde_json::Value::String(text) if text == "bottom" => 0,
        serde_json::Value::String(text) => levels_to_bottom(&serde_json::from_str(text).unwrap()),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn values_nested_deeper_than_the_reader_takes_convert_when_prost_decodes_them() {
    // 40 arrays deep is within prost's limit (two messages a level) and past the reader's.
    let mut request = varied_request();
    let span = &mut request.resource_spans[0].scope_spans[0].spans[0];
    span.attributes
        .push(attribute("deep", nested_value(40, false)));
    span.events[0]
        .attributes
        .push(attribute("deep", nested_value(40, false)));
    span.links[0]
        .attributes
        .push(attribute("deep", nested_value(25, true)));
    let bytes = request.encode_to_vec();
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).expect("prost decodes it");
    let err = scan(&bytes).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let conversion = Conversion::new(Detail::Keep);
    assert!(convert_encoded(&bytes, &conversion, &mut Vec::new()).is_err());

    let mut spans = Vec::new();
    let rejections = convert_decodable(&bytes, &conversion, &mut spans).unwrap();
    let expected = convert_with(varied_request(), &conversion);
    assert_eq!(rejections, expected.rejections);
    assert_eq!(spans.len(), expected.spans.len());
    // Nothing is lost of the deep values: the part beyond the flattened depth is JSON text.
    let attributes: serde_json::Value =
        serde_json::from_str(&spans[0].detail.attributes_json).unwrap();
    assert_eq!(levels_to_bottom(&attributes["deep"]), 40);
    assert!(attributes["deep"].to_string().contains("\\\"bottom\\\""));
    let link: serde_json::Value = serde_json::from_str(&spans[0].links[0].attributes_json).unwrap();
    assert_eq!(levels_to_bottom(&link["deep"]), 25);
    assert_eq!(
        spans[0].detail.events_count,
        expected.spans[0].detail.events_count
    );
    // The other attributes and spans read as they do without the deep values.
    let mut attributes = attributes.as_object().unwrap().clone();
    attributes.remove("deep");
    let plain: serde_json::Value =
        serde_json::from_str(&expected.spans[0].detail.attributes_json).unwrap();
    assert_eq!(serde_json::Value::Object(attributes), plain);
    assert_eq!(spans[1..], expected.spans[1..]);
    // A decoded request converts the same way.
    assert_eq!(convert_with(decoded, &conversion).spans, spans);
    // What prost refuses is refused with the reader's reason.
    let err = convert_decodable(&bytes[..bytes.len() - 1], &conversion, &mut Vec::new());
    assert!(err.is_err());
}
