//! The native CPU engine: a plan's forward and backward passes as direct
//! GEMM calls and row kernels over preallocated buffers, instead of
//! candle's tensor ops and autograd.
//!
//! Why: on the PLE example candle spent about two thirds of a training
//! step outside matrix multiplies (element-wise ops on one thread, a fresh
//! tensor per op, zero-padded slice gradients, the autograd graph), so a
//! step ran at ~60 GFLOP/s where the `gemm` crate alone reaches ~200.
//! Here, for each batch size, a `Program` fixes every value's view once:
//! slices and stacks of adjacent blocks are views of their input's buffer
//! (zero copies), every other value gets a buffer allocated once and reused
//! step after step, and the backward pass accumulates gradients into
//! matching buffers. The loss stays in candle (a `[B, C]` graph per task):
//! its logits gradient seeds `backward`, and the parameter and embedding
//! gradients go back into candle's `GradStore` for the shared optimizers.
//!
//! The engine runs f32 on the CPU. The candle path stays the reference:
//! `runtime::tests::native` checks logits and every gradient against it,
//! and `PLEC_ENGINE=candle` selects it at run time.

pub mod amx;
mod embed;
mod gemm;
pub mod host;
mod kernels;
mod program;
mod view;

use candle_core::{backprop::GradStore, Device, Tensor, Var};

use self::embed::Lookup;
use self::program::{Program, Step};
use self::view::{Mat, View};
use super::embedding::{Gathered, Table};
use super::error::{bad_batch, invalid_plan, Result};
use super::model::{Mode, ParamSlot, DEFAULT_BN_MOMENTUM, DEFAULT_NORM_EPS};
use super::rng::SplitMix64;
use crate::data::batch::{Batch, FeatureInput};
use crate::proto::plan::{Activation, Plan};

/// Programs kept per engine (one per batch size: the full batch and an
/// epoch's last, shorter one).
const PROGRAMS_KEPT: usize = 2;

/// The precision new engines start with (`set_default_precision`).
static DEFAULT_PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the precision of engines created from now on, process-wide like
/// the thread counts (`runtime::set_threads`): the CLI's `--precision`.
pub fn set_default_precision(p: Precision) {
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

/// Whether the environment asks for the candle path (`PLEC_ENGINE=candle`).
pub fn disabled_by_env() -> bool {
    std::env::var("PLEC_ENGINE").is_ok_and(|v| v.eq_ignore_ascii_case("candle"))
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
pub struct NativeForward {
    /// Per task, `[B, C]` row-major.
    pub logits: Vec<Vec<f32>>,
    /// New batch-norm running statistics: (param index, values).
    pub buffer_updates: Vec<(usize, Vec<f32>)>,
}

/// The engine of one model: its programs and the last training tape.
#[derive(Debug)]
pub struct Engine {
    programs: Vec<Program>,
    tape: Option<Tape>,
    precision: Precision,
    /// With `PLEC_PROFILE`: seconds and calls per step label.
    times: Option<std::collections::BTreeMap<String, (f64, u64)>>,
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

/// Precision of the engine's matrix multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// Matrix-multiply inputs rounded to bf16 on the CPU's AMX tiles, f32
    /// accumulation, f32 master weights, optimizer state and everything
    /// else. Where AMX is absent the multiplies run in f32 instead.
    Bf16,
}

impl Precision {
    /// Whether bf16 is asked for and this CPU can run it.
    pub fn runs_bf16(self) -> bool {
        self == Precision::Bf16 && amx::available()
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision \"{other}\" (use fp32 or bf16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl Engine {
    /// An engine for `plan`, or the reason it cannot run it (the model
    /// then uses the candle path). Builds a small program to find out.
    pub fn new(plan: &Plan, batch_axis: &[usize]) -> std::result::Result<Self, String> {
        Program::build(plan, batch_axis, 2).map_err(|e| e.to_string())?;
        Ok(Self {
            programs: Vec::new(),
            tape: None,
            precision: default_precision(),
            times: super::profile::enabled().then(Default::default),
        })
    }

    /// Sets the precision of the matrix multiplies.
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
    }

    fn gemm(&self) -> gemm::Gemm {
        gemm::Gemm {
            threads: rayon::current_num_threads().max(1),
            bf16: self.precision.runs_bf16(),
        }
    }

    fn program(&mut self, plan: &Plan, batch_axis: &[usize], rows: usize) -> Result<usize> {
        if let Some(i) = self.programs.iter().position(|p| p.batch == rows) {
            return Ok(i);
        }
        if self.programs.len() >= PROGRAMS_KEPT {
            // Drop the least recently built; the tape never outlives a step.
            self.programs.remove(0);
        }
        self.programs.push(Program::build(plan, batch_axis, rows)?);
        Ok(self.programs.len() - 1)
    }

    /// Runs every op on `batch`; in training keeps what `backward` needs.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        plan: &Plan,
        batch_axis: &[usize],
        params: &[ParamSlot],
        tables: &[Table],
        embedded: &[usize],
        batch: &Batch,
        mode: Mode,
    ) -> Result<NativeForward> {
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
        let nt = self.gemm();
        let lookup = embed::lookup(
            tables,
            &plan.features,
            embedded,
            &batch.features,
            rows,
            train,
        )?;
        let pi = self.program(plan, batch_axis, rows)?;
        let prog = &mut self.programs[pi];
        let ps = Params::borrow(params)?;
        let n_ops = plan.ops.len();
        let mut tape = Tape {
            batch: rows,
            lookup,
            masks: (0..n_ops).map(|_| None).collect(),
            stats: (0..n_ops).map(|_| None).collect(),
            columns: (0..n_ops).map(|_| None).collect(),
        };
        let mut updates = Vec::new();
        for (oi, step) in prog.steps.iter().enumerate() {
            let op = &plan.ops[oi];
            let t0 = self.times.is_some().then(std::time::Instant::now);
            match step {
                Step::Alias => {}
                Step::Group { out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let cols =
                        feature_group(&mut buf, out, plan, op, tables, batch, &tape.lookup, train);
                    prog.bufs[out.buf] = buf;
                    tape.columns[oi] = Some(cols?);
                }
                Step::Linear { x, out, w, b } if nt.bf16 => {
                    let (o, i) = (out.dims[2], x.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let r = gemm::matmul_bias_relu(
                        &mut buf,
                        flat(out)?,
                        &prog.bufs[x.buf],
                        flat(x)?,
                        ps.get(*w),
                        Mat::dense(0, o, i).t(),
                        b.map(|b| ps.get(b)),
                        prog.relu_epilogue[oi],
                        nt,
                    );
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                Step::Batched { x, out, w, b } if nt.bf16 => {
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let mut r = Ok(());
                    if experts_in_parallel(nt, out.dims[1], e) && out.off == 0 {
                        use rayon::prelude::*;
                        let (rows, xs) = (out.dims[1], &prog.bufs[x.buf]);
                        let one = gemm::Gemm { threads: 1, ..nt };
                        let rs: Vec<Result<()>> = buf
                            .par_chunks_mut(rows * o)
                            .enumerate()
                            .take(e)
                            .map(|(k, dst)| {
                                let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                                gemm::matmul_bias_relu(
                                    dst,
                                    Mat::dense(0, rows, o),
                                    xs,
                                    xm,
                                    ps.get(*w),
                                    Mat::dense(k * o * i, o, i).t(),
                                    b.map(|b| &ps.get(b)[k * o..(k + 1) * o]),
                                    prog.relu_epilogue[oi],
                                    one,
                                )
                            })
                            .collect();
                        prog.bufs[out.buf] = buf;
                        rs.into_iter().collect::<Result<Vec<()>>>()?;
                        record(&mut self.times, "fwd", step, t0);
                        continue;
                    }
                    for k in 0..e {
                        let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                        r = r.and(gemm::matmul_bias_relu(
                            &mut buf,
                            out.mat(k),
                            &prog.bufs[x.buf],
                            xm,
                            ps.get(*w),
                            Mat::dense(k * o * i, o, i).t(),
                            b.map(|b| &ps.get(b)[k * o..(k + 1) * o]),
                            prog.relu_epilogue[oi],
                            nt,
                        ));
                    }
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                Step::Linear { x, out, w, b } => {
                    let xm = flat(x)?;
                    let (o, i) = (out.dims[2], x.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    if let Some(b) = b {
                        kernels::fill_bias(&mut buf, &flat_view(out), ps.get(*b));
                    }
                    let r = gemm::matmul(
                        &mut buf,
                        flat(out)?,
                        b.is_some(),
                        &prog.bufs[x.buf],
                        xm,
                        ps.get(*w),
                        Mat::dense(0, o, i).t(),
                        nt,
                    );
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                Step::Batched { x, out, w, b } => {
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    if let Some(b) = b {
                        kernels::fill_bias(&mut buf, out, ps.get(*b));
                    }
                    let mut r = Ok(());
                    for k in 0..e {
                        let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                        r = r.and(gemm::matmul(
                            &mut buf,
                            out.mat(k),
                            b.is_some(),
                            &prog.bufs[x.buf],
                            xm,
                            ps.get(*w),
                            Mat::dense(k * o * i, o, i).t(),
                            nt,
                        ));
                    }
                    prog.bufs[out.buf] = buf;
                    r?;
                }
                Step::Act { in_place: true, .. } if nt.bf16 && prog.relu_fused[oi] => {}
                Step::Act {
                    x, in_place: true, ..
                } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    kernels::activation_in_place(kind, &mut prog.bufs[x.buf], x);
                }
                Step::Act { x, y, slope, .. } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    let s = slope.map(|s| ps.get(s));
                    kernels::activation(kind, op.alpha, s, &mut buf, y, &prog.bufs[x.buf], x);
                    prog.bufs[y.buf] = buf;
                }
                Step::Dropout { x, y } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    match mode {
                        Mode::Train { seed, step } if op.ratio > 0.0 => {
                            // The candle path's stream: the same mask bit for bit.
                            let mut rng = SplitMix64::derive(seed, &[step, oi as u64]);
                            let keep: Vec<u8> = (0..x.len())
                                .map(|_| u8::from(rng.next_f64() >= op.ratio as f64))
                                .collect();
                            let scale = 1.0 / (1.0 - op.ratio);
                            kernels::dropout(&mut buf, y, &prog.bufs[x.buf], x, &keep, scale);
                            tape.masks[oi] = Some(keep);
                        }
                        _ => kernels::copy(&mut buf, y, &prog.bufs[x.buf], x, false),
                    }
                    prog.bufs[y.buf] = buf;
                }
                Step::Copy { parts, out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    for (src, dst) in parts {
                        if src.buf == out.buf {
                            prog.bufs[out.buf] = buf;
                            return Err(invalid_plan!("op \"{}\" copies into itself", op.name));
                        }
                        kernels::copy(&mut buf, dst, &prog.bufs[src.buf], src, false);
                    }
                    prog.bufs[out.buf] = buf;
                }
                Step::Softmax { x, y, axis } => {
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    kernels::softmax(&mut buf, y, &prog.bufs[x.buf], x, *axis);
                    prog.bufs[y.buf] = buf;
                }
                Step::GateMix { w, es, out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let parts: Vec<(&[f32], View)> = es
                        .iter()
                        .map(|v| (prog.bufs[v.buf].as_slice(), *v))
                        .collect();
                    kernels::gate_mix(&mut buf, out, &prog.bufs[w.buf], w, &parts);
                    prog.bufs[out.buf] = buf;
                }
                Step::Norm {
                    x,
                    y,
                    axis,
                    batch_norm,
                    params: p,
                } => {
                    let eps = if op.eps > 0.0 {
                        op.eps as f64
                    } else {
                        DEFAULT_NORM_EPS
                    };
                    let xs = &prog.bufs[x.buf];
                    let (mean, inv) = if *batch_norm && !train {
                        let (rm, rv) = (ps.get(p[2]), ps.get(p[3]));
                        let inv = rv.iter().map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32);
                        (rm.to_vec(), inv.collect())
                    } else {
                        kernels::lane_moments(xs, x, *axis, eps)
                    };
                    if *batch_norm && train {
                        let m = if op.momentum > 0.0 {
                            op.momentum
                        } else {
                            DEFAULT_BN_MOMENTUM as f32
                        };
                        let n = x.dims[*axis] as f32;
                        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
                        let (rm, rv) = (ps.get(p[2]), ps.get(p[3]));
                        let new_mean = rm
                            .iter()
                            .zip(&mean)
                            .map(|(&r, &mu)| r * (1.0 - m) + mu * m)
                            .collect();
                        let new_var = rv
                            .iter()
                            .zip(&inv)
                            .map(|(&r, &iv)| {
                                let var = (1.0 / (iv as f64 * iv as f64) - eps) as f32;
                                r * (1.0 - m) + var * unbiased * m
                            })
                            .collect();
                        updates.push((p[2], new_mean));
                        updates.push((p[3], new_var));
                    }
                    let mut buf = std::mem::take(&mut prog.bufs[y.buf]);
                    let bn = *batch_norm;
                    let affine = move |l: usize, i: usize| if bn { l } else { i };
                    kernels::normalize(
                        &mut buf,
                        y,
                        &prog.bufs[x.buf],
                        x,
                        *axis,
                        &mean,
                        &inv,
                        ps.get(p[0]),
                        ps.get(p[1]),
                        &affine,
                    );
                    prog.bufs[y.buf] = buf;
                    tape.stats[oi] = Some((mean, inv));
                }
            }
            record(&mut self.times, "fwd", step, t0);
        }
        let logits = plan
            .tasks
            .iter()
            .map(|t| {
                let v = prog.views[t.logits as usize].ok_or_else(|| {
                    invalid_plan!("the logits of task \"{}\" are never computed", t.tower_name)
                })?;
                let buf = &prog.bufs[v.buf];
                Ok((0..v.rows())
                    .flat_map(|r| kernels::row(buf, &v, r).to_vec())
                    .collect())
            })
            .collect::<Result<Vec<Vec<f32>>>>()?;
        self.tape = train.then_some(tape);
        Ok(NativeForward {
            logits,
            buffer_updates: updates,
        })
    }

    /// With `PLEC_PROFILE`: milliseconds per call and share of the total
    /// per step label, largest first.
    pub fn profile(&self) -> Option<String> {
        let times = self.times.as_ref()?;
        let total: f64 = times.values().map(|t| t.0).sum();
        let mut rows: Vec<_> = times.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let mut out = String::from("native engine profile (ms per call, calls, share):\n");
        for (label, (s, n)) in rows {
            out.push_str(&format!(
                "  {label:<32} {:>9.3} {:>7} {:>5.1}%\n",
                1e3 * s / *n as f64,
                n,
                100.0 * s / total.max(1e-12)
            ));
        }
        Some(out)
    }

    /// The gathered embedding rows of the last training forward pass.
    pub fn gathered(&self, tables: &[Table], device: &Device) -> Result<Vec<Gathered>> {
        match &self.tape {
            Some(t) => embed::gathered(&t.lookup, tables, device),
            None => Ok(Vec::new()),
        }
    }

    /// Backpropagates `dlogits` (per task, `[B, C]`) through the last
    /// training forward pass and inserts every trainable parameter's and
    /// every gathered table's gradient into `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        plan: &Plan,
        params: &[ParamSlot],
        dlogits: &[Option<Vec<f32>>],
        gathered: &[Gathered],
        grads: &mut GradStore,
        device: &Device,
    ) -> Result<()> {
        let nt = self.gemm();
        let tape = self
            .tape
            .take()
            .ok_or_else(|| invalid_plan!("backward without a training forward pass"))?;
        let prog = self
            .programs
            .iter_mut()
            .find(|p| p.batch == tape.batch)
            .ok_or_else(|| invalid_plan!("the forward pass's program is gone"))?;
        let t_zero = self.times.is_some().then(std::time::Instant::now);
        prog.start_backward();
        record_label(&mut self.times, "bwd zero gradients", t_zero);
        let ps = Params::borrow(params)?;
        let mut pgrads: Vec<Vec<f32>> = plan
            .params
            .iter()
            .zip(params)
            .map(|(p, slot)| match slot {
                ParamSlot::Trainable(_) => vec![0.0; p.shape.iter().product::<u64>() as usize],
                ParamSlot::Buffer(_) => Vec::new(),
            })
            .collect();
        for (t, d) in plan.tasks.iter().zip(dlogits) {
            let Some(v) = prog.views[t.logits as usize] else {
                continue;
            };
            let w = v.dims[2];
            let acc = !prog.exclusive[v.buf];
            let mut g = std::mem::take(&mut prog.gbufs[prog.gslot[v.buf]]);
            // A task without a gradient (weight 0) still seeds zeros: an
            // exclusive buffer is never zeroed otherwise.
            kernels::rows_mut(&mut g, &v, |r, out| match d {
                Some(d) if acc => out
                    .iter_mut()
                    .zip(&d[r * w..(r + 1) * w])
                    .for_each(|(o, &x)| *o += x),
                Some(d) => out.copy_from_slice(&d[r * w..(r + 1) * w]),
                None if acc => {}
                None => out.fill(0.0),
            });
            prog.gbufs[prog.gslot[v.buf]] = g;
        }
        // Gradients of the gathered rows, per slot; a slot's bags share
        // one table, so the first bag gives its row width.
        let mut drows: Vec<Vec<f32>> = tape
            .lookup
            .rows
            .iter()
            .enumerate()
            .map(|(slot, (_, list, _))| {
                let dim = tape
                    .lookup
                    .bags
                    .iter()
                    .find(|b| b.source == slot)
                    .map_or(0, |b| b.dim);
                vec![0.0; list.len() * dim]
            })
            .collect();
        for (oi, step) in prog.steps.iter().enumerate().rev() {
            let op = &plan.ops[oi];
            let needs = |v: &View| prog.needs_grad[v.buf];
            let acc = |v: &View| !prog.exclusive[v.buf];
            let t0 = self.times.is_some().then(std::time::Instant::now);
            for &b in &prog.zero_before[oi] {
                let n = prog.bufs[b].len();
                prog.gbufs[prog.gslot[b]][..n].fill(0.0);
            }
            match step {
                Step::Alias => {}
                Step::Group { out } => {
                    let cols = tape.columns[oi].as_deref().unwrap_or(&[]);
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    for (k, &f) in op.features.iter().enumerate() {
                        let Some(bag) = tape.lookup.bags.iter().find(|b| b.feature == f as usize)
                        else {
                            continue;
                        };
                        if let (Some(&c), Some(d)) = (cols.get(k), drows.get_mut(bag.source)) {
                            embed::scatter(d, g, out.dims[2], c, bag);
                        }
                    }
                }
                Step::Linear { x, out, w, b } => {
                    let (o, i) = (out.dims[2], x.dims[2]);
                    let (gm, xm) = (flat(out)?, flat(x)?);
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    if let Some(dw) = pgrads.get_mut(*w).filter(|d| !d.is_empty()) {
                        gemm::matmul(
                            dw,
                            Mat::dense(0, o, i),
                            true,
                            g,
                            gm.t(),
                            &prog.bufs[x.buf],
                            xm,
                            nt,
                        )?;
                    }
                    if let Some(db) = b.and_then(|b| pgrads.get_mut(b)).filter(|d| !d.is_empty()) {
                        kernels::add_bias_grad(db, g, &flat_view(out));
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let r = gemm::matmul(
                            &mut dx,
                            xm,
                            acc(x),
                            &prog.gbufs[prog.gslot[out.buf]],
                            gm,
                            ps.get(*w),
                            Mat::dense(0, o, i),
                            nt,
                        );
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                        r?;
                    }
                }
                Step::Batched { x, out, w, b }
                    if experts_in_parallel(nt, out.dims[1], out.dims[0]) =>
                {
                    use rayon::prelude::*;
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let one = gemm::Gemm { threads: 1, ..nt };
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    let xs = &prog.bufs[x.buf];
                    if let Some(dw) = pgrads.get_mut(*w).filter(|d| d.len() == e * o * i) {
                        let rs: Vec<Result<()>> = dw
                            .par_chunks_mut(o * i)
                            .enumerate()
                            .map(|(k, dwk)| {
                                let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                                gemm::matmul(
                                    dwk,
                                    Mat::dense(0, o, i),
                                    true,
                                    g,
                                    out.mat(k).t(),
                                    xs,
                                    xm,
                                    one,
                                )
                            })
                            .collect();
                        rs.into_iter().collect::<Result<Vec<()>>>()?;
                    }
                    if let Some(db) = b.and_then(|b| pgrads.get_mut(b)).filter(|d| !d.is_empty()) {
                        kernels::add_bias_grad(db, g, out);
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let shared = gemm::SharedDst::new(&mut dx);
                        let g = &prog.gbufs[prog.gslot[out.buf]];
                        let run = |k: usize| -> Result<()> {
                            // A shared input is written by one expert at a time,
                            // each multiply on all threads.
                            let (xm, how) = match x.rank {
                                2 => (flat(x)?, nt),
                                _ => (x.mat(k), one),
                            };
                            // SAFETY: stacked inputs: each expert's matrix is its own
                            // rows of a view whose rows are disjoint (checked when the
                            // program was built), so parallel calls never share an
                            // element; a shared input is written one expert at a time.
                            unsafe {
                                gemm::matmul_into(
                                    shared,
                                    xm,
                                    acc(x),
                                    g,
                                    out.mat(k),
                                    ps.get(*w),
                                    Mat::dense(k * o * i, o, i),
                                    how,
                                )
                            }
                        };
                        let r: Result<Vec<()>> = if x.rank == 3 {
                            (0..e).into_par_iter().map(run).collect()
                        } else {
                            (0..e).map(run).collect()
                        };
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                        r?;
                    }
                }
                Step::Batched { x, out, w, b } => {
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let g = &prog.gbufs[prog.gslot[out.buf]];
                    for k in 0..e {
                        let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                        if let Some(dw) = pgrads.get_mut(*w).filter(|d| !d.is_empty()) {
                            gemm::matmul(
                                dw,
                                Mat::dense(k * o * i, o, i),
                                true,
                                g,
                                out.mat(k).t(),
                                &prog.bufs[x.buf],
                                xm,
                                nt,
                            )?;
                        }
                    }
                    if let Some(db) = b.and_then(|b| pgrads.get_mut(b)).filter(|d| !d.is_empty()) {
                        kernels::add_bias_grad(db, g, out);
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        let mut r = Ok(());
                        for k in 0..e {
                            let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                            r = r.and(gemm::matmul(
                                &mut dx,
                                xm,
                                acc(x),
                                &prog.gbufs[prog.gslot[out.buf]],
                                out.mat(k),
                                ps.get(*w),
                                Mat::dense(k * o * i, o, i),
                                nt,
                            ));
                        }
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                        r?;
                    }
                }
                Step::Act {
                    x, in_place: true, ..
                } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    kernels::activation_backward_in_place(
                        kind,
                        &mut prog.gbufs[prog.gslot[x.buf]],
                        x,
                        &prog.bufs[x.buf],
                    );
                }
                Step::Act { x, y, slope, .. } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let s = slope.map(|s| ps.get(s));
                    if let Some(ds) = slope
                        .and_then(|s| pgrads.get_mut(s))
                        .filter(|d| !d.is_empty())
                    {
                        kernels::prelu_slope_grad(
                            ds,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[x.buf],
                            x,
                        );
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        kernels::activation_backward(
                            kind,
                            op.alpha,
                            s,
                            &mut dx,
                            x,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[x.buf],
                            x,
                            &prog.bufs[y.buf],
                            y,
                            acc(x),
                        );
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                    }
                }
                Step::Dropout { x, y } => {
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        match &tape.masks[oi] {
                            Some(keep) => {
                                let s = 1.0 / (1.0 - op.ratio);
                                kernels::dropout_backward(
                                    &mut dx,
                                    x,
                                    &prog.gbufs[prog.gslot[y.buf]],
                                    y,
                                    keep,
                                    s,
                                    acc(x),
                                )
                            }
                            None => {
                                kernels::copy(&mut dx, x, &prog.gbufs[prog.gslot[y.buf]], y, acc(x))
                            }
                        }
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                    }
                }
                Step::Copy { parts, out } => {
                    for (src, dst) in parts {
                        if needs(src) && src.buf != out.buf {
                            let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[src.buf]]);
                            kernels::copy(
                                &mut dx,
                                src,
                                &prog.gbufs[prog.gslot[out.buf]],
                                dst,
                                acc(src),
                            );
                            prog.gbufs[prog.gslot[src.buf]] = dx;
                        }
                    }
                }
                Step::Softmax { x, y, axis } => {
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                        kernels::softmax_backward(
                            &mut dx,
                            x,
                            &prog.gbufs[prog.gslot[y.buf]],
                            y,
                            &prog.bufs[y.buf],
                            y,
                            *axis,
                            acc(x),
                        );
                        prog.gbufs[prog.gslot[x.buf]] = dx;
                    }
                }
                Step::GateMix { w, es, out } => {
                    if needs(w) {
                        let mut dw = std::mem::take(&mut prog.gbufs[prog.gslot[w.buf]]);
                        let parts: Vec<(&[f32], View)> = es
                            .iter()
                            .map(|v| (prog.bufs[v.buf].as_slice(), *v))
                            .collect();
                        kernels::gate_mix_backward_w(
                            &mut dw,
                            w,
                            &prog.gbufs[prog.gslot[out.buf]],
                            out,
                            &parts,
                            acc(w),
                        );
                        prog.gbufs[prog.gslot[w.buf]] = dw;
                    }
                    let mut k0 = 0;
                    for e in es {
                        if needs(e) {
                            let mut de = std::mem::take(&mut prog.gbufs[prog.gslot[e.buf]]);
                            kernels::gate_mix_backward_e(
                                &mut de,
                                e,
                                &prog.gbufs[prog.gslot[out.buf]],
                                out,
                                &prog.bufs[w.buf],
                                w,
                                k0,
                                acc(e),
                            );
                            prog.gbufs[prog.gslot[e.buf]] = de;
                        }
                        k0 += e.dims[0];
                    }
                }
                Step::Norm {
                    x,
                    y,
                    axis,
                    batch_norm,
                    params: p,
                } => {
                    let Some((mean, inv)) = &tape.stats[oi] else {
                        continue;
                    };
                    let mut dgamma = std::mem::take(&mut pgrads[p[0]]);
                    let mut dbeta = std::mem::take(&mut pgrads[p[1]]);
                    dgamma.resize(ps.get(p[0]).len(), 0.0);
                    dbeta.resize(ps.get(p[1]).len(), 0.0);
                    let mut dx = std::mem::take(&mut prog.gbufs[prog.gslot[x.buf]]);
                    let bn = *batch_norm;
                    let affine = move |l: usize, i: usize| if bn { l } else { i };
                    kernels::normalize_backward(
                        &mut dx,
                        x,
                        &prog.gbufs[prog.gslot[y.buf]],
                        y,
                        &prog.bufs[x.buf],
                        x,
                        *axis,
                        mean,
                        inv,
                        ps.get(p[0]),
                        &mut dgamma,
                        &mut dbeta,
                        &affine,
                        acc(x),
                    );
                    prog.gbufs[prog.gslot[x.buf]] = dx;
                    pgrads[p[0]] = dgamma;
                    pgrads[p[1]] = dbeta;
                }
            }
            record(&mut self.times, "bwd", step, t0);
        }
        let t_out = self.times.is_some().then(std::time::Instant::now);
        for ((slot, p), g) in params.iter().zip(&plan.params).zip(pgrads) {
            if let ParamSlot::Trainable(var) = slot {
                let shape: Vec<usize> = p.shape.iter().map(|&d| d as usize).collect();
                grads.insert(var.as_tensor(), Tensor::from_vec(g, shape, device)?);
            }
        }
        for (g, d) in gathered.iter().zip(drows) {
            let dims = g.rows.as_tensor().dims().to_vec();
            grads.insert(g.rows.as_tensor(), Tensor::from_vec(d, dims, device)?);
        }
        record_label(&mut self.times, "bwd gradients out", t_out);
        Ok(())
    }
}

/// Rows up to which a batched layer multiplies its experts in parallel,
/// one thread each, rather than one after another on all threads: with
/// AMX at batch 1024 that is 12-20% faster (no splitting of small
/// multiplies); at 8192 each expert's multiply is big enough that splitting
/// it wins (expert-parallel was 1.5x slower there).
const EXPERT_PARALLEL_MAX_ROWS: usize = 2048;

fn experts_in_parallel(how: gemm::Gemm, rows: usize, experts: usize) -> bool {
    how.bf16 && how.threads > 1 && experts > 1 && rows <= EXPERT_PARALLEL_MAX_ROWS
}

/// Adds the time since `t0` to `step`'s label (profiling only).
fn record(
    times: &mut Option<std::collections::BTreeMap<String, (f64, u64)>>,
    dir: &str,
    step: &Step,
    t0: Option<std::time::Instant>,
) {
    let (Some(times), Some(t0)) = (times.as_mut(), t0) else {
        return;
    };
    let label = match step {
        Step::Alias => "alias".to_string(),
        Step::Group { .. } => "feature group".into(),
        Step::Linear { x, out, .. } => format!("linear {}x{}", x.dims[2], out.dims[2]),
        Step::Batched { x, out, .. } => {
            format!("batched {}x {}x{}", out.dims[0], x.dims[2], out.dims[2])
        }
        Step::Act { .. } => "activation".into(),
        Step::Dropout { .. } => "dropout".into(),
        Step::Copy { .. } => "copy".into(),
        Step::Softmax { .. } => "softmax".into(),
        Step::GateMix { .. } => "gate mix".into(),
        Step::Norm { .. } => "norm".into(),
    };
    let e = times.entry(format!("{dir} {label}")).or_insert((0.0, 0));
    e.0 += t0.elapsed().as_secs_f64();
    e.1 += 1;
}

fn record_label(
    times: &mut Option<std::collections::BTreeMap<String, (f64, u64)>>,
    label: &str,
    t0: Option<std::time::Instant>,
) {
    if let (Some(times), Some(t0)) = (times.as_mut(), t0) {
        let e = times.entry(label.to_string()).or_insert((0.0, 0));
        e.0 += t0.elapsed().as_secs_f64();
        e.1 += 1;
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

/// Fills the feature group `out` (`[B, W]`) and returns each feature's
/// first column.
#[allow(clippy::too_many_arguments)]
fn feature_group(
    buf: &mut [f32],
    out: &View,
    plan: &Plan,
    op: &crate::proto::plan::Op,
    tables: &[Table],
    batch: &Batch,
    lookup: &Lookup,
    train: bool,
) -> Result<Vec<usize>> {
    let (rows, width) = (out.dims[1], out.dims[2]);
    let mut cols = Vec::with_capacity(op.features.len());
    let mut col = 0usize;
    for &f in &op.features {
        let f = f as usize;
        let spec = &plan.features[f];
        cols.push(col);
        if let Some(bag) = lookup.bags.iter().find(|b| b.feature == f) {
            if col + bag.dim > width {
                return Err(bad_batch!(
                    "feature group \"{}\" is wider than the plan says",
                    op.name
                ));
            }
            if train {
                let src = &lookup.rows[bag.source].2;
                embed::pool(buf, width, col, bag, src);
            } else {
                let weight = host::tensor_f32(&tables[bag.source].weight)?;
                embed::pool(buf, width, col, bag, weight.slice());
            }
            col += bag.dim;
            continue;
        }
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
                if col + dim > width {
                    return Err(bad_batch!(
                        "feature group \"{}\" is wider than the plan's {}",
                        op.name,
                        width
                    ));
                }
                for r in 0..rows {
                    buf[r * width + col..r * width + col + dim]
                        .copy_from_slice(&values[r * dim..(r + 1) * dim]);
                }
                col += dim;
            }
            FeatureInput::Ids { .. } => {
                return Err(bad_batch!(
                    "feature \"{}\" is dense but the batch holds ids for it",
                    spec.name
                ))
            }
        }
    }
    if col != width {
        return Err(bad_batch!(
            "feature group \"{}\" is {} wide, the plan says {}",
            op.name,
            col,
            width
        ));
    }
    Ok(cols)
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
