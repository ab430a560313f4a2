//! Retention: what is older than a bound is deleted in small transactions (an hour of span time,
//! a day of buckets), oldest first, so that a server prunes while it serves without long locks
//! or large undo.

use duckdb::{params, Connection};

use crate::buckets::{BUCKET_TABLES, HOUR_NS};
use crate::QueryError;

/// A connection of its own that deletes what is past retention.
pub struct Pruner {
    conn: Connection,
}

/// What one pruning deleted, and in how many transactions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub spans: u64,
    pub bucket_rows: u64,
    pub transactions: u64,
}

impl Pruner {
    pub(crate) fn new(conn: Connection) -> Pruner {
        Pruner { conn }
    }

    /// Deletes the spans that started before `cutoff_ns`, one hour of span time per
    /// transaction; hours with no spans are skipped.
    pub fn prune_spans(&self, cutoff_ns: i64, pruned: &mut Pruned) -> Result<(), QueryError> {
        let mut from = i64::MIN;
        loop {
            let next: Option<i64> = self.conn.query_row(
                "SELECT min(start_ns) FROM spans WHERE start_ns >= ? AND start_ns < ?",
                params![from, cutoff_ns],
                |row| row.get(0),
            )?;
            let Some(start) = next else { return Ok(()) };
            let until = start.saturating_add(HOUR_NS).min(cutoff_ns);
            pruned.spans += self.conn.execute(
                "DELETE FROM spans WHERE start_ns >= ? AND start_ns < ?",
                params![start, until],
            )? as u64;
            pruned.transactions += 1;
            from = until;
        }
    }

    /// Deletes the derived buckets that ended before `cutoff_ns`, one day of buckets per
    /// transaction.
    pub fn prune_buckets(&self, cutoff_ns: i64, pruned: &mut Pruned) -> Result<(), QueryError> {
        let day = 24 * HOUR_NS;
        let mut from = i64::MIN;
        loop {
            // A bucket of width w that starts before cutoff - w has ended before the cutoff.
            let next: Option<i64> = self.conn.query_row(
                "SELECT min(bucket_ns) FROM edge_buckets WHERE bucket_ns >= ? AND bucket_ns + width_s::BIGINT * 1000000000 <= ?",
                params![from, cutoff_ns],
                |row| row.get(0),
            )?;
            let Some(start) = next else {
                return self.prune_orphan_buckets(from, cutoff_ns, pruned);
            };
            let until = start.saturating_add(day);
            self.conn.execute_batch("BEGIN TRANSACTION")?;
            let outcome = (|| {
                for table in BUCKET_TABLES {
                    pruned.bucket_rows += self.conn.execute(
                        &format!("DELETE FROM {table} WHERE bucket_ns >= ? AND bucket_ns < ? AND bucket_ns + width_s::BIGINT * 1000000000 <= ?"),
                        params![start, until, cutoff_ns],
                    )? as u64;
                }
                self.conn.execute_batch("COMMIT")
            })();
            if let Err(err) = outcome {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(err.into());
            }
            pruned.transactions += 1;
            from = until;
        }
    }

    /// Buckets of the other tables in a time with no edge buckets (diagnostics of traces with
    /// no edges, say), from `from` on, in one transaction.
    fn prune_orphan_buckets(
        &self,
        from: i64,
        cutoff_ns: i64,
        pruned: &mut Pruned,
    ) -> Result<(), QueryError> {
        let mut deleted = 0;
        for table in &BUCKET_TABLES[1..] {
            deleted += self.conn.execute(
                &format!("DELETE FROM {table} WHERE bucket_ns >= ? AND bucket_ns + width_s::BIGINT * 1000000000 <= ?"),
                params![from, cutoff_ns],
            )? as u64;
        }
        if deleted > 0 {
            pruned.bucket_rows += deleted;
            pruned.transactions += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::MINUTE_NS;
    use crate::{Location, Store};
    use archtrace_analyzer::aggregate::{Aggregate, Buckets, EdgeKey, EdgeStats};
    use archtrace_analyzer::derive::EdgeKind;
    use archtrace_analyzer::{Span, SpanKind};

    fn count(store: &Store, sql: &str) -> i64 {
        store.connection().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn only_what_is_older_than_the_bound_goes_an_hour_at_a_time() {
        let mut store = Store::open(&Location::Memory).unwrap();
        let now = 1_000 * HOUR_NS;
        // One span every 10 minutes over the last 5 hours.
        let spans: Vec<Span> = (0..30u8)
            .map(|i| {
                let start = now - 5 * HOUR_NS + i64::from(i) * 10 * MINUTE_NS;
                Span::new([i + 1; 16], [i + 1; 8], "svc", SpanKind::Server)
                    .with_time(start, start + 1)
            })
            .collect();
        store.append(&spans.iter().collect::<Vec<_>>()).unwrap();
        let mut minutes = Buckets::new(MINUTE_NS);
        for m in 0..300 {
            let mut bucket = Aggregate::default();
            bucket.edges.insert(
                EdgeKey {
                    from: "a".into(),
                    to: "b".into(),
                    kind: EdgeKind::Sync,
                },
                EdgeStats {
                    calls: 1,
                    ..EdgeStats::default()
                },
            );
            minutes
                .buckets
                .insert(now - 5 * HOUR_NS + m * MINUTE_NS, bucket);
        }
        store.bucket_writer().unwrap().write(&minutes).unwrap();

        let pruner = store.pruner().unwrap();
        let mut pruned = Pruned::default();
        let cutoff = now - 2 * HOUR_NS - 5 * MINUTE_NS;
        pruner.prune_spans(cutoff, &mut pruned).unwrap();
        // Spans at -5h .. -2h10m: 18 of them, in the three hours they span.
        assert_eq!(pruned.spans, 18);
        assert_eq!(pruned.transactions, 3);
        assert_eq!(count(&store, "SELECT count(*) FROM spans"), 12);
        let oldest: i64 = count(&store, "SELECT min(start_ns) FROM spans");
        assert!(oldest >= cutoff);

        pruner.prune_buckets(cutoff, &mut pruned).unwrap();
        // Minute buckets that ended by the cutoff: 175 of them, each an edge row and a
        // diagnostics row.
        assert_eq!(pruned.bucket_rows, 2 * 175);
        assert_eq!(count(&store, "SELECT count(*) FROM edge_buckets"), 125);
        assert_eq!(
            count(&store, "SELECT count(*) FROM diagnostic_buckets"),
            125
        );
        let oldest: i64 = count(&store, "SELECT min(bucket_ns) FROM edge_buckets");
        // The cutoff is 125 minutes ago: the bucket starting there has not ended and stays.
        assert_eq!(oldest, cutoff);
        // Nothing is left to prune.
        let mut again = Pruned::default();
        pruner.prune_spans(cutoff, &mut again).unwrap();
        pruner.prune_buckets(cutoff, &mut again).unwrap();
        assert_eq!(again, Pruned::default());
    }
}
