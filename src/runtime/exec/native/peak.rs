//! What this CPU can do at most, for `plec bench --peak`: a register-resident
//! multiply-add loop per instruction set the CPU has (no loads, independent
//! accumulators, so only the FMA units limit it), the same for the bf16 dot
//! product (`vdpbf16ps`) where the CPU has AVX512-BF16, and the GFLOP/s of
//! the engine's own multiply on a large shape. A benchmark, not a test.

use std::time::Instant;

use super::gemm::{matmul_masked, Gemm};
use super::isa::Isa;
use super::view::Mat;

/// Loop passes per timed call: about 0.1-0.3 s at full speed, so thread start-up is noise.
const PASSES: u64 = 1 << 25;

/// GFLOP/s of `threads` threads each running the multiply-add loop of `isa` (a multiply-add
/// counts as 2 FLOPs). Portable: scalar multiply then add, which the compiler keeps apart.
pub(crate) fn fma_peak(isa: Isa, threads: usize) -> f64 {
    let threads = threads.max(1);
    let t = Instant::now();
    let flops: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || one_thread(isa)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    });
    flops / t.elapsed().as_secs_f64().max(1e-9) / 1e9
}

/// FLOPs done by one thread's loop (the CPU's best level's loop when `isa` asks for more).
fn one_thread(isa: Isa) -> f64 {
    // The vector loops need the instructions their level names, and `fma_peak` is a safe
    // function: never go above what the CPU has (its caller passes levels up to
    // `Isa::detected`, for which this changes nothing).
    let isa = isa.min(Isa::detected());
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `isa` is at most what the CPU has (capped by `Isa::detected` above), and
        // both of these levels include AVX-512F.
        Isa::Amx | Isa::Avx512Bf16 | Isa::Avx512 => return unsafe { x86::avx512(PASSES) },
        // SAFETY: `isa` is at most what the CPU has (capped above): it has AVX2 and FMA.
        Isa::Avx2 => return unsafe { x86::avx2(PASSES) },
        Isa::Portable => {}
    }
    let _ = isa;
    scalar(PASSES / 4)
}

/// GFLOP/s of `threads` threads each running the bf16 dot-product loop (`vdpbf16ps`: per
/// 32-bit lane two products and their sum, 4 FLOPs), or `None` when the CPU has no
/// AVX512-BF16.
pub(crate) fn bf16_dot_peak(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if super::gemm::avx512bf16::available() {
        let threads = threads.max(1);
        let t = Instant::now();
        let flops: f64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                // SAFETY: the CPU has AVX-512F and AVX512-BF16 (checked just above).
                .map(|_| s.spawn(|| unsafe { x86::avx512_bf16(PASSES) }))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        return Some(flops / t.elapsed().as_secs_f64().max(1e-9) / 1e9);
    }
    let _ = threads;
    None
}

fn scalar(passes: u64) -> f64 {
    let mut acc = [0f32; 8];
    let x = std::hint::black_box(0.999_999f32);
    let y = std::hint::black_box(1e-7f32);
    for _ in 0..passes {
        for a in acc.iter_mut() {
            *a = *a * x + y;
        }
    }
    std::hint::black_box(acc);
    (passes * 8 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 ymm chains (two FMA pipes x latency 4-5 plus slack) of 8 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(passes: u64) -> f64 {
        let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm256_set1_ps(std::hint::black_box(1e-7));
        // Named accumulators, not an array: an array indexed in a loop may live in memory.
        let z = _mm256_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (z, z, z, z, z, z);
        let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (z, z, z, z, z, z);
        for _ in 0..passes {
            a0 = _mm256_fmadd_ps(a0, x, y);
            a1 = _mm256_fmadd_ps(a1, x, y);
            a2 = _mm256_fmadd_ps(a2, x, y);
            a3 = _mm256_fmadd_ps(a3, x, y);
            a4 = _mm256_fmadd_ps(a4, x, y);
            a5 = _mm256_fmadd_ps(a5, x, y);
            a6 = _mm256_fmadd_ps(a6, x, y);
            a7 = _mm256_fmadd_ps(a7, x, y);
            a8 = _mm256_fmadd_ps(a8, x, y);
            a9 = _mm256_fmadd_ps(a9, x, y);
            a10 = _mm256_fmadd_ps(a10, x, y);
            a11 = _mm256_fmadd_ps(a11, x, y);
        }
        std::hint::black_box([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]);
        (passes * 12 * 8 * 2) as f64
    }

    /// 12 zmm chains of 16 lanes (as many as two pipes x latency 4 need, with slack).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(passes: u64) -> f64 {
        let x = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm512_set1_ps(std::hint::black_box(1e-7));
        let z = _mm512_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (z, z, z, z, z, z);
        let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (z, z, z, z, z, z);
        for _ in 0..passes {
            a0 = _mm512_fmadd_ps(a0, x, y);
            a1 = _mm512_fmadd_ps(a1, x, y);
            a2 = _mm512_fmadd_ps(a2, x, y);
            a3 = _mm512_fmadd_ps(a3, x, y);
            a4 = _mm512_fmadd_ps(a4, x, y);
            a5 = _mm512_fmadd_ps(a5, x, y);
            a6 = _mm512_fmadd_ps(a6, x, y);
            a7 = _mm512_fmadd_ps(a7, x, y);
            a8 = _mm512_fmadd_ps(a8, x, y);
            a9 = _mm512_fmadd_ps(a9, x, y);
            a10 = _mm512_fmadd_ps(a10, x, y);
            a11 = _mm512_fmadd_ps(a11, x, y);
        }
        std::hint::black_box([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]);
        (passes * 12 * 16 * 2) as f64
    }

    /// 12 zmm chains of `vdpbf16ps` (16 lanes, two bf16 products each).
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn avx512_bf16(passes: u64) -> f64 {
        let x = _mm512_cvtne2ps_pbh(
            _mm512_set1_ps(std::hint::black_box(0.5)),
            _mm512_set1_ps(std::hint::black_box(1e-3)),
        );
        let y = _mm512_cvtne2ps_pbh(
            _mm512_set1_ps(std::hint::black_box(1e-3)),
            _mm512_set1_ps(std::hint::black_box(0.25)),
        );
        let z = _mm512_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (z, z, z, z, z, z);
        let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (z, z, z, z, z, z);
        for _ in 0..passes {
            a0 = _mm512_dpbf16_ps(a0, x, y);
            a1 = _mm512_dpbf16_ps(a1, x, y);
            a2 = _mm512_dpbf16_ps(a2, x, y);
            a3 = _mm512_dpbf16_ps(a3, x, y);
            a4 = _mm512_dpbf16_ps(a4, x, y);
            a5 = _mm512_dpbf16_ps(a5, x, y);
            a6 = _mm512_dpbf16_ps(a6, x, y);
            a7 = _mm512_dpbf16_ps(a7, x, y);
            a8 = _mm512_dpbf16_ps(a8, x, y);
            a9 = _mm512_dpbf16_ps(a9, x, y);
            a10 = _mm512_dpbf16_ps(a10, x, y);
            a11 = _mm512_dpbf16_ps(a11, x, y);
        }
        std::hint::black_box([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]);
        (passes * 12 * 16 * 4) as f64
    }
}

/// The best GFLOP/s of the engine's multiply (the kernel `isa::chosen` picks, in f32 or
/// with bf16 inputs) over a few repetitions of the shapes a large linear layer has:
/// `[m x k] x [k x n]^T` into `[m x n]` (forward, B = W^T) and the weight gradient
/// `[k x m]^T [m x n]`. Returns (shape, GFLOP/s).
pub(crate) fn gemm_best(threads: usize, bf16: bool) -> Vec<(String, f64)> {
    let how = Gemm {
        threads: threads.max(1),
        bf16,
    };
    let (m, n, k) = (8192usize, 1024usize, 1024usize);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let mut out = vec![0f32; m * n];
    let mut dw = vec![0f32; k * n];
    let dy: Vec<f32> = (0..m * n)
        .map(|i| ((i * 3 % 7) as f32 - 3.0) / 8.0)
        .collect();
    let time = |f: &mut dyn FnMut()| {
        f();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    let flops = 2.0 * (m * n * k) as f64;
    let fwd = time(&mut || {
        let _ = matmul_masked(
            &mut out,
            Mat::dense(0, m, n),
            false,
            &a,
            Mat::dense(0, m, k),
            &w,
            Mat::dense(0, n, k).t(),
            None,
            how,
        );
    });
    // dW[k x n] = X^T [k x m] dY [m x n].
    let bwd = time(&mut || {
        let _ = matmul_masked(
            &mut dw,
            Mat::dense(0, k, n),
            false,
            &a,
            Mat::dense(0, m, k).t(),
            &dy,
            Mat::dense(0, m, n),
            None,
            how,
        );
    });
    vec![
        (
            format!("{m}x{k} * ({n}x{k})^T (forward)"),
            flops / fwd / 1e9,
        ),
        (
            format!("({m}x{k})^T * {m}x{n} (weight gradient)"),
            flops / bwd / 1e9,
        ),
    ]
}
