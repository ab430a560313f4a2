//! The drift check end to end: a small shop of real services (axum over HTTP, OpenTelemetry SDK,
//! OTLP to a running archtrace) is snapshotted as the baseline; then its code changes and
//! `archtrace check` must report exactly those changes, in every output format.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use archtrace_analyzer::snapshot::Snapshot;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::Router;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::Value;

use crate::instrument::{call, database_call, get_ok, provider, server_span, shutdown};
use crate::support::{binary, quick_assembly, InProcessServer};

/// What a route does, in order.
#[derive(Clone, Copy)]
enum Step {
    Call(&'static str, &'static str),
    Database(&'static str, &'static str),
}

/// Services by name: their routes and what each route does.
type App = BTreeMap<&'static str, Vec<(&'static str, Vec<Step>)>>;

/// Version 1: the architecture the team reviewed.
fn shop_v1() -> App {
    BTreeMap::from([
        (
            "gateway",
            vec![
                ("/checkout", vec![Step::Call("checkout", "/checkout")]),
                ("/browse", vec![Step::Call("catalog", "/products")]),
            ],
        ),
        (
            "checkout",
            vec![
                (
                    "/checkout",
                    vec![
                        Step::Call("cart", "/cart"),
                        Step::Database("postgresql", "orders"),
                    ],
                ),
                ("/status", vec![]),
            ],
        ),
        (
            "cart",
            vec![("/cart", vec![Step::Database("redis", "carts")])],
        ),
        (
            "catalog",
            vec![("/products", vec![Step::Database("postgresql", "products")])],
        ),
    ])
}

/// Version 2: the gateway reads orders straight from the database (forbidden by the rules), the
/// cart asks checkout for its status (closing a cycle), the catalog stops using its database.
fn shop_v2() -> App {
    let mut app = shop_v1();
    app.insert(
        "gateway",
        vec![
            (
                "/checkout",
                vec![
                    Step::Database("postgresql", "orders"),
                    Step::Call("checkout", "/checkout"),
                ],
            ),
            ("/browse", vec![Step::Call("catalog", "/products")]),
        ],
    );
    app.insert(
        "cart",
        vec![(
            "/cart",
            vec![
                Step::Call("checkout", "/status"),
                Step::Database("redis", "carts"),
            ],
        )],
    );
    app.insert("catalog", vec![("/products", vec![])]);
    app
}

/// The service edges the app's code wires up, computed from its definition: `user` calls the
/// gateway's routes, every step is an edge.
fn wired_edges(app: &App) -> BTreeSet<(String, String)> {
    let mut edges = BTreeSet::from([("user".to_owned(), "gateway".to_owned())]);
    for (service, routes) in app {
        for (_, steps) in routes {
            for step in steps {
                let to = match step {
                    Step::Call(callee, _) => *callee,
                    Step::Database(_, namespace) => *namespace,
                };
                edges.insert((service.to_string(), to.to_owned()));
            }
        }
    }
    edges
}

struct Service {
    tracer: SdkTracer,
    routes: HashMap<&'static str, Vec<Step>>,
    urls: Arc<HashMap<&'static str, String>>,
}

async fn handle(State(service): State<Arc<Service>>, uri: Uri, headers: HeaderMap) -> String {
    let route = uri.path();
    let steps = service.routes.get(route).cloned().unwrap_or_default();
    let cx = server_span(&service.tracer, &headers, route);
    for step in steps {
        match step {
            Step::Call(callee, path) => {
                let url = format!("{}{path}", service.urls[callee]);
                call(&service.tracer, &cx, url, callee).await;
            }
            Step::Database(system, namespace) => {
                database_call(&service.tracer, &cx, system, namespace)
            }
        }
    }
    cx.span().end();
    "ok".to_owned()
}

/// Runs the app against a fresh archtrace, sends `requests` to each gateway route, and returns
/// the server once the live graph shows every wired edge with all its calls.
async fn run_app(app: &App, requests: u64) -> InProcessServer {
    let archtrace = InProcessServer::start(quick_assembly()).await;
    let mut listeners = Vec::new();
    let mut urls = HashMap::new();
    for name in app.keys() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.insert(*name, format!("http://{}", listener.local_addr().unwrap()));
        listeners.push((*name, listener));
    }
    let urls = Arc::new(urls);
    let mut providers = Vec::new();
    for (name, listener) in listeners {
        let provider = provider(name, &archtrace.grpc_url());
        let service = Arc::new(Service {
            tracer: provider.tracer(name),
            routes: app[name].iter().cloned().collect(),
            urls: urls.clone(),
        });
        providers.push(provider);
        let router = Router::new().fallback(handle).with_state(service);
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    }
    for (route, _) in &app["gateway"] {
        get_ok(&format!("{}{route}", urls["gateway"]), requests).await;
    }
    shutdown(providers).await;
    let wired = wired_edges(app);
    let seen = |snapshot: &Snapshot| -> BTreeSet<(String, String)> {
        snapshot
            .edges
            .iter()
            .filter(|e| e.calls >= requests)
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect()
    };
    let snapshot = archtrace
        .live_snapshot_when(|snapshot| seen(snapshot) == wired)
        .await;
    assert_eq!(
        seen(&snapshot),
        wired,
        "the live graph never matched the app"
    );
    archtrace
}

/// Runs the archtrace binary; returns its exit code and standard output.
async fn archtrace(args: Vec<String>) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(&args)
            .env_remove("ARCHTRACE_DB")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().expect("exited");
    assert!(code != 2, "usage or input error: {stderr}");
    (code, String::from_utf8(output.stdout).unwrap())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const RULES: &str = r#"
[[deny]]
from = "gateway"
to = "type:database"
reason = "the gateway reaches data only through the services"
"#;

fn check_args(
    server: &InProcessServer,
    baseline: &Path,
    rules: &Path,
    format: &str,
) -> Vec<String> {
    args(&[
        "check",
        "--server",
        &server.admin_url(""),
        "--since",
        "1h",
        "--baseline",
        baseline.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--format",
        format,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_exactly_the_drift_of_a_changed_app() {
    let dir = tempfile::tempdir().unwrap();
    let baseline: PathBuf = dir.path().join("architecture.json");
    let rules = dir.path().join("archtrace.toml");
    std::fs::write(&rules, RULES).unwrap();

    let v1 = run_app(&shop_v1(), 3).await;
    let (code, _) = archtrace(args(&[
        "snapshot",
        "--server",
        &v1.admin_url(""),
        "--since",
        "1h",
        "-o",
        baseline.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(code, 0);
    // The unchanged app passes its own baseline and the rules.
    let (code, text) = archtrace(check_args(&v1, &baseline, &rules, "text")).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("passed: 0 errors, 0 warnings"), "{text}");
    v1.stop().await;

    let v2 = run_app(&shop_v2(), 3).await;
    let (code, json) = archtrace(check_args(&v2, &baseline, &rules, "json")).await;
    assert_eq!(code, 1, "new violations fail the build: {json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let items: BTreeSet<(String, String, String)> = report["report"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                format!(
                    "{}/{}",
                    i["severity"].as_str().unwrap(),
                    i["status"].as_str().unwrap()
                ),
                i["rule"].as_str().unwrap().to_owned(),
                i["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let item = |severity: &str, rule: &str, subject: &str| {
        (severity.to_owned(), rule.to_owned(), subject.to_owned())
    };
    let expected = BTreeSet::from([
        // The forbidden call to a database: new, and denied by the rules.
        item("error/new", "new-edges", "gateway -> orders"),
        item("error/new", "deny[0]", "gateway -> orders"),
        // The call that closes a cycle.
        item("error/new", "new-edges", "cart -> checkout"),
        item("error/new", "cycles", "cart, checkout"),
        // The dependency that was removed, and the database only it used.
        item("warning/new", "removed-edges", "catalog -> products"),
        item("warning/new", "removed-nodes", "products"),
        // What the new edges mean for coupling: orders is now shared by two services, and
        // cart and checkout call each other.
        item("warning/new", "new-findings", "orders, checkout, gateway"),
        item("warning/new", "new-findings", "cart, checkout"),
    ]);
    assert_eq!(items, expected);
    assert_eq!(report["failures"], 4);

    // JUnit parses back: one test case per rule, failures exactly for the broken ones.
    let (code, junit) = archtrace(check_args(&v2, &baseline, &rules, "junit")).await;
    assert_eq!(code, 1);
    let document = roxmltree::Document::parse(&junit).unwrap();
    let cases: BTreeMap<String, bool> = document
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|case| {
            let rule = case.attribute("name").unwrap().split(':').next().unwrap();
            let failed = case.children().any(|c| c.has_tag_name("failure"));
            (rule.to_owned(), failed)
        })
        .collect();
    assert_eq!(
        cases,
        BTreeMap::from(
            [
                ("cycles", true),
                ("deny[0]", true),
                ("new-edges", true),
                ("new-findings", false),
                ("new-nodes", false),
                ("removed-edges", false),
                ("removed-nodes", false),
            ]
            .map(|(rule, failed)| (rule.to_owned(), failed))
        )
    );
    let suite = document
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("tests"), Some("7"));
    assert_eq!(suite.attribute("failures"), Some("3"));

    // SARIF is valid against the SARIF 2.1.0 schema and carries every item.
    let (code, sarif) = archtrace(check_args(&v2, &baseline, &rules, "sarif")).await;
    assert_eq!(code, 1);
    let sarif: Value = serde_json::from_str(&sarif).unwrap();
    assert_sarif_valid(&sarif);
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), expected.len());
    assert_eq!(results.iter().filter(|r| r["level"] == "error").count(), 4);

    // Accepting the change makes the same run pass.
    let mut update = check_args(&v2, &baseline, &rules, "text");
    update.push("--update-baseline".into());
    let (code, _) = archtrace(update).await;
    assert_eq!(code, 0);
    let (code, text) = archtrace(check_args(&v2, &baseline, &rules, "text")).await;
    // The deny rule's violation and the cycle are now in the baseline: known, not failing.
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 known"), "{text}");
    v2.stop().await;
}

fn assert_sarif_valid(log: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sarif-2.1.0-rtm.5.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "invalid SARIF: {errors:#?}");
    // The schema must be able to fail: a result without a message is invalid.
    let mut broken = log.clone();
    broken["runs"][0]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("message");
    assert!(!validator.is_valid(&broken));
}

#[test]
fn the_rules_example_in_the_docs_is_valid() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ci.md"))
        .unwrap();
    let start = docs.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + docs[start..].find("```").unwrap();
    let rules: archtrace_analyzer::rules::Rules = toml::from_str(&docs[start..end]).unwrap();
    assert_eq!(rules.validate(), Ok(()));
    assert_eq!(rules.deny.len(), 3);
    assert_eq!(rules.domains.len(), 2);
    assert_eq!(rules.layers.unwrap().order.len(), 4);
    assert_eq!(rules.limits.max_sync_depth, Some(6));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_without_baseline_or_rules_and_with_a_typo_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let traces = crate::support::json_files("jaeger-hotel-reservation");
    let run = |extra: Vec<String>| {
        let mut command = Command::new(binary());
        command
            .current_dir(dir.path())
            .args(["check", "--traces"])
            .arg(&traces[0])
            .args(extra);
        command.output().unwrap()
    };
    let output = run(vec![]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to check against"));

    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[limits]\nmax_fanout = 3\n").unwrap();
    let output = run(args(&["--rules", rules.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("max_fanout"),
        "{stderr}"
    );

    let not_a_snapshot = dir.path().join("x.json");
    std::fs::write(&not_a_snapshot, "{\"edges\": []}").unwrap();
    let output = run(args(&["--baseline", not_a_snapshot.to_str().unwrap()]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not an archtrace snapshot"), "{stderr}");
}
