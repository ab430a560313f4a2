//! The `archtrace` binary: command-line definitions and glue. The work happens in the library
//! crates.

mod config;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use archtrace_analyzer::rules::Rules;
use archtrace_analyzer::snapshot::{Snapshot, SNAPSHOT_SCHEMA};
use archtrace_analyzer::{check_output, drift, render};
use archtrace_collector::import::{
    self, Detail, ImportError, OnBadInput, Source, StoreSink, Summary,
};
use archtrace_collector::loadgen::{self, LoadgenOptions, Protocol};
use archtrace_collector::Listeners;
use archtrace_store::{Location, Store, StoreStats};
use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Learns the runtime architecture of a distributed system from its \
OpenTelemetry traces, and tells where it is coupled and risky.";

#[derive(Parser)]
#[command(name = "archtrace", version, about = ABOUT, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. `info`, `debug`, `archtrace_collector=debug` (RUST_LOG syntax).
    #[arg(long, global = true, env = "ARCHTRACE_LOG", default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP traces (gRPC on 4317, HTTP on 4318) and store them in DuckDB.
    ///
    /// Point any OpenTelemetry SDK or Collector at it:
    ///   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317
    /// Health, readiness and Prometheus metrics are on the admin listener (4320).
    /// Stop it with Ctrl-C or SIGTERM: it drains and commits what it acknowledged.
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Run the server with a simulated online shop sending it traces, to explore the web viewer.
    ///
    /// Starts `serve` on a temporary store (unless --db is given) and a built-in simulation of
    /// ~15 services (gateway, frontend, cart, checkout, payment, a queue and its consumers,
    /// PostgreSQL, Redis, an external payment API) exporting real OTLP to it, with a cycle, a
    /// shared database and an N+1 edge to find. Prints the viewer's URL; Ctrl-C stops it.
    #[command(verbatim_doc_comment)]
    Demo(DemoArgs),
    /// Write a self-contained HTML report: overview, graph, hotspots, findings and charts.
    ///
    /// One file with nothing to fetch, e.g. a CI artifact:
    ///   archtrace report --traces dump.jsonl -o report.html
    ///   archtrace report --db archtrace.duckdb --since 24h -o report.html
    #[command(verbatim_doc_comment)]
    Report(ReportArgs),
    /// Load trace files into the store: OTLP/JSON (also one request per line, as the
    /// OpenTelemetry Collector's file exporter writes), OTLP protobuf, Jaeger JSON, Zipkin v2 JSON.
    ///
    /// The format is detected from the content, gzip from its magic bytes; `-` reads standard
    /// input. Examples:
    ///   archtrace import traces/*.json
    ///   archtrace import --format zipkin dump.json.gz
    ///   cat spans.jsonl | archtrace import -
    #[command(verbatim_doc_comment)]
    Import(ImportArgs),
    /// Show what a store holds: spans, traces, services, time range.
    #[command(verbatim_doc_comment)]
    Stats(StatsArgs),
    /// Derive the edges of a time window again from the raw spans in the store.
    ///
    /// Replaces the derived edges of the whole hours covering the window, e.g. after a change of
    /// archtrace's derivation rules:
    ///   archtrace rebuild --since 24h
    #[command(verbatim_doc_comment)]
    Rebuild(RebuildArgs),
    /// Show the service-dependency graph derived from the traces.
    ///
    /// From the store (default ./archtrace.duckdb, last hour), from a running server, or offline
    /// from trace files with no store at all:
    ///   archtrace graph
    ///   archtrace graph --server http://127.0.0.1:4320
    ///   archtrace graph --traces dump.jsonl jaeger/*.json
    ///   archtrace graph --since 2h --until 1h --level operation --format mermaid
    #[command(verbatim_doc_comment)]
    Graph(GraphArgs),
    /// Rank services by risk and say why: cycles, reach, coupling, errors, single points of failure.
    ///
    /// score = reach × coupling × health + cycle + spof, where
    ///   reach    = 1 + blast radius (services depending on it) + 10 × share of entry points affected
    ///   coupling = 1 + ln(1 + fan-in × fan-out)
    ///   health   = 1 + 10 × error rate of the calls into it
    ///   cycle    = 10 in a synchronous cycle, 3 in a cycle through a queue
    ///   spof     = 5 when every entry path to 2+ other nodes passes through it
    /// Examples:
    ///   archtrace hotspots --traces dump.jsonl --top 5
    ///   archtrace hotspots --server http://127.0.0.1:4320 --format markdown
    #[command(verbatim_doc_comment)]
    Hotspots(HotspotsArgs),
    /// Write the architecture seen in a window as a snapshot file, e.g. the baseline for `check`.
    ///
    /// The snapshot is the JSON of `graph --format json` (schema archtrace.snapshot/v1), sorted so
    /// that it diffs well in git:
    ///   archtrace snapshot --traces e2e-traces.jsonl -o architecture.json
    ///   archtrace snapshot --server http://127.0.0.1:4320 --since 15m -o architecture.json
    #[command(verbatim_doc_comment)]
    Snapshot(SnapshotArgs),
    /// Fail the build when the observed architecture drifts from the baseline or breaks the rules.
    ///
    /// Compares the snapshot of the traces (files, a server or the store) with a baseline
    /// snapshot: new and removed edges and nodes, new cycles, new findings, and the rules of
    /// archtrace.toml (deny, allow_only, layers, limits). Violations the baseline already has
    /// are reported as known and do not fail. Without a rules file a new edge or a new cycle
    /// fails. Exit codes: 0 clean, 1 violations at error severity, 2 usage or input error.
    ///   archtrace check --traces e2e-traces.jsonl --baseline architecture.json --rules archtrace.toml
    ///   archtrace check --server http://127.0.0.1:4320 --since 15m --baseline architecture.json
    ///   archtrace check --traces t.jsonl --baseline architecture.json --format sarif -o check.sarif
    /// See docs/ci.md for the rules and CI set-ups.
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
    /// Show what changed between two snapshot files: nodes, edges and findings.
    ///
    ///   archtrace diff old.json new.json --format markdown
    #[command(verbatim_doc_comment)]
    Diff(DiffArgs),
    /// Send synthetic OTLP load to a running server and report accepted spans/s and latency.
    ///
    /// Payloads (a dozen services, HTTP/RPC/DB/messaging attributes) are encoded before the
    /// clock starts. The report ends with the rate at which one thread decodes and converts the
    /// same payloads, so ingest can be compared with decode alone from one run.
    #[command(verbatim_doc_comment)]
    Loadgen(LoadgenArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (keys are the flag names with `_` for `-`).
    #[arg(long, env = "ARCHTRACE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// DuckDB file to store spans in; `:memory:` keeps them in memory only. [default: ./archtrace.duckdb]
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// OTLP/gRPC listen address. [default: 127.0.0.1:4317]
    #[arg(long, env = "ARCHTRACE_OTLP_GRPC_ADDR", value_name = "ADDR")]
    otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address. [default: 127.0.0.1:4318]
    #[arg(long, env = "ARCHTRACE_OTLP_HTTP_ADDR", value_name = "ADDR")]
    otlp_http_addr: Option<SocketAddr>,
    /// Admin listener: /healthz, /readyz, /metrics. [default: 127.0.0.1:4320]
    #[arg(long, env = "ARCHTRACE_ADMIN_ADDR", value_name = "ADDR")]
    admin_addr: Option<SocketAddr>,
    /// File holding a bearer token that OTLP and admin requests must carry.
    #[arg(long, env = "ARCHTRACE_AUTH_TOKEN_FILE", value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// Largest request accepted, in bytes after decompression. [default: 16777216]
    #[arg(long, env = "ARCHTRACE_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Spans that may wait for the writer before requests are refused with UNAVAILABLE/503. [default: 262144]
    #[arg(long, env = "ARCHTRACE_QUEUE_MAX_SPANS", value_name = "SPANS")]
    queue_max_spans: Option<usize>,
    /// Memory that spans waiting for the writer may take before requests are refused (about
    /// 2-3 times their encoded size). [default: 67108864]
    #[arg(long, env = "ARCHTRACE_QUEUE_MAX_BYTES", value_name = "BYTES")]
    queue_max_bytes: Option<usize>,
    /// Requests handled at once over both transports; more are refused as overloaded
    /// (UNAVAILABLE / 503) before their bodies are decoded, which bounds memory. [default: 64]
    #[arg(long, env = "ARCHTRACE_MAX_REQUESTS_IN_FLIGHT", value_name = "N")]
    max_requests_in_flight: Option<usize>,
    /// A trace is derived into the graph once none of its spans has arrived for this long. [default: 5s]
    #[arg(long, env = "ARCHTRACE_TRACE_IDLE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    trace_idle: Option<Duration>,
    /// How long derived spans are remembered, so that late spans still pair. [default: 60s]
    #[arg(long, env = "ARCHTRACE_LATE_WINDOW", value_name = "DURATION", value_parser = humantime::parse_duration)]
    late_window: Option<Duration>,
    /// Only store spans; derive the graph later with `archtrace rebuild`.
    #[arg(long)]
    no_derive: bool,
    /// A snapshot (from `archtrace snapshot`) that the viewer's drift page compares with.
    #[arg(long, env = "ARCHTRACE_BASELINE", value_name = "FILE")]
    baseline: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Simulated user requests per second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    requests_per_second: u32,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The HTML file to write.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "report.html")]
    output: PathBuf,
}

#[derive(Args)]
struct ImportArgs {
    /// Trace files to import; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The DuckDB store to import into (created if missing). Stop `archtrace serve` on it first.
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH", default_value = config::DEFAULT_DB)]
    db: PathBuf,
    /// Input format; detected from the content when not given.
    #[arg(long, value_enum)]
    format: Option<InputFormat>,
    /// Skip what cannot be read (a line, a trace, a span, or the rest of a file after a syntax
    /// error), count it, and import everything else.
    #[arg(long)]
    keep_going: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum InputFormat {
    OtlpJson,
    OtlpProtobuf,
    Jaeger,
    Zipkin,
}

impl From<InputFormat> for import::Format {
    fn from(format: InputFormat) -> Self {
        match format {
            InputFormat::OtlpJson => import::Format::OtlpJson,
            InputFormat::OtlpProtobuf => import::Format::OtlpProtobuf,
            InputFormat::Jaeger => import::Format::Jaeger,
            InputFormat::Zipkin => import::Format::Zipkin,
        }
    }
}

/// Where a snapshot comes from: trace files, a running server, or the store.
#[derive(Args)]
struct SourceArgs {
    /// Trace files to analyse offline (any format `import` reads); no store is used.
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with_all = ["server", "db"])]
    traces: Vec<PathBuf>,
    /// Admin address of a running `archtrace serve` (it holds the store's lock).
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    server: Option<String>,
    /// The DuckDB store to read. [default: ./archtrace.duckdb]
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// Window start: a duration before now (`2h`) or an RFC 3339 time.
    /// [default: 1h; with --traces, all of the input]
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Window end, like --since. [default: now; with --traces, all of the input]
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Format of the --traces files; detected from the content when not given.
    #[arg(long, value_enum, value_name = "FORMAT")]
    input_format: Option<InputFormat>,
    /// With --traces: skip what cannot be read instead of stopping.
    #[arg(long)]
    keep_going: bool,
    /// File holding the server's bearer token, for --server.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
}

#[derive(Args)]
struct GraphArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// One node per service, or one per endpoint (service and operation).
    #[arg(long, value_enum, default_value_t = LevelArg::Service)]
    level: LevelArg,
    /// table for a terminal, json (the snapshot), dot for Graphviz, mermaid for GitHub comments.
    #[arg(long, value_enum, default_value_t = GraphFormat::Table)]
    format: GraphFormat,
}

#[derive(Args)]
struct HotspotsArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// How many services to list.
    #[arg(long, default_value_t = 10)]
    top: usize,
    #[arg(long, value_enum, default_value_t = HotspotFormat::Table)]
    format: HotspotFormat,
    /// TOML file of finding thresholds (hub_min_fan_in, chatty_min_calls_per_trace, ...);
    /// unset keys keep their defaults.
    #[arg(long, value_name = "FILE")]
    thresholds: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum HotspotFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Args)]
struct SnapshotArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Write the snapshot to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The expected architecture: a snapshot file written by `archtrace snapshot`.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Architecture rules (TOML). [default: ./archtrace.toml when it exists]
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// text (colour on a terminal), markdown (a PR comment with a diagram of the change), json,
    /// junit (one test case per rule), sarif (2.1.0) or github (workflow annotations).
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
    /// Write the report to this file; the verdict still goes to standard error.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Accept what was observed: rewrite the baseline with it (new edges become expected,
    /// fixed violations leave it) and exit 0.
    #[arg(long, requires = "baseline")]
    update_baseline: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CheckFormat {
    Text,
    Markdown,
    Json,
    Junit,
    Sarif,
    Github,
}

#[derive(Args)]
struct DiffArgs {
    /// The older snapshot file.
    old: PathBuf,
    /// The newer snapshot file.
    new: PathBuf,
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    format: DiffFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum DiffFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Args)]
struct RebuildArgs {
    /// The DuckDB store (stop `archtrace serve` on it first).
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH", default_value = config::DEFAULT_DB)]
    db: PathBuf,
    /// Window start: a duration before now (`24h`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: String,
    /// Window end, like --since. [default: now]
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LevelArg {
    Service,
    Operation,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Table,
    Json,
    Dot,
    Mermaid,
}

#[derive(Args)]
struct StatsArgs {
    /// The DuckDB store to read.
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH", default_value = config::DEFAULT_DB)]
    db: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

#[derive(Args)]
struct LoadgenArgs {
    /// Server address. [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for HTTP]
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[arg(long, value_enum, default_value_t = LoadProtocol::Grpc)]
    protocol: LoadProtocol,
    /// Spans in each export request (whole traces, so a few more may be sent).
    #[arg(long, default_value_t = 512)]
    spans_per_request: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Spans per second to offer; without it, sends as fast as the server accepts.
    #[arg(long, value_name = "SPANS_PER_SEC")]
    rate: Option<f64>,
    /// How long to send, e.g. `10s`, `1m`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Distinct pre-encoded requests to cycle through.
    #[arg(long, default_value_t = 32)]
    distinct_requests: usize,
    /// File holding the server's bearer token.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let outcome = match cli.command {
        Command::Check(args) => check(args),
        Command::Serve(args) => serve(args, None).map(|()| 0),
        Command::Demo(args) => demo(args).map(|()| 0),
        Command::Report(args) => report(args).map(|()| 0),
        Command::Import(args) => import_files(args).map(|()| 0),
        Command::Stats(args) => stats(args).map(|()| 0),
        Command::Graph(args) => graph(args).map(|()| 0),
        Command::Hotspots(args) => hotspots(args).map(|()| 0),
        Command::Rebuild(args) => rebuild(args).map(|()| 0),
        Command::Snapshot(args) => write_snapshot(args).map(|()| 0),
        Command::Diff(args) => diff(args).map(|()| 0),
        Command::Loadgen(args) => run_loadgen(args).map(|()| 0),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

fn demo(mut args: DemoArgs) -> anyhow::Result<()> {
    // A temporary store, removed when the demo ends, unless the user named one.
    let dir =
        tempfile::tempdir().context("could not create a temporary directory for the demo store")?;
    if args.serve.db.is_none() {
        args.serve.db = Some(dir.path().join("demo.duckdb"));
    }
    serve(args.serve, Some(args.requests_per_second))
}

/// Runs the server; with `demo_rate`, also the simulated shop sending it that many requests a
/// second.
fn serve(args: ServeArgs, demo_rate: Option<u32>) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::FileConfig::load(path)?,
        None => config::FileConfig::default(),
    };
    let mut config = config::resolve(
        file,
        config::Overrides {
            db: args.db,
            otlp_grpc_addr: args.otlp_grpc_addr,
            otlp_http_addr: args.otlp_http_addr,
            admin_addr: args.admin_addr,
            auth_token_file: args.auth_token_file,
            max_body_bytes: args.max_body_bytes,
            queue_max_spans: args.queue_max_spans,
            queue_max_bytes: args.queue_max_bytes,
            max_requests_in_flight: args.max_requests_in_flight,
            trace_idle: args.trace_idle,
            late_window: args.late_window,
        },
    )?;
    config.settings.derive_edges = !args.no_derive;
    if let Some(path) = &args.baseline {
        config.settings.baseline = Some(std::sync::Arc::new(read_snapshot_file(path)?));
    }
    let location = Location::from(config.db.as_path());
    let store = Store::open(&location)?;
    runtime()?.block_on(async move {
        let signal = shutdown_signal()?;
        // One signal stops both the server and the demo's simulation.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let shutdown = until_stopped(stopped.clone());
        let listeners =
            Listeners::bind(config.grpc_addr, config.http_addr, config.admin_addr).await?;
        let addrs = listeners.addrs()?;
        tracing::info!(
            otlp_grpc = %addrs.grpc,
            otlp_http = %addrs.http,
            admin = %addrs.admin,
            db = %location.describe(),
            auth = config.settings.auth_token.is_some(),
            "archtrace is listening"
        );
        // One line on stdout for scripts and tests that start the server on port 0.
        println!(
            "archtrace listening: otlp-grpc={} otlp-http={} admin={}",
            addrs.grpc, addrs.http, addrs.admin
        );
        if let Some(rate) = demo_rate {
            println!(
                "archtrace demo: a simulated shop is sending {rate} requests/s; open http://{}/ (Ctrl-C stops)",
                addrs.admin
            );
            let endpoint = format!("http://{}", addrs.grpc);
            let token = config.settings.auth_token.clone();
            let demo_stopped = until_stopped(stopped.clone());
            tokio::spawn(async move {
                if let Err(err) =
                    archtrace_collector::demo::run(endpoint, token, rate, demo_stopped).await
                {
                    tracing::error!("the demo simulation stopped: {err}");
                }
            });
        }
        std::io::stdout().flush()?;
        let store = archtrace_collector::serve(store, listeners, config.settings, shutdown).await?;
        let stats = store.stats()?;
        tracing::info!(
            spans = stats.spans,
            "stopped; everything acknowledged is committed"
        );
        anyhow::Ok(())
    })
}

/// Registers for Ctrl-C and SIGTERM now (a signal that arrives before registration would kill
/// the process outright) and returns a future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn import_files(args: ImportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store = Store::open(&Location::from(args.db.as_path()))?;
    let on_bad = if args.keep_going {
        OnBadInput::Skip
    } else {
        OnBadInput::Stop
    };
    let total_bytes: u64 = args
        .files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum();
    let bytes_read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = progress_bar(total_bytes, bytes_read.clone());
    let mut summary = Summary::default();
    let mut sink = StoreSink::start(store);
    let mut failure = None;
    for path in &args.files {
        let outcome = Source::open(path).and_then(|source| {
            import::read_source(
                source,
                args.format.map(Into::into),
                on_bad,
                Detail::Keep,
                bytes_read.clone(),
                &mut summary,
                &mut |spans| sink.push(spans),
            )
        });
        match outcome {
            Ok(()) => {}
            Err(err @ ImportError::Io { .. }) if args.keep_going => {
                tracing::warn!("skipped: {err}");
                summary.bad_files += 1;
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    // Finishing also commits what was read before a failure, and names a store error.
    let store = sink.finish().map_err(anyhow::Error::msg)?;
    if let Some(err) = failure {
        return Err(anyhow::Error::new(err).context(format!(
            "import stopped; {} spans read before the error were imported (use --keep-going to skip bad input)",
            summary.spans
        )));
    }
    // Derive the edges of what was imported (and of whatever else the store holds then).
    if let Some((first, last)) = summary.span_range {
        archtrace_collector::graph::rebuild(&store.reader()?, first, last.saturating_add(1))?;
    }
    drop(store);
    println!(
        "imported {} files: {} spans in {} traces from {} services in {:.1} s",
        summary.files,
        summary.spans,
        summary.traces(),
        summary.services(),
        started.elapsed().as_secs_f64()
    );
    if summary.rejected_spans + summary.bad_documents + summary.bad_files > 0 {
        println!(
            "rejected: {} spans with invalid ids, {} unreadable documents, {} files abandoned",
            summary.rejected_spans, summary.bad_documents, summary.bad_files
        );
    }
    Ok(())
}

/// A progress bar on a terminal for imports that take a while; nothing when piped.
fn progress_bar(
    total_bytes: u64,
    bytes_read: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || total_bytes == 0 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let shown = bar.clone();
    std::thread::spawn(move || {
        while !shown.is_finished() {
            shown.set_position(bytes_read.load(std::sync::atomic::Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Some(bar)
}

/// The window of --since and --until, for trace files: `None` means all of the input.
fn source_window(args: &SourceArgs) -> anyhow::Result<Option<(i64, i64)>> {
    let now = archtrace_collector::graph::now_ns();
    let instant = |text: &Option<String>, flag: &str| {
        text.as_deref()
            .map(|t| {
                archtrace_collector::graph::parse_instant(t, now)
                    .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
            })
            .transpose()
    };
    let (since, until) = (
        instant(&args.since, "--since")?,
        instant(&args.until, "--until")?,
    );
    Ok((since.is_some() || until.is_some())
        .then(|| (since.unwrap_or(i64::MIN), until.unwrap_or(i64::MAX))))
}

fn load_snapshot(args: &SourceArgs) -> anyhow::Result<Snapshot> {
    let window = source_window(args)?;
    if !args.traces.is_empty() {
        let on_bad = if args.keep_going {
            OnBadInput::Skip
        } else {
            OnBadInput::Stop
        };
        let (snapshot, summary) = archtrace_collector::graph::snapshot_from_files(
            &args.traces,
            args.input_format.map(Into::into),
            on_bad,
            window,
        )?;
        if summary.spans == 0 {
            eprintln!("warning: the files hold no spans");
        }
        return Ok(snapshot);
    }
    if let Some(server) = &args.server {
        let token = args
            .auth_token_file
            .as_deref()
            .map(config::read_token)
            .transpose()?;
        return runtime()?
            .block_on(archtrace_collector::graph::fetch_snapshot(
                server,
                args.since.as_deref(),
                args.until.as_deref(),
                token.as_deref(),
            ))
            .map_err(anyhow::Error::msg);
    }
    let db = args.db.clone().unwrap_or_else(|| config::DEFAULT_DB.into());
    let store = open_existing(&db)?;
    let reader = store.reader()?;
    let now = archtrace_collector::graph::now_ns();
    let (since, until) = match window {
        Some((since, until)) => (
            if since == i64::MIN {
                now - 3_600_000_000_000
            } else {
                since
            },
            if until == i64::MAX { now } else { until },
        ),
        None => (now - 3_600_000_000_000, now),
    };
    let snapshot = archtrace_collector::graph::snapshot_from_store(&reader, since, until)?;
    if snapshot.diagnostics.spans == 0 {
        if let Some((first, last)) = reader.span_time_range()? {
            eprintln!(
                "note: no spans in this window; the store holds spans from {} to {} (use --since and --until)",
                archtrace_analyzer::time::rfc3339(first),
                archtrace_analyzer::time::rfc3339(last)
            );
        }
    }
    Ok(snapshot)
}

fn graph(args: GraphArgs) -> anyhow::Result<()> {
    let snapshot = load_snapshot(&args.source)?;
    let level = match args.level {
        LevelArg::Service => render::Level::Service,
        LevelArg::Operation => render::Level::Operation,
    };
    let text = match args.format {
        GraphFormat::Json => serde_json::to_string_pretty(&snapshot)? + "\n",
        GraphFormat::Table => render::table(&snapshot, level),
        GraphFormat::Dot => render::dot(&snapshot, level),
        GraphFormat::Mermaid => render::mermaid(&snapshot, level),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn hotspots(args: HotspotsArgs) -> anyhow::Result<()> {
    let mut snapshot = load_snapshot(&args.source)?;
    if let Some(path) = &args.thresholds {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let thresholds: archtrace_analyzer::findings::Thresholds = toml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("invalid thresholds file {}: {err}", path.display()))?;
        snapshot.analyze(&Default::default(), &thresholds);
    }
    let text = match args.format {
        HotspotFormat::Table => render::hotspots_table(&snapshot, args.top),
        HotspotFormat::Markdown => render::hotspots_markdown(&snapshot, args.top),
        HotspotFormat::Json => {
            let ranked: Vec<_> = snapshot.hotspots().into_iter().take(args.top).collect();
            serde_json::to_string_pretty(&serde_json::json!({
                "window": snapshot.window,
                "hotspots": ranked,
                "findings": snapshot.findings,
                "entry_operations": snapshot.entry_operations,
                "metric_notes": snapshot.metric_notes,
            }))? + "\n"
        }
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// Writes a text output to a file, or to standard output.
fn emit(text: &str, output: Option<&Path>) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("could not write {}", path.display())),
        None => Ok(std::io::stdout().lock().write_all(text.as_bytes())?),
    }
}

fn snapshot_json(snapshot: &Snapshot) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(snapshot)? + "\n")
}

fn write_snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let snapshot = load_snapshot(&args.source)?;
    emit(&snapshot_json(&snapshot)?, args.output.as_deref())?;
    if let Some(path) = &args.output {
        eprintln!(
            "wrote {}: {} nodes, {} edges, {} findings",
            path.display(),
            snapshot.nodes.len(),
            snapshot.edges.len(),
            snapshot.findings.len()
        );
    }
    Ok(())
}

fn read_snapshot_file(path: &Path) -> anyhow::Result<Snapshot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the snapshot {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let schema = value.get("schema").and_then(|s| s.as_str()).unwrap_or("");
    if schema != SNAPSHOT_SCHEMA {
        anyhow::bail!(
            "{} is not an archtrace snapshot (its schema is {:?}, expected {SNAPSHOT_SCHEMA:?}); write one with `archtrace snapshot -o FILE`",
            path.display(),
            schema
        );
    }
    serde_json::from_value(value)
        .with_context(|| format!("{} is not a valid {SNAPSHOT_SCHEMA}", path.display()))
}

const DEFAULT_RULES: &str = "archtrace.toml";

fn load_rules(path: &Path) -> anyhow::Result<Rules> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the rules {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|err| anyhow::anyhow!("invalid rules file {}: {err}", path.display()))
}

fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let rules_path = args.rules.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_RULES);
        default.exists().then(|| {
            eprintln!("using the rules in ./{DEFAULT_RULES}");
            default
        })
    });
    if args.baseline.is_none() && rules_path.is_none() {
        anyhow::bail!(
            "nothing to check against: pass --baseline FILE (written by `archtrace snapshot`) and/or --rules {DEFAULT_RULES}"
        );
    }
    let rules = match &rules_path {
        Some(path) => load_rules(path)?,
        None => Rules::default(),
    };
    let baseline = args
        .baseline
        .as_deref()
        .map(read_snapshot_file)
        .transpose()?;
    let observed = load_snapshot(&args.source)?;
    if observed.diagnostics.spans == 0 && observed.edges.is_empty() {
        eprintln!("warning: no spans were observed in the window; was the test traffic exported to archtrace?");
    }
    let report = drift::check(&observed, baseline.as_ref(), &rules);
    let artifact = rules_path
        .as_deref()
        .or(args.baseline.as_deref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let text = match args.format {
        CheckFormat::Text => {
            use std::io::IsTerminal;
            let colour = args.output.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none();
            check_output::text(&report, colour)
        }
        CheckFormat::Markdown => check_output::markdown(&report),
        CheckFormat::Json => check_output::json(&report),
        CheckFormat::Junit => check_output::junit(&report),
        CheckFormat::Sarif => check_output::sarif(&report, &artifact),
        CheckFormat::Github => check_output::github(&report, &artifact),
    };
    emit(&text, args.output.as_deref())?;
    if args.output.is_some() {
        eprintln!("archtrace check {}", check_output::summary(&report));
    }
    if args.update_baseline {
        let path = args.baseline.as_deref().expect("clap requires --baseline");
        std::fs::write(path, snapshot_json(&observed)?)
            .with_context(|| format!("could not rewrite the baseline {}", path.display()))?;
        eprintln!(
            "updated the baseline {} with what was observed",
            path.display()
        );
        return Ok(0);
    }
    Ok(u8::from(report.failures() > 0))
}

fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let old = read_snapshot_file(&args.old)?;
    let new = read_snapshot_file(&args.new)?;
    let changes = drift::diff(&old, &new);
    let text = match args.format {
        DiffFormat::Text => check_output::diff_text(&changes),
        DiffFormat::Markdown => check_output::diff_markdown(&changes),
        DiffFormat::Json => serde_json::to_string_pretty(&changes)? + "\n",
    };
    emit(&text, None)
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (snapshot, series, source) = if !args.source.traces.is_empty() {
        let window = source_window(&args.source)?;
        let on_bad = if args.source.keep_going {
            OnBadInput::Skip
        } else {
            OnBadInput::Stop
        };
        let (snapshot, series, summary) = archtrace_collector::graph::report_from_files(
            &args.source.traces,
            args.source.input_format.map(Into::into),
            on_bad,
            window,
        )?;
        let source = format!(
            "{} spans from {} file{}",
            summary.spans,
            args.source.traces.len(),
            if args.source.traces.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        (snapshot, series, source)
    } else if args.source.server.is_some() {
        let snapshot = load_snapshot(&args.source)?;
        let source = "from a running server (charts need --db or --traces)".to_owned();
        (snapshot, Default::default(), source)
    } else {
        let snapshot = load_snapshot(&args.source)?;
        let db = args
            .source
            .db
            .clone()
            .unwrap_or_else(|| config::DEFAULT_DB.into());
        let reader = open_existing(&db)?.reader()?;
        let (since, until) = (
            archtrace_analyzer::time::parse_rfc3339(&snapshot.window.start).unwrap_or(0),
            archtrace_analyzer::time::parse_rfc3339(&snapshot.window.end).unwrap_or(0),
        );
        let series =
            archtrace_collector::graph::series_from_store(&reader, &snapshot, since, until)?;
        (snapshot, series, format!("from {}", db.display()))
    };
    let html = archtrace_web::report::render(&snapshot, &series, &source);
    std::fs::write(&args.output, html)
        .with_context(|| format!("could not write {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({} nodes, {} edges, {} findings) in {:.1} s",
        args.output.display(),
        snapshot.nodes.len(),
        snapshot.edges.len(),
        snapshot.findings.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let now = archtrace_collector::graph::now_ns();
    let since = archtrace_collector::graph::parse_instant(&args.since, now)
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let until = match &args.until {
        Some(until) => archtrace_collector::graph::parse_instant(until, now)
            .map_err(|e| anyhow::anyhow!("--until: {e}"))?,
        None => now,
    };
    if !args.db.exists() {
        anyhow::bail!("no store at {}: pass --db PATH", args.db.display());
    }
    let store = Store::open(&Location::File(args.db.clone()))?;
    let traces = archtrace_collector::graph::rebuild(&store.reader()?, since, until)?;
    println!("derived {traces} traces again");
    Ok(())
}

fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let stats = open_existing(&args.db)?.stats()?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?,
        Format::Text => write_stats_text(&mut out, &args.db, &stats)?,
    }
    Ok(())
}

fn open_existing(path: &Path) -> anyhow::Result<Store> {
    if !path.exists() {
        anyhow::bail!(
            "no store at {}: start `archtrace serve` to create one, or pass --db PATH",
            path.display()
        );
    }
    Ok(Store::open_read_only(path)?)
}

fn write_stats_text(out: &mut impl Write, db: &Path, stats: &StoreStats) -> std::io::Result<()> {
    let none = "-".to_owned();
    writeln!(out, "store        {}", db.display())?;
    writeln!(out, "spans        {}", stats.spans)?;
    writeln!(out, "traces       {}", stats.traces)?;
    writeln!(out, "services     {}", stats.services)?;
    writeln!(out, "error spans  {}", stats.error_spans)?;
    writeln!(
        out,
        "first span   {}",
        stats.first_span.as_ref().unwrap_or(&none)
    )?;
    writeln!(
        out,
        "last span    {}",
        stats.last_span.as_ref().unwrap_or(&none)
    )?;
    Ok(())
}

fn run_loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let protocol = match args.protocol {
        LoadProtocol::Grpc => Protocol::Grpc,
        LoadProtocol::HttpProtobuf => Protocol::HttpProtobuf,
        LoadProtocol::HttpJson => Protocol::HttpJson,
    };
    let endpoint = args.endpoint.unwrap_or_else(|| {
        match protocol {
            Protocol::Grpc => "http://127.0.0.1:4317",
            _ => "http://127.0.0.1:4318",
        }
        .to_owned()
    });
    let auth_token = args
        .auth_token_file
        .as_deref()
        .map(config::read_token)
        .transpose()?;
    let options = LoadgenOptions {
        endpoint,
        protocol,
        spans_per_request: args.spans_per_request.max(1),
        concurrency: args.concurrency.max(1),
        rate: args.rate,
        duration: args.duration,
        distinct_requests: args.distinct_requests.max(1),
        auth_token,
    };
    eprintln!(
        "sending {} for {:?} to {} ({} in flight, {} spans a request)...",
        match args.rate {
            Some(rate) => format!("{rate} spans/s"),
            None => "as fast as accepted".to_owned(),
        },
        options.duration,
        options.endpoint,
        options.concurrency,
        options.spans_per_request
    );
    let report = runtime()?
        .block_on(loadgen::run(options))
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Text => {
            writeln!(out, "protocol           {}", report.protocol)?;
            writeln!(
                out,
                "spans accepted     {} in {:.1} s",
                report.spans_accepted, report.seconds
            )?;
            writeln!(out, "accepted spans/s   {:.0}", report.spans_per_sec)?;
            writeln!(out, "bytes a span       {:.0}", report.bytes_per_span)?;
            writeln!(
                out,
                "requests           {} ({} refused as overloaded, {} failed)",
                report.requests, report.requests_refused, report.requests_failed
            )?;
            writeln!(
                out,
                "latency ms         p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
                report.latency_ms.p50,
                report.latency_ms.p90,
                report.latency_ms.p99,
                report.latency_ms.max
            )?;
            writeln!(
                out,
                "decode-only        {:.0} spans/s on one thread (ingest/decode = {:.2})",
                report.decode_only_spans_per_sec,
                report.spans_per_sec / report.decode_only_spans_per_sec.max(1.0)
            )?;
            if let Some(error) = &report.first_error {
                writeln!(out, "first error        {error}")?;
            }
        }
    }
    Ok(())
}
