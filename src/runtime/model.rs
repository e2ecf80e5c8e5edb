//! The model: a plan's parameters and tables on a device, and the executor
//! that runs the plan's ops on one batch.
//!
//! Trainable dense parameters become candle `Var`s; buffers (batch-norm
//! running statistics) stay plain tensors that the forward pass replaces
//! in training. Embedding tables are device tensors (see `embedding`).
//! The model keeps a copy of the plan without any parameter or table data
//! (the structure), so `to_plan` can write the trained values back.

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};

use super::embedding::{self, f32s_from_le, f32s_to_le, Gathered, Table};
use super::engine_choice::{announce_once, engine_choice, fallback_notice, EngineChoice};
use super::error::{bad_batch, invalid_plan, Result, RuntimeError};
use super::ops;
use crate::data::batch::{Batch, FeatureInput};
use crate::proto::plan::{Activation, Op, OpKind, Plan, Pooling};
use crate::rng::SplitMix64;

pub use super::params::{Mode, ParamSlot, DEFAULT_BN_MOMENTUM, DEFAULT_NORM_EPS};

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

/// A plan loaded onto a device.
#[derive(Debug)]
pub struct Model {
    device: Device,
    dtype: DType,
    /// The plan without parameter or table data.
    structure: Plan,
    params: Vec<ParamSlot>,
    tables: Vec<Table>,
    /// Embedded features read by some FEATURE_GROUP op.
    embedded: Vec<usize>,
    /// Per op: the batch axis of its first input (from the value shape).
    batch_axis: Vec<usize>,
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
    /// which applies both in one fused kernel (`runtime::fused`).
    bias_to_relu: Vec<bool>,
    /// The native CPU engine (`runtime::native`), when it runs this plan.
    native: Option<super::native::Engine>,
    /// Wall time spent in `forward` (benchmarks report model-only speed).
    forward_time: std::time::Duration,
}

/// A tensor's values as little-endian f32 bytes. f32 CPU tensors are read
/// in place (no intermediate `Vec<f32>`: the embedding tables are most of
/// a plan, and `to_plan` runs while the whole model is in memory).
fn le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    if let Ok(host) = super::native::host::tensor_f32(t) {
        return Ok(f32s_to_le(host.slice()));
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f32s_to_le(&v))
}

/// The native engine for a plan, as `choice` asks: none for
/// `candle` or off the CPU (f32 only); for `auto`, none with a notice when
/// the engine refuses an op (`Unsupported`); an error for `native` then,
/// and for an inconsistent plan always (candle could not run it either).
fn native_engine(
    structure: &Plan,
    batch_axis: &[usize],
    device: &Device,
    dtype: DType,
    choice: EngineChoice,
) -> Result<Option<super::native::Engine>> {
    if choice == EngineChoice::Candle {
        return Ok(None);
    }
    if !device.is_cpu() || dtype != DType::F32 {
        return match choice {
            EngineChoice::Native => Err(RuntimeError::Unsupported {
                op: "(all)".into(),
                why: "the native engine runs f32 models on the CPU".into(),
            }),
            _ => Ok(None),
        };
    }
    match super::native::Engine::new(structure, batch_axis) {
        Ok(e) => Ok(Some(e)),
        Err(RuntimeError::Unsupported { op, why }) if choice == EngineChoice::Auto => {
            announce_once(&fallback_notice(&op, &why));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Finds the ops `Model::bias_to_relu` describes.
fn bias_to_relu(plan: &Plan, slice_of_linear: &[Option<usize>]) -> Vec<bool> {
    let readers = crate::plan::readers(plan);
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
                    && ops::resolve_axis(s.axis as i64, out_rank) == Some(1)
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
                if rank != 2 || ops::resolve_axis(s.axis as i64, rank) != Some(1) {
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

impl Model {
    /// Loads `plan` onto `device` in f32.
    pub fn from_plan(plan: &Plan, device: &Device) -> Result<Self> {
        Self::from_plan_with_dtype(plan, device, DType::F32)
    }

    /// Loads `plan` onto `device` in `dtype` (f64 is used by the gradient
    /// tests).
    pub fn from_plan_with_dtype(plan: &Plan, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_plan_on(plan, device, dtype, engine_choice())
    }

    /// Loads `plan` onto `device` in `dtype`, executed as `choice` says
    /// (the other constructors read the process-wide choice).
    pub fn from_plan_on(
        plan: &Plan,
        device: &Device,
        dtype: DType,
        choice: EngineChoice,
    ) -> Result<Self> {
        let mut params = Vec::with_capacity(plan.params.len());
        for p in &plan.params {
            let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
            let n: usize = shape.iter().product();
            if p.data.len() != n * 4 {
                return Err(invalid_plan!(
                    "parameter \"{}\" holds {} bytes, its shape {:?} needs {}",
                    p.name,
                    p.data.len(),
                    p.shape,
                    n * 4
                ));
            }
            let t = Tensor::from_vec(f32s_from_le(&p.data), shape, device)?.to_dtype(dtype)?;
            params.push(if p.trainable {
                ParamSlot::Trainable(Var::from_tensor(&t)?)
            } else {
                ParamSlot::Buffer(t)
            });
        }
        let tables = plan
            .tables
            .iter()
            .map(|t| Table::from_plan(t, dtype, device))
            .collect::<Result<Vec<_>>>()?;
        let mut structure = plan.clone();
        for p in &mut structure.params {
            p.data.clear();
        }
        for t in &mut structure.tables {
            t.data.clear();
        }
        let analysis = crate::plan::validate::analyze(plan)
            .map_err(|e| RuntimeError::InvalidPlan(e.to_string()))?;
        let (embedded, batch_axis) = (analysis.embedded, analysis.batch_axis);
        let (deferred, slice_of_linear) = deferred_linears(plan);
        let stack_of_slices = stacks_of_slices(plan, &deferred);
        let bias_to_relu = bias_to_relu(plan, &slice_of_linear);
        let native = native_engine(&structure, &batch_axis, device, dtype, choice)?;
        Ok(Self {
            device: device.clone(),
            dtype,
            structure,
            params,
            tables,
            embedded,
            batch_axis,
            stack_of_slices,
            deferred,
            slice_of_linear,
            bias_to_relu,
            native,
            forward_time: std::time::Duration::ZERO,
        })
    }

    /// Sets the precision of the native engine's matrix multiplies; bf16
    /// needs the native engine (f32 on the CPU).
    pub fn set_precision(
        &mut self,
        p: super::native::Precision,
    ) -> std::result::Result<(), String> {
        match (&mut self.native, p) {
            (Some(e), _) => {
                e.set_precision(p);
                Ok(())
            }
            (None, super::native::Precision::F32) => Ok(()),
            (None, _) => Err("bf16 runs on the native CPU engine (f32 models on the CPU)".into()),
        }
    }

    /// The native engine's per-op profile (with `PLEC_PROFILE`).
    pub fn native_profile(&self) -> Option<String> {
        self.native.as_ref().and_then(|e| e.profile())
    }

    /// Frees the native engine's activation and gradient buffers (rebuilt
    /// on the next pass); the trainer calls it when training is over.
    pub fn release_buffers(&mut self) {
        if let Some(e) = &mut self.native {
            e.release_buffers();
        }
    }

    /// Whether forward and backward run on the native CPU engine.
    pub fn uses_native(&self) -> bool {
        self.native.is_some()
    }

    /// Switches the native CPU engine on (where it supports the plan; the
    /// error says why not) or off (the candle path). Tests compare the two.
    pub fn set_native(&mut self, on: bool) -> Result<()> {
        self.native = None;
        if on {
            if !self.device.is_cpu() || self.dtype != DType::F32 {
                return Err(RuntimeError::Unsupported {
                    op: "(all)".into(),
                    why: "the native engine runs f32 models on the CPU".into(),
                });
            }
            self.native = Some(super::native::Engine::new(
                &self.structure,
                &self.batch_axis,
            )?);
        }
        Ok(())
    }

    /// The native engine's forward pass (see `forward`).
    fn forward_native(&mut self, batch: &Batch, mode: Mode) -> Result<Forward> {
        let Model {
            native,
            structure,
            params,
            tables,
            embedded,
            batch_axis,
            device,
            ..
        } = self;
        let engine = native
            .as_mut()
            .ok_or_else(|| invalid_plan!("the native engine is off"))?;
        let out = engine.forward(structure, batch_axis, params, tables, embedded, batch, mode)?;
        for (i, v) in out.buffer_updates {
            let shape = params[i].tensor().dims().to_vec();
            params[i] = ParamSlot::Buffer(Tensor::from_vec(v, shape, device)?);
        }
        let train = matches!(mode, Mode::Train { .. });
        let (logits, logit_vars) =
            super::native::logits_tensors(out.logits, batch.rows, device, train)?;
        let gathered = match train {
            true => engine.gathered(tables, device)?,
            false => Vec::new(),
        };
        Ok(Forward {
            logits,
            gathered,
            logit_vars,
        })
    }

    /// After `loss.backward()` on a native training forward pass: runs the
    /// engine's backward pass from the logits' gradients in `grads` and
    /// adds every parameter's and gathered table's gradient to `grads`.
    /// Nothing to do on the candle path (autograd already did it).
    pub fn backward_native(&mut self, fwd: &Forward, grads: &mut GradStore) -> Result<()> {
        if fwd.logit_vars.is_empty() {
            return Ok(());
        }
        let dlogits = fwd
            .logit_vars
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .map(|g| g.flatten_all()?.to_vec1::<f32>())
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let Model {
            native,
            structure,
            params,
            device,
            ..
        } = self;
        let engine = native
            .as_mut()
            .ok_or_else(|| invalid_plan!("the native engine is off"))?;
        engine.backward(structure, params, &dlogits, &fwd.gathered, grads, device)
    }

    /// The plan's structure (parameter and table data are empty).
    pub fn structure(&self) -> &Plan {
        &self.structure
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of parameters and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dense parameters and buffers, in plan order.
    pub fn params(&self) -> &[ParamSlot] {
        &self.params
    }

    /// Embedding tables, in plan order.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Embedding tables, for the sparse optimizer.
    pub fn tables_mut(&mut self) -> &mut [Table] {
        &mut self.tables
    }

    /// Trainable parameters with their plan index and `no_decay` flag.
    pub fn trainable(&self) -> Vec<(usize, &Var, bool)> {
        self.params
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                ParamSlot::Trainable(v) => Some((i, v, self.structure.params[i].no_decay)),
                ParamSlot::Buffer(_) => None,
            })
            .collect()
    }

    /// The full plan with the current parameter and table values written
    /// back (the caller sets `trained_steps`).
    pub fn to_plan(&self) -> Result<Plan> {
        let mut plan = self.structure.clone();
        for (p, slot) in plan.params.iter_mut().zip(&self.params) {
            p.data = le_bytes(slot.tensor())?;
        }
        for (t, table) in plan.tables.iter_mut().zip(&self.tables) {
            t.data = le_bytes(&table.weight)?;
        }
        Ok(plan)
    }

    fn param(&self, op: &Op, i: usize) -> &Tensor {
        // Counts and indices were checked in `validate`.
        self.params[op.params[i] as usize].tensor()
    }

    /// Runs every op on `batch` and returns the task logits.
    pub fn forward(&mut self, batch: &Batch, mode: Mode) -> Result<Forward> {
        let t0 = std::time::Instant::now();
        let out = self.forward_timed(batch, mode);
        self.forward_time += t0.elapsed();
        out
    }

    /// Seconds spent in `forward` since the model was loaded.
    pub fn forward_seconds(&self) -> f64 {
        self.forward_time.as_secs_f64()
    }

    fn forward_timed(&mut self, batch: &Batch, mode: Mode) -> Result<Forward> {
        let plan = &self.structure;
        let rows = batch.rows;
        if rows == 0 {
            return Err(bad_batch!("the batch is empty"));
        }
        if batch.features.len() != plan.features.len() {
            return Err(bad_batch!(
                "the batch has {} features, the plan {}",
                batch.features.len(),
                plan.features.len()
            ));
        }
        if self.native.is_some() {
            return self.forward_native(batch, mode);
        }
        let train = matches!(mode, Mode::Train { .. });
        let lookup = embedding::lookup(
            &self.tables,
            &plan.features,
            &self.embedded,
            &batch.features,
            rows,
            train,
            &self.device,
        )?;
        let mut values: Vec<Option<Tensor>> = vec![None; plan.values.len()];
        let mut buffer_updates: Vec<(usize, Tensor)> = Vec::new();
        // Biases left to the relu that reads the value (`bias_to_relu`).
        let mut pending_bias: Vec<Option<Tensor>> = vec![None; plan.values.len()];
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
                ops::resolve_axis(op.axis as i64, rank).ok_or_else(|| {
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
                                    Tensor::from_slice(values, (rows, *dim), &self.device)?
                                        .to_dtype(self.dtype)?,
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
                    pending_bias[op.output as usize] = Some(self.param(op, 1).clone());
                    ops::linear(input(0)?, self.param(op, 0), None)?
                }
                OpKind::Linear => ops::linear(
                    input(0)?,
                    self.param(op, 0),
                    (op.params.len() > 1).then(|| self.param(op, 1)),
                )?,
                OpKind::BatchedLinear if self.bias_to_relu[oi] => {
                    pending_bias[op.output as usize] = Some(self.param(op, 1).clone());
                    ops::batched_linear(input(0)?, self.param(op, 0), None)?
                }
                OpKind::BatchedLinear => ops::batched_linear(
                    input(0)?,
                    self.param(op, 0),
                    (op.params.len() > 1).then(|| self.param(op, 1)),
                )?,
                OpKind::BatchNorm => {
                    let x = input(0)?;
                    let ax = self.batch_axis[oi];
                    let eps = if op.eps > 0.0 {
                        op.eps as f64
                    } else {
                        DEFAULT_NORM_EPS
                    };
                    let (gamma, beta) = (self.param(op, 0), self.param(op, 1));
                    if train {
                        let (mean, var) = ops::batch_moments(x, ax)?;
                        let y = ops::batch_norm_apply(x, &mean, &var, gamma, beta, ax, eps)?;
                        let m = if op.momentum > 0.0 {
                            op.momentum as f64
                        } else {
                            DEFAULT_BN_MOMENTUM
                        };
                        let n = x.dim(ax)? as f64;
                        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
                        let mean = mean.squeeze(ax)?.detach();
                        let var = (var.squeeze(ax)?.detach() * unbiased)?;
                        let rm = ((self.param(op, 2) * (1.0 - m))? + (mean * m)?)?;
                        let rv = ((self.param(op, 3) * (1.0 - m))? + (var * m)?)?;
                        buffer_updates.push((op.params[2] as usize, rm));
                        buffer_updates.push((op.params[3] as usize, rv));
                        y
                    } else {
                        let rm = self.param(op, 2).unsqueeze(ax)?;
                        let rv = self.param(op, 3).unsqueeze(ax)?;
                        ops::batch_norm_apply(x, &rm, &rv, gamma, beta, ax, eps)?
                    }
                }
                OpKind::LayerNorm => {
                    let eps = if op.eps > 0.0 {
                        op.eps as f64
                    } else {
                        DEFAULT_NORM_EPS
                    };
                    ops::layer_norm(input(0)?, self.param(op, 0), self.param(op, 1), eps)?
                }
                OpKind::Activation if pending_bias[op.inputs[0] as usize].is_some() => {
                    let b = pending_bias[op.inputs[0] as usize]
                        .take()
                        .ok_or_else(|| invalid_plan!("op \"{}\" lost its bias", op.name))?;
                    super::fused::bias_relu(input(0)?, &b)?
                }
                OpKind::Activation => {
                    let act = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let slope = (!op.params.is_empty()).then(|| self.param(op, 0));
                    ops::activation(input(0)?, act, op.alpha, slope)?
                }
                OpKind::Dropout => {
                    let x = input(0)?;
                    match mode {
                        Mode::Train { seed, step } if op.ratio > 0.0 => {
                            let mut rng = SplitMix64::derive(seed, &[step, oi as u64]);
                            let mask = ops::dropout_mask(
                                x.dims(),
                                op.ratio,
                                &mut rng,
                                self.dtype,
                                &self.device,
                            )?;
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
                    let w = self.param(l, 0);
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
                        true => Some(self.param(l, 1).narrow(0, start, len)?),
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
                                &self.device,
                            )?
                            .to_dtype(self.dtype)?,
                        });
                    }
                    Tensor::cat(&parts, 2)?
                }
                OpKind::SequenceMask => {
                    let f = op.features[0] as usize;
                    sequence_mask(&plan.features[f], &batch.features[f], rows, &self.device)?
                        .to_dtype(self.dtype)?
                }
                OpKind::DinInput => ops::din_input(input(0)?, input(1)?)?,
                OpKind::DotScores => ops::dot_scores(input(0)?, input(1)?)?,
                OpKind::AttentionPool => ops::attention_pool(input(0)?, input(1)?, input(2)?)?,
                OpKind::SequencePool => ops::sequence_pool(
                    input(0)?,
                    input(1)?,
                    Pooling::try_from(op.pooling) == Ok(Pooling::Mean),
                )?,
                OpKind::OpUnspecified => {
                    return Err(invalid_plan!("op \"{}\" has no kind", op.name))
                }
            };
            values[op.output as usize] = Some(out);
        }
        for (i, t) in buffer_updates {
            self.params[i] = ParamSlot::Buffer(t);
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
        })
    }
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
    let positions = super::embedding::step_positions(spec, offsets, rows)?;
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
    let positions = super::embedding::step_positions(spec, offsets, rows)?;
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
