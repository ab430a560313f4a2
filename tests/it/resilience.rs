//! Retries, fallbacks, timeouts and critical paths of the simulated shop, checked against its
//! traces walked one by one in the test: checkout retries payment up to three times, the home
//! page survives recommendation failing and stops waiting for ads after 250 ms.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use archtrace_analyzer::derive::{operation_name, uninstrumented_peer};
use archtrace_analyzer::{Span, SpanKind, TraceId};
use archtrace_formats::otlp;
use archtrace_workload::shop::Simulation;
use prost::Message;
use serde_json::Value;

use archtrace_formats::import::OnBadInput;

use crate::support::{binary, json_files, read_file, snapshot_from_files, succeeded};

/// (caller service, caller endpoint, callee, callee operation).
pub(crate) type CallKey = (String, String, String, String);

/// What a test counts of one caller endpoint's calls to one callee operation.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Calls {
    pub calls: u64,
    pub errors: u64,
    /// Calls made after the previous one to the same operation failed and ended.
    pub retries: u64,
    /// Failed calls not retried whose calling endpoint did not fail.
    pub fallbacks: u64,
    /// How long callers waited on failed calls, in nanoseconds.
    pub failed_waits: Vec<i64>,
}

impl Calls {
    /// The documented rule: failures the endpoint survived, and at least as many as it
    /// passed on (failures retried are neither).
    pub(crate) fn optional(&self) -> bool {
        let passed_on = self.errors - self.retries - self.fallbacks;
        self.fallbacks > 0 && self.fallbacks >= passed_on
    }
}

/// Spans grouped by trace.
pub(crate) fn traces(spans: &[Span]) -> BTreeMap<TraceId, Vec<&Span>> {
    let mut traces: BTreeMap<TraceId, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        traces.entry(span.trace_id).or_default().push(span);
    }
    traces
}

/// Every synchronous client call of the shop's traces, by caller endpoint and callee.
pub(crate) fn calls_of(spans: &[Span]) -> BTreeMap<CallKey, Calls> {
    let mut out: BTreeMap<CallKey, Calls> = BTreeMap::new();
    for trace in traces(spans).values() {
        let children = |parent: &Span| -> Vec<&Span> {
            let mut below: Vec<&Span> = trace
                .iter()
                .copied()
                .filter(|s| s.parent_span_id == Some(parent.span_id))
                .collect();
            below.sort_by_key(|s| s.start_ns);
            below
        };
        for endpoint in trace.iter().filter(|s| s.kind != SpanKind::Client) {
            // (callee, callee operation, failed, end) of the endpoint's calls, in order.
            let mut made: Vec<(String, String, bool, i64)> = Vec::new();
            for client in children(endpoint)
                .into_iter()
                .filter(|s| s.kind == SpanKind::Client)
            {
                let server = children(client)
                    .into_iter()
                    .find(|s| s.kind == SpanKind::Server);
                let (callee, operation) = match server {
                    Some(server) => (server.service.to_string(), operation_name(server)),
                    None => (
                        uninstrumented_peer(&client.peer).unwrap().0,
                        client.name.as_str().into(),
                    ),
                };
                let failed = client.is_error() || server.is_some_and(|s| s.is_error());
                let key = (
                    endpoint.service.to_string(),
                    operation_name(endpoint).to_string(),
                    callee.clone(),
                    operation.to_string(),
                );
                let counts = out.entry(key).or_default();
                counts.calls += 1;
                counts.errors += u64::from(failed);
                if failed {
                    counts.failed_waits.push(client.end_ns - client.start_ns);
                }
                let retry = made
                    .iter()
                    .rev()
                    .find(|(c, o, _, _)| *c == callee && **o == *operation)
                    .is_some_and(|(_, _, previous_failed, end)| {
                        *previous_failed && *end <= client.start_ns
                    });
                counts.retries += u64::from(retry);
                made.push((callee, operation.to_string(), failed, client.end_ns));
            }
            // A failed call is a fallback when no retry follows it and the endpoint succeeded.
            for (i, (callee, operation, failed, _)) in made.iter().enumerate() {
                let retried = made[i + 1..]
                    .iter()
                    .find(|(c, o, _, _)| c == callee && o == operation)
                    .is_some();
                if *failed && !retried && !endpoint.is_error() {
                    let key = (
                        endpoint.service.to_string(),
                        operation_name(endpoint).to_string(),
                        callee.clone(),
                        operation.clone(),
                    );
                    out.get_mut(&key).unwrap().fallbacks += 1;
                }
            }
        }
    }
    out
}

/// Per entry operation, each node's time on the critical path summed over its traces, and
/// the traces it was on it in. The shop's calls run one after another, so the path through a
/// span is its whole time less its children's (each clamped to the span), recursively: no
/// "last finishing child" needed.
type Paths = BTreeMap<(String, String), BTreeMap<String, (i64, u64)>>;

fn critical_paths(spans: &[Span]) -> Paths {
    let mut paths = Paths::new();
    for trace in traces(spans).values() {
        let root = trace.iter().find(|s| s.parent_span_id.is_none()).unwrap();
        let mut per_service: BTreeMap<String, i64> = BTreeMap::new();
        let mut stack = vec![(*root, root.start_ns, root.end_ns)];
        while let Some((span, from, to)) = stack.pop() {
            let mut own = to - from;
            let mut children: Vec<&Span> = trace
                .iter()
                .copied()
                .filter(|s| s.parent_span_id == Some(span.span_id) && s.kind != SpanKind::Consumer)
                .collect();
            children.sort_by_key(|s| s.start_ns);
            for pair in children.windows(2) {
                assert!(pair[0].end_ns <= pair[1].start_ns, "calls run one by one");
            }
            for child in children {
                let (start, end) = (child.start_ns.max(from), child.end_ns.min(to));
                if start < end {
                    own -= end - start;
                    stack.push((child, start, end));
                }
            }
            // A call to something that reports no spans is that thing's time (a database, an
            // API), not the caller's.
            let answered = trace
                .iter()
                .any(|s| s.parent_span_id == Some(span.span_id) && s.kind == SpanKind::Server);
            let node = match uninstrumented_peer(&span.peer) {
                Some((peer, _)) if span.kind == SpanKind::Client && !answered => peer,
                _ => span.service.to_string(),
            };
            *per_service.entry(node).or_default() += own;
        }
        let entry = (root.service.to_string(), operation_name(root).to_string());
        let path = paths.entry(entry).or_default();
        for (service, time) in per_service {
            let (total, traces) = path.entry(service).or_default();
            *total += time;
            *traces += 1;
        }
    }
    paths
}

/// The critical path as Jaeger defines it, written the other way round from the library: a
/// recursion that, within what is left of a span's window, takes the child that ends last
/// (clamped to the window; ties to the one that really ends last, then the earlier start, then
/// the smaller id), gives the span the time after it, and goes on before that child's start.
/// Children may overlap here. Returns node → time, for one trace.
fn critical_path_recursive(trace: &[&Span]) -> BTreeMap<String, i64> {
    fn walk(trace: &[&Span], span: &Span, from: i64, to: i64, out: &mut BTreeMap<String, i64>) {
        let mut children: Vec<&Span> = trace
            .iter()
            .copied()
            .filter(|s| s.parent_span_id == Some(span.span_id) && s.kind != SpanKind::Consumer)
            .collect();
        let answered = trace.iter().any(|s| {
            s.parent_span_id == Some(span.span_id)
                && matches!(s.kind, SpanKind::Server | SpanKind::Consumer)
        });
        let mut cursor = to;
        let mut own = 0;
        loop {
            let next = children
                .iter()
                .enumerate()
                .filter(|(_, c)| c.start_ns.max(from) < c.end_ns.min(cursor))
                .max_by(|(_, a), (_, b)| {
                    (
                        a.end_ns.min(cursor),
                        a.end_ns,
                        std::cmp::Reverse(a.start_ns),
                    )
                        .cmp(&(
                            b.end_ns.min(cursor),
                            b.end_ns,
                            std::cmp::Reverse(b.start_ns),
                        ))
                        .then_with(|| b.span_id.cmp(&a.span_id))
                })
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let child = children.remove(i);
            let (start, end) = (child.start_ns.max(from), child.end_ns.min(cursor));
            own += cursor - end;
            walk(trace, child, start, end, out);
            cursor = start;
        }
        own += cursor - from;
        let node = match uninstrumented_peer(&span.peer) {
            Some((peer, _)) if span.kind == SpanKind::Client && !answered => peer,
            _ => span.service.to_string(),
        };
        *out.entry(node).or_default() += own;
    }
    let root = trace
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .min_by_key(|s| s.start_ns)
        .unwrap();
    let mut out = BTreeMap::new();
    if root.end_ns > root.start_ns {
        walk(trace, root, root.start_ns, root.end_ns, &mut out);
    }
    out
}

fn shop_file(seed: u64, traces: usize) -> (Vec<Span>, tempfile::TempDir, std::path::PathBuf) {
    let request = Simulation::starting_at(seed, 1_700_000_000_000_000_000)
        .request(traces, 1_700_000_000_000_000_000);
    let spans = otlp::convert(request.clone()).spans;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.pb");
    std::fs::write(&file, request.encode_to_vec()).unwrap();
    (spans, dir, file)
}

fn graph_json(file: &std::path::Path) -> Value {
    let output = succeeded(
        Command::new(binary())
            .args(["graph", "--format", "json", "--traces"])
            .arg(file),
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn retries_fallbacks_and_timeouts_match_the_traces_walked_one_by_one() {
    let (spans, _dir, file) = shop_file(21, 800);
    let calls = calls_of(&spans);
    let snapshot = graph_json(&file);

    // Per operation pair: retries and fallbacks as counted here.
    let mut checked = 0;
    for op in snapshot["operations"].as_array().unwrap() {
        let key = (
            op["from"]["service"].as_str().unwrap().to_owned(),
            op["from"]["operation"].as_str().unwrap().to_owned(),
            op["to"]["service"].as_str().unwrap().to_owned(),
            op["to"]["operation"].as_str().unwrap().to_owned(),
        );
        let Some(expected) = calls.get(&key) else {
            continue; // calls from outside (user) or through queues
        };
        let figure = |name: &str| op[name].as_u64().unwrap_or(0);
        assert_eq!(
            (figure("calls"), figure("errors")),
            (expected.calls, expected.errors),
            "{key:?}"
        );
        assert_eq!(
            (figure("retries"), figure("fallbacks")),
            (expected.retries, expected.fallbacks),
            "{key:?}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        calls.len(),
        "every call counted here is in the graph"
    );

    // Per service edge: the sums, and a timeout exactly where failed calls end at one wait.
    let mut per_edge: BTreeMap<(String, String), Calls> = BTreeMap::new();
    for ((from, _, to, _), counts) in &calls {
        let sum = per_edge.entry((from.clone(), to.clone())).or_default();
        sum.calls += counts.calls;
        sum.errors += counts.errors;
        sum.retries += counts.retries;
        sum.fallbacks += counts.fallbacks;
        sum.failed_waits.extend(&counts.failed_waits);
    }
    let mut timeouts = BTreeMap::new();
    for edge in snapshot["edges"].as_array().unwrap() {
        let key = (
            edge["from"].as_str().unwrap().to_owned(),
            edge["to"].as_str().unwrap().to_owned(),
        );
        let Some(expected) = per_edge.get(&key) else {
            continue;
        };
        let resilience = &edge["resilience"];
        let figure = |name: &str| resilience[name].as_u64().unwrap_or(0);
        assert_eq!(
            (figure("retries"), figure("fallbacks")),
            (expected.retries, expected.fallbacks),
            "{key:?}"
        );
        if let Some(timeout) = resilience["timeout_ms"].as_f64() {
            timeouts.insert(key, timeout);
        }
    }
    // The home page gives up on ads after 250 ms: every failed call there waited exactly that.
    let ads = &per_edge[&("frontend".to_owned(), "ads".to_owned())];
    assert!(ads.failed_waits.len() >= 3, "{ads:?}");
    assert!(
        ads.failed_waits.iter().all(|w| *w == 250_000_000),
        "{ads:?}"
    );
    assert_eq!(
        timeouts.keys().collect::<Vec<_>>(),
        [&("frontend".to_owned(), "ads".to_owned())],
        "{timeouts:?}"
    );
    let timeout = timeouts.values().next().unwrap();
    assert!((timeout / 250.0 - 1.0).abs() < 0.02, "{timeout}");

    // What the shop does, as the counts show it: checkout retried payment, the home page fell
    // back when recommendation failed, the product page did not.
    let payment = &per_edge[&("checkout".to_owned(), "payment".to_owned())];
    assert!(payment.retries > 0, "{payment:?}");
    let home_recommendation = &calls[&(
        "frontend".to_owned(),
        "GET /home".to_owned(),
        "recommendation".to_owned(),
        "GET /recommendations".to_owned(),
    )];
    assert!(home_recommendation.fallbacks > 0 && home_recommendation.optional());
    let product_recommendation = &calls[&(
        "frontend".to_owned(),
        "GET /product/{id}".to_owned(),
        "recommendation".to_owned(),
        "GET /recommendations".to_owned(),
    )];
    assert!(product_recommendation.errors > 0 && !product_recommendation.optional());
}

#[test]
fn critical_paths_match_the_traces_walked_one_by_one() {
    let (spans, _dir, file) = shop_file(23, 300);
    let expected = critical_paths(&spans);
    let snapshot = graph_json(&file);
    let entries = snapshot["entry_operations"].as_array().unwrap();
    assert_eq!(entries.len(), expected.len());
    for entry in entries {
        let key = (
            entry["service"].as_str().unwrap().to_owned(),
            entry["operation"].as_str().unwrap().to_owned(),
        );
        let want = &expected[&key];
        let total: i64 = want.values().map(|(time, _)| time).sum();
        let got: BTreeMap<String, (f64, u64)> = entry["critical_path"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["service"].as_str().unwrap().to_owned(),
                    (p["share"].as_f64().unwrap(), p["traces"].as_u64().unwrap()),
                )
            })
            .collect();
        let want: BTreeMap<String, (f64, u64)> = want
            .iter()
            .map(|(service, (time, traces))| {
                let share = (*time as f64 / total as f64 * 1_000.0).round() / 1_000.0;
                (service.clone(), (share, *traces))
            })
            .collect();
        assert_eq!(got, want, "{key:?}");
    }
    // The shop's checkout waits on the payment API most: it is the largest share.
    let checkout = entries
        .iter()
        .find(|e| e["operation"] == "GET /checkout" && e["service"] == "gateway")
        .unwrap();
    assert_eq!(
        checkout["critical_path"][0]["service"],
        "api.payments.example"
    );
}

#[test]
fn critical_paths_of_recorded_traces_match_a_recursive_walk() {
    // Jaeger's hotel-reservation recordings (gRPC services, MongoDB, memcached) and Zipkin's
    // (Yelp, SmartThings, Envoy, Kafka...): microsecond clocks, some calls run in parallel.
    let mut files = json_files("jaeger-hotel-reservation");
    files.extend(json_files("zipkin"));
    let mut spans = Vec::new();
    for file in &files {
        spans.extend(read_file(file, None, OnBadInput::Stop).unwrap().1);
    }
    let mut expected: Paths = Paths::new();
    let mut overlapping = 0;
    for trace in traces(&spans).values() {
        let Some(root) = trace
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .min_by_key(|s| s.start_ns)
        else {
            continue;
        };
        overlapping += trace
            .iter()
            .filter(|a| {
                trace.iter().any(|b| {
                    a.span_id != b.span_id
                        && a.parent_span_id.is_some()
                        && a.parent_span_id == b.parent_span_id
                        && a.start_ns < b.end_ns
                        && b.start_ns < a.end_ns
                })
            })
            .count();
        let entry = (root.service.to_string(), operation_name(root).to_string());
        let path = expected.entry(entry).or_default();
        for (node, time) in critical_path_recursive(trace) {
            let (total, traces) = path.entry(node).or_default();
            *total += time;
            *traces += 1;
        }
    }
    assert!(
        overlapping > 0,
        "the recordings have calls running in parallel"
    );
    let (snapshot, _) = snapshot_from_files(&files);
    let mut compared = 0;
    for entry in &snapshot.entry_operations {
        let want = &expected[&(entry.service.clone(), entry.operation.clone())];
        let total: i64 = want.values().map(|(time, _)| time).sum();
        let want: BTreeMap<String, (f64, u64)> = want
            .iter()
            .map(|(node, (time, traces))| {
                let share = if total > 0 {
                    (*time as f64 / total as f64 * 1_000.0).round() / 1_000.0
                } else {
                    0.0
                };
                (node.clone(), (share, *traces))
            })
            .collect();
        let got: BTreeMap<String, (f64, u64)> = entry
            .critical_path
            .iter()
            .map(|p| (p.service.clone(), (p.share, p.traces)))
            .collect();
        assert_eq!(got, want, "{} {}", entry.service, entry.operation);
        compared += 1;
    }
    assert!(compared >= 3, "{compared} entry operations");
}

#[test]
fn impact_hotspots_and_the_service_page_data_say_what_the_fallbacks_mean() {
    let (spans, _dir, file) = shop_file(21, 800);
    let calls = calls_of(&spans);
    let optional: BTreeSet<(String, String)> = calls
        .iter()
        .filter(|(_, c)| c.optional())
        .map(|((from, endpoint, _, _), _)| (from.clone(), endpoint.clone()))
        .collect();
    assert!(optional.contains(&("frontend".to_owned(), "GET /home".to_owned())));
    // recommendation failing: the home page (which falls back) degrades, the product page fails.
    let output = succeeded(
        Command::new(binary())
            .args(["impact", "recommendation", "--format", "json", "--traces"])
            .arg(&file),
    );
    let impact: Value = serde_json::from_slice(&output.stdout).unwrap();
    let outcomes: BTreeMap<String, String> = impact["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(outcomes["GET /"], "degrades", "{outcomes:?}");
    assert_eq!(outcomes["GET /product/{id}"], "fails", "{outcomes:?}");
    // A latency budget declared in the thresholds file: checkout's path is over 1 ms, the
    // home page's well under an hour.
    let thresholds = file.with_file_name("thresholds.toml");
    std::fs::write(
        &thresholds,
        "[latency_budgets_ms]\n\"gateway GET /checkout\" = 1\n\"gateway\" = 3600000\n",
    )
    .unwrap();
    let output = succeeded(
        Command::new(binary())
            .args(["hotspots", "--format", "json", "--thresholds"])
            .arg(&thresholds)
            .arg("--traces")
            .arg(&file),
    );
    let hotspots: Value = serde_json::from_slice(&output.stdout).unwrap();
    let over: Vec<&Value> = hotspots["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "latency_budget")
        .collect();
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(
        over[0]["subjects"],
        serde_json::json!(["gateway GET /checkout"])
    );
    let checkout = hotspots["entry_operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "GET /checkout")
        .unwrap();
    let added: f64 = checkout["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time_ms"]["p99"].as_f64().unwrap())
        .sum();
    let reported = over[0]["evidence"]["critical_p99_sum_ms"].as_f64().unwrap();
    assert!((reported - added).abs() < 0.01, "{reported} vs {added}");
    // hotspots lists the critical paths in words.
    let output = succeeded(
        Command::new(binary())
            .args(["hotspots", "--traces"])
            .arg(&file),
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("critical paths of the busiest entry operations")
            && text.contains("gateway · GET /  p50 "),
        "{text}"
    );
}
