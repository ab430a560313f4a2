//! Candidate domains: services clustered by how much they call each other (Louvain modularity
//! optimisation on the call graph weighted by calls, made deterministic by visiting nodes and
//! breaking ties in name order), and the coupling between the domains.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::derive::NodeType;
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Domain {
    /// Named after its busiest member.
    pub name: String,
    pub services: Vec<String>,
    /// Calls between its own members.
    pub internal_calls: u64,
}

/// Calls from one domain to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CrossDomain {
    pub from: String,
    pub to: String,
    pub edges: usize,
    pub calls: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Domains {
    pub domains: Vec<Domain>,
    pub cross_domain: Vec<CrossDomain>,
    /// Newman's modularity of the partition (0: no structure; towards 1: clear domains).
    pub modularity: f64,
}

/// An undirected weighted graph over `0..n`, with self-loops holding collapsed weight.
#[derive(Clone)]
struct Graph {
    adjacent: Vec<BTreeMap<usize, f64>>,
}

impl Graph {
    fn degree(&self, node: usize) -> f64 {
        self.adjacent[node]
            .iter()
            .map(|(&other, &w)| if other == node { 2.0 * w } else { w })
            .sum()
    }
}

/// One Louvain level: moves nodes to the neighbouring community with the best modularity gain
/// until nothing moves. Returns the community of each node, numbered from 0 in first-seen order.
fn one_level(graph: &Graph, total: f64) -> Vec<usize> {
    let n = graph.adjacent.len();
    let degree: Vec<f64> = (0..n).map(|i| graph.degree(i)).collect();
    let mut community: Vec<usize> = (0..n).collect();
    let mut community_degree = degree.clone();
    loop {
        let mut moved = false;
        for node in 0..n {
            let own = community[node];
            let mut links: BTreeMap<usize, f64> = BTreeMap::new();
            for (&other, &w) in &graph.adjacent[node] {
                if other != node {
                    *links.entry(community[other]).or_default() += w;
                }
            }
            community_degree[own] -= degree[node];
            let gain = |c: usize, k_in: f64| k_in - community_degree[c] * degree[node] / total;
            let mut best = (own, gain(own, links.get(&own).copied().unwrap_or(0.0)));
            for (&c, &k_in) in &links {
                let g = gain(c, k_in);
                if g > best.1 + 1e-12 {
                    best = (c, g);
                }
            }
            community_degree[best.0] += degree[node];
            if best.0 != own {
                community[node] = best.0;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    let mut renumber = BTreeMap::new();
    community
        .iter()
        .map(|c| {
            let next = renumber.len();
            *renumber.entry(*c).or_insert(next)
        })
        .collect()
}

fn modularity(graph: &Graph, community: &[usize], total: f64) -> f64 {
    let mut internal: BTreeMap<usize, f64> = BTreeMap::new();
    let mut degrees: BTreeMap<usize, f64> = BTreeMap::new();
    for node in 0..graph.adjacent.len() {
        *degrees.entry(community[node]).or_default() += graph.degree(node);
        for (&other, &w) in &graph.adjacent[node] {
            if community[other] == community[node] {
                // Each undirected edge is seen from both ends; a self-loop once, counted twice.
                *internal.entry(community[node]).or_default() +=
                    if other == node { 2.0 * w } else { w };
            }
        }
    }
    degrees
        .iter()
        .map(|(c, d)| internal.get(c).copied().unwrap_or(0.0) / total - (d / total).powi(2))
        .sum()
}

/// The candidate domains of the services of `snapshot`.
pub fn domains(snapshot: &Snapshot) -> Domains {
    let services: Vec<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == NodeType::Service)
        .map(|n| n.id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<&str, usize> = services.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut graph = Graph {
        adjacent: vec![BTreeMap::new(); services.len()],
    };
    let mut traffic = vec![0u64; services.len()];
    for edge in &snapshot.edges {
        let (Some(&a), Some(&b)) = (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
        else {
            continue;
        };
        traffic[a] += edge.calls;
        traffic[b] += edge.calls;
        if a != b {
            *graph.adjacent[a].entry(b).or_default() += edge.calls as f64;
            *graph.adjacent[b].entry(a).or_default() += edge.calls as f64;
        }
    }
    // 2m: the sum of all degrees.
    let total: f64 = (0..services.len()).map(|i| graph.degree(i)).sum();
    let mut member_of: Vec<usize> = (0..services.len()).collect();
    if total > 0.0 {
        let mut level = graph.clone();
        loop {
            let community = one_level(&level, total);
            let count = community.iter().max().map_or(0, |m| m + 1);
            for c in member_of.iter_mut() {
                *c = community[*c];
            }
            if count == level.adjacent.len() {
                break;
            }
            // Collapse each community into one node and go on at the next level.
            let mut next = Graph {
                adjacent: vec![BTreeMap::new(); count],
            };
            for (node, links) in level.adjacent.iter().enumerate() {
                for (&other, &w) in links {
                    // Each edge is listed from both ends: inside a community it becomes half of
                    // a self-loop from each; a self-loop is listed once.
                    let inside = node != other && community[node] == community[other];
                    *next.adjacent[community[node]]
                        .entry(community[other])
                        .or_default() += if inside { w / 2.0 } else { w };
                }
            }
            level = next;
        }
    }
    let modularity = if total > 0.0 {
        modularity(&graph, &member_of, total)
    } else {
        0.0
    };
    // Name each community after its busiest member (ties by name).
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (service, c) in member_of.iter().enumerate() {
        members.entry(*c).or_default().push(service);
    }
    let name_of: BTreeMap<usize, String> = members
        .iter()
        .map(|(c, m)| {
            let busiest = m
                .iter()
                .max_by(|a, b| traffic[**a].cmp(&traffic[**b]).then(b.cmp(a)))
                .expect("a community has members");
            (*c, services[*busiest].to_owned())
        })
        .collect();
    let mut internal: BTreeMap<usize, u64> = BTreeMap::new();
    let mut cross: BTreeMap<(usize, usize), (usize, u64)> = BTreeMap::new();
    for edge in &snapshot.edges {
        let (Some(&a), Some(&b)) = (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
        else {
            continue;
        };
        if a == b {
            continue;
        }
        let (ca, cb) = (member_of[a], member_of[b]);
        if ca == cb {
            *internal.entry(ca).or_default() += edge.calls;
        } else {
            let entry = cross.entry((ca, cb)).or_default();
            entry.0 += 1;
            entry.1 += edge.calls;
        }
    }
    let mut domains: Vec<Domain> = members
        .iter()
        .map(|(c, m)| Domain {
            name: name_of[c].clone(),
            services: m.iter().map(|s| services[*s].to_owned()).collect(),
            internal_calls: internal.get(c).copied().unwrap_or(0),
        })
        .collect();
    domains.sort_by(|a, b| {
        b.services
            .len()
            .cmp(&a.services.len())
            .then(a.name.cmp(&b.name))
    });
    let mut cross_domain: Vec<CrossDomain> = cross
        .into_iter()
        .map(|((a, b), (edges, calls))| CrossDomain {
            from: name_of[&a].clone(),
            to: name_of[&b].clone(),
            edges,
            calls,
        })
        .collect();
    cross_domain.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then((&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    Domains {
        domains,
        cross_domain,
        modularity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;

    /// `groups` cliques of `size` services calling each other 100 times, chained by single calls.
    fn planted(groups: usize, size: usize) -> (Snapshot, Vec<BTreeSet<String>>) {
        let name = |g: usize, i: usize| format!("d{g}-s{i}");
        let mut edges = Vec::new();
        let mut truth = Vec::new();
        for g in 0..groups {
            truth.push((0..size).map(|i| name(g, i)).collect::<BTreeSet<_>>());
            for i in 0..size {
                for j in 0..size {
                    if i < j {
                        edges.push((name(g, i), name(g, j)));
                    }
                }
            }
            edges.push((name(g, 0), name((g + 1) % groups, 1)));
        }
        let pairs: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut snapshot = graph(&pairs, &[], &[]);
        for edge in &mut snapshot.edges {
            let (a, b) = (&edge.from[..2], &edge.to[..2]);
            edge.calls = if a == b { 100 } else { 1 };
        }
        (snapshot, truth)
    }

    #[test]
    fn planted_domains_are_found_exactly_and_deterministically() {
        let (snapshot, truth) = planted(4, 5);
        let found = domains(&snapshot);
        let mut groups: Vec<BTreeSet<String>> = found
            .domains
            .iter()
            .map(|d| d.services.iter().cloned().collect())
            .collect();
        groups.sort();
        assert_eq!(groups, truth);
        assert!(found.modularity > 0.7, "{}", found.modularity);
        // One single call from each domain to the next.
        assert_eq!(found.cross_domain.len(), 4);
        assert!(found
            .cross_domain
            .iter()
            .all(|c| c.calls == 1 && c.edges == 1));
        // The same answer whatever the order of the input.
        let mut reversed = snapshot.clone();
        reversed.edges.reverse();
        reversed.nodes.reverse();
        assert_eq!(domains(&reversed), found);
    }

    #[test]
    fn a_service_that_mostly_talks_to_another_domain_joins_it() {
        let (mut snapshot, _) = planted(2, 4);
        // d0-s3 now talks to d1 far more than to its own clique.
        for edge in &mut snapshot.edges {
            if edge.from == "d0-s3" || edge.to == "d0-s3" {
                edge.calls = 1;
            }
        }
        let extra = graph(&[("d0-s3", "d1-s0"), ("d0-s3", "d1-s2")], &[], &[]);
        for mut edge in extra.edges {
            edge.calls = 500;
            snapshot.edges.push(edge);
        }
        let found = domains(&snapshot);
        let d1 = found
            .domains
            .iter()
            .find(|d| d.services.contains(&"d1-s0".to_owned()))
            .unwrap();
        assert!(d1.services.contains(&"d0-s3".to_owned()), "{found:#?}");
    }

    #[test]
    fn no_traffic_means_one_domain_per_service() {
        let (mut snapshot, _) = planted(1, 3);
        snapshot.edges.clear();
        let found = domains(&snapshot);
        assert_eq!(found.domains.len(), 3);
        assert_eq!(found.modularity, 0.0);
    }
}
