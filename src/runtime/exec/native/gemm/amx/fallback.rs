//! The AMX product in portable Rust: the same bf16-rounded inputs and f32
//! accumulation in k order, on the caller's thread. Runs where AMX is not
//! usable, and is what the AMX tests hold the kernel to.

use super::super::frame::{add_a_row_sums, epilogue_value, Prob};
use super::bf16_round;

/// `dst (+)= bf16(a) bf16(b)` with the epilogue, for m, n, k > 0.
///
/// # Safety
/// As [`super::gemm_bf16`].
pub(in super::super) unsafe fn gemm_bf16(pr: &Prob) {
    let (m, n, k) = (pr.m, pr.n, pr.k);
    if !pr.a_sums.is_null() {
        // SAFETY: the caller's contract covers A and `a_sums`.
        unsafe { add_a_row_sums(pr) };
    }
    // Round once into contiguous copies (A row-major, B column-major) so the dot products
    // below walk unit-stride memory.
    let mut ar = Vec::with_capacity(m * k);
    for i in 0..m {
        for p in 0..k {
            // SAFETY: (i, p) lies inside A, which the caller's contract covers.
            ar.push(bf16_round(unsafe {
                *pr.a.offset(i as isize * pr.ars + p as isize * pr.acs)
            }));
        }
    }
    let mut bt = Vec::with_capacity(n * k);
    for j in 0..n {
        for p in 0..k {
            // SAFETY: (p, j) lies inside B.
            bt.push(bf16_round(unsafe {
                *pr.b.offset(p as isize * pr.brs + j as isize * pr.bcs)
            }));
        }
    }
    for i in 0..m {
        let arow = &ar[i * k..(i + 1) * k];
        for j in 0..n {
            let bcol = &bt[j * k..(j + 1) * k];
            let s: f32 = arow.iter().zip(bcol).map(|(x, y)| x * y).sum();
            // SAFETY: (i, j) lies inside dst (and mask), j inside bias; nothing else
            // writes dst during the call.
            unsafe {
                let d = pr.dst.offset(i as isize * pr.drs + j as isize * pr.dcs);
                let v = if pr.acc { *d + s } else { s };
                *d = epilogue_value(pr, i, j, v);
            }
        }
    }
}
