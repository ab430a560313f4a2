//! archtrace's receivers: OTLP/gRPC and OTLP/HTTP into one ingest function, the single writer's
//! queue in front of the store, live derivation of the stored spans, and the admin listener
//! (health, metrics, the snapshot API and the web viewer).

pub mod admin;
pub mod assembly;
pub mod auth;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod live;
pub mod server;

pub use server::{serve, BoundAddrs, Listeners, ServeError, ServerSettings};
