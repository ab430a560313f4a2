//! The pages, as maud templates (which escape every value). Each takes what it shows and a way
//! to link to other pages, so the live viewer and the one-file report share them.

use std::collections::{BTreeMap, HashMap};

use archtrace_analyzer::actions::{self, Action};
use archtrace_analyzer::analysis::Analyzed;
use archtrace_analyzer::declared::{self, Conformance};
use archtrace_analyzer::derive::{EdgeKind, NodeType};
use archtrace_analyzer::drift::SnapshotDiff;
use archtrace_analyzer::history::{Event, History};
use archtrace_analyzer::impact::{self, Target};
use archtrace_analyzer::resilience;
use archtrace_analyzer::risk::Hotspot;
use archtrace_analyzer::snapshot::{Edge, EntryOperation, Finding, PathShare, Severity, Snapshot};
use archtrace_analyzer::time::{parse_rfc3339, rfc3339};
use archtrace_query::Point;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::charts;
use crate::svg;
use crate::timefmt;
use crate::view::{Change, GraphView, Level, ViewEdge, ViewNode};

/// Where links go: to live pages with the window in the URL, or to anchors in the report.
pub trait Links {
    fn service(&self, name: &str) -> String;

    /// The graph focused on a node (by default, the node's own page or section).
    fn focus(&self, name: &str) -> String {
        self.service(name)
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_owned()
    } else {
        format!("{:.2}%", 100.0 * part as f64 / whole as f64)
    }
}

fn millis(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.1}"))
}

/// Headline figures of a window.
pub fn figures(snapshot: &Snapshot) -> Markup {
    let services = snapshot
        .nodes
        .iter()
        .filter(|n| n.node_type == archtrace_analyzer::derive::NodeType::Service)
        .count();
    let calls: u64 = snapshot.edges.iter().map(|e| e.calls).sum();
    let estimated_calls: f64 = snapshot.edges.iter().map(|e| e.estimate()).sum();
    let errors: u64 = snapshot.edges.iter().map(|e| e.errors).sum();
    let mut by_severity: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &snapshot.findings {
        *by_severity.entry(Severity::as_str(f.severity)).or_default() += 1;
    }
    let d = &snapshot.diagnostics;
    html! {
        div.figures {
            div.figure { span.value #services { (services) } span.label { "services" } }
            div.figure { span.value #edges { (snapshot.edges.len()) } span.label { "edges" } }
            div.figure title="per minute of observed traffic, from the first call seen to the last" { span.value { (format!("{:.1}", estimated_calls / snapshot.observed_minutes())) } span.label { "calls/min over " (crate::timefmt::length((snapshot.observed_minutes() * 60e9) as i64)) " of traffic" } }
            div.figure { span.value { (percent(errors, calls)) } span.label { "errors" } }
            div.figure {
                span.value #findings { (snapshot.findings.len()) }
                span.label {
                    "findings"
                    @for (severity, count) in &by_severity { " · " (count) " " (severity) }
                }
            }
        }
        p.diagnostics {
            "From " (d.spans) " spans in " (d.traces) " traces; "
            (d.orphaned_spans) " orphaned spans, "
            (d.unresolved_client_spans) " client spans with no known callee, "
            (d.late_spans_paired) " late spans paired, " (d.late_spans_dropped) " dropped, "
            (d.traces_cut_short) " traces cut short."
        }
        @if let Some(note) = archtrace_analyzer::render::sampling_note(snapshot) {
            p.diagnostics.sampling { (note) }
        }
    }
}

pub fn hotspots_table(ranked: &[Hotspot], top: usize, links: &dyn Links) -> Markup {
    html! {
        @if ranked.is_empty() {
            p.empty { "No services in this window." }
        } @else {
            table.hotspots {
                thead { tr { th { "#" } th { "service" } th { "risk" } th { "reach × coupling × health + cycle + spof" } th { "why" } } }
                tbody {
                    @for (rank, h) in ranked.iter().take(top).enumerate() {
                        tr {
                            td { (rank + 1) }
                            td { a.service href=(links.service(&h.service)) { (h.service) } }
                            td { (format!("{:.2}", h.score)) }
                            td.terms { (format!("{:.2} × {:.2} × {:.2} + {:.0} + {:.0}", h.terms.reach, h.terms.coupling, h.terms.health, h.terms.cycle, h.terms.spof)) }
                            td { ul.reasons { @for reason in &h.reasons { li { (reason) } } } }
                        }
                    }
                }
            }
        }
    }
}

/// Per entry operation: how deep its synchronous chains go and how many services it touches.
pub fn entry_operations_table(snapshot: &Snapshot, top: usize) -> Markup {
    let entries = snapshot.deepest_entry_operations();
    html! {
        @if entries.is_empty() {
            p.empty { "No traces with a root span in this window." }
        } @else {
            table.entries {
                thead { tr { th { "entry operation" } th { "traces" } th { "sync chain depth p50 / p99 / max" } th { "services touched p50 / p99 / max" } } }
                tbody {
                    @for e in entries.iter().take(top) {
                        tr {
                            td { (e.service) " · " (e.operation) }
                            td { (e.traces) }
                            td { (e.sync_depth.p50) " / " (e.sync_depth.p99) " / " (e.sync_depth.max) }
                            td { (e.services_touched.p50) " / " (e.services_touched.p99) " / " (e.services_touched.max) }
                        }
                    }
                }
            }
        }
    }
}

/// The findings, each with links to its subjects on the graph.
pub fn findings_list(findings: &[&Finding], links: &dyn Links) -> Markup {
    html! {
        @if findings.is_empty() {
            p.empty { "No findings." }
        } @else {
            ul.findings {
                @for f in findings {
                    li class=(format!("finding {}", Severity::as_str(f.severity))) {
                        span.badge { (Severity::as_str(f.severity)) } " "
                        code { (serde_json::to_value(f.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) } " "
                        (f.message)
                        @if !f.subjects.is_empty() {
                            span.subjects { " — on the graph: "
                                @for (i, subject) in f.subjects.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    a.focus href=(links.focus(subject.split(" -> ").next().unwrap_or(subject))) { (subject) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn edges_table(
    title: &str,
    edges: &[&Edge],
    other_end: fn(&Edge) -> &str,
    links: &dyn Links,
) -> Markup {
    html! {
        h3 { (title) }
        @if edges.is_empty() {
            p.empty { "None." }
        } @else {
            table.edges {
                thead { tr { th { "service" } th { "kind" } th { "calls" } th { "errors" } th { "p50 ms" } th { "p99 ms" } th { "calls/trace" } th { "retries, fallbacks, timeout" } } }
                tbody {
                    @for e in edges {
                        tr {
                            td { a href=(links.service(other_end(e))) { (other_end(e)) } }
                            td { (e.kind.as_str()) }
                            td { (e.calls) }
                            td { (percent(e.errors, e.calls)) }
                            td { (millis(e.latency_ms.as_ref().map(|q| q.p50))) }
                            td { (millis(e.latency_ms.as_ref().map(|q| q.p99))) }
                            td { (e.calls_per_trace) }
                            td.resilience { (resilience::describe(&e.resilience)) }
                        }
                    }
                }
            }
        }
    }
}

/// How deep each entry point's synchronous chains go, as the overview and the report show it.
pub fn entry_section(snapshot: &Snapshot) -> Markup {
    html! {
        section #entries {
            h2 { "Entry operations" }
            p.hint { "How deep each entry point's synchronous call chains go, per trace." }
            (entry_operations_table(snapshot, 20))
        }
    }
}

/// The hotspots and the findings, before the graph on the overview and the report.
pub fn summary_sections(analyzed: &Analyzed, hotspots: usize, links: &dyn Links) -> Markup {
    let snapshot = &analyzed.snapshot;
    html! {
        section #hotspots {
            h2 { "Hotspots" }
            (hotspots_table(&analyzed.hotspots, hotspots, links))
        }
        section #findings {
            h2 { "Findings" }
            (findings_list(&snapshot.findings.iter().collect::<Vec<_>>(), links))
        }
        @if !analyzed.actions.is_empty() {
            section #actions {
                h2 { "Recommended actions" }
                p.hint { "One per finding, the largest share of entry traffic touched first." }
                (actions_list(&analyzed.actions.iter().take(10).collect::<Vec<_>>()))
            }
        }
    }
}

/// Actions in order, each with the finding it answers.
fn actions_list(actions: &[&Action]) -> Markup {
    html! {
        ol.actions {
            @for a in actions {
                li class=(format!("action {}", a.severity.as_str())) {
                    (a.action)
                }
            }
        }
    }
}

/// Everything about one service: its callers and callees, operations, findings, risk, charts.
pub fn service_body(
    analyzed: &Analyzed,
    service: &str,
    series: &[Point],
    links: &dyn Links,
) -> Markup {
    let snapshot = &analyzed.snapshot;
    let callers: Vec<&Edge> = snapshot.edges.iter().filter(|e| e.to == service).collect();
    let callees: Vec<&Edge> = snapshot
        .edges
        .iter()
        .filter(|e| e.from == service)
        .collect();
    let findings: Vec<&Finding> = snapshot
        .findings
        .iter()
        .filter(|f| {
            f.subjects
                .iter()
                .any(|s| s == service || s.split(" -> ").any(|p| p == service))
        })
        .collect();
    let hotspot = analyzed.hotspots.iter().find(|h| h.service == service);
    let node = snapshot.nodes.iter().find(|n| n.id == service);
    let operations: Vec<_> = snapshot
        .operations
        .iter()
        .filter(|o| o.from.service == service || o.to.service == service)
        .collect();
    let window = (
        parse_rfc3339(&snapshot.window.start).unwrap_or(0),
        parse_rfc3339(&snapshot.window.end).unwrap_or(0),
    );
    let [calls_chart, errors_chart, p99_chart] = charts::service_charts(series, window);
    html! {
        @match node {
            None => p.empty { "No node named " code { (service) } " in this window." },
            Some(node) => {
                p.kind { (node.node_type.as_str()) @if node.entry_point { " · entry point" } }
            }
        }
        @if let Some(h) = &hotspot {
            div.risk {
                p { "Risk " strong { (format!("{:.2}", h.score)) } " = "
                    (format!("{:.2} × {:.2} × {:.2} + {:.0} + {:.0}", h.terms.reach, h.terms.coupling, h.terms.health, h.terms.cycle, h.terms.spof))
                    " (reach × coupling × health + cycle + spof)" }
                ul.reasons { @for reason in &h.reasons { li { (reason) } } }
            }
        }
        @if let Some(m) = node.and_then(|n| n.metrics.as_ref()) {
            table.metrics {
                tr { th { "fan-in" } td { (m.fan_in) } th { "fan-out" } td { (m.fan_out) } th { "instability" } td { (format!("{:.2}", m.instability)) } }
                tr { th { "blast radius" } td { (m.blast_radius) } th { "transitive dependencies" } td { (m.transitive_dependencies) } th { "betweenness" } td { (format!("{:.3}", m.betweenness)) } }
                tr { th title="per minute of observed traffic" { "calls in/min of traffic" } td { (format!("{:.1}", m.calls_per_min)) } th { "error rate in" } td { (format!("{:.2}%", 100.0 * m.error_rate_in)) } th { "p99 in" } td { (millis(m.p99_in_ms)) " ms" } }
            }
        }
        div.charts {
            figure.chart #chart-calls { (PreEscaped(calls_chart)) }
            figure.chart #chart-errors { (PreEscaped(errors_chart)) }
            figure.chart #chart-p99 { (PreEscaped(p99_chart)) }
        }
        div.columns {
            div { (edges_table("Callers", &callers, |e| &e.from, links)) }
            div { (edges_table("Callees", &callees, |e| &e.to, links)) }
        }
        h3 { "Findings" }
        (findings_list(&findings, links))
        @let service_actions = actions::about(&analyzed.actions, service);
        @if !service_actions.is_empty() {
            h3 { "Recommended actions" }
            (actions_list(&service_actions))
        }
        @if node.is_some() {
            h3 { "Impact" }
            (impact_section(snapshot, service, links))
        }
        (critical_path_section(snapshot, service, links))
        h3 { "Operations" }
        @if operations.is_empty() {
            p.empty { "None." }
        } @else {
            table.operations {
                thead { tr { th { "from" } th { "to" } th { "calls" } th { "errors" } th { "p99 ms" } } }
                tbody {
                    @for o in &operations {
                        tr {
                            td { (o.from.service) " · " (o.from.operation) }
                            td { (o.to.service) " · " (o.to.operation) }
                            td { (o.calls) }
                            td { (percent(o.errors, o.calls)) }
                            td { (millis(o.latency_ms.as_ref().map(|q| q.p99))) }
                        }
                    }
                }
            }
        }
    }
}

/// Where the time of the service's own entry operations goes, and the entry operations of
/// others whose critical path it is on.
fn critical_path_section(snapshot: &Snapshot, service: &str, links: &dyn Links) -> Markup {
    let own: Vec<&EntryOperation> = resilience::busiest_critical_paths(snapshot)
        .into_iter()
        .filter(|e| e.service == service)
        .collect();
    let mut on: Vec<(&EntryOperation, &PathShare)> = snapshot
        .entry_operations
        .iter()
        .filter(|e| e.service != service)
        .filter_map(|e| Some((e, e.critical_path.iter().find(|p| p.service == service)?)))
        .collect();
    on.sort_by(|a, b| {
        b.1.share
            .total_cmp(&a.1.share)
            .then(b.0.traces.cmp(&a.0.traces))
    });
    if own.is_empty() && on.is_empty() {
        return html! {};
    }
    html! {
        h3 { "Critical path" }
        @for e in &own {
            p.critical-path { strong { (e.operation) } ": " (resilience::critical_path_summary(e, 6)) }
        }
        @if !on.is_empty() {
            table.critical-path {
                thead { tr { th { "on the critical path of" } th title="of that entry operation's time" { "share" } th { "p99 here" } th { "traces" } } }
                tbody {
                    @for (e, p) in on.iter().take(10) {
                        tr {
                            td { a.service href=(links.service(&e.service)) { (e.service) } ": " (e.operation) }
                            td { (format!("{:.0}%", 100.0 * p.share)) }
                            td { (p.time_ms.as_ref().map(|q| resilience::duration(q.p99)).unwrap_or_default()) }
                            td { (p.traces) " of " (e.traces) }
                        }
                    }
                }
            }
        }
    }
}

/// What fails if `service` does: the entry operations it takes down or degrades.
fn impact_section(snapshot: &Snapshot, service: &str, links: &dyn Links) -> Markup {
    let target = [Target::Node(service.to_owned())];
    let Ok(found) = impact::impact(snapshot, &target) else {
        return html! {};
    };
    html! {
        p.impact { (impact::summary(&found)) }
        @if !found.entries.is_empty() {
            table.impact {
                thead { tr { th { "outcome" } th { "entry operation" } th { "traces" } th { "share" } th { "per min" } th { "how" } } }
                tbody {
                    @for e in &found.entries {
                        tr class=(e.outcome.as_str()) {
                            td { (e.outcome.as_str()) }
                            td { a.service href=(links.service(&e.service)) { (e.service) } ": " (e.operation) }
                            td { (e.traces) }
                            td { (format!("{:.1}%", 100.0 * e.traffic_share)) }
                            td { (format!("{:.1}", e.traces_per_min)) }
                            td.path { (e.path.join(" → ")) }
                        }
                    }
                }
            }
        }
    }
}

/// The graph of a drift comparison: what is in either snapshot, added and removed edges marked.
pub fn drift_view(current: &Analyzed, diff: &SnapshotDiff, baseline: &Analyzed) -> GraphView {
    let mut view = GraphView::new(current, Level::Service);
    for e in &mut view.edges {
        if diff
            .added_edges
            .iter()
            .any(|a| a.from == e.from && a.to == e.to && a.kind == e.kind)
        {
            e.change = Change::Added;
        }
    }
    let before = GraphView::new(baseline, Level::Service);
    for e in before.edges {
        if diff
            .removed_edges
            .iter()
            .any(|r| r.from == e.from && r.to == e.to && r.kind == e.kind)
        {
            for end in [&e.from, &e.to] {
                if !view.nodes.iter().any(|n| &n.id == end) {
                    if let Some(node) = before.nodes.iter().find(|n| &n.id == end) {
                        view.nodes.push(node.clone());
                    }
                }
            }
            view.edges.push(crate::view::ViewEdge {
                change: Change::Removed,
                ..e
            });
        }
    }
    view
}

pub fn drift_body(diff: &SnapshotDiff, graph_svg: &str, links: &dyn Links) -> Markup {
    html! {
        div.columns {
            div {
                h3 { "Added edges" }
                @if diff.added_edges.is_empty() { p.empty { "None." } }
                ul.added { @for e in &diff.added_edges { li { a href=(links.service(&e.from)) { (e.from) } " → " a href=(links.service(&e.to)) { (e.to) } " (" (e.kind.as_str()) ", " (e.calls) " calls)" } } }
                h3 { "Removed edges" }
                @if diff.removed_edges.is_empty() { p.empty { "None." } }
                ul.removed { @for e in &diff.removed_edges { li { (e.from) " → " (e.to) " (" (e.kind.as_str()) ", " (e.calls) " calls before)" } } }
            }
            div {
                h3 { "New findings" }
                (findings_list(&diff.new_findings.iter().collect::<Vec<_>>(), links))
                h3 { "Resolved findings" }
                (findings_list(&diff.resolved_findings.iter().collect::<Vec<_>>(), links))
                h3 { "Nodes" }
                p { (diff.added_nodes.len()) " added: "
                    @for (i, n) in diff.added_nodes.iter().enumerate() { @if i > 0 { ", " } (n.id) }
                    "; " (diff.removed_nodes.len()) " removed: "
                    @for (i, n) in diff.removed_nodes.iter().enumerate() { @if i > 0 { ", " } (n.id) } }
            }
        }
        p.legend { "Green: added edges. Grey dashed: removed edges." }
        div.graph-frame { (PreEscaped(graph_svg)) }
    }
}

/// The graph of the conformance page: the observed graph with undeclared edges marked, and the
/// declared edges no trace showed drawn dashed (with their ends, when those were not seen).
pub fn conformance_view(current: &Analyzed, result: &Conformance) -> GraphView {
    let mut view = GraphView::new(current, Level::Service);
    for e in &mut view.edges {
        if result
            .undeclared_edges
            .iter()
            .any(|u| u.from == e.from && u.to == e.to)
        {
            e.change = Change::Undeclared;
        }
    }
    for u in &result.unobserved_edges {
        for end in [&u.from, &u.to] {
            if !view.nodes.iter().any(|n| &n.id == end) {
                view.nodes.push(ViewNode {
                    id: end.clone(),
                    service: end.clone(),
                    node_type: NodeType::Service,
                    traffic: 0,
                    risk: 0.0,
                });
            }
        }
        view.edges.push(ViewEdge {
            from: u.from.clone(),
            to: u.to.clone(),
            kind: EdgeKind::Sync,
            calls: 0,
            estimated_calls: 0.0,
            errors: 0,
            p99_ms: None,
            change: Change::Unobserved,
        });
    }
    view
}

pub fn conformance_body(result: &Conformance, graph_svg: &str, links: &dyn Links) -> Markup {
    let now = archtrace_analyzer::time::now_ns();
    let rows = declared::rows(result, &|time| crate::timefmt::ago_of(time, now));
    html! {
        p.compare { "Compared with the declared architecture in " strong { (result.declared_sources.join(", ")) } "." }
        div.figures {
            div.figure { span.value { (result.conforming_edges) } span.label { "declared dependencies observed" } }
            div.figure { span.value.undeclared { (result.undeclared_edges.len()) } span.label { "observed, not declared" } }
            div.figure { span.value { (result.unobserved_edges.len()) } span.label { "declared, not observed" } }
            div.figure { span.value { (result.undeclared_nodes.len()) } span.label { "nodes not in the catalog" } }
            div.figure { span.value { (result.unowned_nodes.len()) } span.label { "nodes without an owner" } }
        }
        @if rows.is_empty() {
            p.conforms { "The observed architecture conforms to the declared one." }
        } @else {
            table.conformance {
                thead { tr { th { "difference" } th { "subject" } th { "evidence" } } }
                tbody {
                    @for (what, subject, evidence) in &rows {
                        tr { td { (what) } td { (subject) } td { (evidence) } }
                    }
                }
            }
        }
        p.legend { "Purple: observed but not declared. Grey dashed: declared but not observed." }
        div.graph-frame { (PreEscaped(graph_svg)) }
        p.hint { "Services: " @for (i, n) in result.undeclared_nodes.iter().enumerate() { @if i > 0 { ", " } a href=(links.service(&n.id)) { (n.id) } } @if result.undeclared_nodes.is_empty() { "every observed node is in the catalog." } @else { " are not in the catalog." } }
    }
}

/// Where the drift page shows an event: the step it happened in, against the architecture as
/// known just before it (what was seen within `gone_after`).
fn before_and_after(event: &Event, step_ns: i64, gone_after_ns: i64) -> String {
    let step = event.time_ns.div_euclid(step_ns) * step_ns;
    let query = [
        ("since", rfc3339(step)),
        ("until", rfc3339(step + step_ns)),
        ("compare", "window".to_owned()),
        ("base_since", rfc3339(step - gone_after_ns.max(step_ns))),
        ("base_until", rfc3339(step)),
    ];
    format!(
        "/drift?{}",
        serde_urlencoded::to_string(query).unwrap_or_default()
    )
}

/// The History page: trend charts and the timeline of events, each linked to the drift page
/// between the architecture known before it and its own step.
pub fn history_body(history: &History, window: (i64, i64)) -> Markup {
    let step_ns = history.step_s.max(60) * 1_000_000_000;
    let charts = charts::history_charts(&history.trends, window, step_ns);
    html! {
        p.window-note {
            (history.events.len()) " events · steps of " (timefmt::length(history.step_s * 1_000_000_000))
            " · a service or edge not seen for " (timefmt::length(history.gone_after_s * 1_000_000_000)) " is gone"
        }
        section {
            h2 { "Trends" }
            div.charts { @for chart in &charts { div.chart { (PreEscaped(chart)) } } }
        }
        section {
            h2 { "Events" }
            @if history.events.is_empty() {
                p.empty { "No events in this window." }
            } @else {
                table.events {
                    thead { tr { th { "time (UTC)" } th { "severity" } th { "event" } th { "about" } th { "releases" } th { "what" } th {} } }
                    tbody {
                        @for event in &history.events {
                            tr.event data-kind=(event.kind.as_str()) data-severity=(event.severity.as_str()) {
                                td { (event.time.get(..19).unwrap_or(&event.time).replace('T', " ")) }
                                td class={ "sev-" (event.severity.as_str()) } { (event.severity.as_str()) }
                                td { (event.kind.as_str().replace('_', " ")) }
                                td { (event.subjects.join(", ")) }
                                td.versions { (event.versions.join(", ")) }
                                td { (event.message) }
                                td { a.before-after href=(before_and_after(event, step_ns, history.gone_after_s * 1_000_000_000)) { "before / after" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn legend() -> Markup {
    html! {
        p.legend {
            "Node colour: risk relative to the riskiest service: green below 33%, amber 33–66%, red above 66%, which also has a thick dashed outline. Hover or focus a node for its value. Size: traffic. Rounded box: service; cylinder: database; slanted: queue; hexagon: external; oval: outside callers. "
            "Edge width: calls; red: errors; dashed: through a queue."
        }
    }
}

/// A whole page of the live viewer.
pub struct Chrome<'a> {
    pub title: &'a str,
    pub nav: &'a [(&'a str, String, bool)],
    pub window_form: Markup,
    pub script: Option<&'a str>,
    pub inline_assets: Option<(&'a str, &'a str)>,
}

pub fn page(chrome: Chrome, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (chrome.title) " · archtrace" }
                @match chrome.inline_assets {
                    Some((css, _)) => style { (PreEscaped(css)) },
                    None => link rel="stylesheet" href="/static/app.css";,
                }
            }
            body {
                header {
                    span.brand { "archtrace" }
                    nav { @for (label, href, active) in chrome.nav {
                        a href=(href) class=[active.then_some("active")] { (label) }
                    } }
                    (chrome.window_form)
                }
                main {
                    h1 { (chrome.title) }
                    (body)
                }
                @match chrome.inline_assets {
                    Some((_, js)) => script { (PreEscaped(js)) },
                    None => @if let Some(src) = chrome.script { script src=(src) {} },
                }
            }
        }
    }
}

/// Calls into and out of each service, the ranking the report uses to pick service sections.
pub fn busiest(snapshot: &Snapshot) -> HashMap<&str, u64> {
    let mut traffic: HashMap<&str, u64> = HashMap::new();
    for e in &snapshot.edges {
        *traffic.entry(&e.from).or_default() += e.calls;
        *traffic.entry(&e.to).or_default() += e.calls;
    }
    traffic
}

/// Draws a view as SVG with links from `links`.
pub fn graph_svg(view: &GraphView, links: &dyn Links) -> String {
    svg::draw(view, &|service| links.service(service))
}
