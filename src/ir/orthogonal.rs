//! torch's orthogonal parametrization of a tall matrix
//! (`torch.nn.utils.parametrizations.orthogonal`, Householder map,
//! trivialized), in plain Rust: the weight the INTERVENTION op of a plan
//! reads from its trained matrix and fixed base, and the gradient of that
//! map. The native engine and the reference evaluator share it; candle
//! composes the same map from tensor ops and differentiates it itself.
//!
//! For `x` `[n, r]` (`n > r`) and `q` `[n, n]`: `v_i` is 1 at row `i`,
//! column `i` of `x` below it and 0 above; `H_i = I - 2 v_i v_i^T / (v_i .
//! v_i)` (torch's `tau = 2 / (1 + |tril(x, -1)[:, i]|^2)`); `D` holds the
//! diagonal of `x` truncated to integers (torch's `.int()`, no gradient);
//! the weight is `q H_0 H_1 .. H_{r-1} E D`, `E` the identity's first `r`
//! columns. Only the strictly lower triangle of `x` is trained: the rest
//! gets no gradient.

/// The reflection vector `v_i` of `x` (`[n, r]`, row-major).
fn reflector(x: &[f32], n: usize, r: usize, i: usize) -> Vec<f64> {
    (0..n)
        .map(|j| match j.cmp(&i) {
            std::cmp::Ordering::Less => 0.0,
            std::cmp::Ordering::Equal => 1.0,
            std::cmp::Ordering::Greater => f64::from(x[j * r + i]),
        })
        .collect()
}

/// `y <- H y` for the reflection through `v` (`y` `[n, r]` row-major).
fn reflect(y: &mut [f64], v: &[f64], r: usize) {
    let c = 2.0 / v.iter().map(|a| a * a).sum::<f64>();
    for k in 0..r {
        let dot: f64 = v.iter().enumerate().map(|(j, a)| a * y[j * r + k]).sum();
        for (j, a) in v.iter().enumerate() {
            y[j * r + k] -= c * a * dot;
        }
    }
}

/// `H_0 .. H_{r-1} E D` (`[n, r]`), before the base.
fn reflected(x: &[f32], n: usize, r: usize) -> Vec<f64> {
    let mut y = vec![0f64; n * r];
    for c in 0..r.min(n) {
        y[c * r + c] = f64::from(x[c * r + c]).trunc();
    }
    for i in (0..r.min(n)).rev() {
        reflect(&mut y, &reflector(x, n, r, i), r);
    }
    y
}

/// The weight `q H_0 .. H_{r-1} E D` (`[n, r]`, row-major).
pub(crate) fn weight(x: &[f32], q: &[f32], n: usize, r: usize) -> Vec<f32> {
    let y = reflected(x, n, r);
    let mut w = vec![0f32; n * r];
    for a in 0..n {
        for k in 0..r {
            let s: f64 = (0..n).map(|j| f64::from(q[a * n + j]) * y[j * r + k]).sum();
            w[a * r + k] = s as f32;
        }
    }
    w
}

/// The gradient for `x` of a loss whose gradient for the weight is `dw`
/// (`[n, r]`): nonzero only below the diagonal.
///
/// With `G` the gradient of the reflected matrix before `H_i` is applied
/// last-to-first and `Z` that reflection's input, `a = Z^T v`, `b = G^T
/// v`, `c = 2 / (v . v)`: `dv = c^2 (a . b) v - c (G a + Z b)`, and `G`
/// moves on as `H_i G` (a reflection is its own inverse, so `Z` does too).
pub(crate) fn weight_grad(x: &[f32], q: &[f32], n: usize, r: usize, dw: &[f32]) -> Vec<f32> {
    // G = q^T dw.
    let mut g = vec![0f64; n * r];
    for j in 0..n {
        for k in 0..r {
            g[j * r + k] = (0..n)
                .map(|a| f64::from(q[a * n + j]) * f64::from(dw[a * r + k]))
                .sum();
        }
    }
    let mut z = reflected(x, n, r);
    let mut dx = vec![0f32; n * r];
    for i in 0..r.min(n) {
        let v = reflector(x, n, r, i);
        // The input of H_i in the forward pass.
        reflect(&mut z, &v, r);
        let c = 2.0 / v.iter().map(|a| a * a).sum::<f64>();
        let col = |m: &[f64], k: usize| -> f64 { (0..n).map(|j| m[j * r + k] * v[j]).sum() };
        let a: Vec<f64> = (0..r).map(|k| col(&z, k)).collect();
        let b: Vec<f64> = (0..r).map(|k| col(&g, k)).collect();
        let ab: f64 = a.iter().zip(&b).map(|(p, q)| p * q).sum();
        for j in i + 1..n {
            let ga: f64 = (0..r).map(|k| g[j * r + k] * a[k]).sum();
            let zb: f64 = (0..r).map(|k| z[j * r + k] * b[k]).sum();
            dx[j * r + i] = (c * c * ab * v[j] - c * (ga + zb)) as f32;
        }
        reflect(&mut g, &v, r);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orthogonal(n: usize) -> Vec<f32> {
        let spec = crate::ir::graph::ParamSpec {
            name: "q".into(),
            shape: vec![n as u64, n as u64],
            init: crate::ir::graph::Init::Orthogonal,
            trainable: false,
            no_decay: true,
        };
        crate::ir::init::materialize(&spec, 7)
    }

    /// At registration (`x` minus the identity) the weight is the base's
    /// first columns; after any change of `x` its columns stay
    /// orthonormal; a diagonal entry between -1 and 1 truncates to 0 and
    /// zeroes its column, as torch's `.int()` does.
    #[test]
    fn starts_at_the_base_and_stays_orthonormal() {
        let (n, r) = (5, 3);
        let q = orthogonal(n);
        let mut x = vec![0f32; n * r];
        for i in 0..r {
            x[i * r + i] = -1.0;
        }
        let w = weight(&x, &q, n, r);
        for a in 0..n {
            for k in 0..r {
                assert!((w[a * r + k] - q[a * n + k]).abs() < 1e-6, "({a}, {k})");
            }
        }
        let noise = [
            0.3f32, -0.7, 0.2, 0.9, -0.4, 0.5, 0.1, -0.2, 0.6, 0.8, -0.3, 0.4, 0.7, -0.6, 0.25,
        ];
        for (v, e) in x.iter_mut().zip(noise) {
            *v += e;
        }
        let w = weight(&x, &q, n, r);
        for k in 0..r {
            for l in 0..r {
                let dot: f32 = (0..n).map(|a| w[a * r + k] * w[a * r + l]).sum();
                let want = if k == l && x[k * r + k].trunc() != 0.0 {
                    1.0
                } else {
                    0.0
                };
                assert!((dot - want).abs() < 1e-5, "columns {k}, {l}: {dot}");
            }
        }
    }

    /// The gradient against central differences of `sum(w * p)`, in the
    /// strictly lower triangle, and zero elsewhere.
    #[test]
    fn gradient_matches_finite_differences() {
        let (n, r) = (6, 3);
        let q = orthogonal(n);
        let mut x: Vec<f32> = (0..n * r)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 9.0)
            .collect();
        for i in 0..r {
            x[i * r + i] = -1.2;
        }
        let p: Vec<f32> = (0..n * r)
            .map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0)
            .collect();
        let loss = |x: &[f32]| -> f64 {
            weight(x, &q, n, r)
                .iter()
                .zip(&p)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum()
        };
        let g = weight_grad(&x, &q, n, r, &p);
        let h = 1e-2f32;
        for j in 0..n {
            for i in 0..r {
                let e = j * r + i;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[e] += h;
                down[e] -= h;
                let fd = (loss(&up) - loss(&down)) / (2.0 * f64::from(h));
                let want = if j > i { fd } else { 0.0 };
                assert!(
                    (f64::from(g[e]) - want).abs() < 2e-3,
                    "({j}, {i}): {} vs {want}",
                    g[e]
                );
            }
        }
    }
}
