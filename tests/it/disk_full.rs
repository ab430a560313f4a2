//! A real full disk, under the request log or under the store: a small tmpfs mounted where one
//! of them lives (the other stays on a roomy disk). Log appends that hit ENOSPC are refused for
//! retry and the log is cut back to its last durable record; store commits that hit it are
//! retried from the log. Either way nothing acknowledged is lost, and everything resumes once
//! there is room again. Mounting needs root, which CI has; elsewhere these tests fail and say
//! so rather than passing without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use archtrace_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{batch, ids_of, span_ids, wait_for_metric, ServerProcess};

/// A tmpfs of `size` mounted on `at` for as long as it lives.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "this test mounts a {size} tmpfs to fill a disk for real, which needs root (CI runs \
             as root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk { at: at.to_owned() }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_for_retry_loses_nothing_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let disk = SmallDisk::mount(&archtrace_store::log::dir_of(&db), "8m");
    // Most of the small disk is taken by something else.
    let filler = disk.at.join("filler");
    std::fs::write(&filler, vec![1u8; 6 << 20]).unwrap();

    // No free space kept, so that the disk fills for real instead of being refused ahead.
    let mut server = ServerProcess::spawn(&db, &["--min-free-disk-bytes", "0"]);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for seed in 0..400 {
        let request = batch(seed);
        match client.export(request.clone()).await {
            Ok(_) => acknowledged.extend(ids_of(&request)),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("could not be written") && refused.message().contains("retry"),
        "{}",
        refused.message()
    );
    assert!(!acknowledged.is_empty());

    // Room again: the same server takes requests.
    std::fs::remove_file(&filler).unwrap();
    for seed in 1_000..1_010 {
        let request = batch(seed);
        client
            .export(request.clone())
            .await
            .expect("ingest resumes once there is room");
        acknowledged.extend(ids_of(&request));
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());

    // Exactly what was acknowledged, and a log a restart reads without cutting anything.
    acknowledged.sort();
    assert_eq!(span_ids(&Store::open_read_only(&db).unwrap()), acknowledged);
    let mut server = ServerProcess::spawn_with_stderr(&db, &[], std::process::Stdio::piped());
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());
    let mut said = String::new();
    std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert!(!said.contains("damaged tail"), "{said}");
    drop(disk);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_store_holds_its_commits_back_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("store"), "24m");
    let db = disk.at.join("spans.duckdb");
    // The log stays on the roomy disk, so requests are still acknowledged meanwhile.
    let log = dir.path().join("log");
    std::fs::create_dir(&log).unwrap();
    std::os::unix::fs::symlink(&log, archtrace_store::log::dir_of(&db)).unwrap();

    let mut server = ServerProcess::spawn(&db, &[]);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut send = async |seeds: std::ops::Range<u64>| {
        for seed in seeds {
            let request = batch(seed);
            client.export(request.clone()).await.unwrap();
            acknowledged.extend(ids_of(&request));
        }
    };
    send(0..20).await;
    // Everything else the small disk holds is taken: the write stops when it is full.
    let filler = disk.at.join("filler");
    let filled = std::fs::write(&filler, vec![1u8; 32 << 20]).unwrap_err();
    assert_eq!(filled.raw_os_error(), Some(28), "ENOSPC: {filled}");
    send(20..60).await;
    // The store's commits fail, more than once (the retry must not fail on the first).
    wait_for_metric(&server, "archtrace_store_commit_failures_total", 3.0).await;

    std::fs::remove_file(&filler).unwrap();
    send(60..70).await;
    server.signal("TERM");
    assert!(
        server.wait(Duration::from_secs(60)).success(),
        "the store takes the log once there is room"
    );
    drop(client);
    acknowledged.sort();
    assert_eq!(span_ids(&Store::open_read_only(&db).unwrap()), acknowledged);
    drop(disk);
}
