//! The observed architecture in the formats architecture-as-code tools read: GraphML (yEd,
//! Gephi, networkx), a Structurizr DSL workspace, a C4-PlantUML container diagram and a
//! Backstage catalog. Names come from telemetry, so each format escapes them its own way.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use crate::derive::NodeType;
use crate::render::escape_markup;
use crate::snapshot::{Edge, Node, Snapshot};

fn p99(edge: &Edge) -> Option<f64> {
    edge.latency_ms.as_ref().map(|q| q.p99)
}

fn summary(edge: &Edge) -> String {
    format!("{} calls, {} errors", edge.calls, edge.errors)
}

/// An XML attribute value: marked-up characters escaped, and line breaks and tabs as
/// references, which a parser would otherwise turn into spaces.
fn xml_attribute(text: &str) -> String {
    escape_markup(text)
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

/// GraphML with the node type and entry flag, and each edge's kind, calls, errors, calls per
/// trace and p99 as attributes; node ids are the names.
pub fn graphml(snapshot: &Snapshot) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\">\n",
    );
    for (id, domain, kind) in [
        ("type", "node", "string"),
        ("entry_point", "node", "boolean"),
        ("kind", "edge", "string"),
        ("calls", "edge", "long"),
        ("errors", "edge", "long"),
        ("calls_per_trace", "edge", "double"),
        ("p99_ms", "edge", "double"),
    ] {
        let _ = writeln!(
            out,
            "  <key id=\"{id}\" for=\"{domain}\" attr.name=\"{id}\" attr.type=\"{kind}\"/>"
        );
    }
    let _ = writeln!(
        out,
        "  <graph id=\"archtrace\" edgedefault=\"directed\">\n    <desc>{} to {}</desc>",
        snapshot.window.start, snapshot.window.end
    );
    for node in &snapshot.nodes {
        let _ = writeln!(
            out,
            "    <node id=\"{}\"><data key=\"type\">{}</data><data key=\"entry_point\">{}</data></node>",
            xml_attribute(&node.id),
            node.node_type.as_str(),
            node.entry_point
        );
    }
    for (i, edge) in snapshot.edges.iter().enumerate() {
        let _ = write!(
            out,
            "    <edge id=\"e{i}\" source=\"{}\" target=\"{}\"><data key=\"kind\">{}</data>\
             <data key=\"calls\">{}</data><data key=\"errors\">{}</data>\
             <data key=\"calls_per_trace\">{}</data>",
            xml_attribute(&edge.from),
            xml_attribute(&edge.to),
            edge.kind.as_str(),
            edge.calls,
            edge.errors,
            edge.calls_per_trace
        );
        if let Some(p99) = p99(edge) {
            let _ = write!(out, "<data key=\"p99_ms\">{p99}</data>");
        }
        out.push_str("</edge>\n");
    }
    out.push_str("  </graph>\n</graphml>\n");
    out
}

/// A double-quoted string of the Structurizr DSL and PlantUML: no line breaks, quotes and
/// backslashes escaped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Identifiers `n0`, `n1`, ... by node, in the snapshot's order (names may hold anything).
fn identifiers(nodes: &[Node]) -> BTreeMap<&str, String> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.id.as_str(), format!("n{i}")))
        .collect()
}

fn tag(node_type: NodeType) -> &'static str {
    match node_type {
        NodeType::Service => "Service",
        NodeType::Database => "Database",
        NodeType::Messaging => "Queue",
        NodeType::External => "External",
        NodeType::Client => "Client",
    }
}

/// A Structurizr DSL workspace: a software system per node, tagged with its type, and a
/// relationship per edge with its calls and `sync`/`async` as technology.
pub fn structurizr(snapshot: &Snapshot) -> String {
    let ids = identifiers(&snapshot.nodes);
    let mut out = format!(
        "workspace \"archtrace\" {} {{\n    model {{\n",
        quoted(&format!(
            "Observed from traces, {} to {}",
            snapshot.window.start, snapshot.window.end
        ))
    );
    for node in &snapshot.nodes {
        let element = if node.node_type == NodeType::Client {
            "person"
        } else {
            "softwareSystem"
        };
        let _ = writeln!(
            out,
            "        {} = {element} {} \"\" \"{}\"",
            ids[node.id.as_str()],
            quoted(&node.id),
            tag(node.node_type)
        );
    }
    for edge in &snapshot.edges {
        let _ = writeln!(
            out,
            "        {} -> {} {} \"{}\"",
            ids[edge.from.as_str()],
            ids[edge.to.as_str()],
            quoted(&summary(edge)),
            edge.kind.as_str()
        );
    }
    out.push_str(
        "    }\n    views {\n        systemLandscape \"observed\" {\n            include *\n            \
         autoLayout lr\n        }\n    }\n}\n",
    );
    out
}

/// A C4-PlantUML container diagram: services as containers, databases and queues as their
/// kinds of container, external peers as external systems, callers as people.
pub fn c4_plantuml(snapshot: &Snapshot) -> String {
    let ids = identifiers(&snapshot.nodes);
    let mut out = format!(
        "@startuml\n!include <C4/C4_Container>\ntitle Observed architecture, {} to {}\n",
        snapshot.window.start, snapshot.window.end
    );
    let (inside, outside): (Vec<&Node>, Vec<&Node>) = snapshot
        .nodes
        .iter()
        .partition(|n| !matches!(n.node_type, NodeType::External | NodeType::Client));
    out.push_str("System_Boundary(observed, \"Observed system\") {\n");
    for node in inside {
        let macro_name = match node.node_type {
            NodeType::Database => "ContainerDb",
            NodeType::Messaging => "ContainerQueue",
            _ => "Container",
        };
        let _ = writeln!(
            out,
            "  {macro_name}({}, {}, \"{}\")",
            ids[node.id.as_str()],
            quoted(&node.id),
            node.node_type.as_str()
        );
    }
    out.push_str("}\n");
    for node in outside {
        let macro_name = if node.node_type == NodeType::Client {
            "Person"
        } else {
            "System_Ext"
        };
        let _ = writeln!(
            out,
            "{macro_name}({}, {})",
            ids[node.id.as_str()],
            quoted(&node.id)
        );
    }
    for edge in &snapshot.edges {
        let _ = writeln!(
            out,
            "Rel({}, {}, {}, \"{}\")",
            ids[edge.from.as_str()],
            ids[edge.to.as_str()],
            quoted(&summary(edge)),
            edge.kind.as_str()
        );
    }
    out.push_str("@enduml\n");
    out
}

/// A Backstage entity name: letters, digits and `-_.` between them, at most 63 characters.
fn entity_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out: String = out.trim_end_matches('-').chars().take(63).collect();
    out = out.trim_end_matches('-').to_owned();
    if out.is_empty() {
        out.push_str("unnamed");
    }
    out
}

/// A Backstage catalog (`catalog-info.yaml`, one document per entity): services as
/// Components, databases, queues and external peers as Resources. A service that other services
/// call provides an API entity of its own, which its callers list in `consumesApis`; every
/// other dependency is in `dependsOn`. Names that are not valid entity names are made valid; the
/// observed name is kept as the title and in the `archtrace.io/observed-name` annotation, which
/// `archtrace conform` reads back. Every entity gets `owner`.
pub fn backstage(snapshot: &Snapshot, owner: &str) -> String {
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let mut taken = HashSet::new();
    for node in &snapshot.nodes {
        let base = entity_name(&node.id);
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{}-{n}", base.chars().take(60).collect::<String>());
            n += 1;
        }
        names.insert(node.id.as_str(), name);
    }
    let by_name: BTreeMap<&str, &Node> =
        snapshot.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let is_service = |name: &str| {
        by_name
            .get(name)
            .is_some_and(|n| n.node_type == NodeType::Service)
    };
    // Valid: entity names are at most 63 characters, API names are kept to 59 + "-api".
    let api_name = |name: &str| {
        let base: String = names[name].chars().take(59).collect();
        format!("{}-api", base.trim_end_matches(['-', '_', '.']))
    };
    let provides_api: std::collections::BTreeSet<&str> = snapshot
        .edges
        .iter()
        .filter(|e| e.from != e.to && is_service(&e.from) && is_service(&e.to))
        .map(|e| e.to.as_str())
        .collect();
    let json = |text: &str| serde_json::to_string(text).expect("strings serialise");
    let owner = json(owner);
    let list = |doc: &mut String, key: &str, mut items: Vec<String>| {
        items.sort();
        items.dedup();
        if !items.is_empty() {
            let _ = writeln!(doc, "  {key}:");
            for item in items {
                let _ = writeln!(doc, "    - {item}");
            }
        }
    };
    let mut documents = Vec::new();
    for node in &snapshot.nodes {
        let (kind, spec_type) = match node.node_type {
            NodeType::Service => ("Component", "service"),
            NodeType::Database => ("Resource", "database"),
            NodeType::Messaging => ("Resource", "queue"),
            NodeType::External => ("Resource", "external-service"),
            NodeType::Client => continue,
        };
        let mut doc = format!(
            "apiVersion: backstage.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {}\n  title: {}\n  \
             annotations:\n    archtrace.io/observed-name: {}\nspec:\n  type: {spec_type}\n  owner: {owner}\n",
            names[node.id.as_str()],
            json(&node.id),
            json(&node.id)
        );
        if kind == "Component" {
            doc.push_str("  lifecycle: production\n");
        }
        let callees: Vec<&Node> = snapshot
            .edges
            .iter()
            .filter(|e| e.from == node.id && e.to != node.id)
            .filter_map(|e| by_name.get(e.to.as_str()).copied())
            .filter(|callee| callee.node_type != NodeType::Client)
            .collect();
        let through_api =
            |callee: &Node| kind == "Component" && callee.node_type == NodeType::Service;
        list(
            &mut doc,
            "dependsOn",
            callees
                .iter()
                .filter(|c| !through_api(c))
                .map(|c| {
                    let kind = if c.node_type == NodeType::Service {
                        "component"
                    } else {
                        "resource"
                    };
                    format!("{kind}:default/{}", names[c.id.as_str()])
                })
                .collect(),
        );
        list(
            &mut doc,
            "consumesApis",
            callees
                .iter()
                .filter(|c| through_api(c))
                .map(|c| format!("api:default/{}", api_name(&c.id)))
                .collect(),
        );
        if provides_api.contains(node.id.as_str()) {
            list(
                &mut doc,
                "providesApis",
                vec![format!("api:default/{}", api_name(&node.id))],
            );
        }
        documents.push(doc);
    }
    for service in provides_api {
        documents.push(format!(
            "apiVersion: backstage.io/v1alpha1\nkind: API\nmetadata:\n  name: {}\n  title: {}\n\
             spec:\n  type: observed\n  lifecycle: production\n  owner: {owner}\n  \
             definition: {}\n",
            api_name(service),
            json(&format!("{service} API")),
            json(&format!(
                "The calls archtrace observed into {service}; no definition recorded."
            ))
        ));
    }
    documents.join("---\n")
}
