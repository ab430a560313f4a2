//! Charts of one service over the window (calls, errors, p99 latency), drawn by plotters as SVG.

use std::collections::BTreeMap;

use archtrace_analyzer::aggregate::{Aggregate, EdgeKey, EdgeStats};
use archtrace_analyzer::sketch::LatencySketch;
use plotters::prelude::*;

/// One time bucket of a service's traffic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub start_ns: i64,
    pub calls_in: u64,
    pub errors_in: u64,
    pub calls_out: u64,
    pub errors_out: u64,
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
        if inbound {
            point.calls_in += stats.calls;
            point.errors_in += stats.errors;
            sketch.merge(&stats.latency);
        }
        if outbound {
            point.calls_out += stats.calls;
            point.errors_out += stats.errors;
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

/// One line chart as an SVG document; `values` are (bucket start in ns, value).
pub fn line_chart(title: &str, unit: &str, values: &[(i64, f64)], colour: RGBColor) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (460, 200)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let (first, last) = match (values.first(), values.last()) {
                (Some(a), Some(b)) => (a.0, b.0.max(a.0 + 1)),
                _ => (0, 1),
            };
            let top = values.iter().map(|v| v.1).fold(0.0f64, f64::max).max(1e-9) * 1.15;
            let span_minutes = (last - first) as f64 / 60e9;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(26)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..span_minutes.max(1.0), 0f64..top)?;
            chart
                .configure_mesh()
                .x_desc("minutes into the window")
                .y_desc(unit)
                .x_labels(6)
                .y_labels(5)
                .label_style(("sans-serif", 11))
                .draw()?;
            chart.draw_series(LineSeries::new(
                values.iter().map(|(t, v)| ((t - first) as f64 / 60e9, *v)),
                colour.stroke_width(2),
            ))?;
            root.present()?;
            Ok(())
        })();
        if let Err(err) = drawn {
            tracing::warn!("chart {title:?} could not be drawn: {err}");
        }
    }
    svg
}

/// The three charts of a service page: calls, errors and p99 latency of the calls into it.
pub fn service_charts(points: &[Point]) -> [String; 3] {
    let calls: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p.start_ns, (p.calls_in + p.calls_out) as f64))
        .collect();
    let errors: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p.start_ns, (p.errors_in + p.errors_out) as f64))
        .collect();
    let p99: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|p| Some((p.start_ns, p.p99_in_ms?)))
        .collect();
    [
        line_chart("calls in and out per bucket", "calls", &calls, BLUE),
        line_chart("errors per bucket", "errors", &errors, RED),
        line_chart("p99 latency of calls into it", "ms", &p99, MAGENTA),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use archtrace_analyzer::derive::EdgeKind;

    fn stats(calls: u64, errors: u64, latency_ms: i64) -> EdgeStats {
        let mut latency = LatencySketch::default();
        for _ in 0..calls {
            latency.add(latency_ms * 1_000_000);
        }
        EdgeStats {
            calls,
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
        let (s1, s2, s3) = (stats(10, 1, 5), stats(4, 0, 1), stats(99, 9, 9));
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
            (10, 1, 4)
        );
        let p99 = points[0].p99_in_ms.unwrap();
        assert!((p99 - 5.0).abs() < 0.1, "{p99}");
        assert_eq!((points[1].calls_in, points[1].calls_out), (4, 0));
    }

    #[test]
    fn a_chart_is_an_svg_with_its_title_and_a_line() {
        let svg = line_chart("calls", "calls", &[(0, 1.0), (60_000_000_000, 3.0)], BLUE);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("calls"));
        assert!(svg.contains("<polyline"), "{svg}");
    }
}
