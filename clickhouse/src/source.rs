//! Snapshots and series from the buckets derive workers wrote to ClickHouse: the same windows,
//! merged the same way as from DuckDB, summed by the engine.

use archtrace_analyzer::history::Periods;
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_query::series::{self, Point};
use archtrace_query::{QueryError, SnapshotSource, Window};

use crate::{buckets, schema, Connection, Endpoint, Error};

pub struct ClickHouseSource {
    conn: Connection,
}

impl ClickHouseSource {
    /// Connects and checks that a worker has created archtrace's tables there.
    pub fn open(endpoint: &Endpoint) -> Result<ClickHouseSource, Error> {
        let conn = Connection::open(endpoint)?;
        schema::require(&conn)?;
        Ok(ClickHouseSource { conn })
    }
}

const NO_ENVIRONMENTS: &str = "buckets are not kept per environment, and ClickHouse buckets \
     cannot be derived again here: leave out the environment, or derive the environment's \
     traces from files (--traces)";

impl SnapshotSource for ClickHouseSource {
    fn snapshot(&self, window: &Window) -> Result<Snapshot, QueryError> {
        if window.environment.is_some() {
            return Err(QueryError::Unsupported(NO_ENVIRONMENTS));
        }
        let aggregate = buckets::read_window(&self.conn, window.since_ns, window.until_ns)?;
        Ok(Snapshot::from_aggregate(
            &aggregate,
            (window.since_ns, window.until_ns),
        ))
    }

    fn periods(&self, since_ns: i64, until_ns: i64, step_ns: i64) -> Result<Periods, QueryError> {
        let mut periods = Periods::default();
        buckets::read_steps(
            &self.conn,
            since_ns,
            until_ns,
            step_ns,
            &mut |start, aggregate| {
                if !aggregate.edges.is_empty() || !aggregate.nodes.is_empty() {
                    periods.add_aggregate(start, aggregate);
                }
            },
        )?;
        Ok(periods)
    }

    fn series(&self, service: &str, window: &Window) -> Result<Vec<Point>, QueryError> {
        if window.environment.is_some() {
            return Err(QueryError::Unsupported(NO_ENVIRONMENTS));
        }
        let width = series::bucket_width(window);
        let first = window.since_ns.div_euclid(width) * width;
        let rows = buckets::node_edges(&self.conn, width, first, window.until_ns, service)?;
        Ok(series::series(
            service,
            rows.iter().map(|(start, key, stats)| (*start, key, stats)),
        ))
    }

    fn environments(&self) -> Result<Vec<String>, QueryError> {
        // Buckets hold no environments; the viewer then offers no filter.
        Ok(Vec::new())
    }

    fn rebuild(&self, _since_ns: i64, _until_ns: i64) -> Result<u64, QueryError> {
        Err(QueryError::Unsupported(
            "ClickHouse buckets are derived by workers: run `archtrace derive --from ... \
             --store ... --since ... --until ...` to derive a window again",
        ))
    }

    fn describe(&self) -> String {
        format!("from ClickHouse {}", self.conn.endpoint().describe())
    }
}
