//! The web viewer's data from a running server: snapshots and per-service series from the
//! derived buckets (plus those still in memory), or, for one environment, derived again from the
//! raw spans of that environment's traces.

use std::sync::{Arc, Mutex};

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_analyzer::derive::NoLookup;
use archtrace_analyzer::snapshot::Snapshot;
use archtrace_store::buckets::{HOUR_NS, MINUTE_NS};
use archtrace_store::read::Reader;
use archtrace_web::charts::{self, Point};
use archtrace_web::server::{Source, Window};

use crate::live::Unwritten;

pub struct StoreSource {
    pub reader: Arc<Mutex<Reader>>,
    pub unwritten: Arc<Mutex<Unwritten>>,
    pub baseline: Option<Arc<Snapshot>>,
}

/// Minute buckets up to three hours (at most 180 points), hour buckets beyond.
fn series_width(window: &Window) -> i64 {
    if window.until_ns - window.since_ns <= 3 * HOUR_NS {
        MINUTE_NS
    } else {
        HOUR_NS
    }
}

impl StoreSource {
    fn reader(&self) -> std::sync::MutexGuard<'_, Reader> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `each` with every trace of the window that has a span of `environment`.
    fn for_each_trace_of(
        &self,
        window: &Window,
        environment: &str,
        each: &mut dyn FnMut(&[archtrace_analyzer::Span]),
    ) -> Result<(), String> {
        self.reader()
            .for_each_trace(window.since_ns, window.until_ns, &mut |spans| {
                if spans
                    .iter()
                    .any(|s| s.environment.as_deref() == Some(environment))
                {
                    each(spans);
                }
            })
            .map_err(|e| e.to_string())
    }
}

impl Source for StoreSource {
    fn snapshot(&self, window: &Window) -> Result<Snapshot, String> {
        let range = (window.since_ns, window.until_ns);
        let aggregate = match &window.environment {
            Some(environment) => {
                let mut aggregate = Aggregate::default();
                let mut scratch = Vec::new();
                self.for_each_trace_of(window, environment, &mut |spans| {
                    aggregate.add_trace(spans, &NoLookup, &mut scratch);
                })?;
                aggregate
            }
            None => {
                let mut aggregate = self
                    .reader()
                    .read_window(range.0, range.1)
                    .map_err(|e| e.to_string())?;
                self.unwritten
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .merge_window(range.0, range.1, &mut aggregate);
                aggregate
            }
        };
        Ok(Snapshot::from_aggregate(&aggregate, range))
    }

    fn series(&self, service: &str, window: &Window) -> Result<Vec<Point>, String> {
        let width = series_width(window);
        let first = window.since_ns.div_euclid(width) * width;
        if let Some(environment) = &window.environment {
            // The environment's traces, derived again from their spans into buckets.
            let mut buckets = Buckets::new(width);
            let mut scratch = Vec::new();
            self.for_each_trace_of(window, environment, &mut |spans| {
                buckets.add_trace(spans, &NoLookup, &mut scratch);
            })?;
            return Ok(charts::series_of_buckets(
                service,
                buckets
                    .buckets
                    .iter()
                    .map(|(start, bucket)| (*start, bucket)),
            ));
        }
        let stored = self
            .reader()
            .node_edges(width, first, window.until_ns, service)
            .map_err(|e| e.to_string())?;
        let unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        let held = unwritten.buckets_of_width(width, first, window.until_ns);
        Ok(charts::series(
            service,
            stored
                .iter()
                .map(|(start, k, s)| (*start, k, s))
                .chain(held.flat_map(|(start, aggregate)| {
                    aggregate.edges.iter().map(move |(k, s)| (start, k, s))
                })),
        ))
    }

    fn environments(&self) -> Vec<String> {
        self.reader().environments().unwrap_or_default()
    }

    fn baseline(&self) -> Option<Arc<Snapshot>> {
        self.baseline.clone()
    }
}
