//! Candidate domains: services clustered by how much they call each other (Louvain modularity
//! optimisation on the call graph weighted by calls, made deterministic by visiting nodes and
//! breaking ties in name order), and the coupling between the domains.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::derive::NodeType;
use crate::rules::DomainTable;
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

/// A service whose calls (in and out) go mostly to another domain than its own.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Misplaced {
    pub service: String,
    pub domain: String,
    /// The domain it talks to most.
    pub mostly_with: String,
    /// Its calls with that domain, and with its own (itself left out).
    pub calls_with_other: u64,
    pub calls_with_own: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Domains {
    pub domains: Vec<Domain>,
    pub cross_domain: Vec<CrossDomain>,
    /// Newman's modularity of the partition (0: no structure; towards 1: clear domains).
    pub modularity: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub misplaced: Vec<Misplaced>,
    /// With declared domains: services none of them selects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undeclared: Vec<String>,
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

/// The services of `snapshot`, their call graph (undirected, weighted by calls) and each one's
/// calls in and out.
struct ServiceGraph<'s> {
    services: Vec<&'s str>,
    index: BTreeMap<&'s str, usize>,
    graph: Graph,
    traffic: Vec<u64>,
    /// 2m: the sum of all degrees.
    total: f64,
}

fn service_graph(snapshot: &Snapshot) -> ServiceGraph<'_> {
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
    let total: f64 = (0..services.len()).map(|i| graph.degree(i)).sum();
    ServiceGraph {
        services,
        index,
        graph,
        traffic,
        total,
    }
}

/// The candidate domains of the services of `snapshot`.
pub fn domains(snapshot: &Snapshot) -> Domains {
    let g = service_graph(snapshot);
    let (graph, total) = (&g.graph, g.total);
    let mut member_of: Vec<usize> = (0..g.services.len()).collect();
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
    // Name each community after its busiest member (ties by name).
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (service, c) in member_of.iter().enumerate() {
        members.entry(*c).or_default().push(service);
    }
    let names: BTreeMap<usize, String> = members
        .iter()
        .map(|(c, m)| {
            let busiest = m
                .iter()
                .max_by(|a, b| g.traffic[**a].cmp(&g.traffic[**b]).then(b.cmp(a)))
                .expect("a community has members");
            (*c, g.services[*busiest].to_owned())
        })
        .collect();
    describe(snapshot, &g, &member_of, &names, Vec::new())
}

/// The domains declared in the rules (`[domains]`: name to selectors), checked on the traffic
/// instead of guessed. A service several domains select belongs to the first by name.
pub fn declared(snapshot: &Snapshot, declared: &DomainTable) -> Domains {
    let g = service_graph(snapshot);
    let names: BTreeMap<usize, String> = declared.keys().cloned().enumerate().collect();
    let mut member_of = Vec::new();
    let mut undeclared = Vec::new();
    let mut assigned = Vec::new();
    for (i, service) in g.services.iter().enumerate() {
        let domain = declared.values().position(|selectors| {
            selectors
                .iter()
                .any(|s| s.matches(service, NodeType::Service, declared))
        });
        match domain {
            Some(d) => {
                member_of.push(d);
                assigned.push(i);
            }
            None => {
                // Each undeclared service stands alone, apart from every domain.
                member_of.push(names.len() + undeclared.len());
                undeclared.push(service.to_string());
            }
        }
    }
    let mut names = names;
    for (i, service) in undeclared.iter().enumerate() {
        names.insert(declared.len() + i, service.clone());
    }
    let mut found = describe(snapshot, &g, &member_of, &names, undeclared);
    // Domains that select nothing are still shown: the declaration says they exist.
    for name in declared.keys() {
        if !found.domains.iter().any(|d| &d.name == name) {
            found.domains.push(Domain {
                name: name.clone(),
                services: Vec::new(),
                internal_calls: 0,
            });
        }
    }
    found
}

/// Domains, their coupling and the misplaced services of the partition `member_of` (named by
/// `names`); `undeclared` services are listed apart.
fn describe(
    snapshot: &Snapshot,
    g: &ServiceGraph,
    member_of: &[usize],
    names: &BTreeMap<usize, String>,
    undeclared: Vec<String>,
) -> Domains {
    let (services, index, total) = (&g.services, &g.index, g.total);
    let modularity = if total > 0.0 {
        modularity(&g.graph, member_of, total)
    } else {
        0.0
    };
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (service, c) in member_of.iter().enumerate() {
        members.entry(*c).or_default().push(service);
    }
    let name_of = names;
    let standalone: BTreeSet<&str> = undeclared.iter().map(String::as_str).collect();
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
        .filter(|(c, _)| !standalone.contains(name_of[c].as_str()))
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
    let is_domain = |c: &usize| !standalone.contains(name_of[c].as_str());
    let mut cross_domain: Vec<CrossDomain> = cross
        .into_iter()
        .filter(|((a, b), _)| is_domain(a) && is_domain(b))
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
    // Calls of each service with each domain, both directions, itself left out.
    let mut with: Vec<BTreeMap<usize, u64>> = vec![BTreeMap::new(); services.len()];
    for (a, links) in g.graph.adjacent.iter().enumerate() {
        for (&b, &calls) in links {
            if a != b && is_domain(&member_of[b]) {
                *with[a].entry(member_of[b]).or_default() += calls as u64;
            }
        }
    }
    let mut misplaced: Vec<Misplaced> = with
        .iter()
        .enumerate()
        .filter(|(a, _)| is_domain(&member_of[*a]))
        .filter_map(|(a, calls)| {
            let own = calls.get(&member_of[a]).copied().unwrap_or(0);
            let (&other, &most) = calls
                .iter()
                .filter(|(d, _)| **d != member_of[a])
                .max_by(|x, y| x.1.cmp(y.1).then(name_of[y.0].cmp(&name_of[x.0])))?;
            (most > own).then(|| Misplaced {
                service: services[a].to_owned(),
                domain: name_of[&member_of[a]].clone(),
                mostly_with: name_of[&other].clone(),
                calls_with_other: most,
                calls_with_own: own,
            })
        })
        .collect();
    misplaced.sort_by(|a, b| a.service.cmp(&b.service));
    Domains {
        domains,
        cross_domain,
        modularity,
        misplaced,
        undeclared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::graph;
    use crate::rules::Selector;

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
    fn declared_domains_are_checked_for_coupling_misplaced_and_undeclared_services() {
        // Two cliques of 4 (100 calls per pair), d0-s0 → d1-s1 and d1-s0 → d0-s1 single calls;
        // d0-s3 also calls d1-s0 and d1-s2 500 times each.
        let (mut snapshot, _) = planted(2, 4);
        let extra = graph(&[("d0-s3", "d1-s0"), ("d0-s3", "d1-s2")], &[], &[]);
        for mut edge in extra.edges {
            edge.calls = 500;
            snapshot.edges.push(edge);
        }
        let selectors = |patterns: &[&str]| -> Vec<Selector> {
            patterns
                .iter()
                .map(|p| Selector::parse(p).unwrap())
                .collect()
        };
        let declared_domains: DomainTable = [
            ("orders".to_owned(), selectors(&["d0-*"])),
            (
                "payments".to_owned(),
                selectors(&["d1-s0", "d1-s1", "d1-s2"]),
            ),
            ("unused".to_owned(), selectors(&["nothing-*"])),
        ]
        .into();
        let found = declared(&snapshot, &declared_domains);
        let members: Vec<(&str, usize)> = found
            .domains
            .iter()
            .map(|d| (d.name.as_str(), d.services.len()))
            .collect();
        assert_eq!(members, [("orders", 4), ("payments", 3), ("unused", 0)]);
        assert_eq!(found.undeclared, ["d1-s3"]);
        // d0-s3: 3 × 100 with its own clique, 2 × 500 with payments. And the other way: d1-s0
        // and d1-s2 each have 500 calls with d0-s3 (d1-s0 one more, the ring's d1-s0 → d0-s1)
        // but 2 × 100 with their declared domain (d1-s3 is in none).
        let misplaced =
            |service: &str, domain: &str, other: &str, with_other, with_own| Misplaced {
                service: service.into(),
                domain: domain.into(),
                mostly_with: other.into(),
                calls_with_other: with_other,
                calls_with_own: with_own,
            };
        assert_eq!(
            found.misplaced,
            [
                misplaced("d0-s3", "orders", "payments", 1_000, 300),
                misplaced("d1-s0", "payments", "orders", 501, 200),
                misplaced("d1-s2", "payments", "orders", 500, 200),
            ]
        );
        // orders → payments: d0-s0 → d1-s1 (1) and d0-s3's two edges (500 each); payments →
        // orders: the ring's d1-s0 → d0-s1 (1).
        let cross: Vec<(&str, &str, usize, u64)> = found
            .cross_domain
            .iter()
            .map(|c| (c.from.as_str(), c.to.as_str(), c.edges, c.calls))
            .collect();
        assert_eq!(
            cross,
            [
                ("orders", "payments", 3, 1_001),
                ("payments", "orders", 1, 1)
            ]
        );
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
