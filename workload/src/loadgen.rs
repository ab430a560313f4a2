//! `archtrace loadgen`: an OTLP load generator. Payloads are generated and encoded before the
//! clock starts, so the generator spends its CPU on sending, not on encoding.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archtrace_formats::otlp;
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::shop::Simulation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

#[derive(Clone, Debug)]
pub struct LoadgenOptions {
    /// `http://host:port` of the OTLP/gRPC or OTLP/HTTP listener.
    pub endpoint: String,
    pub protocol: Protocol,
    pub spans_per_request: usize,
    pub concurrency: usize,
    /// Spans per second across all workers; `None` sends as fast as the server accepts.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// How many distinct pre-encoded requests to cycle through.
    pub distinct_requests: usize,
    pub auth_token: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadgenReport {
    pub protocol: String,
    pub spans_per_request: usize,
    pub bytes_per_span: f64,
    pub concurrency: usize,
    pub requests: u64,
    pub spans_accepted: u64,
    /// Requests the server refused for a retry (UNAVAILABLE / 503 / 429), as when it is
    /// overloaded; their spans were not sent again.
    pub requests_refused: u64,
    pub requests_failed: u64,
    pub seconds: f64,
    pub spans_per_sec: f64,
    pub latency_ms: Percentiles,
    /// One thread decoding and converting the same payloads, measured after the run.
    pub decode_only_spans_per_sec: f64,
    pub first_error: Option<String>,
    /// Why the server refused the first refused request: overloaded, or its log failed.
    pub first_refusal: Option<String>,
}

impl std::fmt::Display for LoadgenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "protocol           {}", self.protocol)?;
        writeln!(
            f,
            "spans accepted     {} in {:.1} s",
            self.spans_accepted, self.seconds
        )?;
        writeln!(f, "accepted spans/s   {:.0}", self.spans_per_sec)?;
        writeln!(f, "bytes a span       {:.0}", self.bytes_per_span)?;
        writeln!(
            f,
            "requests           {} ({} refused for a retry, {} failed)",
            self.requests, self.requests_refused, self.requests_failed
        )?;
        writeln!(
            f,
            "latency ms         p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
            self.latency_ms.p50, self.latency_ms.p90, self.latency_ms.p99, self.latency_ms.max
        )?;
        writeln!(
            f,
            "decode-only        {:.0} spans/s on one thread (ingest/decode = {:.2})",
            self.decode_only_spans_per_sec,
            self.spans_per_sec / self.decode_only_spans_per_sec.max(1.0)
        )?;
        if let Some(refusal) = &self.first_refusal {
            writeln!(f, "first refusal      {refusal}")?;
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "first error        {error}")?;
        }
        Ok(())
    }
}

struct Payloads {
    bodies: Vec<Bytes>,
    spans_per_body: Vec<u64>,
    encoded_protobuf: Vec<Bytes>,
    /// Where each body carries its ids.
    ids: Vec<IdSpots>,
    /// Ids are written as hex text (OTLP/JSON), not raw bytes.
    hex_ids: bool,
}

/// The byte offsets of every trace id and span id (own, parent, linked) in an encoded body.
/// Each send XORs them with a fresh salt, so the server sees new traces every time, as from
/// real traffic, rather than the same few traces again and again (which a live assembler takes
/// for late spans of traces it has derived). One salt per request keeps parents and links
/// pointing where they did.
#[derive(Default)]
struct IdSpots {
    trace_ids: Vec<usize>,
    span_ids: Vec<usize>,
}

impl IdSpots {
    fn find(request: &ExportTraceServiceRequest, body: &[u8], hex_ids: bool) -> IdSpots {
        let spans = || {
            request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
        };
        let mut trace_ids = std::collections::BTreeSet::new();
        let mut span_ids = std::collections::BTreeSet::new();
        for span in spans() {
            trace_ids.insert(span.trace_id.clone());
            span_ids.insert(span.span_id.clone());
            span_ids.insert(span.parent_span_id.clone());
            for link in &span.links {
                trace_ids.insert(link.trace_id.clone());
                span_ids.insert(link.span_id.clone());
            }
        }
        let offsets = |ids: std::collections::BTreeSet<Vec<u8>>| -> Vec<usize> {
            let mut found: Vec<usize> = ids
                .into_iter()
                .filter(|id| !id.is_empty())
                .flat_map(|id| {
                    let needle = if hex_ids {
                        hex::encode(&id).into_bytes()
                    } else {
                        id
                    };
                    memchr::memmem::find_iter(body, &needle).collect::<Vec<_>>()
                })
                .collect();
            found.sort_unstable();
            found
        };
        IdSpots {
            trace_ids: offsets(trace_ids),
            span_ids: offsets(span_ids),
        }
    }

    /// A copy of `body` with every id XORed with `salt`.
    fn fresh(&self, body: &[u8], hex_ids: bool, salt: [u8; 16]) -> Bytes {
        let mut out = body.to_vec();
        let patch = |out: &mut Vec<u8>, at: usize, salt: &[u8]| {
            for (i, s) in salt.iter().enumerate() {
                if hex_ids {
                    for (j, nibble) in [s >> 4, s & 0x0f].into_iter().enumerate() {
                        let digit = &mut out[at + 2 * i + j];
                        let value = (*digit as char).to_digit(16).unwrap_or(0) as u8 ^ nibble;
                        *digit = b"0123456789abcdef"[usize::from(value)];
                    }
                } else {
                    out[at + i] ^= s;
                }
            }
        };
        for &at in &self.trace_ids {
            patch(&mut out, at, &salt);
        }
        for &at in &self.span_ids {
            patch(&mut out, at, &salt[..8]);
        }
        Bytes::from(out)
    }
}

/// The salt of the `n`th request sent: distinct for every request (splitmix64).
fn salt(n: u64) -> [u8; 16] {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let high = mix(n.wrapping_mul(2).wrapping_add(0x9e37_79b9_7f4a_7c15));
    let low = mix(n.wrapping_mul(2).wrapping_add(0x3c6e_f372_fe94_f82a));
    ((u128::from(high) << 64) | u128::from(low)).to_le_bytes()
}

fn prepare(options: &LoadgenOptions) -> Payloads {
    let now = u64::try_from(archtrace_analyzer::time::now_ns()).unwrap_or(0);
    let mut shop = Simulation::starting_at(0x5eed, now);
    let hex_ids = options.protocol == Protocol::HttpJson;
    let mut payloads = Payloads {
        bodies: Vec::new(),
        spans_per_body: Vec::new(),
        encoded_protobuf: Vec::new(),
        ids: Vec::new(),
        hex_ids,
    };
    for _ in 0..options.distinct_requests.max(1) {
        let request = shop.request_of_spans(options.spans_per_request);
        let spans: usize = archtrace_formats::otlp::span_count(&request);
        let protobuf = Bytes::from(request.encode_to_vec());
        let body = match options.protocol {
            Protocol::HttpJson => Bytes::from(archtrace_formats::otlp_json::encode(&request)),
            _ => protobuf.clone(),
        };
        payloads.ids.push(IdSpots::find(&request, &body, hex_ids));
        payloads.bodies.push(body);
        payloads.spans_per_body.push(spans as u64);
        payloads.encoded_protobuf.push(protobuf);
    }
    payloads
}

/// Measures decode + conversion alone, on one thread, over the payloads the run sent.
fn decode_only_rate(options: &LoadgenOptions, payloads: &Payloads) -> f64 {
    let started = Instant::now();
    let mut spans = 0u64;
    let mut rounds = 0;
    let conversion = otlp::Conversion::new(otlp::Detail::Keep);
    let mut converted = Vec::new();
    while started.elapsed() < Duration::from_secs(2) || rounds == 0 {
        for body in &payloads.bodies {
            // As the server does: OTLP/JSON is decoded and logged as protobuf, which is read.
            let json_encoded;
            let protobuf = match options.protocol {
                Protocol::HttpJson => {
                    let request =
                        archtrace_formats::otlp_json::decode(body).expect("own payload decodes");
                    json_encoded = request.encode_to_vec();
                    &json_encoded[..]
                }
                _ => &body[..],
            };
            converted.clear();
            otlp::convert_encoded(protobuf, &conversion, &mut converted)
                .expect("own payload converts");
            spans += converted.len() as u64;
        }
        rounds += 1;
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    spans_accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    first_refusal: std::sync::Mutex<Option<String>>,
}

enum Sent {
    Accepted,
    Refused(String),
    Failed(String),
}

/// Why a load run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("could not build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("invalid endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::codegen::http::uri::InvalidUri,
    },
    #[error("could not connect to {endpoint} (is `archtrace serve` listening there?)")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("a load worker failed")]
    Worker(#[source] tokio::task::JoinError),
}

pub async fn run(options: LoadgenOptions) -> Result<LoadgenReport, LoadgenError> {
    let payloads = Arc::new(prepare(&options));
    let total_bytes: usize = payloads.bodies.iter().map(Bytes::len).sum();
    let total_spans: u64 = payloads.spans_per_body.iter().sum();
    let shared = Arc::new(Shared::default());
    let stop = Arc::new(AtomicBool::new(false));
    let concurrency = options.concurrency.max(1);
    let interval = options.rate.map(|rate| {
        let per_worker = rate / concurrency as f64;
        Duration::from_secs_f64(options.spans_per_request as f64 / per_worker.max(1e-9))
    });

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(LoadgenError::HttpClient)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let payloads = payloads.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        let options = options.clone();
        let http = http.clone();
        let channel = if options.protocol == Protocol::Grpc {
            Some(
                Channel::from_shared(options.endpoint.clone())
                    .map_err(|source| LoadgenError::Endpoint {
                        endpoint: options.endpoint.clone(),
                        source,
                    })?
                    .connect()
                    .await
                    .map_err(|source| LoadgenError::Connect {
                        endpoint: options.endpoint.clone(),
                        source,
                    })?,
            )
        } else {
            None
        };
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut index = worker;
            let mut next_send = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next_send.into()).await;
                    next_send += interval;
                }
                let slot = index % payloads.bodies.len();
                let body = payloads.ids[slot].fresh(
                    &payloads.bodies[slot],
                    payloads.hex_ids,
                    salt(index as u64),
                );
                index += concurrency;
                let sent_at = Instant::now();
                let outcome = match &channel {
                    Some(channel) => send_grpc(channel.clone(), body, &options).await,
                    None => send_http(&http, body, &options).await,
                };
                let elapsed = sent_at.elapsed();
                shared.requests.fetch_add(1, Ordering::Relaxed);
                match outcome {
                    Sent::Accepted => {
                        latencies.push(elapsed.as_secs_f64() * 1e3);
                        shared
                            .spans_accepted
                            .fetch_add(payloads.spans_per_body[slot], Ordering::Relaxed);
                    }
                    Sent::Refused(message) => {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                        shared
                            .first_refusal
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(message);
                        // Back off a little, as an exporter honouring Retry-After would.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Sent::Failed(message) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        shared
                            .first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(message);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(options.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(LoadgenError::Worker)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let spans_accepted = shared.spans_accepted.load(Ordering::Relaxed);
    let decode_only_spans_per_sec = decode_only_rate(&options, &payloads);
    let first = |message: &std::sync::Mutex<Option<String>>| {
        message.lock().unwrap_or_else(|e| e.into_inner()).clone()
    };
    Ok(LoadgenReport {
        protocol: match options.protocol {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
        .to_owned(),
        spans_per_request: options.spans_per_request,
        bytes_per_span: total_bytes as f64 / total_spans.max(1) as f64,
        concurrency,
        requests: shared.requests.load(Ordering::Relaxed),
        spans_accepted,
        requests_refused: shared.refused.load(Ordering::Relaxed),
        requests_failed: shared.failed.load(Ordering::Relaxed),
        seconds,
        spans_per_sec: spans_accepted as f64 / seconds,
        latency_ms: percentiles(&mut latencies),
        decode_only_spans_per_sec,
        first_error: first(&shared.first_error),
        first_refusal: first(&shared.first_refusal),
    })
}

pub fn percentiles(samples: &mut [f64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            max: 0.0,
        };
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: samples[samples.len() - 1],
    }
}

async fn send_http(client: &reqwest::Client, body: Bytes, options: &LoadgenOptions) -> Sent {
    let content_type = match options.protocol {
        Protocol::HttpJson => "application/json",
        _ => "application/x-protobuf",
    };
    let mut request = client
        .post(format!(
            "{}/v1/traces",
            options.endpoint.trim_end_matches('/')
        ))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = &options.auth_token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            // Read the body so the connection goes back to the pool.
            let _ = response.bytes().await;
            Sent::Accepted
        }
        Ok(response) => {
            let status = response.status();
            let json = response
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.starts_with("application/json"));
            let body = response.bytes().await.unwrap_or_default();
            let described = match status_message(&body, json) {
                Some(message) => format!("HTTP {status}: {message}"),
                None => format!("HTTP {status}"),
            };
            if status.as_u16() == 503 || status.as_u16() == 429 {
                Sent::Refused(described)
            } else {
                Sent::Failed(described)
            }
        }
        Err(err) => Sent::Failed(err.to_string()),
    }
}

/// The message of an OTLP/HTTP error body (`google.rpc.Status` in protobuf or JSON), if any.
fn status_message(body: &[u8], json: bool) -> Option<String> {
    let message = if json {
        #[derive(serde::Deserialize)]
        struct JsonStatus {
            message: String,
        }
        serde_json::from_slice::<JsonStatus>(body).ok()?.message
    } else {
        otlp::RpcStatus::decode(body).ok()?.message
    };
    Some(message).filter(|message| !message.is_empty())
}

async fn send_grpc(channel: Channel, body: Bytes, options: &LoadgenOptions) -> Sent {
    let mut client = tonic::client::Grpc::new(channel);
    if let Err(err) = client.ready().await {
        return Sent::Failed(err.to_string());
    }
    let mut request = tonic::Request::new(body);
    if let Some(token) = &options.auth_token {
        if let Ok(value) = format!("Bearer {token}").parse() {
            request.metadata_mut().insert("authorization", value);
        }
    }
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    match client.unary(request, path, PreEncodedCodec).await {
        Ok(_) => Sent::Accepted,
        Err(status) if status.code() == tonic::Code::Unavailable => {
            Sent::Refused(status.message().to_owned())
        }
        Err(status) => Sent::Failed(format!("{:?}: {}", status.code(), status.message())),
    }
}

/// Sends already-encoded `ExportTraceServiceRequest` bytes and decodes the response.
#[derive(Clone, Copy, Default)]
struct PreEncodedCodec;

impl Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncodedCodec;
    type Decoder = PreEncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncodedCodec
    }
}

impl Encoder for PreEncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PreEncodedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|err| tonic::Status::internal(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Each span's id and its parent's (empty for a root).
    type Tree = Vec<(Vec<u8>, Vec<u8>)>;

    fn ids(request: &ExportTraceServiceRequest) -> (HashSet<Vec<u8>>, Tree) {
        let spans = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans);
        let mut traces = HashSet::new();
        let mut parent_links = Vec::new();
        for span in spans {
            traces.insert(span.trace_id.clone());
            parent_links.push((span.span_id.clone(), span.parent_span_id.clone()));
        }
        (traces, parent_links)
    }

    /// Every send carries new trace and span ids, and each span still has the parent it had.
    #[test]
    fn each_send_has_fresh_ids_and_the_same_tree() {
        let request = Simulation::starting_at(3, 1_700_000_000_000_000_000).request_of_spans(300);
        let (original_traces, original_tree) = ids(&request);
        for hex_ids in [false, true] {
            let body = if hex_ids {
                archtrace_formats::otlp_json::encode(&request)
            } else {
                request.encode_to_vec()
            };
            let spots = IdSpots::find(&request, &body, hex_ids);
            let decode = |bytes: &[u8]| {
                if hex_ids {
                    archtrace_formats::otlp_json::decode(bytes).unwrap()
                } else {
                    ExportTraceServiceRequest::decode(bytes).unwrap()
                }
            };
            let mut seen = original_traces.clone();
            for n in 1..=3 {
                let sent = decode(&spots.fresh(&body, hex_ids, salt(n)));
                let (traces, tree) = ids(&sent);
                assert_eq!(traces.len(), original_traces.len());
                assert!(
                    traces.iter().all(|t| seen.insert(t.clone())),
                    "trace ids are new"
                );
                assert_eq!(tree.len(), original_tree.len());
                // Same shape: a span has a parent exactly when it had one, and parents are
                // spans of the same request exactly when they were.
                let own: HashSet<_> = tree.iter().map(|(id, _)| id.clone()).collect();
                let original_own: HashSet<_> =
                    original_tree.iter().map(|(id, _)| id.clone()).collect();
                for ((id, parent), (old_id, old_parent)) in tree.iter().zip(&original_tree) {
                    assert_ne!(id, old_id);
                    assert_eq!(parent.is_empty(), old_parent.is_empty());
                    assert_eq!(own.contains(parent), original_own.contains(old_parent));
                }
            }
        }
    }
}
