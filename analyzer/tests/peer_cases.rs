//! The cases other dependency linkers test, in OpenTelemetry terms, against our edge contract.
//!
//! Zipkin's `DependencyLinkerTest` (zipkin2.internal) describes spans by local and remote
//! service; here the remote service becomes `peer.service` on the span, and Zipkin's shared
//! client/server spans are already split by the importer. The OpenTelemetry Collector's
//! `servicegraph` connector and Tempo's service-graph processor (the same design) pair a client
//! span with its server child and make virtual nodes of uninstrumented peers. Where the contract
//! deliberately differs, the test says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use archtrace_analyzer::aggregate::Aggregate;
use archtrace_analyzer::derive::{EdgeKind, NoLookup, NodeType};
use archtrace_analyzer::{PeerAttributes, PeerKey, Span, SpanKind, StatusCode};

use EdgeKind::{Async, Sync};
use SpanKind::{Client, Consumer, Internal, Producer, Server};

struct S {
    id: u8,
    parent: Option<u8>,
    service: &'static str,
    kind: SpanKind,
    peer_service: Option<&'static str>,
    error: bool,
}

fn s(id: u8, parent: Option<u8>, service: &'static str, kind: SpanKind) -> S {
    S {
        id,
        parent,
        service,
        kind,
        peer_service: None,
        error: false,
    }
}

impl S {
    fn peer(mut self, name: &'static str) -> S {
        self.peer_service = Some(name);
        self
    }

    fn failed(mut self) -> S {
        self.error = true;
        self
    }

    fn build(&self, trace: u8) -> Span {
        Span {
            trace_id: [trace; 16],
            span_id: [self.id; 8],
            parent_span_id: self.parent.map(|p| [p; 8]),
            service: Arc::from(self.service),
            name: format!("op-{}", self.id),
            kind: self.kind,
            start_ns: 1_000 * i64::from(self.id),
            end_ns: 1_000 * i64::from(self.id) + 500,
            status: if self.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            links: Vec::new(),
            peer: PeerAttributes::from_texts([(
                PeerKey::PeerService,
                self.peer_service.map(str::to_owned),
            )]),
            environment: None,
            version: None,
            adjusted_count: None,
            resend_count: 0,
            detail: Default::default(),
        }
    }
}

type Links = BTreeMap<(String, String, EdgeKind), (u64, u64)>;

/// (from, to, kind) → (calls, errors), over the traces given.
fn link(traces: &[&[S]]) -> Links {
    let mut aggregate = Aggregate::default();
    let mut scratch = Vec::new();
    for (t, trace) in traces.iter().enumerate() {
        let spans: Vec<Span> = trace.iter().map(|s| s.build(t as u8 + 1)).collect();
        aggregate.add_trace(&spans, &NoLookup, &mut scratch);
    }
    aggregate
        .edges
        .iter()
        .map(|(k, v)| {
            (
                (k.from.to_string(), k.to.to_string(), k.kind),
                (v.calls, v.errors),
            )
        })
        .collect()
}

fn links(expected: &[(&str, &str, EdgeKind, u64, u64)]) -> Links {
    expected
        .iter()
        .map(|(a, b, k, calls, errors)| ((a.to_string(), b.to_string(), *k), (*calls, *errors)))
        .collect()
}

/// Zipkin `linksSpans`: web → app → db, the database call failing. Differs: our root server
/// span also gets its caller, the virtual `user` (R3); Zipkin draws no link for the root.
#[test]
fn zipkin_links_spans() {
    let trace = [
        s(1, None, "web", Server),
        s(2, Some(1), "web", Client),
        s(3, Some(2), "app", Server),
        s(4, Some(3), "app", Client).peer("db").failed(),
    ];
    assert_eq!(
        link(&[&trace]),
        links(&[
            ("user", "web", Sync, 1, 0),
            ("web", "app", Sync, 1, 0),
            ("app", "db", Sync, 1, 1),
        ])
    );
}

/// Zipkin `traceIdIsOpaque`: the trace id plays no part.
#[test]
fn zipkin_trace_id_is_opaque() {
    let trace = [
        s(1, None, "web", Server),
        s(2, Some(1), "web", Client),
        s(3, Some(2), "app", Server),
    ];
    let spans: Vec<Span> = trace.iter().map(|s| s.build(1)).collect();
    let other: Vec<Span> = trace.iter().map(|s| s.build(0xab)).collect();
    let mut scratch = Vec::new();
    let (mut a, mut b) = (Aggregate::default(), Aggregate::default());
    a.add_trace(&spans, &NoLookup, &mut scratch);
    b.add_trace(&other, &NoLookup, &mut scratch);
    let edges = |x: &Aggregate| {
        let mut e: Vec<_> = x.edges.iter().map(|(k, v)| (k.clone(), v.calls)).collect();
        e.sort();
        e
    };
    assert_eq!(edges(&a), edges(&b));
}

/// Zipkin `linksSpansDirectedByKind` (servicegraph agrees): a root server span that names its
/// caller, and a root client span that names its callee, both give caller → callee.
#[test]
fn zipkin_links_spans_directed_by_kind() {
    let server_root = [s(1, None, "server", Server).peer("client")];
    let client_root = [s(1, None, "client", Client).peer("server")];
    assert_eq!(
        link(&[&server_root]),
        links(&[("client", "server", Sync, 1, 0)])
    );
    assert_eq!(
        link(&[&client_root]),
        links(&[("client", "server", Sync, 1, 0)])
    );
}

/// Zipkin `callsAgainstTheSameLinkIncreasesCallCount_span` and `_trace`.
#[test]
fn zipkin_calls_against_the_same_link_increase_the_call_count() {
    let two_calls = [
        s(1, None, "client", Server),
        s(2, Some(1), "client", Client).peer("server"),
        s(3, Some(1), "client", Client).peer("server"),
    ];
    assert_eq!(
        link(&[&two_calls]).get(&("client".into(), "server".into(), Sync)),
        Some(&(2, 0))
    );
    let one_call = [
        s(1, None, "client", Server),
        s(2, Some(1), "client", Client).peer("server"),
    ];
    assert_eq!(
        link(&[&one_call, &one_call]).get(&("client".into(), "server".into(), Sync)),
        Some(&(2, 0))
    );
}

/// Zipkin `singleHostSpansResultInASingleCallCount`, `..._defersNameToServer` and
/// `..._SingleErrorCount` (servicegraph agrees): a client span and its server child are one
/// call, named by the server's own service, failed once if either failed.
#[test]
fn zipkin_a_client_and_its_server_are_one_call() {
    let plain = [
        s(1, None, "client", Client),
        s(2, Some(1), "server", Server),
    ];
    assert_eq!(link(&[&plain]), links(&[("client", "server", Sync, 1, 0)]));
    let misnamed = [
        s(1, None, "client", Client).peer("server-alias"),
        s(2, Some(1), "server", Server),
    ];
    assert_eq!(
        link(&[&misnamed]),
        links(&[("client", "server", Sync, 1, 0)])
    );
    let failed = [
        s(1, None, "client", Client).failed(),
        s(2, Some(1), "server", Server).failed(),
    ];
    assert_eq!(link(&[&failed]), links(&[("client", "server", Sync, 1, 1)]));
}

/// Zipkin `singleHostSpans_multipleChildren`: one client span, two server children (a retry
/// seen by the server twice), one failing: two calls, one error.
#[test]
fn zipkin_single_host_spans_multiple_children() {
    let trace = [
        s(1, None, "client", Client),
        s(2, Some(1), "server", Server).failed(),
        s(3, Some(1), "server", Server),
    ];
    assert_eq!(link(&[&trace]), links(&[("client", "server", Sync, 2, 1)]));
}

/// Zipkin `intermediatedClientSpansMissingLocalServiceNameLinkToNearestServer`: calls made
/// below a local span still come from the service.
#[test]
fn zipkin_intermediated_client_spans_link_from_their_service() {
    let trace = [
        s(1, None, "client", Server),
        s(2, Some(1), "client", Internal),
        s(3, Some(2), "client", Client).peer("server"),
        s(4, Some(2), "client", Client).peer("server"),
    ];
    assert_eq!(
        link(&[&trace]).get(&("client".into(), "server".into(), Sync)),
        Some(&(2, 0))
    );
}

/// Zipkin `errorsOnInstrumentedLinks`: foo's work continues in bar (no server span: R4's
/// boundary), and bar's calls to baz fail once. The error belongs to bar → baz only.
#[test]
fn zipkin_errors_on_instrumented_links() {
    let trace = [
        s(1, None, "foo", Server),
        s(2, Some(1), "foo", Internal),
        s(3, Some(2), "bar", Client).peer("baz").failed(),
        s(4, Some(2), "bar", Client).peer("baz"),
    ];
    assert_eq!(
        link(&[&trace]),
        links(&[
            ("user", "foo", Sync, 1, 0),
            ("foo", "bar", Sync, 2, 0),
            ("bar", "baz", Sync, 2, 1),
        ])
    );
}

/// Zipkin `messagingWithoutBroker_noLinks` and `messagingSpansDontLinkWithoutBroker_*`.
/// Differs deliberately: Zipkin links producer → broker → consumer only when a broker is named,
/// and nothing otherwise; the contract makes the dependency itself the edge, producer →
/// consumer, asynchronous (the servicegraph connector also pairs producer and consumer spans).
#[test]
fn zipkin_messaging_links_producer_to_consumer_directly() {
    let trace = [
        s(1, None, "producer", Producer),
        s(2, Some(1), "consumer", Consumer),
    ];
    assert_eq!(
        link(&[&trace]),
        links(&[("producer", "consumer", Async, 1, 0)])
    );
}

/// Zipkin `producerLinksToServer_childSpan`: a server below a producer span is still linked.
/// Differs in kind: Zipkin calls it an RPC; the contract keeps the producer's word that the call
/// went through a queue, so the edge is asynchronous.
#[test]
fn zipkin_producer_links_to_a_server_child() {
    let trace = [
        s(1, None, "producer", Producer),
        s(2, Some(1), "server", Server),
    ];
    assert_eq!(
        link(&[&trace]),
        links(&[("producer", "server", Async, 1, 0)])
    );
}

/// Zipkin `clientDoesntLinkToConsumer_child`. Differs deliberately: Zipkin ignores a consumer
/// below a client span (the server side is authoritative there); the contract pairs every
/// server or consumer span with its parent (R1), so the dependency is kept, asynchronous by the
/// consumer's kind.
#[test]
fn zipkin_client_to_consumer_child_is_kept() {
    let trace = [
        s(1, None, "client", Client),
        s(2, Some(1), "consumer", Consumer),
    ];
    assert_eq!(
        link(&[&trace]),
        links(&[("client", "consumer", Async, 1, 0)])
    );
}

/// servicegraph connector: a client span with no server child and a `peer.service` makes a
/// virtual node of the peer (its `virtual_node_peer_attributes`), typed as external here.
#[test]
fn servicegraph_uninstrumented_peer_becomes_a_virtual_node() {
    let trace = [
        s(1, None, "checkout", Server),
        s(2, Some(1), "checkout", Client).peer("payments-api"),
    ];
    let mut aggregate = Aggregate::default();
    let spans: Vec<Span> = trace.iter().map(|s| s.build(1)).collect();
    aggregate.add_trace(&spans, &NoLookup, &mut Vec::new());
    let peer = aggregate
        .nodes
        .get("payments-api")
        .expect("a node for the peer");
    assert!(!peer.reports_spans);
    assert_ne!(peer.node_type(), NodeType::Service);
    assert_eq!(
        link(&[&trace]).get(&("checkout".into(), "payments-api".into(), Sync)),
        Some(&(1, 0))
    );
}

/// servicegraph connector: a failed server span fails the edge even when the client span did
/// not record the error (its `failed` counts either side).
#[test]
fn servicegraph_a_failed_server_side_fails_the_call() {
    let trace = [
        s(1, None, "client", Client),
        s(2, Some(1), "server", Server).failed(),
    ];
    assert_eq!(link(&[&trace]), links(&[("client", "server", Sync, 1, 1)]));
}
