//! The native engine's sequence ops and their gradients: a sequence group's
//! steps (`[B, L, W]`, embedded or dense, zero past each row's length), its
//! mask, DIN's attention input `[q, s, q - s, q * s]`, masked attention
//! pooling, sum/mean pooling and dot-product scores. The maths is the
//! candle ops' (`exec::candle::ops`), which `runtime::tests::native` holds
//! these kernels to, value and gradient.
//!
//! Views follow `view`: a `[B, D]` value has rows `r`, a `[B, L, D]` value
//! rows `r * L + l`, each a contiguous run of its last dim.

use super::embed::Bag;
use super::kernels::{dot, row, rows_mut};
use super::view::View;
use crate::runtime::error::{bad_batch, Result};

/// What attention pooling gives a padded step's score before the softmax
/// (TorchEasyRec's `-2**31 + 1`), so its weight is exactly zero unless a
/// row has no valid step at all.
const MASKED_SCORE: f32 = -2_147_483_647.0;

/// Steps of each row: `offsets[r]..offsets[r + 1]`, at most `steps`.
fn lengths(name: &str, offsets: &[u32], rows: usize, steps: usize) -> Result<Vec<usize>> {
    if offsets.len() != rows + 1 || offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(bad_batch!(
            "sequence feature \"{name}\" has malformed step offsets for {rows} rows"
        ));
    }
    offsets
        .windows(2)
        .enumerate()
        .map(|(r, w)| {
            let n = (w[1] - w[0]) as usize;
            if n > steps {
                return Err(bad_batch!(
                    "sequence feature \"{name}\" has {n} steps in row {r}, more than its sequence_length {steps}"
                ));
            }
            Ok(n)
        })
        .collect()
}

/// Writes one embedded sequence feature's steps into columns
/// `[col, col + dim)` of `out` (`[B, L, W]`, zeroed by the caller): step
/// `k` of row `r` is the source row of the bag's `k`-th id of that row.
pub(super) fn embed_steps(
    out: &mut [f32],
    ov: &View,
    col: usize,
    bag: &Bag,
    src: &[f32],
    name: &str,
) -> Result<()> {
    let (rows, steps, d) = (ov.dims[0], ov.dims[1], bag.dim);
    let lens = lengths(name, &bag.offsets, rows, steps)?;
    for (r, &n) in lens.iter().enumerate() {
        let first = bag.offsets[r] as usize;
        for k in 0..n {
            let i = bag.index[first + k] as usize * d;
            let o = ov.row_offset(r * steps + k) + col;
            out[o..o + d].copy_from_slice(&src[i..i + d]);
        }
    }
    Ok(())
}

/// Adds the gradient of columns `[col, col + dim)` of `g` (`[B, L, W]`) at
/// each row's valid steps to the gathered rows' gradient `drows`.
pub(super) fn scatter_steps(drows: &mut [f32], g: &[f32], gv: &View, col: usize, bag: &Bag) {
    let (rows, steps, d) = (gv.dims[0], gv.dims[1], bag.dim);
    for r in 0..rows.min(bag.offsets.len().saturating_sub(1)) {
        let (a, b) = (bag.offsets[r] as usize, bag.offsets[r + 1] as usize);
        for (k, &i) in bag.index[a..b].iter().enumerate().take(steps) {
            let o = gv.row_offset(r * steps + k) + col;
            let i = i as usize * d;
            drows[i..i + d]
                .iter_mut()
                .zip(&g[o..o + d])
                .for_each(|(y, &x)| *y += x);
        }
    }
}

/// Writes a dense sequence feature's steps (`values`, `dim` per step) into
/// columns `[col, col + dim)` of `out` (`[B, L, W]`, zeroed by the caller).
pub(super) fn dense_steps(
    out: &mut [f32],
    ov: &View,
    col: usize,
    (values, offsets, dim): (&[f32], &[u32], usize),
    name: &str,
) -> Result<()> {
    let (rows, steps) = (ov.dims[0], ov.dims[1]);
    let lens = lengths(name, offsets, rows, steps)?;
    if offsets.last().map_or(0, |&o| o as usize) * dim != values.len() {
        return Err(bad_batch!(
            "sequence feature \"{name}\" has {} values for {} steps of width {dim}",
            values.len(),
            offsets.last().copied().unwrap_or(0)
        ));
    }
    for (r, &n) in lens.iter().enumerate() {
        let first = offsets[r] as usize;
        for k in 0..n {
            let i = (first + k) * dim;
            let o = ov.row_offset(r * steps + k) + col;
            out[o..o + dim].copy_from_slice(&values[i..i + dim]);
        }
    }
    Ok(())
}

/// `[B, L]`: 1 at the steps each row has (`offsets`), else 0.
pub(super) fn mask(out: &mut [f32], ov: &View, offsets: &[u32], name: &str) -> Result<()> {
    let (rows, steps) = (ov.dims[1], ov.dims[2]);
    let lens = lengths(name, offsets, rows, steps)?;
    rows_mut(out, ov, |r, y| {
        for (k, v) in y.iter_mut().enumerate() {
            *v = if k < lens[r] { 1.0 } else { 0.0 };
        }
    });
    Ok(())
}

/// DIN's attention input: `q` `[B, Dq]` zero-padded to `D`, `s` `[B, L, D]`
/// to `y` `[B, L, 4D]` = `[q, s, q - s, q * s]` per step.
pub(super) fn din_input(y: &mut [f32], yv: &View, q: &[f32], qv: &View, s: &[f32], sv: &View) {
    let (steps, d, dq) = (sv.dims[1], sv.dims[2], qv.dims[2]);
    rows_mut(y, yv, |rl, out| {
        let qr = row(q, qv, rl / steps);
        let sr = row(s, sv, rl);
        let (pq, rest) = out.split_at_mut(d);
        let (ps, rest) = rest.split_at_mut(d);
        let (pdiff, pprod) = rest.split_at_mut(d);
        for j in 0..d {
            let qj = if j < dq { qr[j] } else { 0.0 };
            pq[j] = qj;
            ps[j] = sr[j];
            pdiff[j] = qj - sr[j];
            pprod[j] = qj * sr[j];
        }
    });
}

/// The attention weights of one row: its scores (`[L]` in `scores`' rows of
/// one value each) with padded steps at `MASKED_SCORE`, softmaxed.
fn weights(
    scores: &[f32],
    scv: &View,
    mask: &[f32],
    mv: &View,
    r: usize,
    steps: usize,
) -> Vec<f32> {
    let m = row(mask, mv, r);
    let mut w: Vec<f32> = (0..steps)
        .map(|l| {
            if m[l] >= 0.5 {
                row(scores, scv, r * steps + l)[0]
            } else {
                MASKED_SCORE
            }
        })
        .collect();
    let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in w.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    w.iter_mut().for_each(|x| *x /= sum);
    w
}

/// Masked attention pooling: `y[r] = sum_l w[r, l] s[r, l]`, `w` the
/// softmax over `l` of the scores with padded steps masked.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_pool(
    y: &mut [f32],
    yv: &View,
    scores: &[f32],
    scv: &View,
    s: &[f32],
    sv: &View,
    mask: &[f32],
    mv: &View,
) {
    let steps = sv.dims[1];
    rows_mut(y, yv, |r, out| {
        let w = weights(scores, scv, mask, mv, r, steps);
        out.fill(0.0);
        for (l, &wl) in w.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(row(s, sv, r * steps + l)) {
                *o += wl * x;
            }
        }
    });
}

/// Gradient of `attention_pool` for the scores: `w_l (g . s_l - sum_j w_j
/// g . s_j)` at valid steps, 0 at padded ones (their scores were replaced).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_pool_grad_scores(
    dsc: &mut [f32],
    dscv: &View,
    g: &[f32],
    gv: &View,
    scores: &[f32],
    scv: &View,
    s: &[f32],
    sv: &View,
    mask: &[f32],
    mv: &View,
    acc: bool,
) {
    let (rows, steps) = (sv.dims[0], sv.dims[1]);
    for r in 0..rows {
        let w = weights(scores, scv, mask, mv, r, steps);
        let gr = row(g, gv, r);
        let dw: Vec<f32> = (0..steps)
            .map(|l| dot(gr, row(s, sv, r * steps + l)))
            .collect();
        let mean: f32 = w.iter().zip(&dw).map(|(a, b)| a * b).sum();
        let m = row(mask, mv, r);
        for l in 0..steps {
            let v = if m[l] >= 0.5 {
                w[l] * (dw[l] - mean)
            } else {
                0.0
            };
            let o = dscv.row_offset(r * steps + l);
            dsc[o] = if acc { dsc[o] + v } else { v };
        }
    }
}

/// Gradient of `attention_pool` for the steps: `ds[r, l] (+)= w[r, l] g[r]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_pool_grad_steps(
    ds: &mut [f32],
    dsv: &View,
    g: &[f32],
    gv: &View,
    scores: &[f32],
    scv: &View,
    mask: &[f32],
    mv: &View,
    acc: bool,
) {
    let (rows, steps) = (dsv.dims[0], dsv.dims[1]);
    let w: Vec<f32> = (0..rows)
        .flat_map(|r| weights(scores, scv, mask, mv, r, steps))
        .collect();
    rows_mut(ds, dsv, |rl, out| {
        let wl = w[rl];
        for (o, &x) in out.iter_mut().zip(row(g, gv, rl / steps)) {
            *o = if acc { *o + wl * x } else { wl * x };
        }
    });
}

/// Each row's count of valid steps, at least 1 (mean pooling's divisor).
fn count(mask: &[f32], mv: &View, r: usize) -> f32 {
    row(mask, mv, r).iter().sum::<f32>().max(1.0)
}

/// Sum (or with `mean`, sum over max(length, 1)) of each row's steps.
pub(super) fn pool(
    y: &mut [f32],
    yv: &View,
    s: &[f32],
    sv: &View,
    mask: &[f32],
    mv: &View,
    mean: bool,
) {
    let steps = sv.dims[1];
    rows_mut(y, yv, |r, out| {
        out.fill(0.0);
        for l in 0..steps {
            for (o, &x) in out.iter_mut().zip(row(s, sv, r * steps + l)) {
                *o += x;
            }
        }
        if mean {
            let c = count(mask, mv, r);
            out.iter_mut().for_each(|o| *o /= c);
        }
    });
}

/// Gradient of `pool` for the steps: every step of row `r` gets `g[r]`
/// (over the row's count with `mean`).
#[allow(clippy::too_many_arguments)]
pub(super) fn pool_grad(
    ds: &mut [f32],
    dsv: &View,
    g: &[f32],
    gv: &View,
    mask: &[f32],
    mv: &View,
    mean: bool,
    acc: bool,
) {
    let steps = dsv.dims[1];
    rows_mut(ds, dsv, |rl, out| {
        let r = rl / steps;
        let scale = if mean { 1.0 / count(mask, mv, r) } else { 1.0 };
        for (o, &x) in out.iter_mut().zip(row(g, gv, r)) {
            *o = if acc { *o + x * scale } else { x * scale };
        }
    });
}

/// Dot-product scores: `y[r, l] = q[r] . s[r, l]` (`y` `[B, L, 1]`).
pub(super) fn dot_scores(y: &mut [f32], yv: &View, q: &[f32], qv: &View, s: &[f32], sv: &View) {
    let steps = sv.dims[1];
    rows_mut(y, yv, |rl, out| {
        out[0] = dot(row(q, qv, rl / steps), row(s, sv, rl));
    });
}

/// A query-side gradient term: (a step's output gradient, the step, column).
pub(super) type QueryTerm = dyn Fn(&[f32], &[f32], usize) -> f32 + Sync;
/// A step-side gradient term: (a step's output gradient, the padded query
/// value, column).
pub(super) type StepTerm = dyn Fn(&[f32], f32, usize) -> f32 + Sync;

/// The query's gradient of an op that pairs the (zero-padded) query with
/// every step: `dq[r] (+)= sum_l term(g[r, l], s[r, l], j)` for each of the
/// query's `Dq` columns `j`.
#[allow(clippy::too_many_arguments)]
pub(super) fn query_grad<T>(
    dq: &mut [f32],
    dqv: &View,
    g: &[f32],
    gv: &View,
    s: &[f32],
    sv: &View,
    acc: bool,
    term: T,
) where
    T: Fn(&[f32], &[f32], usize) -> f32 + Sync + Send,
{
    let steps = sv.dims[1];
    rows_mut(dq, dqv, |r, out| {
        let mut sum = vec![0f32; out.len()];
        for l in 0..steps {
            let (gr, sr) = (row(g, gv, r * steps + l), row(s, sv, r * steps + l));
            for (j, x) in sum.iter_mut().enumerate() {
                *x += term(gr, sr, j);
            }
        }
        put_all(out, &sum, acc);
    });
}

/// The steps' gradient of such an op: `ds[r, l, j] (+)= term(g[r, l],
/// q~[r, j], j)`, `q~` the query zero-padded to the steps' width.
#[allow(clippy::too_many_arguments)]
pub(super) fn steps_grad<T>(
    ds: &mut [f32],
    dsv: &View,
    g: &[f32],
    gv: &View,
    q: &[f32],
    qv: &View,
    acc: bool,
    term: T,
) where
    T: Fn(&[f32], f32, usize) -> f32 + Sync + Send,
{
    let (steps, dq) = (dsv.dims[1], qv.dims[2]);
    rows_mut(ds, dsv, |rl, out| {
        let (gr, qr) = (row(g, gv, rl), row(q, qv, rl / steps));
        for (j, o) in out.iter_mut().enumerate() {
            let v = term(gr, if j < dq { qr[j] } else { 0.0 }, j);
            *o = if acc { *o + v } else { v };
        }
    });
}

/// Per-step gradient terms (`g` one step's output gradient, `D` the steps'
/// width) of DIN's input `[q, s, q - s, q * s]`, simple attention's dot
/// scores and multi-window DIN's input `[s, q * s, q]`: for the query given
/// the step `s`, for the step given the padded query value `q`.
pub(super) mod terms {
    pub(in super::super) fn din_query(g: &[f32], s: &[f32], j: usize, d: usize) -> f32 {
        g[j] + g[2 * d + j] + g[3 * d + j] * s[j]
    }
    pub(in super::super) fn din_step(g: &[f32], q: f32, j: usize, d: usize) -> f32 {
        g[d + j] - g[2 * d + j] + g[3 * d + j] * q
    }
    pub(in super::super) fn dot_query(g: &[f32], s: &[f32], j: usize) -> f32 {
        g[0] * s[j]
    }
    pub(in super::super) fn dot_step(g: &[f32], q: f32) -> f32 {
        g[0] * q
    }
    pub(in super::super) fn window_query(g: &[f32], s: &[f32], j: usize, d: usize) -> f32 {
        g[d + j] * s[j] + g[2 * d + j]
    }
    pub(in super::super) fn window_step(g: &[f32], q: f32, j: usize, d: usize) -> f32 {
        g[j] + g[d + j] * q
    }
}

/// `out (+)= v` element-wise.
fn put_all(out: &mut [f32], v: &[f32], acc: bool) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o = if acc { *o + x } else { x };
    }
}

/// Multi-window DIN's attention input: `y` `[B, L, 3D]` = `[s, q * s, q]`
/// per step, `q` zero-padded to `D`.
pub(super) fn window_input(y: &mut [f32], yv: &View, q: &[f32], qv: &View, s: &[f32], sv: &View) {
    let (steps, d, dq) = (sv.dims[1], sv.dims[2], qv.dims[2]);
    rows_mut(y, yv, |rl, out| {
        let (qr, sr) = (row(q, qv, rl / steps), row(s, sv, rl));
        for j in 0..d {
            let qj = if j < dq { qr[j] } else { 0.0 };
            out[j] = sr[j];
            out[d + j] = qj * sr[j];
            out[2 * d + j] = qj;
        }
    });
}

/// The windows of multi-window DIN over `steps` steps: per window its step
/// range (cut at `steps`), its first step and its length.
fn window_ranges(windows: &[usize], steps: usize) -> Vec<(std::ops::Range<usize>, usize, usize)> {
    let mut start = 0usize;
    windows
        .iter()
        .map(|&w| {
            let r = (start.min(steps)..(start + w).min(steps), start, w);
            start += w;
            r
        })
        .collect()
}

/// A window's divisor: its valid steps `min(length - start, len)`, at least 1.
fn window_count(length: f32, start: usize, len: usize) -> f32 {
    (length - start as f32).clamp(1.0, len.max(1) as f32)
}

/// Multi-window DIN's pooling: per window, the sum over its steps of
/// `score * mask * s` over the window's count; then `q` zero-padded to `D`:
/// `y` `[B, (W + 1) D]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn window_pool(
    y: &mut [f32],
    yv: &View,
    (scores, scv): (&[f32], &View),
    (s, sv): (&[f32], &View),
    (mask, mv): (&[f32], &View),
    (q, qv): (&[f32], &View),
    windows: &[usize],
) {
    let (steps, d) = (sv.dims[1], sv.dims[2]);
    let ranges = window_ranges(windows, steps);
    rows_mut(y, yv, |r, out| {
        let m = row(mask, mv, r);
        let length: f32 = m.iter().sum();
        out.fill(0.0);
        for (w, (range, start, len)) in ranges.iter().enumerate() {
            let part = &mut out[w * d..(w + 1) * d];
            for l in range.clone() {
                let f = row(scores, scv, r * steps + l)[0] * m[l];
                for (o, &x) in part.iter_mut().zip(row(s, sv, r * steps + l)) {
                    *o += f * x;
                }
            }
            let c = window_count(length, *start, *len);
            part.iter_mut().for_each(|o| *o /= c);
        }
        let qr = row(q, qv, r);
        out[windows.len() * d..windows.len() * d + qr.len()].copy_from_slice(qr);
    });
}

/// Gradients of `window_pool`: for the scores (`[B, L, 1]`), `mask * (s .
/// g_w) / count` at the steps of window `w`, 0 past the windows; for the
/// steps, `score * mask * g_w / count`; for the query, its part of `g`.
/// Each is written only where its `Some`.
#[allow(clippy::too_many_arguments)]
pub(super) fn window_pool_grads(
    (g, gv): (&[f32], &View),
    (scores, scv): (&[f32], &View),
    (s, sv): (&[f32], &View),
    (mask, mv): (&[f32], &View),
    windows: &[usize],
    dscores: Option<(&mut [f32], &View, bool)>,
    ds: Option<(&mut [f32], &View, bool)>,
    dq: Option<(&mut [f32], &View, bool)>,
) {
    let (rows, steps, d) = (sv.dims[0], sv.dims[1], sv.dims[2]);
    let ranges = window_ranges(windows, steps);
    // Per step: the window it is in (its gradient part and count), if any.
    let per_step = |r: usize| -> Vec<Option<(usize, f32)>> {
        let length: f32 = row(mask, mv, r).iter().sum();
        let mut out = vec![None; steps];
        for (w, (range, start, len)) in ranges.iter().enumerate() {
            for l in range.clone() {
                out[l] = Some((w, window_count(length, *start, *len)));
            }
        }
        out
    };
    if let Some((dsc, dscv, acc)) = dscores {
        for r in 0..rows {
            let (gr, m, wins) = (row(g, gv, r), row(mask, mv, r), per_step(r));
            for l in 0..steps {
                let v = match wins[l] {
                    Some((w, c)) => {
                        m[l] * dot(row(s, sv, r * steps + l), &gr[w * d..(w + 1) * d]) / c
                    }
                    None => 0.0,
                };
                let o = dscv.row_offset(r * steps + l);
                dsc[o] = if acc { dsc[o] + v } else { v };
            }
        }
    }
    if let Some((dsb, dsv, acc)) = ds {
        let wins: Vec<Vec<Option<(usize, f32)>>> = (0..rows).map(per_step).collect();
        rows_mut(dsb, dsv, |rl, out| {
            let (r, l) = (rl / steps, rl % steps);
            let (f, part) = match wins[r][l] {
                Some((w, c)) => (row(scores, scv, rl)[0] * row(mask, mv, r)[l] / c, Some(w)),
                None => (0.0, None),
            };
            let gr = row(g, gv, r);
            for (j, o) in out.iter_mut().enumerate() {
                let v = part.map_or(0.0, |w| f * gr[w * d + j]);
                *o = if acc { *o + v } else { v };
            }
        });
    }
    if let Some((dqb, dqv, acc)) = dq {
        let at = windows.len() * d;
        rows_mut(dqb, dqv, |r, out| {
            let gr = row(g, gv, r);
            let n = out.len();
            put_all(out, &gr[at..at + n], acc);
        });
    }
}
