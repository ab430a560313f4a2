//! Traffic for archtrace: the simulated online shop that `archtrace demo` exports to a running
//! server ([`shop`]), the load generator that measures ingest ([`loadgen`]), and synthetic
//! derived traffic for read benchmarks ([`graphs`]).

pub mod graphs;
pub mod loadgen;
pub mod shop;
