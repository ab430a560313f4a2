//! The `archtrace` binary: command-line definitions and dispatch. The work happens in the
//! library crates; [`source`] turns the common source flags into a query-layer source and
//! [`serve`] runs the server process (signals, listeners, the demo's simulation).

mod config;
mod scale_out;
mod serve;
mod source;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_analyzer::findings::Thresholds;
use archtrace_analyzer::history::{self, EventFilter, EventKind, HistorySettings};
use archtrace_analyzer::rules::Rules;
use archtrace_analyzer::snapshot::{Level, Snapshot};
use archtrace_analyzer::{check_output, drift, render};
use archtrace_formats::import::{self, OnBadInput};
use archtrace_query::files::{read_snapshot, ReadOptions};
use archtrace_query::store::StoreSource;
use archtrace_query::{HistoryQuery, SnapshotSource};
use archtrace_store::{Location, Store};
use archtrace_workload::loadgen::{self, LoadgenOptions, Protocol};
use clap::{Args, Parser, Subcommand, ValueEnum};
use config::SeverityOption;

/// Ingest allocates and frees many small strings on one thread and frees them on another (the
/// journal, the log reader); glibc's malloc spent about a third of the server's time on that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Migrate a store file to this archtrace's schema, e.g. before read-only commands on it.
    ///
    /// `serve` and `import` migrate the files they open; read-only commands (graph, stats, ...)
    /// cannot, and ask for this once:
    ///   archtrace migrate --db archtrace.duckdb
    #[command(verbatim_doc_comment)]
    Migrate(MigrateArgs),
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
    /// It also lists the critical paths of the busiest entry operations (who their time belongs
    /// to) and one recommended action per finding. Findings include retry amplification, missing,
    /// long and inverted timeouts, and entry operations over the latency budgets declared in the
    /// thresholds file ([latency_budgets_ms] "gateway GET /checkout" = 300).
    /// Examples:
    ///   archtrace hotspots --traces dump.jsonl --top 5
    ///   archtrace hotspots --server http://127.0.0.1:4320 --format markdown
    #[command(verbatim_doc_comment)]
    Hotspots(HotspotsArgs),
    /// What changed in the architecture, when, and in which release.
    ///
    /// Replays the derived buckets one step at a time (an hour; a minute with --step 1m): new
    /// and gone services and edges (with the caller and callee `service.version`s that
    /// introduced them and their share of traffic), new database uses and queue consumers, new
    /// and broken cycles, fan-in/out crossing the hub thresholds, error rates and p99s of an
    /// edge regressing against the step before, and findings appearing or resolved between
    /// slices of the window (steps, days or weeks). A node or edge not seen for --gone-after is
    /// gone. Also the trend of services, edges, cycles, coupling and p99 per step (json).
    ///   archtrace events                                  (the store, last 7 days)
    ///   archtrace events --since 30d --format markdown --min-severity warning
    ///   archtrace events --server http://127.0.0.1:4320 --kind new_edge,edge_gone
    ///   archtrace events --traces before.jsonl after.jsonl --step 1m --gone-after 10m
    #[command(verbatim_doc_comment)]
    Events(EventsArgs),
    /// Cluster services into candidate domains by how much they call each other.
    ///
    /// Louvain modularity optimisation on the call graph weighted by calls (deterministic:
    /// nodes are visited and ties broken in name order). Each domain is named after its busiest
    /// service; the cross-domain calls show how coupled the domains are. Modularity near 0
    /// means no domain structure, towards 1 clear domains. Services that talk mostly to another
    /// domain than their own are listed as misplaced.
    ///
    /// With [domains] in the rules (`payments = ["pay*", "ledger"]`), those domains are checked
    /// instead: their coupling, their misplaced services, and the services none declares.
    ///   archtrace domains --since 24h
    ///   archtrace domains --traces dump.jsonl --format json
    #[command(verbatim_doc_comment)]
    Domains(DomainsArgs),
    /// What breaks if a service, database or dependency fails.
    ///
    /// Replays the observed traffic of every entry operation on the operation graph without
    /// the targets: an entry operation fails when a chain of synchronous calls leads from it to
    /// a target, and degrades when only a chain through a queue does. Each comes with its
    /// share of traffic, traces per minute and one chain that shows why. Several targets fail
    /// together (a zone, a shared database); `from->to` fails one dependency.
    ///   archtrace impact cart
    ///   archtrace impact db:orders payments --since 24h --format markdown
    ///   archtrace impact 'checkout->payments' --traces dump.jsonl
    #[command(verbatim_doc_comment)]
    Impact(ImpactArgs),
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
    /// Compare the observed architecture with the declared one: a Backstage catalog, a
    /// Structurizr workspace or a snapshot.
    ///
    /// Lists observed dependencies the catalog does not declare (with their traffic), declared
    /// dependencies no trace showed, observed nodes missing from the catalog and nodes without an
    /// owner. Nodes are matched by name (a Backstage entity's `archtrace.io/observed-name`
    /// annotation, or else its name); callers outside the system are not compared. Exits 0; to
    /// fail a build on differences use `archtrace check --declared` (docs/integrations.md).
    ///   archtrace conform --declared catalog/ --traces e2e-traces.jsonl
    ///   archtrace conform --declared workspace.dsl --since 24h --format markdown
    #[command(verbatim_doc_comment)]
    Conform(ConformArgs),
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
    /// Derive the architecture from ClickHouse's otel_traces into archtrace's tables there.
    ///
    /// For traces the OpenTelemetry Collector's clickhouse exporter already writes to
    /// ClickHouse. Each closed window (--delay after its end) is read, derived with archtrace's
    /// own rules and written as buckets; run N workers with --workers 0/N .. N-1/N to share the
    /// traces. Every reading command and `serve` then take --store:
    ///   archtrace derive --from clickhouse://ch:8123/otel --store clickhouse://ch:8123/archtrace
    ///   archtrace derive --from ... --store ... --workers 1/4
    ///   archtrace derive --from ... --store ... --since 24h --until 1h   (derive a day again)
    ///   archtrace serve --store clickhouse://ch:8123/archtrace
    ///   archtrace check --store clickhouse://ch:8123/archtrace --since 15m --baseline a.json
    #[command(verbatim_doc_comment)]
    Derive(scale_out::DeriveArgs),
    /// Write the observed architecture for architecture-as-code tools.
    ///
    /// GraphML (yEd, Gephi, networkx), a Structurizr DSL workspace, a C4-PlantUML container
    /// diagram, or a Backstage catalog (catalog-info.yaml):
    ///   archtrace export --format graphml -o architecture.graphml
    ///   archtrace export --format backstage --since 24h -o catalog-info.yaml
    ///   archtrace export --traces dump.jsonl --format c4-plantuml
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
    /// Print a shell completion script.
    ///
    ///   archtrace completions bash > /etc/bash_completion.d/archtrace
    ///   archtrace completions zsh > "${fpath[1]}/_archtrace"
    ///   archtrace completions fish > ~/.config/fish/completions/archtrace.fish
    #[command(verbatim_doc_comment)]
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    ///
    ///   archtrace man > /usr/local/share/man/man1/archtrace.1
    #[command(verbatim_doc_comment)]
    Man,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of the settings below (keys are the flag names with `_` for `-`).
    #[arg(long, env = "ARCHTRACE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: config::ServeOptions,
    /// Serve the viewer and APIs over the buckets `archtrace derive` writes to ClickHouse
    /// (clickhouse://host:8123/database) instead of receiving OTLP.
    #[arg(long, env = "ARCHTRACE_STORE", value_name = "URL")]
    store: Option<String>,
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
    /// A span or resource attribute whose number says how many spans each one stands for
    /// (Tempo's span_multiplier_key), used before any other sampling information.
    #[arg(long, env = "ARCHTRACE_SPAN_MULTIPLIER_KEY", value_name = "ATTRIBUTE")]
    span_multiplier_key: Option<String>,
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
    #[arg(long, num_args = 1.., value_name = "FILE", conflicts_with_all = ["server", "db", "store"])]
    traces: Vec<PathBuf>,
    /// Admin address of a running `archtrace serve` (it holds the store's lock).
    #[arg(long, value_name = "URL", conflicts_with_all = ["db", "store"])]
    server: Option<String>,
    /// The ClickHouse database `archtrace derive` writes its buckets to
    /// (clickhouse://host:8123/database).
    #[arg(
        long,
        env = "ARCHTRACE_STORE",
        value_name = "URL",
        conflicts_with = "db"
    )]
    store: Option<String>,
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
    /// The architecture as it was at WHEN (like --since): the hour before it. Time travel.
    #[arg(long, value_name = "WHEN", conflicts_with_all = ["since", "until"])]
    at: Option<String>,
    /// Format of the --traces files; detected from the content when not given.
    #[arg(long, value_enum, value_name = "FORMAT")]
    input_format: Option<InputFormat>,
    /// With --traces: skip what cannot be read instead of stopping.
    #[arg(long)]
    keep_going: bool,
    /// With --traces: a span or resource attribute whose number says how many spans each one
    /// stands for (Tempo's span_multiplier_key), used before any other sampling information.
    #[arg(long, env = "ARCHTRACE_SPAN_MULTIPLIER_KEY", value_name = "ATTRIBUTE")]
    span_multiplier_key: Option<String>,
    /// File holding the server's bearer token, for --server.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
}

#[derive(Args)]
struct GraphArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// One node per service, or one per endpoint (service and operation).
    #[arg(long, default_value = "service", value_parser = level_parser())]
    level: Level,
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
    /// TOML file of finding thresholds (hub_min_fan_in, chatty_min_calls_per_trace,
    /// retry_amplification_min, timeout_wait_ratio, [latency_budgets_ms], ...); unset keys keep
    /// their defaults.
    #[arg(long, value_name = "FILE")]
    thresholds: Option<PathBuf>,
}

#[derive(Args)]
struct EventsArgs {
    /// Window as for every reading command; without --since or --at the last 7 days.
    #[command(flatten)]
    source: SourceArgs,
    /// The step buckets are replayed in: a whole number of minutes, hours for long windows.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    step: std::time::Duration,
    /// A node or edge not seen for this long is gone.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    gone_after: std::time::Duration,
    /// Only these kinds (comma-separated): new_service, service_gone, new_edge,
    /// new_database_use, new_queue_consumer, edge_gone, new_cycle, cycle_broken, fan_in_crossed,
    /// fan_out_crossed, error_rate_regressed, p99_regressed, finding_appeared, finding_resolved.
    #[arg(long, value_name = "KINDS", value_parser = parse_event_kinds)]
    kind: Option<BTreeSet<EventKind>>,
    /// Only events at or above this severity.
    #[arg(long, value_enum, default_value_t = SeverityOption::Info)]
    min_severity: SeverityOption,
    /// Only events about this service (as a subject, or an end of an edge).
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// text for a terminal, json (events and the trend per step), markdown for comments.
    #[arg(long, value_enum, default_value_t = HotspotFormat::Table)]
    format: HotspotFormat,
    /// TOML file of finding thresholds, as for hotspots (fan-in/out events use the hub ones);
    /// with --server, sent for the server's replay.
    #[arg(long, value_name = "FILE")]
    thresholds: Option<PathBuf>,
}

fn parse_event_kinds(text: &str) -> Result<BTreeSet<EventKind>, String> {
    history::parse_kinds(text)
}

#[derive(Clone, Copy, ValueEnum)]
enum HotspotFormat {
    /// For a terminal (also `text`).
    #[value(alias = "text")]
    Table,
    Json,
    Markdown,
}

#[derive(Args)]
struct DomainsArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Rules whose [domains] declare the domains: they are checked on the traffic instead of
    /// guessed. [default: ./archtrace.toml when it declares domains]
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DomainsFormat::Text)]
    format: DomainsFormat,
}

#[derive(Args)]
struct ImpactArgs {
    /// Nodes (services, databases, queues, external peers) or `from->to` dependencies that fail
    /// together.
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    #[command(flatten)]
    source: SourceArgs,
    #[arg(long, value_enum, default_value_t = ImpactFormat::Text)]
    format: ImpactFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum ImpactFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Clone, Copy, ValueEnum)]
enum DomainsFormat {
    Text,
    Json,
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
struct ExportArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// The owner written into a Backstage catalog's entities (spec.owner).
    #[arg(long, value_name = "TEAM", default_value = "unknown")]
    owner: String,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Graphml,
    Structurizr,
    #[value(name = "c4-plantuml")]
    C4Plantuml,
    Backstage,
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
    /// A declared architecture to conform to (Backstage catalog file or folder, Structurizr
    /// .dsl, or a snapshot): undeclared edges fail, the rest warns, as [check] in the rules sets.
    #[arg(long, value_name = "PATH")]
    declared: Option<PathBuf>,
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
struct ConformArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The declared architecture: a Backstage catalog file or a folder of them (*.yaml), a
    /// Structurizr DSL workspace (*.dsl), or a snapshot (*.json).
    #[arg(long, value_name = "PATH")]
    declared: PathBuf,
    #[arg(long, value_enum, default_value_t = ConformFormat::Text)]
    format: ConformFormat,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConformFormat {
    Text,
    Json,
    Markdown,
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
struct MigrateArgs {
    /// The DuckDB store (stop `archtrace serve` on it first).
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH", default_value = config::DEFAULT_DB)]
    db: PathBuf,
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

/// `service` or `operation`, with the names clap lists in `--help`.
fn level_parser() -> impl clap::builder::TypedValueParser<Value = Level> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Level::NAMES)
        .map(|name| name.parse::<Level>().expect("a listed level"))
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

#[derive(Args)]
struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script for `shell`, generated from these definitions.
fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "archtrace",
        &mut std::io::stdout(),
    );
    Ok(())
}

/// Prints the man page (roff), generated from these definitions.
fn man_page() -> anyhow::Result<()> {
    let command = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let outcome = match cli.command {
        Command::Check(args) => check(args),
        Command::Serve(args) => match &args.store {
            Some(store) => {
                scale_out::serve_store(store, args.config.as_deref(), args.options).map(|()| 0)
            }
            None => serve::serve(args.config.as_deref(), args.options, None).map(|()| 0),
        },
        Command::Derive(args) => scale_out::derive(args).map(|()| 0),
        Command::Export(args) => export(args).map(|()| 0),
        Command::Demo(args) => demo(args).map(|()| 0),
        Command::Report(args) => report(args).map(|()| 0),
        Command::Import(args) => import_files(args).map(|()| 0),
        Command::Stats(args) => stats(args).map(|()| 0),
        Command::Graph(args) => graph(args).map(|()| 0),
        Command::Hotspots(args) => hotspots(args).map(|()| 0),
        Command::Events(args) => events(args).map(|()| 0),
        Command::Migrate(args) => migrate(args).map(|()| 0),
        Command::Rebuild(args) => rebuild(args).map(|()| 0),
        Command::Snapshot(args) => write_snapshot(args).map(|()| 0),
        Command::Diff(args) => diff(args).map(|()| 0),
        Command::Conform(args) => conform(args).map(|()| 0),
        Command::Domains(args) => domains(args).map(|()| 0),
        Command::Impact(args) => impact(args).map(|()| 0),
        Command::Loadgen(args) => run_loadgen(args).map(|()| 0),
        Command::Completions(args) => completions(args).map(|()| 0),
        Command::Man => man_page().map(|()| 0),
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
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in log files and CI output.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    if args.serve.store.is_some() {
        anyhow::bail!("the demo stores its simulated traces in DuckDB; --store is for `serve` over ClickHouse buckets");
    }
    // A temporary store, removed when the demo ends, unless the user named one.
    let dir =
        tempfile::tempdir().context("could not create a temporary directory for the demo store")?;
    let mut options = args.serve.options;
    if options.db.is_none() {
        options.db = Some(dir.path().join("demo.duckdb"));
    }
    serve::serve(
        args.serve.config.as_deref(),
        options,
        Some(args.requests_per_second),
    )
}

fn import_files(args: ImportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store = Store::open(&Location::from(args.db.as_path()))?;
    let total_bytes: u64 = args
        .files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum();
    let bytes_read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = progress_bar(total_bytes, bytes_read.clone());
    let options = ReadOptions {
        format: args.format.map(Into::into),
        on_bad: on_bad(args.keep_going),
        multiplier_key: args.span_multiplier_key.map(Into::into),
    };
    let outcome = archtrace_query::load::import_files(store, &args.files, options, bytes_read);
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    let summary = outcome?;
    println!("{summary}");
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn on_bad(keep_going: bool) -> OnBadInput {
    if keep_going {
        OnBadInput::Skip
    } else {
        OnBadInput::Stop
    }
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

fn graph(args: GraphArgs) -> anyhow::Result<()> {
    let analyzed = source::analyzed(&args.source, &Settings::default())?;
    let (snapshot, level) = (&analyzed.snapshot, args.level);
    let text = match args.format {
        GraphFormat::Json => snapshot_json(snapshot)?,
        GraphFormat::Table => render::table(snapshot, level),
        GraphFormat::Dot => render::dot(snapshot, level),
        GraphFormat::Mermaid => render::mermaid(snapshot, level),
    };
    emit(&text, None)
}

/// The thresholds file given, or the defaults.
fn load_thresholds(path: Option<&Path>) -> anyhow::Result<Thresholds> {
    let Some(path) = path else {
        return Ok(Thresholds::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|err| anyhow::anyhow!("invalid thresholds file {}: {err}", path.display()))
}

fn hotspots(args: HotspotsArgs) -> anyhow::Result<()> {
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let analyzed = source::analyzed(&args.source, &Settings::with_thresholds(thresholds))?;
    let text = match args.format {
        HotspotFormat::Table => render::hotspots_table(&analyzed, args.top),
        HotspotFormat::Markdown => render::hotspots_markdown(&analyzed, args.top),
        HotspotFormat::Json => render::hotspots_json(&analyzed, args.top),
    };
    emit(&text, None)
}

fn events(mut args: EventsArgs) -> anyhow::Result<()> {
    let source_args = &mut args.source;
    if source_args.since.is_none() && source_args.at.is_none() && source_args.traces.is_empty() {
        source_args.since = Some("7d".to_owned());
    }
    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let step = nanos(args.step);
    history::check_step(step).map_err(|why| anyhow::anyhow!("--step: {why}"))?;
    let thresholds = load_thresholds(args.thresholds.as_deref())?;
    let query = HistoryQuery::new(
        HistorySettings {
            step_ns: step,
            gone_after_ns: nanos(args.gone_after).max(step),
            ..HistorySettings::default()
        },
        Settings::with_thresholds(thresholds),
    );
    let (source, window) = source::open(&args.source)?;
    let mut history = source.history(&window, &query)?;
    EventFilter {
        kinds: args.kind.unwrap_or_default(),
        min_severity: args.min_severity.into(),
        service: args.service,
    }
    .apply(&mut history);
    let text = match args.format {
        HotspotFormat::Table => history::text(&history),
        HotspotFormat::Markdown => history::markdown(&history),
        HotspotFormat::Json => serde_json::to_string_pretty(&history)? + "\n",
    };
    emit(&text, None)
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

fn export(args: ExportArgs) -> anyhow::Result<()> {
    use archtrace_analyzer::export;
    let Analyzed { snapshot, .. } = source::analyzed(&args.source, &Settings::default())?;
    let text = match args.format {
        ExportFormat::Graphml => export::graphml(&snapshot),
        ExportFormat::Structurizr => export::structurizr(&snapshot),
        ExportFormat::C4Plantuml => export::c4_plantuml(&snapshot),
        ExportFormat::Backstage => export::backstage(&snapshot, &args.owner),
    };
    emit(&text, args.output.as_deref())?;
    if let Some(path) = &args.output {
        eprintln!(
            "wrote {}: {} nodes, {} edges",
            path.display(),
            snapshot.nodes.len(),
            snapshot.edges.len()
        );
    }
    Ok(())
}

fn write_snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let Analyzed { snapshot, .. } = source::analyzed(&args.source, &Settings::default())?;
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

const DEFAULT_RULES: &str = "archtrace.toml";

fn load_rules(path: &Path) -> anyhow::Result<Rules> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the rules {}", path.display()))?;
    let rules: Rules = toml::from_str(&text)
        .map_err(|err| anyhow::anyhow!("invalid rules file {}: {err}", path.display()))?;
    rules
        .validate()
        .map_err(|err| anyhow::anyhow!("invalid rules file {}: {err}", path.display()))?;
    Ok(rules)
}

fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let rules_path = args.rules.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_RULES);
        default.exists().then(|| {
            eprintln!("using the rules in ./{DEFAULT_RULES}");
            default
        })
    });
    if args.baseline.is_none() && rules_path.is_none() && args.declared.is_none() {
        anyhow::bail!(
            "nothing to check against: pass --baseline FILE (written by `archtrace snapshot`), --declared PATH (a catalog) and/or --rules {DEFAULT_RULES}"
        );
    }
    let rules = match &rules_path {
        Some(path) => load_rules(path)?,
        None => Rules::default(),
    };
    let baseline = args.baseline.as_deref().map(read_snapshot).transpose()?;
    let declared = args
        .declared
        .as_deref()
        .map(archtrace_query::declared::load)
        .transpose()?;
    let settings = Settings::with_thresholds(rules.thresholds.clone());
    let Analyzed {
        snapshot: observed, ..
    } = source::analyzed(&args.source, &settings)?;
    if observed.diagnostics.spans == 0 && observed.edges.is_empty() {
        eprintln!("warning: no spans were observed in the window; was the test traffic exported to archtrace?");
    }
    let report = drift::check(&observed, baseline.as_ref(), declared.as_ref(), &rules);
    let artifact = rules_path
        .as_deref()
        .or(args.baseline.as_deref())
        .or(args.declared.as_deref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let format = match args.format {
        CheckFormat::Text => {
            use std::io::IsTerminal;
            check_output::Format::Text {
                colour: args.output.is_none()
                    && std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none(),
            }
        }
        CheckFormat::Markdown => check_output::Format::Markdown,
        CheckFormat::Json => check_output::Format::Json,
        CheckFormat::Junit => check_output::Format::Junit,
        CheckFormat::Sarif => check_output::Format::Sarif,
        CheckFormat::Github => check_output::Format::Github,
    };
    emit(
        &check_output::render(&report, format, &artifact),
        args.output.as_deref(),
    )?;
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

fn domains(args: DomainsArgs) -> anyhow::Result<()> {
    use archtrace_analyzer::domains;
    let rules = match &args.rules {
        Some(path) => Some(load_rules(path)?),
        None => {
            let default = PathBuf::from(DEFAULT_RULES);
            let rules = default.exists().then(|| load_rules(&default)).transpose()?;
            rules
                .filter(|rules| !rules.domains.is_empty())
                .inspect(|_| {
                    eprintln!("using the domains declared in ./{DEFAULT_RULES}");
                })
        }
    };
    let Analyzed { snapshot, .. } = source::analyzed(&args.source, &Settings::default())?;
    let found = match rules.filter(|rules| !rules.domains.is_empty()) {
        Some(rules) => domains::declared(&snapshot, &rules.domains),
        None => domains::domains(&snapshot),
    };
    let text = match args.format {
        DomainsFormat::Json => serde_json::to_string_pretty(&found)? + "\n",
        DomainsFormat::Text => {
            use std::fmt::Write;
            let mut out = format!(
                "{} candidate domains (modularity {:.2})\n\n",
                found.domains.len(),
                found.modularity
            );
            for domain in &found.domains {
                let _ = writeln!(
                    out,
                    "{} ({} services, {} calls inside): {}",
                    domain.name,
                    domain.services.len(),
                    domain.internal_calls,
                    domain.services.join(", ")
                );
            }
            if !found.cross_domain.is_empty() {
                out.push_str("\ncalls between domains:\n");
                for c in &found.cross_domain {
                    let _ = writeln!(
                        out,
                        "  {} -> {}: {} calls over {} edges",
                        c.from, c.to, c.calls, c.edges
                    );
                }
            }
            if !found.misplaced.is_empty() {
                out.push_str("\nservices that talk mostly to another domain:\n");
                for m in &found.misplaced {
                    let _ = writeln!(
                        out,
                        "  {} (in {}): {} calls with {}, {} with its own domain",
                        m.service, m.domain, m.calls_with_other, m.mostly_with, m.calls_with_own
                    );
                }
            }
            if !found.undeclared.is_empty() {
                let _ = writeln!(
                    out,
                    "\nservices no declared domain selects: {}",
                    found.undeclared.join(", ")
                );
            }
            out
        }
    };
    emit(&text, None)
}

fn impact(args: ImpactArgs) -> anyhow::Result<()> {
    use archtrace_analyzer::impact::{self, Target};
    let Analyzed { snapshot, .. } = source::analyzed(&args.source, &Settings::default())?;
    let targets: Vec<Target> = args.targets.iter().map(|t| Target::parse(t)).collect();
    let found = impact::impact(&snapshot, &targets)?;
    let text = match args.format {
        ImpactFormat::Json => serde_json::to_string_pretty(&found)? + "\n",
        ImpactFormat::Text => impact::text(&found),
        ImpactFormat::Markdown => impact::markdown(&found),
    };
    emit(&text, None)
}

fn conform(args: ConformArgs) -> anyhow::Result<()> {
    use archtrace_analyzer::declared;
    let declared = archtrace_query::declared::load(&args.declared)?;
    let Analyzed { snapshot, .. } = source::analyzed(&args.source, &Settings::default())?;
    let result = declared::conform(&snapshot, &declared);
    let text = match args.format {
        ConformFormat::Text => declared::text(&result),
        ConformFormat::Markdown => declared::markdown(&result),
        ConformFormat::Json => serde_json::to_string_pretty(&result)? + "\n",
    };
    emit(&text, args.output.as_deref())
}

fn diff(args: DiffArgs) -> anyhow::Result<()> {
    let old = read_snapshot(&args.old)?;
    let new = read_snapshot(&args.new)?;
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
    let (source, window) = source::open(&args.source)?;
    let (analyzed, html) = archtrace_web::report::build(&*source, &window, &Settings::default())?;
    std::fs::write(&args.output, html)
        .with_context(|| format!("could not write {}", args.output.display()))?;
    let snapshot = &analyzed.snapshot;
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

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let store = source::open_store(&args.db, false)?;
    println!(
        "{} is at schema version {}",
        args.db.display(),
        store.schema_version()?
    );
    Ok(())
}

fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let window = archtrace_query::Window::parse(
        Some(&args.since),
        args.until.as_deref(),
        archtrace_analyzer::time::now_ns(),
    )?;
    let store = source::open_store(&args.db, false)?;
    let traces = StoreSource::open(&store)?.rebuild(window.since_ns, window.until_ns)?;
    println!("derived {traces} traces again");
    Ok(())
}

fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let stats = source::open_store(&args.db, true)?.stats()?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&stats)? + "\n",
        Format::Text => stats.to_string(),
    };
    emit(&text, None)
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
    let report = serve::runtime()?.block_on(loadgen::run(options))?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Text => report.to_string(),
    };
    emit(&text, None)
}
