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

    /// `passes` rounds of `a_i = op(a_i, x, y)` over twelve independent
    /// accumulators starting at `z`, kept from being optimized away. Named
    /// locals, not an array: an array indexed in a loop may live in memory.
    macro_rules! twelve_chains {
        ($op:ident, $z:expr, $x:expr, $y:expr, $passes:expr) => {{
            let z = $z;
            let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (z, z, z, z, z, z);
            let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (z, z, z, z, z, z);
            for _ in 0..$passes {
                a0 = $op(a0, $x, $y);
                a1 = $op(a1, $x, $y);
                a2 = $op(a2, $x, $y);
                a3 = $op(a3, $x, $y);
                a4 = $op(a4, $x, $y);
                a5 = $op(a5, $x, $y);
                a6 = $op(a6, $x, $y);
                a7 = $op(a7, $x, $y);
                a8 = $op(a8, $x, $y);
                a9 = $op(a9, $x, $y);
                a10 = $op(a10, $x, $y);
                a11 = $op(a11, $x, $y);
            }
            std::hint::black_box([a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]);
        }};
    }

    /// 12 ymm chains (two FMA pipes x latency 4-5 plus slack) of 8 lanes.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(passes: u64) -> f64 {
        let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm256_set1_ps(std::hint::black_box(1e-7));
        let z = _mm256_setzero_ps();
        twelve_chains!(_mm256_fmadd_ps, z, x, y, passes);
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
        twelve_chains!(_mm512_fmadd_ps, z, x, y, passes);
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
        twelve_chains!(_mm512_dpbf16_ps, z, x, y, passes);
        (passes * 12 * 16 * 4) as f64
    }
}

/// The GFLOP/s of the engine's multiply (the kernel `isa::chosen` picks, in f32 or with
/// bf16 inputs) on the three products of a linear layer `[m x k] -> [m x n]`: the forward
/// pass `X W^T` (B = W^T), the input gradient `dY W` and the weight gradient `dY^T X`;
/// the best of three repetitions after a warm-up each.
pub(crate) fn gemm_layer(m: usize, n: usize, k: usize, threads: usize, bf16: bool) -> [f64; 3] {
    let how = Gemm {
        threads: threads.max(1),
        bf16,
    };
    let fill = |len: usize, mul: usize, modulo: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * mul % modulo) as f32 - (modulo / 2) as f32) / 8.0)
            .collect()
    };
    let (x, w, dy) = (fill(m * k, 7, 13), fill(n * k, 5, 11), fill(m * n, 3, 7));
    let (mut y, mut dx, mut dw) = (vec![0f32; m * n], vec![0f32; m * k], vec![0f32; n * k]);
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
            &mut y,
            Mat::dense(0, m, n),
            false,
            &x,
            Mat::dense(0, m, k),
            &w,
            Mat::dense(0, n, k).t(),
            None,
            how,
        );
    });
    let input = time(&mut || {
        let _ = matmul_masked(
            &mut dx,
            Mat::dense(0, m, k),
            false,
            &dy,
            Mat::dense(0, m, n),
            &w,
            Mat::dense(0, n, k),
            None,
            how,
        );
    });
    let weight = time(&mut || {
        let _ = matmul_masked(
            &mut dw,
            Mat::dense(0, n, k),
            false,
            &dy,
            Mat::dense(0, m, n).t(),
            &x,
            Mat::dense(0, m, k),
            None,
            how,
        );
    });
    [fwd, input, weight].map(|t| flops / t / 1e9)
}

/// The best GFLOP/s of the engine's multiply on the shapes of a large linear layer
/// (`gemm_layer` of 8192 rows, 1024 -> 1024): its forward pass and weight gradient.
/// Returns (shape, GFLOP/s).
pub(crate) fn gemm_best(threads: usize, bf16: bool) -> Vec<(String, f64)> {
    let (m, n, k) = (8192usize, 1024usize, 1024usize);
    let [fwd, _, weight] = gemm_layer(m, n, k, threads, bf16);
    vec![
        (format!("{m}x{k} * ({n}x{k})^T (forward)"), fwd),
        (format!("({m}x{n})^T * {m}x{k} (weight gradient)"), weight),
    ]
}
