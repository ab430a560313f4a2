//! Import throughput per format, on files of ≥ 1,000,000 spans made from the recorded data in
//! `shared/data` (traces repeated with fresh ids), compared in the same run with `serde_json`
//! merely parsing the same bytes into a `serde_json::Value`.
//!
//! Run: `cargo run --release -p archtrace-query --example import_bench [-- MIN_SPANS]`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use archtrace_formats::import::{self, Conversion, Detail, Format, OnBadInput, Source, Summary};
use archtrace_store::bulk::BulkWriter;
use prost::Message;
use serde_json::Value;

fn shared(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(relative)
}

fn json_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared(folder))
        .expect("shared/data is beside the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// A fresh hex id of `digits` digits for round `round`: the original id with its first digits
/// replaced, so parent links keep pointing at the right spans.
fn fresh(id: &str, round: usize, digits: usize) -> String {
    let padded = format!("{:0>digits$}", id);
    format!("{:08x}{}", round, &padded[8..])
}

fn rewrite_ids(value: &mut Value, round: usize, keys: &[(&str, usize)]) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match (keys.iter().find(|(k, _)| k == key), item) {
                    (Some((_, digits)), Value::String(id)) => *id = fresh(id, round, *digits),
                    (_, item) => rewrite_ids(item, round, keys),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_ids(i, round, keys)),
        _ => {}
    }
}

fn jaeger_file(dir: &Path, min_spans: usize) -> PathBuf {
    let traces: Vec<Value> = json_files("jaeger-hotel-reservation")
        .iter()
        .map(|f| {
            serde_json::from_slice::<Value>(&std::fs::read(f).unwrap()).unwrap()["data"][0].clone()
        })
        .collect();
    let per_round: usize = traces
        .iter()
        .map(|t| t["spans"].as_array().unwrap().len())
        .sum();
    let path = dir.join("jaeger.json");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    out.write_all(b"{\"data\":[").unwrap();
    for round in 0..min_spans.div_ceil(per_round) {
        for (index, trace) in traces.iter().enumerate() {
            let mut trace = trace.clone();
            rewrite_ids(&mut trace, round, &[("traceID", 32), ("spanID", 16)]);
            if round > 0 || index > 0 {
                out.write_all(b",").unwrap();
            }
            serde_json::to_writer(&mut out, &trace).unwrap();
        }
    }
    out.write_all(b"]}").unwrap();
    path
}

fn zipkin_file(dir: &Path, min_spans: usize) -> PathBuf {
    let spans: Vec<Value> = json_files("zipkin")
        .iter()
        .flat_map(|f| serde_json::from_slice::<Vec<Value>>(&std::fs::read(f).unwrap()).unwrap())
        .collect();
    let path = dir.join("zipkin.json");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    out.write_all(b"[").unwrap();
    for round in 0..min_spans.div_ceil(spans.len()) {
        for (index, span) in spans.iter().enumerate() {
            let mut span = span.clone();
            rewrite_ids(
                &mut span,
                round,
                &[("traceId", 32), ("id", 16), ("parentId", 16)],
            );
            if round > 0 || index > 0 {
                out.write_all(b",\n").unwrap();
            }
            serde_json::to_writer(&mut out, &span).unwrap();
        }
    }
    out.write_all(b"]").unwrap();
    path
}

/// OTLP/JSON lines and a length-delimited protobuf stream, from the Jaeger file's requests.
fn otlp_files(dir: &Path, jaeger: &Path) -> (PathBuf, PathBuf) {
    let json_path = dir.join("otlp.jsonl");
    let proto_path = dir.join("otlp.pb");
    let mut json = std::io::BufWriter::new(std::fs::File::create(&json_path).unwrap());
    let mut proto = std::io::BufWriter::new(std::fs::File::create(&proto_path).unwrap());
    let document: Value = serde_json::from_slice(&std::fs::read(jaeger).unwrap()).unwrap();
    let traces = document["data"].as_array().unwrap();
    // 50 traces a request, as a collector's batch would hold.
    for chunk in traces.chunks(50) {
        let mut request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default();
        for trace in chunk {
            let trace: archtrace_formats::import::jaeger::JaegerTrace =
                serde_json::from_value(trace.clone()).unwrap();
            request
                .resource_spans
                .extend(archtrace_formats::import::jaeger::to_otlp(trace).resource_spans);
        }
        json.write_all(&archtrace_formats::otlp_json::encode(&request))
            .unwrap();
        json.write_all(b"\n").unwrap();
        proto
            .write_all(&request.encode_length_delimited_to_vec())
            .unwrap();
    }
    (json_path, proto_path)
}

fn import_only(path: &Path, format: Format) -> (Summary, f64) {
    let started = Instant::now();
    let mut summary = Summary::default();
    import::read_source(
        Source::open(path).unwrap(),
        Some(format),
        OnBadInput::Stop,
        &Conversion::new(Detail::Keep),
        Arc::new(AtomicU64::new(0)),
        &mut summary,
        &mut |spans| {
            drop(spans);
            Ok(())
        },
    )
    .unwrap();
    (summary, started.elapsed().as_secs_f64())
}

fn import_into_store(path: &Path, format: Format, dir: &Path) -> f64 {
    let db = dir.join(format!("{format:?}.duckdb"));
    let _ = std::fs::remove_file(&db);
    let store = archtrace_store::Store::open(&archtrace_store::Location::File(db)).unwrap();
    let started = Instant::now();
    let mut sink = BulkWriter::start(store);
    let mut summary = Summary::default();
    import::read_source(
        Source::open(path).unwrap(),
        Some(format),
        OnBadInput::Stop,
        &Conversion::new(Detail::Keep),
        Arc::new(AtomicU64::new(0)),
        &mut summary,
        &mut |spans| sink.push(spans).map_err(Into::into),
    )
    .unwrap();
    sink.finish().unwrap();
    started.elapsed().as_secs_f64()
}

/// serde_json parsing the bytes into a Value (JSON lines: each line).
fn value_parse(path: &Path, lines: bool) -> f64 {
    let bytes = std::fs::read(path).unwrap();
    let started = Instant::now();
    if lines {
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            std::hint::black_box(serde_json::from_slice::<Value>(line).unwrap());
        }
    } else {
        std::hint::black_box(serde_json::from_slice::<Value>(&bytes).unwrap());
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let min_spans: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("MIN_SPANS is a number"));
    let dir = tempfile::tempdir().unwrap();
    eprintln!("making files of at least {min_spans} spans...");
    let jaeger = jaeger_file(dir.path(), min_spans);
    let zipkin = zipkin_file(dir.path(), min_spans);
    let (otlp_json, otlp_proto) = otlp_files(dir.path(), &jaeger);
    println!(
        "{:<14} {:>10} {:>9} {:>12} {:>8} {:>12} {:>12} {:>16}",
        "format",
        "spans",
        "MB",
        "import sp/s",
        "MB/s",
        "Value MB/s",
        "to store sp/s",
        "import/Value"
    );
    for (name, path, format, lines) in [
        ("otlp-json", &otlp_json, Format::OtlpJson, true),
        ("otlp-protobuf", &otlp_proto, Format::OtlpProtobuf, false),
        ("jaeger", &jaeger, Format::Jaeger, false),
        ("zipkin", &zipkin, Format::Zipkin, false),
    ] {
        let megabytes = std::fs::metadata(path).unwrap().len() as f64 / 1e6;
        let (summary, seconds) = import_only(path, format);
        let store_seconds = import_into_store(path, format, dir.path());
        let (value, ratio) = if format == Format::OtlpProtobuf {
            ("-".to_owned(), "-".to_owned())
        } else {
            let value_seconds = value_parse(path, lines);
            (
                format!("{:.1}", megabytes / value_seconds),
                format!("{:.2}", value_seconds / seconds),
            )
        };
        println!(
            "{:<14} {:>10} {:>9.1} {:>12.0} {:>8.1} {:>12} {:>12.0} {:>16}",
            name,
            summary.spans,
            megabytes,
            summary.spans as f64 / seconds,
            megabytes / seconds,
            value,
            summary.spans as f64 / store_seconds,
            ratio
        );
    }
    println!("import/Value > 1 means reading and converting into spans is faster than serde_json building a Value tree of the same bytes.");
}
