//! Declared vs observed: the architecture a catalog declares (a Backstage catalog, a
//! Structurizr workspace, a snapshot), compared with the one observed in traces.
//!
//! Nodes are matched by name. Callers outside the system (client nodes, Structurizr persons)
//! are left out on both sides: a catalog describes the system, not who calls it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::derive::{EdgeKind, NodeType};
use crate::snapshot::{Snapshot, Window};

/// A declared element.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeclaredNode {
    /// What the catalog calls it: `Component`, `Resource`, `softwareSystem`, `container`, ...
    pub kind: String,
    pub owner: Option<String>,
    /// A caller outside the system (a Structurizr person): not compared.
    pub outside: bool,
}

/// An architecture as a catalog declares it: nodes by observed name, and dependencies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Declared {
    /// Where it was read from, for reports.
    pub sources: Vec<String>,
    /// Whether the catalog records owners (Backstage does; Structurizr and snapshots do not),
    /// so that a missing owner is worth reporting.
    pub has_owners: bool,
    pub nodes: BTreeMap<String, DeclaredNode>,
    /// Caller → callee.
    pub edges: BTreeSet<(String, String)>,
}

impl Declared {
    /// Adds a node; a node declared twice keeps the first owner it was given.
    pub fn add_node(&mut self, name: &str, node: DeclaredNode) {
        let entry = self.nodes.entry(name.to_owned()).or_insert(node.clone());
        if entry.owner.is_none() {
            entry.owner = node.owner;
        }
    }

    pub fn add_edge(&mut self, from: &str, to: &str) {
        if from != to {
            self.edges.insert((from.to_owned(), to.to_owned()));
        }
    }

    /// Everything `other` declares, added to this.
    pub fn merge(&mut self, other: Declared) {
        self.sources.extend(other.sources);
        self.has_owners |= other.has_owners;
        for (name, node) in other.nodes {
            self.add_node(&name, node);
        }
        self.edges.extend(other.edges);
    }

    /// A snapshot taken as the declared architecture (for instance an approved one).
    pub fn from_snapshot(snapshot: &Snapshot, source: &str) -> Declared {
        let mut declared = Declared {
            sources: vec![source.to_owned()],
            ..Declared::default()
        };
        for node in &snapshot.nodes {
            declared.add_node(
                &node.id,
                DeclaredNode {
                    kind: node.node_type.as_str().to_owned(),
                    owner: None,
                    outside: node.node_type == NodeType::Client,
                },
            );
        }
        for edge in &snapshot.edges {
            declared.add_edge(&edge.from, &edge.to);
        }
        declared
    }
}

/// An observed dependency the catalog does not declare, with its traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UndeclaredEdge {
    pub from: String,
    pub to: String,
    pub kinds: Vec<EdgeKind>,
    pub calls: u64,
    pub errors: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// A declared dependency no trace showed, and whether its ends were seen at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnobservedEdge {
    pub from: String,
    pub to: String,
    pub from_observed: bool,
    pub to_observed: bool,
}

impl UnobservedEdge {
    /// What was seen of its ends, the evidence that it is really unused.
    pub fn ends(&self) -> &'static str {
        match (self.from_observed, self.to_observed) {
            (true, true) => "both ends seen, never this call",
            (true, false) => "the callee was not seen",
            (false, true) => "the caller was not seen",
            (false, false) => "neither end was seen",
        }
    }
}

/// An observed node, with its traffic and what the catalog says of its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeEvidence {
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    pub calls_in: u64,
    pub calls_out: u64,
}

/// The differences between a declared architecture and an observed snapshot, each list sorted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conformance {
    pub declared_sources: Vec<String>,
    pub observed_window: Window,
    /// Observed dependencies that are declared.
    pub conforming_edges: usize,
    pub undeclared_edges: Vec<UndeclaredEdge>,
    pub unobserved_edges: Vec<UnobservedEdge>,
    /// Observed nodes the catalog lacks.
    pub undeclared_nodes: Vec<NodeEvidence>,
    /// Observed nodes the catalog has without an owner (only when the catalog records owners).
    pub unowned_nodes: Vec<NodeEvidence>,
    /// Declared nodes no trace showed.
    pub unobserved_nodes: Vec<String>,
}

impl Conformance {
    /// Whether the observed architecture is exactly the declared one.
    pub fn is_clean(&self) -> bool {
        self.undeclared_edges.is_empty()
            && self.unobserved_edges.is_empty()
            && self.undeclared_nodes.is_empty()
            && self.unowned_nodes.is_empty()
            && self.unobserved_nodes.is_empty()
    }
}

/// Compares what `snapshot` observed with what `declared` declares.
pub fn conform(snapshot: &Snapshot, declared: &Declared) -> Conformance {
    let outside = |name: &str| {
        declared.nodes.get(name).is_some_and(|n| n.outside)
            || snapshot
                .nodes
                .iter()
                .any(|n| n.id == name && n.node_type == NodeType::Client)
    };
    let mut traffic: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut observed: BTreeMap<(&str, &str), UndeclaredEdge> = BTreeMap::new();
    for edge in &snapshot.edges {
        traffic.entry(&edge.from).or_default().1 += edge.calls;
        traffic.entry(&edge.to).or_default().0 += edge.calls;
        if edge.from == edge.to || outside(&edge.from) || outside(&edge.to) {
            continue;
        }
        let entry = observed
            .entry((&edge.from, &edge.to))
            .or_insert_with(|| UndeclaredEdge {
                from: edge.from.clone(),
                to: edge.to.clone(),
                kinds: Vec::new(),
                calls: 0,
                errors: 0,
                first_seen: edge.first_seen.clone(),
                last_seen: edge.last_seen.clone(),
            });
        entry.kinds.push(edge.kind);
        entry.calls += edge.calls;
        entry.errors += edge.errors;
        entry.first_seen = entry.first_seen.clone().min(edge.first_seen.clone());
        entry.last_seen = entry.last_seen.clone().max(edge.last_seen.clone());
    }
    let seen: BTreeSet<&str> = snapshot.nodes.iter().map(|n| n.id.as_str()).collect();
    let evidence = |node: &crate::snapshot::Node| {
        let (calls_in, calls_out) = traffic.get(node.id.as_str()).copied().unwrap_or_default();
        NodeEvidence {
            id: node.id.clone(),
            node_type: node.node_type,
            calls_in,
            calls_out,
        }
    };
    let compared_nodes = snapshot.nodes.iter().filter(|n| !outside(&n.id));
    let (mut undeclared_nodes, mut unowned_nodes) = (Vec::new(), Vec::new());
    for node in compared_nodes {
        match declared.nodes.get(&node.id) {
            None => undeclared_nodes.push(evidence(node)),
            Some(d) if declared.has_owners && d.owner.as_deref().is_none_or(str::is_empty) => {
                unowned_nodes.push(evidence(node))
            }
            Some(_) => {}
        }
    }
    let conforming_edges = observed
        .keys()
        .filter(|(from, to)| {
            declared
                .edges
                .contains(&((*from).to_owned(), (*to).to_owned()))
        })
        .count();
    let undeclared_edges = observed
        .into_iter()
        .filter(|((from, to), _)| {
            !declared
                .edges
                .contains(&((*from).to_owned(), (*to).to_owned()))
        })
        .map(|(_, edge)| edge)
        .collect();
    let observed_pairs: BTreeSet<(&str, &str)> = snapshot
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    let unobserved_edges = declared
        .edges
        .iter()
        .filter(|(from, to)| !outside(from) && !outside(to))
        .filter(|(from, to)| !observed_pairs.contains(&(from.as_str(), to.as_str())))
        .map(|(from, to)| UnobservedEdge {
            from: from.clone(),
            to: to.clone(),
            from_observed: seen.contains(from.as_str()),
            to_observed: seen.contains(to.as_str()),
        })
        .collect();
    let unobserved_nodes = declared
        .nodes
        .iter()
        .filter(|(name, node)| !node.outside && !seen.contains(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    Conformance {
        declared_sources: declared.sources.clone(),
        observed_window: snapshot.window.clone(),
        conforming_edges,
        undeclared_edges,
        unobserved_edges,
        undeclared_nodes,
        unowned_nodes,
        unobserved_nodes,
    }
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Each difference as (what kind, subject, evidence), in report order; `when` writes the
/// RFC 3339 times of the evidence.
pub fn rows(
    result: &Conformance,
    when: &dyn Fn(&str) -> String,
) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    for e in &result.undeclared_edges {
        let kinds: Vec<&str> = e.kinds.iter().map(|k| k.as_str()).collect();
        out.push((
            "undeclared edge",
            format!("{} -> {}", e.from, e.to),
            format!(
                "{}, {}, {}, first seen {}, last seen {}",
                kinds.join("+"),
                plural(e.calls, "call"),
                plural(e.errors, "error"),
                when(&e.first_seen),
                when(&e.last_seen)
            ),
        ));
    }
    for e in &result.unobserved_edges {
        out.push((
            "declared, not observed",
            format!("{} -> {}", e.from, e.to),
            e.ends().to_owned(),
        ));
    }
    for (what, nodes) in [
        ("not in the catalog", &result.undeclared_nodes),
        ("no owner", &result.unowned_nodes),
    ] {
        for n in nodes {
            out.push((
                what,
                n.id.clone(),
                format!(
                    "{}, {} in, {} out",
                    n.node_type.as_str(),
                    plural(n.calls_in, "call"),
                    plural(n.calls_out, "call")
                ),
            ));
        }
    }
    for name in &result.unobserved_nodes {
        out.push((
            "declared node, not observed",
            name.clone(),
            "no span in the window".to_owned(),
        ));
    }
    out
}

fn headline(result: &Conformance) -> String {
    format!(
        "Declared architecture: {}. Observed {} to {}.\nObserved dependencies: {} declared, {} undeclared. Declared dependencies not observed: {}.\n",
        result.declared_sources.join(", "),
        result.observed_window.start,
        result.observed_window.end,
        result.conforming_edges,
        result.undeclared_edges.len(),
        result.unobserved_edges.len()
    )
}

/// The comparison as plain text, one difference per line.
pub fn text(result: &Conformance) -> String {
    let mut out = headline(result);
    let rows = rows(result, &str::to_owned);
    if rows.is_empty() {
        out.push_str("The observed architecture conforms to the declared one.\n");
        return out;
    }
    let width = rows
        .iter()
        .map(|(what, _, _)| what.len())
        .max()
        .unwrap_or(0);
    out.push('\n');
    for (what, subject, evidence) in rows {
        out.push_str(&format!("{what:<width$}  {subject}  ({evidence})\n"));
    }
    out
}

/// The comparison as a Markdown table (for a pull-request comment).
pub fn markdown(result: &Conformance) -> String {
    use crate::render::markdown_cell;
    let mut out = markdown_cell(&headline(result)).trim_end().to_owned() + "\n\n";
    let rows = rows(result, &str::to_owned);
    if rows.is_empty() {
        out.push_str("The observed architecture conforms to the declared one.\n");
        return out;
    }
    out.push_str("| difference | subject | evidence |\n|---|---|---|\n");
    for (what, subject, evidence) in rows {
        out.push_str(&format!(
            "| {what} | {} | {} |\n",
            markdown_cell(&subject),
            markdown_cell(&evidence)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;

    fn declared(nodes: &[(&str, Option<&str>)], edges: &[(&str, &str)]) -> Declared {
        let mut declared = Declared {
            has_owners: true,
            ..Declared::default()
        };
        for (name, owner) in nodes {
            declared.add_node(
                name,
                DeclaredNode {
                    kind: "Component".to_owned(),
                    owner: owner.map(str::to_owned),
                    outside: false,
                },
            );
        }
        for (from, to) in edges {
            declared.add_edge(from, to);
        }
        declared
    }

    #[test]
    fn a_snapshot_conforms_to_itself() {
        let snapshot = graph(&[("a", "b"), ("b", "c"), ("a", "c")], &[], &[]);
        let result = conform(&snapshot, &Declared::from_snapshot(&snapshot, "self"));
        assert!(result.is_clean(), "{result:#?}");
        assert_eq!(result.conforming_edges, 3);
    }

    #[test]
    fn each_difference_is_reported_with_its_evidence() {
        let snapshot = graph(&[("a", "b"), ("b", "c"), ("x", "b")], &[], &[]);
        let catalog = declared(
            &[
                ("a", Some("team-a")),
                ("b", None),
                ("c", Some("team-c")),
                ("d", Some("t")),
            ],
            &[("a", "b"), ("b", "c"), ("a", "d")],
        );
        let result = conform(&snapshot, &catalog);
        assert_eq!(result.conforming_edges, 2);
        let undeclared: Vec<(&str, &str)> = result
            .undeclared_edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(undeclared, [("x", "b")]);
        // Every edge of `graph` has 10 calls.
        assert_eq!(result.undeclared_edges[0].calls, 10);
        assert_eq!(
            result.unobserved_edges,
            [UnobservedEdge {
                from: "a".into(),
                to: "d".into(),
                from_observed: true,
                to_observed: false
            }]
        );
        let ids = |nodes: &[NodeEvidence]| nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&result.undeclared_nodes), ["x"]);
        assert_eq!(ids(&result.unowned_nodes), ["b"]);
        assert_eq!(result.unobserved_nodes, ["d"]);
        let b = &result.unowned_nodes[0];
        assert_eq!((b.calls_in, b.calls_out), (20, 10));
    }

    #[test]
    fn owners_are_not_asked_of_catalogs_without_them() {
        let snapshot = graph(&[("a", "b")], &[], &[]);
        let mut catalog = declared(&[("a", None), ("b", None)], &[("a", "b")]);
        catalog.has_owners = false;
        assert!(conform(&snapshot, &catalog).is_clean());
    }

    #[test]
    fn callers_outside_the_system_are_not_compared() {
        // `user` is a client node.
        let snapshot = graph(&[("user", "a"), ("a", "b")], &[], &[]);
        let mut catalog = declared(&[("a", Some("t")), ("b", Some("t"))], &[("a", "b")]);
        catalog.add_node(
            "customer",
            DeclaredNode {
                kind: "person".into(),
                owner: None,
                outside: true,
            },
        );
        catalog.add_edge("customer", "a");
        assert!(conform(&snapshot, &catalog).is_clean());
    }
}
