//! Puts the receivers, the request log, the loader and the admin listener together, and takes
//! them apart again on shutdown: stop accepting, finish in-flight requests, load what the log
//! holds into the store, derive it, checkpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archtrace_store::log::LogWriter;
use archtrace_store::{Location, Store};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use archtrace_query::store::StoreSource;

use crate::admin::{self, AdminState};
use crate::assembly::AssemblySettings;
use crate::auth::Auth;
use crate::grpc::TraceServer;
use crate::http::{self, HttpState};
use crate::ingest::{Ingest, IngestMetrics};
use crate::journal::{Journal, LogLimits, LogState};
use crate::live::DeriverMetrics;
use crate::loader::{Loader, LoaderMetrics};
use crate::notify::{NotifyMetrics, NotifySettings};
use crate::retention::{RetentionMetrics, RetentionSettings};

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:4320";
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// 64 requests of OTLP's usual 512 spans keep the log's writer busy at any rate this server
/// reaches, while 640 clients at once stay within a few hundred MB.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 64;
/// DuckDB's memory while serving: appends need little, and the server should stay small.
const SERVER_DUCKDB_MEMORY: &str = "128MB";
/// Under load the default 16 MB threshold checkpoints every ~230k spans, each a writer stall of
/// up to a second; 256 MB (about 3.5M spans) measured 46k → 71k spans/s and p99 923 → 126 ms
/// over 100 s of load (`archtrace loadgen`).
const SERVER_CHECKPOINT_THRESHOLD: &str = "256MB";
/// Example traces kept per edge and minute with `--spans sampled`: enough to open real traces
/// of every edge, few enough that the store holds a small share of the traffic.
const SAMPLED_EXAMPLES_PER_EDGE_MINUTE: u32 = 3;

/// Which raw spans are stored; the derived graph is the same in every mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepSpans {
    /// Every span (the default).
    #[default]
    All,
    /// Every trace with an error, and a few example traces per edge and minute.
    Sampled,
    /// None: only the derived buckets.
    None,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub log: LogLimits,
    pub retention: RetentionSettings,
    /// Largest request accepted, after decompression, on both transports.
    pub max_body_bytes: usize,
    /// Requests read, decoded or waiting for their commit at once, over both transports; more
    /// are refused as overloaded before their bodies are decoded.
    pub max_requests_in_flight: usize,
    pub auth_token: Option<String>,
    pub spans: KeepSpans,
    /// Derive edges while serving; without it spans are only stored (`archtrace rebuild`
    /// derives them later), so it needs `KeepSpans::All`.
    pub derive_edges: bool,
    /// The attribute that multiplies a span's count (Tempo's `span_multiplier_key`), if any.
    pub span_multiplier_key: Option<Arc<str>>,
    pub assembly: AssemblySettings,
    /// What the viewer's drift and conformance pages compare with.
    pub references: archtrace_web::server::References,
    /// Webhooks told of architecture events (none by default).
    pub notify: NotifySettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            log: LogLimits::default(),
            retention: RetentionSettings::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            auth_token: None,
            spans: KeepSpans::All,
            derive_edges: true,
            span_multiplier_key: None,
            assembly: AssemblySettings::default(),
            references: Default::default(),
            notify: NotifySettings::new(Vec::new()),
        }
    }
}

/// The three listeners, bound before serving so that tests can bind port 0 and read the port.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not listen for {what} on {addr} (is another archtrace or OpenTelemetry Collector running? choose another address with {flag})")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} listener failed")]
    Listener {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the loader thread stopped unexpectedly")]
    Loader,
    #[error("could not set up the store for serving")]
    Store(#[from] archtrace_store::QueryError),
    #[error("could not open the request log")]
    Log(#[from] archtrace_store::log::LogError),
    #[error("could not derive again what an older archtrace's unclean stop left underived")]
    Recover(#[source] archtrace_query::QueryError),
    #[error("--no-derive with --spans {0} would keep nothing: derive edges, or keep all spans")]
    NothingKept(&'static str),
    #[error("could not create a folder for the request log of an in-memory store")]
    TemporaryLog(#[source] std::io::Error),
}

impl Listeners {
    pub async fn bind(
        grpc: SocketAddr,
        http: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Listeners, ServeError> {
        async fn one(
            addr: SocketAddr,
            what: &'static str,
            flag: &'static str,
        ) -> Result<TcpListener, ServeError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what,
                    addr,
                    flag,
                    source,
                })
        }
        Ok(Listeners {
            grpc: one(grpc, "OTLP/gRPC", "--otlp-grpc-addr").await?,
            http: one(http, "OTLP/HTTP", "--otlp-http-addr").await?,
            admin: one(admin, "the admin API", "--admin-addr").await?,
        })
    }

    pub fn addrs(&self) -> std::io::Result<BoundAddrs> {
        Ok(BoundAddrs {
            grpc: self.grpc.local_addr()?,
            http: self.http.local_addr()?,
            admin: self.admin.local_addr()?,
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

/// Serves until `shutdown` resolves, then drains: every request that was acknowledged is
/// committed before this returns the store.
pub async fn serve(
    store: Store,
    listeners: Listeners,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Store, ServeError> {
    store
        .limit_memory(SERVER_DUCKDB_MEMORY)
        .and_then(|()| store.set_checkpoint_threshold(SERVER_CHECKPOINT_THRESHOLD))
        .map_err(archtrace_store::QueryError::from)?;
    if !settings.derive_edges && settings.spans != KeepSpans::All {
        return Err(ServeError::NothingKept(match settings.spans {
            KeepSpans::Sampled => "sampled",
            _ => "none",
        }));
    }
    let reader = store.reader()?;
    // The log lives beside the store's file; an in-memory store's log lasts as long as it.
    let (log_dir, _temporary) = match store.location() {
        Location::File(path) => (archtrace_store::log::dir_of(path), None),
        Location::Memory => {
            let dir = tempfile::tempdir().map_err(ServeError::TemporaryLog)?;
            (dir.path().to_owned(), Some(dir))
        }
    };
    // A log whose segments were all consumed and deleted goes on from the furthest offset.
    let committed = [crate::loader::CONSUMER, crate::live::CONSUMER]
        .into_iter()
        .map(|consumer| store.log_offset(consumer))
        .collect::<Result<Vec<_>, _>>()?;
    let (log_writer, cut) = LogWriter::open(
        &log_dir,
        settings.log.segment_bytes,
        committed.into_iter().flatten().max().unwrap_or(0),
    )?;
    let mut store = store;
    if let Some(cut) = cut {
        tracing::error!(
            log = %log_dir.display(),
            at = cut.at,
            dropped_bytes = cut.dropped_bytes,
            reason = %cut.reason,
            "the request log had a damaged tail (a crash during a write, or a damaged disk); it was cut at the last whole record"
        );
    }
    if settings.spans != KeepSpans::All {
        // No span loader: it must not hold the log back, and a later `--spans all` run stores
        // from where the deriver is.
        store.forget_consumer(crate::loader::CONSUMER)?;
    }
    if settings.derive_edges {
        recover_underived(&mut store)?;
    } else {
        // Spans stored from now on are derived by `archtrace rebuild`; a later derived run
        // starts from where the loader got to.
        store.forget_consumer(crate::live::CONSUMER)?;
    }
    let log_state = Arc::new(LogState::default());
    log_state.disk_bytes.store(
        archtrace_store::log::disk_bytes(&log_dir)?,
        Ordering::Relaxed,
    );
    let (journal, journal_thread) = Journal::spawn(
        log_writer,
        &log_dir,
        settings.log.clone(),
        log_state.clone(),
    );
    let retention_metrics = Arc::new(RetentionMetrics::default());
    let retention = crate::retention::start(
        store.pruner()?,
        settings.retention.clone(),
        retention_metrics.clone(),
    );
    let deriver_metrics = Arc::new(DeriverMetrics::default());
    let deriver = if settings.derive_edges {
        let mut assembly = settings.assembly.clone();
        if settings.spans == KeepSpans::Sampled {
            assembly.sample = Some(SAMPLED_EXAMPLES_PER_EDGE_MINUTE);
        }
        Some(crate::live::start(
            assembly,
            store.another_writer()?,
            log_state.clone(),
            log_dir.clone(),
            deriver_metrics.clone(),
        )?)
    } else {
        None
    };
    let (feed, unwritten, deriver_thread) = match deriver {
        Some(deriver) => (Some(deriver.feed), deriver.unwritten, Some(deriver.thread)),
        None => (None, Default::default(), None),
    };
    let loader_metrics = Arc::new(LoaderMetrics::default());
    let loader = Loader::spawn(
        match settings.spans {
            KeepSpans::All => Some(store.another_writer()?),
            KeepSpans::Sampled | KeepSpans::None => None,
        },
        &log_dir,
        log_state.clone(),
        loader_metrics.clone(),
        feed,
        settings.span_multiplier_key.clone(),
    )?;
    let ingest_metrics = Arc::new(IngestMetrics::default());
    let ingest = Arc::new(Ingest::new(
        journal,
        ingest_metrics.clone(),
        settings.max_requests_in_flight.max(1),
    ));
    let auth = Auth::new(settings.auth_token.clone());
    let ready = Arc::new(AtomicBool::new(true));

    let (stop_sender, stop_receiver) = watch::channel(false);
    let stop_ready = ready.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!(
            "shutting down: no new requests; loading what the request log holds into the store"
        );
        stop_ready.store(false, Ordering::Relaxed);
        let _ = stop_sender.send(true);
    });
    let stopped = move || {
        let mut receiver = stop_receiver.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    };

    let grpc_service = TraceServer::new(ingest.clone(), auth.clone(), settings.max_body_bytes);
    let grpc = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            crate::grpc::otlp_status_codes::<tonic::body::Body>,
        ))
        .layer(crate::grpc::AdmissionLayer::new(ingest.clone()))
        .add_service(grpc_service)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY, a small HTTP/2 frame (a window update, an answer) can wait
            // for the peer's delayed ACK, about 40 ms.
            tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
            stopped(),
        );

    let http_router = http::router(HttpState {
        ingest: ingest.clone(),
        auth: auth.clone(),
        max_body_bytes: settings.max_body_bytes,
    });
    let http = axum::serve(
        listeners.http.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY");
            }
        }),
        http_router,
    )
    .with_graceful_shutdown(stopped());

    let source = Arc::new(StoreSource::live(reader, unwritten));
    let notify_metrics = Arc::new(NotifyMetrics::default());
    let notifier = crate::notify::start(
        source.clone(),
        store.notified()?,
        settings.notify.clone(),
        notify_metrics.clone(),
    );
    let admin_router = admin::router(AdminState {
        ingest: ingest_metrics,
        log: log_state,
        loader: loader_metrics,
        deriver: deriver_metrics,
        retention: retention_metrics,
        notify: notify_metrics,
        ready,
        auth,
        source,
        references: settings.references.clone(),
    });
    let admin = axum::serve(listeners.admin, admin_router).with_graceful_shutdown(stopped());
    drop(ingest);

    let (grpc, http, admin) = tokio::join!(grpc, http, admin);
    grpc.map_err(|err| ServeError::Listener {
        what: "OTLP/gRPC",
        source: Box::new(err),
    })?;
    http.map_err(|err| ServeError::Listener {
        what: "OTLP/HTTP",
        source: Box::new(err),
    })?;
    admin.map_err(|err| ServeError::Listener {
        what: "admin",
        source: Box::new(err),
    })?;
    // Every handle to the journal is gone with the servers: it stops, the loader stores what
    // the log holds, and then the deriver derives and commits what it still holds.
    tokio::task::spawn_blocking(move || {
        if let Some(retention) = retention {
            retention.join();
        }
        if let Some(notifier) = notifier {
            notifier.join();
        }
        let _ = journal_thread.join();
        loader.join();
        if let Some(deriver) = deriver_thread {
            let _ = deriver.join();
        }
        if let Err(err) = store.checkpoint() {
            tracing::warn!(error = %err, "checkpoint on shutdown failed; the write-ahead log keeps the data");
        }
        Ok(store)
    })
    .await
    .map_err(|_| ServeError::Loader)?
}

/// An archtrace before schema v5 that crashed while serving left a span-time range whose
/// edges may be missing: derive it again from the raw spans, one transaction per range.
fn recover_underived(store: &mut Store) -> Result<(), ServeError> {
    let Some((first, last)) = store.underived()? else {
        return Ok(());
    };
    use archtrace_query::SnapshotSource;
    let started = std::time::Instant::now();
    let traces = StoreSource::open(store)
        .and_then(|source| source.rebuild(first, last.saturating_add(1)))
        .map_err(ServeError::Recover)?;
    store.clear_underived()?;
    tracing::warn!(
        traces_derived = traces,
        seconds = started.elapsed().as_secs_f64(),
        "recovered from an unclean stop of an older archtrace: derived the affected hours again"
    );
    Ok(())
}
