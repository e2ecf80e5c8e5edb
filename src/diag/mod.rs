//! Diagnostics shared by every stage: data first (code, severity, message,
//! labels, help), rendered by miette for people, and for tools as JSON lines,
//! SARIF 2.1.0 or GitHub Actions workflow commands.
//!
//! Stages return `Vec<Diagnostic>`; only the CLI renders them and decides the
//! exit code.

mod github;
mod render;
mod sarif;

use std::ops::Range;

pub use github::render_github;
pub use render::{render_human, render_json, LineIndex};
pub use sarif::{render_sarif, SarifFile};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Advice,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Advice => "advice",
        }
    }
}

/// A labelled byte range of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Range<usize>,
    pub text: String,
    /// The primary label is where the problem is; others give context.
    pub primary: bool,
}

/// One finding about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code such as `plec::unknown-field`.
    pub code: String,
    /// Lowercase, no trailing period, in the user's words.
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    fn new(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code: code.to_string(),
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    pub fn advice(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Advice, code, message)
    }

    /// Adds the primary label.
    pub fn with_primary(mut self, span: Range<usize>, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary label.
    pub fn with_secondary(mut self, span: Range<usize>, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
            primary: false,
        });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The primary label's span, if any.
    pub fn primary_span(&self) -> Option<Range<usize>> {
        self.labels
            .iter()
            .find(|l| l.primary)
            .or(self.labels.first())
            .map(|l| l.span.clone())
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sorts diagnostics by position (unlabelled last), keeping stable order.
pub fn sort_by_position(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| d.primary_span().map_or(usize::MAX, |s| s.start));
}

/// Suggests the known names closest to `name` (Jaro-Winkler and edit
/// distance), best first, at most `max`.
pub fn closest_names<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(f64, &str)> = known
        .into_iter()
        .filter_map(|k| {
            let kl = k.to_ascii_lowercase();
            let jw = strsim::jaro_winkler(&lower, &kl);
            let lev = strsim::levenshtein(&lower, &kl);
            let close_edit = lev <= 2.max(name.len() / 4);
            let prefix = kl.starts_with(&lower) || lower.starts_with(&kl);
            if jw >= 0.88 || close_edit || (prefix && lower.len() >= 3) {
                Some((jw - lev as f64 * 0.01, k))
            } else {
                None
            }
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(max)
        .map(|(_, k)| k.to_string())
        .collect()
}

/// Formats names as `` `a`, `b` or `c` `` for help texts.
pub fn one_of(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}
