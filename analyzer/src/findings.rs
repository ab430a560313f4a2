//! Findings: where the architecture hurts, each with the evidence a reviewer can check, and a
//! per-service risk score whose every term is shown.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::derive::{EdgeKind, NodeType};
use crate::snapshot::{Evidence, Finding, FindingKind, NodeMetrics, Severity, Snapshot};

/// Every threshold a finding uses; each appears in the evidence of the findings it raises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// A hub has at least this many distinct callers...
    pub hub_min_fan_in: usize,
    /// ...and at least this many distinct callees.
    pub hub_min_fan_out: usize,
    /// A database called by at least this many services is shared.
    pub shared_database_min_services: usize,
    /// An edge called this many times per trace on average is chatty (N+1).
    pub chatty_min_calls_per_trace: f64,
    /// A synchronous chain of at least this many services is deep.
    pub deep_chain_min_services: usize,
    /// A node that every entry path to at least this many other nodes passes is a single point
    /// of failure.
    pub spof_min_dominated: usize,
    /// An edge failing at least this share of its calls is an error hotspot...
    pub error_hotspot_min_error_rate: f64,
    /// ...when it has at least this many calls.
    pub error_hotspot_min_calls: u64,
    /// Retries that let at least this many attempts of one call reach a node amplify load.
    pub retry_amplification_min: f64,
    /// A caller waiting this many times the callee's p99 (and at least `timeout_min_wait_ms`)
    /// has no timeout that works; a timeout that long is too long.
    pub timeout_wait_ratio: f64,
    pub timeout_min_wait_ms: f64,
    /// Latency budgets of entry operations, in ms, by `"service operation"`, by `"service"`,
    /// or `"*"` for all: their critical path's p99s must add up to less.
    pub latency_budgets_ms: BTreeMap<String, f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            hub_min_fan_in: 4,
            hub_min_fan_out: 4,
            shared_database_min_services: 2,
            chatty_min_calls_per_trace: 10.0,
            deep_chain_min_services: 6,
            spof_min_dominated: 2,
            error_hotspot_min_error_rate: 0.01,
            error_hotspot_min_calls: 20,
            retry_amplification_min: 4.0,
            timeout_wait_ratio: 10.0,
            timeout_min_wait_ms: 1_000.0,
            latency_budgets_ms: BTreeMap::new(),
        }
    }
}

pub(crate) fn evidence(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Evidence {
    Evidence {
        values: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        ..Evidence::default()
    }
}

/// The graph without client nodes (or, for cycles and pairs, of services only: a broker or
/// database named as callee and as caller is no dependency cycle), with edges by kind.
struct ServiceGraph<'a> {
    graph: DiGraph<&'a str, EdgeKind>,
    index: HashMap<&'a str, NodeIndex>,
}

fn service_graph(
    snapshot: &Snapshot,
    only: Option<EdgeKind>,
    services_only: bool,
) -> ServiceGraph<'_> {
    let mut graph = DiGraph::new();
    let mut index = HashMap::new();
    let included = |t: NodeType| {
        if services_only {
            t == NodeType::Service
        } else {
            t != NodeType::Client
        }
    };
    for node in snapshot.nodes.iter().filter(|n| included(n.node_type)) {
        index.insert(node.id.as_str(), graph.add_node(node.id.as_str()));
    }
    for edge in &snapshot.edges {
        if only.is_some_and(|kind| kind != edge.kind) || edge.from == edge.to {
            continue;
        }
        if let (Some(&a), Some(&b)) = (index.get(edge.from.as_str()), index.get(edge.to.as_str())) {
            graph.add_edge(a, b, edge.kind);
        }
    }
    ServiceGraph { graph, index }
}

/// A concrete cycle through `start` within `members`, as names ending where they began.
fn cycle_path(g: &ServiceGraph, members: &HashSet<NodeIndex>, start: NodeIndex) -> Vec<String> {
    let mut previous: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in g.graph.neighbors(node) {
            if !members.contains(&next) {
                continue;
            }
            if next == start {
                let mut path = vec![g.graph[start].to_owned()];
                let mut at = node;
                while at != start {
                    path.push(g.graph[at].to_owned());
                    at = previous[&at];
                }
                path.push(g.graph[start].to_owned());
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = previous.entry(next) {
                slot.insert(node);
                queue.push_back(next);
            }
        }
    }
    Vec::new()
}

/// Non-trivial strongly connected components (self-calls are not counted as cycles).
fn cycles(g: &ServiceGraph) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for component in tarjan_scc(&g.graph) {
        if component.len() < 2 {
            continue;
        }
        let members: HashSet<NodeIndex> = component.iter().copied().collect();
        let start = *component
            .iter()
            .min_by_key(|n| g.graph[**n])
            .expect("non-empty");
        let mut names: Vec<String> = component.iter().map(|n| g.graph[*n].to_owned()).collect();
        names.sort();
        out.push((names, cycle_path(g, &members, start)));
    }
    out.sort();
    out
}

/// The longest chain of synchronous calls from an entry point, in services, over the graph of
/// sync edges with cycles contracted away.
pub fn longest_sync_chain(snapshot: &Snapshot) -> Vec<String> {
    let g = service_graph(snapshot, Some(EdgeKind::Sync), false);
    let components = tarjan_scc(&g.graph);
    let mut component_of = vec![0; g.graph.node_count()];
    for (c, members) in components.iter().enumerate() {
        for m in members {
            component_of[m.index()] = c;
        }
    }
    // Components come sinks first: the best chain from each is known before its callers.
    let mut best: Vec<Vec<NodeIndex>> = vec![Vec::new(); components.len()];
    for (c, members) in components.iter().enumerate() {
        let representative = *members
            .iter()
            .min_by_key(|n| g.graph[**n])
            .expect("non-empty");
        let mut tail: Vec<NodeIndex> = Vec::new();
        for member in members {
            for next in g.graph.neighbors(*member) {
                let d = component_of[next.index()];
                if d != c && best[d].len() > tail.len() {
                    tail = best[d].clone();
                }
            }
        }
        let mut chain = vec![representative];
        chain.extend(tail);
        best[c] = chain;
    }
    let entries: BTreeSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.entry_point)
        .map(|n| n.id.as_str())
        .collect();
    entries
        .iter()
        .filter_map(|e| g.index.get(e))
        .map(|n| &best[component_of[n.index()]])
        .max_by_key(|chain| chain.len())
        .map(|chain| chain.iter().map(|n| g.graph[*n].to_owned()).collect())
        .unwrap_or_default()
}

pub fn findings(
    snapshot: &Snapshot,
    metrics: &BTreeMap<String, NodeMetrics>,
    thresholds: &Thresholds,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let all = service_graph(snapshot, None, true);
    let sync = service_graph(snapshot, Some(EdgeKind::Sync), true);
    let sync_cycles = cycles(&sync);
    for (members, path) in &sync_cycles {
        out.push(Finding {
            kind: FindingKind::SyncCycle,
            severity: Severity::Error,
            subjects: members.clone(),
            evidence: Evidence {
                cycle: path.clone(),
                ..evidence([("services", json!(members.len()))])
            },
            message: format!(
                "{} services call each other synchronously in a cycle ({}), e.g. {}: a failure or slowdown in any of them reaches all of them",
                members.len(),
                members.join(", "),
                path.join(" → ")
            ),
        });
    }
    for (members, path) in cycles(&all) {
        // A cycle that is exactly a synchronous one is reported once, as synchronous.
        if sync_cycles.iter().any(|(m, _)| *m == members) {
            continue;
        }
        out.push(Finding {
            kind: FindingKind::AsyncCycle,
            severity: Severity::Warning,
            subjects: members.clone(),
            evidence: Evidence {
                cycle: path.clone(),
                ..evidence([("services", json!(members.len()))])
            },
            message: format!(
                "{} services depend on each other in a cycle through a queue ({}), e.g. {}",
                members.len(),
                members.join(", "),
                path.join(" → ")
            ),
        });
    }

    let directed: HashSet<(&str, &str)> = snapshot
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    let mut failing_calls_from: HashMap<&str, Vec<&crate::snapshot::Edge>> = HashMap::new();
    let mut callers_of: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for edge in &snapshot.edges {
        // Failures retried away or survived by a fallback do not make their caller fail.
        if edge.failures_passed_on() > 0 {
            failing_calls_from
                .entry(edge.from.as_str())
                .or_default()
                .push(edge);
        }
        if edge.from != edge.to {
            callers_of
                .entry(edge.to.as_str())
                .or_default()
                .insert(edge.from.as_str());
        }
    }
    let mut seen_pairs = BTreeSet::new();
    for edge in &snapshot.edges {
        let reverse = directed.contains(&(edge.to.as_str(), edge.from.as_str()));
        if edge.from != edge.to
            && reverse
            && all.index.contains_key(edge.from.as_str())
            && all.index.contains_key(edge.to.as_str())
        {
            let mut pair = [edge.from.clone(), edge.to.clone()];
            pair.sort();
            if seen_pairs.insert(pair.clone()) {
                out.push(Finding {
                    kind: FindingKind::BidirectionalPair,
                    severity: Severity::Warning,
                    subjects: pair.to_vec(),
                    evidence: evidence([("pair", json!(pair))]),
                    message: format!("{} and {} call each other", pair[0], pair[1]),
                });
            }
        }
    }

    for (name, m) in metrics {
        if m.fan_in >= thresholds.hub_min_fan_in && m.fan_out >= thresholds.hub_min_fan_out {
            out.push(Finding {
                kind: FindingKind::Hub,
                severity: Severity::Warning,
                subjects: vec![name.clone()],
                evidence: evidence([
                    ("fan_in", json!(m.fan_in)),
                    ("fan_out", json!(m.fan_out)),
                    ("hub_min_fan_in", json!(thresholds.hub_min_fan_in)),
                    ("hub_min_fan_out", json!(thresholds.hub_min_fan_out)),
                ]),
                message: format!(
                    "{name} is a hub: {} services call it and it calls {}",
                    m.fan_in, m.fan_out
                ),
            });
        }
        if m.dominates.len() >= thresholds.spof_min_dominated {
            out.push(Finding {
                kind: FindingKind::SinglePointOfFailure,
                severity: Severity::Warning,
                subjects: vec![name.clone()],
                evidence: Evidence {
                    dominates: m.dominates.clone(),
                    ..evidence([
                        ("articulation_point", json!(m.articulation_point)),
                        ("spof_min_dominated", json!(thresholds.spof_min_dominated)),
                    ])
                },
                message: format!(
                    "{name} is a single point of failure: every path from the entry points to {} goes through it",
                    m.dominates.join(", ")
                ),
            });
        }
    }

    for node in snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Database)
    {
        let callers: Vec<&str> = callers_of
            .get(node.id.as_str())
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default();
        if callers.len() >= thresholds.shared_database_min_services {
            let mut subjects = vec![node.id.clone()];
            subjects.extend(callers.iter().map(|c| c.to_string()));
            out.push(Finding {
                kind: FindingKind::SharedDatabase,
                severity: Severity::Warning,
                subjects,
                evidence: evidence([
                    ("database", json!(node.id)),
                    ("services", json!(callers)),
                    (
                        "shared_database_min_services",
                        json!(thresholds.shared_database_min_services),
                    ),
                ]),
                message: format!(
                    "database {} is shared by {} services: {}",
                    node.id,
                    callers.len(),
                    callers.join(", ")
                ),
            });
        }
    }

    for edge in &snapshot.edges {
        let subject = format!("{} -> {}", edge.from, edge.to);
        if edge.calls_per_trace >= thresholds.chatty_min_calls_per_trace {
            out.push(Finding {
                kind: FindingKind::ChattyEdge,
                severity: Severity::Warning,
                subjects: vec![subject.clone()],
                evidence: evidence([
                    ("calls_per_trace", json!(edge.calls_per_trace)),
                    ("max_calls_per_trace", json!(edge.max_calls_per_trace)),
                    (
                        "chatty_min_calls_per_trace",
                        json!(thresholds.chatty_min_calls_per_trace),
                    ),
                ]),
                message: format!(
                    "{} calls {} {:.1} times per trace on average (up to {}): an N+1 pattern?",
                    edge.from, edge.to, edge.calls_per_trace, edge.max_calls_per_trace
                ),
            });
        }
        let error_rate = edge.errors as f64 / edge.calls.max(1) as f64;
        if edge.calls >= thresholds.error_hotspot_min_calls
            && error_rate >= thresholds.error_hotspot_min_error_rate
        {
            // Do the callee's own calls fail? Then the errors probably start further down.
            let downstream = failing_calls_from
                .get(edge.to.as_str())
                .map_or(&[][..], Vec::as_slice);
            let origin = match downstream
                .iter()
                .max_by_key(|e| (e.failures_passed_on(), std::cmp::Reverse(&e.to)))
            {
                Some(worst) => format!(
                    "downstream: {} calls {} with {} errors it passes on",
                    worst.from,
                    worst.to,
                    worst.failures_passed_on()
                ),
                None => format!("at {}: its own calls do not fail", edge.to),
            };
            out.push(Finding {
                kind: FindingKind::ErrorHotspot,
                severity: Severity::Warning,
                subjects: vec![subject],
                evidence: evidence([
                    ("calls", json!(edge.calls)),
                    ("errors", json!(edge.errors)),
                    ("error_rate", json!((error_rate * 1e4).round() / 1e4)),
                    ("origin", json!(origin)),
                    (
                        "error_hotspot_min_error_rate",
                        json!(thresholds.error_hotspot_min_error_rate),
                    ),
                    (
                        "error_hotspot_min_calls",
                        json!(thresholds.error_hotspot_min_calls),
                    ),
                ]),
                message: format!(
                    "{:.1}% of calls from {} to {} fail; errors originate {origin}",
                    error_rate * 100.0,
                    edge.from,
                    edge.to
                ),
            });
        }
    }

    let chain = longest_sync_chain(snapshot);
    if chain.len() >= thresholds.deep_chain_min_services {
        out.push(Finding {
            kind: FindingKind::DeepSyncChain,
            severity: Severity::Warning,
            subjects: chain.clone(),
            evidence: evidence([
                ("chain", json!(chain)),
                ("services", json!(chain.len())),
                (
                    "deep_chain_min_services",
                    json!(thresholds.deep_chain_min_services),
                ),
            ]),
            message: format!(
                "a synchronous chain of {} services: {}",
                chain.len(),
                chain.join(" → ")
            ),
        });
    }

    out.extend(crate::resilience::findings(snapshot, thresholds));

    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.kind.cmp(&b.kind))
            .then(a.subjects.cmp(&b.subjects))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;
    use crate::metrics::{node_metrics, MetricSettings};

    /// The findings of `snapshot`, found alike with every metric and with only those findings
    /// read.
    fn run(snapshot: &Snapshot) -> Vec<Finding> {
        let (metrics, _) = node_metrics(snapshot, &MetricSettings::default());
        let found = findings(snapshot, &metrics, &Thresholds::default());
        assert_eq!(
            crate::analysis::findings_only(snapshot, &Default::default()),
            found
        );
        found
    }

    fn of(findings: &[Finding], kind: FindingKind) -> Vec<&Finding> {
        findings.iter().filter(|f| f.kind == kind).collect()
    }

    #[test]
    fn a_cycle_of_sync_calls_is_a_sync_cycle_and_through_a_queue_an_async_one() {
        let sync = run(&graph(
            &[("cart", "pricing"), ("pricing", "stock"), ("stock", "cart")],
            &[],
            &[],
        ));
        let cycles = of(&sync, FindingKind::SyncCycle);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].subjects, ["cart", "pricing", "stock"]);
        assert_eq!(
            cycles[0].evidence.cycle,
            ["cart", "pricing", "stock", "cart"]
        );
        assert_eq!(cycles[0].severity, Severity::Error);
        assert!(
            of(&sync, FindingKind::AsyncCycle).is_empty(),
            "reported once"
        );

        let through_queue = run(&graph(
            &[("orders", "billing"), ("billing", "orders")],
            &[],
            &[("billing", "orders", EdgeKind::Async)],
        ));
        assert!(of(&through_queue, FindingKind::SyncCycle).is_empty());
        assert_eq!(
            of(&through_queue, FindingKind::AsyncCycle)[0].subjects,
            ["billing", "orders"]
        );
        assert_eq!(
            of(&through_queue, FindingKind::BidirectionalPair)[0].subjects,
            ["billing", "orders"]
        );
    }

    #[test]
    fn self_calls_are_not_cycles() {
        assert!(run(&graph(&[("a", "a")], &[], &[])).is_empty());
    }

    #[test]
    fn a_database_named_as_callee_and_caller_is_not_a_cycle() {
        let found = run(&graph(
            &[("orders", "db:events"), ("db:events", "orders")],
            &[],
            &[],
        ));
        assert!(
            of(&found, FindingKind::SyncCycle).is_empty()
                && of(&found, FindingKind::BidirectionalPair).is_empty()
        );
    }

    #[test]
    fn a_hub_has_many_callers_and_many_callees() {
        let edges: Vec<(String, String)> = (0..4)
            .flat_map(|i| {
                [
                    (format!("in{i}"), "hub".to_owned()),
                    ("hub".to_owned(), format!("out{i}")),
                ]
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let hubs = run(&graph(&borrowed, &[], &[]));
        let hubs = of(&hubs, FindingKind::Hub);
        assert_eq!(hubs.len(), 1);
        assert_eq!(
            (hubs[0].subjects[0].as_str(), &hubs[0].evidence["fan_in"]),
            ("hub", &json!(4))
        );
        let fewer: Vec<(&str, &str)> = borrowed
            .iter()
            .copied()
            .filter(|(a, _)| *a != "in0")
            .collect();
        assert!(
            of(&run(&graph(&fewer, &[], &[])), FindingKind::Hub).is_empty(),
            "3 callers are not enough"
        );
    }

    #[test]
    fn a_database_called_by_two_services_is_shared() {
        let found = run(&graph(
            &[
                ("orders", "db:main"),
                ("billing", "db:main"),
                ("billing", "db:ledger"),
            ],
            &[],
            &[],
        ));
        let shared = of(&found, FindingKind::SharedDatabase);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].subjects, ["db:main", "billing", "orders"]);
    }

    #[test]
    fn an_edge_called_many_times_per_trace_is_chatty() {
        let mut snapshot = graph(&[("web", "db:items"), ("web", "cart")], &[], &[]);
        snapshot.edges[0].calls_per_trace = 25.0;
        snapshot.edges[0].max_calls_per_trace = 40;
        let chatty = run(&snapshot);
        let chatty = of(&chatty, FindingKind::ChattyEdge);
        assert_eq!(chatty.len(), 1);
        assert_eq!(chatty[0].subjects, ["web -> db:items"]);
        assert_eq!(
            chatty[0].evidence["chatty_min_calls_per_trace"],
            json!(10.0)
        );
    }

    #[test]
    fn a_long_sync_chain_from_an_entry_point_is_deep() {
        let chain = [
            ("a", "b"),
            ("b", "c"),
            ("c", "d"),
            ("d", "e"),
            ("e", "f"),
            ("a", "x"),
        ];
        let found = run(&graph(&chain, &["a"], &[]));
        assert_eq!(
            of(&found, FindingKind::DeepSyncChain)[0].subjects,
            ["a", "b", "c", "d", "e", "f"]
        );
        let broken = run(&graph(&chain, &["a"], &[("c", "d", EdgeKind::Async)]));
        assert!(
            of(&broken, FindingKind::DeepSyncChain).is_empty(),
            "a queue breaks the chain"
        );
    }

    #[test]
    fn a_node_every_entry_path_passes_is_a_single_point_of_failure() {
        let found = run(&graph(
            &[
                ("e", "gw"),
                ("gw", "a"),
                ("gw", "b"),
                ("a", "c"),
                ("b", "c"),
            ],
            &["e"],
            &[],
        ));
        let spofs: Vec<&str> = of(&found, FindingKind::SinglePointOfFailure)
            .iter()
            .map(|f| f.subjects[0].as_str())
            .collect();
        assert_eq!(spofs, ["e", "gw"]);
    }

    #[test]
    fn error_hotspots_say_where_the_errors_start() {
        let mut snapshot = graph(
            &[("web", "cart!"), ("cart!", "payments!"), ("web", "search!")],
            &[],
            &[],
        );
        for edge in &mut snapshot.edges {
            edge.calls = 100;
            edge.errors = if edge.to.ends_with('!') { 5 } else { 0 };
        }
        let found = run(&snapshot);
        let hot = of(&found, FindingKind::ErrorHotspot);
        let origin = |subject: &str| {
            hot.iter()
                .find(|f| f.subjects[0] == subject)
                .unwrap()
                .evidence["origin"]
                .clone()
        };
        assert_eq!(
            origin("web -> cart!"),
            json!("downstream: cart! calls payments! with 5 errors it passes on")
        );
        assert_eq!(
            origin("web -> search!"),
            json!("at search!: its own calls do not fail")
        );
    }
}
