//! The service-graph series that Tempo's metrics-generator and the OpenTelemetry Collector's
//! `servicegraph` connector emit, counted from every call the deriver derives, so that Grafana's
//! Service Graph view and Node Graph panels work on archtrace's `/metrics` with no plugin.
//!
//! Counters are cumulative since the process started. Labels are `client`, `server` and
//! `connection_type`; operations are not labels, so the series stay as many as the edges.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use archtrace_analyzer::derive::{EdgeKind, NodeType, Observation, Provenance};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Tempo's default buckets for the service-graph latency histograms, in seconds.
pub const BUCKETS_SECONDS: [f64; 8] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8];

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct EdgeLabels {
    pub client: String,
    pub server: String,
    pub connection_type: String,
}

/// Tempo's connection type of a call: through a queue, to a database, to or from something
/// that reports no spans (a virtual node), or between two instrumented services (empty).
pub fn connection_type(from: NodeType, to: NodeType, kind: EdgeKind) -> &'static str {
    if kind == EdgeKind::Async || from == NodeType::Messaging || to == NodeType::Messaging {
        "messaging_system"
    } else if to == NodeType::Database {
        "database"
    } else if to == NodeType::External || from == NodeType::Client {
        "virtual_node"
    } else {
        ""
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS_SECONDS)
}

type Histograms = Family<EdgeLabels, Histogram, fn() -> Histogram>;
type EstimatedCounter = Counter<f64, AtomicU64>;

/// The series; clones share their counts.
#[derive(Clone, Debug)]
pub struct ServiceGraph {
    /// Requests and failures count what the sampled calls stand for (their adjusted counts),
    /// as Tempo's span multiplier does.
    requests: Family<EdgeLabels, EstimatedCounter>,
    failed: Family<EdgeLabels, EstimatedCounter>,
    server_seconds: Histograms,
    client_seconds: Histograms,
    unpaired: Family<EdgeLabels, Counter>,
}

impl Default for ServiceGraph {
    fn default() -> Self {
        ServiceGraph {
            requests: Family::default(),
            failed: Family::default(),
            server_seconds: Family::new_with_constructor(latency_histogram),
            client_seconds: Family::new_with_constructor(latency_histogram),
            unpaired: Family::default(),
        }
    }
}

impl ServiceGraph {
    /// Counts derived calls. The client histogram has what callers waited, when the caller
    /// reported a span; the server histogram the callee's own span, when it reported one.
    /// Calls are grouped by edge first, so the series are looked up (and their labels
    /// allocated) once per edge of a trace, not once per call: this runs on the deriver's path.
    pub fn observe(&self, observations: &[Observation]) {
        let mut by_edge: BTreeMap<(&str, &str, &'static str), Vec<&Observation>> = BTreeMap::new();
        for o in observations {
            let connection = connection_type(o.from_type, o.to_type, o.kind);
            by_edge
                .entry((&o.from, &o.to, connection))
                .or_default()
                .push(o);
        }
        let seconds = |ns: i64| ns.max(0) as f64 / 1e9;
        for ((client, server, connection), calls) in by_edge {
            let labels = EdgeLabels {
                client: client.to_owned(),
                server: server.to_owned(),
                connection_type: connection.to_owned(),
            };
            let weight = |o: &&Observation| o.adjusted_count.unwrap_or(1.0);
            self.requests
                .get_or_create(&labels)
                .inc_by(calls.iter().map(weight).sum());
            let failed: f64 = calls.iter().filter(|o| o.error).map(weight).sum();
            if failed > 0.0 {
                self.failed.get_or_create(&labels).inc_by(failed);
            }
            let mut client_waits = Vec::new();
            let mut server_times = Vec::new();
            for o in calls {
                match o.provenance {
                    // A root span called from outside: only the callee's side is known.
                    Provenance::Entry => server_times.push(o.latency_ns),
                    _ => {
                        client_waits.push(o.latency_ns);
                        server_times.extend(o.server_latency_ns);
                    }
                }
            }
            for (family, values) in [
                (&self.client_seconds, client_waits),
                (&self.server_seconds, server_times),
            ] {
                if !values.is_empty() {
                    let histogram = family.get_or_create(&labels);
                    for ns in values {
                        histogram.observe(seconds(ns));
                    }
                }
            }
        }
    }

    /// Counts client spans whose callee is unknown: no server span answered them and no
    /// attribute names it.
    pub fn unpaired_clients(&self, services: &[Arc<str>]) {
        for service in services {
            self.unpaired
                .get_or_create(&EdgeLabels {
                    client: service.to_string(),
                    server: String::new(),
                    connection_type: String::new(),
                })
                .inc();
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "traces_service_graph_request",
            "Requests between two nodes, as Tempo's service graphs count them",
            self.requests.clone(),
        );
        registry.register(
            "traces_service_graph_request_failed",
            "Failed requests between two nodes",
            self.failed.clone(),
        );
        registry.register(
            "traces_service_graph_request_server_seconds",
            "Time the server took to answer a request, from its own span",
            self.server_seconds.clone(),
        );
        registry.register(
            "traces_service_graph_request_client_seconds",
            "Time the client waited for a request, from its span",
            self.client_seconds.clone(),
        );
        registry.register(
            "traces_service_graph_unpaired_spans",
            "Client spans whose server is unknown (no server span, no attribute naming it)",
            self.unpaired.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_types_follow_tempo() {
        use EdgeKind::{Async, Sync};
        use NodeType::{Client, Database, External, Messaging, Service};
        let cases = [
            (Service, Service, Sync, ""),
            (Service, Service, Async, "messaging_system"),
            (Service, Messaging, Async, "messaging_system"),
            (Messaging, Service, Async, "messaging_system"),
            (Service, Database, Sync, "database"),
            (Service, External, Sync, "virtual_node"),
            (Client, Service, Sync, "virtual_node"),
        ];
        for (from, to, kind, expected) in cases {
            assert_eq!(connection_type(from, to, kind), expected, "{from:?} {to:?}");
        }
    }
}
