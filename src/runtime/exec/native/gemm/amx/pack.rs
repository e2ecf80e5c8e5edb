//! Packing for the AMX kernel: A and B rounded to bf16 into the 64-byte
//! lines tile loads read (A: 16 rows x 32 bf16 per tile; B: VNNI pairs,
//! 16 k-pairs x 16 columns), zero-padded so the kernel never sees a
//! partial tile. Also the packed layout's constants, shared with `kernel`.
//!
// Interior 16x32 tiles with a unit stride on either axis take AVX512-BF16 fast paths
// (vcvtne2ps2bf16 rounds to nearest even like `bf16_bits`; it also flushes denormals,
// which tdpbf16ps would do anyway). Edge tiles and general strides use the scalar path.

use std::arch::x86_64::*;

use super::super::vnni::{cvt_pair, interleave_idx, transpose16};
use super::bf16_bits;

/// One tile row: 64 bytes = 32 bf16 (A) or 16 bf16 pairs (B). 64-byte aligned so tile
/// loads never split cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line([u16; 32]);

pub(super) const ZERO_LINE: Line = Line([0; 32]);

/// k elements consumed per tdpbf16ps (one 64-byte A row).
pub(super) const KSTEP: usize = 32;
/// Rows of A / columns of B handled by one microkernel call (two 16-row tiles each).
pub(super) const PANEL: usize = 32;
/// Lines per k-step of a packed panel: 2 tiles x 16 rows.
pub(super) const LINES_PER_STEP: usize = 32;
/// Byte offset between the two 16-row tiles of one k-step inside a panel.
pub(super) const HALF_BYTES: usize = 16 * 64;
/// Byte advance per k-step inside a panel.
pub(super) const STEP_BYTES: usize = LINES_PER_STEP * 64;

pub(super) struct Shape {
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    /// Number of 32-wide k steps (k rounded up).
    pub(super) ks: usize,
}

impl Shape {
    pub(super) fn panel_lines(&self) -> usize {
        self.ks * LINES_PER_STEP
    }
}

/// 32 consecutive f32 (16 at `lo`, 16 at `hi`) -> 32 bf16 (`cvt_pair` of loads).
///
/// # Safety
/// The CPU has AVX-512F/BW/BF16; `lo` and `hi` each point at 16 readable f32 (any
/// alignment).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn cvt32(lo: *const f32, hi: *const f32) -> __m512i {
    // SAFETY: two unaligned 16-float loads inside the ranges of the contract; `cvt_pair`
    // needs only the CPU features this function has.
    unsafe { cvt_pair(_mm512_loadu_ps(lo), _mm512_loadu_ps(hi)) }
}

/// Stores `v[r]` into line r of `tile`, for the first min(16, tile.len()) lines.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile(tile: &mut [Line], v: &[__m512i; 16]) {
    // SAFETY: each store writes one whole `Line`, 64 bytes and 64-byte aligned (its type's
    // alignment), through a `&mut` to it.
    unsafe {
        for (line, x) in tile.iter_mut().zip(v) {
            _mm512_store_si512(line.0.as_mut_ptr() as *mut _, *x);
        }
    }
}

/// Pack the 16x32 A tile at rows r0.., k k0.. as 16 lines of 32 bf16 (row-major);
/// rows >= m and k >= sh.k are zero. With a non-null `sums` (A's row sums at row r0),
/// also adds each of the tile's rows' sum of its f32 values, in k order, from the loads
/// the packing makes anyway.
///
/// # Safety
/// The CPU has AVX-512F/BW/BF16; `a` covers its strided `sh.m x sh.k` range (element
/// (i, p) at `a + i*rs + p*cs`); `sums` is null or points at the sums of rows
/// r0..min(r0 + 16, m) (row r0 + r at `sums + r`), which no one else accesses during the
/// call. Only the first 16 lines of `tile` are written (fewer if it is shorter).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_a_tile(
    tile: &mut [Line],
    sh: &Shape,
    r0: usize,
    k0: usize,
    a: *const f32,
    rs: isize,
    cs: isize,
    sums: *mut f32,
) {
    // SAFETY: the contract above. A full tile (r0 + 16 <= m, k0 + 32 <= k) reads rows
    // r0..r0+16 at k0..k0+32, as two 16-float rows per row (cs == 1) or two 16-row columns
    // per k pair (rs == 1), and its sums are its 16 rows; otherwise only elements with
    // row < m and k < sh.k are read, and only rows < m of `sums` written. The aligned stores
    // write whole 64-byte aligned `Line`s.
    unsafe {
        let full = r0 + 16 <= sh.m && k0 + KSTEP <= sh.k;
        if full && cs == 1 {
            for (r, line) in tile.iter_mut().enumerate() {
                let src = a.offset((r0 + r) as isize * rs + k0 as isize);
                let (lo, hi) = (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)));
                _mm512_store_si512(line.0.as_mut_ptr() as *mut _, cvt_pair(lo, hi));
                if !sums.is_null() {
                    let mut s = *sums.add(r);
                    for x in std::mem::transmute::<[__m512; 2], [f32; 32]>([lo, hi]) {
                        s += x;
                    }
                    *sums.add(r) = s;
                }
            }
        } else if full && rs == 1 {
            // Column-major A: v[q] holds rows 0..15 of the k pair (2q, 2q+1) as 32-bit
            // pairs; transposing gives one 32-bf16 row per line.
            let perm = interleave_idx();
            let mut v = [_mm512_setzero_si512(); 16];
            let mut acc = _mm512_setzero_ps();
            for (q, x) in v.iter_mut().enumerate() {
                let c0 = a.offset((k0 + 2 * q) as isize * cs + r0 as isize);
                let (even, odd) = (_mm512_loadu_ps(c0), _mm512_loadu_ps(c0.offset(cs)));
                *x = _mm512_permutexvar_epi16(perm, cvt_pair(even, odd));
                acc = _mm512_add_ps(_mm512_add_ps(acc, even), odd);
            }
            transpose16(&mut v);
            store_tile(tile, &v);
            if !sums.is_null() {
                _mm512_storeu_ps(sums, _mm512_add_ps(_mm512_loadu_ps(sums), acc));
            }
        } else {
            for (r, line) in tile.iter_mut().enumerate() {
                let row = r0 + r;
                let mut s = 0f32;
                for e in 0..32 {
                    let kk = k0 + e;
                    line.0[e] = if row < sh.m && kk < sh.k {
                        let x = *a.offset(row as isize * rs + kk as isize * cs);
                        s += x;
                        bf16_bits(x)
                    } else {
                        0
                    };
                }
                if !sums.is_null() && row < sh.m {
                    *sums.add(r) += s;
                }
            }
        }
    }
}

/// Pack A panels ip0..ip1 (32 rows each), k steps s0..s1, into `out` as
/// [panel (stride `apl` lines)][k-step][half][16 rows][32 bf16]; with a non-null `sums`
/// (m values), add the block's row sums to it.
///
/// # Safety
/// The CPU has AVX-512F/BW/BF16; `a` covers its strided `sh.m x sh.k` range; `sums` is
/// null or has `sh.m` values whose rows in panels ip0..ip1 no one else accesses during the
/// call. (`out` is indexed with bounds checks: a short one panics.)
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_a_block(
    out: &mut [Line],
    apl: usize,
    sh: &Shape,
    ip0: usize,
    ip1: usize,
    s0: usize,
    s1: usize,
    a: *const f32,
    rs: isize,
    cs: isize,
    sums: *mut f32,
) {
    // SAFETY: `sums.add(r0)` only for r0 < m, so the pointer stays inside the m values, and
    // `pack_a_tile` then gets the sums of its rows r0..min(r0 + 16, m), which are in this
    // call's panels; its other requirements (CPU features, `a`'s range) are this
    // function's own.
    unsafe {
        let mut one = |ip: usize, s: usize, half: usize| {
            let at = (ip - ip0) * apl + (s - s0) * LINES_PER_STEP + half * 16;
            let r0 = ip * PANEL + half * 16;
            // Rows past m are padding: a full tile's sums go in 16 at a time, so only a tile
            // inside m gets the pointer (partial tiles sum row by row, checking m).
            let tile_sums = if sums.is_null() || r0 >= sh.m {
                std::ptr::null_mut()
            } else {
                sums.add(r0)
            };
            pack_a_tile(
                &mut out[at..at + 16],
                sh,
                r0,
                s * KSTEP,
                a,
                rs,
                cs,
                tile_sums,
            );
        };
        // Walk the source along its contiguous axis: k-contiguous rows panel by panel,
        // otherwise k-step by k-step across all panels (touching 32 source rows at a time
        // instead of hopping over hundreds of pages per tile).
        if cs == 1 {
            for ip in ip0..ip1 {
                for s in s0..s1 {
                    one(ip, s, 0);
                    one(ip, s, 1);
                }
            }
        } else {
            for s in s0..s1 {
                for ip in ip0..ip1 {
                    one(ip, s, 0);
                    one(ip, s, 1);
                }
            }
        }
    }
}

/// Pack the B tile at columns c0..c0+16, k k0..k0+32 in VNNI form: 16 lines of
/// [16 cols][2 bf16 (k, k+1)]; cols >= n and k >= sh.k are zero.
///
/// # Safety
/// The CPU has AVX-512F/BW/BF16; `b` covers its strided `sh.k x sh.n` range (element
/// (p, j) at `b + p*rs + j*cs`). Only the first 16 lines of `tile` are written (fewer if it
/// is shorter).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack_b_tile(
    tile: &mut [Line],
    sh: &Shape,
    c0: usize,
    k0: usize,
    b: *const f32,
    rs: isize,
    cs: isize,
) {
    // SAFETY: the contract above. A full tile (c0 + 16 <= n, k0 + 32 <= k) reads columns
    // c0..c0+16 at k0..k0+32, as 16-float row pieces (cs == 1) or two 16-float halves of
    // each column (rs == 1); otherwise only elements with col < n and k < sh.k are read.
    // The aligned stores write whole 64-byte aligned `Line`s.
    unsafe {
        let full = c0 + 16 <= sh.n && k0 + KSTEP <= sh.k;
        if full && cs == 1 {
            let perm = interleave_idx();
            for (p, line) in tile.iter_mut().enumerate() {
                let r0 = b.offset((k0 + 2 * p) as isize * rs + c0 as isize);
                let x = _mm512_permutexvar_epi16(perm, cvt32(r0, r0.offset(rs)));
                _mm512_store_si512(line.0.as_mut_ptr() as *mut _, x);
            }
        } else if full && rs == 1 {
            // k-contiguous columns (B given transposed): v[c] holds column c's 32 k values,
            // i.e. its 16 (k, k+1) pairs; transposing gives one pair-row per line.
            let mut v = [_mm512_setzero_si512(); 16];
            for (c, x) in v.iter_mut().enumerate() {
                let src = b.offset((c0 + c) as isize * cs + k0 as isize);
                *x = cvt32(src, src.add(16));
            }
            transpose16(&mut v);
            store_tile(tile, &v);
        } else {
            for (p, line) in tile.iter_mut().enumerate() {
                for c in 0..16 {
                    let col = c0 + c;
                    for t in 0..2 {
                        let kk = k0 + 2 * p + t;
                        line.0[2 * c + t] = if col < sh.n && kk < sh.k {
                            bf16_bits(*b.offset(kk as isize * rs + col as isize * cs))
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}
