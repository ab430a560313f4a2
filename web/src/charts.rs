//! Charts of one service over the window (calls, errors, p99 latency), drawn by plotters as SVG.

use archtrace_analyzer::history::TrendPoint;
use archtrace_analyzer::time::parse_rfc3339;
use archtrace_query::series::Point;
use plotters::prelude::*;

use crate::timefmt;

/// How a series is drawn: counts as bars per bucket, latencies as lines broken where a bucket
/// has no data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bars,
    Line,
}

/// One chart as an SVG document, over `window` (Unix ns) with a clock-time axis; `values` are
/// (bucket start, value) for buckets `bucket_ns` wide.
pub fn chart(
    title: &str,
    unit: &str,
    values: &[(i64, f64)],
    window: (i64, i64),
    bucket_ns: i64,
    style: Style,
    colour: RGBColor,
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (460, 200)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let (start, end) = (window.0, window.1.max(window.0 + 60_000_000_000));
            let minutes = |ns: i64| (ns - start) as f64 / 60e9;
            // Counts read from 0 to at least 1, so a quiet bucket is not an axis of 0.0s;
            // latencies may be fractions of a millisecond.
            let least = match style {
                Style::Bars => 1.0,
                Style::Line => 1e-9,
            };
            let top = values.iter().map(|v| v.1).fold(0.0f64, f64::max).max(least) * 1.15;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(26)
                .y_label_area_size(48)
                .build_cartesian_2d(0f64..minutes(end), 0f64..top)?;
            let clock = |x: &f64| timefmt::clock(start + (x * 60e9) as i64);
            chart
                .configure_mesh()
                .x_desc("UTC")
                .y_desc(unit)
                .x_labels(6)
                .y_labels(5)
                .x_label_formatter(&clock)
                .light_line_style(RGBColor(246, 248, 250))
                .bold_line_style(RGBColor(225, 228, 232))
                .label_style(("sans-serif", 11))
                .draw()?;
            match style {
                Style::Bars => {
                    chart.draw_series(values.iter().map(|(t, v)| {
                        let (x0, x1) = (minutes(*t), minutes(t + bucket_ns));
                        let gap = (x1 - x0) * 0.1;
                        Rectangle::new([(x0 + gap, 0.0), (x1 - gap, *v)], colour.filled())
                    }))?;
                }
                Style::Line => {
                    // One line per run of consecutive buckets: no line across a gap.
                    let mut run: Vec<(f64, f64)> = Vec::new();
                    let mut previous: Option<i64> = None;
                    let mut runs = Vec::new();
                    for (t, v) in values {
                        if previous.is_some_and(|p| t - p > bucket_ns) {
                            runs.push(std::mem::take(&mut run));
                        }
                        run.push((minutes(t + bucket_ns / 2), *v));
                        previous = Some(*t);
                    }
                    runs.push(run);
                    for run in runs {
                        chart.draw_series(LineSeries::new(run.clone(), colour.stroke_width(2)))?;
                        chart.draw_series(
                            run.into_iter()
                                .map(|point| Circle::new(point, 2, colour.filled())),
                        )?;
                    }
                }
            }
            root.present()?;
            Ok(())
        })();
        if let Err(err) = drawn {
            tracing::warn!("chart {title:?} could not be drawn: {err}");
        }
    }
    svg
}

/// The bucket width of a series: the smallest step between its buckets (a minute when unknown).
fn bucket_width(points: &[Point]) -> i64 {
    points
        .windows(2)
        .map(|w| w[1].start_ns - w[0].start_ns)
        .filter(|step| *step > 0)
        .min()
        .unwrap_or(60_000_000_000)
}

/// The three charts of a service page over `window`: calls and errors per bucket as bars, and
/// the p99 latency of the calls into it as a line.
pub fn service_charts(points: &[Point], window: (i64, i64)) -> [String; 3] {
    let bucket = bucket_width(points);
    let calls: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p.start_ns, p.calls_in + p.calls_out))
        .collect();
    let errors: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p.start_ns, p.errors_in + p.errors_out))
        .collect();
    let p99: Vec<(i64, f64)> = points
        .iter()
        .filter_map(|p| Some((p.start_ns, p.p99_in_ms?)))
        .collect();
    [
        chart(
            "calls in and out per bucket",
            "calls",
            &calls,
            window,
            bucket,
            Style::Bars,
            BLUE,
        ),
        chart(
            "errors per bucket",
            "errors",
            &errors,
            window,
            bucket,
            Style::Bars,
            RED,
        ),
        chart(
            "p99 latency of calls into it",
            "ms",
            &p99,
            window,
            bucket,
            Style::Line,
            MAGENTA,
        ),
    ]
}

/// The trend charts of the History page: services, edges, cycles and coupling as the
/// architecture stood at each step, and the p99 of all calls per step.
pub fn history_charts(trends: &[TrendPoint], window: (i64, i64), step_ns: i64) -> [String; 5] {
    let series = |value: &dyn Fn(&TrendPoint) -> Option<f64>| -> Vec<(i64, f64)> {
        trends
            .iter()
            .filter_map(|t| Some((parse_rfc3339(&t.start)?, value(t)?)))
            .collect()
    };
    let line = |title: &str, unit: &str, values: Vec<(i64, f64)>, colour: RGBColor| {
        chart(title, unit, &values, window, step_ns, Style::Line, colour)
    };
    [
        line(
            "services",
            "services",
            series(&|t| Some(t.services as f64)),
            BLUE,
        ),
        line("edges", "edges", series(&|t| Some(t.edges as f64)), CYAN),
        chart(
            "cycles",
            "cycles",
            &series(&|t| Some(t.cycles as f64)),
            window,
            step_ns,
            Style::Bars,
            RED,
        ),
        line(
            "average coupling (callers + callees per service)",
            "services",
            series(&|t| Some(t.coupling)),
            GREEN,
        ),
        line("p99 of all calls", "ms", series(&|t| t.p99_ms), MAGENTA),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000_000;
    // 2026-12-04T06:00:00Z
    const SIX: i64 = 1_796_364_000_000_000_000;

    #[test]
    fn charts_have_a_clock_axis_bars_for_counts_and_broken_lines_for_gaps() {
        let window = (SIX, SIX + 60 * MINUTE);
        let bars = chart(
            "calls",
            "calls",
            &[(SIX, 1.0), (SIX + MINUTE, 3.0)],
            window,
            MINUTE,
            Style::Bars,
            BLUE,
        );
        assert!(bars.starts_with("<svg"), "{bars}");
        // Labels at 06:00, 06:20, 06:40 and 07:00 (plotters writes the text on its own line).
        assert!(
            bars.contains("\n06:00\n") && bars.contains("\n06:40\n"),
            "{bars}"
        );
        assert!(!bars.contains("minutes into"), "{bars}");
        let data_line = |svg: &str| svg.matches("stroke=\"#0000FF\"").count();
        assert_eq!(
            bars.matches("fill=\"#0000FF\"").count(),
            2,
            "a bar per bucket: {bars}"
        );
        assert_eq!(data_line(&bars), 0, "bars, not a line: {bars}");
        // Two runs of buckets with a gap between: two lines, none across the gap.
        let values = [
            (SIX, 1.0),
            (SIX + MINUTE, 2.0),
            (SIX + 10 * MINUTE, 1.0),
            (SIX + 11 * MINUTE, 4.0),
        ];
        let line = chart("p99", "ms", &values, window, MINUTE, Style::Line, BLUE);
        assert_eq!(data_line(&line), 2, "{line}");
    }

    #[test]
    fn a_bar_chart_of_zeros_still_has_an_axis_up_to_one() {
        let window = (SIX, SIX + 60 * MINUTE);
        let zeros = chart(
            "errors",
            "errors",
            &[(SIX, 0.0), (SIX + MINUTE, 0.0)],
            window,
            MINUTE,
            Style::Bars,
            BLUE,
        );
        assert!(zeros.contains("\n1.0\n"), "{zeros}");
        assert!(
            zeros.contains("\n0.5\n") || zeros.contains("\n0.4\n"),
            "{zeros}"
        );
    }
}
