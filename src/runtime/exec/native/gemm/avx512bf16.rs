//! The AVX512-BF16 backend of the GEMM frame (`frame`), for `--precision bf16` on CPUs
//! with `avx512_bf16` and no AMX (AMD Zen 4/5, Intel Cooper Lake): `vdpbf16ps` multiplies
//! bf16 pairs and accumulates in f32, two k steps per instruction, so a 14 x 32 tile does
//! twice the f32 kernel's work per instruction with the same 28 zmm accumulators.
//!
//! Numerics are those of the AMX path: A and B are rounded to bf16 (nearest even,
//! denormals flushed) as they are packed, products accumulate in f32, the epilogue
//! (bias, relu, relu mask) runs on the f32 sums, and A's row sums (a bias gradient) are
//! of the f32 inputs. The weights stay f32 (the optimizer's master copy); their bf16 form
//! is packed per call, so it is always the one the last optimizer step left.
//!
//! Layout: both operands are packed (there is no unpacked-A mode: A must be rounded
//! anyway), as pairs of k steps in 32-bit lanes (`vnni`). A k block of `kc` steps has
//! `ceil(kc / 2)` pair steps; an odd last step is paired with zeros. Per pair step a B
//! panel holds NR = 32 lanes (two zmm, 128 bytes, aligned) and an A panel MR = 14 lanes.
//! Each pair step takes half the room of the f32 layout's two steps, so the frame's
//! buffers, sized in f32 slots of `kc` steps, always hold a panel.
//!
//! Packing takes one of three routes per operand: k contiguous (row-major A, B = W^T):
//! 32 k values per row, converted, then a 16 x 16 transpose of the pairs; the lanes
//! contiguous (column-major A = dY^T, row-major B = W or X): two rows of k converted and
//! interleaved per pair step; anything else element by element.

use std::arch::x86_64::*;

use super::f32::avx512::{add_lane_sums, lane_mask, lane_passes, store_acc, PASS_VECS};
use super::frame::{
    epilogue_value, prefetch_step, run, Backend, Epi, LaneBlock, Prob, Problem, PACK_AHEAD,
};
use super::vnni::{cvt_pair, interleave_idx, transpose16};

/// Micro-tile rows.
const MR: usize = 14;
/// Micro-tile columns (2 zmm of f32 accumulators).
const NR: usize = 32;
/// B prefetch distance in pair steps.
const PF_DIST: usize = 8;
/// How far ahead (in floats: two 32-value blocks) the k-contiguous packer prefetches each
/// row. PLE example, AMD EPYC Zen 5, 2 threads, best of 3 interleaved: bf16 input gradient
/// 8192 x 256 -> 6158 770 -> 872 GFLOP/s; bf16 training at batch 8192 12748/14110 ->
/// 14174/14956 samples/s, evaluation 51875 -> 53531.
const ROW_AHEAD: usize = 64;

/// Whether this CPU runs the backend (AVX-512F/BW for the packers, AVX512-BF16 for the
/// conversions and the dot products).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// The AVX512-BF16 backend.
pub(super) struct Avx512Bf16;

// Each method's contract is the trait's (`Backend` and its methods' `# Safety` in `frame`),
// which includes that the CPU runs this backend (`available`): what the `#[target_feature]`
// functions below need besides their pointer ranges.
impl Backend for Avx512Bf16 {
    const MR: usize = MR;
    const NR: usize = NR;
    // In k steps: 256 pair steps, a 32 KiB B panel per NR columns and a 14 KiB A panel;
    // the kc x nc B block is 512 KiB (half of a Zen 4 core's L2).
    const KC_PACKED: usize = 512;
    const NC_PACKED: usize = 512;
    const MB_PACKED: usize = 768;
    // Unused: A is always packed (`DIRECT_A`).
    const KC_DIRECT: usize = 512;
    const NC_DIRECT: usize = 512;
    const DIRECT_A: bool = false;

    unsafe fn pack_b_panel(pr: &Prob, pc: usize, kc: usize, j: usize, nr: usize, out: *mut f32) {
        let out = out.cast::<u32>();
        // SAFETY: `Backend::pack_b_panel`'s contract: columns j..j+nr and k steps pc..pc+kc
        // are inside B, `out` is 64-byte aligned with kc * NR slots (the pairs need
        // ceil(kc / 2) * NR of them), and the CPU runs this backend. Each route reads only
        // those elements and writes NR lanes per pair step.
        unsafe {
            if pr.brs == 1 {
                // B = W^T: column j + c of B is row j + c of W, contiguous along k.
                for h in 0..2 {
                    let rows = nr.saturating_sub(16 * h).min(16);
                    let src =
                        pr.b.wrapping_offset(pc as isize + (j + 16 * h) as isize * pr.bcs);
                    pack_k_contiguous(src, pr.bcs, rows, kc, out.add(16 * h), NR, 16, None);
                }
            } else if pr.bcs == 1 {
                let src = pr.b.offset(pc as isize * pr.brs + j as isize);
                for h in 0..2 {
                    let lanes = nr.saturating_sub(16 * h).min(16);
                    pack_lanes_contiguous(
                        src.wrapping_add(16 * h),
                        pr.brs,
                        lanes,
                        kc,
                        out.add(16 * h),
                        NR,
                        16,
                        None,
                    );
                }
            } else {
                let src = pr.b.offset(pc as isize * pr.brs + j as isize * pr.bcs);
                pack_strided(src, pr.brs, pr.bcs, kc, nr, NR, out, None);
            }
        }
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
        let out = out.cast::<u32>();
        let sums = if sum && !pr.a_sums.is_null() {
            // SAFETY: rows i..i+mr are inside A, so `i` indexes the m row sums.
            Some(unsafe { pr.a_sums.add(i) })
        } else {
            None
        };
        // SAFETY: `Backend::pack_a_panel`'s contract: rows i..i+mr and k steps pc..pc+kc
        // are inside A, `out` has kc * MR slots (the pairs need ceil(kc / 2) * MR), the sums
        // of rows i..i+mr are this call's, and the CPU runs this backend.
        unsafe {
            let src = pr.a.offset(i as isize * pr.ars + pc as isize * pr.acs);
            if pr.acs == 1 {
                pack_k_contiguous(src, pr.ars, mr, kc, out, MR, MR, sums);
            } else if pr.ars == 1 {
                pack_lanes_contiguous(src, pr.acs, mr, kc, out, MR, MR, sums);
            } else {
                pack_strided(src, pr.acs, pr.ars, kc, mr, MR, out, sums);
            }
        }
    }

    // The lane-contiguous operands of a weight's gradient (dY^T and X) read rows of the
    // source kilobytes apart; a task's panels packed together walk each row pair once.
    const LANES_BLOCK: bool = true;

    unsafe fn pack_lanes_block(block: &LaneBlock) {
        // SAFETY: `Backend::pack_lanes_block`'s contract is the inner function's.
        unsafe { pack_lanes_panels(block) }
    }

    unsafe fn kernel(
        _direct: bool,
        mr: usize,
        nr: usize,
        kc: usize,
        ap: *const f32,
        _lda: isize,
        bp: *const f32,
        c: *mut f32,
        c_rs: isize,
        epi: &Epi,
    ) {
        let nv = nr.div_ceil(16);
        let mask = lane_mask(nr - 16 * (nv - 1));
        let kf = KERNELS[mr - 1][nv - 1];
        // SAFETY: `kf` is `kernel::<mr, nv>` (the indexing is checked); `Backend::kernel`'s
        // contract (A always packed here: `DIRECT_A` is false) is that function's for
        // R = mr rows, with NV = nv vectors and `mask` covering the tile's nr columns.
        unsafe { kf(kc.div_ceil(2), ap.cast(), bp.cast(), c, c_rs, mask, epi) }
    }

    unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
        // SAFETY: `Backend::gemv_rows`'s contract, which the caller upholds, is the inner
        // function's, CPU features included.
        unsafe { gemv_rows(pr, i0, i1) }
    }
}

type KernelFn = unsafe fn(usize, *const u32, *const u32, *mut f32, isize, u16, &Epi);

macro_rules! kernel_rows {
    ($($r:literal)*) => {
        [$([kernel::<$r, 1> as KernelFn, kernel::<$r, 2> as KernelFn]),*]
    };
}
/// KERNELS[rows - 1][nv - 1]
static KERNELS: [[KernelFn; 2]; MR] = kernel_rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14);

/// Micro-kernel: R rows x NV * 16 columns over `kp` pair steps of packed panels (A: MR
/// lanes per pair step, B: NR lanes, 64-byte aligned), stored with `store_acc`.
///
/// # Safety
/// The CPU runs this backend; `1 <= R <= MR`; `mask` is the first `lanes` bits for some
/// 1 <= lanes <= 16 and the tile is (NV - 1) * 16 + lanes columns wide; `ap` has kp * MR
/// and `bp` (64-byte aligned) kp * NR readable lanes; C, the bias and the mask as
/// [`store_acc`] requires for that tile.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn kernel<const R: usize, const NV: usize>(
    kp: usize,
    ap: *const u32,
    bp: *const u32,
    c: *mut f32,
    c_rs: isize,
    mask: u16,
    epi: &Epi,
) {
    // SAFETY: per pair step the aligned B loads read NV * 16 <= NR lanes of the step's
    // 64-byte aligned slot and the A broadcasts rows r < R of the step's MR lanes, all
    // inside the panels (the contract); prefetches never fault. The store is `store_acc`'s
    // contract, which is this function's.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let mut a = ap;
        let mut b = bp;
        for _ in 0..kp {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PF_DIST * NR + 16) as *const i8);
            let mut bv = [_mm512_setzero_si512(); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_load_si512(b.add(16 * v) as *const _);
            }
            // Fully unrolled over rows (R is a compile-time constant; dead rows fold away),
            // as in the f32 kernel: a rolled loop may index `acc` in memory.
            macro_rules! row {
                ($r:literal) => {
                    if $r < R {
                        let av = bh(_mm512_set1_epi32(*a.add($r) as i32));
                        for v in 0..NV {
                            acc[$r][v] = _mm512_dpbf16_ps(acc[$r][v], av, bh(bv[v]));
                        }
                    }
                };
            }
            unroll_rows14!(row);
            a = a.add(MR);
            b = b.add(NR);
        }
        store_acc::<R, NV>(&acc, c, c_rs, mask, epi);
    }
}

/// 16 lanes of bf16 pairs as the dot product's operand type.
#[inline(always)]
fn bh(x: __m512i) -> __m512bh {
    // SAFETY: both are 64-byte plain vector types for which every bit pattern is valid; the
    // transmute only relabels the 32 bf16 values.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

/// Packs rows t < `rows` (<= 16) of k-contiguous values (`src + t*ld + p`, p < kc) as pairs:
/// lane t of pair step q at `out[q*out_ld + t]`, for t < `width` (rows past `rows` and an
/// odd last step's partner are zero). With `sums`, adds each row's sum of its f32 values,
/// in k order, to `sums[t]`.
///
/// # Safety
/// The CPU runs this backend; `rows, width <= 16`, `width <= out_ld`; the rows have kc
/// readable values; `out` has ceil(kc / 2) * out_ld writable lanes no one else touches;
/// `sums`, when given, has `rows` values that are the caller's.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_k_contiguous(
    src: *const f32,
    ld: isize,
    rows: usize,
    kc: usize,
    out: *mut u32,
    out_ld: usize,
    width: usize,
    sums: Option<*mut f32>,
) {
    // SAFETY: loads are masked to the rows' kc values (rows t < `rows` only), stores to
    // `width` lanes of pair steps q < ceil(kc / 2), the sums to `rows` values: all inside
    // the contract's ranges.
    unsafe {
        let store = lane_mask(width);
        let mut p = 0;
        while p < kc {
            let cnt = (kc - p).min(32);
            let (m0, m1) = (lane_mask(cnt.min(16)), lane_mask(cnt.saturating_sub(16)));
            let mut v = [_mm512_setzero_si512(); 16];
            for (t, x) in v.iter_mut().enumerate().take(rows) {
                let row = src.offset(t as isize * ld).add(p);
                // Each of the up to 16 rows is a stream of its own; the hardware keeps too
                // few of them running ahead, so fetch this row's two lines of the block
                // after next.
                prefetch_step(row, 1, ROW_AHEAD);
                prefetch_step(row, 1, ROW_AHEAD + 16);
                let lo = _mm512_maskz_loadu_ps(m0, row);
                let hi = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
                *x = cvt_pair(lo, hi);
                if let Some(s) = sums {
                    let vals = std::mem::transmute::<[__m512; 2], [f32; 32]>([lo, hi]);
                    let mut acc = *s.add(t);
                    for x in &vals[..cnt] {
                        acc += x;
                    }
                    *s.add(t) = acc;
                }
            }
            transpose16(&mut v);
            for (q, x) in v.iter().enumerate().take(cnt.div_ceil(2)) {
                _mm512_mask_storeu_epi32(out.add((p / 2 + q) * out_ld) as *mut _, store, *x);
            }
            p += 32;
        }
    }
}

/// Packs `lanes` (<= 16) lane-contiguous columns (`src + p*k_stride + t`, p < kc) as pairs:
/// lane t of pair step q at `out[q*out_ld + t]`, for t < `width` (lanes past `lanes` and an
/// odd last step's partner are zero). With `sums`, adds each lane's sum over k, in k
/// order, to `sums[t]`.
///
/// # Safety
/// As [`pack_k_contiguous`], with lane t of k step p readable at `src + p*k_stride + t`
/// for t < `lanes`, p < kc; `sums`, when given, has `lanes` values that are the caller's.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_lanes_contiguous(
    src: *const f32,
    k_stride: isize,
    lanes: usize,
    kc: usize,
    out: *mut u32,
    out_ld: usize,
    width: usize,
    sums: Option<*mut f32>,
) {
    // SAFETY: loads are masked to `lanes` lanes of k steps p < kc, stores to `width` lanes
    // of pair steps q < ceil(kc / 2), the sums to `lanes` values.
    unsafe {
        let (load, store) = (lane_mask(lanes), lane_mask(width));
        let perm = interleave_idx();
        let mut acc = _mm512_setzero_ps();
        for q in 0..kc.div_ceil(2) {
            let row = src.wrapping_offset(2 * q as isize * k_stride);
            prefetch_step(row, k_stride, PACK_AHEAD);
            prefetch_step(row, k_stride, PACK_AHEAD + 1);
            let even = _mm512_maskz_loadu_ps(load, src.offset(2 * q as isize * k_stride));
            let odd = if 2 * q + 1 < kc {
                _mm512_maskz_loadu_ps(load, src.offset((2 * q + 1) as isize * k_stride))
            } else {
                _mm512_setzero_ps()
            };
            let pairs = _mm512_permutexvar_epi16(perm, cvt_pair(even, odd));
            _mm512_mask_storeu_epi32(out.add(q * out_ld) as *mut _, store, pairs);
            if sums.is_some() {
                acc = _mm512_add_ps(_mm512_add_ps(acc, even), odd);
            }
        }
        if let Some(s) = sums {
            _mm512_mask_storeu_ps(s, load, _mm512_add_ps(_mm512_maskz_loadu_ps(load, s), acc));
        }
    }
}

/// [`pack_lanes_contiguous`] for a [`LaneBlock`] (any number of lanes, panels of 14 or
/// 32): lanes p*width.. of pair step q at `out[p * kc * width + q * width ..]` as u32
/// pairs (a panel's ceil(kc / 2) * width pair slots within its kc * width f32 slots), the
/// last panel zero padded. Walks each pair of k rows across up to 128 lanes (eight
/// vectors) at a time, so the source streams row after row instead of one panel's narrow
/// column at a time. The values, and the sums (each lane's, in k order, added to
/// `sums[t]` at the end), are those of the panel packer.
///
/// # Safety
/// The CPU runs this backend; `block.width` is 14 or 32; `block` satisfies
/// [`LaneBlock`]'s contract.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_lanes_panels(block: &LaneBlock) {
    let LaneBlock {
        src,
        k_stride,
        lanes,
        kc,
        width,
        sums,
        ..
    } = *block;
    let out = block.out.cast::<u32>();
    let panel_len = kc * width;
    // SAFETY: loads are masked to lanes t < `lanes` of k steps p < kc; stores go to the
    // `width` lanes of pair steps q < ceil(kc / 2) of the panels; prefetches never fault;
    // the sums are read and written for lanes t < `lanes` only.
    unsafe {
        let perm = interleave_idx();
        for pass in lane_passes(lanes, width, panel_len) {
            let mut acc = [_mm512_setzero_ps(); PASS_VECS];
            for q in 0..kc.div_ceil(2) {
                let even_row = src.wrapping_offset(2 * q as isize * k_stride);
                let odd_row = even_row.wrapping_offset(k_stride);
                let has_odd = 2 * q + 1 < kc;
                for off in (0..pass.span).step_by(16) {
                    let at = even_row.wrapping_add(pass.first[0] + off);
                    prefetch_step(at, k_stride, PACK_AHEAD);
                    prefetch_step(at, k_stride, PACK_AHEAD + 1);
                }
                for (v, a) in acc.iter_mut().enumerate().take(pass.nvec) {
                    let (load, first) = (pass.load[v], pass.first[v]);
                    let even = _mm512_maskz_loadu_ps(load, even_row.wrapping_add(first));
                    let odd = if has_odd {
                        _mm512_maskz_loadu_ps(load, odd_row.wrapping_add(first))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let pairs = _mm512_permutexvar_epi16(perm, cvt_pair(even, odd));
                    let to = out.add(pass.dst[v] + q * width) as *mut _;
                    _mm512_mask_storeu_epi32(to, pass.store[v], pairs);
                    if sums.is_some() {
                        *a = _mm512_add_ps(_mm512_add_ps(*a, even), odd);
                    }
                }
            }
            if let Some(s) = sums {
                add_lane_sums(s, &pass, &acc);
            }
        }
    }
}

/// Element by element for operands with no unit stride: lane t of pair step q holds k
/// steps 2q and 2q + 1 of `src + p*k_stride + t*t_stride` for t < `valid`, zeros elsewhere
/// up to `width`; with `sums`, each lane's f32 sum in k order.
///
/// # Safety
/// `src` covers kc k steps of `valid` lanes at those strides; `out` has
/// ceil(kc / 2) * `width` writable lanes no one else touches; `sums`, when given, has
/// `valid` values that are the caller's.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_strided(
    src: *const f32,
    k_stride: isize,
    t_stride: isize,
    kc: usize,
    valid: usize,
    width: usize,
    out: *mut u32,
    sums: Option<*mut f32>,
) {
    // SAFETY: reads only for t < valid and p < kc, writes inside out's
    // ceil(kc / 2) * width lanes and the `valid` sums (the contract).
    unsafe {
        let at = |p: usize, t: usize| *src.offset(p as isize * k_stride + t as isize * t_stride);
        for q in 0..kc.div_ceil(2) {
            for t in 0..width {
                let mut pair = 0u32;
                if t < valid {
                    pair = super::amx::bf16_bits(at(2 * q, t)) as u32;
                    if 2 * q + 1 < kc {
                        pair |= (super::amx::bf16_bits(at(2 * q + 1, t)) as u32) << 16;
                    }
                }
                *out.add(q * width + t) = pair;
            }
        }
        if let Some(s) = sums {
            for t in 0..valid {
                let mut acc = *s.add(t);
                for p in 0..kc {
                    acc += at(p, t);
                }
                *s.add(t) = acc;
            }
        }
    }
}

/// Rows i0..i1 of the n == 1 product (bf16-rounded inputs, f32 sums), with the epilogue.
///
/// # Safety
/// As [`Backend::gemv_rows`] (the CPU runs this backend).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn gemv_rows(pr: &Prob, i0: usize, i1: usize) {
    // SAFETY: A is read at rows i0..i1 and k < pr.k (the vector loads masked to the row's
    // remaining values), B at its k values of column 0, dst (with bias and mask) at rows
    // i0..i1 of column 0, which are this call's (the contract).
    unsafe {
        let k = pr.k;
        for i in i0..i1 {
            let s = if pr.acs == 1 && pr.brs == 1 {
                let row = pr.a.offset(i as isize * pr.ars);
                let mut acc = _mm512_setzero_ps();
                let mut p = 0;
                while p < k {
                    let cnt = (k - p).min(32);
                    let (m0, m1) = (lane_mask(cnt.min(16)), lane_mask(cnt.saturating_sub(16)));
                    let load = |x: *const f32| {
                        cvt_pair(
                            _mm512_maskz_loadu_ps(m0, x.add(p)),
                            _mm512_maskz_loadu_ps(m1, x.wrapping_add(p + 16)),
                        )
                    };
                    acc = _mm512_dpbf16_ps(acc, bh(load(row)), bh(load(pr.b)));
                    p += 32;
                }
                _mm512_reduce_add_ps(acc)
            } else {
                let mut s = 0f32;
                for p in 0..k {
                    let x = *pr.a.offset(i as isize * pr.ars + p as isize * pr.acs);
                    let y = *pr.b.offset(p as isize * pr.brs);
                    s += super::amx::bf16_round(x) * super::amx::bf16_round(y);
                }
                s
            };
            let c = pr.dst.offset(i as isize * pr.drs);
            let v = if pr.acc { *c + s } else { s };
            *c = epilogue_value(pr, i, 0, v);
        }
    }
}

/// `dst (+)= bf16(a) bf16(b)` with the epilogue, on this backend; false (and nothing done)
/// when the CPU cannot run it.
///
/// # Safety
/// As [`super::f32::gemm_f32`]: every pointer valid for the ranges m, n, k and the strides
/// imply, dst and `a_sums` overlapping nothing else, distinct (i, j) at distinct dst
/// elements, nothing else touching dst or `a_sums` during the call.
pub(crate) unsafe fn gemm(problem: &Problem, threads: usize) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: the CPU runs this backend (checked above); the problem is valid by this
    // function's contract, which is `frame::run`'s.
    unsafe { run::<Avx512Bf16>(&Prob::new(problem), threads) };
    true
}
