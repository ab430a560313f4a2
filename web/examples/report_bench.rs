//! Times `archtrace report` on 1,000,000 spans of the demo shop, read from a length-delimited
//! OTLP protobuf file and from OTLP/JSON lines:
//! `cargo run --release -p archtrace-web --example report_bench [SPANS] [KEEP_DIR]`;
//! with `KEEP_DIR` the input files stay there (shop.pb, shop.jsonl), e.g. to time
//! `archtrace report --traces KEEP_DIR/shop.jsonl` on them.

use std::io::Write;
use std::time::Instant;

use archtrace_formats::import::OnBadInput;
use archtrace_query::files::{FilesSource, ReadOptions};
use archtrace_query::Window;
use archtrace_workload::shop::Simulation;
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
        written += archtrace_formats::otlp::span_count(&request);
        proto
            .write_all(&request.encode_length_delimited_to_vec())
            .unwrap();
        json.write_all(&archtrace_formats::otlp_json::encode(&request))
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
        let options = ReadOptions {
            format: None,
            on_bad: OnBadInput::Stop,
            multiplier_key: None,
        };
        let source = FilesSource::read(std::slice::from_ref(path), options).unwrap();
        let read = started.elapsed().as_secs_f64();
        let (_, html) =
            archtrace_web::report::build(&source, &Window::ALL, &Default::default()).unwrap();
        let total = started.elapsed().as_secs_f64();
        let spans = source.summary().spans;
        println!(
            "{label:16} {spans} spans: read {read:.2} s, derive and render {:.3} s, total {total:.2} s ({:.0} spans/s), {} KiB of HTML",
            total - read,
            spans as f64 / total,
            html.len() / 1024
        );
    }
}
