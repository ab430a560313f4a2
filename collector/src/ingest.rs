//! The one ingest function both transports call: a request's valid spans go to the request
//! log, and the answer waits until they are durable there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use archtrace_formats::otlp;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::histogram::LatencyHistogram;
use crate::journal::{Journal, JournalError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// How a request ended, for the `requests` counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    PartialSuccess,
    InvalidArgument,
    UnsupportedMediaType,
    TooLarge,
    Unavailable,
    Unauthenticated,
    Internal,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::PartialSuccess,
        Outcome::InvalidArgument,
        Outcome::UnsupportedMediaType,
        Outcome::TooLarge,
        Outcome::Unavailable,
        Outcome::Unauthenticated,
        Outcome::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::PartialSuccess => "partial_success",
            Outcome::InvalidArgument => "invalid_argument",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::TooLarge => "too_large",
            Outcome::Unavailable => "unavailable",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Internal => "internal",
        }
    }
}

#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub spans_received: AtomicU64,
    pub spans_accepted: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub spans_refused: AtomicU64,
    /// Requests admitted and not yet answered, over both transports.
    pub requests_in_flight: AtomicU64,
    /// From a request's body in hand to its spans durable: the server's share of the latency
    /// an exporter sees (the rest is transport and the client's own scheduling).
    pub acknowledge: LatencyHistogram,
    requests: [[AtomicU64; Outcome::ALL.len()]; Transport::ALL.len()],
}

impl IngestMetrics {
    pub fn count_request(&self, transport: Transport, outcome: Outcome) {
        self.requests[transport as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self, transport: Transport, outcome: Outcome) -> u64 {
        self.requests[transport as usize][outcome as usize].load(Ordering::Relaxed)
    }
}

/// A request's place among those in flight, given back when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<IngestMetrics>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics
            .requests_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The bytes are not an OTLP trace request: the client should not send them again.
    #[error("{0}")]
    Malformed(String),
    /// The log is over its bounds: the client should retry later.
    #[error("{0}")]
    Overloaded(JournalError),
    #[error("{0}")]
    Unavailable(JournalError),
}

/// What the client is told after a successful export.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub accepted: u64,
    pub rejected: u64,
    pub rejection: Option<String>,
}

pub struct Ingest {
    journal: Journal,
    metrics: Arc<IngestMetrics>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Ingest {
    pub fn new(journal: Journal, metrics: Arc<IngestMetrics>, max_in_flight: usize) -> Self {
        Ingest {
            journal,
            metrics,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    /// Room for one more request, held until it is answered; refused, with the reason, when the
    /// request log is over its bounds or `max_in_flight` requests are being read, decoded or
    /// logged. Refusing before the body is decoded keeps memory bounded when far more clients
    /// send at once than the server could take, and spends no work on what cannot be logged.
    pub fn admit(&self) -> Result<Admission, String> {
        if let Some(refusal) = self.journal.refusal(0) {
            return Err(refusal.to_string());
        }
        let permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.busy_message())?;
        self.metrics
            .requests_in_flight
            .fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }

    fn busy_message(&self) -> String {
        format!(
            "{} requests are already in flight (--max-requests-in-flight); retry later",
            self.max_in_flight
        )
    }

    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Logs the valid spans of an encoded request and returns once they are durable: from then
    /// on they survive a crash, and the loader puts them in the store. The request is checked
    /// in place, not decoded, and logged in the bytes it came in when every span is valid.
    pub async fn ingest(&self, encoded: Bytes) -> Result<IngestReport, IngestError> {
        let started = Instant::now();
        let malformed = |err: &dyn std::fmt::Display| IngestError::Malformed(err.to_string());
        let scanned = otlp::scan(&encoded).map_err(|err| malformed(&err))?;
        let rejections = scanned.rejections;
        let accepted = scanned.spans - rejections.count;
        self.metrics
            .spans_received
            .fetch_add(scanned.spans, Ordering::Relaxed);
        self.metrics
            .spans_rejected
            .fetch_add(rejections.count, Ordering::Relaxed);
        let report = IngestReport {
            accepted,
            rejected: rejections.count,
            rejection: rejections.summary(),
        };
        if accepted == 0 {
            return Ok(report);
        }
        let payload = if rejections.count == 0 {
            encoded
        } else {
            // Rare enough to decode: the valid spans are encoded again without the others.
            let mut request =
                ExportTraceServiceRequest::decode(encoded).map_err(|err| malformed(&err))?;
            otlp::retain_valid(&mut request);
            Bytes::from(request.encode_to_vec())
        };
        let outcome = match self.journal.append(payload) {
            Ok(durable) => durable.await.unwrap_or(Err(JournalError::ShuttingDown)),
            Err(err) => Err(err),
        };
        match outcome {
            Ok(()) => {
                self.metrics
                    .spans_accepted
                    .fetch_add(accepted, Ordering::Relaxed);
                self.metrics
                    .acknowledge
                    .observe(started.elapsed().as_secs_f64());
                Ok(report)
            }
            Err(err) => {
                self.metrics
                    .spans_refused
                    .fetch_add(accepted, Ordering::Relaxed);
                Err(match err {
                    JournalError::LogFull { .. }
                    | JournalError::DiskFull { .. }
                    | JournalError::WriteFailed(_) => IngestError::Overloaded(err),
                    other => IngestError::Unavailable(other),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{LogLimits, LogState};
    use archtrace_store::log::{LogReader, LogWriter, Record};
    use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;

    fn span(span_id: u8, name: &str) -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![1; 16],
            span_id: vec![span_id; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    fn request(spans: Vec<OtlpSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![otlp::resource_spans(
                vec![otlp::string_attribute("service.name", "shop")],
                spans,
            )],
        }
    }

    /// Ingests encoded `requests` and reads back what was logged.
    async fn logged(requests: Vec<Bytes>) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            min_free_disk_bytes: 0,
            ..LogLimits::default()
        };
        let (writer, _) = LogWriter::open(dir.path(), limits.segment_bytes, 0).unwrap();
        let state = Arc::new(LogState::default());
        let (journal, thread) = Journal::spawn(writer, dir.path(), limits, state.clone());
        let ingest = Ingest::new(journal, Arc::new(IngestMetrics::default()), 4);
        for encoded in requests {
            ingest.ingest(encoded).await.unwrap();
        }
        drop(ingest);
        thread.join().unwrap();
        let mut records = Vec::new();
        LogReader::new(dir.path(), 0)
            .read(
                state.durable_end.load(Ordering::Acquire),
                usize::MAX,
                &mut records,
            )
            .unwrap();
        records
    }

    #[tokio::test]
    async fn a_request_whose_spans_are_all_valid_is_logged_in_the_bytes_it_came_in() {
        let valid = request(vec![span(1, "a"), span(2, "b")]);
        // Field 99 is one this OTLP version does not know: only the received bytes hold it.
        let mut encoded = valid.encode_to_vec();
        encoded.extend_from_slice(&[0x9a, 0x06, 0x01, 0x7a]);
        let records = logged(vec![Bytes::from(encoded.clone())]).await;
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].payload, encoded);
        assert_eq!(
            ExportTraceServiceRequest::decode(records[0].payload.as_slice()).unwrap(),
            valid
        );
    }

    #[tokio::test]
    async fn a_request_with_a_rejected_span_is_logged_without_it() {
        let mut bad = span(3, "bad");
        bad.span_id = vec![3; 5];
        let mixed = request(vec![span(1, "a"), bad, span(2, "b")]);
        let records = logged(vec![Bytes::from(mixed.encode_to_vec())]).await;
        assert_eq!(records.len(), 1);
        let logged = ExportTraceServiceRequest::decode(records[0].payload.as_slice()).unwrap();
        assert_eq!(logged, request(vec![span(1, "a"), span(2, "b")]));
    }
}
