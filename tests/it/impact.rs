//! `archtrace impact` on the simulated shop, checked against what its traces show when each
//! one is walked on its own: an entry operation fails when some trace of it reaches the failed
//! node through synchronous calls only, and degrades when some trace reaches it through a queue
//! or through a call its calling endpoint survives failing (`resilience::calls_of` counts them).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use archtrace_analyzer::derive::{operation_name, uninstrumented_peer};
use archtrace_analyzer::{Span, SpanKind};
use archtrace_formats::otlp;
use archtrace_workload::shop::Simulation;
use prost::Message;
use serde_json::Value;

use crate::resilience::{calls_of, traces, CallKey};
use crate::support::{binary, succeeded};

/// (entry service, entry operation) → (traces, the nodes its traces reach synchronously, the
/// nodes they reach at all), walking each trace from its root.
type Reach = BTreeMap<(String, String), (u64, BTreeSet<String>, BTreeSet<String>)>;

fn reach_per_entry(spans: &[Span]) -> Reach {
    // Calls the calling endpoint was seen to survive failing are tolerated like a queue.
    let optional: BTreeSet<CallKey> = calls_of(spans)
        .into_iter()
        .filter(|(_, calls)| calls.optional())
        .map(|(key, _)| key)
        .collect();
    let traces = traces(spans);
    let mut reach = Reach::new();
    for trace in traces.values() {
        let root = trace.iter().find(|s| s.parent_span_id.is_none()).unwrap();
        let children = |parent: &Span| -> Vec<&Span> {
            trace
                .iter()
                .copied()
                .filter(|s| s.parent_span_id == Some(parent.span_id))
                .collect()
        };
        let endpoint_of = |client: &Span| -> String {
            let parent = trace
                .iter()
                .find(|s| Some(s.span_id) == client.parent_span_id)
                .unwrap();
            operation_name(parent).to_string()
        };
        let entry = (root.service.to_string(), operation_name(root).to_string());
        let (traces, sync, all) = reach.entry(entry).or_default();
        *traces += 1;
        // (span, reached through synchronous calls only)
        let mut stack = vec![(*root, true)];
        while let Some((span, synchronous)) = stack.pop() {
            all.insert(span.service.to_string());
            if synchronous {
                sync.insert(span.service.to_string());
            }
            let below = children(span);
            let answered = below
                .iter()
                .any(|c| matches!(c.kind, SpanKind::Server | SpanKind::Consumer));
            if matches!(span.kind, SpanKind::Client | SpanKind::Producer) && !answered {
                // A call to something that reports no spans: a database, a queue, an API.
                let (peer, _) = uninstrumented_peer(&span.peer).unwrap();
                all.insert(peer.clone());
                let key = (
                    span.service.to_string(),
                    endpoint_of(span),
                    peer.clone(),
                    span.name.clone(),
                );
                if synchronous && span.kind == SpanKind::Client && !optional.contains(&key) {
                    sync.insert(peer);
                }
            }
            for child in below {
                let tolerated = span.kind == SpanKind::Client
                    && child.kind == SpanKind::Server
                    && optional.contains(&(
                        span.service.to_string(),
                        endpoint_of(span),
                        child.service.to_string(),
                        operation_name(child).to_string(),
                    ));
                let hop_is_sync = span.kind != SpanKind::Producer
                    && child.kind != SpanKind::Consumer
                    && !tolerated;
                stack.push((child, synchronous && hop_is_sync));
            }
        }
    }
    reach
}

#[test]
fn impact_of_every_node_matches_the_traces_walked_one_by_one() {
    let request = Simulation::starting_at(11, 1_700_000_000_000_000_000)
        .request(400, 1_700_000_000_000_000_000);
    let spans = otlp::convert(request.clone()).spans;
    let reach = reach_per_entry(&spans);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.pb");
    std::fs::write(&file, request.encode_to_vec()).unwrap();

    let nodes: BTreeSet<String> = reach
        .values()
        .flat_map(|(_, _, all)| all.iter().cloned())
        .collect();
    assert!(nodes.len() > 10, "{nodes:?}");
    let mut some_degrade = false;
    for node in &nodes {
        let output = succeeded(
            Command::new(binary())
                .args(["impact", node, "--format", "json", "--traces"])
                .arg(&file),
        );
        let impact: Value = serde_json::from_slice(&output.stdout).unwrap();
        let got: BTreeSet<(String, String, String, u64)> = impact["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["service"].as_str().unwrap().to_owned(),
                    e["operation"].as_str().unwrap().to_owned(),
                    e["outcome"].as_str().unwrap().to_owned(),
                    e["traces"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected: BTreeSet<(String, String, String, u64)> = reach
            .iter()
            .filter_map(|((service, operation), (traces, sync, all))| {
                let outcome = if sync.contains(node) {
                    "fails"
                } else if all.contains(node) {
                    "degrades"
                } else {
                    return None;
                };
                Some((
                    service.clone(),
                    operation.clone(),
                    outcome.to_owned(),
                    *traces,
                ))
            })
            .collect();
        assert_eq!(got, expected, "impact of {node}");
        some_degrade |= expected
            .iter()
            .any(|(_, _, outcome, _)| outcome == "degrades");
        assert_eq!(
            impact["unaffected"].as_u64().unwrap() as usize,
            reach.len() - expected.len(),
            "{node}"
        );
    }
    assert!(
        some_degrade,
        "the shop's queue makes some failures only degrade"
    );
}

#[test]
fn impact_names_what_it_does_not_know() {
    let request = Simulation::starting_at(3, 1_700_000_000_000_000_000)
        .request(20, 1_700_000_000_000_000_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.pb");
    std::fs::write(&file, request.encode_to_vec()).unwrap();
    let output = Command::new(binary())
        .args(["impact", "kart", "--traces"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("\"kart\" is not a node or an edge of this window; nodes include:")
            && stderr.contains("cart"),
        "{stderr}"
    );
}

#[test]
fn recommended_actions_weigh_what_they_touch_by_the_traffic_the_traces_show() {
    let request = Simulation::starting_at(5, 1_700_000_000_000_000_000)
        .request(300, 1_700_000_000_000_000_000);
    let reach = reach_per_entry(&otlp::convert(request.clone()).spans);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.pb");
    std::fs::write(&file, request.encode_to_vec()).unwrap();
    let output = succeeded(
        Command::new(binary())
            .args(["hotspots", "--format", "json", "--traces"])
            .arg(&file),
    );
    let hotspots: Value = serde_json::from_slice(&output.stdout).unwrap();
    let actions = hotspots["actions"].as_array().unwrap();
    assert_eq!(
        actions.len(),
        hotspots["findings"].as_array().unwrap().len(),
        "one action per finding"
    );
    let shares: Vec<f64> = actions
        .iter()
        .map(|a| a["traffic_share"].as_f64().unwrap())
        .collect();
    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
    // frontend is a single point of failure: the traces that reach it, and those that wait
    // for it, counted trace by trace.
    let spof = actions
        .iter()
        .find(|a| a["finding"] == "single_point_of_failure" && a["subjects"][0] == "frontend")
        .expect("frontend is a single point of failure");
    let total: u64 = reach.values().map(|(traces, _, _)| traces).sum();
    let reaching: u64 = reach
        .values()
        .filter(|(_, _, all)| all.contains("frontend"))
        .map(|(traces, _, _)| traces)
        .sum();
    let failing = reach
        .values()
        .filter(|(_, sync, _)| sync.contains("frontend"))
        .count();
    let expected_share = (reaching as f64 / total as f64 * 1_000.0).round() / 1_000.0;
    assert_eq!(spof["traffic_share"].as_f64().unwrap(), expected_share);
    assert_eq!(
        spof["failing_entry_operations"].as_u64().unwrap() as usize,
        failing
    );
    assert!(
        spof["action"]
            .as_str()
            .unwrap()
            .contains(&format!("{failing} entry operations fail without it")),
        "{spof}"
    );
}
