//! A small deterministic random generator for initialization and dropout.
//!
//! SplitMix64 is used instead of `rand`'s `StdRng` because its output is
//! fixed by its definition: the same seed gives the same embedding tables
//! and dropout masks on every platform and every version of plec, which is
//! what "same plan, data and seed give the same numbers" needs.

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one purpose derived from a base seed and a few
    /// integers (step, op index...), so that streams do not overlap.
    pub fn derive(seed: u64, parts: &[u64]) -> Self {
        let mut s = Self::new(seed);
        let mut h = s.next_u64();
        for &p in parts {
            let mut t = Self::new(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15));
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
        self.state = self
            .state
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal by the Box-Muller transform (one value per call; the
    /// second value of the pair is dropped to keep the stream simple).
    pub fn next_normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
