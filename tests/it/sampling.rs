//! Sampled traces count what they stand for: spans from the real OpenTelemetry SDK with a
//! consistent probability sampler (`ot=th:` in the trace state), a multiplier attribute on a
//! resource, spans with no sampling information, and Jaeger's recorded probabilistic traces.

use std::collections::BTreeMap;

use archtrace_analyzer::snapshot::{Edge, Snapshot};
use archtrace_collector::ServerSettings;
use opentelemetry::trace::{
    Link, Span as _, SpanKind, TraceContextExt, TraceId, TraceState, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{
    SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, TracerProviderBuilder,
};
use opentelemetry_sdk::Resource;
use serde_json::Value;

use crate::support::{count, json_files, quick_assembly, snapshot_from_files, InProcessServer};

/// Consistent probability sampling as OpenTelemetry specifies it: a root keeps its trace when
/// the trace id's 56 random bits reach the rejection threshold, and says so in the trace
/// state (`ot=th:c`: threshold 0xc0000000000000, one trace in four kept); children follow.
#[derive(Clone, Debug)]
struct OneInFour;

impl ShouldSample for OneInFour {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let decision = |keep: bool| {
            if keep {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            }
        };
        if let Some(parent) = parent.filter(|cx| cx.has_active_span()) {
            let context = parent.span().span_context().clone();
            return SamplingResult {
                decision: decision(context.is_sampled()),
                attributes: Vec::new(),
                trace_state: context.trace_state().clone(),
            };
        }
        let id = trace_id.to_bytes();
        let randomness = u64::from_be_bytes(id[8..16].try_into().unwrap()) & ((1 << 56) - 1);
        SamplingResult {
            decision: decision(randomness >= 0xc0_0000_0000_0000),
            attributes: Vec::new(),
            trace_state: TraceState::from_key_value([("ot", "th:c")]).unwrap(),
        }
    }
}

/// `traces` requests to `service`, each a server span calling `payments` (named by
/// `peer.service`); returns how many traces the provider's sampler kept.
async fn emit(provider: SdkTracerProvider, service: &'static str, traces: usize) -> usize {
    let tracer = provider.tracer("archtrace-sampling-test");
    let mut kept = 0;
    for _ in 0..traces {
        let root = tracer
            .span_builder(format!("POST /{service}"))
            .with_kind(SpanKind::Server)
            .start(&tracer);
        kept += usize::from(root.span_context().is_sampled());
        let cx = Context::current_with_span(root);
        tracer
            .span_builder("charge")
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("peer.service", "payments")])
            .start_with_context(&tracer, &cx)
            .end();
        cx.span().end();
    }
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("the SDK flushed every span to the server");
    kept
}

/// A tracer provider exporting to `server` over OTLP/gRPC.
fn provider(server: &InProcessServer) -> TracerProviderBuilder {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .build()
        .unwrap();
    SdkTracerProvider::builder().with_batch_exporter(exporter)
}

fn edge<'a>(snapshot: &'a Snapshot, from: &str, to: &str) -> Option<&'a Edge> {
    snapshot.edges.iter().find(|e| e.from == from && e.to == to)
}

fn into<'a>(snapshot: &'a Snapshot, to: &str) -> Option<&'a Edge> {
    snapshot.edges.iter().find(|e| e.to == to)
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_calls_count_what_they_stand_for_in_the_graph_metrics_and_store() {
    let server = InProcessServer::start(ServerSettings {
        span_multiplier_key: Some("sample.weight".into()),
        ..quick_assembly()
    })
    .await;
    let resource = |service: &'static str| Resource::builder().with_service_name(service);
    let checkout = provider(&server)
        .with_sampler(OneInFour)
        .with_resource(resource("checkout").build())
        .build();
    let kept = emit(checkout, "checkout", 80).await;
    assert!(kept > 0, "80 traces at one in four kept none");
    // An SDK that samples nothing away and says nothing of it.
    let legacy = provider(&server)
        .with_resource(resource("legacy").build())
        .build();
    assert_eq!(emit(legacy, "legacy", 3).await, 3);
    // A process that samples its own way and says what each span stands for.
    let batch = provider(&server)
        .with_resource(
            resource("batch")
                .with_attribute(KeyValue::new("sample.weight", 10_i64))
                .build(),
        )
        .build();
    assert_eq!(emit(batch, "batch", 2).await, 2);

    let snapshot = server
        .live_snapshot_when(|s| {
            [("checkout", kept), ("legacy", 3), ("batch", 2)]
                .iter()
                .all(|(from, calls)| {
                    edge(s, from, "payments").is_some_and(|e| e.calls == *calls as u64)
                })
        })
        .await;
    let estimated = |from: &str, to: &str| edge(&snapshot, from, to).unwrap().estimate();
    let kept_f = kept as f64;
    assert_eq!(estimated("checkout", "payments"), 4.0 * kept_f);
    assert_eq!(
        into(&snapshot, "checkout").unwrap().estimate(),
        4.0 * kept_f
    );
    assert_eq!(estimated("legacy", "payments"), 3.0);
    assert_eq!(estimated("batch", "payments"), 20.0);

    // Only legacy's spans (a server and a client span per trace) carried no sampling.
    let without = |service: &str| {
        snapshot
            .nodes
            .iter()
            .find(|n| n.id == service)
            .unwrap()
            .spans_without_sampling
    };
    assert_eq!(
        (without("checkout"), without("legacy"), without("batch")),
        (0, 6, 0)
    );
    assert_eq!(snapshot.diagnostics.spans, 2 * kept as u64 + 6 + 4);
    assert_eq!(snapshot.diagnostics.spans_without_sampling, 6);
    let note = archtrace_analyzer::render::sampling_note(&snapshot).unwrap();
    assert!(note.contains("legacy (6)"), "{note}");

    // The viewer says so, and Grafana's service-graph counters count the estimate.
    let overview = reqwest::get(server.admin_url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(overview.contains("Sampled traffic"), "{overview}");
    assert!(overview.contains("legacy (6)"), "{overview}");
    let requests = server
        .metric_line("traces_service_graph_request_total{client=\"checkout\",server=\"payments\"")
        .await;
    let value: f64 = requests.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value, 4.0 * kept_f, "{requests}");

    // The store keeps each span's count, so a rebuild weighs them the same.
    let stopped = server.stop().await;
    let spans_where = |condition: &str| {
        count(
            &stopped.store,
            &format!("SELECT count(*) FROM spans WHERE {condition}"),
        )
    };
    assert_eq!(
        spans_where("service_name = 'checkout' AND adjusted_count = 4"),
        2 * kept as i64
    );
    assert_eq!(
        spans_where("service_name = 'batch' AND adjusted_count = 10"),
        4
    );
    assert_eq!(
        spans_where("service_name = 'legacy' AND adjusted_count IS NULL"),
        6
    );
}

/// The hotel-reservation traces were recorded by Jaeger clients sampling one trace in 0.3;
/// each trace's root span says so in `sampler.type` and `sampler.param`.
#[test]
fn jaeger_probabilistic_traces_count_by_their_samplers_parameter() {
    let files = json_files("jaeger-hotel-reservation");
    // Read independently of archtrace: the sampling parameters on each trace's spans.
    let mut parameters: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut spans = 0;
    for file in &files {
        let document: Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for trace in document["data"].as_array().unwrap() {
            let id = trace["traceID"].as_str().unwrap().to_owned();
            let found = parameters.entry(id).or_default();
            for span in trace["spans"].as_array().unwrap() {
                spans += 1;
                let tags = span["tags"].as_array().unwrap();
                let tag = |key: &str| tags.iter().find(|t| t["key"] == key).map(|t| &t["value"]);
                if tag("sampler.type").and_then(Value::as_str) == Some("probabilistic") {
                    found.push(tag("sampler.param").and_then(Value::as_f64).unwrap());
                }
            }
        }
    }
    assert!(
        parameters.values().all(|p| p == &[0.3]),
        "every trace has one root sampled at 0.3"
    );

    let (snapshot, read) = snapshot_from_files(&files);
    assert_eq!(read, spans);
    assert_eq!(snapshot.diagnostics.spans_without_sampling, 0);
    assert!(!snapshot.edges.is_empty());
    for edge in &snapshot.edges {
        let expected = edge.calls as f64 / 0.3;
        assert!(
            (edge.estimate() - expected).abs() < 0.01,
            "{} -> {}: {} calls estimated as {}, not {expected}",
            edge.from,
            edge.to,
            edge.calls,
            edge.estimate()
        );
    }
    let note = archtrace_analyzer::render::sampling_note(&snapshot).unwrap();
    assert!(!note.contains("no sampling information"), "{note}");
}
