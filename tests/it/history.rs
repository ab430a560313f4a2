//! Architecture history end to end: real services deploy release 1.0, then release 1.1 where
//! cart gains a synchronous call to a new payment service and a database, and frontend stops
//! calling ads. The events API, the CLI, the webhooks and the History page must tell exactly
//! that, with the releases involved.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archtrace_analyzer::history::{Event, EventKind, History, HistorySettings};
use archtrace_analyzer::snapshot::{Severity, Snapshot};
use archtrace_analyzer::time::{now_ns, rfc3339};
use archtrace_collector::notify::NotifySettings;
use archtrace_collector::ServerSettings;
use archtrace_query::HistoryQuery;
use archtrace_store::Location;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use fantoccini::Locator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::browser::{click_through, count, open, start_browser, text};
use crate::instrument::{
    call_at, database_call_at, get_ok, provider_of_release, serve, server_span_at, shutdown, Clock,
};
use crate::support::{binary, quick_assembly, succeeded, InProcessServer};

const HOUR: i64 = 3_600_000_000_000;
const MINUTE: i64 = 60_000_000_000;
const REQUESTS: u64 = 5;

/// One service of a release: what it calls when asked.
#[derive(Clone)]
struct Service {
    tracer: SdkTracer,
    clock: Clock,
    calls: Vec<(String, &'static str)>,
    databases: Vec<(&'static str, &'static str)>,
}

async fn handle(State(service): State<Service>, headers: HeaderMap) -> &'static str {
    let cx = server_span_at(&service.clock, &service.tracer, &headers, "/");
    for (url, peer) in &service.calls {
        call_at(&service.clock, &service.tracer, &cx, url.clone(), peer).await;
    }
    for (system, namespace) in &service.databases {
        database_call_at(&service.clock, &service.tracer, &cx, system, namespace);
    }
    cx.span().end_with_timestamp(service.clock.now());
    "ok"
}

/// A service of a release: its name, its version, whom it calls, and the databases it uses
/// (system, namespace).
type Wiring<'a> = (
    &'static str,
    &'static str,
    &'a [&'static str],
    &'a [(&'static str, &'static str)],
);

/// Runs a release whose clock reads `at` (Unix ns), sends it `REQUESTS` requests, and stops it.
/// Services are listed callers first, and started callees first.
async fn deploy(endpoint: &str, at: i64, wiring: &[Wiring<'_>]) {
    let clock = Clock::behind(Duration::from_nanos((now_ns() - at) as u64));
    let mut urls: Vec<(&str, String)> = Vec::new();
    let mut providers: Vec<SdkTracerProvider> = Vec::new();
    for (name, version, calls, databases) in wiring.iter().rev() {
        let provider = provider_of_release(name, Some(version), endpoint);
        let service = Service {
            tracer: provider.tracer(*name),
            clock,
            calls: calls
                .iter()
                .map(|callee| {
                    let url = urls.iter().find(|(n, _)| n == callee).unwrap().1.clone();
                    (url, *callee)
                })
                .collect(),
            databases: databases.to_vec(),
        };
        providers.push(provider);
        let url = serve(Router::new().route("/", get(handle)).with_state(service)).await;
        urls.push((name, format!("{url}/")));
    }
    let entry = &urls.last().unwrap().1;
    get_ok(entry, REQUESTS).await;
    shutdown(providers).await;
}

/// A webhook receiver on a free port: every body posted to `path`.
async fn receiver(path: &str) -> (Arc<Mutex<Vec<String>>>, String) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let router = Router::new()
        .route(
            path,
            post(
                |State(received): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    received.lock().unwrap().push(body);
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let url = serve(router).await;
    (received, format!("{url}{path}"))
}

/// What an event is about, as the test states it.
fn summary(event: &Event) -> (EventKind, String, Vec<String>) {
    (event.kind, event.subjects.join(","), event.versions.clone())
}

/// Events about what exists (not about findings, traffic or fan-in/out).
fn is_structural(kind: EventKind) -> bool {
    !matches!(
        kind,
        EventKind::FindingAppeared
            | EventKind::FindingResolved
            | EventKind::FanInCrossed
            | EventKind::FanOutCrossed
            | EventKind::ErrorRateRegressed
            | EventKind::P99Regressed
    )
}

fn structural(events: &[Event]) -> BTreeSet<(EventKind, String, Vec<String>)> {
    events
        .iter()
        .filter(|e| is_structural(e.kind))
        .map(summary)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_adds_calls_and_drops_one_is_told_with_its_versions() {
    let now = now_ns();
    let hour = now.div_euclid(HOUR) * HOUR;
    // Release 1.0 runs ten minutes into the hour three hours ago, release 1.1 one hour ago;
    // with steps of an hour and gone after three, ads is gone from the start of this hour.
    let (release_1_0, release_1_1, gone_at) = (
        hour - 3 * HOUR + 10 * MINUTE,
        hour - HOUR + 10 * MINUTE,
        hour,
    );

    // Ingest first: a notifier watching while hours-old releases arrive would see half of
    // them (release 1.0 alone looks gone); the notifying server starts on the settled store.
    let archtrace = InProcessServer::start(quick_assembly()).await;
    let history = HistorySettings {
        step_ns: HOUR,
        gone_after_ns: 3 * HOUR,
        ..HistorySettings::default()
    };
    let endpoint = archtrace.grpc_url();

    deploy(
        &endpoint,
        release_1_0,
        &[
            ("frontend", "1.0", &["cart", "ads"], &[]),
            ("cart", "1.0", &[], &[("redis", "carts")]),
            ("ads", "1.0", &[], &[]),
        ],
    )
    .await;
    deploy(
        &endpoint,
        release_1_1,
        &[
            ("frontend", "1.1", &["cart"], &[]),
            (
                "cart",
                "1.1",
                &["payment"],
                &[("redis", "carts"), ("postgresql", "orders")],
            ),
            ("payment", "2.0", &[], &[]),
        ],
    )
    .await;
    let since = rfc3339(hour - 4 * HOUR);
    let seen = archtrace
        .snapshot_when(&format!("since={since}"), |s: &Snapshot| {
            let calls = |from: &str, to: &str| {
                s.edges
                    .iter()
                    .find(|e| e.from == from && e.to == to)
                    .map_or(0, |e| e.calls)
            };
            calls("frontend", "ads") >= REQUESTS && calls("cart", "orders") >= REQUESTS
        })
        .await;
    // The snapshot keeps the releases: each node's and each edge's.
    let node = |id: &str| seen.nodes.iter().find(|n| n.id == id).unwrap();
    let versions: Vec<&str> = node("frontend")
        .versions
        .iter()
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(versions, ["1.0", "1.1"]);
    // Per request of 1.1 a server span and the client span of its call to cart.
    assert_eq!(node("frontend").versions[1].spans, 2 * REQUESTS);
    let edge = |from: &str, to: &str| {
        seen.edges
            .iter()
            .find(|e| e.from == from && e.to == to)
            .unwrap()
    };
    let pairs: Vec<(&str, &str, u64)> = edge("frontend", "cart")
        .versions
        .iter()
        .map(|p| (p.from_version.as_str(), p.to_version.as_str(), p.calls))
        .collect();
    assert_eq!(pairs, [("1.0", "1.0", REQUESTS), ("1.1", "1.1", REQUESTS)]);

    // The events API over the window from after release 1.0.
    let window = format!(
        "since={}&step=1h&gone_after=3h",
        rfc3339(release_1_0 + 20 * MINUTE)
    );
    let response = reqwest::get(archtrace.admin_url(&format!("/api/v1/events?{window}")))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    let events: History = response.json().await.unwrap();
    let expected: BTreeSet<(EventKind, String, Vec<String>)> = [
        (EventKind::ServiceGone, "ads", vec![]),
        (
            EventKind::EdgeGone,
            "frontend -> ads",
            vec!["frontend 1.0 -> ads 1.0"],
        ),
        (EventKind::NewService, "payment", vec!["payment 2.0"]),
        (
            EventKind::NewEdge,
            "cart -> payment",
            vec!["cart 1.1 -> payment 2.0"],
        ),
        (
            EventKind::NewDatabaseUse,
            "cart -> orders",
            vec!["cart 1.1 -> orders"],
        ),
    ]
    .into_iter()
    .map(|(kind, subject, versions)| {
        (
            kind,
            subject.to_owned(),
            versions.into_iter().map(str::to_owned).collect(),
        )
    })
    .collect();
    assert_eq!(structural(&events.events), expected, "{:#?}", events.events);
    // Findings compared hour by hour (hours without traffic skipped): release 1.1 makes cart
    // the only way to payment, orders and carts, a single point of failure (2+ dominated);
    // in 1.0 it led to carts alone. frontend was one throughout.
    let findings: Vec<(EventKind, String, i64)> = events
        .events
        .iter()
        .filter(|e| !is_structural(e.kind))
        .map(|e| (e.kind, e.subjects.join(","), e.time_ns))
        .collect();
    assert_eq!(
        findings,
        [(EventKind::FindingAppeared, "cart".to_owned(), hour - HOUR)]
    );
    let at = |kind: EventKind| {
        events
            .events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap()
            .time_ns
    };
    assert_eq!(at(EventKind::EdgeGone), gone_at);
    let new_edge = at(EventKind::NewEdge);
    assert!(
        (release_1_1..release_1_1 + MINUTE).contains(&new_edge),
        "the first call of release 1.1: {}",
        rfc3339(new_edge)
    );
    // Filters: one service, one kind.
    let only: History = reqwest::get(archtrace.admin_url(&format!(
        "/api/v1/events?{window}&service=ads&kind=edge_gone"
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        only.events.iter().map(summary).collect::<Vec<_>>(),
        [(
            EventKind::EdgeGone,
            "frontend -> ads".to_owned(),
            vec!["frontend 1.0 -> ads 1.0".to_owned()]
        )]
    );
    // `archtrace events --server` passes a thresholds file on: counted from ten dominated
    // nodes up, cart's single point of failure is no finding; the structural events stay.
    let thresholds = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(thresholds.path(), "spof_min_dominated = 10\n").unwrap();
    let remote = |extra: Vec<String>| {
        let server = archtrace.admin_url("");
        let since = rfc3339(release_1_0 + 20 * MINUTE);
        tokio::task::spawn_blocking(move || {
            let output = succeeded(
                Command::new(binary())
                    .args(["events", "--server", &server, "--since", &since])
                    .args(["--gone-after", "3h", "--format", "json"])
                    .args(extra),
            );
            serde_json::from_slice::<History>(&output.stdout).unwrap()
        })
    };
    let findings_of = |history: &History| -> Vec<String> {
        history
            .events
            .iter()
            .filter(|e| !is_structural(e.kind))
            .map(|e| e.subjects.join(","))
            .collect()
    };
    let by_default = remote(Vec::new()).await.unwrap();
    assert_eq!(findings_of(&by_default), ["cart"]);
    let file = thresholds.path().display().to_string();
    let with_file = remote(vec!["--thresholds".to_owned(), file]).await.unwrap();
    assert_eq!(findings_of(&with_file), Vec::<String>::new());
    assert_eq!(structural(&with_file.events), expected);
    // Thresholds the API cannot read are refused, naming what is wrong.
    let unknown = r#"{"hub_fan_in":3}"#;
    let url = reqwest::Url::parse_with_params(
        &archtrace.admin_url("/api/v1/events"),
        [("step", "1h"), ("thresholds", unknown)],
    )
    .unwrap();
    let bad = reqwest::get(url).await.unwrap();
    assert_eq!(bad.status(), 400);
    let message = bad.text().await.unwrap();
    assert!(
        message.contains("thresholds") && message.contains("hub_fan_in"),
        "{message}"
    );
    let bad = reqwest::get(archtrace.admin_url("/api/v1/events?step=90s"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("whole number of minutes"));

    // The History page in a real browser: the trends, the same events, and each event's
    // drift view.
    let (_driver, client) = start_browser().await;
    open(&client, &archtrace.admin_url(&format!("/history?{window}"))).await;
    assert_eq!(text(&client, "h1").await, "History");
    assert_eq!(
        count(&client, "div.charts svg").await,
        5,
        "services, edges, cycles, coupling, p99"
    );
    let mut rows = Vec::new();
    for row in client
        .find_all(Locator::Css("table.events tr.event"))
        .await
        .unwrap()
    {
        let kind = row.attr("data-kind").await.unwrap().unwrap();
        let cells = row.find_all(Locator::Css("td")).await.unwrap();
        let mut texts = Vec::new();
        for cell in &cells {
            texts.push(cell.text().await.unwrap());
        }
        rows.push((kind, texts[3].clone(), texts[4].clone()));
    }
    let mut expected_rows: Vec<(String, String, String)> = events
        .events
        .iter()
        .map(|e| {
            (
                e.kind.as_str().to_owned(),
                e.subjects.join(", "),
                e.versions.join(", "),
            )
        })
        .collect();
    expected_rows.sort();
    rows.sort();
    assert_eq!(rows, expected_rows);
    // Only warnings and worse: ads gone, and cart's new single point of failure.
    open(
        &client,
        &archtrace.admin_url(&format!("/history?{window}&severity=warning")),
    )
    .await;
    assert_eq!(count(&client, "table.events tr.event").await, 2);
    open(
        &client,
        &archtrace.admin_url(&format!("/history?{window}&kind=new_edge")),
    )
    .await;
    click_through(
        &client,
        Locator::Css("tr[data-kind='new_edge'] a.before-after"),
    )
    .await;
    assert_eq!(text(&client, "h1").await, "Drift");
    let added = text(&client, "ul.added").await;
    assert!(
        added.contains("cart → payment") && added.contains("cart → orders"),
        "{added}"
    );
    assert!(text(&client, "ul.removed").await.contains("frontend → ads"));
    client.close().await.unwrap();

    let stopped = archtrace.stop().await;

    // The webhooks get the same events, each once, as JSON and as Slack text.
    let (posted, json_url) = receiver("/hooks/archtrace").await;
    let (slack_posted, slack_url) = receiver("/services/T000/B000/secret").await;
    let notifying = |webhooks: Vec<String>| {
        let mut notify = NotifySettings::new(webhooks);
        notify.every = Duration::from_secs(1);
        // Back to just after release 1.0: what it brought is not new, the gone ads is.
        notify.lookback = Duration::from_nanos((now_ns() - release_1_0 - 5 * MINUTE) as u64);
        notify.history = HistoryQuery::new(history.clone(), Default::default());
        notify.filter.min_severity = Severity::Info;
        notify.backoff = Duration::from_millis(50);
        ServerSettings {
            notify,
            ..quick_assembly()
        }
    };
    let archtrace = InProcessServer::restart(
        stopped,
        notifying(vec![json_url.clone(), slack_url.clone()]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_posts = loop {
        let got: Vec<Event> = posted
            .lock()
            .unwrap()
            .iter()
            .map(|body| serde_json::from_str(body).unwrap())
            .collect();
        if structural(&got) == expected || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(structural(&first_posts), expected, "{first_posts:#?}");
    // More runs of the notifier send nothing again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let posts = posted.lock().unwrap().clone();
    let keys: BTreeSet<String> = posts
        .iter()
        .map(|body| serde_json::from_str::<Event>(body).unwrap().key())
        .collect();
    assert_eq!(
        keys.len(),
        posts.len(),
        "every event is posted once: {posts:#?}"
    );
    let slack = slack_posted.lock().unwrap().clone();
    assert_eq!(slack.len(), posts.len());
    let texts: Vec<String> = slack
        .iter()
        .map(|body| {
            serde_json::from_str::<serde_json::Value>(body).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        texts.iter().any(
            |t| t.starts_with("[info] new_edge: new synchronous call cart → payment")
                && t.contains("releases: cart 1.1 -> payment 2.0")
        ),
        "{texts:#?}"
    );
    let delivered = archtrace
        .metric_line("archtrace_notify_delivered_total")
        .await;
    assert_eq!(
        delivered,
        format!("archtrace_notify_delivered_total {}", 2 * posts.len())
    );
    // A restart remembers what was sent.
    let archtrace =
        InProcessServer::restart(archtrace.stop().await, notifying(vec![json_url, slack_url]))
            .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(archtrace
        .metric_line("archtrace_notify_events_total")
        .await
        .ends_with(" 0"));
    assert_eq!(
        posted.lock().unwrap().len(),
        posts.len(),
        "nothing sent twice"
    );

    // The CLI reads the same events from the store file.
    let stopped = archtrace.stop().await;
    let Location::File(db) = stopped.store.location().clone() else {
        unreachable!("a file store")
    };
    drop(stopped.store);
    let since = rfc3339(release_1_0 + 20 * MINUTE);
    let output = succeeded(
        Command::new(binary())
            .args(["events", "--db"])
            .arg(&db)
            .args(["--since", &since, "--gone-after", "3h", "--format", "json"]),
    );
    let from_cli: History = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(structural(&from_cli.events), expected);
    let text = succeeded(
        Command::new(binary())
            .args(["events", "--db"])
            .arg(&db)
            .args([
                "--since",
                &since,
                "--gone-after",
                "3h",
                "--kind",
                "new_edge",
            ]),
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("1 events from"), "{text}");
    assert!(
        text.contains("new synchronous call cart → payment")
            && text.contains("first from cart 1.1 -> payment 2.0"),
        "{text}"
    );
}
