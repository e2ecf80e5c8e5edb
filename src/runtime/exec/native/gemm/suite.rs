//! The one GEMM test suite, run against every backend this CPU can run
//! (the ones it cannot are named on stderr as skipped): our f32 kernels in
//! the frame (AVX-512, AVX2 + FMA), the portable `gemm`-crate backend, the
//! bf16 backends (the AVX512-BF16 kernel in the frame, the AMX kernel and
//! AMX's portable fallback, against a reference of bf16-rounded inputs),
//! all against f64 sums: every
//! transposition of A and B,
//! strided and column-strided outputs, accumulate, bias and relu, 1 and 2
//! threads, a relu-backward mask on the stored values, edge sizes around
//! the 14 x 32 and 6 x 16 micro-tiles, several K/M/N blocks
//! and both drivers, and (for about half the calls) A's row sums added to
//! `a_sums`. Also: nothing outside `dst` is written, and with
//! `accumulate = false` NaN garbage in `dst` is ignored.

use super::f32::gemm_f32;
use super::frame::test_problem;
use super::frame::*;

/// A backend under test: one of our f32 micro-kernels in the frame, the
/// `gemm` crate (portable f32), or a bf16 backend (AVX512-BF16 dot products, AMX tiles, or AMX's
/// portable fallback), whose inputs are rounded to bf16.
#[derive(Clone, Copy, Debug)]
enum Target {
    F32(Kernel),
    Portable,
    Avx512Bf16,
    Amx,
    AmxPortable,
}

impl Target {
    fn bf16(self) -> bool {
        matches!(self, Target::Avx512Bf16 | Target::Amx | Target::AmxPortable)
    }
}

/// The backends this CPU runs; names the others as skipped.
fn targets() -> Vec<Target> {
    let mut out = Vec::new();
    for k in [Kernel::Avx512, Kernel::Avx2] {
        if k.available() {
            out.push(Target::F32(k));
        } else {
            eprintln!("skipped: the {k:?} f32 kernel (this CPU cannot run it)");
        }
    }
    out.push(Target::Portable);
    if super::avx512bf16::available() {
        out.push(Target::Avx512Bf16);
    } else {
        eprintln!("skipped: the AVX512-BF16 kernel (this CPU has no avx512_bf16)");
    }
    if super::amx::available() {
        out.push(Target::Amx);
    } else {
        eprintln!("skipped: the AMX bf16 kernel (this CPU or process cannot use AMX)");
    }
    out.push(Target::AmxPortable);
    out
}

/// One call on `target`, from the flat argument list the checks below were
/// written against.
///
/// # Safety
/// The arguments describe a valid problem for the backends' entry points
/// (`f32::gemm_f32`, `avx512bf16::gemm`, `amx::gemm_bf16`): every pointer covers the strided
/// range m, n, k imply (bias n values, mask like dst, `a_sums` m values,
/// when non-null); dst and `a_sums` overlap nothing else; distinct (i, j)
/// map to distinct dst elements.
#[allow(clippy::too_many_arguments)]
unsafe fn call(
    target: Target,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    threads: usize,
    bias: *const f32,
    relu: bool,
    mask: *const f32,
    a_sums: *mut f32,
) {
    let problem = test_problem(
        (m, n, k),
        dst,
        (dst_rs, dst_cs),
        accumulate,
        a,
        (a_rs, a_cs),
        b,
        (b_rs, b_cs),
        Epilogue {
            bias: (!bias.is_null()).then_some(bias),
            relu,
            mask: (!mask.is_null()).then_some(mask),
            a_sums: (!a_sums.is_null()).then_some(a_sums),
        },
    );
    // SAFETY: `problem` is exactly the arguments, which this function's contract makes a
    // valid problem; every entry point below has that same contract (`gemm_f32` itself
    // returns false for a kernel the CPU cannot run, and `gemm_bf16` falls back without
    // AMX).
    unsafe {
        match target {
            Target::F32(kernel) => assert!(gemm_f32(kernel, &problem, threads)),
            Target::Portable => super::portable::gemm_f32(&problem, threads),
            Target::Avx512Bf16 => assert!(super::avx512bf16::gemm(&problem, threads)),
            Target::Amx => super::amx::gemm_bf16(&problem, threads),
            Target::AmxPortable => super::amx::gemm_bf16_portable(&problem),
        }
    }
}

fn span(rows: usize, cols: usize, rs: isize, cs: isize) -> usize {
    (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
}

/// xorshift64: deterministic values in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
    d_extra: usize,
    d_cs: isize,
    acc: bool,
    bias_on: bool,
    relu: bool,
    mask_on: bool,
    threads: usize,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let (a_rs, a_cs) = if a_t {
        (1isize, m as isize + 3)
    } else {
        (k as isize + 2, 1isize)
    };
    let (b_rs, b_cs) = if b_t {
        (1isize, k as isize + 1)
    } else {
        (n as isize + 5, 1isize)
    };
    let d_rs: isize = if d_cs == 1 { (n + d_extra) as isize } else { 1 };
    let d_cs_eff: isize = if d_cs == 1 { 1 } else { (m + d_extra) as isize };
    let a = rng.vec(span(m, k, a_rs, a_cs));
    let b = rng.vec(span(k, n, b_rs, b_cs));
    let bias = rng.vec(n);
    let dlen = span(m, n, d_rs, d_cs_eff) + 7;
    // A relu output as the mask: zero or positive, at dst's positions.
    let mask: Vec<f32> = rng.vec(dlen).into_iter().map(|x| x.max(0.0)).collect();
    let d_orig = if acc {
        rng.vec(dlen)
    } else {
        vec![f32::NAN; dlen]
    };
    // A's row sums go into values already there (a bias gradient is added to).
    let sums_on = seed & 4 != 0;
    let sums_orig = rng.vec(m);
    for kernel in targets() {
        // The bf16 backends multiply bf16-rounded inputs (A's row sums are of the f32 values).
        let round = |x: f32| {
            if kernel.bf16() {
                super::amx::bf16_round(x)
            } else {
                x
            }
        };
        let mut d = d_orig.clone();
        let mut sums = sums_orig.clone();
        // SAFETY: a, b and d (with its 7 spare floats) are sized by `span` for their strides,
        // the mask like d, the bias n and the sums m values; d's strides (n + d_extra, 1) or
        // (1, m + d_extra) give distinct (i, j) distinct elements; d and sums are separate
        // buffers from each other and from the inputs.
        unsafe {
            call(
                kernel,
                m,
                n,
                k,
                d.as_mut_ptr(),
                d_rs,
                d_cs_eff,
                acc,
                a.as_ptr(),
                a_rs,
                a_cs,
                b.as_ptr(),
                b_rs,
                b_cs,
                threads,
                if bias_on {
                    bias.as_ptr()
                } else {
                    std::ptr::null()
                },
                relu,
                if mask_on {
                    mask.as_ptr()
                } else {
                    std::ptr::null()
                },
                if sums_on {
                    sums.as_mut_ptr()
                } else {
                    std::ptr::null_mut()
                },
            )
        };
        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
        for i in 0..m {
            let row = (0..k).map(|p| a[(i as isize * a_rs + p as isize * a_cs) as usize] as f64);
            let (want, mag) = if sums_on {
                let (s, sa) = row.fold((0f64, 0f64), |(s, sa), x| (s + x, sa + x.abs()));
                (s + sums_orig[i] as f64, sa + (sums_orig[i] as f64).abs())
            } else {
                (sums_orig[i] as f64, 0.0)
            };
            assert!(
            (sums[i] as f64 - want).abs() <= tol * mag.max(1.0),
            "{kernel:?} m{m} n{n} k{k} at={a_t} thr={threads} sums={sums_on}: a_sums[{i}] got {} want {want}",
            sums[i]
        );
        }
        let mut touched = vec![false; dlen];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                let mut sa = 0f64;
                for p in 0..k {
                    let x = round(a[(i as isize * a_rs + p as isize * a_cs) as usize]) as f64
                        * round(b[(p as isize * b_rs + j as isize * b_cs) as usize]) as f64;
                    s += x;
                    sa += x.abs();
                }
                let idx = (i as isize * d_rs + j as isize * d_cs_eff) as usize;
                touched[idx] = true;
                if acc {
                    s += d_orig[idx] as f64;
                    sa += (d_orig[idx] as f64).abs();
                }
                if bias_on {
                    s += bias[j] as f64;
                    sa += (bias[j] as f64).abs();
                }
                if relu {
                    s = s.max(0.0);
                }
                if mask_on && mask[idx] <= 0.0 {
                    s = 0.0;
                }
                let got = d[idx] as f64;
                assert!(
                (got - s).abs() <= tol * sa.max(1.0),
                "{kernel:?} m{m} n{n} k{k} at={a_t} bt={b_t} dcs={d_cs} acc={acc} bias={bias_on} relu={relu} mask={mask_on} thr={threads}: [{i},{j}] got {got} want {s}"
            );
            }
        }
        for (idx, t) in touched.iter().enumerate() {
            if !t {
                assert!(
                    d[idx].to_bits() == d_orig[idx].to_bits(),
                    "{kernel:?}: wrote outside dst at {idx}"
                );
            }
        }
    }
}

/// Sets up the pool (two threads, so the threaded paths run).
fn pool() -> bool {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global();
    true
}

#[test]
fn sweep_shapes() {
    if !pool() {
        return;
    }
    let sizes = [
        1usize, 2, 3, 7, 13, 14, 15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65, 100, 255, 257, 513,
    ];
    let mut seed = 1u64;
    for (mi, &m) in sizes.iter().enumerate() {
        for (ni, &n) in sizes.iter().enumerate() {
            for (ki, &k) in sizes.iter().enumerate() {
                // Subsample the big cube to keep the test time reasonable.
                if (mi * 7 + ni * 3 + ki) % 5 != 0 {
                    continue;
                }
                if m * n * k > 20_000_000 {
                    continue;
                }
                seed += 1;
                let combo = (mi + ni + ki) % 4;
                let (a_t, b_t) = (combo & 1 != 0, combo & 2 != 0);
                let threads = 1 + (seed as usize % 2);
                check(
                    m,
                    n,
                    k,
                    a_t,
                    b_t,
                    seed as usize % 3,
                    1,
                    seed.is_multiple_of(3),
                    seed.is_multiple_of(2),
                    seed % 4 < 2,
                    seed % 3 == 1,
                    threads,
                    seed,
                );
            }
        }
    }
}

#[test]
fn all_options() {
    if !pool() {
        return;
    }
    let shapes = [
        (1usize, 1usize, 1usize),
        (13, 33, 7),
        (14, 17, 300),
        (37, 65, 257),
        (100, 49, 513),
        (257, 100, 64),
        (5, 1, 100),
        (300, 1, 31),
        (1, 70, 40),
    ];
    let mut seed = 99u64;
    for &(m, n, k) in &shapes {
        for a_t in [false, true] {
            for b_t in [false, true] {
                for d_cs in [1isize, 2] {
                    for acc in [false, true] {
                        for bias_on in [false, true] {
                            for (relu, mask_on) in
                                [(false, false), (true, false), (false, true), (true, true)]
                            {
                                for threads in [1usize, 2] {
                                    seed += 1;
                                    check(
                                        m, n, k, a_t, b_t, 3, d_cs, acc, bias_on, relu, mask_on,
                                        threads, seed,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn large_blocks() {
    if !pool() {
        return;
    }
    // Exercise multiple K, M and N blocks.
    check(
        700, 2200, 600, false, true, 0, 1, false, true, true, true, 2, 5,
    );
    check(
        530, 300, 1100, true, false, 5, 1, true, false, false, true, 2, 6,
    );
    check(
        1000, 70, 900, false, false, 1, 1, false, true, false, false, 1, 7,
    );
    // Packed A with several M macro blocks and K blocks; more threads than the pool has.
    check(
        1700, 90, 600, true, true, 2, 1, true, true, true, true, 8, 8,
    );
    // Column-strided dst across several blocks.
    check(
        300, 600, 530, false, true, 1, 2, true, true, true, true, 2, 9,
    );
    // Transposed A (a weight gradient's dY^T) across several N blocks, which
    // pack the same A rows again: its row sums must be added once.
    check(
        300, 2200, 300, true, false, 0, 1, false, false, false, false, 2, 12,
    );
}

#[test]
fn both_drivers() {
    if !pool() {
        return;
    }
    // DRIVER is global; other tests running concurrently stay correct with either driver.
    for drv in [1usize, 2] {
        DRIVER.store(drv, std::sync::atomic::Ordering::Relaxed);
        check(
            1000,
            300,
            300,
            true,
            false,
            1,
            1,
            true,
            true,
            true,
            true,
            2,
            20 + drv as u64,
        );
        check(
            333,
            700,
            600,
            false,
            true,
            0,
            1,
            false,
            true,
            true,
            false,
            2,
            30 + drv as u64,
        );
        check(
            77,
            45,
            1100,
            true,
            true,
            3,
            2,
            true,
            false,
            true,
            true,
            2,
            40 + drv as u64,
        );
        // Few row panels: driver 2 splits columns, and each column chunk
        // packs the same A rows (row sums on: seed & 4).
        check(
            40,
            300,
            600,
            true,
            false,
            0,
            1,
            false,
            false,
            false,
            false,
            2,
            60 + drv as u64,
        );
        check(
            29,
            530,
            70,
            false,
            false,
            2,
            1,
            false,
            true,
            false,
            false,
            1,
            50 + drv as u64,
        );
    }
    DRIVER.store(0, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn general_strides() {
    if !pool() {
        return;
    }
    // Neither A nor B has a unit stride.
    let (m, n, k) = (19, 37, 45);
    let mut rng = Rng(77);
    let (a_rs, a_cs, b_rs, b_cs) = (2isize * k as isize, 2isize, 3isize, 3 * k as isize);
    let a = rng.vec(span(m, k, a_rs, a_cs));
    let b = rng.vec(span(k, n, b_rs, b_cs));
    for kernel in targets() {
        let round = |x: f32| {
            if kernel.bf16() {
                super::amx::bf16_round(x)
            } else {
                x
            }
        };
        let mut d = vec![f32::NAN; m * n];
        let mut sums = vec![1f32; m];
        // SAFETY: a and b are sized by `span` for their strides, d is a dense m x n row-major
        // matrix, sums has m values, and all four are separate buffers.
        unsafe {
            call(
                kernel,
                m,
                n,
                k,
                d.as_mut_ptr(),
                n as isize,
                1,
                false,
                a.as_ptr(),
                a_rs,
                a_cs,
                b.as_ptr(),
                b_rs,
                b_cs,
                2,
                std::ptr::null(),
                false,
                std::ptr::null(),
                sums.as_mut_ptr(),
            )
        };
        for i in 0..m {
            let at = |p: usize| a[(i as isize * a_rs + p as isize * a_cs) as usize] as f64;
            let at_r = |p: usize| round(a[(i as isize * a_rs + p as isize * a_cs) as usize]) as f64;
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s +=
                        at_r(p) * round(b[(p as isize * b_rs + j as isize * b_cs) as usize]) as f64;
                }
                assert!((d[i * n + j] as f64 - s).abs() < 1e-4, "{kernel:?} {i},{j}");
            }
            let want = 1.0 + (0..k).map(at).sum::<f64>();
            assert!((sums[i] as f64 - want).abs() < 1e-4, "a_sums[{i}]");
        }
    }
}

/// A multiply whose B lies in a `fixed_b` scope packs B on the first call and
/// reads those panels on later ones (one packing per B and shape), with the
/// values of packing per call, on every frame kernel: several N and K blocks,
/// B transposed or not, a column range of B (a packing of its own), and a B
/// outside the scope (never kept). The packings go back to their owner when
/// the scope closes, and a later scope with that owner reads them.
#[test]
fn fixed_b_packs_once_per_scope() {
    use super::fixed_b::{packed_count, with_fixed_b, FixedB};
    for target in targets() {
        if !matches!(target, Target::F32(_) | Target::Avx512Bf16) {
            continue;
        }
        for (seed, (m, n, k, b_t)) in [
            (40, 2200, 600, true),
            (30, 700, 1100, false),
            (17, 45, 9, true),
        ]
        .into_iter()
        .enumerate()
        {
            let mut rng = Rng(seed as u64 * 7 + 3);
            let (b_rs, b_cs) = if b_t {
                (1isize, k as isize + 1)
            } else {
                (n as isize + 5, 1isize)
            };
            let b = rng.vec(span(k, n, b_rs, b_cs));
            let (a1, a2) = (rng.vec(m * k), rng.vec(m * k));
            let run = |a: &[f32], b: &[f32], first_col: usize| -> Vec<f32> {
                let cols = n - first_col;
                let mut d = vec![f32::NAN; m * cols];
                // SAFETY: a is m x k row-major, b holds k x n at (b_rs, b_cs) and columns
                // first_col.. of it stay inside; d is m x cols row-major and its own buffer.
                unsafe {
                    call(
                        target,
                        m,
                        cols,
                        k,
                        d.as_mut_ptr(),
                        cols as isize,
                        1,
                        false,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr().add(first_col * b_cs as usize),
                        b_rs,
                        b_cs,
                        1,
                        std::ptr::null(),
                        true,
                        std::ptr::null(),
                        std::ptr::null_mut(),
                    )
                };
                d
            };
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let what = format!("{target:?} m{m} n{n} k{k} bt={b_t}");
            let plain = [run(&a1, &b, 0), run(&a2, &b, 0), run(&a1, &b, n / 2)].map(bits);
            let copy = b.clone();
            let range = (b.as_ptr() as usize, b.as_ptr() as usize + 4 * b.len());
            let mut fixed = FixedB::new(vec![range]);
            with_fixed_b(&mut fixed, || {
                assert_eq!(bits(run(&a1, &b, 0)), plain[0], "{what}: first call");
                assert_eq!(packed_count(), 1, "{what}: B packed on the first call");
                assert_eq!(bits(run(&a2, &b, 0)), plain[1], "{what}: from the packing");
                assert_eq!(packed_count(), 1, "{what}: B not packed again");
                assert_eq!(bits(run(&a1, &b, n / 2)), plain[2], "{what}: columns");
                assert_eq!(packed_count(), 2, "{what}: a column range packs its own");
                assert_eq!(bits(run(&a1, &copy, 0)), plain[0], "{what}: outside");
                assert_eq!(packed_count(), 2, "{what}: B outside the scope not kept");
            });
            assert_eq!(packed_count(), 0, "{what}: no scope open");
            assert_eq!(fixed.len(), 2, "{what}: the packings back with their owner");
            // A later scope with the same owner reads them.
            with_fixed_b(&mut fixed, || {
                assert_eq!(bits(run(&a2, &b, 0)), plain[1], "{what}: a later scope");
                assert_eq!(packed_count(), 2, "{what}: nothing packed again");
            });
        }
    }
}

/// A task's panels packed together (`pack_a_panels` / `pack_b_panels`, a row at a time
/// where the backend has `pack_lanes_block`) hold the bits, and leave the row
/// sums, of packing each panel alone: for every frame backend this CPU runs, A = dY^T
/// (a weight gradient's, with sums) and row-major B, lane counts around a panel's and a
/// pass's width, odd and even k, a k block that starts past the first step.
#[test]
fn panels_packed_together_match_panels_packed_alone() {
    fn check<K: Backend>(name: &str) {
        let mut rng = Rng(11);
        for lanes in [
            1usize, 5, 6, 7, 13, 14, 15, 16, 17, 31, 32, 33, 48, 49, 98, 113, 128, 129, 300,
        ] {
            for (pc, kc) in [(0usize, 1usize), (0, 2), (3, 7), (0, 64), (1, 257)] {
                let k = pc + kc;
                let stride = lanes + 5;
                // One source read both ways: as A = dY^T (m = lanes rows, unit row stride)
                // and as B (n = lanes columns, unit column stride).
                let src = rng.vec(k * stride);
                let pr = Prob::new(&test_problem(
                    (lanes, lanes, k),
                    std::ptr::null_mut(),
                    (lanes as isize, 1),
                    false,
                    src.as_ptr(),
                    (1, stride as isize),
                    src.as_ptr(),
                    (stride as isize, 1),
                    Epilogue::default(),
                ));
                let what = format!("{name}: {lanes} lanes, k steps {pc}..{k}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                // A, with its row sums.
                let len = lanes.div_ceil(K::MR) * kc * K::MR;
                let (mut together, mut alone) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                let start: Vec<f32> = (0..lanes).map(|t| t as f32 * 0.25).collect();
                let (mut s1, mut s2) = (start.clone(), start);
                for (out, sums, each) in
                    [(&mut together, &mut s1, false), (&mut alone, &mut s2, true)]
                {
                    let pr = Prob {
                        a_sums: sums.as_mut_ptr(),
                        ..pr
                    };
                    // SAFETY: rows 0..lanes and k steps pc..pc+kc are inside A (src holds k
                    // rows of `stride` >= lanes values); `out` holds every panel; the sums
                    // are `lanes` values of this test's; the CPU runs K (checked).
                    unsafe {
                        if each {
                            for (p, r) in (0..lanes).step_by(K::MR).enumerate() {
                                let at = out.as_mut_ptr().add(p * kc * K::MR);
                                K::pack_a_panel(&pr, r, K::MR.min(lanes - r), pc, kc, at, true);
                            }
                        } else {
                            pack_a_panels::<K>(&pr, 0, lanes, pc, kc, out.as_mut_ptr(), true)
                        }
                    }
                }
                assert_eq!(bits(&together), bits(&alone), "{what}: A panels");
                assert_eq!(bits(&s1), bits(&s2), "{what}: A's row sums");
                // B, into 64-byte aligned panels.
                let len = lanes.div_ceil(K::NR) * kc * K::NR;
                let (mut v1, mut v2) = (Vec::new(), Vec::new());
                let (b1, b2) = (aligned(&mut v1, len), aligned(&mut v2, len));
                // SAFETY: columns 0..lanes and k steps pc..pc+kc are inside B; each output
                // is 64-byte aligned with every panel's slots; the CPU runs K.
                let (together, alone) = unsafe {
                    std::slice::from_raw_parts_mut(b1, len).fill(f32::NAN);
                    std::slice::from_raw_parts_mut(b2, len).fill(f32::NAN);
                    pack_b_panels::<K>(&pr, pc, kc, 0, lanes, b1);
                    for (p, c) in (0..lanes).step_by(K::NR).enumerate() {
                        K::pack_b_panel(
                            &pr,
                            pc,
                            kc,
                            c,
                            K::NR.min(lanes - c),
                            b2.add(p * kc * K::NR),
                        );
                    }
                    (
                        std::slice::from_raw_parts(b1, len),
                        std::slice::from_raw_parts(b2, len),
                    )
                };
                assert_eq!(bits(together), bits(alone), "{what}: B panels");
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    for target in targets() {
        match target {
            Target::F32(Kernel::Avx512) => check::<super::f32::avx512::Avx512>("AVX-512"),
            Target::F32(Kernel::Avx2) => check::<super::f32::avx2::Avx2>("AVX2"),
            Target::Avx512Bf16 => check::<super::avx512bf16::Avx512Bf16>("AVX512-BF16"),
            _ => {}
        }
    }
}
