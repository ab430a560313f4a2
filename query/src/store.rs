//! Snapshots and series from a store: the derived buckets of a window, plus those a running
//! server still holds in memory; for one environment, derived again from the raw spans of that
//! environment's traces.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::derive::NoLookup;
use archtrace_analyzer::history::{MissingVersions, Periods};
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_analyzer::Span;
use archtrace_store::buckets::{step_width, BucketWriter, Releases, HOUR_NS, MINUTE_NS};
use archtrace_store::read::Reader;
use archtrace_store::Store;

use crate::series::{self, Point};
use crate::{QueryError, SnapshotSource, Unwritten, Window};

pub struct StoreSource {
    /// Queries run one at a time on this connection.
    reader: Mutex<Reader>,
    /// What a running server has derived and not yet written.
    unwritten: Option<Arc<Mutex<Unwritten>>>,
    /// For rebuilds; `None` beside a running server, whose deriver writes buckets.
    writer: Option<Mutex<BucketWriter>>,
    description: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl StoreSource {
    /// Reads (and rebuilds) a store no server is running on.
    pub fn open(store: &Store) -> Result<StoreSource, QueryError> {
        Ok(StoreSource {
            reader: Mutex::new(store.reader()?),
            unwritten: None,
            writer: Some(Mutex::new(store.bucket_writer()?)),
            description: format!("from {}", store.location().describe()),
        })
    }

    /// The store of a running server, with the buckets its deriver still holds.
    pub fn live(reader: Reader, unwritten: Arc<Mutex<Unwritten>>) -> StoreSource {
        StoreSource {
            reader: Mutex::new(reader),
            unwritten: Some(unwritten),
            writer: None,
            description: "from the running server's store".to_owned(),
        }
    }

    /// The earliest and latest span start in the store, to tell a user where the data is.
    pub fn span_time_range(&self) -> Result<Option<(i64, i64)>, QueryError> {
        Ok(lock(&self.reader).span_time_range()?)
    }

    /// Calls `each` with every trace of the window that has a span of the window's environment
    /// (every trace when it names none).
    fn for_each_trace(
        &self,
        window: &Window,
        each: &mut dyn FnMut(&[Span]),
    ) -> Result<(), QueryError> {
        let environment = window.environment.as_deref();
        lock(&self.reader).for_each_trace(window.since_ns, window.until_ns, &mut |spans| {
            if environment
                .is_none_or(|env| spans.iter().any(|s| s.environment.as_deref() == Some(env)))
            {
                each(spans);
            }
        })?;
        Ok(())
    }
}

impl StoreSource {
    fn snapshot_with(&self, window: &Window, releases: Releases) -> Result<Snapshot, QueryError> {
        let aggregate = if window.environment.is_some() {
            // Buckets are not kept per environment: the environment's traces are derived again.
            let mut aggregate = Aggregate::default();
            let mut scratch = Vec::new();
            self.for_each_trace(window, &mut |spans| {
                aggregate.add_trace(spans, &NoLookup, &mut scratch);
            })?;
            aggregate
        } else {
            // Held across the store's read: the server moves closed buckets from memory to the
            // store under this lock, so each is read from exactly one of them.
            let held = self.unwritten.as_deref().map(lock);
            let mut aggregate =
                lock(&self.reader).read_window(window.since_ns, window.until_ns, releases)?;
            if let Some(held) = &held {
                held.merge_window(window.since_ns, window.until_ns, &mut aggregate);
            }
            aggregate
        };
        Ok(Snapshot::from_aggregate(
            &aggregate,
            (window.since_ns, window.until_ns),
        ))
    }
}

impl SnapshotSource for StoreSource {
    fn snapshot(&self, window: &Window) -> Result<Snapshot, QueryError> {
        self.snapshot_with(window, Releases::Read)
    }

    fn snapshot_without_releases(&self, window: &Window) -> Result<Snapshot, QueryError> {
        self.snapshot_with(window, Releases::Skipped)
    }

    fn periods(&self, since_ns: i64, until_ns: i64, step_ns: i64) -> Result<Periods, QueryError> {
        // As in `snapshot`: memory and store are read under one lock. The buckets held are the
        // last minutes and hours only, summed per step before the store's are read.
        let held = self.unwritten.as_deref().map(lock);
        let step_of = |start: i64| since_ns + (start - since_ns).div_euclid(step_ns) * step_ns;
        let mut unwritten: BTreeMap<i64, Aggregate> = BTreeMap::new();
        if let Some(held) = &held {
            for (start, aggregate) in held.buckets_of_width(step_width(step_ns), since_ns, until_ns)
            {
                unwritten
                    .entry(step_of(start))
                    .or_default()
                    .merge(aggregate);
            }
        }
        // Steps with buckets held are read whole, to be summed with them; those before as
        // figures.
        let first_held = unwritten
            .keys()
            .next()
            .map_or(until_ns, |start| (*start).max(since_ns));
        // On a connection of its own: history analyses slices of the window on the shared one
        // meanwhile.
        let reader = lock(&self.reader).try_clone()?;
        let mut periods = Periods::default();
        reader.read_periods(step_ns, since_ns, first_held, &mut periods)?;
        reader.read_steps(
            step_ns,
            first_held,
            until_ns,
            &mut |start, mut aggregate| {
                if let Some(held) = unwritten.remove(&start) {
                    aggregate.merge(&held);
                }
                periods.add_aggregate(start, &aggregate);
            },
        )?;
        for (start, aggregate) in &unwritten {
            periods.add_aggregate(*start, aggregate);
        }
        Ok(periods)
    }

    fn fill_versions(
        &self,
        step_ns: i64,
        periods: &mut Periods,
        missing: &MissingVersions,
    ) -> Result<(), QueryError> {
        Ok(lock(&self.reader).read_period_versions(step_ns, periods, missing)?)
    }

    fn series(&self, service: &str, window: &Window) -> Result<Vec<Point>, QueryError> {
        let width = series::bucket_width(window);
        let first = window.since_ns.div_euclid(width) * width;
        if window.environment.is_some() {
            let mut buckets = Buckets::new(width);
            let mut scratch = Vec::new();
            self.for_each_trace(window, &mut |spans| {
                buckets.add_trace(spans, &NoLookup, &mut scratch);
            })?;
            return Ok(series::series_of_buckets(
                service,
                buckets
                    .buckets
                    .iter()
                    .map(|(start, bucket)| (*start, bucket)),
            ));
        }
        // As in `snapshot`: memory and store are read under one lock.
        let unwritten = self.unwritten.as_deref().map(lock);
        let stored = lock(&self.reader).node_edges(width, first, window.until_ns, service)?;
        let stored = stored.iter().map(|(start, k, s)| (*start, k, s));
        let Some(unwritten) = unwritten else {
            return Ok(series::series(service, stored));
        };
        let held = unwritten
            .buckets_of_width(width, first, window.until_ns)
            .flat_map(|(start, aggregate)| aggregate.edges.iter().map(move |(k, s)| (start, k, s)));
        Ok(series::series(service, stored.chain(held)))
    }

    fn environments(&self) -> Result<Vec<String>, QueryError> {
        Ok(lock(&self.reader).environments()?)
    }

    fn rebuild(&self, since_ns: i64, until_ns: i64) -> Result<u64, QueryError> {
        let Some(writer) = &self.writer else {
            return Err(QueryError::Unsupported(
                "a running server derives its own buckets: stop it before `archtrace rebuild`",
            ));
        };
        // Whole hours, so that hour buckets are replaced whole.
        let start = since_ns.div_euclid(HOUR_NS) * HOUR_NS;
        let end = until_ns.saturating_add(HOUR_NS - 1).div_euclid(HOUR_NS) * HOUR_NS;
        let mut minute = Buckets::new(MINUTE_NS);
        let mut hour = Buckets::new(HOUR_NS);
        let mut scratch = Vec::new();
        let mut traces = 0;
        lock(&self.reader).for_each_trace(start, end, &mut |spans| {
            traces += 1;
            Buckets::add_trace_to_all(
                &mut [&mut minute, &mut hour],
                spans,
                &NoLookup,
                &mut scratch,
            );
        })?;
        // A trace crossing the range's edge also adds to buckets outside it; `replace` keeps
        // only the range, so those buckets keep what they had.
        let writer = lock(writer);
        writer.replace(start, end, &[&minute, &hour])?;
        // Replacing undid the roll-up of the days it touched, and no server is running to roll
        // them up again: without it, long windows would read these days hour by hour.
        writer.roll_up_days(archtrace_analyzer::time::now_ns())?;
        Ok(traces)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
