//! Drift: what changed between two snapshots, and the architecture check that CI runs on it.
//!
//! The check follows the "known violations" model of dependency-cruiser and ArchUnit: a rule
//! violation that the baseline already had is reported as known and does not fail the build;
//! once it is gone it is reported as fixed, so the baseline can shrink.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::analysis::{Analyzed, Settings};
use crate::declared::{conform, Declared};
use crate::derive::{EdgeKind, NodeType};
use crate::findings::longest_sync_chain;
use crate::rules::{CheckSettings, CyclePolicy, DomainTable, Policy, Rules, Selector};
use crate::snapshot::{Edge, Finding, FindingKind, Severity, Snapshot, Window};

/// An edge as drift sees it: its identity and its traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EdgeRef {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub calls: u64,
    /// The releases its calls came from (`caller version -> callee version`), first seen
    /// first: for a new edge, the first is the release that introduced it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeRef {
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
}

/// The differences between an old and a new snapshot, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotDiff {
    pub added_nodes: Vec<NodeRef>,
    pub removed_nodes: Vec<NodeRef>,
    pub added_edges: Vec<EdgeRef>,
    pub removed_edges: Vec<EdgeRef>,
    pub new_findings: Vec<Finding>,
    pub resolved_findings: Vec<Finding>,
}

impl SnapshotDiff {
    pub fn is_empty(&self) -> bool {
        self.added_nodes.is_empty()
            && self.removed_nodes.is_empty()
            && self.added_edges.is_empty()
            && self.removed_edges.is_empty()
            && self.new_findings.is_empty()
            && self.resolved_findings.is_empty()
    }
}

/// A finding's identity across snapshots: its kind and what it is about, not its numbers.
fn finding_key(finding: &Finding) -> (FindingKind, &[String]) {
    (finding.kind, &finding.subjects)
}

fn edge_refs(snapshot: &Snapshot) -> BTreeMap<(&str, &str, EdgeKind), &Edge> {
    snapshot
        .edges
        .iter()
        .map(|e| ((e.from.as_str(), e.to.as_str(), e.kind), e))
        .collect()
}

pub fn diff(old: &Snapshot, new: &Snapshot) -> SnapshotDiff {
    let node_set = |s: &Snapshot| -> BTreeMap<String, NodeType> {
        s.nodes
            .iter()
            .map(|n| (n.id.clone(), n.node_type))
            .collect()
    };
    let (old_nodes, new_nodes) = (node_set(old), node_set(new));
    let only_in = |a: &BTreeMap<String, NodeType>, b: &BTreeMap<String, NodeType>| {
        a.iter()
            .filter(|(id, _)| !b.contains_key(*id))
            .map(|(id, t)| NodeRef {
                id: id.clone(),
                node_type: *t,
            })
            .collect()
    };
    let (old_edges, new_edges) = (edge_refs(old), edge_refs(new));
    let edges_only_in = |a: &BTreeMap<(&str, &str, EdgeKind), &Edge>,
                         b: &BTreeMap<(&str, &str, EdgeKind), &Edge>| {
        a.iter()
            .filter(|(key, _)| !b.contains_key(*key))
            .map(|((from, to, kind), edge)| EdgeRef {
                from: from.to_string(),
                to: to.to_string(),
                kind: *kind,
                calls: edge.calls,
                versions: edge.release_words(),
            })
            .collect()
    };
    let findings_only_in = |a: &Snapshot, b: &Snapshot| -> Vec<Finding> {
        let known: BTreeSet<_> = b.findings.iter().map(finding_key).collect();
        a.findings
            .iter()
            .filter(|f| !known.contains(&finding_key(f)))
            .cloned()
            .collect()
    };
    SnapshotDiff {
        added_nodes: only_in(&new_nodes, &old_nodes),
        removed_nodes: only_in(&old_nodes, &new_nodes),
        added_edges: edges_only_in(&new_edges, &old_edges),
        removed_edges: edges_only_in(&old_edges, &new_edges),
        new_findings: findings_only_in(new, old),
        resolved_findings: findings_only_in(old, new),
    }
}

/// The snapshot without edges (and operations) under `min_calls` calls, and without the nodes
/// only those edges touched, analysed again with the rules' thresholds.
pub fn without_noise(snapshot: &Snapshot, rules: &Rules) -> Snapshot {
    let min_calls = rules.check.min_calls;
    let mut kept = snapshot.clone();
    kept.edges.retain(|e| e.calls >= min_calls);
    kept.operations.retain(|o| o.calls >= min_calls);
    let had_edges: BTreeSet<&str> = snapshot
        .edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    let has_edges: BTreeSet<&str> = kept
        .edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .collect();
    let keep: BTreeSet<String> = snapshot
        .nodes
        .iter()
        .filter(|n| has_edges.contains(n.id.as_str()) || !had_edges.contains(n.id.as_str()))
        .map(|n| n.id.clone())
        .collect();
    kept.nodes.retain(|n| keep.contains(&n.id));
    Analyzed::new(kept, &Settings::with_thresholds(rules.thresholds.clone())).snapshot
}

/// Whether a violation is new (it fails the build at error severity), was already in the
/// baseline, or was in the baseline and is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Known,
    Fixed,
}

/// One thing the check reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    /// Which rule: `new-edges`, `cycles`, `deny[0]`, `layers`, `max-fan-out`, ...
    pub rule: String,
    pub severity: Severity,
    pub status: Status,
    /// What it is about: `from -> to`, a node, or the members of a cycle.
    pub subject: String,
    pub message: String,
    /// Edges to highlight in a diagram of the change.
    pub edges: Vec<(String, String)>,
}

/// A rule the check evaluated, whether or not anything violated it (JUnit and SARIF list all).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleInfo {
    pub id: String,
    pub description: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    pub observed_window: Window,
    pub baseline_window: Option<Window>,
    /// Where the declared architecture came from, when conformance was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<Vec<String>>,
    pub rules: Vec<RuleInfo>,
    /// New items first (errors, then warnings), then known, then fixed.
    pub items: Vec<Item>,
    /// What changed against the baseline (after dropping edges under `min_calls`).
    pub diff: Option<SnapshotDiff>,
}

impl CheckReport {
    /// New violations at error severity: they fail the build.
    pub fn failures(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.severity == Severity::Error && i.status == Status::New)
            .count()
    }

    pub fn count(&self, severity: Severity, status: Status) -> usize {
        self.items
            .iter()
            .filter(|i| i.severity == severity && i.status == status)
            .count()
    }
}

fn level_severity(level: Policy) -> Option<Severity> {
    match level {
        Policy::Error => Some(Severity::Error),
        Policy::Warn => Some(Severity::Warning),
        Policy::Allow => None,
    }
}

/// A rule violation found in one snapshot, before it is compared with the baseline.
struct Violation {
    rule: String,
    severity: Severity,
    subject: String,
    message: String,
    edges: Vec<(String, String)>,
}

fn edge_subject(from: &str, to: &str) -> String {
    format!("{from} -> {to}")
}

fn types(snapshot: &Snapshot) -> BTreeMap<&str, NodeType> {
    snapshot
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.node_type))
        .collect()
}

/// What selectors need to know of a node: its type, and the declared domains.
struct Known<'a> {
    types: BTreeMap<&'a str, NodeType>,
    domains: &'a DomainTable,
}

fn matches(selector: &Selector, name: &str, known: &Known) -> bool {
    let node_type = known.types.get(name).copied().unwrap_or(NodeType::Service);
    selector.matches(name, node_type, known.domains)
}

fn with_reason(message: String, reason: &Option<String>) -> String {
    match reason {
        Some(reason) => format!("{message}: {reason}"),
        None => message,
    }
}

/// Distinct caller → callee pairs (either kind), self-calls excluded.
fn dependencies(snapshot: &Snapshot) -> BTreeSet<(&str, &str)> {
    snapshot
        .edges
        .iter()
        .filter(|e| e.from != e.to)
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect()
}

/// Every violation of the structural rules and limits in one snapshot.
fn violations(snapshot: &Snapshot, rules: &Rules) -> Vec<Violation> {
    let types = Known {
        types: types(snapshot),
        domains: &rules.domains,
    };
    let deps = dependencies(snapshot);
    let mut out = Vec::new();
    for (i, rule) in rules.deny.iter().enumerate() {
        for &(from, to) in &deps {
            if matches(&rule.from, from, &types) && matches(&rule.to, to, &types) {
                out.push(Violation {
                    rule: format!("deny[{i}]"),
                    severity: Severity::Error,
                    subject: edge_subject(from, to),
                    message: with_reason(
                        format!(
                            "{from} calls {to}, which is denied ({} → {})",
                            rule.from, rule.to
                        ),
                        &rule.reason,
                    ),
                    edges: vec![(from.to_owned(), to.to_owned())],
                });
            }
        }
    }
    for (i, rule) in rules.allow_only.iter().enumerate() {
        for &(from, to) in &deps {
            if matches(&rule.from, from, &types)
                && !rule.to.iter().any(|allowed| matches(allowed, to, &types))
            {
                let allowed: Vec<String> = rule.to.iter().map(|s| s.to_string()).collect();
                out.push(Violation {
                    rule: format!("allow-only[{i}]"),
                    severity: Severity::Error,
                    subject: edge_subject(from, to),
                    message: with_reason(
                        format!(
                            "{from} calls {to}, but {} may only call {}",
                            rule.from,
                            allowed.join(", ")
                        ),
                        &rule.reason,
                    ),
                    edges: vec![(from.to_owned(), to.to_owned())],
                });
            }
        }
    }
    if let Some(layers) = &rules.layers {
        let layer_of = |name: &str| {
            layers
                .order
                .iter()
                .position(|layer| layer.iter().any(|s| matches(s, name, &types)))
        };
        for &(from, to) in &deps {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
                if b < a {
                    out.push(Violation {
                        rule: "layers".to_owned(),
                        severity: Severity::Error,
                        subject: edge_subject(from, to),
                        message: with_reason(
                            format!(
                                "{from} (layer {}) calls {to} (layer {}): calls go only to the same or a later layer",
                                a + 1,
                                b + 1
                            ),
                            &layers.reason,
                        ),
                        edges: vec![(from.to_owned(), to.to_owned())],
                    });
                }
            }
        }
    }
    let limits = &rules.limits;
    for node in &snapshot.nodes {
        let Some(metrics) = &node.metrics else {
            continue;
        };
        for (rule, limit, value, what) in [
            ("max-fan-out", limits.max_fan_out, metrics.fan_out, "calls"),
            (
                "max-fan-in",
                limits.max_fan_in,
                metrics.fan_in,
                "is called by",
            ),
        ] {
            if let Some(limit) = limit.filter(|limit| value > *limit) {
                out.push(Violation {
                    rule: rule.to_owned(),
                    severity: Severity::Error,
                    subject: node.id.clone(),
                    message: format!(
                        "{} {what} {value} distinct nodes, more than the limit of {limit}",
                        node.id
                    ),
                    edges: Vec::new(),
                });
            }
        }
    }
    if let Some(limit) = limits.max_sync_depth {
        let chain = longest_sync_chain(snapshot);
        if chain.len() > limit {
            out.push(Violation {
                rule: "max-sync-depth".to_owned(),
                severity: Severity::Error,
                subject: "longest synchronous chain".to_owned(),
                message: format!(
                    "a synchronous call chain is {} nodes deep, more than the limit of {limit}: {}",
                    chain.len(),
                    chain.join(" → ")
                ),
                edges: chain
                    .windows(2)
                    .map(|w| (w[0].clone(), w[1].clone()))
                    .collect(),
            });
        }
    }
    out
}

fn calls(n: u64) -> String {
    format!("{n} call{}", if n == 1 { "" } else { "s" })
}

/// Where the observed snapshot departs from the declared architecture, at the severities the
/// rules give each kind of difference.
fn conformance_violations(
    snapshot: &Snapshot,
    declared: &Declared,
    settings: &CheckSettings,
) -> Vec<Violation> {
    let result = conform(snapshot, declared);
    let mut out = Vec::new();
    let mut add = |rule: &str, policy: Policy, subject: String, message: String, edge| {
        if let Some(severity) = level_severity(policy) {
            out.push(Violation {
                rule: rule.to_owned(),
                severity,
                subject,
                message,
                edges: Vec::from_iter(edge),
            });
        }
    };
    for e in &result.undeclared_edges {
        add(
            "undeclared-edges",
            settings.undeclared_edges,
            edge_subject(&e.from, &e.to),
            format!(
                "{} calls {}, which the declared architecture does not declare ({}, {} errors, first seen {})",
                e.from,
                e.to,
                calls(e.calls),
                e.errors,
                e.first_seen
            ),
            Some((e.from.clone(), e.to.clone())),
        );
    }
    for e in &result.unobserved_edges {
        add(
            "unobserved-edges",
            settings.unobserved_edges,
            edge_subject(&e.from, &e.to),
            format!(
                "{} → {} is declared but no trace showed it ({})",
                e.from,
                e.to,
                e.ends()
            ),
            None,
        );
    }
    for n in &result.undeclared_nodes {
        add(
            "undeclared-nodes",
            settings.undeclared_nodes,
            n.id.clone(),
            format!(
                "{} {} is not in the declared architecture ({} in, {} out)",
                n.node_type.as_str(),
                n.id,
                calls(n.calls_in),
                calls(n.calls_out)
            ),
            None,
        );
    }
    for n in &result.unowned_nodes {
        add(
            "unowned-nodes",
            settings.unowned_nodes,
            n.id.clone(),
            format!(
                "{} {} has no owner in the catalog ({} in, {} out)",
                n.node_type.as_str(),
                n.id,
                calls(n.calls_in),
                calls(n.calls_out)
            ),
            None,
        );
    }
    out
}

fn is_cycle(finding: &Finding) -> bool {
    matches!(
        finding.kind,
        FindingKind::SyncCycle | FindingKind::AsyncCycle
    )
}

fn cycle_edges(finding: &Finding) -> Vec<(String, String)> {
    finding
        .evidence
        .cycle
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

/// The descriptions of the rules this check evaluates.
fn rule_infos(rules: &Rules, with_baseline: bool, with_declared: bool) -> Vec<RuleInfo> {
    let mut out = Vec::new();
    let mut add = |id: String, description: String| out.push(RuleInfo { id, description });
    let c = &rules.check;
    if with_baseline {
        for (id, level, what) in [
            (
                "new-edges",
                c.new_edges,
                "no dependency appears that the baseline lacks",
            ),
            (
                "removed-edges",
                c.removed_edges,
                "no dependency of the baseline disappears",
            ),
            (
                "new-nodes",
                c.new_nodes,
                "no node appears that the baseline lacks",
            ),
            (
                "removed-nodes",
                c.removed_nodes,
                "no node of the baseline disappears",
            ),
            (
                "new-findings",
                c.new_findings,
                "no coupling or risk finding appears that the baseline lacks",
            ),
        ] {
            if level != Policy::Allow {
                add(id.to_owned(), format!("{what} ({})", level.as_str()));
            }
        }
    }
    if with_declared {
        for (id, level, what) in [
            (
                "undeclared-edges",
                c.undeclared_edges,
                "every observed dependency is declared",
            ),
            (
                "unobserved-edges",
                c.unobserved_edges,
                "every declared dependency is observed",
            ),
            (
                "undeclared-nodes",
                c.undeclared_nodes,
                "every observed node is declared",
            ),
            (
                "unowned-nodes",
                c.unowned_nodes,
                "every observed node has an owner in the catalog",
            ),
        ] {
            if level != Policy::Allow {
                add(id.to_owned(), format!("{what} ({})", level.as_str()));
            }
        }
    }
    if c.cycles != CyclePolicy::Allow {
        add(
            "cycles".to_owned(),
            format!("dependency cycles ({})", c.cycles.as_str()),
        );
    }
    for (i, rule) in rules.deny.iter().enumerate() {
        add(
            format!("deny[{i}]"),
            with_reason(
                format!("{} must not call {}", rule.from, rule.to),
                &rule.reason,
            ),
        );
    }
    for (i, rule) in rules.allow_only.iter().enumerate() {
        let allowed: Vec<String> = rule.to.iter().map(|s| s.to_string()).collect();
        add(
            format!("allow-only[{i}]"),
            with_reason(
                format!("{} may only call {}", rule.from, allowed.join(", ")),
                &rule.reason,
            ),
        );
    }
    if let Some(layers) = &rules.layers {
        let order: Vec<String> = layers
            .order
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        add(
            "layers".to_owned(),
            with_reason(
                format!(
                    "calls go only to the same or a later layer: {}",
                    order.join(" | ")
                ),
                &layers.reason,
            ),
        );
    }
    let limits = &rules.limits;
    for (id, limit, what) in [
        (
            "max-fan-out",
            limits.max_fan_out,
            "distinct callees of a node",
        ),
        (
            "max-fan-in",
            limits.max_fan_in,
            "distinct callers of a node",
        ),
        (
            "max-sync-depth",
            limits.max_sync_depth,
            "nodes in the longest synchronous call chain",
        ),
    ] {
        if let Some(limit) = limit {
            add(id.to_owned(), format!("at most {limit} {what}"));
        }
    }
    out
}

/// Takes out of `diff` the removed edges the observed window could well have missed by chance
/// (fewer than `min_expected` sampled calls expected), and the removed nodes only such edges
/// touched, and says so in info items.
fn set_aside_unexpected_absences(
    diff: &mut SnapshotDiff,
    baseline: &Snapshot,
    observed: &Snapshot,
    min_expected: f64,
) -> Vec<Item> {
    let observed_minutes = observed.observed_minutes();
    let minutes_ratio = observed_minutes / baseline.observed_minutes();
    // The share of calls the observed window kept: its sampled calls over their estimate.
    let estimated: f64 = observed.edges.iter().map(|e| e.estimate()).sum();
    let seen: u64 = observed.edges.iter().map(|e| e.calls).sum();
    let kept_share = if estimated > 0.0 {
        (seen as f64 / estimated).min(1.0)
    } else {
        1.0
    };
    let expected: BTreeMap<(&str, &str, EdgeKind), f64> = baseline
        .edges
        .iter()
        .map(|e| {
            let key = (e.from.as_str(), e.to.as_str(), e.kind);
            (key, e.estimate() * minutes_ratio * kept_share)
        })
        .collect();
    let expected_of = |e: &EdgeRef| {
        expected
            .get(&(e.from.as_str(), e.to.as_str(), e.kind))
            .copied()
    };
    let mut items = Vec::new();
    let (mut rare_ends, mut other_ends) = (BTreeSet::new(), BTreeSet::new());
    diff.removed_edges.retain(|edge| {
        let Some(calls) = expected_of(edge).filter(|calls| *calls < min_expected) else {
            other_ends.extend([edge.from.clone(), edge.to.clone()]);
            return true;
        };
        rare_ends.extend([edge.from.clone(), edge.to.clone()]);
        items.push(Item {
            rule: "removed-edges".to_owned(),
            severity: Severity::Info,
            status: Status::New,
            subject: edge_subject(&edge.from, &edge.to),
            message: format!(
                "not reported as removed: {} → {} was not seen, but only {calls:.2} sampled \
                 calls of it were expected in {observed_minutes:.0} min of traffic at the \
                 baseline's rate (min_expected_calls = {min_expected})",
                edge.from, edge.to
            ),
            edges: Vec::new(),
        });
        false
    });
    diff.removed_nodes.retain(|node| {
        let only_rare = rare_ends.contains(&node.id) && !other_ends.contains(&node.id);
        if only_rare {
            items.push(Item {
                rule: "removed-nodes".to_owned(),
                severity: Severity::Info,
                status: Status::New,
                subject: node.id.clone(),
                message: format!(
                    "not reported as removed: {} was not seen, but its calls were too rare in \
                     the baseline to be expected in this window",
                    node.id
                ),
                edges: Vec::new(),
            });
        }
        !only_rare
    });
    items
}

fn edge_items(edges: &[EdgeRef], rule: &str, level: Policy, verb: &str) -> Vec<Item> {
    let Some(severity) = level_severity(level) else {
        return Vec::new();
    };
    edges
        .iter()
        .map(|e| {
            // Which release brought a new edge; which one last made a removed edge's calls.
            let release = match verb {
                "new" => e.versions.first().map(|v| format!("; introduced by {v}")),
                _ => e.versions.last().map(|v| format!("; last from {v}")),
            };
            Item {
                rule: rule.to_owned(),
                severity,
                status: Status::New,
                subject: edge_subject(&e.from, &e.to),
                message: format!(
                    "{verb} {} dependency: {} → {} ({} call{}{})",
                    e.kind.as_str(),
                    e.from,
                    e.to,
                    e.calls,
                    if e.calls == 1 { "" } else { "s" },
                    release.unwrap_or_default()
                ),
                edges: vec![(e.from.clone(), e.to.clone())],
            }
        })
        .collect()
}

/// Releases of services the baseline knows that it never saw: which versions the observed
/// architecture comes from (information, never a failure; only when both snapshots tell
/// versions).
fn release_items(baseline: &Snapshot, observed: &Snapshot) -> Vec<Item> {
    let releases = |snapshot: &Snapshot| -> BTreeMap<String, Vec<String>> {
        snapshot
            .nodes
            .iter()
            .filter(|n| !n.versions.is_empty())
            .map(|n| {
                (
                    n.id.clone(),
                    n.versions.iter().map(|r| r.version.clone()).collect(),
                )
            })
            .collect()
    };
    let (before, now) = (releases(baseline), releases(observed));
    now.iter()
        .filter_map(|(node, versions)| {
            let known = before.get(node)?;
            let fresh: Vec<&String> = versions.iter().filter(|v| !known.contains(v)).collect();
            (!fresh.is_empty()).then(|| Item {
                rule: "releases".to_owned(),
                severity: Severity::Info,
                status: Status::New,
                subject: node.clone(),
                message: format!(
                    "{node} runs {} here; the baseline saw {}",
                    fresh
                        .iter()
                        .map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    known.join(", ")
                ),
                edges: Vec::new(),
            })
        })
        .collect()
}

fn node_items(nodes: &[NodeRef], rule: &str, level: Policy, verb: &str) -> Vec<Item> {
    let Some(severity) = level_severity(level) else {
        return Vec::new();
    };
    nodes
        .iter()
        .map(|n| Item {
            rule: rule.to_owned(),
            severity,
            status: Status::New,
            subject: n.id.clone(),
            message: format!("{verb} {}: {}", n.node_type.as_str(), n.id),
            edges: Vec::new(),
        })
        .collect()
}

/// Checks the observed snapshot against the rules and, when given, the baseline and the
/// declared architecture.
pub fn check(
    observed: &Snapshot,
    baseline: Option<&Snapshot>,
    declared: Option<&Declared>,
    rules: &Rules,
) -> CheckReport {
    let observed = without_noise(observed, rules);
    let baseline = baseline.map(|b| without_noise(b, rules));
    let mut items = Vec::new();
    let c = &rules.check;

    let mut diff = baseline.as_ref().map(|b| diff(b, &observed));
    if let (Some(diff), Some(baseline)) = (&mut diff, &baseline) {
        items.extend(set_aside_unexpected_absences(
            diff,
            baseline,
            &observed,
            c.min_expected_calls,
        ));
    }
    if let Some(diff) = &diff {
        items.extend(edge_items(
            &diff.added_edges,
            "new-edges",
            c.new_edges,
            "new",
        ));
        items.extend(edge_items(
            &diff.removed_edges,
            "removed-edges",
            c.removed_edges,
            "removed",
        ));
        items.extend(node_items(
            &diff.added_nodes,
            "new-nodes",
            c.new_nodes,
            "new",
        ));
        items.extend(node_items(
            &diff.removed_nodes,
            "removed-nodes",
            c.removed_nodes,
            "removed",
        ));
        if let Some(severity) = level_severity(c.new_findings) {
            items.extend(
                diff.new_findings
                    .iter()
                    .filter(|f| !is_cycle(f))
                    .map(|f| Item {
                        rule: "new-findings".to_owned(),
                        severity,
                        status: Status::New,
                        subject: f.subjects.join(", "),
                        message: f.message.clone(),
                        edges: Vec::new(),
                    }),
            );
        }
    }

    if let Some(baseline) = &baseline {
        items.extend(release_items(baseline, &observed));
    }

    if c.cycles != CyclePolicy::Allow {
        let baseline_cycles: BTreeSet<(FindingKind, &[String])> = baseline
            .iter()
            .flat_map(|b| b.findings.iter().filter(|f| is_cycle(f)).map(finding_key))
            .collect();
        let observed_cycles: BTreeSet<(FindingKind, &[String])> = observed
            .findings
            .iter()
            .filter(|f| is_cycle(f))
            .map(finding_key)
            .collect();
        for finding in observed.findings.iter().filter(|f| is_cycle(f)) {
            let known = baseline_cycles.contains(&finding_key(finding));
            items.push(Item {
                rule: "cycles".to_owned(),
                severity: Severity::Error,
                status: if known && c.cycles == CyclePolicy::DenyNew {
                    Status::Known
                } else {
                    Status::New
                },
                subject: finding.subjects.join(", "),
                message: finding.message.clone(),
                edges: cycle_edges(finding),
            });
        }
        for finding in baseline
            .iter()
            .flat_map(|b| &b.findings)
            .filter(|f| is_cycle(f))
        {
            if !observed_cycles.contains(&finding_key(finding)) {
                items.push(Item {
                    rule: "cycles".to_owned(),
                    severity: Severity::Info,
                    status: Status::Fixed,
                    subject: finding.subjects.join(", "),
                    message: format!(
                        "the baseline's cycle among {} is gone: update the baseline",
                        finding.subjects.join(", ")
                    ),
                    edges: Vec::new(),
                });
            }
        }
    }

    let all_violations = |snapshot: &Snapshot| {
        let mut found = violations(snapshot, rules);
        if let Some(declared) = declared {
            found.extend(conformance_violations(snapshot, declared, c));
        }
        found
    };
    let observed_violations = all_violations(&observed);
    let baseline_violations = baseline.as_ref().map(all_violations).unwrap_or_default();
    let key = |v: &Violation| (v.rule.clone(), v.subject.clone());
    let before: BTreeSet<_> = baseline_violations.iter().map(key).collect();
    let now: BTreeSet<_> = observed_violations.iter().map(key).collect();
    for v in &observed_violations {
        items.push(Item {
            rule: v.rule.clone(),
            severity: v.severity,
            status: if before.contains(&key(v)) {
                Status::Known
            } else {
                Status::New
            },
            subject: v.subject.clone(),
            message: v.message.clone(),
            edges: v.edges.clone(),
        });
    }
    for v in baseline_violations
        .iter()
        .filter(|v| !now.contains(&key(v)))
    {
        items.push(Item {
            rule: v.rule.clone(),
            severity: Severity::Info,
            status: Status::Fixed,
            subject: v.subject.clone(),
            message: format!("fixed since the baseline: {}", v.message),
            edges: Vec::new(),
        });
    }

    items.sort_by(|a, b| {
        (a.status, std::cmp::Reverse(a.severity), &a.rule, &a.subject).cmp(&(
            b.status,
            std::cmp::Reverse(b.severity),
            &b.rule,
            &b.subject,
        ))
    });
    CheckReport {
        observed_window: observed.window.clone(),
        baseline_window: baseline.as_ref().map(|b| b.window.clone()),
        declared: declared.map(|d| d.sources.clone()),
        rules: rule_infos(rules, baseline.is_some(), declared.is_some()),
        items,
        diff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;

    fn rules(text: &str) -> Rules {
        toml::from_str(text).unwrap()
    }

    /// The new items of a check, as (rule, severity, subject).
    fn new_items(report: &CheckReport) -> Vec<(&str, Severity, &str)> {
        report
            .items
            .iter()
            .filter(|i| i.status == Status::New)
            .map(|i| (i.rule.as_str(), i.severity, i.subject.as_str()))
            .collect()
    }

    const SHOP: &[(&str, &str)] = &[
        ("user", "gateway"),
        ("gateway", "cart"),
        ("gateway", "checkout"),
        ("checkout", "cart"),
        ("checkout", "db:orders"),
        ("cart", "db:carts"),
    ];

    fn shop_with(extra: &[(&'static str, &'static str)]) -> Snapshot {
        let mut edges = SHOP.to_vec();
        edges.extend_from_slice(extra);
        graph(&edges, &["gateway"], &[])
    }

    #[test]
    fn rules_select_the_members_of_declared_domains() {
        let rules = rules(
            "[domains]\nedge = [\"gateway\"]\ndata = [\"type:database\", \"cart\"]\n\n\
             [[deny]]\nfrom = \"domain:edge\"\nto = \"domain:data\"\n",
        );
        assert_eq!(rules.validate(), Ok(()));
        let report = check(&shop_with(&[("gateway", "db:orders")]), None, None, &rules);
        let mut denied: Vec<&str> = new_items(&report)
            .into_iter()
            .filter(|(rule, _, _)| *rule == "deny[0]")
            .map(|(_, _, subject)| subject)
            .collect();
        denied.sort();
        // cart is in the data domain by name, db:orders by type.
        assert_eq!(denied, ["gateway -> cart", "gateway -> db:orders"]);
    }

    #[test]
    fn a_new_edge_names_the_release_that_introduced_it() {
        use crate::snapshot::{Release, ReleasePair};
        let release = |version: &str| Release {
            version: version.to_owned(),
            first_seen: String::new(),
            last_seen: String::new(),
            spans: 1,
        };
        let mut baseline = shop_with(&[]);
        let mut observed = shop_with(&[("cart", "payment")]);
        for (snapshot, versions) in [
            (&mut baseline, vec!["1.0"]),
            (&mut observed, vec!["1.0", "1.1"]),
        ] {
            let cart = snapshot.nodes.iter_mut().find(|n| n.id == "cart").unwrap();
            cart.versions = versions.into_iter().map(release).collect();
        }
        let edge = observed
            .edges
            .iter_mut()
            .find(|e| e.to == "payment")
            .unwrap();
        edge.versions = ["1.1", "1.2"]
            .map(|cart| ReleasePair {
                from_version: cart.to_owned(),
                to_version: "2.0".to_owned(),
                first_seen: String::new(),
                last_seen: String::new(),
                calls: 1,
            })
            .to_vec();
        let report = check(&observed, Some(&baseline), None, &Rules::default());
        let message = |rule: &str| {
            report
                .items
                .iter()
                .find(|i| i.rule == rule)
                .map(|i| i.message.clone())
                .unwrap_or_default()
        };
        assert!(
            message("new-edges").ends_with("; introduced by cart 1.1 -> payment 2.0)"),
            "{}",
            message("new-edges")
        );
        assert_eq!(
            message("releases"),
            "cart runs 1.1 here; the baseline saw 1.0"
        );
        let releases = report.items.iter().find(|i| i.rule == "releases").unwrap();
        assert_eq!(
            releases.severity,
            Severity::Info,
            "a new release alone never fails"
        );
        // Without versions in the snapshots, nothing about releases.
        let plain = check(
            &shop_with(&[("cart", "payment")]),
            Some(&shop_with(&[])),
            None,
            &Rules::default(),
        );
        assert!(plain.items.iter().all(|i| i.rule != "releases"));
        assert!(!plain
            .items
            .iter()
            .any(|i| i.message.contains("introduced by")));
    }

    #[test]
    fn unknown_or_nested_domains_are_refused_with_the_fix() {
        let unknown = rules(
            "[domains]\nedge = [\"gateway\"]\n[[deny]]\nfrom = \"domain:egde\"\nto = \"db:*\"\n",
        );
        let err = unknown.validate().unwrap_err();
        assert!(
            err.contains("`domain:egde` names no domain of [domains] (declared: edge)"),
            "{err}"
        );
        let nested = rules("[domains]\nedge = [\"gateway\"]\nall = [\"domain:edge\"]\n");
        let err = nested.validate().unwrap_err();
        assert!(err.contains("domain `all` lists `domain:edge`"), "{err}");
    }

    /// `snapshot` with its traffic spread over `minutes` and each edge standing for `weight`
    /// times its calls.
    fn observed_for(mut snapshot: Snapshot, minutes: i64, weight: f64) -> Snapshot {
        for edge in &mut snapshot.edges {
            edge.first_seen = crate::time::rfc3339(0);
            edge.last_seen = crate::time::rfc3339(minutes * 60_000_000_000);
            edge.estimated_calls = Some(edge.calls as f64 * weight);
        }
        snapshot
    }

    #[test]
    fn an_edge_too_rare_to_be_expected_in_the_window_is_not_reported_removed() {
        // Every edge had 10 calls in the baseline's hour; the observed 5 minutes lack
        // cart → db:carts (and so db:carts): 10 × 5/60 ≈ 0.8 calls expected, under 1.
        let baseline = observed_for(shop_with(&[]), 60, 1.0);
        let observed = observed_for(graph(&SHOP[..5], &["gateway"], &[]), 5, 1.0);
        let report = check(&observed, Some(&baseline), None, &Rules::default());
        assert_eq!(
            new_items(&report),
            [
                ("removed-edges", Severity::Info, "cart -> db:carts"),
                ("removed-nodes", Severity::Info, "db:carts"),
            ]
        );
        assert!(
            report.items[0].message.contains("only 0.83 sampled calls"),
            "{}",
            report.items[0].message
        );
        let diff = report.diff.as_ref().unwrap();
        assert!(diff.removed_edges.is_empty() && diff.removed_nodes.is_empty());

        // The baseline's 10 sampled calls stood for 120: 10 expected, so it is reported ...
        let sampled_baseline = observed_for(shop_with(&[]), 60, 12.0);
        let report = check(&observed, Some(&sampled_baseline), None, &Rules::default());
        assert_eq!(
            new_items(&report),
            [
                ("removed-edges", Severity::Warning, "cart -> db:carts"),
                ("removed-nodes", Severity::Warning, "db:carts"),
            ]
        );
        // ... unless the observed window keeps 1 call in 12 too: 120 × 5/60 / 12 ≈ 0.8.
        let sampled_observed = observed_for(graph(&SHOP[..5], &["gateway"], &[]), 5, 12.0);
        let report = check(
            &sampled_observed,
            Some(&sampled_baseline),
            None,
            &Rules::default(),
        );
        assert!(
            new_items(&report)
                .iter()
                .all(|(_, severity, _)| *severity == Severity::Info),
            "{:?}",
            new_items(&report)
        );
        // The threshold is a setting: at 0.5 the 0.8 expected calls are enough.
        let strict = rules("[check]\nmin_expected_calls = 0.5\n");
        let report = check(&observed, Some(&baseline), None, &strict);
        assert_eq!(
            new_items(&report),
            [
                ("removed-edges", Severity::Warning, "cart -> db:carts"),
                ("removed-nodes", Severity::Warning, "db:carts"),
            ]
        );
    }

    #[test]
    fn diff_lists_added_and_removed_nodes_edges_and_findings() {
        let old = without_noise(&shop_with(&[]), &Rules::default());
        let mut edges: Vec<_> = SHOP
            .iter()
            .copied()
            .filter(|e| *e != ("checkout", "cart"))
            .collect();
        edges.extend([("checkout", "db:carts"), ("cart", "pricing")]);
        let new = without_noise(&graph(&edges, &["gateway"], &[]), &Rules::default());
        let d = diff(&old, &new);
        let names = |edges: &[EdgeRef]| -> Vec<(String, String)> {
            edges
                .iter()
                .map(|e| (e.from.clone(), e.to.clone()))
                .collect()
        };
        assert_eq!(
            names(&d.added_edges),
            [
                ("cart".to_owned(), "pricing".to_owned()),
                ("checkout".to_owned(), "db:carts".to_owned())
            ]
        );
        assert_eq!(
            names(&d.removed_edges),
            [("checkout".to_owned(), "cart".to_owned())]
        );
        assert_eq!(d.added_nodes.len(), 1);
        assert_eq!(d.added_nodes[0].id, "pricing");
        assert!(d.removed_nodes.is_empty());
        // db:carts is now called by cart and checkout: a shared database appears.
        assert_eq!(d.new_findings.len(), 1, "{:?}", d.new_findings);
        assert_eq!(d.new_findings[0].kind, FindingKind::SharedDatabase);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn without_rules_a_new_edge_fails_and_a_removed_one_warns() {
        let baseline = shop_with(&[]);
        let observed = shop_with(&[("cart", "db:orders")]);
        let report = check(&observed, Some(&baseline), None, &Rules::default());
        assert_eq!(
            new_items(&report),
            [
                ("new-edges", Severity::Error, "cart -> db:orders"),
                (
                    "new-findings",
                    Severity::Warning,
                    "db:orders, cart, checkout"
                ),
            ]
        );
        assert_eq!(report.failures(), 1);

        let removed = graph(&SHOP[..5], &["gateway"], &[]);
        let report = check(&removed, Some(&baseline), None, &Rules::default());
        assert_eq!(report.failures(), 0);
        assert_eq!(
            new_items(&report),
            [
                ("removed-edges", Severity::Warning, "cart -> db:carts"),
                ("removed-nodes", Severity::Warning, "db:carts"),
            ]
        );
        let same = check(&baseline, Some(&baseline), None, &Rules::default());
        assert!(same.items.is_empty(), "{:?}", same.items);
    }

    #[test]
    fn new_edges_can_be_warnings_or_allowed() {
        let baseline = shop_with(&[]);
        let observed = shop_with(&[("cart", "pricing")]);
        let warn = check(
            &observed,
            Some(&baseline),
            None,
            &rules(
                "[check]\nnew_edges = \"warn\"\nnew_nodes = \"allow\"\nnew_findings = \"allow\"",
            ),
        );
        assert_eq!(
            new_items(&warn),
            [("new-edges", Severity::Warning, "cart -> pricing")]
        );
        assert_eq!(warn.failures(), 0);
        let allow = check(
            &observed,
            Some(&baseline),
            None,
            &rules(
                "[check]\nnew_edges = \"allow\"\nnew_nodes = \"allow\"\nnew_findings = \"allow\"",
            ),
        );
        assert!(allow.items.is_empty());
    }

    #[test]
    fn edges_under_min_calls_are_ignored() {
        let baseline = shop_with(&[]);
        let observed = shop_with(&[("cart", "pricing")]);
        // Every edge of the test graphs has 10 calls.
        let noisy = check(
            &observed,
            Some(&baseline),
            None,
            &rules("[check]\nmin_calls = 11"),
        );
        assert!(noisy.items.is_empty(), "{:?}", noisy.items);
        let counted = check(
            &observed,
            Some(&baseline),
            None,
            &rules("[check]\nmin_calls = 10"),
        );
        assert_eq!(counted.failures(), 1);
    }

    #[test]
    fn cycles_deny_new_fails_only_on_cycles_the_baseline_lacks() {
        let baseline = shop_with(&[]);
        let cyclic = shop_with(&[("cart", "checkout")]);
        let report = check(&cyclic, Some(&baseline), None, &Rules::default());
        let cycles: Vec<_> = report.items.iter().filter(|i| i.rule == "cycles").collect();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].status, Status::New);
        assert_eq!(cycles[0].subject, "cart, checkout");
        assert!(cycles[0]
            .edges
            .contains(&("cart".into(), "checkout".into())));

        // The same cycle in the baseline is known and passes.
        let report = check(&cyclic, Some(&cyclic), None, &Rules::default());
        assert_eq!(report.failures(), 0);
        assert_eq!(report.count(Severity::Error, Status::Known), 1);

        // Once it is gone, it is reported as fixed.
        let report = check(&baseline, Some(&cyclic), None, &Rules::default());
        assert!(report
            .items
            .iter()
            .any(|i| i.rule == "cycles" && i.status == Status::Fixed));
    }

    #[test]
    fn cycles_deny_fails_even_on_known_cycles_and_allow_reports_none() {
        let cyclic = shop_with(&[("cart", "checkout")]);
        let deny = check(
            &cyclic,
            Some(&cyclic),
            None,
            &rules("[check]\ncycles = \"deny\""),
        );
        assert_eq!(deny.failures(), 1);
        let allow = check(&cyclic, None, None, &rules("[check]\ncycles = \"allow\""));
        assert!(allow.items.is_empty());
        let acyclic = check(
            &shop_with(&[]),
            None,
            None,
            &rules("[check]\ncycles = \"deny\""),
        );
        assert_eq!(acyclic.failures(), 0);
    }

    #[test]
    fn deny_rules_by_glob_and_by_type() {
        let text = r#"
[[deny]]
from = "gate*"
to = "type:database"
reason = "the gateway only routes"
"#;
        let passing = check(&shop_with(&[]), None, None, &rules(text));
        assert_eq!(passing.failures(), 0);
        let failing = check(
            &shop_with(&[("gateway", "db:orders")]),
            None,
            None,
            &rules(text),
        );
        assert_eq!(
            new_items(&failing),
            [("deny[0]", Severity::Error, "gateway -> db:orders")]
        );
        assert!(failing.items[0]
            .message
            .ends_with("the gateway only routes"));
    }

    #[test]
    fn conformance_to_a_declared_architecture_is_checked_at_the_rules_severities() {
        let declared = Declared::from_snapshot(&shop_with(&[]), "catalog");
        let conforming = check(&shop_with(&[]), None, Some(&declared), &Rules::default());
        assert_eq!(conforming.failures(), 0);
        assert!(conforming.rules.iter().any(|r| r.id == "undeclared-edges"));

        let drifted = shop_with(&[("gateway", "db:orders")]);
        let report = check(&drifted, None, Some(&declared), &Rules::default());
        assert_eq!(
            new_items(&report),
            [("undeclared-edges", Severity::Error, "gateway -> db:orders")]
        );
        assert!(report.items[0].message.contains("10 calls"));

        let relaxed = rules("[check]\nundeclared_edges = \"warn\"");
        let report = check(&drifted, None, Some(&declared), &relaxed);
        assert_eq!(report.failures(), 0);
        assert_eq!(report.count(Severity::Warning, Status::New), 1);

        let known = check(&drifted, Some(&drifted), Some(&declared), &Rules::default());
        assert_eq!(known.failures(), 0);
        assert_eq!(known.count(Severity::Error, Status::Known), 1);

        // A declared edge no trace showed is a warning by default.
        let fewer = Declared::from_snapshot(&drifted, "catalog");
        let report = check(&shop_with(&[]), None, Some(&fewer), &Rules::default());
        assert_eq!(
            new_items(&report),
            [(
                "unobserved-edges",
                Severity::Warning,
                "gateway -> db:orders"
            )]
        );
    }

    #[test]
    fn a_violation_in_the_baseline_is_known_until_it_is_fixed() {
        let text = "[[deny]]\nfrom = \"checkout\"\nto = \"cart\"";
        let report = check(&shop_with(&[]), Some(&shop_with(&[])), None, &rules(text));
        assert_eq!(report.failures(), 0);
        assert_eq!(report.count(Severity::Error, Status::Known), 1);
        let fixed = graph(
            &SHOP
                .iter()
                .copied()
                .filter(|e| *e != ("checkout", "cart"))
                .collect::<Vec<_>>(),
            &["gateway"],
            &[],
        );
        let report = check(&fixed, Some(&shop_with(&[])), None, &rules(text));
        assert_eq!(report.failures(), 0);
        assert!(report
            .items
            .iter()
            .any(|i| i.rule == "deny[0]" && i.status == Status::Fixed));
    }

    #[test]
    fn allow_only_rules() {
        let text = r#"
[[allow_only]]
from = "checkout"
to = ["cart", "type:database"]
"#;
        assert_eq!(
            check(&shop_with(&[]), None, None, &rules(text)).failures(),
            0
        );
        let failing = check(
            &shop_with(&[("checkout", "pricing")]),
            None,
            None,
            &rules(text),
        );
        assert_eq!(
            new_items(&failing),
            [("allow-only[0]", Severity::Error, "checkout -> pricing")]
        );
    }

    #[test]
    fn layers_allow_calls_to_the_same_or_a_later_layer_only() {
        let text = r#"
[layers]
order = [["user", "gateway"], ["checkout"], ["cart"], ["type:database"]]
"#;
        assert_eq!(
            check(&shop_with(&[]), None, None, &rules(text)).failures(),
            0
        );
        let failing = check(&shop_with(&[("cart", "gateway")]), None, None, &rules(text));
        let layer_items: Vec<_> = new_items(&failing)
            .into_iter()
            .filter(|i| i.0 == "layers")
            .collect();
        assert_eq!(
            layer_items,
            [("layers", Severity::Error, "cart -> gateway")]
        );
        // Nodes in no layer are not constrained.
        let unlayered = check(&shop_with(&[("cart", "pricing")]), None, None, &rules(text));
        assert_eq!(unlayered.failures(), 0);
    }

    #[test]
    fn fan_out_fan_in_and_depth_limits() {
        let fan_out = "[limits]\nmax_fan_out = 2";
        assert_eq!(
            check(&shop_with(&[]), None, None, &rules(fan_out)).failures(),
            0
        );
        let failing = check(
            &shop_with(&[("checkout", "pricing")]),
            None,
            None,
            &rules(fan_out),
        );
        assert_eq!(
            new_items(&failing),
            [("max-fan-out", Severity::Error, "checkout")]
        );

        // cart is called by gateway and checkout.
        let fan_in = "[limits]\nmax_fan_in = 2";
        assert_eq!(
            check(&shop_with(&[]), None, None, &rules(fan_in)).failures(),
            0
        );
        let failing = check(
            &shop_with(&[("pricing", "cart")]),
            None,
            None,
            &rules(fan_in),
        );
        assert_eq!(
            new_items(&failing),
            [("max-fan-in", Severity::Error, "cart")]
        );

        // gateway → checkout → cart → db:carts is 4 nodes.
        let depth = "[limits]\nmax_sync_depth = 4";
        assert_eq!(
            check(&shop_with(&[]), None, None, &rules(depth)).failures(),
            0
        );
        let deeper = check(
            &shop_with(&[("db:carts", "disk")]),
            None,
            None,
            &rules(depth),
        );
        assert_eq!(
            new_items(&deeper),
            [(
                "max-sync-depth",
                Severity::Error,
                "longest synchronous chain"
            )]
        );
    }

    #[test]
    fn a_typo_in_a_rules_file_is_named_with_its_line() {
        let err = toml::from_str::<Rules>("[check]\nmin_calls = 3\nnew_edge = \"warn\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("unknown field `new_edge`"), "{err}");
        let err = toml::from_str::<Rules>("[[deny]]\nfrom = \"a\"\nto = \"type:db\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("type:database"),
            "{err}"
        );
    }
}
