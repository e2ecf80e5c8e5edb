//! Why a config could not be lowered to a model graph.

use super::shape::ShapeError;

/// A lowering failure. Shape mistakes are also reported by `plec check`;
/// the other kinds only stop `compile` (the lint rules report reference
/// mistakes; unsupported parts are valid config plec cannot compile yet).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IrError {
    /// Valid config that plec cannot compile yet (a model or feature kind).
    #[error("{what} is not supported by plec compile yet (at {path})")]
    Unsupported { what: String, path: String },
    /// Config that cannot be lowered: a missing group, an unknown feature.
    #[error("{message} (at {path})")]
    Invalid { message: String, path: String },
    /// A shape rule violated (see `ir::explain`).
    #[error("{}: {}", .0.code, .0.message)]
    Shape(ShapeError),
    /// The graph is inconsistent: a bug in plec, not in the config.
    #[error("internal error, the model graph is inconsistent: {}", .0.join("; "))]
    Inconsistent(Vec<String>),
}

impl IrError {
    pub(crate) fn unsupported(what: impl Into<String>, path: impl Into<String>) -> Self {
        IrError::Unsupported {
            what: what.into(),
            path: path.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>, path: impl Into<String>) -> Self {
        IrError::Invalid {
            message: message.into(),
            path: path.into(),
        }
    }
}

/// Codes of the lowering's own diagnostics with their long explanations,
/// for `plec explain`.
pub const LOWER_CODES: &[(&str, &str)] = &[
    (
        "plec::cannot-run",
        "The config is valid TorchEasyRec, but it uses a block plec cannot \
run faithfully yet (a model kind, a sequence feature or encoder, a loss, \
variational dropout...). Rather than train a model that silently lacks that \
part, `plec compile` and `plec run` stop and name every such block at once. \
Blocks that cannot change the model (export settings, features no group \
reads) are only warnings of `plec check`. Fix: remove the block to train \
the model without it, or train this config with TorchEasyRec.",
    ),
    (
        "plec::cannot-lower",
        "The config cannot be turned into a model graph: a feature group names \
a feature that is not defined, an id feature sets no bucket size, two \
features sharing one embedding disagree on its size, a normalizer cannot be \
read. `plec check` reports most of these as lint findings; this code is the \
compiler's own, for what only lowering sees. Fix the block the label points \
at.",
    ),
    (
        "plec::internal",
        "The model graph plec built is inconsistent: a bug in plec, not in the \
config. Please report it with the config.",
    ),
];

impl IrError {
    /// The error as a diagnostic, labelled at its block through `spans`
    /// (the field name of a block, so a label does not box the whole block).
    pub fn to_diagnostic(&self, spans: &crate::schema::SpanMap) -> crate::diag::Diagnostic {
        use crate::diag::Diagnostic;
        let at = |path: &str| spans.name(path).or_else(|| spans.best(path));
        match self {
            IrError::Unsupported { what, path } => {
                let d = Diagnostic::error(
                    "plec::cannot-run",
                    format!("plec cannot run {what} yet; the model would lack it"),
                )
                .with_help(
                    "remove the block to train without it, or train this config with TorchEasyRec",
                );
                match at(path) {
                    Some(span) => d.with_primary(span, "not run by plec"),
                    None => d,
                }
            }
            IrError::Invalid { message, path } => {
                let d = Diagnostic::error("plec::cannot-lower", message.clone());
                match at(path) {
                    Some(span) => d.with_primary(span, "here"),
                    None => d,
                }
            }
            IrError::Shape(e) => e.to_diagnostic(spans),
            IrError::Inconsistent(p) => Diagnostic::error(
                "plec::internal",
                format!(
                    "internal error, the model graph is inconsistent: {}",
                    p.join("; ")
                ),
            ),
        }
    }

    /// The config path the error is about, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            IrError::Unsupported { path, .. } | IrError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}
