//! Observations summed per edge and per operation pair, with the per-trace facts that make a
//! window's diagnostics. An `Aggregate` covers one time window (a 1-minute bucket online, all
//! of the input offline); aggregates of adjacent windows merge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::derive::{
    derive_trace, EdgeKind, NoLookup, NodeType, Observation, Provenance, SpanLookup,
    TraceDiagnostics,
};
use crate::sketch::LatencySketch;
use crate::span::{Span, TraceId};
use crate::FastMap;

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct EdgeKey {
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub kind: EdgeKind,
}

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct OperationKey {
    pub from_service: Arc<str>,
    pub from_operation: Arc<str>,
    pub to_service: Arc<str>,
    pub to_operation: Arc<str>,
}

/// When something was seen first and last, and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub first_ns: i64,
    pub last_ns: i64,
    pub count: u64,
}

impl Seen {
    pub fn at(time_ns: i64) -> Seen {
        Seen {
            first_ns: time_ns,
            last_ns: time_ns,
            count: 1,
        }
    }

    pub fn merge(&mut self, other: &Seen) {
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.count += other.count;
    }
}

/// The `service.version` of a call's caller and callee; empty when a side reports none.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct VersionPair {
    pub from: Arc<str>,
    pub to: Arc<str>,
}

/// Releases remembered per edge or node: a service deploying every hour must not grow its
/// buckets without bound; the newest are kept.
pub const MAX_VERSIONS: usize = 8;

/// Adds `seen` under `key` and, beyond [`MAX_VERSIONS`], forgets the release seen last longest
/// ago.
pub fn note_version<K: Ord + Clone>(versions: &mut BTreeMap<K, Seen>, key: K, seen: &Seen) {
    match versions.get_mut(&key) {
        Some(known) => known.merge(seen),
        None => {
            versions.insert(key, *seen);
            if versions.len() > MAX_VERSIONS {
                let oldest = versions
                    .iter()
                    .min_by_key(|(_, seen)| (seen.last_ns, seen.first_ns))
                    .map(|(key, _)| key.clone())
                    .expect("more than MAX_VERSIONS entries");
                versions.remove(&oldest);
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EdgeStats {
    pub calls: u64,
    /// The calls the sampled ones stand for: each weighted by its adjusted count (1 when its
    /// sampling is unknown).
    pub estimated_calls: f64,
    pub errors: u64,
    pub latency: LatencySketch,
    pub server_latency: LatencySketch,
    /// Traces in which the edge was seen: calls / traces is the calls per trace.
    pub traces: u64,
    pub max_calls_per_trace: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    /// Calls that were retries of a failed call (attempt 2 and later).
    #[serde(default)]
    pub retries: u64,
    /// The most attempts one call took: what a failing callee sees per call of this edge.
    #[serde(default)]
    pub max_attempts: u64,
    /// Failed calls whose calling endpoint still succeeded (an observed fallback).
    #[serde(default)]
    pub fallbacks: u64,
    /// What callers waited on failed calls: a pile-up at one duration is a timeout.
    #[serde(default)]
    pub error_latency: LatencySketch,
    /// The releases of caller and callee its calls came from (only calls where some side
    /// reports a `service.version`).
    #[serde(default)]
    pub versions: BTreeMap<VersionPair, Seen>,
}

impl EdgeStats {
    fn observe(&mut self, observation: &Observation) {
        if self.calls == 0 {
            self.first_seen_ns = observation.start_ns;
            self.last_seen_ns = observation.start_ns;
        }
        self.calls += 1;
        self.estimated_calls += observation.adjusted_count.unwrap_or(1.0);
        self.errors += u64::from(observation.error);
        self.latency.add(observation.latency_ns);
        if observation.error {
            self.error_latency.add(observation.latency_ns);
        }
        self.retries += u64::from(observation.attempt > 1);
        self.max_attempts = self.max_attempts.max(u64::from(observation.attempt));
        self.fallbacks += u64::from(observation.fallback);
        if let Some(server) = observation.server_latency_ns {
            self.server_latency.add(server);
        }
        self.first_seen_ns = self.first_seen_ns.min(observation.start_ns);
        self.last_seen_ns = self.last_seen_ns.max(observation.start_ns);
        if observation.from_version.is_some() || observation.to_version.is_some() {
            let empty = || Arc::from("");
            let pair = VersionPair {
                from: observation.from_version.clone().unwrap_or_else(empty),
                to: observation.to_version.clone().unwrap_or_else(empty),
            };
            note_version(&mut self.versions, pair, &Seen::at(observation.start_ns));
        }
    }

    pub fn merge(&mut self, other: &EdgeStats) {
        if other.calls == 0 {
            return;
        }
        if self.calls == 0 {
            self.first_seen_ns = other.first_seen_ns;
            self.last_seen_ns = other.last_seen_ns;
        }
        self.calls += other.calls;
        self.estimated_calls += other.estimated_calls;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.server_latency.merge(&other.server_latency);
        self.traces += other.traces;
        self.max_calls_per_trace = self.max_calls_per_trace.max(other.max_calls_per_trace);
        self.first_seen_ns = self.first_seen_ns.min(other.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        self.retries += other.retries;
        self.max_attempts = self.max_attempts.max(other.max_attempts);
        self.fallbacks += other.fallbacks;
        self.error_latency.merge(&other.error_latency);
        for (pair, seen) in &other.versions {
            note_version(&mut self.versions, pair.clone(), seen);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperationStats {
    pub calls: u64,
    pub errors: u64,
    pub latency: LatencySketch,
    /// As [`EdgeStats::retries`] and [`EdgeStats::fallbacks`], for this caller endpoint: a
    /// fallback belongs to the endpoint that has it, not to every caller of the service.
    #[serde(default)]
    pub retries: u64,
    #[serde(default)]
    pub fallbacks: u64,
    /// Start of the first and the last call (meaningless while `calls` is 0).
    #[serde(default)]
    pub first_seen_ns: i64,
    #[serde(default)]
    pub last_seen_ns: i64,
}

impl OperationStats {
    fn observe(&mut self, observation: &Observation) {
        if self.calls == 0 {
            (self.first_seen_ns, self.last_seen_ns) = (observation.start_ns, observation.start_ns);
        }
        self.calls += 1;
        self.errors += u64::from(observation.error);
        self.latency.add(observation.latency_ns);
        self.retries += u64::from(observation.attempt > 1);
        self.fallbacks += u64::from(observation.fallback);
        self.first_seen_ns = self.first_seen_ns.min(observation.start_ns);
        self.last_seen_ns = self.last_seen_ns.max(observation.start_ns);
    }

    pub fn merge(&mut self, other: &OperationStats) {
        if other.calls == 0 {
            return;
        }
        if self.calls == 0 {
            (self.first_seen_ns, self.last_seen_ns) = (other.first_seen_ns, other.last_seen_ns);
        }
        self.first_seen_ns = self.first_seen_ns.min(other.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        self.calls += other.calls;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.retries += other.retries;
        self.fallbacks += other.fallbacks;
    }
}

/// What the window's inputs looked like: a graph built from 40% orphans must say so.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostics {
    pub spans: u64,
    pub traces: u64,
    pub observations: u64,
    pub orphaned_spans: u64,
    pub unresolved_client_spans: u64,
    pub late_spans_paired: u64,
    pub late_spans_dropped: u64,
    pub traces_cut_short: u64,
    /// Spans whose trace told nothing of its sampling: each counted as one call.
    #[serde(default)]
    pub spans_without_sampling: u64,
}

impl Diagnostics {
    pub fn merge(&mut self, other: &Diagnostics) {
        self.spans += other.spans;
        self.traces += other.traces;
        self.observations += other.observations;
        self.orphaned_spans += other.orphaned_spans;
        self.unresolved_client_spans += other.unresolved_client_spans;
        self.late_spans_paired += other.late_spans_paired;
        self.late_spans_dropped += other.late_spans_dropped;
        self.traces_cut_short += other.traces_cut_short;
        self.spans_without_sampling += other.spans_without_sampling;
    }
}

/// What is known of a node apart from its edges.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeFacts {
    /// Some span reports this node as its service.
    pub reports_spans: bool,
    /// Types other rules gave the node (R2, R3).
    pub peer_types: BTreeSet<NodeType>,
    /// Called from outside (R3).
    pub entry_point: bool,
    /// Spans it reported whose trace told nothing of its sampling.
    pub spans_without_sampling: u64,
    /// The first and last start of a span it reported or a call to or from it.
    #[serde(default)]
    pub seen: Option<Seen>,
    /// The `service.version`s of the spans it reported.
    #[serde(default)]
    pub versions: BTreeMap<Arc<str>, Seen>,
}

impl NodeFacts {
    pub fn merge(&mut self, other: &NodeFacts) {
        self.reports_spans |= other.reports_spans;
        self.peer_types.extend(other.peer_types.iter().copied());
        self.entry_point |= other.entry_point;
        self.spans_without_sampling += other.spans_without_sampling;
        if let Some(seen) = &other.seen {
            self.note_seen(seen);
        }
        for (version, seen) in &other.versions {
            note_version(&mut self.versions, version.clone(), seen);
        }
    }

    pub fn note_seen(&mut self, seen: &Seen) {
        match &mut self.seen {
            Some(known) => known.merge(seen),
            None => self.seen = Some(*seen),
        }
    }

    pub fn node_type(&self) -> NodeType {
        // The first of the set is the most specific.
        NodeType::of(self.reports_spans, self.peer_types.iter().next().copied())
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Aggregate {
    pub edges: FastMap<EdgeKey, EdgeStats>,
    /// Per entry operation: the shape of the traces that started there.
    pub entries: FastMap<EntryKey, EntryStats>,
    pub operations: FastMap<OperationKey, OperationStats>,
    pub nodes: BTreeMap<Arc<str>, NodeFacts>,
    pub diagnostics: Diagnostics,
    /// Earliest span start and latest span end seen, in Unix nanoseconds.
    pub span_range: Option<(i64, i64)>,
}

/// The root span's service and operation of a trace.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct EntryKey {
    pub service: Arc<str>,
    pub operation: Arc<str>,
}

/// Exact counts of small whole numbers (chain depths, services per trace): `counts[v]` traces
/// had the value `v`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
}

/// Values beyond this are counted as this (a trace 1,000 services deep is already absurd).
const HISTOGRAM_MAX: usize = 1_000;

impl Histogram {
    pub fn add(&mut self, value: u32) {
        self.add_count(value as usize, 1);
    }

    fn add_count(&mut self, value: usize, count: u64) {
        let value = value.min(HISTOGRAM_MAX);
        if self.counts.len() <= value {
            self.counts.resize(value + 1, 0);
        }
        self.counts[value] += count;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (value, count) in other.counts.iter().enumerate() {
            if *count > 0 {
                self.add_count(value, *count);
            }
        }
    }

    /// The smallest value with at least `q` of the counts at or below it.
    pub fn quantile(&self, q: f64) -> u32 {
        let total: u64 = self.counts.iter().sum();
        let wanted = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (value, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return value as u32;
            }
        }
        0
    }

    pub fn max(&self) -> u32 {
        self.counts.iter().rposition(|c| *c > 0).unwrap_or(0) as u32
    }

    /// The non-zero counts as (value, count), for storage that sums them per value.
    pub fn counts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(v, c)| (v as u32, *c))
    }

    /// The histogram of [`Histogram::counts`].
    pub fn from_counts(counts: impl IntoIterator<Item = (u32, u64)>) -> Histogram {
        let mut histogram = Histogram::default();
        for (value, count) in counts {
            histogram.add_count(value as usize, count);
        }
        histogram
    }

    /// `value:count` pairs, for storage.
    pub fn to_text(&self) -> String {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(v, c)| format!("{v}:{c}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads what [`Histogram::to_text`] writes; unreadable pairs are skipped.
    pub fn from_text(text: &str) -> Histogram {
        let mut histogram = Histogram::default();
        for pair in text.split(',') {
            if let Some((value, count)) = pair.split_once(':') {
                if let (Ok(value), Ok(count)) = (value.parse::<usize>(), count.parse::<u64>()) {
                    histogram.add_count(value, count);
                }
            }
        }
        histogram
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryStats {
    pub traces: u64,
    pub sync_depth: Histogram,
    pub services_touched: Histogram,
    /// The entry span's duration.
    #[serde(default)]
    pub latency: LatencySketch,
    /// Per node (a service, or the database or API a call waited for), its time on the entry's
    /// critical path.
    #[serde(default)]
    pub critical_path: BTreeMap<Arc<str>, PathStats>,
}

impl EntryStats {
    pub fn merge(&mut self, other: &EntryStats) {
        self.traces += other.traces;
        self.sync_depth.merge(&other.sync_depth);
        self.services_touched.merge(&other.services_touched);
        self.latency.merge(&other.latency);
        for (service, stats) in &other.critical_path {
            self.critical_path
                .entry(service.clone())
                .or_default()
                .merge(stats);
        }
    }
}

/// One node's time on an entry operation's critical path.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathStats {
    /// Traces in which the node was on the path.
    pub traces: u64,
    pub total_ns: i64,
    /// Its time on the path per trace (in the traces it was on it).
    pub time: LatencySketch,
}

impl PathStats {
    pub fn merge(&mut self, other: &PathStats) {
        self.traces += other.traces;
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.time.merge(&other.time);
    }
}

impl Aggregate {
    /// Counts a derived trace's shape under its entry operation.
    pub fn note_trace_shape(&mut self, trace: &TraceDiagnostics) {
        if let Some((service, operation)) = &trace.entry {
            let stats = self
                .entries
                .entry(EntryKey {
                    service: service.clone(),
                    operation: operation.clone(),
                })
                .or_default();
            stats.traces += 1;
            stats.sync_depth.add(trace.sync_depth);
            stats.services_touched.add(trace.services_touched);
            if let Some(latency) = trace.entry_latency_ns {
                stats.latency.add(latency);
            }
            for (service, time_ns) in &trace.critical_path {
                let path = stats.critical_path.entry(service.clone()).or_default();
                path.traces += 1;
                path.total_ns = path.total_ns.saturating_add(*time_ns);
                path.time.add(*time_ns);
            }
        }
    }

    /// Derives one complete trace and adds what it shows.
    pub fn add_trace(
        &mut self,
        spans: &[Span],
        lookup: &dyn SpanLookup,
        scratch: &mut Vec<Observation>,
    ) {
        scratch.clear();
        let trace = derive_trace(spans, lookup, scratch);
        self.note_trace(spans, &trace);
        self.add_observations(scratch);
    }

    /// What a derived trace tells besides its edges: diagnostics, shape, services, time range.
    fn note_trace(&mut self, spans: &[Span], trace: &TraceDiagnostics) {
        self.diagnostics.spans += trace.spans;
        self.diagnostics.traces += 1;
        self.diagnostics.observations += trace.observations;
        self.diagnostics.orphaned_spans += trace.orphaned_spans;
        self.diagnostics.unresolved_client_spans += trace.unresolved_callers.len() as u64;
        self.note_trace_shape(trace);
        self.note_spans(spans, trace.adjusted_count);
    }

    /// Notes the services that reported `spans`, the time they cover, and those without
    /// sampling information (none when their trace's adjusted count is known).
    pub fn note_spans(&mut self, spans: &[Span], trace_count: Option<f64>) {
        for span in spans {
            let unsampled = u64::from(span.adjusted_count.or(trace_count).is_none());
            self.diagnostics.spans_without_sampling += unsampled;
            let facts = match self.nodes.get_mut(&span.service) {
                Some(facts) => facts,
                None => self.nodes.entry(span.service.clone()).or_default(),
            };
            facts.reports_spans = true;
            facts.spans_without_sampling += unsampled;
            let seen = Seen::at(span.start_ns);
            facts.note_seen(&seen);
            if let Some(version) = &span.version {
                note_version(&mut facts.versions, version.clone(), &seen);
            }
            let range = self.span_range.get_or_insert((span.start_ns, span.end_ns));
            range.0 = range.0.min(span.start_ns);
            range.1 = range.1.max(span.end_ns);
        }
    }

    /// Adds the observations of one trace (calls per trace are counted within it).
    pub fn add_observations(&mut self, observations: &[Observation]) {
        let mut per_trace: FastMap<&EdgeKey, u64> = FastMap::default();
        let mut keys = Vec::with_capacity(observations.len());
        for observation in observations {
            keys.push(EdgeKey {
                from: observation.from.clone(),
                to: observation.to.clone(),
                kind: observation.kind,
            });
            for (name, node_type) in [
                (&observation.from, observation.from_type),
                (&observation.to, observation.to_type),
            ] {
                let facts = self.nodes.entry(name.clone()).or_default();
                facts.note_seen(&Seen::at(observation.start_ns));
                if node_type != NodeType::Service {
                    facts.peer_types.insert(node_type);
                }
            }
            if observation.provenance == Provenance::Entry {
                self.nodes
                    .entry(observation.to.clone())
                    .or_default()
                    .entry_point = true;
            }
            let operation = self
                .operations
                .entry(OperationKey {
                    from_service: observation.from.clone(),
                    from_operation: observation.caller_operation.clone(),
                    to_service: observation.to.clone(),
                    to_operation: observation.callee_operation.clone(),
                })
                .or_default();
            operation.observe(observation);
        }
        for (key, observation) in keys.iter().zip(observations) {
            self.edges
                .entry(key.clone())
                .or_default()
                .observe(observation);
            *per_trace.entry(key).or_default() += 1;
        }
        for (key, calls) in per_trace {
            let stats = self.edges.get_mut(key).expect("observed above");
            stats.traces += 1;
            stats.max_calls_per_trace = stats.max_calls_per_trace.max(calls);
        }
    }

    pub fn merge(&mut self, other: &Aggregate) {
        for (key, stats) in &other.edges {
            self.edges.entry(key.clone()).or_default().merge(stats);
        }
        for (key, stats) in &other.operations {
            self.operations.entry(key.clone()).or_default().merge(stats);
        }
        for (name, facts) in &other.nodes {
            self.nodes.entry(name.clone()).or_default().merge(facts);
        }
        for (key, stats) in &other.entries {
            self.entries.entry(key.clone()).or_default().merge(stats);
        }
        self.diagnostics.merge(&other.diagnostics);
        if let Some((start, end)) = other.span_range {
            let range = self.span_range.get_or_insert((start, end));
            range.0 = range.0.min(start);
            range.1 = range.1.max(end);
        }
    }
}

/// Aggregates cut into fixed time buckets (1 minute online) by each observation's start time,
/// so that any window can be summed from whole buckets.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Buckets {
    pub width_ns: i64,
    /// Bucket start (Unix nanoseconds) to what happened in it.
    pub buckets: BTreeMap<i64, Aggregate>,
}

impl Buckets {
    pub fn new(width_ns: i64) -> Buckets {
        assert!(width_ns > 0, "buckets need a positive width");
        Buckets {
            width_ns,
            buckets: BTreeMap::new(),
        }
    }

    pub fn bucket_of(&self, time_ns: i64) -> i64 {
        time_ns.div_euclid(self.width_ns) * self.width_ns
    }

    /// Derives one complete trace. Observations go to the bucket of their start; the trace's
    /// spans, nodes and diagnostics to the bucket of its earliest span.
    pub fn add_trace(
        &mut self,
        spans: &[Span],
        lookup: &dyn SpanLookup,
        scratch: &mut Vec<Observation>,
    ) {
        Buckets::add_trace_to_all(&mut [self], spans, lookup, scratch);
    }

    /// Derives a trace once and adds it to buckets of several widths: edges to the bucket of
    /// each call's start, everything else to the bucket of the trace's first span.
    pub fn add_trace_to_all(
        all: &mut [&mut Buckets],
        spans: &[Span],
        lookup: &dyn SpanLookup,
        scratch: &mut Vec<Observation>,
    ) {
        let Some(first) = spans.iter().map(|s| s.start_ns).min() else {
            return;
        };
        scratch.clear();
        let trace = derive_trace(spans, lookup, scratch);
        let mut facts = Aggregate::default();
        facts.note_trace(spans, &trace);
        scratch.sort_by_key(|o| o.start_ns);
        for buckets in all {
            let bucket = buckets.bucket_of(first);
            buckets.buckets.entry(bucket).or_default().merge(&facts);
            buckets.add_sorted_observations(scratch);
        }
    }

    /// Adds one trace's observations, sorted by start, each to the bucket of its start.
    pub fn add_sorted_observations(&mut self, observations: &[Observation]) {
        let width = self.width_ns;
        let bucket_of = |time_ns: i64| time_ns.div_euclid(width) * width;
        for chunk in observations.chunk_by(|a, b| bucket_of(a.start_ns) == bucket_of(b.start_ns)) {
            self.buckets
                .entry(bucket_of(chunk[0].start_ns))
                .or_default()
                .add_observations(chunk);
        }
    }

    /// Everything in `[since, until)`, merged.
    pub fn window(&self, since_ns: i64, until_ns: i64) -> Aggregate {
        let mut total = Aggregate::default();
        for (_, bucket) in self.buckets.range(self.bucket_of(since_ns)..until_ns) {
            total.merge(bucket);
        }
        total
    }
}

/// Spans grouped by trace, in order of first appearance, until the input ends.
#[derive(Default)]
pub struct TraceGroups {
    order: Vec<TraceId>,
    traces: HashMap<TraceId, Vec<Span>>,
}

impl TraceGroups {
    pub fn push(&mut self, spans: Vec<Span>) {
        for span in spans {
            match self.traces.get_mut(&span.trace_id) {
                Some(trace) => trace.push(span),
                None => {
                    self.order.push(span.trace_id);
                    self.traces.insert(span.trace_id, vec![span]);
                }
            }
        }
    }

    /// Derives every trace (complete, since the input has ended) into one aggregate; with a
    /// window, only the traces that have a span starting in it.
    pub fn aggregate(&self, window: Option<(i64, i64)>) -> Aggregate {
        self.derive(window, None, None)
    }

    /// The earliest and latest span start of what was read.
    pub fn span_range(&self) -> Option<(i64, i64)> {
        self.traces
            .values()
            .flatten()
            .map(|s| s.start_ns)
            .fold(None, |range, t| match range {
                None => Some((t, t)),
                Some((a, b)) => Some((a.min(t), b.max(t))),
            })
    }

    /// The `deployment.environment.name` values of the spans read, sorted.
    pub fn environments(&self) -> Vec<String> {
        let found: BTreeSet<&str> = self
            .traces
            .values()
            .flatten()
            .filter_map(|s| s.environment.as_deref())
            .collect();
        found.into_iter().map(str::to_owned).collect()
    }

    /// Like [`TraceGroups::aggregate`], only the traces with a span of `environment` when one
    /// is named, and each trace's observations also added to `buckets` (derived once for both).
    /// Every trace derived into buckets of `width_ns` (for history over files).
    pub fn buckets(&self, width_ns: i64) -> Buckets {
        let mut buckets = Buckets::new(width_ns);
        let mut scratch = Vec::new();
        for spans in self.order.iter().filter_map(|id| self.traces.get(id)) {
            buckets.add_trace(spans, &NoLookup, &mut scratch);
        }
        buckets
    }

    pub fn derive(
        &self,
        window: Option<(i64, i64)>,
        environment: Option<&str>,
        mut buckets: Option<&mut Buckets>,
    ) -> Aggregate {
        let mut aggregate = Aggregate::default();
        let mut scratch = Vec::new();
        for spans in self.order.iter().filter_map(|id| self.traces.get(id)) {
            let in_window = window.is_none_or(|(since, until)| {
                spans
                    .iter()
                    .any(|s| s.start_ns >= since && s.start_ns < until)
            });
            let in_environment = environment
                .is_none_or(|env| spans.iter().any(|s| s.environment.as_deref() == Some(env)));
            if in_window && in_environment {
                aggregate.add_trace(spans, &NoLookup, &mut scratch);
                if let Some(buckets) = buckets.as_deref_mut() {
                    scratch.sort_by_key(|o| o.start_ns);
                    buckets.add_sorted_observations(&scratch);
                }
            }
        }
        aggregate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanKind;

    const MINUTE: i64 = 60_000_000_000;

    #[test]
    fn histograms_give_exact_quantiles_and_survive_storage_and_merging() {
        let mut h = Histogram::default();
        for v in [3, 1, 2, 2, 5] {
            h.add(v);
        }
        assert_eq!((h.quantile(0.5), h.quantile(0.99), h.max()), (2, 5, 5));
        assert_eq!(h.to_text(), "1:1,2:2,3:1,5:1");
        let mut merged = Histogram::from_text(&h.to_text());
        assert_eq!(merged, h);
        merged.merge(&Histogram::from_text("9:3,x:1"));
        assert_eq!((merged.quantile(0.5), merged.max()), (3, 9));
        assert_eq!(Histogram::default().quantile(0.5), 0);
        assert_eq!(
            h.counts().collect::<Vec<_>>(),
            [(1, 1), (2, 2), (3, 1), (5, 1)]
        );
        assert_eq!(Histogram::from_counts(h.counts()), h);
    }

    fn span(
        trace: u8,
        id: u8,
        parent: Option<u8>,
        service: &str,
        kind: SpanKind,
        start_ns: i64,
    ) -> Span {
        Span::new([trace; 16], [id; 8], service, kind)
            .with_parent(parent.map(|p| [p; 8]))
            .with_name(format!("op-{id}"))
            .with_time(start_ns, start_ns + 1_000_000)
    }

    /// web calls cart `calls` times in one trace, starting at `start`.
    fn trace(id: u8, start: i64, calls: u8) -> Vec<Span> {
        let mut spans = vec![span(id, 1, None, "web", SpanKind::Server, start)];
        for call in 0..calls {
            let client = 10 + 2 * call;
            spans.push(span(
                id,
                client,
                Some(1),
                "web",
                SpanKind::Client,
                start + 1_000,
            ));
            spans.push(span(
                id,
                client + 1,
                Some(client),
                "cart",
                SpanKind::Server,
                start + 2_000,
            ));
        }
        spans
    }

    fn edge<'a>(aggregate: &'a Aggregate, from: &str, to: &str) -> &'a EdgeStats {
        aggregate
            .edges
            .iter()
            .find(|(k, _)| &*k.from == from && &*k.to == to)
            .map(|(_, v)| v)
            .unwrap()
    }

    #[test]
    fn calls_per_trace_counts_repeated_calls_within_a_trace() {
        let mut aggregate = Aggregate::default();
        let mut scratch = Vec::new();
        aggregate.add_trace(&trace(1, 0, 3), &NoLookup, &mut scratch);
        aggregate.add_trace(&trace(2, 0, 1), &NoLookup, &mut scratch);
        let stats = edge(&aggregate, "web", "cart");
        assert_eq!(
            (stats.calls, stats.traces, stats.max_calls_per_trace),
            (4, 2, 3)
        );
        assert_eq!(aggregate.diagnostics.traces, 2);
        assert_eq!(aggregate.diagnostics.spans, 7 + 3);
        assert!(aggregate.nodes["web"].entry_point);
        assert_eq!(aggregate.nodes["web"].node_type(), NodeType::Service);
    }

    #[test]
    fn estimated_calls_weigh_each_call_and_unsampled_spans_are_counted_per_service() {
        let mut aggregate = Aggregate::default();
        let mut scratch = Vec::new();
        // Two calls in a trace whose root says 1 in 4, one call in a trace that says nothing.
        let mut sampled = trace(1, 0, 2);
        sampled[0].adjusted_count = Some(4.0);
        aggregate.add_trace(&sampled, &NoLookup, &mut scratch);
        aggregate.add_trace(&trace(2, 0, 1), &NoLookup, &mut scratch);
        let stats = edge(&aggregate, "web", "cart");
        assert_eq!((stats.calls, stats.estimated_calls), (3, 2.0 * 4.0 + 1.0));
        // The unsampled trace's 3 spans: web's root and client span, cart's server span.
        assert_eq!(aggregate.diagnostics.spans_without_sampling, 3);
        assert_eq!(aggregate.nodes["web"].spans_without_sampling, 2);
        assert_eq!(aggregate.nodes["cart"].spans_without_sampling, 1);
        let mut merged = Aggregate::default();
        merged.merge(&aggregate);
        merged.merge(&aggregate);
        assert_eq!(edge(&merged, "web", "cart").estimated_calls, 18.0);
        assert_eq!(merged.nodes["web"].spans_without_sampling, 4);
        assert_eq!(merged.diagnostics.spans_without_sampling, 6);
    }

    #[test]
    fn buckets_split_by_observation_start_and_windows_sum_them() {
        let mut buckets = Buckets::new(MINUTE);
        let mut scratch = Vec::new();
        buckets.add_trace(&trace(1, 10, 1), &NoLookup, &mut scratch);
        buckets.add_trace(&trace(2, MINUTE + 10, 2), &NoLookup, &mut scratch);
        buckets.add_trace(&trace(3, 5 * MINUTE, 1), &NoLookup, &mut scratch);
        assert_eq!(buckets.buckets.len(), 3);
        let first_two = buckets.window(0, 2 * MINUTE);
        assert_eq!(edge(&first_two, "web", "cart").calls, 3);
        assert_eq!(first_two.diagnostics.traces, 2);
        let all = buckets.window(0, 10 * MINUTE);
        assert_eq!(edge(&all, "web", "cart").calls, 4);
        assert_eq!(edge(&all, "user", "web").calls, 3);
        assert_eq!(edge(&all, "web", "cart").max_calls_per_trace, 2);
        // Merging bucket by bucket equals deriving everything at once.
        let mut direct = Aggregate::default();
        for (id, start, calls) in [(1, 10, 1), (2, MINUTE + 10, 2), (3, 5 * MINUTE, 1)] {
            direct.add_trace(&trace(id, start, calls), &NoLookup, &mut scratch);
        }
        assert_eq!(all.edges, direct.edges);
        assert_eq!(all.diagnostics, direct.diagnostics);
    }

    #[test]
    fn one_derivation_fills_buckets_of_every_width() {
        let traces = [(1, 10, 1), (2, MINUTE + 10, 2), (3, 61 * MINUTE, 1)];
        let (mut minute, mut hour) = (Buckets::new(MINUTE), Buckets::new(60 * MINUTE));
        let mut direct = Aggregate::default();
        let mut scratch = Vec::new();
        for (id, start, calls) in traces {
            let spans = trace(id, start, calls);
            Buckets::add_trace_to_all(
                &mut [&mut minute, &mut hour],
                &spans,
                &NoLookup,
                &mut scratch,
            );
            direct.add_trace(&spans, &NoLookup, &mut scratch);
        }
        assert_eq!(minute.buckets.len(), 3);
        assert_eq!(hour.buckets.len(), 2);
        for buckets in [&minute, &hour] {
            let all = buckets.window(0, 120 * MINUTE);
            assert_eq!(all.edges, direct.edges);
            assert_eq!(all.diagnostics, direct.diagnostics);
            assert_eq!(all.nodes, direct.nodes);
        }
        assert_eq!(hour.window(0, 60 * MINUTE).diagnostics.traces, 2);
    }
}
