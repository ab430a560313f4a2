//! Spans to an Arrow record batch in the column order of the `spans` table, so that DuckDB's
//! appender takes a whole group of requests as column vectors.

use std::sync::Arc;

use archtrace_analyzer::Span;
use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    UInt64Builder, UInt8Builder,
};
use arrow::datatypes::{Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

struct Columns {
    trace_id: FixedSizeBinaryBuilder,
    span_id: UInt64Builder,
    parent_span_id: UInt64Builder,
    trace_state: StringBuilder,
    service_name: StringBuilder,
    span_name: StringBuilder,
    span_kind: UInt8Builder,
    start_ns: Int64Builder,
    end_ns: Int64Builder,
    status_code: UInt8Builder,
    status_message: StringBuilder,
    peer_service: StringBuilder,
    server_address: StringBuilder,
    server_port: Int64Builder,
    network_peer_address: StringBuilder,
    network_peer_port: Int64Builder,
    net_peer_name: StringBuilder,
    net_sock_peer_addr: StringBuilder,
    db_system: StringBuilder,
    db_system_name: StringBuilder,
    db_namespace: StringBuilder,
    db_name: StringBuilder,
    messaging_system: StringBuilder,
    messaging_destination_name: StringBuilder,
    rpc_service: StringBuilder,
    http_route: StringBuilder,
    http_method: StringBuilder,
    environment: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    attributes: StringBuilder,
    resource_id: UInt64Builder,
    events_count: Int32Builder,
    links: StringBuilder,
    adjusted_count: Float64Builder,
    resend_count: Int32Builder,
    service_version: StringBuilder,
}

fn strings(rows: usize) -> StringBuilder {
    StringBuilder::with_capacity(rows, rows * 8)
}

fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

pub fn spans_to_record_batch(spans: &[&Span]) -> Result<RecordBatch, ArrowError> {
    let rows = spans.len();
    let mut c = Columns {
        trace_id: FixedSizeBinaryBuilder::with_capacity(rows, 16),
        span_id: UInt64Builder::with_capacity(rows),
        parent_span_id: UInt64Builder::with_capacity(rows),
        trace_state: strings(rows),
        service_name: strings(rows),
        span_name: strings(rows),
        span_kind: UInt8Builder::with_capacity(rows),
        start_ns: Int64Builder::with_capacity(rows),
        end_ns: Int64Builder::with_capacity(rows),
        status_code: UInt8Builder::with_capacity(rows),
        status_message: strings(rows),
        peer_service: strings(rows),
        server_address: strings(rows),
        server_port: Int64Builder::with_capacity(rows),
        network_peer_address: strings(rows),
        network_peer_port: Int64Builder::with_capacity(rows),
        net_peer_name: strings(rows),
        net_sock_peer_addr: strings(rows),
        db_system: strings(rows),
        db_system_name: strings(rows),
        db_namespace: strings(rows),
        db_name: strings(rows),
        messaging_system: strings(rows),
        messaging_destination_name: strings(rows),
        rpc_service: strings(rows),
        http_route: strings(rows),
        http_method: strings(rows),
        environment: strings(rows),
        scope_name: strings(rows),
        scope_version: strings(rows),
        attributes: StringBuilder::with_capacity(rows, rows * 64),
        resource_id: UInt64Builder::with_capacity(rows),
        events_count: Int32Builder::with_capacity(rows),
        links: strings(rows),
        adjusted_count: Float64Builder::with_capacity(rows),
        resend_count: Int32Builder::with_capacity(rows),
        service_version: strings(rows),
    };
    for span in spans {
        c.trace_id.append_value(span.trace_id)?;
        c.span_id.append_value(u64::from_be_bytes(span.span_id));
        c.parent_span_id
            .append_option(span.parent_span_id.map(u64::from_be_bytes));
        c.trace_state
            .append_option(non_empty(&span.detail.trace_state));
        c.service_name.append_value(&*span.service);
        c.span_name.append_value(&span.name);
        c.span_kind.append_value(span.kind.to_otlp());
        c.start_ns.append_value(span.start_ns);
        c.end_ns.append_value(span.end_ns);
        c.status_code.append_value(span.status.to_otlp());
        c.status_message
            .append_option(non_empty(&span.detail.status_message));
        let peer = &span.peer;
        c.peer_service.append_option(peer.peer_service());
        c.server_address.append_option(peer.server_address());
        c.server_port.append_option(peer.server_port);
        c.network_peer_address
            .append_option(peer.network_peer_address());
        c.network_peer_port.append_option(peer.network_peer_port);
        c.net_peer_name.append_option(peer.net_peer_name());
        c.net_sock_peer_addr
            .append_option(peer.net_sock_peer_addr());
        c.db_system.append_option(peer.db_system());
        c.db_system_name.append_option(peer.db_system_name());
        c.db_namespace.append_option(peer.db_namespace());
        c.db_name.append_option(peer.db_name());
        c.messaging_system.append_option(peer.messaging_system());
        c.messaging_destination_name
            .append_option(peer.messaging_destination_name());
        c.rpc_service.append_option(peer.rpc_service());
        c.http_route.append_option(peer.http_route());
        c.http_method.append_option(peer.http_method());
        c.environment.append_option(span.environment.as_deref());
        c.scope_name
            .append_option(non_empty(&span.detail.scope_name));
        c.scope_version
            .append_option(non_empty(&span.detail.scope_version));
        c.attributes.append_value(&span.detail.attributes_json);
        c.resource_id.append_value(span.detail.resource_id);
        c.events_count
            .append_value(i32::try_from(span.detail.events_count).unwrap_or(i32::MAX));
        if span.links.is_empty() {
            c.links.append_null();
        } else {
            c.links.append_value(links_json(span));
        }
        c.adjusted_count.append_option(span.adjusted_count);
        c.resend_count.append_option(
            (span.resend_count > 0).then(|| i32::try_from(span.resend_count).unwrap_or(i32::MAX)),
        );
        c.service_version.append_option(span.version.as_deref());
    }

    let columns: Vec<(&str, ArrayRef)> = vec![
        ("trace_id", Arc::new(c.trace_id.finish())),
        ("span_id", Arc::new(c.span_id.finish())),
        ("parent_span_id", Arc::new(c.parent_span_id.finish())),
        ("trace_state", Arc::new(c.trace_state.finish())),
        ("service_name", Arc::new(c.service_name.finish())),
        ("span_name", Arc::new(c.span_name.finish())),
        ("span_kind", Arc::new(c.span_kind.finish())),
        ("start_ns", Arc::new(c.start_ns.finish())),
        ("end_ns", Arc::new(c.end_ns.finish())),
        ("status_code", Arc::new(c.status_code.finish())),
        ("status_message", Arc::new(c.status_message.finish())),
        ("peer_service", Arc::new(c.peer_service.finish())),
        ("server_address", Arc::new(c.server_address.finish())),
        ("server_port", Arc::new(c.server_port.finish())),
        (
            "network_peer_address",
            Arc::new(c.network_peer_address.finish()),
        ),
        ("network_peer_port", Arc::new(c.network_peer_port.finish())),
        ("net_peer_name", Arc::new(c.net_peer_name.finish())),
        (
            "net_sock_peer_addr",
            Arc::new(c.net_sock_peer_addr.finish()),
        ),
        ("db_system", Arc::new(c.db_system.finish())),
        ("db_system_name", Arc::new(c.db_system_name.finish())),
        ("db_namespace", Arc::new(c.db_namespace.finish())),
        ("db_name", Arc::new(c.db_name.finish())),
        ("messaging_system", Arc::new(c.messaging_system.finish())),
        (
            "messaging_destination_name",
            Arc::new(c.messaging_destination_name.finish()),
        ),
        ("rpc_service", Arc::new(c.rpc_service.finish())),
        ("http_route", Arc::new(c.http_route.finish())),
        ("http_method", Arc::new(c.http_method.finish())),
        ("environment", Arc::new(c.environment.finish())),
        ("scope_name", Arc::new(c.scope_name.finish())),
        ("scope_version", Arc::new(c.scope_version.finish())),
        ("attributes", Arc::new(c.attributes.finish())),
        ("resource_id", Arc::new(c.resource_id.finish())),
        ("events_count", Arc::new(c.events_count.finish())),
        ("links", Arc::new(c.links.finish())),
        ("adjusted_count", Arc::new(c.adjusted_count.finish())),
        ("resend_count", Arc::new(c.resend_count.finish())),
        ("service_version", Arc::new(c.service_version.finish())),
    ];
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
}

fn links_json(span: &Span) -> String {
    let mut out = String::from("[");
    for (index, link) in span.links.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"trace_id":"{}","span_id":"{}","attributes":{}}}"#,
            hex::encode(link.trace_id),
            hex::encode(link.span_id),
            if link.attributes_json.is_empty() {
                "{}"
            } else {
                &link.attributes_json
            }
        ));
    }
    out.push(']');
    out
}
