//! OTLP/HTTP `POST /v1/traces`: protobuf or JSON, optionally gzip-compressed. Decodes the body
//! and calls the same ingest function as gRPC. Answers in the encoding the request used,
//! errors included (as `google.rpc.Status`), as the OTLP spec asks.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use flate2::read::MultiGzDecoder;
use prost::Message;

use crate::auth::Auth;
use crate::grpc::response as export_response;
use crate::ingest::{Ingest, IngestError, IngestReport, Outcome, Transport};
use archtrace_formats::otlp::RpcStatus;
use archtrace_formats::otlp_json;

/// Seconds a refused client is asked to wait before retrying.
const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Clone)]
pub struct HttpState {
    pub ingest: Arc<Ingest>,
    pub auth: Auth,
    /// Largest body accepted, after decompression.
    pub max_body_bytes: usize,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct Failure {
    status: StatusCode,
    outcome: Outcome,
    grpc_code: tonic::Code,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, outcome: Outcome, message: impl Into<String>) -> Self {
        let grpc_code = match status {
            StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
            _ => tonic::Code::Internal,
        };
        Failure {
            status,
            outcome,
            grpc_code,
            message: message.into(),
        }
    }

    fn into_response(self, encoding: Encoding) -> Response {
        let status = RpcStatus {
            code: self.grpc_code as i32,
            message: self.message,
        };
        let body = match encoding {
            Encoding::Protobuf => status.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&serde_json::json!({
                "code": status.code,
                "message": status.message,
            }))
            .expect("serializing a JSON value"),
        };
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, encoding.content_type())],
            body,
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

async fn export(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    // Errors before the content type is known are answered in protobuf, OTLP's default.
    let encoding = match content_type(&headers) {
        Ok(encoding) => encoding,
        Err(failure) => {
            let outcome = failure.outcome;
            return finish(&state, failure.into_response(Encoding::Protobuf), outcome);
        }
    };
    match handle(&state, &headers, body, encoding).await {
        Ok(report) => {
            let outcome = if report.rejected > 0 {
                Outcome::PartialSuccess
            } else {
                Outcome::Success
            };
            finish(&state, success_response(&report, encoding), outcome)
        }
        Err(failure) => {
            let outcome = failure.outcome;
            finish(&state, failure.into_response(encoding), outcome)
        }
    }
}

fn finish(state: &HttpState, response: Response, outcome: Outcome) -> Response {
    state
        .ingest
        .metrics()
        .count_request(Transport::Http, outcome);
    response
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, Failure> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf")
        || essence.eq_ignore_ascii_case("application/protobuf")
    {
        Ok(Encoding::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Ok(Encoding::Json)
    } else {
        Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Outcome::UnsupportedMediaType,
            format!(
                "unsupported content type {value:?}: send application/x-protobuf or application/json"
            ),
        ))
    }
}

async fn handle(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<IngestReport, Failure> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.auth.allows(authorization) {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            Outcome::Unauthenticated,
            "missing or wrong bearer token: send `Authorization: Bearer <token>`",
        ));
    }
    let limit = state.max_body_bytes;
    let _admitted = match state.ingest.admit() {
        Ok(admitted) => admitted,
        Err(reason) => {
            // Read to its end and dropped as it comes, so that the client gets the 503 rather
            // than a connection closed in the middle of its upload.
            discard_body(body, limit).await;
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Outcome::Unavailable,
                reason,
            ));
        }
    };
    let raw = read_body(body, limit).await?;
    let bytes = decompress(headers, raw, limit)?;
    // A protobuf body is checked and logged as it came; JSON is decoded and encoded.
    let (encoded, format) = match encoding {
        Encoding::Protobuf => (bytes, "protobuf"),
        Encoding::Json => (decode_json(&bytes)?, "OTLP/JSON"),
    };
    state.ingest.ingest(encoded).await.map_err(|err| match err {
        IngestError::Malformed(problem) => invalid(format!(
            "malformed {format} ExportTraceServiceRequest: {problem}"
        )),
        unavailable => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Unavailable,
            unavailable.to_string(),
        ),
    })
}

fn invalid(message: String) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, Outcome::InvalidArgument, message)
}

fn too_large(limit: usize) -> Failure {
    Failure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Outcome::TooLarge,
        format!("request body exceeds the limit of {limit} bytes (after decompression); send smaller batches"),
    )
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Failure> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let over_limit = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large(limit)
        } else {
            Failure::new(
                StatusCode::BAD_REQUEST,
                Outcome::InvalidArgument,
                format!("could not read the request body: {err}"),
            )
        }
    })
}

/// Reads a body without keeping it, up to `limit` bytes.
async fn discard_body(body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, Bytes::len);
        if read > limit {
            return;
        }
    }
}

fn decompress(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, Failure> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim();
    if encoding.eq_ignore_ascii_case("identity") || encoding.is_empty() {
        return Ok(raw);
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Outcome::UnsupportedMediaType,
            format!("unsupported content encoding {encoding:?}: send gzip or identity"),
        ));
    }
    // Read one byte past the limit to tell "exactly at the limit" from "over it", so a gzip bomb
    // costs at most `limit` bytes of memory.
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    MultiGzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                Outcome::InvalidArgument,
                format!("invalid gzip body: {err}"),
            )
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

fn decode_json(bytes: &[u8]) -> Result<Bytes, Failure> {
    let request = otlp_json::decode(bytes).map_err(|err| {
        invalid(format!(
            "malformed OTLP/JSON ExportTraceServiceRequest: {err}"
        ))
    })?;
    Ok(Bytes::from(request.encode_to_vec()))
}

fn success_response(report: &IngestReport, encoding: Encoding) -> Response {
    let body = match encoding {
        Encoding::Protobuf => export_response(report).encode_to_vec(),
        Encoding::Json => {
            let value = match &report.rejection {
                Some(message) => serde_json::json!({
                    "partialSuccess": {
                        // int64 is a string in protobuf's JSON mapping.
                        "rejectedSpans": report.rejected.to_string(),
                        "errorMessage": message,
                    }
                }),
                None => serde_json::json!({}),
            };
            serde_json::to_vec(&value).expect("serializing a JSON value")
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}
