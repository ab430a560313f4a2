//! Architecture history: the events that changed the architecture over a window, and its trends,
//! replayed from the derived buckets one step (an hour by default) at a time.
//!
//! A node or edge is *present* at a step when it was seen within `gone_after` before it: it is
//! new at the first step it is present, gone at the first step it is not. Cycles and fan-in/out
//! are judged on what is present; error rates and p99s per step against the step before.
//! Finding events compare the findings of consecutive slices of the window (see
//! [`finding_events`]), which the caller analyses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::aggregate::{Aggregate, EdgeKey, NodeFacts, Seen, VersionPair};
use crate::derive::{EdgeKind, NodeType};
use crate::render::markdown_cell;
use crate::sketch::LatencySketch;
use crate::snapshot::{release_pair_words, Finding, Severity};
use crate::time::rfc3339;

pub const HOUR_NS: i64 = 3_600_000_000_000;

/// A node's or an edge's number in [`Periods`]: the replay compares numbers, not names.
pub type Id = u32;

/// An edge by the numbers of its ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeIds {
    pub from: Id,
    pub to: Id,
    pub kind: EdgeKind,
}

/// The steps of a window, as [`replay`] reads them: names and edges are numbered once, and
/// each step holds numbers and figures only.
#[derive(Clone, Debug, Default)]
pub struct Periods {
    names: Vec<Arc<str>>,
    name_ids: HashMap<Arc<str>, Id>,
    edges: Vec<EdgeIds>,
    edge_ids: HashMap<EdgeIds, Id>,
    /// By start.
    pub steps: BTreeMap<i64, Period>,
}

/// What one step of time showed: the edges and nodes seen in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Period {
    pub start_ns: i64,
    /// One per edge, ordered by id.
    pub edges: Vec<PeriodEdge>,
    /// One per node, ordered by id.
    pub nodes: Vec<PeriodNode>,
    /// Every call of the step.
    pub calls: u64,
    pub errors: u64,
    pub p99_ns: Option<f64>,
    /// The releases of edges and nodes; when not `versions_known`, only those read so far
    /// (a store reads them for the few steps an event needs, see [`MissingVersions`]).
    pub edge_versions: HashMap<Id, BTreeMap<VersionPair, Seen>>,
    pub node_versions: HashMap<Id, BTreeMap<Arc<str>, Seen>>,
    pub versions_known: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeriodEdge {
    pub id: Id,
    pub calls: u64,
    pub errors: u64,
    pub p99_ns: Option<f64>,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeriodNode {
    pub id: Id,
    pub reports_spans: bool,
    pub node_type: NodeType,
    pub seen: Option<Seen>,
}

impl PeriodNode {
    pub fn of(id: Id, facts: &NodeFacts) -> PeriodNode {
        PeriodNode {
            id,
            reports_spans: facts.reports_spans,
            node_type: facts.node_type(),
            seen: facts.seen,
        }
    }
}

/// The steps and numbers whose releases a replay needed but its periods did not hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MissingVersions {
    /// (step start, edge id)
    pub edges: BTreeSet<(i64, Id)>,
    /// (step start, node id)
    pub nodes: BTreeSet<(i64, Id)>,
}

impl MissingVersions {
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.nodes.is_empty()
    }
}

impl Periods {
    pub fn name_id(&mut self, name: &str) -> Id {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as Id;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.name_ids.insert(name, id);
        id
    }

    pub fn edge_id(&mut self, from: &str, to: &str, kind: EdgeKind) -> Id {
        let ends = EdgeIds {
            from: self.name_id(from),
            to: self.name_id(to),
            kind,
        };
        if let Some(&id) = self.edge_ids.get(&ends) {
            return id;
        }
        let id = self.edges.len() as Id;
        self.edges.push(ends);
        self.edge_ids.insert(ends, id);
        id
    }

    /// The id of a name already numbered.
    pub fn find_name(&self, name: &str) -> Option<Id> {
        self.name_ids.get(name).copied()
    }

    /// The id of an edge already numbered.
    pub fn find_edge(&self, from: &str, to: &str, kind: EdgeKind) -> Option<Id> {
        let ends = EdgeIds {
            from: self.find_name(from)?,
            to: self.find_name(to)?,
            kind,
        };
        self.edge_ids.get(&ends).copied()
    }

    pub fn name(&self, id: Id) -> &Arc<str> {
        &self.names[id as usize]
    }

    pub fn edge(&self, id: Id) -> EdgeIds {
        self.edges[id as usize]
    }

    pub fn edge_key(&self, id: Id) -> EdgeKey {
        let ends = self.edge(id);
        EdgeKey {
            from: self.name(ends.from).clone(),
            to: self.name(ends.to).clone(),
            kind: ends.kind,
        }
    }

    /// Sets the step starting at `start_ns` to everything derived in it. Latency sketches are
    /// reduced to p99s here, so that a month of steps stays small.
    pub fn add_aggregate(&mut self, start_ns: i64, aggregate: &Aggregate) {
        let mut all = LatencySketch::default();
        let mut period = Period {
            start_ns,
            versions_known: true,
            ..Period::default()
        };
        for (key, stats) in &aggregate.edges {
            if stats.calls == 0 {
                continue;
            }
            let id = self.edge_id(&key.from, &key.to, key.kind);
            all.merge(&stats.latency);
            period.calls += stats.calls;
            period.errors += stats.errors;
            period.edges.push(PeriodEdge {
                id,
                calls: stats.calls,
                errors: stats.errors,
                p99_ns: stats.latency.quantile_ns(0.99),
                first_seen_ns: stats.first_seen_ns,
                last_seen_ns: stats.last_seen_ns,
            });
            if !stats.versions.is_empty() {
                period.edge_versions.insert(id, stats.versions.clone());
            }
        }
        for (name, facts) in &aggregate.nodes {
            let id = self.name_id(name);
            period.nodes.push(PeriodNode::of(id, facts));
            if !facts.versions.is_empty() {
                period.node_versions.insert(id, facts.versions.clone());
            }
        }
        period.edges.sort_by_key(|e| e.id);
        period.nodes.sort_by_key(|n| n.id);
        period.p99_ns = all.quantile_ns(0.99);
        self.steps.insert(start_ns, period);
    }

    /// The steps of `aggregates` (by start).
    pub fn of_aggregates<'a>(
        aggregates: impl IntoIterator<Item = (i64, &'a Aggregate)>,
    ) -> Periods {
        let mut periods = Periods::default();
        for (start, aggregate) in aggregates {
            periods.add_aggregate(start, aggregate);
        }
        periods
    }
}

impl Period {
    pub fn edge(&self, id: Id) -> Option<&PeriodEdge> {
        self.edges
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.edges[i])
    }

    fn node_type(&self, id: Id) -> NodeType {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .map_or(NodeType::Service, |i| self.nodes[i].node_type)
    }

    /// The releases of an edge in this step; noted as missing when not read.
    fn edge_versions(&self, id: Id, missing: &mut MissingVersions) -> BTreeMap<VersionPair, Seen> {
        self.versions_of(&self.edge_versions, id, &mut missing.edges)
    }

    fn node_versions(&self, id: Id, missing: &mut MissingVersions) -> BTreeMap<Arc<str>, Seen> {
        self.versions_of(&self.node_versions, id, &mut missing.nodes)
    }

    fn versions_of<K: Clone + Ord>(
        &self,
        known: &HashMap<Id, BTreeMap<K, Seen>>,
        id: Id,
        missing: &mut BTreeSet<(i64, Id)>,
    ) -> BTreeMap<K, Seen> {
        match known.get(&id) {
            Some(versions) => versions.clone(),
            None => {
                if !self.versions_known {
                    missing.insert((self.start_ns, id));
                }
                BTreeMap::new()
            }
        }
    }
}

/// Steps are whole minutes, since buckets are kept per minute and per hour.
pub fn check_step(step_ns: i64) -> Result<(), String> {
    const MINUTE_NS: i64 = 60_000_000_000;
    if step_ns >= MINUTE_NS && step_ns % MINUTE_NS == 0 {
        Ok(())
    } else {
        Err(format!(
            "a step of {} s is not a whole number of minutes (buckets are kept per minute and hour)",
            step_ns as f64 / 1e9
        ))
    }
}

/// How history is judged.
#[derive(Clone, Debug, PartialEq)]
pub struct HistorySettings {
    /// The width of a step: an hour, or a minute for short windows.
    pub step_ns: i64,
    /// A node or edge not seen for this long is gone.
    pub gone_after_ns: i64,
    /// Error rates and p99s are compared only between steps with at least this many calls.
    pub min_calls: u64,
    /// An error rate regresses when it grows by this much (0.05 = 5 points) and at least doubles.
    pub error_rate_increase: f64,
    /// A p99 regresses when it grows by this factor and by at least `p99_min_increase_ms`.
    pub p99_ratio: f64,
    pub p99_min_increase_ms: f64,
    /// Fan-in and fan-out thresholds (the hub thresholds of the findings).
    pub fan_in: usize,
    pub fan_out: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            step_ns: HOUR_NS,
            gone_after_ns: 24 * HOUR_NS,
            min_calls: 50,
            error_rate_increase: 0.05,
            p99_ratio: 1.5,
            p99_min_increase_ms: 20.0,
            fan_in: 4,
            fan_out: 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    NewService,
    ServiceGone,
    NewEdge,
    NewDatabaseUse,
    NewQueueConsumer,
    EdgeGone,
    NewCycle,
    CycleBroken,
    FanInCrossed,
    FanOutCrossed,
    ErrorRateRegressed,
    P99Regressed,
    FindingAppeared,
    FindingResolved,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::NewService,
        EventKind::ServiceGone,
        EventKind::NewEdge,
        EventKind::NewDatabaseUse,
        EventKind::NewQueueConsumer,
        EventKind::EdgeGone,
        EventKind::NewCycle,
        EventKind::CycleBroken,
        EventKind::FanInCrossed,
        EventKind::FanOutCrossed,
        EventKind::ErrorRateRegressed,
        EventKind::P99Regressed,
        EventKind::FindingAppeared,
        EventKind::FindingResolved,
    ];

    /// The word, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NewService => "new_service",
            EventKind::ServiceGone => "service_gone",
            EventKind::NewEdge => "new_edge",
            EventKind::NewDatabaseUse => "new_database_use",
            EventKind::NewQueueConsumer => "new_queue_consumer",
            EventKind::EdgeGone => "edge_gone",
            EventKind::NewCycle => "new_cycle",
            EventKind::CycleBroken => "cycle_broken",
            EventKind::FanInCrossed => "fan_in_crossed",
            EventKind::FanOutCrossed => "fan_out_crossed",
            EventKind::ErrorRateRegressed => "error_rate_regressed",
            EventKind::P99Regressed => "p99_regressed",
            EventKind::FindingAppeared => "finding_appeared",
            EventKind::FindingResolved => "finding_resolved",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One change of the architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339: when it was first seen (new things), or the step it was judged at.
    pub time: String,
    pub kind: EventKind,
    pub severity: Severity,
    /// The nodes it is about, or `from -> to` for an edge.
    pub subjects: Vec<String>,
    /// The releases involved, as `service version` or `caller version -> callee version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    #[serde(default)]
    pub evidence: BTreeMap<String, serde_json::Value>,
    pub message: String,
    /// `time` in Unix nanoseconds.
    #[serde(default)]
    pub time_ns: i64,
}

impl Event {
    /// What identifies the event across runs over overlapping windows (notifications are sent
    /// once per key).
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.time_ns,
            self.kind.as_str(),
            self.subjects.join(",")
        )
    }
}

/// The architecture at one step: what was present, and the step's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    pub start: String,
    /// Services present (seen within `gone_after`).
    pub services: usize,
    /// Edges present.
    pub edges: usize,
    pub cycles: usize,
    /// Average distinct callers plus callees per service, over present edges between services.
    pub coupling: f64,
    pub calls: u64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
}

/// Events and trends of a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub start: String,
    pub end: String,
    pub step_s: i64,
    pub gone_after_s: i64,
    pub events: Vec<Event>,
    pub trends: Vec<TrendPoint>,
}

fn edge_name(key: &EdgeKey) -> String {
    format!("{} -> {}", key.from, key.to)
}

fn kind_word(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Sync => "synchronous",
        EdgeKind::Async => "asynchronous",
    }
}

/// Release pairs, earliest first, as `caller version -> callee version` (`?` for a side that
/// tells none).
fn pair_words(key: &EdgeKey, versions: &BTreeMap<VersionPair, Seen>) -> Vec<String> {
    let mut pairs: Vec<(&VersionPair, &Seen)> = versions.iter().collect();
    pairs.sort_by_key(|(pair, seen)| (seen.first_ns, (*pair).clone()));
    pairs
        .into_iter()
        .map(|(pair, _)| release_pair_words(&key.from, &pair.from, &key.to, &pair.to))
        .collect()
}

fn release_words(node: &str, versions: &BTreeMap<Arc<str>, Seen>) -> Vec<String> {
    let mut releases: Vec<(&Arc<str>, &Seen)> = versions.iter().collect();
    releases.sort_by_key(|(version, seen)| (seen.first_ns, (*version).clone()));
    releases
        .into_iter()
        .map(|(version, _)| format!("{node} {version}"))
        .collect()
}

/// The cycles among services of the present edges, as (synchronous?, sorted members): a cycle
/// that is exactly a synchronous one counts once, as synchronous, as in the findings.
fn cycles_of(
    periods: &Periods,
    edges: &BTreeSet<Id>,
    services: &[bool],
) -> BTreeSet<(bool, Vec<String>)> {
    let between_services = |ends: &EdgeIds| {
        ends.from != ends.to && services[ends.from as usize] && services[ends.to as usize]
    };
    let components = |only_sync: bool| {
        let mut graph: DiGraph<Id, ()> = DiGraph::new();
        let mut index: HashMap<Id, NodeIndex> = HashMap::new();
        for ends in edges.iter().map(|id| periods.edge(*id)) {
            if (only_sync && ends.kind != EdgeKind::Sync) || !between_services(&ends) {
                continue;
            }
            let from = *index
                .entry(ends.from)
                .or_insert_with(|| graph.add_node(ends.from));
            let to = *index
                .entry(ends.to)
                .or_insert_with(|| graph.add_node(ends.to));
            graph.add_edge(from, to, ());
        }
        tarjan_scc(&graph)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut names: Vec<String> = c
                    .iter()
                    .map(|n| periods.name(graph[*n]).to_string())
                    .collect();
                names.sort();
                names
            })
            .collect::<BTreeSet<Vec<String>>>()
    };
    let sync = components(true);
    let mut out: BTreeSet<(bool, Vec<String>)> =
        sync.iter().map(|members| (true, members.clone())).collect();
    for members in components(false) {
        if !sync.contains(&members) {
            out.insert((false, members));
        }
    }
    out
}

/// Distinct callers and callees of each service (by id) over the present edges.
fn fans(periods: &Periods, edges: &BTreeSet<Id>, services: &[bool]) -> Vec<(usize, usize)> {
    let pairs: BTreeSet<(Id, Id)> = edges
        .iter()
        .map(|id| periods.edge(*id))
        .filter(|e| e.from != e.to)
        .map(|e| (e.from, e.to))
        .collect();
    let mut out = vec![(0, 0); services.len()];
    for (from, to) in pairs {
        if services[to as usize] {
            out[to as usize].0 += 1;
        }
        if services[from as usize] {
            out[from as usize].1 += 1;
        }
    }
    out
}

/// The coupling trend: average distinct neighbours per service among services.
fn coupling(periods: &Periods, edges: &BTreeSet<Id>, services: &[bool]) -> f64 {
    let count = services.iter().filter(|s| **s).count();
    if count == 0 {
        return 0.0;
    }
    let pairs: BTreeSet<(Id, Id)> = edges
        .iter()
        .map(|id| periods.edge(*id))
        .filter(|e| e.from != e.to && services[e.from as usize] && services[e.to as usize])
        .map(|e| (e.from, e.to))
        .collect();
    (2.0 * pairs.len() as f64 / count as f64 * 100.0).round() / 100.0
}

fn millis(nanos: f64) -> f64 {
    (nanos / 1_000.0).round() / 1_000.0
}

/// An edge's figures in a step: (step, calls, errors, p99).
type StepFigures = (usize, u64, u64, Option<f64>);

/// What a replay found, and the releases it needed but was not given.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub history: History,
    pub missing: MissingVersions,
}

/// Replays `periods` (steps of `settings.step_ns`, starting at least `gone_after` before
/// `since_ns` so that what already existed is known) and returns the events and trend points
/// of `[since_ns, until_ns)`. Missing steps count as steps with no traffic.
pub fn replay(
    periods: &Periods,
    since_ns: i64,
    until_ns: i64,
    settings: &HistorySettings,
) -> Replay {
    let step = settings.step_ns.max(1);
    let gone_steps = (settings.gone_after_ns / step).max(1) as usize;
    let first_start = periods.steps.keys().next().copied().unwrap_or(since_ns);
    let step_of = |start_ns: i64| ((start_ns - first_start) / step) as usize;
    let mut events = Vec::new();
    let mut trends = Vec::new();
    let mut missing = MissingVersions::default();

    // While an edge is present: the step it was last seen in (its figures are that step's).
    let mut edge_last: Vec<Option<usize>> = vec![None; periods.edges.len()];
    // While a service is present: the step it was last seen in, and when.
    let mut service_last: Vec<Option<(usize, i64)>> = vec![None; periods.names.len()];
    let mut present_edges: BTreeSet<Id> = BTreeSet::new();
    let mut present_services: Vec<bool> = vec![false; periods.names.len()];
    let mut services_present = 0;
    // Ids due to leave at a step, unless seen again by then.
    let mut edges_due: BTreeMap<usize, Vec<Id>> = BTreeMap::new();
    let mut services_due: BTreeMap<usize, Vec<Id>> = BTreeMap::new();
    let mut cycles: BTreeSet<(bool, Vec<String>)> = BTreeSet::new();
    let mut fan: Vec<(usize, usize)> = vec![(0, 0); periods.names.len()];
    let mut coupling_now = 0.0;
    let mut previous: Vec<Option<StepFigures>> = vec![None; periods.edges.len()];

    let last_step = periods.steps.keys().next_back().map_or(0, |s| step_of(*s));
    let until_step = if until_ns > first_start {
        (((until_ns - first_start) + step - 1) / step) as usize
    } else {
        0
    };
    let mut by_step: Vec<Option<&Period>> = vec![None; last_step + 1];
    for period in periods.steps.values() {
        by_step[step_of(period.start_ns)] = Some(period);
    }
    let empty = Period::default();
    for index in 0..until_step.max(last_step + 1) {
        let start_ns = first_start + index as i64 * step;
        if start_ns >= until_ns {
            break;
        }
        let period = by_step.get(index).copied().flatten().unwrap_or(&empty);
        // Steps overlapping the window; events before `since` are dropped at the end.
        let reported = start_ns + step > since_ns;
        let mut changed = false;
        // The first time within this step an edge of a new cycle appeared.
        let mut arrivals: Vec<(Id, i64)> = Vec::new();

        for edge in &period.edges {
            let last = &mut edge_last[edge.id as usize];
            // Memory is kept while present: departures below forget.
            if last.is_none() {
                changed = true;
                present_edges.insert(edge.id);
                arrivals.push((edge.id, edge.first_seen_ns));
                if reported {
                    events.push(new_edge_event(periods, edge, period, &mut missing));
                }
            }
            *last = Some(index);
            edges_due
                .entry(index + gone_steps)
                .or_default()
                .push(edge.id);
        }
        for node in &period.nodes {
            if !node.reports_spans {
                continue;
            }
            let id = node.id as usize;
            if service_last[id].is_none() {
                changed = true;
                present_services[id] = true;
                services_present += 1;
                if reported {
                    events.push(new_service_event(periods, node, period, &mut missing));
                }
            }
            let last_seen = node.seen.map_or(start_ns, |s| s.last_ns);
            service_last[id] = Some((index, last_seen));
            services_due
                .entry(index + gone_steps)
                .or_default()
                .push(node.id);
        }
        // Departures: what was last seen `gone_steps` ago.
        for id in edges_due.remove(&index).unwrap_or_default() {
            let Some(last_step) = edge_last[id as usize] else {
                continue;
            };
            if last_step + gone_steps != index {
                continue;
            }
            changed = true;
            present_edges.remove(&id);
            edge_last[id as usize] = None;
            previous[id as usize] = None;
            let last = by_step[last_step].and_then(|p| Some((p, p.edge(id)?)));
            if let (true, Some((last_period, memory))) = (reported, last) {
                let key = periods.edge_key(id);
                let versions = last_period.edge_versions(id, &mut missing);
                events.push(Event {
                    time: rfc3339(start_ns),
                    time_ns: start_ns,
                    kind: EventKind::EdgeGone,
                    severity: Severity::Info,
                    subjects: vec![edge_name(&key)],
                    versions: pair_words(&key, &versions),
                    evidence: BTreeMap::from([
                        ("last_seen".to_owned(), json!(rfc3339(memory.last_seen_ns))),
                        ("kind".to_owned(), json!(key.kind.as_str())),
                    ]),
                    message: format!(
                        "{} call {} → {} gone: not seen since {}",
                        kind_word(key.kind),
                        key.from,
                        key.to,
                        rfc3339(memory.last_seen_ns)
                    ),
                });
            }
        }
        for id in services_due.remove(&index).unwrap_or_default() {
            let Some((last_step, last_seen_ns)) = service_last[id as usize] else {
                continue;
            };
            if last_step + gone_steps != index {
                continue;
            }
            changed = true;
            present_services[id as usize] = false;
            services_present -= 1;
            service_last[id as usize] = None;
            if reported {
                let name = periods.name(id);
                events.push(Event {
                    time: rfc3339(start_ns),
                    time_ns: start_ns,
                    kind: EventKind::ServiceGone,
                    severity: Severity::Warning,
                    subjects: vec![name.to_string()],
                    versions: Vec::new(),
                    evidence: BTreeMap::from([(
                        "last_seen".to_owned(),
                        json!(rfc3339(last_seen_ns)),
                    )]),
                    message: format!(
                        "service {name} gone: no span since {}",
                        rfc3339(last_seen_ns)
                    ),
                });
            }
        }

        if changed {
            let now = cycles_of(periods, &present_edges, &present_services);
            if reported {
                for (sync, members) in now.difference(&cycles) {
                    // When the edge closing it arrived, if it arrived in this step.
                    let closed_at = arrivals
                        .iter()
                        .filter(|(id, _)| {
                            let ends = periods.edge(*id);
                            let member =
                                |end: Id| members.iter().any(|m| **m == **periods.name(end));
                            member(ends.from) && member(ends.to)
                        })
                        .map(|(_, at)| *at)
                        .max()
                        .unwrap_or(start_ns);
                    events.push(Event {
                        time: rfc3339(closed_at),
                        time_ns: closed_at,
                        kind: EventKind::NewCycle,
                        severity: if *sync {
                            Severity::Error
                        } else {
                            Severity::Warning
                        },
                        subjects: members.clone(),
                        versions: Vec::new(),
                        evidence: BTreeMap::from([
                            ("synchronous".to_owned(), json!(sync)),
                            ("services".to_owned(), json!(members.len())),
                        ]),
                        message: format!(
                            "new {} cycle between {}",
                            if *sync { "synchronous" } else { "asynchronous" },
                            members.join(", ")
                        ),
                    });
                }
                for (sync, members) in cycles.difference(&now) {
                    events.push(Event {
                        time: rfc3339(start_ns),
                        time_ns: start_ns,
                        kind: EventKind::CycleBroken,
                        severity: Severity::Info,
                        subjects: members.clone(),
                        versions: Vec::new(),
                        evidence: BTreeMap::from([("synchronous".to_owned(), json!(sync))]),
                        message: format!(
                            "{} cycle between {} broken",
                            if *sync { "synchronous" } else { "asynchronous" },
                            members.join(", ")
                        ),
                    });
                }
            }
            cycles = now;
            let fans_now = fans(periods, &present_edges, &present_services);
            if reported {
                for (id, &(fan_in, fan_out)) in fans_now.iter().enumerate() {
                    if !present_services[id] {
                        continue;
                    }
                    let service = periods.name(id as Id);
                    let (was_in, was_out) = fan[id];
                    for (kind, was, now, threshold, word) in [
                        (
                            EventKind::FanInCrossed,
                            was_in,
                            fan_in,
                            settings.fan_in,
                            "callers",
                        ),
                        (
                            EventKind::FanOutCrossed,
                            was_out,
                            fan_out,
                            settings.fan_out,
                            "callees",
                        ),
                    ] {
                        if was < threshold && now >= threshold {
                            events.push(Event {
                                time: rfc3339(start_ns),
                                time_ns: start_ns,
                                kind,
                                severity: Severity::Warning,
                                subjects: vec![service.to_string()],
                                versions: Vec::new(),
                                evidence: BTreeMap::from([
                                    (word.to_owned(), json!(now)),
                                    ("before".to_owned(), json!(was)),
                                    ("threshold".to_owned(), json!(threshold)),
                                ]),
                                message: format!(
                                    "{service} now has {now} distinct {word} (was {was}; threshold {threshold})"
                                ),
                            });
                        }
                    }
                }
            }
            // Services not present count as 0 the next time they are judged.
            fan = fans_now
                .into_iter()
                .zip(&present_services)
                .map(|(f, present)| if *present { f } else { (0, 0) })
                .collect();
            coupling_now = coupling(periods, &present_edges, &present_services);
        }

        for edge in &period.edges {
            if edge.calls < settings.min_calls {
                continue;
            }
            let before = &mut previous[edge.id as usize];
            if let Some((step_before, calls, errors, p99)) = *before {
                if reported && step_before + 1 == index {
                    events.extend(regressions(
                        periods,
                        period,
                        (calls, errors, p99),
                        edge,
                        settings,
                        &mut missing,
                    ));
                }
            }
            *before = Some((index, edge.calls, edge.errors, edge.p99_ns));
        }

        if reported {
            trends.push(TrendPoint {
                start: rfc3339(start_ns),
                services: services_present,
                edges: present_edges.len(),
                cycles: cycles.len(),
                coupling: coupling_now,
                calls: period.calls,
                errors: period.errors,
                p99_ms: period.p99_ns.map(millis),
            });
        }
    }
    events.retain(|e| e.time_ns >= since_ns && e.time_ns < until_ns);
    sort_events(&mut events);
    Replay {
        history: History {
            start: rfc3339(since_ns),
            end: rfc3339(until_ns),
            step_s: step / 1_000_000_000,
            gone_after_s: settings.gone_after_ns / 1_000_000_000,
            events,
            trends,
        },
        missing,
    }
}

/// Which events to show or send: of some kinds (all when empty), at or above a severity,
/// about a service (a subject naming it, or an edge from or to it).
#[derive(Clone, Debug, PartialEq)]
pub struct EventFilter {
    pub kinds: BTreeSet<EventKind>,
    pub min_severity: Severity,
    pub service: Option<String>,
}

impl Default for EventFilter {
    fn default() -> Self {
        EventFilter {
            kinds: BTreeSet::new(),
            min_severity: Severity::Info,
            service: None,
        }
    }
}

impl EventFilter {
    pub fn accepts(&self, event: &Event) -> bool {
        let about = |service: &str| {
            event.subjects.iter().any(|subject| {
                subject == service
                    || subject
                        .split_once(" -> ")
                        .is_some_and(|(from, to)| from == service || to == service)
            })
        };
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && event.severity >= self.min_severity
            && self.service.as_deref().is_none_or(about)
    }

    pub fn apply(&self, history: &mut History) {
        history.events.retain(|event| self.accepts(event));
    }
}

/// Event kinds named in `text` (comma-separated), or an error listing the known ones.
pub fn parse_kinds(text: &str) -> Result<BTreeSet<EventKind>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .map(|word| {
            EventKind::parse(word).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event kind {word:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

pub fn sort_events(events: &mut [Event]) {
    events.sort_by(|a, b| (a.time_ns, a.kind, &a.subjects).cmp(&(b.time_ns, b.kind, &b.subjects)));
}

fn new_edge_event(
    periods: &Periods,
    edge: &PeriodEdge,
    period: &Period,
    missing: &mut MissingVersions,
) -> Event {
    let ends = periods.edge(edge.id);
    let key = &periods.edge_key(edge.id);
    let target = period.node_type(ends.to);
    let source = period.node_type(ends.from);
    let (kind, what) = if target == NodeType::Database {
        (
            EventKind::NewDatabaseUse,
            format!("{} now uses database {}", key.from, key.to),
        )
    } else if key.kind == EdgeKind::Async
        && target == NodeType::Service
        && matches!(source, NodeType::Messaging | NodeType::Service)
    {
        (
            EventKind::NewQueueConsumer,
            format!("{} now consumes from {}", key.to, key.from),
        )
    } else {
        (
            EventKind::NewEdge,
            format!("new {} call {} → {}", kind_word(key.kind), key.from, key.to),
        )
    };
    let share = if period.calls > 0 {
        edge.calls as f64 / period.calls as f64
    } else {
        0.0
    };
    let versions = pair_words(key, &period.edge_versions(edge.id, missing));
    let introduced = versions
        .first()
        .map(|v| format!("; first from {v}"))
        .unwrap_or_default();
    Event {
        time: rfc3339(edge.first_seen_ns),
        time_ns: edge.first_seen_ns,
        kind,
        severity: Severity::Info,
        subjects: vec![edge_name(key)],
        versions,
        evidence: BTreeMap::from([
            ("kind".to_owned(), json!(key.kind.as_str())),
            ("calls".to_owned(), json!(edge.calls)),
            (
                "share_of_calls".to_owned(),
                json!((share * 10_000.0).round() / 10_000.0),
            ),
        ]),
        message: format!(
            "{what} ({:.1}% of all calls when it appeared{introduced})",
            share * 100.0
        ),
    }
}

fn new_service_event(
    periods: &Periods,
    node: &PeriodNode,
    period: &Period,
    missing: &mut MissingVersions,
) -> Event {
    let name = periods.name(node.id);
    let time_ns = node.seen.map_or(period.start_ns, |s| s.first_ns);
    let versions = release_words(name, &period.node_versions(node.id, missing));
    Event {
        time: rfc3339(time_ns),
        time_ns,
        kind: EventKind::NewService,
        severity: Severity::Info,
        subjects: vec![name.to_string()],
        message: match versions.first() {
            Some(release) => format!("new service {name} ({release})"),
            None => format!("new service {name}"),
        },
        versions,
        evidence: BTreeMap::new(),
    }
}

fn regressions(
    periods: &Periods,
    period: &Period,
    (calls_before, errors_before, p99_before): (u64, u64, Option<f64>),
    edge: &PeriodEdge,
    settings: &HistorySettings,
    missing: &mut MissingVersions,
) -> Vec<Event> {
    let mut out = Vec::new();
    let rate_before = errors_before as f64 / calls_before.max(1) as f64;
    let rate = edge.errors as f64 / edge.calls.max(1) as f64;
    let error_regressed =
        rate - rate_before >= settings.error_rate_increase && rate >= 2.0 * rate_before;
    let p99_regressed = match (edge.p99_ns, p99_before) {
        (Some(now), Some(before)) => {
            let (now_ms, before_ms) = (millis(now), millis(before));
            now_ms >= before_ms * settings.p99_ratio
                && now_ms - before_ms >= settings.p99_min_increase_ms
        }
        _ => false,
    };
    if !error_regressed && !p99_regressed {
        return out;
    }
    let key = &periods.edge_key(edge.id);
    let start_ns = period.start_ns;
    let versions = pair_words(key, &period.edge_versions(edge.id, missing));
    if error_regressed {
        out.push(Event {
            time: rfc3339(start_ns),
            time_ns: start_ns,
            kind: EventKind::ErrorRateRegressed,
            severity: Severity::Warning,
            subjects: vec![edge_name(key)],
            versions: versions.clone(),
            evidence: BTreeMap::from([
                (
                    "error_rate".to_owned(),
                    json!((rate * 10_000.0).round() / 10_000.0),
                ),
                (
                    "error_rate_before".to_owned(),
                    json!((rate_before * 10_000.0).round() / 10_000.0),
                ),
                ("calls".to_owned(), json!(edge.calls)),
            ]),
            message: format!(
                "{} → {} fails {:.1}% of its calls, up from {:.1}% the step before",
                key.from,
                key.to,
                rate * 100.0,
                rate_before * 100.0
            ),
        });
    }
    if let (true, Some(now), Some(before)) = (p99_regressed, edge.p99_ns, p99_before) {
        let (now_ms, before_ms) = (millis(now), millis(before));
        out.push(Event {
            time: rfc3339(start_ns),
            time_ns: start_ns,
            kind: EventKind::P99Regressed,
            severity: Severity::Warning,
            subjects: vec![edge_name(key)],
            versions,
            evidence: BTreeMap::from([
                ("p99_ms".to_owned(), json!(now_ms)),
                ("p99_ms_before".to_owned(), json!(before_ms)),
                ("calls".to_owned(), json!(edge.calls)),
            ]),
            message: format!(
                "{} → {} p99 {now_ms:.1} ms, up from {before_ms:.1} ms the step before",
                key.from, key.to
            ),
        });
    }
    out
}

/// Findings that appeared or were resolved between consecutive slices: `slices` are the
/// findings of each slice, oldest first, with the slice's start; the first slice is the
/// baseline and gives no events.
pub fn finding_events(slices: &[(i64, Vec<Finding>)]) -> Vec<Event> {
    let mut out = Vec::new();
    let key = |f: &Finding| (f.kind, f.subjects.clone());
    for pair in slices.windows(2) {
        let (before, (start_ns, after)) = (&pair[0].1, (&pair[1].0, &pair[1].1));
        let had: BTreeSet<_> = before.iter().map(key).collect();
        let has: BTreeSet<_> = after.iter().map(key).collect();
        for finding in after.iter().filter(|f| !had.contains(&key(f))) {
            out.push(finding_event(
                EventKind::FindingAppeared,
                finding,
                *start_ns,
            ));
        }
        for finding in before.iter().filter(|f| !has.contains(&key(f))) {
            out.push(finding_event(
                EventKind::FindingResolved,
                finding,
                *start_ns,
            ));
        }
    }
    out
}

fn finding_event(kind: EventKind, finding: &Finding, start_ns: i64) -> Event {
    let name = serde_json::to_value(finding.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let appeared = kind == EventKind::FindingAppeared;
    Event {
        time: rfc3339(start_ns),
        time_ns: start_ns,
        kind,
        severity: if appeared {
            finding.severity
        } else {
            Severity::Info
        },
        subjects: finding.subjects.clone(),
        versions: Vec::new(),
        evidence: BTreeMap::from([("finding".to_owned(), json!(name))]),
        message: if appeared {
            format!("{name}: {}", finding.message)
        } else {
            format!("{name} resolved: {}", finding.subjects.join(", "))
        },
    }
}

/// "1 day", "3 days", "1 h", "30 min", "45 s".
fn seconds_words(seconds: i64) -> String {
    let plural = |n: i64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => plural(s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Events as a table for the terminal, oldest first.
pub fn text(history: &History) -> String {
    let mut out = format!(
        "{} events from {} to {} (steps of {}, gone after {} without a call)\n",
        history.events.len(),
        history.start,
        history.end,
        seconds_words(history.step_s),
        seconds_words(history.gone_after_s),
    );
    for event in &history.events {
        let _ = write!(
            out,
            "{}  {:<8} {:<21} {}",
            event
                .time
                .get(..19)
                .unwrap_or(&event.time)
                .replace('T', " "),
            event.severity.as_str(),
            event.kind.as_str(),
            event.message
        );
        if !event.versions.is_empty() && !event.message.contains(&event.versions[0]) {
            let _ = write!(out, " [{}]", event.versions.join(", "));
        }
        out.push('\n');
    }
    out
}

pub fn markdown(history: &History) -> String {
    let mut out = format!(
        "**{} events** from {} to {}\n\n| time | severity | event | subjects | versions | what |\n|---|---|---|---|---|---|\n",
        history.events.len(),
        history.start,
        history.end
    );
    for event in &history.events {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            event.time,
            event.severity.as_str(),
            event.kind.as_str(),
            markdown_cell(&event.subjects.join(", ")),
            markdown_cell(&event.versions.join(", ")),
            markdown_cell(&event.message)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::EdgeStats;
    use crate::snapshot::{Evidence, FindingKind};

    const H: i64 = HOUR_NS;
    /// Steps start here: hour 0 of the replay.
    const T0: i64 = 1_780_000_000 * 1_000_000_000 / HOUR_NS * HOUR_NS;

    struct Call<'a> {
        from: &'a str,
        to: &'a str,
        kind: EdgeKind,
        calls: u64,
        errors: u64,
        latency_ms: i64,
        versions: (&'a str, &'a str),
    }

    fn call<'a>(from: &'a str, to: &'a str) -> Call<'a> {
        Call {
            from,
            to,
            kind: EdgeKind::Sync,
            calls: 100,
            errors: 0,
            latency_ms: 10,
            versions: ("", ""),
        }
    }

    /// The aggregate of hour `hour`: its calls start 10 minutes in.
    fn aggregate(hour: i64, calls: &[Call], databases: &[&str]) -> Aggregate {
        let start = T0 + hour * H + 600_000_000_000;
        let mut aggregate = Aggregate::default();
        for c in calls {
            let mut stats = EdgeStats {
                calls: c.calls,
                errors: c.errors,
                first_seen_ns: start,
                last_seen_ns: start + 1,
                ..EdgeStats::default()
            };
            for _ in 0..c.calls {
                stats.latency.add(c.latency_ms * 1_000_000);
            }
            if c.versions != ("", "") {
                stats.versions.insert(
                    VersionPair {
                        from: Arc::from(c.versions.0),
                        to: Arc::from(c.versions.1),
                    },
                    Seen {
                        first_ns: start,
                        last_ns: start + 1,
                        count: c.calls,
                    },
                );
            }
            aggregate.edges.insert(
                EdgeKey {
                    from: Arc::from(c.from),
                    to: Arc::from(c.to),
                    kind: c.kind,
                },
                stats,
            );
            for (name, version) in [(c.from, c.versions.0), (c.to, c.versions.1)] {
                let facts = aggregate.nodes.entry(Arc::from(name)).or_default();
                if databases.contains(&name) {
                    facts.peer_types.insert(NodeType::Database);
                    continue;
                }
                facts.reports_spans = true;
                facts.note_seen(&Seen::at(start));
                if !version.is_empty() {
                    facts.versions.insert(Arc::from(version), Seen::at(start));
                }
            }
        }
        aggregate
    }

    fn period(hour: i64, calls: &[Call]) -> (i64, Aggregate) {
        (T0 + hour * H, aggregate(hour, calls, &["orders-db"]))
    }

    fn settings(gone_hours: i64) -> HistorySettings {
        HistorySettings {
            gone_after_ns: gone_hours * H,
            fan_in: 3,
            ..HistorySettings::default()
        }
    }

    /// Replays `periods` reporting from hour `since` to hour `until`.
    fn replay_hours(steps: &[(i64, Aggregate)], since: i64, until: i64, gone: i64) -> History {
        let periods = Periods::of_aggregates(steps.iter().map(|(start, a)| (*start, a)));
        let replayed = replay(&periods, T0 + since * H, T0 + until * H, &settings(gone));
        assert!(replayed.missing.is_empty(), "aggregates hold every release");
        replayed.history
    }

    fn kinds(history: &History) -> Vec<(EventKind, String, i64)> {
        history
            .events
            .iter()
            .map(|e| (e.kind, e.subjects.join(","), (e.time_ns - T0) / H))
            .collect()
    }

    #[test]
    fn new_services_and_edges_carry_their_releases_and_the_kind_of_dependency() {
        let mut periods: Vec<(i64, Aggregate)> =
            (0..4).map(|h| period(h, &[call("web", "cart")])).collect();
        periods.push(period(
            4,
            &[
                call("web", "cart"),
                Call {
                    versions: ("1.1", "2.0"),
                    calls: 25,
                    ..call("cart", "payment")
                },
                Call {
                    versions: ("1.1", ""),
                    ..call("cart", "orders-db")
                },
                Call {
                    kind: EdgeKind::Async,
                    ..call("cart", "mailer")
                },
            ],
        ));
        let history = replay_hours(&periods, 2, 5, 2);
        assert_eq!(
            kinds(&history),
            [
                (EventKind::NewService, "mailer".to_owned(), 4),
                (EventKind::NewService, "payment".to_owned(), 4),
                (EventKind::NewEdge, "cart -> payment".to_owned(), 4),
                (EventKind::NewDatabaseUse, "cart -> orders-db".to_owned(), 4),
                (EventKind::NewQueueConsumer, "cart -> mailer".to_owned(), 4),
            ],
            "web, cart and web -> cart were there before the window"
        );
        let payment = &history.events[2];
        assert_eq!(payment.versions, ["cart 1.1 -> payment 2.0"]);
        // 25 of the step's 100 + 25 + 100 + 100 calls: 0.07692.
        assert_eq!(payment.evidence["share_of_calls"], json!(0.0769));
        assert!(
            payment
                .message
                .contains("first from cart 1.1 -> payment 2.0"),
            "{}",
            payment.message
        );
        assert_eq!(history.events[1].versions, ["payment 2.0"]);
        assert_eq!(history.events[3].versions, ["cart 1.1 -> orders-db"]);
        assert_eq!(history.events[0].severity, Severity::Info);
    }

    #[test]
    fn what_is_not_seen_for_gone_after_is_gone_once_and_new_again_when_it_returns() {
        let periods = vec![
            period(0, &[call("web", "cart"), call("web", "ads")]),
            period(1, &[call("web", "cart")]),
            // ads silent for 2 hours: not yet gone with gone_after 3 h.
            period(3, &[call("web", "cart"), call("web", "ads")]),
            period(4, &[call("web", "cart")]),
            period(5, &[call("web", "cart")]),
            period(6, &[call("web", "cart")]),
            period(7, &[call("web", "cart")]),
            period(9, &[call("web", "cart"), call("web", "ads")]),
        ];
        let history = replay_hours(&periods, 1, 10, 3);
        assert_eq!(
            kinds(&history),
            [
                // Last seen in hour 3: gone at the start of hour 6.
                (EventKind::ServiceGone, "ads".to_owned(), 6),
                (EventKind::EdgeGone, "web -> ads".to_owned(), 6),
                (EventKind::NewService, "ads".to_owned(), 9),
                (EventKind::NewEdge, "web -> ads".to_owned(), 9),
            ]
        );
        let gone = history
            .events
            .iter()
            .find(|e| e.kind == EventKind::EdgeGone)
            .unwrap();
        assert_eq!(
            gone.evidence["last_seen"],
            json!(rfc3339(T0 + 3 * H + 600_000_000_001))
        );
        assert_eq!(gone.severity, Severity::Info);
    }

    #[test]
    fn cycles_are_new_when_closed_and_broken_when_an_edge_is_gone() {
        let base = [call("a", "b"), call("b", "c")];
        let mut periods: Vec<(i64, Aggregate)> = (0..3).map(|h| period(h, &base)).collect();
        let closing = [call("a", "b"), call("b", "c"), call("c", "a")];
        periods.push(period(3, &closing));
        periods.extend((4..6).map(|h| period(h, &base)));
        let history = replay_hours(&periods, 1, 6, 2);
        assert_eq!(
            kinds(&history),
            [
                (EventKind::NewEdge, "c -> a".to_owned(), 3),
                (EventKind::NewCycle, "a,b,c".to_owned(), 3),
                (EventKind::EdgeGone, "c -> a".to_owned(), 5),
                (EventKind::CycleBroken, "a,b,c".to_owned(), 5),
            ]
        );
        let cycle = &history.events[1];
        assert_eq!(cycle.severity, Severity::Error, "synchronous");
        assert_eq!(
            cycle.time_ns, history.events[0].time_ns,
            "when the closing edge came"
        );
        let trend: Vec<usize> = history.trends.iter().map(|t| t.cycles).collect();
        assert_eq!(trend, [0, 0, 1, 1, 0]);
        // Through a queue the cycle is asynchronous and a warning.
        let mut periods: Vec<(i64, Aggregate)> = (0..2).map(|h| period(h, &base)).collect();
        periods.push(period(
            2,
            &[
                call("a", "b"),
                call("b", "c"),
                Call {
                    kind: EdgeKind::Async,
                    ..call("c", "a")
                },
            ],
        ));
        let history = replay_hours(&periods, 1, 3, 2);
        let cycle = history
            .events
            .iter()
            .find(|e| e.kind == EventKind::NewCycle)
            .unwrap();
        assert_eq!(cycle.severity, Severity::Warning);
        assert_eq!(cycle.evidence["synchronous"], json!(false));
    }

    #[test]
    fn fan_in_crossing_its_threshold_is_an_event_once() {
        let two = [call("a", "hub"), call("b", "hub")];
        let three = [call("a", "hub"), call("b", "hub"), call("c", "hub")];
        let periods = vec![
            period(0, &two),
            period(1, &two),
            period(2, &three),
            period(3, &three),
            period(
                4,
                &[
                    call("a", "hub"),
                    call("b", "hub"),
                    call("c", "hub"),
                    call("d", "hub"),
                ],
            ),
        ];
        let history = replay_hours(&periods, 1, 5, 5);
        let crossed: Vec<_> = kinds(&history)
            .into_iter()
            .filter(|(k, _, _)| *k == EventKind::FanInCrossed)
            .collect();
        assert_eq!(crossed, [(EventKind::FanInCrossed, "hub".to_owned(), 2)]);
        let event = history
            .events
            .iter()
            .find(|e| e.kind == EventKind::FanInCrossed)
            .unwrap();
        assert_eq!(
            (
                event.evidence["callers"].clone(),
                event.evidence["before"].clone()
            ),
            (json!(3), json!(2))
        );
    }

    #[test]
    fn error_rates_and_p99s_regress_against_the_step_before_with_enough_calls() {
        let periods = vec![
            period(
                0,
                &[Call {
                    errors: 1,
                    ..call("web", "cart")
                }],
            ),
            // 1% to 10%: regressed. p99 10 to 40 ms: regressed.
            period(
                1,
                &[Call {
                    errors: 10,
                    latency_ms: 40,
                    ..call("web", "cart")
                }],
            ),
            // 10% to 13%: not 5 points more. 40 to 55 ms: not 1.5×.
            period(
                2,
                &[Call {
                    errors: 13,
                    latency_ms: 55,
                    ..call("web", "cart")
                }],
            ),
            // Too few calls to judge, however bad.
            period(
                3,
                &[Call {
                    calls: 10,
                    errors: 10,
                    latency_ms: 900,
                    ..call("web", "cart")
                }],
            ),
            // Compared with hour 3? No: only with a step of enough calls right before.
            period(
                4,
                &[Call {
                    errors: 90,
                    latency_ms: 900,
                    ..call("web", "cart")
                }],
            ),
        ];
        let history = replay_hours(&periods, 0, 5, 24);
        let regressions: Vec<_> = kinds(&history)
            .into_iter()
            .filter(|(k, _, _)| {
                matches!(k, EventKind::ErrorRateRegressed | EventKind::P99Regressed)
            })
            .collect();
        assert_eq!(
            regressions,
            [
                (EventKind::ErrorRateRegressed, "web -> cart".to_owned(), 1),
                (EventKind::P99Regressed, "web -> cart".to_owned(), 1),
            ]
        );
        let p99 = history
            .events
            .iter()
            .find(|e| e.kind == EventKind::P99Regressed)
            .unwrap();
        // Sketch values are within 1% of the true ones.
        let (now, before) = (
            p99.evidence["p99_ms"].as_f64().unwrap(),
            p99.evidence["p99_ms_before"].as_f64().unwrap(),
        );
        assert!(
            (now - 40.0).abs() < 0.4 && (before - 10.0).abs() < 0.1,
            "{now} {before}"
        );
    }

    /// A late span adds a second row to a bucket already written: the edge is still new once,
    /// at its earliest call.
    #[test]
    fn an_edge_first_seen_in_a_bucket_that_closed_late_is_one_event() {
        let mut early = aggregate(2, &[call("web", "cart"), call("cart", "payment")], &[]);
        let mut late = aggregate(2, &[call("cart", "payment")], &[]);
        for stats in late.edges.values_mut() {
            stats.first_seen_ns -= 300_000_000_000;
        }
        early.merge(&late);
        let periods = vec![
            period(0, &[call("web", "cart")]),
            period(1, &[call("web", "cart")]),
            (T0 + 2 * H, early),
            period(3, &[call("web", "cart"), call("cart", "payment")]),
        ];
        let history = replay_hours(&periods, 1, 4, 2);
        let new_edges: Vec<_> = history
            .events
            .iter()
            .filter(|e| e.kind == EventKind::NewEdge)
            .collect();
        assert_eq!(new_edges.len(), 1);
        assert_eq!(new_edges[0].time_ns, T0 + 2 * H + 300_000_000_000);
    }

    #[test]
    fn trends_count_what_is_present_and_the_traffic_of_each_step() {
        let periods = vec![
            period(0, &[call("a", "b")]),
            period(1, &[call("a", "b"), call("b", "c")]),
            period(
                3,
                &[Call {
                    errors: 5,
                    ..call("a", "b")
                }],
            ),
        ];
        let history = replay_hours(&periods, 0, 4, 24);
        let points: Vec<(usize, usize, f64, u64, u64)> = history
            .trends
            .iter()
            .map(|t| (t.services, t.edges, t.coupling, t.calls, t.errors))
            .collect();
        // Coupling: 2 × distinct service pairs / services.
        assert_eq!(
            points,
            [
                (2, 1, 1.0, 100, 0),
                (3, 2, 1.33, 200, 0),
                (3, 2, 1.33, 0, 0),
                (3, 2, 1.33, 100, 5)
            ]
        );
        assert!(history.trends[2].p99_ms.is_none(), "no calls in hour 2");
    }

    fn finding(kind: FindingKind, subjects: &[&str]) -> Finding {
        Finding {
            kind,
            severity: Severity::Warning,
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            evidence: Evidence::default(),
            message: "m".into(),
        }
    }

    #[test]
    fn findings_appear_and_resolve_between_slices() {
        let hub = finding(FindingKind::Hub, &["cart"]);
        let chatty = finding(FindingKind::ChattyEdge, &["web -> cart"]);
        let slices = vec![
            (T0, vec![hub.clone()]),
            (T0 + 24 * H, vec![hub.clone(), chatty.clone()]),
            (T0 + 48 * H, vec![chatty.clone()]),
        ];
        let events = finding_events(&slices);
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.subjects.join(","),
                    (e.time_ns - T0) / H,
                    e.severity,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    EventKind::FindingAppeared,
                    "web -> cart".to_owned(),
                    24,
                    Severity::Warning
                ),
                (
                    EventKind::FindingResolved,
                    "cart".to_owned(),
                    48,
                    Severity::Info
                ),
            ]
        );
        assert_eq!(events[0].evidence["finding"], json!("chatty_edge"));
    }

    #[test]
    fn text_and_markdown_list_every_event_and_escape_cells() {
        let periods = vec![
            period(0, &[call("web", "cart")]),
            period(1, &[call("web", "cart"), call("web", "a|b")]),
        ];
        let history = replay_hours(&periods, 1, 2, 24);
        let text = text(&history);
        assert!(text.starts_with("2 events from"), "{text}");
        assert!(
            text.contains("(steps of 1 h, gone after 1 day without a call)"),
            "{text}"
        );
        assert!(
            text.contains("new_edge") && text.contains("web → a|b"),
            "{text}"
        );
        let markdown = markdown(&history);
        assert!(markdown.contains("web -&gt; a\\|b"), "{markdown}");
        assert!(!markdown.contains("a|b"), "{markdown}");
    }
}
