//! A model's dense parameters and how a pass runs: what the model holds
//! and every executor reads (the native engine and the candle path).

use candle_core::{Tensor, Var};

/// Default batch/layer-norm epsilon (torch's) when the plan leaves it 0.
pub(crate) const DEFAULT_NORM_EPS: f64 = 1e-5;
/// Default batch-norm momentum (torch's) when the plan leaves it 0.
pub(crate) const DEFAULT_BN_MOMENTUM: f64 = 0.1;

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, running-stat updates, dropout seeded by
    /// `(seed, step, op index)`, and gradients tracked for embeddings.
    Train { seed: u64, step: u64 },
    /// Running statistics, no dropout, nothing tracked.
    Eval,
}

/// A dense parameter on the device.
#[derive(Debug)]
pub enum ParamSlot {
    /// Trained by the dense optimizer.
    Trainable(Var),
    /// Not trained (batch-norm running statistics); replaced in training.
    Buffer(Tensor),
}

impl ParamSlot {
    /// The current value.
    pub fn tensor(&self) -> &Tensor {
        match self {
            ParamSlot::Trainable(v) => v.as_tensor(),
            ParamSlot::Buffer(t) => t,
        }
    }
}
