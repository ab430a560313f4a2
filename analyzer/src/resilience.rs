//! Resilience findings from what calls did when they failed: retries that multiply load along a
//! chain, waits no timeout cuts, timeouts far longer than the callee needs or longer than the
//! caller's own, and entry operations whose critical path adds up beyond their latency budget.

use std::collections::{BTreeMap, HashMap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde_json::json;

use crate::derive::{EdgeKind, NodeType};
use crate::findings::{evidence, Thresholds};
use crate::snapshot::{Edge, EntryOperation, Finding, FindingKind, Resilience, Severity, Snapshot};

/// A duration as a person reads it: "850 ms", "2.5 s".
pub fn duration(ms: f64) -> String {
    if ms >= 1_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn edge_subject(edge: &Edge) -> String {
    format!("{} -> {}", edge.from, edge.to)
}

/// What the callee needs: its own p99 when it reports spans, else what its callers waited.
fn callee_p99(edge: &Edge) -> Option<f64> {
    edge.server_latency_ms
        .as_ref()
        .or(edge.latency_ms.as_ref())
        .map(|q| q.p99)
}

pub fn findings(snapshot: &Snapshot, thresholds: &Thresholds) -> Vec<Finding> {
    let sync: Vec<&Edge> = snapshot
        .edges
        .iter()
        .filter(|e| e.kind == EdgeKind::Sync && e.from != e.to)
        .collect();
    let clients: std::collections::HashSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Client)
        .map(|n| n.id.as_str())
        .collect();
    let mut out = retry_amplification(&sync, thresholds);
    for edge in sync.iter().filter(|e| !clients.contains(e.from.as_str())) {
        out.extend(timeout_finding(edge, thresholds));
    }
    out.extend(inverted_timeouts(&sync));
    for entry in &snapshot.entry_operations {
        out.extend(over_budget(entry, thresholds));
    }
    out
}

/// Up to how many attempts of one call reach each node, along synchronous chains: the product
/// of the most attempts each edge of the chain took. Computed once per node in topological
/// order of the call graph's strongly connected components (cycles are findings of their own;
/// within one, each call is followed once).
fn retry_amplification(sync: &[&Edge], thresholds: &Thresholds) -> Vec<Finding> {
    let mut graph: DiGraph<&str, f64> = DiGraph::new();
    let mut index: HashMap<&str, NodeIndex> = HashMap::new();
    for edge in sync {
        for name in [edge.from.as_str(), edge.to.as_str()] {
            index.entry(name).or_insert_with(|| graph.add_node(name));
        }
        let attempts = edge.resilience.max_attempts.max(1) as f64;
        graph.add_edge(index[edge.from.as_str()], index[edge.to.as_str()], attempts);
    }
    if graph.edge_weights().all(|a| *a <= 1.0) {
        return Vec::new();
    }
    let mut reach: Vec<(f64, Option<NodeIndex>)> = vec![(1.0, None); graph.node_count()];
    // tarjan_scc lists components in reverse topological order.
    let mut components = tarjan_scc(&graph);
    components.reverse();
    for component in components {
        let mut members = component;
        members.sort_by_key(|n| graph[*n]);
        for node in members {
            let mut incoming: Vec<_> = graph
                .edges_directed(node, Direction::Incoming)
                .map(|e| {
                    use petgraph::visit::EdgeRef;
                    (e.source(), *e.weight())
                })
                .collect();
            incoming.sort_by_key(|(from, _)| graph[*from]);
            for (from, attempts) in incoming {
                let through = reach[from.index()].0 * attempts;
                if through > reach[node.index()].0 {
                    reach[node.index()] = (through, Some(from));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut nodes: Vec<NodeIndex> = graph.node_indices().collect();
    nodes.sort_by_key(|n| graph[*n]);
    for node in nodes {
        let (amplification, Some(from)) = reach[node.index()] else {
            continue;
        };
        let last_attempts = graph
            .edges_connecting(from, node)
            .map(|e| *e.weight())
            .fold(1.0, f64::max);
        // Reported where the load lands: the last call of the chain retries.
        if amplification < thresholds.retry_amplification_min || last_attempts <= 1.0 {
            continue;
        }
        let mut chain = vec![node];
        let mut at = node;
        while let Some(previous) = reach[at.index()].1 {
            if chain.contains(&previous) {
                break;
            }
            chain.push(previous);
            at = previous;
        }
        chain.reverse();
        let steps: Vec<String> = chain
            .windows(2)
            .map(|pair| {
                let attempts = graph
                    .edges_connecting(pair[0], pair[1])
                    .map(|e| *e.weight())
                    .fold(1.0, f64::max);
                format!("{} → {} ×{attempts}", graph[pair[0]], graph[pair[1]])
            })
            .collect();
        let names: Vec<String> = chain.iter().map(|n| graph[*n].to_owned()).collect();
        out.push(Finding {
            kind: FindingKind::RetryAmplification,
            severity: Severity::Warning,
            subjects: vec![graph[node].to_owned()],
            evidence: evidence([
                ("amplification", json!(amplification)),
                ("chain", json!(names)),
                ("attempts", json!(steps)),
                (
                    "retry_amplification_min",
                    json!(thresholds.retry_amplification_min),
                ),
            ]),
            message: format!(
                "retries multiply the load on {}: up to {amplification} attempts reach it per call of {} ({}); when it fails, its callers' retries multiply its load",
                graph[node],
                names[0],
                steps.join(", ")
            ),
        });
    }
    out
}

/// A caller that waited far longer than the callee needs, with no timeout cutting the wait; or
/// a timeout far longer than the callee needs.
fn timeout_finding(edge: &Edge, thresholds: &Thresholds) -> Option<Finding> {
    let p99 = callee_p99(edge)?;
    let longest = edge.resilience.max_wait_ms?;
    let bound = (p99 * thresholds.timeout_wait_ratio).max(thresholds.timeout_min_wait_ms);
    let subject = edge_subject(edge);
    let values = |timeout: serde_json::Value| {
        evidence([
            ("callee_p99_ms", json!(p99)),
            ("max_wait_ms", json!(longest)),
            ("timeout_ms", timeout),
            ("timeout_wait_ratio", json!(thresholds.timeout_wait_ratio)),
            ("timeout_min_wait_ms", json!(thresholds.timeout_min_wait_ms)),
        ])
    };
    match edge.resilience.timeout_ms {
        None if longest > bound => Some(Finding {
            kind: FindingKind::MissingTimeout,
            severity: Severity::Warning,
            subjects: vec![subject],
            evidence: values(serde_json::Value::Null),
            message: format!(
                "{} waited up to {} on {}, whose p99 is {}, and no timeout cut those calls: give the call a timeout of a few times that p99 (e.g. {})",
                edge.from,
                duration(longest),
                edge.to,
                duration(p99),
                duration(p99 * 3.0)
            ),
        }),
        Some(timeout) if timeout > bound => Some(Finding {
            kind: FindingKind::LongTimeout,
            severity: Severity::Info,
            subjects: vec![subject],
            evidence: values(json!(timeout)),
            message: format!(
                "{} gives up on {} only after {} (failed calls end there), while {}'s p99 is {}: a shorter timeout frees callers sooner",
                edge.from,
                edge.to,
                duration(timeout),
                edge.to,
                duration(p99)
            ),
        }),
        _ => None,
    }
}

/// b keeps calling c after a stopped waiting for b: b's timeout on c is at least a's on b.
fn inverted_timeouts(sync: &[&Edge]) -> Vec<Finding> {
    let mut timeouts_from: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
    for edge in sync {
        if let Some(timeout) = edge.resilience.timeout_ms {
            timeouts_from
                .entry(edge.from.as_str())
                .or_default()
                .push((edge.to.as_str(), timeout));
        }
    }
    let mut out = Vec::new();
    for outer in sync {
        let Some(outer_timeout) = outer.resilience.timeout_ms else {
            continue;
        };
        for &(callee, inner_timeout) in timeouts_from.get(outer.to.as_str()).into_iter().flatten() {
            if inner_timeout < outer_timeout || callee == outer.from {
                continue;
            }
            out.push(Finding {
                kind: FindingKind::InvertedTimeouts,
                severity: Severity::Warning,
                subjects: vec![edge_subject(outer), format!("{} -> {callee}", outer.to)],
                evidence: evidence([
                    ("outer_timeout_ms", json!(outer_timeout)),
                    ("inner_timeout_ms", json!(inner_timeout)),
                    (
                        "chain",
                        json!([outer.from.as_str(), outer.to.as_str(), callee]),
                    ),
                ]),
                message: format!(
                    "{} waits up to {} on {callee}, but {} gives up on {} after {}: work goes on after nobody waits for it; timeouts should shrink along a chain",
                    outer.to,
                    duration(inner_timeout),
                    outer.from,
                    outer.to,
                    duration(outer_timeout)
                ),
            });
        }
    }
    out
}

/// The budget declared for an entry operation: by `service operation`, else by service, else
/// the default `*`.
fn budget_of(entry: &EntryOperation, thresholds: &Thresholds) -> Option<f64> {
    let budgets = &thresholds.latency_budgets_ms;
    budgets
        .get(&format!("{} {}", entry.service, entry.operation))
        .or_else(|| budgets.get(&entry.service))
        .or_else(|| budgets.get("*"))
        .copied()
}

/// The p99 of each service's time on the critical path, added: what the entry takes when every
/// service on its path has a tail moment in the same request.
pub fn critical_p99_sum(entry: &EntryOperation) -> f64 {
    entry
        .critical_path
        .iter()
        .filter_map(|p| p.time_ms.as_ref().map(|q| q.p99))
        .sum()
}

/// What an edge's calls showed of retries, fallbacks and timeouts, in words; empty when
/// nothing.
pub fn describe(resilience: &Resilience) -> String {
    let mut parts = Vec::new();
    if resilience.retries > 0 {
        parts.push(format!(
            "{} retries (up to {} attempts)",
            resilience.retries,
            resilience.max_attempts.max(2)
        ));
    }
    if resilience.fallbacks > 0 {
        parts.push(format!("{} fallbacks", resilience.fallbacks));
    }
    if let Some(timeout) = resilience.timeout_ms {
        parts.push(format!("timeout {}", duration(timeout)));
    }
    parts.join("; ")
}

/// Entry operations that have a critical path, the busiest first (then by name).
pub fn busiest_critical_paths(snapshot: &Snapshot) -> Vec<&EntryOperation> {
    let mut entries: Vec<&EntryOperation> = snapshot
        .entry_operations
        .iter()
        .filter(|e| !e.critical_path.is_empty())
        .collect();
    entries.sort_by(|a, b| {
        (b.traces, &a.service, &a.operation).cmp(&(a.traces, &b.service, &b.operation))
    });
    entries
}

/// The entry's p50/p99 and who its critical path's time belongs to, the largest share first
/// (at most `services` of them), e.g. "p50 120 ms, p99 480 ms; payment 62% (p99 300 ms),
/// gateway 38% (p99 90 ms); p99s add up to 390 ms".
pub fn critical_path_summary(entry: &EntryOperation, services: usize) -> String {
    let latency = entry
        .latency_ms
        .as_ref()
        .map(|q| format!("p50 {}, p99 {}; ", duration(q.p50), duration(q.p99)))
        .unwrap_or_default();
    let shares: Vec<String> = entry
        .critical_path
        .iter()
        .take(services)
        .map(|p| {
            let p99 = p
                .time_ms
                .as_ref()
                .map(|q| format!(" (p99 {})", duration(q.p99)))
                .unwrap_or_default();
            format!("{} {:.0}%{p99}", p.service, p.share * 100.0)
        })
        .collect();
    let more = entry.critical_path.len().saturating_sub(services);
    let more = if more > 0 {
        format!(", {more} more")
    } else {
        String::new()
    };
    format!(
        "{latency}{}{more}; p99s add up to {}",
        shares.join(", "),
        duration(critical_p99_sum(entry))
    )
}

fn over_budget(entry: &EntryOperation, thresholds: &Thresholds) -> Option<Finding> {
    let budget = budget_of(entry, thresholds)?;
    let added = critical_p99_sum(entry);
    if entry.critical_path.is_empty() || added <= budget {
        return None;
    }
    let parts: Vec<String> = entry
        .critical_path
        .iter()
        .filter_map(|p| {
            Some(format!(
                "{} {}",
                p.service,
                duration(p.time_ms.as_ref()?.p99)
            ))
        })
        .collect();
    let observed = entry.latency_ms.as_ref().map(|q| q.p99);
    let slowest = entry
        .critical_path
        .iter()
        .filter_map(|p| Some((p.time_ms.as_ref()?.p99, p.service.as_str())))
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, service)| service);
    Some(Finding {
        kind: FindingKind::LatencyBudget,
        severity: Severity::Warning,
        subjects: vec![format!("{} {}", entry.service, entry.operation)],
        evidence: evidence([
            ("budget_ms", json!(budget)),
            ("critical_p99_sum_ms", json!((added * 1e3).round() / 1e3)),
            ("entry_p99_ms", json!(observed)),
            ("critical_path_p99_ms", json!(parts)),
            ("slowest_service", json!(slowest)),
        ]),
        message: format!(
            "{} {}: the p99s on its critical path add up to {} ({}), beyond its {} budget{}",
            entry.service,
            entry.operation,
            duration(added),
            parts.join(" + "),
            duration(budget),
            observed
                .map(|p| format!("; its own p99 is {}", duration(p)))
                .unwrap_or_default()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;
    use crate::snapshot::{PathShare, Quantiles, Spread};

    fn q(p99: f64) -> Option<Quantiles> {
        Some(Quantiles {
            p50: p99 / 2.0,
            p90: p99 / 1.5,
            p99,
        })
    }

    fn edge_mut<'a>(snapshot: &'a mut Snapshot, from: &str, to: &str) -> &'a mut Edge {
        snapshot
            .edges
            .iter_mut()
            .find(|e| e.from == from && e.to == to)
            .expect("edge in the graph")
    }

    fn kinds(found: &[Finding]) -> Vec<(FindingKind, Vec<String>)> {
        found.iter().map(|f| (f.kind, f.subjects.clone())).collect()
    }

    #[test]
    fn retries_along_a_chain_multiply_and_are_reported_where_the_load_lands() {
        // gateway retries checkout up to 3 times; checkout calls cart once, and cart retries
        // payment up to 3 times: 3 × 1 × 3 = 9 attempts reach payment per gateway call.
        // pricing is retried twice by checkout: 3 × 2 = 6. inventory's single retry layer of
        // 3 stays under the threshold of 4.
        let mut snapshot = graph(
            &[
                ("gateway", "checkout"),
                ("checkout", "cart"),
                ("cart", "payment"),
                ("checkout", "pricing"),
                ("search", "inventory"),
            ],
            &["gateway"],
            &[],
        );
        for (from, to, attempts) in [
            ("gateway", "checkout", 3),
            ("cart", "payment", 3),
            ("checkout", "pricing", 2),
            ("search", "inventory", 3),
        ] {
            let edge = edge_mut(&mut snapshot, from, to);
            edge.resilience.max_attempts = attempts;
            edge.resilience.retries = 5;
        }
        let found = findings(&snapshot, &Thresholds::default());
        assert_eq!(
            kinds(&found),
            [
                (FindingKind::RetryAmplification, vec!["payment".to_string()]),
                (FindingKind::RetryAmplification, vec!["pricing".to_string()]),
            ]
        );
        assert_eq!(found[0].evidence["amplification"], json!(9.0));
        assert_eq!(
            found[0].evidence["chain"],
            json!(["gateway", "checkout", "cart", "payment"])
        );
        assert_eq!(found[1].evidence["amplification"], json!(6.0));
        // Without retries there is nothing to say.
        let plain = graph(&[("a", "b"), ("b", "c")], &["a"], &[]);
        assert!(findings(&plain, &Thresholds::default()).is_empty());
    }

    #[test]
    fn a_wait_far_beyond_the_callee_p99_with_no_timeout_is_a_missing_timeout() {
        let mut snapshot = graph(
            &[("web", "reviews"), ("web", "cart"), ("web", "search")],
            &["web"],
            &[],
        );
        // reviews: p99 80 ms, a caller waited 30 s: 30 s > max(10 × 80 ms, 1 s).
        let reviews = edge_mut(&mut snapshot, "web", "reviews");
        reviews.server_latency_ms = q(80.0);
        reviews.resilience.max_wait_ms = Some(30_000.0);
        // cart: p99 200 ms, the longest wait 1.5 s: under 10 × 200 ms = 2 s.
        let cart = edge_mut(&mut snapshot, "web", "cart");
        cart.server_latency_ms = q(200.0);
        cart.resilience.max_wait_ms = Some(1_500.0);
        // search: a 5 s timeout cuts the calls, against a p99 of 50 ms: too long (info).
        let search = edge_mut(&mut snapshot, "web", "search");
        search.server_latency_ms = q(50.0);
        search.resilience.max_wait_ms = Some(5_010.0);
        search.resilience.timeout_ms = Some(5_000.0);
        let found = findings(&snapshot, &Thresholds::default());
        assert_eq!(
            kinds(&found),
            [
                (
                    FindingKind::MissingTimeout,
                    vec!["web -> reviews".to_string()]
                ),
                (FindingKind::LongTimeout, vec!["web -> search".to_string()]),
            ]
        );
        assert!(
            found[0].message.contains("up to 30.0 s") && found[0].message.contains("80 ms"),
            "{}",
            found[0].message
        );
        // The user's own waits are not ours to time out.
        let mut from_user = graph(&[("user", "web")], &["web"], &[]);
        let entry = edge_mut(&mut from_user, "user", "web");
        entry.server_latency_ms = q(10.0);
        entry.resilience.max_wait_ms = Some(60_000.0);
        assert!(findings(&from_user, &Thresholds::default()).is_empty());
    }

    #[test]
    fn an_inner_timeout_as_long_as_its_callers_is_inverted() {
        let mut snapshot = graph(
            &[
                ("web", "checkout"),
                ("checkout", "payment"),
                ("checkout", "tax"),
            ],
            &["web"],
            &[],
        );
        for (from, to, timeout) in [
            ("web", "checkout", 2_000.0),
            ("checkout", "payment", 5_000.0),
            ("checkout", "tax", 500.0),
        ] {
            let edge = edge_mut(&mut snapshot, from, to);
            edge.resilience.timeout_ms = Some(timeout);
            edge.resilience.max_wait_ms = Some(timeout);
            edge.server_latency_ms = q(timeout);
        }
        let found = findings(&snapshot, &Thresholds::default());
        assert_eq!(
            kinds(&found),
            [(
                FindingKind::InvertedTimeouts,
                vec![
                    "web -> checkout".to_string(),
                    "checkout -> payment".to_string()
                ]
            )]
        );
    }

    #[test]
    fn an_entry_whose_critical_path_p99s_add_up_beyond_its_budget_is_reported() {
        let mut snapshot = graph(&[("user", "web"), ("web", "db:orders")], &["web"], &[]);
        let path = |service: &str, share: f64, p99: f64| PathShare {
            service: service.into(),
            share,
            traces: 10,
            time_ms: q(p99),
        };
        let spread = Spread {
            p50: 1,
            p99: 1,
            max: 1,
        };
        snapshot.entry_operations = vec![EntryOperation {
            service: "web".into(),
            operation: "GET /orders".into(),
            traces: 10,
            sync_depth: spread.clone(),
            services_touched: spread,
            latency_ms: q(250.0),
            critical_path: vec![path("web", 0.6, 180.0), path("db:orders", 0.4, 150.0)],
        }];
        // No budget declared: nothing to compare with.
        assert!(findings(&snapshot, &Thresholds::default()).is_empty());
        let budget = |key: &str, ms: f64| Thresholds {
            latency_budgets_ms: [(key.to_owned(), ms)].into_iter().collect(),
            ..Thresholds::default()
        };
        // 180 + 150 = 330 ms > 300 ms, by operation, by service or for all.
        for key in ["web GET /orders", "web", "*"] {
            let found = findings(&snapshot, &budget(key, 300.0));
            assert_eq!(
                kinds(&found),
                [(
                    FindingKind::LatencyBudget,
                    vec!["web GET /orders".to_string()]
                )],
                "{key}"
            );
            assert_eq!(found[0].evidence["critical_p99_sum_ms"], json!(330.0));
            assert_eq!(found[0].evidence["slowest_service"], json!("web"));
        }
        assert!(findings(&snapshot, &budget("web", 400.0)).is_empty());
        assert!(findings(&snapshot, &budget("other", 100.0)).is_empty());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(2_500.0), "2.5 s");
        assert_eq!(duration(80.0), "80 ms");
        assert_eq!(duration(2.25), "2.2 ms");
    }
}
