//! archtrace's receivers: OTLP/gRPC and OTLP/HTTP into one ingest function, the request log
//! that acknowledgements rest on (the journal), its two consumers (the span loader and the
//! deriver, each with its own offset), and the admin listener (health, metrics, the snapshot
//! and Jaeger dependencies APIs, and the web viewer).

pub mod admin;
pub mod assembly;
pub mod auth;
pub mod exposition;
pub mod grpc;
mod histogram;
pub mod http;
pub mod ingest;
pub mod journal;
pub mod live;
pub mod loader;
pub mod notify;
pub mod retention;
pub mod server;
pub mod service_graph;

pub use server::{serve, BoundAddrs, Listeners, ServeError, ServerSettings};
