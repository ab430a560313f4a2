//! The deriver's work on one thread, phase by phase, as the server does it under load: the log
//! reader's conversion of logged requests (with and without the detail sampled traces keep),
//! and live assembly with and without `--spans sampled`, including the state each checkpoint
//! saves. Run it before and after a change to the ingest path's consumers; the figures are
//! spans per second on one thread, so compare them within one run or alternate binaries.
//!
//! Run: `cargo run --release -p archtrace-collector --example assembly_bench [-- SPANS]`

use std::time::{Duration, Instant};

use archtrace_analyzer::{shared_text, Span};
use archtrace_collector::assembly::{Assembler, AssemblySettings};
use archtrace_formats::otlp::{self, Conversion, Detail};
use archtrace_workload::shop::Simulation;
use prost::Message;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the load generator sends: requests of 512 spans, encoded as they are logged.
fn logged_requests(min_spans: usize) -> Vec<Vec<u8>> {
    let now = archtrace_analyzer::time::now_ns().unsigned_abs();
    let mut shop = Simulation::starting_at(0x5eed, now);
    let mut requests = Vec::new();
    let mut spans = 0;
    while spans < min_spans {
        let request = shop.request_of_spans(512);
        spans += otlp::span_count(&request);
        requests.push(request.encode_to_vec());
    }
    requests
}

/// Converts the requests as the log reader does, in batches of about 5,000 spans; the best of
/// three runs, as the machine is shared.
fn convert(requests: &[Vec<u8>], detail: Detail) -> (Vec<Vec<Span>>, f64) {
    let conversion = Conversion::new(detail);
    let mut best = f64::MAX;
    let mut converted = Vec::new();
    for _ in 0..3 {
        drop(std::mem::take(&mut converted));
        let started = Instant::now();
        converted = requests
            .chunks(10)
            .map(|records| {
                let mut spans = Vec::new();
                for record in records {
                    otlp::convert_decodable(record, &conversion, &mut spans).expect("converts");
                }
                spans
            })
            .collect();
        best = best.min(started.elapsed().as_secs_f64());
    }
    (converted, best)
}

/// Assembles the batches as the deriver does when spans arrive at `rate` a second: the clock
/// moves on by each batch's share of a second, idle traces are derived on every batch, and
/// every five seconds the state a checkpoint saves is encoded.
fn assemble(batches: Vec<Vec<Span>>, sample: Option<u32>, rate: f64) -> (f64, usize, usize) {
    let mut assembler = Assembler::new(AssemblySettings {
        sample,
        ..AssemblySettings::default()
    });
    let started = Instant::now();
    let mut now = started;
    let mut last_checkpoint = now;
    let (mut kept, mut state_bytes) = (0, 0);
    for spans in batches {
        now += Duration::from_secs_f64(spans.len() as f64 / rate);
        assembler.add(spans, now);
        assembler.tick(now);
        drop(assembler.take_buckets());
        if now.duration_since(last_checkpoint) >= Duration::from_secs(5) {
            last_checkpoint = now;
            kept += assembler.take_kept().len();
            let saved = assembler.save(now);
            state_bytes = shared_text::write_shared(|| postcard::to_stdvec(&saved))
                .expect("encodes")
                .len();
        }
    }
    assembler.drain(now);
    kept += assembler.take_kept().len();
    (started.elapsed().as_secs_f64(), kept, state_bytes)
}

fn main() {
    let min_spans: usize = std::env::args()
        .nth(1)
        .map_or(2_000_000, |a| a.parse().expect("a number of spans"));
    let requests = logged_requests(min_spans);
    let (without_detail, seconds_without) = convert(&requests, Detail::Drop);
    let (with_detail, seconds_with) = convert(&requests, Detail::Keep);
    let spans: usize = with_detail.iter().map(Vec::len).sum();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    let rate = |seconds: f64| spans as f64 / seconds;
    println!(
        "{spans} spans in {} requests, {:.0} bytes a span",
        requests.len(),
        bytes as f64 / spans as f64
    );
    println!(
        "convert without detail (--spans none): {:>9.0} spans/s",
        rate(seconds_without)
    );
    println!(
        "convert with detail (--spans sampled):  {:>9.0} spans/s",
        rate(seconds_with)
    );
    // Past the rate the server is asked to sustain, the buffer derives traces early.
    for (case, batches, sample) in [
        ("none", without_detail, None),
        ("sampled", with_detail, Some(3)),
    ] {
        let (seconds, kept, state) = assemble(batches, sample, 300_000.0);
        println!(
            "assemble --spans {case}: {:>9.0} spans/s ({kept} kept, {:.1}%; last state {:.1} MB)",
            rate(seconds),
            kept as f64 * 100.0 / spans as f64,
            state as f64 / 1e6
        );
    }
}
