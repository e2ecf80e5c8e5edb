//! Deterministic parameter initialization: every parameter's numbers come
//! from the compile seed and its name alone, so a rewrite that concatenates
//! or stacks parameters (fusion) produces exactly the same numbers.

use super::graph::{Init, ParamSpec};

/// SplitMix64: tiny, fast and stable across versions (unlike `rand`'s
/// `StdRng`, whose stream may change between releases).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// FNV-1a of a name, mixed with the seed: the per-parameter stream seed.
pub fn name_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut m = SplitMix64::new(seed ^ h);
    m.next_u64()
}

/// The initial values of a parameter, row-major.
pub fn materialize(spec: &ParamSpec, seed: u64) -> Vec<f32> {
    let n = spec.numel() as usize;
    match &spec.init {
        Init::Constant(v) => vec![*v; n],
        Init::Uniform { bound } => {
            let mut rng = SplitMix64::new(name_seed(seed, &spec.name));
            (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * *bound as f64) as f32)
                .collect()
        }
        Init::Concat(parts) => {
            let mut out = Vec::with_capacity(n);
            for p in parts {
                out.extend(materialize(p, seed));
            }
            out
        }
    }
}

/// Little-endian f32 bytes.
pub fn to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads little-endian f32 bytes (a trailing partial value is ignored).
pub fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
