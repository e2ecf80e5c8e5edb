//! The model: a plan's parameters and tables on a device, and the executor
//! (`exec::Executor`: the native engine or candle) that runs its ops.
//!
//! Trainable dense parameters become candle `Var`s; buffers (batch-norm
//! running statistics) stay plain tensors that the forward pass replaces
//! in training. Embedding tables are device tensors (see `embedding`).
//! The model keeps a copy of the plan without any parameter or table data
//! (the structure), so `to_plan` can write the trained values back.

use crate::plan::validate::Analysis;
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};

use super::embedding::{f32s_from_le, f32s_to_le, Table};
use super::engine_choice::{announce_once, engine_choice, fallback_notice, EngineChoice};
use super::error::{bad_batch, invalid_plan, Result, RuntimeError};
use super::exec::candle::CandleExec;
use super::exec::native;
use super::exec::{Executor, ModelState};
use super::precision::Precision;
use super::row_parallel::{self, PartsTape, RowWorkers};
use crate::data::batch::Batch;
use crate::proto::plan::Plan;

pub(crate) use super::exec::Forward;
pub(crate) use super::params::{Mode, ParamSlot};

/// What a pass with a batch's rows side by side borrows from the model.
struct RowPass<'a> {
    lent: row_parallel::Lent<'a>,
    workers: &'a mut RowWorkers,
    device: &'a Device,
    precision: Option<Precision>,
    frozen: bool,
    parts: &'a mut Option<PartsTape>,
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
    /// What the plan's ops read and write (`plan::validate`), which both
    /// executors use.
    analysis: Analysis,
    /// What runs the plan's ops: the native engine or candle.
    exec: Box<dyn Executor>,
    /// Wall time spent in `forward` (benchmarks report model-only speed).
    forward_time: std::time::Duration,
    /// The precision last set (`set_precision`), for engines made later.
    precision: Option<Precision>,
    /// Native engines that run parts of a batch side by side, one per
    /// thread (`row_parallel`); made on the first pass that uses them.
    row_workers: Option<RowWorkers>,
    /// The plan's training pass treats every row on its own, so a native
    /// one may run a batch's rows side by side (`row_parallel::train`).
    rows_apart: bool,
    /// What the last training forward pass in parts left for its backward.
    parts: Option<PartsTape>,
    /// The model only evaluates and predicts (`freeze`): its weights stay as
    /// loaded.
    frozen: bool,
}

/// A tensor's values as little-endian f32 bytes. f32 CPU tensors are read
/// in place (no intermediate `Vec<f32>`: the embedding tables are most of
/// a plan, and `to_plan` runs while the whole model is in memory).
fn le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    if let Ok(host) = super::exec::native::host::tensor_f32(t) {
        return Ok(f32s_to_le(host.slice()));
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(f32s_to_le(&v))
}

/// The executor for a plan, as `choice` asks: candle for `candle` or off
/// the CPU (the native engine runs f32 there); for `auto`, candle with a
/// notice when the native engine refuses an op (`Unsupported`); an error
/// for `native` then, and for an inconsistent plan always (candle could
/// not run it either).
fn executor(
    structure: &Plan,
    analysis: &Analysis,
    device: &Device,
    dtype: DType,
    choice: EngineChoice,
) -> Result<Box<dyn Executor>> {
    let candle =
        || -> Result<Box<dyn Executor>> { Ok(Box::new(CandleExec::new(structure, analysis))) };
    if choice == EngineChoice::Candle {
        return candle();
    }
    if !device.is_cpu() || dtype != DType::F32 {
        return match choice {
            EngineChoice::Native => Err(RuntimeError::Unsupported {
                op: "(all)".into(),
                why: "the native engine runs f32 models on the CPU".into(),
            }),
            _ => candle(),
        };
    }
    match super::exec::native::Engine::new(structure, analysis) {
        Ok(e) => Ok(Box::new(e)),
        Err(RuntimeError::Unsupported { op, why }) if choice == EngineChoice::Auto => {
            announce_once(&fallback_notice(&op, &why));
            candle()
        }
        Err(e) => Err(e),
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
        let exec = executor(&structure, &analysis, device, dtype, choice)?;
        Ok(Self {
            device: device.clone(),
            dtype,
            structure,
            params,
            tables,
            analysis,
            exec,
            forward_time: std::time::Duration::ZERO,
            precision: None,
            row_workers: None,
            rows_apart: row_parallel::rows_apart_in_training(plan),
            parts: None,
            frozen: false,
        })
    }

    /// Declares that this model will only evaluate and predict: its weights
    /// stay as loaded, so the threads evaluating rows side by side keep each
    /// weight packed for their multiplies across batches instead of packing
    /// it again per batch. A training pass is an error from then on.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Sets the precision of the native engine's matrix multiplies; bf16
    /// needs the native engine (f32 on the CPU).
    pub fn set_precision(&mut self, p: Precision) -> std::result::Result<(), String> {
        self.exec.set_precision(p)?;
        self.precision = Some(p);
        Ok(())
    }

    /// The native engine's per-op profile (with `PLEC_PROFILE`), and that
    /// of the engines evaluating rows side by side when they ran.
    pub fn native_profile(&self) -> Option<String> {
        let own = self.exec.profile();
        let rows = self.row_workers.as_ref().and_then(|w| {
            crate::runtime::exec::native::profile_of(
                w.engines(),
                &format!(
                    "native engine profile, rows side by side on {} threads, \
                     times on one thread",
                    w.len()
                ),
            )
        });
        match (own, rows) {
            (Some(a), Some(b)) => Some(a + &b),
            (a, b) => a.or(b),
        }
    }

    /// Frees the executor's activation and gradient buffers (rebuilt on
    /// the next pass); the trainer calls it when training is over.
    pub fn release_buffers(&mut self) {
        self.exec.release_buffers();
        self.row_workers = None;
    }

    /// The executor's name: "native" or "candle".
    pub fn engine_name(&self) -> &'static str {
        self.exec.name()
    }

    /// Whether forward and backward run on the native CPU engine.
    pub fn uses_native(&self) -> bool {
        self.exec.name() == "native"
    }

    /// Switches to the native CPU engine (where it supports the plan; the
    /// error says why not) or to candle. Tests compare the two.
    pub fn set_native(&mut self, on: bool) -> Result<()> {
        let choice = if on {
            EngineChoice::Native
        } else {
            EngineChoice::Candle
        };
        self.exec = executor(
            &self.structure,
            &self.analysis,
            &self.device,
            self.dtype,
            choice,
        )?;
        Ok(())
    }

    /// The executor and what the model lends it for one pass.
    fn lend(&mut self) -> (&mut dyn Executor, ModelState<'_>) {
        let Model {
            exec,
            structure,
            params,
            tables,
            analysis,
            device,
            dtype,
            ..
        } = self;
        let state = ModelState {
            structure,
            params,
            tables,
            analysis,
            device,
            dtype: *dtype,
        };
        (exec.as_mut(), state)
    }

    /// After `loss.backward()` on a native training forward pass: runs the
    /// engine's backward pass from the logits' gradients in `grads` and
    /// adds every parameter's and gathered table's gradient to `grads`.
    /// Nothing to do on the candle path (autograd already did it).
    pub fn backward_native(&mut self, fwd: &Forward, grads: &mut GradStore) -> Result<()> {
        if let Some(tape) = self.parts.take() {
            let dlogits = native::logit_grads(fwd, grads)?;
            let workers = self
                .row_workers
                .as_mut()
                .ok_or_else(|| invalid_plan!("backward without its training threads"))?;
            let pass = workers.train_backward(
                &self.structure,
                &self.params,
                &tape,
                &dlogits,
                self.precision,
            )?;
            return native::store_grads(
                &self.structure,
                &self.params,
                pass,
                &fwd.gathered,
                grads,
                &self.device,
            );
        }
        let (exec, m) = self.lend();
        exec.backward(m, fwd, grads)
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
        self.parts = None;
        if self.frozen && mode != Mode::Eval {
            return Err(invalid_plan!(
                "a model loaded only to evaluate (frozen) cannot train"
            ));
        }
        if self.uses_native() && batch.splittable() {
            let threads = rayon::current_num_threads();
            if mode == Mode::Eval {
                if let Some(chunk) = row_parallel::chunk_rows(rows, threads) {
                    return self.forward_in_chunks(batch, chunk, threads);
                }
            } else if let Some(parts) = row_parallel::train_parts(rows, threads) {
                if self.rows_apart && native::trains_in_parts(self.precision) {
                    return self.train_forward_in_parts(batch, mode, parts);
                }
            }
        }
        let (exec, m) = self.lend();
        exec.forward(m, batch, mode)
    }

    /// What a pass with rows side by side on `threads` engines borrows from
    /// the model; the engines (`row_parallel`) are kept between passes.
    fn row_pass(&mut self, threads: usize) -> Result<RowPass<'_>> {
        if self.row_workers.as_ref().map(RowWorkers::len) != Some(threads) {
            self.row_workers = Some(RowWorkers::new(&self.structure, &self.analysis, threads)?);
        }
        let Model {
            structure,
            params,
            tables,
            analysis,
            device,
            precision,
            row_workers,
            frozen,
            parts,
            ..
        } = self;
        let workers = row_workers
            .as_mut()
            .ok_or_else(|| invalid_plan!("no threads to run rows side by side"))?;
        Ok(RowPass {
            lent: row_parallel::Lent {
                plan: structure,
                analysis,
                params,
                tables,
            },
            workers,
            device,
            precision: *precision,
            frozen: *frozen,
            parts,
        })
    }

    /// A training forward pass with the batch's rows in `parts` parts side
    /// by side (`row_parallel::train`); `backward_native` finishes it.
    fn train_forward_in_parts(
        &mut self,
        batch: &Batch,
        mode: Mode,
        parts: usize,
    ) -> Result<Forward> {
        let p = self.row_pass(parts)?;
        let out = p.workers.train_forward(&p.lent, batch, mode, p.precision)?;
        let penalties = native::penalty_tensors(p.lent.params, &out.penalties, batch.rows)?;
        let (logits, logit_vars) =
            super::exec::logits_tensors(out.logits, batch.rows, p.device, true)?;
        let gathered = native::gathered_tensors(&out.gathered, p.lent.tables, p.device)?;
        *p.parts = Some(out.tape);
        Ok(Forward {
            logits,
            gathered,
            logit_vars,
            penalties,
        })
    }

    /// An evaluation pass with chunks of `chunk` rows spread over `threads`
    /// single-threaded engines (`row_parallel`), the logits joined in row order:
    /// the values of one pass (evaluation treats every row on its own: batch
    /// norm reads its running statistics).
    fn forward_in_chunks(
        &mut self,
        batch: &Batch,
        chunk: usize,
        threads: usize,
    ) -> Result<Forward> {
        let p = self.row_pass(threads)?;
        let logits = p
            .workers
            .logits(&p.lent, batch, chunk, p.precision, p.frozen)?;
        Ok(Forward {
            logits: row_parallel::tensors(logits, batch.rows, p.device)?,
            gathered: Vec::new(),
            logit_vars: Vec::new(),
            penalties: Vec::new(),
        })
    }
}
