//! SARIF 2.1.0 (OASIS Static Analysis Results Interchange Format): one log
//! for all the files of a run, which code-scanning services (GitHub's among
//! them) read. `tests/machine_formats.rs` validates the output against the
//! published JSON schema in `tests/data/`.
//!
//! Regions use 1-based lines and Unicode code-point columns (`columnKind`
//! says so), the end column being the one after the last character, as
//! SARIF defines it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Diagnostic, LineIndex, Severity};

/// One checked file: its name as given, its text and its findings.
pub struct SarifFile<'a> {
    pub name: &'a str,
    pub source: &'a str,
    pub diagnostics: &'a [Diagnostic],
}

/// SARIF's level for a severity (it calls advice a note).
fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Advice => "note",
    }
}

/// A path as a URI reference: relative paths stay relative (code scanning
/// resolves them against the repository root), absolute ones become
/// `file://` URIs; bytes outside RFC 3986's unreserved set (and `/`) are
/// percent-encoded.
pub(super) fn path_uri(path: &str) -> String {
    let mut out = String::new();
    let path = path.replace('\\', "/");
    if path.starts_with('/') {
        out.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn region(index: &LineIndex<'_>, span: &std::ops::Range<usize>) -> Value {
    let (start_line, start_column) = index.position(span.start);
    let (end_line, end_column) = index.position(span.end.max(span.start));
    json!({
        "startLine": start_line,
        "startColumn": start_column,
        "endLine": end_line,
        "endColumn": end_column,
    })
}

fn location(uri: &str, region: Option<Value>, text: &str) -> Value {
    let mut physical = json!({ "artifactLocation": { "uri": uri } });
    if let Some(r) = region {
        physical["region"] = r;
    }
    let mut loc = json!({ "physicalLocation": physical });
    if !text.is_empty() {
        loc["message"] = json!({ "text": text });
    }
    loc
}

/// Renders one SARIF log for every file. `describe` gives a code's one-line
/// summary (`plec explain`'s), listed in the log's rules.
pub fn render_sarif(files: &[SarifFile<'_>], describe: &dyn Fn(&str) -> Option<String>) -> String {
    let mut rule_index: BTreeMap<&str, usize> = BTreeMap::new();
    for f in files {
        for d in f.diagnostics {
            let next = rule_index.len();
            rule_index.entry(d.code.as_str()).or_insert(next);
        }
    }
    let mut rules: Vec<(&str, usize)> = rule_index.iter().map(|(c, i)| (*c, *i)).collect();
    rules.sort_by_key(|(_, i)| *i);
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|(code, _)| {
            let mut rule = json!({
                "id": code,
                "help": { "text": format!("run `plec explain {code}` for what it means and how to fix it") },
            });
            if let Some(summary) = describe(code) {
                rule["shortDescription"] = json!({ "text": summary });
            }
            rule
        })
        .collect();
    let mut results = Vec::new();
    let mut artifacts = Vec::new();
    for f in files {
        let uri = path_uri(f.name);
        artifacts.push(json!({ "location": { "uri": uri } }));
        let index = LineIndex::new(f.source);
        for d in f.diagnostics {
            let primary = d.labels.iter().find(|l| l.primary).or(d.labels.first());
            let main = match primary {
                Some(l) => location(&uri, Some(region(&index, &l.span)), &l.text),
                None => location(&uri, None, ""),
            };
            let related: Vec<Value> = d
                .labels
                .iter()
                .filter(|l| primary.is_none_or(|p| !std::ptr::eq(*l, p)))
                .enumerate()
                .map(|(i, l)| {
                    let mut loc = location(&uri, Some(region(&index, &l.span)), &l.text);
                    loc["id"] = json!(i);
                    loc
                })
                .collect();
            let mut text = d.message.clone();
            if let Some(help) = &d.help {
                text.push_str("\nhelp: ");
                text.push_str(help);
            }
            let mut result = json!({
                "ruleId": d.code,
                "ruleIndex": rule_index.get(d.code.as_str()).copied().unwrap_or(0),
                "level": level(d.severity),
                "message": { "text": text },
                "locations": [main],
            });
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            results.push(result);
        }
    }
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "plec",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "artifacts": artifacts,
            "results": results,
        }],
    });
    let mut out =
        serde_json::to_string_pretty(&log).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_percent_encoded() {
        assert_eq!(path_uri("examples/a b.config"), "examples/a%20b.config");
        assert_eq!(path_uri("/tmp/x#1.config"), "file:///tmp/x%231.config");
    }
}
