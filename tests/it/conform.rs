//! Declared vs observed with the real binary on the recorded hotel-reservation traces: the
//! Backstage catalog, Structurizr workspace and snapshot that archtrace exports conform to the
//! architecture they came from; an edited catalog gives exactly its edits as differences, in
//! `conform` and in `check --declared`; GraphML reads back with networkx.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use archtrace_analyzer::snapshot::Snapshot;
use serde_json::Value;

use crate::support::{binary, json_files, snapshot_from_files, succeeded};

fn traces() -> Vec<PathBuf> {
    json_files("jaeger-hotel-reservation")
}

fn export(format: &str, output: &Path, extra: &[&str]) {
    succeeded(
        Command::new(binary())
            .args(["export", "--format", format, "-o"])
            .arg(output)
            .args(extra)
            .arg("--traces")
            .args(traces()),
    );
}

fn conform(declared: &Path) -> Value {
    let output = succeeded(
        Command::new(binary())
            .args(["conform", "--format", "json", "--declared"])
            .arg(declared)
            .arg("--traces")
            .args(traces()),
    );
    serde_json::from_slice(&output.stdout).expect("conform --format json writes JSON")
}

/// The snapshot's dependencies between nodes that are not outside callers, with their calls.
fn dependencies(snapshot: &Snapshot) -> BTreeMap<(String, String), u64> {
    let clients: BTreeSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type.as_str() == "client")
        .map(|n| n.id.as_str())
        .collect();
    let mut out = BTreeMap::new();
    for e in &snapshot.edges {
        if e.from != e.to && !clients.contains(e.from.as_str()) && !clients.contains(e.to.as_str())
        {
            *out.entry((e.from.clone(), e.to.clone())).or_default() += e.calls;
        }
    }
    out
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item[key].as_str().expect("a name").to_owned())
        .collect()
}

fn pairs(list: &Value) -> Vec<(String, String)> {
    names(list, "from")
        .into_iter()
        .zip(names(list, "to"))
        .collect()
}

#[test]
fn exported_catalogs_conform_to_the_architecture_they_came_from() {
    let (snapshot, _) = snapshot_from_files(&traces());
    let expected = dependencies(&snapshot);
    assert!(expected.len() >= 5, "{expected:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    let catalog = dir.path().join("catalog/catalog-info.yaml");
    export("backstage", &catalog, &["--owner", "team-hotel"]);
    let workspace = dir.path().join("workspace.dsl");
    export("structurizr", &workspace, &[]);
    let approved = dir.path().join("approved.json");
    succeeded(
        Command::new(binary())
            .args(["snapshot", "-o"])
            .arg(&approved)
            .arg("--traces")
            .args(traces()),
    );
    for declared in [dir.path().join("catalog"), workspace, approved] {
        let result = conform(&declared);
        for difference in [
            "undeclared_edges",
            "unobserved_edges",
            "undeclared_nodes",
            "unowned_nodes",
            "unobserved_nodes",
        ] {
            assert_eq!(
                result[difference],
                Value::Array(Vec::new()),
                "{} {difference}",
                declared.display()
            );
        }
        assert_eq!(
            result["conforming_edges"].as_u64(),
            Some(expected.len() as u64),
            "{}",
            declared.display()
        );
    }
}

#[test]
fn an_edited_catalog_gives_exactly_its_edits_in_conform_and_check() {
    let (snapshot, _) = snapshot_from_files(&traces());
    let calls = dependencies(&snapshot);
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog-info.yaml");
    export("backstage", &catalog, &["--owner", "team-hotel"]);
    let text = std::fs::read_to_string(&catalog).unwrap();
    let mut documents: Vec<String> = text.split("---\n").map(str::to_owned).collect();
    let find = |documents: &[String], kind: &str, name: &str| {
        documents
            .iter()
            .position(|d| {
                d.contains(&format!("kind: {kind}\n")) && d.contains(&format!("\n  name: {name}\n"))
            })
            .unwrap_or_else(|| panic!("the {kind} {name} in {text}"))
    };
    // frontend no longer declares that it calls search.
    let frontend = find(&documents, "Component", "frontend");
    assert!(documents[frontend].contains("    - api:default/search-api\n"));
    documents[frontend] = documents[frontend].replace("    - api:default/search-api\n", "");
    // profile loses its owner.
    let profile = find(&documents, "Component", "profile");
    documents[profile] = documents[profile].replace("  owner: \"team-hotel\"\n", "");
    // rate leaves the catalog; search still consumes rate's API, which nothing provides now.
    let rate = find(&documents, "Component", "rate");
    documents.remove(rate);
    // billing is declared, calling frontend, and was never deployed.
    documents.push(
        "kind: Component\nmetadata:\n  name: billing\nspec:\n  type: service\n  owner: team-pay\n  dependsOn: [component:default/frontend]\n"
            .to_owned(),
    );
    std::fs::write(&catalog, documents.join("---\n")).unwrap();

    let result = conform(&catalog);
    assert_eq!(
        pairs(&result["undeclared_edges"]),
        [
            ("frontend".to_owned(), "search".to_owned()),
            ("search".to_owned(), "rate".to_owned())
        ]
    );
    let undeclared_calls: Vec<u64> = result["undeclared_edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["calls"].as_u64().unwrap())
        .collect();
    assert_eq!(
        undeclared_calls,
        [
            calls[&("frontend".to_owned(), "search".to_owned())],
            calls[&("search".to_owned(), "rate".to_owned())]
        ]
    );
    assert_eq!(
        pairs(&result["unobserved_edges"]),
        [
            ("billing".to_owned(), "frontend".to_owned()),
            ("search".to_owned(), "rate-api".to_owned())
        ]
    );
    assert_eq!(result["unobserved_edges"][0]["from_observed"], false);
    assert_eq!(result["unobserved_edges"][0]["to_observed"], true);
    assert_eq!(names(&result["undeclared_nodes"], "id"), ["rate"]);
    assert_eq!(names(&result["unowned_nodes"], "id"), ["profile"]);
    assert_eq!(
        result["unobserved_nodes"],
        serde_json::json!(["billing"]),
        "{result:#}"
    );
    assert_eq!(
        result["conforming_edges"].as_u64(),
        Some(calls.len() as u64 - 2)
    );

    // check --declared: the undeclared edges fail the build by default, the rest warns.
    let check = |rules: Option<&Path>| {
        let mut command = Command::new(binary());
        command
            .args(["check", "--format", "json", "--declared"])
            .arg(&catalog);
        if let Some(rules) = rules {
            command.arg("--rules").arg(rules);
        }
        let output = command
            .arg("--traces")
            .args(traces())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
        (output.status.code(), report)
    };
    let (code, report) = check(None);
    assert_eq!(code, Some(1), "{report:#}");
    let new_items: Vec<(String, String, String)> = report["report"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "new")
        .map(|i| {
            (
                i["rule"].as_str().unwrap().to_owned(),
                i["severity"].as_str().unwrap().to_owned(),
                i["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let item = |rule: &str, severity: &str, subject: &str| {
        (rule.to_owned(), severity.to_owned(), subject.to_owned())
    };
    assert_eq!(
        new_items,
        [
            item("undeclared-edges", "error", "frontend -> search"),
            item("undeclared-edges", "error", "search -> rate"),
            item("undeclared-nodes", "warning", "rate"),
            item("unobserved-edges", "warning", "billing -> frontend"),
            item("unobserved-edges", "warning", "search -> rate-api"),
            item("unowned-nodes", "warning", "profile"),
        ]
    );
    let rules = dir.path().join("relaxed.toml");
    std::fs::write(&rules, "[check]\nundeclared_edges = \"warn\"\n").unwrap();
    let (code, _) = check(Some(&rules));
    assert_eq!(code, Some(0));
}

#[test]
fn graphml_reads_back_with_networkx() {
    let (snapshot, _) = snapshot_from_files(&traces());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("architecture.graphml");
    export("graphml", &file, &[]);
    let script = r#"
import json, sys
import networkx as nx
g = nx.read_graphml(sys.argv[1], force_multigraph=True)
calls = {}
for u, v, data in g.edges(data=True):
    calls[u + " -> " + v] = calls.get(u + " -> " + v, 0) + int(data["calls"])
print(json.dumps({"nodes": {n: d["type"] for n, d in g.nodes(data=True)}, "calls": calls, "directed": g.is_directed()}))
"#;
    let output = succeeded(Command::new("python3").args(["-c", script]).arg(&file));
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(read["directed"], true);
    let nodes: BTreeMap<String, String> = serde_json::from_value(read["nodes"].clone()).unwrap();
    let expected_nodes: BTreeMap<String, String> = snapshot
        .nodes
        .iter()
        .map(|n| (n.id.clone(), n.node_type.as_str().to_owned()))
        .collect();
    assert_eq!(nodes, expected_nodes);
    let calls: BTreeMap<String, u64> = serde_json::from_value(read["calls"].clone()).unwrap();
    let mut expected_calls = BTreeMap::new();
    for e in &snapshot.edges {
        *expected_calls
            .entry(format!("{} -> {}", e.from, e.to))
            .or_insert(0) += e.calls;
    }
    assert_eq!(calls, expected_calls);
}
