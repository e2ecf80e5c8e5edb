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

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

impl Engine {
    /// An engine for `plan`, or the reason it cannot run it (the model
    /// then uses the candle path). Builds a small program to find out.
    pub fn new(plan: &Plan, batch_axis: &[usize]) -> std::result::Result<Self, String> {
        Program::build(plan, batch_axis, 2).map_err(|e| e.to_string())?;
        Ok(Self {
            programs: Vec::new(),
            tape: None,
        })
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
        let nt = threads();
        for (oi, step) in prog.steps.iter().enumerate() {
            let op = &plan.ops[oi];
            match step {
                Step::Alias => {}
                Step::Group { out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    let cols =
                        feature_group(&mut buf, out, plan, op, tables, batch, &tape.lookup, train);
                    prog.bufs[out.buf] = buf;
                    tape.columns[oi] = Some(cols?);
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
                Step::Act { x, y, slope } => {
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
                Step::GateMix { w, e, out } => {
                    let mut buf = std::mem::take(&mut prog.bufs[out.buf]);
                    kernels::gate_mix(&mut buf, out, &prog.bufs[w.buf], w, &prog.bufs[e.buf], e);
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
        let tape = self
            .tape
            .take()
            .ok_or_else(|| invalid_plan!("backward without a training forward pass"))?;
        let prog = self
            .programs
            .iter_mut()
            .find(|p| p.batch == tape.batch)
            .ok_or_else(|| invalid_plan!("the forward pass's program is gone"))?;
        prog.zero_grads();
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
            let (Some(v), Some(d)) = (prog.views[t.logits as usize], d) else {
                continue;
            };
            let w = v.dims[2];
            let mut g = std::mem::take(&mut prog.gbufs[v.buf]);
            kernels::rows_mut(&mut g, &v, |r, out| {
                out.iter_mut()
                    .zip(&d[r * w..(r + 1) * w])
                    .for_each(|(o, &x)| *o += x)
            });
            prog.gbufs[v.buf] = g;
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
        let nt = threads();
        for (oi, step) in prog.steps.iter().enumerate().rev() {
            let op = &plan.ops[oi];
            let needs = |v: &View| prog.needs_grad[v.buf];
            match step {
                Step::Alias => {}
                Step::Group { out } => {
                    let cols = tape.columns[oi].as_deref().unwrap_or(&[]);
                    let g = &prog.gbufs[out.buf];
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
                    let g = &prog.gbufs[out.buf];
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
                        let mut dx = std::mem::take(&mut prog.gbufs[x.buf]);
                        let r = gemm::matmul(
                            &mut dx,
                            xm,
                            true,
                            &prog.gbufs[out.buf],
                            gm,
                            ps.get(*w),
                            Mat::dense(0, o, i),
                            nt,
                        );
                        prog.gbufs[x.buf] = dx;
                        r?;
                    }
                }
                Step::Batched { x, out, w, b } => {
                    let (e, o, i) = (out.dims[0], out.dims[2], x.dims[2]);
                    let g = &prog.gbufs[out.buf];
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
                        let mut dx = std::mem::take(&mut prog.gbufs[x.buf]);
                        let mut r = Ok(());
                        for k in 0..e {
                            let xm = if x.rank == 2 { flat(x)? } else { x.mat(k) };
                            r = r.and(gemm::matmul(
                                &mut dx,
                                xm,
                                true,
                                &prog.gbufs[out.buf],
                                out.mat(k),
                                ps.get(*w),
                                Mat::dense(k * o * i, o, i),
                                nt,
                            ));
                        }
                        prog.gbufs[x.buf] = dx;
                        r?;
                    }
                }
                Step::Act { x, y, slope } => {
                    let kind = Activation::try_from(op.activation).unwrap_or(Activation::ActNone);
                    let s = slope.map(|s| ps.get(s));
                    if let Some(ds) = slope
                        .and_then(|s| pgrads.get_mut(s))
                        .filter(|d| !d.is_empty())
                    {
                        kernels::prelu_slope_grad(ds, &prog.gbufs[y.buf], y, &prog.bufs[x.buf], x);
                    }
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[x.buf]);
                        kernels::activation_backward(
                            kind,
                            op.alpha,
                            s,
                            &mut dx,
                            x,
                            &prog.gbufs[y.buf],
                            y,
                            &prog.bufs[x.buf],
                            x,
                            &prog.bufs[y.buf],
                            y,
                        );
                        prog.gbufs[x.buf] = dx;
                    }
                }
                Step::Dropout { x, y } => {
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[x.buf]);
                        match &tape.masks[oi] {
                            Some(keep) => {
                                let s = 1.0 / (1.0 - op.ratio);
                                kernels::dropout_backward(
                                    &mut dx,
                                    x,
                                    &prog.gbufs[y.buf],
                                    y,
                                    keep,
                                    s,
                                )
                            }
                            None => kernels::copy(&mut dx, x, &prog.gbufs[y.buf], y, true),
                        }
                        prog.gbufs[x.buf] = dx;
                    }
                }
                Step::Copy { parts, out } => {
                    for (src, dst) in parts {
                        if needs(src) && src.buf != out.buf {
                            let mut dx = std::mem::take(&mut prog.gbufs[src.buf]);
                            kernels::copy(&mut dx, src, &prog.gbufs[out.buf], dst, true);
                            prog.gbufs[src.buf] = dx;
                        }
                    }
                }
                Step::Softmax { x, y, axis } => {
                    if needs(x) {
                        let mut dx = std::mem::take(&mut prog.gbufs[x.buf]);
                        kernels::softmax_backward(
                            &mut dx,
                            x,
                            &prog.gbufs[y.buf],
                            y,
                            &prog.bufs[y.buf],
                            y,
                            *axis,
                        );
                        prog.gbufs[x.buf] = dx;
                    }
                }
                Step::GateMix { w, e, out } => {
                    if needs(w) {
                        let mut dw = std::mem::take(&mut prog.gbufs[w.buf]);
                        kernels::gate_mix_backward_w(
                            &mut dw,
                            w,
                            &prog.gbufs[out.buf],
                            out,
                            &prog.bufs[e.buf],
                            e,
                        );
                        prog.gbufs[w.buf] = dw;
                    }
                    if needs(e) {
                        let mut de = std::mem::take(&mut prog.gbufs[e.buf]);
                        kernels::gate_mix_backward_e(
                            &mut de,
                            e,
                            &prog.gbufs[out.buf],
                            out,
                            &prog.bufs[w.buf],
                            w,
                        );
                        prog.gbufs[e.buf] = de;
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
                    let mut dx = std::mem::take(&mut prog.gbufs[x.buf]);
                    let bn = *batch_norm;
                    let affine = move |l: usize, i: usize| if bn { l } else { i };
                    kernels::normalize_backward(
                        &mut dx,
                        x,
                        &prog.gbufs[y.buf],
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
                    );
                    prog.gbufs[x.buf] = dx;
                    pgrads[p[0]] = dgamma;
                    pgrads[p[1]] = dbeta;
                }
            }
        }
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
        Ok(())
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
/// gradient, or plain tensors (evaluation).
pub fn logits_tensors(
    plan: &Plan,
    logits: Vec<Vec<f32>>,
    rows: usize,
    device: &Device,
    train: bool,
) -> Result<(Vec<Tensor>, Vec<Var>)> {
    let mut ts = Vec::with_capacity(logits.len());
    let mut vars = Vec::new();
    for (t, l) in plan.tasks.iter().zip(logits) {
        let c = (l.len() / rows.max(1)).max(1);
        let _ = t;
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
