//! Nothing acknowledged is lost: the real binary is killed with SIGKILL and restarted on the
//! same DuckDB file. Also: SIGTERM drains, commits and exits 0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archtrace_store::Store;
use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::support::{batch, ids_of, span_ids, wait_for_metric, ServerProcess};

/// Four clients send `batch(base + worker * 10_000 + round)` as fast as they can; once
/// `acked_before_kill` batches are acknowledged, the server is killed with SIGKILL mid-flight.
/// Returns the seeds acknowledged.
async fn send_concurrently_until_killed(
    server: ServerProcess,
    base: u64,
    acked_before_kill: usize,
) -> Vec<u64> {
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut senders = Vec::new();
    for worker in 0..4u64 {
        let (url, acked) = (server.grpc.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.unwrap();
            for round in 0.. {
                let seed = base + worker * 10_000 + round;
                if client.export(batch(seed)).await.is_err() {
                    return;
                }
                acked.lock().unwrap().push(seed);
            }
        }));
    }
    while acked.lock().unwrap().len() < acked_before_kill {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut server = server;
    server.child.kill().unwrap();
    server.wait(Duration::from_secs(10));
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// Sends `batch(seed)` for each seed, one after another, each acknowledged before the next;
/// returns the span ids sent.
async fn send_batches(server: &ServerProcess, seeds: std::ops::Range<u64>) -> Vec<String> {
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut sent = Vec::new();
    for seed in seeds {
        let request = batch(seed);
        sent.extend(ids_of(&request));
        client.export(request).await.unwrap();
    }
    sent
}

/// The span ids in the store once a server has started on it again (replaying what its request
/// log holds beyond the store) and stopped cleanly.
fn stored_ids(db: &std::path::Path) -> Vec<String> {
    let mut server = ServerProcess::spawn(db, &[]);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    span_ids(&Store::open_read_only(db).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_spans_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");

    // Sequential batches: every sent batch is acknowledged before the kill.
    let mut server = ServerProcess::spawn(&db, &[]);
    let mut acknowledged = send_batches(&server, 0..20).await;
    server.child.kill().unwrap();
    server.wait(Duration::from_secs(10));
    acknowledged.sort();
    assert_eq!(
        stored_ids(&db),
        acknowledged,
        "exactly the acknowledged spans"
    );

    // Concurrent batches, killed mid-flight: every acknowledged batch is there, and each batch is
    // all or nothing.
    let server = ServerProcess::spawn(&db, &[]);
    let acked = send_concurrently_until_killed(server, 1_000, 40).await;
    let stored: BTreeSet<String> = stored_ids(&db).into_iter().collect();
    for &seed in &acked {
        for id in ids_of(&batch(seed)) {
            assert!(
                stored.contains(&id),
                "span {id} of acknowledged batch {seed} is lost"
            );
        }
    }
    let mut accounted: BTreeSet<String> = acknowledged.into_iter().collect();
    for worker in 0..4u64 {
        for round in 0..(acked.len() as u64 + 8) {
            let ids = ids_of(&batch(1_000 + worker * 10_000 + round));
            let present = ids.iter().filter(|id| stored.contains(*id)).count();
            assert!(
                present == 0 || present == ids.len(),
                "batch stored partly: {present} of {}",
                ids.len()
            );
            accounted.extend(ids.into_iter().filter(|id| stored.contains(id)));
        }
    }
    assert_eq!(
        accounted, stored,
        "the store holds nothing that was not sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_commits_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let mut server = ServerProcess::spawn(&db, &[]);
    let mut sent = send_batches(&server, 0..5).await;
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    sent.sort();
    assert_eq!(stored_ids(&db), sent);
    assert!(
        !dir.path().join("spans.duckdb.wal").exists(),
        "a clean shutdown checkpoints the write-ahead log into the file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_log_tail_is_cut_reported_and_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let mut server = ServerProcess::spawn(&db, &[]);
    let mut acknowledged = send_batches(&server, 0..5).await;
    server.child.kill().unwrap();
    server.wait(Duration::from_secs(10));
    // A write torn by the crash: half a record header after the last whole record.
    let log_dir = dir.path().join("spans.duckdb.log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let mut file = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut file, &[0xff; 9]).unwrap();
    drop(file);

    let stderr = dir.path().join("stderr.txt");
    let mut server =
        ServerProcess::spawn_with_stderr(&db, &[], std::fs::File::create(&stderr).unwrap().into());
    // It serves again...
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let request = batch(99);
    acknowledged.extend(ids_of(&request));
    client.export(request).await.unwrap();
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    // ...said what it cut...
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(said.contains("damaged tail"), "{said}");
    assert!(said.contains("dropped_bytes=9"), "{said}");
    // ...and lost nothing that was acknowledged.
    acknowledged.sort();
    assert_eq!(span_ids(&Store::open_read_only(&db).unwrap()), acknowledged);
}

/// A request logged by an archtrace that took what prost decodes: a value nested 40 arrays
/// deep, past what the receivers take today. At an upgrade it is still in the log, acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn a_logged_request_nested_deeper_than_receivers_take_now_is_still_stored() {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let mut server = ServerProcess::spawn(&db, &[]);
    let mut acknowledged = send_batches(&server, 0..2).await;
    server.child.kill().unwrap();
    server.wait(Duration::from_secs(10));

    let mut deep = batch(7);
    let bottom = AnyValue {
        value: Some(any_value::Value::StringValue("bottom".into())),
    };
    let nested = (0..40).fold(bottom, |inner, _| AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![inner],
        })),
    });
    deep.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(KeyValue {
            key: "deep".into(),
            value: Some(nested),
            key_strindex: 0,
        });
    let bytes = prost::Message::encode_to_vec(&deep);
    let (mut log, cut) =
        archtrace_store::log::LogWriter::open(&archtrace_store::log::dir_of(&db), 64 << 20, 0)
            .unwrap();
    assert!(cut.is_none());
    log.append(1_700_000_000_000_000_000, &bytes).unwrap();
    log.sync().unwrap();
    drop(log);
    // Today's receivers refuse it, so it can only have come from an older log.
    let mut server = ServerProcess::spawn(&db, &[]);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let refused = client.export(deep.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("recursion limit"), "{refused:?}");
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());

    acknowledged.extend(ids_of(&deep));
    acknowledged.sort();
    let store = Store::open_read_only(&db).unwrap();
    assert_eq!(span_ids(&store), acknowledged);
    let span_id = hex::encode(&deep.resource_spans[0].scope_spans[0].spans[0].span_id);
    let attributes: String = store
        .connection()
        .query_row(
            "SELECT attributes FROM spans WHERE format('{:016x}', span_id) = ?",
            [&span_id],
            |row| row.get(0),
        )
        .unwrap();
    let attributes: serde_json::Value = serde_json::from_str(&attributes).unwrap();
    assert!(
        attributes["deep"].to_string().contains("bottom"),
        "{attributes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_folder_deleted_while_serving_is_refused_for_good_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let stderr = dir.path().join("stderr.txt");
    let mut server =
        ServerProcess::spawn_with_stderr(&db, &[], std::fs::File::create(&stderr).unwrap().into());
    let mut acknowledged = send_batches(&server, 0..3).await;
    wait_for_metric(
        &server,
        "archtrace_spans_loaded_total",
        acknowledged.len() as f64,
    )
    .await;

    std::fs::remove_dir_all(archtrace_store::log::dir_of(&db)).unwrap();
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    // The segment written to is gone: nothing written to it is durable, so nothing is
    // acknowledged, this request or any later one.
    for seed in 3..5 {
        let refused = client
            .export(batch(seed))
            .await
            .expect_err("a request logged into a deleted segment is not acknowledged");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("until restarted"),
            "{}",
            refused.message()
        );
    }
    let ready = reqwest::get(format!("{}/readyz", server.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().await.unwrap().contains("restart archtrace"));

    // It still stops cleanly, with what it acknowledged stored...
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        said.contains("was deleted while archtrace wrote it"),
        "{said}"
    );
    acknowledged.sort();
    assert_eq!(span_ids(&Store::open_read_only(&db).unwrap()), acknowledged);
    // ...and a restart begins a new log and takes requests again.
    let mut server = ServerProcess::spawn(&db, &[]);
    let request = batch(7);
    acknowledged.extend(ids_of(&request));
    TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap()
        .export(request)
        .await
        .unwrap();
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    acknowledged.sort();
    assert_eq!(span_ids(&Store::open_read_only(&db).unwrap()), acknowledged);
}

/// The edges of a stopped server's store in a window: (from, to, kind, calls, errors).
fn derived_edges(db: &std::path::Path, since: &str, until: &str) -> Vec<String> {
    let output = crate::support::succeeded(
        std::process::Command::new(crate::support::binary())
            .args([
                "graph", "--format", "json", "--since", since, "--until", until, "--db",
            ])
            .arg(db),
    );
    let snapshot: archtrace_analyzer::snapshot::Snapshot =
        serde_json::from_slice(&output.stdout).unwrap();
    snapshot
        .edges
        .iter()
        .map(|e| {
            format!(
                "{} -> {} {:?} {} {}",
                e.from, e.to, e.kind, e.calls, e.errors
            )
        })
        .collect()
}

/// Calls per edge in the stored buckets of one width: (bucket, from, to, calls, errors).
fn bucket_rows(db: &std::path::Path, width_s: i64) -> Vec<(i64, String, String, i64, i64)> {
    let store = Store::open_read_only(db).unwrap();
    let mut statement = store
        .connection()
        .prepare(
            "SELECT bucket_ns, source, target, sum(calls)::BIGINT, sum(errors)::BIGINT
             FROM edge_buckets WHERE width_s = ? GROUP BY ALL ORDER BY ALL",
        )
        .unwrap();
    statement
        .query_map([width_s], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The edges ("from -> to") that the traces stored in a store make on their own.
fn edges_of_stored_traces(db: &std::path::Path) -> BTreeSet<String> {
    let store = Store::open_read_only(db).unwrap();
    let mut groups = archtrace_analyzer::aggregate::TraceGroups::default();
    store
        .reader()
        .unwrap()
        .for_each_trace(i64::MIN, i64::MAX, &mut |trace| groups.push(trace.to_vec()))
        .unwrap();
    groups
        .aggregate(None)
        .edges
        .keys()
        .map(|key| format!("{} -> {}", key.from, key.to))
        .collect()
}

async fn send(server: &ServerProcess, batches: &[ExportTraceServiceRequest]) {
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    for batch in batches {
        client.export(batch.clone()).await.unwrap();
    }
}

/// Traces wait 10 s for more spans: checkpoints hold traces not yet derived.
const SLOW_ASSEMBLY: [&str; 2] = ["--trace-idle", "10s"];

/// `batches` sent to a server killed three times: after checkpoints that hold derived buckets
/// not yet closed, after one that holds traces not yet derived (with more in the log beyond
/// it), and before any checkpoint; then stopped cleanly.
async fn crashed_run(db: &std::path::Path, spans: &str, batches: &[ExportTraceServiceRequest]) {
    let flags = [SLOW_ASSEMBLY[0], SLOW_ASSEMBLY[1], "--spans", spans];
    let checkpoints = "archtrace_deriver_checkpoints_total";
    let mut server = ServerProcess::spawn(db, &flags);
    send(&server, &batches[..3]).await;
    // The first commits the traces waiting; the second, once they are derived, their closed
    // minute buckets, with the hour's bucket still open.
    wait_for_metric(&server, checkpoints, 2.0).await;
    send(&server, &batches[3..5]).await;
    wait_for_metric(&server, checkpoints, 3.0).await;
    send(&server, &batches[5..6]).await;
    server.child.kill().unwrap();
    server.wait(Duration::from_secs(10));
    let mut server = ServerProcess::spawn(db, &flags);
    send(&server, &batches[6..9]).await;
    server.child.kill().unwrap();
    server.wait(Duration::from_secs(10));
    let mut server = ServerProcess::spawn(db, &flags);
    send(&server, &batches[9..]).await;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn derived_edges_after_kill_9_equal_an_uninterrupted_run_whatever_spans_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Minutes old: the minute buckets close at once, the hour's stays open in memory.
    let start = archtrace_analyzer::time::now_ns() as u64 - 3 * 60_000_000_000;
    let batches: Vec<ExportTraceServiceRequest> = (0..12)
        .map(|i| Simulation::starting_at(500 + i, start + i * 1_000_000_000).request_of_spans(300))
        .collect();

    let calm = dir.path().join("calm.duckdb");
    let mut server = ServerProcess::spawn(&calm, &SLOW_ASSEMBLY);
    send(&server, &batches).await;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let expected = derived_edges(&calm, "6h", "10s");
    assert!(expected.len() >= 20, "{expected:#?}");
    let calm_spans = span_ids(&Store::open_read_only(&calm).unwrap());

    let modes = ["all", "sampled", "none"];
    let crashed: Vec<std::path::PathBuf> = modes
        .iter()
        .map(|spans| dir.path().join(format!("crashed-{spans}.duckdb")))
        .collect();
    tokio::join!(
        crashed_run(&crashed[0], modes[0], &batches),
        crashed_run(&crashed[1], modes[1], &batches),
        crashed_run(&crashed[2], modes[2], &batches),
    );
    for (spans, crashed) in modes.into_iter().zip(&crashed) {
        assert_eq!(
            derived_edges(crashed, "6h", "10s"),
            expected,
            "--spans {spans}"
        );
        for width_s in [60, 3600] {
            assert_eq!(
                bucket_rows(crashed, width_s),
                bucket_rows(&calm, width_s),
                "--spans {spans}: {width_s} s buckets"
            );
        }
        let stored = span_ids(&Store::open_read_only(crashed).unwrap());
        match spans {
            "all" => assert_eq!(stored, calm_spans),
            "none" => assert!(stored.is_empty(), "{} spans stored", stored.len()),
            _ => {
                assert!(
                    !stored.is_empty()
                        && stored.len() < calm_spans.len()
                        && stored.iter().all(|id| calm_spans.binary_search(id).is_ok()),
                    "a sample of the spans: {} of {}",
                    stored.len(),
                    calm_spans.len()
                );
                assert_eq!(
                    edges_of_stored_traces(crashed),
                    expected
                        .iter()
                        .map(|edge| edge.split(' ').take(3).collect::<Vec<_>>().join(" "))
                        .collect(),
                    "every edge has example traces in the sample"
                );
            }
        }
        assert_eq!(
            Store::open_read_only(crashed).unwrap().underived().unwrap(),
            None,
            "nothing left for a rebuild"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn derived_edges_after_kill_9_under_concurrent_load_equal_a_run_of_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = dir.path().join("crashed.duckdb");
    let server = ServerProcess::spawn(&crashed, &["--trace-idle", "100ms"]);
    let acked = send_concurrently_until_killed(server, 2_000, 30).await;
    // Restarted and stopped: what the log held is stored, and what was in memory is derived.
    let stored: BTreeSet<String> = stored_ids(&crashed).into_iter().collect();
    let rounds = acked.len() as u64 + 8;
    let stored_batches: Vec<u64> = (0..4u64)
        .flat_map(|worker| (0..rounds).map(move |round| 2_000 + worker * 10_000 + round))
        .filter(|seed| ids_of(&batch(*seed)).iter().all(|id| stored.contains(id)))
        .collect();
    for seed in &acked {
        assert!(
            stored_batches.contains(seed),
            "acknowledged batch {seed} is stored"
        );
    }

    // The batches that were stored, sent to a server that is never interrupted.
    let calm = dir.path().join("calm.duckdb");
    let mut server = ServerProcess::spawn(&calm, &["--trace-idle", "100ms"]);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    for seed in &stored_batches {
        client.export(batch(*seed)).await.unwrap();
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());

    let window = ("2023-11-14T00:00:00Z", "2023-11-16T00:00:00Z");
    let expected = derived_edges(&calm, window.0, window.1);
    assert!(expected.len() >= 20, "{expected:#?}");
    assert_eq!(derived_edges(&crashed, window.0, window.1), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_what_spans_are_kept_between_runs_keeps_the_graph_whole() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<ExportTraceServiceRequest> = (0..12).map(|i| batch(700 + i)).collect();
    let fast = ["--trace-idle", "100ms"];
    let run = |db: std::path::PathBuf,
               spans: &'static str,
               batches: Vec<ExportTraceServiceRequest>| async move {
        let mut server = ServerProcess::spawn(&db, &[fast[0], fast[1], "--spans", spans]);
        send(&server, &batches).await;
        server.signal("TERM");
        assert!(server.wait(Duration::from_secs(30)).success());
    };
    let calm = dir.path().join("calm.duckdb");
    run(calm.clone(), "all", batches.clone()).await;
    let switched = dir.path().join("switched.duckdb");
    run(switched.clone(), "all", batches[..4].to_vec()).await;
    run(switched.clone(), "none", batches[4..8].to_vec()).await;
    run(switched.clone(), "all", batches[8..].to_vec()).await;

    let window = ("2023-11-14T00:00:00Z", "2023-11-16T00:00:00Z");
    let expected = derived_edges(&calm, window.0, window.1);
    assert!(expected.len() >= 20, "{expected:#?}");
    assert_eq!(derived_edges(&switched, window.0, window.1), expected);
    let mut kept: Vec<String> = batches[..4]
        .iter()
        .chain(&batches[8..])
        .flat_map(ids_of)
        .collect();
    kept.sort();
    assert_eq!(span_ids(&Store::open_read_only(&switched).unwrap()), kept);
    let stats = Store::open_read_only(&switched).unwrap().stats().unwrap();
    assert_eq!(
        stats.log_unloaded_bytes, 0,
        "nothing left behind in the log"
    );
}

/// The value of a `/metrics` line that starts with `line_start`.
async fn metric(server: &crate::support::InProcessServer, line_start: &str) -> f64 {
    let line = server.metric_line(line_start).await;
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_the_log_and_each_consumer_catching_up() {
    let server = crate::support::InProcessServer::start(crate::support::quick_assembly()).await;
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    client.export(batch(900)).await.unwrap();
    assert!(metric(&server, "archtrace_log_bytes ").await > 0.0);
    assert!(metric(&server, "archtrace_log_fsync_seconds_count ").await >= 1.0);
    // One request acknowledged, timed once, and its time includes at least one fsync.
    assert_eq!(
        metric(&server, "archtrace_ingest_acknowledge_seconds_count ").await,
        1.0
    );
    assert!(
        metric(&server, "archtrace_ingest_acknowledge_seconds_sum ").await
            >= metric(&server, "archtrace_log_fsync_seconds_sum ").await
    );
    // Both consumers commit what the log holds: the loader at once, the deriver at its next
    // checkpoint (every 5 s). The deriver reads it at once, so it is not behind meanwhile.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut read_before_committed = false;
    loop {
        let spans = metric(
            &server,
            "archtrace_log_consumer_lag_bytes{consumer=\"spans\"}",
        )
        .await;
        let derive = metric(
            &server,
            "archtrace_log_consumer_lag_bytes{consumer=\"derive\"}",
        )
        .await;
        let derive_unread = metric(
            &server,
            "archtrace_log_consumer_unread_bytes{consumer=\"derive\"}",
        )
        .await;
        assert!(derive_unread <= derive, "{derive_unread} > {derive}");
        read_before_committed |= derive_unread == 0.0 && derive > 0.0;
        if spans == 0.0 && derive == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lags {spans} and {derive} bytes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        read_before_committed,
        "the deriver's unread bytes were never below its lag"
    );
    assert_eq!(
        metric(
            &server,
            "archtrace_log_consumer_unread_bytes{consumer=\"spans\"}"
        )
        .await,
        0.0
    );
    assert_eq!(metric(&server, "archtrace_log_lag_bytes ").await, 0.0);
    assert_eq!(
        metric(
            &server,
            "archtrace_log_consumer_lag_seconds{consumer=\"derive\"}"
        )
        .await,
        0.0
    );
    assert!(metric(&server, "archtrace_deriver_checkpoints_total ").await >= 1.0);
    assert_eq!(
        metric(&server, "archtrace_spans_loaded_total ").await,
        archtrace_formats::otlp::span_count(&batch(900)) as f64
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deriver_state_file_of_another_version_is_set_aside_and_the_graph_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let (since, until) = ("2023-11-14T22:00:00Z", "2023-11-14T23:00:00Z");
    let mut server = ServerProcess::spawn(&db, &[]);
    send_batches(&server, 0..5).await;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let before = derived_edges(&db, since, until);
    assert!(!before.is_empty());

    // What an archtrace before the state files' format line left: postcard bytes alone.
    let state_files: Vec<_> = std::fs::read_dir(dir.path().join("spans.duckdb.log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "state"))
        .collect();
    assert_eq!(state_files.len(), 1, "{state_files:?}");
    std::fs::write(&state_files[0], [0x02, 0x00, 0x05, 0x01, 0x07]).unwrap();

    let stderr = dir.path().join("stderr.txt");
    let mut server =
        ServerProcess::spawn_with_stderr(&db, &[], std::fs::File::create(&stderr).unwrap().into());
    send_batches(&server, 5..6).await;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        said.contains("was written by another version of archtrace"),
        "{said}"
    );
    // The buckets a clean stop wrote are all there, with the new batch's calls added.
    let calls = |edges: &[String]| -> BTreeMap<String, u64> {
        edges
            .iter()
            .map(|line| {
                let parts: Vec<&str> = line.rsplitn(3, ' ').collect();
                (parts[2].to_owned(), parts[1].parse().unwrap())
            })
            .collect()
    };
    let (before, after) = (calls(&before), calls(&derived_edges(&db, since, until)));
    for (edge, calls) in &before {
        assert!(
            after.get(edge).is_some_and(|now| now >= calls),
            "{edge}: {after:?}"
        );
    }
    assert!(after.values().sum::<u64>() > before.values().sum::<u64>());
}
