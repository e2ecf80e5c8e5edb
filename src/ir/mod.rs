//! Stage 4: lowering the typed config to a model graph, and the shape rules.
//!
//! [`lower`] turns an `EasyRecConfig` into a [`ModelGraph`] (petgraph) whose
//! nodes are what a modeler talks about: input columns, features, embedding
//! tables, the feature group, experts, gates, towers, losses and metrics;
//! edges carry shapes with a symbolic batch axis. [`shape`] is the single
//! source of truth for widths and the shape diagnostics `plec check`
//! reports ([`shape_diagnostics`], [`explain`]). The graph is handed to
//! `passes` and then to `plan::emit`. [`reference`] evaluates emitted plans
//! in plain Rust so passes can be checked for equivalence.

pub mod coverage;
pub mod error;
pub mod graph;
pub mod init;
pub mod lower;
pub mod reference;
pub mod shape;
pub mod summary;

#[cfg(test)]
pub(crate) mod tests;

pub use coverage::lower_faithfully;
pub use error::IrError;
pub use graph::{ModelGraph, Node};
pub use lower::lower;
pub use shape::{shape_diagnostics, ShapeError, SHAPE_CODES};
pub use summary::{summarize, Summary};

/// The long explanation of a shape diagnostic code, for `plec explain`.
pub fn explain(code: &str) -> Option<&'static str> {
    shape::explain(code)
}
