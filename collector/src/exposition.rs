//! `/metrics` in the OpenMetrics text format, through prometheus-client: the write path's
//! counters, gauges and latencies; Tempo's service-graph series; and the architecture of the
//! last day as gauges (findings by kind, risk per service, when each edge was first seen).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use archtrace_analyzer::analysis::Analyzed;
use archtrace_analyzer::derive::NodeType;
use archtrace_analyzer::time::parse_rfc3339;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::ingest::{IngestMetrics, Outcome, Transport};
use crate::journal::{ConsumerProgress, LogState};
use crate::live::DeriverMetrics;
use crate::loader::LoaderMetrics;
use crate::notify::NotifyMetrics;
use crate::retention::RetentionMetrics;
use crate::service_graph::{connection_type, EdgeLabels};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The write path's counters and gauges, read from the atomics the server updates at each
/// scrape.
#[derive(Debug)]
pub struct ServerSeries {
    pub ingest: Arc<IngestMetrics>,
    pub log: Arc<LogState>,
    pub loader: Arc<LoaderMetrics>,
    pub deriver: Arc<DeriverMetrics>,
    pub retention: Arc<RetentionMetrics>,
    pub notify: Arc<NotifyMetrics>,
}

impl Collector for ServerSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (ingest, loader, deriver, retention, notify) = (
            &self.ingest,
            &self.loader,
            &self.deriver,
            &self.retention,
            &self.notify,
        );
        // Names without `_total`: the OpenMetrics encoder adds it to counters.
        for (name, help, value) in [
            ("archtrace_spans_received", "Spans received in export requests.", load(&ingest.spans_received)),
            ("archtrace_spans_accepted", "Spans made durable in the request log and acknowledged.", load(&ingest.spans_accepted)),
            ("archtrace_spans_rejected", "Spans rejected as invalid (reported through partial_success).", load(&ingest.spans_rejected)),
            ("archtrace_spans_refused", "Valid spans refused because the log was over its bounds or could not be written; clients retry them.", load(&ingest.spans_refused)),
            ("archtrace_spans_loaded", "Spans loaded from the request log into the store.", load(&loader.loaded_spans)),
            ("archtrace_spans_sampled", "Spans stored as samples with --spans sampled (traces with errors, examples of each edge).", load(&deriver.spans_sampled)),
            ("archtrace_deriver_checkpoints", "Deriver commits of closed buckets, samples, its state and its log offset.", load(&deriver.checkpoints)),
            ("archtrace_deriver_checkpoint_failures", "Deriver commits that failed (and were retried).", load(&deriver.checkpoint_failures)),
            ("archtrace_store_commit_failures", "Loader commits to the store that failed (and were retried).", load(&loader.commit_failures)),
            ("archtrace_retention_spans_deleted", "Raw spans deleted as older than --retention.", load(&retention.spans_deleted)),
            ("archtrace_retention_bucket_rows_deleted", "Derived bucket rows deleted as older than --bucket-retention.", load(&retention.bucket_rows_deleted)),
            ("archtrace_retention_transactions", "Transactions retention deleted in (an hour of spans or a day of buckets each).", load(&retention.transactions)),
            ("archtrace_retention_failures", "Prunings that failed (and are tried again later).", load(&retention.failures)),
            ("archtrace_notify_events", "Architecture events found for the webhooks (each sent to every webhook).", load(&notify.events)),
            ("archtrace_notify_delivered", "Webhook posts of an event that succeeded.", load(&notify.delivered)),
            ("archtrace_notify_failed", "Events a webhook never accepted after every retry.", load(&notify.failed)),
            ("archtrace_notify_retries", "Webhook posts retried after a failure.", load(&notify.retries)),
            ("archtrace_notify_dropped", "Events not posted because a webhook's queue was full, or at shutdown.", load(&notify.dropped)),
            ("archtrace_notify_runs_failed", "Looks for events that failed (and are tried again later).", load(&notify.runs_failed)),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        let log = &self.log;
        for (name, help, value) in [
            (
                "archtrace_requests_in_flight",
                "Export requests admitted and not yet answered.",
                load(&ingest.requests_in_flight),
            ),
            (
                "archtrace_log_bytes",
                "Bytes the request log's segments take on disk.",
                load(&log.disk_bytes),
            ),
            (
                "archtrace_log_lag_bytes",
                "Request log bytes acknowledged and not yet committed by every consumer.",
                log.lag_bytes(),
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let lag = ConstGauge::new(log.lag_seconds());
        lag.encode(encoder.encode_descriptor(
            "archtrace_log_lag_seconds",
            "How much older the oldest consumer's last committed request is than the newest acknowledged one.",
            None,
            lag.metric_type(),
        )?)?;
        let mut requests = encoder.encode_descriptor(
            "archtrace_requests",
            "Export requests by transport and outcome.",
            None,
            MetricType::Counter,
        )?;
        for transport in Transport::ALL {
            for outcome in Outcome::ALL {
                let labels = [
                    ("transport", transport.as_str()),
                    ("outcome", outcome.as_str()),
                ];
                ConstCounter::new(ingest.requests(transport, outcome))
                    .encode(requests.encode_family(&labels)?)?;
            }
        }
        for (name, help, bytes) in [
            ("archtrace_log_consumer_lag_bytes", "Request log bytes acknowledged and not yet committed, per consumer (spans: the span loader; derive: the deriver, which commits every 5 s).", Some(LogState::consumer_lag_bytes as fn(&LogState, &ConsumerProgress) -> u64)),
            ("archtrace_log_consumer_unread_bytes", "Request log bytes acknowledged and not yet read, per consumer: how far behind it is.", Some(LogState::consumer_unread_bytes)),
            ("archtrace_log_consumer_lag_seconds", "How much older a consumer's last committed request is than the newest acknowledged one.", None),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (consumer, progress) in log.consumers() {
                if !progress.runs() {
                    continue;
                }
                let labels = [("consumer", consumer)];
                if let Some(bytes) = bytes {
                    let value = i64::try_from(bytes(log, progress)).unwrap_or(i64::MAX);
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                } else {
                    ConstGauge::new(log.consumer_lag_seconds(progress))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Everything the server counts, registered once.
pub fn server_registry(series: ServerSeries) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "archtrace_log_fsync_seconds",
        "Latency of one append and fdatasync of the request log (one group of requests)",
        series.log.fsync.0.clone(),
    );
    registry.register(
        "archtrace_ingest_acknowledge_seconds",
        "From a request's body received to its spans durable in the request log (accepted requests)",
        series.ingest.acknowledge.0.clone(),
    );
    registry.register(
        "archtrace_store_commit_seconds",
        "Latency of one loader commit to the store",
        series.loader.commit.0.clone(),
    );
    series.deriver.service_graph.register(&mut registry);
    registry.register_collector(Box::new(series));
    registry
}

/// The architecture of `analyzed` as gauges: findings by kind and severity, each service's
/// risk score, and when each edge was first seen (Unix seconds).
pub fn architecture_registry(analyzed: &Analyzed) -> Registry {
    let mut registry = Registry::default();
    let snapshot = &analyzed.snapshot;
    let findings = Family::<[(&'static str, String); 2], Gauge>::default();
    let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
    for finding in &snapshot.findings {
        let kind = serde_json::to_value(finding.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry((kind, finding.severity.as_str())).or_default() += 1;
    }
    for ((kind, severity), count) in counts {
        findings
            .get_or_create(&[("kind", kind), ("severity", severity.to_owned())])
            .set(count);
    }
    registry.register(
        "archtrace_findings",
        "Coupling and risk findings of the last 24 hours, by kind and severity",
        findings,
    );
    let risk = Family::<[(&'static str, String); 1], Gauge<f64, AtomicU64>>::default();
    for hotspot in &analyzed.hotspots {
        risk.get_or_create(&[("service", hotspot.service.clone())])
            .set(hotspot.score);
    }
    registry.register(
        "archtrace_service_risk_score",
        "Risk score of each service over the last 24 hours (as `archtrace hotspots` ranks them)",
        risk,
    );
    let types: BTreeMap<&str, NodeType> = snapshot
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.node_type))
        .collect();
    let mut first_seen: BTreeMap<EdgeLabels, i64> = BTreeMap::new();
    for edge in &snapshot.edges {
        let Some(seen_ns) = parse_rfc3339(&edge.first_seen) else {
            continue;
        };
        let type_of = |name: &str| types.get(name).copied().unwrap_or(NodeType::Service);
        let labels = EdgeLabels {
            client: edge.from.clone(),
            server: edge.to.clone(),
            connection_type: connection_type(type_of(&edge.from), type_of(&edge.to), edge.kind)
                .to_owned(),
        };
        let entry = first_seen.entry(labels).or_insert(seen_ns);
        *entry = (*entry).min(seen_ns);
    }
    let seen = Family::<EdgeLabels, Gauge<f64, AtomicU64>>::default();
    for (labels, ns) in first_seen {
        seen.get_or_create(&labels).set(ns as f64 / 1e9);
    }
    registry.register(
        "archtrace_edge_first_seen_timestamp_seconds",
        "When each edge was first seen in the last 24 hours (Unix seconds)",
        seen,
    );
    registry
}

/// The registries as one OpenMetrics exposition.
pub fn render(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for registry in registries {
        prometheus_client::encoding::text::encode_registry(&mut out, registry)
            .expect("writing to a String cannot fail");
    }
    prometheus_client::encoding::text::encode_eof(&mut out)
        .expect("writing to a String cannot fail");
    out
}
