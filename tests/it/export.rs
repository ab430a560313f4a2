//! `archtrace export`: the observed architecture of the recorded hotel-reservation traces in
//! each format, read back with a real parser where one is at hand (GraphML with roxmltree) and
//! checked against the snapshot; hostile names stay inside their strings.

use std::collections::BTreeMap;
use std::process::Command;

use archtrace_analyzer::export;
use archtrace_analyzer::snapshot::Snapshot;

use crate::support::{binary, json_files, snapshot_from_files, succeeded};

fn exported(format: &str) -> String {
    let output = succeeded(
        Command::new(binary())
            .args(["export", "--format", format, "--traces"])
            .args(json_files("jaeger-hotel-reservation")),
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Node ids and types, and edges with their calls, as a GraphML document holds them.
fn read_graphml(text: &str) -> (BTreeMap<String, String>, BTreeMap<(String, String), u64>) {
    let document = roxmltree::Document::parse(text).expect("well-formed GraphML");
    let data = |element: roxmltree::Node, key: &str| {
        element
            .children()
            .find(|c| c.has_tag_name("data") && c.attribute("key") == Some(key))
            .and_then(|c| c.text())
            .unwrap_or_default()
            .to_owned()
    };
    let nodes = document
        .descendants()
        .filter(|n| n.has_tag_name("node"))
        .map(|n| (n.attribute("id").unwrap().to_owned(), data(n, "type")))
        .collect();
    let edges = document
        .descendants()
        .filter(|n| n.has_tag_name("edge"))
        .map(|e| {
            let key = (
                e.attribute("source").unwrap().to_owned(),
                e.attribute("target").unwrap().to_owned(),
            );
            (key, data(e, "calls").parse().unwrap())
        })
        .collect();
    (nodes, edges)
}

#[test]
fn every_export_holds_the_observed_nodes_and_edges() {
    let (snapshot, _) = snapshot_from_files(&json_files("jaeger-hotel-reservation"));
    assert!(snapshot.edges.len() >= 5);

    let (nodes, edges) = read_graphml(&exported("graphml"));
    let expected_nodes: BTreeMap<String, String> = snapshot
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.node_type.as_str().to_owned()))
        .collect();
    assert_eq!(nodes, expected_nodes);
    let mut expected_edges: BTreeMap<(String, String), u64> = BTreeMap::new();
    for edge in &snapshot.edges {
        *expected_edges
            .entry((edge.from.clone(), edge.to.clone()))
            .or_default() += edge.calls;
    }
    assert_eq!(edges, expected_edges);

    let structurizr = exported("structurizr");
    assert!(structurizr.starts_with("workspace "));
    assert_eq!(
        structurizr.matches(" -> ").count(),
        snapshot.edges.len(),
        "{structurizr}"
    );
    let c4 = exported("c4-plantuml");
    assert!(c4.starts_with("@startuml") && c4.trim_end().ends_with("@enduml"));
    assert_eq!(c4.matches("\nRel(").count(), snapshot.edges.len());
    for node in &snapshot.nodes {
        assert!(
            structurizr.contains(&format!("\"{}\"", node.id)),
            "{}",
            node.id
        );
        assert!(c4.contains(&format!("\"{}\"", node.id)), "{}", node.id);
    }

    let catalog = exported("backstage");
    let entities: Vec<&str> = catalog.split("---\n").collect();
    let kind_of = |id: &str| {
        snapshot
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.node_type.as_str())
    };
    let nodes = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type.as_str() != "client")
        .count();
    // One API entity per service that another service calls.
    let apis: std::collections::BTreeSet<&str> = snapshot
        .edges
        .iter()
        .filter(|e| e.from != e.to && kind_of(&e.from) == Some("service"))
        .filter(|e| kind_of(&e.to) == Some("service"))
        .map(|e| e.to.as_str())
        .collect();
    assert!(!apis.is_empty());
    assert_eq!(entities.len(), nodes + apis.len());
    assert_eq!(
        entities
            .iter()
            .filter(|e| e.contains("\nkind: API\n"))
            .count(),
        apis.len()
    );
    // frontend calls search synchronously in the hotel app: it consumes search's API.
    let frontend = entities
        .iter()
        .find(|e| e.contains("\n  name: frontend\n"))
        .expect("a frontend component");
    assert!(frontend.contains("kind: Component"), "{frontend}");
    let consumed = frontend
        .split("  consumesApis:\n")
        .nth(1)
        .expect("frontend consumes APIs");
    assert!(
        consumed.contains("    - api:default/search-api\n"),
        "{frontend}"
    );
    let search = entities
        .iter()
        .find(|e| e.contains("\n  name: search\n"))
        .expect("a search component");
    assert!(
        search.contains("  providesApis:\n    - api:default/search-api\n"),
        "{search}"
    );
}

#[test]
fn hostile_names_stay_inside_their_strings_in_every_export() {
    let (mut snapshot, _) = snapshot_from_files(&json_files("jaeger-hotel-reservation"));
    let hostile = "ev\"il<svg/onload=x>&\n\\ -> 'x' @enduml";
    let victim = snapshot.edges[0].from.clone();
    for node in &mut snapshot.nodes {
        if node.id == victim {
            node.id = hostile.to_owned();
        }
    }
    for edge in &mut snapshot.edges {
        for end in [&mut edge.from, &mut edge.to] {
            if *end == victim {
                *end = hostile.to_owned();
            }
        }
    }
    let renamed: Snapshot = snapshot;

    let (nodes, _) = read_graphml(&export::graphml(&renamed));
    assert!(nodes.contains_key(hostile), "{nodes:?}");

    // One statement per line: the name's line break and quotes do not open new ones.
    let structurizr = export::structurizr(&renamed);
    assert_eq!(structurizr.matches(" -> ").count(), renamed.edges.len() + 1);
    assert!(structurizr.contains("\"ev\\\"il<svg/onload=x>& \\\\ -> 'x' @enduml\""));
    let c4 = export::c4_plantuml(&renamed);
    assert_eq!(c4.matches("@enduml").count(), 2, "one real end, one quoted");
    assert!(c4.trim_end().ends_with("\n@enduml"));

    let catalog = export::backstage(&renamed, "unknown");
    for line in catalog.lines().filter(|l| l.starts_with("  name: ")) {
        let name = &line["  name: ".len()..];
        assert!(
            name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{name}"
        );
    }
    assert!(catalog
        .contains("archtrace.io/observed-name: \"ev\\\"il<svg/onload=x>&\\n\\\\ -> 'x' @enduml\""));
}
