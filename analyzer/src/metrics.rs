//! Coupling and reach metrics per node of a snapshot's graph.
//!
//! Client nodes (the virtual `user` and named external callers) are where calls come from, not
//! parts of the architecture: they are left out of fan-in, reach and centrality.

use std::collections::BTreeMap;

use petgraph::algo::articulation_points::articulation_points;
use petgraph::algo::{dominators, tarjan_scc};
use petgraph::graph::{DiGraph, NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use crate::derive::NodeType;
use crate::snapshot::{MetricNotes, NodeMetrics, Snapshot};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricSettings {
    /// Above this many nodes betweenness is estimated from sampled sources.
    pub exact_betweenness_max_nodes: usize,
    pub betweenness_samples: usize,
}

impl Default for MetricSettings {
    fn default() -> Self {
        MetricSettings {
            exact_betweenness_max_nodes: 4_000,
            betweenness_samples: 256,
        }
    }
}

struct Graph<'a> {
    graph: DiGraph<&'a str, usize>,
    index: BTreeMap<&'a str, NodeIndex>,
    is_service: Vec<bool>,
    is_entry: Vec<bool>,
}

fn build(snapshot: &Snapshot) -> Graph<'_> {
    let mut graph = DiGraph::new();
    let mut index = BTreeMap::new();
    let mut is_service = Vec::new();
    let mut is_entry = Vec::new();
    for node in snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type != NodeType::Client)
    {
        index.insert(node.id.as_str(), graph.add_node(node.id.as_str()));
        is_service.push(node.node_type == NodeType::Service);
        is_entry.push(node.entry_point);
    }
    for (position, edge) in snapshot.edges.iter().enumerate() {
        if let (Some(&from), Some(&to)) =
            (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
        {
            graph.add_edge(from, to, position);
        }
    }
    Graph {
        graph,
        index,
        is_service,
        is_entry,
    }
}

/// Nodes reachable from each node (itself excluded), as bitsets, through the SCC condensation:
/// one pass in topological order instead of one search per node.
fn reach(graph: &DiGraph<&str, usize>, direction: Direction) -> Vec<Vec<u64>> {
    let n = graph.node_count();
    let words = n.div_ceil(64);
    // tarjan_scc returns components in reverse topological order (sinks first).
    let components = tarjan_scc(graph);
    let mut component_of = vec![0; n];
    for (c, members) in components.iter().enumerate() {
        for node in members {
            component_of[node.index()] = c;
        }
    }
    let order: Vec<usize> = match direction {
        Direction::Outgoing => (0..components.len()).collect(),
        Direction::Incoming => (0..components.len()).rev().collect(),
    };
    let mut component_reach: Vec<Vec<u64>> = vec![vec![0; words]; components.len()];
    for c in order {
        let mut bits = vec![0u64; words];
        let mut cyclic = components[c].len() > 1;
        for node in &components[c] {
            for neighbour in graph.neighbors_directed(*node, direction) {
                let d = component_of[neighbour.index()];
                if d == c {
                    cyclic = true;
                    continue;
                }
                bits[neighbour.index() / 64] |= 1 << (neighbour.index() % 64);
                for (word, other) in bits.iter_mut().zip(&component_reach[d]) {
                    *word |= other;
                }
            }
        }
        if cyclic {
            for node in &components[c] {
                bits[node.index() / 64] |= 1 << (node.index() % 64);
            }
        }
        component_reach[c] = bits;
    }
    (0..n)
        .map(|i| {
            let mut bits = component_reach[component_of[i]].clone();
            bits[i / 64] &= !(1 << (i % 64));
            bits
        })
        .collect()
}

fn bitset(mask: &[bool]) -> Vec<u64> {
    let mut bits = vec![0u64; mask.len().div_ceil(64)];
    for (i, set) in mask.iter().enumerate() {
        if *set {
            bits[i / 64] |= 1 << (i % 64);
        }
    }
    bits
}

fn count(bits: &[u64], mask: &[u64]) -> usize {
    bits.iter()
        .zip(mask)
        .map(|(a, b)| (a & b).count_ones() as usize)
        .sum()
}

/// Brandes' algorithm from the given sources; unweighted, directed. Two calls between the
/// same services (say one synchronous, one through a queue) are one step of a path.
fn betweenness(graph: &DiGraph<&str, usize>, sources: impl Iterator<Item = NodeIndex>) -> Vec<f64> {
    let n = graph.node_count();
    // The distinct successors of every node in one array: each source's search walks all of
    // them, and a flat array is what keeps that walk cheap.
    let mut offsets = Vec::with_capacity(n + 1);
    let mut successors: Vec<u32> = Vec::with_capacity(graph.edge_count());
    offsets.push(0);
    let mut distinct = Vec::new();
    for v in 0..n {
        distinct.clear();
        distinct.extend(
            graph
                .neighbors(NodeIndex::new(v))
                .map(|w| w.index() as u32)
                .filter(|w| *w as usize != v),
        );
        distinct.sort_unstable();
        distinct.dedup();
        successors.extend_from_slice(&distinct);
        offsets.push(successors.len());
    }
    let successors_of = |v: usize| &successors[offsets[v]..offsets[v + 1]];

    let mut centrality = vec![0.0; n];
    let mut paths = vec![0.0f64; n];
    let mut distance = vec![u32::MAX; n];
    let mut dependency = vec![0.0f64; n];
    // Nodes in the order the search reached them, so by distance.
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for source in sources {
        let s = source.index();
        for &v in &order {
            paths[v] = 0.0;
            distance[v] = u32::MAX;
        }
        order.clear();
        paths[s] = 1.0;
        distance[s] = 0;
        order.push(s);
        let mut next = 0;
        while let Some(&v) = order.get(next) {
            next += 1;
            let one_further = distance[v] + 1;
            for &w in successors_of(v) {
                let w = w as usize;
                if distance[w] == u32::MAX {
                    distance[w] = one_further;
                    order.push(w);
                }
                if distance[w] == one_further {
                    paths[w] += paths[v];
                }
            }
        }
        // Farthest first: a node's dependency is summed from its successors on shortest paths,
        // which the search reached after it.
        for &v in order.iter().rev() {
            let one_further = distance[v] + 1;
            let mut sum = 0.0;
            for &w in successors_of(v) {
                let w = w as usize;
                if distance[w] == one_further {
                    sum += paths[v] / paths[w] * (1.0 + dependency[w]);
                }
            }
            dependency[v] = sum;
            if v != s {
                centrality[v] += sum;
            }
        }
    }
    centrality
}

pub fn node_metrics(
    snapshot: &Snapshot,
    settings: &MetricSettings,
) -> (BTreeMap<String, NodeMetrics>, MetricNotes) {
    measure(snapshot, Some(settings))
}

/// The metrics findings read, with betweenness left at 0: it costs more than all the others
/// together, and only rankings and views read it.
pub(crate) fn metrics_for_findings(snapshot: &Snapshot) -> BTreeMap<String, NodeMetrics> {
    measure(snapshot, None).0
}

/// Every metric; betweenness only with the settings to compute it with.
fn measure(
    snapshot: &Snapshot,
    centrality: Option<&MetricSettings>,
) -> (BTreeMap<String, NodeMetrics>, MetricNotes) {
    let g = build(snapshot);
    let n = g.graph.node_count();
    let mut notes = MetricNotes::default();
    let forward = reach(&g.graph, Direction::Outgoing);
    let backward = reach(&g.graph, Direction::Incoming);
    let entries = g.is_entry.iter().filter(|e| **e).count();

    let raw_betweenness = match centrality {
        None => vec![0.0; n],
        Some(settings) if n > settings.exact_betweenness_max_nodes => {
            let samples = settings.betweenness_samples.min(n).max(1);
            notes.betweenness_sampled_sources = Some(samples);
            // Evenly spread sources, deterministic so that results are repeatable.
            let step = n as f64 / samples as f64;
            let scale = n as f64 / samples as f64;
            betweenness(
                &g.graph,
                (0..samples).map(|i| NodeIndex::new((i as f64 * step) as usize)),
            )
            .into_iter()
            .map(|c| c * scale)
            .collect()
        }
        Some(_) => betweenness(&g.graph, g.graph.node_indices()),
    };
    let pairs = ((n.saturating_sub(1)) * (n.saturating_sub(2))).max(1) as f64;

    let mut undirected: UnGraph<(), ()> = UnGraph::with_capacity(n, g.graph.edge_count());
    for _ in 0..n {
        undirected.add_node(());
    }
    for edge in g.graph.edge_references() {
        if edge.source() != edge.target() {
            undirected.add_edge(edge.source(), edge.target(), ());
        }
    }
    let cut_vertices = articulation_points(&undirected);

    // Dominators from a virtual root that calls every entry point.
    let mut rooted = g.graph.map(|_, _| (), |_, _| ());
    let root = rooted.add_node(());
    for (i, entry) in g.is_entry.iter().enumerate() {
        if *entry {
            rooted.add_edge(root, NodeIndex::new(i), ());
        }
    }
    let dominance = dominators::simple_fast(&rooted, root);
    let mut dominated: Vec<Vec<String>> = vec![Vec::new(); n];
    for i in 0..n {
        let Some(strict) = dominance.strict_dominators(NodeIndex::new(i)) else {
            continue;
        };
        for d in strict.filter(|d| *d != root) {
            dominated[d.index()].push(g.graph[NodeIndex::new(i)].to_owned());
        }
    }

    let observed_minutes = snapshot.observed_minutes();
    let services = bitset(&g.is_service);
    let entry_bits = bitset(&g.is_entry);
    let everything = bitset(&vec![true; n]);
    let mut edges_in: BTreeMap<&str, Vec<&crate::snapshot::Edge>> = BTreeMap::new();
    let mut edges_out: BTreeMap<&str, Vec<&crate::snapshot::Edge>> = BTreeMap::new();
    for edge in &snapshot.edges {
        edges_in.entry(edge.to.as_str()).or_default().push(edge);
        edges_out.entry(edge.from.as_str()).or_default().push(edge);
    }
    let mut metrics = BTreeMap::new();
    for (name, &index) in &g.index {
        let i = index.index();
        let distinct = |direction: Direction| {
            let mut others: Vec<NodeIndex> = g
                .graph
                .neighbors_directed(index, direction)
                .filter(|o| *o != index)
                .collect();
            others.sort();
            others.dedup();
            others.len()
        };
        let (fan_in, fan_out) = (distinct(Direction::Incoming), distinct(Direction::Outgoing));
        let edges_in = edges_in.get(name).map_or(&[][..], Vec::as_slice);
        let edges_out = edges_out.get(name).map_or(&[][..], Vec::as_slice);
        let calls_in: u64 = edges_in.iter().map(|e| e.calls).sum();
        let calls_out: u64 = edges_out.iter().map(|e| e.calls).sum();
        let errors_in: u64 = edges_in.iter().map(|e| e.errors).sum();
        let errors_out: u64 = edges_out.iter().map(|e| e.errors).sum();
        let affected_entries = count(&backward[i], &entry_bits) + usize::from(g.is_entry[i]);
        let mut dominates = dominated[i].clone();
        dominates.sort();
        metrics.insert(
            name.to_string(),
            NodeMetrics {
                fan_in,
                fan_out,
                acs: fan_in * fan_out,
                instability: ratio(fan_out as f64, (fan_in + fan_out) as f64),
                calls_in,
                calls_out,
                weighted_instability: ratio(calls_out as f64, (calls_in + calls_out) as f64),
                blast_radius: count(&backward[i], &services),
                entry_points_affected: affected_entries,
                entry_point_share: ratio(affected_entries as f64, entries as f64),
                transitive_dependencies: count(&forward[i], &everything),
                betweenness: round(raw_betweenness[i] / pairs),
                articulation_point: cut_vertices.contains(&index),
                dominates,
                calls_per_min: round(
                    edges_in.iter().map(|e| e.estimate()).sum::<f64>() / observed_minutes,
                ),
                error_rate_in: ratio(errors_in as f64, calls_in as f64),
                error_rate_out: ratio(errors_out as f64, calls_out as f64),
                p99_in_ms: edges_in
                    .iter()
                    .filter_map(|e| e.latency_ms.as_ref().map(|q| q.p99))
                    .fold(None, |max: Option<f64>, v| {
                        Some(max.map_or(v, |m| m.max(v)))
                    }),
            },
        );
    }
    (metrics, notes)
}

fn round(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        round(part / whole)
    } else {
        0.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::aggregate::Diagnostics;
    use crate::derive::EdgeKind;
    use crate::snapshot::{Edge, Node, Window, SNAPSHOT_SCHEMA};

    /// A snapshot from `from -> to` pairs. Names starting `db:` are databases, `user` a client;
    /// `entries` are entry points. Every edge has 10 calls, 1 error for names ending in `!`.
    pub(crate) fn graph(
        edges: &[(&str, &str)],
        entries: &[&str],
        kinds: &[(&str, &str, EdgeKind)],
    ) -> Snapshot {
        let mut names: Vec<&str> = edges.iter().flat_map(|(a, b)| [*a, *b]).collect();
        names.sort();
        names.dedup();
        Snapshot {
            schema: SNAPSHOT_SCHEMA.into(),
            window: Window {
                start: "2026-01-01T00:00:00.000000Z".into(),
                end: "2026-01-01T00:10:00.000000Z".into(),
            },
            diagnostics: Diagnostics::default(),
            nodes: names
                .iter()
                .map(|name| Node {
                    id: (*name).into(),
                    node_type: if name.starts_with("db:") {
                        NodeType::Database
                    } else if *name == "user" {
                        NodeType::Client
                    } else {
                        NodeType::Service
                    },
                    entry_point: entries.contains(name),
                    spans_without_sampling: 0,
                    metrics: None,
                    first_seen: String::new(),
                    last_seen: String::new(),
                    versions: Vec::new(),
                })
                .collect(),
            edges: edges
                .iter()
                .map(|(from, to)| Edge {
                    from: (*from).into(),
                    to: (*to).into(),
                    kind: kinds
                        .iter()
                        .find(|(a, b, _)| a == from && b == to)
                        .map_or(EdgeKind::Sync, |(_, _, k)| *k),
                    calls: 10,
                    estimated_calls: None,
                    errors: u64::from(to.ends_with('!')),
                    latency_ms: None,
                    server_latency_ms: None,
                    calls_per_trace: 1.0,
                    max_calls_per_trace: 1,
                    first_seen: String::new(),
                    last_seen: String::new(),
                    resilience: Default::default(),
                    versions: Vec::new(),
                })
                .collect(),
            operations: Vec::new(),
            entry_operations: Vec::new(),
            findings: Vec::new(),
            metric_notes: MetricNotes::default(),
        }
    }

    fn metrics(snapshot: &Snapshot) -> BTreeMap<String, NodeMetrics> {
        node_metrics(snapshot, &MetricSettings::default()).0
    }

    #[test]
    fn fan_in_fan_out_coupling_and_instability() {
        let mut snapshot = graph(
            &[("user", "a"), ("a", "b"), ("a", "c"), ("b", "c")],
            &["a"],
            &[],
        );
        // The calls were seen over 10 minutes.
        for edge in &mut snapshot.edges {
            edge.first_seen = "2026-01-01T00:00:00.000000Z".into();
            edge.last_seen = "2026-01-01T00:10:00.000000Z".into();
        }
        snapshot.edges[0].last_seen = "2026-01-01T00:01:00.000000Z".into();
        let m = metrics(&snapshot);
        let get = |n: &str| (m[n].fan_in, m[n].fan_out, m[n].acs, m[n].instability);
        assert_eq!(get("a"), (0, 2, 0, 1.0), "the user is not a caller");
        assert_eq!(get("b"), (1, 1, 1, 0.5));
        assert_eq!(get("c"), (2, 0, 0, 0.0));
        assert_eq!(
            (
                m["b"].calls_in,
                m["b"].calls_out,
                m["b"].weighted_instability
            ),
            (10, 10, 0.5)
        );
        assert_eq!(
            m["c"].calls_per_min, 2.0,
            "20 calls in 10 minutes of traffic"
        );
        assert!(!m.contains_key("user"));
    }

    #[test]
    fn blast_radius_counts_services_that_depend_transitively() {
        let m = metrics(&graph(
            &[("e", "a"), ("a", "b"), ("b", "db:orders"), ("x", "b")],
            &["e", "x"],
            &[],
        ));
        assert_eq!(m["b"].blast_radius, 3, "a, e and x depend on b");
        assert_eq!(m["db:orders"].blast_radius, 4);
        assert_eq!(
            (m["b"].entry_points_affected, m["b"].entry_point_share),
            (2, 1.0)
        );
        assert_eq!(
            (m["a"].entry_points_affected, m["a"].entry_point_share),
            (1, 0.5)
        );
        assert_eq!(
            (m["e"].entry_points_affected, m["e"].blast_radius),
            (1, 0),
            "itself"
        );
        assert_eq!(m["e"].transitive_dependencies, 3);
        assert_eq!(m["db:orders"].transitive_dependencies, 0);
    }

    #[test]
    fn nodes_in_a_cycle_depend_on_each_other() {
        let m = metrics(&graph(&[("a", "b"), ("b", "a"), ("b", "c")], &[], &[]));
        assert_eq!(
            (m["a"].blast_radius, m["a"].transitive_dependencies),
            (1, 2)
        );
        assert_eq!(m["c"].blast_radius, 2);
    }

    #[test]
    fn betweenness_counts_shortest_paths_through_a_node() {
        let m = metrics(&graph(&[("a", "b"), ("b", "c")], &[], &[]));
        assert_eq!(
            m["b"].betweenness, 0.5,
            "one of the two ordered pairs (a, c) passes b"
        );
        assert_eq!(m["a"].betweenness, 0.0);
    }

    #[test]
    fn two_calls_between_the_same_services_are_one_step_of_a_path() {
        // a reaches c through b and through d; a calls b both directly and through a queue.
        let mut snapshot = graph(
            &[("a", "b"), ("a", "b"), ("b", "c"), ("a", "d"), ("d", "c")],
            &[],
            &[],
        );
        snapshot.edges[1].kind = EdgeKind::Async;
        let m = metrics(&snapshot);
        // Half of the pair (a, c)'s shortest paths pass each, out of 4 × 3 ordered pairs.
        assert_eq!(m["b"].betweenness, round(0.5 / 6.0));
        assert_eq!(m["d"].betweenness, m["b"].betweenness);
    }

    /// Betweenness by its definition: for every ordered pair (s, t), the share of shortest
    /// paths from s to t through v, counted from distances and path counts of every pair.
    fn betweenness_by_definition(n: usize, edges: &[(usize, usize)]) -> Vec<f64> {
        let mut next = vec![Vec::new(); n];
        for &(a, b) in edges {
            if a != b && !next[a].contains(&b) {
                next[a].push(b);
            }
        }
        let searches: Vec<(Vec<Option<usize>>, Vec<f64>)> = (0..n)
            .map(|s| {
                let mut distance = vec![None; n];
                let mut paths = vec![0.0; n];
                distance[s] = Some(0);
                paths[s] = 1.0;
                let mut frontier = vec![s];
                let mut d = 0;
                while !frontier.is_empty() {
                    d += 1;
                    let mut reached = Vec::new();
                    for &v in &frontier {
                        for &w in &next[v] {
                            if distance[w].is_none() {
                                distance[w] = Some(d);
                                reached.push(w);
                            }
                            if distance[w] == Some(d) {
                                paths[w] += paths[v];
                            }
                        }
                    }
                    frontier = reached;
                }
                (distance, paths)
            })
            .collect();
        let mut centrality = vec![0.0; n];
        for s in 0..n {
            for t in (0..n).filter(|t| *t != s) {
                let Some(total) = searches[s].0[t] else {
                    continue;
                };
                for v in (0..n).filter(|v| *v != s && *v != t) {
                    if let (Some(to_v), Some(from_v)) = (searches[s].0[v], searches[v].0[t]) {
                        if to_v + from_v == total {
                            centrality[v] += searches[s].1[v] * searches[v].1[t] / searches[s].1[t];
                        }
                    }
                }
            }
        }
        centrality
    }

    #[test]
    fn betweenness_equals_its_definition_on_graphs_with_repeated_calls_and_cycles() {
        for seed in 1..=20u64 {
            // A small deterministic pseudo-random graph: repeated pairs, self-calls, cycles.
            let mut state = seed;
            let mut random = |below: usize| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as usize % below
            };
            let n = 4 + random(9);
            let edges: Vec<(usize, usize)> = (0..n * 2).map(|_| (random(n), random(n))).collect();
            let mut graph: DiGraph<&str, usize> = DiGraph::new();
            for _ in 0..n {
                graph.add_node("");
            }
            for &(a, b) in &edges {
                graph.add_edge(NodeIndex::new(a), NodeIndex::new(b), 0);
            }
            let brandes = betweenness(&graph, graph.node_indices());
            let expected = betweenness_by_definition(n, &edges);
            for v in 0..n {
                assert!(
                    (brandes[v] - expected[v]).abs() < 1e-9,
                    "seed {seed}, node {v}: {} vs {} in {edges:?}",
                    brandes[v],
                    expected[v]
                );
            }
            assert!(
                expected.iter().any(|c| *c > 0.0) || edges.len() < 3,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn sampling_every_source_equals_the_exact_betweenness() {
        let edges = [
            ("a", "b"),
            ("b", "c"),
            ("a", "d"),
            ("d", "c"),
            ("c", "e"),
            ("e", "a"),
        ];
        let exact = node_metrics(&graph(&edges, &[], &[]), &MetricSettings::default());
        let sampled = node_metrics(
            &graph(&edges, &[], &[]),
            &MetricSettings {
                exact_betweenness_max_nodes: 0,
                betweenness_samples: 5,
            },
        );
        assert_eq!(sampled.1.betweenness_sampled_sources, Some(5));
        assert_eq!(exact.1.betweenness_sampled_sources, None);
        for (name, metrics) in &exact.0 {
            assert!(
                (metrics.betweenness - sampled.0[name].betweenness).abs() < 1e-9,
                "{name}"
            );
        }
    }

    #[test]
    fn articulation_points_cut_the_graph_apart() {
        let m = metrics(&graph(
            &[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")],
            &[],
            &[],
        ));
        assert!(m["b"].articulation_point);
        assert!(
            !m["a"].articulation_point && !m["c"].articulation_point && !m["d"].articulation_point
        );
    }

    #[test]
    fn dominators_are_the_nodes_every_entry_path_passes() {
        let m = metrics(&graph(
            &[("e", "a"), ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
            &["e"],
            &[],
        ));
        assert_eq!(m["a"].dominates, ["b", "c", "d"]);
        assert_eq!(m["e"].dominates, ["a", "b", "c", "d"]);
        assert!(m["b"].dominates.is_empty(), "d is also reached through c");
    }
}
