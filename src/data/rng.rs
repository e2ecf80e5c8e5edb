//! A small, fully specified random number generator (SplitMix64) for
//! shuffling and synthetic data. Written out here rather than taken from
//! `rand::rngs::StdRng`, whose algorithm may change between rand versions:
//! the same seed must give the same shuffle and the same synthetic files in
//! every plec build.

use rand::RngCore;

/// SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, and
/// any seed (including 0) is fine.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded from several words (e.g. seed, epoch, stream id),
    /// mixed so that nearby inputs give unrelated streams.
    pub fn from_words(words: &[u64]) -> Self {
        let mut state = 0x5851_f42d_4c95_7f2d_u64;
        for &w in words {
            state = mix64(state ^ w.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        SplitMix64 { state }
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 53 bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_word() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (Lemire's multiply-shift; bias below 2^-32 for the
    /// sizes used here).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_word() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box-Muller).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
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
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_word() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.next_word()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let b = self.next_word().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}
