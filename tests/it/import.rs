//! Importing the traces recorded by others in `shared/data/`: counts, parent links and Zipkin's
//! shared spans are checked against what the test computes itself from the raw JSON.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use archtrace_analyzer::{Span, SpanKind, StatusCode};
use archtrace_formats::import::{Format, OnBadInput};
use serde_json::Value;

use crate::support::{binary, json_files, read_file, shared_data, succeeded};

/// A hex id as the test expects it stored: lowercase, left-padded to `digits`.
fn widened(id: &str, digits: usize) -> String {
    format!("{:0>digits$}", id.to_lowercase())
}

fn hex_id(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Expected parent links: every span's parent either is in the output (same trace), or the
/// source named a parent it did not contain (an orphan stays an orphan; none is invented).
fn check_parents(spans: &[Span], source_orphans: usize, file: &Path) {
    let ids: HashSet<(String, String)> = spans
        .iter()
        .map(|s| (hex_id(&s.trace_id), hex_id(&s.span_id)))
        .collect();
    assert_eq!(
        ids.len(),
        spans.len(),
        "{}: span ids are unique within a trace",
        file.display()
    );
    let orphans = spans
        .iter()
        .filter(|s| {
            s.parent_span_id
                .is_some_and(|p| !ids.contains(&(hex_id(&s.trace_id), hex_id(&p))))
        })
        .count();
    assert_eq!(orphans, source_orphans, "{}: orphans", file.display());
}

#[test]
fn every_jaeger_file_imports_with_its_counts_and_links() {
    let files = json_files("jaeger-hotel-reservation");
    assert_eq!(files.len(), 100);
    for file in files {
        let document: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let mut spans = 0;
        let mut traces = BTreeSet::new();
        let mut services = BTreeSet::new();
        let mut parents: HashMap<String, Option<String>> = HashMap::new();
        let mut errors = 0;
        let mut server_spans = 0;
        for trace in document["data"].as_array().unwrap() {
            let processes = &trace["processes"];
            for span in trace["spans"].as_array().unwrap() {
                spans += 1;
                traces.insert(widened(span["traceID"].as_str().unwrap(), 32));
                let process = span["processID"].as_str().unwrap();
                services.insert(
                    processes[process]["serviceName"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
                let parent = span["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .map(|r| widened(r["spanID"].as_str().unwrap(), 16));
                parents.insert(widened(span["spanID"].as_str().unwrap(), 16), parent);
                let tags = span["tags"].as_array().unwrap();
                errors +=
                    usize::from(tags.iter().any(|t| {
                        t["key"] == "error" && (t["value"] == true || t["value"] == "true")
                    }));
                server_spans += usize::from(
                    tags.iter()
                        .any(|t| t["key"] == "span.kind" && t["value"] == "server"),
                );
            }
        }
        let (summary, imported) = read_file(&file, None, OnBadInput::Stop).unwrap();
        assert_eq!(summary.spans as usize, spans, "{}", file.display());
        assert_eq!(summary.rejected_spans, 0);
        assert_eq!(summary.traces(), traces.len());
        assert_eq!(summary.services(), services.len(), "{}", file.display());
        for span in &imported {
            assert_eq!(
                parents[&hex_id(&span.span_id)],
                span.parent_span_id.map(|p| hex_id(&p)),
                "{}: parent of {}",
                file.display(),
                hex_id(&span.span_id)
            );
            assert!(traces.contains(&hex_id(&span.trace_id)));
        }
        assert_eq!(imported.iter().filter(|s| s.is_error()).count(), errors);
        assert_eq!(
            imported
                .iter()
                .filter(|s| s.kind == SpanKind::Server)
                .count(),
            server_spans
        );
        let source_orphans = parents
            .values()
            .flatten()
            .filter(|p| !parents.contains_key(*p))
            .count();
        check_parents(&imported, source_orphans, &file);
    }
}

#[test]
fn every_zipkin_file_imports_with_one_client_and_one_server_span_per_rpc() {
    let files = json_files("zipkin");
    assert_eq!(files.len(), 10);
    for file in files {
        let source = crate::graph::merged_zipkin(
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap(),
        );
        let traces: BTreeSet<String> = source
            .iter()
            .map(|s| widened(s["traceId"].as_str().unwrap(), 32))
            .collect();
        let services: BTreeSet<&str> = source
            .iter()
            .map(|s| {
                s["localEndpoint"]["serviceName"]
                    .as_str()
                    .unwrap_or("unknown_service")
            })
            .collect();
        let source_ids: HashSet<String> = source
            .iter()
            .map(|s| widened(s["id"].as_str().unwrap(), 16))
            .collect();
        let source_orphans = source
            .iter()
            .filter_map(|s| s["parentId"].as_str())
            .filter(|p| !source_ids.contains(&widened(p, 16)))
            .count();
        // Ids used by both a CLIENT and a SERVER span: one RPC reported by both sides.
        let id_of = |s: &Value| widened(s["id"].as_str().unwrap(), 16);
        let clients: HashSet<String> = source
            .iter()
            .filter(|s| s["kind"] == "CLIENT")
            .map(id_of)
            .collect();
        let shared: HashSet<String> = source
            .iter()
            .filter(|s| s["kind"] == "SERVER" && clients.contains(&id_of(s)))
            .map(id_of)
            .collect();
        let errors = source
            .iter()
            .filter(|s| s["tags"].get("error").is_some())
            .count();

        let (summary, imported) = read_file(&file, None, OnBadInput::Stop).unwrap();
        assert_eq!(summary.spans as usize, source.len(), "{}", file.display());
        assert_eq!(summary.traces(), traces.len());
        assert_eq!(summary.services(), services.len(), "{}", file.display());
        assert_eq!(
            imported
                .iter()
                .filter(|s| s.status == StatusCode::Error)
                .count(),
            errors
        );
        for id in &shared {
            let client = imported
                .iter()
                .filter(|s| s.kind == SpanKind::Client && hex_id(&s.span_id) == *id)
                .count();
            let server = imported
                .iter()
                .filter(|s| {
                    s.kind == SpanKind::Server
                        && s.parent_span_id.is_some_and(|p| hex_id(&p) == *id)
                })
                .count();
            assert_eq!((client, server), (1, 1), "{}: RPC {id}", file.display());
        }
        check_parents(&imported, source_orphans, &file);
    }
}

#[test]
fn every_otlp_fixture_imports() {
    for file in json_files("otlp-fixtures") {
        let document: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let expected: usize = document["resourceSpans"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["scopeSpans"].as_array().unwrap())
            .map(|s| s["spans"].as_array().unwrap().len())
            .sum();
        let (summary, _) = read_file(&file, None, OnBadInput::Stop).unwrap();
        assert_eq!(summary.spans as usize, expected, "{}", file.display());
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn otlp_line(trace: u8, span: u8, start_time: &str) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{trace:032x}","spanId":"{span:016x}","name":"op","startTimeUnixNano":{start_time},"endTimeUnixNano":"2"}}]}}]}}]}}"#
    )
}

#[test]
fn otlp_json_lines_with_a_bad_line_stop_or_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        otlp_line(1, 1, "\"1\""),
        otlp_line(2, 2, "\"soon\""),
        otlp_line(3, 3, "\"1\""),
    ]
    .join("\n");
    let file = write(dir.path(), "spans.jsonl", lines.as_bytes());
    let err = read_file(&file, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spans.jsonl") && err.contains("request 2") && err.contains("soon"),
        "{err}"
    );
    let (summary, spans) = read_file(&file, None, OnBadInput::Skip).unwrap();
    assert_eq!((summary.spans, summary.bad_documents), (2, 1));
    assert_eq!(spans.len(), 2);
}

/// Requests are decoded on several threads in batches; what comes out must be every span in
/// input order, whatever the layout of the documents, with a bad one reported where it stood.
#[test]
fn a_long_otlp_json_stream_imports_in_order_across_layouts() {
    use archtrace_workload::shop::Simulation;
    let dir = tempfile::tempdir().unwrap();
    let mut text = b"\xEF\xBB\xBF".to_vec();
    let mut expected_ids = Vec::new();
    let bad_request = 250;
    for index in 1..=400u64 {
        if index == bad_request {
            text.extend_from_slice(otlp_line(9, 9, "\"soon\"").as_bytes());
            text.push(b'\n');
            continue;
        }
        let request = Simulation::starting_at(index, 1).request_of_spans(40);
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            expected_ids.push(span.span_id.clone());
        }
        let json = archtrace_formats::otlp_json::encode(&request);
        if index % 3 == 0 {
            // Pretty-printed over many lines, as a person or `jq` writes it.
            let value: Value = serde_json::from_slice(&json).unwrap();
            text.extend_from_slice(serde_json::to_string_pretty(&value).unwrap().as_bytes());
        } else {
            text.extend_from_slice(&json);
        }
        text.extend_from_slice(if index % 2 == 0 { b"\n" } else { b"  \r\n\n" });
    }
    assert!(text.len() > 8 << 20, "several batches in flight");
    let file = write(dir.path(), "stream.jsonl", &text);

    let (summary, spans) = read_file(&file, None, OnBadInput::Skip).unwrap();
    let ids: Vec<Vec<u8>> = spans.iter().map(|s| s.span_id.to_vec()).collect();
    assert_eq!(ids, expected_ids);
    assert_eq!(summary.spans as usize, expected_ids.len());
    assert_eq!(summary.bad_documents, 1);

    let err = read_file(&file, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("request {bad_request} (byte ")) && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn a_jaeger_trace_with_a_bad_span_is_skipped_with_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"traceID":"1","spans":[{"traceID":"1","spanID":"a","operationName":"x","startTime":1,"duration":1,"processID":"p1"}],"processes":{"p1":{"serviceName":"s"}}}"#;
    let bad = r#"{"traceID":"2","spans":[{"traceID":"2","spanID":"b","operationName":"x","startTime":"yesterday","duration":1,"processID":"p1"}],"processes":{"p1":{"serviceName":"s"}}}"#;
    let file = write(
        dir.path(),
        "jaeger.json",
        format!(r#"{{"data":[{good},{bad},{good}]}}"#).as_bytes(),
    );
    let err = read_file(&file, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("jaeger.json") && err.contains("trace 2"),
        "{err}"
    );
    let (summary, _) = read_file(&file, None, OnBadInput::Skip).unwrap();
    assert_eq!((summary.spans, summary.bad_documents), (2, 1));
}

#[test]
fn malformed_files_name_the_file_and_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = write(
        dir.path(),
        "truncated.json",
        b"[{\"traceId\":\"1\",\"id\":\"a\"},\n{\"traceId\":",
    );
    let err = read_file(&truncated, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated.json") && err.contains("line 2"),
        "{err}"
    );
    let (summary, _) = read_file(&truncated, None, OnBadInput::Skip).unwrap();
    assert_eq!(
        summary.bad_files, 1,
        "with --keep-going a syntax error abandons the file, counted"
    );

    let empty = write(dir.path(), "empty.json", b"  \n");
    let err = read_file(&empty, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.json") && err.contains("empty"), "{err}");

    let text = write(dir.path(), "notes.txt", b"hello, these are not traces");
    let err = read_file(&text, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("could not tell the format") && err.contains("--format"),
        "{err}"
    );

    let garbage = write(
        dir.path(),
        "garbage.pb",
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2],
    );
    let err = read_file(&garbage, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("garbage.pb") && err.contains("protobuf"),
        "{err}"
    );

    let wrong_format = write(
        dir.path(),
        "zipkin.json",
        b"[{\"traceId\":\"1\",\"id\":\"a\"}]",
    );
    let err = read_file(&wrong_format, Some(Format::Jaeger), OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("zipkin.json"), "{err}");
}

#[test]
fn protobuf_single_and_length_delimited_and_gzip_import() {
    use archtrace_workload::shop::Simulation;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let requests: Vec<_> = (0..3)
        .map(|seed| Simulation::starting_at(seed, 1).request_of_spans(40))
        .collect();
    let count =
        |r: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest| {
            archtrace_formats::otlp::span_count(r) as u64
        };
    let single = write(dir.path(), "one.pb", &requests[0].encode_to_vec());
    assert_eq!(
        read_file(&single, None, OnBadInput::Stop).unwrap().0.spans,
        count(&requests[0])
    );

    let mut stream = Vec::new();
    for request in &requests {
        request.encode_length_delimited(&mut stream).unwrap();
    }
    let delimited = write(dir.path(), "stream.pb", &stream);
    let total: u64 = requests.iter().map(count).sum();
    assert_eq!(
        read_file(&delimited, None, OnBadInput::Stop)
            .unwrap()
            .0
            .spans,
        total
    );

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &stream).unwrap();
    let gzipped = write(dir.path(), "stream.pb.gz", &encoder.finish().unwrap());
    assert_eq!(
        read_file(&gzipped, None, OnBadInput::Stop).unwrap().0.spans,
        total
    );

    let mut cut = stream.clone();
    cut.truncate(stream.len() - 10);
    let truncated = write(dir.path(), "cut.pb", &cut);
    let err = read_file(&truncated, None, OnBadInput::Stop)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("request 3") && err.contains("ended early"),
        "{err}"
    );
}

#[test]
fn the_binary_imports_files_and_standard_input_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("imported.duckdb");
    let zipkin = shared_data("zipkin/smartthings-mobile-web-install.json");
    // 1,041 entries, some of them pieces of one span that Zipkin (and the import) merge.
    let zipkin_spans = crate::graph::merged_zipkin(
        serde_json::from_slice(&std::fs::read(&zipkin).unwrap()).unwrap(),
    )
    .len();
    assert!(zipkin_spans < 1_041);
    let jaeger = json_files("jaeger-hotel-reservation");
    let output = succeeded(
        Command::new(binary())
            .args(["import", "--db"])
            .arg(&db)
            .arg(&zipkin)
            .args(&jaeger[..10]),
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("imported 11 files:"), "{stdout}");

    // The same Zipkin file, gzipped, through standard input.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &std::fs::read(&zipkin).unwrap()).unwrap();
    let mut child = Command::new(binary())
        .args(["import", "--db"])
        .arg(&db)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &encoder.finish().unwrap()).unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains(&format!("{zipkin_spans} spans")));

    let stats = succeeded(
        Command::new(binary())
            .args(["stats", "--format", "json", "--db"])
            .arg(&db),
    );
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let jaeger_spans: usize = jaeger[..10]
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            v["data"][0]["spans"].as_array().unwrap().len()
        })
        .sum();
    assert_eq!(stats["spans"], 2 * zipkin_spans + jaeger_spans);

    let bad = write(dir.path(), "bad.json", b"{\"resourceSpans\": [");
    let output = Command::new(binary())
        .args(["import", "--db"])
        .arg(&db)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("--keep-going"),
        "{stderr}"
    );
}
