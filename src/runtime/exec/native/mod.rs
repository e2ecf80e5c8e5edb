//! The native CPU engine: a plan's forward and backward passes as direct
//! GEMM calls and row kernels over preallocated buffers, instead of
//! candle's tensor ops and autograd.
//!
//! Why: on the PLE example candle spent about two thirds of a training
//! step outside matrix multiplies (element-wise ops on one thread, a fresh
//! tensor per op, zero-padded slice gradients, the autograd graph), so a
//! step ran at ~60 GFLOP/s where the `gemm` crate alone reaches ~200.
//! Here, for each batch size, a `Program` (`program`) fixes every value's
//! view once: slices and stacks of adjacent blocks are views of their
//! input's buffer (zero copies), relus run in place over their linear's
//! output, gates read concatenated experts where they lie, every other
//! value gets a buffer allocated once and reused step after step, and
//! gradient buffers are written once where one writer covers them and share
//! memory by lifetime. The loss stays in candle (a `[B, C]` graph per
//! task): its logits gradient seeds `backward`, and the parameter and
//! embedding gradients go back into candle's `GradStore` for the shared
//! optimizers.
//!
//! The engine runs on the CPU, in f32 (our kernels in the GEMM frame,
//! `gemm::frame`: AVX-512 `gemm::f32::avx512` or AVX2 + FMA `gemm::f32::avx2`, whichever `isa`
//! picks, with the `gemm` crate as the portable fallback) or with bf16 multiplies on AMX tiles or AVX512-BF16 dot products
//! (`Precision`, `amx`); both apply a linear's bias and relu as its output
//! tiles are stored. The candle path stays the reference:
//! `runtime::tests::native` checks logits and every gradient against it,
//! and `--engine candle` (or `PLEC_ENGINE=candle`) selects it at run time
//! (`runtime::engine_choice`).

mod attention;
mod backward;
pub(crate) use self::backward::{store_grads, PassGrads};
mod draws;
pub(crate) use self::draws::RowSpan;
mod embed;
pub(crate) use self::embed::gathered as gathered_tensors;
mod forward;
pub(crate) mod gemm;
pub(crate) mod host;
mod intervention;
pub(crate) mod isa;
mod kernels;
mod param_grads;
pub(crate) mod peak;
mod program;
mod relu_masks;
mod sequence;
mod shared;
mod step;
mod timing;
pub(crate) use self::timing::profile_of;
mod view;

use candle_core::{backprop::GradStore, Device, Tensor};

use self::embed::Lookup;
use self::program::Program;
use self::step::Step;
use self::view::{Mat, View};
use super::{logits_tensors, Executor, Forward, ModelState};
use crate::data::batch::{Batch, FeatureInput};
use crate::plan::validate::Analysis;
use crate::proto::plan::{Activation, Plan};
use crate::runtime::embedding::{Gathered, Table};
use crate::runtime::error::{bad_batch, invalid_plan, Result};
use crate::runtime::params::{Mode, ParamSlot, DEFAULT_BN_MOMENTUM, DEFAULT_NORM_EPS};
pub(crate) use crate::runtime::precision::Precision;

/// Programs kept per engine, of each kind (training, inference: an
/// evaluation between training steps keeps the training program). One: a
/// program is most of a run's memory (PLE at batch 8192: ~1 GB), and
/// keeping the full batch's program while an epoch's last, shorter batch
/// built its own raised the peak by 250 MiB (1754 -> 2006 MiB in bf16).
/// Rebuilding costs first touches of the buffers (~0.1 s per GB), once or
/// twice per epoch.
const PROGRAMS_KEPT: usize = 1;

/// The precision new engines start with (`set_default_precision`).
static DEFAULT_PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the precision of engines created from now on, process-wide like
/// the thread counts (`runtime::set_threads`): the CLI's `--precision`.
pub(crate) fn set_default_precision(p: Precision) {
    let v = match p {
        Precision::F32 => 0,
        Precision::Bf16 => 1,
    };
    DEFAULT_PRECISION.store(v, std::sync::atomic::Ordering::Relaxed);
}

fn default_precision() -> Precision {
    match DEFAULT_PRECISION.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Precision::Bf16,
        _ => Precision::F32,
    }
}

/// What a forward pass leaves for `backward`.
#[derive(Debug, Default)]
struct Tape {
    batch: usize,
    lookup: Lookup,
    /// Per op: dropout keep-mask (one byte per element, row order).
    masks: Vec<Option<Vec<u8>>>,
    /// Per op: batch-norm / layer-norm lane statistics (mean, 1/std).
    stats: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// Per FEATURE_GROUP op: the first column of each of its features.
    columns: Vec<Option<Vec<usize>>>,
}

/// The output of a native forward pass.
#[derive(Debug)]
pub(crate) struct NativeForward {
    /// Per task, `[B, C]` row-major.
    pub logits: Vec<Vec<f32>>,
    /// New batch-norm running statistics: (param index, values).
    pub buffer_updates: Vec<(usize, Vec<f32>)>,
    /// Training: each variational dropout's drop-logit param and lambda,
    /// whose penalty the training loss adds (built on the param's tensor,
    /// so candle's autograd gives its gradient).
    pub penalties: Vec<(usize, f32)>,
}

/// The engine of one model: its programs and the last training tape.
#[derive(Debug)]
pub(crate) struct Engine {
    programs: Vec<Program>,
    tape: Option<Tape>,
    precision: Precision,
    /// With `PLEC_PROFILE`: seconds and calls per step label.
    times: Option<timing::OpTimes>,
    /// Where the rows of its passes lie in a larger batch (`set_span`);
    /// None: each pass is a batch of its own.
    span: Option<RowSpan>,
}

/// Parameter data of the model, borrowed for one pass.
struct Params<'a> {
    hosts: Vec<host::HostSlice<'a>>,
}

impl<'a> Params<'a> {
    fn borrow(params: &'a [ParamSlot]) -> Result<Self> {
        Ok(Self {
            hosts: params
                .iter()
                .map(|p| host::tensor_f32(p.tensor()))
                .collect::<Result<_>>()?,
        })
    }

    fn get(&self, i: usize) -> &[f32] {
        self.hosts.get(i).map_or(&[], |h| h.slice())
    }
}

impl Precision {
    /// Whether bf16 is asked for and this CPU can run it.
    pub fn runs_bf16(self) -> bool {
        self == Precision::Bf16 && isa::chosen().bf16_kernel().is_some()
    }
}

impl Engine {
    /// An engine for `plan`, or why not: `Unsupported` for an op it
    /// cannot run, `InvalidPlan` for an inconsistent plan. Builds a small
    /// program to find out.
    pub(crate) fn new(plan: &Plan, analysis: &Analysis) -> Result<Self> {
        Program::build(plan, analysis, 2)?;
        Ok(Self {
            programs: Vec::new(),
            tape: None,
            precision: default_precision(),
            times: crate::runtime::profile::enabled().then(Default::default),
            span: None,
        })
    }

    /// Declares the next passes' rows part of a larger batch (`None`: a
    /// batch of their own), so that their random draws are that batch's.
    pub(crate) fn set_span(&mut self, span: Option<RowSpan>) {
        self.span = span;
    }

    /// Frees every program's buffers and the tape (they are rebuilt on
    /// the next pass), e.g. once training is over: a training program of a
    /// large batch is most of the run's memory.
    pub(crate) fn release_buffers(&mut self) {
        self.programs.clear();
        self.tape = None;
    }

    /// Sets the precision of the matrix multiplies.
    pub(crate) fn use_precision(&mut self, p: Precision) {
        self.precision = p;
    }

    fn gemm(&self) -> gemm::Gemm {
        gemm::Gemm {
            threads: rayon::current_num_threads().max(1),
            bf16: self.precision.runs_bf16(),
        }
    }

    /// The program for `rows`-row batches, for training or (`training`
    /// false) forward passes only; at most `PROGRAMS_KEPT` of each.
    fn program(
        &mut self,
        plan: &Plan,
        analysis: &Analysis,
        rows: usize,
        training: bool,
    ) -> Result<usize> {
        let same = |p: &Program| p.training == training;
        if let Some(i) = self
            .programs
            .iter()
            .position(|p| p.batch == rows && same(p))
        {
            return Ok(i);
        }
        // Evaluation runs a large batch in chunks (`runtime::row_parallel`), so an
        // inference program is small, and a batch's last, shorter chunk needs a
        // second one: keep both rather than rebuild one per chunk.
        let kept = if training { PROGRAMS_KEPT } else { 2 };
        // The least recently built goes (the tape never outlives a step).
        let old = match self.programs.iter().filter(|p| same(p)).count() >= kept {
            true => self.programs.iter().position(same),
            false => None,
        };
        let mut new = if training {
            Program::build(plan, analysis, rows)?
        } else {
            Program::build_inference(plan, analysis, rows)?
        };
        if let Some(i) = old {
            let old = self.programs.remove(i);
            // The new program takes over the old one's memory, and what it
            // leaves goes back to the OS with the new one's unused buffers:
            // otherwise the run's resident memory would grow.
            crate::alloc::returning_freed_memory(|| new.recycle(old));
        }
        self.programs.push(new);
        Ok(self.programs.len() - 1)
    }

    /// The gathered embedding rows of the last training forward pass.
    pub(crate) fn gathered(&self, tables: &[Table], device: &Device) -> Result<Vec<Gathered>> {
        gathered_tensors(self.gathered_rows(), tables, device)
    }

    /// The last training forward pass's gathered rows per table slot:
    /// (table, unique ids in first-seen order, rows `[U, dim]`).
    pub(crate) fn gathered_rows(&self) -> &[GatheredRows] {
        self.tape.as_ref().map_or(&[], |t| &t.lookup.rows)
    }
}

/// One table slot's gathered rows: (table, unique ids, rows `[U, dim]`).
pub(crate) type GatheredRows = (usize, Vec<u32>, Vec<f32>);

/// The byte ranges of the parameters' values: what a forward pass that
/// changes none of them can declare unchanged (`gemm::fixed_b`).
pub(crate) fn param_ranges(params: &[ParamSlot]) -> Result<Vec<(usize, usize)>> {
    let ps = Params::borrow(params)?;
    Ok(ps
        .hosts
        .iter()
        .map(|h| {
            let s = h.slice();
            let start = s.as_ptr() as usize;
            (start, start + std::mem::size_of_val(s))
        })
        .collect())
}

/// The training loss's terms besides the tasks' (variational dropout's
/// penalty per `(param, lambda)`), on the param's tensor so that candle's
/// autograd gives its gradient; `rows` the batch's.
pub(crate) fn penalty_tensors(
    params: &[ParamSlot],
    penalties: &[(usize, f32)],
    rows: usize,
) -> Result<Vec<Tensor>> {
    penalties
        .iter()
        .map(|&(p, lambda)| {
            let t = params
                .get(p)
                .ok_or_else(|| invalid_plan!("a variational dropout reads no parameter {p}"))?;
            crate::runtime::exec::candle::ops::variational_dropout_penalty(t.tensor(), lambda, rows)
                .map_err(Into::into)
        })
        .collect()
}

/// The gradient of each task's logits (`[B, C]` row-major) from `grads`,
/// None for a task the loss did not reach.
pub(crate) fn logit_grads(fwd: &Forward, grads: &GradStore) -> Result<Vec<Option<Vec<f32>>>> {
    Ok(fwd
        .logit_vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .map(|g| g.flatten_all()?.to_vec1::<f32>())
                .transpose()
        })
        .collect::<candle_core::Result<Vec<_>>>()?)
}

/// Rows up to which a batched layer multiplies its experts in parallel on
/// AMX tiles, one thread each, rather than one after another on all
/// threads: at batch 1024 that is 12-20% faster, at 8192 each expert's
/// multiply is big enough that splitting it wins (expert-parallel was 1.5x
/// slower there; Intel Xeon with AMX).
const AMX_EXPERT_PARALLEL_MAX_ROWS: usize = 2048;

/// Whether a batched layer's experts multiply in parallel, one thread each.
/// On the GEMM frame's own kernels (AVX-512 and AVX2 f32, AVX512-BF16) it
/// wins at every batch size: PLE example at batch 8192 on an AMD EPYC Zen 5,
/// 2 threads, training samples/s split vs parallel: AVX-512 fp32 8764 ->
/// 9450, AVX2 fp32 4794 -> 5085, AVX512-BF16 11576 -> 12747 (the split
/// multiplies pay two joins per block each; independent experts pay none).
/// AMX and the portable kernel keep the measured cap.
fn experts_in_parallel(how: gemm::Gemm, rows: usize, experts: usize) -> bool {
    if how.threads <= 1 || experts <= 1 {
        return false;
    }
    let chosen = isa::chosen();
    let frame_kernel = if how.bf16 {
        chosen.bf16_kernel() == Some(isa::Bf16Kernel::Avx512Bf16)
    } else {
        chosen.f32_kernel().is_some()
    };
    frame_kernel || rows <= AMX_EXPERT_PARALLEL_MAX_ROWS
}

/// Whether training may run a batch's rows in parts, one per thread
/// (`runtime::row_parallel::train`), with multiplies of precision
/// `precision` (None: the engines' default). Measured on the frame's own
/// kernels (AVX-512 and AVX2 f32, AVX512-BF16: faster or level at every
/// batch size). bf16 on AMX tiles keeps one pass: there a multiply split over
/// the threads measured faster than independent ones at large batches (see
/// `AMX_EXPERT_PARALLEL_MAX_ROWS`), and parts have not been measured.
pub(crate) fn trains_in_parts(precision: Option<Precision>) -> bool {
    let p = precision.unwrap_or_else(default_precision);
    !(p.runs_bf16() && isa::chosen().bf16_kernel() == Some(isa::Bf16Kernel::Amx))
}

/// Into how many equal row blocks each expert's multiply is cut when the
/// experts run in parallel, so that the tasks share out evenly over the
/// threads: three experts on two threads would leave one thread idle a
/// third of the time; six half-experts do not. 1 when the experts already
/// share out evenly, or `rows` does not divide.
fn expert_parts(how: gemm::Gemm, rows: usize, experts: usize) -> usize {
    let t = how.threads.max(1);
    let (mut a, mut b) = (experts.max(1), t);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let parts = t / a;
    if parts > 1 && rows.is_multiple_of(parts) {
        parts
    } else {
        1
    }
}

/// The view's rows as one matrix (its leading dims must collapse).
fn flat(v: &View) -> Result<Mat> {
    v.flat_mat()
        .ok_or_else(|| invalid_plan!("native engine: a value's rows do not form one matrix"))
}

/// The view as rank 2 over its collapsed rows (for bias kernels).
fn flat_view(v: &View) -> View {
    let mut f = *v;
    f.dims = [1, v.rows(), v.dims[2]];
    f.strides = [v.rows() * v.strides[1], v.strides[1], 1];
    f
}

impl Executor for Engine {
    fn name(&self) -> &'static str {
        "native"
    }

    fn forward(&mut self, m: ModelState<'_>, batch: &Batch, mode: Mode) -> Result<Forward> {
        let ModelState {
            structure,
            params,
            tables,
            analysis,
            device,
            ..
        } = m;
        let out = self.forward_pass(structure, analysis, params, tables, batch, mode)?;
        for (i, v) in out.buffer_updates {
            let shape = params[i].tensor().dims().to_vec();
            params[i] = ParamSlot::Buffer(Tensor::from_vec(v, shape, device)?);
        }
        let train = matches!(mode, Mode::Train { .. });
        let penalties = penalty_tensors(params, &out.penalties, batch.rows)?;
        let (logits, logit_vars) = logits_tensors(out.logits, batch.rows, device, train)?;
        let gathered = match train {
            true => self.gathered(tables, device)?,
            false => Vec::new(),
        };
        Ok(Forward {
            logits,
            gathered,
            logit_vars,
            penalties,
        })
    }

    /// Runs the engine's backward pass from the logits' gradients in
    /// `grads` and adds every parameter's and gathered table's gradient.
    fn backward(&mut self, m: ModelState<'_>, fwd: &Forward, grads: &mut GradStore) -> Result<()> {
        if fwd.logit_vars.is_empty() {
            return Ok(());
        }
        let dlogits = logit_grads(fwd, grads)?;
        self.backward_pass(
            m.structure,
            m.params,
            &dlogits,
            &fwd.gathered,
            grads,
            m.device,
        )
    }

    fn set_precision(&mut self, p: Precision) -> std::result::Result<(), String> {
        self.use_precision(p);
        Ok(())
    }

    fn profile(&self) -> Option<String> {
        self.profile_table()
    }

    fn release_buffers(&mut self) {
        Engine::release_buffers(self);
    }
}
