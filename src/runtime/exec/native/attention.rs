//! The native engine's self-attention ops and their gradients: torch's
//! multi-head scaled dot-product attention among a sequence's valid steps
//! (MULTI_HEAD_ATTENTION) and the mean of the valid rows over the row's
//! whole length (MASKED_MEAN). The projections around them are LINEAR ops
//! (GEMMs over all steps at once); what is left here is per batch row
//! `L x L` work per head, small beside them, so it runs as row kernels.
//! The maths is the candle ops' (`exec::candle::ops`), which
//! `runtime::tests::native` holds these kernels to, value and gradient.
//!
//! A padded step's query row has no valid key: torch's softmax makes it
//! NaN, tzrec's `nan_to_num` zeroes it in the forward pass, but torch's
//! backward multiplies the zero gradient by that NaN and poisons every
//! gradient of the batch (pytorch issue 41508). plec computes the same
//! forward and its true gradient, in which such rows take no part.
//!
//! Views follow `view`: a `[B, L, E]` value has rows `r * L + l`, a
//! `[B, L]` mask row `r`.

use rayon::prelude::*;

use super::kernels::{dot, row, rows_mut, rows_mut_with};
use super::view::View;

/// The inputs of one attention: `q`, `k`, `v` (`[B, L, E]`) and the
/// step mask (`[B, L]`), each with its view.
#[derive(Clone, Copy)]
pub(super) struct AttentionInputs<'a> {
    pub q: (&'a [f32], &'a View),
    pub k: (&'a [f32], &'a View),
    pub v: (&'a [f32], &'a View),
    pub mask: (&'a [f32], &'a View),
    pub heads: usize,
    /// In training with dropout: the keep bit of each weight, `[B, heads,
    /// L, L]` row-major (the candle path's mask, bit for bit), and the
    /// scale of the kept ones, `1 / (1 - ratio)`.
    pub keep: Option<(&'a [u8], f32)>,
}

impl AttentionInputs<'_> {
    fn steps(&self) -> usize {
        self.q.1.dims[1]
    }
    fn width(&self) -> usize {
        self.q.1.dims[2]
    }
    fn head_dim(&self) -> usize {
        self.width() / self.heads.max(1)
    }
    fn valid(&self, b: usize, i: usize) -> bool {
        row(self.mask.0, self.mask.1, b)[i] >= 0.5
    }

    /// Row `i` of batch row `b`, head `h`'s columns, of `x`.
    fn part<'b>(&self, x: (&'b [f32], &View), b: usize, i: usize, h: usize) -> &'b [f32] {
        let hd = self.head_dim();
        &row(x.0, x.1, b * self.steps() + i)[h * hd..(h + 1) * hd]
    }

    /// Head `h`'s softmax weights of query step `i` over the valid keys of
    /// batch row `b` (0 at masked keys): torch's `softmax(q k^T /
    /// sqrt(head_dim))` with the key mask. The query step must be valid,
    /// so at least one key is.
    fn weights(&self, b: usize, i: usize, h: usize, out: &mut [f32]) {
        let scale = 1.0 / (self.head_dim() as f32).sqrt();
        let qi = self.part(self.q, b, i, h);
        let mut max = f32::NEG_INFINITY;
        for (j, w) in out.iter_mut().enumerate() {
            *w = if self.valid(b, j) {
                let s = dot(qi, self.part(self.k, b, j, h)) * scale;
                max = max.max(s);
                s
            } else {
                f32::NEG_INFINITY
            };
        }
        let mut sum = 0f32;
        for w in out.iter_mut() {
            *w = if *w == f32::NEG_INFINITY {
                0.0
            } else {
                (*w - max).exp()
            };
            sum += *w;
        }
        out.iter_mut().for_each(|w| *w /= sum);
    }

    /// The dropout factor of weight `(i, j)` of head `h` in batch row `b`.
    fn drop_factor(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        match self.keep {
            Some((keep, scale)) => {
                let l = self.steps();
                f32::from(keep[((b * self.heads + h) * l + i) * l + j]) * scale
            }
            None => 1.0,
        }
    }
}

/// `y` `[B, L, E]`: per valid step `i` and head `h`, the dropped-out
/// weights of `i` times the values `v_j`; zero rows at masked steps.
pub(super) fn forward(y: &mut [f32], yv: &View, a: &AttentionInputs) {
    let (l, e, hd) = (a.steps(), a.width(), a.head_dim());
    rows_mut_with(y, yv, 2 * l * e, |r, out| {
        out.fill(0.0);
        let (b, i) = (r / l, r % l);
        if !a.valid(b, i) {
            return;
        }
        let mut w = vec![0f32; l];
        for h in 0..a.heads {
            a.weights(b, i, h, &mut w);
            let oh = &mut out[h * hd..(h + 1) * hd];
            for (j, &p) in w.iter().enumerate() {
                let p = p * a.drop_factor(b, h, i, j);
                if p != 0.0 {
                    for (o, &x) in oh.iter_mut().zip(a.part(a.v, b, j, h)) {
                        *o += p * x;
                    }
                }
            }
        }
    });
}

/// Where a gradient goes: a buffer, its view, and whether to add to it.
pub(super) type Target<'a> = Option<(&'a mut [f32], &'a View, bool)>;

/// Gradients of `forward` for `q`, `k` and `v` given the output's `g`;
/// each written (every element, zero where nothing flows) only where its
/// target is `Some`. With `P` the weights, `D` the dropout factors and
/// `dO` a head's output gradient: `dv_j = sum_i P_ij D_ij dO_i`, `dP_ij =
/// D_ij dO_i . v_j`, `dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij')`, `dq_i =
/// sum_j dS_ij k_j / sqrt(hd)` and `dk_j = sum_i dS_ij q_i / sqrt(hd)`.
pub(super) fn backward<'a>(
    a: &AttentionInputs,
    g: (&[f32], &View),
    mut dq: Target<'a>,
    mut dk: Target<'a>,
    mut dv: Target<'a>,
) {
    let (l, e) = (a.steps(), a.width());
    let rows = a.q.1.dims[0];
    // Batch rows in blocks: each block's gradients are computed in
    // parallel into scratch, then stored, so the scratch stays small.
    let block = (BLOCK_ELEMS / (3 * l * e).max(1)).clamp(1, rows.max(1));
    for start in (0..rows).step_by(block) {
        let end = (start + block).min(rows);
        let grads: Vec<[Vec<f32>; 3]> = (start..end)
            .into_par_iter()
            .map(|b| batch_row_grads(a, g, b))
            .collect();
        for (which, target) in [&mut dq, &mut dk, &mut dv].into_iter().enumerate() {
            let Some((buf, view, acc)) = target.as_mut() else {
                continue;
            };
            let block_view = view.narrow(0, start, end - start);
            rows_mut(buf, &block_view, |r, out| {
                let src = &grads[r / l][which][(r % l) * e..(r % l + 1) * e];
                if *acc {
                    out.iter_mut().zip(src).for_each(|(o, &x)| *o += x);
                } else {
                    out.copy_from_slice(src);
                }
            });
        }
    }
}

/// Scratch elements the backward pass holds at once (3 gradients of a
/// block of batch rows): 4 Mi floats, 16 MiB.
const BLOCK_ELEMS: usize = 1 << 22;

/// `dq`, `dk`, `dv` (each `[L, E]`) of batch row `b`.
fn batch_row_grads(a: &AttentionInputs, g: (&[f32], &View), b: usize) -> [Vec<f32>; 3] {
    let (l, e, hd) = (a.steps(), a.width(), a.head_dim());
    let scale = 1.0 / (hd as f32).sqrt();
    let (mut dq, mut dk, mut dv) = (vec![0f32; l * e], vec![0f32; l * e], vec![0f32; l * e]);
    let mut p = vec![0f32; l];
    let mut dp = vec![0f32; l];
    for h in 0..a.heads {
        let cols = h * hd..(h + 1) * hd;
        for i in (0..l).filter(|&i| a.valid(b, i)) {
            a.weights(b, i, h, &mut p);
            let go = &row(g.0, g.1, b * l + i)[cols.clone()];
            let mut mean = 0f32;
            for j in 0..l {
                dp[j] = 0.0;
                if p[j] == 0.0 {
                    continue;
                }
                let f = a.drop_factor(b, h, i, j);
                if f != 0.0 {
                    let pj = p[j] * f;
                    for (d, &x) in dv[j * e..][cols.clone()].iter_mut().zip(go) {
                        *d += pj * x;
                    }
                    dp[j] = f * dot(go, a.part(a.v, b, j, h));
                }
                mean += p[j] * dp[j];
            }
            let qi = a.part(a.q, b, i, h);
            for j in 0..l {
                if p[j] == 0.0 {
                    continue;
                }
                let ds = p[j] * (dp[j] - mean) * scale;
                let kj = a.part(a.k, b, j, h);
                for (d, &x) in dq[i * e..][cols.clone()].iter_mut().zip(kj) {
                    *d += ds * x;
                }
                for (d, &x) in dk[j * e..][cols.clone()].iter_mut().zip(qi) {
                    *d += ds * x;
                }
            }
        }
    }
    [dq, dk, dv]
}

/// `y[b] = sum_l mask[b, l] x[b, l] / max(sum(length[b]), 1)`.
pub(super) fn masked_mean(
    y: &mut [f32],
    yv: &View,
    (x, xv): (&[f32], &View),
    (mask, mv): (&[f32], &View),
    (length, lv): (&[f32], &View),
) {
    let steps = xv.dims[1];
    rows_mut(y, yv, |b, out| {
        out.fill(0.0);
        let m = row(mask, mv, b);
        for l in (0..steps).filter(|&l| m[l] >= 0.5) {
            for (o, &v) in out.iter_mut().zip(row(x, xv, b * steps + l)) {
                *o += v;
            }
        }
        let c = count(length, lv, b);
        out.iter_mut().for_each(|o| *o /= c);
    });
}

/// Gradient of `masked_mean` for `x`: `g[b] / count` at valid steps, 0 at
/// the others.
pub(super) fn masked_mean_grad(
    (dx, dxv, acc): (&mut [f32], &View, bool),
    (g, gv): (&[f32], &View),
    (mask, mv): (&[f32], &View),
    (length, lv): (&[f32], &View),
) {
    let steps = dxv.dims[1];
    rows_mut(dx, dxv, |r, out| {
        let b = r / steps;
        let f = if row(mask, mv, b)[r % steps] >= 0.5 {
            1.0 / count(length, lv, b)
        } else {
            0.0
        };
        for (o, &x) in out.iter_mut().zip(row(g, gv, b)) {
            *o = if acc { *o + f * x } else { f * x };
        }
    });
}

/// A row's whole length, at least 1 (tzrec's `clamp_min(length, 1)`).
fn count(length: &[f32], lv: &View, b: usize) -> f32 {
    row(length, lv, b).iter().sum::<f32>().max(1.0)
}
