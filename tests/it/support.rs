//! Helpers shared by the end-to-end tests: a real server (in-process or the real binary) on
//! port 0 over a real DuckDB file, and ways to read the store back.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use archtrace_analyzer::analysis::Analyzed;
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::Span;
use archtrace_collector::{BoundAddrs, Listeners, ServerSettings};
use archtrace_formats::import::{
    self, Conversion, Detail, Format, ImportError, OnBadInput, Source, Summary,
};
use archtrace_query::files::{FilesSource, ReadOptions};
use archtrace_query::{SnapshotSource, Window};
use archtrace_store::{Location, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Server settings that derive traces 100 ms after their last span, so tests need not wait.
pub fn quick_assembly() -> ServerSettings {
    ServerSettings {
        assembly: archtrace_collector::assembly::AssemblySettings {
            trace_idle: Duration::from_millis(100),
            ..Default::default()
        },
        ..ServerSettings::default()
    }
}

/// `serve` running inside the test process on its own DuckDB file.
pub struct InProcessServer {
    pub addrs: BoundAddrs,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<Store, archtrace_collector::ServeError>>,
    _dir: TempDir,
}

impl InProcessServer {
    pub async fn start(settings: ServerSettings) -> InProcessServer {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("spans.duckdb");
        let store = Store::open(&Location::File(db.clone())).unwrap();
        InProcessServer::serve(store, dir, settings).await
    }

    /// Serves a stopped server's store again, with other settings.
    pub async fn restart(stopped: Stopped, settings: ServerSettings) -> InProcessServer {
        InProcessServer::serve(stopped.store, stopped._dir, settings).await
    }

    async fn serve(store: Store, dir: TempDir, settings: ServerSettings) -> InProcessServer {
        let any = "127.0.0.1:0".parse().unwrap();
        let listeners = Listeners::bind(any, any, any).await.unwrap();
        let addrs = listeners.addrs().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(archtrace_collector::serve(
            store,
            listeners,
            settings,
            async {
                let _ = stopped.await;
            },
        ));
        InProcessServer {
            addrs,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/v1/traces", self.addrs.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.admin)
    }

    /// Polls the live graph of the last hour until `ready` holds (traces are derived once
    /// idle), and returns that snapshot; after 20 s, returns the last one seen.
    /// The line of `/metrics` that starts with `line_start` (a metric's name and labels).
    pub async fn metric_line(&self, line_start: &str) -> String {
        let metrics = reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in {metrics}"))
            .to_owned()
    }

    /// The live snapshot of the last hour once `ready` accepts it; fails the test when it has
    /// not within 20 s.
    pub async fn live_snapshot_when(&self, ready: impl Fn(&Snapshot) -> bool) -> Snapshot {
        self.snapshot_when("since=1h", ready).await
    }

    /// The snapshot API's answer to `query` (`since=…&until=…`, `at=…`) once `ready` accepts
    /// it; fails the test when it has not within 20 s.
    pub async fn snapshot_when(&self, query: &str, ready: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = reqwest::get(self.admin_url(&format!("/api/v1/snapshot?{query}")))
                .await
                .unwrap();
            assert!(response.status().is_success(), "{response:?}");
            let snapshot: Snapshot = response.json().await.unwrap();
            if ready(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "the live snapshot was not ready within 20 s; the last one:\n{snapshot:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shuts the server down gracefully and returns its store for inspection.
    pub async fn stop(mut self) -> Stopped {
        let _ = self.stop.take().unwrap().send(());
        let store = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic")
            .expect("server stopped cleanly");
        Stopped {
            store,
            _dir: self._dir,
        }
    }
}

/// A stopped server's store; the directory holding it lives as long as this does.
pub struct Stopped {
    pub store: Store,
    _dir: TempDir,
}

/// The `archtrace` binary built next to this test executable.
/// Runs a command to its end; a failure fails the test and shows the command's stderr.
pub fn succeeded(command: &mut Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Listener flags for `serve` and `demo` that let the system pick free ports.
pub const ANY_FREE_PORTS: [&str; 6] = [
    "--otlp-grpc-addr",
    "127.0.0.1:0",
    "--otlp-http-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
];

pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>/archtrace
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("archtrace{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --release --bin archtrace` \
         (the README's test command does)",
        path.display()
    );
    path
}

/// The first line a child writes to its piped standard output: the address it listens on.
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    line
}

/// The spans of one trace file, read as `import` reads it.
pub fn read_file(
    path: &Path,
    format: Option<Format>,
    on_bad: OnBadInput,
) -> Result<(Summary, Vec<Span>), ImportError> {
    let mut summary = Summary::default();
    let mut spans = Vec::new();
    import::read_source(
        Source::open(path).unwrap(),
        format,
        on_bad,
        &Conversion::new(Detail::Keep),
        Arc::new(AtomicU64::new(0)),
        &mut summary,
        &mut |batch| {
            spans.extend(batch);
            Ok(())
        },
    )?;
    Ok((summary, spans))
}

/// `archtrace serve` as a child process on port 0.
pub struct ServerProcess {
    pub child: Child,
    pub grpc: String,
    pub admin: String,
}

impl ServerProcess {
    pub fn spawn(db: &Path, extra: &[&str]) -> ServerProcess {
        ServerProcess::spawn_with_stderr(db, extra, Stdio::inherit())
    }

    /// Like [`ServerProcess::spawn`], with the server's log going to `stderr`.
    pub fn spawn_with_stderr(db: &Path, extra: &[&str], stderr: Stdio) -> ServerProcess {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--db"])
            .arg(db)
            .args(ANY_FREE_PORTS)
            .args(extra)
            .env_remove("ARCHTRACE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = command.spawn().expect("spawn archtrace serve");
        let line = first_line(&mut child);
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in startup line {line:?}"))
                .to_owned()
        };
        ServerProcess {
            grpc: format!("http://{}", field("otlp-grpc")),
            admin: format!("http://{}", field("admin")),
            child,
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn count(store: &Store, sql: &str) -> i64 {
    store
        .connection()
        .query_row(sql, [], |row| row.get(0))
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// Span ids (hex) in the store, sorted.
pub fn span_ids(store: &Store) -> Vec<String> {
    let mut statement = store
        .connection()
        .prepare("SELECT format('{:016x}', span_id) AS id FROM spans ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The JSON files of a folder of `shared/data`, sorted.
pub fn json_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_data(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

pub fn shared_data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(relative)
}

/// The analysed snapshot of trace files, as `graph --traces` sees them, and the spans read.
pub fn snapshot_from_files(files: &[PathBuf]) -> (Snapshot, u64) {
    let options = ReadOptions {
        format: None,
        on_bad: OnBadInput::Stop,
        multiplier_key: None,
    };
    let source = FilesSource::read(files, options).unwrap();
    let Analyzed { snapshot, .. } = source.analyzed(&Window::ALL, &Default::default()).unwrap();
    (snapshot, source.summary().spans)
}

/// 200 spans of the simulated shop, a second apart per seed from a fixed time in 2023.
pub fn batch(
    seed: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    archtrace_workload::shop::Simulation::starting_at(
        seed,
        1_700_000_000_000_000_000 + seed * 1_000_000_000,
    )
    .request_of_spans(200)
}

/// The span ids (hex) of a request, as [`span_ids`] lists them from a store.
pub fn ids_of(
    request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|span| hex::encode(&span.span_id))
        .collect()
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port no one listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls a server's `/metrics` until `name` is at least `at_least`.
pub async fn wait_for_metric(server: &ServerProcess, name: &str, at_least: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(format!("{}/metrics", server.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap();
        if value >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
