use super::super::frame::{relu, test_problem, Epilogue};
use super::*;

// The entry points with the flat argument lists these tests were written against.

/// [`super::gemm_bf16`] with no epilogue.
///
/// # Safety
/// As [`super::gemm_bf16`], for the problem the arguments describe.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_bf16(
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
) {
    // SAFETY: the same arguments and the default (empty) epilogue: this function's contract
    // is the callee's.
    unsafe {
        gemm_bf16_epilogue(
            m,
            n,
            k,
            dst,
            dst_rs,
            dst_cs,
            accumulate,
            a,
            a_rs,
            a_cs,
            b,
            b_rs,
            b_cs,
            threads,
            Epilogue::default(),
        )
    }
}

/// [`super::gemm_bf16`] with `epilogue`.
///
/// # Safety
/// As [`super::gemm_bf16`], for the problem the arguments describe.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_bf16_epilogue(
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
    epilogue: Epilogue,
) {
    let p = test_problem(
        (m, n, k),
        dst,
        (dst_rs, dst_cs),
        accumulate,
        a,
        (a_rs, a_cs),
        b,
        (b_rs, b_cs),
        epilogue,
    );
    // SAFETY: `p` is exactly the arguments, which this function's contract makes a valid
    // problem for `gemm_bf16`.
    unsafe { super::gemm_bf16(&p, threads) }
}

/// [`super::gemm_bf16_portable`] with no epilogue (`threads` is ignored).
///
/// # Safety
/// As [`super::gemm_bf16`], for the problem the arguments describe.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_bf16_fallback(
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
) {
    // SAFETY: the same arguments and the default (empty) epilogue: this function's contract
    // is the callee's.
    unsafe {
        gemm_bf16_fallback_epilogue(
            m,
            n,
            k,
            dst,
            dst_rs,
            dst_cs,
            accumulate,
            a,
            a_rs,
            a_cs,
            b,
            b_rs,
            b_cs,
            threads,
            Epilogue::default(),
        )
    }
}

/// [`super::gemm_bf16_portable`] with `epilogue` (`_threads` is ignored).
///
/// # Safety
/// As [`super::gemm_bf16`], for the problem the arguments describe.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_bf16_fallback_epilogue(
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
    _threads: usize,
    epilogue: Epilogue,
) {
    let p = test_problem(
        (m, n, k),
        dst,
        (dst_rs, dst_cs),
        accumulate,
        a,
        (a_rs, a_cs),
        b,
        (b_rs, b_cs),
        epilogue,
    );
    // SAFETY: `p` is exactly the arguments, which this function's contract makes a valid
    // problem for `gemm_bf16_portable` (whose contract is `gemm_bf16`'s).
    unsafe { gemm_bf16_portable(&p) }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// A strided matrix living inside a buffer whose unused slots hold a sentinel.
struct Mat {
    buf: Vec<f32>,
    off: isize,
    rs: isize,
    cs: isize,
    rows: usize,
    cols: usize,
}

const SENTINEL: f32 = 12345.0;

impl Mat {
    /// mode 0: row-major padded, 1: column-major padded, 2: interleaved (cs=2),
    /// 3: row-major with negative row stride.
    fn new(rng: &mut Rng, rows: usize, cols: usize, mode: usize) -> Mat {
        let pad = rng.below(3) as isize;
        let (rs, cs) = match mode {
            0 => (cols as isize + pad, 1),
            1 => (1, rows as isize + pad),
            2 => (2 * cols as isize + 1 + pad, 2),
            _ => (-(cols as isize + pad), 1),
        };
        let span = |r: usize, c: usize| -> (isize, isize) {
            let mut lo = 0isize;
            let mut hi = 0isize;
            for &(i, j) in &[
                (0, 0),
                (r.saturating_sub(1), 0),
                (0, c.saturating_sub(1)),
                (r.saturating_sub(1), c.saturating_sub(1)),
            ] {
                let o = i as isize * rs + j as isize * cs;
                lo = lo.min(o);
                hi = hi.max(o);
            }
            (lo, hi)
        };
        let (lo, hi) = span(rows, cols);
        let len = (hi - lo + 1 + 8) as usize;
        let mut m = Mat {
            buf: vec![SENTINEL; len],
            off: -lo + 4,
            rs,
            cs,
            rows,
            cols,
        };
        for i in 0..rows {
            for j in 0..cols {
                let v = rng.f();
                let idx = m.idx(i, j);
                m.buf[idx] = v;
            }
        }
        m
    }
    fn idx(&self, i: usize, j: usize) -> usize {
        (self.off + i as isize * self.rs + j as isize * self.cs) as usize
    }
    fn get(&self, i: usize, j: usize) -> f32 {
        self.buf[self.idx(i, j)]
    }
    fn ptr(&self) -> *const f32 {
        // SAFETY: `off` = 4 - lo with lo <= 0 <= hi and len = hi - lo + 9, so
        // 4 <= off <= len - 5: inside `buf`.
        unsafe { self.buf.as_ptr().offset(self.off) }
    }
    fn ptr_mut(&mut self) -> *mut f32 {
        // SAFETY: as in `ptr`: `off` lies inside `buf`.
        unsafe { self.buf.as_mut_ptr().offset(self.off) }
    }
    fn in_matrix(&self) -> Vec<bool> {
        let mut used = vec![false; self.buf.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                used[self.idx(i, j)] = true;
            }
        }
        used
    }
}

type GemmFn = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    usize,
);

fn check(rng: &mut Rng, f: GemmFn, m: usize, n: usize, k: usize, threads: usize) {
    let (ma, mb, md) = (rng.below(4), rng.below(4), rng.below(4));
    let a = Mat::new(rng, m, k, ma);
    let b = Mat::new(rng, k, n, mb);
    let mut d = Mat::new(rng, m, n, md);
    let accumulate = rng.below(2) == 1;
    let d0 = d.buf.clone();
    let mut refv = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = if accumulate { d.get(i, j) as f64 } else { 0.0 };
            for p in 0..k {
                s += bf16_round(a.get(i, p)) as f64 * bf16_round(b.get(p, j)) as f64;
            }
            refv[i * n + j] = s;
        }
    }
    // SAFETY: each `Mat::new` buffer holds its matrix's whole strided range around `ptr()`
    // (negative row strides included); every mode maps distinct (i, j) of d to distinct
    // elements; d's buffer is its own, apart from a's and b's; `f` is one of the flat entry
    // points above, whose contract is `gemm_bf16`'s for exactly these arguments.
    unsafe {
        f(
            m,
            n,
            k,
            d.ptr_mut(),
            d.rs,
            d.cs,
            accumulate,
            a.ptr(),
            a.rs,
            a.cs,
            b.ptr(),
            b.rs,
            b.cs,
            threads,
        );
    }
    let ctx = format!(
        "m={m} n={n} k={k} acc={accumulate} a=({},{}) b=({},{}) d=({},{}) threads={threads}",
        a.rs, a.cs, b.rs, b.cs, d.rs, d.cs
    );
    for i in 0..m {
        for j in 0..n {
            let r = refv[i * n + j];
            let g = d.get(i, j) as f64;
            assert!(
                (g - r).abs() <= 1e-3 * (1.0 + r.abs()),
                "({i},{j}) got {g} want {r}: {ctx}"
            );
        }
    }
    let used = d.in_matrix();
    for (idx, &u) in used.iter().enumerate() {
        if !u {
            assert_eq!(
                d.buf[idx].to_bits(),
                d0[idx].to_bits(),
                "wrote outside dst: {ctx}"
            );
        }
    }
}

const SIZES: [usize; 12] = [0, 1, 3, 15, 16, 17, 31, 32, 33, 64, 100, 257];
const KS: [usize; 8] = [0, 1, 3, 17, 32, 33, 100, 257];

fn sweep(f: GemmFn, seed: u64) {
    let mut rng = Rng(seed);
    for &m in &SIZES {
        for &n in &SIZES {
            for &k in &KS {
                let threads = 1 + rng.below(3);
                check(&mut rng, f, m, n, k, threads);
            }
        }
    }
}

#[test]
fn gemm_small_shapes() {
    sweep(gemm_bf16, 0x1234_5678_9abc_def1);
}

#[test]
fn fallback_small_shapes() {
    sweep(gemm_bf16_fallback, 0x0fed_cba9_8765_4321);
}

#[test]
fn gemm_big_shapes() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    // Includes k > 768 (k split into several blocks) and many tasks per worker.
    for &(m, n, k) in &[
        (300, 513, 1100),
        (1000, 97, 640),
        (67, 1500, 129),
        (640, 640, 64),
        (129, 65, 2049),
    ] {
        for threads in [1, 2, 4] {
            check(&mut rng, gemm_bf16, m, n, k, threads);
        }
    }
}

#[test]
fn transposed_a_long_k() {
    // dW-shaped: A given transposed (unit row stride) with k >= 4 k blocks takes the
    // one-task-per-worker blocking in choose_blocks; edges in m and n included.
    let mut rng = Rng(0x0bad_cafe_1234_5678);
    for &(m, n, k, threads) in &[(100, 70, 4500, 2), (161, 33, 4097, 3), (64, 96, 5000, 1)] {
        for _ in 0..2 {
            let a = Mat::new(&mut rng, m, k, 1);
            let b = Mat::new(&mut rng, k, n, 0);
            let mut d = Mat::new(&mut rng, m, n, 0);
            let accumulate = rng.below(2) == 1;
            let mut refv = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut s = if accumulate { d.get(i, j) as f64 } else { 0.0 };
                    for p in 0..k {
                        s += bf16_round(a.get(i, p)) as f64 * bf16_round(b.get(p, j)) as f64;
                    }
                    refv[i * n + j] = s;
                }
            }
            // SAFETY: as in `check`: `Mat::new` buffers cover their matrices, d's elements
            // are distinct and d's buffer is apart from a's and b's.
            unsafe {
                gemm_bf16(
                    m,
                    n,
                    k,
                    d.ptr_mut(),
                    d.rs,
                    d.cs,
                    accumulate,
                    a.ptr(),
                    a.rs,
                    a.cs,
                    b.ptr(),
                    b.rs,
                    b.cs,
                    threads,
                );
            }
            for i in 0..m {
                for j in 0..n {
                    let (g, r) = (d.get(i, j) as f64, refv[i * n + j]);
                    assert!(
                        (g - r).abs() <= 2e-3 * (1.0 + r.abs()),
                        "({i},{j}) got {g} want {r}: m={m} n={n} k={k} acc={accumulate}"
                    );
                }
            }
        }
    }
}

#[test]
fn amx_matches_fallback_exactly_shaped() {
    // Same inputs through both paths: results agree to f32 accumulation-order noise.
    let mut rng = Rng(42);
    let (m, n, k) = (77, 45, 300);
    let a: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.f()).collect();
    let mut c1 = vec![0.5f32; m * n];
    let mut c2 = c1.clone();
    // SAFETY: dense row-major m x k A, k x n B and m x n outputs in buffers of exactly those
    // sizes; c1 and c2 are separate from each other and from the inputs.
    unsafe {
        gemm_bf16(
            m,
            n,
            k,
            c1.as_mut_ptr(),
            n as isize,
            1,
            true,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            2,
        );
        gemm_bf16_fallback(
            m,
            n,
            k,
            c2.as_mut_ptr(),
            n as isize,
            1,
            true,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            2,
        );
    }
    for (x, y) in c1.iter().zip(&c2) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn concurrent_calls_from_rayon_tasks() {
    // Several calls at once from pool threads: per-thread tile config and buffers must not
    // interfere (callers inside rayon may have their waits filled with other calls).
    use rayon::prelude::*;
    let results: Vec<bool> = (0..8u64)
        .into_par_iter()
        .map(|i| {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1));
            let (m, n, k) = (
                40 + 7 * i as usize,
                50 + 3 * i as usize,
                70 + 11 * i as usize,
            );
            check(&mut rng, gemm_bf16, m, n, k, 2);
            true
        })
        .collect();
    assert!(results.iter().all(|&x| x));
}

/// Runs gemm_bf16_epilogue and gemm_bf16_fallback_epilogue on the same strided inputs and
/// checks both against an f64 reference, each other, and untouched padding.
#[allow(clippy::too_many_arguments)]
fn check_epi(
    rng: &mut Rng,
    m: usize,
    n: usize,
    k: usize,
    threads: usize,
    with_bias: bool,
    relu_on: bool,
    accumulate: bool,
    mask_on: bool,
) {
    let (ma, mb, md) = (rng.below(4), rng.below(4), rng.below(4));
    let a = Mat::new(rng, m, k, ma);
    let b = Mat::new(rng, k, n, mb);
    let d = Mat::new(rng, m, n, md);
    // Offsets up to +-2 so relu has plenty of both signs whatever the sum's spread.
    let bias: Vec<f32> = (0..n).map(|_| 2.0 * rng.f()).collect();
    // A relu output laid out like dst: zeros and positive values.
    let mask: Vec<f32> = (0..d.buf.len()).map(|_| rng.f().max(0.0)).collect();
    let mask_at =
        |i: usize, j: usize| mask[(d.off + i as isize * d.rs + j as isize * d.cs) as usize];
    // A's row sums are added to values already there (as to a bias's gradient).
    let sums0: Vec<f32> = (0..m).map(|_| rng.f()).collect();
    let want_sums: Vec<f64> = (0..m)
        .map(|i| sums0[i] as f64 + (0..k).map(|p| a.get(i, p) as f64).sum::<f64>())
        .collect();
    let ep = Epilogue {
        bias: with_bias.then_some(bias.as_ptr()),
        relu: relu_on,
        // SAFETY: `mask` has as many values as d's buffer, and d.off lies inside that.
        mask: mask_on.then(|| unsafe { mask.as_ptr().offset(d.off) }),
        a_sums: None,
    };
    let mut refv = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = if accumulate { d.get(i, j) as f64 } else { 0.0 };
            for p in 0..k {
                s += bf16_round(a.get(i, p)) as f64 * bf16_round(b.get(p, j)) as f64;
            }
            if with_bias {
                s += bias[j] as f64;
            }
            if relu_on && s <= 0.0 {
                s = 0.0;
            }
            if mask_on && mask_at(i, j) <= 0.0 {
                s = 0.0;
            }
            refv[i * n + j] = s;
        }
    }
    let ctx = format!(
        "m={m} n={n} k={k} acc={accumulate} bias={with_bias} relu={relu_on} mask={mask_on} \
         a=({},{}) b=({},{}) d=({},{}) threads={threads}",
        a.rs, a.cs, b.rs, b.cs, d.rs, d.cs
    );
    let used = d.in_matrix();
    let mut outs = Vec::new();
    for f in [
        gemm_bf16_epilogue as EpiFn,
        gemm_bf16_fallback_epilogue as EpiFn,
    ] {
        let mut dd = Mat {
            buf: d.buf.clone(),
            off: d.off,
            rs: d.rs,
            cs: d.cs,
            rows: d.rows,
            cols: d.cols,
        };
        let mut sums = sums0.clone();
        let ep = Epilogue {
            a_sums: Some(sums.as_mut_ptr()),
            ..ep
        };
        // SAFETY: as in `check` for a, b and dd (a copy of d's buffer, its own); the bias has
        // n values, the mask is laid out like dd's buffer (at dd's offset), and `sums` has m
        // values in a buffer of its own.
        unsafe {
            f(
                m,
                n,
                k,
                dd.ptr_mut(),
                dd.rs,
                dd.cs,
                accumulate,
                a.ptr(),
                a.rs,
                a.cs,
                b.ptr(),
                b.rs,
                b.cs,
                threads,
                ep,
            );
        }
        for (i, (&got, &want)) in sums.iter().zip(&want_sums).enumerate() {
            assert!(
                (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()) * (k as f64).sqrt(),
                "a_sums[{i}] got {got} want {want}: {ctx}"
            );
        }
        for i in 0..m {
            for j in 0..n {
                let r = refv[i * n + j];
                let g = dd.get(i, j) as f64;
                assert!(
                    (g - r).abs() <= 1e-3 * (1.0 + r.abs()),
                    "({i},{j}) got {g} want {r}: {ctx}"
                );
                if relu_on {
                    assert!(g >= 0.0, "relu output {g} < 0: {ctx}");
                }
            }
        }
        for (idx, &u) in used.iter().enumerate() {
            if !u {
                assert_eq!(
                    dd.buf[idx].to_bits(),
                    d.buf[idx].to_bits(),
                    "wrote outside dst: {ctx}"
                );
            }
        }
        outs.push(dd);
    }
    for i in 0..m {
        for j in 0..n {
            let (x, y) = (outs[0].get(i, j), outs[1].get(i, j));
            assert!(
                (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                "({i},{j}) amx {x} vs fallback {y}: {ctx}"
            );
        }
    }
}

type EpiFn = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    bool,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    usize,
    Epilogue,
);

#[test]
fn epilogue_small_shapes() {
    let mut rng = Rng(0x5151_a3a3_0f0f_7777);
    for &m in &SIZES {
        for &n in &SIZES {
            for &k in &KS {
                // Every bias/relu/mask combination across the sweep, drawn so that
                // none is tied to one k.
                let combo = rng.below(8);
                let (with_bias, relu_on, mask_on) =
                    (combo & 1 == 1, combo & 2 == 2, combo & 4 == 4);
                let accumulate = rng.below(2) == 1;
                let threads = 1 + rng.below(3);
                check_epi(
                    &mut rng, m, n, k, threads, with_bias, relu_on, accumulate, mask_on,
                );
            }
        }
    }
}

#[test]
fn epilogue_several_k_blocks() {
    // k = 1600 and 2049 are split into 2 and 3 k blocks (1024 each, see choose_blocks);
    // 1100 stays one block. Bias/relu applied to a partial sum would be off by far more
    // than the tolerance (a whole bias, or a clipped negative partial sum).
    let mut rng = Rng(0x1357_9bdf_2468_ace0);
    let mut threads_i = 0usize;
    for &(m, n, k) in &[(300, 513, 1100), (129, 65, 2049), (97, 200, 1600)] {
        for combo in 0..16usize {
            let (with_bias, relu_on, accumulate, mask_on) = (
                combo & 1 == 1,
                combo & 2 == 2,
                combo & 4 == 4,
                combo & 8 == 8,
            );
            let threads = [1, 2, 4][threads_i % 3];
            threads_i += 1;
            check_epi(
                &mut rng, m, n, k, threads, with_bias, relu_on, accumulate, mask_on,
            );
        }
    }
}

#[test]
fn epilogue_default_matches_plain() {
    // gemm_bf16 must be exactly gemm_bf16_epilogue with the default (no-op) epilogue.
    let mut rng = Rng(7);
    let (m, n, k) = (70, 90, 1500);
    let a: Vec<f32> = (0..m * k).map(|_| rng.f()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.f()).collect();
    let mut c1: Vec<f32> = (0..m * n).map(|_| rng.f()).collect();
    let mut c2 = c1.clone();
    // SAFETY: A is dense m x k, B a k x n column-major matrix (rs 1, cs k) in its n * k
    // values, c1 and c2 dense m x n outputs, each in a buffer of its own.
    unsafe {
        gemm_bf16(
            m,
            n,
            k,
            c1.as_mut_ptr(),
            n as isize,
            1,
            true,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            2,
        );
        gemm_bf16_epilogue(
            m,
            n,
            k,
            c2.as_mut_ptr(),
            n as isize,
            1,
            true,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            2,
            Epilogue::default(),
        );
    }
    assert!(c1.iter().zip(&c2).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn relu_nan_and_negative_zero() {
    assert_eq!(relu(f32::NAN).to_bits(), 0);
    assert_eq!(relu(-0.0).to_bits(), 0);
    assert_eq!(relu(-1.5), 0.0);
    assert_eq!(relu(2.5), 2.5);
}

#[test]
fn rounding_is_nearest_even() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
    assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert!(bf16_round(f32::NAN).is_nan());
    assert_eq!(bf16_round(f32::INFINITY), f32::INFINITY);
}

#[test]
fn reports_availability() {
    // Not an assertion about the machine; just exercises detection and its caching.
    let a = available();
    assert_eq!(a, available());
    eprintln!("amx available: {a}");
}
