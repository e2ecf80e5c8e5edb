//! Dense optimizers over the model's trainable `Var`s, following torch's
//! update rules: SGD (momentum, Nesterov, L2 weight decay), Adagrad
//! (`initial_accumulator_value`), Adam (L2 weight decay) and AdamW
//! (decoupled weight decay). Parameters marked `no_decay` never decay.

use std::cell::RefCell;

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};

use super::fused::AdamStep;

use super::{eps_of, state};
use crate::proto::checkpoint::{OptimizerState, StateSlot};
use crate::proto::plan::{Optimizer, OptimizerKind};
use crate::runtime::error::{invalid_plan, Result};

/// Per-parameter optimizer state.
#[derive(Debug, Default)]
struct State {
    /// Momentum buffer (SGD), accumulated squares (Adagrad) or first moment
    /// (Adam).
    a: Option<Tensor>,
    /// Second moment (Adam).
    b: Option<Tensor>,
    /// Adam's moments on the host, for the fused CPU kernel.
    host: Option<(Vec<f32>, Vec<f32>)>,
}

/// A dense optimizer and its state.
#[derive(Debug)]
pub(crate) struct DenseOptimizer {
    kind: OptimizerKind,
    cfg: Optimizer,
    state: Vec<State>,
    /// Steps taken, for Adam's bias correction.
    steps: u64,
    /// Whether Adam may use the fused CPU kernel (see `optim::fused`).
    fused: bool,
}

impl DenseOptimizer {
    /// An optimizer for `num_params` parameters (indexed like the plan's).
    pub(crate) fn new(cfg: &Optimizer, num_params: usize) -> Result<Self> {
        let kind = OptimizerKind::try_from(cfg.kind).unwrap_or(OptimizerKind::OptimizerUnspecified);
        match kind {
            OptimizerKind::Sgd
            | OptimizerKind::Adagrad
            | OptimizerKind::Adam
            | OptimizerKind::Adamw => {}
            other => {
                return Err(invalid_plan!(
                    "{other:?} is not a dense optimizer (use sgd, adagrad, adam or adamw)"
                ))
            }
        }
        Ok(Self {
            kind,
            cfg: cfg.clone(),
            state: (0..num_params).map(|_| State::default()).collect(),
            steps: 0,
            fused: true,
        })
    }

    /// The optimizer's settings.
    pub(crate) fn config(&self) -> &Optimizer {
        &self.cfg
    }

    /// Allows or forbids the fused CPU kernel (on by default; the tests
    /// turn it off to compare against the tensor path).
    #[cfg(test)]
    pub(crate) fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// One update of every parameter in `params` (plan index, var,
    /// no_decay) that has a gradient in `grads`, with learning rate `lr`.
    pub(crate) fn step(
        &mut self,
        params: &[(usize, &Var, bool)],
        grads: &GradStore,
        lr: f64,
    ) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let c = &self.cfg;
        let eps = eps_of(c);
        for &(i, var, no_decay) in params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_tensor();
            let wd = if no_decay { 0.0 } else { c.weight_decay as f64 };
            let st = &mut self.state[i];
            let new = match self.kind {
                OptimizerKind::Sgd => {
                    let mut g = if wd > 0.0 {
                        (g + (p * wd)?)?
                    } else {
                        g.clone()
                    };
                    if c.momentum > 0.0 {
                        let m = c.momentum as f64;
                        let buf = match &st.a {
                            Some(b) => ((b * m)? + &g)?,
                            None => g.clone(),
                        };
                        g = if c.nesterov {
                            (&g + (&buf * m)?)?
                        } else {
                            buf.clone()
                        };
                        st.a = Some(buf);
                    }
                    (p - (g * lr)?)?
                }
                OptimizerKind::Adagrad => {
                    let g = if wd > 0.0 {
                        (g + (p * wd)?)?
                    } else {
                        g.clone()
                    };
                    let acc = match &st.a {
                        Some(a) => a.clone(),
                        None => (p.zeros_like()? + c.initial_accumulator_value as f64)?,
                    };
                    let acc = (acc + g.sqr()?)?;
                    let upd = g.div(&(acc.sqrt()? + eps)?)?;
                    st.a = Some(acc);
                    (p - (upd * lr)?)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw
                    if self.fused
                        && p.device().is_cpu()
                        && p.dtype() == DType::F32
                        && g.dtype() == DType::F32
                        && p.is_contiguous()
                        && g.is_contiguous()
                        && st.a.is_none() =>
                {
                    let decoupled = self.kind == OptimizerKind::Adamw;
                    let n = p.elem_count();
                    let (m, v) = st.host.get_or_insert_with(|| (vec![0.0; n], vec![0.0; n]));
                    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
                    let op = AdamStep {
                        m: RefCell::new(m.as_mut_slice()),
                        v: RefCell::new(v.as_mut_slice()),
                        lr,
                        beta1: b1,
                        beta2: b2,
                        eps,
                        bias1: 1.0 - b1.powi(t),
                        bias2: 1.0 - b2.powi(t),
                        l2: if decoupled { 0.0 } else { wd },
                        shrink: if decoupled { 1.0 - lr * wd } else { 1.0 },
                    };
                    p.inplace_op2(g, &op)?;
                    continue;
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let decoupled = self.kind == OptimizerKind::Adamw;
                    let g = if wd > 0.0 && !decoupled {
                        (g + (p * wd)?)?
                    } else {
                        g.clone()
                    };
                    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
                    let m = match &st.a {
                        Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                        None => (&g * (1.0 - b1))?,
                    };
                    let v = match &st.b {
                        Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                        None => (g.sqr()? * (1.0 - b2))?,
                    };
                    let mhat = (&m / (1.0 - b1.powi(t)))?;
                    let vhat = (&v / (1.0 - b2.powi(t)))?;
                    let upd = mhat.div(&(vhat.sqrt()? + eps)?)?;
                    st.a = Some(m);
                    st.b = Some(v);
                    let base = if decoupled && wd > 0.0 {
                        (p * (1.0 - lr * wd))?
                    } else {
                        p.clone()
                    };
                    (base - (upd * lr)?)?
                }
                other => return Err(invalid_plan!("{other:?} is not a dense optimizer")),
            };
            var.set(&new)?;
        }
        Ok(())
    }
}

impl DenseOptimizer {
    /// The state as a checkpoint holds it (see `optim::state`).
    pub(crate) fn export(&self) -> Result<OptimizerState> {
        let mut slots = Vec::with_capacity(self.state.len());
        for st in &self.state {
            let slot = match (&st.host, &st.a) {
                (Some((m, v)), _) => StateSlot {
                    present: true,
                    host: true,
                    a: Some(state::from_host(m)),
                    b: Some(state::from_host(v)),
                },
                (None, Some(a)) => StateSlot {
                    present: true,
                    host: false,
                    a: Some(state::from_tensor(a)?),
                    b: st.b.as_ref().map(state::from_tensor).transpose()?,
                },
                (None, None) => StateSlot::default(),
            };
            slots.push(slot);
        }
        Ok(OptimizerState {
            steps: self.steps,
            slots,
        })
    }

    /// Restores a checkpoint's state; `sizes` are the parameters' element
    /// counts in plan order, the tensors go to `device` in `dtype`.
    pub(crate) fn import(
        &mut self,
        saved: &OptimizerState,
        sizes: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<()> {
        state::check_slots(&saved.slots, self.state.len(), "dense")?;
        state::check_slots(&saved.slots, sizes.len(), "dense")?;
        for (i, (slot, &n)) in saved.slots.iter().zip(sizes).enumerate() {
            let what = format!("dense parameter {i}");
            let mut st = State::default();
            if slot.present {
                let a = slot.a.as_ref().ok_or_else(|| {
                    invalid_plan!("the checkpoint's optimizer state for {what} is empty")
                })?;
                if slot.host {
                    let b = slot.b.as_ref().ok_or_else(|| {
                        invalid_plan!("the checkpoint's Adam state for {what} has no second moment")
                    })?;
                    st.host = Some((state::to_host(a, n, &what)?, state::to_host(b, n, &what)?));
                } else {
                    st.a = Some(state::to_tensor(a, n, &what, dtype, device)?);
                    st.b = slot
                        .b
                        .as_ref()
                        .map(|b| state::to_tensor(b, n, &what, dtype, device))
                        .transpose()?;
                }
            }
            self.state[i] = st;
        }
        self.steps = saved.steps;
        Ok(())
    }
}
