//! The candle executor: runs a plan's ops as candle tensor operations,
//! with autograd for the backward pass. The reference every native op is
//! tested against, and the CUDA path.
//!
//! `ops` holds the ops as tensor functions, `fused` the fused bias + relu
//! kernel; the plan rewrites below are candle's alone (the native engine
//! gets the same effects from its views and epilogues).

pub(crate) mod fused;
pub mod ops;

use candle_core::{backprop::GradStore, Device, Tensor};

use super::{Executor, Forward, ModelState};
use crate::data::batch::{Batch, FeatureInput};
use crate::plan::validate::Analysis;
use crate::proto::plan::{Activation, Op, OpKind, Plan, Pooling};
use crate::rng::SplitMix64;
use crate::runtime::embedding;
use crate::runtime::error::{bad_batch, invalid_plan, Result};
use crate::runtime::params::{Mode, ParamSlot, DEFAULT_BN_MOMENTUM, DEFAULT_NORM_EPS};
use crate::runtime::precision::Precision;

/// The candle executor of one plan: the rewrites it runs the plan with.
#[derive(Debug)]
pub struct CandleExec {
    /// Per op: for a STACK of equal, consecutive slices of one matrix, the
    /// single strided view that replaces it (see `StackOfSlices`).
    stack_of_slices: Vec<Option<StackOfSlices>>,
    /// Per op: for a LINEAR whose output only SLICEs read (along its last
    /// axis), true: it is not computed; each SLICE multiplies by its own
    /// rows of the weight instead (see `deferred_linears`).
    deferred: Vec<bool>,
    /// Per op: for such a SLICE, the LINEAR it reads.
    slice_of_linear: Vec<Option<usize>>,
    /// Per op: a LINEAR, BATCHED_LINEAR or slice of a deferred LINEAR with
    /// a bias whose only reader is a relu: it leaves the bias to the relu,
    /// which applies both in one fused kernel (`fused`).
    bias_to_relu: Vec<bool>,
}

impl CandleExec {
    /// The executor of a validated plan.
    pub fn new(plan: &Plan, analysis: &Analysis) -> Self {
        let (deferred, slice_of_linear) = deferred_linears(plan);
        let stack_of_slices = stacks_of_slices(plan, &deferred);
        let bias_to_relu = bias_to_relu(plan, analysis, &slice_of_linear);
        CandleExec {
            stack_of_slices,
            deferred,
            slice_of_linear,
            bias_to_relu,
        }
    }
}

/// The value of op parameter `i` (counts and indices were checked by
/// `plan::validate`).
fn param<'a>(params: &'a [ParamSlot], op: &Op, i: usize) -> &'a Tensor {
    params[op.params[i] as usize].tensor()
}

impl Executor for CandleExec {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn forward(&mut self, m: ModelState<'_>, batch: &Batch, mode: Mode) -> Result<Forward> {
        let plan = m.structure;
        let rows = batch.rows;
        let train = matches!(mode, Mode::Train { .. });
        let lookup = embedding::lookup(
            m.tables,
            &plan.features,
            &m.analysis.embedded,
            &batch.features,
            rows,
            train,
            m.device,
        )?;
        let mut values: Vec<Option<Tensor>> = vec![None; plan.values.len()];
        let mut buffer_updates: Vec<(usize, Tensor)> = Vec::new();
        // Biases left to the relu that reads the value (`bias_to_relu`).
        let mut pending_bias: Vec<Option<Tensor>> = vec![None; plan.values.len()];
        // Training-loss terms of the ops (variational dropout's).
        let mut penalties: Vec<Tensor> = Vec::new();
        for (oi, op) in plan.ops.iter().enumerate() {
            if self.deferred[oi] {
                continue;
            }
            let kind = OpKind::try_from(op.kind).unwrap_or(OpKind::OpUnspecified);
            let input = |i: usize| -> Result<&Tensor> {
                values[op.inputs[i] as usize].as_ref().ok_or_else(|| {
                    invalid_plan!("op \"{}\" reads a value not yet computed", op.name)
                })
            };
            let axis = |rank: usize| -> Result<usize> {
                crate::plan::resolve_axis(op.axis as i64, rank).ok_or_else(|| {
                    invalid_plan!("op \"{}\" has axis {} for rank {}", op.name, op.axis, rank)
                })
            };
            let out = match kind {
                OpKind::FeatureGroup => {
                    let mut parts = Vec::with_capacity(op.features.len());
                    for &f in &op.features {
                        let f = f as usize;
                        if let Some(t) = &lookup.pooled[f] {
                            parts.push(t.clone());
                            continue;
                        }
                        let spec = &plan.features[f];
                        match &batch.features[f] {
                            FeatureInput::Dense { values, dim } => {
                                if values.len() != rows * dim {
                                    return Err(bad_batch!(
                                        "feature \"{}\" has {} values for {} rows of width {}",
                                        spec.name,
                                        values.len(),
                                        rows,
                                        dim
                                    ));
                                }
                                parts.push(
                                    Tensor::from_slice(values, (rows, *dim), m.device)?
                                        .to_dtype(m.dtype)?,
                                );
                            }
                            FeatureInput::Ids { .. } | FeatureInput::SeqDense { .. } => {
                                return Err(bad_batch!(
                                    "feature \"{}\" is dense but the batch holds ids or steps for it",
                                    spec.name
                                ))
                            }
                        }
                    }
                    let out = Tensor::cat(&parts, 1)?;
                    if let Some(&w) = plan.values[op.output as usize].shape.get(1) {
                        if w > 0 && out.dim(1)? != w as usize {
                            return Err(bad_batch!(
                                "feature group \"{}\" is {} wide, the plan says {}",
                                op.name,
                                out.dim(1)?,
                                w
                            ));
                        }
                    }
                    out
                }
                OpKind::Linear if self.bias_to_relu[oi] => {
                    pending_bias[op.output as usize] = Some(param(m.params, op, 1).clone());
                    ops::linear(input(0)?, param(m.params, op, 0), None)?
                }
                OpKind::Linear => ops::linear(
                    input(0)?,
                    param(m.params, op, 0),
                    (op.params.len() > 1).then(|| param(m.params, op, 1)),
                )?,
                OpKind::BatchedLinear if self.bias_to_relu[oi] => {
                    pending_bias[op.output as usize] = Some(param(m.params, op, 1).clone());
                    ops::batched_linear(input(0)?, param(m.params, op, 0), None)?
                }
                OpKind::BatchedLinear => ops::batched_linear(
                    input(0)?,
                    param(m.params, op, 0),
                    (op.params.len() > 1).then(|| param(m.params, op, 1)),
                )?,
                OpKind::BatchNorm => {
                    let full = input(0)?;
                    // Over the steps too: the steps become rows.
                    let flat = match (op.over_steps, full.dims()) {
                        (true, &[b, l, c]) => Some((full.reshape((b * l, c))?, (b, l, c))),
                        _ => None,
                    };
                    let x = flat.as_ref().map_or(full, |(t, _)| t);
                    let ax = if flat.is_some() {
                        0
                    } else {
                        m.analysis.batch_axis[oi]
                    };
                    let eps = if op.eps > 0.0 {
                        op.eps as f64
                    } else {
                        DEFAULT_NORM_EPS
                    };
                    let (gamma, beta) = (param(m.params, op, 0), param(m.params, op, 1));
                    let y = if train {
                        let (mean, var) = ops::batch_moments(x, ax)?;
                        let y = ops::batch_norm_apply(x, &mean, &var, gamma, beta, ax, eps)?;
                        let mom = if op.momentum > 0.0 {
                            op.momentum as f64
                        } else {
                            DEFAULT_BN_MOMENTUM
                        };
                        let n = x.dim(ax)? as f64;
                        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
                        let mean = mean.squeeze(ax)?.detach();
                        let var = (var.squeeze(ax)?.detach() * unbiased)?;
                        let rm = ((param(m.params, op, 2) * (1.0 - mom))? + (mean * mom)?)?;
                        let rv = ((param(m.params, op, 3) * (1.0 - mom))? + (var * mom)?)?;
                        buffer_updates.push((op.params[2] as usize, rm));
                        buffer_updates.push((op.params[3] as usize, rv));
                        y
                    } else {
                        let rm = param(m.params, op, 2).unsqueeze(ax)?;
                        let rv = param(m.params, op, 3).unsqueeze(ax)?;
                        ops::batch_norm_apply(x, &rm, &rv, gamma, beta, ax, eps)?
                    };
                    match flat {
                        Some((_, dims)) => y.reshape(dims)?,
                        None => y,
                    }
                }
                OpKind::LayerNorm => {
                    let eps = if op.eps > 0.0 {
                        op.eps as f64
                    } else {
                        DEFAULT_NORM_EPS
                    };
                    ops::layer_norm(
                        input(0)?,
                        param(m.params, op, 0),
                        param(m.params, op, 1),
                        eps,
                    )?
                }
                OpKind::Activation if pending_bias[op.inputs[0] as usize].is_some() => {
                    let b = pending_bias[op.inputs[0] as usize]
                        .take()
                        .ok_or_else(|| invalid_plan!("op \"{}\" lost its bias", op.name))?;
                    fused::bias_relu(input(0)?, &b)?
                }
                OpKind::Activation => {
                    let act = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let slope = (!op.params.is_empty()).then(|| param(m.params, op, 0));
                    ops::activation(input(0)?, act, op.alpha, slope)?
                }
                OpKind::Dropout => {
                    let x = input(0)?;
                    match mode {
                        Mode::Train { seed, step } if op.ratio > 0.0 => {
                            let mut rng = SplitMix64::derive(seed, &[step, oi as u64]);
                            let mask =
                                ops::dropout_mask(x.dims(), op.ratio, &mut rng, m.dtype, m.device)?;
                            ops::dropout_with_mask(x, &mask, op.ratio)?
                        }
                        _ => x.clone(),
                    }
                }
                OpKind::Concat => {
                    let xs = (0..op.inputs.len())
                        .map(|i| input(i).cloned())
                        .collect::<Result<Vec<_>>>()?;
                    let ax = axis(xs[0].rank())?;
                    Tensor::cat(&xs, ax)?
                }
                OpKind::Slice if self.slice_of_linear[oi].is_some() => {
                    let l = self.slice_of_linear[oi]
                        .and_then(|l| plan.ops.get(l))
                        .ok_or_else(|| invalid_plan!("op \"{}\" lost its linear", op.name))?;
                    let x = values[l.inputs[0] as usize].as_ref().ok_or_else(|| {
                        invalid_plan!("op \"{}\" reads a value not yet computed", l.name)
                    })?;
                    let w = param(m.params, l, 0);
                    let (start, len) = (op.start as usize, op.length as usize);
                    if start + len > w.dim(0)? {
                        return Err(invalid_plan!(
                            "op \"{}\" slices [{}, {}) of an axis of size {}",
                            op.name,
                            start,
                            start + len,
                            w.dim(0)?
                        ));
                    }
                    let b = match l.params.len() > 1 {
                        true => Some(param(m.params, l, 1).narrow(0, start, len)?),
                        false => None,
                    };
                    if self.bias_to_relu[oi] {
                        pending_bias[op.output as usize] = b;
                        ops::linear(x, &w.narrow(0, start, len)?, None)?
                    } else {
                        ops::linear(x, &w.narrow(0, start, len)?, b.as_ref())?
                    }
                }
                OpKind::Slice => {
                    let x = input(0)?;
                    let ax = axis(x.rank())?;
                    let (start, len) = (op.start as usize, op.length as usize);
                    if start + len > x.dim(ax)? {
                        return Err(invalid_plan!(
                            "op \"{}\" slices [{}, {}) of an axis of size {}",
                            op.name,
                            start,
                            start + len,
                            x.dim(ax)?
                        ));
                    }
                    x.narrow(ax, start, len)?
                }
                OpKind::Stack if self.stack_of_slices[oi].is_some() => {
                    let f = self.stack_of_slices[oi]
                        .ok_or_else(|| invalid_plan!("op \"{}\" lost its slices", op.name))?;
                    let x = values[f.value].as_ref().ok_or_else(|| {
                        invalid_plan!("op \"{}\" reads a value not yet computed", op.name)
                    })?;
                    let b = x.dim(0)?;
                    if f.start + f.k * f.len > x.dim(1)? {
                        return Err(invalid_plan!(
                            "op \"{}\" stacks slices past the end of an axis of size {}",
                            op.name,
                            x.dim(1)?
                        ));
                    }
                    x.narrow(1, f.start, f.k * f.len)?
                        .reshape((b, f.k, f.len))?
                        .transpose(0, 1)?
                        .contiguous()?
                }
                OpKind::Stack => {
                    let xs = (0..op.inputs.len())
                        .map(|i| input(i).cloned())
                        .collect::<Result<Vec<_>>>()?;
                    Tensor::stack(&xs, 0)?
                }
                OpKind::Softmax => {
                    let x = input(0)?;
                    ops::softmax(x, axis(x.rank())?)?
                }
                OpKind::GateMix => ops::gate_mix(input(0)?, input(1)?)?,
                OpKind::SequenceEmbed => {
                    let mut parts = Vec::with_capacity(op.features.len());
                    for &f in &op.features {
                        let f = f as usize;
                        parts.push(match &lookup.pooled[f] {
                            Some(t) => t.clone(),
                            None => sequence_values(
                                &plan.features[f],
                                &batch.features[f],
                                rows,
                                m.device,
                            )?
                            .to_dtype(m.dtype)?,
                        });
                    }
                    Tensor::cat(&parts, 2)?
                }
                OpKind::SequenceMask => {
                    let f = op.features[0] as usize;
                    sequence_mask(&plan.features[f], &batch.features[f], rows, m.device)?
                        .to_dtype(m.dtype)?
                }
                OpKind::DinInput => ops::din_input(input(0)?, input(1)?)?,
                OpKind::DotScores => ops::dot_scores(input(0)?, input(1)?)?,
                OpKind::AttentionPool => ops::attention_pool(input(0)?, input(1)?, input(2)?)?,
                OpKind::SequencePool => ops::sequence_pool(
                    input(0)?,
                    input(1)?,
                    Pooling::try_from(op.pooling) == Ok(Pooling::Mean),
                )?,
                OpKind::VariationalDropout => {
                    let x = input(0)?;
                    let fp = param(m.params, op, 0);
                    let columns: Vec<u32> = op
                        .widths
                        .iter()
                        .enumerate()
                        .flat_map(|(f, &w)| std::iter::repeat_n(f as u32, w as usize))
                        .collect();
                    if columns.len() != x.dim(1)? || fp.elem_count() != op.widths.len() {
                        return Err(invalid_plan!(
                            "variational dropout \"{}\" has {} feature widths summing to {} for a {}-wide input and {} drop logits",
                            op.name,
                            op.widths.len(),
                            columns.len(),
                            x.dim(1)?,
                            fp.elem_count()
                        ));
                    }
                    let columns = Tensor::from_vec(columns, x.dim(1)?, m.device)?;
                    match mode {
                        Mode::Train { seed, step } => {
                            let mut rng = SplitMix64::derive(seed, &[step, oi as u64]);
                            let (rows, f) = (x.dim(0)?, op.widths.len());
                            let u: Vec<f32> =
                                (0..rows * f).map(|_| rng.next_f64() as f32).collect();
                            let u = Tensor::from_vec(u, (rows, f), m.device)?.to_dtype(m.dtype)?;
                            penalties.push(ops::variational_dropout_penalty(fp, op.alpha, rows)?);
                            ops::variational_dropout(x, fp, &columns, Some(&u))?
                        }
                        _ => ops::variational_dropout(x, fp, &columns, None)?,
                    }
                }
                OpKind::WindowInput => ops::window_input(input(0)?, input(1)?)?,
                OpKind::WindowPool => {
                    let windows: Vec<usize> = op.widths.iter().map(|&w| w as usize).collect();
                    ops::window_pool(input(0)?, input(1)?, input(2)?, input(3)?, &windows)?
                }
                OpKind::MultiHeadAttention => {
                    let heads = op.heads as usize;
                    let q = input(0)?;
                    let keep = match mode {
                        Mode::Train { seed, step } if op.ratio > 0.0 => {
                            let (b, l, _) = q.dims3()?;
                            let mut rng = SplitMix64::derive(seed, &[step, oi as u64]);
                            let shape = [b, heads, l, l];
                            Some(ops::dropout_mask(
                                &shape, op.ratio, &mut rng, m.dtype, m.device,
                            )?)
                        }
                        _ => None,
                    };
                    ops::multi_head_attention(
                        q,
                        input(1)?,
                        input(2)?,
                        input(3)?,
                        heads,
                        keep.as_ref().map(|k| (k, op.ratio)),
                    )?
                }
                OpKind::MaskedMean => ops::masked_mean(input(0)?, input(1)?, input(2)?)?,
                OpKind::Intervention => ops::intervention(
                    input(0)?,
                    input(1)?,
                    (param(m.params, op, 0), param(m.params, op, 1)),
                    (param(m.params, op, 2), param(m.params, op, 3)),
                )?,
                OpKind::Mul => ops::mul(input(0)?, input(1)?, op.alpha)?,
                OpKind::Dice => ops::dice_gate(input(0)?, input(1)?, param(m.params, op, 0))?,
                OpKind::StopGradient => input(0)?.detach(),
                OpKind::OpUnspecified => {
                    return Err(invalid_plan!("op \"{}\" has no kind", op.name))
                }
            };
            values[op.output as usize] = Some(out);
        }
        for (i, t) in buffer_updates {
            m.params[i] = ParamSlot::Buffer(t);
        }
        let logits = plan
            .tasks
            .iter()
            .map(|t| {
                values[t.logits as usize].clone().ok_or_else(|| {
                    invalid_plan!("the logits of task \"{}\" are never computed", t.tower_name)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Forward {
            logits,
            gathered: lookup.gathered,
            logit_vars: Vec::new(),
            penalties,
        })
    }

    /// Autograd already computed every gradient from the loss.
    fn backward(&mut self, _: ModelState<'_>, _: &Forward, _: &mut GradStore) -> Result<()> {
        Ok(())
    }

    fn set_precision(&mut self, p: Precision) -> std::result::Result<(), String> {
        match p {
            Precision::F32 => Ok(()),
            Precision::Bf16 => {
                Err("bf16 runs on the native CPU engine (f32 models on the CPU)".into())
            }
        }
    }
}

/// Finds the ops `CandleExec::bias_to_relu` describes.
fn bias_to_relu(plan: &Plan, analysis: &Analysis, slice_of_linear: &[Option<usize>]) -> Vec<bool> {
    let readers = &analysis.readers;
    let logits: Vec<usize> = plan.tasks.iter().map(|t| t.logits as usize).collect();
    plan.ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let has_bias = match OpKind::try_from(op.kind) {
                Ok(OpKind::Linear | OpKind::BatchedLinear) => op.params.len() > 1,
                Ok(OpKind::Slice) => slice_of_linear[i]
                    .and_then(|l| plan.ops.get(l))
                    .is_some_and(|l| l.params.len() > 1),
                _ => false,
            };
            let out = op.output as usize;
            let only_relu = match readers.get(out).map(|r| r.as_slice()) {
                Some([r]) => {
                    let a = &plan.ops[*r];
                    OpKind::try_from(a.kind) == Ok(OpKind::Activation)
                        && Activation::try_from(a.activation) == Ok(Activation::Relu)
                        && a.inputs.len() == 1
                }
                _ => false,
            };
            has_bias && only_relu && !logits.contains(&out)
        })
        .collect()
}

/// Finds LINEAR ops (rank-2 input) whose output is read only by SLICE ops
/// along the last axis and is not a task's logits. The fused-expert pass
/// emits one per PLE layer: all first-layer experts and gates in one wide
/// multiply, then slices. Each slice `[B, len]` of `x W^T + b` equals
/// `x W[s..s+len]^T + b[s..s+len]`, and computing it that way makes the
/// backward pass pad only the weight's gradient (`[out, in]`) per slice
/// instead of the activation's (`[B, out]`, far larger for big batches).
/// The multiply-adds are the same.
fn deferred_linears(plan: &Plan) -> (Vec<bool>, Vec<Option<usize>>) {
    let n = plan.ops.len();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); plan.values.len()];
    for (i, op) in plan.ops.iter().enumerate() {
        for &v in &op.inputs {
            if let Some(c) = consumers.get_mut(v as usize) {
                c.push(i);
            }
        }
    }
    let logits: Vec<usize> = plan.tasks.iter().map(|t| t.logits as usize).collect();
    let mut deferred = vec![false; n];
    let mut slice_of = vec![None; n];
    for (i, op) in plan.ops.iter().enumerate() {
        if OpKind::try_from(op.kind) != Ok(OpKind::Linear) || op.inputs.is_empty() {
            continue;
        }
        let input_rank = plan
            .values
            .get(op.inputs[0] as usize)
            .map_or(0, |v| v.shape.len());
        let out = op.output as usize;
        let out_rank = plan.values.get(out).map_or(0, |v| v.shape.len());
        let readers = consumers.get(out).map_or(&[][..], |c| c.as_slice());
        let all_slices = !readers.is_empty()
            && readers.iter().all(|&c| {
                let s = &plan.ops[c];
                OpKind::try_from(s.kind) == Ok(OpKind::Slice)
                    && s.inputs.len() == 1
                    && crate::plan::resolve_axis(s.axis as i64, out_rank) == Some(1)
            });
        if input_rank == 2 && out_rank == 2 && all_slices && !logits.contains(&out) {
            deferred[i] = true;
            for &c in readers {
                slice_of[c] = Some(i);
            }
        }
    }
    (deferred, slice_of)
}

/// A STACK (axis 0) of `k` SLICEs of one rank-2 value along its last axis,
/// each `len` wide and starting where the previous ended, from `start`:
/// the fused-expert pass emits one per fused expert group. Computed as
/// `x.narrow(1, start, k len).reshape(B, k, len).transpose(0, 1)`, so the
/// backward pass is one transposed copy (and at most one zero-padding)
/// instead of `k` full-width zero-paddings (candle's narrow backward pads
/// every slice's gradient back to the full width) plus their sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StackOfSlices {
    value: usize,
    start: usize,
    len: usize,
    k: usize,
}

/// Finds the STACK ops that `StackOfSlices` describes.
fn stacks_of_slices(plan: &Plan, deferred: &[bool]) -> Vec<Option<StackOfSlices>> {
    let mut producer = vec![None; plan.values.len()];
    for (i, op) in plan.ops.iter().enumerate() {
        if let Some(p) = producer.get_mut(op.output as usize) {
            *p = Some(i);
        }
    }
    plan.ops
        .iter()
        .map(|op| {
            if OpKind::try_from(op.kind) != Ok(OpKind::Stack) || op.inputs.len() < 2 {
                return None;
            }
            let mut found: Option<StackOfSlices> = None;
            for (j, &v) in op.inputs.iter().enumerate() {
                let s = &plan.ops[(*producer.get(v as usize)?)?];
                if OpKind::try_from(s.kind) != Ok(OpKind::Slice) || s.inputs.len() != 1 {
                    return None;
                }
                let src = s.inputs[0] as usize;
                if producer
                    .get(src)
                    .copied()
                    .flatten()
                    .is_some_and(|p| deferred.get(p) == Some(&true))
                {
                    return None;
                }
                let rank = plan.values.get(src)?.shape.len();
                if rank != 2 || crate::plan::resolve_axis(s.axis as i64, rank) != Some(1) {
                    return None;
                }
                let (start, len) = (s.start as usize, s.length as usize);
                match found {
                    None => {
                        found = Some(StackOfSlices {
                            value: src,
                            start,
                            len,
                            k: op.inputs.len(),
                        })
                    }
                    Some(f) => {
                        if f.value != src || f.len != len || start != f.start + j * len {
                            return None;
                        }
                    }
                }
            }
            found.filter(|f| f.len > 0)
        })
        .collect()
}

/// The steps of a dense sequence feature as `[B, L, dim]` (zero past each
/// row's length).
fn sequence_values(
    spec: &crate::proto::plan::FeatureSpec,
    input: &FeatureInput,
    rows: usize,
    device: &Device,
) -> Result<Tensor> {
    let FeatureInput::SeqDense {
        values,
        offsets,
        dim,
    } = input
    else {
        return Err(bad_batch!(
            "sequence feature \"{}\" needs dense steps, the batch holds something else",
            spec.name
        ));
    };
    check_offsets(spec, offsets, rows)?;
    if values.len() != offsets[rows] as usize * dim {
        return Err(bad_batch!(
            "sequence feature \"{}\" has {} values for {} steps of width {}",
            spec.name,
            values.len(),
            offsets[rows],
            dim
        ));
    }
    let steps = spec.sequence_length as usize;
    let positions = embedding::step_positions(spec, offsets, rows)?;
    let mut out = vec![0f32; rows * steps * dim];
    for (i, &p) in positions.iter().enumerate() {
        let p = p as usize;
        out[p * dim..(p + 1) * dim].copy_from_slice(&values[i * dim..(i + 1) * dim]);
    }
    Ok(Tensor::from_vec(out, (rows, steps, *dim), device)?)
}

/// `[B, L]`: 1 at the steps each row has of sequence feature `spec`.
fn sequence_mask(
    spec: &crate::proto::plan::FeatureSpec,
    input: &FeatureInput,
    rows: usize,
    device: &Device,
) -> Result<Tensor> {
    let offsets = match input {
        FeatureInput::Ids { offsets, .. } | FeatureInput::SeqDense { offsets, .. } => offsets,
        FeatureInput::Dense { .. } => {
            return Err(bad_batch!(
                "sequence feature \"{}\" holds plain dense values in the batch",
                spec.name
            ))
        }
    };
    check_offsets(spec, offsets, rows)?;
    let steps = spec.sequence_length as usize;
    let positions = embedding::step_positions(spec, offsets, rows)?;
    let mut mask = vec![0f32; rows * steps];
    for p in positions {
        mask[p as usize] = 1.0;
    }
    Ok(Tensor::from_vec(mask, (rows, steps), device)?)
}

fn check_offsets(
    spec: &crate::proto::plan::FeatureSpec,
    offsets: &[u32],
    rows: usize,
) -> Result<()> {
    if offsets.len() != rows + 1 || offsets[0] != 0 || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(bad_batch!(
            "sequence feature \"{}\" has malformed step offsets for {} rows",
            spec.name,
            rows
        ));
    }
    Ok(())
}
