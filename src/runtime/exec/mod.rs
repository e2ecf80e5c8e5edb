//! The executor interface: what runs a loaded plan's ops on a batch. Two
//! implementations: the native CPU engine (`native::Engine`) and candle
//! (`candle::CandleExec`, the reference and the CUDA path). The model owns
//! the parameters and tables and lends them to its executor per pass.

pub mod candle;
pub(crate) mod native;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};

use super::embedding::{Gathered, Table};
use super::error::Result;
use super::params::{Mode, ParamSlot};
use super::precision::Precision;
use crate::data::batch::Batch;
use crate::plan::validate::Analysis;
use crate::proto::plan::Plan;

/// The output of one forward pass.
#[derive(Debug)]
pub struct Forward {
    /// Logits `[B, num_class]` per plan task.
    pub logits: Vec<Tensor>,
    /// Embedding rows gathered for this batch (training only).
    pub gathered: Vec<Gathered>,
    /// Native engine, training: the logits as leaf variables; their
    /// gradient seeds `Model::backward_native`. Empty on the candle path.
    pub logit_vars: Vec<Var>,
}

/// What a model lends its executor for one pass.
pub struct ModelState<'a> {
    /// The plan without parameter or table data.
    pub structure: &'a Plan,
    /// Dense parameters; a training pass replaces batch-norm buffers.
    pub params: &'a mut [ParamSlot],
    pub tables: &'a [Table],
    /// What the plan's ops read and write, computed once when the model
    /// was loaded (producers, readers, embedded features, batch axes).
    pub analysis: &'a Analysis,
    pub device: &'a Device,
    pub dtype: DType,
}

/// Runs a plan's ops.
pub trait Executor: std::fmt::Debug + Send {
    /// `native` or `candle`, for logs and tests.
    fn name(&self) -> &'static str;

    /// Runs every op on `batch` and returns the task logits (and, in
    /// training, what the backward pass needs).
    fn forward(&mut self, m: ModelState<'_>, batch: &Batch, mode: Mode) -> Result<Forward>;

    /// After `loss.backward()` on a training forward pass: adds every
    /// parameter's and gathered table row's gradient to `grads` (nothing
    /// to do where autograd already did it).
    fn backward(&mut self, m: ModelState<'_>, fwd: &Forward, grads: &mut GradStore) -> Result<()>;

    /// Sets the precision of the matrix multiplies, or says why it cannot.
    fn set_precision(&mut self, p: Precision) -> std::result::Result<(), String>;

    /// Per-op times (with `PLEC_PROFILE`).
    fn profile(&self) -> Option<String> {
        None
    }

    /// Frees activation and gradient buffers (rebuilt on the next pass).
    fn release_buffers(&mut self) {}
}

/// Logits as leaf variables (training) so candle's loss graph yields their
/// gradient, or plain tensors (evaluation). `logits` holds one `[rows, C]`
/// row-major vector per task.
pub fn logits_tensors(
    logits: Vec<Vec<f32>>,
    rows: usize,
    device: &Device,
    train: bool,
) -> Result<(Vec<Tensor>, Vec<Var>)> {
    let mut ts = Vec::with_capacity(logits.len());
    let mut vars = Vec::new();
    for l in logits {
        let c = (l.len() / rows.max(1)).max(1);
        let tensor = Tensor::from_vec(l, (rows, c), device)?;
        if train {
            let v = Var::from_tensor(&tensor)?;
            ts.push(v.as_tensor().clone());
            vars.push(v);
        } else {
            ts.push(tensor);
        }
    }
    Ok((ts, vars))
}
