//! Buckets a running server has derived but not yet written to the store: snapshots merge them
//! with the stored ones, so the live graph is current within the trace idle time.

use archtrace_analyzer::aggregate::{Aggregate, Buckets};
use archtrace_store::buckets;

/// Buckets derived but not yet written, shared with snapshot queries.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Unwritten {
    minute: Option<Buckets>,
    hour: Option<Buckets>,
}

impl Unwritten {
    /// Merges what is still in memory for `[since, until)` into `into`, with the same plan of
    /// widths the store query uses, so nothing is counted twice.
    pub fn merge_window(&self, since_ns: i64, until_ns: i64, into: &mut Aggregate) {
        for (width, from, to) in buckets::plan(since_ns, until_ns) {
            let held = if width == buckets::MINUTE_NS {
                &self.minute
            } else {
                &self.hour
            };
            if let Some(held) = held {
                for (_, bucket) in held.buckets.range(from..to) {
                    into.merge(bucket);
                }
            }
        }
    }

    /// The buckets of one width held in memory that start in `[since, until)`.
    pub fn buckets_of_width(
        &self,
        width_ns: i64,
        since_ns: i64,
        until_ns: i64,
    ) -> impl Iterator<Item = (i64, &Aggregate)> {
        [self.minute.as_ref(), self.hour.as_ref()]
            .into_iter()
            .flatten()
            .filter(move |held| held.width_ns == width_ns)
            .flat_map(move |held| held.buckets.range(since_ns..until_ns.max(since_ns)))
            .map(|(start, aggregate)| (*start, aggregate))
    }

    /// Adds freshly derived buckets to those held.
    pub fn absorb(&mut self, minute: Buckets, hour: Buckets) {
        self.add(minute);
        self.add(hour);
    }

    /// Whether some bucket closed before `closed_before_ns`.
    pub fn has_closed(&self, closed_before_ns: i64) -> bool {
        [self.minute.as_ref(), self.hour.as_ref()]
            .into_iter()
            .flatten()
            .any(|held| {
                held.buckets
                    .keys()
                    .next()
                    .is_some_and(|start| start.saturating_add(held.width_ns) <= closed_before_ns)
            })
    }

    /// Adds buckets of one width: fresh ones, or closed ones put back after a failed write.
    pub fn add(&mut self, buckets: Buckets) {
        let slot = if buckets.width_ns == buckets::MINUTE_NS {
            &mut self.minute
        } else {
            &mut self.hour
        };
        match slot {
            Some(held) => {
                for (start, bucket) in buckets.buckets {
                    held.buckets.entry(start).or_default().merge(&bucket);
                }
            }
            None => *slot = Some(buckets),
        }
    }

    /// Takes the buckets that closed before `closed_before_ns` (all of them with `i64::MAX`).
    pub fn take_closed(&mut self, closed_before_ns: i64) -> Vec<Buckets> {
        let mut out = Vec::new();
        for held in [self.minute.as_mut(), self.hour.as_mut()]
            .into_iter()
            .flatten()
        {
            let width = held.width_ns;
            let closed: Vec<i64> = held
                .buckets
                .keys()
                .copied()
                .take_while(|start| start.saturating_add(width) <= closed_before_ns)
                .collect();
            let mut taken = Buckets::new(width);
            for start in closed {
                if let Some(bucket) = held.buckets.remove(&start) {
                    taken.buckets.insert(start, bucket);
                }
            }
            if !taken.buckets.is_empty() {
                out.push(taken);
            }
        }
        out
    }
}
