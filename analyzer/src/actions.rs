//! Recommended actions: for each finding, what to change, ranked by how much of the entry
//! traffic passes what the change touches (from [`crate::impact`]: the share of entry traffic
//! that fails or degrades without it). The numbers that make an action worth doing are in its
//! text and its fields.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::impact::{Impacts, Reach, Target};
use crate::resilience::duration;
use crate::snapshot::{Finding, FindingKind, Severity, Snapshot};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Action {
    /// What to do, and why, in one sentence.
    pub action: String,
    /// The finding it answers.
    pub finding: FindingKind,
    pub severity: Severity,
    pub subjects: Vec<String>,
    /// Share of the entry traffic that passes what the action changes (0 to 1).
    pub traffic_share: f64,
    /// Entry operations that fail today when that part fails.
    pub failing_entry_operations: usize,
}

/// One action per finding, the largest effect first (then the more severe, then by subject).
pub fn recommend(snapshot: &Snapshot) -> Vec<Action> {
    let reached = Reach::new(&Impacts::new(snapshot));
    let reach = |target: Target| reached.of(&target);
    let edge = |from: &str, to: &str| Target::Edge {
        from: from.to_owned(),
        to: to.to_owned(),
    };
    // Calls between two nodes, both kinds together: looked up once per finding or more.
    let mut calls_between: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for edge in &snapshot.edges {
        *calls_between
            .entry((edge.from.as_str(), edge.to.as_str()))
            .or_default() += edge.calls;
    }
    let calls =
        |from: &str, to: &str| -> u64 { calls_between.get(&(from, to)).copied().unwrap_or(0) };
    let percent = |share: f64| format!("{:.0}%", 100.0 * share);
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut actions: Vec<Action> = snapshot
        .findings
        .iter()
        .map(|finding| {
            let (action, (share, failing)) = match finding.kind {
                FindingKind::SyncCycle | FindingKind::AsyncCycle => {
                    // The cycle's least used call is the cheapest to change.
                    let (from, to) = finding
                        .evidence
                        .cycle
                        .windows(2)
                        .map(|w| (w[0].as_str(), w[1].as_str()))
                        .min_by_key(|(a, b)| (calls(a, b), *a, *b))
                        .unwrap_or(("", ""));
                    let effect = reach(edge(from, to));
                    let how = if finding.kind == FindingKind::SyncCycle {
                        "make it asynchronous or cache what it fetches"
                    } else {
                        "let one side react to events the other already publishes"
                    };
                    (
                        format!(
                            "break the cycle among {} at {from} → {to}, its least used call ({} calls): {how}; {} of entry traffic passes it",
                            finding.subjects.join(", "),
                            calls(from, to),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::BidirectionalPair => {
                    let (a, b) = (&finding.subjects[0], &finding.subjects[1]);
                    let (from, to) = if calls(a, b) <= calls(b, a) { (a, b) } else { (b, a) };
                    let effect = reach(edge(from, to));
                    (
                        format!(
                            "remove one direction between {a} and {b}: move what {from} asks {to} for ({} calls) into {from}, or have {to} publish it; {} of entry traffic passes it",
                            calls(from, to),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::Hub | FindingKind::SinglePointOfFailure => {
                    let node = &finding.subjects[0];
                    let effect = reach(Target::Node(node.clone()));
                    let what = if finding.kind == FindingKind::Hub {
                        format!("split {node} by its callers' needs")
                    } else {
                        format!("add timeouts and a fallback (or a second instance) for {node}")
                    };
                    (
                        format!(
                            "{what}: {} without it, {} of entry traffic reaches it",
                            count(effect.1, "entry operation fails", "entry operations fail"),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::SharedDatabase => {
                    let database = &finding.subjects[0];
                    let services = &finding.subjects[1..];
                    let owner = services
                        .iter()
                        .max_by_key(|s| (calls(s, database), std::cmp::Reverse(s.as_str())))
                        .map_or("", String::as_str);
                    let effect = reach(Target::Node(database.clone()));
                    (
                        format!(
                            "give {database} one owner: {owner} calls it most; {} its data through {owner}'s API; {} of entry traffic reaches it",
                            count(services.len() - 1, "other service reaches", "other services reach"),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::ChattyEdge | FindingKind::ErrorHotspot => {
                    let (from, to) = split_edge(&finding.subjects[0]);
                    let effect = reach(edge(from, to));
                    let what = if finding.kind == FindingKind::ChattyEdge {
                        format!(
                            "batch {from} → {to}: {:.1} calls per trace (up to {})",
                            finding.evidence["calls_per_trace"].as_f64().unwrap_or(0.0),
                            finding.evidence["max_calls_per_trace"]
                        )
                    } else {
                        format!(
                            "fix the errors of {from} → {to} where they start ({}), and give the call a timeout, retries with backoff and a circuit breaker",
                            finding.evidence["origin"].as_str().unwrap_or("unknown")
                        )
                    };
                    (
                        format!("{what}; {} of entry traffic passes it", percent(effect.0)),
                        effect,
                    )
                }
                FindingKind::RetryAmplification => {
                    let node = &finding.subjects[0];
                    let effect = reach(Target::Node(node.clone()));
                    let chain: Vec<&str> = finding.evidence["chain"]
                        .as_array()
                        .map(|c| c.iter().filter_map(|n| n.as_str()).collect())
                        .unwrap_or_default();
                    (
                        format!(
                            "retry at one layer only on the way to {node} ({}), with backoff and a retry budget: up to {} attempts reach it per call today; {} without it, {} of entry traffic reaches it",
                            chain.join(" → "),
                            finding.evidence["amplification"],
                            count(effect.1, "entry operation fails", "entry operations fail"),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::MissingTimeout | FindingKind::LongTimeout => {
                    let (from, to) = split_edge(&finding.subjects[0]);
                    let effect = reach(edge(from, to));
                    let p99 = finding.evidence["callee_p99_ms"].as_f64().unwrap_or(0.0);
                    let what = if finding.kind == FindingKind::MissingTimeout {
                        format!(
                            "add a timeout (e.g. {}) and a fallback to {from} → {to}",
                            duration(p99 * 3.0)
                        )
                    } else {
                        format!(
                            "shorten {from}'s timeout on {to} from {} toward a few times its p99 ({})",
                            duration(finding.evidence["timeout_ms"].as_f64().unwrap_or(0.0)),
                            duration(p99)
                        )
                    };
                    (
                        format!(
                            "{what}: {} without it, {} of entry traffic passes it",
                            count(effect.1, "entry operation fails", "entry operations fail"),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::InvertedTimeouts => {
                    let (outer_from, outer_to) = split_edge(&finding.subjects[0]);
                    let (_, inner_to) = split_edge(&finding.subjects[1]);
                    let effect = reach(edge(outer_to, inner_to));
                    (
                        format!(
                            "make {outer_to}'s timeout on {inner_to} shorter than {outer_from}'s on {outer_to} ({}), or pass the caller's deadline along; {} of entry traffic passes it",
                            duration(finding.evidence["outer_timeout_ms"].as_f64().unwrap_or(0.0)),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::LatencyBudget => {
                    let slowest = finding.evidence["slowest_service"]
                        .as_str()
                        .unwrap_or_default();
                    let effect = reach(Target::Node(slowest.to_owned()));
                    (
                        format!(
                            "cut {slowest}'s time on the critical path of {} (the largest p99 on it), or call it in parallel or cache it: the path adds up to {} against a {} budget; {} of entry traffic reaches {slowest}",
                            finding.subjects[0],
                            duration(finding.evidence["critical_p99_sum_ms"].as_f64().unwrap_or(0.0)),
                            duration(finding.evidence["budget_ms"].as_f64().unwrap_or(0.0)),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
                FindingKind::DeepSyncChain => {
                    let chain = &finding.subjects;
                    // Everything that waits on the chain enters through its first call.
                    let effect = match chain.as_slice() {
                        [first, second, ..] => reach(edge(first, second)),
                        _ => (0.0, 0),
                    };
                    (
                        format!(
                            "shorten the synchronous chain {}: answer before the last calls finish (publish them) or cache their results; {} of entry traffic enters it",
                            chain.join(" → "),
                            percent(effect.0)
                        ),
                        effect,
                    )
                }
            };
            Action {
                action,
                finding: finding.kind,
                severity: finding.severity,
                subjects: finding.subjects.clone(),
                traffic_share: share,
                failing_entry_operations: failing,
            }
        })
        .collect();
    actions.sort_by(|a, b| {
        b.traffic_share
            .total_cmp(&a.traffic_share)
            .then(b.severity.cmp(&a.severity))
            .then_with(|| a.subjects.cmp(&b.subjects))
    });
    actions
}

/// `from -> to` as its two names.
fn split_edge(subject: &str) -> (&str, &str) {
    subject.split_once(" -> ").unwrap_or((subject, ""))
}

/// The actions about `service`: those whose finding names it.
pub fn about<'a>(actions: &'a [Action], service: &str) -> Vec<&'a Action> {
    actions
        .iter()
        .filter(|a| {
            a.subjects
                .iter()
                .any(|s| s == service || s.split(" -> ").any(|part| part == service))
        })
        .collect()
}

/// Whether `action` answers `finding`.
pub fn answers(action: &Action, finding: &Finding) -> bool {
    action.finding == finding.kind && action.subjects == finding.subjects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::impact::tests::shop;
    use crate::snapshot::Evidence;

    fn finding(kind: FindingKind, severity: Severity, subjects: &[&str]) -> Finding {
        Finding {
            kind,
            severity,
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            evidence: Evidence::default(),
            message: String::new(),
        }
    }

    #[test]
    fn actions_say_what_to_change_and_rank_by_the_traffic_it_touches() {
        // gateway's GET / (30 traces) calls cart, which reads db:carts; checkout's 10 traces
        // publish to mailer, which calls smtp.
        let mut snapshot = shop();
        let mut chatty = finding(
            FindingKind::ChattyEdge,
            Severity::Warning,
            &["gateway -> cart"],
        );
        chatty
            .evidence
            .values
            .insert("calls_per_trace".into(), 12.0.into());
        chatty
            .evidence
            .values
            .insert("max_calls_per_trace".into(), 20.into());
        // cart and its database call each other; the way back is the busier direction.
        let mut back = snapshot
            .edges
            .iter()
            .find(|e| e.to == "db:carts")
            .unwrap()
            .clone();
        (back.from, back.to, back.calls) = ("db:carts".into(), "cart".into(), 50);
        snapshot.edges.push(back);
        let mut cycle = finding(
            FindingKind::SyncCycle,
            Severity::Error,
            &["cart", "db:carts"],
        );
        cycle.evidence.cycle = vec!["cart".into(), "db:carts".into(), "cart".into()];
        snapshot.findings = vec![
            finding(
                FindingKind::SinglePointOfFailure,
                Severity::Warning,
                &["mailer"],
            ),
            chatty,
            cycle,
        ];
        let actions = recommend(&snapshot);
        let summary: Vec<(FindingKind, f64, usize)> = actions
            .iter()
            .map(|a| (a.finding, a.traffic_share, a.failing_entry_operations))
            .collect();
        assert_eq!(
            summary,
            [
                // 30 of the 40 entry traces pass cart; the error ranks first at equal effect.
                (FindingKind::SyncCycle, 0.75, 1),
                (FindingKind::ChattyEdge, 0.75, 1),
                // mailer is behind a queue: checkout degrades, nothing fails.
                (FindingKind::SinglePointOfFailure, 0.25, 0),
            ]
        );
        assert_eq!(
            actions[1].action,
            "batch gateway → cart: 12.0 calls per trace (up to 20); 75% of entry traffic passes it"
        );
        assert_eq!(
            actions[2].action,
            "add timeouts and a fallback (or a second instance) for mailer: 0 entry operations fail without it, 25% of entry traffic reaches it"
        );
        assert!(
            actions[0]
                .action
                .starts_with("break the cycle among cart, db:carts at cart → db:carts"),
            "{}",
            actions[0].action
        );
        assert_eq!(about(&actions, "mailer").len(), 1);
        assert_eq!(about(&actions, "cart").len(), 2);
        assert!(answers(&actions[2], &snapshot.findings[0]));
    }
}
