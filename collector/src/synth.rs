//! Realistic synthetic traces for the load generator and the benchmarks: a dozen services of an
//! online shop calling each other over HTTP and gRPC, a database and a queue, with the
//! attributes real instrumentation writes (about 400–600 bytes a span in protobuf).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span::SpanKind, status, ResourceSpans, ScopeSpans, Span, Status,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::otlp::{int_attribute as i, string_attribute as s};

const SERVICES: [&str; 12] = [
    "gateway",
    "frontend",
    "cart",
    "checkout",
    "payment",
    "shipping",
    "inventory",
    "recommendation",
    "ads",
    "email",
    "currency",
    "user",
];

/// Calls each service makes: (callee index, route). The gateway is index 0.
const CALLS: [&[(usize, &str)]; 12] = [
    &[(1, "/")],
    &[
        (2, "/cart"),
        (7, "/recommendations"),
        (8, "/ads"),
        (11, "/users/{id}"),
        (3, "/checkout"),
    ],
    &[(6, "/stock/{sku}")],
    &[(4, "/charge"), (5, "/quote"), (10, "/convert")],
    &[],
    &[],
    &[],
    &[(6, "/stock/{sku}")],
    &[],
    &[],
    &[],
    &[],
];

/// Generates traces deterministically from a seed, so benchmark payloads can be reproduced.
pub struct Generator {
    rng: StdRng,
    now_ns: u64,
}

struct Pending {
    service: usize,
    span: Span,
}

impl Generator {
    pub fn new(seed: u64, now_ns: u64) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            now_ns,
        }
    }

    /// A request with at least `min_spans` spans (whole traces), grouped by service as an SDK
    /// batch from many processes would be after a collector.
    pub fn request(&mut self, min_spans: usize) -> ExportTraceServiceRequest {
        let mut pending = Vec::with_capacity(min_spans + 32);
        while pending.len() < min_spans {
            self.trace(&mut pending);
        }
        let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
        for item in pending {
            by_service[item.service].push(item.span);
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .enumerate()
                .filter(|(_, spans)| !spans.is_empty())
                .map(|(index, spans)| ResourceSpans {
                    resource: Some(resource(index)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "opentelemetry-instrumentation-http".into(),
                            version: "0.57.0".into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    fn trace(&mut self, out: &mut Vec<Pending>) {
        let trace_id: [u8; 16] = self.rng.random();
        self.now_ns += self.rng.random_range(100_000..2_000_000);
        let start = self.now_ns;
        self.server_span(out, trace_id, None, 0, "/", start, 0);
    }

    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    /// Emits a server span of `service` and, below it, its outgoing calls; returns its end time.
    #[allow(clippy::too_many_arguments)]
    fn server_span(
        &mut self,
        out: &mut Vec<Pending>,
        trace_id: [u8; 16],
        parent: Option<[u8; 8]>,
        service: usize,
        route: &str,
        start: u64,
        depth: usize,
    ) -> u64 {
        let span_id = self.span_id();
        let mut cursor = start + self.rng.random_range(50_000..300_000);
        for &(callee, callee_route) in CALLS[service] {
            let client_id = self.span_id();
            let client_start = cursor;
            let server_end = if depth < 4 {
                self.server_span(
                    out,
                    trace_id,
                    Some(client_id),
                    callee,
                    callee_route,
                    client_start + 150_000,
                    depth + 1,
                )
            } else {
                client_start + 500_000
            };
            let client_end = server_end + self.rng.random_range(50_000..200_000);
            out.push(Pending {
                service,
                span: self.http_client_span(
                    trace_id,
                    client_id,
                    span_id,
                    callee,
                    callee_route,
                    client_start,
                    client_end,
                ),
            });
            cursor = client_end;
        }
        // Leaf work: the stock service reads the database, checkout publishes an order event.
        match SERVICES[service] {
            "inventory" => {
                let db_start = cursor;
                cursor += self.rng.random_range(200_000..3_000_000);
                let id = self.span_id();
                out.push(Pending {
                    service,
                    span: self.db_span(trace_id, id, span_id, db_start, cursor),
                });
            }
            "checkout" => {
                let id = self.span_id();
                let produce_start = cursor;
                cursor += self.rng.random_range(100_000..400_000);
                out.push(Pending {
                    service,
                    span: self.producer_span(trace_id, id, span_id, produce_start, cursor),
                });
            }
            _ => {}
        }
        let end = cursor + self.rng.random_range(20_000..200_000);
        let failed = self.rng.random_ratio(1, 100);
        let status_code = if failed { 500 } else { 200 };
        let method = if SERVICES[service] == "checkout" {
            "POST"
        } else {
            "GET"
        };
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("{method} {route}"),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![
                s("http.request.method", method),
                s("http.route", route),
                s("url.path", route.replace("{id}", "42").replace("{sku}", "OLJCESPC7Z")),
                s("url.scheme", "http"),
                i("http.response.status_code", status_code),
                s("network.protocol.version", "1.1"),
                s("server.address", format!("{}.shop.svc.cluster.local", SERVICES[service])),
                i("server.port", 8080),
                s("client.address", "10.42.0.17"),
                s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
            ],
            status: failed.then(|| Status {
                code: status::StatusCode::Error as i32,
                message: "upstream request failed".into(),
            }),
            ..Default::default()
        };
        out.push(Pending { service, span });
        end
    }

    #[allow(clippy::too_many_arguments)]
    fn http_client_span(
        &mut self,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: [u8; 8],
        callee: usize,
        route: &str,
        start: u64,
        end: u64,
    ) -> Span {
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: format!("GET {route}"),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![
                s("http.request.method", "GET"),
                s(
                    "url.full",
                    format!(
                        "http://{}.shop.svc.cluster.local:8080{}",
                        SERVICES[callee], route
                    ),
                ),
                s(
                    "server.address",
                    format!("{}.shop.svc.cluster.local", SERVICES[callee]),
                ),
                i("server.port", 8080),
                i("http.response.status_code", 200),
                s("network.protocol.version", "1.1"),
            ],
            ..Default::default()
        }
    }

    fn db_span(
        &mut self,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: [u8; 8],
        start: u64,
        end: u64,
    ) -> Span {
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: "SELECT shop.stock".into(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![
                s("db.system.name", "postgresql"),
                s("db.namespace", "shop"),
                s("db.collection.name", "stock"),
                s("db.operation.name", "SELECT"),
                s("db.query.text", "SELECT sku, warehouse_id, quantity, reserved FROM stock WHERE sku = $1 AND quantity > reserved"),
                s("server.address", "postgres.shop.svc.cluster.local"),
                i("server.port", 5432),
            ],
            ..Default::default()
        }
    }

    fn producer_span(
        &mut self,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: [u8; 8],
        start: u64,
        end: u64,
    ) -> Span {
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.to_vec(),
            name: "publish orders".into(),
            kind: SpanKind::Producer as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![
                s("messaging.system", "kafka"),
                s("messaging.destination.name", "orders"),
                s("messaging.operation.type", "publish"),
                s(
                    "messaging.kafka.message.key",
                    format!("order-{}", self.rng.random::<u32>()),
                ),
                s("server.address", "kafka.shop.svc.cluster.local"),
                i("server.port", 9092),
            ],
            ..Default::default()
        }
    }
}

fn resource(service: usize) -> Resource {
    Resource {
        attributes: vec![
            s("service.name", SERVICES[service]),
            s("service.namespace", "shop"),
            s("service.version", "1.4.2"),
            s("deployment.environment.name", "production"),
            s("host.name", format!("node-{}", service % 3)),
            s(
                "k8s.pod.name",
                format!("{}-7d9f8c6b5-x2k4q", SERVICES[service]),
            ),
            s("telemetry.sdk.language", "rust"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.version", "0.31.0"),
        ],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn requests_have_at_least_the_asked_spans_of_realistic_size() {
        let request = Generator::new(7, 1_700_000_000_000_000_000).request(512);
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert!(spans >= 512, "{spans}");
        let per_span = request.encoded_len() / spans;
        assert!((300..=700).contains(&per_span), "{per_span} bytes a span");
        let services = request.resource_spans.len();
        assert!(services >= 10, "{services} services");
    }

    #[test]
    fn the_same_seed_gives_the_same_request() {
        let a = Generator::new(1, 0).request(100);
        let b = Generator::new(1, 0).request(100);
        assert_eq!(a, b);
    }
}
