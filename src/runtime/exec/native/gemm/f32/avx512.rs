//! The AVX-512 backend of the f32 GEMM frame (`frame`): a 14 x 32 micro-kernel (28 zmm
//! accumulators; per k step 2 aligned zmm loads of packed B, 14 broadcasts of A, 28 FMAs).
//! Edge rows use smaller-R instantiations (const generic R = 1..14), edge columns a 1-zmm
//! (NV = 1) variant and masked C/bias loads/stores (packed B is zero padded, so the FMAs
//! themselves never need masks). With row-major A the kernel broadcasts straight from the 14
//! A rows (one GPR per group of three rows) and software-prefetches each row 64 floats ahead.
//! B panels with unit row stride (B = W^T) are packed with 16x16 in-register transposes.
//!
//! Blocking: row-major (unpacked) A: KC = NC = 512; packed A: KC = 256, NC = 1024, MB = 768
//! (the kc x nc B block ~1 MiB, L2 resident on the CPUs with AVX-512 we measured).

use std::arch::x86_64::*;

use super::super::frame::{
    masked, pack_strided, prefetch_step, Backend, Epi, LaneBlock, Prob, PACK_AHEAD,
};

/// Micro-tile rows.
const MR: usize = 14;
/// Micro-tile columns (2 zmm).
const NR: usize = 32;
/// B prefetch distance in k steps.
const PF_DIST: usize = 8;
/// A prefetch distance (floats along a row) for unpacked A.
const A_DIST: usize = 64;

/// The AVX-512F backend.
pub(in super::super) struct Avx512;

// Each method's contract is the trait's (`Backend` and its methods' `# Safety` in `frame`),
// which includes that the CPU has AVX-512F: what the `#[target_feature]` functions below
// need besides their pointer ranges.
impl Backend for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC_PACKED: usize = 256;
    const NC_PACKED: usize = 1024;
    const MB_PACKED: usize = 768;
    const KC_DIRECT: usize = 512;
    const NC_DIRECT: usize = 512;

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

    const LANES_BLOCK: bool = true;

    unsafe fn pack_lanes_block(block: &LaneBlock) {
        // SAFETY: `Backend::pack_lanes_block`'s contract is the inner function's. Only A
        // (dY^T) is prefetched: a B prefetch measured slower (see `PACK_AHEAD`).
        unsafe { pack_lanes_panels(block, block.width == MR) }
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
        let nv = nr.div_ceil(16);
        let mask = lane_mask(nr - 16 * (nv - 1));
        let kf = KERNELS[direct as usize][mr - 1][nv - 1];
        // SAFETY: `kf` is `kernel::<mr, nv, direct>` (the indexing above is checked), and
        // `Backend::kernel`'s contract is that function's for R = mr rows: NV = nv vectors
        // cover the tile's nr <= NR columns, and `mask` keeps the last one's first
        // nr - 16 * (nv - 1) lanes, so C, bias and mask are touched only at the tile's nr
        // columns.
        unsafe { kf(kc, ap, lda, bp, c, c_rs, mask, epi) }
    }

    unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
        // SAFETY: `Backend::gemv_rows`'s contract, which the caller upholds, is the inner
        // function's, CPU features included.
        unsafe { gemv_rows(pr, i0, i1) }
    }
}

type KernelFn = unsafe fn(usize, *const f32, isize, *const f32, *mut f32, isize, u16, &Epi);

macro_rules! kernel_row {
    ($d:literal; $($r:literal)*) => {
        [$([kernel::<$r, 1, $d> as KernelFn, kernel::<$r, 2, $d> as KernelFn]),*]
    };
}
/// KERNELS[direct_a][rows - 1][nv - 1]
static KERNELS: [[[KernelFn; 2]; MR]; 2] = [
    kernel_row!(false; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
    kernel_row!(true; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
];

/// Micro-kernel: R rows x NV*16 columns over `kc` k-steps.
/// A: DIRECT = false: packed panel, row r of step p at ap[p*MR + r];
///    DIRECT = true: row-major A, row r of step p at ap[r*lda + p].
/// B: packed panel (NR floats per k step, 64-byte aligned).
/// C: row r at c + r*c_rs; the last vector of each row is limited by `mask` (C, bias loads and
/// stores), so columns outside the tile are never touched.
///
/// # Safety
/// The CPU has AVX-512F; `1 <= R <= MR`; `mask` is the first `lanes` bits for some
/// 1 <= lanes <= 16, and the tile is w = (NV - 1) * 16 + lanes columns wide. `bp` is
/// 64-byte aligned with kc steps of NR floats; A holds kc steps as described above for rows
/// r < R (packed: kc * MR floats); C rows r < R have w floats that are writable (readable
/// when `epi.beta`) and that no one else touches during the call; `epi.bias` is null or
/// has w readable floats; `epi.mask` is null or has R rows of w readable floats at stride
/// `c_rs`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const R: usize, const NV: usize, const DIRECT: bool>(
    kc: usize,
    ap: *const f32,
    lda: isize,
    bp: *const f32,
    c: *mut f32,
    c_rs: isize,
    mask: u16,
    epi: &Epi,
) {
    // SAFETY: by the contract above: per k step the aligned B loads read NV * 16 <= NR floats
    // of the step's 64-byte aligned, NR-float slot, and the A reads rows r < R only (the
    // wrapping group bases past R are only prefetched, which never faults); the C, bias and
    // mask accesses are the tile's rows r < R and its w columns (the last vector masked by
    // `mask`; masked-off lanes are neither read nor written and do not fault).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let mut a = ap;
        let mut b = bp;
        // Direct mode: bases of row groups {0,1,2}, {3,4,5}, ... (row r = g[r/3] + (r%3)*lda).
        // Wrapping offsets: groups at or beyond R are never dereferenced. black_box keeps LLVM from
        // re-deriving all rows from one pointer (which costs extra adds in the loop).
        let mut g = [
            std::hint::black_box(ap),
            std::hint::black_box(ap.wrapping_offset(3 * lda)),
            std::hint::black_box(ap.wrapping_offset(6 * lda)),
            std::hint::black_box(ap.wrapping_offset(9 * lda)),
            std::hint::black_box(ap.wrapping_offset(12 * lda)),
        ];
        for p in 0..kc {
            let mut bv = [_mm512_setzero_ps(); NV];
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
            // Prefetch the streamed B panels PF_DIST k-steps ahead (may run past the panel into
            // the next one, which is what the next tile uses).
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR + 16) as *const i8);
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: packed B panel has NR floats per k step, 64-byte aligned.
                *x = _mm512_load_ps(b.add(16 * v));
            }
            // Fully unrolled over rows (R is a compile-time constant; dead rows fold away).
            macro_rules! row {
                ($r:literal) => {
                    if $r < R {
                        // SAFETY: row $r < R <= MR exists in the packed panel / in A (direct).
                        let av = if DIRECT {
                            _mm512_set1_ps(*g[$r / 3].offset(($r % 3) as isize * lda))
                        } else {
                            _mm512_set1_ps(*a.add($r))
                        };
                        for v in 0..NV {
                            acc[$r][v] = _mm512_fmadd_ps(av, bv[v], acc[$r][v]);
                        }
                    }
                };
            }
            unroll_rows14!(row);
            if DIRECT {
                for x in g.iter_mut() {
                    *x = x.wrapping_add(1);
                }
            } else {
                a = a.add(MR);
            }
            b = b.add(NR);
        }
        store_acc::<R, NV>(&acc, c, c_rs, mask, epi);
    }
}

/// Stores an R x (NV x 16) tile of f32 accumulators into C with the epilogue: `+ C` when
/// `epi.beta`, `+ bias`, relu, then 0 where the mask is not > 0; the last vector of each row
/// is limited to the lanes in `mask`. Shared by the f32 and the bf16 dot-product kernels,
/// whose accumulators are both f32.
///
/// # Safety
/// The CPU has AVX-512F (inlined into AVX-512F code only); C rows r < R at `c + r*c_rs`
/// have (NV - 1) * 16 + lanes(mask) floats that are writable (readable when `epi.beta`) and
/// that no one else touches during the call; `epi.bias` is null or has that many readable
/// floats; `epi.mask` is null or has R such rows at stride `c_rs`.
#[inline(always)]
pub(in super::super) unsafe fn store_acc<const R: usize, const NV: usize>(
    acc: &[[__m512; NV]; R],
    c: *mut f32,
    c_rs: isize,
    mask: u16,
    epi: &Epi,
) {
    // SAFETY: the accesses are the tile's rows r < R and its columns (the last vector masked
    // by `mask`; masked-off lanes are neither read nor written and do not fault), inside the
    // contract's ranges.
    unsafe {
        let zero = _mm512_setzero_ps();
        // Rows by macro, like the k loop: a loop over rows here may stay rolled, which indexes
        // `acc` at run time and keeps it in memory inside the k loop (2.5x slower).
        macro_rules! store_row {
            ($r:literal) => {
                if $r < R {
                    let crow = c.offset($r * c_rs);
                    let mrow = epi.mask.wrapping_offset($r * c_rs);
                    for v in 0..NV {
                        let m: __mmask16 = if v + 1 == NV { mask } else { 0xFFFF };
                        let mut x = acc[$r][v];
                        // SAFETY: masked lanes are inside the tile (caller passes the column mask).
                        if epi.beta {
                            x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, crow.add(16 * v)));
                        }
                        if !epi.bias.is_null() {
                            x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, epi.bias.add(16 * v)));
                        }
                        if epi.relu {
                            x = _mm512_max_ps(x, zero);
                        }
                        if !epi.mask.is_null() {
                            let y = _mm512_maskz_loadu_ps(m, mrow.add(16 * v));
                            x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, zero), x);
                        }
                        _mm512_mask_storeu_ps(crow.add(16 * v), m, x);
                    }
                }
            };
        }
        unroll_rows14!(store_row);
    }
}

// ---------------------------------------------------------------------------------------------
// Packing.

#[inline(always)]
pub(in super::super) fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        0xFFFF
    } else {
        ((1u32 << lanes) - 1) as u16
    }
}

/// In-register 16x16 transpose: r[i][j] -> r[j][i].
///
/// # Safety
/// The CPU has AVX-512F (inlined into AVX-512F code only).
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    // SAFETY: register-only AVX-512F intrinsics; the CPU has AVX-512F (the caller's
    // contract).
    unsafe {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut s = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let t0 = _mm512_castps_pd(t[4 * i]);
            let t1 = _mm512_castps_pd(t[4 * i + 1]);
            let t2 = _mm512_castps_pd(t[4 * i + 2]);
            let t3 = _mm512_castps_pd(t[4 * i + 3]);
            s[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
            s[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
            s[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
            s[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
        }
        for c in 0..4 {
            let x0 = _mm512_shuffle_f32x4::<0x44>(s[c], s[4 + c]);
            let x1 = _mm512_shuffle_f32x4::<0xEE>(s[c], s[4 + c]);
            let y0 = _mm512_shuffle_f32x4::<0x44>(s[8 + c], s[12 + c]);
            let y1 = _mm512_shuffle_f32x4::<0xEE>(s[8 + c], s[12 + c]);
            r[c] = _mm512_shuffle_f32x4::<0x88>(x0, y0);
            r[4 + c] = _mm512_shuffle_f32x4::<0xDD>(x0, y0);
            r[8 + c] = _mm512_shuffle_f32x4::<0x88>(x1, y1);
            r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(x1, y1);
        }
    }
}

/// Transposing pack: source rows i < nrows (<= 16) at src + i*ld, contiguous along p (kc values).
/// Writes out[p*out_ld + i] for i < lanes (rows >= nrows are zero).
///
/// # Safety
/// The CPU has AVX-512F; `nrows <= 16`, `lanes <= 16`; the rows cover kc values each;
/// `out` has (kc - 1) * out_ld + lanes writable floats (none when kc == 0) that no one else
/// touches during the call, and the lanes of one step do not reach the next
/// (`lanes <= out_ld`).
#[target_feature(enable = "avx512f")]
unsafe fn pack_t(
    src: *const f32,
    ld: isize,
    nrows: usize,
    kc: usize,
    out: *mut f32,
    out_ld: usize,
    lanes: usize,
) {
    // SAFETY: the loads read rows i < nrows at columns p..p + cnt (masked to cnt, so nothing
    // past the row's kc values is touched) and the stores write the first `lanes` floats of
    // out[(p + q) * out_ld ..] for p + q < kc (masked), inside the contract's ranges.
    unsafe {
        let smask = lane_mask(lanes);
        let mut p = 0;
        while p < kc {
            let cnt = (kc - p).min(16);
            let lm = lane_mask(cnt);
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, x) in r.iter_mut().enumerate().take(nrows) {
                // SAFETY: row i < nrows, columns p..p+cnt are in range (masked).
                *x = _mm512_maskz_loadu_ps(lm, src.offset(i as isize * ld).add(p));
            }
            transpose16(&mut r);
            for (q, x) in r.iter().enumerate().take(cnt) {
                // SAFETY: out has kc*out_ld floats; lanes <= out_ld - offset (caller).
                _mm512_mask_storeu_ps(out.add((p + q) * out_ld), smask, *x);
            }
            p += 16;
        }
    }
}

/// Pack B[pc..pc+kc, j..j+nr] into a NR-wide panel (zero padded).
///
/// # Safety
/// As [`Backend::pack_b_panel`] (the CPU has AVX-512F; `out` 64-byte aligned).
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_panel(pr: &Prob, pc: usize, kc: usize, j: usize, nr: usize, out: *mut f32) {
    // SAFETY: the contract above: the reads are B's rows pc..pc+kc at columns j..j+nr (the
    // loads masked to those columns), the aligned stores fill out's kc 64-byte aligned
    // NR-float steps, and `pack_t`/`pack_strided` get those same ranges (16 of the NR columns
    // per `pack_t` call, at out + 16h with row stride NR, 16 lanes each). Caveat: some
    // addresses formed here are never dereferenced but can lie past B's allocation, which
    // `add`/`offset` formally forbid (`wrapping_*` would not): `src.add(16)` when nr <= 16
    // (its load is fully masked), the `src.offset(pr.brs)` after the last row, and the
    // `h = 1` source column when nr <= 16 (`pack_t` then reads no row).
    unsafe {
        if pr.bcs == 1 {
            let m0 = lane_mask(nr);
            let m1 = lane_mask(nr.saturating_sub(16));
            let mut src = pr.b.offset(pc as isize * pr.brs + j as isize);
            for p in 0..kc {
                // SAFETY: columns j..j+nr of row pc+p are valid (masked loads).
                let x0 = _mm512_maskz_loadu_ps(m0, src);
                let x1 = _mm512_maskz_loadu_ps(m1, src.add(16));
                _mm512_store_ps(out.add(p * NR), x0);
                _mm512_store_ps(out.add(p * NR + 16), x1);
                src = src.offset(pr.brs);
            }
        } else if pr.brs == 1 {
            for h in 0..2 {
                let rows = nr.saturating_sub(16 * h).min(16);
                // SAFETY: rows (columns of B) j+16h .. j+16h+rows are valid; contiguous along p.
                let src = pr.b.offset(pc as isize + (j + 16 * h) as isize * pr.bcs);
                pack_t(src, pr.bcs, rows, kc, out.add(16 * h), NR, 16);
            }
        } else {
            let src = pr.b.offset(pc as isize * pr.brs + j as isize * pr.bcs);
            pack_strided(src, pr.brs, pr.bcs, kc, nr, NR, out);
        }
    }
}

/// Vectors per pass of a lane-contiguous block packer (`lane_passes`).
pub(in super::super) const PASS_VECS: usize = 8;

/// One pass of a lane-contiguous block packer over up to `PASS_VECS` 16-lane vectors of
/// whole panels: per vector its first source lane, its load mask (the lanes that exist),
/// its store mask (the panel's lanes) and its offset in the output; `span`, the source
/// lanes the pass covers from `first[0]`.
pub(in super::super) struct LanePass {
    pub nvec: usize,
    pub first: [usize; PASS_VECS],
    pub load: [u16; PASS_VECS],
    pub store: [u16; PASS_VECS],
    pub dst: [usize; PASS_VECS],
    pub span: usize,
}

/// The passes over `lanes` lanes cut into panels of `width` (<= 16 * PASS_VECS) lanes,
/// `panel_len` output slots apart, each pass as many whole panels as fit.
pub(in super::super) fn lane_passes(
    lanes: usize,
    width: usize,
    panel_len: usize,
) -> impl Iterator<Item = LanePass> {
    let per_panel = width.div_ceil(16).max(1);
    let per_pass = (PASS_VECS / per_panel).max(1);
    let npan = lanes.div_ceil(width.max(1));
    (0..npan).step_by(per_pass).map(move |p0| {
        let p1 = (p0 + per_pass).min(npan);
        let mut pass = LanePass {
            nvec: ((p1 - p0) * per_panel).min(PASS_VECS),
            first: [0; PASS_VECS],
            load: [0; PASS_VECS],
            store: [0; PASS_VECS],
            dst: [0; PASS_VECS],
            span: lanes.min(p1 * width) - p0 * width,
        };
        for v in 0..pass.nvec {
            let (p, h) = (p0 + v / per_panel, v % per_panel);
            let t = p * width + 16 * h;
            pass.first[v] = t;
            pass.load[v] = lane_mask(lanes.saturating_sub(t).min(16).min(width - 16 * h));
            pass.store[v] = lane_mask((width - 16 * h).min(16));
            pass.dst[v] = p * panel_len + 16 * h;
        }
        pass
    })
}

/// The lane-contiguous route of [`pack_a_panel`] (A = dY^T, 14-lane panels, with sums
/// and prefetching) and [`pack_b_panel`] (B = X or W, 32-lane panels) for `lanes` lanes
/// cut into panels of `width`, panel p at `out + p * kc * width`: each k step's row is
/// walked across up to 128 lanes (several panels) at a time, so the source streams row
/// after row instead of one panel's narrow column at a time. Same values and sums (each
/// lane's, in k order, added to `sums[t]` at the end) as the panel routes.
///
/// # Safety
/// The CPU has AVX-512F; `block.width` is MR or NR; `block` satisfies [`LaneBlock`]'s
/// contract.
#[target_feature(enable = "avx512f")]
unsafe fn pack_lanes_panels(block: &LaneBlock, prefetch: bool) {
    let LaneBlock {
        src,
        k_stride,
        lanes,
        kc,
        out,
        width,
        sums,
    } = *block;
    // SAFETY: loads are masked to lanes t < `lanes` of k steps p < kc; stores go to the
    // `width` lanes of steps p < kc of the panels; prefetches never fault; the sums are
    // read and written for lanes t < `lanes` only.
    unsafe {
        for pass in lane_passes(lanes, width, kc * width) {
            let mut acc = [_mm512_setzero_ps(); PASS_VECS];
            for p in 0..kc {
                let row = src.wrapping_offset(p as isize * k_stride);
                if prefetch {
                    for off in (0..pass.span).step_by(16) {
                        let at = row.wrapping_add(pass.first[0] + off);
                        prefetch_step(at, k_stride, PACK_AHEAD);
                    }
                }
                for (v, a) in acc.iter_mut().enumerate().take(pass.nvec) {
                    let x = _mm512_maskz_loadu_ps(pass.load[v], row.wrapping_add(pass.first[v]));
                    _mm512_mask_storeu_ps(out.add(pass.dst[v] + p * width), pass.store[v], x);
                    if sums.is_some() {
                        *a = _mm512_add_ps(*a, x);
                    }
                }
            }
            if let Some(s) = sums {
                add_lane_sums(s, &pass, &acc);
            }
        }
    }
}

/// Adds a pass's per-vector sums to the lanes' `sums`.
///
/// # Safety
/// The CPU has AVX-512F; `sums` has a value for every lane the pass loads.
#[target_feature(enable = "avx512f")]
pub(in super::super) unsafe fn add_lane_sums(sums: *mut f32, pass: &LanePass, acc: &[__m512]) {
    for (v, &a) in acc.iter().enumerate().take(pass.nvec) {
        let at = sums.wrapping_add(pass.first[v]);
        // SAFETY: masked to the vector's loaded lanes, which have sums (the contract).
        unsafe {
            let old = _mm512_maskz_loadu_ps(pass.load[v], at);
            _mm512_mask_storeu_ps(at, pass.load[v], _mm512_add_ps(old, a));
        }
    }
}

/// Pack A[i..i+mr, pc..pc+kc] into an MR-tall panel (zero padded); with `sum`, add the
/// panel's row sums to the problem's `a_sums` (each (panel, k block) must be summed once).
///
/// # Safety
/// As [`Backend::pack_a_panel`] (the CPU has AVX-512F).
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_panel(
    pr: &Prob,
    i: usize,
    mr: usize,
    pc: usize,
    kc: usize,
    out: *mut f32,
    sum: bool,
) {
    // SAFETY: the contract above: reads are A's rows i..i+mr of columns pc..pc+kc (masked to
    // mr lanes, or `pack_t` with nrows = mr); writes stay in out's kc * MR floats (MR lanes
    // per step, masked) and in rows i..i+mr of `a_sums` (masked to mr lanes), which are
    // this call's. Caveat: in the `ars == 1` path the `src.offset(pr.acs)` after the last
    // step is never dereferenced but can point past A's allocation, which `offset` formally
    // forbids (`wrapping_offset` would not).
    unsafe {
        if pr.acs == 1 {
            // Row-major A: rows contiguous along p -> transpose.
            let src = pr.a.offset(i as isize * pr.ars + pc as isize);
            pack_t(src, pr.ars, mr, kc, out, MR, MR);
        } else if pr.ars == 1 {
            let lm = lane_mask(mr);
            let sm = lane_mask(MR);
            let mut src = pr.a.offset(pc as isize * pr.acs + i as isize);
            for p in 0..kc {
                prefetch_step(src, pr.acs, PACK_AHEAD);
                // SAFETY: rows i..i+mr of column pc+p are valid (masked).
                let x = _mm512_maskz_loadu_ps(lm, src);
                _mm512_mask_storeu_ps(out.add(p * MR), sm, x);
                src = src.offset(pr.acs);
            }
        } else {
            let src = pr.a.offset(i as isize * pr.ars + pc as isize * pr.acs);
            pack_strided(src, pr.acs, pr.ars, kc, mr, MR, out);
        }
        if sum && !pr.a_sums.is_null() {
            // The packed panel is exact and still in L1: one vector add per k step.
            let lm = lane_mask(mr);
            let mut acc = _mm512_setzero_ps();
            for p in 0..kc {
                acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(lm, out.add(p * MR)));
            }
            // SAFETY: rows i..i+mr of a_sums are this panel's, written by no other task.
            let s = pr.a_sums.add(i);
            _mm512_mask_storeu_ps(s, lm, _mm512_add_ps(_mm512_maskz_loadu_ps(lm, s), acc));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// n == 1: matrix-vector path.

/// Rows i0..i1 of the n == 1 product, with the epilogue.
///
/// # Safety
/// As [`Backend::gemv_rows`] (the CPU has AVX-512F).
#[target_feature(enable = "avx512f")]
unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
    // SAFETY: the contract above: A is read at rows i0..i1 (the column-major path's loads
    // masked to `cnt` rows) and columns p < k, B at rows p < k of its one column (the
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
                let mut s0 = _mm512_setzero_ps();
                let mut s1 = _mm512_setzero_ps();
                let mut p = 0;
                while p + 32 <= k {
                    s0 = _mm512_fmadd_ps(
                        _mm512_loadu_ps(arow.add(p)),
                        _mm512_loadu_ps(pr.b.add(p)),
                        s0,
                    );
                    s1 = _mm512_fmadd_ps(
                        _mm512_loadu_ps(arow.add(p + 16)),
                        _mm512_loadu_ps(pr.b.add(p + 16)),
                        s1,
                    );
                    p += 32;
                }
                while p < k {
                    let lm = lane_mask(k - p);
                    s0 = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(lm, arow.add(p)),
                        _mm512_maskz_loadu_ps(lm, pr.b.add(p)),
                        s0,
                    );
                    p += 16;
                }
                finish(i, _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
            }
        } else if pr.ars == 1 {
            // Column-major A: accumulate 16 rows at a time.
            let mut i = i0;
            while i < i1 {
                let cnt = (i1 - i).min(16);
                let lm = lane_mask(cnt);
                let mut s = _mm512_setzero_ps();
                for p in 0..k {
                    let bv = _mm512_set1_ps(*pr.b.offset(p as isize * pr.brs));
                    s = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(lm, pr.a.offset(p as isize * pr.acs).add(i)),
                        bv,
                        s,
                    );
                }
                let mut tmp = [0f32; 16];
                _mm512_storeu_ps(tmp.as_mut_ptr(), s);
                for (r, &t) in tmp.iter().enumerate().take(cnt) {
                    finish(i + r, t);
                }
                i += 16;
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
