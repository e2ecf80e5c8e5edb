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

impl IrError {
    /// The config path the error is about, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            IrError::Unsupported { path, .. } | IrError::Invalid { path, .. } => Some(path),
            _ => None,
        }
    }
}
