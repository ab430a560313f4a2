//! A Backstage catalog (`catalog-info.yaml` files, one or more entities per file) as a declared
//! architecture: Components and Resources are nodes; `dependsOn` and `consumesApis` (resolved
//! to the Components that provide the API) are dependencies.

use std::collections::BTreeMap;

use archtrace_analyzer::declared::{Declared, DeclaredNode};
use serde::Deserialize;

use super::DeclaredError;

/// The annotation holding the name a node has in telemetry, when it is not a valid entity name
/// (`archtrace export --format backstage` writes it).
pub const OBSERVED_NAME: &str = "archtrace.io/observed-name";

#[derive(Deserialize)]
struct Entity {
    kind: Option<String>,
    metadata: Option<Metadata>,
    #[serde(default)]
    spec: Spec,
}

#[derive(Deserialize)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    owner: Option<String>,
    depends_on: Vec<String>,
    consumes_apis: Vec<String>,
    provides_apis: Vec<String>,
}

/// An entity reference `[kind:][namespace/]name`, compared without case as Backstage does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    kind: Option<String>,
    namespace: String,
    name: String,
}

impl Ref {
    fn parse(text: &str, default_kind: Option<&str>) -> Ref {
        let text = text.trim().to_lowercase();
        let (kind, rest) = match text.split_once(':') {
            Some((kind, rest)) => (Some(kind.to_owned()), rest),
            None => (default_kind.map(str::to_owned), text.as_str()),
        };
        let (namespace, name) = rest.split_once('/').unwrap_or(("default", rest));
        Ref {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

struct Parsed {
    kind: String,
    reference: Ref,
    observed_name: String,
    spec: Spec,
}

fn parse_file(source: &str, text: &str, into: &mut Vec<Parsed>) -> Result<(), DeclaredError> {
    let invalid = |message: String| DeclaredError::Invalid {
        file: source.to_owned(),
        message,
    };
    let entities: Vec<Entity> = serde_saphyr::from_multiple(text)
        .map_err(|e| invalid(format!("not a Backstage catalog file: {e}")))?;
    for (i, entity) in entities.into_iter().enumerate() {
        let document = i + 1;
        let kind = entity
            .kind
            .ok_or_else(|| invalid(format!("document {document} has no `kind`")))?;
        let metadata = entity
            .metadata
            .ok_or_else(|| invalid(format!("document {document} ({kind}) has no `metadata`")))?;
        let name = metadata.name.ok_or_else(|| {
            invalid(format!(
                "document {document} ({kind}) has no `metadata.name`"
            ))
        })?;
        let observed_name = metadata
            .annotations
            .get(OBSERVED_NAME)
            .cloned()
            .unwrap_or_else(|| name.clone());
        into.push(Parsed {
            reference: Ref {
                kind: Some(kind.to_lowercase()),
                namespace: metadata
                    .namespace
                    .unwrap_or_else(|| "default".to_owned())
                    .to_lowercase(),
                name: name.to_lowercase(),
            },
            kind,
            observed_name,
            spec: entity.spec,
        });
    }
    Ok(())
}

fn is_node(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("component") || kind.eq_ignore_ascii_case("resource")
}

/// Reads the catalog files, each given as (where it came from, its text).
pub fn read(files: &[(String, String)]) -> Result<Declared, DeclaredError> {
    let mut entities = Vec::new();
    for (source, text) in files {
        parse_file(source, text, &mut entities)?;
    }
    let mut declared = Declared {
        sources: files.iter().map(|(source, _)| source.clone()).collect(),
        has_owners: true,
        ..Declared::default()
    };
    let nodes: BTreeMap<&Ref, &Parsed> = entities
        .iter()
        .filter(|e| is_node(&e.kind))
        .map(|e| (&e.reference, e))
        .collect();
    // A reference without a kind names a Component or else a Resource; one to an entity the
    // catalog lacks stands for the node of that name.
    let resolve = |reference: &Ref| -> String {
        let found = match &reference.kind {
            Some(_) => nodes.get(reference).copied(),
            None => ["component", "resource"].iter().find_map(|kind| {
                nodes
                    .get(&Ref {
                        kind: Some((*kind).to_owned()),
                        ..reference.clone()
                    })
                    .copied()
            }),
        };
        found.map_or_else(|| reference.name.clone(), |e| e.observed_name.clone())
    };
    let mut providers: BTreeMap<Ref, Vec<&Parsed>> = BTreeMap::new();
    for entity in entities.iter().filter(|e| is_node(&e.kind)) {
        for api in &entity.spec.provides_apis {
            providers
                .entry(Ref::parse(api, Some("api")))
                .or_default()
                .push(entity);
        }
    }
    for entity in entities.iter().filter(|e| is_node(&e.kind)) {
        declared.add_node(
            &entity.observed_name,
            DeclaredNode {
                kind: entity.kind.clone(),
                owner: entity.spec.owner.clone().filter(|o| !o.trim().is_empty()),
                outside: false,
            },
        );
        for target in &entity.spec.depends_on {
            declared.add_edge(&entity.observed_name, &resolve(&Ref::parse(target, None)));
        }
        for api in &entity.spec.consumes_apis {
            let api = Ref::parse(api, Some("api"));
            match providers.get(&api) {
                Some(provided_by) => {
                    for provider in provided_by {
                        declared.add_edge(&entity.observed_name, &provider.observed_name);
                    }
                }
                // An API no entity of the catalog provides (a third party's, say) stands for
                // the node of its name.
                None => declared.add_edge(&entity.observed_name, &api.name),
            }
        }
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_one(text: &str) -> Result<Declared, DeclaredError> {
        read(&[("catalog-info.yaml".to_owned(), text.to_owned())])
    }

    const CATALOG: &str = r#"
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: checkout
spec:
  type: service
  owner: team-shop
  lifecycle: production
  dependsOn: [resource:default/orders-db, Component:Payments]
  consumesApis: [cart-api]
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata:
  name: cart
  annotations:
    archtrace.io/observed-name: "cart service"
spec:
  type: service
  lifecycle: production
  providesApis: [api:default/cart-api]
---
apiVersion: backstage.io/v1alpha1
kind: API
metadata: { name: cart-api }
spec: { type: openapi, owner: team-shop, lifecycle: production, definition: "x" }
---
kind: Resource
metadata: { name: orders-db }
spec: { type: database, owner: dba }
---
kind: Group
metadata: { name: team-shop }
"#;

    #[test]
    fn components_resources_and_their_dependencies() {
        let declared = read_one(CATALOG).unwrap();
        let names: Vec<&str> = declared.nodes.keys().map(String::as_str).collect();
        assert_eq!(names, ["cart service", "checkout", "orders-db"]);
        assert_eq!(
            declared.nodes["checkout"].owner.as_deref(),
            Some("team-shop")
        );
        assert_eq!(declared.nodes["cart service"].owner, None);
        let edges: Vec<(&str, &str)> = declared
            .edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        // `payments` is not in the catalog: the edge names it as referenced.
        assert_eq!(
            edges,
            [
                ("checkout", "cart service"),
                ("checkout", "orders-db"),
                ("checkout", "payments")
            ]
        );
        assert!(declared.has_owners);
    }

    #[test]
    fn bad_catalogs_are_named_with_the_fix() {
        let err = read_one("kind: Component\nspec: {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("catalog-info.yaml") && err.contains("metadata"),
            "{err}"
        );
        let err = read_one("kind: [unclosed\n").unwrap_err().to_string();
        assert!(err.contains("not a Backstage catalog file"), "{err}");
    }

    #[test]
    fn an_api_nobody_provides_stands_for_the_node_of_its_name() {
        let declared =
            read_one("kind: Component\nmetadata: {name: a}\nspec: {consumesApis: [api:stripe]}\n")
                .unwrap();
        assert!(declared
            .edges
            .contains(&("a".to_owned(), "stripe".to_owned())));
    }
}
