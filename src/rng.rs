//! SplitMix64 (Steele, Lea, Flood 2014), the one random generator of plec:
//! parameter initialization, dropout masks, shuffling and synthetic data.
//!
//! Written out rather than taken from `rand::rngs::StdRng`, whose algorithm
//! may change between rand versions: its output is fixed by its definition,
//! so the same seed gives the same plan, dropout masks, shuffle and
//! synthetic files on every platform and in every plec build (the
//! `fixed_outputs` test pins it). 64-bit state, passes BigCrush, and any
//! seed (0 included) is fine.

use rand::RngCore;

/// The golden-ratio increment of the state.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64: a counter (`state`) advanced by `GOLDEN` and mixed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from several words (e.g. seed, epoch, stream id),
    /// mixed so that nearby inputs give unrelated streams.
    pub fn from_words(words: &[u64]) -> Self {
        let mut state = 0x5851_f42d_4c95_7f2d_u64;
        for &w in words {
            state = mix64(state ^ w.wrapping_mul(GOLDEN));
        }
        Self { state }
    }

    /// A generator for one purpose derived from a base seed and a few
    /// integers (step, op index...), so that streams do not overlap.
    pub fn derive(seed: u64, parts: &[u64]) -> Self {
        let mut s = Self::new(seed);
        let mut h = s.next_u64();
        for &p in parts {
            let mut t = Self::new(h ^ p.wrapping_mul(GOLDEN));
            h = t.next_u64();
        }
        Self::new(h)
    }

    /// The current state: the next output is the mix of
    /// `state + GOLDEN` and the `k`-th of `state + k * GOLDEN`, which is
    /// what lets a device compute element `k` of a stream on its own.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// Advances the stream by `n` outputs without computing them.
    pub fn skip(&mut self, n: u64) {
        self.state = self.state.wrapping_add(n.wrapping_mul(GOLDEN));
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; bias below 2^-32 for
    /// the sizes used here).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal by the Box-Muller transform (one value per call; the
    /// second value of the pair is dropped to keep the stream simple).
    #[inline]
    pub fn next_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// SplitMix64's output function: a strong 64-bit mixer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (SplitMix64::next_u64(self) >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        SplitMix64::next_u64(self)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let b = SplitMix64::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outputs are part of plec's file formats (initial parameters,
    /// synthetic data, shuffles): they must never change.
    // Computed independently (a Python transcription of the definition).
    const FROM_WORDS_1_2: u64 = 0xaf20_f08c_ac3f_8f10;
    const DERIVE_1_2_3: u64 = 0x6db8_6f93_9843_b35b;
    const NEXT_F64_7: u64 = 0x3fd8_f2f8_7916_4c82;
    const NEXT_NORMAL_7: u64 = 0x3fc3_1f1a_f87a_ba17;
    const BELOW_7: usize = 582;
    const SHUFFLE_3: [u32; 8] = [2, 5, 1, 6, 7, 3, 4, 0];

    #[test]
    fn fixed_outputs() {
        let mut r = SplitMix64::new(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        // The published SplitMix64 reference outputs for seed 0.
        assert_eq!(
            first,
            [
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
        assert_eq!(SplitMix64::from_words(&[1, 2]).next_u64(), FROM_WORDS_1_2);
        assert_eq!(SplitMix64::derive(1, &[2, 3]).next_u64(), DERIVE_1_2_3);
        let mut u = SplitMix64::new(7);
        assert_eq!(u.next_f64().to_bits(), NEXT_F64_7);
        assert_eq!(u.next_normal().to_bits(), NEXT_NORMAL_7);
        assert_eq!(u.below(1000), BELOW_7);
        let mut v: Vec<u32> = (0..8).collect();
        SplitMix64::new(3).shuffle(&mut v);
        assert_eq!(v, SHUFFLE_3);
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let mut r = SplitMix64::new(7);
        let b: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(
            SplitMix64::derive(1, &[2, 3]).next_u64(),
            SplitMix64::derive(1, &[3, 2]).next_u64()
        );
    }

    #[test]
    fn skip_matches_drawing() {
        let mut a = SplitMix64::derive(9, &[4, 2]);
        let mut b = a.clone();
        for _ in 0..1000 {
            a.next_u64();
        }
        b.skip(1000);
        assert_eq!(a.state(), b.state());
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn normal_moments() {
        let mut r = SplitMix64::new(42);
        let n = 20000;
        let xs: Vec<f64> = (0..n).map(|_| r.next_normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
