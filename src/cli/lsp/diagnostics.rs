//! `plec check`'s findings as LSP diagnostics: the code (with `plec
//! explain`'s summary in the message's help line when the finding has no
//! help of its own), the primary label's range, the other labels as
//! related information.

use lsp_types::{DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Uri};

use super::text::Lines;
use crate::diag::{Diagnostic, Severity};
use crate::pipeline::check_source;
use crate::schema::Schema;

/// Checks `text` (an unsaved buffer as much as a file) and converts.
pub(crate) fn check(schema: &Schema, uri: &Uri, text: &str) -> Vec<lsp_types::Diagnostic> {
    let checked = check_source(schema, text);
    let lines = Lines::new(text);
    checked
        .diagnostics
        .iter()
        .map(|d| convert(uri, &lines, d))
        .collect()
}

fn convert(uri: &Uri, lines: &Lines<'_>, d: &Diagnostic) -> lsp_types::Diagnostic {
    let range = d
        .primary_span()
        .map_or_else(Default::default, |s| lines.range(&s));
    let help = d
        .help
        .clone()
        .or_else(|| crate::cli::explain::summary(&d.code));
    let mut message = d.message.clone();
    if let Some(h) = help {
        message.push_str("\nhelp: ");
        message.push_str(&h);
    }
    let related: Vec<DiagnosticRelatedInformation> = d
        .labels
        .iter()
        .filter(|l| !l.primary && !l.text.is_empty())
        .map(|l| DiagnosticRelatedInformation {
            location: Location::new(uri.clone(), lines.range(&l.span)),
            message: l.text.clone(),
        })
        .collect();
    lsp_types::Diagnostic {
        range,
        severity: Some(match d.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
            Severity::Advice => DiagnosticSeverity::INFORMATION,
        }),
        code: Some(NumberOrString::String(d.code.clone())),
        source: Some("plec".to_string()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}
