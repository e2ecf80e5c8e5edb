//! The model: a plan's parameters and tables on a device, and the executor
//! that runs the plan's ops on one batch.
//!
//! Trainable dense parameters become candle `Var`s; buffers (batch-norm
//! running statistics) stay plain tensors that the forward pass replaces
//! in training. Embedding tables are device tensors (see `embedding`).
//! The model keeps a copy of the plan without any parameter or table data
//! (the structure), so `to_plan` can write the trained values back.

use candle_core::{DType, Device, Tensor, Var};

use super::embedding::{self, f32s_from_le, f32s_to_le, Gathered, Table};
use super::error::{bad_batch, invalid_plan, Result};
use super::ops;
use super::rng::SplitMix64;
use crate::data::batch::{Batch, FeatureInput};
use crate::proto::plan::{Activation, FeatureKind, Op, OpKind, Plan};

/// Default batch/layer-norm epsilon (torch's) when the plan leaves it 0.
pub const DEFAULT_NORM_EPS: f64 = 1e-5;
/// Default batch-norm momentum (torch's) when the plan leaves it 0.
pub const DEFAULT_BN_MOMENTUM: f64 = 0.1;

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

/// The output of one forward pass.
#[derive(Debug)]
pub struct Forward {
    /// Logits `[B, num_class]` per plan task.
    pub logits: Vec<Tensor>,
    /// Embedding rows gathered for this batch (training only).
    pub gathered: Vec<Gathered>,
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
}

fn param_count_ok(kind: OpKind, n: usize) -> bool {
    match kind {
        OpKind::Linear | OpKind::BatchedLinear => n == 1 || n == 2,
        OpKind::BatchNorm => n == 4,
        OpKind::LayerNorm => n == 2,
        OpKind::Activation => n <= 1,
        _ => n == 0,
    }
}

impl Model {
    /// Loads `plan` onto `device` in f32.
    pub fn from_plan(plan: &Plan, device: &Device) -> Result<Self> {
        Self::from_plan_with_dtype(plan, device, DType::F32)
    }

    /// Loads `plan` onto `device` in `dtype` (f64 is used by the gradient
    /// tests).
    pub fn from_plan_with_dtype(plan: &Plan, device: &Device, dtype: DType) -> Result<Self> {
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
        let (embedded, batch_axis) = validate(plan)?;
        Ok(Self {
            device: device.clone(),
            dtype,
            structure,
            params,
            tables,
            embedded,
            batch_axis,
        })
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
            let v = slot
                .tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            p.data = f32s_to_le(&v);
        }
        for (t, table) in plan.tables.iter_mut().zip(&self.tables) {
            let v = table
                .weight
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            t.data = f32s_to_le(&v);
        }
        Ok(plan)
    }

    fn param(&self, op: &Op, i: usize) -> &Tensor {
        // Counts and indices were checked in `validate`.
        self.params[op.params[i] as usize].tensor()
    }

    /// Runs every op on `batch` and returns the task logits.
    pub fn forward(&mut self, batch: &Batch, mode: Mode) -> Result<Forward> {
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
        for (oi, op) in plan.ops.iter().enumerate() {
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
                            FeatureInput::Ids { .. } => {
                                return Err(bad_batch!(
                                    "feature \"{}\" is dense but the batch holds ids for it",
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
                OpKind::Linear => ops::linear(
                    input(0)?,
                    self.param(op, 0),
                    (op.params.len() > 1).then(|| self.param(op, 1)),
                )?,
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
        })
    }
}

/// Checks indices, counts and ordering of the plan's ops, and returns the
/// embedded features used and each op's batch axis.
fn validate(plan: &Plan) -> Result<(Vec<usize>, Vec<usize>)> {
    let nv = plan.values.len();
    let mut produced = vec![false; nv];
    let mut embedded = Vec::new();
    let mut batch_axis = Vec::with_capacity(plan.ops.len());
    for op in &plan.ops {
        let kind = OpKind::try_from(op.kind)
            .map_err(|_| invalid_plan!("op \"{}\" has unknown kind {}", op.name, op.kind))?;
        if kind == OpKind::OpUnspecified {
            return Err(invalid_plan!("op \"{}\" has no kind", op.name));
        }
        for &i in &op.inputs {
            if i as usize >= nv || !produced[i as usize] {
                return Err(invalid_plan!(
                    "op \"{}\" reads value {} before any op computes it",
                    op.name,
                    i
                ));
            }
        }
        let needs_inputs = match kind {
            OpKind::FeatureGroup => 0,
            OpKind::GateMix => 2,
            _ => 1,
        };
        if op.inputs.len() < needs_inputs || (kind == OpKind::GateMix && op.inputs.len() != 2) {
            return Err(invalid_plan!(
                "op \"{}\" has {} inputs",
                op.name,
                op.inputs.len()
            ));
        }
        if !param_count_ok(kind, op.params.len()) {
            return Err(invalid_plan!(
                "op \"{}\" ({:?}) has {} parameters",
                op.name,
                kind,
                op.params.len()
            ));
        }
        if kind == OpKind::Activation
            && Activation::try_from(op.activation) == Ok(Activation::Prelu)
            && op.params.len() != 1
        {
            return Err(invalid_plan!(
                "prelu op \"{}\" needs its slope parameter",
                op.name
            ));
        }
        if let Some(&p) = op.params.iter().find(|&&p| p as usize >= plan.params.len()) {
            return Err(invalid_plan!(
                "op \"{}\" uses parameter {} which does not exist",
                op.name,
                p
            ));
        }
        if kind == OpKind::Dropout && !(0.0..1.0).contains(&op.ratio) {
            return Err(invalid_plan!(
                "dropout op \"{}\" has ratio {}",
                op.name,
                op.ratio
            ));
        }
        if kind == OpKind::FeatureGroup {
            for &f in &op.features {
                let spec = plan.features.get(f as usize).ok_or_else(|| {
                    invalid_plan!("op \"{}\" uses feature {} which does not exist", op.name, f)
                })?;
                let dense = FeatureKind::try_from(spec.kind) == Ok(FeatureKind::RawDense);
                if !dense && !embedded.contains(&(f as usize)) {
                    if spec.table as usize >= plan.tables.len() {
                        return Err(invalid_plan!(
                            "feature \"{}\" uses table {} which does not exist",
                            spec.name,
                            spec.table
                        ));
                    }
                    embedded.push(f as usize);
                }
            }
        }
        let ax = op
            .inputs
            .first()
            .and_then(|&i| plan.values[i as usize].shape.iter().position(|&d| d == -1))
            .unwrap_or(0);
        batch_axis.push(ax);
        let out = op.output as usize;
        if out >= nv {
            return Err(invalid_plan!(
                "op \"{}\" writes value {} which does not exist",
                op.name,
                out
            ));
        }
        if produced[out] {
            return Err(invalid_plan!(
                "value {} is computed twice (op \"{}\")",
                out,
                op.name
            ));
        }
        produced[out] = true;
    }
    for t in &plan.tasks {
        if t.logits as usize >= nv || !produced[t.logits as usize] {
            return Err(invalid_plan!(
                "the logits of task \"{}\" (value {}) are never computed",
                t.tower_name,
                t.logits
            ));
        }
    }
    Ok((embedded, batch_axis))
}
