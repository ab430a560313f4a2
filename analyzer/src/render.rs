//! Text views of a snapshot: a terminal table, Graphviz DOT and Mermaid. Names come from
//! untrusted telemetry, so every format escapes them for its own syntax.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::analysis::Analyzed;
use crate::derive::{EdgeKind, NodeType};
use crate::snapshot::{Level, Snapshot};

/// A renderable edge at either level.
struct Line {
    from: String,
    to: String,
    kind: EdgeKind,
    calls: u64,
    errors: u64,
    p50: Option<f64>,
    p99: Option<f64>,
    calls_per_trace: Option<f64>,
}

fn lines(snapshot: &Snapshot, level: Level) -> Vec<Line> {
    let mut lines: Vec<Line> = match level {
        Level::Service => snapshot
            .edges
            .iter()
            .map(|e| Line {
                from: e.from.clone(),
                to: e.to.clone(),
                kind: e.kind,
                calls: e.calls,
                errors: e.errors,
                p50: e.latency_ms.as_ref().map(|q| q.p50),
                p99: e.latency_ms.as_ref().map(|q| q.p99),
                calls_per_trace: Some(e.calls_per_trace),
            })
            .collect(),
        Level::Operation => snapshot
            .operations
            .iter()
            .map(|o| Line {
                from: operation_label(&o.from.service, &o.from.operation),
                to: operation_label(&o.to.service, &o.to.operation),
                kind: EdgeKind::Sync,
                calls: o.calls,
                errors: o.errors,
                p50: o.latency_ms.as_ref().map(|q| q.p50),
                p99: o.latency_ms.as_ref().map(|q| q.p99),
                calls_per_trace: None,
            })
            .collect(),
    };
    // Busiest first; ties by name, so the output is stable.
    lines.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    lines
}

fn operation_label(service: &str, operation: &str) -> String {
    if operation.is_empty() {
        service.to_owned()
    } else {
        format!("{service}: {operation}")
    }
}

/// Control characters would break a terminal table; show them escaped.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_debug)
        .collect::<String>()
        .replace("\\\"", "\"")
        .replace("\\'", "'")
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let kept: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{kept}…")
    }
}

/// What sampling did to the counts, for a reader: `None` when no span said anything of its
/// sampling (the counts are as received). Otherwise how many calls the sampled ones stand
/// for, and which services sent spans without sampling information.
pub fn sampling_note(snapshot: &Snapshot) -> Option<String> {
    let d = &snapshot.diagnostics;
    if d.spans == 0 || d.spans_without_sampling >= d.spans {
        return None;
    }
    let calls: u64 = snapshot.edges.iter().map(|e| e.calls).sum();
    let estimated: f64 = snapshot.edges.iter().map(|e| e.estimate()).sum();
    let mut note = format!(
        "Sampled traffic: the {calls} calls seen stand for about {estimated:.0} \
         (each weighted by its span's adjusted count)."
    );
    if d.spans_without_sampling > 0 {
        let mut services: Vec<(&str, u64)> = snapshot
            .nodes
            .iter()
            .filter(|n| n.spans_without_sampling > 0)
            .map(|n| (n.id.as_str(), n.spans_without_sampling))
            .collect();
        services.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let named: Vec<String> = services
            .iter()
            .take(5)
            .map(|(service, spans)| format!("{service} ({spans})"))
            .collect();
        let more = services.len().saturating_sub(named.len());
        note.push_str(&format!(
            " {} spans carried no sampling information and count as one each: {}{}.",
            d.spans_without_sampling,
            named.join(", "),
            if more > 0 {
                format!(" and {more} more services")
            } else {
                String::new()
            }
        ));
    }
    Some(note)
}

pub fn table(snapshot: &Snapshot, level: Level) -> String {
    let mut out = String::new();
    let d = &snapshot.diagnostics;
    let _ = writeln!(
        out,
        "window  {} .. {}",
        snapshot.window.start, snapshot.window.end
    );
    let _ = writeln!(
        out,
        "input   {} spans in {} traces; {} orphaned, {} client spans with no named callee",
        d.spans, d.traces, d.orphaned_spans, d.unresolved_client_spans
    );
    if let Some(note) = sampling_note(snapshot) {
        let _ = writeln!(out, "sampled {}", printable(&note));
    }
    let entry_points: Vec<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.entry_point)
        .map(|n| n.id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "nodes   {} ({} entry points), edges {}\n",
        snapshot.nodes.len(),
        entry_points.len(),
        snapshot.edges.len()
    );
    let rows = lines(snapshot, level);
    let width = |pick: fn(&Line) -> &str| {
        rows.iter()
            .map(|l| printable(pick(l)).chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 48)
    };
    let (from_width, to_width) = (width(|l| &l.from), width(|l| &l.to));
    let _ = writeln!(
        out,
        "{:from_width$}  {:to_width$}  {:5}  {:>9}  {:>6}  {:>9}  {:>9}  {:>11}",
        "FROM", "TO", "KIND", "CALLS", "ERR%", "P50 ms", "P99 ms", "CALLS/TRACE"
    );
    let number = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    for line in rows {
        let _ = writeln!(
            out,
            "{:from_width$}  {:to_width$}  {:5}  {:>9}  {:>6.2}  {:>9}  {:>9}  {:>11}",
            truncate(&printable(&line.from), from_width),
            truncate(&printable(&line.to), to_width),
            line.kind.as_str(),
            line.calls,
            100.0 * line.errors as f64 / line.calls.max(1) as f64,
            number(line.p50),
            number(line.p99),
            number(line.calls_per_trace),
        );
    }
    out
}

fn dot_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn node_types(snapshot: &Snapshot) -> BTreeMap<&str, NodeType> {
    snapshot
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.node_type))
        .collect()
}

pub fn dot(snapshot: &Snapshot, level: Level) -> String {
    let mut out = String::from("digraph archtrace {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", shape=box, style=rounded];\n");
    let rows = lines(snapshot, level);
    if level == Level::Service {
        for node in &snapshot.nodes {
            let shape = match node.node_type {
                NodeType::Service => "shape=box, style=rounded",
                NodeType::Database => "shape=cylinder",
                NodeType::Messaging => "shape=cds",
                NodeType::External => "shape=box, style=dashed",
                NodeType::Client => "shape=oval",
            };
            let _ = writeln!(out, "  {} [{shape}];", dot_string(&node.id));
        }
    }
    for line in rows {
        let style = if line.kind == EdgeKind::Async {
            ", style=dashed"
        } else {
            ""
        };
        let color = if line.errors > 0 { ", color=red" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{style}{color}];",
            dot_string(&line.from),
            dot_string(&line.to),
            dot_string(&format!("{} calls", line.calls))
        );
    }
    out.push_str("}\n");
    out
}

/// Mermaid labels are quoted strings in which `"`, `<`, `>` and `&` must be entity codes.
pub(crate) fn mermaid_label(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '#' => out.push_str("#35;"),
            // A backtick run could close the Markdown code fence around a diagram.
            '`' => out.push_str("#96;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn mermaid(snapshot: &Snapshot, level: Level) -> String {
    let mut out = String::from("flowchart LR\n");
    let rows = lines(snapshot, level);
    let types = node_types(snapshot);
    // Node ids are generated; names only ever appear as escaped labels.
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &rows {
        for name in [line.from.as_str(), line.to.as_str()] {
            let next = ids.len();
            ids.entry(name).or_insert(next);
        }
    }
    if level == Level::Service {
        for node in &snapshot.nodes {
            let next = ids.len();
            ids.entry(node.id.as_str()).or_insert(next);
        }
    }
    let mut declared: Vec<(&str, usize)> = ids.iter().map(|(name, id)| (*name, *id)).collect();
    declared.sort_by_key(|(_, id)| *id);
    for (name, id) in declared {
        let label = mermaid_label(name);
        let node = match types.get(name).filter(|_| level == Level::Service) {
            Some(NodeType::Database) => format!("n{id}[({label})]"),
            Some(NodeType::Messaging) => format!("n{id}>{label}]"),
            Some(NodeType::Client) => format!("n{id}(({label}))"),
            Some(NodeType::External) => format!("n{id}{{{{{label}}}}}"),
            _ => format!("n{id}[{label}]"),
        };
        let _ = writeln!(out, "  {node}");
    }
    for line in &rows {
        let arrow = if line.kind == EdgeKind::Async {
            "-.->"
        } else {
            "-->"
        };
        let _ = writeln!(
            out,
            "  n{} {arrow}|{}| n{}",
            ids[line.from.as_str()],
            mermaid_label(&format!("{} calls", line.calls)),
            ids[line.to.as_str()]
        );
    }
    out
}

/// Hotspots ranked by risk, with the terms of each score and the reasons in words.
pub fn hotspots_table(analyzed: &Analyzed, top: usize) -> String {
    let mut out = String::new();
    let (snapshot, ranked) = (&analyzed.snapshot, &analyzed.hotspots);
    if let Some(samples) = snapshot.metric_notes.betweenness_sampled_sources {
        let _ = writeln!(
            out,
            "note: betweenness estimated from {samples} sampled sources (large graph)\n"
        );
    }
    if ranked.is_empty() {
        out.push_str("no services in this window\n");
        return out;
    }
    let _ = writeln!(
        out,
        "score = reach × coupling × health + cycle + spof (see `archtrace hotspots --help`)\n"
    );
    for (rank, hotspot) in ranked.iter().take(top).enumerate() {
        let t = &hotspot.terms;
        let _ = writeln!(
            out,
            "{:>2}. {}  score {:.2}  = {:.2} × {:.2} × {:.2} + {:.0} + {:.0}",
            rank + 1,
            printable(&hotspot.service),
            hotspot.score,
            t.reach,
            t.coupling,
            t.health,
            t.cycle,
            t.spof
        );
        for reason in &hotspot.reasons {
            let _ = writeln!(out, "      - {}", printable(reason));
        }
    }
    let entries = snapshot.deepest_entry_operations();
    if !entries.is_empty() {
        out.push_str("\ndeepest synchronous chains per entry operation (services, p50/p99/max):\n");
        for e in entries.iter().take(top) {
            let _ = writeln!(
                out,
                "  {} · {}  depth {}/{}/{}  touches {}/{}/{} services  ({} traces)",
                printable(&e.service),
                printable(&e.operation),
                e.sync_depth.p50,
                e.sync_depth.p99,
                e.sync_depth.max,
                e.services_touched.p50,
                e.services_touched.p99,
                e.services_touched.max,
                e.traces
            );
        }
    }
    let paths = crate::resilience::busiest_critical_paths(snapshot);
    if !paths.is_empty() {
        out.push_str(
            "\ncritical paths of the busiest entry operations (each service's share of the time, p99 of its time on the path):\n",
        );
        for e in paths.iter().take(top) {
            let _ = writeln!(
                out,
                "  {} · {}  {}",
                printable(&e.service),
                printable(&e.operation),
                printable(&crate::resilience::critical_path_summary(e, 4))
            );
        }
    }
    let counts = finding_counts(snapshot);
    let _ = writeln!(out, "\nfindings: {counts}");
    if !analyzed.actions.is_empty() {
        out.push_str("\nrecommended actions, largest effect first:\n");
        for (rank, action) in analyzed.actions.iter().take(top).enumerate() {
            let _ = writeln!(out, "{:>2}. {}", rank + 1, printable(&action.action));
        }
    }
    out
}

fn finding_counts(snapshot: &Snapshot) -> String {
    let mut by_severity: BTreeMap<String, usize> = BTreeMap::new();
    for finding in &snapshot.findings {
        *by_severity
            .entry(format!("{:?}", finding.severity).to_lowercase())
            .or_default() += 1;
    }
    if by_severity.is_empty() {
        return "none".to_owned();
    }
    by_severity
        .iter()
        .rev()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hotspots command's JSON: the ranking with the findings, entry operations and notes it
/// rests on.
pub fn hotspots_json(analyzed: &Analyzed, top: usize) -> String {
    let snapshot = &analyzed.snapshot;
    let ranked: Vec<_> = analyzed.hotspots.iter().take(top).collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "window": snapshot.window,
        "hotspots": ranked,
        "findings": snapshot.findings,
        "actions": analyzed.actions,
        "entry_operations": snapshot.entry_operations,
        "metric_notes": snapshot.metric_notes,
    }))
    .expect("hotspots serialize")
        + "\n"
}

/// Text and attribute values in HTML, SVG and XML. Control characters that XML 1.0 cannot
/// carry (and U+FFFE, U+FFFF) become spaces; tabs and line breaks stay.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Markdown cells: no pipes or newlines from telemetry may break the table, and no HTML.
pub(crate) fn markdown_cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace(['\n', '\r'], " ")
}

pub fn hotspots_markdown(analyzed: &Analyzed, top: usize) -> String {
    let snapshot = &analyzed.snapshot;
    let mut out = String::from("| # | service | score | reach × coupling × health + cycle + spof | why |\n|---|---|---|---|---|\n");
    for (rank, hotspot) in analyzed.hotspots.iter().take(top).enumerate() {
        let t = &hotspot.terms;
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} × {:.2} × {:.2} + {:.0} + {:.0} | {} |",
            rank + 1,
            markdown_cell(&hotspot.service),
            hotspot.score,
            t.reach,
            t.coupling,
            t.health,
            t.cycle,
            t.spof,
            markdown_cell(&hotspot.reasons.join("; "))
        );
    }
    let paths = crate::resilience::busiest_critical_paths(snapshot);
    if !paths.is_empty() {
        out.push_str("\n| entry operation | critical path |\n|---|---|\n");
        for e in paths.iter().take(top) {
            let _ = writeln!(
                out,
                "| {} {} | {} |",
                markdown_cell(&e.service),
                markdown_cell(&e.operation),
                markdown_cell(&crate::resilience::critical_path_summary(e, 4))
            );
        }
    }
    let _ = writeln!(out, "\nFindings: {}", finding_counts(snapshot));
    for finding in &snapshot.findings {
        let _ = writeln!(
            out,
            "- **{:?}** {}",
            finding.severity,
            markdown_cell(&finding.message)
        );
    }
    if !analyzed.actions.is_empty() {
        out.push_str("\nRecommended actions, largest effect first:\n\n");
        for (rank, action) in analyzed.actions.iter().take(top).enumerate() {
            let _ = writeln!(out, "{}. {}", rank + 1, markdown_cell(&action.action));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Diagnostics;
    use crate::snapshot::{Edge, Node, Window, SNAPSHOT_SCHEMA};

    fn snapshot(names: [&str; 2]) -> Snapshot {
        Snapshot {
            schema: SNAPSHOT_SCHEMA.into(),
            window: Window {
                start: "a".into(),
                end: "b".into(),
            },
            diagnostics: Diagnostics::default(),
            nodes: vec![
                Node {
                    id: names[0].into(),
                    node_type: NodeType::Service,
                    entry_point: true,
                    spans_without_sampling: 0,
                    metrics: None,
                    first_seen: String::new(),
                    last_seen: String::new(),
                    versions: Vec::new(),
                },
                Node {
                    id: names[1].into(),
                    node_type: NodeType::Database,
                    entry_point: false,
                    spans_without_sampling: 0,
                    metrics: None,
                    first_seen: String::new(),
                    last_seen: String::new(),
                    versions: Vec::new(),
                },
            ],
            edges: vec![Edge {
                from: names[0].into(),
                to: names[1].into(),
                kind: EdgeKind::Async,
                calls: 3,
                estimated_calls: None,
                errors: 1,
                latency_ms: None,
                server_latency_ms: None,
                calls_per_trace: 1.5,
                max_calls_per_trace: 2,
                first_seen: String::new(),
                last_seen: String::new(),
                resilience: Default::default(),
                versions: Vec::new(),
            }],
            operations: Vec::new(),
            entry_operations: Vec::new(),
            findings: Vec::new(),
            metric_notes: Default::default(),
        }
    }

    #[test]
    fn dot_escapes_quotes_and_backslashes() {
        let out = dot(&snapshot(["a\"b", "c\\d"]), Level::Service);
        assert!(
            out.contains(r#""a\"b" -> "c\\d" [label="3 calls", style=dashed, color=red];"#),
            "{out}"
        );
        assert!(out.contains(r#""c\\d" [shape=cylinder];"#), "{out}");
    }

    #[test]
    fn mermaid_names_only_appear_as_escaped_labels() {
        let out = mermaid(
            &snapshot(["<script>alert(1)</script>", "x\"]; click n0 call evil()"]),
            Level::Service,
        );
        assert!(!out.contains("<script>"), "{out}");
        assert!(
            !out.contains("x\"]"),
            "the payload's quote cannot close its label: {out}"
        );
        assert!(
            out.contains("n0[\"#lt;script#gt;alert(1)#lt;/script#gt;\"]"),
            "{out}"
        );
        assert!(
            out.contains("n1[(\"x#quot;]; click n0 call evil()\")]"),
            "{out}"
        );
        assert!(out.contains("n0 -.->|\"3 calls\"| n1"), "{out}");
    }

    #[test]
    fn the_table_lists_edges_with_error_rates() {
        let out = table(&snapshot(["web", "db\u{1b}[31m"]), Level::Service);
        assert!(
            out.contains("web   db\\u{1b}[31m  async          3   33.33"),
            "{out}"
        );
    }

    #[test]
    fn markdown_cells_cannot_break_the_table_or_carry_html() {
        assert_eq!(markdown_cell("a|b<script>\nc"), "a\\|b&lt;script&gt; c");
    }
}
