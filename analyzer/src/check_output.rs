//! The outputs of `archtrace check` and `archtrace diff`: text for a terminal, Markdown for a
//! pull-request comment, JSON, JUnit XML, SARIF 2.1.0 and GitHub workflow commands. Names come
//! from telemetry, so every format escapes them for its own syntax.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::json;

use crate::drift::{CheckReport, Item, SnapshotDiff, Status};
use crate::render::escape_markup;
use crate::render::{markdown_cell, mermaid_label, printable};
use crate::snapshot::Severity;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const INFORMATION_URI: &str = "https://github.com/archtrace/archtrace";

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

fn status_word(status: Status) -> &'static str {
    match status {
        Status::New => "new",
        Status::Known => "known",
        Status::Fixed => "fixed",
    }
}

/// The one-line verdict every format starts from.
/// The formats of a check report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For a terminal, with colour when asked.
    Text {
        colour: bool,
    },
    /// A pull-request comment with a Mermaid diagram of the change.
    Markdown,
    Json,
    /// One test case per rule.
    Junit,
    /// SARIF 2.1.0.
    Sarif,
    /// GitHub workflow annotations.
    Github,
}

/// The report in `format`; `artifact` is the file SARIF and GitHub annotations point at (the
/// rules or the baseline).
pub fn render(report: &CheckReport, format: Format, artifact: &str) -> String {
    match format {
        Format::Text { colour } => text(report, colour),
        Format::Markdown => markdown(report),
        Format::Json => json(report),
        Format::Junit => junit(report),
        Format::Sarif => sarif(report, artifact),
        Format::Github => github(report, artifact),
    }
}

pub fn summary(report: &CheckReport) -> String {
    let failures = report.failures();
    let warnings = report.count(Severity::Warning, Status::New);
    let known = report
        .items
        .iter()
        .filter(|i| i.status == Status::Known)
        .count();
    let fixed = report
        .items
        .iter()
        .filter(|i| i.status == Status::Fixed)
        .count();
    format!(
        "{}: {failures} error{}, {warnings} warning{}, {known} known, {fixed} fixed",
        if failures > 0 { "FAILED" } else { "passed" },
        if failures == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" },
    )
}

/// How an item is labelled in the text and Markdown lists.
fn label(item: &Item) -> &'static str {
    match (item.status, item.severity) {
        (Status::Known, _) => "known",
        (Status::Fixed, _) => "fixed",
        (Status::New, severity) => severity_word(severity),
    }
}

pub fn text(report: &CheckReport, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let verdict = summary(report);
    let _ = writeln!(
        out,
        "archtrace check {}",
        paint(
            if report.failures() > 0 {
                "1;31"
            } else {
                "1;32"
            },
            &verdict
        )
    );
    let _ = writeln!(
        out,
        "observed  {} .. {}",
        report.observed_window.start, report.observed_window.end
    );
    match &report.baseline_window {
        Some(w) => {
            let _ = writeln!(out, "baseline  {} .. {}", w.start, w.end);
        }
        None => out.push_str("baseline  none\n"),
    }
    if let Some(sources) = &report.declared {
        let _ = writeln!(out, "declared  {}", sources.join(", "));
    }
    if !report.items.is_empty() {
        out.push('\n');
    }
    for item in &report.items {
        let word = label(item);
        let coloured = match word {
            "error" => paint("31", &format!("{word:<8}")),
            "warning" => paint("33", &format!("{word:<8}")),
            _ => paint("2", &format!("{word:<8}")),
        };
        let _ = writeln!(
            out,
            "{coloured} {:<16} {}",
            item.rule,
            printable(&item.message)
        );
    }
    if report.items.iter().any(|i| i.status == Status::Fixed) {
        out.push_str("\nSome violations of the baseline are gone: run with --update-baseline to shrink it.\n");
    }
    out
}

/// Mermaid node ids are generated; names only ever appear as escaped labels.
fn change_diagram(report: &CheckReport) -> Option<String> {
    // (from, to) → (label, style); the first rule an edge violates outranks a plain addition
    // or removal.
    let mut edges: BTreeMap<(&str, &str), (String, &str)> = BTreeMap::new();
    for item in report
        .items
        .iter()
        .filter(|i| i.status == Status::New && i.severity == Severity::Error)
    {
        for (from, to) in &item.edges {
            edges
                .entry((from, to))
                .or_insert_with(|| (item.rule.clone(), "stroke:#cf222e,stroke-width:3px"));
        }
    }
    if let Some(diff) = &report.diff {
        for e in &diff.added_edges {
            edges
                .entry((&e.from, &e.to))
                .or_insert_with(|| ("new".to_owned(), "stroke:#1a7f37,stroke-width:3px"));
        }
        for e in &diff.removed_edges {
            edges.entry((&e.from, &e.to)).or_insert_with(|| {
                (
                    "removed".to_owned(),
                    "stroke:#8c959f,stroke-width:2px,stroke-dasharray:4",
                )
            });
        }
    }
    if edges.is_empty() {
        return None;
    }
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (from, to) in edges.keys() {
        for name in [*from, *to] {
            let next = ids.len();
            ids.entry(name).or_insert(next);
        }
    }
    let mut out = String::from("```mermaid\nflowchart LR\n");
    let mut declared: Vec<(&str, usize)> = ids.iter().map(|(n, i)| (*n, *i)).collect();
    declared.sort_by_key(|(_, i)| *i);
    for (name, id) in declared {
        let _ = writeln!(out, "  n{id}[{}]", mermaid_label(name));
    }
    for (index, ((from, to), (text, style))) in edges.iter().enumerate() {
        let _ = writeln!(
            out,
            "  n{} -->|{}| n{}",
            ids[from],
            mermaid_label(text),
            ids[to]
        );
        let _ = writeln!(out, "  linkStyle {index} {style}");
    }
    out.push_str("```\n");
    Some(out)
}

pub fn markdown(report: &CheckReport) -> String {
    let mut out = String::new();
    let icon = if report.failures() > 0 { "❌" } else { "✅" };
    let _ = writeln!(out, "### {icon} archtrace check {}\n", summary(report));
    if report.items.is_empty() {
        out.push_str("The observed architecture matches the baseline and the rules.\n");
        return out;
    }
    out.push_str("| | rule | what |\n|---|---|---|\n");
    for item in &report.items {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} |",
            label(item),
            item.rule,
            markdown_cell(&item.message)
        );
    }
    if let Some(diagram) = change_diagram(report) {
        out.push_str(
            "\n#### What changed\n\nGreen: new, grey dashed: removed, red: violates a rule.\n\n",
        );
        out.push_str(&diagram);
    }
    out
}

pub fn json(report: &CheckReport) -> String {
    let value = json!({
        "passed": report.failures() == 0,
        "failures": report.failures(),
        "summary": summary(report),
        "report": report,
    });
    serde_json::to_string_pretty(&value).expect("a report serializes") + "\n"
}

/// One test case per rule: it fails when the rule has new violations at error severity; known,
/// fixed and warning items are listed in its output.
pub fn junit(report: &CheckReport) -> String {
    let failed_rules = report
        .rules
        .iter()
        .filter(|rule| {
            report.items.iter().any(|i| {
                i.rule == rule.id && i.severity == Severity::Error && i.status == Status::New
            })
        })
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"archtrace check\" tests=\"{}\" failures=\"{failed_rules}\" errors=\"0\">",
        report.rules.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"archtrace check\" tests=\"{}\" failures=\"{failed_rules}\" errors=\"0\" skipped=\"0\">",
        report.rules.len()
    );
    for rule in &report.rules {
        let items: Vec<&Item> = report.items.iter().filter(|i| i.rule == rule.id).collect();
        let _ = write!(
            out,
            "    <testcase classname=\"archtrace.check\" name=\"{}: {}\"",
            escape_markup(&rule.id),
            escape_markup(&rule.description)
        );
        if items.is_empty() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        let failures: Vec<&&Item> = items
            .iter()
            .filter(|i| i.severity == Severity::Error && i.status == Status::New)
            .collect();
        if !failures.is_empty() {
            let lines: Vec<String> = failures.iter().map(|i| escape_markup(&i.message)).collect();
            let _ = writeln!(
                out,
                "      <failure type=\"{}\" message=\"{} new violation{}\">{}</failure>",
                escape_markup(&rule.id),
                failures.len(),
                if failures.len() == 1 { "" } else { "s" },
                lines.join("\n")
            );
        }
        let others: Vec<String> = items
            .iter()
            .filter(|i| !(i.severity == Severity::Error && i.status == Status::New))
            .map(|i| format!("{}: {}", label(i), escape_markup(&i.message)))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(out, "      <system-out>{}</system-out>", others.join("\n"));
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// SARIF 2.1.0, with the baseline state of each result. `artifact` is the file results point
/// at (the rules file or the baseline), relative to the repository root.
pub fn sarif(report: &CheckReport, artifact: &str) -> String {
    let rules: Vec<_> = report
        .rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.description },
                "helpUri": format!("{INFORMATION_URI}/blob/main/docs/ci.md"),
            })
        })
        .collect();
    let index: BTreeMap<&str, usize> = report
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let results: Vec<_> = report
        .items
        .iter()
        .map(|item| {
            let mut result = json!({
                "ruleId": item.rule,
                "level": severity_word(item.severity),
                "message": { "text": item.message },
                "baselineState": match item.status {
                    Status::New => "new",
                    Status::Known => "unchanged",
                    Status::Fixed => "absent",
                },
                "locations": [{
                    "physicalLocation": { "artifactLocation": { "uri": artifact } },
                    "logicalLocations": [{ "name": item.subject, "kind": "module" }],
                }],
                "partialFingerprints": { "archtraceSubject/v1": format!("{}|{}", item.rule, item.subject) },
            });
            if let Some(i) = index.get(item.rule.as_str()) {
                result["ruleIndex"] = json!(i);
            }
            result
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "archtrace",
                "version": VERSION,
                "informationUri": INFORMATION_URI,
                "rules": rules,
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&log).expect("a SARIF log serializes") + "\n"
}

/// GitHub Actions workflow-command data: `%`, CR and LF are encoded.
fn workflow_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Workflow-command property values also encode `:` and `,`.
fn workflow_property(text: &str) -> String {
    workflow_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// Annotations: new errors as `::error`, new warnings as `::warning`, known and fixed items as
/// `::notice`.
pub fn github(report: &CheckReport, artifact: &str) -> String {
    let mut out = String::new();
    for item in &report.items {
        let command = match (item.status, item.severity) {
            (Status::New, Severity::Error) => "error",
            (Status::New, Severity::Warning) => "warning",
            _ => "notice",
        };
        let _ = writeln!(
            out,
            "::{command} file={},title={}::{}",
            workflow_property(artifact),
            workflow_property(&format!(
                "archtrace {} ({})",
                item.rule,
                status_word(item.status)
            )),
            workflow_data(&item.message)
        );
    }
    let _ = writeln!(out, "archtrace check {}", summary(report));
    out
}

pub fn diff_text(diff: &SnapshotDiff) -> String {
    if diff.is_empty() {
        return "no architectural difference\n".to_owned();
    }
    let mut out = String::new();
    for n in &diff.added_nodes {
        let _ = writeln!(
            out,
            "+ node     {} ({})",
            printable(&n.id),
            n.node_type.as_str()
        );
    }
    for n in &diff.removed_nodes {
        let _ = writeln!(
            out,
            "- node     {} ({})",
            printable(&n.id),
            n.node_type.as_str()
        );
    }
    for e in &diff.added_edges {
        let _ = writeln!(
            out,
            "+ edge     {} → {} ({}, {} calls)",
            printable(&e.from),
            printable(&e.to),
            e.kind.as_str(),
            e.calls
        );
    }
    for e in &diff.removed_edges {
        let _ = writeln!(
            out,
            "- edge     {} → {} ({}, {} calls before)",
            printable(&e.from),
            printable(&e.to),
            e.kind.as_str(),
            e.calls
        );
    }
    for f in &diff.new_findings {
        let _ = writeln!(out, "+ finding  {}", printable(&f.message));
    }
    for f in &diff.resolved_findings {
        let _ = writeln!(out, "- finding  {}", printable(&f.message));
    }
    out
}

pub fn diff_markdown(diff: &SnapshotDiff) -> String {
    if diff.is_empty() {
        return "No architectural difference.\n".to_owned();
    }
    let mut out = String::from("| | what |\n|---|---|\n");
    let mut row = |sign: &str, text: String| {
        let _ = writeln!(out, "| {sign} | {} |", markdown_cell(&text));
    };
    for n in &diff.added_nodes {
        row("➕ node", format!("{} ({})", n.id, n.node_type.as_str()));
    }
    for n in &diff.removed_nodes {
        row("➖ node", format!("{} ({})", n.id, n.node_type.as_str()));
    }
    for e in &diff.added_edges {
        row(
            "➕ edge",
            format!(
                "{} → {} ({}, {} calls)",
                e.from,
                e.to,
                e.kind.as_str(),
                e.calls
            ),
        );
    }
    for e in &diff.removed_edges {
        row(
            "➖ edge",
            format!(
                "{} → {} ({}, {} calls before)",
                e.from,
                e.to,
                e.kind.as_str(),
                e.calls
            ),
        );
    }
    for f in &diff.new_findings {
        row("➕ finding", f.message.clone());
    }
    for f in &diff.resolved_findings {
        row("➖ finding", f.message.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::check;
    use crate::metrics::tests::graph;
    use crate::rules::Rules;

    const HOSTILE: &str = "<script>\"x\"&'y'\n`%:,|";

    /// A baseline with one edge and an observed graph adding an edge to a hostile name.
    fn hostile_report() -> CheckReport {
        let baseline = graph(&[("a", "b")], &["a"], &[]);
        let observed = graph(&[("a", "b"), ("a", HOSTILE)], &["a"], &[]);
        check(&observed, Some(&baseline), None, &Rules::default())
    }

    #[test]
    fn junit_escapes_names_and_stays_well_formed() {
        let xml_text = junit(&hostile_report());
        assert!(!xml_text.contains("<script>"));
        assert!(xml_text.contains("&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"));
        assert!(xml_text.contains("<failure type=\"new-edges\" message=\"1 new violation\">"));
    }

    #[test]
    fn github_annotations_encode_percent_and_newlines() {
        let text = github(&hostile_report(), "rules,1:2.toml");
        let line = text.lines().find(|l| l.starts_with("::error")).unwrap();
        assert!(
            line.starts_with("::error file=rules%2C1%3A2.toml,title=archtrace new-edges (new)::")
        );
        assert!(line.contains("'y'%0A`%25:,|"), "{line}");
        // The new edge, the new node and the new finding (a now dominates two nodes), then the
        // verdict.
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn markdown_keeps_names_in_their_cell_and_out_of_html() {
        let text = markdown(&hostile_report());
        let row = text.lines().find(|l| l.contains("new-edges")).unwrap();
        assert!(row.contains("&lt;script&gt;"), "{row}");
        assert!(row.contains("\\|"), "{row}");
        // The name's backtick cannot close the diagram's code fence.
        let diagram = &text[text.find("```mermaid").unwrap()..];
        assert_eq!(diagram.matches('`').count(), 6, "{diagram}");
        assert!(diagram.contains("#lt;script#gt;"));
    }

    #[test]
    fn the_verdict_counts_errors_warnings_known_and_fixed() {
        let report = hostile_report();
        assert_eq!(
            summary(&report),
            "FAILED: 1 error, 2 warnings, 0 known, 0 fixed"
        );
        let text = text(&report, false);
        assert!(text.starts_with("archtrace check FAILED"));
        assert!(!text.contains('\x1b'));
    }
}
