//! `archtrace serve` settings. Each is declared once, in [`ServeOptions`]: its flag, its
//! `ARCHTRACE_*` environment variable and its key in the TOML file (`--config`). Flags win over
//! the environment (clap reads both into the same field), which wins over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use archtrace_analyzer::history::HistorySettings;
use archtrace_analyzer::snapshot::Severity;
use archtrace_collector::assembly::AssemblySettings;
use archtrace_collector::journal::LogLimits;
use archtrace_collector::notify::NotifySettings;
use archtrace_collector::retention::RetentionSettings;
use archtrace_collector::server::{
    KeepSpans, DEFAULT_ADMIN_ADDR, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_REQUESTS_IN_FLIGHT,
};
use archtrace_collector::ServerSettings;
use archtrace_query::HistoryQuery;
use clap::Args;
use serde::Deserialize;

pub const DEFAULT_DB: &str = "archtrace.duckdb";

/// The settings of `serve` (and `demo`). In the file, keys are the flag names with `_` for `-`.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// DuckDB file to store spans in; `:memory:` keeps them in memory only. [default: ./archtrace.duckdb]
    #[arg(long, env = "ARCHTRACE_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// OTLP/gRPC listen address. [default: 127.0.0.1:4317]
    #[arg(long, env = "ARCHTRACE_OTLP_GRPC_ADDR", value_name = "ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address. [default: 127.0.0.1:4318]
    #[arg(long, env = "ARCHTRACE_OTLP_HTTP_ADDR", value_name = "ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Admin listener: /healthz, /readyz, /metrics, the snapshot API and the viewer. [default: 127.0.0.1:4320]
    #[arg(long, env = "ARCHTRACE_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// File holding a bearer token that OTLP and admin requests must carry.
    #[arg(long, env = "ARCHTRACE_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Largest request accepted, in bytes after decompression. [default: 16777216]
    #[arg(long, env = "ARCHTRACE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Bytes of the request log acknowledged but not yet loaded into the store before requests
    /// are refused with UNAVAILABLE/503 and Retry-After. [default: 1073741824]
    #[arg(long, env = "ARCHTRACE_MAX_LOG_BYTES", value_name = "BYTES")]
    pub max_log_bytes: Option<u64>,
    /// Free space the request log's disk keeps; below it, requests are refused. With 0, a
    /// request is refused only when the disk is full and its write fails. [default: 268435456]
    #[arg(long, env = "ARCHTRACE_MIN_FREE_DISK_BYTES", value_name = "BYTES")]
    pub min_free_disk_bytes: Option<u64>,
    /// Requests handled at once over both transports; more are refused as overloaded
    /// (UNAVAILABLE / 503) before their bodies are decoded, which bounds memory. [default: 64]
    #[arg(long, env = "ARCHTRACE_MAX_REQUESTS_IN_FLIGHT", value_name = "N")]
    pub max_requests_in_flight: Option<usize>,
    /// A trace is derived into the graph once none of its spans has arrived for this long. [default: 5s]
    #[arg(long, env = "ARCHTRACE_TRACE_IDLE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub trace_idle: Option<Duration>,
    /// How long derived spans are remembered, so that late spans still pair. [default: 60s]
    #[arg(long, env = "ARCHTRACE_LATE_WINDOW", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub late_window: Option<Duration>,
    /// Raw spans that started longer ago than this are deleted while serving (an hour of spans
    /// per transaction); `0s` keeps them. [default: 7d]
    #[arg(long, env = "ARCHTRACE_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub retention: Option<Duration>,
    /// Derived edges (the graph's buckets) older than this are deleted while serving; `0s`
    /// keeps them. [default: 90d]
    #[arg(long, env = "ARCHTRACE_BUCKET_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub bucket_retention: Option<Duration>,
    /// Raw spans kept in the store: `all`; `sampled` (every trace with an error and 3 example
    /// traces per edge and minute); or `none` (only the derived graph). The graph is the same in
    /// all three. [default: all]
    #[arg(long, env = "ARCHTRACE_SPANS", value_name = "WHICH")]
    pub spans: Option<SpansOption>,
    /// Only store spans; derive the graph later with `archtrace rebuild` (needs `--spans all`).
    #[arg(long)]
    #[serde(default)]
    pub no_derive: bool,
    /// A snapshot (from `archtrace snapshot`) that the viewer's drift page compares with.
    #[arg(long, env = "ARCHTRACE_BASELINE", value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// The declared architecture the viewer's Conformance page compares with: a Backstage
    /// catalog file or folder, a Structurizr workspace (.dsl) or a snapshot.
    #[arg(long, env = "ARCHTRACE_DECLARED", value_name = "PATH")]
    pub declared: Option<PathBuf>,
    /// A span or resource attribute whose number says how many spans each one stands for
    /// (Tempo's span_multiplier_key), used before any other sampling information.
    #[arg(long, env = "ARCHTRACE_SPAN_MULTIPLIER_KEY", value_name = "ATTRIBUTE")]
    pub span_multiplier_key: Option<String>,
    /// Post architecture events (new and gone services and edges, cycles, regressions,
    /// findings; see `archtrace events`) to this URL as JSON; a Slack-style incoming webhook
    /// (hooks.slack.com, or a path starting /services/) gets a `text` message. Repeatable, or
    /// comma-separated in the environment. Retried with backoff; never slows ingest.
    #[arg(
        long = "notify-webhook",
        env = "ARCHTRACE_NOTIFY_WEBHOOK",
        value_name = "URL",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub notify_webhook: Vec<String>,
    /// The lowest severity posted: info, warning or error. [default: warning]
    #[arg(long, env = "ARCHTRACE_NOTIFY_MIN_SEVERITY", value_name = "SEVERITY")]
    pub notify_min_severity: Option<SeverityOption>,
    /// How often events are looked for. [default: 1m]
    #[arg(long, env = "ARCHTRACE_NOTIFY_EVERY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub notify_every: Option<Duration>,
    /// Only events this recent are posted (a server started on old data does not post it
    /// all). [default: 2h]
    #[arg(long, env = "ARCHTRACE_NOTIFY_LOOKBACK", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub notify_lookback: Option<Duration>,
    /// The step events are judged in, as `archtrace events --step`. [default: 1h]
    #[arg(long, env = "ARCHTRACE_NOTIFY_STEP", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub notify_step: Option<Duration>,
    /// A service or edge not seen for this long is gone, as `archtrace events --gone-after`.
    /// [default: 24h]
    #[arg(long, env = "ARCHTRACE_NOTIFY_GONE_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    #[serde(default, deserialize_with = "duration")]
    pub notify_gone_after: Option<Duration>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeverityOption {
    Info,
    Warning,
    Error,
}

impl From<SeverityOption> for Severity {
    fn from(option: SeverityOption) -> Severity {
        match option {
            SeverityOption::Info => Severity::Info,
            SeverityOption::Warning => Severity::Warning,
            SeverityOption::Error => Severity::Error,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpansOption {
    All,
    Sampled,
    None,
}

impl From<SpansOption> for KeepSpans {
    fn from(option: SpansOption) -> KeepSpans {
        match option {
            SpansOption::All => KeepSpans::All,
            SpansOption::Sampled => KeepSpans::Sampled,
            SpansOption::None => KeepSpans::None,
        }
    }
}

/// A duration in the file, written as a flag takes it ("5s", "1m 30s").
fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map(Some).map_err(|err| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"5s\": {err}"))
    })
}

impl ServeOptions {
    pub fn load(path: &Path) -> anyhow::Result<ServeOptions> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("invalid config file {}: {err}", path.display()))
    }

    /// These options (flags and environment) with the file's filling what they leave unset.
    pub fn over(self, file: ServeOptions) -> ServeOptions {
        // Destructured, so that a new setting cannot be forgotten here.
        let ServeOptions {
            db,
            otlp_grpc_addr,
            otlp_http_addr,
            admin_addr,
            auth_token_file,
            max_body_bytes,
            max_log_bytes,
            min_free_disk_bytes,
            max_requests_in_flight,
            trace_idle,
            late_window,
            retention,
            bucket_retention,
            spans,
            no_derive,
            baseline,
            declared,
            span_multiplier_key,
            notify_webhook,
            notify_min_severity,
            notify_every,
            notify_lookback,
            notify_step,
            notify_gone_after,
        } = self;
        ServeOptions {
            db: db.or(file.db),
            otlp_grpc_addr: otlp_grpc_addr.or(file.otlp_grpc_addr),
            otlp_http_addr: otlp_http_addr.or(file.otlp_http_addr),
            admin_addr: admin_addr.or(file.admin_addr),
            auth_token_file: auth_token_file.or(file.auth_token_file),
            max_body_bytes: max_body_bytes.or(file.max_body_bytes),
            max_log_bytes: max_log_bytes.or(file.max_log_bytes),
            min_free_disk_bytes: min_free_disk_bytes.or(file.min_free_disk_bytes),
            max_requests_in_flight: max_requests_in_flight.or(file.max_requests_in_flight),
            trace_idle: trace_idle.or(file.trace_idle),
            late_window: late_window.or(file.late_window),
            retention: retention.or(file.retention),
            bucket_retention: bucket_retention.or(file.bucket_retention),
            spans: spans.or(file.spans),
            no_derive: no_derive || file.no_derive,
            baseline: baseline.or(file.baseline),
            declared: declared.or(file.declared),
            span_multiplier_key: span_multiplier_key.or(file.span_multiplier_key),
            notify_webhook: if notify_webhook.is_empty() {
                file.notify_webhook
            } else {
                notify_webhook
            },
            notify_min_severity: notify_min_severity.or(file.notify_min_severity),
            notify_every: notify_every.or(file.notify_every),
            notify_lookback: notify_lookback.or(file.notify_lookback),
            notify_step: notify_step.or(file.notify_step),
            notify_gone_after: notify_gone_after.or(file.notify_gone_after),
        }
    }
}

#[derive(Debug)]
pub struct ServeConfig {
    pub db: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub baseline: Option<PathBuf>,
    pub declared: Option<PathBuf>,
    pub settings: ServerSettings,
}

/// The settings with defaults for what is unset, checked.
pub fn resolve(options: ServeOptions) -> anyhow::Result<ServeConfig> {
    let log_defaults = LogLimits::default();
    let retention_defaults = RetentionSettings::default();
    // Zero keeps the data for ever.
    let keep = |given: Option<Duration>, default: Option<Duration>| {
        given.map_or(default, |d| (!d.is_zero()).then_some(d))
    };
    let assembly_defaults = AssemblySettings::default();
    if options.no_derive && options.spans.is_some_and(|spans| spans != SpansOption::All) {
        bail!("--no-derive keeps only raw spans, so it needs --spans all (or no --spans)");
    }
    let auth_token = options
        .auth_token_file
        .as_deref()
        .map(read_token)
        .transpose()?;
    let max_body_bytes = options.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        bail!("max_body_bytes must be at least 1");
    }
    let max_requests_in_flight = options
        .max_requests_in_flight
        .unwrap_or(DEFAULT_MAX_REQUESTS_IN_FLIGHT);
    if max_requests_in_flight == 0 {
        bail!("max_requests_in_flight must be at least 1");
    }
    let notify = notify_settings(&options)?;
    let address = |given: Option<SocketAddr>, default: &str| {
        given.unwrap_or_else(|| default.parse().expect("valid default"))
    };
    Ok(ServeConfig {
        db: options.db.unwrap_or_else(|| DEFAULT_DB.into()),
        grpc_addr: address(options.otlp_grpc_addr, DEFAULT_GRPC_ADDR),
        http_addr: address(options.otlp_http_addr, DEFAULT_HTTP_ADDR),
        admin_addr: address(options.admin_addr, DEFAULT_ADMIN_ADDR),
        baseline: options.baseline,
        declared: options.declared,
        settings: ServerSettings {
            log: LogLimits {
                max_log_bytes: options.max_log_bytes.unwrap_or(log_defaults.max_log_bytes),
                min_free_disk_bytes: options
                    .min_free_disk_bytes
                    .unwrap_or(log_defaults.min_free_disk_bytes),
                ..log_defaults
            },
            max_body_bytes,
            max_requests_in_flight,
            auth_token,
            retention: RetentionSettings {
                spans: keep(options.retention, retention_defaults.spans),
                buckets: keep(options.bucket_retention, retention_defaults.buckets),
                ..retention_defaults
            },
            spans: options.spans.map(KeepSpans::from).unwrap_or_default(),
            derive_edges: !options.no_derive,
            span_multiplier_key: options.span_multiplier_key.map(Into::into),
            references: Default::default(),
            notify,
            assembly: AssemblySettings {
                trace_idle: options.trace_idle.unwrap_or(assembly_defaults.trace_idle),
                late_window: options.late_window.unwrap_or(assembly_defaults.late_window),
                ..assembly_defaults
            },
        },
    })
}

/// The webhooks and how events are judged for them, checked.
fn notify_settings(options: &ServeOptions) -> anyhow::Result<NotifySettings> {
    for url in &options.notify_webhook {
        archtrace_collector::notify::check_webhook(url)
            .map_err(|why| anyhow::anyhow!("--notify-webhook {url:?}: {why}"))?;
    }
    let mut settings = NotifySettings::new(options.notify_webhook.clone());
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let defaults = HistorySettings::default();
    let step = options.notify_step.map_or(defaults.step_ns, nanos);
    archtrace_analyzer::history::check_step(step)
        .map_err(|why| anyhow::anyhow!("--notify-step: {why}"))?;
    settings.history = HistoryQuery::new(
        HistorySettings {
            step_ns: step,
            gone_after_ns: options
                .notify_gone_after
                .map_or(defaults.gone_after_ns, nanos)
                .max(step),
            ..defaults
        },
        Default::default(),
    );
    settings.filter.min_severity = options
        .notify_min_severity
        .map_or(Severity::Warning, Severity::from);
    settings.every = options
        .notify_every
        .unwrap_or(settings.every)
        .max(Duration::from_secs(1));
    settings.lookback = options.notify_lookback.unwrap_or(settings.lookback);
    Ok(settings)
}

pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the auth token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!(
            "the auth token file {} is empty; put the token on its first line",
            path.display()
        );
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ServeOptions {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let given = ServeOptions {
            db: Some("from-flag.duckdb".into()),
            ..ServeOptions::default()
        };
        let config = resolve(given.over(file(
            "db = \"from-file.duckdb\"\notlp_grpc_addr = \"127.0.0.1:5317\"\nmax_log_bytes = 10\ntrace_idle = \"2s\"\nno_derive = true\n",
        )))
        .unwrap();
        assert_eq!(config.db, PathBuf::from("from-flag.duckdb"));
        assert_eq!(config.grpc_addr, "127.0.0.1:5317".parse().unwrap());
        assert_eq!(config.http_addr, DEFAULT_HTTP_ADDR.parse().unwrap());
        assert_eq!(config.settings.log.max_log_bytes, 10);
        assert_eq!(config.settings.assembly.trace_idle, Duration::from_secs(2));
        assert!(!config.settings.derive_edges);
        assert_eq!(
            config.settings.retention.spans,
            Some(Duration::from_secs(7 * 86_400)),
            "the default"
        );
        let forever = ServeOptions {
            retention: Some(Duration::ZERO),
            bucket_retention: Some(Duration::from_secs(3_600)),
            ..ServeOptions::default()
        };
        let config = resolve(forever).unwrap();
        assert_eq!(config.settings.retention.spans, None, "0s keeps spans");
        assert_eq!(
            config.settings.retention.buckets,
            Some(Duration::from_secs(3_600))
        );
        assert_eq!(
            config.settings.max_requests_in_flight,
            DEFAULT_MAX_REQUESTS_IN_FLIGHT
        );
    }

    #[test]
    fn which_spans_are_kept_comes_from_the_file_or_a_flag_and_defaults_to_all() {
        assert_eq!(
            resolve(ServeOptions::default()).unwrap().settings.spans,
            KeepSpans::All
        );
        let in_file = || file("spans = \"none\"\n");
        let config = resolve(ServeOptions::default().over(in_file())).unwrap();
        assert_eq!(config.settings.spans, KeepSpans::None);
        let given = ServeOptions {
            spans: Some(SpansOption::Sampled),
            ..ServeOptions::default()
        };
        assert_eq!(
            resolve(given.over(in_file())).unwrap().settings.spans,
            KeepSpans::Sampled
        );
        let err = toml::from_str::<ServeOptions>("spans = \"some\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sampled"), "the choices are named: {err}");
        let nothing = ServeOptions {
            spans: Some(SpansOption::None),
            no_derive: true,
            ..ServeOptions::default()
        };
        let err = resolve(nothing).unwrap_err().to_string();
        assert!(
            err.contains("--no-derive") && err.contains("--spans all"),
            "{err}"
        );
    }

    #[test]
    fn the_in_flight_limit_comes_from_the_file_or_a_flag_and_is_never_zero() {
        let in_file = || file("max_requests_in_flight = 16\n");
        let config = resolve(ServeOptions::default().over(in_file())).unwrap();
        assert_eq!(config.settings.max_requests_in_flight, 16);
        let given = ServeOptions {
            max_requests_in_flight: Some(4),
            ..ServeOptions::default()
        };
        assert_eq!(
            resolve(given.over(in_file()))
                .unwrap()
                .settings
                .max_requests_in_flight,
            4
        );
        let zero = ServeOptions {
            max_requests_in_flight: Some(0),
            ..ServeOptions::default()
        };
        let err = resolve(zero.over(in_file())).unwrap_err().to_string();
        assert!(err.contains("max_requests_in_flight"), "{err}");
    }

    #[test]
    fn a_typo_or_a_bad_duration_in_the_file_names_the_key_and_the_line() {
        let err = toml::from_str::<ServeOptions>("db = \"x\"\notlp_grpc_adr = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("otlp_grpc_adr"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = toml::from_str::<ServeOptions>("late_window = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
