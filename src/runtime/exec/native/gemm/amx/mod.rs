//! AMX-BF16 matrix multiply for the CPU runtime's opt-in `--precision bf16` mode.
//!
//! `C = (accumulate ? C : 0) + bf16(A) * bf16(B)`, with f32 inputs/outputs of arbitrary
//! element strides (same convention as the `gemm` crate, but rows-then-columns argument order).
//!
//! Structure of the AMX path:
//! * B is packed once per call (in parallel) into VNNI-layout bf16 "panels" of 32 columns.
//! * Output row blocks (up to 512 rows; column ranges too when rows are few) are handed out to
//!   at most `threads` rayon tasks through an atomic counter. Per k block (up to 1024) a task
//!   packs its A rows into a thread-local buffer and runs a 32x32 microkernel (4 accumulator
//!   tiles tmm0-3, A tiles tmm4-5, B tiles tmm6-7) over every B panel, prefetching the next
//!   block's C lines (large outputs are otherwise bound by tile stores waiting on DRAM).
//! * Full 16x16 output tiles with unit column stride are loaded/stored straight from/to `dst`;
//!   edge tiles and non-unit column strides go through a small f32 scratch buffer.
//! * Padding (rows/cols past m/n, k past a multiple of 32) is packed as zeros, so the kernel
//!   never needs partial tiles.
//! * An optional [`Epilogue`] (per-column bias, relu) is applied as the last k block's
//!   accumulators are stored, so callers need no separate passes over C. Full tiles then go
//!   through the scratch buffer and an AVX-512 copy loop instead of a direct tile store.
//!
//! Everything AMX-specific is compiled only for x86_64 Linux (tile permission is requested
//! through `arch_prctl`); elsewhere `available()` is false and `gemm_bf16` uses the portable
//! fallback, which computes the same bf16-rounded product with f32 accumulation.
//!
//! Files: `detect` (may this process use AMX), `pack` (A and B into bf16 tile lines),
//! `kernel` (blocking, tasks, the tile microkernel and its epilogue), `fallback` (the same
//! product in portable Rust). The call is the frame's [`Problem`], as for the f32 kernels.

mod detect;
mod fallback;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod kernel;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod pack;
#[cfg(test)]
mod tests;

pub(crate) use self::detect::available;
use super::frame::{add_a_row_sums, epilogue_only, Prob, Problem};

/// f32 -> bf16 bits, round-to-nearest-even (what VCVTNEPS2BF16 does for normal numbers).
/// NaNs stay NaN (quieted) instead of possibly rounding into infinity.
#[inline(always)]
pub(super) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// `x` rounded to the nearest bf16 value, as f32.
#[inline(always)]
pub(crate) fn bf16_round(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// C = (accumulate ? C : 0) + A * B, for m x k A and k x n B given as f32 with arbitrary element strides
/// (row stride rs, column stride cs, in elements, like the `gemm` crate: element (i,j) of A is a[i*a_rs + j*a_cs]).
/// A and B are rounded to bf16 (round-to-nearest-even) while packing; products accumulate in f32 (tdpbf16ps).
/// dst is f32 with its own strides. Parallel over output blocks with rayon (the global pool; `threads` = max tasks in flight, 1 = run on the caller's thread).
/// Must be correct for ANY m, n, k >= 0 (edges: tails not multiple of 16/32, k odd, m or n == 0, k == 0 -> C = accumulate ? C : 0).
///
/// The epilogue (bias, relu, mask) is applied exactly once per element, when the last k
/// block's accumulators are stored (never to partial sums), so the result equals a
/// bias/relu pass after the GEMM up to f32 rounding order; A's row sums (f32 inputs, before
/// rounding) go to `a_sums` as A is packed.
///
/// When `available()` is false this runs the portable fallback (same rounding, scalar, slow).
///
/// # Safety
/// * The pointers must cover the strided ranges they describe (any alignment; negative strides ok).
/// * `dst` must not alias `a` or `b`, and distinct (i, j) must map to distinct dst elements
///   (tasks write disjoint output blocks concurrently).
/// * Tile registers of the calling thread(s) are clobbered: each task ends with `tilerelease`.
///   Do not call this from code that keeps its own AMX tile state live.
/// * `epilogue.bias`, if set, points to `n` readable f32 (stride 1) that do not overlap
///   `dst` and are not written during the call; `mask` like `dst`; `a_sums` has `m` values.
/// * Numerics: the AMX path treats bf16 denormal inputs as zero and flushes denormal results,
///   as TDPBF16PS does; the fallback keeps denormals.
pub(crate) unsafe fn gemm_bf16(problem: &Problem, threads: usize) {
    // SAFETY: the caller's contract.
    unsafe { gemm_bf16_on(problem, threads, available()) }
}

/// [`gemm_bf16`] on the portable fallback, whatever the CPU has (the tests
/// hold the AMX kernel to it).
///
/// # Safety
/// As [`gemm_bf16`].
#[cfg(test)]
pub(super) unsafe fn gemm_bf16_portable(problem: &Problem) {
    // SAFETY: the caller's contract.
    unsafe { gemm_bf16_on(problem, 1, false) }
}

/// # Safety
/// As [`gemm_bf16`]; `amx` only when AMX is usable in this process.
unsafe fn gemm_bf16_on(problem: &Problem, threads: usize, amx: bool) {
    let pr = Prob::new(problem);
    if pr.m == 0 || pr.n == 0 {
        // No product, but A's rows still have sums.
        if !pr.a_sums.is_null() {
            // SAFETY: the caller's contract covers A and `a_sums`.
            unsafe { add_a_row_sums(&pr) };
        }
        return;
    }
    if pr.k == 0 {
        // SAFETY: the caller's contract covers dst, bias and mask.
        unsafe { epilogue_only(&pr) };
        return;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if amx {
        // SAFETY: AMX is usable in this process (checked); the caller's contract.
        unsafe { kernel::gemm(&pr, threads) };
        return;
    }
    let _ = (threads, amx);
    // SAFETY: the caller's contract.
    unsafe { fallback::gemm_bf16(&pr) };
}
