//! Edge derivation: one complete trace in, call observations out. This implements
//! `shared/docs/edge-derivation.md` rule by rule (R1–R6); each rule has tests named after it.

use std::sync::Arc;

use crate::span::{PeerAttributes, Span, SpanId, SpanKind, TraceId};
use crate::FastMap;

/// The virtual caller of entry points whose client reports no spans (R3).
pub const USER_NODE: &str = "user";

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Service,
    Database,
    Messaging,
    External,
    Client,
}

impl NodeType {
    /// A node is a service whenever some span reports it; otherwise the type a rule gave it,
    /// the most specific one when rules disagree (the least in this order), so that the
    /// result does not depend on the order rules ran in.
    pub fn of(reports_spans: bool, most_specific_peer_type: Option<NodeType>) -> NodeType {
        if reports_spans {
            NodeType::Service
        } else {
            most_specific_peer_type.unwrap_or(NodeType::External)
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Service => "service",
            NodeType::Database => "database",
            NodeType::Messaging => "messaging",
            NodeType::External => "external",
            NodeType::Client => "client",
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    Sync,
    Async,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Sync => "sync",
            EdgeKind::Async => "async",
        }
    }

    /// Reads what [`EdgeKind::as_str`] writes; anything else is synchronous, the safe reading.
    pub fn from_name(name: &str) -> EdgeKind {
        if name == "async" {
            EdgeKind::Async
        } else {
            EdgeKind::Sync
        }
    }
}

/// Which rule produced an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// R1: a server or consumer span below its caller's span.
    Server,
    /// R2: a client or producer span whose callee reports no spans.
    Uninstrumented,
    /// R3: a root server or consumer span called from outside.
    Entry,
    /// R4: a service boundary crossed without a server span.
    Boundary,
    /// R5: a consumer linked to the producer's span.
    Link,
}

/// One call seen in a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub from: Arc<str>,
    pub from_type: NodeType,
    pub to: Arc<str>,
    pub to_type: NodeType,
    pub kind: EdgeKind,
    pub error: bool,
    /// What the caller waited (the client span when there is one), nanoseconds.
    pub latency_ns: i64,
    /// The callee's own span duration, when the callee reported one.
    pub server_latency_ns: Option<i64>,
    pub caller_operation: Arc<str>,
    pub callee_operation: Arc<str>,
    pub start_ns: i64,
    pub provenance: Provenance,
    pub trace_id: TraceId,
    /// The span the rule fired on: the callee's span (R1, R3, R4, R5) or the client span (R2).
    pub span_id: SpanId,
    /// How many calls this one stands for: the adjusted count of that span, else of its parent,
    /// else of the trace; `None` when nothing in the trace tells its sampling.
    pub adjusted_count: Option<f64>,
    /// 1 for a first call; n for the (n-1)th retry: the same operation of the same callee
    /// called again from the same endpoint after the previous call failed, or a client span
    /// with `http.request.resend_count` n-1.
    pub attempt: u32,
    /// A failed synchronous call (after any retries) whose calling endpoint still succeeded:
    /// the caller fell back, so the dependency is optional for it.
    pub fallback: bool,
    /// The `service.version` of the caller's and the callee's spans, where they report one.
    pub from_version: Option<Arc<str>>,
    pub to_version: Option<Arc<str>>,
}

/// What derivation counted about one trace's inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceDiagnostics {
    pub spans: u64,
    pub observations: u64,
    /// Spans whose parent never arrived (R6).
    pub orphaned_spans: u64,
    /// The services of client or producer spans with no server child and no attribute naming
    /// the callee (R2), one entry per span.
    pub unresolved_callers: Vec<Arc<str>>,
    /// The service and operation of the trace's root span (its entry), when it has one.
    pub entry: Option<(Arc<str>, Arc<str>)>,
    /// Services in the trace's longest chain of synchronous calls between services; a hop
    /// through a queue starts a new chain.
    pub sync_depth: u32,
    /// Distinct services that reported spans.
    pub services_touched: u32,
    /// The trace's adjusted count: its root span's, or else the first one a span carries
    /// (Jaeger tags only the root with its sampler).
    pub adjusted_count: Option<f64>,
    /// The entry span's duration, when the trace has an entry.
    pub entry_latency_ns: Option<i64>,
    /// The entry span's critical path: the time each node spent on it (a service's own work,
    /// not waiting for a child; a database's or API's answer to a call), adding up to the entry
    /// span's duration.
    pub critical_path: Vec<(Arc<str>, i64)>,
}

/// What R5 needs to know of a linked span that is not in this trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedSpan {
    pub service: Arc<str>,
    pub operation: Arc<str>,
    pub version: Option<Arc<str>>,
}

/// Looks up spans outside the trace (recently processed ones, online), for links.
pub trait SpanLookup {
    fn find(&self, trace_id: &TraceId, span_id: &SpanId) -> Option<LinkedSpan>;
}

/// No spans outside the trace are known (offline, the whole input is one window).
pub struct NoLookup;

impl SpanLookup for NoLookup {
    fn find(&self, _: &TraceId, _: &SpanId) -> Option<LinkedSpan> {
        None
    }
}

fn is_server(kind: SpanKind) -> bool {
    matches!(kind, SpanKind::Server | SpanKind::Consumer)
}

fn is_client(kind: SpanKind) -> bool {
    matches!(kind, SpanKind::Client | SpanKind::Producer)
}

/// The operation a span stands for: for HTTP servers, the method and route when present.
pub fn operation_name(span: &Span) -> Arc<str> {
    match (span.peer.http_route(), span.peer.http_method()) {
        (Some(route), Some(method)) if span.kind == SpanKind::Server => {
            Arc::from(format!("{method} {route}"))
        }
        (Some(route), None) if span.kind == SpanKind::Server => Arc::from(route),
        _ => Arc::from(span.name.as_str()),
    }
}

/// R2's node for an uninstrumented callee: the first naming attribute, and the node type.
pub fn uninstrumented_peer(peer: &PeerAttributes) -> Option<(String, NodeType)> {
    let node_type = if peer.db_namespace().is_some()
        || peer.db_name().is_some()
        || peer.db_system().is_some()
        || peer.db_system_name().is_some()
    {
        NodeType::Database
    } else if peer.messaging_system().is_some() {
        NodeType::Messaging
    } else {
        NodeType::External
    };
    let network_peer = peer
        .network_peer_address()
        .map(|address| match peer.network_peer_port {
            Some(port) => format!("{address}:{port}"),
            None => address.to_owned(),
        });
    let name = peer
        .peer_service()
        .or_else(|| peer.server_address())
        .map(str::to_owned)
        .or(network_peer)
        .or_else(|| {
            peer.net_peer_name()
                .or_else(|| peer.net_sock_peer_addr())
                .or_else(|| peer.db_namespace())
                .or_else(|| peer.db_name())
                .or_else(|| peer.db_system())
                .or_else(|| peer.db_system_name())
                .or_else(|| peer.messaging_destination_name())
                .or_else(|| peer.messaging_system())
                .or_else(|| peer.rpc_service())
                .map(str::to_owned)
        })?;
    Some((name, node_type))
}

/// Derives the observations of one complete trace (all spans sharing a trace id).
pub fn derive_trace(
    spans: &[Span],
    lookup: &dyn SpanLookup,
    out: &mut Vec<Observation>,
) -> TraceDiagnostics {
    let mut diagnostics = TraceDiagnostics {
        spans: spans.len() as u64,
        ..TraceDiagnostics::default()
    };
    let before = out.len();
    let mut index: FastMap<SpanId, usize> =
        FastMap::with_capacity_and_hasher(spans.len(), Default::default());
    for (i, span) in spans.iter().enumerate() {
        index.entry(span.span_id).or_insert(i);
    }
    let parent_of: Vec<Option<usize>> = spans
        .iter()
        .map(|s| s.parent_span_id.and_then(|p| index.get(&p).copied()))
        .collect();
    let mut has_server_child = vec![false; spans.len()];
    for (i, span) in spans.iter().enumerate() {
        if let Some(p) = parent_of[i] {
            if is_server(span.kind) {
                has_server_child[p] = true;
            }
        }
    }
    let endpoints = Endpoints::new(spans, &parent_of);

    for (i, span) in spans.iter().enumerate() {
        let orphan = span.parent_span_id.is_some() && parent_of[i].is_none();
        if orphan {
            // R6: the caller is not guessed.
            diagnostics.orphaned_spans += 1;
        }
        if let Some(p) = parent_of[i] {
            let parent = &spans[p];
            if is_server(span.kind) {
                rule_1_server_pairing(span, parent, endpoints.of(p), out);
            } else if parent.service != span.service {
                rule_4_boundary(span, parent, endpoints.of(p), out);
            }
        }
        if is_client(span.kind)
            && !has_server_child[i]
            && !rule_2_uninstrumented_callee(span, endpoints.of(i), out)
        {
            diagnostics.unresolved_callers.push(span.service.clone());
        }
        if span.parent_span_id.is_none() && is_server(span.kind) {
            let linked =
                span.kind == SpanKind::Consumer && rule_5_links(span, spans, &index, lookup, out);
            if !linked {
                rule_3_uninstrumented_caller(span, out);
            }
        }
    }
    diagnostics.observations = (out.len() - before) as u64;
    diagnostics.adjusted_count = spans
        .iter()
        .find(|s| s.parent_span_id.is_none())
        .and_then(|root| root.adjusted_count)
        .or_else(|| spans.iter().find_map(|s| s.adjusted_count));
    if let Some(trace_count) = diagnostics.adjusted_count {
        for observation in &mut out[before..] {
            // The span the rule fired on, else its parent (the caller's client span, for
            // R1), else the trace.
            observation.adjusted_count = index
                .get(&observation.span_id)
                .and_then(|&i| {
                    spans[i]
                        .adjusted_count
                        .or_else(|| parent_of[i].and_then(|p| spans[p].adjusted_count))
                })
                .or(Some(trace_count));
        }
    }
    mark_retries_and_fallbacks(spans, &parent_of, &index, &endpoints, &mut out[before..]);
    let root = (0..spans.len())
        .filter(|&i| spans[i].parent_span_id.is_none())
        .min_by_key(|&i| spans[i].start_ns);
    if let Some(root) = root {
        diagnostics.entry = Some((spans[root].service.clone(), operation_name(&spans[root])));
        diagnostics.entry_latency_ns = Some(spans[root].duration_ns());
        diagnostics.critical_path = critical_path(spans, &parent_of, &has_server_child, root);
    }
    diagnostics.sync_depth = sync_depth(spans, &parent_of);
    diagnostics.services_touched = spans
        .iter()
        .map(|s| &*s.service)
        .collect::<std::collections::HashSet<&str>>()
        .len() as u32;
    diagnostics
}

/// Numbers the attempts of each synchronous call and marks failed calls the caller survived.
/// Calls are grouped by calling endpoint (span), callee and callee operation: in a group, a
/// call that starts after the previous one failed and ended is its retry. A loop of calls that
/// succeed is chattiness, not retrying, and stays at attempt 1.
fn mark_retries_and_fallbacks(
    spans: &[Span],
    parent_of: &[Option<usize>],
    index: &FastMap<SpanId, usize>,
    endpoints: &Endpoints,
    observations: &mut [Observation],
) {
    // (endpoint span, callee, callee operation) → (observation, end) of the group's latest call.
    let mut latest: FastMap<(usize, &str, &str), (usize, i64)> = FastMap::default();
    let mut order: Vec<(i64, usize, usize)> = Vec::new();
    for (o, observation) in observations.iter().enumerate() {
        if observation.kind != EdgeKind::Sync {
            continue;
        }
        let Some(&callee) = index.get(&observation.span_id) else {
            continue;
        };
        // The caller's side of the call: the client span itself (R2), else the callee's parent.
        let caller_side = match observation.provenance {
            Provenance::Uninstrumented => Some(callee),
            Provenance::Server | Provenance::Boundary => parent_of[callee],
            Provenance::Entry | Provenance::Link => None,
        };
        if let Some(caller_side) = caller_side {
            order.push((observation.start_ns, o, caller_side));
        }
    }
    order.sort_unstable();
    let mut retried = vec![false; observations.len()];
    let mut attempts = vec![1u32; observations.len()];
    let mut assigned = Vec::with_capacity(order.len());
    for &(start, o, caller_side) in &order {
        let endpoint = endpoints.endpoint[caller_side];
        let resent = spans[caller_side].resend_count;
        let observation = &observations[o];
        let group = (
            endpoint,
            observation.to.as_ref(),
            observation.callee_operation.as_ref(),
        );
        let mut attempt = 1;
        if let Some(&(previous, end)) = latest.get(&group) {
            if observations[previous].error && end <= start {
                attempt = attempts[previous] + 1;
                retried[previous] = true;
            }
        }
        let attempt = attempt.max(resent.saturating_add(1));
        attempts[o] = attempt;
        latest.insert(group, (o, start.saturating_add(observation.latency_ns)));
        assigned.push((o, endpoint, attempt));
    }
    for (o, endpoint, attempt) in assigned {
        let caller = &spans[endpoint];
        let observation = &mut observations[o];
        observation.attempt = attempt;
        observation.fallback = observation.error
            && !retried[o]
            && caller.service == observation.from
            && !caller.is_error();
    }
}

/// The entry span's critical path (as Jaeger computes it): walking back from the span's end,
/// the child that finished last is waited for, then the one that finished last before that
/// child started, and so on; the gaps are the span's own time. Children are clamped to the
/// part of their parent they overlap; consumers run after their producer and are left out.
/// The time of a call to something that reports no spans (R2's database or API) is that
/// node's, not the caller's.
fn critical_path(
    spans: &[Span],
    parent_of: &[Option<usize>],
    has_server_child: &[bool],
    root: usize,
) -> Vec<(Arc<str>, i64)> {
    let mut children: FastMap<usize, Vec<usize>> = FastMap::default();
    for (i, parent) in parent_of.iter().enumerate() {
        if let Some(p) = parent {
            if spans[i].kind != SpanKind::Consumer && *p != i {
                children.entry(*p).or_default().push(i);
            }
        }
    }
    let mut path: Vec<(Arc<str>, i64)> = Vec::new();
    // (span, start, end): the part of the span on the path. Each span is visited once at most:
    // parents are unique, so the walk down from the root is a tree walk.
    let root_span = &spans[root];
    let mut stack = vec![(root, root_span.start_ns, root_span.end_ns)];
    let mut visited = 0usize;
    while let Some((i, start, end)) = stack.pop() {
        visited += 1;
        if end <= start || visited > spans.len() {
            continue;
        }
        let mut own = 0i64;
        let mut cursor = end;
        if let Some(kids) = children.get_mut(&i) {
            // Ties (coarse clocks) broken by start and id, so any order of input agrees.
            kids.sort_unstable_by_key(|&k| {
                let kid = &spans[k];
                (std::cmp::Reverse(kid.end_ns), kid.start_ns, kid.span_id)
            });
            for &k in kids.iter() {
                let child = &spans[k];
                let child_end = child.end_ns.min(cursor);
                let child_start = child.start_ns.max(start);
                if child_end <= child_start {
                    continue;
                }
                own += cursor - child_end;
                stack.push((k, child_start, child_end));
                cursor = child_start;
                if cursor <= start {
                    break;
                }
            }
        }
        own += cursor - start;
        let span = &spans[i];
        let peer = (span.kind == SpanKind::Client && !has_server_child[i])
            .then(|| uninstrumented_peer(&span.peer))
            .flatten();
        let node: &str = peer.as_ref().map_or(&span.service, |(name, _)| name);
        match path.iter_mut().find(|(s, _)| &**s == node) {
            Some((_, total)) => *total += own,
            None => path.push((Arc::from(node), own)),
        }
    }
    path
}

/// The longest synchronous service chain: along parent links, a change of service adds one,
/// except across a producer → consumer hop, which starts a new chain at one.
fn sync_depth(spans: &[Span], parent_of: &[Option<usize>]) -> u32 {
    let mut depth = vec![0u32; spans.len()];
    for start in 0..spans.len() {
        if depth[start] != 0 {
            continue;
        }
        // Climb to an ancestor whose depth is known (or the root); a parent loop in bad input
        // ends the climb after as many steps as there are spans.
        let mut chain = vec![start];
        while let Some(p) = parent_of[*chain.last().expect("never empty")] {
            if depth[p] != 0 || chain.len() > spans.len() || chain.contains(&p) {
                break;
            }
            chain.push(p);
        }
        for &i in chain.iter().rev() {
            depth[i] = match parent_of[i].filter(|p| depth[*p] != 0) {
                None => 1,
                Some(p) => {
                    let (span, parent) = (&spans[i], &spans[p]);
                    if span.service == parent.service {
                        depth[p]
                    } else if span.kind == SpanKind::Consumer || parent.kind == SpanKind::Producer {
                        1
                    } else {
                        depth[p] + 1
                    }
                }
            };
        }
    }
    depth.into_iter().max().unwrap_or(0)
}

/// The caller endpoint of every span: the nearest ancestor-or-self of the same service that
/// is a server/consumer span or a root, i.e. the endpoint that was running.
struct Endpoints {
    endpoint: Vec<usize>,
    operation: Vec<Arc<str>>,
}

impl Endpoints {
    fn new(spans: &[Span], parent_of: &[Option<usize>]) -> Self {
        let mut endpoint: Vec<Option<usize>> = vec![None; spans.len()];
        for start in 0..spans.len() {
            if endpoint[start].is_some() {
                continue;
            }
            // Walk up within the service until an endpoint (or a known answer) is found.
            let mut chain = vec![start];
            let found = loop {
                let current = *chain.last().expect("chain is never empty");
                if let Some(known) = endpoint[current] {
                    break known;
                }
                let span = &spans[current];
                let parent = parent_of[current].filter(|p| spans[*p].service == span.service);
                match parent {
                    Some(p) if !is_server(span.kind) && chain.len() <= spans.len() => chain.push(p),
                    // A server span, a root, an orphan, or the top of a service's stretch of the
                    // trace below another service (a boundary): that span is the endpoint.
                    _ => break current,
                }
            };
            for i in chain {
                endpoint[i] = Some(found);
            }
        }
        let endpoint: Vec<usize> = endpoint
            .into_iter()
            .map(|e| e.expect("every span was assigned"))
            .collect();
        // One name per endpoint, shared by the spans below it.
        let mut names: FastMap<usize, Arc<str>> = FastMap::default();
        let operation = endpoint
            .iter()
            .map(|&e| {
                names
                    .entry(e)
                    .or_insert_with(|| operation_name(&spans[e]))
                    .clone()
            })
            .collect();
        Endpoints {
            endpoint,
            operation,
        }
    }

    fn of(&self, i: usize) -> Arc<str> {
        self.operation[i].clone()
    }
}

/// R1 — a server or consumer span S below its parent P: `P.service → S.service`.
fn rule_1_server_pairing(
    span: &Span,
    parent: &Span,
    caller_op: Arc<str>,
    out: &mut Vec<Observation>,
) {
    let parent_is_client = is_client(parent.kind);
    if parent.service == span.service && !parent_is_client {
        return;
    }
    let kind = if span.kind == SpanKind::Consumer || parent.kind == SpanKind::Producer {
        EdgeKind::Async
    } else {
        EdgeKind::Sync
    };
    out.push(Observation {
        from: parent.service.clone(),
        from_type: NodeType::Service,
        to: span.service.clone(),
        to_type: NodeType::Service,
        kind,
        error: span.is_error() || (parent_is_client && parent.is_error()),
        latency_ns: if parent_is_client {
            parent.duration_ns()
        } else {
            span.duration_ns()
        },
        server_latency_ns: Some(span.duration_ns()),
        caller_operation: caller_op,
        callee_operation: operation_name(span),
        start_ns: if parent_is_client {
            parent.start_ns
        } else {
            span.start_ns
        },
        provenance: Provenance::Server,
        trace_id: span.trace_id,
        span_id: span.span_id,
        adjusted_count: None,
        attempt: 1,
        fallback: false,
        from_version: parent.version.clone(),
        to_version: span.version.clone(),
    });
}

/// R2 — a client or producer span with no server child calls something that reports no spans.
/// Returns false when no attribute names the callee (the span is then unresolved).
fn rule_2_uninstrumented_callee(
    span: &Span,
    caller_op: Arc<str>,
    out: &mut Vec<Observation>,
) -> bool {
    let Some((name, node_type)) = uninstrumented_peer(&span.peer) else {
        return false;
    };
    out.push(Observation {
        from: span.service.clone(),
        from_type: NodeType::Service,
        to: Arc::from(name),
        to_type: node_type,
        kind: if span.kind == SpanKind::Producer {
            EdgeKind::Async
        } else {
            EdgeKind::Sync
        },
        error: span.is_error(),
        latency_ns: span.duration_ns(),
        server_latency_ns: None,
        caller_operation: caller_op,
        // The callee reported nothing: the client span's name says what was called.
        callee_operation: Arc::from(span.name.as_str()),
        start_ns: span.start_ns,
        provenance: Provenance::Uninstrumented,
        trace_id: span.trace_id,
        span_id: span.span_id,
        adjusted_count: None,
        attempt: 1,
        fallback: false,
        from_version: span.version.clone(),
        to_version: None,
    });
    true
}

/// R3 — a root server or consumer span was called by something that reports no spans.
fn rule_3_uninstrumented_caller(span: &Span, out: &mut Vec<Observation>) {
    let peer = &span.peer;
    let (from, from_type) = if let Some(name) = peer.peer_service() {
        (name.to_owned(), NodeType::Client)
    } else if let Some(queue) = (span.kind == SpanKind::Consumer)
        .then(|| {
            peer.messaging_destination_name()
                .or_else(|| peer.messaging_system())
        })
        .flatten()
    {
        (queue.to_owned(), NodeType::Messaging)
    } else {
        (USER_NODE.to_owned(), NodeType::Client)
    };
    out.push(Observation {
        from: Arc::from(from),
        from_type,
        to: span.service.clone(),
        to_type: NodeType::Service,
        kind: if span.kind == SpanKind::Consumer {
            EdgeKind::Async
        } else {
            EdgeKind::Sync
        },
        error: span.is_error(),
        latency_ns: span.duration_ns(),
        server_latency_ns: Some(span.duration_ns()),
        caller_operation: Arc::from(""),
        callee_operation: operation_name(span),
        start_ns: span.start_ns,
        provenance: Provenance::Entry,
        trace_id: span.trace_id,
        span_id: span.span_id,
        adjusted_count: None,
        attempt: 1,
        fallback: false,
        from_version: None,
        to_version: span.version.clone(),
    });
}

/// R4 — a span of another kind whose parent belongs to another service: the call happened
/// though the callee reported no server span.
fn rule_4_boundary(span: &Span, parent: &Span, caller_op: Arc<str>, out: &mut Vec<Observation>) {
    let own_error =
        matches!(span.kind, SpanKind::Internal | SpanKind::Unspecified) && span.is_error();
    out.push(Observation {
        from: parent.service.clone(),
        from_type: NodeType::Service,
        to: span.service.clone(),
        to_type: NodeType::Service,
        kind: EdgeKind::Sync,
        error: own_error,
        latency_ns: span.duration_ns(),
        server_latency_ns: Some(span.duration_ns()),
        caller_operation: caller_op,
        callee_operation: operation_name(span),
        start_ns: span.start_ns,
        provenance: Provenance::Boundary,
        trace_id: span.trace_id,
        span_id: span.span_id,
        adjusted_count: None,
        attempt: 1,
        fallback: false,
        from_version: parent.version.clone(),
        to_version: span.version.clone(),
    });
}

/// R5 — a parentless consumer with links: one async call from each linked span's service.
/// Returns whether any link resolved. When one does, the caller is known and R3 does not also
/// invent one (a deliberate reading of the contract: R3 is for callers nobody reports).
fn rule_5_links(
    span: &Span,
    spans: &[Span],
    index: &FastMap<SpanId, usize>,
    lookup: &dyn SpanLookup,
    out: &mut Vec<Observation>,
) -> bool {
    let mut resolved = false;
    for link in &span.links {
        let linked = if link.trace_id == span.trace_id {
            index.get(&link.span_id).map(|&i| LinkedSpan {
                service: spans[i].service.clone(),
                operation: operation_name(&spans[i]),
                version: spans[i].version.clone(),
            })
        } else {
            None
        }
        .or_else(|| lookup.find(&link.trace_id, &link.span_id));
        let Some(linked) = linked else { continue };
        resolved = true;
        out.push(Observation {
            from: linked.service,
            from_type: NodeType::Service,
            to: span.service.clone(),
            to_type: NodeType::Service,
            kind: EdgeKind::Async,
            error: span.is_error(),
            latency_ns: span.duration_ns(),
            server_latency_ns: Some(span.duration_ns()),
            caller_operation: linked.operation,
            callee_operation: operation_name(span),
            start_ns: span.start_ns,
            provenance: Provenance::Link,
            trace_id: span.trace_id,
            span_id: span.span_id,
            adjusted_count: None,
            attempt: 1,
            fallback: false,
            from_version: linked.version,
            to_version: span.version.clone(),
        });
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Link, PeerKey, StatusCode};

    const TRACE: TraceId = [1; 16];

    /// A span of `service` with id `id`, below `parent`, lasting `duration` ns from `start`.
    fn span(id: u8, parent: Option<u8>, service: &str, kind: SpanKind) -> Span {
        let start = 1_000 * i64::from(id);
        Span::new(TRACE, [id; 8], service, kind)
            .with_parent(parent.map(|p| [p; 8]))
            .with_name(format!("op-{id}"))
            .with_time(start, start + 100 * i64::from(id))
    }

    fn failed(mut span: Span) -> Span {
        span.status = StatusCode::Error;
        span
    }

    fn with_peer(mut span: Span, set: impl FnOnce(&mut PeerAttributes)) -> Span {
        set(&mut span.peer);
        span
    }

    fn derive(spans: &[Span]) -> (Vec<Observation>, TraceDiagnostics) {
        let mut out = Vec::new();
        let diagnostics = derive_trace(spans, &NoLookup, &mut out);
        (out, diagnostics)
    }

    /// (from, to, kind, error) of each observation, in order, for compact expectations.
    fn edges(observations: &[Observation]) -> Vec<(String, String, EdgeKind, bool)> {
        observations
            .iter()
            .map(|o| (o.from.to_string(), o.to.to_string(), o.kind, o.error))
            .collect()
    }

    fn e(from: &str, to: &str, kind: EdgeKind, error: bool) -> (String, String, EdgeKind, bool) {
        (from.into(), to.into(), kind, error)
    }

    use EdgeKind::{Async, Sync};
    use SpanKind::{Client, Consumer, Internal, Producer, Server, Unspecified};

    /// (to, attempt, fallback, error) of each call from `from`, in order of start.
    fn attempts(spans: &[Span], from: &str) -> Vec<(String, u32, bool, bool)> {
        let (mut observations, _) = derive(spans);
        observations.sort_by_key(|o| o.start_ns);
        observations
            .iter()
            .filter(|o| &*o.from == from)
            .map(|o| (o.to.to_string(), o.attempt, o.fallback, o.error))
            .collect()
    }

    fn timed(span: Span, start: i64, end: i64) -> Span {
        span.with_time(start, end)
    }

    #[test]
    fn a_call_after_a_failed_one_to_the_same_operation_is_its_retry() {
        // web's endpoint calls cart three times: two fail, the third succeeds. Then it calls
        // cart twice more, both succeeding: a loop, not retries.
        let call = |id: u8, start: i64, fails: bool| {
            let client = timed(span(id, Some(1), "web", Client), start, start + 10);
            let server = timed(
                span(id + 100, Some(id), "cart", Server),
                start + 1,
                start + 9,
            )
            .with_name("get");
            if fails {
                [failed(client), failed(server)]
            } else {
                [client, server]
            }
        };
        let mut spans = vec![timed(span(1, None, "web", Server), 0, 1_000)];
        for (id, start, fails) in [
            (2, 10, true),
            (3, 30, true),
            (4, 50, false),
            (5, 70, false),
            (6, 90, false),
        ] {
            spans.extend(call(id, start, fails));
        }
        assert_eq!(
            attempts(&spans, "web"),
            [
                ("cart".to_string(), 1, false, true),
                ("cart".to_string(), 2, false, true),
                ("cart".to_string(), 3, false, false),
                ("cart".to_string(), 1, false, false),
                ("cart".to_string(), 1, false, false),
            ]
        );
        // A call that starts before the failed one ended runs beside it: not a retry.
        let parallel = vec![
            timed(span(1, None, "web", Server), 0, 1_000),
            failed(timed(span(2, Some(1), "web", Client), 10, 50).with_name("q")),
            timed(span(3, Some(1), "web", Client), 20, 60).with_name("q"),
        ];
        let parallel: Vec<Span> = parallel
            .into_iter()
            .map(|s| with_peer(s, |p| p.set(PeerKey::PeerService, "search")))
            .collect();
        let seen: Vec<u32> = attempts(&parallel, "web").iter().map(|a| a.1).collect();
        assert_eq!(seen, [1, 1]);
    }

    #[test]
    fn the_resend_count_a_client_span_carries_numbers_its_attempt() {
        let mut client = with_peer(span(2, Some(1), "web", Client), |p| {
            p.set(PeerKey::ServerAddress, "api.example.com")
        });
        client.resend_count = 2;
        let spans = [span(1, None, "web", Server), client];
        assert_eq!(
            attempts(&spans, "web"),
            [("api.example.com".to_string(), 3, false, false)]
        );
    }

    #[test]
    fn a_failed_call_the_calling_endpoint_survived_is_a_fallback() {
        // web → reviews fails but web's endpoint succeeds: a fallback. web → cart fails and
        // web's endpoint fails too: no fallback. A failure retried to success is no fallback.
        let spans = [
            timed(span(1, None, "web", Server), 0, 1_000),
            failed(timed(span(2, Some(1), "web", Client), 10, 20)),
            failed(timed(span(3, Some(2), "reviews", Server), 11, 19)),
        ];
        assert_eq!(
            attempts(&spans, "web"),
            [("reviews".to_string(), 1, true, true)]
        );
        let failing = [
            failed(timed(span(1, None, "web", Server), 0, 1_000)),
            failed(timed(span(2, Some(1), "web", Client), 10, 20)),
            failed(timed(span(3, Some(2), "cart", Server), 11, 19)),
        ];
        assert_eq!(
            attempts(&failing, "web"),
            [("cart".to_string(), 1, false, true)]
        );
        let retried = [
            timed(span(1, None, "web", Server), 0, 1_000),
            failed(timed(span(2, Some(1), "web", Client), 10, 20)),
            failed(timed(span(3, Some(2), "cart", Server), 11, 19).with_name("get")),
            timed(span(4, Some(1), "web", Client), 30, 40),
            timed(span(5, Some(4), "cart", Server), 31, 39).with_name("get"),
        ];
        assert_eq!(
            attempts(&retried, "web"),
            [
                ("cart".to_string(), 1, false, true),
                ("cart".to_string(), 2, false, false)
            ]
        );
    }

    #[test]
    fn the_critical_path_follows_the_last_finishing_child_back_from_the_end() {
        // web 0–100 calls cart 10–40 and, in parallel, pricing 20–70; cart calls db 15–35;
        // web publishes at 90–95. Walking back from 100: web 95–100 (5), its producer span
        // 90–95 (5), web 70–90 (20), pricing 20–70 (50), then cart clamped to 10–20: its call
        // to db clamped to 15–20 (db 5), cart 10–15 (5); web 0–10 (10). web: 40 in all.
        let spans = [
            timed(span(1, None, "web", Server), 0, 100),
            timed(span(2, Some(1), "web", Client), 10, 40),
            timed(span(3, Some(2), "cart", Server), 10, 40),
            timed(span(4, Some(3), "cart", Client), 15, 35),
            timed(span(5, Some(4), "db", Server), 15, 35),
            timed(span(6, Some(1), "web", Client), 20, 70),
            timed(span(7, Some(6), "pricing", Server), 20, 70),
            // A consumer runs after its producer: not on the path even though it ends late.
            timed(span(8, Some(1), "web", Producer), 90, 95),
            timed(span(9, Some(8), "mailer", Consumer), 96, 500),
        ];
        let (_, diagnostics) = derive(&spans);
        let mut path: Vec<(String, i64)> = diagnostics
            .critical_path
            .iter()
            .map(|(s, t)| (s.to_string(), *t))
            .collect();
        path.sort();
        assert_eq!(
            path,
            [
                ("cart".to_string(), 5),
                ("db".to_string(), 5),
                ("pricing".to_string(), 50),
                ("web".to_string(), 40),
            ]
        );
        assert_eq!(diagnostics.entry_latency_ns, Some(100));
        let total: i64 = diagnostics.critical_path.iter().map(|(_, t)| t).sum();
        assert_eq!(total, 100, "the path adds up to the entry's duration");
    }

    #[test]
    fn the_trace_shape_counts_its_longest_sync_service_chain_and_services() {
        // web → cart → pricing synchronously; web publishes to mailer, which calls smtp-relay.
        let spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
            span(3, Some(2), "cart", Server),
            span(4, Some(3), "cart", Internal),
            span(5, Some(4), "cart", Client),
            span(6, Some(5), "pricing", Server),
            span(7, Some(1), "web", Producer),
            span(8, Some(7), "mailer", Consumer),
            span(9, Some(8), "mailer", Client),
            span(10, Some(9), "smtp-relay", Server),
        ];
        let (_, diagnostics) = derive(&spans);
        assert_eq!(diagnostics.sync_depth, 3, "web → cart → pricing");
        assert_eq!(diagnostics.services_touched, 5);
        assert_eq!(
            diagnostics.entry,
            Some((Arc::from("web"), Arc::from("op-1")))
        );
        // Without a root (only orphans) there is no entry; a parent loop does not hang.
        let looped = [span(1, Some(2), "a", Server), span(2, Some(1), "b", Server)];
        let (_, diagnostics) = derive(&looped);
        assert_eq!(diagnostics.entry, None);
        assert!(diagnostics.sync_depth >= 1);
    }

    #[test]
    fn a_call_counts_its_spans_adjusted_count_or_else_its_traces() {
        // Jaeger tags only the root with its sampler (here 1 in 4); a span of its own says 10.
        let spans = [
            span(1, None, "web", Server).with_adjusted_count(Some(4.0)),
            span(2, Some(1), "web", Client),
            span(3, Some(2), "cart", Server),
            span(4, Some(1), "web", Client).with_adjusted_count(Some(10.0)),
            span(5, Some(4), "pricing", Server),
        ];
        let (out, diagnostics) = derive(&spans);
        assert_eq!(diagnostics.adjusted_count, Some(4.0));
        let counts: Vec<(&str, Option<f64>)> =
            out.iter().map(|o| (&*o.to, o.adjusted_count)).collect();
        // R3 fires on the root, R1 on each server span. Neither server span has a count:
        // cart's caller span has none either, so the trace's 4; pricing's caller says 10.
        assert_eq!(
            counts,
            [
                ("web", Some(4.0)),
                ("cart", Some(4.0)),
                ("pricing", Some(10.0))
            ]
        );
        let unsampled = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
        ];
        let (out, diagnostics) = derive(&unsampled);
        assert_eq!(diagnostics.adjusted_count, None);
        assert!(out.iter().all(|o| o.adjusted_count.is_none()));
    }

    #[test]
    fn r1_server_pairing_links_the_callers_service_to_the_callees() {
        let spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
            span(3, Some(2), "cart", Server),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(
            edges(&out),
            [e("user", "web", Sync, false), e("web", "cart", Sync, false)]
        );
        let call = &out[1];
        assert_eq!(call.provenance, Provenance::Server);
        assert_eq!(
            call.latency_ns,
            spans[1].duration_ns(),
            "what the caller waited"
        );
        assert_eq!(call.server_latency_ns, Some(spans[2].duration_ns()));
    }

    #[test]
    fn calls_carry_the_releases_of_caller_and_callee() {
        let mut spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
            span(3, Some(2), "cart", Server),
            span(4, Some(3), "cart", Client),
        ];
        for (span, version) in spans.iter_mut().zip(["1.0", "1.0", "2.0", "2.0"]) {
            span.version = Some(Arc::from(version));
        }
        spans[3].peer.set(PeerKey::DbSystem, "postgresql");
        let (out, _) = derive(&spans);
        let versions: Vec<_> = out
            .iter()
            .map(|o| {
                (
                    &*o.from,
                    &*o.to,
                    o.from_version.as_deref(),
                    o.to_version.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            versions,
            [
                ("user", "web", None, Some("1.0")),
                ("web", "cart", Some("1.0"), Some("2.0")),
                ("cart", "postgresql", Some("2.0"), None),
            ]
        );
    }

    #[test]
    fn r1_a_missing_client_span_does_not_hide_the_call() {
        let spans = [
            span(1, None, "web", Server),
            span(3, Some(1), "cart", Server),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(edges(&out)[1], e("web", "cart", Sync, false));
        assert_eq!(
            out[1].latency_ns,
            spans[1].duration_ns(),
            "the server's own duration"
        );
    }

    #[test]
    fn r1_consumers_and_producer_parents_make_async_edges() {
        let spans = [
            span(1, None, "checkout", Server),
            span(2, Some(1), "checkout", Producer),
            span(3, Some(2), "email", Consumer),
            span(4, Some(2), "audit", Server),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(
            edges(&out)[1..],
            [
                e("checkout", "email", Async, false),
                e("checkout", "audit", Async, false)
            ]
        );
    }

    #[test]
    fn r1_same_service_is_a_self_call_only_below_a_client_span() {
        let spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
            span(3, Some(2), "web", Server),
            span(4, Some(3), "web", Internal),
            span(5, Some(4), "web", Server),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(
            edges(&out),
            [e("user", "web", Sync, false), e("web", "web", Sync, false)]
        );
    }

    #[test]
    fn r1_a_client_span_with_two_server_children_is_two_calls() {
        let spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
            span(3, Some(2), "cart", Server),
            span(4, Some(2), "cart", Server),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(out.iter().filter(|o| &*o.to == "cart").count(), 2);
    }

    #[test]
    fn r1_an_error_on_either_side_is_one_error() {
        let spans = [
            span(1, None, "web", Server),
            failed(span(2, Some(1), "web", Client)),
            failed(span(3, Some(2), "cart", Server)),
            span(4, Some(1), "web", Client),
            failed(span(5, Some(4), "cart", Server)),
            span(6, Some(1), "web", Internal),
            span(7, Some(6), "cart", Server),
        ];
        let (out, _) = derive(&spans);
        let errors: Vec<bool> = out
            .iter()
            .filter(|o| &*o.to == "cart")
            .map(|o| o.error)
            .collect();
        assert_eq!(errors, [true, true, false]);
    }

    #[test]
    fn r2_an_uninstrumented_callee_is_named_by_the_first_attribute_present() {
        let call =
            |id, set: fn(&mut PeerAttributes)| with_peer(span(id, Some(1), "web", Client), set);
        let spans = [
            span(1, None, "web", Server),
            call(2, |p| {
                p.set(PeerKey::PeerService, "billing");
                p.set(PeerKey::ServerAddress, "billing.internal");
            }),
            call(3, |p| p.set(PeerKey::ServerAddress, "api.stripe.com")),
            call(4, |p| {
                p.set(PeerKey::NetworkPeerAddress, "10.0.0.7");
                p.network_peer_port = Some(6379);
            }),
            call(5, |p| p.set(PeerKey::NetPeerName, "legacy-host")),
            call(6, |p| p.set(PeerKey::NetSockPeerAddr, "10.0.0.9")),
            call(7, |p| p.set(PeerKey::RpcService, "grpc.health.v1.Health")),
        ];
        let (out, diagnostics) = derive(&spans);
        let names: Vec<(&str, NodeType)> = out[1..].iter().map(|o| (&*o.to, o.to_type)).collect();
        assert_eq!(
            names,
            [
                ("billing", NodeType::External),
                ("api.stripe.com", NodeType::External),
                ("10.0.0.7:6379", NodeType::External),
                ("legacy-host", NodeType::External),
                ("10.0.0.9", NodeType::External),
                ("grpc.health.v1.Health", NodeType::External),
            ]
        );
        assert!(out[1..]
            .iter()
            .all(|o| o.provenance == Provenance::Uninstrumented));
        assert_eq!(diagnostics.unresolved_callers.len(), 0);
    }

    #[test]
    fn r2_database_and_messaging_attributes_give_the_node_its_type() {
        let spans = [
            span(1, None, "orders", Server),
            with_peer(span(2, Some(1), "orders", Client), |p| {
                p.set(PeerKey::DbSystemName, "postgresql");
                p.set(PeerKey::DbNamespace, "orders_db");
            }),
            with_peer(span(3, Some(1), "orders", Client), |p| {
                p.set(PeerKey::DbSystem, "redis")
            }),
            with_peer(failed(span(4, Some(1), "orders", Producer)), |p| {
                p.set(PeerKey::MessagingSystem, "kafka");
                p.set(PeerKey::MessagingDestinationName, "order-events");
            }),
        ];
        let (out, _) = derive(&spans);
        let got: Vec<(&str, NodeType, EdgeKind, bool)> = out[1..]
            .iter()
            .map(|o| (&*o.to, o.to_type, o.kind, o.error))
            .collect();
        assert_eq!(
            got,
            [
                ("orders_db", NodeType::Database, Sync, false),
                ("redis", NodeType::Database, Sync, false),
                ("order-events", NodeType::Messaging, Async, true),
            ]
        );
        assert_eq!(
            out[3].latency_ns,
            spans[3].duration_ns(),
            "latency from the client span"
        );
    }

    #[test]
    fn r2_without_a_naming_attribute_the_span_is_unresolved_not_unknown() {
        let spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "web", Client),
        ];
        let (out, diagnostics) = derive(&spans);
        assert_eq!(edges(&out), [e("user", "web", Sync, false)]);
        assert_eq!(diagnostics.unresolved_callers.len(), 1);
    }

    #[test]
    fn r2_does_not_apply_to_a_client_span_with_a_server_child() {
        let spans = [
            span(1, None, "web", Server),
            with_peer(span(2, Some(1), "web", Client), |p| {
                p.set(PeerKey::PeerService, "cart")
            }),
            span(3, Some(2), "cart", Server),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(
            edges(&out),
            [e("user", "web", Sync, false), e("web", "cart", Sync, false)]
        );
    }

    #[test]
    fn r3_a_root_server_span_is_called_by_the_user_and_is_an_entry_point() {
        let (out, _) = derive(&[failed(span(1, None, "gateway", Server))]);
        assert_eq!(edges(&out), [e("user", "gateway", Sync, true)]);
        assert_eq!(
            (out[0].from_type, out[0].provenance),
            (NodeType::Client, Provenance::Entry)
        );
    }

    #[test]
    fn r3_peer_service_or_the_queue_names_the_caller() {
        let (out, _) = derive(&[with_peer(span(1, None, "api", Server), |p| {
            p.set(PeerKey::PeerService, "mobile-app")
        })]);
        assert_eq!(
            (&*out[0].from, out[0].from_type),
            ("mobile-app", NodeType::Client)
        );
        let (out, _) = derive(&[with_peer(span(1, None, "mailer", Consumer), |p| {
            p.set(PeerKey::MessagingSystem, "rabbitmq");
            p.set(PeerKey::MessagingDestinationName, "emails");
        })]);
        assert_eq!(edges(&out), [e("emails", "mailer", Async, false)]);
        assert_eq!(out[0].from_type, NodeType::Messaging);
    }

    #[test]
    fn r3_does_not_apply_to_root_spans_of_other_kinds() {
        let (out, _) = derive(&[
            span(1, None, "batch", Internal),
            span(2, None, "cli", Client),
        ]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn r4_a_boundary_without_a_server_span_is_still_a_call() {
        let spans = [
            span(1, None, "web", Server),
            span(2, Some(1), "legacy", Internal),
            span(3, Some(2), "legacy", Internal),
            failed(span(4, Some(1), "reports", Unspecified)),
            failed(span(5, Some(1), "mailer", Client)),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(
            edges(&out)[1..],
            [
                e("web", "legacy", Sync, false),
                e("web", "reports", Sync, true),
                e("web", "mailer", Sync, false),
            ],
            "a client span's own error belongs to its outgoing call, not to the boundary"
        );
        assert!(out[1..]
            .iter()
            .all(|o| o.provenance == Provenance::Boundary));
    }

    #[test]
    fn r5_a_linked_consumer_is_called_by_the_linked_spans_service() {
        let mut consumer = span(3, None, "billing", Consumer);
        consumer.links.push(Link {
            trace_id: TRACE,
            span_id: [2; 8],
            attributes_json: String::new(),
        });
        let spans = [
            span(1, None, "shop", Server),
            span(2, Some(1), "shop", Producer),
            consumer,
        ];
        let (out, diagnostics) = derive(&spans);
        let linked: Vec<_> = out
            .iter()
            .filter(|o| o.provenance == Provenance::Link)
            .collect();
        assert_eq!(linked.len(), 1);
        assert_eq!(
            (&*linked[0].from, &*linked[0].to, linked[0].kind),
            ("shop", "billing", Async)
        );
        assert_eq!(&*linked[0].caller_operation, "op-2");
        assert!(!out
            .iter()
            .any(|o| &*o.to == "billing" && o.provenance == Provenance::Entry));
        assert_eq!(
            diagnostics.unresolved_callers.len(),
            1,
            "the producer names no queue"
        );
    }

    #[test]
    fn r5_links_to_other_traces_resolve_through_the_lookup() {
        struct Known;
        impl SpanLookup for Known {
            fn find(&self, trace_id: &TraceId, span_id: &SpanId) -> Option<LinkedSpan> {
                (*trace_id == [9; 16] && *span_id == [9; 8]).then(|| LinkedSpan {
                    service: Arc::from("producer"),
                    operation: Arc::from("publish"),
                    version: Some(Arc::from("3.1")),
                })
            }
        }
        let mut consumer = span(1, None, "worker", Consumer);
        consumer.version = Some(Arc::from("1.0"));
        for (trace, id) in [([9; 16], [9; 8]), ([8; 16], [8; 8])] {
            consumer.links.push(Link {
                trace_id: trace,
                span_id: id,
                attributes_json: String::new(),
            });
        }
        let mut out = Vec::new();
        derive_trace(&[consumer.clone()], &Known, &mut out);
        assert_eq!(edges(&out), [e("producer", "worker", Async, false)]);
        assert_eq!(
            (out[0].from_version.as_deref(), out[0].to_version.as_deref()),
            (Some("3.1"), Some("1.0")),
            "the linked span's release calls the consumer's"
        );
        let (unlinked, _) = derive(&[consumer]);
        assert_eq!(
            edges(&unlinked),
            [e("user", "worker", Async, false)],
            "no link resolves: R3"
        );
    }

    #[test]
    fn r6_orphans_emit_nothing_and_are_counted() {
        let spans = [
            span(1, None, "web", Server),
            span(3, Some(2), "cart", Server),
            span(4, Some(2), "cart", Internal),
        ];
        let (out, diagnostics) = derive(&spans);
        assert_eq!(edges(&out), [e("user", "web", Sync, false)]);
        assert_eq!(diagnostics.orphaned_spans, 2);
    }

    #[test]
    fn operations_caller_is_the_running_endpoint_and_http_servers_use_the_route() {
        let spans = [
            with_peer(span(1, None, "web", Server), |p| {
                p.set(PeerKey::HttpRoute, "/orders/{id}");
                p.set(PeerKey::HttpMethod, "GET");
            }),
            span(2, Some(1), "web", Internal),
            span(3, Some(2), "web", Client),
            with_peer(span(4, Some(3), "cart", Server), |p| {
                p.set(PeerKey::HttpRoute, "/cart")
            }),
        ];
        let (out, _) = derive(&spans);
        assert_eq!(&*out[0].callee_operation, "GET /orders/{id}");
        assert_eq!(
            (&*out[1].caller_operation, &*out[1].callee_operation),
            ("GET /orders/{id}", "/cart")
        );
    }

    #[test]
    fn parent_cycles_in_bad_data_do_not_hang() {
        let spans = [
            span(1, Some(2), "a", Internal),
            span(2, Some(1), "a", Internal),
        ];
        let (out, diagnostics) = derive(&spans);
        assert!(out.is_empty());
        assert_eq!(diagnostics.orphaned_spans, 0);
    }
}
