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

pub(crate) mod coverage;
pub(crate) mod error;
pub(crate) mod graph;
pub(crate) mod init;
pub(crate) mod lower;
pub(crate) mod orthogonal;
#[cfg(test)]
pub(crate) mod reference;
pub(crate) mod shape;
pub(crate) mod summary;
pub(crate) mod torch_names;

#[cfg(test)]
pub(crate) mod tests;

pub(crate) use coverage::lower_faithfully;
pub(crate) use error::IrError;
pub(crate) use graph::ModelGraph;
pub(crate) use lower::lower;
pub(crate) use shape::{shape_diagnostics, SHAPE_CODES};
pub(crate) use summary::{summarize, Summary};

/// The long explanation of a shape diagnostic code, for `plec explain`.
pub(crate) fn explain(code: &str) -> Option<&'static str> {
    shape::explain(code)
}
