//! Row kernels of the native engine: activations, dropout, softmax, gate
//! mixing, normalization, copies and bias sums, forward and backward.
//!
//! A kernel walks the rows of its views (see `view`); rows are split over
//! rayon's pool when a call has enough elements to pay for it. Outputs are
//! either fresh contiguous buffers (written) or gradient views (added to:
//! gradients of a value read by several ops accumulate).

use rayon::prelude::*;

use super::shared::Shared;
use super::view::View;
use crate::proto::plan::Activation;

/// Below this many elements a kernel runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// What a row that is a cache miss costs, in element operations (for
/// `rows_mut_with`'s choice of threads).
const ROW_MISS_WORK: usize = 64;

/// Calls `f(r, row)` for every row `r` of `v` with the row as a mutable
/// slice of `buf`, in parallel when the view is large.
///
/// The caller guarantees (checked when the program is built) that `v`'s
/// rows are disjoint and lie inside `buf`; `rows_mut` re-checks the bounds.
pub(super) fn rows_mut<F>(buf: &mut [f32], v: &View, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    rows_mut_with(buf, v, v.dims[2], f)
}

/// `rows_mut` for kernels whose rows cost `work` element operations each
/// (more than their width: e.g. one dot product per output element).
pub(super) fn rows_mut_with<F>(buf: &mut [f32], v: &View, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let (rows, width) = (v.rows(), v.dims[2]);
    if rows == 0 || width == 0 || v.end() > buf.len() {
        return;
    }
    let base = Shared::new(buf.as_mut_ptr());
    let one = |r: usize| {
        let off = v.row_offset(r);
        // SAFETY: the row lies inside `buf` (`end()` bounds every row) and
        // no other row overlaps it (`rows_disjoint`, checked at build), so
        // each call gets exclusive access to its run.
        let row = unsafe { std::slice::from_raw_parts_mut(base.get().add(off), width) };
        f(r, row);
    };
    if rows * work >= PAR_MIN && rows > 1 {
        (0..rows).into_par_iter().with_min_len(16).for_each(one);
    } else {
        (0..rows).for_each(one);
    }
}

/// Stores `v` into `o`, or adds it when `acc` (gradients of a value that
/// several ops read accumulate; see `Program::exclusive`).
#[inline(always)]
fn put(o: &mut f32, v: f32, acc: bool) {
    if acc {
        *o += v;
    } else {
        *o = v;
    }
}

/// `sum a[i] b[i]` with sixteen independent partial sums, so the compiler
/// can keep them in vector registers (a plain iterator sum is one serial
/// chain of dependent adds: f32 addition is not reassociated).
#[inline]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Row `r` of `v` in `buf`.
pub(super) fn row<'a>(buf: &'a [f32], v: &View, r: usize) -> &'a [f32] {
    let off = v.row_offset(r);
    &buf[off..off + v.dims[2]]
}

/// Writes `src` (view `sv`) into `dst` (view `dv`, same dims), or adds it.
pub(super) fn copy(dst: &mut [f32], dv: &View, src: &[f32], sv: &View, add: bool) {
    rows_mut(dst, dv, |r, out| {
        let x = row(src, sv, r);
        if add {
            out.iter_mut().zip(x).for_each(|(o, &x)| *o += x);
        } else {
            out.copy_from_slice(x);
        }
    });
}

/// Adds the column sums of each matrix of `g` to `db` (`[dims[0], dims[2]]`).
pub(super) fn add_bias_grad(db: &mut [f32], g: &[f32], gv: &View) {
    let (d1, w) = (gv.dims[1], gv.dims[2]);
    for (e, acc) in db.chunks_mut(w.max(1)).take(gv.dims[0]).enumerate() {
        // Each matrix's rows in order: the same summation order as a
        // row-order column sum, deterministic for any thread count.
        let partials: Vec<Vec<f32>> = (0..d1)
            .collect::<Vec<_>>()
            .par_chunks(256)
            .map(|rs| {
                let mut s = vec![0f32; w];
                for &i in rs {
                    let x = row(g, gv, e * d1 + i);
                    s.iter_mut().zip(x).for_each(|(s, &x)| *s += x);
                }
                s
            })
            .collect();
        for p in partials {
            acc.iter_mut().zip(&p).for_each(|(a, &x)| *a += x);
        }
    }
}

/// The activation's default parameter where the plan leaves 0.
fn alpha_of(kind: Activation, alpha: f32) -> f32 {
    match kind {
        Activation::LeakyRelu if alpha == 0.0 => 0.01,
        Activation::Elu if alpha == 0.0 => 1.0,
        _ => alpha,
    }
}

fn sigmoid(x: f32) -> f32 {
    // As `ops::sigmoid`: no overflow for large |x|.
    ((x * 0.5).tanh() + 1.0) * 0.5
}

fn erf(x: f32) -> f32 {
    candle_core::cpu::erf::erf_f32(x)
}

/// `y = act(x)`; `slope` is prelu's parameter (`[1]` or the row width).
pub(super) fn activation(
    kind: Activation,
    alpha: f32,
    slope: Option<&[f32]>,
    y: &mut [f32],
    yv: &View,
    x: &[f32],
    xv: &View,
) {
    let a = alpha_of(kind, alpha);
    rows_mut(y, yv, |r, out| {
        let xs = row(x, xv, r);
        match kind {
            Activation::ActNone => out.copy_from_slice(xs),
            Activation::Relu => out.iter_mut().zip(xs).for_each(|(o, &x)| *o = x.max(0.0)),
            Activation::Sigmoid => out.iter_mut().zip(xs).for_each(|(o, &x)| *o = sigmoid(x)),
            Activation::Tanh => out.iter_mut().zip(xs).for_each(|(o, &x)| *o = x.tanh()),
            Activation::LeakyRelu => out
                .iter_mut()
                .zip(xs)
                .for_each(|(o, &x)| *o = if x > 0.0 { x } else { a * x }),
            Activation::Gelu => out.iter_mut().zip(xs).for_each(|(o, &x)| {
                *o = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
            }),
            Activation::Silu => out
                .iter_mut()
                .zip(xs)
                .for_each(|(o, &x)| *o = x / (1.0 + (-x).exp())),
            Activation::Elu => out
                .iter_mut()
                .zip(xs)
                .for_each(|(o, &x)| *o = if x > 0.0 { x } else { a * (x.exp() - 1.0) }),
            Activation::Prelu => {
                let s = slope.unwrap_or(&[]);
                out.iter_mut().zip(xs).enumerate().for_each(|(j, (o, &x))| {
                    let k = if s.len() == 1 { 0 } else { j };
                    *o = if x > 0.0 {
                        x
                    } else {
                        s.get(k).copied().unwrap_or(0.0) * x
                    }
                })
            }
        }
    });
}

/// `x = act(x)` in place, for the activations whose gradient needs only
/// their output (relu, sigmoid, tanh; others are left unchanged and never
/// run in place, see `program::in_place_activations`).
pub(super) fn activation_in_place(kind: Activation, buf: &mut [f32], v: &View) {
    rows_mut(buf, v, |_, out| match kind {
        Activation::Relu => out.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Sigmoid => out.iter_mut().for_each(|x| *x = sigmoid(*x)),
        Activation::Tanh => out.iter_mut().for_each(|x| *x = x.tanh()),
        _ => {}
    });
}

/// `g = g * act'(y)` in place over view `v` of the gradient, with `y`
/// the activation's output (same view of the activation buffer).
pub(super) fn activation_backward_in_place(kind: Activation, g: &mut [f32], v: &View, y: &[f32]) {
    rows_mut(g, v, |r, out| {
        let ys = row(y, v, r);
        match kind {
            Activation::Relu => out
                .iter_mut()
                .zip(ys)
                .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 }),
            Activation::Sigmoid => out
                .iter_mut()
                .zip(ys)
                .for_each(|(g, &y)| *g *= y * (1.0 - y)),
            Activation::Tanh => out.iter_mut().zip(ys).for_each(|(g, &y)| *g *= 1.0 - y * y),
            _ => {}
        }
    });
}

/// `dx += dy * act'(x)` (from `x` and `y = act(x)`).
#[allow(clippy::too_many_arguments)]
pub(super) fn activation_backward(
    kind: Activation,
    alpha: f32,
    slope: Option<&[f32]>,
    dx: &mut [f32],
    dxv: &View,
    dy: &[f32],
    dyv: &View,
    x: &[f32],
    xv: &View,
    y: &[f32],
    yv: &View,
    acc: bool,
) {
    let a = alpha_of(kind, alpha);
    if kind == Activation::Relu {
        // The hot case (every expert and tower layer): a branch-free loop
        // the compiler vectorizes.
        rows_mut(dx, dxv, |r, out| {
            let (g, ys) = (row(dy, dyv, r), row(y, yv, r));
            let masked = g
                .iter()
                .zip(ys)
                .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 });
            if acc {
                out.iter_mut().zip(masked).for_each(|(o, v)| *o += v);
            } else {
                out.iter_mut().zip(masked).for_each(|(o, v)| *o = v);
            }
        });
        return;
    }
    rows_mut(dx, dxv, |r, out| {
        let (g, xs, ys) = (row(dy, dyv, r), row(x, xv, r), row(y, yv, r));
        for j in 0..out.len() {
            let (x, y) = (xs[j], ys[j]);
            let d = match kind {
                Activation::ActNone => 1.0,
                Activation::Relu => f32::from(x > 0.0),
                Activation::Sigmoid => y * (1.0 - y),
                Activation::Tanh => 1.0 - y * y,
                Activation::LeakyRelu => {
                    if x > 0.0 {
                        1.0
                    } else {
                        a
                    }
                }
                Activation::Gelu => {
                    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                    cdf + x * (-0.5 * x * x).exp() * 0.398_942_3
                }
                Activation::Silu => {
                    let s = 1.0 / (1.0 + (-x).exp());
                    s * (1.0 + x * (1.0 - s))
                }
                Activation::Elu => {
                    if x > 0.0 {
                        1.0
                    } else {
                        y + a
                    }
                }
                Activation::Prelu => {
                    if x > 0.0 {
                        1.0
                    } else {
                        let s = slope.unwrap_or(&[]);
                        let k = if s.len() == 1 { 0 } else { j };
                        s.get(k).copied().unwrap_or(0.0)
                    }
                }
            };
            put(&mut out[j], g[j] * d, acc);
        }
    });
}

/// Prelu's slope gradient: `sum dy * min(x, 0)` per slope entry.
pub(super) fn prelu_slope_grad(ds: &mut [f32], dy: &[f32], dyv: &View, x: &[f32], xv: &View) {
    for r in 0..dyv.rows() {
        let (g, xs) = (row(dy, dyv, r), row(x, xv, r));
        for j in 0..g.len() {
            let k = if ds.len() == 1 { 0 } else { j };
            if let Some(d) = ds.get_mut(k) {
                *d += g[j] * xs[j].min(0.0);
            }
        }
    }
}

/// `y = x * keep * scale` with `keep` one byte per element in row order.
pub(super) fn dropout(y: &mut [f32], yv: &View, x: &[f32], xv: &View, keep: &[u8], scale: f32) {
    let w = yv.dims[2];
    rows_mut(y, yv, |r, out| {
        let (xs, k) = (row(x, xv, r), &keep[r * w..(r + 1) * w]);
        out.iter_mut()
            .zip(xs.iter().zip(k))
            .for_each(|(o, (&x, &k))| *o = x * f32::from(k) * scale);
    });
}

/// `y = alpha * a * b`, element-wise.
pub(super) fn mul(
    y: &mut [f32],
    yv: &View,
    a: &[f32],
    av: &View,
    b: &[f32],
    bv: &View,
    alpha: f32,
) {
    rows_mut(y, yv, |r, out| {
        let (xa, xb) = (row(a, av, r), row(b, bv, r));
        out.iter_mut()
            .zip(xa.iter().zip(xb))
            .for_each(|(o, (&p, &q))| *o = alpha * p * q);
    });
}

/// Dice's gate: `y = x * (p + alpha * (1 - p))`, `alpha` per column.
pub(super) fn dice(
    y: &mut [f32],
    yv: &View,
    x: &[f32],
    xv: &View,
    p: &[f32],
    pv: &View,
    alpha: &[f32],
) {
    rows_mut(y, yv, |r, out| {
        let (xs, ps) = (row(x, xv, r), row(p, pv, r));
        for (j, o) in out.iter_mut().enumerate() {
            *o = xs[j] * (ps[j] + alpha[j] * (1.0 - ps[j]));
        }
    });
}

/// One input's gradient of [`dice`]: for `x` (`is_x`), `dy * (p + alpha
/// * (1 - p))`; for `p`, `dy * x * (1 - alpha)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn dice_backward(
    dv: &mut [f32],
    dvv: &View,
    dy: &[f32],
    dyv: &View,
    x: &[f32],
    xv: &View,
    p: &[f32],
    pv: &View,
    alpha: &[f32],
    is_x: bool,
    acc: bool,
) {
    rows_mut(dv, dvv, |r, out| {
        let (g, xs, ps) = (row(dy, dyv, r), row(x, xv, r), row(p, pv, r));
        for (j, d) in out.iter_mut().enumerate() {
            let v = if is_x {
                g[j] * (ps[j] + alpha[j] * (1.0 - ps[j]))
            } else {
                g[j] * xs[j] * (1.0 - alpha[j])
            };
            put(d, v, acc);
        }
    });
}

/// Dice's alpha gradient: `sum dy * x * (1 - p)` per column, added.
pub(super) fn dice_alpha_grad(
    da: &mut [f32],
    dy: &[f32],
    dyv: &View,
    x: &[f32],
    xv: &View,
    p: &[f32],
    pv: &View,
) {
    for r in 0..dyv.rows() {
        let (g, xs, ps) = (row(dy, dyv, r), row(x, xv, r), row(p, pv, r));
        for (j, d) in da.iter_mut().enumerate().take(g.len()) {
            *d += g[j] * xs[j] * (1.0 - ps[j]);
        }
    }
}

/// `dx (+)= alpha * dy * other`: one input's gradient of [`mul`].
#[allow(clippy::too_many_arguments)]
pub(super) fn mul_backward(
    dx: &mut [f32],
    dxv: &View,
    dy: &[f32],
    dyv: &View,
    other: &[f32],
    ov: &View,
    alpha: f32,
    acc: bool,
) {
    rows_mut(dx, dxv, |r, out| {
        let (g, o) = (row(dy, dyv, r), row(other, ov, r));
        out.iter_mut()
            .zip(g.iter().zip(o))
            .for_each(|(d, (&g, &o))| put(d, alpha * g * o, acc));
    });
}

/// `dx += dy * keep * scale`.
pub(super) fn dropout_backward(
    dx: &mut [f32],
    dxv: &View,
    dy: &[f32],
    dyv: &View,
    keep: &[u8],
    s: f32,
    acc: bool,
) {
    let w = dxv.dims[2];
    rows_mut(dx, dxv, |r, out| {
        let (g, k) = (row(dy, dyv, r), &keep[r * w..(r + 1) * w]);
        out.iter_mut()
            .zip(g.iter().zip(k))
            .for_each(|(o, (&g, &k))| put(o, g * f32::from(k) * s, acc));
    });
}

/// The lanes of `v` along internal axis `axis`: (start offset, stride)
/// of each, and their length.
pub(super) fn lanes(v: &View, axis: usize) -> (Vec<usize>, usize, usize) {
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let (a, b) = (others[0], others[1]);
    let mut starts = Vec::with_capacity(v.dims[a] * v.dims[b]);
    for i in 0..v.dims[a] {
        for j in 0..v.dims[b] {
            starts.push(v.off + i * v.strides[a] + j * v.strides[b]);
        }
    }
    (starts, v.strides[axis], v.dims[axis])
}

/// Softmax along internal axis `axis`; `y` is a fresh buffer.
pub(super) fn softmax(y: &mut [f32], yv: &View, x: &[f32], xv: &View, axis: usize) {
    if axis == 2 {
        // Along rows (every gate): one row per task, in parallel. A gate's
        // rows are a few logits each, strided through a wide layer's output:
        // every row is a cache miss, so even a batch of short rows pays for
        // the second thread.
        rows_mut_with(y, yv, ROW_MISS_WORK + 4 * yv.dims[2], |r, out| {
            let xs = row(x, xv, r);
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for (o, &x) in out.iter_mut().zip(xs) {
                *o = (x - max).exp();
                sum += *o;
            }
            out.iter_mut().for_each(|o| *o /= sum);
        });
        return;
    }
    let (xs, xst, n) = lanes(xv, axis);
    let (ys, yst, _) = lanes(yv, axis);
    for (&xo, &yo) in xs.iter().zip(&ys) {
        let max = (0..n)
            .map(|i| x[xo + i * xst])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for i in 0..n {
            let e = (x[xo + i * xst] - max).exp();
            y[yo + i * yst] = e;
            sum += e;
        }
        for i in 0..n {
            y[yo + i * yst] /= sum;
        }
    }
}

/// `dx += y * (dy - sum(dy * y))` along the lanes.
#[allow(clippy::too_many_arguments)]
pub(super) fn softmax_backward(
    dx: &mut [f32],
    dxv: &View,
    dy: &[f32],
    dyv: &View,
    y: &[f32],
    yv: &View,
    axis: usize,
    acc: bool,
) {
    if axis == 2 {
        rows_mut_with(dx, dxv, ROW_MISS_WORK + 4 * dxv.dims[2], |r, out| {
            let (g, ys) = (row(dy, dyv, r), row(y, yv, r));
            let dot = dot(g, ys);
            for ((o, &g), &y) in out.iter_mut().zip(g).zip(ys) {
                put(o, y * (g - dot), acc);
            }
        });
        return;
    }
    let (xs, xst, n) = lanes(dxv, axis);
    let (gs, gst, _) = lanes(dyv, axis);
    let (ys, yst, _) = lanes(yv, axis);
    for ((&xo, &go), &yo) in xs.iter().zip(&gs).zip(&ys) {
        let dot: f32 = (0..n).map(|i| dy[go + i * gst] * y[yo + i * yst]).sum();
        for i in 0..n {
            put(
                &mut dx[xo + i * xst],
                y[yo + i * yst] * (dy[go + i * gst] - dot),
                acc,
            );
        }
    }
}

/// The experts a gate mixes: `[K_j, B, D]` views, possibly of several
/// buffers (a CONCAT of expert stacks is read in place, never copied).
pub(super) type Experts<'a> = [(&'a [f32], View)];

/// Global expert `k` of `parts`: its buffer, view and local index.
fn expert<'a>(parts: &'a Experts<'a>, mut k: usize) -> Option<(&'a [f32], &'a View, usize)> {
    for (buf, v) in parts {
        if k < v.dims[0] {
            return Some((buf, v, k));
        }
        k -= v.dims[0];
    }
    None
}

/// `out[b] = sum_k w[b, k] e[k, b]`: `w` `[B, K]`, experts `[K, B, D]`.
pub(super) fn gate_mix(out: &mut [f32], ov: &View, w: &[f32], wv: &View, parts: &Experts<'_>) {
    rows_mut(out, ov, |b, o| {
        let ws = row(w, wv, b);
        o.fill(0.0);
        for (kk, &wk) in ws.iter().enumerate() {
            if let Some((buf, v, local)) = expert(parts, kk) {
                let x = row(buf, v, local * v.dims[1] + b);
                o.iter_mut().zip(x).for_each(|(o, &x)| *o += wk * x);
            }
        }
    });
}

/// Where gate mix backward writes: a gradient buffer, and whether it adds
/// to what is there.
pub(super) type GradOut<'a> = Option<(&'a mut [f32], bool)>;

/// Gate mix backward for the experts of one part (global experts `k0..`,
/// values `e`, `[K, B, D]` view `ev`), in one pass over the batch rows
/// that reads each expert row once for both gradients:
/// `dw[b, k0 + k] (+)= dot(dout[b], e[k, b])` into `dw` (view `dwv`), and
/// `de[k, b] (+)= w[b, k0 + k] dout[b]` into `de` (laid out like `e`).
/// With `masked`, `de` is zeroed where `e` is not > 0: the backward pass
/// of the relu that made the experts (see `relu_masks`).
#[allow(clippy::too_many_arguments)]
pub(super) fn gate_mix_backward(
    dw: GradOut<'_>,
    dwv: &View,
    de: GradOut<'_>,
    masked: bool,
    e: &[f32],
    ev: &View,
    g: &[f32],
    gv: &View,
    w: &[f32],
    wv: &View,
    k0: usize,
) {
    let (kn, bsz, d) = (ev.dims[0], ev.dims[1], ev.dims[2]);
    // The writes below go through raw pointers (rows of different batch
    // rows in parallel): every one must lie inside its buffer. The program
    // builder guarantees this; a plan that breaks it is left untouched.
    let dw_fits = |b: &[f32]| k0 + kn <= dwv.dims[2] && bsz <= dwv.rows() && dwv.end() <= b.len();
    if dw.as_ref().is_some_and(|(b, _)| !dw_fits(b))
        || de.as_ref().is_some_and(|(b, _)| ev.end() > b.len())
    {
        return;
    }
    let dw = dw.map(|(b, acc)| (Shared::new(b.as_mut_ptr()), acc));
    let de = de.map(|(b, acc)| (Shared::new(b.as_mut_ptr()), acc));
    let one = |b: usize| {
        let (gs, ws) = (row(g, gv, b), row(w, wv, b));
        for kk in 0..kn {
            let r = kk * bsz + b;
            let es = row(e, ev, r);
            if let Some((p, acc)) = dw {
                // SAFETY: inside `dw` (checked above); batch row `b` of the
                // gate weights is written by this call alone.
                let o = unsafe { &mut *p.get().add(dwv.row_offset(b) + k0 + kk) };
                put(o, dot(gs, es), acc);
            }
            if let Some((p, acc)) = de {
                let wk = ws[k0 + kk];
                // SAFETY: inside `de` (checked above); the view's rows are
                // disjoint (checked when the program was built) and row
                // (kk, b) belongs to batch row `b`, this call's alone.
                let out =
                    unsafe { std::slice::from_raw_parts_mut(p.get().add(ev.row_offset(r)), d) };
                if masked {
                    for ((o, &gv), &y) in out.iter_mut().zip(gs).zip(es) {
                        let v = if acc { *o + wk * gv } else { wk * gv };
                        *o = if y > 0.0 { v } else { 0.0 };
                    }
                } else {
                    out.iter_mut()
                        .zip(gs)
                        .for_each(|(o, &gv)| put(o, wk * gv, acc));
                }
            }
        }
    };
    if bsz * kn * d >= PAR_MIN && bsz > 1 {
        (0..bsz).into_par_iter().with_min_len(16).for_each(one);
    } else {
        (0..bsz).for_each(one);
    }
}

/// Per-channel statistics of a normalization: mean and `1 / sqrt(var +
/// eps)` (biased variance) of every lane along `axis`.
pub(super) fn lane_moments(x: &[f32], xv: &View, axis: usize, eps: f64) -> (Vec<f32>, Vec<f32>) {
    let (starts, st, n) = lanes(xv, axis);
    let mut mean = Vec::with_capacity(starts.len());
    let mut inv = Vec::with_capacity(starts.len());
    for &o in &starts {
        let m = (0..n).map(|i| x[o + i * st] as f64).sum::<f64>() / n.max(1) as f64;
        let v = (0..n)
            .map(|i| (x[o + i * st] as f64 - m).powi(2))
            .sum::<f64>()
            / n.max(1) as f64;
        mean.push(m as f32);
        inv.push((1.0 / (v + eps).sqrt()) as f32);
    }
    (mean, inv)
}

/// `y = (x - mean) * inv * gamma + beta` per lane along `axis`; lane `l`
/// uses statistics `l` and affine entry `affine_of(l, i)` for element `i`.
#[allow(clippy::too_many_arguments)]
pub(super) fn normalize(
    y: &mut [f32],
    yv: &View,
    x: &[f32],
    xv: &View,
    axis: usize,
    mean: &[f32],
    inv: &[f32],
    gamma: &[f32],
    beta: &[f32],
    affine_of: &dyn Fn(usize, usize) -> usize,
) {
    let (xs, xst, n) = lanes(xv, axis);
    let (ys, yst, _) = lanes(yv, axis);
    for (l, (&xo, &yo)) in xs.iter().zip(&ys).enumerate() {
        for i in 0..n {
            let a = affine_of(l, i);
            y[yo + i * yst] = (x[xo + i * xst] - mean[l]) * inv[l] * gamma[a] + beta[a];
        }
    }
}

/// Backward of `normalize` with batch statistics (the gradient flows
/// through mean and variance): adds to `dx`, `dgamma`, `dbeta`.
#[allow(clippy::too_many_arguments)]
pub(super) fn normalize_backward(
    dx: &mut [f32],
    dxv: &View,
    dy: &[f32],
    dyv: &View,
    x: &[f32],
    xv: &View,
    axis: usize,
    mean: &[f32],
    inv: &[f32],
    gamma: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    affine_of: &dyn Fn(usize, usize) -> usize,
    acc: bool,
) {
    let (xs, xst, n) = lanes(xv, axis);
    let (gs, gst, _) = lanes(dyv, axis);
    let (ds, dst, _) = lanes(dxv, axis);
    let nf = n.max(1) as f32;
    for (l, ((&xo, &go), &do_)) in xs.iter().zip(&gs).zip(&ds).enumerate() {
        // With xhat = (x - mean) inv and g = dy * gamma:
        // dx = inv (g - mean(g) - xhat mean(g xhat)).
        let mut sum_g = 0.0f32;
        let mut sum_gx = 0.0f32;
        for i in 0..n {
            let a = affine_of(l, i);
            let xhat = (x[xo + i * xst] - mean[l]) * inv[l];
            let d = dy[go + i * gst];
            dgamma[a] += d * xhat;
            dbeta[a] += d;
            let g = d * gamma[a];
            sum_g += g;
            sum_gx += g * xhat;
        }
        for i in 0..n {
            let a = affine_of(l, i);
            let xhat = (x[xo + i * xst] - mean[l]) * inv[l];
            let g = dy[go + i * gst] * gamma[a];
            let v = inv[l] * (g - sum_g / nf - xhat * sum_gx / nf);
            put(&mut dx[do_ + i * dst], v, acc);
        }
    }
}

/// Variational dropout's relaxed-Bernoulli temperature (TorchEasyRec's).
const VD_TEMPERATURE: f32 = 0.1;

/// `ln(v + eps) - ln(1 + eps - v)`, with tzrec's epsilon inside each log.
fn vd_logit(v: f32) -> f32 {
    let eps = f32::EPSILON;
    (v + eps).ln() - (1.0 + eps - v).ln()
}

/// Variational dropout's keep factors per row and feature (`[rows, F]`):
/// with `noise` (uniform `[rows, F]`, training) `1 - sigmoid((logit(u) +
/// logit(p)) / 0.1)`, without it `1 - p`, for `p = sigmoid(feature_p)`.
pub(super) fn vd_keep(feature_p: &[f32], rows: usize, noise: Option<&[f32]>) -> Vec<f32> {
    let p: Vec<f32> = feature_p.iter().map(|&x| sigmoid(x)).collect();
    match noise {
        Some(u) => u
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let pf = p[i % p.len().max(1)];
                1.0 - sigmoid((vd_logit(u) + vd_logit(pf)) / VD_TEMPERATURE)
            })
            .collect(),
        None => (0..rows).flat_map(|_| p.iter().map(|&p| 1.0 - p)).collect(),
    }
}

/// `y[r, c] = x[r, c] * keep[r, columns[c]]`.
pub(super) fn vd_apply(
    y: &mut [f32],
    yv: &View,
    x: &[f32],
    xv: &View,
    keep: &[f32],
    columns: &[usize],
) {
    let f = keep.len() / xv.rows().max(1);
    rows_mut(y, yv, |r, out| {
        for ((o, &v), &c) in out.iter_mut().zip(row(x, xv, r)).zip(columns) {
            *o = v * keep[r * f + c];
        }
    });
}

/// Variational dropout's gradients: `dx (+)= g * keep`, and each
/// feature's drop logit gets `sum g * x * d keep / d feature_p`.
#[allow(clippy::too_many_arguments)]
pub(super) fn vd_backward(
    dx: Option<(&mut [f32], &View, bool)>,
    dfp: Option<&mut [f32]>,
    g: &[f32],
    gv: &View,
    x: &[f32],
    xv: &View,
    keep: &[f32],
    feature_p: &[f32],
    columns: &[usize],
) {
    let f = feature_p.len().max(1);
    if let Some((dx, dxv, acc)) = dx {
        rows_mut(dx, dxv, |r, out| {
            for ((o, &gv), &c) in out.iter_mut().zip(row(g, gv, r)).zip(columns) {
                put(o, gv * keep[r * f + c], acc);
            }
        });
    }
    if let Some(dfp) = dfp {
        let eps = f32::EPSILON;
        // d keep / d feature_p = -s (1 - s) / T * dlogit(p)/dp * p (1 - p),
        // s = 1 - keep the relaxed drop.
        let dp: Vec<f32> = feature_p
            .iter()
            .map(|&z| {
                let p = sigmoid(z);
                (1.0 / (p + eps) + 1.0 / (1.0 + eps - p)) * p * (1.0 - p) / VD_TEMPERATURE
            })
            .collect();
        for r in 0..gv.rows() {
            let (gr, xr) = (row(g, gv, r), row(x, xv, r));
            for ((&gc, &xc), &c) in gr.iter().zip(xr).zip(columns) {
                let k = keep[r * f + c];
                dfp[c] -= gc * xc * k * (1.0 - k) * dp[c];
            }
        }
    }
}
