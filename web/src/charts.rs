//! Charts of one service over the window (calls, errors, p99 latency), drawn by plotters as SVG.

use archtrace_query::series::Point;
use plotters::prelude::*;

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

    #[test]
    fn a_chart_is_an_svg_with_its_title_and_a_line() {
        let svg = line_chart("calls", "calls", &[(0, 1.0), (60_000_000_000, 3.0)], BLUE);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("calls"));
        assert!(svg.contains("<polyline"), "{svg}");
    }
}
