//! archtrace on ClickHouse, against the real engine: chDB (ClickHouse 26 embedded, from PyPI)
//! behind `scripts/chdb-server.py`, which answers the part of ClickHouse's HTTP interface the
//! `clickhouse` crate uses. The recorded traces of `shared/data` go into `otel_traces` with the
//! exporter's DDL, shifted to the last hour; `archtrace derive` workers (the real binary) derive
//! them, and every answer is compared with the DuckDB path on the same spans.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::history::Periods;
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::time::{now_ns, rfc3339};
use archtrace_analyzer::Span;
use archtrace_formats::import::OnBadInput;
use archtrace_query::store::StoreSource;
use archtrace_query::{SnapshotSource, Window};
use archtrace_store::bulk::BulkWriter;
use archtrace_store::{Location, Store};

use crate::otel_rows::{otel_row, OtelSpan, OTEL_TRACES_DDL};
use crate::support::{binary, first_line, json_files, read_file, succeeded};

/// chDB behind its HTTP endpoint, on a free port, with its data in a temporary folder.
struct ClickHouse {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl ClickHouse {
    fn start() -> ClickHouse {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/chdb-server.py");
        let probe = Command::new("python3")
            .args(["-c", "import chdb"])
            .output()
            .expect("python3 is needed for the ClickHouse tests");
        assert!(
            probe.status.success(),
            "the ClickHouse tests need chDB: `python3 -m pip install chdb` (scripts/test installs it)"
        );
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--data")
            .arg(data.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("chdb-server said {line:?}"));
        ClickHouse {
            child,
            url: format!("http://{address}"),
            _data: data,
        }
    }

    fn address(&self, database: &str) -> String {
        format!(
            "{}/{database}",
            self.url.replace("http://", "clickhouse://")
        )
    }

    fn client(&self, database: &str) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_database(database)
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recorded traces, each file moved to start `step` after the one before from `base`.
fn recorded_spans(files: &[PathBuf], base_ns: i64, step_ns: i64) -> Vec<Vec<Span>> {
    files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let (_, mut spans) = read_file(path, None, OnBadInput::Stop).unwrap();
            let first = spans.iter().map(|s| s.start_ns).min().unwrap();
            let shift = base_ns + i as i64 * step_ns - first;
            for span in &mut spans {
                span.start_ns += shift;
                span.end_ns += shift;
            }
            spans
        })
        .collect()
}

/// The DuckDB path on the same spans: what `archtrace import` does (bulk write, then derive).
fn duckdb_snapshot(spans: &[Vec<Span>], window: &Window, dir: &Path) -> Snapshot {
    let store = Store::open(&Location::File(dir.join("expected.duckdb"))).unwrap();
    let mut writer = BulkWriter::start(store);
    for file in spans {
        writer.push(file.clone()).unwrap();
    }
    let store = writer.finish().unwrap();
    let source = StoreSource::open(&store).unwrap();
    source.rebuild(window.since_ns, window.until_ns).unwrap();
    analysed(source.snapshot(window).unwrap())
}

fn analysed(snapshot: Snapshot) -> Snapshot {
    Analyzed::new(snapshot, &Settings::default()).snapshot
}

/// `archtrace derive` from `from` into `store`, with `args`; returns what it printed.
fn derive(from: &str, store: &str, args: &[&str]) -> String {
    let output = succeeded(
        Command::new(binary())
            .args(["derive", "--from", from, "--store", store])
            .args(args)
            .env_remove("ARCHTRACE_STORE"),
    );
    String::from_utf8(output.stderr).unwrap()
}

/// Fails with the lines of the two snapshots' JSON that differ, not two pages of debug output.
fn assert_same(actual: &Snapshot, expected: &Snapshot, what: &str) {
    if actual == expected {
        return;
    }
    let lines = |s: &Snapshot| -> Vec<String> {
        serde_json::to_string_pretty(s)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let (actual, expected) = (lines(actual), lines(expected));
    let differing: Vec<String> = actual
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|(_, (a, e))| a != e)
        .take(12)
        .map(|(i, (a, e))| format!("line {i}: got {a}\n        expected {e}"))
        .collect();
    panic!(
        "{what}: the snapshots differ ({} and {} lines):\n{}",
        actual.len(),
        expected.len(),
        differing.join("\n")
    );
}

fn clickhouse_snapshot(store: &str, window: &Window) -> Snapshot {
    let endpoint = archtrace_clickhouse::Endpoint::parse(store).unwrap();
    let source = archtrace_clickhouse::ClickHouseSource::open(&endpoint).unwrap();
    analysed(source.snapshot(window).unwrap())
}

/// The steps of `periods` by name, not number (two reads number edges and nodes in the order
/// they meet them), one line a step.
fn named_steps(periods: &Periods) -> Vec<String> {
    periods
        .steps
        .values()
        .map(|period| {
            let mut edges: Vec<String> = period
                .edges
                .iter()
                .map(|edge| {
                    format!(
                        "{:?} calls={} errors={} p99={:?} seen={}..{} {:?}",
                        periods.edge_key(edge.id),
                        edge.calls,
                        edge.errors,
                        edge.p99_ns,
                        edge.first_seen_ns,
                        edge.last_seen_ns,
                        period.edge_versions.get(&edge.id)
                    )
                })
                .collect();
            edges.sort();
            let mut nodes: Vec<String> = period
                .nodes
                .iter()
                .map(|node| {
                    format!(
                        "{} reports_spans={} {:?} {:?} {:?}",
                        periods.name(node.id),
                        node.reports_spans,
                        node.node_type,
                        node.seen,
                        period.node_versions.get(&node.id)
                    )
                })
                .collect();
            nodes.sort();
            format!(
                "{} calls={} errors={} p99={:?} edges={edges:?} nodes={nodes:?}",
                period.start_ns, period.calls, period.errors, period.p99_ns
            )
        })
        .collect()
}

/// History's steps from ClickHouse, read a day of steps per query, against each step read as
/// a window of its own.
fn assert_steps_read_as_windows(store: &str, since: i64, until: i64, step: i64) -> usize {
    let endpoint = archtrace_clickhouse::Endpoint::parse(store).unwrap();
    let source = archtrace_clickhouse::ClickHouseSource::open(&endpoint).unwrap();
    let conn = archtrace_clickhouse::Connection::open(&endpoint).unwrap();
    let mut expected = Periods::default();
    let mut start = since;
    while start < until {
        let end = (start + step).min(until);
        let aggregate = archtrace_clickhouse::buckets::read_window(&conn, start, end).unwrap();
        if !aggregate.edges.is_empty() || !aggregate.nodes.is_empty() {
            expected.add_aggregate(start, &aggregate);
        }
        start = end;
    }
    let expected = named_steps(&expected);
    let actual = named_steps(&source.periods(since, until, step).unwrap());
    assert_eq!(actual, expected, "steps of {step} ns from {since}");
    expected.len()
}

#[test]
fn workers_derive_otel_traces_from_clickhouse_as_duckdb_does_and_the_viewer_reads_them() {
    let clickhouse = ClickHouse::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let otel = clickhouse.client("otel");
    runtime.block_on(async {
        clickhouse
            .client("default")
            .query("CREATE DATABASE otel")
            .execute()
            .await
            .unwrap();
        otel.query(OTEL_TRACES_DDL).execute().await.unwrap();
    });

    // The hotel reservation's Jaeger traces and the Zipkin recordings, moved to 40 minutes ago
    // and after, 15 s apart; Zipkin's in the exporter's older spelling of kinds and statuses.
    let minute = 60_000_000_000;
    let base = now_ns() - 40 * minute;
    let mut hotel = recorded_spans(
        &json_files("jaeger-hotel-reservation"),
        base,
        15_000_000_000,
    );
    let mut zipkin = recorded_spans(&json_files("zipkin"), base + 7_000_000_000, 150_000_000_000);
    // Sampling both ways: the hotel's roots carry Jaeger's sampler tags (one in 0.3); the
    // Zipkin spans get OpenTelemetry's threshold for one in two, as an SDK would have set it.
    for span in zipkin.iter_mut().flatten() {
        span.detail.trace_state = "ot=th:8".to_owned();
        span.adjusted_count = Some(2.0);
    }
    // Every fifth client span of the hotel says it resent its request once: a retry that only
    // the attribute tells, read from the exporter's SpanAttributes.
    for span in hotel
        .iter_mut()
        .flatten()
        .filter(|s| s.kind == archtrace_analyzer::SpanKind::Client)
        .step_by(5)
    {
        span.resend_count = 1;
    }
    // Two releases of the hotel, trace by trace, read from the exporter's ResourceAttributes.
    for (n, trace) in hotel.iter_mut().enumerate() {
        for span in trace {
            span.version = Some(std::sync::Arc::from(if n % 2 == 0 { "1.0" } else { "1.1" }));
        }
    }
    runtime.block_on(async {
        let mut insert = otel
            .clone()
            .with_validation(false)
            .insert::<OtelSpan>("otel_traces")
            .await
            .unwrap();
        for (files, legacy) in [(&hotel, false), (&zipkin, true)] {
            for span in files.iter().flatten() {
                insert.write(&otel_row(span, legacy)).await.unwrap();
            }
        }
        insert.end().await.unwrap();
    });
    let spans: Vec<Vec<Span>> = hotel.into_iter().chain(zipkin).collect();
    let span_count: usize = spans.iter().map(Vec::len).sum();
    let last_end = spans.iter().flatten().map(|s| s.end_ns).max().unwrap();

    // A window of whole 5-minute reads around all of it, closed (the default delay is 2 min).
    // One Zipkin recording has traces of several minutes: the slack covers them.
    let since = (base - minute).div_euclid(5 * minute) * 5 * minute;
    let until = (last_end + minute).div_euclid(5 * minute) * 5 * minute + 5 * minute;
    assert!(
        until < now_ns() - 2 * minute,
        "the data must lie in closed windows"
    );
    let window = Window::new(since, until).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected = duckdb_snapshot(&spans, &window, dir.path());
    assert!(expected.edges.len() > 20, "{} edges", expected.edges.len());
    // Each edge's calls stand for 2 (Zipkin), 3.33 (the hotel) or, where both apps call the
    // same service, something between.
    let weights: Vec<f64> = expected
        .edges
        .iter()
        .map(|e| e.estimate() / e.calls as f64)
        .collect();
    assert!(
        weights.iter().all(|w| (2.0..3.334).contains(w))
            && weights.contains(&2.0)
            && weights.iter().any(|w| (w - 1.0 / 0.3).abs() < 0.001),
        "every edge is weighted by its traces' sampling: {weights:?}"
    );
    assert_eq!(expected.diagnostics.spans, span_count as u64);
    assert!(
        expected.edges.iter().any(|e| e.resilience.retries > 0),
        "the resent requests count as retries"
    );
    assert!(
        expected.edges.iter().any(|e| e.versions.len() == 2)
            && expected.nodes.iter().any(|n| n.versions.len() == 2),
        "both releases are kept per edge and node"
    );
    let from = clickhouse.address("otel");
    let bounds = ["--since", &rfc3339(since), "--until", &rfc3339(until)];
    let reads = [&bounds[..], &["--window", "5m", "--slack", "10m"]].concat();

    // 1, 2 and 3 workers, each set into a database of its own: every trace derived once.
    for workers in 1..=3 {
        let store = clickhouse.address(&format!("arch{workers}"));
        let mut printed = String::new();
        for k in 0..workers {
            let shard = format!("{k}/{workers}");
            printed += &derive(
                &from,
                &store,
                &[&reads[..], &["--workers", &shard]].concat(),
            );
        }
        let derived: u64 = printed
            .lines()
            .filter_map(|line| {
                line.split(": ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert_eq!(derived, span_count as u64, "{printed}");
        let derived = clickhouse_snapshot(&store, &window);
        assert_same(&derived, &expected, &format!("{workers} workers"));
    }

    // Deriving the windows again replaces them: nothing is counted twice.
    let store = clickhouse.address("arch2");
    let again = derive(&from, &store, &[&reads[..], &["--workers", "1/2"]].concat());
    assert!(again.contains(", replaced"), "{again}");
    assert_same(
        &clickhouse_snapshot(&store, &window),
        &expected,
        "derived again",
    );

    // A worker killed with SIGKILL as it moves on, then restarted with no --since, resumes at
    // its watermark and ends with the same answer.
    let store = clickhouse.address("killed");
    let mut worker = Command::new(binary())
        .args(["derive", "--from", &from, "--store", &store])
        .args(&reads[..2])
        .args([
            "--until",
            &rfc3339(until),
            "--window",
            "1m",
            "--slack",
            "10m",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = clickhouse.client("killed");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let watermark: Option<i64> = runtime.block_on(async {
            progress
                .query("SELECT max(watermark_ns) FROM progress FINAL")
                .fetch_one::<i64>()
                .await
                .ok()
        });
        if watermark.is_some_and(|w| w >= base + 3 * minute) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap();
    let killed_at = worker.wait_with_output().unwrap();
    assert!(!killed_at.status.success());
    let resumed = derive(
        &from,
        &store,
        &[
            "--until",
            &rfc3339(until),
            "--window",
            "1m",
            "--slack",
            "10m",
        ],
    );
    assert!(
        !resumed.contains(&rfc3339(since)),
        "the restarted worker began again at the start:\n{resumed}"
    );
    // It began at its watermark, where the window it was killed in may be half written.
    let first_window = resumed.lines().nth(1).unwrap_or_default();
    assert!(
        first_window.ends_with(" s") && first_window.contains(", replaced"),
        "{resumed}"
    );
    assert_same(
        &clickhouse_snapshot(&store, &window),
        &expected,
        "killed and resumed",
    );

    // History reads its steps a day of them per query; each step holds what the window of
    // the step alone holds: 5-minute steps, 7-minute ones (no divisor of the hour; the last
    // one shorter), hours, and steps off the minute (read each on its own).
    let store = clickhouse.address("arch3");
    let hour = 60 * minute;
    for (from, step, least) in [
        (since, 5 * minute, 4),
        (since, 7 * minute, 3),
        (since.div_euclid(hour) * hour, hour, 1),
        (since + 1_500_000_000, 90_000_000_000, 10),
    ] {
        let steps = assert_steps_read_as_windows(&store, from, until, step);
        assert!(steps >= least, "{steps} steps of {step} ns hold something");
    }

    // The reading commands and the viewer read the same buckets.
    let graph = succeeded(
        Command::new(binary())
            .args([
                "graph",
                "--store",
                &clickhouse.address("arch3"),
                "--format",
                "json",
            ])
            .args(bounds),
    );
    let from_cli: Snapshot = serde_json::from_slice(&graph.stdout).unwrap();
    assert_eq!(from_cli.edges, expected.edges);

    // The CI check against a baseline of the DuckDB path passes on ClickHouse's buckets.
    let baseline = dir.path().join("architecture.json");
    std::fs::write(&baseline, serde_json::to_vec(&expected).unwrap()).unwrap();
    let check = succeeded(
        Command::new(binary())
            .args([
                "check",
                "--store",
                &clickhouse.address("arch1"),
                "--baseline",
            ])
            .arg(&baseline)
            .args(bounds),
    );
    assert!(!check.stdout.is_empty());
    // A baseline without one of the edges fails the check, naming it.
    let mut older = expected.clone();
    let dropped = older.edges.remove(0);
    std::fs::write(&baseline, serde_json::to_vec(&older).unwrap()).unwrap();
    let check = Command::new(binary())
        .args([
            "check",
            "--store",
            &clickhouse.address("arch1"),
            "--baseline",
        ])
        .arg(&baseline)
        .args(bounds)
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{verdict}");
    assert!(
        verdict.contains(&dropped.from) && verdict.contains(&dropped.to),
        "{verdict}"
    );

    // Hotspots read from ClickHouse are those read from the DuckDB store of the same spans.
    let hotspots = |source: &[&str]| {
        let output = succeeded(
            Command::new(binary())
                .arg("hotspots")
                .args(source)
                .args(["--format", "json"])
                .args(bounds),
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let duckdb_file = dir.path().join("expected.duckdb");
    let from_duckdb = hotspots(&["--db", duckdb_file.to_str().unwrap()]);
    assert!(
        from_duckdb.to_string().contains("frontend"),
        "{from_duckdb}"
    );
    assert_eq!(
        hotspots(&["--store", &clickhouse.address("arch3")]),
        from_duckdb
    );
    // The report names every node.
    let report = dir.path().join("report.html");
    succeeded(
        Command::new(binary())
            .args(["report", "--store", &clickhouse.address("arch3"), "-o"])
            .arg(&report)
            .args(bounds),
    );
    let report = std::fs::read_to_string(report).unwrap();
    for node in &expected.nodes {
        assert!(
            report.contains(&archtrace_analyzer::render::escape_markup(&node.id)),
            "the report does not name {}",
            node.id
        );
    }

    let mut viewer = Command::new(binary())
        .args(["serve", "--store", &clickhouse.address("arch3")])
        .args(["--admin-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut viewer);
    let admin = line
        .split_whitespace()
        .find_map(|part| part.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("startup line {line:?}"))
        .to_owned();
    let query = format!("since={}&until={}", rfc3339(since), rfc3339(until));
    let http = reqwest::blocking::Client::new();
    let api: Snapshot = http
        .get(format!("http://{admin}/api/v1/snapshot?{query}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(api.edges, expected.edges);
    let page = http.get(format!("http://{admin}/?{query}")).send().unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().unwrap();
    for node in &expected.nodes {
        assert!(
            page.contains(&archtrace_analyzer::render::escape_markup(&node.id)),
            "the overview does not name {}",
            node.id
        );
    }
    // And in a real browser, the drawing has every node.
    runtime.block_on(async {
        let (_driver, browser) = crate::browser::start_browser().await;
        crate::browser::open(&browser, &format!("http://{admin}/?{query}")).await;
        let drawn = crate::browser::count(&browser, "svg#graph g.node").await;
        assert!(drawn >= expected.nodes.len(), "{drawn} nodes drawn");
        browser.close().await.unwrap();
    });
    let _ = viewer.kill();
    let _ = viewer.wait();
}
