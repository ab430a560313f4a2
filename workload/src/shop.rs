//! The simulated online shop: what `archtrace demo` exports to a running archtrace, what the
//! load generator sends, and what the benchmarks and tests derive. Its spans carry the
//! attributes real instrumentation writes (HTTP, database and messaging semantic conventions,
//! resource and scope), about 400–600 bytes each in protobuf. It is built so that every page
//! has something to show — a synchronous cycle (ads ⇄ recommendation),
//! a shared database (`shop`, used by checkout, inventory and order-worker), an N+1 edge
//! (recommendation → inventory, a dozen calls per request), a queue between checkout and its
//! consumers, an external payment API that fails now and then, and two environments.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status, Span, Status};
use rand::rngs::StdRng;

use archtrace_formats::otlp::{int_attribute, resource_spans, string_attribute};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
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
    /// Calls another service's route as the guard says: retried, timed out, or survived.
    Guarded(&'static str, &'static str, Guard),
    /// The route fails this share of the time (a bug of its own).
    Fail(f64),
    /// The route hangs this share of the time, for this many milliseconds.
    Stall(f64, u64),
}

/// How a caller protects itself from a callee.
#[derive(Clone, Copy)]
struct Guard {
    /// Tries in all: a failed call is retried until one succeeds or these are used up.
    attempts: u32,
    /// The caller answers without the callee when the last try fails.
    fallback: bool,
    /// The caller stops waiting after this many milliseconds; the call then fails.
    timeout_ms: Option<u64>,
}

use Step::{Call, Database, External, Fail, Guarded, Publish, Stall};

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
    // The home page shows no recommendations or ads rather than fail, and waits for ads
    // 250 ms at most.
    (
        "frontend",
        "/home",
        &[
            Guarded(
                "recommendation",
                "/recommendations",
                Guard {
                    attempts: 1,
                    fallback: true,
                    timeout_ms: None,
                },
            ),
            Guarded(
                "ads",
                "/ads",
                Guard {
                    attempts: 1,
                    fallback: true,
                    timeout_ms: Some(250),
                },
            ),
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
            Fail(0.05),
        ],
    ),
    ("recommendation", "/similar", &[]),
    // Closes the synchronous cycle ads → recommendation → ads.
    (
        "ads",
        "/ads/related",
        &[Call("recommendation", "/similar", 1)],
    ),
    ("ads", "/ads", &[Stall(0.08, 2_000)]),
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
            // Charging is retried: up to 3 tries.
            Guarded(
                "payment",
                "/charge",
                Guard {
                    attempts: 3,
                    fallback: false,
                    timeout_ms: None,
                },
            ),
            Call("shipping", "/quote", 1),
            Call("inventory", "/reserve", 1),
            Database("postgresql", "shop", "INSERT orders"),
            Publish("orders", &["order-worker", "email"]),
        ],
    ),
    (
        "payment",
        "/charge",
        &[External("api.payments.example", 0.15)],
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

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

fn status_code(failed: bool) -> i64 {
    if failed {
        500
    } else {
        200
    }
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

    /// One HTTP call from `service`'s span `parent` to `callee`, starting at `start`: the
    /// client span (the `resend`th resend of the request) and everything the callee does.
    /// Returns when the caller stopped waiting, and whether the call failed for it.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        service: &'static str,
        parent: [u8; 8],
        start: u64,
        callee: &'static str,
        route: &'static str,
        resend: u32,
        timeout_ms: Option<u64>,
    ) -> (u64, bool) {
        let client = self.id();
        let (server_end, callee_failed) =
            self.serve(callee, route, Some(client), start + 100_000, None);
        let answered = server_end + self.rng.random_range(50_000..150_000);
        let deadline = timeout_ms.map(|ms| start + ms * 1_000_000);
        let timed_out = deadline.is_some_and(|deadline| answered > deadline);
        let mut attributes = vec![
            string_attribute("http.request.method", "GET"),
            string_attribute("url.full", format!("http://{callee}.shop.svc:8080{route}")),
            string_attribute("server.address", format!("{callee}.shop.svc")),
            int_attribute("server.port", 8080),
            string_attribute("network.protocol.version", "1.1"),
        ];
        if timed_out {
            attributes.push(string_attribute("error.type", "timeout"));
        } else {
            attributes.push(int_attribute(
                "http.response.status_code",
                status_code(callee_failed),
            ));
        }
        if resend > 0 {
            attributes.push(int_attribute(
                "http.request.resend_count",
                i64::from(resend),
            ));
        }
        let (end, failed) = match deadline {
            Some(deadline) if timed_out => (deadline, true),
            _ => (answered, callee_failed),
        };
        self.span(
            service,
            client,
            Some(parent),
            format!("GET {route}"),
            SpanKind::Client,
            start,
            end,
            attributes,
            failed,
        );
        (end, failed)
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
                        let (end, callee_failed) =
                            self.call(service, id, cursor, callee, callee_route, 0, None);
                        failed |= callee_failed;
                        cursor = end;
                    }
                }
                Guarded(callee, callee_route, guard) => {
                    let mut last_failed = false;
                    for attempt in 0..guard.attempts.max(1) {
                        let (end, callee_failed) = self.call(
                            service,
                            id,
                            cursor,
                            callee,
                            callee_route,
                            attempt,
                            guard.timeout_ms,
                        );
                        cursor = end;
                        last_failed = callee_failed;
                        if !callee_failed {
                            break;
                        }
                    }
                    failed |= last_failed && !guard.fallback;
                }
                Fail(rate) => failed |= self.rng.random_bool(rate),
                Stall(rate, ms) => {
                    if self.rng.random_bool(rate) {
                        cursor += ms * 1_000_000;
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
                                "db.query.text",
                                format!("{statement} WHERE id = $1 AND tenant = $2 /* shop */"),
                            ),
                            string_attribute(
                                "db.operation.name",
                                statement.split(' ').next().unwrap_or(statement),
                            ),
                            string_attribute(
                                "server.address",
                                format!("{namespace}.{system}.internal"),
                            ),
                            int_attribute("server.port", 5432),
                        ],
                        false,
                    );
                    cursor = end;
                }
                Publish(topic, consumers) => {
                    let producer = self.id();
                    let end = cursor + self.rng.random_range(100_000..400_000);
                    let message_key = format!("order-{}", self.rng.random::<u32>());
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
                            string_attribute("messaging.kafka.message.key", message_key),
                            string_attribute("server.address", "kafka.shop.svc"),
                            int_attribute("server.port", 9092),
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
                            string_attribute("url.full", format!("https://{host}/v1/charges")),
                            string_attribute("server.address", host),
                            int_attribute("server.port", 443),
                            int_attribute(
                                "http.response.status_code",
                                status_code(external_failed),
                            ),
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
                    string_attribute(
                        "url.path",
                        route.replace("{id}", "42").replace("{sku}", "OLJCESPC7Z"),
                    ),
                    string_attribute("url.scheme", "http"),
                    int_attribute("http.response.status_code", status_code(failed)),
                    string_attribute("network.protocol.version", "1.1"),
                    string_attribute("server.address", format!("{service}.shop.svc")),
                    int_attribute("server.port", 8080),
                    string_attribute("client.address", "10.42.0.17"),
                    string_attribute("user_agent.original", USER_AGENT),
                ],
            ),
        };
        self.span(
            service, id, parent, name, kind, start, end, attributes, failed,
        );
        (end, failed)
    }
}

/// Generates the shop's traffic, deterministically from a seed.
pub struct Simulation {
    rng: StdRng,
    /// When the next trace of [`Simulation::request_of_spans`] starts.
    clock_ns: u64,
}

impl Simulation {
    pub fn new(seed: u64) -> Simulation {
        Simulation::starting_at(seed, 0)
    }

    /// A simulation whose [`Simulation::request_of_spans`] traces start at `now_ns`, each a
    /// little after the one before.
    pub fn starting_at(seed: u64, now_ns: u64) -> Simulation {
        Simulation {
            rng: StdRng::seed_from_u64(seed),
            clock_ns: now_ns,
        }
    }

    /// `traces` user requests starting at `start_ns`, a millisecond apart, as one export request.
    pub fn request(&mut self, traces: usize, start_ns: u64) -> ExportTraceServiceRequest {
        let mut by_resource = Vec::new();
        for t in 0..traces {
            self.trace(start_ns + t as u64 * 1_000_000, &mut by_resource);
        }
        export_request(by_resource)
    }

    /// Whole traces until there are at least `min_spans` spans, as one export request: what an
    /// OpenTelemetry Collector's batch from many processes looks like.
    pub fn request_of_spans(&mut self, min_spans: usize) -> ExportTraceServiceRequest {
        let mut by_resource = Vec::new();
        let mut spans = 0;
        while spans < min_spans {
            self.clock_ns += self.rng.random_range(100_000..2_000_000);
            spans += self.trace(self.clock_ns, &mut by_resource);
        }
        export_request(by_resource)
    }

    /// One user request starting at `start_ns`, its spans added by resource; returns how many.
    fn trace(&mut self, start_ns: u64, by_resource: &mut Vec<(Resource, Vec<Span>)>) -> usize {
        let total: u32 = ENTRY.iter().map(|(_, weight)| weight).sum();
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
        builder.serve("gateway", route, None, start_ns, None);
        let count = builder.spans.len();
        for (service, span) in builder.spans {
            let key = (service, environment);
            match by_resource.iter_mut().find(|(k, _)| *k == key) {
                Some((_, spans)) => spans.push(span),
                None => by_resource.push((key, vec![span])),
            }
        }
        count
    }
}

/// A resource: one process of a service in an environment.
type Resource = (&'static str, &'static str);

fn export_request(by_resource: Vec<(Resource, Vec<Span>)>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: by_resource
            .into_iter()
            .map(|((service, environment), spans)| {
                let attributes = vec![
                    string_attribute("service.name", service),
                    string_attribute("service.version", "1.4.2"),
                    string_attribute("deployment.environment.name", environment),
                    string_attribute("host.name", format!("node-{}", service.len() % 3)),
                    string_attribute("k8s.pod.name", format!("{service}-7d9f8c6b5-x2k4q")),
                    string_attribute("telemetry.sdk.language", "rust"),
                    string_attribute("telemetry.sdk.name", "opentelemetry"),
                    string_attribute("telemetry.sdk.version", "0.31.0"),
                ];
                let mut resource = resource_spans(attributes, spans);
                resource.scope_spans[0].scope = Some(InstrumentationScope {
                    name: "opentelemetry-instrumentation-http".into(),
                    version: "0.57.0".into(),
                    ..Default::default()
                });
                resource.scope_spans[0].schema_url =
                    "https://opentelemetry.io/schemas/1.26.0".into();
                resource
            })
            .collect(),
    }
}

fn now_ns() -> u64 {
    u64::try_from(archtrace_analyzer::time::now_ns()).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
#[error("invalid endpoint {endpoint}")]
pub struct InvalidEndpoint {
    endpoint: String,
    #[source]
    source: tonic::codegen::http::uri::InvalidUri,
}

/// Sends `traces_per_second` simulated requests to the OTLP/gRPC `endpoint` until `stop`.
pub async fn run(
    endpoint: String,
    auth_token: Option<String>,
    traces_per_second: u32,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), InvalidEndpoint> {
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())
        .map_err(|source| InvalidEndpoint { endpoint, source })?
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
    use archtrace_analyzer::aggregate::TraceGroups;
    use archtrace_analyzer::analysis::{Analyzed, Settings};
    use archtrace_analyzer::snapshot::{FindingKind, Snapshot};
    use archtrace_formats::otlp;

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
        assert_eq!(converted.rejections.count, 0);
        let mut groups = TraceGroups::default();
        groups.push(converted.spans);
        let snapshot = Analyzed::new(
            Snapshot::from_aggregate(&groups.aggregate(None), (0, 1)),
            &Settings::default(),
        )
        .snapshot;
        let kinds: Vec<&str> = snapshot
            .findings
            .iter()
            .map(|f| match f.kind {
                FindingKind::SyncCycle => "cycle",
                FindingKind::SharedDatabase => "shared",
                FindingKind::ChattyEdge => "chatty",
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

    #[test]
    fn requests_of_spans_have_at_least_the_asked_spans_of_realistic_size() {
        use prost::Message;
        let request = Simulation::starting_at(7, 1_700_000_000_000_000_000).request_of_spans(512);
        let spans: usize = archtrace_formats::otlp::span_count(&request);
        assert!(spans >= 512, "{spans}");
        let per_span = request.encoded_len() / spans;
        assert!((300..=700).contains(&per_span), "{per_span} bytes a span");
        let services = request.resource_spans.len();
        assert!(services >= 10, "{services} resources");
    }

    #[test]
    fn the_same_seed_gives_the_same_request() {
        let a = Simulation::starting_at(1, 0).request_of_spans(100);
        let b = Simulation::starting_at(1, 0).request_of_spans(100);
        assert_eq!(a, b);
        assert_ne!(a, Simulation::starting_at(2, 0).request_of_spans(100));
    }
}
