//! `archtrace serve` settings: an optional TOML file, `ARCHTRACE_*` environment variables and
//! flags. Flags win over the environment (clap reads both into the same field), which wins
//! over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use archtrace_collector::assembly::AssemblySettings;
use archtrace_collector::server::{
    DEFAULT_ADMIN_ADDR, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_REQUESTS_IN_FLIGHT,
};
use archtrace_collector::ServerSettings;
use archtrace_store::QueueLimits;
use serde::Deserialize;

pub const DEFAULT_DB: &str = "archtrace.duckdb";

/// The configuration file. Every key is optional and has the same name as its flag (with `_`
/// for `-`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The DuckDB store (`:memory:` for one that lives only as long as the process).
    pub db: Option<PathBuf>,
    /// OTLP/gRPC listen address.
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: Option<SocketAddr>,
    /// Admin listener (health, readiness, metrics) address.
    pub admin_addr: Option<SocketAddr>,
    /// A file holding the bearer token clients must send; no authentication when unset.
    pub auth_token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes after decompression.
    pub max_body_bytes: Option<usize>,
    /// Spans that may wait for the writer before new requests are refused.
    pub queue_max_spans: Option<usize>,
    /// Memory the spans waiting for the writer may take before new requests are refused.
    pub queue_max_bytes: Option<usize>,
    /// Requests handled at once; more are refused as overloaded before they are decoded.
    pub max_requests_in_flight: Option<usize>,
    /// A trace is derived once none of its spans has arrived for this long, e.g. "5s".
    pub trace_idle: Option<String>,
    /// How long derived spans are remembered to pair late ones, e.g. "60s".
    pub late_window: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read the config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("invalid config file {}: {err}", path.display()))
    }
}

#[derive(Debug)]
pub struct ServeConfig {
    pub db: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub settings: ServerSettings,
}

/// Values given as flags or environment variables; `None` falls back to the file, then the default.
#[derive(Debug, Default)]
pub struct Overrides {
    pub db: Option<PathBuf>,
    pub otlp_grpc_addr: Option<SocketAddr>,
    pub otlp_http_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub auth_token_file: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    pub queue_max_spans: Option<usize>,
    pub queue_max_bytes: Option<usize>,
    pub max_requests_in_flight: Option<usize>,
    pub trace_idle: Option<Duration>,
    pub late_window: Option<Duration>,
}

fn duration(key: &str, text: Option<String>) -> anyhow::Result<Option<Duration>> {
    text.map(|t| {
        humantime::parse_duration(&t)
            .map_err(|err| anyhow::anyhow!("{key}: {t:?} is not a duration like \"5s\": {err}"))
    })
    .transpose()
}

pub fn resolve(file: FileConfig, given: Overrides) -> anyhow::Result<ServeConfig> {
    let defaults = QueueLimits::default();
    let assembly_defaults = AssemblySettings::default();
    let trace_idle = match given.trace_idle {
        Some(idle) => Some(idle),
        None => duration("trace_idle", file.trace_idle)?,
    };
    let late_window = match given.late_window {
        Some(window) => Some(window),
        None => duration("late_window", file.late_window)?,
    };
    let token_file = given.auth_token_file.or(file.auth_token_file);
    let auth_token = token_file.map(|path| read_token(&path)).transpose()?;
    let max_body_bytes = given
        .max_body_bytes
        .or(file.max_body_bytes)
        .unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        bail!("max_body_bytes must be at least 1");
    }
    let max_requests_in_flight = given
        .max_requests_in_flight
        .or(file.max_requests_in_flight)
        .unwrap_or(DEFAULT_MAX_REQUESTS_IN_FLIGHT);
    if max_requests_in_flight == 0 {
        bail!("max_requests_in_flight must be at least 1");
    }
    Ok(ServeConfig {
        db: given.db.or(file.db).unwrap_or_else(|| DEFAULT_DB.into()),
        grpc_addr: given
            .otlp_grpc_addr
            .or(file.otlp_grpc_addr)
            .unwrap_or_else(|| DEFAULT_GRPC_ADDR.parse().expect("valid default")),
        http_addr: given
            .otlp_http_addr
            .or(file.otlp_http_addr)
            .unwrap_or_else(|| DEFAULT_HTTP_ADDR.parse().expect("valid default")),
        admin_addr: given
            .admin_addr
            .or(file.admin_addr)
            .unwrap_or_else(|| DEFAULT_ADMIN_ADDR.parse().expect("valid default")),
        settings: ServerSettings {
            queue: QueueLimits {
                max_spans: given
                    .queue_max_spans
                    .or(file.queue_max_spans)
                    .unwrap_or(defaults.max_spans),
                max_bytes: given
                    .queue_max_bytes
                    .or(file.queue_max_bytes)
                    .unwrap_or(defaults.max_bytes),
            },
            max_body_bytes,
            max_requests_in_flight,
            auth_token,
            derive_edges: true,
            baseline: None,
            assembly: AssemblySettings {
                trace_idle: trace_idle.unwrap_or(assembly_defaults.trace_idle),
                late_window: late_window.unwrap_or(assembly_defaults.late_window),
                ..assembly_defaults
            },
        },
    })
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

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file: FileConfig = toml::from_str(
            "db = \"from-file.duckdb\"\notlp_grpc_addr = \"127.0.0.1:5317\"\nqueue_max_spans = 10\n",
        )
        .unwrap();
        let given = Overrides {
            db: Some("from-flag.duckdb".into()),
            ..Overrides::default()
        };
        let config = resolve(file, given).unwrap();
        assert_eq!(config.db, PathBuf::from("from-flag.duckdb"));
        assert_eq!(config.grpc_addr, "127.0.0.1:5317".parse().unwrap());
        assert_eq!(config.http_addr, DEFAULT_HTTP_ADDR.parse().unwrap());
        assert_eq!(config.settings.queue.max_spans, 10);
        assert_eq!(
            config.settings.max_requests_in_flight,
            DEFAULT_MAX_REQUESTS_IN_FLIGHT
        );
    }

    #[test]
    fn the_in_flight_limit_comes_from_the_file_or_a_flag_and_is_never_zero() {
        let file = || {
            toml::from_str::<FileConfig>(
                "max_requests_in_flight = 16
",
            )
            .unwrap()
        };
        let config = resolve(file(), Overrides::default()).unwrap();
        assert_eq!(config.settings.max_requests_in_flight, 16);
        let given = Overrides {
            max_requests_in_flight: Some(4),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(file(), given)
                .unwrap()
                .settings
                .max_requests_in_flight,
            4
        );
        let zero = Overrides {
            max_requests_in_flight: Some(0),
            ..Overrides::default()
        };
        let err = resolve(file(), zero).unwrap_err().to_string();
        assert!(err.contains("max_requests_in_flight"), "{err}");
    }

    #[test]
    fn a_typo_in_the_file_names_the_key_and_the_line() {
        let err = toml::from_str::<FileConfig>("db = \"x\"\notlp_grpc_adr = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("otlp_grpc_adr"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
