//! Stage 3: semantic lint of a bound TorchEasyRec config.
//!
//! The lint stage owns every rule that can be decided from the typed config
//! alone: references between sections (feature groups to features, towers to
//! labels and sample weights, DBMTL relations), values TorchEasyRec would
//! only reject at run time (activations, dropout ratios, bucket settings,
//! expressions, learning rates...), and warnings about legal but almost
//! surely unintended settings. Shape rules (expert widths, empty or zero
//! widths) belong to the IR's shape inference, not here.
//!
//! Each rule is one small function with one stable code and one severity;
//! rules read only the typed config and the [`SpanMap`], never the syntax
//! tree, and change nothing. They tolerate missing values, because lint also
//! runs after schema errors. [`run`] hands back the diagnostics; only the
//! CLI renders them.

mod context;
mod facts;
mod features;
mod groups;
mod hstu;
mod kinds;
mod losses;
mod references;
mod sequences;
mod sid;
mod training;
mod values;
mod warnings;
mod widths;

#[cfg(test)]
mod tests;

use std::ops::Range;

use crate::diag::{Diagnostic, Severity};
use crate::proto::tzrec::protos::EasyRecConfig;
use crate::schema::SpanMap;

use context::Ctx;

/// One lint rule: a stable code, its severity, and the check itself.
pub(crate) struct Rule {
    /// Stable code such as `plec::unknown-feature`.
    pub code: &'static str,
    /// Every diagnostic of this rule has this severity.
    pub severity: Severity,
    /// One line saying what the rule finds.
    pub summary: &'static str,
    /// What it means, an example and how to fix it (`plec explain CODE`).
    pub explain: &'static str,
    check: fn(&Rule, &Ctx, &mut Vec<Diagnostic>),
}

impl Rule {
    /// A diagnostic of this rule (its code and severity).
    fn diag(&self, message: impl Into<String>) -> Diagnostic {
        match self.severity {
            Severity::Error => Diagnostic::error(self.code, message),
            Severity::Warning => Diagnostic::warning(self.code, message),
            Severity::Advice => Diagnostic::advice(self.code, message),
        }
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("code", &self.code)
            .field("severity", &self.severity)
            .finish()
    }
}

/// Labels placed only where the span map knows a span (a rule never fails
/// for want of a position).
trait LabelAt: Sized {
    fn primary_at(self, span: Option<Range<usize>>, text: impl Into<String>) -> Self;
    fn secondary_at(self, span: Option<Range<usize>>, text: impl Into<String>) -> Self;
}

impl LabelAt for Diagnostic {
    fn primary_at(self, span: Option<Range<usize>>, text: impl Into<String>) -> Self {
        match span {
            Some(s) => self.with_primary(s, text),
            None => self,
        }
    }

    fn secondary_at(self, span: Option<Range<usize>>, text: impl Into<String>) -> Self {
        match span {
            Some(s) => self.with_secondary(s, text),
            None => self,
        }
    }
}

/// Every rule, grouped by theme.
fn rule_sets() -> [&'static [Rule]; 11] {
    [
        references::RULES,
        sequences::RULES,
        groups::RULES,
        kinds::RULES,
        hstu::RULES,
        sid::RULES,
        values::RULES,
        losses::RULES,
        features::RULES,
        training::RULES,
        warnings::RULES,
    ]
}

/// Every lint rule plec knows, in a stable order.
pub(crate) fn rules() -> impl Iterator<Item = &'static Rule> {
    rule_sets().into_iter().flatten()
}

/// Every lint code, in a stable order.
pub(crate) fn all_codes() -> Vec<&'static str> {
    rules().map(|r| r.code).collect()
}

/// The rule with this code; `unknown-feature` is accepted for
/// `plec::unknown-feature`.
pub(crate) fn rule(code: &str) -> Option<&'static Rule> {
    let code = code.trim();
    rules().find(|r| r.code == code || r.code.strip_prefix("plec::") == Some(code))
}

/// Runs every rule on a typed config; `spans` locates the values.
pub(crate) fn run(config: &EasyRecConfig, spans: &SpanMap) -> Vec<Diagnostic> {
    let cx = Ctx::new(config, spans);
    let mut out = Vec::new();
    for rule in rules() {
        (rule.check)(rule, &cx, &mut out);
    }
    out
}
