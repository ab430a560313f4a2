//! Spans read from the table the OpenTelemetry Collector's `clickhouse` exporter writes
//! (`otel_traces`), as archtrace's span model: only the columns and attribute keys the
//! edge-derivation contract reads, and only the traces of one window and one worker.

use std::collections::HashSet;
use std::sync::Arc;

use archtrace_analyzer::sampling::{self, JaegerSampler};
use archtrace_analyzer::span::{
    service_node_name, Link, PeerAttributes, PeerKey, SpanKind, StatusCode,
};
use archtrace_analyzer::Span;
use clickhouse::Row;
use serde::Deserialize;

use crate::worker::Shard;
use crate::{Connection, Error};

/// Which spans to read: the traces whose first span starts in `[since, until)` and that hash to
/// `shard`, with their spans up to `slack_ns` after the window. Spans of a trace that started
/// up to `slack_ns` before the window are looked at only to leave that trace to its own window.
#[derive(Clone, Copy, Debug)]
pub struct WindowRead<'a> {
    pub table: &'a str,
    pub since_ns: i64,
    pub until_ns: i64,
    pub slack_ns: i64,
    pub shard: Shard,
    /// The span or resource attribute that multiplies a span's count, if any.
    pub multiplier_key: Option<&'a str>,
}

#[derive(Row, Deserialize)]
struct SpanRow {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service_name: String,
    service_namespace: Option<String>,
    environment: Option<String>,
    service_version: Option<String>,
    span_name: String,
    span_kind: String,
    start_ns: i64,
    duration_ns: i64,
    status_code: String,
    peer_service: Option<String>,
    server_address: Option<String>,
    server_port: Option<String>,
    network_peer_address: Option<String>,
    network_peer_port: Option<String>,
    net_peer_name: Option<String>,
    net_sock_peer_addr: Option<String>,
    db_system: Option<String>,
    db_system_name: Option<String>,
    db_namespace: Option<String>,
    db_name: Option<String>,
    messaging_system: Option<String>,
    messaging_destination_name: Option<String>,
    rpc_service: Option<String>,
    http_route: Option<String>,
    http_method: Option<String>,
    link_trace_ids: Vec<String>,
    link_span_ids: Vec<String>,
    trace_state: String,
    multiplier: Option<String>,
    sampler_type: Option<String>,
    sampler_param: Option<String>,
    sampling_priority: Option<String>,
    resend_count: Option<String>,
}

/// The span attributes the contract reads, by field of [`SpanRow`]; as `otlp::convert`.
const SPAN_ATTRIBUTES: [(&str, &str); 16] = [
    ("peer_service", "peer.service"),
    ("server_address", "server.address"),
    ("server_port", "server.port"),
    ("network_peer_address", "network.peer.address"),
    ("network_peer_port", "network.peer.port"),
    ("net_peer_name", "net.peer.name"),
    ("net_sock_peer_addr", "net.sock.peer.addr"),
    ("db_system", "db.system"),
    ("db_system_name", "db.system.name"),
    ("db_namespace", "db.namespace"),
    ("db_name", "db.name"),
    ("messaging_system", "messaging.system"),
    ("messaging_destination_name", "messaging.destination.name"),
    ("rpc_service", "rpc.service"),
    ("http_route", "http.route"),
    ("http_method", "http.request.method"),
];

fn attribute(map: &str, key: &str) -> String {
    // Keys are ours, or the operator's multiplier key: quoted as a ClickHouse string literal.
    let key = key.replace('\\', "\\\\").replace('\'', "\\'");
    format!("if(mapContains({map}, '{key}'), {map}['{key}'], NULL)")
}

fn time(ns: i64) -> String {
    format!("fromUnixTimestamp64Nano(toInt64({ns}))")
}

fn select_sql(read: &WindowRead) -> String {
    let table = read.table;
    let mut columns = vec![
        "TraceId AS trace_id".to_owned(),
        "SpanId AS span_id".to_owned(),
        "ParentSpanId AS parent_span_id".to_owned(),
        "toString(ServiceName) AS service_name".to_owned(),
        format!(
            "{} AS service_namespace",
            attribute("ResourceAttributes", "service.namespace")
        ),
        format!(
            "coalesce({}, {}) AS environment",
            attribute("ResourceAttributes", "deployment.environment.name"),
            attribute("ResourceAttributes", "deployment.environment")
        ),
        format!(
            "{} AS service_version",
            attribute("ResourceAttributes", "service.version")
        ),
        "toString(SpanName) AS span_name".to_owned(),
        "toString(SpanKind) AS span_kind".to_owned(),
        "toUnixTimestamp64Nano(Timestamp) AS start_ns".to_owned(),
        "toInt64(Duration) AS duration_ns".to_owned(),
        "toString(StatusCode) AS status_code".to_owned(),
    ];
    for (field, key) in SPAN_ATTRIBUTES {
        let value = if field == "http_method" {
            // The legacy name only fills in when the current one is absent.
            format!(
                "coalesce({}, {})",
                attribute("SpanAttributes", key),
                attribute("SpanAttributes", "http.method")
            )
        } else {
            attribute("SpanAttributes", key)
        };
        columns.push(format!("{value} AS {field}"));
    }
    columns.push("Links.TraceId AS link_trace_ids".to_owned());
    columns.push("Links.SpanId AS link_span_ids".to_owned());
    columns.push("toString(TraceState) AS trace_state".to_owned());
    columns.push(match read.multiplier_key {
        Some(key) => format!(
            "coalesce({}, {}) AS multiplier",
            attribute("SpanAttributes", key),
            attribute("ResourceAttributes", key)
        ),
        None => "CAST(NULL, 'Nullable(String)') AS multiplier".to_owned(),
    });
    for (field, key) in [
        ("sampler_type", "sampler.type"),
        ("sampler_param", "sampler.param"),
        ("sampling_priority", "sampling.priority"),
    ] {
        columns.push(format!("{} AS {field}", attribute("SpanAttributes", key)));
    }
    columns.push(format!(
        "coalesce({}, {}) AS resend_count",
        attribute("SpanAttributes", "http.request.resend_count"),
        attribute("SpanAttributes", "http.resend_count")
    ));
    let (since, until) = (read.since_ns, read.until_ns);
    let Shard { index, count } = read.shard;
    format!(
        "SELECT {columns} FROM {table}
         WHERE Timestamp >= {window_start} AND Timestamp < {read_end}
           AND TraceId IN (
             SELECT TraceId FROM {table}
             WHERE Timestamp >= {look_back} AND Timestamp < {window_end}
               AND TraceId != '' AND cityHash64(TraceId) % {count} = {index}
             GROUP BY TraceId
             HAVING min(Timestamp) >= {window_start})
         ORDER BY TraceId",
        columns = columns.join(",\n  "),
        window_start = time(since),
        window_end = time(until),
        look_back = time(since - read.slack_ns),
        read_end = time(until + read.slack_ns),
    )
}

/// What a window's read found besides its traces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub spans: u64,
    pub traces: u64,
    /// Rows whose ids are not hex of the right length (skipped).
    pub invalid_spans: u64,
}

/// Calls `each` with the spans of every trace of the window, one trace at a time.
pub fn for_each_trace(
    conn: &Connection,
    read: &WindowRead,
    each: &mut dyn FnMut(&[Span]),
) -> Result<ReadCounts, Error> {
    let sql = select_sql(read);
    let mut counts = ReadCounts::default();
    conn.run("read spans from the traces table", async {
        let mut cursor = conn.client().query(&sql).fetch::<SpanRow>()?;
        let mut trace: Vec<Span> = Vec::new();
        let mut services = HashSet::new();
        while let Some(row) = cursor.next().await? {
            let Some(span) = span_of(row, &mut services) else {
                counts.invalid_spans += 1;
                continue;
            };
            if trace
                .first()
                .is_some_and(|first| first.trace_id != span.trace_id)
            {
                counts.traces += 1;
                each(&trace);
                trace.clear();
            }
            counts.spans += 1;
            trace.push(span);
        }
        if !trace.is_empty() {
            counts.traces += 1;
            each(&trace);
        }
        Ok(())
    })?;
    Ok(counts)
}

fn hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut id = [0u8; N];
    hex::decode_to_slice(text, &mut id).ok()?;
    (id != [0u8; N]).then_some(id)
}

fn span_kind(text: &str) -> SpanKind {
    // The exporter writes `Server` today and wrote `SPAN_KIND_SERVER` before.
    let name = text.strip_prefix("SPAN_KIND_").unwrap_or(text);
    match name.to_ascii_lowercase().as_str() {
        "internal" => SpanKind::Internal,
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn status_code(text: &str) -> StatusCode {
    let name = text.strip_prefix("STATUS_CODE_").unwrap_or(text);
    match name.to_ascii_lowercase().as_str() {
        "ok" => StatusCode::Ok,
        "error" => StatusCode::Error,
        _ => StatusCode::Unset,
    }
}

/// One name per service, shared by its spans (a window has millions of spans, a few names).
fn intern(services: &mut HashSet<Arc<str>>, name: String) -> Arc<str> {
    if let Some(known) = services.get(name.as_str()) {
        return known.clone();
    }
    let name: Arc<str> = Arc::from(name);
    services.insert(name.clone());
    name
}

fn span_of(row: SpanRow, services: &mut HashSet<Arc<str>>) -> Option<Span> {
    let trace_id = hex_id::<16>(&row.trace_id)?;
    let span_id = hex_id::<8>(&row.span_id)?;
    let parent = if row.parent_span_id.is_empty() {
        None
    } else {
        Some(hex_id::<8>(&row.parent_span_id))
    };
    let service = service_node_name(
        Some(row.service_name.as_str()),
        row.service_namespace.as_deref(),
    );
    let port = |text: Option<String>| text.and_then(|t| t.trim().parse::<i64>().ok());
    let links = row
        .link_trace_ids
        .iter()
        .zip(&row.link_span_ids)
        .filter_map(|(trace, span)| {
            Some(Link {
                trace_id: hex_id::<16>(trace)?,
                span_id: hex_id::<8>(span)?,
                attributes_json: String::new(),
            })
        })
        .collect();
    let mut span = Span::new(trace_id, span_id, "", span_kind(&row.span_kind));
    span.service = intern(services, service);
    // An all-zero parent id is a root, as in OTLP.
    span.parent_span_id = parent.flatten();
    span.name = row.span_name;
    span.start_ns = row.start_ns;
    span.end_ns = row.start_ns.saturating_add(row.duration_ns.max(0));
    span.status = status_code(&row.status_code);
    span.links = links;
    span.environment = row.environment.map(Arc::from);
    span.version = row.service_version.map(|v| intern(services, v));
    let number = |text: Option<String>| text.as_deref().and_then(sampling::parse_number);
    span.adjusted_count = sampling::adjusted_count(&sampling::Evidence {
        multiplier: number(row.multiplier),
        trace_state: sampling::trace_state_count(&row.trace_state),
        jaeger_type: row.sampler_type.as_deref().and_then(JaegerSampler::parse),
        jaeger_param: number(row.sampler_param),
        priority: number(row.sampling_priority),
    });
    // As `otlp::resend_count_of`: negative or unreadable counts are none.
    span.resend_count = row
        .resend_count
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(0);
    span.peer = PeerAttributes::from_texts([
        (PeerKey::PeerService, row.peer_service),
        (PeerKey::ServerAddress, row.server_address),
        (PeerKey::NetworkPeerAddress, row.network_peer_address),
        (PeerKey::NetPeerName, row.net_peer_name),
        (PeerKey::NetSockPeerAddr, row.net_sock_peer_addr),
        (PeerKey::DbSystem, row.db_system),
        (PeerKey::DbSystemName, row.db_system_name),
        (PeerKey::DbNamespace, row.db_namespace),
        (PeerKey::DbName, row.db_name),
        (PeerKey::MessagingSystem, row.messaging_system),
        (
            PeerKey::MessagingDestinationName,
            row.messaging_destination_name,
        ),
        (PeerKey::RpcService, row.rpc_service),
        (PeerKey::HttpRoute, row.http_route),
        (PeerKey::HttpMethod, row.http_method),
    ]);
    span.peer.server_port = port(row.server_port);
    span.peer.network_peer_port = port(row.network_peer_port);
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_read_in_both_spellings_of_the_exporter() {
        for (text, kind) in [
            ("Server", SpanKind::Server),
            ("SPAN_KIND_CLIENT", SpanKind::Client),
            ("Producer", SpanKind::Producer),
            ("SPAN_KIND_CONSUMER", SpanKind::Consumer),
            ("Internal", SpanKind::Internal),
            ("Unspecified", SpanKind::Unspecified),
            ("", SpanKind::Unspecified),
        ] {
            assert_eq!(span_kind(text), kind, "{text}");
        }
        for (text, status) in [
            ("Error", StatusCode::Error),
            ("STATUS_CODE_ERROR", StatusCode::Error),
            ("Ok", StatusCode::Ok),
            ("STATUS_CODE_UNSET", StatusCode::Unset),
            ("Unset", StatusCode::Unset),
        ] {
            assert_eq!(status_code(text), status, "{text}");
        }
    }

    #[test]
    fn ids_are_hex_of_their_length_and_never_zero() {
        assert_eq!(
            hex_id::<8>("00000000000000ff"),
            Some([0, 0, 0, 0, 0, 0, 0, 255])
        );
        assert_eq!(hex_id::<8>("0000000000000000"), None);
        assert_eq!(hex_id::<8>("ff"), None);
        assert_eq!(hex_id::<16>("zz000000000000000000000000000000"), None);
    }
}
