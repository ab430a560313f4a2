//! What a store holds, for `archtrace stats`.

use duckdb::Connection;
use serde::Serialize;

use crate::QueryError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub spans: u64,
    pub traces: u64,
    pub services: u64,
    /// Start time of the earliest span, RFC 3339 UTC; `None` for an empty store.
    pub first_span: Option<String>,
    /// Start time of the latest span.
    pub last_span: Option<String>,
    pub error_spans: u64,
    pub schema_version: i64,
}

pub fn collect(conn: &Connection) -> Result<StoreStats, QueryError> {
    let stats = conn.query_row(
        "SELECT count(*),
                count(DISTINCT trace_id),
                count(DISTINCT service_name),
                strftime(make_timestamp(min(start_ns) // 1000), '%Y-%m-%dT%H:%M:%S.%fZ'),
                strftime(make_timestamp(max(start_ns) // 1000), '%Y-%m-%dT%H:%M:%S.%fZ'),
                count(*) FILTER (WHERE status_code = 'error')
         FROM spans",
        [],
        |row| {
            Ok(StoreStats {
                spans: row.get::<_, i64>(0)? as u64,
                traces: row.get::<_, i64>(1)? as u64,
                services: row.get::<_, i64>(2)? as u64,
                first_span: row.get(3)?,
                last_span: row.get(4)?,
                error_spans: row.get::<_, i64>(5)? as u64,
                schema_version: crate::SCHEMA_VERSION,
            })
        },
    )?;
    Ok(stats)
}
