//! Times `archtrace report` on 1,000,000 spans of the demo shop, read from a length-delimited
//! OTLP protobuf file and from OTLP/JSON lines:
//! `cargo run --release -p archtrace-collector --example report_bench [SPANS] [KEEP_DIR]`;
//! with `KEEP_DIR` the input files stay there (shop.pb, shop.jsonl), e.g. to time
//! `archtrace report --traces KEEP_DIR/shop.jsonl` on them.

use std::io::Write;
use std::time::Instant;

use archtrace_collector::demo::Simulation;
use archtrace_collector::graph::report_from_files;
use archtrace_collector::import::OnBadInput;
use prost::Message;

fn main() {
    let spans: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("a number of spans"));
    let temporary = tempfile::tempdir().unwrap();
    let dir = std::env::args()
        .nth(2)
        .map_or_else(|| temporary.path().to_owned(), std::path::PathBuf::from);
    let proto_path = dir.join("shop.pb");
    let json_path = dir.join("shop.jsonl");
    let mut proto = std::io::BufWriter::new(std::fs::File::create(&proto_path).unwrap());
    let mut json = std::io::BufWriter::new(std::fs::File::create(&json_path).unwrap());
    let mut simulation = Simulation::new(7);
    let start_ns: u64 = 1_790_000_000_000_000_000;
    let (mut written, mut request_index) = (0, 0u64);
    while written < spans {
        // 100 user requests a batch, spread over an hour.
        let request = simulation.request(100, start_ns + request_index * 180_000_000);
        written += request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>();
        proto
            .write_all(&request.encode_length_delimited_to_vec())
            .unwrap();
        json.write_all(&archtrace_collector::otlp_json::encode(&request))
            .unwrap();
        json.write_all(b"\n").unwrap();
        request_index += 1;
    }
    proto.flush().unwrap();
    json.flush().unwrap();
    drop((proto, json));
    println!("{written} spans of the demo shop in {request_index} requests");
    for (label, path) in [
        ("OTLP protobuf", &proto_path),
        ("OTLP/JSON lines", &json_path),
    ] {
        let started = Instant::now();
        let (snapshot, series, summary) =
            report_from_files(std::slice::from_ref(path), None, OnBadInput::Stop, None).unwrap();
        let derived = started.elapsed().as_secs_f64();
        let html = archtrace_web::report::render(&snapshot, &series, "bench");
        let total = started.elapsed().as_secs_f64();
        println!(
            "{label:16} {} spans: read and derive {derived:.2} s, render {:.3} s, total {total:.2} s ({:.0} spans/s), {} KiB of HTML",
            summary.spans,
            total - derived,
            summary.spans as f64 / total,
            html.len() / 1024
        );
    }
}
