//! The admin listener: health, readiness, Prometheus metrics, the snapshot API and the web
//! viewer, all behind the bearer token when one is set.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::snapshot::{Level, Snapshot};
use archtrace_analyzer::time::now_ns;
use archtrace_query::store::StoreSource;
use archtrace_query::{error_chain, SnapshotSource, Window};
use archtrace_store::writer::COMMIT_BUCKETS_SECONDS;
use archtrace_store::WriterMetrics;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::Auth;
use crate::ingest::{IngestMetrics, Outcome, Transport};

#[derive(Clone)]
pub struct AdminState {
    pub ingest: Arc<IngestMetrics>,
    pub writer: Arc<WriterMetrics>,
    /// False once shutdown has begun, so load balancers stop sending.
    pub ready: Arc<AtomicBool>,
    pub auth: Auth,
    /// The store with the buckets not yet written; queries run off the async runtime.
    pub source: Arc<StoreSource>,
    /// The snapshot the viewer's drift page compares with, when configured.
    pub baseline: Option<Snapshot>,
}

pub fn router(state: AdminState) -> Router {
    let viewer = archtrace_web::server::router(state.source.clone(), state.baseline.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/snapshot", get(snapshot))
        .with_state(state.clone())
        .merge(viewer)
        .layer(middleware::from_fn_with_state(state, require_token))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if state.auth.allows(header) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token: send `Authorization: Bearer <token>`\n",
        )
            .into_response()
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

#[derive(serde::Deserialize)]
struct SnapshotQuery {
    since: Option<String>,
    until: Option<String>,
    env: Option<String>,
    level: Option<String>,
}

/// `GET /api/v1/snapshot?since=1h&until=...&env=...&level=service|operation`: the analysed
/// snapshot JSON. `level=service` leaves out the operation-level edges.
async fn snapshot(State(state): State<AdminState>, Query(query): Query<SnapshotQuery>) -> Response {
    let bad_request =
        |message: String| (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    let window = match Window::parse(query.since.as_deref(), query.until.as_deref(), now_ns()) {
        Ok(window) => window.in_environment(query.env.filter(|e| !e.is_empty())),
        Err(err) => return bad_request(err.to_string()),
    };
    let level = match query.level.as_deref().map(str::parse::<Level>).transpose() {
        Ok(level) => level,
        Err(message) => return bad_request(format!("level: {message}")),
    };
    let source = state.source.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        source.snapshot(&window).map(|snapshot| {
            let mut snapshot = Analyzed::new(snapshot, &Settings::default()).snapshot;
            if level == Some(Level::Service) {
                snapshot.operations.clear();
            }
            snapshot
        })
    })
    .await;
    match outcome {
        Ok(Ok(snapshot)) => axum::Json(snapshot).into_response(),
        Ok(Err(err)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", error_chain(&err)),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "snapshot query panicked\n",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&state.ingest, &state.writer),
    )
        .into_response()
}

pub fn render_metrics(ingest: &IngestMetrics, writer: &WriterMetrics) -> String {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "archtrace_spans_received_total",
        "Spans received in export requests.",
        load(&ingest.spans_received),
    );
    counter(
        "archtrace_spans_accepted_total",
        "Spans committed to the store and acknowledged.",
        load(&ingest.spans_accepted),
    );
    counter(
        "archtrace_spans_rejected_total",
        "Spans rejected as invalid (reported through partial_success).",
        load(&ingest.spans_rejected),
    );
    counter(
        "archtrace_spans_refused_total",
        "Valid spans refused because the queue was full or the store failed; clients retry them.",
        load(&ingest.spans_refused),
    );
    counter(
        "archtrace_store_commits_total",
        "Group commits to the store.",
        load(&writer.commits),
    );
    counter(
        "archtrace_store_commit_failures_total",
        "Group commits that failed.",
        load(&writer.commit_failures),
    );
    let _ = writeln!(
        out,
        "# HELP archtrace_requests_total Export requests by transport and outcome.\n# TYPE archtrace_requests_total counter"
    );
    for transport in Transport::ALL {
        for outcome in Outcome::ALL {
            let _ = writeln!(
                out,
                "archtrace_requests_total{{transport=\"{}\",outcome=\"{}\"}} {}",
                transport.as_str(),
                outcome.as_str(),
                ingest.requests(transport, outcome)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP archtrace_requests_in_flight Export requests admitted and not yet answered.\n# TYPE archtrace_requests_in_flight gauge\narchtrace_requests_in_flight {}",
        load(&ingest.requests_in_flight)
    );
    let _ = writeln!(
        out,
        "# HELP archtrace_queue_spans Spans waiting for the writer.\n# TYPE archtrace_queue_spans gauge\narchtrace_queue_spans {}",
        load(&writer.queued_spans)
    );
    let _ = writeln!(
        out,
        "# HELP archtrace_queue_bytes Request bytes waiting for the writer.\n# TYPE archtrace_queue_bytes gauge\narchtrace_queue_bytes {}",
        load(&writer.queued_bytes)
    );
    let _ = writeln!(
        out,
        "# HELP archtrace_store_commit_seconds Latency of one group commit.\n# TYPE archtrace_store_commit_seconds histogram"
    );
    let mut cumulative = 0;
    for (index, bound) in COMMIT_BUCKETS_SECONDS.iter().enumerate() {
        cumulative += load(&writer.commit_latency_buckets[index]);
        let _ = writeln!(
            out,
            "archtrace_store_commit_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += load(&writer.commit_latency_buckets[COMMIT_BUCKETS_SECONDS.len()]);
    let _ = writeln!(
        out,
        "archtrace_store_commit_seconds_bucket{{le=\"+Inf\"}} {cumulative}\narchtrace_store_commit_seconds_sum {}\narchtrace_store_commit_seconds_count {cumulative}",
        load(&writer.commit_latency_sum_micros) as f64 / 1e6
    );
    out
}
