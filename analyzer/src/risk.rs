//! The per-service risk score, built so that a reviewer can recompute it by hand:
//!
//! ```text
//! score = reach × coupling × health + cycle + spof
//!   reach    = 1 + blast_radius + 10 × entry_point_share
//!   coupling = 1 + ln(1 + acs)                    (acs = fan_in × fan_out)
//!   health   = 1 + 10 × error_rate_in
//!   cycle    = 10 in a synchronous cycle, 3 in a cycle through a queue, else 0
//!   spof     = 5 when it is a single point of failure, else 0
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::derive::NodeType;
use crate::snapshot::{Finding, FindingKind, NodeMetrics, Snapshot};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskTerms {
    pub reach: f64,
    pub coupling: f64,
    pub health: f64,
    pub cycle: f64,
    pub spof: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hotspot {
    pub service: String,
    pub score: f64,
    pub terms: RiskTerms,
    /// Why, in plain words.
    pub reasons: Vec<String>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Every service, highest risk first; ties by name, so renaming services keeps the order of
/// equal scores stable.
pub fn hotspots(
    snapshot: &Snapshot,
    metrics: &BTreeMap<String, NodeMetrics>,
    findings: &[Finding],
) -> Vec<Hotspot> {
    let mut errors_in: BTreeMap<&str, u64> = BTreeMap::new();
    let mut worst_call: BTreeMap<&str, &crate::snapshot::Edge> = BTreeMap::new();
    for edge in &snapshot.edges {
        *errors_in.entry(edge.to.as_str()).or_default() += edge.errors;
        if edge.errors > 0 {
            let worst = worst_call.entry(edge.from.as_str()).or_insert(edge);
            if edge.errors > worst.errors {
                *worst = edge;
            }
        }
    }
    // Findings by the services they involve, so each service looks only at its own.
    let mut involving: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for finding in findings {
        for subject in &finding.subjects {
            involving.entry(subject.as_str()).or_default().push(finding);
        }
    }
    let mut out: Vec<Hotspot> = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Service)
        .filter_map(|node| {
            let m = metrics.get(&node.id)?;
            let name = node.id.as_str();
            let own = involving.get(name).map_or(&[][..], Vec::as_slice);
            let find = |kind: FindingKind| own.iter().copied().find(|f| f.kind == kind);
            let in_sync_cycle = find(FindingKind::SyncCycle);
            let in_async_cycle = find(FindingKind::AsyncCycle);
            let spof = find(FindingKind::SinglePointOfFailure);
            let terms = RiskTerms {
                reach: round2(1.0 + m.blast_radius as f64 + 10.0 * m.entry_point_share),
                coupling: round2(1.0 + (1.0 + m.acs as f64).ln()),
                health: round2(1.0 + 10.0 * m.error_rate_in),
                cycle: if in_sync_cycle.is_some() {
                    10.0
                } else if in_async_cycle.is_some() {
                    3.0
                } else {
                    0.0
                },
                spof: if spof.is_some() { 5.0 } else { 0.0 },
            };
            let score =
                round2(terms.reach * terms.coupling * terms.health + terms.cycle + terms.spof);
            let mut reasons = Vec::new();
            if let Some(cycle) = in_sync_cycle.or(in_async_cycle) {
                let path = &cycle.evidence.cycle;
                let kind = if in_sync_cycle.is_some() {
                    "synchronous"
                } else {
                    "asynchronous"
                };
                reasons.push(format!("in a {kind} cycle {}", path.join(" → ")));
            }
            if m.blast_radius > 0 || m.entry_points_affected > 0 {
                reasons.push(format!(
                    "{} services depend on it, {} entry point{}",
                    m.blast_radius,
                    m.entry_points_affected,
                    if m.entry_points_affected == 1 {
                        ""
                    } else {
                        "s"
                    }
                ));
            }
            if let Some(spof) = spof {
                reasons.push(format!(
                    "single point of failure for {}",
                    spof.evidence.dominates.join(", ")
                ));
            }
            if m.fan_in > 0 && m.fan_out > 0 {
                reasons.push(format!(
                    "{} callers and {} callees (coupling {})",
                    m.fan_in, m.fan_out, m.acs
                ));
            }
            if m.error_rate_in > 0.0 {
                // Which of its own calls fail, as a share of the errors its callers see.
                let errors_in = errors_in.get(name).copied().unwrap_or(0);
                let worst = worst_call.get(name);
                let mut reason = format!("{:.1}% errors", m.error_rate_in * 100.0);
                if let Some(worst) = worst {
                    let share = (worst.errors as f64 / errors_in.max(1) as f64).min(1.0);
                    reason.push_str(&format!(
                        ", {:.0}% of them from its call to {}",
                        share * 100.0,
                        worst.to
                    ));
                }
                reasons.push(reason);
            }
            Some(Hotspot {
                service: node.id.clone(),
                score,
                terms,
                reasons,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.service.cmp(&b.service))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{findings, Thresholds};
    use crate::metrics::tests::graph;
    use crate::metrics::{node_metrics, MetricSettings};

    fn rank(snapshot: &Snapshot) -> Vec<Hotspot> {
        let (metrics, _) = node_metrics(snapshot, &MetricSettings::default());
        let found = findings(snapshot, &metrics, &Thresholds::default());
        hotspots(snapshot, &metrics, &found)
    }

    #[test]
    fn the_score_is_the_documented_formula() {
        // e -> a -> b, a -> c, and b <-> c: a cycle.
        let ranked = rank(&graph(
            &[("e", "a"), ("a", "b"), ("a", "c"), ("b", "c"), ("c", "b")],
            &["e"],
            &[],
        ));
        let a = ranked.iter().find(|h| h.service == "a").unwrap();
        // blast radius 1 (e), entry share 1/1, acs 1×2.
        assert_eq!(a.terms.reach, 1.0 + 1.0 + 10.0);
        assert_eq!(a.terms.coupling, round2(1.0 + 3f64.ln()));
        assert_eq!((a.terms.health, a.terms.cycle), (1.0, 0.0));
        assert_eq!(a.terms.spof, 5.0, "every path to b and c passes a");
        assert_eq!(
            a.score,
            round2(a.terms.reach * a.terms.coupling * a.terms.health + a.terms.spof)
        );
        let b = ranked.iter().find(|h| h.service == "b").unwrap();
        assert_eq!(b.terms.cycle, 10.0);
        assert!(
            b.reasons[0].starts_with("in a synchronous cycle b → c → b"),
            "{:?}",
            b.reasons
        );
        // From the shown (rounded) terms: b has reach 1 + 3 (a, c, e) + 10 = 14, coupling
        // 1 + ln(1 + 2×1) = 2.1, and 10 for the cycle: 14 × 2.1 + 10 = 39.4, above a's
        // 12 × 2.1 + 5 = 30.2.
        assert_eq!(b.score, 39.4);
        assert_eq!(a.score, 30.2);
        assert_eq!(ranked[0].service, "b");
    }

    #[test]
    fn reasons_name_where_errors_come_from() {
        let mut snapshot = graph(&[("e", "cart"), ("cart", "payments")], &["e"], &[]);
        snapshot.edges[0].errors = 4;
        snapshot.edges[1].errors = 3;
        let ranked = rank(&snapshot);
        let cart = ranked.iter().find(|h| h.service == "cart").unwrap();
        assert!(
            cart.reasons
                .contains(&"40.0% errors, 75% of them from its call to payments".to_owned()),
            "{:?}",
            cart.reasons
        );
        assert_eq!(cart.terms.health, 5.0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::findings::{findings, Thresholds};
    use crate::metrics::tests::graph;
    use crate::metrics::{node_metrics, MetricSettings};
    use proptest::prelude::*;

    /// Random graphs of up to 12 services named s0..s11; s0 and s1 are entry points.
    fn edges() -> impl Strategy<Value = Vec<(usize, usize)>> {
        proptest::collection::vec((0usize..12, 0usize..12), 0..40)
    }

    fn snapshot_of(edges: &[(usize, usize)], prefix: &str) -> Snapshot {
        let names: Vec<(String, String)> = edges
            .iter()
            .map(|(a, b)| (format!("{prefix}{a}"), format!("{prefix}{b}")))
            .collect();
        let borrowed: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let entries = [format!("{prefix}0"), format!("{prefix}1")];
        graph(&borrowed, &[entries[0].as_str(), entries[1].as_str()], &[])
    }

    fn analyse(snapshot: &Snapshot) -> (BTreeMap<String, NodeMetrics>, Vec<Hotspot>) {
        let (metrics, _) = node_metrics(snapshot, &MetricSettings::default());
        let found = findings(snapshot, &metrics, &Thresholds::default());
        let ranked = hotspots(snapshot, &metrics, &found);
        (metrics, ranked)
    }

    proptest! {
        #[test]
        fn adding_an_edge_never_lowers_a_blast_radius(base in edges(), extra in (0usize..12, 0usize..12)) {
            let (before, _) = analyse(&snapshot_of(&base, "s"));
            let mut more = base.clone();
            more.push(extra);
            let (after, _) = analyse(&snapshot_of(&more, "s"));
            for (name, metrics) in &before {
                prop_assert!(after[name].blast_radius >= metrics.blast_radius, "{name}");
            }
        }

        #[test]
        fn risk_is_deterministic(base in edges()) {
            let snapshot = snapshot_of(&base, "s");
            prop_assert_eq!(analyse(&snapshot).1, analyse(&snapshot).1);
        }

        #[test]
        fn the_ranking_is_stable_under_renaming(base in edges()) {
            // Renaming keeps the order of names (s3 -> t3), so ties break the same way.
            let (_, original) = analyse(&snapshot_of(&base, "s"));
            let (_, renamed) = analyse(&snapshot_of(&base, "t"));
            let strip = |h: &[Hotspot]| h.iter().map(|h| (h.service[1..].to_owned(), h.score)).collect::<Vec<_>>();
            prop_assert_eq!(strip(&original), strip(&renamed));
        }
    }
}
