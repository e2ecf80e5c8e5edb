//! The engine's one matrix multiply: `dst (+)= a b` over strided matrices
//! in f32 buffers: in f32 on our kernels (`frame`: AVX-512 or AVX2 + FMA,
//! the best `isa::chosen` allows), or on the `gemm` crate elsewhere; in
//! bf16 on AMX tiles (`amx`) or, without AMX, on AVX512-BF16 dot products
//! in the frame (`avx512bf16`).
//!
//! Bounds are checked here, once per call, so the unsafe call below only
//! ever sees matrices that lie inside their slices.

/// `$m!(0); $m!(1); ... $m!(13);`: the 14-row micro-kernels unroll their rows
/// through it (a rolled loop over rows may index the accumulators in memory,
/// inside the k loop: 2.5x slower). x86-64 only, as its users are.
#[cfg(target_arch = "x86_64")]
macro_rules! unroll_rows14 {
    ($m:ident) => {
        $m!(0);
        $m!(1);
        $m!(2);
        $m!(3);
        $m!(4);
        $m!(5);
        $m!(6);
        $m!(7);
        $m!(8);
        $m!(9);
        $m!(10);
        $m!(11);
        $m!(12);
        $m!(13);
    };
}

pub(crate) mod amx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512bf16;
mod f32;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) mod fixed_b;
// Off x86-64 no backend exists, so the frame's drivers go unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) mod frame;
mod portable;
#[cfg(all(test, target_arch = "x86_64"))]
mod suite;
#[cfg(target_arch = "x86_64")]
mod vnni;

use self::f32::gemm_f32;
use self::frame::{Epilogue, Problem, Strided};
use super::isa;
use super::shared::Shared;
use super::view::Mat;

/// How the engine multiplies: worker threads, and whether the inputs are
/// rounded to bf16 (f32 accumulation) for the CPU's AMX tiles or AVX512-BF16
/// dot products (`isa::Isa::bf16_kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gemm {
    pub threads: usize,
    pub bf16: bool,
}
use crate::runtime::error::{invalid_plan, Result};

/// Checks that `m` lies inside a buffer of `len` elements.
fn inside(m: &Mat, len: usize, what: &str) -> Result<()> {
    if m.rows > 0 && m.cols > 0 && m.end() > len {
        return Err(invalid_plan!(
            "native engine: {what} matrix [{}x{}] at {} runs past its buffer ({} elements)",
            m.rows,
            m.cols,
            m.off,
            len
        ));
    }
    Ok(())
}

/// Checks that the shapes chain (`[r x k] x [k x c]` into `[r x c]`) and
/// that every matrix lies inside its buffer.
fn check(d: &Mat, dst_len: usize, am: &Mat, a_len: usize, bm: &Mat, b_len: usize) -> Result<()> {
    if am.rows != d.rows || bm.cols != d.cols || am.cols != bm.rows {
        return Err(invalid_plan!(
            "native engine: [{}x{}] x [{}x{}] into [{}x{}]",
            am.rows,
            am.cols,
            bm.rows,
            bm.cols,
            d.rows,
            d.cols
        ));
    }
    inside(d, dst_len, "output")?;
    inside(am, a_len, "left")?;
    inside(bm, b_len, "right")
}

/// A buffer that several threads write disjoint matrices of (experts of
/// one batched layer multiplied in parallel; see `matmul_into`).
#[derive(Debug, Clone, Copy)]
///
/// Crosses threads as a [`Shared`] pointer: only `matmul_into` writes
/// through it, and its callers guarantee that concurrent calls write
/// disjoint elements.
pub(crate) struct SharedDst {
    ptr: Shared<*mut f32>,
    len: usize,
}

impl SharedDst {
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self {
            ptr: Shared::new(buf.as_mut_ptr()),
            len: buf.len(),
        }
    }

    /// The first element (tests write through it).
    #[cfg(test)]
    pub(crate) fn ptr(self) -> *mut f32 {
        self.ptr.get()
    }

    /// Memory nothing has been written to yet: only for multiplies that
    /// store (`accumulate` false), which write an element before they
    /// ever read it.
    pub(crate) fn unwritten(buf: &mut [std::mem::MaybeUninit<f32>]) -> Self {
        Self {
            ptr: Shared::new(buf.as_mut_ptr().cast()),
            len: buf.len(),
        }
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), with `how.threads`
/// workers of rayon's pool, in f32 or (`how.bf16`) with bf16 inputs, then
/// each element of `d` set to 0 where `mask` (laid out
/// like `d`, in a buffer of `dst`'s layout) is not > 0: the backward pass
/// of a relu whose output is `mask`, applied as the input gradient is
/// stored instead of in a pass of its own. Masking the accumulated sum is
/// right when every writer of the gradient masks: the old values are then
/// already zero wherever the mask is. `dst` is a different slice from `a`
/// and `b` (the borrow checker sees to it), so it shares no memory with
/// them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_masked(
    dst: &mut [f32],
    d: Mat,
    accumulate: bool,
    a: &[f32],
    am: Mat,
    b: &[f32],
    bm: Mat,
    mask: Option<&[f32]>,
    how: Gemm,
) -> Result<()> {
    // SAFETY: `dst` is borrowed mutably for the whole call.
    unsafe {
        matmul_into(
            SharedDst::new(dst),
            d,
            accumulate,
            a,
            am,
            b,
            bm,
            mask,
            None,
            how,
        )
    }
}

/// `matmul_masked` into a shared buffer; with `a_sums`, also adds each row
/// of `a`'s sum to it, read as the kernel packs `a`. For a weight's
/// gradient `dY^T X` those are the bias's gradient, which then costs no
/// pass of its own over dY.
///
/// # Safety
/// While this runs, no other thread reads or writes the elements of `d`
/// in `dst`'s buffer, and the buffer outlives the call; `accumulate` is
/// false when `dst` is `SharedDst::unwritten`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_into(
    dst: SharedDst,
    d: Mat,
    accumulate: bool,
    a: &[f32],
    am: Mat,
    b: &[f32],
    bm: Mat,
    mask: Option<&[f32]>,
    a_sums: Option<&mut [f32]>,
    how: Gemm,
) -> Result<()> {
    check(&d, dst.len, &am, a.len(), &bm, b.len())?;
    if let Some(m) = mask {
        inside(&d, m.len(), "mask")?;
    }
    if a_sums.as_ref().is_some_and(|s| s.len() < am.rows) {
        return Err(invalid_plan!(
            "native engine: a bias gradient is shorter than its weight has rows"
        ));
    }
    // `inside` checked that `d` lies inside the mask's buffer, so the offset stays in it.
    let mask = mask.map(|m| m.as_ptr().wrapping_add(d.off));
    let a_sums = a_sums.map(|s| s.as_mut_ptr());
    // SAFETY: all matrices were checked to lie inside their slices (every
    // offset a kernel forms is below `end()`), strides are those of the
    // checks, the mask has `d`'s layout, `a_sums` has a value per row of
    // `a` and is borrowed mutably, and the caller owns `d`'s elements for
    // the call (this function's contract).
    unsafe {
        multiply(
            dst.ptr.get(),
            d,
            accumulate,
            a,
            am,
            b,
            bm,
            None,
            false,
            mask,
            a_sums,
            how,
        )
    };
    Ok(())
}

/// `dst = a b + bias`, then relu over columns `relu_cols` (start, len),
/// in one pass: the bias and relu are applied as each output tile is
/// stored (the f32 kernel's and AMX's epilogues), instead of a bias
/// broadcast before and a relu pass after.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_bias_relu(
    dst: &mut [f32],
    d: Mat,
    a: &[f32],
    am: Mat,
    b: &[f32],
    bm: Mat,
    bias: Option<&[f32]>,
    relu_cols: Option<(usize, usize)>,
    how: Gemm,
) -> Result<()> {
    check(&d, dst.len(), &am, a.len(), &bm, b.len())?;
    if bias.is_some_and(|b| b.len() < d.cols) {
        return Err(invalid_plan!(
            "native engine: the bias is narrower than the output"
        ));
    }
    if d.rows == 0 || d.cols == 0 {
        return Ok(());
    }
    let (s, l) = relu_cols.unwrap_or((d.cols, 0));
    let parts = [
        (0, s.min(d.cols), false),
        (s, (s + l).min(d.cols), true),
        (s + l, d.cols, false),
    ];
    for (c0, c1, relu) in parts {
        if c1 <= c0 {
            continue;
        }
        let bias = bias.map(|b| b[c0..].as_ptr());
        let part = Mat {
            off: d.off + c0 * d.cs as usize,
            cols: c1 - c0,
            ..d
        };
        let bpart = Mat {
            off: (bm.off as isize + c0 as isize * bm.cs) as usize,
            cols: c1 - c0,
            ..bm
        };
        // SAFETY: the matrices lie inside their slices (checked above);
        // columns [c0, c1) are a sub-range of both `d` and `bm`; the bias
        // slice has at least `d.cols` values and is not `dst`.
        unsafe {
            multiply(
                dst.as_mut_ptr(),
                part,
                false,
                a,
                am,
                b,
                bpart,
                bias,
                relu,
                None,
                None,
                how,
            )
        };
    }
    Ok(())
}

/// `dst (+)= a b`, then `+ bias` per column, relu, and the mask when asked,
/// on the backend `how` picks: AMX or AVX512-BF16 for bf16, else our f32 kernel, else the
/// `gemm` crate followed by a scalar epilogue pass.
///
/// # Safety
/// The matrices lie inside their buffers (`check`) and chain; `dst` is
/// `d`'s buffer and nothing else touches `d`'s elements during the call;
/// `bias`, when given, points at `d.cols` values outside `dst`; `mask`,
/// when given, points at element (0, 0) of a matrix with `d`'s strides
/// outside `dst`; `a_sums`, when given, at `am.rows` values that nothing
/// else touches during the call (each row of `a`'s sum is added to them).
#[allow(clippy::too_many_arguments)]
unsafe fn multiply(
    dst: *mut f32,
    d: Mat,
    accumulate: bool,
    a: &[f32],
    am: Mat,
    b: &[f32],
    bm: Mat,
    bias: Option<*const f32>,
    relu: bool,
    mask: Option<*const f32>,
    a_sums: Option<*mut f32>,
    how: Gemm,
) {
    // SAFETY: this function's contract: `d.off`, `am.off` and `bm.off` are offsets into
    // their buffers (`check`), and the problem built from them is the one every backend
    // entry point's contract asks for (`gemm_bf16`, `gemm_f32`, `portable::gemm_f32`): each
    // matrix inside its buffer at its strides, dst exclusively this call's and distinct
    // from a, b, bias and mask, `a_sums` with a value per row of A. (`check` skips empty
    // matrices, so for those the offsets are only assumed to be at most their buffer's
    // length, as `add` requires; the plan's layouts give that.)
    unsafe {
        let out = dst.add(d.off);
        let (ap, bp) = (a.as_ptr().add(am.off), b.as_ptr().add(bm.off));
        let problem = Problem {
            m: d.rows,
            n: d.cols,
            k: am.cols,
            dst: Strided {
                ptr: out,
                rs: d.rs,
                cs: d.cs,
            },
            accumulate,
            a: Strided {
                ptr: ap,
                rs: am.rs,
                cs: am.cs,
            },
            b: Strided {
                ptr: bp,
                rs: bm.rs,
                cs: bm.cs,
            },
            epilogue: Epilogue {
                bias,
                relu,
                mask,
                a_sums,
            },
        };
        if how.bf16 {
            #[cfg(target_arch = "x86_64")]
            if isa::chosen().bf16_kernel() == Some(isa::Bf16Kernel::Avx512Bf16)
                && avx512bf16::gemm(&problem, how.threads)
            {
                return;
            }
            // AMX, or (where neither runs: tests only) AMX's portable fallback.
            amx::gemm_bf16(&problem, how.threads);
            return;
        }
        if let Some(kernel) = isa::chosen().f32_kernel() {
            // SAFETY: this function's contract is gemm_f32's: the matrices lie inside their
            // buffers, dst is exclusively ours for the call, bias/mask/a_sums as documented.
            if gemm_f32(kernel, &problem, how.threads) {
                return;
            }
        }
        portable::gemm_f32(&problem, how.threads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `matmul_masked` (a relu's backward pass fused into the input
    /// gradient's multiply) on every f32 backend this CPU runs against f64 sums: stored
    /// or accumulated into a strided output, zero wherever the mask (laid
    /// out like the output) is not positive, and nothing else written.
    #[test]
    fn masked_multiply_matches_on_every_f32_backend() {
        let (m, n, k) = (29, 53, 41);
        let g = values(m * k, 4);
        let w = values(k * n, 5);
        let how = Gemm {
            threads: 2,
            bf16: false,
        };
        let d = Mat {
            off: 2,
            rows: m,
            cols: n,
            rs: n as isize + 3,
            cs: 1,
        };
        let len = d.end() + 2;
        let mask: Vec<f32> = values(len, 6).into_iter().map(|x| x.max(0.0)).collect();
        let old: Vec<f32> = values(len, 7)
            .iter()
            .zip(&mask)
            .map(|(&x, &y)| if y > 0.0 { x } else { 0.0 })
            .collect();
        for accumulate in [false, true] {
            for forced in isa::testable_f32_levels() {
                let mut dst = if accumulate {
                    old.clone()
                } else {
                    vec![f32::NAN; len]
                };
                isa::set_forced(Some(forced));
                let r = matmul_masked(
                    &mut dst,
                    d,
                    accumulate,
                    &g,
                    Mat::dense(0, m, k),
                    &w,
                    Mat::dense(0, k, n),
                    Some(&mask),
                    how,
                );
                isa::set_forced(None);
                r.unwrap();
                for (idx, &got) in dst.iter().enumerate() {
                    let inside =
                        idx >= d.off && idx < d.end() && (idx - d.off) % (d.rs as usize) < n;
                    if !inside {
                        assert!(accumulate || got.is_nan(), "wrote {idx}");
                        continue;
                    }
                    let (i, j) = ((idx - d.off) / d.rs as usize, (idx - d.off) % d.rs as usize);
                    let mut want = if accumulate { old[idx] as f64 } else { 0.0 };
                    for p in 0..k {
                        want += g[i * k + p] as f64 * w[p * n + j] as f64;
                    }
                    if mask[idx] <= 0.0 {
                        want = 0.0;
                    }
                    assert!(
                        (got as f64 - want).abs() < 1e-4,
                        "isa {forced} acc {accumulate} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// `matmul_bias_relu` on the `gemm` crate plus the scalar epilogue (the
    /// portable path) and on each of our kernels this CPU runs, against f64 sums:
    /// W^T as the right operand (as every linear layer passes it), a strided
    /// output, and each relu column range.
    #[test]
    fn fused_multiply_matches_on_every_f32_backend() {
        let (m, n, k) = (37, 45, 70);
        let a = values(m * k, 1);
        let w = values(n * k, 2);
        let bias = values(n, 3);
        let how = Gemm {
            threads: 2,
            bf16: false,
        };
        let d = Mat {
            off: 3,
            rows: m,
            cols: n,
            rs: n as isize + 5,
            cs: 1,
        };
        let len = d.end() + 2;
        for relu_cols in [None, Some((0, n)), Some((10, 20))] {
            let mut outs = Vec::new();
            for forced in isa::testable_f32_levels() {
                isa::set_forced(Some(forced));
                let mut dst = vec![f32::NAN; len];
                let r = matmul_bias_relu(
                    &mut dst,
                    d,
                    &a,
                    Mat::dense(0, m, k),
                    &w,
                    Mat::dense(0, n, k).t(),
                    Some(&bias),
                    relu_cols,
                    how,
                );
                isa::set_forced(None);
                r.unwrap();
                outs.push(dst);
            }
            let (lo, len_relu) = relu_cols.unwrap_or((n, 0));
            for i in 0..m {
                for j in 0..n {
                    let mut want = bias[j] as f64;
                    for p in 0..k {
                        want += a[i * k + p] as f64 * w[j * k + p] as f64;
                    }
                    if (lo..lo + len_relu).contains(&j) {
                        want = want.max(0.0);
                    }
                    for out in &outs {
                        let got = out[d.off + i * d.rs as usize + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "relu {relu_cols:?} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
            // Nothing outside the output matrix is written (before, after,
            // or between its rows).
            let inside = |idx: usize| idx >= d.off && (idx - d.off) % (d.rs as usize) < n;
            for out in &outs {
                for (idx, v) in out.iter().enumerate() {
                    assert!(inside(idx) && idx < d.end() || v.is_nan(), "wrote {idx}");
                }
            }
        }
    }
}
