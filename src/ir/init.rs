//! Deterministic parameter initialization: every parameter's numbers come
//! from the compile seed and its name alone, so a rewrite that concatenates
//! or stacks parameters (fusion) produces exactly the same numbers.

use super::graph::{Init, ParamSpec};
use crate::rng::SplitMix64;

/// FNV-1a of a name, mixed with the seed: the per-parameter stream seed.
pub(crate) fn name_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut m = SplitMix64::new(seed ^ h);
    m.next_u64()
}

/// The initial values of a parameter, row-major.
pub(crate) fn materialize(spec: &ParamSpec, seed: u64) -> Vec<f32> {
    let n = spec.numel() as usize;
    match &spec.init {
        Init::Constant(v) => vec![*v; n],
        Init::Uniform { bound } => {
            let mut rng = SplitMix64::new(name_seed(seed, &spec.name));
            (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * *bound as f64) as f32)
                .collect()
        }
        Init::Normal => {
            let mut rng = SplitMix64::new(name_seed(seed, &spec.name));
            (0..n).map(|_| rng.next_normal() as f32).collect()
        }
        Init::Orthogonal => {
            let mut rng = SplitMix64::new(name_seed(seed, &spec.name));
            let rows = spec.shape.first().copied().unwrap_or(0) as usize;
            let cols = n / rows.max(1);
            let normal: Vec<f64> = (0..rows * cols).map(|_| rng.next_normal()).collect();
            orthonormal_columns(&normal, rows, cols)
                .into_iter()
                .map(|v| v as f32)
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

/// The Q of the QR decomposition of `a` (`rows x cols`, row-major, at
/// least as many rows as columns) with R's diagonal positive, by
/// Gram-Schmidt done twice per column (orthogonal to rounding). A column
/// that vanishes (probability 0 for normal draws) is left zero.
fn orthonormal_columns(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut q = a.to_vec();
    for c in 0..cols {
        for _ in 0..2 {
            for p in 0..c {
                let dot: f64 = (0..rows).map(|i| q[i * cols + p] * q[i * cols + c]).sum();
                for i in 0..rows {
                    q[i * cols + c] -= dot * q[i * cols + p];
                }
            }
        }
        let norm = (0..rows)
            .map(|i| q[i * cols + c] * q[i * cols + c])
            .sum::<f64>()
            .sqrt();
        for i in 0..rows {
            q[i * cols + c] = if norm > 0.0 {
                q[i * cols + c] / norm
            } else {
                0.0
            };
        }
    }
    q
}

/// Little-endian f32 bytes.
pub(crate) fn to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads little-endian f32 bytes (a trailing partial value is ignored).
pub(crate) fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
