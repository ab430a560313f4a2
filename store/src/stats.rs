//! What a store holds, for `archtrace stats`.

use duckdb::Connection;
use serde::Serialize;

use crate::QueryError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// The file (or `:memory:`).
    pub store: String,
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

pub fn collect(conn: &Connection, store: &str) -> Result<StoreStats, QueryError> {
    let schema_version = crate::schema::read_version(conn)?;
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
                store: store.to_owned(),
                spans: row.get::<_, i64>(0)? as u64,
                traces: row.get::<_, i64>(1)? as u64,
                services: row.get::<_, i64>(2)? as u64,
                first_span: row.get(3)?,
                last_span: row.get(4)?,
                error_spans: row.get::<_, i64>(5)? as u64,
                schema_version,
            })
        },
    )?;
    Ok(stats)
}

impl std::fmt::Display for StoreStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = "-".to_owned();
        writeln!(f, "store        {}", self.store)?;
        writeln!(f, "schema       version {}", self.schema_version)?;
        writeln!(f, "spans        {}", self.spans)?;
        writeln!(f, "traces       {}", self.traces)?;
        writeln!(f, "services     {}", self.services)?;
        writeln!(f, "error spans  {}", self.error_spans)?;
        writeln!(
            f,
            "first span   {}",
            self.first_span.as_ref().unwrap_or(&none)
        )?;
        writeln!(
            f,
            "last span    {}",
            self.last_span.as_ref().unwrap_or(&none)
        )
    }
}
