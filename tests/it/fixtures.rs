//! The OTLP/JSON files recorded by others (`shared/data/otlp-fixtures`) posted over OTLP/HTTP:
//! every span arrives, whether ids are written in hex (the OTLP spec) or base64 (protobuf's
//! generic JSON mapping).

use std::collections::BTreeSet;

use archtrace_collector::ServerSettings;
use base64::Engine;
use serde_json::Value;

use crate::support::{shared_data, InProcessServer};

/// (trace id, span id) of every span in an OTLP/JSON document, read with plain serde_json.
fn span_keys(document: &Value) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for resource in document["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                keys.push((
                    span["traceId"].as_str().unwrap().to_lowercase(),
                    span["spanId"].as_str().unwrap().to_lowercase(),
                ));
            }
        }
    }
    keys
}

/// Rewrites every hex id in the document as base64.
fn ids_to_base64(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let is_id = matches!(key.as_str(), "traceId" | "spanId" | "parentSpanId");
                match item {
                    Value::String(hex_id) if is_id && !hex_id.is_empty() => {
                        let bytes = hex::decode(&*hex_id).unwrap();
                        *hex_id = base64::engine::general_purpose::STANDARD.encode(bytes);
                    }
                    other => ids_to_base64(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(ids_to_base64),
        _ => {}
    }
}

async fn post_json(url: &str, body: &Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_otlp_fixture_arrives_over_http_json_in_hex_and_base64() {
    let server = InProcessServer::start(ServerSettings::default()).await;
    let mut expected: Vec<(String, String)> = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(shared_data("otlp-fixtures")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        files += 1;
        let document: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let keys = span_keys(&document);
        assert!(!keys.is_empty(), "{} has spans", path.display());
        let answer = post_json(&server.http_url(), &document).await;
        assert_eq!(
            answer,
            serde_json::json!({}),
            "{}: no span rejected",
            path.display()
        );
        let mut base64_document = document.clone();
        ids_to_base64(&mut base64_document);
        assert_ne!(base64_document, document);
        let answer = post_json(&server.http_url(), &base64_document).await;
        assert_eq!(
            answer,
            serde_json::json!({}),
            "{}: no span rejected",
            path.display()
        );
        expected.extend(keys.iter().cloned());
        expected.extend(keys);
    }
    assert_eq!(files, 32, "all fixture files were read");
    let stopped = server.stop().await;
    let mut statement = stopped
        .store
        .connection()
        .prepare("SELECT lower(hex(trace_id)), format('{:016x}', span_id) FROM spans")
        .unwrap();
    let mut stored: Vec<(String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected, "every span of every file, twice");
    let services: BTreeSet<String> = stopped
        .store
        .connection()
        .prepare("SELECT DISTINCT service_name FROM spans")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(services.contains("example-service-1"), "{services:?}");
}
