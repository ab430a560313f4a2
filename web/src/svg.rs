//! The dependency graph as SVG: node size by traffic, colour by risk, distinct shapes per node
//! type, edge width by estimated calls, red by error rate, dashed when asynchronous. Every name
//! is escaped; styling is by attributes and classes only, so the page's Content-Security-Policy
//! needs no inline styles.

use std::fmt::Write;

use archtrace_analyzer::derive::{EdgeKind, NodeType};

use crate::layout::{self, Layout, NODE_HEIGHT};
use crate::view::{Change, GraphView};

use archtrace_analyzer::render::escape_markup as escape;

/// Relative risk above which a node is red and outlined, so that colour is not the only sign.
const HIGH_RISK: f64 = 0.66;

/// Green (low risk) through amber to red (the riskiest service).
fn risk_colour(risk: f64) -> String {
    let r = risk.clamp(0.0, 1.0);
    let (red, green) = if r < 0.5 {
        (80.0 + 350.0 * r, 170.0)
    } else {
        (255.0, 170.0 - 240.0 * (r - 0.5))
    };
    format!("rgb({:.0},{:.0},90)", red.min(255.0), green.max(40.0))
}

/// Grey for healthy edges, red from 5% errors.
fn edge_colour(calls: u64, errors: u64) -> &'static str {
    let rate = errors as f64 / calls.max(1) as f64;
    if rate >= 0.05 {
        "#d1242f"
    } else if rate > 0.0 {
        "#e16f24"
    } else {
        "#8c959f"
    }
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= 28 {
        label.to_owned()
    } else {
        label.chars().take(27).collect::<String>() + "…"
    }
}

/// Draws the view; `link` gives the page of a service (a URL or a fragment).
pub fn graph(view: &GraphView, layout: &Layout, link: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="graph" class="graph" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" height="{h:.0}" role="img" aria-label="service dependency graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/></marker></defs>"##,
        w = layout.width,
        h = layout.height
    );
    let max_calls = view
        .edges
        .iter()
        .map(|e| e.estimated_calls)
        .fold(1.0f64, f64::max);
    out.push_str(r#"<g class="edges">"#);
    for e in &view.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) =
            (layout.positions.get(&e.from), layout.positions.get(&e.to))
        else {
            continue;
        };
        let width = 1.0 + 5.0 * e.estimated_calls.ln_1p() / max_calls.ln_1p();
        let half = NODE_HEIGHT / 2.0;
        let path = if e.from == e.to {
            format!(
                "M{:.1},{:.1} c40,-30 40,30 0,{:.1}",
                x1 + 20.0,
                y1 - half / 2.0,
                half
            )
        } else {
            let (sy, ty) = if y2 > y1 {
                (y1 + half, y2 - half)
            } else if y2 < y1 {
                (y1 - half, y2 + half)
            } else {
                (y1, y2)
            };
            let bend = ((ty - sy) / 2.0).abs().max(30.0) * if ty >= sy { 1.0 } else { -1.0 };
            format!(
                "M{x1:.1},{sy:.1} C{x1:.1},{:.1} {x2:.1},{:.1} {x2:.1},{ty:.1}",
                sy + bend,
                ty - bend
            )
        };
        let mut class = String::from("edge");
        if e.kind == EdgeKind::Async {
            class.push_str(" async");
        }
        match e.change {
            Change::Added => class.push_str(" added"),
            Change::Removed => class.push_str(" removed"),
            Change::Undeclared => class.push_str(" undeclared"),
            Change::Unobserved => class.push_str(" unobserved"),
            Change::Same => {}
        }
        let error_rate = 100.0 * e.errors as f64 / e.calls.max(1) as f64;
        let p99 = e
            .p99_ms
            .map_or(String::new(), |p| format!(", p99 {p:.1} ms"));
        // Sampled traffic says what its calls stand for.
        let estimate = if (e.estimated_calls - e.calls as f64).abs() >= 0.5 {
            format!(" (≈{:.0} estimated)", e.estimated_calls)
        } else {
            String::new()
        };
        let dash = if e.kind == EdgeKind::Async
            || matches!(e.change, Change::Removed | Change::Unobserved)
        {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let colour = match e.change {
            Change::Added => "#1a7f37",
            Change::Removed | Change::Unobserved => "#afb8c1",
            Change::Undeclared => "#8250df",
            Change::Same => edge_colour(e.calls, e.errors),
        };
        let _ = write!(
            out,
            r#"<path class="{class}" d="{path}" stroke="{colour}" stroke-width="{width:.1}" fill="none"{dash} marker-end="url(#arrow)" data-from="{}" data-to="{}"><title>{} → {}: {} calls{estimate}, {error_rate:.1}% errors{p99}</title></path>"#,
            escape(&e.from),
            escape(&e.to),
            escape(&e.from),
            escape(&e.to),
            e.calls
        );
    }
    out.push_str("</g><g class=\"nodes\">");
    let max_traffic = view
        .nodes
        .iter()
        .map(|n| n.traffic)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    for n in &view.nodes {
        let Some(&(x, y)) = layout.positions.get(&n.id) else {
            continue;
        };
        let scale = 0.85 + 0.3 * (n.traffic as f64).ln_1p() / max_traffic.ln_1p();
        let w = layout::node_width(&n.id) * scale;
        let h = NODE_HEIGHT * scale;
        let fill = match n.node_type {
            NodeType::Service => risk_colour(n.risk),
            NodeType::Database => "#ddf4ff".to_owned(),
            NodeType::Messaging => "#fbefff".to_owned(),
            NodeType::External => "#fff8c5".to_owned(),
            NodeType::Client => "#eaeef2".to_owned(),
        };
        let (l, t) = (x - w / 2.0, y - h / 2.0);
        let description = format!(
            "{} ({}): {} calls in and out, risk {:.0}% of the riskiest service",
            n.id,
            n.node_type.as_str(),
            n.traffic,
            100.0 * n.risk
        );
        let shape = match n.node_type {
            NodeType::Service => format!(
                r#"<rect x="{l:.1}" y="{t:.1}" width="{w:.1}" height="{h:.1}" rx="8" fill="{fill}"/>"#
            ),
            NodeType::Database => {
                let ry = 6.0;
                format!(
                    r#"<path d="M{l:.1},{:.1} a{:.1},{ry} 0 0 0 {w:.1},0 v{:.1} a{:.1},{ry} 0 0 1 -{w:.1},0 z" fill="{fill}"/><ellipse cx="{x:.1}" cy="{:.1}" rx="{:.1}" ry="{ry}" fill="{fill}"/>"#,
                    t + ry,
                    w / 2.0,
                    h - 2.0 * ry,
                    w / 2.0,
                    t + ry,
                    w / 2.0
                )
            }
            NodeType::Messaging => format!(
                r#"<path d="M{:.1},{t:.1} h{:.1} l-12,{h:.1} h-{:.1} z" fill="{fill}"/>"#,
                l + 12.0,
                w,
                w
            ),
            NodeType::External => format!(
                r#"<path d="M{:.1},{t:.1} h{:.1} l10,{:.1} l-10,{:.1} h-{:.1} l-10,-{:.1} z" fill="{fill}"/>"#,
                l + 10.0,
                w - 20.0,
                h / 2.0,
                h / 2.0,
                w - 20.0,
                h / 2.0
            ),
            NodeType::Client => format!(
                r#"<ellipse cx="{x:.1}" cy="{y:.1}" rx="{:.1}" ry="{:.1}" fill="{fill}"/>"#,
                w / 2.0,
                h / 2.0
            ),
        };
        let _ = write!(
            out,
            r#"<g class="node {}{}" data-id="{}"><a href="{}" tabindex="0" aria-label="{}">{shape}<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text></a><title>{}</title></g>"#,
            n.node_type.as_str(),
            if n.risk > HIGH_RISK { " high-risk" } else { "" },
            escape(&n.id),
            escape(&link(&n.service)),
            escape(&description),
            y + 4.5,
            escape(&shorten(&n.id)),
            escape(&description),
        );
    }
    out.push_str("</g></svg>");
    out
}

/// Lays out and draws a view.
pub fn draw(view: &GraphView, link: &dyn Fn(&str) -> String) -> String {
    let (names, edges) = indexed(view);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    graph(view, &layout::layered(&refs, &edges), link)
}

/// Node names and edges as indices, for the layout.
pub fn indexed(view: &GraphView) -> (Vec<String>, Vec<(usize, usize)>) {
    let names: Vec<String> = view.nodes.iter().map(|n| n.id.clone()).collect();
    let index: std::collections::HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let edges = view
        .edges
        .iter()
        .filter_map(|e| Some((*index.get(e.from.as_str())?, *index.get(e.to.as_str())?)))
        .collect();
    (names, edges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{ViewEdge, ViewNode};

    #[test]
    fn hostile_names_are_escaped_everywhere() {
        let evil = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
        let view = GraphView {
            nodes: vec![
                ViewNode {
                    id: evil.to_owned(),
                    service: evil.to_owned(),
                    node_type: NodeType::Service,
                    traffic: 3,
                    risk: 1.0,
                },
                ViewNode {
                    id: "db".to_owned(),
                    service: "db".to_owned(),
                    node_type: NodeType::Database,
                    traffic: 3,
                    risk: 0.0,
                },
            ],
            edges: vec![ViewEdge {
                from: evil.to_owned(),
                to: "db".to_owned(),
                kind: EdgeKind::Async,
                calls: 3,
                estimated_calls: 12.0,
                errors: 1,
                p99_ms: Some(2.0),
                change: Change::Same,
            }],
        };
        let svg = draw(&view, &|s| format!("/service/{s}"));
        assert!(!svg.contains("<script"), "{svg}");
        assert!(!svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
        assert!(svg.contains(r#"class="edge async""#));
        assert!(
            svg.contains("3 calls (≈12 estimated), 33.3% errors"),
            "{svg}"
        );
        assert!(svg.contains(r#"stroke-dasharray="6 4""#));
        assert!(svg.contains(r#"class="node database""#));
        assert!(!svg.contains("style="), "no inline styles under the CSP");
    }
}
