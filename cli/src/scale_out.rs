//! archtrace on ClickHouse from the command line: `derive` workers, and `serve --store` as a
//! viewer and API over the buckets they write.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use archtrace_analyzer::time::{now_ns, rfc3339};
use archtrace_clickhouse::worker::WindowReport;
use archtrace_clickhouse::{ClickHouseSource, Endpoint, Shard, Worker, WorkerSettings};
use archtrace_collector::auth::Auth;
use archtrace_query::{SnapshotSource, Window};
use clap::Args;

use crate::config::ServeOptions;

#[derive(Args)]
pub struct DeriveArgs {
    /// The ClickHouse database the OpenTelemetry Collector's clickhouse exporter writes to.
    #[arg(long, env = "ARCHTRACE_DERIVE_FROM", value_name = "URL")]
    from: String,
    /// The ClickHouse database for archtrace's tables (created when missing); may be the same.
    #[arg(long, env = "ARCHTRACE_STORE", value_name = "URL")]
    store: String,
    /// This worker's share of the traces, k/N counted from 0: run 0/N to N-1/N side by side.
    #[arg(long, default_value = "0/1", value_name = "K/N", value_parser = Shard::parse)]
    workers: Shard,
    /// The exporter's traces table.
    #[arg(long, default_value = "otel_traces", value_name = "NAME")]
    table: String,
    /// How much time one read covers (whole minutes that divide an hour).
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    window: Duration,
    /// How far past a window its traces are read; longer traces are cut there.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    slack: Duration,
    /// How long after its end a window is read, for spans still on their way.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Start here (a duration before now, or an RFC 3339 time), even over windows derived
    /// before: they are replaced, not counted twice. [default: where this worker stopped, or
    /// an hour back on its first run]
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Stop after the windows before this time. [default: run until stopped]
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// How long the buckets are kept (ClickHouse's TTL).
    #[arg(long, default_value = "90d", value_name = "DURATION", value_parser = humantime::parse_duration)]
    bucket_retention: Duration,
    /// A span or resource attribute whose number says how many spans each one stands for
    /// (Tempo's span_multiplier_key), used before any other sampling information.
    #[arg(long, env = "ARCHTRACE_SPAN_MULTIPLIER_KEY", value_name = "ATTRIBUTE")]
    span_multiplier_key: Option<String>,
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

pub fn derive(args: DeriveArgs) -> anyhow::Result<()> {
    let from = Endpoint::parse(&args.from).context("--from")?;
    let store = Endpoint::parse(&args.store).context("--store")?;
    let bounds = Window::parse_open(args.since.as_deref(), args.until.as_deref(), now_ns())?;
    let settings = WorkerSettings {
        shard: args.workers,
        table: args.table,
        window_ns: nanos(args.window),
        slack_ns: nanos(args.slack),
        delay_ns: nanos(args.delay),
        since_ns: (bounds.since_ns != i64::MIN).then_some(bounds.since_ns),
        until_ns: (bounds.until_ns != i64::MAX).then_some(bounds.until_ns),
        retention_days: args.bucket_retention.as_secs().div_ceil(86_400).max(1) as u32,
        multiplier_key: args.span_multiplier_key.filter(|key| !key.is_empty()),
    };
    let worker = Worker::new(&from, &store, settings)?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone())?;
    eprintln!(
        "archtrace derive: worker {} reading {} into {} (Ctrl-C stops after the current window)",
        worker.label(),
        from.describe(),
        store.describe()
    );
    let mut totals = (0u64, 0u64, 0u64);
    let mut stderr = std::io::stderr();
    worker.run(&stop, &now_ns, &mut |done: &WindowReport| {
        totals.0 += 1;
        totals.1 += done.counts.spans;
        totals.2 += done.counts.traces;
        let _ = writeln!(
            stderr,
            "{} to {}: {} spans in {} traces{}{}, {:.2} s",
            rfc3339(done.since_ns),
            rfc3339(done.until_ns),
            done.counts.spans,
            done.counts.traces,
            if done.counts.invalid_spans > 0 {
                format!(" ({} rows with bad ids skipped)", done.counts.invalid_spans)
            } else {
                String::new()
            },
            if done.rederived { ", replaced" } else { "" },
            done.elapsed.as_secs_f64()
        );
    })?;
    eprintln!(
        "archtrace derive: worker {} derived {} windows, {} spans in {} traces; watermark {}",
        worker.label(),
        totals.0,
        totals.1,
        totals.2,
        worker
            .watermark()?
            .map_or_else(|| "none".to_owned(), rfc3339)
    );
    Ok(())
}

/// Sets `stop` on Ctrl-C or SIGTERM, from a thread of its own.
fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not listen for signals")?;
    let signal = runtime.block_on(async { crate::serve::shutdown_signal() })?;
    std::thread::spawn(move || {
        runtime.block_on(signal);
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

/// The reading source of a `--store` address.
pub fn open_source(address: &str) -> anyhow::Result<ClickHouseSource> {
    if !archtrace_clickhouse::is_clickhouse_address(address) {
        anyhow::bail!(
            "--store {address:?}: --store takes a ClickHouse address (clickhouse://host:8123/database); for a DuckDB file use --db"
        );
    }
    let endpoint = Endpoint::parse(address)?;
    Ok(ClickHouseSource::open(&endpoint)?)
}

/// `serve --store clickhouse://...`: the viewer, the snapshot API and Jaeger's dependencies API
/// over the buckets derive workers write; no OTLP listeners (traces go to ClickHouse).
pub fn serve_store(
    address: &str,
    config_file: Option<&Path>,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let config = crate::serve::resolve(config_file, options)?;
    let source: Arc<dyn SnapshotSource> = Arc::new(open_source(address)?);
    let router = archtrace_collector::admin::read_only_router(
        source.clone(),
        config.settings.references.clone(),
        Auth::new(config.settings.auth_token.clone()),
    );
    crate::serve::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("could not listen on {}", config.admin_addr))?;
        let addr = listener.local_addr()?;
        tracing::info!(admin = %addr, store = %source.describe(), "archtrace is serving");
        println!("archtrace listening: admin={addr} ({})", source.describe());
        let signal = crate::serve::shutdown_signal()?;
        axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await
            .context("the admin listener failed")
    })
}
