//! The report: the overview, graph, hotspots, findings and a section per risky service in one
//! HTML file with its style and script inside, to open from disk or keep as a CI artifact.

use std::collections::{BTreeMap, HashMap};

use archtrace_analyzer::analysis::{Analyzed, Settings};
use archtrace_query::{Point, QueryError, SnapshotSource, Window};
use maud::{html, PreEscaped};

use crate::pages::{self, Chrome, Links};
use crate::server::{APP_CSS, APP_JS};
use crate::timefmt;
use crate::view::{GraphView, Level};

/// Services that get a section of their own, riskiest first.
const SERVICE_SECTIONS: usize = 25;

struct ReportLinks {
    sections: HashMap<String, usize>,
}

impl Links for ReportLinks {
    fn service(&self, name: &str) -> String {
        match self.sections.get(name) {
            Some(i) => format!("#service-{i}"),
            None => "#hotspots".to_owned(),
        }
    }
}

/// The report of `window` from `source`: the snapshot, analysed once, and each node's traffic
/// over time (none from a source without series, such as a running server, which is said).
pub fn build(
    source: &dyn SnapshotSource,
    window: &Window,
    settings: &Settings,
) -> Result<(Analyzed, String), QueryError> {
    let analyzed = source.analyzed(window, settings)?;
    let mut series = BTreeMap::new();
    let mut description = source.describe();
    for node in &analyzed.snapshot.nodes {
        match source.series(&node.id, window) {
            Ok(points) => {
                series.insert(node.id.clone(), points);
            }
            Err(QueryError::Unsupported(why)) => {
                description = format!("{description} ({why})");
                break;
            }
            Err(err) => return Err(err),
        }
    }
    let html = render(&analyzed, &series, &description);
    Ok((analyzed, html))
}

/// The report of an analysed snapshot; `series` holds each service's traffic per time bucket.
pub fn render(analyzed: &Analyzed, series: &BTreeMap<String, Vec<Point>>, source: &str) -> String {
    let (snapshot, ranked) = (&analyzed.snapshot, &analyzed.hotspots);
    let links = ReportLinks {
        sections: ranked
            .iter()
            .take(SERVICE_SECTIONS)
            .enumerate()
            .map(|(i, h)| (h.service.clone(), i))
            .collect(),
    };
    let graph = pages::graph_svg(&GraphView::new(analyzed, Level::Service), &links);
    let body = html! {
        // A report is read later: its window is given by date, not as "the last hour".
        p.window-note { (timefmt::window_of(&snapshot.window.start, &snapshot.window.end, 0)) " · " (source) }
        (pages::figures(snapshot))
        (pages::summary_sections(analyzed, SERVICE_SECTIONS, &links))
        section #graph-section {
            h2 { "Dependency graph" }
            (pages::legend())
            p.hint { "Scroll to zoom, drag to pan, hover a node to see its neighbours, click it for its section." }
            div.graph-frame { (PreEscaped(graph)) }
        }
        (pages::entry_section(snapshot))
        @for (i, hotspot) in ranked.iter().take(SERVICE_SECTIONS).enumerate() {
            section.service id=(format!("service-{i}")) {
                h2 { (hotspot.service) }
                (pages::service_body(
                    analyzed,
                    &hotspot.service,
                    series.get(&hotspot.service).map_or(&[][..], Vec::as_slice),
                    &links,
                ))
            }
        }
    };
    pages::page(
        Chrome {
            title: "Architecture report",
            nav: &[],
            window_form: html! {},
            script: None,
            inline_assets: Some((APP_CSS, APP_JS)),
        },
        body,
    )
    .into_string()
}
