//! Our f32 micro-kernels, one per instruction set, as backends of the GEMM
//! frame (`super::frame`): AVX-512 (14 x 32 tiles) and AVX2 + FMA (6 x 16),
//! and the entry point that picks one. The frame knows no kernel; this
//! module knows both.

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512;

#[cfg(target_arch = "x86_64")]
use super::frame::run;
use super::frame::{Kernel, Prob, Problem};

/// `dst (+)= a * b`, then the epilogue (bias, relu, mask on the final values; A's row sums
/// added to `a_sums`, each row in k order, so the sums do not depend on `threads`), on the
/// micro-kernel `kernel`. `threads`: worker count (rayon's current/global pool is used; at
/// most min(threads, pool size) jobs run). Returns false (and does nothing) when this CPU
/// cannot run `kernel`, so the caller can fall back.
///
/// # Safety
/// All pointers must be valid for the element ranges implied by m, n, k and the strides
/// (bias for n elements, mask like dst, a_sums for m elements, when given); dst and a_sums
/// must not overlap a, b, bias, mask or each other; distinct (i, j) must map to distinct dst
/// elements; nothing else touches dst or a_sums during the call.
pub(crate) unsafe fn gemm_f32(kernel: Kernel, problem: &Problem, threads: usize) -> bool {
    if !kernel.available() {
        return false;
    }
    let pr = Prob::new(problem);
    #[cfg(target_arch = "x86_64")]
    {
        match kernel {
            // SAFETY: the CPU runs AVX-512F (`available` checked above); `pr` is the caller's
            // problem, valid by this function's contract.
            Kernel::Avx512 => unsafe { run::<avx512::Avx512>(&pr, threads) },
            // SAFETY: the CPU runs AVX2 and FMA (`available` checked above); `pr` is the
            // caller's problem, valid by this function's contract.
            Kernel::Avx2 => unsafe { run::<avx2::Avx2>(&pr, threads) },
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // No kernel is available elsewhere (returned above).
        let _ = (pr, threads);
        false
    }
}
