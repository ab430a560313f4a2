//! The tables archtrace owns in ClickHouse: the derived buckets, as in DuckDB, plus which
//! worker derived each row from which window, and each worker's progress.
//!
//! Bucket tables are `ReplacingMergeTree`s keyed by bucket, names, worker and window, with the
//! derivation time as version: deriving a window again replaces its rows instead of adding to
//! them, and readers use `FINAL`. A window's rows live beside other windows' rows for the same
//! bucket (a trace assigned to one window may call into the next minute), and are summed at
//! read time. Latency sketches are kept as their bucket indexes and counts (fixed boundaries),
//! which `sumMap` sums in SQL.

use crate::{Connection, Error};

const BUCKET_TABLES: [&str; 8] = [
    "edge_buckets",
    "operation_buckets",
    "node_buckets",
    "entry_buckets",
    "diagnostic_buckets",
    "critical_path_buckets",
    "release_buckets",
    "edge_release_buckets",
];

/// Columns every bucket table starts with, and those its key ends with.
const BUCKET_COLUMNS: &str = "bucket_ns Int64, width_s UInt32, worker LowCardinality(String), \
                              window_ns Int64, version UInt64";

/// Sampling columns, with the defaults rows written before them read as.
const ESTIMATED_CALLS: &str = "estimated_calls Float64 DEFAULT toFloat64(calls)";
const NODE_SPANS_WITHOUT_SAMPLING: &str = "spans_without_sampling UInt64 DEFAULT 0";
const DIAGNOSTIC_SPANS_WITHOUT_SAMPLING: &str = "spans_without_sampling UInt64 DEFAULT spans";

/// Resilience columns (retries, fallbacks, what failed calls waited; an entry's duration),
/// read as none seen in rows written before them.
const EDGE_RESILIENCE: [&str; 7] = [
    "retries UInt64 DEFAULT 0",
    "max_attempts UInt64 DEFAULT 0",
    "fallbacks UInt64 DEFAULT 0",
    "error_zeros UInt64 DEFAULT 0",
    "error_max_ns Int64 DEFAULT 0",
    "error_index Array(Int32) DEFAULT []",
    "error_counts Array(UInt64) DEFAULT []",
];
const OPERATION_RESILIENCE: [&str; 2] = ["retries UInt64 DEFAULT 0", "fallbacks UInt64 DEFAULT 0"];
/// When operation pairs and nodes were seen first and last; older rows read as their
/// bucket's start (operations) or unknown (nodes).
const OPERATION_SEEN: [&str; 2] = [
    "first_seen_ns Int64 DEFAULT bucket_ns",
    "last_seen_ns Int64 DEFAULT bucket_ns",
];
const NODE_SEEN: [&str; 2] = [
    "first_seen_ns Nullable(Int64) DEFAULT NULL",
    "last_seen_ns Nullable(Int64) DEFAULT NULL",
];
const ENTRY_LATENCY: [&str; 4] = [
    "latency_zeros UInt64 DEFAULT 0",
    "latency_max_ns Int64 DEFAULT 0",
    "latency_index Array(Int32) DEFAULT []",
    "latency_counts Array(UInt64) DEFAULT []",
];

fn bucket_table(name: &str, columns: &str, key: &str, retention_days: u32) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} ({BUCKET_COLUMNS}, {columns})
         ENGINE = ReplacingMergeTree(version)
         PARTITION BY toDate(toDateTime(intDiv(bucket_ns, 1000000000)))
         ORDER BY (width_s, bucket_ns, {key} worker, window_ns)
         TTL toDateTime(intDiv(bucket_ns, 1000000000)) + INTERVAL {retention_days} DAY"
    )
}

fn statements(retention_days: u32) -> Vec<String> {
    let sketch = |prefix: &str| {
        format!(
            "{prefix}_zeros UInt64, {prefix}_max_ns Int64, {prefix}_index Array(Int32), \
             {prefix}_counts Array(UInt64)"
        )
    };
    vec![
        bucket_table(
            "edge_buckets",
            &format!(
                "source String, target String, kind LowCardinality(String), calls UInt64, \
                 errors UInt64, traces UInt64, max_calls_per_trace UInt64, {}, {}, \
                 first_seen_ns Int64, last_seen_ns Int64, {ESTIMATED_CALLS}, {}",
                sketch("latency"),
                sketch("server"),
                EDGE_RESILIENCE.join(", ")
            ),
            "source, target, kind,",
            retention_days,
        ),
        bucket_table(
            "operation_buckets",
            &format!(
                "from_service String, from_operation String, to_service String, \
                 to_operation String, calls UInt64, errors UInt64, {}, {}, {}",
                sketch("latency"),
                OPERATION_RESILIENCE.join(", "),
                OPERATION_SEEN.join(", ")
            ),
            "from_service, from_operation, to_service, to_operation,",
            retention_days,
        ),
        bucket_table(
            "node_buckets",
            &format!(
                "node String, reports_spans UInt8, peer_types Array(LowCardinality(String)), \
                 entry_point UInt8, {NODE_SPANS_WITHOUT_SAMPLING}, {}",
                NODE_SEEN.join(", ")
            ),
            "node,",
            retention_days,
        ),
        bucket_table(
            "entry_buckets",
            &format!(
                "service String, operation String, traces UInt64, \
                 sync_depth_values Array(UInt32), sync_depth_counts Array(UInt64), \
                 services_values Array(UInt32), services_counts Array(UInt64), {}",
                ENTRY_LATENCY.join(", ")
            ),
            "service, operation,",
            retention_days,
        ),
        bucket_table(
            "critical_path_buckets",
            &format!(
                "service String, operation String, path_service String, traces UInt64, \
                 total_ns Int64, {}",
                sketch("time")
            ),
            "service, operation, path_service,",
            retention_days,
        ),
        bucket_table(
            "diagnostic_buckets",
            &format!(
                "spans UInt64, traces UInt64, observations UInt64, orphaned_spans UInt64, \
                 unresolved_client_spans UInt64, late_spans_paired UInt64, \
                 late_spans_dropped UInt64, traces_cut_short UInt64, \
                 span_min_ns Nullable(Int64), span_max_ns Nullable(Int64), \
                 {DIAGNOSTIC_SPANS_WITHOUT_SAMPLING}"
            ),
            "",
            retention_days,
        ),
        bucket_table(
            "release_buckets",
            "node String, release String, first_seen_ns Int64, last_seen_ns Int64, spans UInt64",
            "node, release,",
            retention_days,
        ),
        bucket_table(
            "edge_release_buckets",
            "source String, target String, kind LowCardinality(String), from_release String, \
             to_release String, first_seen_ns Int64, last_seen_ns Int64, calls UInt64",
            "source, target, kind, from_release, to_release,",
            retention_days,
        ),
        // Tables made before archtrace estimated sampled calls gain the columns; their rows
        // read as unsampled through the defaults.
        format!("ALTER TABLE edge_buckets ADD COLUMN IF NOT EXISTS {ESTIMATED_CALLS}"),
        format!("ALTER TABLE node_buckets ADD COLUMN IF NOT EXISTS {NODE_SPANS_WITHOUT_SAMPLING}"),
        format!(
            "ALTER TABLE diagnostic_buckets ADD COLUMN IF NOT EXISTS \
             {DIAGNOSTIC_SPANS_WITHOUT_SAMPLING}"
        ),
    ]
    .into_iter()
    .chain(
        EDGE_RESILIENCE
            .iter()
            .map(|column| format!("ALTER TABLE edge_buckets ADD COLUMN IF NOT EXISTS {column}")),
    )
    .chain(
        ENTRY_LATENCY
            .iter()
            .map(|column| format!("ALTER TABLE entry_buckets ADD COLUMN IF NOT EXISTS {column}")),
    )
    .chain(
        OPERATION_RESILIENCE
            .iter()
            .chain(&OPERATION_SEEN)
            .map(|column| {
                format!("ALTER TABLE operation_buckets ADD COLUMN IF NOT EXISTS {column}")
            }),
    )
    .chain(
        NODE_SEEN
            .iter()
            .map(|column| format!("ALTER TABLE node_buckets ADD COLUMN IF NOT EXISTS {column}")),
    )
    .chain([
        // Each worker's watermark: every window before it is derived.
        "CREATE TABLE IF NOT EXISTS progress (worker String, watermark_ns Int64, version UInt64)
         ENGINE = ReplacingMergeTree(version) ORDER BY worker"
            .to_owned(),
    ])
    .collect()
}

/// Creates the database and the tables that are missing; buckets are kept `retention_days`.
pub fn ensure(conn: &Connection, retention_days: u32) -> Result<(), Error> {
    let database = &conn.endpoint().database;
    let server = conn.client().clone().with_database("default");
    conn.run(
        "create the database",
        server
            .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
            .execute(),
    )?;
    for statement in statements(retention_days) {
        conn.execute("create archtrace's tables", &statement)?;
    }
    Ok(())
}

/// Fails with the fix when the database has no archtrace tables (a reader pointed at the wrong
/// database, or before any worker ran).
pub fn require(conn: &Connection) -> Result<(), Error> {
    let found: u64 = conn.run(
        "list archtrace's tables",
        conn.client()
            .query(
                "SELECT count() FROM system.tables
                 WHERE database = currentDatabase() AND name IN ?",
            )
            .bind(BUCKET_TABLES)
            .fetch_one(),
    )?;
    if found < BUCKET_TABLES.len() as u64 {
        return Err(Error::NoTables {
            endpoint: conn.endpoint().url.clone(),
            database: conn.endpoint().database.clone(),
        });
    }
    Ok(())
}

pub(crate) fn bucket_tables() -> &'static [&'static str] {
    &BUCKET_TABLES
}
