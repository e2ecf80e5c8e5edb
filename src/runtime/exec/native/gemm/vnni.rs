//! bf16 pairs in 32-bit lanes, the operand form of the AVX512-BF16 and
//! AMX-BF16 dot products (`vdpbf16ps`, `tdpbf16ps`: each 32-bit lane holds
//! two bf16 values, the even k in the low half), and the register
//! shuffles both kernels' packers build them with.

use std::arch::x86_64::*;

/// 32 f32 (`lo`, then `hi`) rounded to nearest-even bf16 (denormals flushed), `lo` in the
/// low half: read as 32-bit lanes, lane q holds k = 2q (low) and 2q + 1 (high).
///
/// # Safety
/// The CPU has AVX-512F/BW/BF16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn cvt_pair(lo: __m512, hi: __m512) -> __m512i {
    // SAFETY: `__m512bh` and `__m512i` are both 64-byte plain vector types for which every
    // bit pattern is valid, so the transmute only relabels the 32 bf16 values.
    unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo)) }
}

/// Word permutation turning [x0..x15 | y0..y15] into [x0 y0 x1 y1 ...], i.e. VNNI pairs.
///
/// # Safety
/// The CPU has AVX-512F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn interleave_idx() -> __m512i {
    const IDX: [u16; 32] = {
        let mut t = [0u16; 32];
        let mut c = 0;
        while c < 16 {
            t[2 * c] = c as u16;
            t[2 * c + 1] = 16 + c as u16;
            c += 1;
        }
        t
    };
    // SAFETY: an unaligned 64-byte load of IDX, which is 32 u16 = 64 bytes.
    unsafe { _mm512_loadu_si512(IDX.as_ptr() as *const _) }
}

/// In-register transpose of a 16x16 matrix of 32-bit elements (v[i] = row i).
///
/// # Safety
/// The CPU has AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(v: &mut [__m512i; 16]) {
    // 32-bit interleave of row pairs, then 64-bit: b[4i + c] lane L = rows 4i..4i+3,
    // column 4L + c.
    let mut a = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    let mut b = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    // Gather lane L of b[c], b[4+c], b[8+c], b[12+c] into output row 4L + c.
    for c in 0..4 {
        let e0 = _mm512_shuffle_i32x4::<0x44>(b[c], b[4 + c]);
        let e1 = _mm512_shuffle_i32x4::<0xEE>(b[c], b[4 + c]);
        let f0 = _mm512_shuffle_i32x4::<0x44>(b[8 + c], b[12 + c]);
        let f1 = _mm512_shuffle_i32x4::<0xEE>(b[8 + c], b[12 + c]);
        v[c] = _mm512_shuffle_i32x4::<0x88>(e0, f0);
        v[4 + c] = _mm512_shuffle_i32x4::<0xDD>(e0, f0);
        v[8 + c] = _mm512_shuffle_i32x4::<0x88>(e1, f1);
        v[12 + c] = _mm512_shuffle_i32x4::<0xDD>(e1, f1);
    }
}
