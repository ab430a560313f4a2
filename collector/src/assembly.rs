//! Live trace assembly: spans of one trace arrive in different requests from different
//! services. They are grouped by trace id in a bounded buffer and derived once the trace has been
//! idle for `trace_idle`. A span that arrives after its trace was derived is paired against a
//! bounded index of recently derived spans (`late_window`) without counting anything twice.
//!
//! No IO here: time is passed in, and the results are buckets for the caller to write.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::derive::{
    derive_trace, operation_name, LinkedSpan, Observation, Provenance, SpanLookup,
};
use archtrace_analyzer::span::OptionalDetail;
use archtrace_analyzer::{FastMap, Link, Span, SpanId, StatusCode, TraceId};

use crate::service_graph::ServiceGraph;

#[derive(Clone, Debug)]
pub struct AssemblySettings {
    /// A trace is complete once none of its spans has arrived for this long.
    pub trace_idle: Duration,
    /// How long derived spans are remembered for pairing late ones.
    pub late_window: Duration,
    /// Spans waiting for their trace to complete; past it the oldest traces are derived early.
    pub max_buffered_spans: usize,
    /// Derived spans remembered for late pairing; past it the oldest traces are forgotten.
    pub max_remembered_spans: usize,
    /// `Some(n)`: keep the spans (with all their detail) of every trace with an error and of
    /// `n` example traces per edge and minute, for the caller to store (`--spans sampled`).
    pub sample: Option<u32>,
}

impl Default for AssemblySettings {
    fn default() -> Self {
        AssemblySettings {
            trace_idle: Duration::from_secs(5),
            late_window: Duration::from_secs(60),
            // Tens of MB each at most; at high rates traces are derived before they idle.
            max_buffered_spans: 100_000,
            max_remembered_spans: 50_000,
            sample: None,
        }
    }
}

/// (minute, from, to): example traces kept of an edge in a minute.
type ExampleKey = (i64, Arc<str>, Arc<str>);

/// Edge-minutes whose examples are counted; past it the oldest minutes are forgotten.
const MAX_EXAMPLE_KEYS: usize = 100_000;

struct Pending {
    spans: Vec<Span>,
    last_arrival: Instant,
}

/// What is remembered of a derived trace for late pairing.
struct Derived {
    spans: Vec<Span>,
    derived_at: Instant,
    /// Spans whose parent had not arrived: a late parent pairs them.
    orphans: HashSet<SpanId>,
    /// Client spans already counted as calls to an uninstrumented peer (R2).
    counted_as_uninstrumented: HashSet<SpanId>,
    /// Its spans were kept as a sample: late ones are kept too.
    kept: bool,
}

struct Remembered<'a>(&'a FastMap<TraceId, Derived>);

impl SpanLookup for Remembered<'_> {
    fn find(&self, trace_id: &TraceId, span_id: &SpanId) -> Option<LinkedSpan> {
        let span = self
            .0
            .get(trace_id)?
            .spans
            .iter()
            .find(|s| s.span_id == *span_id)?;
        Some(LinkedSpan {
            service: span.service.clone(),
            operation: operation_name(span),
            version: span.version.clone(),
        })
    }
}

pub struct Assembler {
    settings: AssemblySettings,
    pending: FastMap<TraceId, Pending>,
    /// (arrival, trace) in arrival order; stale entries (the trace saw a later span) are skipped.
    arrivals: VecDeque<(Instant, TraceId)>,
    buffered_spans: usize,
    derived: FastMap<TraceId, Derived>,
    derived_order: VecDeque<(Instant, TraceId)>,
    remembered_spans: usize,
    minute: Buckets,
    hour: Buckets,
    scratch: Vec<Observation>,
    examples: BTreeMap<ExampleKey, u32>,
    kept: Vec<Span>,
    /// Where derived calls are counted for `/metrics`, when the server exposes them.
    service_graph: Option<ServiceGraph>,
}

/// What an assembler holds, saved with the deriver's log offset so that a restart resumes
/// exactly where it was. Times are ages at the moment of saving.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SavedAssembler<'a> {
    pending: Vec<SavedTrace<'a>>,
    derived: Vec<SavedTrace<'a>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedTrace<'a> {
    trace_id: TraceId,
    spans: Cow<'a, [Span]>,
    /// Since its last span arrived (pending) or it was derived.
    age_ms: u64,
    orphans: Vec<SpanId>,
    counted_as_uninstrumented: Vec<SpanId>,
    kept: bool,
}

/// Keeps what derivation reads of a span; the rest is already in the store.
fn slim(span: &mut Span) {
    span.detail = OptionalDetail::default();
    for link in &mut span.links {
        link.attributes_json = String::new();
    }
}

/// A copy of what derivation reads of a span, as [`slim`] leaves it.
fn slim_copy(span: &Span) -> Span {
    Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        service: span.service.clone(),
        name: span.name.clone(),
        kind: span.kind,
        start_ns: span.start_ns,
        end_ns: span.end_ns,
        status: span.status,
        links: span
            .links
            .iter()
            .map(|link| Link {
                attributes_json: String::new(),
                ..*link
            })
            .collect(),
        peer: span.peer.clone(),
        environment: span.environment.clone(),
        version: span.version.clone(),
        adjusted_count: span.adjusted_count,
        resend_count: span.resend_count,
        detail: OptionalDetail::default(),
    }
}

impl Assembler {
    pub fn new(settings: AssemblySettings) -> Assembler {
        Assembler {
            settings,
            pending: FastMap::default(),
            arrivals: VecDeque::new(),
            buffered_spans: 0,
            derived: FastMap::default(),
            derived_order: VecDeque::new(),
            remembered_spans: 0,
            minute: Buckets::new(archtrace_store::buckets::MINUTE_NS),
            hour: Buckets::new(archtrace_store::buckets::HOUR_NS),
            scratch: Vec::new(),
            examples: BTreeMap::new(),
            kept: Vec::new(),
            service_graph: None,
        }
    }

    /// Counts every call derived from now on in `service_graph`.
    pub fn report_to(&mut self, service_graph: ServiceGraph) {
        self.service_graph = Some(service_graph);
    }

    /// What it holds, to be saved beside the log offset of the last spans added.
    pub fn save(&self, now: Instant) -> SavedAssembler<'_> {
        let age = |at: Instant| now.saturating_duration_since(at).as_millis() as u64;
        SavedAssembler {
            pending: self
                .pending
                .iter()
                .map(|(trace_id, pending)| SavedTrace {
                    trace_id: *trace_id,
                    spans: Cow::Borrowed(&pending.spans),
                    age_ms: age(pending.last_arrival),
                    orphans: Vec::new(),
                    counted_as_uninstrumented: Vec::new(),
                    kept: false,
                })
                .collect(),
            derived: self
                .derived
                .iter()
                .map(|(trace_id, derived)| SavedTrace {
                    trace_id: *trace_id,
                    spans: Cow::Borrowed(&derived.spans),
                    age_ms: age(derived.derived_at),
                    orphans: derived.orphans.iter().copied().collect(),
                    counted_as_uninstrumented: derived
                        .counted_as_uninstrumented
                        .iter()
                        .copied()
                        .collect(),
                    kept: derived.kept,
                })
                .collect(),
        }
    }

    /// An assembler holding what `saved` held, its clocks running from `now`. Buckets are not
    /// part of it: the caller saves and restores what it has not written.
    pub fn restore(settings: AssemblySettings, saved: SavedAssembler<'_>, now: Instant) -> Self {
        let mut assembler = Assembler::new(settings);
        let at = |age_ms: u64| {
            now.checked_sub(Duration::from_millis(age_ms))
                .unwrap_or(now)
        };
        let mut pending = saved.pending;
        pending.sort_by_key(|trace| std::cmp::Reverse(trace.age_ms));
        for trace in pending {
            let arrival = at(trace.age_ms);
            assembler.buffered_spans += trace.spans.len();
            assembler.arrivals.push_back((arrival, trace.trace_id));
            assembler.pending.insert(
                trace.trace_id,
                Pending {
                    spans: trace.spans.into_owned(),
                    last_arrival: arrival,
                },
            );
        }
        let mut derived = saved.derived;
        derived.sort_by_key(|trace| std::cmp::Reverse(trace.age_ms));
        for trace in derived {
            let derived_at = at(trace.age_ms);
            assembler.remembered_spans += trace.spans.len();
            assembler
                .derived_order
                .push_back((derived_at, trace.trace_id));
            assembler.derived.insert(
                trace.trace_id,
                Derived {
                    spans: trace.spans.into_owned(),
                    derived_at,
                    orphans: trace.orphans.into_iter().collect(),
                    counted_as_uninstrumented: trace
                        .counted_as_uninstrumented
                        .into_iter()
                        .collect(),
                    kept: trace.kept,
                },
            );
        }
        assembler
    }

    /// Takes the spans kept as samples since the last call.
    pub fn take_kept(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.kept)
    }

    /// Gives back kept spans that could not be stored, for the next attempt.
    pub fn put_back_kept(&mut self, mut spans: Vec<Span>) {
        spans.append(&mut self.kept);
        self.kept = spans;
    }

    pub fn buffered_spans(&self) -> usize {
        self.buffered_spans
    }

    /// Takes committed spans. Traces over the buffer limit are derived early.
    pub fn add(&mut self, spans: Vec<Span>, now: Instant) {
        // Spans of one trace mostly come together; room for all of them at once spares growing
        // the trace's vector a span at a time.
        let mut same_trace_ahead = vec![1; spans.len()];
        for i in (0..spans.len().saturating_sub(1)).rev() {
            if spans[i].trace_id == spans[i + 1].trace_id {
                same_trace_ahead[i] = same_trace_ahead[i + 1] + 1;
            }
        }
        for (mut span, ahead) in spans.into_iter().zip(same_trace_ahead) {
            let trace_id = span.trace_id;
            let pending = self.pending.entry(trace_id).or_insert_with(|| Pending {
                spans: Vec::new(),
                last_arrival: now,
            });
            // A new trace's vector is made exactly as long as the spans that came with its
            // first one: most traces arrive whole, and rounding up would leave much of the
            // buffer's memory unused. Later arrivals grow it as usual.
            if pending.spans.is_empty() {
                pending.spans.reserve_exact(ahead);
            } else {
                pending.spans.reserve(ahead);
            }
            // Sampled traces are stored with their detail, so it is kept until the decision.
            if self.settings.sample.is_none() {
                slim(&mut span);
            }
            pending.spans.push(span);
            if pending.last_arrival != now || pending.spans.len() == 1 {
                pending.last_arrival = now;
                self.arrivals.push_back((now, trace_id));
            }
            self.buffered_spans += 1;
        }
        while self.buffered_spans > self.settings.max_buffered_spans {
            let Some((_, trace_id)) = self.arrivals.pop_front() else {
                break;
            };
            if self.pending.contains_key(&trace_id) {
                self.derive(trace_id, now, true);
            }
        }
    }

    /// Derives the traces that have been idle long enough and forgets old derived spans.
    pub fn tick(&mut self, now: Instant) {
        while let Some(&(arrival, trace_id)) = self.arrivals.front() {
            if now.duration_since(arrival) < self.settings.trace_idle {
                break;
            }
            self.arrivals.pop_front();
            let current = self.pending.get(&trace_id).map(|p| p.last_arrival);
            if current == Some(arrival) {
                self.derive(trace_id, now, false);
            }
        }
        while let Some(&(at, trace_id)) = self.derived_order.front() {
            let expired = now.duration_since(at) >= self.settings.late_window;
            if !expired && self.remembered_spans <= self.settings.max_remembered_spans {
                break;
            }
            self.derived_order.pop_front();
            let current = self.derived.get(&trace_id).map(|d| d.derived_at);
            if current == Some(at) {
                if let Some(gone) = self.derived.remove(&trace_id) {
                    self.remembered_spans -= gone.spans.len();
                }
            }
        }
    }

    /// Derives everything still waiting (at shutdown).
    pub fn drain(&mut self, now: Instant) {
        let waiting: Vec<TraceId> = self.pending.keys().copied().collect();
        for trace_id in waiting {
            self.derive(trace_id, now, false);
        }
        self.arrivals.clear();
    }

    /// Hands over the minute and hour buckets derived so far.
    pub fn take_buckets(&mut self) -> (Buckets, Buckets) {
        let (minute_width, hour_width) = (self.minute.width_ns, self.hour.width_ns);
        let minute = std::mem::replace(&mut self.minute, Buckets::new(minute_width));
        let hour = std::mem::replace(&mut self.hour, Buckets::new(hour_width));
        (minute, hour)
    }

    fn derive(&mut self, trace_id: TraceId, now: Instant, cut_short: bool) {
        let Some(pending) = self.pending.remove(&trace_id) else {
            return;
        };
        self.buffered_spans -= pending.spans.len();
        let mut new_spans = pending.spans;
        let mut extra = Aggregate::default();
        extra.diagnostics.traces_cut_short = u64::from(cut_short);

        let earlier = self.derived.remove(&trace_id);
        let (mut observations, trace_count) = match &earlier {
            None => {
                self.scratch.clear();
                let diagnostics =
                    derive_trace(&new_spans, &Remembered(&self.derived), &mut self.scratch);
                extra.diagnostics.spans = diagnostics.spans;
                extra.diagnostics.traces = 1;
                extra.diagnostics.orphaned_spans = diagnostics.orphaned_spans;
                extra.diagnostics.unresolved_client_spans =
                    diagnostics.unresolved_callers.len() as u64;
                if let Some(graph) = &self.service_graph {
                    graph.unpaired_clients(&diagnostics.unresolved_callers);
                }
                extra.note_trace_shape(&diagnostics);
                (
                    std::mem::take(&mut self.scratch),
                    diagnostics.adjusted_count,
                )
            }
            Some(earlier) => self.derive_late(earlier, &new_spans, &mut extra),
        };
        extra.diagnostics.observations = observations.len() as u64;
        observations.sort_by_key(|o| o.start_ns);
        extra.note_spans(&new_spans, trace_count);
        self.record(&new_spans, &observations, &extra);
        let kept = self.keep_sample(earlier.as_ref(), &new_spans, &observations);
        if kept {
            // The spans go to the store whole; what is remembered is a copy without what only
            // the store needs, cheaper than copying the spans whole for the store.
            let slimmed = new_spans.iter().map(slim_copy).collect();
            self.kept.append(&mut new_spans);
            new_spans = slimmed;
        } else if self.settings.sample.is_some() {
            // In place: a span is large, and moving each one into a new vector costs a copy.
            new_spans.iter_mut().for_each(slim);
        }

        // Remember the trace (earlier spans included) for spans that arrive later still.
        let mut remembered = earlier.unwrap_or_else(|| Derived {
            spans: Vec::new(),
            derived_at: now,
            orphans: HashSet::new(),
            counted_as_uninstrumented: HashSet::new(),
            kept: false,
        });
        remembered.kept |= kept;
        self.remembered_spans -= remembered.spans.len();
        if remembered.spans.is_empty() {
            // Moving the vector saves copying every span, as `append` would.
            remembered.spans = new_spans;
        } else {
            remembered.spans.append(&mut new_spans);
        }
        let ids: HashSet<SpanId> = remembered.spans.iter().map(|s| s.span_id).collect();
        remembered.orphans = remembered
            .spans
            .iter()
            .filter(|s| s.parent_span_id.is_some_and(|p| !ids.contains(&p)))
            .map(|s| s.span_id)
            .collect();
        for observation in &observations {
            if observation.provenance == Provenance::Uninstrumented {
                remembered
                    .counted_as_uninstrumented
                    .insert(observation.span_id);
            }
        }
        remembered.derived_at = now;
        self.remembered_spans += remembered.spans.len();
        self.derived_order.push_back((now, trace_id));
        self.derived.insert(trace_id, remembered);
        self.scratch = observations;
    }

    /// Whether a derived trace's new spans are kept as a sample: with an error, as an example
    /// of an edge-minute that has fewer than it needs, or because its earlier spans were kept.
    fn keep_sample(
        &mut self,
        earlier: Option<&Derived>,
        spans: &[Span],
        observations: &[Observation],
    ) -> bool {
        let Some(examples) = self.settings.sample else {
            return false;
        };
        let key = |o: &Observation| -> ExampleKey {
            let minute = o.start_ns.div_euclid(archtrace_store::buckets::MINUTE_NS)
                * archtrace_store::buckets::MINUTE_NS;
            (minute, o.from.clone(), o.to.clone())
        };
        let example_needed = observations
            .iter()
            .any(|o| self.examples.get(&key(o)).copied().unwrap_or(0) < examples);
        let keep = example_needed
            || earlier.is_some_and(|d| d.kept)
            || spans.iter().any(|s| s.status == StatusCode::Error);
        if keep {
            for observation in observations {
                *self.examples.entry(key(observation)).or_default() += 1;
            }
            while self.examples.len() > MAX_EXAMPLE_KEYS {
                self.examples.pop_first();
            }
        }
        keep
    }

    /// Late spans of a trace derived before: derive them with the earlier spans as context and
    /// keep only what is new, so nothing is counted twice. Also gives the whole trace's
    /// adjusted count.
    fn derive_late(
        &mut self,
        earlier: &Derived,
        late: &[Span],
        extra: &mut Aggregate,
    ) -> (Vec<Observation>, Option<f64>) {
        let mut all: Vec<Span> = earlier.spans.clone();
        all.extend(late.iter().cloned());
        let late_ids: HashSet<SpanId> = late.iter().map(|s| s.span_id).collect();
        let mut everything = Vec::new();
        let trace = derive_trace(&all, &Remembered(&self.derived), &mut everything);
        let parent_of: HashMap<SpanId, Option<SpanId>> =
            all.iter().map(|s| (s.span_id, s.parent_span_id)).collect();
        let known: HashSet<SpanId> = all.iter().map(|s| s.span_id).collect();
        let kept: Vec<Observation> = everything
            .into_iter()
            .filter(|o| {
                let parent = parent_of.get(&o.span_id).copied().flatten();
                let parent_is_earlier = parent.is_some_and(|p| !late_ids.contains(&p));
                if late_ids.contains(&o.span_id) {
                    // A late server span below a client span already counted as a call to an
                    // uninstrumented peer would count that call twice.
                    !(o.provenance == Provenance::Server
                        && parent_is_earlier
                        && parent.is_some_and(|p| earlier.counted_as_uninstrumented.contains(&p)))
                } else {
                    // An earlier orphan whose parent has now arrived: the call is new.
                    earlier.orphans.contains(&o.span_id)
                        && parent.is_some_and(|p| late_ids.contains(&p))
                        && matches!(o.provenance, Provenance::Server | Provenance::Boundary)
                }
            })
            .collect();
        for span in late {
            let paired = span.parent_span_id.is_none_or(|p| known.contains(&p));
            if paired {
                extra.diagnostics.late_spans_paired += 1;
            } else {
                extra.diagnostics.late_spans_dropped += 1;
            }
        }
        extra.diagnostics.spans = late.len() as u64;
        (kept, trace.adjusted_count)
    }

    /// Adds a derivation's results (observations sorted by start) to both bucket widths.
    fn record(&mut self, spans: &[Span], observations: &[Observation], extra: &Aggregate) {
        if let Some(graph) = &self.service_graph {
            graph.observe(observations);
        }
        let first = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        for buckets in [&mut self.minute, &mut self.hour] {
            let trace_bucket = buckets.bucket_of(first);
            buckets
                .buckets
                .entry(trace_bucket)
                .or_default()
                .merge(extra);
            buckets.add_sorted_observations(observations);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archtrace_analyzer::aggregate::Aggregate;
    use archtrace_analyzer::{PeerKey, SpanKind, StatusCode};

    fn span(trace: u8, id: u8, parent: Option<u8>, service: &str, kind: SpanKind) -> Span {
        let start = 1_000_000 * i64::from(id);
        Span::new([trace; 16], [id; 8], service, kind)
            .with_parent(parent.map(|p| [p; 8]))
            .with_name(format!("op-{id}"))
            .with_time(start, start + 500)
    }

    fn settings() -> AssemblySettings {
        AssemblySettings {
            trace_idle: Duration::from_secs(5),
            late_window: Duration::from_secs(60),
            max_buffered_spans: 100,
            max_remembered_spans: 100,
            sample: None,
        }
    }

    /// Everything derived so far, over all time.
    fn derived(assembler: &mut Assembler) -> Aggregate {
        let (minute, _) = assembler.take_buckets();
        minute.window(i64::MIN / 2, i64::MAX / 2)
    }

    fn calls(aggregate: &Aggregate, from: &str, to: &str) -> u64 {
        aggregate
            .edges
            .iter()
            .filter(|(k, _)| &*k.from == from && &*k.to == to)
            .map(|(_, s)| s.calls)
            .sum()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_trace_is_derived_once_it_has_been_idle() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(settings());
        assembler.add(vec![span(1, 1, None, "web", SpanKind::Server)], t0);
        assembler.add(
            vec![span(1, 2, Some(1), "web", SpanKind::Client)],
            t0 + secs(3),
        );
        assembler.add(
            vec![span(1, 3, Some(2), "cart", SpanKind::Server)],
            t0 + secs(4),
        );
        assembler.tick(t0 + secs(8));
        assert_eq!(derived(&mut assembler).edges.len(), 0, "idle for 4 s only");
        assembler.tick(t0 + secs(9));
        let aggregate = derived(&mut assembler);
        assert_eq!(
            calls(&aggregate, "web", "cart"),
            1,
            "spans from three requests pair"
        );
        assert_eq!(aggregate.diagnostics.unresolved_client_spans, 0);
        assert_eq!(assembler.buffered_spans(), 0);
    }

    #[test]
    fn a_late_server_span_is_paired_without_counting_the_call_twice() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(settings());
        let mut client = span(1, 2, Some(1), "web", SpanKind::Client);
        client.peer.set(PeerKey::PeerService, "cart");
        assembler.add(vec![span(1, 1, None, "web", SpanKind::Server), client], t0);
        assembler.tick(t0 + secs(5));
        assert_eq!(
            calls(&derived(&mut assembler), "web", "cart"),
            1,
            "counted as a call to an uninstrumented peer"
        );
        assembler.add(
            vec![span(1, 3, Some(2), "cart", SpanKind::Server)],
            t0 + secs(20),
        );
        assembler.tick(t0 + secs(25));
        let late = derived(&mut assembler);
        assert_eq!(
            calls(&late, "web", "cart"),
            0,
            "the same call is not counted again"
        );
        assert_eq!(late.diagnostics.late_spans_paired, 1);
    }

    #[test]
    fn a_late_parent_pairs_an_earlier_orphan_once() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(settings());
        assembler.add(vec![span(1, 3, Some(2), "cart", SpanKind::Server)], t0);
        assembler.tick(t0 + secs(5));
        let first = derived(&mut assembler);
        assert_eq!(first.diagnostics.orphaned_spans, 1);
        assert_eq!(first.edges.len(), 0);
        assembler.add(
            vec![
                span(1, 1, None, "web", SpanKind::Server),
                span(1, 2, Some(1), "web", SpanKind::Client),
            ],
            t0 + secs(10),
        );
        assembler.tick(t0 + secs(15));
        let late = derived(&mut assembler);
        assert_eq!(
            calls(&late, "web", "cart"),
            1,
            "the orphan's call, now that its caller arrived"
        );
        assert_eq!(calls(&late, "user", "web"), 1);
        assert_eq!(late.diagnostics.late_spans_paired, 2);
        assert_eq!(
            late.diagnostics.unresolved_client_spans, 0,
            "the client span has its server child"
        );
    }

    #[test]
    fn after_the_late_window_a_span_is_derived_alone() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(settings());
        assembler.add(vec![span(1, 1, None, "web", SpanKind::Server)], t0);
        assembler.tick(t0 + secs(5));
        assembler.tick(t0 + secs(70));
        derived(&mut assembler);
        assembler.add(
            vec![span(1, 3, Some(1), "cart", SpanKind::Server)],
            t0 + secs(71),
        );
        assembler.tick(t0 + secs(80));
        let late = derived(&mut assembler);
        assert_eq!(late.edges.len(), 0);
        assert_eq!(late.diagnostics.orphaned_spans, 1);
    }

    #[test]
    fn a_full_buffer_derives_the_oldest_traces_early() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(AssemblySettings {
            max_buffered_spans: 3,
            ..settings()
        });
        assembler.add(
            vec![
                span(1, 1, None, "a", SpanKind::Server),
                span(1, 2, Some(1), "a", SpanKind::Internal),
            ],
            t0,
        );
        assembler.add(
            vec![
                span(2, 1, None, "b", SpanKind::Server),
                span(2, 2, Some(1), "b", SpanKind::Internal),
            ],
            t0,
        );
        assert!(assembler.buffered_spans() <= 3);
        let aggregate = derived(&mut assembler);
        assert_eq!(aggregate.diagnostics.traces_cut_short, 1);
        assert_eq!(
            calls(&aggregate, "user", "a"),
            1,
            "the oldest trace was derived"
        );
        assert_eq!(calls(&aggregate, "user", "b"), 0);
    }

    #[test]
    fn sampling_keeps_traces_with_errors_and_examples_of_each_edge_minute() {
        let t0 = Instant::now();
        let mut assembler = Assembler::new(AssemblySettings {
            sample: Some(1),
            ..settings()
        });
        let trace = |id: u8, error: bool| {
            let mut call = span(id, 2, Some(1), "cart", SpanKind::Server);
            if error {
                call.status = StatusCode::Error;
            }
            vec![
                span(id, 1, None, "web", SpanKind::Server),
                span(id, 3, Some(1), "web", SpanKind::Client),
                call,
            ]
        };
        // Traces 1-3 share their edges and minute; 4 has an error.
        for id in 1..=4 {
            assembler.add(trace(id, id == 4), t0);
        }
        assembler.tick(t0 + secs(5));
        let mut kept: Vec<(u8, usize)> = Vec::new();
        for span in assembler.take_kept() {
            match kept.last_mut() {
                Some((id, n)) if *id == span.trace_id[0] => *n += 1,
                _ => kept.push((span.trace_id[0], 1)),
            }
        }
        kept.sort();
        assert_eq!(kept, [(1, 3), (4, 3)], "one example, the error, each whole");
        // Late spans of a kept trace are kept too; of another, not.
        assembler.add(
            vec![span(1, 9, Some(2), "cart", SpanKind::Internal)],
            t0 + secs(6),
        );
        assembler.add(
            vec![span(2, 9, Some(2), "cart", SpanKind::Internal)],
            t0 + secs(6),
        );
        assembler.tick(t0 + secs(12));
        let late: Vec<u8> = assembler
            .take_kept()
            .iter()
            .map(|s| s.trace_id[0])
            .collect();
        assert_eq!(late, [1]);
        // Everything was still derived.
        assert_eq!(calls(&derived(&mut assembler), "user", "web"), 4);
    }
}
