//! `archtrace loadgen`: an OTLP load generator. Payloads are generated and encoded before the
//! clock starts, so the generator spends its CPU on sending, not on encoding.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Serialize;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use crate::synth::Generator;

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
    /// Requests the server refused as overloaded (UNAVAILABLE / 503); their spans were not sent again.
    pub requests_refused: u64,
    pub requests_failed: u64,
    pub seconds: f64,
    pub spans_per_sec: f64,
    pub latency_ms: Percentiles,
    /// One thread decoding and converting the same payloads, measured after the run.
    pub decode_only_spans_per_sec: f64,
    pub first_error: Option<String>,
}

struct Payloads {
    bodies: Vec<Bytes>,
    spans_per_body: Vec<u64>,
    encoded_protobuf: Vec<Bytes>,
}

fn prepare(options: &LoadgenOptions) -> Payloads {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut generator = Generator::new(0x5eed, now);
    let mut payloads = Payloads {
        bodies: Vec::new(),
        spans_per_body: Vec::new(),
        encoded_protobuf: Vec::new(),
    };
    for _ in 0..options.distinct_requests.max(1) {
        let request = generator.request(options.spans_per_request);
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let protobuf = Bytes::from(request.encode_to_vec());
        let body = match options.protocol {
            Protocol::HttpJson => Bytes::from(crate::otlp_json::encode(&request)),
            _ => protobuf.clone(),
        };
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
    while started.elapsed() < Duration::from_secs(2) || rounds == 0 {
        for body in &payloads.bodies {
            let request = match options.protocol {
                Protocol::HttpJson => crate::otlp_json::decode(body).expect("own payload decodes"),
                _ => ExportTraceServiceRequest::decode(&body[..]).expect("own payload decodes"),
            };
            spans += crate::otlp::convert(request).spans.len() as u64;
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
}

enum Sent {
    Accepted,
    Refused,
    Failed(String),
}

pub async fn run(options: LoadgenOptions) -> Result<LoadgenReport, String> {
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
        .map_err(|err| format!("could not build the HTTP client: {err}"))?;
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
                    .map_err(|err| format!("invalid endpoint {}: {err}", options.endpoint))?
                    .connect()
                    .await
                    .map_err(|err| format!("could not connect to {}: {err}", options.endpoint))?,
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
                index += concurrency;
                let sent_at = Instant::now();
                let outcome = match &channel {
                    Some(channel) => {
                        send_grpc(channel.clone(), payloads.bodies[slot].clone(), &options).await
                    }
                    None => send_http(&http, payloads.bodies[slot].clone(), &options).await,
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
                    Sent::Refused => {
                        shared.refused.fetch_add(1, Ordering::Relaxed);
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
        latencies.extend(
            worker
                .await
                .map_err(|err| format!("worker failed: {err}"))?,
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let spans_accepted = shared.spans_accepted.load(Ordering::Relaxed);
    let decode_only_spans_per_sec = decode_only_rate(&options, &payloads);
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
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
        first_error,
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
        Ok(response) if response.status().as_u16() == 503 || response.status().as_u16() == 429 => {
            let _ = response.bytes().await;
            Sent::Refused
        }
        Ok(response) => Sent::Failed(format!("HTTP {}", response.status())),
        Err(err) => Sent::Failed(err.to_string()),
    }
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
        Err(status) if status.code() == tonic::Code::Unavailable => Sent::Refused,
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
