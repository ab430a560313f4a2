//! OTLP/gRPC `TraceService/Export`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::auth::Auth;
use crate::ingest::{Ingest, IngestError, IngestReport, Outcome, Transport};

pub struct GrpcTraceService {
    ingest: Arc<Ingest>,
    auth: Auth,
}

impl GrpcTraceService {
    pub fn new(ingest: Arc<Ingest>, auth: Auth) -> Self {
        GrpcTraceService { ingest, auth }
    }

    fn count(&self, outcome: Outcome) {
        self.ingest
            .metrics()
            .count_request(Transport::Grpc, outcome);
    }
}

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Status {
        // UNAVAILABLE is retryable in OTLP: the exporter backs off and sends again.
        Status::unavailable(err.to_string())
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

#[tonic::async_trait]
impl TraceService for GrpcTraceService {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !self.auth.allows(header) {
            self.count(Outcome::Unauthenticated);
            return Err(Status::unauthenticated(
                "missing or wrong bearer token: send `authorization: Bearer <token>`",
            ));
        }
        let request = request.into_inner();
        match self.ingest.ingest(request).await {
            Ok(report) => {
                self.count(if report.rejected > 0 {
                    Outcome::PartialSuccess
                } else {
                    Outcome::Success
                });
                Ok(Response::new(response(&report)))
            }
            Err(err) => {
                self.count(Outcome::Unavailable);
                Err(err.into())
            }
        }
    }
}

/// Gives tonic's own request errors the codes OTLP clients expect. tonic answers an over-long
/// uncompressed message with OUT_OF_RANGE (an over-long decompressed one already gets
/// RESOURCE_EXHAUSTED) and a malformed message with INTERNAL, which exporters do not retry
/// but also cannot tell from a server fault. These errors are sent as trailers-only responses,
/// where the status sits in the headers.
pub fn otlp_status_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let code = match status.code() {
        tonic::Code::OutOfRange if status.message().contains("message length too large") => {
            tonic::Code::ResourceExhausted
        }
        tonic::Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            tonic::Code::InvalidArgument
        }
        _ => return response,
    };
    response
        .headers_mut()
        .insert("grpc-status", http::HeaderValue::from(code as i32));
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
