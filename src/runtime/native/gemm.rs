//! The engine's one matrix multiply: `dst (+)= a b` over strided matrices
//! in f32 buffers, on the `gemm` crate (its AVX-512 kernels reach 170-230
//! GFLOP/s on this model's shapes with 2 threads, near the machine's
//! measured fp32 ceiling).
//!
//! Bounds are checked here, once per call, so the unsafe call below only
//! ever sees matrices that lie inside their slices.

use super::amx;
use super::view::Mat;

/// How the engine multiplies: worker threads, and whether the inputs are
/// rounded to bf16 for the CPU's AMX tiles (f32 accumulation; see `amx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
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
pub struct SharedDst {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: only `matmul_into` writes through the pointer, and its callers
// guarantee that concurrent calls write disjoint elements.
unsafe impl Send for SharedDst {}
unsafe impl Sync for SharedDst {}

impl SharedDst {
    pub fn new(buf: &mut [f32]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), with `how.threads`
/// workers of rayon's pool, in f32 or (`how.bf16`) on AMX tiles. `dst` must not share memory with `a` or `b` (it is a
/// different slice, so the borrow checker already guarantees it).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    d: Mat,
    accumulate: bool,
    a: &[f32],
    am: Mat,
    b: &[f32],
    bm: Mat,
    how: Gemm,
) -> Result<()> {
    // SAFETY: `dst` is borrowed mutably for the whole call.
    unsafe { matmul_into(SharedDst::new(dst), d, accumulate, a, am, b, bm, how) }
}

/// `matmul` into a shared buffer.
///
/// # Safety
/// While this runs, no other thread reads or writes the elements of `d`
/// in `dst`'s buffer, and the buffer outlives the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_into(
    dst: SharedDst,
    d: Mat,
    accumulate: bool,
    a: &[f32],
    am: Mat,
    b: &[f32],
    bm: Mat,
    how: Gemm,
) -> Result<()> {
    check(&d, dst.len, &am, a.len(), &bm, b.len())?;
    if d.rows == 0 || d.cols == 0 {
        return Ok(());
    }
    if am.cols == 0 {
        if !accumulate {
            for r in 0..d.rows {
                for c in 0..d.cols {
                    *dst.ptr.add(d.off + r * d.rs as usize + c * d.cs as usize) = 0.0;
                }
            }
        }
        return Ok(());
    }
    if how.bf16 {
        // SAFETY: as below; `amx::gemm_bf16` takes rows-then-columns
        // strides and writes each dst element once per k block.
        unsafe {
            amx::gemm_bf16(
                d.rows,
                d.cols,
                am.cols,
                dst.ptr.add(d.off),
                d.rs,
                d.cs,
                accumulate,
                a.as_ptr().add(am.off),
                am.rs,
                am.cs,
                b.as_ptr().add(bm.off),
                bm.rs,
                bm.cs,
                how.threads,
            );
        }
        return Ok(());
    }
    let par = if how.threads > 1 {
        gemm::Parallelism::Rayon(how.threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: all three matrices were checked to lie inside their slices
    // (every offset the kernel forms is below `end()`), strides are those
    // of the checks, and the caller owns `d`'s elements for the call.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            am.cols,
            dst.ptr.add(d.off),
            d.cs,
            d.rs,
            accumulate,
            a.as_ptr().add(am.off),
            am.cs,
            am.rs,
            b.as_ptr().add(bm.off),
            bm.cs,
            bm.rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// `dst = a b + bias`, then relu over columns `relu_cols` (start, len),
/// on AMX in one pass: the bias and relu are applied as each output tile
/// is stored (`amx::Epilogue`), instead of a bias broadcast before and a
/// relu pass after. `how.bf16` must be set (the caller's f32 path keeps
/// the separate passes: the `gemm` crate has no epilogue).
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias_relu(
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
    if !how.bf16 {
        return Err(invalid_plan!(
            "native engine: fused multiplies run on AMX only"
        ));
    }
    check(&d, dst.len(), &am, a.len(), &bm, b.len())?;
    if bias.is_some_and(|b| b.len() < d.cols) {
        return Err(invalid_plan!(
            "native engine: the bias is narrower than the output"
        ));
    }
    let (s, l) = relu_cols.unwrap_or((d.cols, 0));
    let parts = [
        (0, s.min(d.cols), false),
        (s, (s + l).min(d.cols), true),
        (s + l, d.cols, false),
    ];
    for (c0, c1, relu) in parts {
        if c1 <= c0 || d.rows == 0 {
            continue;
        }
        let epilogue = amx::Epilogue {
            bias: bias.map(|b| b[c0..].as_ptr()),
            relu,
        };
        // SAFETY: the matrices lie inside their slices (checked above);
        // columns [c0, c1) are a sub-range of both `d` and `bm`; the bias
        // slice has at least `d.cols` values and is not `dst`.
        unsafe {
            amx::gemm_bf16_epilogue(
                d.rows,
                c1 - c0,
                am.cols,
                dst.as_mut_ptr().add(d.off + c0 * d.cs as usize),
                d.rs,
                d.cs,
                false,
                a.as_ptr().add(am.off),
                am.rs,
                am.cs,
                b.as_ptr().add(bm.off).offset(c0 as isize * bm.cs),
                bm.rs,
                bm.cs,
                how.threads,
                epilogue,
            );
        }
    }
    Ok(())
}
