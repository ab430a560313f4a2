//! What breaks if a node (or a dependency) fails: the observed traffic of every entry operation
//! replayed on the operation graph without it. An entry operation *fails* when a chain of
//! synchronous calls leads from it to what failed (its callers wait for it); it *degrades* when
//! only a chain through a queue, or through a call its calling endpoint was seen to survive
//! failing (an observed fallback: [`crate::snapshot::Operation::optional`]), does (the request succeeds, the
//! work behind the queue or the fallback's answer is all it gets).
//!
//! The operation graph joins the calls of all traces at each endpoint, so an endpoint that calls
//! the failed node in some traces counts for every entry that reaches it: the answer is what the
//! window showed could happen, an upper bound.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use crate::derive::{EdgeKind, NodeType};
use crate::render::{markdown_cell, printable};
use crate::snapshot::Snapshot;

/// What fails: a node, or the calls from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Node(String),
    Edge { from: String, to: String },
}

impl Target {
    /// `name` is a node; `from->to` (spaces allowed around the arrow) the calls between two.
    pub fn parse(text: &str) -> Target {
        match text.split_once("->") {
            Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => Target::Edge {
                from: from.trim().to_owned(),
                to: to.trim().to_owned(),
            },
            _ => Target::Node(text.to_owned()),
        }
    }

    fn label(&self) -> String {
        match self {
            Target::Node(name) => name.clone(),
            Target::Edge { from, to } => format!("{from} -> {to}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Fails,
    Degrades,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fails => "fails",
            Outcome::Degrades => "degrades",
        }
    }
}

/// An entry operation the failure reaches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EntryImpact {
    pub service: String,
    pub operation: String,
    pub outcome: Outcome,
    /// Traces that started at this entry in the window.
    pub traces: u64,
    /// The traces those stand for, weighted like the calls into the entry's service from
    /// outside (1 when nothing was sampled).
    pub estimated_traces: f64,
    /// Its share of the estimated traces of all entry operations.
    pub traffic_share: f64,
    /// Estimated traces per minute of observed traffic.
    pub traces_per_min: f64,
    /// One chain of calls from the entry to the failure, as `service: operation` steps.
    pub path: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Impact {
    pub targets: Vec<String>,
    /// Failing entries first, then degraded ones; the busiest first within each.
    pub entries: Vec<EntryImpact>,
    pub failing_share: f64,
    pub degraded_share: f64,
    /// Entry operations the failure does not reach.
    pub unaffected: usize,
}

/// A target that names nothing the window saw.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target:?} is not a node or an edge of this window; nodes include: {known}")]
pub struct UnknownTarget {
    pub target: String,
    pub known: String,
}

/// The operation graph: endpoints as `(service, operation)` and the calls between them.
struct OperationGraph<'a> {
    index: BTreeMap<(&'a str, &'a str), usize>,
    names: Vec<(&'a str, &'a str)>,
    /// Per endpoint: (callee, whether the call is synchronous).
    calls: Vec<Vec<(usize, bool)>>,
    /// Per endpoint: who calls it (for entries, the callers outside, such as `user`).
    callers: Vec<Vec<usize>>,
}

impl<'a> OperationGraph<'a> {
    fn new(snapshot: &'a Snapshot) -> OperationGraph<'a> {
        // Operations carry no kind: a call is asynchronous when every call between the two
        // services is, and synchronous (the cautious answer) otherwise. A synchronous call
        // the calling endpoint was seen to survive failing is tolerated like an asynchronous
        // one.
        let mut only_async: BTreeMap<(&str, &str), bool> = BTreeMap::new();
        for edge in &snapshot.edges {
            let entry = only_async
                .entry((edge.from.as_str(), edge.to.as_str()))
                .or_insert(true);
            *entry &= edge.kind == EdgeKind::Async;
        }
        let mut graph = OperationGraph {
            index: BTreeMap::new(),
            names: Vec::new(),
            calls: Vec::new(),
            callers: Vec::new(),
        };
        for op in &snapshot.operations {
            let from = graph.node(&op.from.service, &op.from.operation);
            let to = graph.node(&op.to.service, &op.to.operation);
            let asynchronous = only_async
                .get(&(op.from.service.as_str(), op.to.service.as_str()))
                .copied()
                .unwrap_or(false);
            graph.calls[from].push((to, !(asynchronous || op.optional())));
            graph.callers[to].push(from);
        }
        for calls in &mut graph.calls {
            calls.sort_unstable();
            calls.dedup();
        }
        graph
    }

    fn node(&mut self, service: &'a str, operation: &'a str) -> usize {
        let next = self.names.len();
        let id = *self.index.entry((service, operation)).or_insert(next);
        if id == next {
            self.names.push((service, operation));
            self.calls.push(Vec::new());
            self.callers.push(Vec::new());
        }
        id
    }

    fn label(&self, node: usize) -> String {
        match self.names[node] {
            (service, "") => service.to_owned(),
            (service, operation) => format!("{service}: {operation}"),
        }
    }

    /// The shortest chain from `start` to a failure, following synchronous calls only or all
    /// calls; `None` when no chain leads there.
    fn chain_to_failure(
        &self,
        start: usize,
        synchronous_only: bool,
        failed: &Failed,
    ) -> Option<Vec<usize>> {
        let service = self.names[start].0;
        if failed.node(service) {
            return Some(vec![start]);
        }
        // The calls into the entry itself (from `user`) failing fail it too.
        if let Some(&caller) = self.callers[start]
            .iter()
            .find(|&&caller| failed.edge(self.names[caller].0, service))
        {
            return Some(vec![caller, start]);
        }
        let mut came_from: Vec<Option<usize>> = vec![None; self.names.len()];
        let mut seen = vec![false; self.names.len()];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for &(callee, synchronous) in &self.calls[node] {
                if synchronous_only && !synchronous {
                    continue;
                }
                let (caller_service, callee_service) = (self.names[node].0, self.names[callee].0);
                if failed.node(callee_service) || failed.edge(caller_service, callee_service) {
                    let mut chain = vec![callee, node];
                    let mut at = node;
                    while let Some(previous) = came_from[at] {
                        chain.push(previous);
                        at = previous;
                    }
                    chain.reverse();
                    return Some(chain);
                }
                if !seen[callee] {
                    seen[callee] = true;
                    came_from[callee] = Some(node);
                    queue.push_back(callee);
                }
            }
        }
        None
    }
}

struct Failed<'t> {
    nodes: BTreeSet<&'t str>,
    edges: BTreeSet<(&'t str, &'t str)>,
}

impl Failed<'_> {
    fn node(&self, service: &str) -> bool {
        self.nodes.contains(service)
    }

    fn edge(&self, from: &str, to: &str) -> bool {
        self.edges.contains(&(from, to))
    }
}

/// The entry operations that fail or degrade when all of `targets` fail at once.
pub fn impact(snapshot: &Snapshot, targets: &[Target]) -> Result<Impact, UnknownTarget> {
    Impacts::new(snapshot).of(targets)
}

/// One snapshot's operation graph, built once for the impact of many targets.
pub struct Impacts<'a> {
    snapshot: &'a Snapshot,
    graph: OperationGraph<'a>,
    /// Per entry operation of the snapshot, in its order: the traces it stands for.
    estimated_traces: Vec<f64>,
    nodes: BTreeSet<&'a str>,
    edges: BTreeSet<(&'a str, &'a str)>,
}

impl<'a> Impacts<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Impacts<'a> {
        Impacts {
            snapshot,
            graph: OperationGraph::new(snapshot),
            estimated_traces: estimated_entry_traces(snapshot),
            nodes: snapshot.nodes.iter().map(|n| n.id.as_str()).collect(),
            edges: snapshot
                .edges
                .iter()
                .map(|e| (e.from.as_str(), e.to.as_str()))
                .collect(),
        }
    }

    /// The entry operations that fail or degrade when all of `targets` fail at once.
    pub fn of(&self, targets: &[Target]) -> Result<Impact, UnknownTarget> {
        let (snapshot, graph) = (self.snapshot, &self.graph);
        let (nodes, edges) = (&self.nodes, &self.edges);
        let mut failed = Failed {
            nodes: BTreeSet::new(),
            edges: BTreeSet::new(),
        };
        for target in targets {
            let known = match target {
                Target::Node(name) => nodes.contains(name.as_str()),
                Target::Edge { from, to } => edges.contains(&(from.as_str(), to.as_str())),
            };
            if !known {
                return Err(UnknownTarget {
                    target: target.label(),
                    known: nodes
                        .iter()
                        .take(12)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            match target {
                Target::Node(name) => failed.nodes.insert(name.as_str()),
                Target::Edge { from, to } => failed.edges.insert((from.as_str(), to.as_str())),
            };
        }
        let total: f64 = self.estimated_traces.iter().sum();
        let minutes = snapshot.observed_minutes();
        let mut entries = Vec::new();
        for (entry, &estimated) in snapshot.entry_operations.iter().zip(&self.estimated_traces) {
            let Some(&start) = graph
                .index
                .get(&(entry.service.as_str(), entry.operation.as_str()))
            else {
                continue;
            };
            let found = graph
                .chain_to_failure(start, true, &failed)
                .map(|chain| (Outcome::Fails, chain))
                .or_else(|| {
                    graph
                        .chain_to_failure(start, false, &failed)
                        .map(|chain| (Outcome::Degrades, chain))
                });
            if let Some((outcome, chain)) = found {
                entries.push(EntryImpact {
                    service: entry.service.clone(),
                    operation: entry.operation.clone(),
                    outcome,
                    traces: entry.traces,
                    estimated_traces: round(estimated),
                    traffic_share: share(estimated, total),
                    traces_per_min: round(estimated / minutes),
                    path: chain.into_iter().map(|node| graph.label(node)).collect(),
                });
            }
        }
        entries.sort_by(|a, b| {
            a.outcome
                .cmp(&b.outcome)
                .then(b.estimated_traces.total_cmp(&a.estimated_traces))
                .then_with(|| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)))
        });
        let traces_of = |outcome: Outcome| -> f64 {
            entries
                .iter()
                .filter(|e| e.outcome == outcome)
                .map(|e| e.estimated_traces)
                .sum()
        };
        Ok(Impact {
            targets: targets.iter().map(Target::label).collect(),
            failing_share: share(traces_of(Outcome::Fails), total),
            degraded_share: share(traces_of(Outcome::Degrades), total),
            unaffected: snapshot.entry_operations.len() - entries.len(),
            entries,
        })
    }
}

/// The traces each entry operation stands for: its traces, weighted like the calls into its
/// service from outside the system (estimated calls over calls seen).
fn estimated_entry_traces(snapshot: &Snapshot) -> Vec<f64> {
    let outside: BTreeSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Client)
        .map(|n| n.id.as_str())
        .collect();
    let mut into: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    for edge in snapshot
        .edges
        .iter()
        .filter(|e| outside.contains(e.from.as_str()))
    {
        let sums = into.entry(edge.to.as_str()).or_default();
        sums.0 += edge.estimate();
        sums.1 += edge.calls;
    }
    snapshot
        .entry_operations
        .iter()
        .map(|entry| {
            let weight = match into.get(entry.service.as_str()) {
                Some(&(estimated, calls)) if calls > 0 => estimated / calls as f64,
                _ => 1.0,
            };
            entry.traces as f64 * weight
        })
        .collect()
}

/// Entry operations whose reach is computed for [`Reach`]: the busiest, so that graphs with
/// thousands of entry points stay within a second. Their share of traffic is what is counted.
const MOST_ENTRIES: usize = 500;

/// A fixed-size set of small numbers.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(size: usize) -> Bits {
        Bits(vec![0; size.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// What one entry operation's traffic reaches, through synchronous calls only and at all:
/// services, and calls between services.
struct EntryReach {
    estimated_traces: f64,
    sync_services: Bits,
    all_services: Bits,
    sync_calls: Bits,
    all_calls: Bits,
}

/// A service or a call between services, by its number in [`Reach`].
#[derive(Clone, Copy)]
enum Reached {
    Service(usize),
    Call(usize),
}

impl EntryReach {
    fn reaches(&self, target: Reached, synchronous_only: bool) -> bool {
        match (target, synchronous_only) {
            (Reached::Service(i), true) => self.sync_services.contains(i),
            (Reached::Service(i), false) => self.all_services.contains(i),
            (Reached::Call(i), true) => self.sync_calls.contains(i),
            (Reached::Call(i), false) => self.all_calls.contains(i),
        }
    }
}

/// For many single targets at once (one per finding): the share of entry traffic that fails
/// or degrades without each, from one search per entry operation instead of one per target.
pub struct Reach {
    services: BTreeMap<String, usize>,
    calls: BTreeMap<(String, String), usize>,
    entries: Vec<EntryReach>,
    total_traces: f64,
}

impl Reach {
    pub fn new(impacts: &Impacts) -> Reach {
        let graph = &impacts.graph;
        let mut services: BTreeMap<String, usize> = BTreeMap::new();
        let mut calls: BTreeMap<(String, String), usize> = BTreeMap::new();
        let service_of: Vec<usize> = graph
            .names
            .iter()
            .map(|(service, _)| {
                let next = services.len();
                *services.entry(service.to_string()).or_insert(next)
            })
            .collect();
        let call_of: Vec<Vec<usize>> = graph
            .calls
            .iter()
            .enumerate()
            .map(|(node, callees)| {
                callees
                    .iter()
                    .map(|&(callee, _)| {
                        let key = (
                            graph.names[node].0.to_owned(),
                            graph.names[callee].0.to_owned(),
                        );
                        let next = calls.len();
                        *calls.entry(key).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        let mut busiest: Vec<_> = impacts
            .snapshot
            .entry_operations
            .iter()
            .zip(&impacts.estimated_traces)
            .collect();
        busiest.sort_by(|a, b| b.1.total_cmp(a.1));
        let entries = busiest
            .into_iter()
            .take(MOST_ENTRIES)
            .filter_map(|(entry, &estimated_traces)| {
                let start = *graph
                    .index
                    .get(&(entry.service.as_str(), entry.operation.as_str()))?;
                let search = |synchronous_only: bool| {
                    let mut reached_services = Bits::new(services.len());
                    let mut reached_calls = Bits::new(calls.len());
                    // The calls into the entry (from `user`) are on its way too.
                    for &caller in &graph.callers[start] {
                        let at = graph.calls[caller].iter().position(|c| c.0 == start);
                        if let Some(at) = at {
                            reached_calls.insert(call_of[caller][at]);
                        }
                    }
                    let mut seen = vec![false; graph.names.len()];
                    seen[start] = true;
                    let mut queue = VecDeque::from([start]);
                    while let Some(node) = queue.pop_front() {
                        reached_services.insert(service_of[node]);
                        for (at, &(callee, synchronous)) in graph.calls[node].iter().enumerate() {
                            if synchronous_only && !synchronous {
                                continue;
                            }
                            reached_calls.insert(call_of[node][at]);
                            if !seen[callee] {
                                seen[callee] = true;
                                queue.push_back(callee);
                            }
                        }
                    }
                    (reached_services, reached_calls)
                };
                let (sync_services, sync_calls) = search(true);
                let (all_services, all_calls) = search(false);
                Some(EntryReach {
                    estimated_traces,
                    sync_services,
                    all_services,
                    sync_calls,
                    all_calls,
                })
            })
            .collect();
        Reach {
            services,
            calls,
            entries,
            total_traces: impacts.estimated_traces.iter().sum(),
        }
    }

    /// The share of entry traffic that fails or degrades without `target`, and how many entry
    /// operations fail; what [`Impacts::of`] says of it alone.
    pub fn of(&self, target: &Target) -> (f64, usize) {
        let found = match target {
            Target::Node(name) => self.services.get(name).map(|&i| Reached::Service(i)),
            Target::Edge { from, to } => self
                .calls
                .get(&(from.clone(), to.clone()))
                .map(|&i| Reached::Call(i)),
        };
        let Some(found) = found else {
            return (0.0, 0);
        };
        let reached: f64 = self
            .entries
            .iter()
            .filter(|e| e.reaches(found, false))
            .map(|e| e.estimated_traces)
            .sum();
        let failing = self
            .entries
            .iter()
            .filter(|e| e.reaches(found, true))
            .count();
        (share(reached, self.total_traces), failing)
    }
}

/// The impact for a terminal: a summary line, then one line per entry operation reached.
pub fn text(impact: &Impact) -> String {
    let mut out = summary(impact) + "\n";
    for entry in &impact.entries {
        out.push_str(&format!(
            "\n{:8}  {}: {}  {} ({:.1}% of traffic, {:.1}/min)\n          via {}\n",
            entry.outcome.as_str().to_uppercase(),
            printable(&entry.service),
            printable(&entry.operation),
            traces(entry),
            100.0 * entry.traffic_share,
            entry.traces_per_min,
            entry
                .path
                .iter()
                .map(|step| printable(step))
                .collect::<Vec<_>>()
                .join(" → ")
        ));
    }
    out
}

/// "56 traces", with what they stand for when they were sampled.
fn traces(entry: &EntryImpact) -> String {
    if (entry.estimated_traces - entry.traces as f64).abs() < 0.5 {
        format!("{} traces", entry.traces)
    } else {
        format!(
            "{} traces (≈{:.0} estimated)",
            entry.traces, entry.estimated_traces
        )
    }
}

/// The impact as a Markdown section, for a pull-request comment or an incident document.
pub fn markdown(impact: &Impact) -> String {
    let mut out = format!("### Impact\n\n{}\n", markdown_cell(&summary(impact)));
    if impact.entries.is_empty() {
        return out;
    }
    out.push_str("\n| outcome | entry operation | traces | share | per min | path |\n");
    out.push_str("|---|---|---:|---:|---:|---|\n");
    for entry in &impact.entries {
        out.push_str(&format!(
            "| {} | {}: {} | {} | {:.1}% | {:.1} | {} |\n",
            entry.outcome.as_str(),
            markdown_cell(&entry.service),
            markdown_cell(&entry.operation),
            traces(entry),
            100.0 * entry.traffic_share,
            entry.traces_per_min,
            markdown_cell(&entry.path.join(" → "))
        ));
    }
    out
}

/// One sentence: how many entry operations fail and degrade, and their share of traffic.
pub fn summary(impact: &Impact) -> String {
    let count = |outcome: Outcome| {
        impact
            .entries
            .iter()
            .filter(|e| e.outcome == outcome)
            .count()
    };
    // "1 entry operation fails", "2 entry operations fail".
    let (failing, degraded) = (count(Outcome::Fails), count(Outcome::Degrades));
    let noun = |n: usize| if n == 1 { "operation" } else { "operations" };
    let verb = |n: usize, word: &str| {
        if n == 1 {
            format!("{word}s")
        } else {
            word.to_owned()
        }
    };
    format!(
        "If {} {}: {failing} entry {} {} ({:.1}% of traffic), {degraded} {} ({:.1}%), {} unaffected.",
        impact.targets.join(" and "),
        verb(impact.targets.len(), "fail"),
        noun(failing),
        verb(failing, "fail"),
        100.0 * impact.failing_share,
        verb(degraded, "degrade"),
        100.0 * impact.degraded_share,
        impact.unaffected
    )
}

fn share(part: f64, total: f64) -> f64 {
    if total > 0.0 {
        round(part / total)
    } else {
        0.0
    }
}

fn round(value: f64) -> f64 {
    // + 0.0 turns the -0.0 of an empty float sum into 0.0, which prints without a sign.
    (value * 1_000.0).round() / 1_000.0 + 0.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::derive::EdgeKind::Async;
    use crate::metrics::tests::graph;
    use crate::snapshot::{EntryOperation, Operation, OperationRef, Spread};

    /// A shop: gateway's `GET /` calls cart, which reads its database; checkout's
    /// `POST /checkout` publishes to mailer (through a queue), which calls smtp.
    pub(crate) fn shop() -> Snapshot {
        let mut snapshot = graph(
            &[
                ("user", "gateway"),
                ("user", "checkout"),
                ("gateway", "cart"),
                ("cart", "db:carts"),
                ("checkout", "mailer"),
                ("mailer", "smtp"),
            ],
            &["gateway", "checkout"],
            &[("checkout", "mailer", Async)],
        );
        let op = |service: &str, operation: &str| OperationRef {
            service: service.into(),
            operation: operation.into(),
        };
        snapshot.operations = [
            (op("user", ""), op("gateway", "GET /")),
            (op("user", ""), op("checkout", "POST /checkout")),
            (op("gateway", "GET /"), op("cart", "GET /cart")),
            (op("cart", "GET /cart"), op("db:carts", "SELECT carts")),
            (
                op("checkout", "POST /checkout"),
                op("mailer", "process orders"),
            ),
            (op("mailer", "process orders"), op("smtp", "send")),
        ]
        .into_iter()
        .map(|(from, to)| Operation {
            from,
            to,
            calls: 10,
            errors: 0,
            latency_ms: None,
            retries: 0,
            fallbacks: 0,
            first_seen: String::new(),
            last_seen: String::new(),
        })
        .collect();
        let spread = Spread {
            p50: 1,
            p99: 1,
            max: 1,
        };
        snapshot.entry_operations = [("gateway", "GET /", 30), ("checkout", "POST /checkout", 10)]
            .into_iter()
            .map(|(service, operation, traces)| EntryOperation {
                service: service.into(),
                operation: operation.into(),
                traces,
                sync_depth: spread.clone(),
                services_touched: spread.clone(),
                latency_ms: None,
                critical_path: Vec::new(),
            })
            .collect();
        snapshot
    }

    fn outcomes(impact: &Impact) -> Vec<(&str, Outcome, Vec<&str>)> {
        impact
            .entries
            .iter()
            .map(|e| {
                let path = e.path.iter().map(String::as_str).collect();
                (e.service.as_str(), e.outcome, path)
            })
            .collect()
    }

    fn of(targets: &[&str]) -> Impact {
        let targets: Vec<Target> = targets.iter().map(|t| Target::parse(t)).collect();
        impact(&shop(), &targets).unwrap()
    }

    #[test]
    fn a_synchronous_dependency_fails_its_entry_operations() {
        let impact = of(&["db:carts"]);
        assert_eq!(
            outcomes(&impact),
            [(
                "gateway",
                Outcome::Fails,
                vec![
                    "gateway: GET /",
                    "cart: GET /cart",
                    "db:carts: SELECT carts"
                ]
            )]
        );
        assert_eq!(impact.entries[0].traffic_share, 0.75);
        assert_eq!((impact.failing_share, impact.degraded_share), (0.75, 0.0));
        assert_eq!(impact.unaffected, 1);
    }

    #[test]
    fn a_dependency_behind_a_queue_only_degrades() {
        let impact = of(&["smtp"]);
        assert_eq!(
            outcomes(&impact),
            [(
                "checkout",
                Outcome::Degrades,
                vec![
                    "checkout: POST /checkout",
                    "mailer: process orders",
                    "smtp: send"
                ]
            )]
        );
        assert_eq!((impact.failing_share, impact.degraded_share), (0.0, 0.25));
        assert!(
            summary(&impact).contains("0 entry operations fail (0.0% of traffic)"),
            "{}",
            summary(&impact)
        );
        // The same through the edge alone.
        assert_eq!(outcomes(&of(&["mailer -> smtp"])), outcomes(&impact));
    }

    #[test]
    fn a_dependency_its_caller_was_seen_to_survive_failing_only_degrades() {
        // gateway's GET / → cart failed 4 times: GET / survived 3 (fallbacks), 1 was retried
        // to success; none reached gateway's callers: the call is optional.
        let with_cart_failures = |errors: u64, fallbacks: u64, retries: u64| {
            let mut snapshot = shop();
            let cart = snapshot
                .operations
                .iter_mut()
                .find(|o| o.from.service == "gateway" && o.to.service == "cart")
                .unwrap();
            (cart.errors, cart.fallbacks, cart.retries) = (errors, fallbacks, retries);
            let optional = cart.optional();
            let impact = impact(&snapshot, &[Target::parse("db:carts")]).unwrap();
            let outcomes: Vec<(String, Outcome)> = impact
                .entries
                .iter()
                .map(|e| (e.service.clone(), e.outcome))
                .collect();
            (optional, outcomes)
        };
        assert_eq!(
            with_cart_failures(4, 3, 1),
            (true, vec![("gateway".to_string(), Outcome::Degrades)])
        );
        // Had more failures reached gateway's callers than it survived, it would not be.
        assert_eq!(
            with_cart_failures(9, 3, 1),
            (false, vec![("gateway".to_string(), Outcome::Fails)])
        );
    }

    #[test]
    fn an_entry_service_failing_fails_its_own_entries_and_failures_combine() {
        assert_eq!(
            outcomes(&of(&["gateway"])),
            [("gateway", Outcome::Fails, vec!["gateway: GET /"])]
        );
        let both = of(&["cart", "smtp"]);
        assert_eq!(
            both.entries
                .iter()
                .map(|e| (e.service.as_str(), e.outcome))
                .collect::<Vec<_>>(),
            [("gateway", Outcome::Fails), ("checkout", Outcome::Degrades)]
        );
        assert_eq!(both.unaffected, 0);
        assert_eq!(
            outcomes(&of(&["user -> checkout"])),
            [(
                "checkout",
                Outcome::Fails,
                vec!["user", "checkout: POST /checkout"]
            )]
        );
    }

    #[test]
    fn calls_between_services_that_also_call_synchronously_count_as_synchronous() {
        let mut snapshot = shop();
        let mut sync_too = snapshot
            .edges
            .iter()
            .find(|e| e.to == "mailer")
            .unwrap()
            .clone();
        sync_too.kind = EdgeKind::Sync;
        snapshot.edges.push(sync_too);
        let impact = impact(&snapshot, &[Target::parse("smtp")]).unwrap();
        assert_eq!(impact.entries[0].outcome, Outcome::Fails);
    }

    #[test]
    fn text_and_markdown_say_what_fails_and_how() {
        let impact = of(&["db:carts", "smtp"]);
        let text = text(&impact);
        assert!(
            text.starts_with("If db:carts and smtp fail: 1 entry operation fails (75.0% of traffic), 1 degrades (25.0%), 0 unaffected."),
            "{text}"
        );
        assert!(
            text.contains("FAILS     gateway: GET /  30 traces (75.0% of traffic, 30.0/min)"),
            "{text}"
        );
        assert!(text.contains("via gateway: GET / → cart: GET /cart → db:carts: SELECT carts"));
        let markdown = markdown(&impact);
        assert!(
            markdown.contains("| degrades | checkout: POST /checkout | 10 traces | 25.0% | 10.0 |"),
            "{markdown}"
        );
    }

    /// The shop with checkout's traffic kept 1 in 4: its 10 traces stand for 40.
    fn sampled_shop() -> Snapshot {
        let mut snapshot = shop();
        for edge in &mut snapshot.edges {
            if edge.to == "checkout" {
                edge.estimated_calls = Some(4.0 * edge.calls as f64);
            }
        }
        snapshot
    }

    #[test]
    fn sampled_entry_traffic_counts_what_it_stands_for() {
        let found = impact(&sampled_shop(), &[Target::parse("smtp")]).unwrap();
        let entry = &found.entries[0];
        assert_eq!(
            (entry.traces, entry.estimated_traces, entry.traces_per_min),
            (10, 40.0, 40.0)
        );
        // 40 of the 30 + 40 estimated entry traces.
        assert_eq!(found.degraded_share, 0.571);
        assert!(text(&found).contains("10 traces (≈40 estimated) (57.1% of traffic"));
        let reach = Reach::new(&Impacts::new(&sampled_shop()));
        assert_eq!(reach.of(&Target::parse("db:carts")), (0.429, 1));
    }

    #[test]
    fn reach_of_every_single_target_agrees_with_the_impact() {
        for snapshot in [shop(), sampled_shop()] {
            reach_agrees_with_impact(&snapshot);
        }
    }

    fn reach_agrees_with_impact(snapshot: &Snapshot) {
        let impacts = Impacts::new(snapshot);
        let reach = Reach::new(&impacts);
        let targets = snapshot
            .nodes
            .iter()
            .map(|n| Target::Node(n.id.clone()))
            .chain(snapshot.edges.iter().map(|e| Target::Edge {
                from: e.from.clone(),
                to: e.to.clone(),
            }));
        for target in targets {
            let found = impacts.of(std::slice::from_ref(&target)).unwrap();
            let failing = found
                .entries
                .iter()
                .filter(|e| e.outcome == Outcome::Fails)
                .count();
            assert_eq!(
                reach.of(&target),
                (found.failing_share + found.degraded_share, failing),
                "{target:?}"
            );
        }
    }

    #[test]
    fn unknown_targets_are_refused_with_the_names_known() {
        let err = impact(&shop(), &[Target::parse("kart")]).unwrap_err();
        assert_eq!(err.target, "kart");
        assert!(err.to_string().contains("cart"), "{err}");
        let err = impact(&shop(), &[Target::parse("cart -> smtp")]).unwrap_err();
        assert_eq!(err.target, "cart -> smtp");
    }
}
