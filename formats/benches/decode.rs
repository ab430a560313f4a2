//! Decode + conversion alone, on the load generator's payloads: the physical bound the ingest
//! rate is compared with. Run: `cargo bench -p archtrace-formats --bench decode`.

use archtrace_formats::{otlp, otlp_json};
use archtrace_workload::shop::Simulation;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn payloads() -> (Vec<u8>, Vec<u8>, u64) {
    let request = Simulation::starting_at(0x5eed, 1_700_000_000_000_000_000).request_of_spans(512);
    let spans = archtrace_formats::otlp::span_count(&request) as u64;
    (request.encode_to_vec(), otlp_json::encode(&request), spans)
}

fn decode(c: &mut Criterion) {
    let (protobuf, json, spans) = payloads();
    let mut group = c.benchmark_group("otlp");
    group.throughput(Throughput::Elements(spans));
    // prost's decoding alone, for comparison: the server no longer does it.
    group.bench_function("protobuf_prost_decode", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(&protobuf[..]).unwrap())
    });
    // What a receiver does before logging a request.
    group.bench_function("protobuf_scan", |b| {
        b.iter(|| otlp::scan(&protobuf).unwrap())
    });
    // What the log reader does with a logged request.
    let conversion = otlp::Conversion::new(otlp::Detail::Keep);
    group.bench_function("protobuf_convert", |b| {
        b.iter(|| {
            let mut spans = Vec::new();
            otlp::convert_encoded(&protobuf, &conversion, &mut spans).unwrap();
            spans
        })
    });
    // What the log reader does when no span is stored (`--spans none`).
    let slim = otlp::Conversion::new(otlp::Detail::Drop);
    group.bench_function("protobuf_convert_without_detail", |b| {
        b.iter(|| {
            let mut spans = Vec::new();
            otlp::convert_encoded(&protobuf, &slim, &mut spans).unwrap();
            spans
        })
    });
    group.bench_function("json_decode_convert", |b| {
        b.iter(|| otlp::convert(otlp_json::decode(&json).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
