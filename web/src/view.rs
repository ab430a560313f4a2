//! What a graph drawing shows: the nodes and edges of a snapshot at service or operation level,
//! optionally narrowed to the neighbourhood of one node, with traffic and risk per node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use archtrace_analyzer::analysis::Analyzed;
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_analyzer::risk::Hotspot;
pub use archtrace_analyzer::snapshot::Level;

/// How an edge differs from a baseline (the drift page) or from the declared architecture (the
/// conformance page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Same,
    Added,
    Removed,
    /// Observed, not declared.
    Undeclared,
    /// Declared, not observed.
    Unobserved,
}

#[derive(Clone, Debug)]
pub struct ViewNode {
    pub id: String,
    /// The service a node belongs to (itself at service level), for links to its page.
    pub service: String,
    pub node_type: NodeType,
    /// Calls into and out of it.
    pub traffic: u64,
    /// Risk score relative to the riskiest service, 0..=1.
    pub risk: f64,
}

#[derive(Clone, Debug)]
pub struct ViewEdge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub calls: u64,
    /// What the calls seen stand for ([`archtrace_analyzer::snapshot::Edge::estimate`]): edge
    /// widths follow it.
    pub estimated_calls: f64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
    pub change: Change,
}

#[derive(Clone, Debug, Default)]
pub struct GraphView {
    pub nodes: Vec<ViewNode>,
    pub edges: Vec<ViewEdge>,
}

/// Risk scores of the services, scaled so that the riskiest is 1.
pub fn relative_risk(hotspots: &[Hotspot]) -> HashMap<&str, f64> {
    let top = hotspots
        .iter()
        .map(|h| h.score)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    hotspots
        .iter()
        .map(|h| (h.service.as_str(), h.score / top))
        .collect()
}

impl GraphView {
    pub fn new(analyzed: &Analyzed, level: Level) -> GraphView {
        let snapshot = &analyzed.snapshot;
        let risk = relative_risk(&analyzed.hotspots);
        let types: HashMap<&str, NodeType> = snapshot
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.node_type))
            .collect();
        let mut traffic: BTreeMap<String, u64> = BTreeMap::new();
        let mut edges = Vec::new();
        match level {
            Level::Service => {
                for e in &snapshot.edges {
                    *traffic.entry(e.from.clone()).or_default() += e.calls;
                    *traffic.entry(e.to.clone()).or_default() += e.calls;
                    edges.push(ViewEdge {
                        from: e.from.clone(),
                        to: e.to.clone(),
                        kind: e.kind,
                        calls: e.calls,
                        estimated_calls: e.estimate(),
                        errors: e.errors,
                        p99_ms: e.latency_ms.as_ref().map(|q| q.p99),
                        change: Change::Same,
                    });
                }
                for n in &snapshot.nodes {
                    traffic.entry(n.id.clone()).or_default();
                }
            }
            Level::Operation => {
                for o in &snapshot.operations {
                    let from = operation_id(&o.from.service, &o.from.operation);
                    let to = operation_id(&o.to.service, &o.to.operation);
                    *traffic.entry(from.clone()).or_default() += o.calls;
                    *traffic.entry(to.clone()).or_default() += o.calls;
                    edges.push(ViewEdge {
                        from,
                        to,
                        kind: EdgeKind::Sync,
                        calls: o.calls,
                        estimated_calls: o.calls as f64,
                        errors: o.errors,
                        p99_ms: o.latency_ms.as_ref().map(|q| q.p99),
                        change: Change::Same,
                    });
                }
            }
        }
        let nodes = traffic
            .into_iter()
            .map(|(id, traffic)| {
                let service = service_of(&id).to_owned();
                ViewNode {
                    node_type: types
                        .get(service.as_str())
                        .copied()
                        .unwrap_or(NodeType::Service),
                    risk: risk.get(service.as_str()).copied().unwrap_or(0.0),
                    service,
                    id,
                    traffic,
                }
            })
            .collect();
        GraphView { nodes, edges }
    }

    /// Only the nodes within `hops` calls (either direction) of the nodes of `service`.
    pub fn focus(&self, service: &str, hops: usize) -> GraphView {
        let mut adjacent: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in &self.edges {
            adjacent.entry(&e.from).or_default().push(&e.to);
            adjacent.entry(&e.to).or_default().push(&e.from);
        }
        let mut distance: HashMap<&str, usize> = HashMap::new();
        let mut queue = VecDeque::new();
        for n in self.nodes.iter().filter(|n| n.service == service) {
            distance.insert(&n.id, 0);
            queue.push_back(n.id.as_str());
        }
        while let Some(node) = queue.pop_front() {
            let d = distance[node];
            if d == hops {
                continue;
            }
            for next in adjacent.get(node).into_iter().flatten() {
                if !distance.contains_key(next) {
                    distance.insert(next, d + 1);
                    queue.push_back(next);
                }
            }
        }
        let kept: BTreeSet<&str> = distance.keys().copied().collect();
        GraphView {
            nodes: self
                .nodes
                .iter()
                .filter(|n| kept.contains(n.id.as_str()))
                .cloned()
                .collect(),
            edges: self
                .edges
                .iter()
                .filter(|e| kept.contains(e.from.as_str()) && kept.contains(e.to.as_str()))
                .cloned()
                .collect(),
        }
    }
}

/// Operation-level node ids: `service · operation` (the service alone for calls from outside).
pub fn operation_id(service: &str, operation: &str) -> String {
    if operation.is_empty() {
        service.to_owned()
    } else {
        format!("{service} · {operation}")
    }
}

fn service_of(id: &str) -> &str {
    id.split(" · ").next().unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Analyzed {
        let snapshot = serde_json::from_value(serde_json::json!({
            "schema": "archtrace.snapshot/v1",
            "window": {"start": "", "end": ""},
            "diagnostics": {"spans": 0, "traces": 0, "observations": 0, "orphaned_spans": 0,
                "unresolved_client_spans": 0, "late_spans_paired": 0, "late_spans_dropped": 0,
                "traces_cut_short": 0},
            "nodes": [
                {"id": "a", "type": "service", "entry_point": true},
                {"id": "b", "type": "service", "entry_point": false},
                {"id": "c", "type": "service", "entry_point": false},
                {"id": "db", "type": "database", "entry_point": false}
            ],
            "edges": [
                {"from": "a", "to": "b", "kind": "sync", "calls": 10, "errors": 0,
                 "latency_ms": null, "server_latency_ms": null, "calls_per_trace": 1.0,
                 "max_calls_per_trace": 1, "first_seen": "", "last_seen": ""},
                {"from": "b", "to": "c", "kind": "async", "calls": 5, "errors": 1,
                 "latency_ms": null, "server_latency_ms": null, "calls_per_trace": 1.0,
                 "max_calls_per_trace": 1, "first_seen": "", "last_seen": ""},
                {"from": "c", "to": "db", "kind": "sync", "calls": 7, "errors": 0,
                 "latency_ms": null, "server_latency_ms": null, "calls_per_trace": 1.0,
                 "max_calls_per_trace": 1, "first_seen": "", "last_seen": ""}
            ],
            "operations": [
                {"from": {"service": "a", "operation": "GET /"},
                 "to": {"service": "b", "operation": "GET /b"},
                 "calls": 10, "errors": 0, "latency_ms": null}
            ]
        }))
        .unwrap();
        Analyzed::new(snapshot, &Default::default())
    }

    #[test]
    fn traffic_is_calls_in_and_out() {
        let view = GraphView::new(&snapshot(), Level::Service);
        let traffic: BTreeMap<&str, u64> = view
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.traffic))
            .collect();
        assert_eq!(
            traffic,
            BTreeMap::from([("a", 10), ("b", 15), ("c", 12), ("db", 7)])
        );
        assert_eq!(view.nodes[3].node_type, NodeType::Database);
    }

    #[test]
    fn focus_keeps_the_nodes_within_n_hops() {
        let view = GraphView::new(&snapshot(), Level::Service);
        let ids = |v: &GraphView| v.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&view.focus("a", 1)), ["a", "b"]);
        assert_eq!(ids(&view.focus("c", 1)), ["b", "c", "db"]);
        assert_eq!(view.focus("c", 1).edges.len(), 2);
        assert_eq!(ids(&view.focus("a", 3)).len(), 4);
        assert!(view.focus("nobody", 2).nodes.is_empty());
    }

    #[test]
    fn operation_level_nodes_belong_to_their_service() {
        let view = GraphView::new(&snapshot(), Level::Operation);
        let ids: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a · GET /", "b · GET /b"]);
        assert_eq!(view.nodes[1].service, "b");
        assert_eq!(view.focus("b", 0).nodes.len(), 1);
    }
}
