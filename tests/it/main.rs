//! End-to-end tests: the real server on real ports, real OpenTelemetry exporters, real DuckDB files.

mod bad_input;
mod browser;
mod cli;
mod clickhouse;
mod conform;
mod deploy;
mod disk_full;
mod domains;
mod drift;
mod durability;
mod export;
mod fixtures;
mod graph;
mod hotspots;
mod impact;
mod import;
mod instrument;
mod interop;
mod live_services;
mod otel_rows;
mod overload;
mod retention;
mod sampling;
mod sdk_export;
mod support;
mod time_travel;
