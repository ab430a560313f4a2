//! Puts the receivers, the admin listener and the writer together, and takes them apart again
//! on shutdown: stop accepting, finish in-flight requests, commit the queue, checkpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archtrace_store::{QueueLimits, Store, Writer};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;

use archtrace_query::store::StoreSource;

use crate::admin::{self, AdminState};
use crate::assembly::AssemblySettings;
use crate::auth::Auth;
use crate::grpc::GrpcTraceService;
use crate::http::{self, HttpState};
use crate::ingest::{Ingest, IngestMetrics};

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:4317";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:4318";
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:4320";
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// 64 requests of OTLP's usual 512 spans keep the writer's queue full at any rate this server
/// reaches, while 640 clients at once stay within a few hundred MB.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 64;
/// DuckDB's memory while serving: appends need little, and the server should stay small.
const SERVER_DUCKDB_MEMORY: &str = "128MB";
/// Under load the default 16 MB threshold checkpoints every ~230k spans, each a writer stall of
/// up to a second; 256 MB (about 3.5M spans) measured 46k → 71k spans/s and p99 923 → 126 ms
/// over 100 s of load (`archtrace loadgen`).
const SERVER_CHECKPOINT_THRESHOLD: &str = "256MB";

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub queue: QueueLimits,
    /// Largest request accepted, after decompression, on both transports.
    pub max_body_bytes: usize,
    /// Requests read, decoded or waiting for their commit at once, over both transports; more
    /// are refused as overloaded before their bodies are decoded.
    pub max_requests_in_flight: usize,
    pub auth_token: Option<String>,
    /// Derive edges while serving; without it spans are only stored (`archtrace rebuild`
    /// derives them later).
    pub derive_edges: bool,
    pub assembly: AssemblySettings,
    /// A snapshot for the viewer's drift page to compare with.
    pub baseline: Option<archtrace_analyzer::snapshot::Snapshot>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            queue: QueueLimits::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            auth_token: None,
            derive_edges: true,
            assembly: AssemblySettings::default(),
            baseline: None,
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
    #[error("the writer thread stopped unexpectedly")]
    Writer,
    #[error("could not set up the store for serving")]
    Store(#[from] archtrace_store::QueryError),
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
    let reader = store.reader()?;
    let live = if settings.derive_edges {
        Some(crate::live::start(
            settings.assembly.clone(),
            store.bucket_writer()?,
        ))
    } else {
        None
    };
    let on_commit: Option<archtrace_store::writer::OnCommit> = live.as_ref().map(|live| {
        let handoff = live.sender.clone();
        Box::new(move |spans| {
            // Blocks when the assembler is behind: the writer's queue then fills and
            // clients are told to retry, instead of memory growing here.
            let _ = handoff.send(spans);
        }) as archtrace_store::writer::OnCommit
    });
    let (writer, writer_thread) = Writer::spawn(store, settings.queue, on_commit);
    let (unwritten, assembly) = match live {
        Some(live) => (live.unwritten, Some(live.thread)),
        None => (Default::default(), None),
    };
    let writer_metrics = writer.metrics().clone();
    let ingest_metrics = Arc::new(IngestMetrics::default());
    let ingest = Arc::new(Ingest::new(
        writer,
        ingest_metrics.clone(),
        settings.max_requests_in_flight.max(1),
    ));
    let auth = Auth::new(settings.auth_token.clone());
    let ready = Arc::new(AtomicBool::new(true));

    let (stop_sender, stop_receiver) = watch::channel(false);
    let stop_ready = ready.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests, draining the queue");
        stop_ready.store(false, Ordering::Relaxed);
        let _ = stop_sender.send(true);
    });
    let stopped = move || {
        let mut receiver = stop_receiver.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    };

    let grpc_service = TraceServiceServer::new(GrpcTraceService::new(ingest.clone(), auth.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(settings.max_body_bytes);
    let grpc = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            crate::grpc::otlp_status_codes::<tonic::body::Body>,
        ))
        .layer(crate::grpc::AdmissionLayer::new(ingest.clone()))
        .add_service(grpc_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listeners.grpc), stopped());

    let http_router = http::router(HttpState {
        ingest: ingest.clone(),
        auth: auth.clone(),
        max_body_bytes: settings.max_body_bytes,
    });
    let http = axum::serve(listeners.http, http_router).with_graceful_shutdown(stopped());

    let admin_router = admin::router(AdminState {
        ingest: ingest_metrics,
        writer: writer_metrics,
        ready,
        auth,
        source: Arc::new(StoreSource::live(reader, unwritten)),
        baseline: settings.baseline.clone(),
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
    // Every handle to the writer is gone with the servers: joining it commits what is queued,
    // and then the assembler derives and writes what it still holds.
    tokio::task::spawn_blocking(move || {
        let store = writer_thread.join();
        if let Some(assembly) = assembly {
            let _ = assembly.join();
        }
        store
    })
    .await
    .map_err(|_| ServeError::Writer)
}
