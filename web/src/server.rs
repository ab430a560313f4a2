//! The live viewer on the admin listener. Pages read their window, environment, level and focus
//! from the URL, so a link shows what its sender saw. Every response carries a
//! Content-Security-Policy that allows only this server's own script and style files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::declared::{self, Declared};
use archtrace_analyzer::drift;
use archtrace_analyzer::history::EventKind;
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::time::now_ns;
use archtrace_query::history::EventsRequest;
use archtrace_query::{error_chain, QueryError, SnapshotSource, Window};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped};
use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::pages::{self, Chrome, Links};
use crate::timefmt;
use crate::view::{GraphView, Level};

pub const APP_JS: &str = include_str!("../static/app.js");
pub const APP_CSS: &str = include_str!("../static/app.css");

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The page state every URL carries.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Params {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The hour before this instant, instead of `since` and `until` (time travel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub focus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<usize>,
    /// Drift page: `baseline`, `previous` (the window of the same length before), or
    /// `window` (the one given by `base_since` and `base_until`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_until: Option<String>,
}

impl Params {
    /// Empty values (an unselected filter) mean "not set".
    fn cleaned(mut self) -> Params {
        for field in [
            &mut self.since,
            &mut self.until,
            &mut self.at,
            &mut self.env,
            &mut self.level,
            &mut self.focus,
            &mut self.compare,
            &mut self.base_since,
            &mut self.base_until,
        ] {
            if field.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *field = None;
            }
        }
        self
    }

    fn query(&self) -> String {
        let text = serde_urlencoded::to_string(self).unwrap_or_default();
        if text.is_empty() {
            text
        } else {
            format!("?{text}")
        }
    }

    /// Only what every page shares: the window and the environment.
    fn window_only(&self) -> Params {
        Params {
            since: self.since.clone(),
            until: self.until.clone(),
            at: self.at.clone(),
            env: self.env.clone(),
            ..Params::default()
        }
    }

    fn level(&self) -> Level {
        self.level
            .as_deref()
            .and_then(|level| level.parse().ok())
            .unwrap_or_default()
    }

    /// The window of `since`, `until` and `env`.
    fn window(&self) -> Result<Window, String> {
        match &self.at {
            Some(at) => Window::at(at, now_ns()),
            None => Window::parse(self.since.as_deref(), self.until.as_deref(), now_ns()),
        }
        .map(|window| window.in_environment(self.env.clone()))
        .map_err(|err| err.to_string())
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

struct LiveLinks<'a>(&'a Params);

impl Links for LiveLinks<'_> {
    fn service(&self, name: &str) -> String {
        format!(
            "/service/{}{}",
            path_segment(name),
            self.0.window_only().query()
        )
    }

    fn focus(&self, name: &str) -> String {
        let mut params = self.0.window_only();
        params.focus = Some(name.to_owned());
        format!("/graph{}", params.query())
    }
}

/// What the viewer compares the observed architecture with, when configured.
#[derive(Clone, Debug, Default)]
pub struct References {
    /// The snapshot the drift page compares with by default.
    pub baseline: Option<Snapshot>,
    /// The declared architecture of the Conformance page.
    pub declared: Option<Declared>,
}

#[derive(Clone)]
struct ViewerState {
    source: Arc<dyn SnapshotSource>,
    /// The snapshot the drift page compares with, when one was configured, analysed once.
    baseline: Option<Arc<Analyzed>>,
    declared: Option<Arc<Declared>>,
    settings: Arc<Settings>,
    /// Layouts by graph structure: the same graph is laid out once.
    layouts: Arc<Mutex<HashMap<u64, Arc<Layout>>>>,
}

/// The viewer's pages over `source`, compared with the `references` on the drift and
/// conformance pages.
pub fn router(source: Arc<dyn SnapshotSource>, references: References) -> Router {
    let settings = Settings::default();
    let state = ViewerState {
        source,
        baseline: references
            .baseline
            .map(|b| Arc::new(Analyzed::new(b, &settings))),
        declared: references.declared.map(Arc::new),
        settings: Arc::new(settings),
        layouts: Arc::default(),
    };
    Router::new()
        .route("/", get(overview))
        .route("/graph", get(graph_page))
        .route("/service/{name}", get(service_page))
        .route("/drift", get(drift_page))
        .route("/history", get(history_page))
        .route("/conformance", get(conformance_page))
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS) }),
        )
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (maud::DOCTYPE)
        html { head { title { "archtrace" } link rel="stylesheet" href="/static/app.css"; }
            body { main { h1 { "Cannot show this page" } p.error { (message) } p { a href="/" { "Back to the overview" } } } } }
    };
    (status, Html(body.into_string())).into_response()
}

/// Runs blocking store work off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error_chain(&err),
        )),
        Err(_) => Err(error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the query failed unexpectedly",
        )),
    }
}

const WINDOWS: [(&str, &str); 6] = [
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("6h", "last 6 hours"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

/// The window picker: the usual windows, and the one given when it is none of them.
fn since_select(since: &str) -> Markup {
    let custom = !WINDOWS.iter().any(|(value, _)| *value == since);
    html! {
        label { "Window "
            select name="since" {
                @for (value, label) in WINDOWS {
                    option value=(value) selected[since == value] { (label) }
                }
                @if custom { option value=(since) selected { (since) } }
            }
        }
    }
}

fn window_form(
    params: &Params,
    environments: &[String],
    keep: &[(&str, Option<String>)],
) -> Markup {
    let since = params.since.clone().unwrap_or_else(|| "1h".to_owned());
    html! {
        form.window method="get" {
            (since_select(&since))
            label { " until " input type="text" name="until" placeholder="now" value=[params.until.as_deref()] size="22"; }
            label { " environment "
                select name="env" {
                    option value="" { "all" }
                    @for env in environments {
                        option value=(env) selected[params.env.as_deref() == Some(env)] { (env) }
                    }
                }
            }
            @for (name, value) in keep {
                @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
            }
            button type="submit" { "Apply" }
        }
    }
}

fn chrome<'a>(
    title: &'a str,
    active: &str,
    params: &Params,
    nav: &'a mut Vec<(&'a str, String, bool)>,
    form: Markup,
) -> Chrome<'a> {
    let query = params.window_only().query();
    *nav = vec![
        ("Overview", format!("/{query}"), active == "overview"),
        ("Graph", format!("/graph{query}"), active == "graph"),
        ("Drift", format!("/drift{query}"), active == "drift"),
        ("History", "/history".to_owned(), active == "history"),
        (
            "Conformance",
            format!("/conformance{query}"),
            active == "conformance",
        ),
    ];
    Chrome {
        title,
        nav,
        window_form: form,
        script: Some("/static/app.js"),
        inline_assets: None,
    }
}

fn window_note(snapshot: &Snapshot, params: &Params) -> Markup {
    html! {
        p.window-note {
            (timefmt::window_of(&snapshot.window.start, &snapshot.window.end, now_ns()))
            @if let Some(env) = &params.env { " · environment " strong { (env) } }
        }
    }
}

/// A structural fingerprint of a view, so its layout can be reused.
fn structure_key(view: &GraphView) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for n in &view.nodes {
        n.id.hash(&mut hasher);
    }
    for e in &view.edges {
        (&e.from, &e.to).hash(&mut hasher);
    }
    hasher.finish()
}

fn draw(state: &ViewerState, view: &GraphView, links: &dyn Links) -> String {
    let key = structure_key(view);
    let cached = state
        .layouts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let layout = match cached {
        Some(layout) => layout,
        None => {
            let (names, edges) = crate::svg::indexed(view);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let layout = Arc::new(crate::layout::layered(&refs, &edges));
            let mut layouts = state.layouts.lock().unwrap_or_else(|e| e.into_inner());
            if layouts.len() >= 64 {
                layouts.clear();
            }
            layouts.insert(key, layout.clone());
            layout
        }
    };
    crate::svg::graph(view, &layout, &|service| links.service(service))
}

async fn load(state: &ViewerState, params: &Params) -> Result<(Analyzed, Vec<String>), Response> {
    let window = params
        .window()
        .map_err(|m| error_page(StatusCode::BAD_REQUEST, &m))?;
    let (source, settings) = (state.source.clone(), state.settings.clone());
    blocking(move || Ok((source.analyzed(&window, &settings)?, source.environments()?))).await
}

async fn overview(State(state): State<ViewerState>, Query(params): Query<Params>) -> Response {
    let params = params.cleaned();
    let (analyzed, environments) = match load(&state, &params).await {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let graph = draw(
        &state,
        &GraphView::new(&analyzed, Level::Service),
        &LiveLinks(&params),
    );
    Html(overview_html(
        &analyzed,
        &params,
        &environments,
        Some(graph),
    ))
    .into_response()
}

/// The overview page of a snapshot; `graph` is its drawing when already made (laid out from
/// the cache), else it is laid out and drawn here.
pub fn overview_html(
    analyzed: &Analyzed,
    params: &Params,
    environments: &[String],
    graph: Option<String>,
) -> String {
    let snapshot = &analyzed.snapshot;
    let links = LiveLinks(params);
    let graph = graph
        .unwrap_or_else(|| pages::graph_svg(&GraphView::new(analyzed, Level::Service), &links));
    let body = html! {
        (window_note(snapshot, params))
        (pages::figures(snapshot))
        (pages::summary_sections(analyzed, 10, &links))
        section {
            h2 { "Dependency graph" }
            (pages::legend())
            div.graph-frame { (PreEscaped(graph)) }
        }
        (pages::entry_section(snapshot))
    };
    let mut nav = Vec::new();
    let form = window_form(params, environments, &[]);
    pages::page(chrome("Overview", "overview", params, &mut nav, form), body).into_string()
}

async fn graph_page(State(state): State<ViewerState>, Query(params): Query<Params>) -> Response {
    let params = params.cleaned();
    let (analyzed, environments) = match load(&state, &params).await {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let snapshot = &analyzed.snapshot;
    let links = LiveLinks(&params);
    let level = params.level();
    let hops = params.hops.unwrap_or(1).min(10);
    let mut view = GraphView::new(&analyzed, level);
    if let Some(focus) = &params.focus {
        view = view.focus(focus, hops);
    }
    let graph = draw(&state, &view, &links);
    let mut services: Vec<&str> = snapshot.nodes.iter().map(|n| n.id.as_str()).collect();
    services.sort_unstable();
    let level_link = |level: &str| {
        let mut p = params.clone();
        p.level = Some(level.to_owned());
        format!("/graph{}", p.query())
    };
    let body = html! {
        (window_note(snapshot, &params))
        div.controls {
            label { "Search " input #search type="search" placeholder="service name" autocomplete="off"; }
            span #search-count {}
            form.focus method="get" action="/graph" {
                @for (name, value) in [("since", &params.since), ("until", &params.until), ("at", &params.at), ("env", &params.env), ("level", &params.level)] {
                    @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
                }
                label { "Focus on "
                    select name="focus" #focus {
                        option value="" { "everything" }
                        @for s in &services { option value=(s) selected[params.focus.as_deref() == Some(*s)] { (s) } }
                    }
                }
                label { " within " input type="number" name="hops" min="0" max="10" value=(hops) size="2"; " hops" }
                button type="submit" { "Focus" }
            }
            span.level {
                "Level: "
                a href=(level_link("service")) class=[(level == Level::Service).then_some("active")] { "services" }
                " · "
                a href=(level_link("operation")) class=[(level == Level::Operation).then_some("active")] { "operations" }
            }
        }
        p.hint { "Scroll to zoom, drag to pan, hover a node to see its neighbours, click it for its page." }
        (pages::legend())
        p.counts { (view.nodes.len()) " nodes, " (view.edges.len()) " edges shown" }
        div.graph-frame { (PreEscaped(graph)) }
    };
    let mut nav = Vec::new();
    let form = window_form(
        &params,
        &environments,
        &[
            ("level", params.level.clone()),
            ("focus", params.focus.clone()),
            ("hops", params.hops.map(|h| h.to_string())),
        ],
    );
    Html(pages::page(chrome("Graph", "graph", &params, &mut nav, form), body).into_string())
        .into_response()
}

async fn service_page(
    State(state): State<ViewerState>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    let params = params.cleaned();
    let window = match params.window() {
        Ok(window) => window,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let (source, settings) = (state.source.clone(), state.settings.clone());
    let service = name.clone();
    let loaded = blocking(move || {
        Ok((
            source.analyzed(&window, &settings)?,
            source.series(&service, &window)?,
            source.environments()?,
        ))
    })
    .await;
    let (analyzed, series, environments) = match loaded {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let snapshot = &analyzed.snapshot;
    if !snapshot.nodes.iter().any(|n| n.id == name) {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("No service named {name:?} in this window; pick one on the overview."),
        );
    }
    let links = LiveLinks(&params);
    let neighbourhood = GraphView::new(&analyzed, Level::Service).focus(&name, 1);
    let graph = draw(&state, &neighbourhood, &links);
    let focus_link = {
        let mut p = params.window_only();
        p.focus = Some(name.clone());
        p.hops = Some(2);
        format!("/graph{}", p.query())
    };
    let body = html! {
        (window_note(snapshot, &params))
        (pages::service_body(&analyzed, &name, &series, &links))
        h3 { "Neighbourhood" }
        p { a href=(focus_link) { "Open in the graph, two hops around it" } }
        div.graph-frame { (PreEscaped(graph)) }
    };
    let mut nav = Vec::new();
    let form = window_form(&params, &environments, &[]);
    Html(pages::page(chrome(&name, "", &params, &mut nav, form), body).into_string())
        .into_response()
}

const STEPS: [(&str, &str); 2] = [("1h", "hourly"), ("1m", "by the minute")];

/// The History page's form: window, step, severity, kind and service.
fn history_form(request: &EventsRequest) -> Markup {
    let since = request.since.clone().unwrap_or_else(|| "7d".to_owned());
    let step = request.step.clone().unwrap_or_else(|| "1h".to_owned());
    let kinds = request.kind.clone().unwrap_or_default();
    html! {
        form.window method="get" {
            (since_select(&since))
            label { " steps "
                select name="step" {
                    @for (value, label) in STEPS { option value=(value) selected[step == value] { (label) } }
                    @if !STEPS.iter().any(|(v, _)| *v == step) { option value=(step) selected { (step) } }
                }
            }
            label { " at least "
                select name="severity" {
                    @for severity in ["info", "warning", "error"] {
                        option value=(severity) selected[request.severity.as_deref() == Some(severity)] { (severity) }
                    }
                }
            }
            label { " event "
                select name="kind" {
                    option value="" { "any" }
                    @for kind in EventKind::ALL {
                        option value=(kind.as_str()) selected[kinds == kind.as_str()] { (kind.as_str().replace('_', " ")) }
                    }
                }
            }
            label { " service " input type="text" name="service" value=[request.service.as_deref()] size="14"; }
            @if let Some(gone_after) = &request.gone_after { input type="hidden" name="gone_after" value=(gone_after); }
            @if let Some(thresholds) = &request.thresholds { input type="hidden" name="thresholds" value=(thresholds); }
            button type="submit" { "Apply" }
        }
    }
}

async fn history_page(
    State(state): State<ViewerState>,
    Query(request): Query<EventsRequest>,
) -> Response {
    let resolved = match request.resolve(now_ns(), &state.settings) {
        Ok(resolved) => resolved,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let window = (resolved.window.since_ns, resolved.window.until_ns);
    let source = state.source.clone();
    let history = match blocking(move || {
        let mut history = source.history(&resolved.window, &resolved.query)?;
        resolved.filter.apply(&mut history);
        Ok(history)
    })
    .await
    {
        Ok(history) => history,
        Err(response) => return response,
    };
    let body = html! {
        p.window-note { (timefmt::window(window.0, window.1, now_ns())) }
        (pages::history_body(&history, window))
    };
    let mut nav = Vec::new();
    let params = Params::default();
    let form = history_form(&request);
    Html(pages::page(chrome("History", "history", &params, &mut nav, form), body).into_string())
        .into_response()
}

async fn drift_page(State(state): State<ViewerState>, Query(params): Query<Params>) -> Response {
    let params = params.cleaned();
    let current_window = match params.window() {
        Ok(window) => window,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let configured = state.baseline.clone();
    // The window to compare with: the one given, the previous one, or the baseline file.
    let given = if params.compare.as_deref() == Some("window") || params.base_since.is_some() {
        let base = Params {
            since: params.base_since.clone(),
            until: params.base_until.clone(),
            env: params.env.clone(),
            ..Params::default()
        };
        match base.window() {
            Ok(window) => Some(window),
            Err(message) => {
                return error_page(StatusCode::BAD_REQUEST, &format!("base window: {message}"))
            }
        }
    } else {
        None
    };
    let baseline = if given.is_none() {
        match (params.compare.as_deref(), configured) {
            (Some("previous"), _) => None,
            (Some("baseline"), None) => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "No baseline is configured: start the server with --baseline FILE (a snapshot from `archtrace snapshot`), or compare with the previous window.",
                )
            }
            (_, configured) => configured,
        }
    } else {
        None
    };
    let (source, settings) = (state.source.clone(), state.settings.clone());
    let loaded = blocking(move || {
        let current = source.analyzed(&current_window, &settings)?;
        let (before, label) = match baseline {
            Some(baseline) => {
                let label = format!(
                    "the baseline ({})",
                    timefmt::window_of(
                        &baseline.snapshot.window.start,
                        &baseline.snapshot.window.end,
                        now_ns()
                    )
                );
                (baseline, label)
            }
            None => {
                let (other, what) = match given {
                    Some(window) => (window, "the window"),
                    None => (current_window.previous(), "the previous window"),
                };
                let label = format!(
                    "{what} {}",
                    timefmt::window(other.since_ns, other.until_ns, now_ns())
                );
                (Arc::new(source.analyzed(&other, &settings)?), label)
            }
        };
        Ok((current, before, label, source.environments()?))
    })
    .await;
    let (current, before, label, environments) = match loaded {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let links = LiveLinks(&params);
    let diff = drift::diff(&before.snapshot, &current.snapshot);
    let view = pages::drift_view(&current, &diff, &before);
    let graph = draw(&state, &view, &links);
    let compare_link = |compare: &str| {
        let mut p = params.window_only();
        p.compare = Some(compare.to_owned());
        format!("/drift{}", p.query())
    };
    let body = html! {
        (window_note(&current.snapshot, &params))
        p.compare {
            "Compared with " strong { (label) } ". Compare with: "
            a href=(compare_link("previous")) { "the previous window" }
            @if state.baseline.is_some() { " · " a href=(compare_link("baseline")) { "the baseline" } }
        }
        form.compare-window method="get" action="/drift" {
            @for (name, value) in [("since", &params.since), ("until", &params.until), ("at", &params.at), ("env", &params.env)] {
                @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
            }
            input type="hidden" name="compare" value="window";
            label { "… or with the window from " input type="text" name="base_since" placeholder="2h" value=[params.base_since.as_deref()] size="22"; }
            label { " until " input type="text" name="base_until" placeholder="1h" value=[params.base_until.as_deref()] size="22"; }
            button type="submit" { "Compare" }
        }
        (pages::drift_body(&diff, &graph, &links))
    };
    let mut nav = Vec::new();
    let form = window_form(
        &params,
        &environments,
        &[("compare", params.compare.clone())],
    );
    Html(pages::page(chrome("Drift", "drift", &params, &mut nav, form), body).into_string())
        .into_response()
}

async fn conformance_page(
    State(state): State<ViewerState>,
    Query(params): Query<Params>,
) -> Response {
    let params = params.cleaned();
    let Some(declared) = state.declared.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No declared architecture is configured: start the server with --declared PATH (a Backstage catalog file or folder, a Structurizr workspace .dsl, or a snapshot).",
        );
    };
    let (current, environments) = match load(&state, &params).await {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let links = LiveLinks(&params);
    let result = declared::conform(&current.snapshot, &declared);
    let view = pages::conformance_view(&current, &result);
    let graph = draw(&state, &view, &links);
    let body = html! {
        (window_note(&current.snapshot, &params))
        (pages::conformance_body(&result, &graph, &links))
    };
    let mut nav = Vec::new();
    let form = window_form(&params, &environments, &[]);
    Html(
        pages::page(
            chrome("Conformance", "conformance", &params, &mut nav, form),
            body,
        )
        .into_string(),
    )
    .into_response()
}
