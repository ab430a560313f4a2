//! Findings on the recorded traces, reviewed by hand once and pinned here. Each expectation
//! says why the finding is right, from the data.

use std::process::Command;

use crate::support::snapshot_from_files;
use archtrace_analyzer::snapshot::FindingKind;

use crate::support::{binary, shared_data, succeeded};

fn findings_of(files: &[std::path::PathBuf]) -> Vec<(FindingKind, Vec<String>)> {
    let (snapshot, _) = snapshot_from_files(files);
    snapshot
        .findings
        .iter()
        .map(|f| (f.kind, f.subjects.clone()))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn hotel_reservation_findings() {
    let mut files: Vec<_> = std::fs::read_dir(shared_data("jaeger-hotel-reservation"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(
        findings_of(&files),
        [
            // frontend is the only entry point (every trace's root server span is in it), so
            // every other service is reached only through it.
            (FindingKind::SinglePointOfFailure, names(&["frontend"])),
            // search is the only caller of geo and rate (search -> geo, search -> rate are the
            // only edges into them).
            (FindingKind::SinglePointOfFailure, names(&["search"])),
        ]
    );
}

#[test]
fn zipkin_findings() {
    let check = |file: &str, expected: Vec<(FindingKind, Vec<String>)>| {
        assert_eq!(findings_of(&[shared_data(file)]), expected, "{file}");
    };
    // servicea consumes from and produces to kafka, which reports no spans: that is no cycle.
    // servicea is the only entry point (the consumer root), so it dominates kafka and serviceb.
    check(
        "zipkin/messaging-kafka.json",
        vec![(FindingKind::SinglePointOfFailure, names(&["servicea"]))],
    );
    check(
        "zipkin/smartthings-oauth-authorization.json",
        vec![
            // datamgmt calls stlogin and stlogin calls datamgmt back, both over HTTP client spans.
            (FindingKind::SyncCycle, names(&["datamgmt", "stlogin"])),
            (
                FindingKind::BidirectionalPair,
                names(&["datamgmt", "stlogin"]),
            ),
            // The single trace calls auth from auth 50 times and from datamgmt 20 times.
            (FindingKind::ChattyEdge, names(&["auth -> auth"])),
            (FindingKind::ChattyEdge, names(&["datamgmt -> auth"])),
            // bouncer alone calls pusher, pusher alone calls dove and paperboy, and datamgmt is
            // the entry point everything else hangs below.
            (FindingKind::SinglePointOfFailure, names(&["bouncer"])),
            (FindingKind::SinglePointOfFailure, names(&["datamgmt"])),
            (FindingKind::SinglePointOfFailure, names(&["pusher"])),
        ],
    );
    check(
        "zipkin/yelp.json",
        vec![
            // routing -> unknown (the client half of a shared span) -> yelp_main/api_proxy (its
            // server half) -> yelp-main (the work below it) -> mobile_api -> spectre: six
            // services deep, all synchronous.
            (
                FindingKind::DeepSyncChain,
                names(&[
                    "routing",
                    "unknown",
                    "yelp_main/api_proxy",
                    "yelp-main",
                    "mobile_api",
                    "spectre",
                ]),
            ),
            // The chain has one entry (routing) and no alternative paths.
            (FindingKind::SinglePointOfFailure, names(&["mobile_api"])),
            (FindingKind::SinglePointOfFailure, names(&["routing"])),
            (FindingKind::SinglePointOfFailure, names(&["yelp-main"])),
        ],
    );
}

#[test]
fn hotspots_command_ranks_with_terms_and_reasons() {
    let file = shared_data("zipkin/smartthings-oauth-authorization.json");
    let json = Command::new(binary())
        .args(["hotspots", "--format", "json", "--top", "3", "--traces"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let hotspots = report["hotspots"].as_array().unwrap();
    assert_eq!(hotspots.len(), 3);
    for hotspot in hotspots {
        let t = &hotspot["terms"];
        let f = |k: &str| t[k].as_f64().unwrap();
        let recomputed = f("reach") * f("coupling") * f("health") + f("cycle") + f("spof");
        assert!(
            (recomputed - hotspot["score"].as_f64().unwrap()).abs() < 0.01,
            "{hotspot}"
        );
    }
    let scores: Vec<f64> = hotspots
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "ranked: {scores:?}"
    );
    let datamgmt = hotspots
        .iter()
        .find(|h| h["service"] == "datamgmt")
        .expect("datamgmt ranks in the top 3");
    assert!(
        datamgmt["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("in a synchronous cycle"),
        "{datamgmt}"
    );

    let table = succeeded(
        Command::new(binary())
            .args(["hotspots", "--traces"])
            .arg(&file),
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("score = reach × coupling × health + cycle + spof"),
        "{text}"
    );
    let markdown = succeeded(
        Command::new(binary())
            .args(["hotspots", "--format", "markdown", "--traces"])
            .arg(&file),
    );
    assert!(String::from_utf8(markdown.stdout)
        .unwrap()
        .starts_with("| # | service | score |"));

    // Thresholds come from a file, and a typo names the key.
    let dir = tempfile::tempdir().unwrap();
    let thresholds = dir.path().join("thresholds.toml");
    std::fs::write(&thresholds, "chatty_min_calls_per_trace = 100\n").unwrap();
    let fewer = succeeded(
        Command::new(binary())
            .args(["hotspots", "--format", "json", "--thresholds"])
            .arg(&thresholds)
            .arg("--traces")
            .arg(&file),
    );
    let report: serde_json::Value = serde_json::from_slice(&fewer.stdout).unwrap();
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["kind"] != "chatty_edge"));
    std::fs::write(&thresholds, "chatty_min_calls = 100\n").unwrap();
    let typo = Command::new(binary())
        .args(["hotspots", "--thresholds"])
        .arg(&thresholds)
        .arg("--traces")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("chatty_min_calls"));
}
