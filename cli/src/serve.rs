//! `archtrace serve` and `archtrace demo` as a process: settings, the store, the listeners,
//! Ctrl-C and SIGTERM, and the demo's simulated shop beside the server.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use archtrace_collector::Listeners;
use archtrace_store::{Location, Store};

use crate::config::{self, ServeOptions};

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")
}

/// The settings of `options` over the config file's, checked, with the baseline and the
/// declared architecture read.
pub(crate) fn resolve(
    config_file: Option<&Path>,
    options: ServeOptions,
) -> anyhow::Result<config::ServeConfig> {
    let file = match config_file {
        Some(path) => ServeOptions::load(path)?,
        None => ServeOptions::default(),
    };
    let mut config = config::resolve(options.over(file))?;
    if let Some(path) = &config.baseline {
        config.settings.references.baseline = Some(archtrace_query::files::read_snapshot(path)?);
    }
    if let Some(path) = &config.declared {
        config.settings.references.declared = Some(archtrace_query::declared::load(path)?);
    }
    Ok(config)
}

/// Runs the server with `options` over the config file's; with `demo_rate`, also the
/// simulated shop sending it that many requests a second.
pub fn serve(
    config_file: Option<&Path>,
    options: ServeOptions,
    demo_rate: Option<u32>,
) -> anyhow::Result<()> {
    let config = resolve(config_file, options)?;
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
                    archtrace_workload::shop::run(endpoint, token, rate, demo_stopped).await
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
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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
