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
