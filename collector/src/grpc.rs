//! OTLP/gRPC `TraceService/Export`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server, ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

use crate::auth::Auth;
use crate::ingest::{Ingest, IngestError, IngestReport, Outcome, Transport};

/// The path of OTLP's one trace method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP/gRPC's `TraceService`, served with [`ReceivedCodec`] instead of the generated server's
/// prost codec, so that a request whose spans are all valid is logged in the bytes it came in,
/// not encoded again (a fifth of the request threads' time).
#[derive(Clone)]
pub struct TraceServer {
    ingest: Arc<Ingest>,
    auth: Auth,
    /// Largest message accepted, after decompression.
    max_message_bytes: usize,
}

impl TraceServer {
    pub fn new(ingest: Arc<Ingest>, auth: Auth, max_message_bytes: usize) -> Self {
        TraceServer {
            ingest,
            auth,
            max_message_bytes,
        }
    }
}

impl tonic::server::NamedService for TraceServer {
    const NAME: &'static str = trace_service_server::SERVICE_NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for TraceServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            let unknown = Status::unimplemented(format!(
                "archtrace serves {EXPORT_PATH} only; send traces there"
            ));
            return Box::pin(std::future::ready(Ok(unknown.into_http())));
        }
        let export = Export {
            ingest: self.ingest.clone(),
            auth: self.auth.clone(),
        };
        let max_message_bytes = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ReceivedCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes);
            Ok(grpc.unary(export, request).await)
        })
    }
}

/// An export request as it came: its protobuf bytes (decompressed), checked by the ingest.
pub struct Received {
    encoded: Bytes,
}

/// Takes export requests as bytes; encodes responses with prost.
#[derive(Clone, Copy)]
struct ReceivedCodec;

impl Codec for ReceivedCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Received;
    type Encoder = ReceivedCodec;
    type Decoder = ReceivedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ReceivedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        ReceivedCodec
    }
}

impl Encoder for ReceivedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|err| Status::internal(format!("could not encode the response: {err}")))
    }
}

impl Decoder for ReceivedCodec {
    type Item = Received;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Received>, Status> {
        let encoded = src.copy_to_bytes(src.remaining());
        Ok(Some(Received { encoded }))
    }
}

/// One export call.
struct Export {
    ingest: Arc<Ingest>,
    auth: Auth,
}

fn count(ingest: &Ingest, outcome: Outcome) {
    ingest.metrics().count_request(Transport::Grpc, outcome);
}

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Status {
        match err {
            IngestError::Malformed(problem) => Status::invalid_argument(format!(
                "malformed protobuf ExportTraceServiceRequest: {problem}"
            )),
            // UNAVAILABLE is retryable in OTLP: the exporter backs off and sends again.
            unavailable => Status::unavailable(unavailable.to_string()),
        }
    }
}

pub fn response(report: &IngestReport) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: report
            .rejection
            .as_ref()
            .map(|message| ExportTracePartialSuccess {
                rejected_spans: report.rejected as i64,
                error_message: message.clone(),
            }),
    }
}

impl tonic::server::UnaryService<Received> for Export {
    type Response = ExportTraceServiceResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<ExportTraceServiceResponse>, Status>> + Send>>;

    fn call(&mut self, request: Request<Received>) -> Self::Future {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !self.auth.allows(header) {
            count(&self.ingest, Outcome::Unauthenticated);
            return Box::pin(std::future::ready(Err(Status::unauthenticated(
                "missing or wrong bearer token: send `authorization: Bearer <token>`",
            ))));
        }
        let Received { encoded } = request.into_inner();
        let ingest = self.ingest.clone();
        Box::pin(async move {
            match ingest.ingest(encoded).await {
                Ok(report) => {
                    count(
                        &ingest,
                        if report.rejected > 0 {
                            Outcome::PartialSuccess
                        } else {
                            Outcome::Success
                        },
                    );
                    Ok(Response::new(response(&report)))
                }
                Err(err) => {
                    let outcome = match err {
                        IngestError::Malformed(_) => Outcome::InvalidArgument,
                        _ => Outcome::Unavailable,
                    };
                    count(&ingest, outcome);
                    Err(err.into())
                }
            }
        })
    }
}

/// Gives tonic's own answer to an over-long message the code OTLP clients expect: tonic answers
/// an over-long uncompressed message with OUT_OF_RANGE (an over-long decompressed one already
/// gets RESOURCE_EXHAUSTED). Such errors are sent as trailers-only responses, where the status
/// sits in the headers.
pub fn otlp_status_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() != tonic::Code::OutOfRange
        || !status.message().contains("message length too large")
    {
        return response;
    }
    response.headers_mut().insert(
        "grpc-status",
        http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
    );
    response
}

/// Refuses a request with UNAVAILABLE before tonic reads and decodes its body when
/// [`Ingest::admit`] has no room; the admission is held until the answer is ready.
#[derive(Clone)]
pub struct AdmissionLayer {
    ingest: Arc<Ingest>,
}

impl AdmissionLayer {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        AdmissionLayer { ingest }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            ingest: self.ingest.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    ingest: Arc<Ingest>,
}

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let admitted = match self.ingest.admit() {
            Ok(admitted) => admitted,
            Err(reason) => {
                self.ingest
                    .metrics()
                    .count_request(Transport::Grpc, Outcome::Unavailable);
                let refusal = Status::unavailable(reason).into_http();
                return Box::pin(std::future::ready(Ok(refusal)));
            }
        };
        // The service polled ready takes this request; its clone waits for the next one.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(admitted);
            response
        })
    }
}
