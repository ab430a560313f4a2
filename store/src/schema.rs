//! The versioned schema. Each migration moves the store from version N-1 to N in one
//! transaction; a store is never left half-migrated.

use duckdb::{Connection, OptionalExt};

use crate::OpenError;

/// One SQL script per version; index 0 creates version 1.
const MIGRATIONS: &[&str] = &[
    // v1: raw spans. The columns named after attributes are the ones the edge derivation reads;
    // everything else a span carried is kept in the JSON columns.
    "CREATE TABLE spans (
        trace_id VARCHAR NOT NULL,          -- 32 lowercase hex digits
        span_id VARCHAR NOT NULL,           -- 16 lowercase hex digits
        parent_span_id VARCHAR,             -- NULL for a root span
        trace_state VARCHAR,
        service_name VARCHAR NOT NULL,      -- 'namespace/name' when service.namespace is set
        span_name VARCHAR NOT NULL,
        span_kind VARCHAR NOT NULL,         -- unspecified|internal|server|client|producer|consumer
        start_ns BIGINT NOT NULL,           -- Unix epoch nanoseconds
        end_ns BIGINT NOT NULL,
        status_code VARCHAR NOT NULL,       -- unset|ok|error
        status_message VARCHAR,
        peer_service VARCHAR,
        server_address VARCHAR,
        server_port BIGINT,
        network_peer_address VARCHAR,
        network_peer_port BIGINT,
        net_peer_name VARCHAR,
        net_sock_peer_addr VARCHAR,
        db_system VARCHAR,
        db_system_name VARCHAR,
        db_namespace VARCHAR,
        db_name VARCHAR,
        messaging_system VARCHAR,
        messaging_destination_name VARCHAR,
        rpc_service VARCHAR,
        http_route VARCHAR,
        http_method VARCHAR,
        environment VARCHAR,                -- deployment.environment.name of the resource
        scope_name VARCHAR,
        scope_version VARCHAR,
        attributes VARCHAR NOT NULL,        -- JSON object: the span attributes not in a column above
        resource_id UBIGINT NOT NULL,       -- the resource (process) that reported it: see resources
        events_count INTEGER NOT NULL,
        links VARCHAR                       -- JSON array of {trace_id, span_id, attributes}, NULL if none
    );
    -- Resource attributes are the same for every span of a process: kept once each.
    CREATE TABLE resources (
        resource_id UBIGINT NOT NULL,       -- FNV-1a 64 of the attributes JSON
        service_name VARCHAR NOT NULL,
        attributes VARCHAR NOT NULL         -- JSON object: all resource attributes
    );",
    // v2: derived edges in time buckets (width_s 60 or 3600), summed at query time. Every
    // observation is written once at each width; late ones add rows to a bucket.
    "CREATE TABLE edge_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        source VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,              -- sync|async
        calls UBIGINT NOT NULL,
        errors UBIGINT NOT NULL,
        traces UBIGINT NOT NULL,
        max_calls_per_trace UBIGINT NOT NULL,
        latency BLOB NOT NULL,              -- latency sketch (analyzer::sketch), client side
        server_latency BLOB NOT NULL,
        first_seen_ns BIGINT NOT NULL,
        last_seen_ns BIGINT NOT NULL
    );
    CREATE TABLE operation_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        from_service VARCHAR NOT NULL,
        from_operation VARCHAR NOT NULL,
        to_service VARCHAR NOT NULL,
        to_operation VARCHAR NOT NULL,
        calls UBIGINT NOT NULL,
        errors UBIGINT NOT NULL,
        latency BLOB NOT NULL
    );
    CREATE TABLE node_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        node VARCHAR NOT NULL,
        reports_spans BOOLEAN NOT NULL,
        peer_types VARCHAR NOT NULL,        -- comma-separated types rules gave the node
        entry_point BOOLEAN NOT NULL
    );
    CREATE TABLE diagnostic_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        spans UBIGINT NOT NULL,
        traces UBIGINT NOT NULL,
        observations UBIGINT NOT NULL,
        orphaned_spans UBIGINT NOT NULL,
        unresolved_client_spans UBIGINT NOT NULL,
        late_spans_paired UBIGINT NOT NULL,
        late_spans_dropped UBIGINT NOT NULL,
        traces_cut_short UBIGINT NOT NULL,
        span_min_ns BIGINT,
        span_max_ns BIGINT
    );
    CREATE INDEX edge_buckets_time ON edge_buckets (width_s, bucket_ns);",
    // v3: per entry operation, the shape of the traces that started there (histograms as
    // `value:count,...` text: chain depth and services touched are small whole numbers).
    "CREATE TABLE entry_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        service VARCHAR NOT NULL,
        operation VARCHAR NOT NULL,
        traces UBIGINT NOT NULL,
        sync_depth VARCHAR NOT NULL,
        services_touched VARCHAR NOT NULL
    );",
    // v4: how far each consumer of the request log has got, committed with what it wrote.
    "CREATE TABLE log_offsets (
        consumer VARCHAR PRIMARY KEY,
        log_offset UBIGINT NOT NULL         -- bytes into the request log, see store::log
    );",
    // v5: compact spans. Ids as fixed-width binary and integers instead of hex text, kind and
    // status as OTLP's enum numbers: 24.8 instead of 29.3 bytes per span on disk, measured on
    // 2.4M load-generator spans, and no hex to format on append or parse on read.
    "CREATE TABLE spans_v5 (
        trace_id BLOB NOT NULL,             -- the 16 bytes; lower(hex(trace_id)) reads it as hex
        span_id UBIGINT NOT NULL,           -- the 8 bytes big-endian; format('{:016x}', span_id)
        parent_span_id UBIGINT,             -- NULL for a root span
        trace_state VARCHAR,
        service_name VARCHAR NOT NULL,
        span_name VARCHAR NOT NULL,
        span_kind UTINYINT NOT NULL,        -- OTLP SpanKind: 0 unspecified, 1 internal, 2 server,
                                            -- 3 client, 4 producer, 5 consumer
        start_ns BIGINT NOT NULL,
        end_ns BIGINT NOT NULL,
        status_code UTINYINT NOT NULL,      -- OTLP StatusCode: 0 unset, 1 ok, 2 error
        status_message VARCHAR,
        peer_service VARCHAR,
        server_address VARCHAR,
        server_port BIGINT,
        network_peer_address VARCHAR,
        network_peer_port BIGINT,
        net_peer_name VARCHAR,
        net_sock_peer_addr VARCHAR,
        db_system VARCHAR,
        db_system_name VARCHAR,
        db_namespace VARCHAR,
        db_name VARCHAR,
        messaging_system VARCHAR,
        messaging_destination_name VARCHAR,
        rpc_service VARCHAR,
        http_route VARCHAR,
        http_method VARCHAR,
        environment VARCHAR,
        scope_name VARCHAR,
        scope_version VARCHAR,
        attributes VARCHAR NOT NULL,
        resource_id UBIGINT NOT NULL,
        events_count INTEGER NOT NULL,
        links VARCHAR
    );
    INSERT INTO spans_v5 SELECT
        unhex(trace_id), ('0x' || span_id)::UBIGINT, ('0x' || parent_span_id)::UBIGINT,
        trace_state, service_name, span_name,
        CASE span_kind WHEN 'internal' THEN 1 WHEN 'server' THEN 2 WHEN 'client' THEN 3
                       WHEN 'producer' THEN 4 WHEN 'consumer' THEN 5 ELSE 0 END,
        start_ns, end_ns,
        CASE status_code WHEN 'ok' THEN 1 WHEN 'error' THEN 2 ELSE 0 END,
        status_message, peer_service, server_address, server_port, network_peer_address,
        network_peer_port, net_peer_name, net_sock_peer_addr, db_system, db_system_name,
        db_namespace, db_name, messaging_system, messaging_destination_name, rpc_service,
        http_route, http_method, environment, scope_name, scope_version, attributes,
        resource_id, events_count, links
    FROM spans;
    DROP TABLE spans;
    ALTER TABLE spans_v5 RENAME TO spans;
    -- Where a log consumer saved what it held in memory at its offset (the deriver's traces
    -- waiting to be complete and its open buckets): a file in the request log's folder, named
    -- in the same transaction as the offset, so a restart resumes exactly.
    CREATE TABLE consumer_state (
        consumer VARCHAR PRIMARY KEY,
        state_file VARCHAR NOT NULL
    );",
    // v6: sampling. A span's adjusted count (how many spans it stands for; NULL when it told
    // nothing of its sampling), the calls edges stand for, and the spans counted without
    // sampling information. Older rows read as unsampled: estimated calls = calls.
    "ALTER TABLE spans ADD COLUMN adjusted_count DOUBLE;
    ALTER TABLE edge_buckets ADD COLUMN estimated_calls DOUBLE;
    ALTER TABLE node_buckets ADD COLUMN spans_without_sampling UBIGINT;
    ALTER TABLE diagnostic_buckets ADD COLUMN spans_without_sampling UBIGINT;",
    // v7: resilience. A client span's resend count; per edge the retries, the most attempts a
    // call took, the failed calls the caller survived (fallbacks) and what failed calls
    // waited (timeouts); per operation pair its retries and fallbacks; per entry operation its duration and each service's time on its
    // critical path. Older rows read as none seen.
    "ALTER TABLE spans ADD COLUMN resend_count INTEGER;
    ALTER TABLE edge_buckets ADD COLUMN retries UBIGINT;
    ALTER TABLE edge_buckets ADD COLUMN max_attempts UBIGINT;
    ALTER TABLE edge_buckets ADD COLUMN fallbacks UBIGINT;
    ALTER TABLE edge_buckets ADD COLUMN error_latency BLOB;
    ALTER TABLE operation_buckets ADD COLUMN retries UBIGINT;
    ALTER TABLE operation_buckets ADD COLUMN fallbacks UBIGINT;
    ALTER TABLE entry_buckets ADD COLUMN latency BLOB;
    CREATE TABLE critical_path_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        service VARCHAR NOT NULL,           -- the entry operation
        operation VARCHAR NOT NULL,
        path_service VARCHAR NOT NULL,      -- a service on its critical path
        traces UBIGINT NOT NULL,
        total_ns BIGINT NOT NULL,
        time BLOB NOT NULL                  -- latency sketch of its time on the path per trace
    );",
    // v8: history. A span's `service.version`; when each node and operation pair was seen
    // first and last; the releases each node reported and each edge's calls came from (at most
    // analyzer::aggregate::MAX_VERSIONS per bucket); the events already notified. Older rows
    // read as unversioned.
    "ALTER TABLE spans ADD COLUMN service_version VARCHAR;
    ALTER TABLE operation_buckets ADD COLUMN first_seen_ns BIGINT;
    ALTER TABLE operation_buckets ADD COLUMN last_seen_ns BIGINT;
    ALTER TABLE node_buckets ADD COLUMN first_seen_ns BIGINT;
    ALTER TABLE node_buckets ADD COLUMN last_seen_ns BIGINT;
    CREATE TABLE release_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        node VARCHAR NOT NULL,
        release VARCHAR NOT NULL,           -- service.version of the spans it reported
        first_seen_ns BIGINT NOT NULL,
        last_seen_ns BIGINT NOT NULL,
        spans UBIGINT NOT NULL
    );
    CREATE TABLE edge_release_buckets (
        bucket_ns BIGINT NOT NULL,
        width_s INTEGER NOT NULL,
        source VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        from_release VARCHAR NOT NULL,      -- '' when that side reports none
        to_release VARCHAR NOT NULL,
        first_seen_ns BIGINT NOT NULL,
        last_seen_ns BIGINT NOT NULL,
        calls UBIGINT NOT NULL
    );
    -- Architecture events a running server has notified its webhooks of, so that a restart
    -- does not send them again.
    CREATE TABLE notified_events (
        event_key VARCHAR PRIMARY KEY,
        time_ns BIGINT NOT NULL              -- when the event happened
    );",
    // v9: history reads figures, not sketches: each edge row's p99, and per bucket row the
    // sketch of all its calls (the trend's p99). Older rows read their sketches instead.
    "ALTER TABLE edge_buckets ADD COLUMN p99_ns DOUBLE;
    ALTER TABLE diagnostic_buckets ADD COLUMN latency BLOB;",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const META_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS archtrace_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)";

pub fn migrate(conn: &Connection, path: &str) -> Result<(), OpenError> {
    migrate_to(conn, path, SCHEMA_VERSION)
}

/// Migrates up to `target` (tests make files as older builds left them with it).
fn migrate_to(conn: &Connection, path: &str, target: i64) -> Result<(), OpenError> {
    let open_err = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    conn.execute_batch(META_TABLE).map_err(open_err)?;
    let current = read_version(conn).map_err(open_err)?;
    if current > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (index, script) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(current as usize)
    {
        let version = index as i64 + 1;
        let sql = format!(
            "BEGIN TRANSACTION;
             {script}
             INSERT OR REPLACE INTO archtrace_meta VALUES ('schema_version', '{version}');
             COMMIT;"
        );
        if let Err(source) = conn.execute_batch(&sql) {
            // Leave the file at the previous version rather than half-migrated.
            let _ = conn.execute_batch("ROLLBACK");
            return Err(OpenError::Migrate {
                path: path.to_owned(),
                version,
                source,
            });
        }
        tracing::info!(path, version, "migrated store schema");
    }
    Ok(())
}

/// For read-only opens: the schema must be exactly this build's, since a read-only file cannot
/// be migrated.
pub fn check_readable(conn: &Connection, path: &str) -> Result<(), OpenError> {
    let found = read_version(conn).map_err(|source| OpenError::Open {
        path: path.to_owned(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < SCHEMA_VERSION {
        return Err(OpenError::TooOld {
            path: path.to_owned(),
            found,
            current: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// The schema version of the open file (0 for a file archtrace never wrote).
pub fn read_version(conn: &Connection) -> Result<i64, duckdb::Error> {
    let has_meta: i64 = conn.query_row(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'archtrace_meta'",
        [],
        |row| row.get(0),
    )?;
    if has_meta == 0 {
        return Ok(0);
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM archtrace_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(version.and_then(|v| v.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Location, Store};

    /// A store file as an archtrace of schema `version` left it, holding one span (and, from
    /// v2 on, one derived edge bucket).
    fn file_at_version(dir: &std::path::Path, version: i64) -> std::path::PathBuf {
        let path = dir.join(format!("v{version}.duckdb"));
        let conn = Connection::open(&path).unwrap();
        migrate_to(&conn, "test", version).unwrap();
        // Before v5 ids, kind and status were text.
        let (trace_id, span_id, parent, kind, status) = if version < 5 {
            (
                "'0af7651916cd43dd8448eb211c80319c'",
                "'b7ad6b7169203331'",
                "'f0ad6b7169203332'",
                "'server'",
                "'error'",
            )
        } else {
            (
                "unhex('0af7651916cd43dd8448eb211c80319c')",
                "'0xb7ad6b7169203331'::UBIGINT",
                "'0xf0ad6b7169203332'::UBIGINT",
                "2",
                "2",
            )
        };
        conn.execute_batch(&format!(
            "INSERT INTO spans (trace_id, span_id, parent_span_id, service_name, span_name,
                 span_kind, start_ns, end_ns, status_code, attributes, resource_id, events_count)
             VALUES ({trace_id}, {span_id}, {parent}, 'cart', 'GET /cart', {kind},
                 1700000000000000000, 1700000000001000000, {status}, '{{}}', 1, 0);
             INSERT INTO resources VALUES (1, 'cart', '{{}}');"
        ))
        .unwrap();
        if version >= 2 {
            conn.execute_batch(
                "INSERT INTO edge_buckets (bucket_ns, width_s, source, target, kind, calls, errors,
                     traces, max_calls_per_trace, latency, server_latency, first_seen_ns,
                     last_seen_ns)
                 VALUES (1699999980000000000, 60, 'user', 'cart', 'sync', 3, 0, 1, 1, ''::BLOB,
                     ''::BLOB, 1700000000000000000, 1700000000000000000)",
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn files_of_every_older_version_are_migrated_and_keep_their_data() {
        let dir = tempfile::tempdir().unwrap();
        for version in 1..SCHEMA_VERSION {
            let path = file_at_version(dir.path(), version);
            let store = Store::open(&Location::File(path.clone())).unwrap();
            let stats = store.stats().unwrap();
            assert_eq!(stats.schema_version, SCHEMA_VERSION, "from v{version}");
            assert_eq!(stats.spans, 1, "from v{version}");
            let conn = store.connection();
            let count = |table: &str| -> i64 {
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .unwrap()
            };
            assert_eq!(
                count("edge_buckets"),
                i64::from(version >= 2),
                "from v{version}"
            );
            assert_eq!(
                count("entry_buckets"),
                0,
                "v3's table exists after migrating v{version}"
            );
            if version >= 2 {
                // Rows from before v6 knew nothing of sampling: their calls are the estimate.
                let read = crate::buckets::read_window(
                    conn,
                    1_699_999_980_000_000_000,
                    1_700_000_040_000_000_000,
                    crate::buckets::Releases::Read,
                )
                .unwrap();
                let stats = read.edges.values().next().unwrap();
                assert_eq!((stats.calls, stats.estimated_calls), (3, 3.0));
            }
            // v5's compact ids and enums carry the same span.
            let mut spans = Vec::new();
            store
                .reader()
                .unwrap()
                .for_each_trace(i64::MIN, i64::MAX, &mut |trace| {
                    spans.extend(trace.iter().cloned())
                })
                .unwrap();
            assert_eq!(spans.len(), 1, "from v{version}");
            let span = &spans[0];
            assert_eq!(
                hex::encode(span.trace_id),
                "0af7651916cd43dd8448eb211c80319c",
                "from v{version}"
            );
            assert_eq!(hex::encode(span.span_id), "b7ad6b7169203331");
            assert_eq!(
                span.parent_span_id.map(hex::encode).as_deref(),
                Some("f0ad6b7169203332")
            );
            assert_eq!(span.kind, archtrace_analyzer::SpanKind::Server);
            assert_eq!(span.status, archtrace_analyzer::StatusCode::Error);
            assert_eq!(&*span.service, "cart");
            assert_eq!(store.stats().unwrap().error_spans, 1, "from v{version}");
        }
    }

    #[test]
    fn a_current_file_opens_read_only_and_stats_report_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_at_version(dir.path(), SCHEMA_VERSION);
        let store = Store::open_read_only(&path).unwrap();
        assert_eq!(store.stats().unwrap().schema_version, SCHEMA_VERSION);
    }

    #[test]
    fn an_older_file_opened_read_only_says_how_to_migrate_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_at_version(dir.path(), 2);
        let err = Store::open_read_only(&path).err().expect("refused");
        assert!(matches!(err, OpenError::TooOld { found: 2, .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("schema version 2"), "{text}");
        assert!(text.contains("archtrace migrate --db"), "{text}");
        // Nothing was changed by the refused open.
        let conn = Connection::open(&path).unwrap();
        assert_eq!(read_version(&conn).unwrap(), 2);
    }

    #[test]
    fn a_newer_file_is_refused_with_the_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_at_version(dir.path(), SCHEMA_VERSION);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "UPDATE archtrace_meta SET value = '99' WHERE key = 'schema_version'",
            )
            .unwrap();
        }
        for err in [
            Store::open(&Location::File(path.clone())).err(),
            Store::open_read_only(&path).err(),
        ] {
            let err = err.expect("refused");
            assert!(matches!(err, OpenError::TooNew { found: 99, .. }), "{err}");
            assert!(err.to_string().contains("upgrade archtrace"), "{err}");
        }
    }
}
