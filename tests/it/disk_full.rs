//! A real full disk under the request log: a small tmpfs mounted where the log lives (so the
//! store's own file stays on a roomy disk). Appends that hit ENOSPC are refused for retry, the
//! log is cut back to its last durable record, nothing acknowledged is lost, and ingest resumes
//! once there is room again. Mounting needs root, which CI has; elsewhere this test fails and
//! says so rather than passing without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use archtrace_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{batch, ids_of, span_ids, ServerProcess};

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
