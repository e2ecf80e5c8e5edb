//! The portable f32 backend: the `gemm` crate, then the epilogue as a
//! scalar pass. Runs on CPUs without AVX2 + FMA, with `PLEC_ISA=portable`,
//! and off x86-64; the shared suite holds it to the same results as our
//! kernels.

use super::frame::{add_a_row_sums, epilogue_value, Prob, Problem};

/// `dst (+)= a b` with the epilogue, like `f32::gemm_f32`.
///
/// # Safety
/// As `f32::gemm_f32`.
pub(super) unsafe fn gemm_f32(problem: &Problem, threads: usize) {
    let pr = Prob::new(problem);
    if !pr.a_sums.is_null() {
        // SAFETY: the caller's contract covers A and `a_sums`.
        unsafe { add_a_row_sums(&pr) };
    }
    if pr.m == 0 || pr.n == 0 {
        return;
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract; the gemm crate takes column strides first.
    unsafe {
        gemm::gemm(
            pr.m, pr.n, pr.k, pr.dst, pr.dcs, pr.drs, pr.acc, pr.a, pr.acs, pr.ars, pr.b, pr.bcs,
            pr.brs, 1.0f32, 1.0f32, false, false, false, par,
        )
    };
    if pr.bias.is_null() && !pr.relu && pr.mask.is_null() {
        return;
    }
    for i in 0..pr.m {
        for j in 0..pr.n {
            // SAFETY: (i, j) lies inside dst (and mask), j inside bias.
            unsafe {
                let o = pr.dst.offset(i as isize * pr.drs + j as isize * pr.dcs);
                *o = epilogue_value(&pr, i, j, *o);
            }
        }
    }
}
