//! A service's traffic over a window, per time bucket: what the charts draw.

use std::collections::BTreeMap;

use archtrace_analyzer::aggregate::{Aggregate, EdgeKey, EdgeStats};
use archtrace_analyzer::sketch::LatencySketch;
use archtrace_store::buckets::{HOUR_NS, MINUTE_NS};

use crate::window::Window;

/// Minute buckets up to three hours (at most 180 points), hour buckets beyond.
pub fn bucket_width(window: &Window) -> i64 {
    if window.length_ns() <= 3 * HOUR_NS {
        MINUTE_NS
    } else {
        HOUR_NS
    }
}

/// One time bucket of a service's traffic. Calls are the estimated ones (sampled calls weighted
/// by their adjusted counts), and errors are scaled alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub start_ns: i64,
    pub calls_in: f64,
    pub errors_in: f64,
    pub calls_out: f64,
    pub errors_out: f64,
    /// p99 of the calls into the service, milliseconds.
    pub p99_in_ms: Option<f64>,
}

/// A service's traffic per bucket, from the edge statistics of each bucket.
pub fn series<'a>(
    service: &str,
    buckets: impl IntoIterator<Item = (i64, &'a EdgeKey, &'a EdgeStats)>,
) -> Vec<Point> {
    let mut points: BTreeMap<i64, (Point, LatencySketch)> = BTreeMap::new();
    for (start, key, stats) in buckets {
        let (inbound, outbound) = (&*key.to == service, &*key.from == service);
        if !inbound && !outbound {
            continue;
        }
        let (point, sketch) = points.entry(start).or_insert_with(|| {
            (
                Point {
                    start_ns: start,
                    ..Point::default()
                },
                LatencySketch::default(),
            )
        });
        // Each sampled call stands for this many on average.
        let scale = if stats.calls == 0 {
            0.0
        } else {
            stats.estimated_calls / stats.calls as f64
        };
        let errors = stats.errors as f64 * scale;
        if inbound {
            point.calls_in += stats.estimated_calls;
            point.errors_in += errors;
            sketch.merge(&stats.latency);
        }
        if outbound {
            point.calls_out += stats.estimated_calls;
            point.errors_out += errors;
        }
    }
    points
        .into_values()
        .map(|(mut point, sketch)| {
            point.p99_in_ms = sketch.quantile_ns(0.99).map(|ns| ns / 1e6);
            point
        })
        .collect()
}

/// A service's traffic per bucket, from whole aggregates by bucket start.
pub fn series_of_buckets<'a>(
    service: &str,
    buckets: impl IntoIterator<Item = (i64, &'a Aggregate)>,
) -> Vec<Point> {
    series(
        service,
        buckets.into_iter().flat_map(|(start, aggregate)| {
            aggregate
                .edges
                .iter()
                .map(move |(key, stats)| (start, key, stats))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use archtrace_analyzer::derive::EdgeKind;

    /// `calls` sampled calls standing for `estimated_calls`.
    fn stats(calls: u64, estimated_calls: f64, errors: u64, latency_ms: i64) -> EdgeStats {
        let mut latency = LatencySketch::default();
        for _ in 0..calls {
            latency.add(latency_ms * 1_000_000);
        }
        EdgeStats {
            calls,
            estimated_calls,
            errors,
            latency,
            ..EdgeStats::default()
        }
    }

    #[test]
    fn series_sums_calls_in_and_out_per_bucket() {
        let key = |from: &str, to: &str| EdgeKey {
            from: from.into(),
            to: to.into(),
            kind: EdgeKind::Sync,
        };
        let (a_b, b_c, x_y) = (key("a", "b"), key("b", "c"), key("x", "y"));
        let (s1, s2, s3) = (
            stats(10, 10.0, 1, 5),
            stats(4, 4.0, 0, 1),
            stats(99, 99.0, 9, 9),
        );
        let points = series(
            "b",
            [
                (0, &a_b, &s1),
                (0, &b_c, &s2),
                (60, &a_b, &s2),
                (60, &x_y, &s3),
            ],
        );
        assert_eq!(points.len(), 2);
        assert_eq!(
            (points[0].calls_in, points[0].errors_in, points[0].calls_out),
            (10.0, 1.0, 4.0)
        );
        let p99 = points[0].p99_in_ms.unwrap();
        assert!((p99 - 5.0).abs() < 0.1, "{p99}");
        assert_eq!((points[1].calls_in, points[1].calls_out), (4.0, 0.0));
    }

    #[test]
    fn series_count_the_calls_sampled_calls_stand_for() {
        let key = EdgeKey {
            from: "a".into(),
            to: "b".into(),
            kind: EdgeKind::Sync,
        };
        // 10 calls kept at 25%, two of them failed: 40 calls and 8 errors estimated.
        let sampled = stats(10, 40.0, 2, 5);
        let points = series("b", [(0, &key, &sampled)]);
        assert_eq!((points[0].calls_in, points[0].errors_in), (40.0, 8.0));
        let points = series("a", [(0, &key, &sampled)]);
        assert_eq!((points[0].calls_out, points[0].errors_out), (40.0, 8.0));
    }
}
