//! archtrace's receivers: OTLP/gRPC and OTLP/HTTP into one ingest function, the admin listener
//! with the web viewer, and the OTLP load generator.

pub mod admin;
pub mod assembly;
pub mod auth;
pub mod demo;
pub mod graph;
pub mod grpc;
pub mod http;
pub mod import;
pub mod ingest;
mod json;
pub mod live;
pub mod loadgen;
pub mod otlp;
pub mod otlp_json;
pub mod server;
pub mod synth;
pub mod viewer;

pub use server::{serve, BoundAddrs, Listeners, ServeError, ServerSettings};
