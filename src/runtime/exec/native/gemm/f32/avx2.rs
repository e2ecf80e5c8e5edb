//! The AVX2 + FMA backend of the f32 GEMM frame (`frame`), for x86-64 CPUs without AVX-512
//! (AMD Zen 1-3, Intel before Skylake-SP and its client cores).
//!
//! Micro-kernel: 6 x 16 (12 ymm accumulators, 2 aligned ymm loads of packed B and 6
//! broadcasts of A per k step, 12 FMAs; with the B pair and one broadcast that is 15 of the
//! 16 ymm registers). 6 x 16 keeps two FMAs per load-pair of B, enough for the two FMA pipes
//! of Zen 3 and Haswell-class cores, where a 4 x 24 tile would need three B loads per four
//! broadcasts for the same 12 accumulators. Edge rows use smaller-R instantiations, edge
//! columns a 1-ymm (NV = 1) variant and `vmaskmovps` for C, bias and mask (packed B is zero
//! padded, so the FMAs never need masks). With row-major A the kernel broadcasts from the 6 A
//! rows in place (two base registers, rows at +0/+1/+2 row strides) and prefetches each row
//! 64 floats ahead; B panels with unit row stride (B = W^T) are packed with 8x8 in-register
//! transposes.
//!
//! Blocking (Zen 3: 32 KiB L1d, 512 KiB L2 per core): KC = 256 in both modes keeps a
//! 6 x 256 A panel (6 KiB) and the streamed 256 x 16 B panel (16 KiB) inside L1; NC = 384
//! keeps the 256 x 384 B block (384 KiB) inside L2.

use std::arch::x86_64::*;

use super::super::frame::{masked, pack_strided, prefetch_step, Backend, Epi, Prob, PACK_AHEAD};

/// Micro-tile rows.
const MR: usize = 6;
/// Micro-tile columns (2 ymm).
const NR: usize = 16;
/// B prefetch distance in k steps (one 64-byte line per step).
const PF_DIST: usize = 8;
/// A prefetch distance (floats along a row) for unpacked A.
const A_DIST: usize = 64;

/// The AVX2 + FMA backend.
pub(in super::super) struct Avx2;

// Each method's contract is the trait's (`Backend` and its methods' `# Safety` in `frame`),
// which includes that the CPU has AVX2 and FMA: what the `#[target_feature]` functions
// below need besides their pointer ranges.
impl Backend for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC_PACKED: usize = 256;
    const NC_PACKED: usize = 384;
    const MB_PACKED: usize = 768;
    const KC_DIRECT: usize = 256;
    const NC_DIRECT: usize = 384;

    unsafe fn pack_b_panel(pr: &Prob, pc: usize, kc: usize, j: usize, nr: usize, out: *mut f32) {
        // SAFETY: `Backend::pack_b_panel`'s contract, which the caller upholds, is the inner
        // function's, CPU features included.
        unsafe { pack_b_panel(pr, pc, kc, j, nr, out) }
    }

    unsafe fn pack_a_panel(
        pr: &Prob,
        i: usize,
        mr: usize,
        pc: usize,
        kc: usize,
        out: *mut f32,
        sum: bool,
    ) {
        // SAFETY: `Backend::pack_a_panel`'s contract, which the caller upholds, is the inner
        // function's, CPU features included.
        unsafe { pack_a_panel(pr, i, mr, pc, kc, out, sum) }
    }

    unsafe fn kernel(
        direct: bool,
        mr: usize,
        nr: usize,
        kc: usize,
        ap: *const f32,
        lda: isize,
        bp: *const f32,
        c: *mut f32,
        c_rs: isize,
        epi: &Epi,
    ) {
        let nv = nr.div_ceil(8);
        let lanes = nr - 8 * (nv - 1);
        let kf = KERNELS[direct as usize][mr - 1][nv - 1];
        // SAFETY: `kf` is `kernel::<mr, nv, direct>` (the indexing above is checked), and
        // `Backend::kernel`'s contract is that function's for R = mr rows: NV = nv vectors
        // cover the tile's nr <= NR columns, and `lanes` (1..=8) limits the last one to the
        // tile, so C, bias and mask are touched only at the tile's nr columns.
        unsafe { kf(kc, ap, lda, bp, c, c_rs, lanes, epi) }
    }

    unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
        // SAFETY: `Backend::gemv_rows`'s contract, which the caller upholds, is the inner
        // function's, CPU features included.
        unsafe { gemv_rows(pr, i0, i1) }
    }
}

type KernelFn = unsafe fn(usize, *const f32, isize, *const f32, *mut f32, isize, usize, &Epi);

macro_rules! kernel_row {
    ($d:literal; $($r:literal)*) => {
        [$([kernel::<$r, 1, $d> as KernelFn, kernel::<$r, 2, $d> as KernelFn]),*]
    };
}
/// KERNELS[direct_a][rows - 1][nv - 1]
static KERNELS: [[[KernelFn; 2]; MR]; 2] = [
    kernel_row!(false; 1 2 3 4 5 6),
    kernel_row!(true; 1 2 3 4 5 6),
];

/// Eight all-ones lanes then eight zero lanes: loading 8 lanes at `8 - n` gives the mask of
/// the first `n` lanes (`vmaskmovps` reads and writes only lanes whose top bit is set, and
/// never faults on the others).
static LANE_BITS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The mask of the first `n` (<= 8) lanes.
///
/// # Safety
/// `n <= 8` (only debug-asserted: a larger `n` would read before `LANE_BITS`); the CPU has
/// AVX (every caller is AVX2 + FMA code).
#[inline(always)]
unsafe fn lane_mask(n: usize) -> __m256i {
    debug_assert!(n <= 8);
    // SAFETY: with n <= 8 the load reads elements 8 - n .. 16 - n of LANE_BITS, inside its
    // 16 (an unaligned load); the CPU has AVX (the caller's contract).
    unsafe { _mm256_loadu_si256(LANE_BITS.as_ptr().add(8 - n) as *const __m256i) }
}

/// Micro-kernel: R rows x NV*8 columns over `kc` k-steps.
/// A: DIRECT = false: packed panel, row r of step p at ap[p*MR + r];
///    DIRECT = true: row-major A, row r of step p at ap[r*lda + p].
/// B: packed panel (NR floats per k step, 64-byte aligned).
/// C: row r at c + r*c_rs; the last vector of each row touches only its first `lanes`
/// columns (C, bias and mask loads, stores), so columns outside the tile are never touched.
///
/// # Safety
/// The CPU has AVX2 and FMA; `1 <= R <= MR`, `1 <= lanes <= 8`, and the tile is
/// w = (NV - 1) * 8 + lanes columns wide. `bp` is 64-byte aligned with kc steps of NR
/// floats; A holds kc steps as described above for rows r < R (packed: kc * MR floats);
/// C rows r < R have w floats that are writable (readable when `epi.beta`) and that no
/// one else touches during the call; `epi.bias` is null or has w readable floats;
/// `epi.mask` is null or has R rows of w readable floats at stride `c_rs`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const R: usize, const NV: usize, const DIRECT: bool>(
    kc: usize,
    ap: *const f32,
    lda: isize,
    bp: *const f32,
    c: *mut f32,
    c_rs: isize,
    lanes: usize,
    epi: &Epi,
) {
    // SAFETY: by the contract above: per k step the aligned B loads read NV * 8 <= NR floats
    // of the step's 64-byte aligned, NR-float slot, and the A reads rows r < R only (the
    // wrapping group bases past R are only prefetched, which never faults); the C, bias and
    // mask accesses are the tile's rows r < R and its w columns (the last vector masked).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); NV]; R];
        let mut a = ap;
        let mut b = bp;
        // Direct mode: bases of row groups {0,1,2}, {3,4,5} (row r = g[r/3] + (r%3)*lda), so each
        // broadcast is one base + scaled-index address. Wrapping offsets: a group at or beyond R
        // is never dereferenced. black_box keeps LLVM from re-deriving both from one pointer.
        let mut g = [
            std::hint::black_box(ap),
            std::hint::black_box(ap.wrapping_offset(3 * lda)),
        ];
        for p in 0..kc {
            if DIRECT && (p & 15) == 0 {
                // Unpacked A comes from far memory on the first tile of a row panel: prefetch each
                // row's line A_DIST floats ahead, once per 16 k-steps (prefetches never fault).
                for (gi, x) in g.iter().enumerate() {
                    for q in 0..3 {
                        if gi * 3 + q < R {
                            _mm_prefetch::<_MM_HINT_T0>(
                                x.wrapping_offset(q as isize * lda + A_DIST as isize) as *const i8,
                            );
                        }
                    }
                }
            }
            // The streamed B panel PF_DIST k-steps ahead (may run into the next panel, which is
            // what the next tile uses).
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR) as *const i8);
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: the packed B panel has NR floats per k step, 64-byte aligned.
                *x = _mm256_load_ps(b.add(8 * v));
            }
            // Fully unrolled over rows (R is a compile-time constant; dead rows fold away).
            macro_rules! row {
                ($r:literal) => {
                    if $r < R {
                        // SAFETY: row $r < R <= MR exists in the packed panel / in A (direct).
                        let av = if DIRECT {
                            _mm256_broadcast_ss(&*g[$r / 3].offset(($r % 3) as isize * lda))
                        } else {
                            _mm256_broadcast_ss(&*a.add($r))
                        };
                        for v in 0..NV {
                            acc[$r][v] = _mm256_fmadd_ps(av, bv[v], acc[$r][v]);
                        }
                    }
                };
            }
            row!(0);
            row!(1);
            row!(2);
            row!(3);
            row!(4);
            row!(5);
            if DIRECT {
                for x in g.iter_mut() {
                    *x = x.wrapping_add(1);
                }
            } else {
                a = a.add(MR);
            }
            b = b.add(NR);
        }
        let zero = _mm256_setzero_ps();
        let lm = lane_mask(lanes);
        // Rows by macro, like the k loop: a rolled loop here could index `acc` at run time and
        // keep it in memory inside the k loop.
        macro_rules! store_row {
            ($r:literal) => {
                if $r < R {
                    let crow = c.offset($r * c_rs);
                    let mrow = epi.mask.wrapping_offset($r * c_rs);
                    for v in 0..NV {
                        let full = v + 1 < NV || lanes == 8;
                        // SAFETY: full vectors lie inside the tile; the last one is masked to its
                        // `lanes` columns.
                        macro_rules! load {
                            ($p:expr) => {
                                if full {
                                    _mm256_loadu_ps($p)
                                } else {
                                    _mm256_maskload_ps($p, lm)
                                }
                            };
                        }
                        let mut x = acc[$r][v];
                        if epi.beta {
                            x = _mm256_add_ps(x, load!(crow.add(8 * v)));
                        }
                        if !epi.bias.is_null() {
                            x = _mm256_add_ps(x, load!(epi.bias.add(8 * v)));
                        }
                        if epi.relu {
                            x = _mm256_max_ps(x, zero);
                        }
                        if !epi.mask.is_null() {
                            let y = load!(mrow.add(8 * v));
                            x = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(y, zero), x);
                        }
                        if full {
                            _mm256_storeu_ps(crow.add(8 * v), x);
                        } else {
                            _mm256_maskstore_ps(crow.add(8 * v), lm, x);
                        }
                    }
                }
            };
        }
        store_row!(0);
        store_row!(1);
        store_row!(2);
        store_row!(3);
        store_row!(4);
        store_row!(5);
    }
}

// ---------------------------------------------------------------------------------------------
// Packing.

/// In-register 8x8 transpose: r[i][j] -> r[j][i].
///
/// # Safety
/// The CPU has AVX (inlined into AVX2 + FMA code only).
#[inline(always)]
unsafe fn transpose8(r: &mut [__m256; 8]) {
    // SAFETY: register-only AVX intrinsics; the CPU has AVX (the caller's contract).
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        // Columns (0, 4), (1, 5), (2, 6), (3, 7) of rows 0-3, then of rows 4-7.
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        r[0] = _mm256_permute2f128_ps::<0x20>(s0, s4);
        r[1] = _mm256_permute2f128_ps::<0x20>(s1, s5);
        r[2] = _mm256_permute2f128_ps::<0x20>(s2, s6);
        r[3] = _mm256_permute2f128_ps::<0x20>(s3, s7);
        r[4] = _mm256_permute2f128_ps::<0x31>(s0, s4);
        r[5] = _mm256_permute2f128_ps::<0x31>(s1, s5);
        r[6] = _mm256_permute2f128_ps::<0x31>(s2, s6);
        r[7] = _mm256_permute2f128_ps::<0x31>(s3, s7);
    }
}

/// Transposing pack of 8 lanes: source rows i < nrows (<= 8) at src + i*ld, contiguous along
/// p (kc values). Writes out[p*out_ld + i] for i < 8 (rows >= nrows are zero).
///
/// # Safety
/// The CPU has AVX2 and FMA; `nrows <= 8`; the rows cover kc values each; `out_ld >= 8`
/// and `out` has (kc - 1) * out_ld + 8 writable floats (none when kc == 0) that no one
/// else touches during the call.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_t(
    src: *const f32,
    ld: isize,
    nrows: usize,
    kc: usize,
    out: *mut f32,
    out_ld: usize,
) {
    // SAFETY: `cnt` <= 8 for `lane_mask`; the loads read rows i < nrows at columns
    // p..p + cnt (masked when cnt < 8) and the stores write out[(p + q) * out_ld ..][..8] for
    // p + q < kc, all inside the ranges of the contract above.
    unsafe {
        let mut p = 0;
        while p < kc {
            let cnt = (kc - p).min(8);
            let cm = lane_mask(cnt);
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, x) in r.iter_mut().enumerate().take(nrows) {
                let at = src.offset(i as isize * ld).add(p);
                // SAFETY: row i < nrows, columns p..p+cnt are in range (masked when short).
                *x = if cnt == 8 {
                    _mm256_loadu_ps(at)
                } else {
                    _mm256_maskload_ps(at, cm)
                };
            }
            transpose8(&mut r);
            for (q, x) in r.iter().enumerate().take(cnt) {
                // SAFETY: out has kc*out_ld floats.
                _mm256_storeu_ps(out.add((p + q) * out_ld), *x);
            }
            p += 8;
        }
    }
}

/// Pack B[pc..pc+kc, j..j+nr] into a NR-wide panel (zero padded).
///
/// # Safety
/// As [`Backend::pack_b_panel`] (the CPU has AVX2 and FMA; `out` 64-byte aligned).
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b_panel(pr: &Prob, pc: usize, kc: usize, j: usize, nr: usize, out: *mut f32) {
    // SAFETY: the contract above: the reads are B's rows pc..pc+kc at columns j..j+nr (the
    // loads past column j+nr masked off), the aligned stores fill out's kc 64-byte aligned
    // NR-float steps, and `pack_t`/`pack_strided` get those same ranges (8 of the NR columns
    // per `pack_t` call, at out + 8h with row stride NR). Caveat: some addresses formed here
    // are never dereferenced but can lie past B's allocation, which `add`/`offset` formally
    // forbid (`wrapping_*` would not): `src.add(8)` when nr <= 8 (its load is fully
    // masked), the `src.offset(pr.brs)` after the last row, and the `h = 1` source column
    // when nr <= 8 (`pack_t` then reads no row).
    unsafe {
        if pr.bcs == 1 {
            let full = nr == NR;
            let m0 = lane_mask(nr.min(8));
            let m1 = lane_mask(nr.saturating_sub(8));
            let mut src = pr.b.offset(pc as isize * pr.brs + j as isize);
            for p in 0..kc {
                // SAFETY: columns j..j+nr of row pc+p are valid (masked when short).
                let (x0, x1) = if full {
                    (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)))
                } else {
                    (
                        _mm256_maskload_ps(src, m0),
                        _mm256_maskload_ps(src.add(8), m1),
                    )
                };
                _mm256_store_ps(out.add(p * NR), x0);
                _mm256_store_ps(out.add(p * NR + 8), x1);
                src = src.offset(pr.brs);
            }
        } else if pr.brs == 1 {
            for h in 0..2 {
                let rows = nr.saturating_sub(8 * h).min(8);
                // SAFETY: rows (columns of B) j+8h .. j+8h+rows are valid; contiguous along p.
                let src = pr.b.offset(pc as isize + (j + 8 * h) as isize * pr.bcs);
                pack_t(src, pr.bcs, rows, kc, out.add(8 * h), NR);
            }
        } else {
            let src = pr.b.offset(pc as isize * pr.brs + j as isize * pr.bcs);
            pack_strided(src, pr.brs, pr.bcs, kc, nr, NR, out);
        }
    }
}

/// Pack A[i..i+mr, pc..pc+kc] into an MR-tall panel (zero padded); with `sum`, add the
/// panel's row sums to the problem's `a_sums` (each (panel, k block) must be summed once).
///
/// # Safety
/// As [`Backend::pack_a_panel`] (the CPU has AVX2 and FMA).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a_panel(
    pr: &Prob,
    i: usize,
    mr: usize,
    pc: usize,
    kc: usize,
    out: *mut f32,
    sum: bool,
) {
    // SAFETY: the contract above: reads are A's rows i..i+mr (i..i+8 only when `wide`, i.e.
    // i + 8 <= m) of columns pc..pc+kc; writes stay in out's kc * MR floats (an unmasked
    // 8-float store at step p < kc - 1 ends at p * MR + 8 <= kc * MR, and the last step's
    // store is masked to MR lanes) and in rows i..i+mr of `a_sums`, which are this call's.
    // Caveat: the `src.offset(pr.acs)` after the last step is never dereferenced but can
    // point past A's allocation, which `offset` formally forbids (`wrapping_offset` would
    // not).
    unsafe {
        let lm = lane_mask(mr);
        let sm = lane_mask(MR);
        if pr.ars == 1 {
            // Column-major A (a weight gradient's dY^T): MR contiguous floats per k step.
            let mut src = pr.a.offset(pc as isize * pr.acs + i as isize);
            // Eight-float loads and stores are cheaper than masked ones (a masked store is
            // microcoded on Zen): where the two floats past the panel's rows exist in A, load
            // them, and let each step's store spill into the next step's slots, which that step
            // then overwrites; the last step stores masked, so nothing past the panel is written.
            let wide = mr == MR && i + 8 <= pr.m;
            let mut acc = _mm256_setzero_ps();
            for p in 0..kc {
                prefetch_step(src, pr.acs, PACK_AHEAD);
                // SAFETY: rows i..i+mr (i..i+8 when `wide`) of column pc+p are inside A.
                let x = if wide {
                    _mm256_loadu_ps(src)
                } else {
                    _mm256_maskload_ps(src, lm)
                };
                acc = _mm256_add_ps(acc, x);
                if wide && p + 1 < kc {
                    _mm256_storeu_ps(out.add(p * MR), x);
                } else {
                    _mm256_maskstore_ps(out.add(p * MR), sm, x);
                }
                src = src.offset(pr.acs);
            }
            if sum && !pr.a_sums.is_null() {
                let mut t = [0f32; 8];
                _mm256_storeu_ps(t.as_mut_ptr(), acc);
                for (r, &x) in t.iter().enumerate().take(mr) {
                    // SAFETY: rows i..i+mr of a_sums are this panel's, written by no other task.
                    *pr.a_sums.add(i + r) += x;
                }
            }
            return;
        }
        // Row-major A is read in place (never packed); any other stride gathers.
        let src = pr.a.offset(i as isize * pr.ars + pc as isize * pr.acs);
        pack_strided(src, pr.acs, pr.ars, kc, mr, MR, out);
        if sum && !pr.a_sums.is_null() {
            // Summed from the packed panel (still in L1), each row in k order.
            let mut s = [0f32; MR];
            for p in 0..kc {
                for (r, x) in s.iter_mut().enumerate() {
                    *x += *out.add(p * MR + r);
                }
            }
            for (r, &x) in s.iter().enumerate().take(mr) {
                // SAFETY: rows i..i+mr of a_sums are this panel's, written by no other task.
                *pr.a_sums.add(i + r) += x;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// n == 1: matrix-vector path.

/// The sum of the 8 lanes.
///
/// # Safety
/// The CPU has AVX (inlined into AVX2 + FMA code only).
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only AVX/SSE intrinsics; the CPU has AVX (the caller's contract).
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
}

/// Rows i0..i1 of the n == 1 product, with the epilogue.
///
/// # Safety
/// As [`Backend::gemv_rows`] (the CPU has AVX2 and FMA).
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
    // SAFETY: the contract above: A is read at rows i0..i1 (the column-major path's last
    // loads masked to `cnt` rows) and columns p < k, B at rows p < k of its one column (the
    // dot-product tail masked to k - p), and dst, the bias and the mask only at rows
    // i0..i1 of column 0 (`finish`), which are this call's.
    unsafe {
        let k = pr.k;
        let finish = |i: usize, s: f32| {
            // SAFETY: row i is in range; column 0.
            let c = pr.dst.offset(i as isize * pr.drs);
            let mut v = s;
            if pr.acc {
                v += *c;
            }
            if !pr.bias.is_null() {
                v += *pr.bias;
            }
            if pr.relu {
                v = v.max(0.0);
            }
            *c = masked(pr, i, 0, v);
        };
        if pr.acs == 1 && pr.brs == 1 {
            // Dot products along contiguous p.
            for i in i0..i1 {
                let arow = pr.a.offset(i as isize * pr.ars);
                let mut s0 = _mm256_setzero_ps();
                let mut s1 = _mm256_setzero_ps();
                let mut p = 0;
                while p + 16 <= k {
                    s0 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(arow.add(p)),
                        _mm256_loadu_ps(pr.b.add(p)),
                        s0,
                    );
                    s1 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(arow.add(p + 8)),
                        _mm256_loadu_ps(pr.b.add(p + 8)),
                        s1,
                    );
                    p += 16;
                }
                while p < k {
                    let lm = lane_mask((k - p).min(8));
                    s0 = _mm256_fmadd_ps(
                        _mm256_maskload_ps(arow.add(p), lm),
                        _mm256_maskload_ps(pr.b.add(p), lm),
                        s0,
                    );
                    p += 8;
                }
                finish(i, hsum(_mm256_add_ps(s0, s1)));
            }
        } else if pr.ars == 1 {
            // Column-major A: accumulate 8 rows at a time.
            let mut i = i0;
            while i < i1 {
                let cnt = (i1 - i).min(8);
                let lm = lane_mask(cnt);
                let mut s = _mm256_setzero_ps();
                for p in 0..k {
                    let bv = _mm256_set1_ps(*pr.b.offset(p as isize * pr.brs));
                    s = _mm256_fmadd_ps(
                        _mm256_maskload_ps(pr.a.offset(p as isize * pr.acs).add(i), lm),
                        bv,
                        s,
                    );
                }
                let mut tmp = [0f32; 8];
                _mm256_storeu_ps(tmp.as_mut_ptr(), s);
                for (r, &t) in tmp.iter().enumerate().take(cnt) {
                    finish(i + r, t);
                }
                i += 8;
            }
        } else {
            for i in i0..i1 {
                let mut s = 0f32;
                for p in 0..k {
                    s += *pr.a.offset(i as isize * pr.ars + p as isize * pr.acs)
                        * *pr.b.offset(p as isize * pr.brs);
                }
                finish(i, s);
            }
        }
    }
}
