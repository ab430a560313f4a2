//! Traffic for archtrace: the simulated online shop that `archtrace demo` exports to a running
//! server ([`shop`]), and the load generator that measures ingest ([`loadgen`]).

pub mod loadgen;
pub mod shop;
