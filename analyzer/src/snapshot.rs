//! A snapshot is the architecture seen in one window: the JSON shape (`archtrace.snapshot/v1`)
//! that every report, check and diff reads. Its output is sorted, so snapshots diff well in git.
//!
//! This module is data only. The node metrics and findings a snapshot carries are filled in by
//! [`crate::analysis::analyze`], which reads a snapshot and never the other way round.

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::aggregate::{Aggregate, Diagnostics, EdgeStats, EntryStats, Seen, VersionPair};
use crate::derive::{EdgeKind, NodeType};
use crate::sketch::LatencySketch;
use crate::time::rfc3339;

pub const SNAPSHOT_SCHEMA: &str = "archtrace.snapshot/v1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: String,
    pub window: Window,
    pub diagnostics: Diagnostics,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub operations: Vec<Operation>,
    /// Per entry operation, the shape of the traces that started there.
    #[serde(default)]
    pub entry_operations: Vec<EntryOperation>,
    /// Where the architecture is coupled or risky, most severe first.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// How the metrics were computed (sampling on large graphs).
    #[serde(default)]
    pub metric_notes: MetricNotes,
}

/// RFC 3339 UTC timestamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: String,
    pub end: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    pub entry_point: bool,
    /// Spans it reported whose trace told nothing of its sampling: counted as one call each.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub spans_without_sampling: u64,
    /// Coupling, reach and health (absent for client nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<NodeMetrics>,
    /// The first and last span or call of the node in the window (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub first_seen: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_seen: String,
    /// The `service.version`s its spans reported, first seen first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Release>,
}

/// One release of a service and when it reported spans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub first_seen: String,
    pub last_seen: String,
    pub spans: u64,
}

/// The releases of caller and callee an edge's calls came from; a version is empty when
/// that side reports none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePair {
    pub from_version: String,
    pub to_version: String,
    pub first_seen: String,
    pub last_seen: String,
    pub calls: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    /// Calls seen in the spans received.
    pub calls: u64,
    /// The calls those stand for, each weighted by its adjusted count; absent in snapshots
    /// written before archtrace estimated (read as `calls`, see [`Edge::estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_calls: Option<f64>,
    pub errors: u64,
    /// What callers waited.
    pub latency_ms: Option<Quantiles>,
    /// The callee's own spans; absent when the callee reports none.
    pub server_latency_ms: Option<Quantiles>,
    /// Average calls of this edge in the traces that use it (chattiness).
    pub calls_per_trace: f64,
    pub max_calls_per_trace: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Retries, fallbacks and timeouts seen on its calls.
    #[serde(default, skip_serializing_if = "Resilience::is_empty")]
    pub resilience: Resilience,
    /// The releases its calls came from, first seen first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<ReleasePair>,
}

/// How an edge's callers cope with its failures, as its calls show.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resilience {
    /// Calls that retried a failed call.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
    /// The most attempts one call took, when some call was retried.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_attempts: u64,
    /// Failed calls whose calling endpoint still succeeded: the caller has a fallback.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fallbacks: u64,
    /// The timeout the callers apply, when failed calls pile up at one duration and no call
    /// waited longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<f64>,
    /// The longest any caller waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<f64>,
}

impl Resilience {
    pub fn is_empty(&self) -> bool {
        *self == Resilience::default()
    }

    fn of(stats: &EdgeStats) -> Resilience {
        Resilience {
            retries: stats.retries,
            max_attempts: if stats.max_attempts > 1 {
                stats.max_attempts
            } else {
                0
            },
            fallbacks: stats.fallbacks,
            timeout_ms: observed_timeout(stats).map(millis),
            max_wait_ms: (stats.latency.count() > 0).then(|| millis(stats.latency.max_ns() as f64)),
        }
    }
}

/// Failed calls that end at one duration, with no call of the edge waiting notably longer, were
/// cut by a timeout: at least 3 of them, and at least half the failures, within about 6%, and
/// clearly longer than the calls that succeeded take (calls that all last as long, failed or
/// not, are no timeout).
fn observed_timeout(stats: &EdgeStats) -> Option<f64> {
    const MIN_TIMED_OUT: u64 = 3;
    let failed = stats.error_latency.count();
    let (value, piled) = stats.error_latency.pile_up(3)?;
    let longest = stats.latency.max_ns() as f64;
    let succeeded = stats.latency.without(&stats.error_latency);
    let above_successes = succeeded
        .quantile_ns(0.99)
        .is_none_or(|p99| value > p99 * 1.1);
    (piled >= MIN_TIMED_OUT && piled * 2 >= failed && longest <= value * 1.08 && above_successes)
        .then_some(value)
}

impl Edge {
    /// Failed calls that reached the caller's own callers: not retried, and not survived by
    /// the caller (a fallback).
    pub fn failures_passed_on(&self) -> u64 {
        failures_passed_on(
            self.errors,
            self.resilience.retries,
            self.resilience.fallbacks,
        )
    }

    /// Its releases as `caller version -> callee version` (a side without one is its name
    /// alone), first seen first.
    pub fn release_words(&self) -> Vec<String> {
        self.versions
            .iter()
            .map(|p| release_pair_words(&self.from, &p.from_version, &self.to, &p.to_version))
            .collect()
    }

    /// The estimated calls: what rates and charts use.
    pub fn estimate(&self) -> f64 {
        self.estimated_calls.unwrap_or(self.calls as f64)
    }
}

/// Failed calls that reached the caller's own callers: each retry follows one failed call
/// that was retried, and a fallback is a failure the caller survived.
fn failures_passed_on(errors: u64, retries: u64, fallbacks: u64) -> u64 {
    errors.saturating_sub(retries).saturating_sub(fallbacks)
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRef {
    pub service: String,
    pub operation: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub from: OperationRef,
    pub to: OperationRef,
    pub calls: u64,
    pub errors: u64,
    pub latency_ms: Option<Quantiles>,
    /// Calls that retried a failed call.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
    /// Failed calls after which the calling endpoint still succeeded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fallbacks: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub first_seen: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_seen: String,
}

impl Operation {
    /// A call this endpoint can do without: at least one failed call's caller still
    /// succeeded, and no more failures reached the endpoint's callers than it survived
    /// (failures retried are neither). Failing it degrades the caller instead of failing it.
    pub fn optional(&self) -> bool {
        let passed_on = failures_passed_on(self.errors, self.retries, self.fallbacks);
        self.fallbacks > 0 && self.fallbacks >= passed_on
    }
}

/// A distribution of small whole numbers over traces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    pub p50: u32,
    pub p99: u32,
    pub max: u32,
}

fn spread(histogram: &crate::aggregate::Histogram) -> Spread {
    Spread {
        p50: histogram.quantile(0.50),
        p99: histogram.quantile(0.99),
        max: histogram.max(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryOperation {
    pub service: String,
    pub operation: String,
    pub traces: u64,
    /// Services in each trace's longest synchronous call chain.
    pub sync_depth: Spread,
    /// Distinct services each trace touched.
    pub services_touched: Spread,
    /// The entry span's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Quantiles>,
    /// The services on its critical path, the largest share of the time first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical_path: Vec<PathShare>,
}

/// One service's part of an entry operation's critical path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathShare {
    pub service: String,
    /// Share of all the entry's critical-path time that was this service's own work.
    pub share: f64,
    /// Traces in which it was on the path.
    pub traces: u64,
    /// Its time on the path per trace, in those traces.
    pub time_ms: Option<Quantiles>,
}

fn critical_path(stats: &EntryStats) -> Vec<PathShare> {
    let total: i64 = stats
        .critical_path
        .values()
        .map(|p| p.total_ns.max(0))
        .sum();
    let mut shares: Vec<PathShare> = stats
        .critical_path
        .iter()
        .map(|(service, path)| PathShare {
            service: service.to_string(),
            share: if total > 0 {
                (path.total_ns.max(0) as f64 / total as f64 * 1_000.0).round() / 1_000.0
            } else {
                0.0
            },
            traces: path.traces,
            time_ms: quantiles(&path.time),
        })
        .collect();
    shares.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.service.cmp(&b.service))
    });
    shares
}

/// One node per service, or one per endpoint (service and operation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Service,
    Operation,
}

impl Level {
    pub const NAMES: [&'static str; 2] = ["service", "operation"];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Service => "service",
            Level::Operation => "operation",
        }
    }
}

/// A level name that is neither `service` nor `operation`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a level: use service or operation")]
pub struct UnknownLevel(pub String);

impl std::str::FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(text: &str) -> Result<Level, UnknownLevel> {
        match text {
            "service" => Ok(Level::Service),
            "operation" => Ok(Level::Operation),
            other => Err(UnknownLevel(other.to_owned())),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Distinct callers (Ca; AIS in Bogner et al.).
    pub fan_in: usize,
    /// Distinct callees (Ce; ADS).
    pub fan_out: usize,
    /// Absolute coupling: fan_in × fan_out (ACS).
    pub acs: usize,
    /// Ce / (Ca + Ce): 0 is depended upon only, 1 depends only.
    pub instability: f64,
    pub calls_in: u64,
    pub calls_out: u64,
    /// The same weighted by calls: calls_out / (calls_in + calls_out).
    pub weighted_instability: f64,
    /// Services that transitively depend on this node.
    pub blast_radius: usize,
    /// Entry points among them (itself included when it is one).
    pub entry_points_affected: usize,
    /// Share of all entry points affected.
    pub entry_point_share: f64,
    /// Nodes this one transitively depends on.
    pub transitive_dependencies: usize,
    /// Shortest paths through the node (normalised to 0..1; sampled on large graphs).
    pub betweenness: f64,
    /// Removing it cuts the service graph apart.
    pub articulation_point: bool,
    /// Nodes that every path from the entry points reaches only through this one.
    pub dominates: Vec<String>,
    /// Calls into it per minute of observed traffic ([`Snapshot::observed_minutes`]).
    pub calls_per_min: f64,
    pub error_rate_in: f64,
    pub error_rate_out: f64,
    /// Highest p99 of the calls into the node.
    pub p99_in_ms: Option<f64>,
}

/// How the metrics were computed, for the output to say.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricNotes {
    /// Sources sampled for betweenness; `None` when exact.
    pub betweenness_sampled_sources: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    SyncCycle,
    AsyncCycle,
    BidirectionalPair,
    Hub,
    SharedDatabase,
    ChattyEdge,
    DeepSyncChain,
    SinglePointOfFailure,
    ErrorHotspot,
    RetryAmplification,
    MissingTimeout,
    LongTimeout,
    InvertedTimeouts,
    LatencyBudget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    /// The word, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Error]
            .into_iter()
            .find(|s| s.as_str() == text.trim())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// The nodes (or `from -> to` edges) it is about, sorted.
    pub subjects: Vec<String>,
    /// The numbers behind it, thresholds included.
    pub evidence: Evidence,
    pub message: String,
}

/// What a finding rests on. The lists other code reads are typed fields; the figures and
/// thresholds of each kind are in `values`. In JSON all of them are one object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Cycles: one path around the cycle, its first node repeated at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<String>,
    /// Single points of failure: the nodes every entry path reaches only through the subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dominates: Vec<String>,
    #[serde(flatten)]
    pub values: BTreeMap<String, serde_json::Value>,
}

impl std::ops::Index<&str> for Evidence {
    type Output = serde_json::Value;

    /// A figure by name; `Value::Null` when the finding has none of that name.
    fn index(&self, key: &str) -> &serde_json::Value {
        self.values.get(key).unwrap_or(&serde_json::Value::Null)
    }
}

/// Milliseconds rounded to microseconds, so that snapshots do not churn in the last digits.
fn millis(nanos: f64) -> f64 {
    (nanos / 1_000.0).round() / 1_000.0
}

/// A call's releases in words: `cart 1.1 -> payment 2.0`, a side without a version by its
/// name alone.
pub fn release_pair_words(from: &str, from_version: &str, to: &str, to_version: &str) -> String {
    let side = |node: &str, version: &str| {
        if version.is_empty() {
            node.to_owned()
        } else {
            format!("{node} {version}")
        }
    };
    format!("{} -> {}", side(from, from_version), side(to, to_version))
}

fn releases(versions: &BTreeMap<Arc<str>, Seen>) -> Vec<Release> {
    let mut releases: Vec<Release> = versions
        .iter()
        .map(|(version, seen)| Release {
            version: version.to_string(),
            first_seen: rfc3339(seen.first_ns),
            last_seen: rfc3339(seen.last_ns),
            spans: seen.count,
        })
        .collect();
    releases.sort_by(|a, b| (&a.first_seen, &a.version).cmp(&(&b.first_seen, &b.version)));
    releases
}

fn release_pairs(versions: &BTreeMap<VersionPair, Seen>) -> Vec<ReleasePair> {
    let mut pairs: Vec<ReleasePair> = versions
        .iter()
        .map(|(pair, seen)| ReleasePair {
            from_version: pair.from.to_string(),
            to_version: pair.to.to_string(),
            first_seen: rfc3339(seen.first_ns),
            last_seen: rfc3339(seen.last_ns),
            calls: seen.count,
        })
        .collect();
    pairs.sort_by(|a, b| {
        (&a.first_seen, &a.from_version, &a.to_version).cmp(&(
            &b.first_seen,
            &b.from_version,
            &b.to_version,
        ))
    });
    pairs
}

fn quantiles(sketch: &LatencySketch) -> Option<Quantiles> {
    Some(Quantiles {
        p50: millis(sketch.quantile_ns(0.50)?),
        p90: millis(sketch.quantile_ns(0.90)?),
        p99: millis(sketch.quantile_ns(0.99)?),
    })
}

impl Snapshot {
    /// Minutes between the first and the last call seen (at least one). Rates are per minute of
    /// observed traffic: a window may be much longer than the data in it.
    pub fn observed_minutes(&self) -> f64 {
        let parse = crate::time::parse_rfc3339;
        let first = self.edges.iter().filter_map(|e| parse(&e.first_seen)).min();
        let last = self.edges.iter().filter_map(|e| parse(&e.last_seen)).max();
        match (first, last) {
            (Some(first), Some(last)) if last > first => ((last - first) as f64 / 60e9).max(1.0),
            _ => 1.0,
        }
    }

    /// The snapshot of an aggregate over `window` (Unix nanoseconds), not yet analysed: no node
    /// metrics and no findings until [`crate::analysis::Analyzed::new`] adds them.
    pub fn from_aggregate(aggregate: &Aggregate, window: (i64, i64)) -> Snapshot {
        let mut nodes: Vec<Node> = aggregate
            .nodes
            .iter()
            .map(|(name, facts)| Node {
                id: name.to_string(),
                node_type: facts.node_type(),
                entry_point: facts.entry_point,
                spans_without_sampling: facts.spans_without_sampling,
                metrics: None,
                first_seen: facts.seen.map(|s| rfc3339(s.first_ns)).unwrap_or_default(),
                last_seen: facts.seen.map(|s| rfc3339(s.last_ns)).unwrap_or_default(),
                versions: releases(&facts.versions),
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<Edge> = aggregate
            .edges
            .iter()
            .map(|(key, stats)| Edge {
                from: key.from.to_string(),
                to: key.to.to_string(),
                kind: key.kind,
                calls: stats.calls,
                // Rounded so that snapshots do not churn in the last digits.
                estimated_calls: Some((stats.estimated_calls * 1_000.0).round() / 1_000.0),
                errors: stats.errors,
                latency_ms: quantiles(&stats.latency),
                server_latency_ms: quantiles(&stats.server_latency),
                calls_per_trace: ((stats.calls as f64 / stats.traces.max(1) as f64) * 1_000.0)
                    .round()
                    / 1_000.0,
                max_calls_per_trace: stats.max_calls_per_trace,
                first_seen: rfc3339(stats.first_seen_ns),
                last_seen: rfc3339(stats.last_seen_ns),
                resilience: Resilience::of(stats),
                versions: release_pairs(&stats.versions),
            })
            .collect();
        edges.sort_by(|a, b| (&a.from, &a.to, a.kind).cmp(&(&b.from, &b.to, b.kind)));
        let mut operations: Vec<Operation> = aggregate
            .operations
            .iter()
            .map(|(key, stats)| Operation {
                from: OperationRef {
                    service: key.from_service.to_string(),
                    operation: key.from_operation.to_string(),
                },
                to: OperationRef {
                    service: key.to_service.to_string(),
                    operation: key.to_operation.to_string(),
                },
                calls: stats.calls,
                errors: stats.errors,
                latency_ms: quantiles(&stats.latency),
                retries: stats.retries,
                fallbacks: stats.fallbacks,
                first_seen: rfc3339(stats.first_seen_ns),
                last_seen: rfc3339(stats.last_seen_ns),
            })
            .collect();
        operations.sort_by(|a, b| {
            (
                &a.from.service,
                &a.from.operation,
                &a.to.service,
                &a.to.operation,
            )
                .cmp(&(
                    &b.from.service,
                    &b.from.operation,
                    &b.to.service,
                    &b.to.operation,
                ))
        });
        let mut entry_operations: Vec<EntryOperation> = aggregate
            .entries
            .iter()
            .map(|(key, stats)| EntryOperation {
                service: key.service.to_string(),
                operation: key.operation.to_string(),
                traces: stats.traces,
                sync_depth: spread(&stats.sync_depth),
                services_touched: spread(&stats.services_touched),
                latency_ms: quantiles(&stats.latency),
                critical_path: critical_path(stats),
            })
            .collect();
        entry_operations
            .sort_by(|a, b| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)));
        Snapshot {
            schema: SNAPSHOT_SCHEMA.to_owned(),
            window: Window {
                start: rfc3339(window.0),
                end: rfc3339(window.1),
            },
            diagnostics: aggregate.diagnostics.clone(),
            nodes,
            edges,
            operations,
            entry_operations,
            findings: Vec::new(),
            metric_notes: MetricNotes::default(),
        }
    }

    /// Entry operations, deepest synchronous chains first (then busiest, then by name).
    pub fn deepest_entry_operations(&self) -> Vec<&EntryOperation> {
        let mut entries: Vec<&EntryOperation> = self.entry_operations.iter().collect();
        entries.sort_by(|a, b| {
            (b.sync_depth.max, b.traces, &a.service, &a.operation).cmp(&(
                a.sync_depth.max,
                a.traces,
                &b.service,
                &b.operation,
            ))
        });
        entries
    }

    /// The node metrics by node id (nodes without metrics, such as clients, left out).
    pub fn node_metrics(&self) -> BTreeMap<&str, &NodeMetrics> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.id.as_str(), n.metrics.as_ref()?)))
            .collect()
    }

    /// The service graph: one node per snapshot node, one edge per snapshot edge.
    pub fn graph(&self) -> DiGraph<&Node, &Edge> {
        let mut graph = DiGraph::with_capacity(self.nodes.len(), self.edges.len());
        let index: HashMap<&str, NodeIndex> = self
            .nodes
            .iter()
            .map(|node| (node.id.as_str(), graph.add_node(node)))
            .collect();
        for edge in &self.edges {
            if let (Some(&from), Some(&to)) =
                (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            {
                graph.add_edge(from, to, edge);
            }
        }
        graph
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edge's stats from (latency ms, failed) calls.
    fn stats(calls: &[(f64, bool)]) -> EdgeStats {
        let mut stats = EdgeStats::default();
        for &(ms, failed) in calls {
            let ns = (ms * 1e6) as i64;
            stats.calls += 1;
            stats.latency.add(ns);
            if failed {
                stats.errors += 1;
                stats.error_latency.add(ns);
            }
        }
        stats
    }

    #[test]
    fn failed_calls_that_end_at_one_duration_show_the_callers_timeout() {
        let mut calls: Vec<(f64, bool)> = (0..50).map(|i| (20.0 + i as f64, false)).collect();
        calls.extend([
            (2_000.0, true),
            (2_003.0, true),
            (2_011.0, true),
            (2_040.0, true),
        ]);
        calls.push((15.0, true)); // a quick failure is no timeout
        let timeout = Resilience::of(&stats(&calls)).timeout_ms.unwrap();
        assert!((timeout / 2_000.0 - 1.0).abs() < 0.02, "{timeout}");
        // A call that waited far longer than the pile-up: nothing cut it there.
        let mut waited = calls.clone();
        waited.push((9_000.0, false));
        assert_eq!(Resilience::of(&stats(&waited)).timeout_ms, None);
        // Failures spread out are not cut by anything.
        let spread: Vec<(f64, bool)> = [100.0, 400.0, 1_600.0, 6_400.0]
            .iter()
            .map(|ms| (*ms, true))
            .collect();
        assert_eq!(Resilience::of(&stats(&spread)).timeout_ms, None);
        // Calls that all take 20 ms, the failed ones too: no timeout cut them.
        let same: Vec<(f64, bool)> = (0..40).map(|i| (20.0, i % 4 == 0)).collect();
        assert_eq!(Resilience::of(&stats(&same)).timeout_ms, None);
        // Only failures, all at 2 s: every call was cut.
        let all_cut: Vec<(f64, bool)> = (0..5).map(|_| (2_000.0, true)).collect();
        assert!(Resilience::of(&stats(&all_cut)).timeout_ms.is_some());
        // Two failures are too few to call it a timeout.
        assert_eq!(
            Resilience::of(&stats(&[(2_000.0, true), (2_001.0, true)])).timeout_ms,
            None
        );
    }
}
