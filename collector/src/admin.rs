//! The admin listener: health, readiness, Prometheus metrics, the snapshot API and the web
//! viewer, all behind the bearer token when one is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::snapshot::Level;
use archtrace_analyzer::time::now_ns;
use archtrace_query::history::EventsRequest;
use archtrace_query::store::StoreSource;
use archtrace_query::{error_chain, SnapshotSource, Window};

use archtrace_web::server::References;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use crate::auth::Auth;
use crate::exposition::{self, ServerSeries};
use crate::ingest::IngestMetrics;
use crate::journal::LogState;
use crate::live::DeriverMetrics;
use crate::loader::LoaderMetrics;
use crate::notify::NotifyMetrics;
use crate::retention::RetentionMetrics;

#[derive(Clone)]
pub struct AdminState {
    pub ingest: Arc<IngestMetrics>,
    pub log: Arc<LogState>,
    pub loader: Arc<LoaderMetrics>,
    pub deriver: Arc<DeriverMetrics>,
    pub retention: Arc<RetentionMetrics>,
    pub notify: Arc<NotifyMetrics>,
    /// False once shutdown has begun, so load balancers stop sending.
    pub ready: Arc<AtomicBool>,
    pub auth: Auth,
    /// The store with the buckets not yet written; queries run off the async runtime.
    pub source: Arc<StoreSource>,
    /// What the viewer's drift and conformance pages compare with, when configured.
    pub references: References,
}

/// The window of the architecture gauges on `/metrics`.
const ARCHITECTURE_WINDOW_NS: i64 = 24 * 3_600_000_000_000;

/// What a scrape of `/metrics` reads.
#[derive(Clone)]
struct Scrape {
    registry: Arc<Registry>,
    source: Arc<StoreSource>,
}

pub fn router(state: AdminState) -> Router {
    let viewer = archtrace_web::server::router(state.source.clone(), state.references.clone());
    let source: Arc<dyn SnapshotSource> = state.source.clone();
    let scrape = Scrape {
        registry: Arc::new(exposition::server_registry(ServerSeries {
            ingest: state.ingest.clone(),
            log: state.log.clone(),
            loader: state.loader.clone(),
            deriver: state.deriver.clone(),
            retention: state.retention.clone(),
            notify: state.notify.clone(),
        })),
        source: state.source.clone(),
    };
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(scrape)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state.clone())
        .merge(query_api(source))
        .merge(viewer)
        .layer(middleware::from_fn_with_state(state.auth, require_token))
}

/// The viewer and the query APIs over a store no ingest runs beside (ClickHouse buckets that
/// derive workers write): health, the snapshot API, Jaeger's dependencies API, the viewer.
pub fn read_only_router(
    source: Arc<dyn SnapshotSource>,
    references: References,
    auth: Auth,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(query_api(source.clone()))
        .merge(archtrace_web::server::router(source, references))
        .layer(middleware::from_fn_with_state(auth, require_token))
}

/// The snapshot API and Jaeger's dependencies API over any source.
fn query_api(source: Arc<dyn SnapshotSource>) -> Router {
    Router::new()
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/events", get(events))
        .route("/api/dependencies", get(jaeger_dependencies))
        .with_state(source)
}

async fn require_token(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.allows(header) {
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
    if state.log.has_failed() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request log failed and takes no requests (the log says why); restart archtrace\n",
        )
            .into_response()
    } else if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

#[derive(serde::Deserialize)]
struct SnapshotQuery {
    since: Option<String>,
    until: Option<String>,
    at: Option<String>,
    env: Option<String>,
    level: Option<String>,
}

/// `GET /api/v1/snapshot?since=1h&until=...&env=...&level=service|operation` (or `at=WHEN`,
/// the hour before an instant): the analysed
/// snapshot JSON. `level=service` leaves out the operation-level edges.
async fn snapshot(
    State(source): State<Arc<dyn SnapshotSource>>,
    Query(query): Query<SnapshotQuery>,
) -> Response {
    let bad_request =
        |message: String| (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    let window = match query.at.as_deref() {
        Some(at) => Window::at(at, now_ns()),
        None => Window::parse(query.since.as_deref(), query.until.as_deref(), now_ns()),
    };
    let window = match window {
        Ok(window) => window.in_environment(query.env.filter(|e| !e.is_empty())),
        Err(err) => return bad_request(err.to_string()),
    };
    let level = match query.level.as_deref().map(str::parse::<Level>).transpose() {
        Ok(level) => level,
        Err(message) => return bad_request(format!("level: {message}")),
    };
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

/// `GET /api/v1/events?since=7d&until=...&step=1h&gone_after=24h&kind=new_edge,edge_gone&
/// severity=warning&service=cart&thresholds={"spof_min_dominated":3}` (or `at=WHEN`): the
/// architecture's events and trend points over the window, as `archtrace events --format json`.
async fn events(
    State(source): State<Arc<dyn SnapshotSource>>,
    Query(request): Query<EventsRequest>,
) -> Response {
    let resolved = match request.resolve(now_ns(), &Settings::default()) {
        Ok(resolved) => resolved,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let mut history = source.history(&resolved.window, &resolved.query)?;
        resolved.filter.apply(&mut history);
        Ok::<_, archtrace_query::QueryError>(history)
    })
    .await;
    match outcome {
        Ok(Ok(history)) => axum::Json(history).into_response(),
        Ok(Err(err)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", error_chain(&err)),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "events query panicked\n").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct DependenciesQuery {
    #[serde(rename = "endTs")]
    end_ts: Option<String>,
    lookback: Option<String>,
}

/// The window of Jaeger's dependencies query: `endTs` (Unix ms, default now) and `lookback`
/// (ms, default 24 h, as Jaeger's query service).
fn dependencies_window(query: &DependenciesQuery, now_ns: i64) -> Result<Window, String> {
    let millis = |name: &str, value: Option<&str>, default: i64| match value {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| format!("{name}={text:?}: expected a positive number of milliseconds")),
    };
    let end_ms = millis("endTs", query.end_ts.as_deref(), now_ns / 1_000_000)?;
    let lookback_ms = millis("lookback", query.lookback.as_deref(), 24 * 3_600_000)?;
    let until_ns = end_ms.saturating_mul(1_000_000);
    Window::new(
        until_ns.saturating_sub(lookback_ms.saturating_mul(1_000_000)),
        until_ns,
    )
    .map_err(|err| err.to_string())
}

/// Jaeger's structured response: `{"data", "total", "limit", "offset", "errors"}`.
fn jaeger_response(status: StatusCode, data: serde_json::Value, error: Option<String>) -> Response {
    let errors = error.map(|msg| serde_json::json!([{ "code": status.as_u16(), "msg": msg }]));
    (
        status,
        axum::Json(serde_json::json!({
            "data": data, "total": 0, "limit": 0, "offset": 0, "errors": errors,
        })),
    )
        .into_response()
}

/// `GET /api/dependencies?endTs=<ms>&lookback=<ms>` as Jaeger's query service answers it, so that
/// Grafana's Jaeger data source draws its dependency graph from archtrace: one link per
/// caller and callee with the calls in the window (sync and async summed; the synthetic `user`
/// caller of entry points is left out, as Jaeger has no such service).
async fn jaeger_dependencies(
    State(source): State<Arc<dyn SnapshotSource>>,
    Query(query): Query<DependenciesQuery>,
) -> Response {
    let window = match dependencies_window(&query, now_ns()) {
        Ok(window) => window,
        Err(message) => {
            return jaeger_response(
                StatusCode::BAD_REQUEST,
                serde_json::Value::Null,
                Some(message),
            )
        }
    };
    let outcome = tokio::task::spawn_blocking(move || source.snapshot(&window)).await;
    match outcome {
        Ok(Ok(snapshot)) => {
            let mut links: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
            for edge in &snapshot.edges {
                if edge.from != archtrace_analyzer::derive::USER_NODE {
                    *links.entry((&edge.from, &edge.to)).or_default() += edge.calls;
                }
            }
            let data = links
                .into_iter()
                .map(|((parent, child), calls)| {
                    serde_json::json!({ "parent": parent, "child": child, "callCount": calls })
                })
                .collect();
            jaeger_response(StatusCode::OK, data, None)
        }
        Ok(Err(err)) => jaeger_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::Value::Null,
            Some(error_chain(&err)),
        ),
        Err(_) => jaeger_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::Value::Null,
            Some("dependencies query panicked".into()),
        ),
    }
}

/// `GET /metrics`: the server's series, and the architecture of the last 24 hours as gauges
/// (left out, with a warning in the log, when the store cannot be read).
async fn metrics(State(state): State<Scrape>) -> Response {
    let source = state.source.clone();
    let architecture = tokio::task::spawn_blocking(move || {
        let window = Window::new(now_ns() - ARCHITECTURE_WINDOW_NS, now_ns())?;
        source.analyzed(&window, &Settings::default())
    })
    .await;
    let architecture = match architecture {
        Ok(Ok(analyzed)) => Some(exposition::architecture_registry(&analyzed)),
        Ok(Err(err)) => {
            tracing::warn!(error = %error_chain(&err), "/metrics without the architecture gauges");
            None
        }
        Err(_) => None,
    };
    let mut registries = vec![state.registry.as_ref()];
    registries.extend(architecture.as_ref());
    (
        [(header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        exposition::render(&registries),
    )
        .into_response()
}
