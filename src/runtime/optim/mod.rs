//! Optimizers: dense ones over the model's `Var`s, sparse ones over the
//! embedding rows a batch touched, and the learning-rate schedules both use.

pub(crate) mod dense;
pub(crate) mod fused;
pub(crate) mod schedule;
pub(crate) mod sparse;
pub(crate) mod state;

use crate::proto::plan::{Optimizer, OptimizerKind};

/// torch's Adagrad epsilon, used when the plan leaves `eps` at 0 (a zero
/// epsilon divides zero by zero for a row that never had a gradient).
pub(crate) const DEFAULT_ADAGRAD_EPS: f64 = 1e-10;
/// torch's Adam epsilon, used when the plan leaves `eps` at 0.
pub(crate) const DEFAULT_ADAM_EPS: f64 = 1e-8;

/// The epsilon an optimizer uses.
pub(crate) fn eps_of(opt: &Optimizer) -> f64 {
    if opt.eps > 0.0 {
        return opt.eps as f64;
    }
    match OptimizerKind::try_from(opt.kind) {
        Ok(OptimizerKind::Adam | OptimizerKind::Adamw) => DEFAULT_ADAM_EPS,
        _ => DEFAULT_ADAGRAD_EPS,
    }
}
