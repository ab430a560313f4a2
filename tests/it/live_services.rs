//! A small system of real services: axum servers calling each other over HTTP with W3C trace
//! context, instrumented with the OpenTelemetry SDK and exporting OTLP to a running archtrace.
//! The graph archtrace derives must be the architecture the code below wires up.

use std::collections::HashMap;

use archtrace_analyzer::derive::{EdgeKind, NodeType};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use tokio::sync::mpsc;

use crate::instrument::{call, database_call, get_ok, provider, serve, server_span, shutdown};
use crate::support::InProcessServer;

#[derive(Clone)]
struct Shop {
    tracer: SdkTracer,
    cart_url: String,
    queue: mpsc::UnboundedSender<HashMap<String, String>>,
}

async fn checkout(State(shop): State<Shop>, headers: HeaderMap) -> &'static str {
    let cx = server_span(&shop.tracer, &headers, "/checkout");
    call(&shop.tracer, &cx, shop.cart_url.clone(), "cart").await;
    database_call(&shop.tracer, &cx, "postgresql", "orders");
    // Publish an order event; its trace context travels with the message.
    let producer = shop
        .tracer
        .span_builder("publish orders")
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders"),
        ])
        .start_with_context(&shop.tracer, &cx);
    let producer_cx = cx.with_span(producer);
    let mut message = HashMap::new();
    TraceContextPropagator::new().inject_context(&producer_cx, &mut message);
    shop.queue.send(message).unwrap();
    producer_cx.span().end();
    cx.span().end();
    "ok"
}

async fn cart(State(tracer): State<SdkTracer>, headers: HeaderMap) -> &'static str {
    let cx = server_span(&tracer, &headers, "/cart");
    database_call(&tracer, &cx, "redis", "carts");
    cx.span().end();
    "ok"
}

#[tokio::test(flavor = "multi_thread")]
async fn live_graph_of_real_services() {
    let archtrace = InProcessServer::start(crate::support::quick_assembly()).await;
    let endpoint = archtrace.grpc_url();
    let providers = ["checkout", "cart", "mailer"].map(|service| provider(service, &endpoint));

    let cart_url = serve(
        Router::new()
            .route("/cart", get(cart))
            .with_state(providers[1].tracer("cart")),
    )
    .await;
    let (queue, mut messages) = mpsc::unbounded_channel::<HashMap<String, String>>();
    let shop = Shop {
        tracer: providers[0].tracer("checkout"),
        cart_url: format!("{cart_url}/cart"),
        queue,
    };
    let checkout_url = serve(
        Router::new()
            .route("/checkout", get(checkout))
            .with_state(shop),
    )
    .await;
    let mailer = providers[2].tracer("mailer");
    let consumer = tokio::spawn(async move {
        let mut consumed = 0;
        while let Some(message) = messages.recv().await {
            let parent = TraceContextPropagator::new().extract(&message);
            mailer
                .span_builder("process orders")
                .with_kind(SpanKind::Consumer)
                .with_attributes([KeyValue::new("messaging.system", "kafka")])
                .start_with_context(&mailer, &parent)
                .end();
            consumed += 1;
        }
        consumed
    });

    let requests = 5;
    get_ok(&format!("{checkout_url}/checkout"), requests).await;
    shutdown(providers.into()).await;
    // Traces are derived once idle; poll the live graph until the last call shows up.
    let snapshot = archtrace
        .live_snapshot_when(|snapshot| {
            snapshot
                .edges
                .iter()
                .find(|e| e.to == "mailer")
                .is_some_and(|e| e.calls >= requests)
        })
        .await;
    consumer.abort();

    let edge = |from: &str, to: &str| {
        snapshot
            .edges
            .iter()
            .find(|e| e.from == from && e.to == to)
            .unwrap_or_else(|| panic!("no edge {from} -> {to} in {:#?}", snapshot.edges))
    };
    let user = edge("user", "checkout");
    assert_eq!((user.calls, user.kind), (requests, EdgeKind::Sync));
    let to_cart = edge("checkout", "cart");
    assert_eq!(
        (to_cart.calls, to_cart.kind, to_cart.errors),
        (requests, EdgeKind::Sync, 0)
    );
    assert!(to_cart.server_latency_ms.is_some());
    assert_eq!(
        edge("checkout", "orders").calls,
        requests,
        "the database, named by db.namespace"
    );
    assert_eq!(edge("cart", "carts").calls, requests);
    let to_mailer = edge("checkout", "mailer");
    assert_eq!(
        (to_mailer.calls, to_mailer.kind),
        (requests, EdgeKind::Async),
        "producer -> consumer"
    );
    assert_eq!(
        snapshot.edges.len(),
        5,
        "nothing else: {:#?}",
        snapshot.edges
    );
    let node = |id: &str| snapshot.nodes.iter().find(|n| n.id == id).unwrap();
    assert_eq!(node("orders").node_type, NodeType::Database);
    assert_eq!(node("carts").node_type, NodeType::Database);
    assert_eq!(node("user").node_type, NodeType::Client);
    assert!(node("checkout").entry_point);
    assert!(!node("cart").entry_point);
    assert_eq!(snapshot.diagnostics.orphaned_spans, 0);
    assert_eq!(snapshot.diagnostics.unresolved_client_spans, 0);
    let operation = snapshot
        .operations
        .iter()
        .find(|o| o.to.service == "cart")
        .expect("operation-level edge into cart");
    assert_eq!(
        (
            operation.from.operation.as_str(),
            operation.to.operation.as_str()
        ),
        ("GET /checkout", "GET /cart")
    );
    archtrace.stop().await;
}
