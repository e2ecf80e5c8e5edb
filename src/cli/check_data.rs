//! `plec check CONFIG --data PATH...`: the config's plan against parquet
//! files ([`crate::data::audit`]), each finding turned into a diagnostic at
//! the config line that declares what it is about (the feature's
//! `feature_name`, with its `expression` as a second label; the label or
//! sample weight field).

use std::time::Instant;

use crate::data::audit::{audit, Subject};
use crate::diag::Diagnostic;
use crate::pipeline::{self, BuildError, BuildOptions, Checked};
use crate::schema::SpanMap;

/// What `--data` read, for the summary line.
pub(crate) struct DataSummary {
    pub files: usize,
    pub rows_scanned: u64,
    pub rows_total: u64,
    pub seconds: f64,
}

/// Checks `inputs` against the config in `source` (already checked); the
/// findings come back as diagnostics of the config file.
pub(crate) fn check_data(
    source: &str,
    checked: &Checked,
    inputs: &[String],
    max_rows: Option<u64>,
) -> (Vec<Diagnostic>, Option<DataSummary>) {
    if checked.has_errors() {
        let d = Diagnostic::advice(
            "plec::data::not-checked",
            "the data was not checked: the config has errors",
        )
        .with_help("fix the errors above; the data is checked against what the config reads");
        return (vec![d], None);
    }
    let start = Instant::now();
    let plan = match pipeline::lower(source, BuildOptions::default()).and_then(|l| {
        crate::plan::emit::emit_structure(&l.graph, &l.config, source, 0).map_err(BuildError::from)
    }) {
        Ok(p) => p,
        Err(BuildError::Diagnostics(diags)) => {
            let mut out: Vec<Diagnostic> = diags.into_iter().filter(Diagnostic::is_error).collect();
            out.push(
                Diagnostic::advice(
                    "plec::data::not-checked",
                    "the data was not checked: plec cannot compile this config",
                )
                .with_help("`plec check --data` reads the columns the compiled model reads"),
            );
            return (out, None);
        }
        Err(e) => {
            let d = Diagnostic::error(
                "plec::data::not-checked",
                format!("the data was not checked: {e}"),
            );
            return (vec![d], None);
        }
    };
    let report = audit(&plan, inputs, max_rows);
    let spans = checked.bound.as_ref().map(|b| &b.spans);
    let diags = report
        .findings
        .iter()
        .map(|f| {
            let mut d = match f.severity {
                crate::diag::Severity::Error => Diagnostic::error(&f.code, f.message.clone()),
                crate::diag::Severity::Warning => Diagnostic::warning(&f.code, f.message.clone()),
                crate::diag::Severity::Advice => Diagnostic::advice(&f.code, f.message.clone()),
            };
            if let Some(spans) = spans {
                d = locate(d, &f.subject, spans, source);
            }
            match &f.help {
                Some(h) => d.with_help(h.clone()),
                None => d,
            }
        })
        .collect();
    let summary = DataSummary {
        files: report.files,
        rows_scanned: report.rows_scanned,
        rows_total: report.rows_total,
        seconds: start.elapsed().as_secs_f64(),
    };
    (diags, Some(summary))
}

/// Labels the config line of a finding's subject.
fn locate(d: Diagnostic, subject: &Subject, spans: &SpanMap, source: &str) -> Diagnostic {
    match subject {
        Subject::Feature(name) => match feature_path(spans, source, name) {
            Some(path) => {
                let Some(span) = spans.value(&path) else {
                    return d;
                };
                let d = d.with_primary(span, format!("feature `{name}`"));
                let parent = path.rsplit_once('.').map_or("", |p| p.0);
                match spans.value(&format!("{parent}.expression")) {
                    Some(expr) => d.with_secondary(expr, "reads this column"),
                    None => d,
                }
            }
            None => d,
        },
        Subject::Label(c) => match string_field(spans, source, "data_config.label_fields", c) {
            Some(span) => d.with_primary(span, "label field"),
            None => d,
        },
        Subject::Weight(c) => {
            match string_field(spans, source, "data_config.sample_weight_fields", c) {
                Some(span) => d.with_primary(span, "sample weight field"),
                None => d,
            }
        }
        Subject::Input => d,
    }
}

/// The text of a string value as written, without its quotes.
fn unquoted<'a>(source: &'a str, span: &std::ops::Range<usize>) -> &'a str {
    source
        .get(span.clone())
        .unwrap_or_default()
        .trim_matches(|c| c == '"' || c == '\'')
}

/// The span of the element of repeated string field `prefix` equal to
/// `value`.
fn string_field(
    spans: &SpanMap,
    source: &str,
    prefix: &str,
    value: &str,
) -> Option<std::ops::Range<usize>> {
    spans
        .iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .map(|(_, s)| s.value.clone())
        .find(|s| unquoted(source, s) == value)
}

/// The path of a feature's `feature_name`. Sub-features of a grouped
/// sequence are named `[<group>.]<sequence_name>__<feature_name>` in the
/// plan.
fn feature_path(spans: &SpanMap, source: &str, name: &str) -> Option<String> {
    let by_name = |want: &str, inside_sequence: Option<&str>| {
        spans
            .iter()
            .filter(|(p, _)| p.starts_with("feature_configs[") && p.ends_with(".feature_name"))
            .filter(|(p, _)| p.contains(".features[") == inside_sequence.is_some())
            .find(|(p, s)| {
                unquoted(source, &s.value) == want
                    && inside_sequence.is_none_or(|seq| {
                        let block = p.split(".features[").next().unwrap_or_default();
                        spans
                            .value(&format!("{block}.sequence_name"))
                            .is_some_and(|v| unquoted(source, &v) == seq)
                    })
            })
            .map(|(p, _)| p.clone())
    };
    by_name(name, None).or_else(|| {
        // Plan names of grouped sub-features may carry the group in front
        // (`group.seq__sub`).
        let bare = name.rsplit('.').next().unwrap_or(name);
        let (seq, sub) = bare.split_once("__")?;
        by_name(sub, Some(seq))
    })
}
