//! Sparse optimizers for embedding tables: they update only the rows a
//! batch gathered (and the same rows of their state), in place on the
//! device, never a table-sized gradient.
//!
//! Rules (per touched row `r` with summed gradient `g`, after the optional
//! L2 term `g += weight_decay * r`): sgd `r -= lr g`; adagrad (element-wise
//! accumulator starting at `initial_accumulator_value`) `s += g^2; r -= lr
//! g / (sqrt(s) + eps)`; rowwise_adagrad (one accumulator per row, as
//! fbgemm's) `s += mean(g^2); r -= lr g / (sqrt(s) + eps)`; adam (and adamw
//! with decoupled decay) with moments per element and bias correction by
//! the global sparse step count, as fbgemm's.

use std::cell::RefCell;

use candle_core::{backprop::GradStore, DType, Tensor};

use super::fused::{SparseRule, SparseStep};

use super::{eps_of, state};
use crate::proto::checkpoint::{OptimizerState, StateSlot};
use crate::proto::plan::{Optimizer, OptimizerKind};
use crate::runtime::embedding::{Gathered, Table};
use crate::runtime::error::{invalid_plan, Result};

/// Optimizer state of one table, allocated at its first update.
#[derive(Debug, Default)]
struct TableState {
    acc: Option<Tensor>,
    m: Option<Tensor>,
    v: Option<Tensor>,
    /// State of the fused CPU kernel (see `optim::fused::SparseStep`).
    host: Option<(Vec<f32>, Vec<f32>)>,
}

/// A sparse optimizer and its per-table state.
#[derive(Debug)]
pub(crate) struct SparseOptimizer {
    kind: OptimizerKind,
    cfg: Optimizer,
    state: Vec<TableState>,
    steps: u64,
    /// Whether f32 CPU tables may use the fused kernel.
    fused: bool,
}

/// The state tensor in `slot`, created by `init` on first use.
fn state_or(slot: &mut Option<Tensor>, init: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    if let Some(t) = slot {
        return Ok(t.clone());
    }
    let t = init()?;
    *slot = Some(t.clone());
    Ok(t)
}

/// `n` copies of `value`, written in parallel chunks.
fn filled(n: usize, value: f32) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(value, n));
    v
}

/// Writes `src` `[U, w]` into rows `ids` of `dst` `[N, w]`, in place.
fn write_rows(dst: &Tensor, ids: &Tensor, src: &Tensor) -> Result<()> {
    let (u, w) = src.dims2()?;
    let idx = ids.unsqueeze(1)?.broadcast_as((u, w))?.contiguous()?;
    dst.scatter_set(&idx, &src.contiguous()?, 0)?;
    Ok(())
}

impl SparseOptimizer {
    /// An optimizer for `num_tables` tables.
    pub(crate) fn new(cfg: &Optimizer, num_tables: usize) -> Result<Self> {
        let kind = OptimizerKind::try_from(cfg.kind).unwrap_or(OptimizerKind::OptimizerUnspecified);
        if kind == OptimizerKind::OptimizerUnspecified {
            return Err(invalid_plan!("the sparse optimizer has no kind"));
        }
        Ok(Self {
            kind,
            cfg: cfg.clone(),
            state: (0..num_tables).map(|_| TableState::default()).collect(),
            steps: 0,
            fused: true,
        })
    }

    /// Allows or forbids the fused CPU kernel (on by default; a test turns
    /// it off to compare against the tensor path).
    #[cfg(test)]
    pub(crate) fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// The optimizer's settings.
    pub(crate) fn config(&self) -> &Optimizer {
        &self.cfg
    }

    /// Applies the gradients of the gathered rows to their tables.
    pub(crate) fn step(
        &mut self,
        tables: &mut [Table],
        gathered: &[Gathered],
        grads: &GradStore,
        lr: f64,
    ) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let c = &self.cfg;
        let eps = eps_of(c);
        let wd = c.weight_decay as f64;
        for g in gathered {
            if g.host_ids.is_empty() {
                continue;
            }
            let Some(grad) = grads.get(g.rows.as_tensor()) else {
                continue;
            };
            let table = &tables[g.table];
            let fused = self.fusable(table, &self.state[g.table]);
            if fused && self.state[g.table].host.is_none() {
                let fresh = self.host_state(table);
                self.state[g.table].host = Some(fresh);
            }
            let rule = if fused { Some(self.rule()?) } else { None };
            let st = &mut self.state[g.table];
            let rows = g.rows.as_tensor();
            let decoupled = self.kind == OptimizerKind::Adamw;
            if let Some(rule) = rule {
                let Some((a, b)) = st.host.as_mut() else {
                    continue;
                };
                let grad = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
                let op = SparseStep {
                    kind: rule,
                    ids: &g.host_ids,
                    grad: &grad,
                    dim: table.dim,
                    a: RefCell::new(a.as_mut_slice()),
                    b: RefCell::new(b.as_mut_slice()),
                    lr,
                    eps,
                    l2: if decoupled { 0.0 } else { wd },
                    shrink: if decoupled { 1.0 - lr * wd } else { 1.0 },
                    beta1: b1,
                    beta2: b2,
                    bias1: 1.0 - b1.powi(t),
                    bias2: 1.0 - b2.powi(t),
                };
                table.weight.inplace_op1(&op)?;
                continue;
            }
            let grad = if wd > 0.0 && !decoupled {
                (grad + (rows * wd)?)?
            } else {
                grad.clone()
            };
            let shape = table.weight.dims().to_vec();
            let dtype = table.weight.dtype();
            let device = table.weight.device();
            let new = match self.kind {
                OptimizerKind::Sgd => (rows - (grad * lr)?)?,
                OptimizerKind::Adagrad => {
                    let acc = state_or(&mut st.acc, || {
                        Ok((Tensor::zeros(shape.as_slice(), dtype, device)?
                            + c.initial_accumulator_value as f64)?)
                    })?;
                    let s = (acc.index_select(&g.ids, 0)? + grad.sqr()?)?;
                    let upd = grad.div(&(s.sqrt()? + eps)?)?;
                    write_rows(&acc, &g.ids, &s)?;
                    (rows - (upd * lr)?)?
                }
                OptimizerKind::RowwiseAdagrad => {
                    let acc = state_or(&mut st.acc, || {
                        Ok((Tensor::zeros((shape[0], 1), dtype, device)?
                            + c.initial_accumulator_value as f64)?)
                    })?;
                    let s = (acc.index_select(&g.ids, 0)? + grad.sqr()?.mean_keepdim(1)?)?;
                    let upd = grad.broadcast_div(&(s.sqrt()? + eps)?)?;
                    write_rows(&acc, &g.ids, &s)?;
                    (rows - (upd * lr)?)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let zeros = || Ok(Tensor::zeros(shape.as_slice(), dtype, device)?);
                    let m_all = state_or(&mut st.m, zeros)?;
                    let v_all = state_or(&mut st.v, zeros)?;
                    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
                    let m = ((m_all.index_select(&g.ids, 0)? * b1)? + (&grad * (1.0 - b1))?)?;
                    let v = ((v_all.index_select(&g.ids, 0)? * b2)? + (grad.sqr()? * (1.0 - b2))?)?;
                    let mhat = (&m / (1.0 - b1.powi(t)))?;
                    let vhat = (&v / (1.0 - b2.powi(t)))?;
                    let upd = mhat.div(&(vhat.sqrt()? + eps)?)?;
                    write_rows(&m_all, &g.ids, &m)?;
                    write_rows(&v_all, &g.ids, &v)?;
                    let base = if decoupled && wd > 0.0 {
                        (rows * (1.0 - lr * wd))?
                    } else {
                        rows.clone()
                    };
                    (base - (upd * lr)?)?
                }
                OptimizerKind::OptimizerUnspecified => {
                    return Err(invalid_plan!("the sparse optimizer has no kind"))
                }
            };
            write_rows(&table.weight, &g.ids, &new)?;
        }
        Ok(())
    }
}

impl SparseOptimizer {
    /// Whether `table`'s updates run in the fused CPU kernel (an f32,
    /// contiguous table on the CPU, with no state of the tensor path
    /// restored from a checkpoint).
    fn fusable(&self, table: &Table, st: &TableState) -> bool {
        self.fused
            && table.weight.device().is_cpu()
            && table.weight.dtype() == DType::F32
            && table.weight.is_contiguous()
            && st.acc.is_none()
            && st.m.is_none()
    }

    /// The fused kernel's update rule.
    fn rule(&self) -> Result<SparseRule> {
        Ok(match self.kind {
            OptimizerKind::Sgd => SparseRule::Sgd,
            OptimizerKind::Adagrad => SparseRule::Adagrad,
            OptimizerKind::RowwiseAdagrad => SparseRule::RowwiseAdagrad,
            OptimizerKind::Adam | OptimizerKind::Adamw => SparseRule::Adam,
            OptimizerKind::OptimizerUnspecified => {
                return Err(invalid_plan!("the sparse optimizer has no kind"))
            }
        })
    }

    /// The fused kernel's fresh state for `table`: adagrad's accumulators at
    /// `initial_accumulator_value`, adam's moments at zero, written by all of
    /// rayon's threads (their pages are faulted in side by side).
    fn host_state(&self, table: &Table) -> (Vec<f32>, Vec<f32>) {
        let (na, nb) = self.host_lens(table.num_rows, table.dim);
        let init = match self.kind {
            OptimizerKind::Adagrad | OptimizerKind::RowwiseAdagrad => {
                self.cfg.initial_accumulator_value
            }
            _ => 0.0,
        };
        (filled(na, init), filled(nb, 0.0))
    }

    /// Allocates the fused kernel's state of every table that will use it
    /// before the first step, as PyTorch's Adagrad does in its constructor.
    /// A table's first update would otherwise fault in its whole state page
    /// by page on one thread inside that step (AMD EPYC Zen 5 VM, PLE
    /// example, batch 8192: the first step's sparse phase 453 ms, later ones
    /// 1-18 ms).
    pub(crate) fn allocate_state(&mut self, tables: &[Table]) {
        for (i, table) in tables.iter().enumerate() {
            let due = self
                .state
                .get(i)
                .is_some_and(|st| st.host.is_none() && self.fusable(table, st));
            if due {
                let state = self.host_state(table);
                if let Some(st) = self.state.get_mut(i) {
                    st.host = Some(state);
                }
            }
        }
    }

    /// The lengths of the fused kernel's two state buffers for a table of
    /// `rows` x `dim` (as `step` allocates them).
    fn host_lens(&self, rows: usize, dim: usize) -> (usize, usize) {
        match self.kind {
            OptimizerKind::Adagrad => (rows * dim, 0),
            OptimizerKind::RowwiseAdagrad => (rows, 0),
            OptimizerKind::Adam | OptimizerKind::Adamw => (rows * dim, rows * dim),
            _ => (0, 0),
        }
    }

    /// The state as a checkpoint holds it (see `optim::state`): for adam
    /// `a` is the first moment and `b` the second, otherwise `a` is the
    /// accumulator.
    pub(crate) fn export(&self) -> Result<OptimizerState> {
        let mut slots = Vec::with_capacity(self.state.len());
        for st in &self.state {
            let a = st.acc.as_ref().or(st.m.as_ref());
            let slot = match (&st.host, a) {
                (Some((a, b)), _) => StateSlot {
                    present: true,
                    host: true,
                    a: Some(state::from_host(a)),
                    b: Some(state::from_host(b)),
                },
                (None, Some(a)) => StateSlot {
                    present: true,
                    host: false,
                    a: Some(state::from_tensor(a)?),
                    b: st.v.as_ref().map(state::from_tensor).transpose()?,
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

    /// Restores a checkpoint's state for `tables` (the model's, in plan
    /// order), onto their device and dtype.
    pub(crate) fn import(&mut self, saved: &OptimizerState, tables: &[Table]) -> Result<()> {
        state::check_slots(&saved.slots, self.state.len(), "sparse")?;
        state::check_slots(&saved.slots, tables.len(), "sparse")?;
        let adam = matches!(self.kind, OptimizerKind::Adam | OptimizerKind::Adamw);
        for (i, (slot, table)) in saved.slots.iter().zip(tables).enumerate() {
            let what = format!("table \"{}\"", table.name);
            let mut st = TableState::default();
            if slot.present {
                let empty = crate::proto::checkpoint::StateTensor::default();
                let a = slot.a.as_ref().unwrap_or(&empty);
                let b = slot.b.as_ref().unwrap_or(&empty);
                if slot.host {
                    let (na, nb) = self.host_lens(table.num_rows, table.dim);
                    st.host = Some((state::to_host(a, na, &what)?, state::to_host(b, nb, &what)?));
                } else {
                    let dtype = table.weight.dtype();
                    let device = table.weight.device();
                    let n: u64 = a.shape.iter().product();
                    let t = state::to_tensor(a, n as usize, &what, dtype, device)?;
                    let rows_ok = t.dims().first() == Some(&table.num_rows);
                    if !rows_ok {
                        return Err(invalid_plan!(
                            "the checkpoint's optimizer state for {what} has shape {:?}, the table {} rows",
                            t.dims(),
                            table.num_rows
                        ));
                    }
                    if adam {
                        st.m = Some(t);
                        st.v = Some(state::to_tensor(
                            b,
                            table.num_rows * table.dim,
                            &what,
                            dtype,
                            device,
                        )?);
                    } else {
                        st.acc = Some(t);
                    }
                }
            }
            self.state[i] = st;
        }
        self.steps = saved.steps;
        Ok(())
    }
}
