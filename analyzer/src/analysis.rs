//! Analysis of a snapshot: node metrics, findings and the risk ranking, computed once from the
//! snapshot's data with one set of settings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actions::{recommend, Action};
use crate::findings::{findings, Thresholds};
use crate::metrics::{metrics_for_findings, node_metrics, MetricSettings};
use crate::risk::{hotspots, Hotspot};
use crate::snapshot::{Finding, MetricNotes, NodeMetrics, Snapshot};

/// Everything that tunes the analysis.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub metrics: MetricSettings,
    pub thresholds: Thresholds,
}

impl Settings {
    pub fn with_thresholds(thresholds: Thresholds) -> Settings {
        Settings {
            thresholds,
            ..Settings::default()
        }
    }
}

/// What the analysis found in one snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub metrics: BTreeMap<String, NodeMetrics>,
    pub notes: MetricNotes,
    pub findings: Vec<Finding>,
    /// Services, riskiest first.
    pub hotspots: Vec<Hotspot>,
}

/// Computes metrics, findings and the risk ranking of `snapshot`. Its own metrics and findings
/// (from an earlier analysis or a file) are not read.
pub fn analyze(snapshot: &Snapshot, settings: &Settings) -> Analysis {
    let (metrics, notes) = node_metrics(snapshot, &settings.metrics);
    let findings = findings(snapshot, &metrics, &settings.thresholds);
    let hotspots = hotspots(snapshot, &metrics, &findings);
    Analysis {
        metrics,
        notes,
        findings,
        hotspots,
    }
}

/// The findings [`analyze`] finds in `snapshot`, without the metrics and the ranking only views
/// read: what history compares between many slices of a window.
pub fn findings_only(snapshot: &Snapshot, settings: &Settings) -> Vec<Finding> {
    findings(
        snapshot,
        &metrics_for_findings(snapshot),
        &settings.thresholds,
    )
}

/// A snapshot with its analysis written into it (node metrics, findings, notes), and the
/// ranking that goes with them: what every view reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Analyzed {
    pub snapshot: Snapshot,
    pub hotspots: Vec<Hotspot>,
    /// One per finding, the largest effect first. Kept out of the snapshot: their traffic
    /// shares change with every window, and snapshots are meant to diff well.
    pub actions: Vec<Action>,
}

impl Analyzed {
    /// Analyses `snapshot` once and writes the results into it.
    pub fn new(mut snapshot: Snapshot, settings: &Settings) -> Analyzed {
        let Analysis {
            mut metrics,
            notes,
            findings,
            hotspots,
        } = analyze(&snapshot, settings);
        for node in &mut snapshot.nodes {
            node.metrics = metrics.remove(&node.id);
        }
        snapshot.findings = findings;
        snapshot.metric_notes = notes;
        let actions = recommend(&snapshot);
        Analyzed {
            snapshot,
            hotspots,
            actions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;
    use crate::snapshot::{Evidence, FindingKind, Severity};

    #[test]
    fn analysis_reads_the_graph_and_not_an_earlier_analysis() {
        let mut snapshot = graph(
            &[
                ("gateway", "cart"),
                ("cart", "pricing"),
                ("pricing", "cart"),
            ],
            &[],
            &[],
        );
        assert!(
            snapshot.findings.is_empty(),
            "a built snapshot carries no analysis"
        );
        assert!(snapshot.nodes.iter().all(|n| n.metrics.is_none()));
        // A stale finding, as a snapshot file from another window could carry.
        snapshot.findings.push(Finding {
            kind: FindingKind::Hub,
            severity: Severity::Info,
            subjects: vec!["gateway".into()],
            evidence: Evidence::default(),
            message: "stale".into(),
        });

        let analyzed = Analyzed::new(snapshot, &Settings::default());
        let kinds: Vec<FindingKind> = analyzed.snapshot.findings.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&FindingKind::SyncCycle), "{kinds:?}");
        assert!(
            !kinds.contains(&FindingKind::Hub),
            "the stale finding is gone: {kinds:?}"
        );
        let cart = analyzed.snapshot.node_metrics()["cart"].clone();
        assert_eq!((cart.fan_in, cart.fan_out), (2, 1));
        // The ranking is the one of the findings and metrics written into the snapshot.
        assert_eq!(analyzed.hotspots[0].service, "cart");
        assert_eq!(analyzed.hotspots[0].terms.cycle, 10.0);
        let again = analyze(&analyzed.snapshot, &Settings::default());
        assert_eq!(again.findings, analyzed.snapshot.findings);
        assert_eq!(again.hotspots, analyzed.hotspots);
    }

    #[test]
    fn thresholds_change_what_is_found() {
        let fan_in: Vec<(String, String)> = (0..3)
            .map(|i| (format!("s{i}"), "hub".to_owned()))
            .collect();
        let mut edges: Vec<(&str, &str)> = fan_in
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        edges.extend([("hub", "x"), ("hub", "y"), ("hub", "z")]);
        let snapshot = graph(&edges, &[], &[]);
        let hubs = |settings: &Settings| {
            Analyzed::new(snapshot.clone(), settings)
                .snapshot
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::Hub)
                .count()
        };
        assert_eq!(
            hubs(&Settings::default()),
            0,
            "3 callers are under the default 4"
        );
        let lower = crate::findings::Thresholds {
            hub_min_fan_in: 3,
            hub_min_fan_out: 3,
            ..Default::default()
        };
        assert_eq!(hubs(&Settings::with_thresholds(lower)), 1);
    }
}
