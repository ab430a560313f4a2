//! Trace formats into archtrace's span model. Every format goes through OTLP and
//! [`otlp::convert`], so a span means the same whichever way it came in: OTLP protobuf as the
//! receivers get it, OTLP/JSON with hex or base64 ids ([`otlp_json`]), and trace files of every
//! kind ([`import`]: OTLP, Jaeger, Zipkin, gzip). [`declared`] reads declared architectures
//! (Backstage catalogs, Structurizr workspaces) for the comparison with the observed one.

pub mod declared;
pub mod import;
mod json;
pub mod otlp;
pub mod otlp_json;
