//! What a store holds, for `archtrace stats`: each tier (raw spans, derived buckets) and the
//! request log beside it.

use duckdb::{Connection, OptionalExt};
use serde::Serialize;

use crate::{Location, QueryError};

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
    /// Derived edges: rows of 1-minute and of 1-hour buckets.
    pub minute_bucket_rows: u64,
    pub hour_bucket_rows: u64,
    /// Rows of days rolled up from their hours.
    #[serde(default)]
    pub day_bucket_rows: u64,
    /// Start of the earliest and the latest derived bucket.
    pub first_bucket: Option<String>,
    pub last_bucket: Option<String>,
    /// The request log's segments on disk, and how much of them is not yet in the store
    /// (a server loads it when it starts).
    pub log_bytes: u64,
    pub log_unloaded_bytes: u64,
}

const RFC3339: &str = "'%Y-%m-%dT%H:%M:%S.%fZ'";

pub fn collect(conn: &Connection, location: &Location) -> Result<StoreStats, QueryError> {
    let schema_version = crate::schema::read_version(conn)?;
    let mut stats = conn.query_row(
        &format!(
            "SELECT count(*),
                    count(DISTINCT trace_id),
                    count(DISTINCT service_name),
                    strftime(make_timestamp(min(start_ns) // 1000), {RFC3339}),
                    strftime(make_timestamp(max(start_ns) // 1000), {RFC3339}),
                    count(*) FILTER (WHERE status_code = 2)
             FROM spans"
        ),
        [],
        |row| {
            Ok(StoreStats {
                store: location.describe(),
                spans: row.get::<_, i64>(0)? as u64,
                traces: row.get::<_, i64>(1)? as u64,
                services: row.get::<_, i64>(2)? as u64,
                first_span: row.get(3)?,
                last_span: row.get(4)?,
                error_spans: row.get::<_, i64>(5)? as u64,
                schema_version,
                minute_bucket_rows: 0,
                hour_bucket_rows: 0,
                day_bucket_rows: 0,
                first_bucket: None,
                last_bucket: None,
                log_bytes: 0,
                log_unloaded_bytes: 0,
            })
        },
    )?;
    (
        stats.minute_bucket_rows,
        stats.hour_bucket_rows,
        stats.day_bucket_rows,
        stats.first_bucket,
        stats.last_bucket,
    ) = conn.query_row(
        &format!(
            "SELECT count(*) FILTER (WHERE width_s = 60),
                    count(*) FILTER (WHERE width_s = 3600),
                    count(*) FILTER (WHERE width_s = 86400),
                    strftime(make_timestamp(min(bucket_ns) // 1000), {RFC3339}),
                    strftime(make_timestamp(max(bucket_ns) // 1000), {RFC3339})
             FROM edge_buckets"
        ),
        [],
        |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, i64>(2)? as u64,
                row.get(3)?,
                row.get(4)?,
            ))
        },
    )?;
    if let Location::File(path) = location {
        let dir = crate::log::dir_of(path);
        if dir.exists() {
            stats.log_bytes = crate::log::disk_bytes(&dir)?;
            let offset: Option<u64> = conn
                .query_row("SELECT min(log_offset) FROM log_offsets", [], |row| {
                    row.get(0)
                })
                .optional()?;
            let end = crate::log::end(&dir)?.unwrap_or(0);
            stats.log_unloaded_bytes = end.saturating_sub(offset.unwrap_or(0));
        }
    }
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
        )?;
        writeln!(
            f,
            "buckets      {} minute rows, {} hour rows, {} day rows, {} .. {}",
            self.minute_bucket_rows,
            self.hour_bucket_rows,
            self.day_bucket_rows,
            self.first_bucket.as_ref().unwrap_or(&none),
            self.last_bucket.as_ref().unwrap_or(&none)
        )?;
        writeln!(
            f,
            "request log  {} bytes on disk, {} not yet stored and derived",
            self.log_bytes, self.log_unloaded_bytes
        )
    }
}
