//! Fused CPU optimizer kernels: one pass over a parameter, its gradient and
//! its state, updating the parameter in place (candle `InplaceOp2`).
//!
//! The tensor formulation of Adam in `dense` costs about twelve element-wise
//! candle ops per parameter, each a full pass that allocates its output; on
//! the PLE example (6.8 M dense parameters) that is a large share of a step.
//! This kernel does the same arithmetic in one pass with the state held on
//! the host. It runs only for f32 parameters on the CPU with contiguous
//! gradients; everything else takes the tensor path, and a test checks the
//! two agree (`runtime::tests::kernels`).

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout};
use rayon::prelude::*;

/// Elements per parallel chunk: large enough that rayon's per-task cost is
/// noise (a 16 K-element chunk is ~64 KiB of each of four streams), small
/// enough that 2 threads split even the 65 K-parameter layers.
const CHUNK: usize = 16 * 1024;

/// One Adam/AdamW update of a parameter (the `dst` of the in-place op) with
/// its gradient (the source), first moments `m` and second moments `v`.
pub(crate) struct AdamStep<'a> {
    pub m: RefCell<&'a mut [f32]>,
    pub v: RefCell<&'a mut [f32]>,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `1 - beta1^t`.
    pub bias1: f64,
    /// `1 - beta2^t`.
    pub bias2: f64,
    /// L2 weight decay added to the gradient (Adam), or 0.
    pub l2: f64,
    /// Decoupled decay factor `1 - lr * wd` (AdamW), or 1.
    pub shrink: f64,
}

fn contiguous<'s>(s: &'s CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'s [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused adam: {what} must be contiguous f32"),
    }
}

impl InplaceOp2 for AdamStep<'_> {
    fn name(&self) -> &'static str {
        "fused-adam"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let g = contiguous(s2, l2, "the gradient")?;
        let (a, b) = match l1.contiguous_offsets() {
            Some(o) => o,
            None => candle_core::bail!("fused adam: the parameter must be contiguous"),
        };
        let p = match s1 {
            CpuStorage::F32(v) => &mut v[a..b],
            _ => candle_core::bail!("fused adam: the parameter must be f32"),
        };
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        if p.len() != g.len() || m.len() != g.len() || v.len() != g.len() {
            candle_core::bail!("fused adam: parameter, gradient and state sizes differ");
        }
        // The same f32 constants candle's `affine` would use.
        let (b1, c1) = (self.beta1 as f32, (1.0 - self.beta1) as f32);
        let (b2, c2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let (inv1, inv2) = ((1.0 / self.bias1) as f32, (1.0 / self.bias2) as f32);
        let (eps, lr, l2, shrink) = (
            self.eps as f32,
            self.lr as f32,
            self.l2 as f32,
            self.shrink as f32,
        );
        let k = AdamConsts {
            b1,
            c1,
            b2,
            c2,
            inv1,
            inv2,
            eps,
            lr,
            l2,
            shrink,
        };
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| adam_chunk(&k, p, g, m, v));
        Ok(())
    }
}

/// Adam's per-step constants, in f32.
struct AdamConsts {
    b1: f32,
    c1: f32,
    b2: f32,
    c2: f32,
    inv1: f32,
    inv2: f32,
    eps: f32,
    lr: f32,
    l2: f32,
    shrink: f32,
}

/// One chunk of the Adam update, on the widest vectors the CPU has: the
/// square root and division per element keep a baseline (SSE2) build's
/// scalar loop from running at memory speed.
fn adam_chunk(k: &AdamConsts, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::runtime::exec::native::isa::{chosen, Isa};
        let isa = chosen();
        if isa >= Isa::Avx512 {
            // SAFETY: `chosen` never exceeds what the CPU has: it has AVX-512F.
            return unsafe { adam_chunk_avx512(k, p, g, m, v) };
        }
        if isa >= Isa::Avx2 {
            // SAFETY: `chosen` never exceeds what the CPU has: it has AVX2 and FMA.
            return unsafe { adam_chunk_avx2(k, p, g, m, v) };
        }
    }
    adam_chunk_plain(k, p, g, m, v);
}

/// 8 lanes of `vsqrtps`/`vdivps` instead of SSE's 4. FMA is enabled but unused: Rust never
/// contracts `a * b + c` into one, so the numbers are the portable build's.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adam_chunk_avx2(k: &AdamConsts, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    adam_chunk_plain(k, p, g, m, v);
}

/// 16 lanes of `vsqrtps`/`vdivps` (see `adam_chunk_avx2`).
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn adam_chunk_avx512(
    k: &AdamConsts,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    adam_chunk_plain(k, p, g, m, v);
}

/// The arithmetic, as zipped slices (no bounds checks, so it vectorizes);
/// every build runs the same operations in the same order.
#[inline(always)]
fn adam_chunk_plain(k: &AdamConsts, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let gi = g + k.l2 * *p;
        let mi = *m * k.b1 + gi * k.c1;
        let vi = *v * k.b2 + gi * gi * k.c2;
        *m = mi;
        *v = vi;
        let upd = (mi * k.inv1) / ((vi * k.inv2).sqrt() + k.eps);
        *p = *p * k.shrink - upd * k.lr;
    }
}

/// One sparse update of a table (the `dst` of the in-place op): for each
/// gathered row `u` (table row `ids[u]`), its gradient `grad[u]` and the
/// rule's host state, exactly the arithmetic of the tensor path in
/// `optim::sparse` in one pass over the touched rows.
pub(crate) struct SparseStep<'a> {
    pub kind: SparseRule,
    pub ids: &'a [u32],
    pub grad: &'a [f32],
    pub dim: usize,
    /// Adagrad: `[rows, dim]` accumulators; rowwise: `[rows]`; Adam: m.
    pub a: RefCell<&'a mut [f32]>,
    /// Adam: v.
    pub b: RefCell<&'a mut [f32]>,
    pub lr: f64,
    pub eps: f64,
    /// L2 weight decay added to the gradient, or 0.
    pub l2: f64,
    /// Decoupled decay factor (AdamW), or 1.
    pub shrink: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// `1 - beta^t` of Adam's bias correction.
    pub bias1: f64,
    pub bias2: f64,
}

/// The sparse rules the fused kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SparseRule {
    Sgd,
    Adagrad,
    RowwiseAdagrad,
    Adam,
}

impl InplaceOp1 for SparseStep<'_> {
    fn name(&self) -> &'static str {
        "fused-sparse-step"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let (start, end) = match l.contiguous_offsets() {
            Some(o) => o,
            None => candle_core::bail!("fused sparse step: the table must be contiguous"),
        };
        let w = match s {
            CpuStorage::F32(v) => &mut v[start..end],
            _ => candle_core::bail!("fused sparse step: the table must be f32"),
        };
        let d = self.dim;
        let mut a = self.a.borrow_mut();
        let mut b = self.b.borrow_mut();
        if self.grad.len() != self.ids.len() * d {
            candle_core::bail!("fused sparse step: gradient and ids differ in size");
        }
        let (lr, eps, l2, shrink) = (
            self.lr as f32,
            self.eps as f32,
            self.l2 as f32,
            self.shrink as f32,
        );
        let k = SparseConsts {
            lr,
            eps,
            l2,
            shrink,
            b1: self.beta1 as f32,
            c1: (1.0 - self.beta1) as f32,
            b2: self.beta2 as f32,
            c2: (1.0 - self.beta2) as f32,
            inv1: (1.0 / self.bias1) as f32,
            inv2: (1.0 / self.bias2) as f32,
        };
        let rows = SparseRows {
            kind: self.kind,
            ids: self.ids,
            grad: self.grad,
            dim: d,
        };
        let r = sparse_rows_dispatch(&rows, &k, w, &mut a, &mut b);
        if let Err(r) = r {
            candle_core::bail!("fused sparse step: row {r} is outside the table");
        }
        Ok(())
    }
}

/// The sparse step's per-step constants, in f32.
#[derive(Clone, Copy)]
struct SparseConsts {
    lr: f32,
    eps: f32,
    l2: f32,
    shrink: f32,
    b1: f32,
    c1: f32,
    b2: f32,
    c2: f32,
    inv1: f32,
    inv2: f32,
}

/// The rows a sparse step updates.
struct SparseRows<'a> {
    kind: SparseRule,
    ids: &'a [u32],
    grad: &'a [f32],
    dim: usize,
}

/// [`sparse_rows`] on the widest vectors the CPU has (AVX2 turns each row's loop into 8-lane
/// square roots and divisions; the arithmetic and its order are the same on every path).
fn sparse_rows_dispatch(
    rows: &SparseRows,
    k: &SparseConsts,
    w: &mut [f32],
    a: &mut [f32],
    b: &mut [f32],
) -> Result<(), usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::runtime::exec::native::isa::{chosen, Isa};
        if chosen() >= Isa::Avx512 {
            // SAFETY: `chosen` never exceeds what the CPU has: it has AVX-512F.
            return unsafe { sparse_rows_avx512(rows, k, w, a, b) };
        }
        if chosen() >= Isa::Avx2 {
            // SAFETY: `chosen` never exceeds what the CPU has: it has AVX2 and FMA.
            return unsafe { sparse_rows_avx2(rows, k, w, a, b) };
        }
    }
    sparse_rows(rows, k, w, a, b)
}

/// `sparse_rows` compiled for AVX-512F.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sparse_rows_avx512(
    rows: &SparseRows,
    k: &SparseConsts,
    w: &mut [f32],
    a: &mut [f32],
    b: &mut [f32],
) -> Result<(), usize> {
    sparse_rows(rows, k, w, a, b)
}

/// `sparse_rows` compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sparse_rows_avx2(
    rows: &SparseRows,
    k: &SparseConsts,
    w: &mut [f32],
    a: &mut [f32],
    b: &mut [f32],
) -> Result<(), usize> {
    sparse_rows(rows, k, w, a, b)
}

/// Every touched row's update; `Err(row)` for a row outside the table.
#[inline(always)]
fn sparse_rows(
    rows: &SparseRows,
    k: &SparseConsts,
    w: &mut [f32],
    a: &mut [f32],
    b: &mut [f32],
) -> Result<(), usize> {
    let d = rows.dim;
    let SparseConsts {
        lr,
        eps,
        l2,
        shrink,
        b1,
        c1,
        b2,
        c2,
        inv1,
        inv2,
    } = *k;
    for (u, &id) in rows.ids.iter().enumerate() {
        let r = id as usize;
        if (r + 1) * d > w.len() {
            return Err(r);
        }
        let row = &mut w[r * d..(r + 1) * d];
        let g = &rows.grad[u * d..(u + 1) * d];
        match rows.kind {
            SparseRule::Sgd => {
                for j in 0..d {
                    row[j] -= lr * (g[j] + l2 * row[j]);
                }
            }
            SparseRule::Adagrad => {
                let acc = &mut a[r * d..(r + 1) * d];
                for j in 0..d {
                    let gj = g[j] + l2 * row[j];
                    acc[j] += gj * gj;
                    row[j] -= lr * (gj / (acc[j].sqrt() + eps));
                }
            }
            SparseRule::RowwiseAdagrad => {
                let gs: Vec<f32> = (0..d).map(|j| g[j] + l2 * row[j]).collect();
                let mean = gs.iter().map(|x| x * x).sum::<f32>() / d.max(1) as f32;
                a[r] += mean;
                let den = a[r].sqrt() + eps;
                for j in 0..d {
                    row[j] -= lr * (gs[j] / den);
                }
            }
            SparseRule::Adam => {
                let (m, v) = (&mut a[r * d..(r + 1) * d], &mut b[r * d..(r + 1) * d]);
                for j in 0..d {
                    let gj = g[j] + l2 * row[j];
                    m[j] = m[j] * b1 + gj * c1;
                    v[j] = v[j] * b2 + gj * gj * c2;
                    let upd = (m[j] * inv1) / ((v[j] * inv2).sqrt() + eps);
                    row[j] = row[j] * shrink - lr * upd;
                }
            }
        }
    }
    Ok(())
}
