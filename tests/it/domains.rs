//! `archtrace domains` on the recorded hotel-reservation traces, against an answer worked out
//! by hand: frontend calls profile, reservation and search 100 times each, and search calls geo
//! and rate 100 times each (the `user` caller is not a service).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::support::{binary, json_files, succeeded};

#[test]
fn the_hotel_splits_into_the_frontend_and_the_search_domains() {
    let output = succeeded(
        Command::new(binary())
            .args(["domains", "--format", "json", "--traces"])
            .args(json_files("jaeger-hotel-reservation")),
    );
    let found: Value = serde_json::from_slice(&output.stdout).unwrap();
    let groups: BTreeSet<BTreeSet<String>> = found["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_value(d["services"].clone()).unwrap())
        .collect();
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        groups,
        BTreeSet::from([
            set(&["frontend", "profile", "reservation"]),
            set(&["geo", "rate", "search"])
        ])
    );
    // m = 500 calls; each domain holds 200 of them and half of the degree:
    // Q = 2 × (200/500 − (500/1000)²) = 0.30.
    let modularity = found["modularity"].as_f64().unwrap();
    assert!((modularity - 0.30).abs() < 1e-9, "{modularity}");
    assert_eq!(
        found["cross_domain"],
        serde_json::json!([{"from": "frontend", "to": "search", "edges": 1, "calls": 100}])
    );
}

/// Declared domains, worked out by hand on the same traffic: web = frontend; lookup = search,
/// geo, rate and profile; reservation in none.
#[test]
fn declared_domains_are_checked_on_the_hotel_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("archtrace.toml");
    std::fs::write(
        &rules,
        "[domains]\nweb = [\"frontend\"]\nlookup = [\"search\", \"geo\", \"rate\", \"profile\"]\n",
    )
    .unwrap();
    let output = succeeded(
        Command::new(binary())
            .args(["domains", "--format", "json", "--rules"])
            .arg(&rules)
            .arg("--traces")
            .args(json_files("jaeger-hotel-reservation")),
    );
    let found: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        found["domains"],
        serde_json::json!([
            {"name": "lookup", "services": ["geo", "profile", "rate", "search"], "internal_calls": 200},
            {"name": "web", "services": ["frontend"], "internal_calls": 0}
        ])
    );
    assert_eq!(found["undeclared"], serde_json::json!(["reservation"]));
    // frontend → profile and frontend → search; frontend → reservation leaves every domain.
    assert_eq!(
        found["cross_domain"],
        serde_json::json!([{"from": "web", "to": "lookup", "edges": 2, "calls": 200}])
    );
    // frontend talks only to lookup (200 calls); profile only to web (100).
    assert_eq!(
        found["misplaced"],
        serde_json::json!([
            {"service": "frontend", "domain": "web", "mostly_with": "lookup", "calls_with_other": 200, "calls_with_own": 0},
            {"service": "profile", "domain": "lookup", "mostly_with": "web", "calls_with_other": 100, "calls_with_own": 0}
        ])
    );
    // 2m = 1,000: web 0 − 0.3², lookup 0.4 − 0.6², reservation 0 − 0.1² = −0.06.
    let modularity = found["modularity"].as_f64().unwrap();
    assert!((modularity + 0.06).abs() < 1e-9, "{modularity}");

    // A rule naming a domain that is not declared is refused with the fix.
    std::fs::write(
        &rules,
        "[domains]\nweb = [\"frontend\"]\n[[deny]]\nfrom = \"domain:wbe\"\nto = \"geo\"\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["domains", "--rules"])
        .arg(&rules)
        .arg("--traces")
        .args(json_files("jaeger-hotel-reservation"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("`domain:wbe` names no domain of [domains] (declared: web)"),
        "{stderr}"
    );
}
