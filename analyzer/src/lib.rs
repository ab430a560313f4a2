//! The pure core of archtrace: the span model that every other crate speaks, edge derivation,
//! aggregates, the snapshot data, its analysis (metrics, findings, risk), rules and drift.
//!
//! Modules depend one way: `span` ← `derive` ← `aggregate` ← `snapshot` (data only) ←
//! `metrics` ← `findings` ← `risk` ← `analysis` ← `drift` ← `check_output`.
//!
//! Architecture invariant: this crate does no IO, has no async runtime and no database. It is a
//! function from spans to graphs and findings, tested with plain data.

pub mod actions;
pub mod aggregate;
pub mod analysis;
pub mod check_output;
pub mod declared;
pub mod derive;
pub mod domains;
pub mod drift;
pub mod export;
pub mod findings;
pub mod history;
pub mod impact;
pub mod metrics;
pub mod render;
pub mod resilience;
pub mod risk;
pub mod rules;
pub mod sampling;
pub mod shared_text;
pub mod sketch;
pub mod snapshot;
pub mod span;
pub mod time;

/// A hash map for the hot paths of derivation, keyed by span and trace ids and node names:
/// foldhash is several times faster than the standard SipHash there, and its per-process seed
/// still keeps keys chosen by telemetry senders from colliding on purpose.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use span::{
    Link, PeerAttributes, PeerKey, Span, SpanDetail, SpanId, SpanKind, StatusCode, TraceId,
};
