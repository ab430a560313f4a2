//! The web viewer in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real server fed by the demo workload, hostile service names, a 500-service graph,
//! and the exported report opened from disk. Screenshots land in the target directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use archtrace_analyzer::snapshot::Snapshot;
use archtrace_formats::otlp::{resource_spans, string_attribute};
use fantoccini::actions::InputSource;
use fantoccini::{Client, ClientBuilder, Locator};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use serde_json::{json, Value};

use crate::support::{
    binary, free_port, quick_assembly, succeeded, InProcessServer, KillOnDrop, ANY_FREE_PORTS,
};

/// chromedriver on a free port.
pub(crate) struct Driver {
    _process: KillOnDrop,
    url: String,
}

pub(crate) async fn start_browser() -> (Driver, Client) {
    let port = free_port();
    let process = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is needed for the browser tests: apt-get install chromium chromium-driver (scripts/test installs them)");
    let driver = Driver {
        _process: KillOnDrop(process),
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/status", driver.url))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}),
    );
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless Chromium");
    (driver, client)
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Loads a page and waits until its script has run.
pub(crate) async fn open(client: &Client, url: &str) {
    client.goto(url).await.unwrap();
    wait_until_ready(client, url).await;
}

/// Clicks what leads to another page and waits until that page's script has run.
pub(crate) async fn click_through(client: &Client, locator: Locator<'_>) {
    // The page being left is ready too: unmark it, or the wait could end before the next page
    // has even loaded.
    script(client, "document.body.removeAttribute('data-ready')").await;
    client.find(locator).await.unwrap().click().await.unwrap();
    wait_until_ready(client, &format!("{locator:?}")).await;
}

async fn wait_until_ready(client: &Client, what: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("body[data-ready='true']"))
        .await
        .unwrap_or_else(|e| panic!("{what} did not finish loading: {e}"));
}

async fn script(client: &Client, code: &str) -> Value {
    client.execute(code, vec![]).await.unwrap()
}

pub(crate) async fn count(client: &Client, css: &str) -> usize {
    client.find_all(Locator::Css(css)).await.unwrap().len()
}

pub(crate) async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

struct Demo {
    process: KillOnDrop,
    admin: String,
}

/// `archtrace demo` on free ports, with `extra` arguments.
fn start_demo_with(extra: &[&std::ffi::OsStr]) -> Demo {
    use std::io::{BufRead, BufReader};
    let mut process = Command::new(binary())
        .arg("demo")
        .args(ANY_FREE_PORTS)
        .args(["--trace-idle", "300ms", "--requests-per-second", "50"])
        .args(extra)
        .env_remove("ARCHTRACE_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let admin = first
        .split_whitespace()
        .find_map(|part| part.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("no admin address in {first:?}"))
        .to_owned();
    // Keep draining stdout so the process never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Demo {
        process: KillOnDrop(process),
        admin: format!("http://{admin}"),
    }
}

fn start_demo() -> Demo {
    start_demo_with(&[])
}

async fn snapshot(admin: &str) -> Snapshot {
    reqwest::get(format!("{admin}/api/v1/snapshot?since=1h"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The demo with all of its 13 services and their edges derived, and a browser.
async fn demo_in_browser() -> (Demo, Snapshot, Driver, Client) {
    let demo = start_demo();
    // Wait for every simulated service and the asynchronous consumers to appear.
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let live = snapshot(&demo.admin).await;
        let services = live
            .nodes
            .iter()
            .filter(|n| n.node_type == archtrace_analyzer::derive::NodeType::Service)
            .count();
        if services == 13 && live.edges.len() >= 24 {
            break live;
        }
        assert!(
            Instant::now() < deadline,
            "the demo never showed its 13 services: {live:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (driver, client) = start_browser().await;
    (demo, live, driver, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_shows_the_demo_system_and_lights_up_neighbours() {
    let (demo, live, _driver, client) = demo_in_browser().await;
    open(&client, &format!("{}/", demo.admin)).await;
    assert_eq!(text(&client, "#services").await, "13");
    assert!(count(&client, "svg#graph g.node").await >= live.nodes.len());
    assert!(
        count(&client, "svg#graph path.edge.async").await >= 2,
        "dashed queue edges"
    );
    assert!(count(&client, "table.hotspots tbody tr").await >= 5);
    let findings = text(&client, "ul.findings").await;
    assert!(findings.contains("sync_cycle"), "{findings}");
    assert!(findings.contains("shared_database"), "{findings}");
    assert!(findings.contains("chatty_edge"), "{findings}");
    let policy = reqwest::get(format!("{}/", demo.admin))
        .await
        .unwrap()
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"));
    screenshot(&client, "overview").await;

    // Hovering a node lights up its neighbours.
    let frontend = client
        .find(Locator::Css("svg#graph g.node[data-id='frontend']"))
        .await
        .unwrap();
    client
        .perform_actions(fantoccini::actions::MouseActions::new("mouse".into()).then(
            fantoccini::actions::PointerAction::MoveToElement {
                element: frontend.clone(),
                duration: None,
                x: 0.0,
                y: 0.0,
            },
        ))
        .await
        .unwrap();
    assert!(count(&client, "svg#graph.highlighting").await == 1);
    let lit = count(&client, "svg#graph g.node.lit").await;
    let neighbours: std::collections::BTreeSet<&str> = live
        .edges
        .iter()
        .filter(|e| e.from == "frontend" || e.to == "frontend")
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    assert_eq!(
        lit,
        neighbours.len(),
        "frontend and its neighbours {neighbours:?}"
    );

    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hotspot_opens_its_service_page_with_charts() {
    let (demo, _live, _driver, client) = demo_in_browser().await;
    open(&client, &format!("{}/", demo.admin)).await;
    let first_hotspot = Locator::Css("table.hotspots a.service");
    let service = client
        .find(first_hotspot)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    click_through(&client, first_hotspot).await;
    assert_eq!(text(&client, "h1").await, service);
    assert_eq!(count(&client, "figure.chart svg").await, 3);
    assert!(client
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/service/"));
    screenshot(&client, "service").await;

    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_page_shows_critical_paths_and_how_callers_cope_with_failures() {
    use archtrace_analyzer::resilience::{describe, duration};
    let (demo, _live, _driver, client) = demo_in_browser().await;
    // The home page times ads out at 250 ms: wait until the demo's failed calls show it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let live = snapshot(&demo.admin).await;
        let timed = live
            .edges
            .iter()
            .any(|e| e.from == "frontend" && e.to == "ads" && e.resilience.timeout_ms.is_some());
        if timed {
            break live;
        }
        assert!(Instant::now() < deadline, "no timeout on frontend → ads");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    open(&client, &format!("{}/service/frontend", demo.admin)).await;
    let mut cells = BTreeMap::new();
    for row in client
        .find_all(Locator::Css("table.edges tbody tr"))
        .await
        .unwrap()
    {
        let tds = row.find_all(Locator::Css("td")).await.unwrap();
        cells.insert(
            tds[0].text().await.unwrap(),
            tds.last().unwrap().text().await.unwrap(),
        );
    }
    let ads = live
        .edges
        .iter()
        .find(|e| e.from == "frontend" && e.to == "ads")
        .unwrap();
    let timeout = format!("timeout {}", duration(ads.resilience.timeout_ms.unwrap()));
    assert!(describe(&ads.resilience).contains(&timeout));
    assert!(cells["ads"].contains(&timeout), "{cells:?}");
    // gateway's own entry operations each show where their time goes.
    open(&client, &format!("{}/service/gateway", demo.admin)).await;
    let paths = client
        .find_all(Locator::Css("p.critical-path"))
        .await
        .unwrap();
    let expected: BTreeSet<&str> = live
        .entry_operations
        .iter()
        .filter(|e| e.service == "gateway" && !e.critical_path.is_empty())
        .map(|e| e.operation.as_str())
        .collect();
    assert_eq!(paths.len(), expected.len());
    for path in paths {
        let text = path.text().await.unwrap();
        let operation = text.split(": ").next().unwrap();
        assert!(expected.contains(operation), "{text}");
        assert!(text.contains("p99s add up to"), "{text}");
    }
    // The payment API is on the critical path of checkout, and only of what reaches it.
    open(
        &client,
        &format!("{}/service/api.payments.example", demo.admin),
    )
    .await;
    let mut shown = BTreeSet::new();
    for row in client
        .find_all(Locator::Css("table.critical-path tbody tr"))
        .await
        .unwrap()
    {
        let first = row.find(Locator::Css("td")).await.unwrap();
        shown.insert(first.text().await.unwrap());
    }
    assert_eq!(shown, BTreeSet::from(["gateway: GET /checkout".to_owned()]));
    screenshot(&client, "service-critical-path").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_page_says_which_entry_operations_fail_with_it() {
    use archtrace_analyzer::impact::{impact, Outcome, Target};
    let (demo, _live, _driver, client) = demo_in_browser().await;
    // The shop's email service sits behind the orders queue: checkout degrades without it.
    for service in ["auth", "email"] {
        let expected = impact(
            &snapshot(&demo.admin).await,
            &[Target::Node(service.to_owned())],
        )
        .unwrap();
        open(&client, &format!("{}/service/{service}", demo.admin)).await;
        let rows = client
            .find_all(Locator::Css("table.impact tbody tr"))
            .await
            .unwrap();
        let mut shown = Vec::new();
        for row in rows {
            let cells = row.find_all(Locator::Css("td")).await.unwrap();
            shown.push((
                cells[0].text().await.unwrap(),
                cells[1].text().await.unwrap(),
            ));
        }
        let wanted: Vec<(String, String)> = expected
            .entries
            .iter()
            .map(|e| {
                (
                    e.outcome.as_str().to_owned(),
                    format!("{}: {}", e.service, e.operation),
                )
            })
            .collect();
        // The demo keeps sending, so the busiest-first order may change between the two reads.
        let (mut shown, mut wanted) = (shown, wanted);
        shown.sort();
        wanted.sort();
        assert_eq!(shown, wanted, "{service}");
        let outcome = if service == "auth" {
            Outcome::Fails
        } else {
            Outcome::Degrades
        };
        assert!(
            !wanted.is_empty() && expected.entries.iter().all(|e| e.outcome == outcome),
            "{service}: {wanted:?}"
        );
        assert!(text(&client, "p.impact")
            .await
            .starts_with(&format!("If {service} fails:")));
    }
    screenshot(&client, "service-impact").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_graph_page_searches_focuses_and_switches_level() {
    let (demo, live, _driver, client) = demo_in_browser().await;
    open(&client, &format!("{}/graph", demo.admin)).await;
    let search = client.find(Locator::Css("#search")).await.unwrap();
    search.send_keys("invent").await.unwrap();
    assert_eq!(text(&client, "#search-count").await, "1 match");
    assert_eq!(count(&client, "svg#graph g.node.match").await, 1);
    let focus = client.find(Locator::Css("select#focus")).await.unwrap();
    focus.select_by_value("payment").await.unwrap();
    click_through(&client, Locator::Css("form.focus button")).await;
    assert!(client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("focus=payment"));
    let around_payment: std::collections::BTreeSet<&str> = live
        .edges
        .iter()
        .filter(|e| e.from == "payment" || e.to == "payment")
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    assert_eq!(
        count(&client, "svg#graph g.node").await,
        around_payment.len()
    );
    screenshot(&client, "graph-focus").await;
    click_through(&client, Locator::LinkText("operations")).await;
    let ids = script(
        &client,
        "return Array.from(document.querySelectorAll('svg#graph g.node')).map(n => n.dataset.id)",
    )
    .await;
    assert!(
        ids.as_array()
            .unwrap()
            .iter()
            .any(|id| id.as_str().unwrap().starts_with("payment · ")),
        "{ids}"
    );

    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_filter_keeps_its_state_in_the_url() {
    let (demo, _live, _driver, client) = demo_in_browser().await;
    // Staging gets a fifth of the traffic, so it may still be catching up with production.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        open(&client, &format!("{}/?env=staging", demo.admin)).await;
        let services = text(&client, "#services").await;
        if services == "13" || Instant::now() > deadline {
            assert_eq!(services, "13", "every service shows in staging too");
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let selected = script(
        &client,
        "return document.querySelector('select[name=env]').value",
    )
    .await;
    assert_eq!(selected, "staging");
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drift_page_compares_with_the_previous_or_a_given_window() {
    let (demo, _live, _driver, client) = demo_in_browser().await;
    open(
        &client,
        &format!("{}/drift?since=10m&compare=previous", demo.admin),
    )
    .await;
    assert_eq!(text(&client, "h1").await, "Drift");
    assert!(text(&client, "p.compare").await.contains("previous window"));
    // Everything is new against the empty window before the demo started.
    assert!(count(&client, "ul.added li").await >= 20);
    assert!(count(&client, "svg#graph path.edge.added").await >= 20);
    screenshot(&client, "drift").await;
    // Against a window given by hand (before the demo started: empty), the same.
    open(
        &client,
        &format!("{}/drift?since=10m&base_since=3h&base_until=2h", demo.admin),
    )
    .await;
    assert!(text(&client, "p.compare").await.contains("the window"));
    assert!(count(&client, "ul.added li").await >= 20);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_stops_cleanly_on_ctrl_c() {
    let mut demo = start_demo();
    // Stopped once it is serving and its simulation is sending.
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshot(&demo.admin).await.edges.is_empty() {
        assert!(Instant::now() < deadline, "the demo never sent traffic");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stopped = Command::new("kill")
        .args(["-INT", &demo.process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.process.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// One trace per (caller, callees): a server span of the caller with a client span and the
/// callee's server span for each callee.
fn calls_request(calls: &[(String, Vec<String>)]) -> ExportTraceServiceRequest {
    let mut by_service: std::collections::BTreeMap<String, Vec<Span>> = Default::default();
    let mut next_id = 1u64;
    let mut id = || {
        next_id += 1;
        next_id.to_be_bytes().to_vec()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for (t, (caller, callees)) in calls.iter().enumerate() {
        let trace_id = [(t as u128 + 1).to_be_bytes()].concat();
        let root = id();
        let span = |span_id: Vec<u8>, parent: Vec<u8>, name: &str, kind: SpanKind| Span {
            trace_id: trace_id.clone(),
            span_id,
            parent_span_id: parent,
            name: name.to_owned(),
            kind: kind as i32,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            ..Default::default()
        };
        by_service.entry(caller.clone()).or_default().push(span(
            root.clone(),
            vec![],
            "GET /",
            SpanKind::Server,
        ));
        for callee in callees {
            let client = id();
            let mut client_span = span(client.clone(), root.clone(), "GET", SpanKind::Client);
            if callee == "orders-db" {
                client_span.attributes = vec![
                    string_attribute("db.system.name", "postgresql"),
                    string_attribute("db.namespace", "orders-db"),
                ];
                by_service
                    .entry(caller.clone())
                    .or_default()
                    .push(client_span);
                continue;
            }
            by_service
                .entry(caller.clone())
                .or_default()
                .push(client_span);
            by_service.entry(callee.clone()).or_default().push(span(
                id(),
                client,
                "GET /x",
                SpanKind::Server,
            ));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| {
                resource_spans(vec![string_attribute("service.name", service)], spans)
            })
            .collect(),
    }
}

/// Sends the request and waits until the live graph has `nodes` nodes.
async fn feed(
    server: &InProcessServer,
    request: ExportTraceServiceRequest,
    nodes: usize,
) -> Snapshot {
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    client.export(request).await.unwrap();
    let snapshot = server.live_snapshot_when(|s| s.nodes.len() >= nodes).await;
    assert_eq!(snapshot.nodes.len(), nodes, "{:#?}", snapshot.nodes);
    snapshot
}

const SCRIPT_NAME: &str = "<script>document.body.dataset.pwned='script'</script>";
const IMG_NAME: &str = "\"><img src=x onerror=\"document.body.dataset.pwned='img'\">";

#[tokio::test(flavor = "multi_thread")]
async fn hostile_service_names_are_shown_as_text_and_never_run() {
    let server = InProcessServer::start(quick_assembly()).await;
    feed(
        &server,
        calls_request(&[
            (
                SCRIPT_NAME.to_owned(),
                vec![IMG_NAME.to_owned(), "orders-db".to_owned()],
            ),
            ("gateway".to_owned(), vec![SCRIPT_NAME.to_owned()]),
        ]),
        5,
    )
    .await;
    let (_driver, client) = start_browser().await;
    let admin = server.admin_url("");
    let service_url = |name: &str| {
        format!(
            "{admin}/service/{}",
            archtrace_web::server::path_segment(name)
        )
    };
    for (page, url) in [
        ("overview", format!("{admin}/")),
        ("graph", format!("{admin}/graph")),
        ("graph-operations", format!("{admin}/graph?level=operation")),
        ("service-script", service_url(SCRIPT_NAME)),
        ("service-img", service_url(IMG_NAME)),
        ("drift", format!("{admin}/drift?compare=previous")),
    ] {
        open(&client, &url).await;
        assert_eq!(
            script(&client, "return document.body.dataset.pwned || null").await,
            Value::Null,
            "{page}: a hostile name ran"
        );
        assert!(client.get_alert_text().await.is_err(), "{page}: no dialog");
        assert_eq!(
            count(&client, "img").await,
            0,
            "{page}: no injected element"
        );
        assert_eq!(
            script(&client, "return document.scripts.length").await,
            1,
            "{page}: only app.js"
        );
        let shown = script(&client, "return document.body.innerText").await;
        let shown = shown.as_str().unwrap();
        assert!(
            shown.contains("<script>document.body.dataset.pwned"),
            "{page}: the name is shown as text"
        );
        screenshot(&client, &format!("hostile-{page}")).await;
    }
    // The service page of the <img> name shows it as its title.
    open(&client, &service_url(IMG_NAME)).await;
    assert_eq!(text(&client, "h1").await, IMG_NAME);
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_service_graph_stays_usable() {
    let server = InProcessServer::start(quick_assembly()).await;
    let names: Vec<String> = (0..500).map(|i| format!("service-{i:03}")).collect();
    // A layered system: each service calls up to three services further down.
    let calls: Vec<(String, Vec<String>)> = (0..500)
        .map(|i| {
            let callees = [7, 31, 97]
                .iter()
                .map(|step| i + step)
                .filter(|j| *j < 500)
                .map(|j| names[j].clone())
                .collect();
            (names[i].clone(), callees)
        })
        .collect();
    let live = feed(&server, calls_request(&calls), 501).await;
    let (_driver, client) = start_browser().await;
    let admin = server.admin_url("");
    open(&client, &format!("{admin}/graph")).await;
    assert_eq!(
        count(&client, "svg#graph g.node").await,
        501,
        "every service and the user"
    );
    let search = client.find(Locator::Css("#search")).await.unwrap();
    search.send_keys("service-420").await.unwrap();
    assert_eq!(text(&client, "#search-count").await, "1 match");
    screenshot(&client, "graph-500-search").await;

    open(&client, &format!("{admin}/graph?focus=service-420&hops=1")).await;
    let expected: std::collections::BTreeSet<&str> = live
        .edges
        .iter()
        .filter(|e| e.from == "service-420" || e.to == "service-420")
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    assert_eq!(count(&client, "svg#graph g.node").await, expected.len());
    screenshot(&client, "graph-500-focus").await;

    // Zooming changes the view box; the drawing stays the same size on the page.
    let before = script(
        &client,
        "return document.getElementById('graph').getAttribute('viewBox')",
    )
    .await;
    open(&client, &format!("{admin}/graph")).await;
    let svg = client.find(Locator::Css("svg#graph")).await.unwrap();
    client
        .execute(
            "arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: -300, clientX: 300, clientY: 300, bubbles: true, cancelable: true}))",
            vec![serde_json::to_value(&svg).unwrap()],
        )
        .await
        .unwrap();
    let after = script(
        &client,
        "return document.getElementById('graph').getAttribute('viewBox')",
    )
    .await;
    assert_ne!(before, after, "zoomed");
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_works_opened_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let traces = crate::support::json_files("jaeger-hotel-reservation");
    succeeded(
        Command::new(binary())
            .arg("report")
            .arg("--traces")
            .args(&traces)
            .arg("-o")
            .arg(&report),
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        !html.contains("src=\"/static") && !html.contains("href=\"/static"),
        "nothing to fetch"
    );
    let (offline, _) = crate::support::snapshot_from_files(&traces);

    let (_driver, client) = start_browser().await;
    open(&client, &format!("file://{}", report.display())).await;
    assert_eq!(
        count(&client, "svg#graph g.node").await,
        offline.nodes.len()
    );
    assert_eq!(
        text(&client, "#edges").await,
        offline.edges.len().to_string()
    );
    let first = client
        .find(Locator::Css("table.hotspots a.service"))
        .await
        .unwrap();
    let service = first.text().await.unwrap();
    first.click().await.unwrap();
    let url = client.current_url().await.unwrap();
    let section = url.fragment().expect("a link within the report").to_owned();
    let heading = text(&client, &format!("section#{section} h2")).await;
    assert_eq!(heading, service);
    assert_eq!(
        count(&client, &format!("section#{section} figure.chart svg")).await,
        3
    );
    // Bars of calls and errors (blue, red), the p99 line (magenta).
    for colour in ["#0000FF", "#FF0000"] {
        let css = format!("section#{section} figure.chart svg rect[fill='{colour}']");
        assert!(count(&client, &css).await >= 1, "{css}");
    }
    let css = format!("section#{section} figure.chart svg polyline[stroke='#FF00FF']");
    assert!(count(&client, &css).await >= 1, "{css}");
    screenshot(&client, "report").await;
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_page_marks_what_the_catalog_does_not_declare() {
    // A workspace that declares none of the demo's dependencies, and one of its own between
    // services that never run, one of them with a name that is markup.
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("declared.dsl");
    std::fs::write(
        &workspace,
        "workspace {\n  model {\n    a = softwareSystem \"<b>ghost</b>\"\n    b = softwareSystem \"ghost-db\"\n    a -> b \"reads\"\n  }\n}\n",
    )
    .unwrap();
    let demo = start_demo_with(&["--declared".as_ref(), workspace.as_os_str()]);
    let admin = demo.admin.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshot(&admin).await.edges.len() < 24 {
        assert!(Instant::now() < deadline, "the demo derived no graph");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_driver, client) = start_browser().await;
    open(&client, &format!("{admin}/conformance?since=1h")).await;
    let live = snapshot(&admin).await;
    assert_eq!(text(&client, "h1").await, "Conformance");
    let clients: Vec<&str> = live
        .nodes
        .iter()
        .filter(|n| n.node_type == archtrace_analyzer::derive::NodeType::Client)
        .map(|n| n.id.as_str())
        .collect();
    let mut expected: Vec<(String, String)> = live
        .edges
        .iter()
        .filter(|e| {
            e.from != e.to
                && !clients.contains(&e.from.as_str())
                && !clients.contains(&e.to.as_str())
        })
        .map(|e| (e.from.clone(), e.to.clone()))
        .collect();
    expected.sort();
    expected.dedup();
    let drawn = script(
        &client,
        "return [...document.querySelectorAll('svg#graph path.edge.undeclared')].map(p => [p.dataset.from, p.dataset.to]);",
    )
    .await;
    let mut drawn: Vec<(String, String)> = serde_json::from_value(drawn).unwrap();
    drawn.sort();
    drawn.dedup();
    assert_eq!(drawn, expected);
    let unobserved = script(
        &client,
        "return [...document.querySelectorAll('svg#graph path.edge.unobserved')].map(p => [p.dataset.from, p.dataset.to]);",
    )
    .await;
    assert_eq!(unobserved, json!([["<b>ghost</b>", "ghost-db"]]));
    // The markup in the declared name is shown as text.
    assert_eq!(count(&client, "table.conformance b").await, 0);
    assert!(text(&client, "table.conformance")
        .await
        .contains("<b>ghost</b> -> ghost-db"));
    screenshot(&client, "conformance").await;
    client.close().await.unwrap();
}

/// Every text a person reads on the page that looks like a machine timestamp: an RFC 3339
/// time, or a clock time with sub-second digits.
async fn machine_times(client: &Client) -> Vec<String> {
    let found = script(
        client,
        r"return (document.body.innerText.match(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\d{2}:\d{2}:\d{2}\.\d+/g) || []);",
    )
    .await;
    serde_json::from_value(found).unwrap()
}

/// How much of the graph's frame the drawing fills, as (width, height) ratios.
async fn drawing_fill(client: &Client) -> (f64, f64) {
    let fill = script(
        client,
        "const svg = document.getElementById('graph');
         const frame = svg.getBoundingClientRect();
         const boxes = [...svg.querySelectorAll('g.nodes, g.edges')].map(g => g.getBoundingClientRect());
         const left = Math.max(frame.left, Math.min(...boxes.map(b => b.left)));
         const right = Math.min(frame.right, Math.max(...boxes.map(b => b.right)));
         const top = Math.max(frame.top, Math.min(...boxes.map(b => b.top)));
         const bottom = Math.min(frame.bottom, Math.max(...boxes.map(b => b.bottom)));
         return [(right - left) / frame.width, (bottom - top) / frame.height];",
    )
    .await;
    let fill: Vec<f64> = serde_json::from_value(fill).unwrap();
    (fill[0], fill[1])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_viewer_reads_at_a_glance_at_two_sizes() {
    let (demo, _live, _driver, client) = demo_in_browser().await;
    open(&client, &format!("{}/", demo.admin)).await;
    let riskiest = text(&client, "table.hotspots a.service").await;
    // A desktop window, and the same at 200% zoom (half the CSS pixels).
    for (width, height, name) in [(1400, 1000, "wide"), (700, 900, "zoomed")] {
        client.set_window_size(width, height).await.unwrap();
        for (page, url) in [
            ("overview", format!("{}/", demo.admin)),
            ("graph", format!("{}/graph", demo.admin)),
            ("service", format!("{}/service/{riskiest}", demo.admin)),
        ] {
            open(&client, &url).await;
            screenshot(&client, &format!("glance-{page}-{name}")).await;
            let times = machine_times(&client).await;
            assert!(
                times.is_empty(),
                "{page} at {name}: timestamps for machines: {times:?}"
            );
            let overflow = script(
                &client,
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            )
            .await;
            assert!(
                overflow.as_f64().unwrap() <= 1.0,
                "{page} at {name} scrolls sideways by {overflow}"
            );
            // The drawing fills its frame: no empty bands above and below it.
            let (across, down) = drawing_fill(&client).await;
            assert!(
                across >= 0.8 || down >= 0.8,
                "{page} at {name}: the drawing fills {across:.2} × {down:.2} of its frame"
            );
            assert!(
                down >= 0.6,
                "{page} at {name}: empty bands above and below ({down:.2})"
            );
            // Nodes are reached with the keyboard and say what they are, risk included.
            let first_node = script(
                &client,
                "const a = document.querySelector('svg#graph g.node a'); a.focus();
                 return [document.activeElement === a, a.getAttribute('aria-label')];",
            )
            .await;
            assert_eq!(first_node[0], true, "{page}: a node takes the focus");
            assert!(
                first_node[1].as_str().unwrap().contains("risk"),
                "{first_node}"
            );
        }
    }

    // The overview: the window as a person reads it, hotspots and findings before the graph,
    // findings linking to the graph focused on their subjects, rates per minute of traffic.
    open(&client, &format!("{}/", demo.admin)).await;
    let note = text(&client, "p.window-note").await;
    assert!(
        note.starts_with("last hour (") && note.ends_with(" UTC)"),
        "{note}"
    );
    let order = script(
        &client,
        "const at = s => document.querySelector(s).getBoundingClientRect().top;
         return [at('#hotspots'), at('#findings'), at('.graph-frame')];",
    )
    .await;
    let order: Vec<f64> = serde_json::from_value(order).unwrap();
    assert!(order[0] < order[2] && order[1] < order[2], "{order:?}");
    let focus = script(
        &client,
        "return document.querySelector('#findings a.focus').getAttribute('href');",
    )
    .await;
    assert!(focus.as_str().unwrap().starts_with("/graph?"), "{focus}");
    assert!(focus.as_str().unwrap().contains("focus="), "{focus}");
    assert!(text(&client, ".figures").await.contains("of traffic"));
    assert!(text(&client, ".legend").await.contains("above 66%"));

    // The service page's charts: a clock-time axis over the window, bars for counts.
    open(&client, &format!("{}/service/{riskiest}", demo.admin)).await;
    let axis = script(
        &client,
        "return [...document.querySelectorAll('figure.chart svg text')].map(t => t.textContent.trim());",
    )
    .await;
    let axis: Vec<String> = serde_json::from_value(axis).unwrap();
    let clock = axis
        .iter()
        .filter(|t| {
            t.len() == 5
                && t.as_bytes()[2] == b':'
                && t.replace(':', "").chars().all(|c| c.is_ascii_digit())
        })
        .count();
    assert!(clock >= 6, "clock times on the chart axes: {axis:?}");
    assert!(!axis.iter().any(|t| t.contains("minutes into")), "{axis:?}");
    assert!(count(&client, "figure.chart svg rect[fill='#0000FF']").await >= 1);
    client.close().await.unwrap();
}
