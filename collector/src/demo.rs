//! `archtrace demo`: a simulated online shop that exports real OTLP/gRPC to a running archtrace,
//! built so that every page has something to show — a synchronous cycle (ads ⇄ recommendation),
//! a shared database (`shop`, used by checkout, inventory and order-worker), an N+1 edge
//! (recommendation → inventory, a dozen calls per request), a queue between checkout and its
//! consumers, an external payment API that fails now and then, and two environments.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status, Span, Status};
use rand::rngs::StdRng;

use crate::otlp::{resource_spans, string_attribute};
use rand::{Rng, SeedableRng};

/// What a route does, in order.
enum Step {
    /// Calls another service's route, `times` times in a row.
    Call(&'static str, &'static str, u32),
    /// Queries a database: system, namespace (the instance the edge is named by), statement.
    Database(&'static str, &'static str, &'static str),
    /// Publishes to a topic; every consumer processes the message.
    Publish(&'static str, &'static [&'static str]),
    /// Calls an uninstrumented external API that fails this share of the time.
    External(&'static str, f64),
}

use Step::{Call, Database, External, Publish};

/// (service, route, steps). Consumers' routes are named `process <topic>`.
const ROUTES: &[(&str, &str, &[Step])] = &[
    (
        "gateway",
        "/",
        &[Call("auth", "/verify", 1), Call("frontend", "/home", 1)],
    ),
    (
        "gateway",
        "/product/{id}",
        &[
            Call("auth", "/verify", 1),
            Call("frontend", "/product/{id}", 1),
        ],
    ),
    (
        "gateway",
        "/checkout",
        &[Call("auth", "/verify", 1), Call("frontend", "/checkout", 1)],
    ),
    (
        "auth",
        "/verify",
        &[Database("redis", "sessions", "GET session")],
    ),
    (
        "frontend",
        "/home",
        &[
            Call("recommendation", "/recommendations", 1),
            Call("ads", "/ads", 1),
            Call("currency", "/convert", 1),
        ],
    ),
    (
        "frontend",
        "/product/{id}",
        &[
            Call("inventory", "/stock/{sku}", 1),
            Call("recommendation", "/recommendations", 1),
            Call("cart", "/cart", 1),
        ],
    ),
    (
        "frontend",
        "/checkout",
        &[Call("cart", "/cart", 1), Call("checkout", "/checkout", 1)],
    ),
    (
        "cart",
        "/cart",
        &[Database("redis", "sessions", "HGETALL cart")],
    ),
    // The N+1 edge: one stock lookup per recommended product.
    (
        "recommendation",
        "/recommendations",
        &[
            Call("inventory", "/stock/{sku}", 12),
            Call("ads", "/ads/related", 1),
        ],
    ),
    ("recommendation", "/similar", &[]),
    // Closes the synchronous cycle ads → recommendation → ads.
    (
        "ads",
        "/ads/related",
        &[Call("recommendation", "/similar", 1)],
    ),
    ("ads", "/ads", &[]),
    ("currency", "/convert", &[]),
    (
        "inventory",
        "/stock/{sku}",
        &[Database("postgresql", "shop", "SELECT stock")],
    ),
    (
        "inventory",
        "/reserve",
        &[Database("postgresql", "shop", "UPDATE stock")],
    ),
    (
        "checkout",
        "/checkout",
        &[
            Call("payment", "/charge", 1),
            Call("shipping", "/quote", 1),
            Call("inventory", "/reserve", 1),
            Database("postgresql", "shop", "INSERT orders"),
            Publish("orders", &["order-worker", "email"]),
        ],
    ),
    (
        "payment",
        "/charge",
        &[External("api.payments.example", 0.04)],
    ),
    ("shipping", "/quote", &[Call("currency", "/convert", 1)]),
    (
        "order-worker",
        "process orders",
        &[Database("postgresql", "shop", "UPDATE orders")],
    ),
    ("email", "process orders", &[]),
];

/// The routes the gateway serves, as users hit them: home most, checkout least.
const ENTRY: [(&str, u32); 3] = [("/", 6), ("/product/{id}", 3), ("/checkout", 1)];

fn steps_of(service: &str, route: &str) -> &'static [Step] {
    ROUTES
        .iter()
        .find(|(s, r, _)| *s == service && *r == route)
        .map_or(&[], |(_, _, steps)| steps)
}

/// Spans of one trace, by service.
struct TraceBuilder<'a> {
    rng: &'a mut StdRng,
    trace_id: [u8; 16],
    spans: Vec<(&'static str, Span)>,
}

impl TraceBuilder<'_> {
    fn id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        service: &'static str,
        id: [u8; 8],
        parent: Option<[u8; 8]>,
        name: String,
        kind: SpanKind,
        start: u64,
        end: u64,
        attributes: Vec<KeyValue>,
        failed: bool,
    ) {
        self.spans.push((
            service,
            Span {
                trace_id: self.trace_id.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                status: failed.then(|| Status {
                    code: status::StatusCode::Error as i32,
                    message: "request failed".into(),
                }),
                ..Default::default()
            },
        ));
    }

    /// A server (or consumer) span of `service` and everything below it; returns its end and
    /// whether it failed.
    fn serve(
        &mut self,
        service: &'static str,
        route: &'static str,
        parent: Option<[u8; 8]>,
        start: u64,
        consumer_of: Option<&'static str>,
    ) -> (u64, bool) {
        let id = self.id();
        let mut cursor = start + self.rng.random_range(50_000..300_000);
        let mut failed = false;
        for step in steps_of(service, route) {
            match *step {
                Call(callee, callee_route, times) => {
                    for _ in 0..times {
                        let client = self.id();
                        let client_start = cursor;
                        let (server_end, callee_failed) = self.serve(
                            callee,
                            callee_route,
                            Some(client),
                            client_start + 100_000,
                            None,
                        );
                        let end = server_end + self.rng.random_range(50_000..150_000);
                        self.span(
                            service,
                            client,
                            Some(id),
                            format!("GET {callee_route}"),
                            SpanKind::Client,
                            client_start,
                            end,
                            vec![
                                string_attribute("http.request.method", "GET"),
                                string_attribute("server.address", format!("{callee}.shop.svc")),
                            ],
                            callee_failed,
                        );
                        failed |= callee_failed;
                        cursor = end;
                    }
                }
                Database(system, namespace, statement) => {
                    let end = cursor + self.rng.random_range(200_000..2_500_000);
                    let db = self.id();
                    self.span(
                        service,
                        db,
                        Some(id),
                        statement.to_owned(),
                        SpanKind::Client,
                        cursor,
                        end,
                        vec![
                            string_attribute("db.system.name", system),
                            string_attribute("db.namespace", namespace),
                            string_attribute("db.query.summary", statement),
                            string_attribute(
                                "server.address",
                                format!("{namespace}.{system}.internal"),
                            ),
                        ],
                        false,
                    );
                    cursor = end;
                }
                Publish(topic, consumers) => {
                    let producer = self.id();
                    let end = cursor + self.rng.random_range(100_000..400_000);
                    self.span(
                        service,
                        producer,
                        Some(id),
                        format!("publish {topic}"),
                        SpanKind::Producer,
                        cursor,
                        end,
                        vec![
                            string_attribute("messaging.system", "kafka"),
                            string_attribute("messaging.destination.name", topic),
                            string_attribute("messaging.operation.type", "publish"),
                        ],
                        false,
                    );
                    for consumer in consumers {
                        let route = ROUTES
                            .iter()
                            .find(|(s, r, _)| s == consumer && r.starts_with("process "))
                            .map_or("process", |(_, r, _)| *r);
                        let delay = self.rng.random_range(1_000_000..20_000_000);
                        self.serve(consumer, route, Some(producer), end + delay, Some(topic));
                    }
                    cursor = end;
                }
                External(host, error_rate) => {
                    let end = cursor + self.rng.random_range(20_000_000..120_000_000);
                    let external_failed = self.rng.random_bool(error_rate);
                    let call = self.id();
                    self.span(
                        service,
                        call,
                        Some(id),
                        "POST".to_owned(),
                        SpanKind::Client,
                        cursor,
                        end,
                        vec![
                            string_attribute("http.request.method", "POST"),
                            string_attribute("server.address", host),
                        ],
                        external_failed,
                    );
                    failed |= external_failed;
                    cursor = end;
                }
            }
        }
        let end = cursor + self.rng.random_range(20_000..200_000);
        let (name, kind, attributes) = match consumer_of {
            Some(topic) => (
                route.to_owned(),
                SpanKind::Consumer,
                vec![
                    string_attribute("messaging.system", "kafka"),
                    string_attribute("messaging.destination.name", topic),
                    string_attribute("messaging.operation.type", "process"),
                ],
            ),
            None => (
                format!("GET {route}"),
                SpanKind::Server,
                vec![
                    string_attribute("http.request.method", "GET"),
                    string_attribute("http.route", route),
                ],
            ),
        };
        self.span(
            service, id, parent, name, kind, start, end, attributes, failed,
        );
        (end, failed)
    }
}

/// Generates the shop's traffic.
pub struct Simulation {
    rng: StdRng,
}

impl Simulation {
    pub fn new(seed: u64) -> Simulation {
        Simulation {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `traces` user requests starting at `start_ns`, as one export request.
    pub fn request(&mut self, traces: usize, start_ns: u64) -> ExportTraceServiceRequest {
        let mut by_resource: Vec<((&'static str, &'static str), Vec<Span>)> = Vec::new();
        let total: u32 = ENTRY.iter().map(|(_, weight)| weight).sum();
        for t in 0..traces {
            let mut pick = self.rng.random_range(0..total);
            let route = ENTRY
                .iter()
                .find(|(_, weight)| {
                    let hit = pick < *weight;
                    pick = pick.saturating_sub(*weight);
                    hit
                })
                .map_or("/", |(route, _)| *route);
            let environment = if self.rng.random_ratio(1, 5) {
                "staging"
            } else {
                "production"
            };
            let mut builder = TraceBuilder {
                trace_id: self.rng.random(),
                rng: &mut self.rng,
                spans: Vec::new(),
            };
            builder.serve(
                "gateway",
                route,
                None,
                start_ns + t as u64 * 1_000_000,
                None,
            );
            for (service, span) in builder.spans {
                let key = (service, environment);
                match by_resource.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, spans)) => spans.push(span),
                    None => by_resource.push((key, vec![span])),
                }
            }
        }
        ExportTraceServiceRequest {
            resource_spans: by_resource
                .into_iter()
                .map(|((service, environment), spans)| {
                    let attributes = vec![
                        string_attribute("service.name", service),
                        string_attribute("deployment.environment.name", environment),
                        string_attribute("telemetry.sdk.name", "archtrace-demo"),
                    ];
                    resource_spans(attributes, spans)
                })
                .collect(),
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Sends `traces_per_second` simulated requests to the OTLP/gRPC `endpoint` until `stop`.
pub async fn run(
    endpoint: String,
    auth_token: Option<String>,
    traces_per_second: u32,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())
        .map_err(|e| format!("invalid endpoint {endpoint}: {e}"))?
        .connect_lazy();
    let mut client = TraceServiceClient::new(channel);
    let mut simulation = Simulation::new(now_ns());
    let ticks_per_second = 5;
    let per_tick = (traces_per_second / ticks_per_second).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(ticks_per_second)));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let mut request = tonic::Request::new(simulation.request(per_tick, now_ns()));
        if let Some(token) = &auth_token {
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        if let Err(status) = client.export(request).await {
            tracing::warn!("the demo's export was refused: {}", status.message());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp;

    #[test]
    fn every_step_names_a_known_route() {
        for (_, _, steps) in ROUTES {
            for step in steps.iter() {
                if let Call(service, route, _) = step {
                    assert!(
                        ROUTES.iter().any(|(s, r, _)| s == service && r == route),
                        "{service} {route}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_simulated_shop_has_a_cycle_a_shared_database_and_an_n_plus_1_edge() {
        let request = Simulation::new(3).request(200, 1_700_000_000_000_000_000);
        let converted = otlp::convert(request);
        assert_eq!(converted.rejected, 0);
        let mut groups = crate::graph::TraceGroups::default();
        groups.push(converted.spans);
        let snapshot =
            archtrace_analyzer::snapshot::Snapshot::from_aggregate(&groups.aggregate(None), (0, 1));
        let kinds: Vec<&str> = snapshot
            .findings
            .iter()
            .map(|f| match f.kind {
                archtrace_analyzer::findings::FindingKind::SyncCycle => "cycle",
                archtrace_analyzer::findings::FindingKind::SharedDatabase => "shared",
                archtrace_analyzer::findings::FindingKind::ChattyEdge => "chatty",
                _ => "other",
            })
            .collect();
        for wanted in ["cycle", "shared", "chatty"] {
            assert!(
                kinds.contains(&wanted),
                "{wanted} in {:#?}",
                snapshot.findings
            );
        }
        let services = snapshot
            .nodes
            .iter()
            .filter(|n| n.node_type == archtrace_analyzer::derive::NodeType::Service)
            .count();
        assert_eq!(services, 13);
        let async_edges: Vec<_> = snapshot
            .edges
            .iter()
            .filter(|e| e.kind == archtrace_analyzer::derive::EdgeKind::Async)
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(
            async_edges,
            [("checkout", "email"), ("checkout", "order-worker")]
        );
        assert_eq!(snapshot.diagnostics.orphaned_spans, 0);
    }
}
