//! The latency histograms of the write path (request log fsync, store commits), exposed on
//! `/metrics` through prometheus-client.

use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the buckets, in seconds.
pub const BOUNDS_SECONDS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A histogram over [`BOUNDS_SECONDS`]; clones share their counts.
#[derive(Clone, Debug)]
pub struct LatencyHistogram(pub Histogram);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Histogram::new(BOUNDS_SECONDS))
    }
}

impl LatencyHistogram {
    pub fn observe(&self, seconds: f64) {
        self.0.observe(seconds);
    }
}
