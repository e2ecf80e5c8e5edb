//! Fused CPU kernels for the forward pass, as candle custom ops with their
//! own backward.
//!
//! `bias_relu(y, b)` is `relu(y + b)` for `y` `[R, C]` with `b` `[C]`, or
//! `y` `[G, R, C]` with `b` `[G, C]` (batched experts). Unfused, candle runs
//! a broadcast add and a relu forward, and in backward builds the relu mask
//! with four passes (zeros, compare, cast, multiply) before the bias sum.
//! Fused, forward is one pass and backward is one masking pass plus the
//! column sum for the bias. Only f32 tensors on the CPU take it; anything
//! else falls back to the plain ops, and a test compares the two on random
//! inputs (`runtime::tests::kernels`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per parallel task: enough work (rows x columns) that rayon's task
/// cost disappears for the narrowest layers (32 columns), while a
/// 1024-row batch still splits over 2 threads.
const ROWS_PER_TASK: usize = 64;

fn contiguous_f32<'s>(s: &'s CpuStorage, l: &Layout, what: &str) -> Result<&'s [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("bias_relu: {what} must be contiguous f32"),
    }
}

/// `(groups, rows, cols)` of `y` for a bias of `b_dims`.
fn split_dims(y: &[usize], b: &[usize]) -> Option<(usize, usize, usize)> {
    match (y, b) {
        ([r, c], [bc]) if c == bc => Some((1, *r, *c)),
        ([g, r, c], [bg, bc]) if g == bg && c == bc => Some((*g, *r, *c)),
        _ => None,
    }
}

struct BiasRelu;

impl CustomOp2 for BiasRelu {
    fn name(&self) -> &'static str {
        "bias-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, "the input")?;
        let b = contiguous_f32(s2, l2, "the bias")?;
        let Some((_, rows, cols)) = split_dims(l1.dims(), l2.dims()) else {
            candle_core::bail!("bias_relu: shapes {:?} and {:?}", l1.dims(), l2.dims())
        };
        let mut out = vec![0f32; y.len()];
        if cols > 0 {
            out.par_chunks_mut(cols * ROWS_PER_TASK)
                .zip(y.par_chunks(cols * ROWS_PER_TASK))
                .enumerate()
                .for_each(|(t, (o, y))| {
                    // All rows of one task lie in one group (rows per group
                    // need not be a multiple of ROWS_PER_TASK, so go by row).
                    let first = t * ROWS_PER_TASK;
                    for (i, (o, y)) in o.chunks_mut(cols).zip(y.chunks(cols)).enumerate() {
                        let g = (first + i) / rows.max(1);
                        let bias = &b[g * cols..(g + 1) * cols];
                        for ((o, &y), &bb) in o.iter_mut().zip(y).zip(bias) {
                            *o = (y + bb).max(0.0);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = grad.apply_op2_no_bwd(res, &ReluMask)?;
        let db = dy.apply_op1_no_bwd(&ColumnSum)?.reshape(b.shape())?;
        Ok((Some(dy), Some(db)))
    }
}

/// `grad * (res > 0)`, one pass (the relu gradient given its output).
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(s1, l1, "the gradient")?;
        let r = contiguous_f32(s2, l2, "the output")?;
        if g.len() != r.len() {
            candle_core::bail!("relu_mask: sizes {} and {}", g.len(), r.len());
        }
        let mut out = vec![0f32; g.len()];
        const CHUNK: usize = 16 * 1024;
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(r.par_chunks(CHUNK)))
            .for_each(|(o, (g, r))| {
                for ((o, &g), &r) in o.iter_mut().zip(g).zip(r) {
                    *o = if r > 0.0 { g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Column sums per group: `[R, C]` to `[C]`, `[G, R, C]` to `[G, C]`
/// (returned flat as `[G * C]`). Candle's `sum(0)` on a row-major matrix
/// walks every column with a row-sized stride; this walks rows in memory
/// order, adding each into a per-task accumulator, then adds the partial
/// sums.
struct ColumnSum;

impl candle_core::CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "the gradient")?;
        let (groups, rows, cols) = match l.dims() {
            [r, c] => (1, *r, *c),
            [g, r, c] => (*g, *r, *c),
            d => candle_core::bail!("column_sum: shape {d:?}"),
        };
        let mut out = vec![0f32; groups * cols];
        if cols == 0 || rows == 0 {
            return Ok((CpuStorage::F32(out), Shape::from(groups * cols)));
        }
        for (g, acc_out) in out.chunks_mut(cols).enumerate() {
            let block = &x[g * rows * cols..(g + 1) * rows * cols];
            let partial = block
                .par_chunks(cols * ROWS_PER_TASK)
                .map(|chunk| {
                    let mut acc = vec![0f32; cols];
                    for row in chunk.chunks(cols) {
                        for (a, &v) in acc.iter_mut().zip(row) {
                            *a += v;
                        }
                    }
                    acc
                })
                .reduce(
                    || vec![0f32; cols],
                    |mut a, b| {
                        for (a, b) in a.iter_mut().zip(&b) {
                            *a += b;
                        }
                        a
                    },
                );
            acc_out.copy_from_slice(&partial);
        }
        Ok((CpuStorage::F32(out), Shape::from(groups * cols)))
    }
}

/// Whether `bias_relu` runs fused for these tensors.
pub(crate) fn fusable(y: &Tensor, b: &Tensor) -> bool {
    y.device().is_cpu()
        && y.dtype() == DType::F32
        && b.dtype() == DType::F32
        && split_dims(y.dims(), b.dims()).is_some()
}

/// `relu(y + b)`, `b` broadcast over rows (see the module doc), fused on
/// the CPU for f32 and plain candle ops otherwise.
pub(crate) fn bias_relu(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fusable(y, b) {
        return y.contiguous()?.apply_op2(&b.contiguous()?, BiasRelu);
    }
    plain_bias_relu(y, b)
}

/// The unfused reference: broadcast add, then relu.
pub(crate) fn plain_bias_relu(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    // A `[G, C]` bias belongs to batched experts `[G, R, C]`.
    let b = if b.rank() == 2 {
        b.unsqueeze(1)?
    } else {
        b.clone()
    };
    y.broadcast_add(&b)?.relu()
}
