//! The native engine's DC2VR intervention (the plan's INTERVENTION) and
//! its gradients: the two orthogonal weights come from their trained
//! matrices each pass (`ir::orthogonal`, small: `[n, r]` with `r < n`),
//! then row kernels compute `t = x Wb - s Ws` and `x + t Wb^T`. The maths
//! is the candle op's, which `runtime::tests::native` holds these kernels
//! to, value and gradient.

use super::kernels::{row, rows_mut};
use super::view::View;
use crate::ir::orthogonal;

/// The weights of one intervention: `Wb` (`[n, r]`) and `Ws` (`[m, r]`).
pub(super) struct Weights {
    pub wb: Vec<f32>,
    pub ws: Vec<f32>,
    pub rank: usize,
}

impl Weights {
    /// From the parameters `[xb, qb, xs, qs]` for widths `n` and `m`.
    pub(super) fn new(ps: [&[f32]; 4], n: usize, m: usize) -> Self {
        let rank = ps[0].len() / n.max(1);
        Weights {
            wb: orthogonal::weight(ps[0], ps[1], n, rank),
            ws: orthogonal::weight(ps[2], ps[3], m, rank),
            rank,
        }
    }

    /// `t = x Wb - s Ws` of one row.
    fn t(&self, x: &[f32], s: &[f32]) -> Vec<f32> {
        let r = self.rank;
        (0..r)
            .map(|k| {
                let a: f32 = x
                    .iter()
                    .enumerate()
                    .map(|(j, v)| v * self.wb[j * r + k])
                    .sum();
                let c: f32 = s
                    .iter()
                    .enumerate()
                    .map(|(j, v)| v * self.ws[j * r + k])
                    .sum();
                a - c
            })
            .collect()
    }

    /// `dt = g Wb` of one row.
    fn dt(&self, g: &[f32]) -> Vec<f32> {
        let r = self.rank;
        (0..r)
            .map(|k| {
                g.iter()
                    .enumerate()
                    .map(|(j, v)| v * self.wb[j * r + k])
                    .sum()
            })
            .collect()
    }
}

/// `y = x + (x Wb - s Ws) Wb^T`, row by row.
pub(super) fn forward(
    y: &mut [f32],
    yv: &View,
    (x, xv): (&[f32], &View),
    (s, sv): (&[f32], &View),
    w: &Weights,
) {
    let r = w.rank;
    rows_mut(y, yv, |b, out| {
        let xr = row(x, xv, b);
        let t = w.t(xr, row(s, sv, b));
        for (j, o) in out.iter_mut().enumerate() {
            *o = xr[j] + (0..r).map(|k| t[k] * w.wb[j * r + k]).sum::<f32>();
        }
    });
}

/// Gradient for `x`: `g + (g Wb) Wb^T` (the source gets none).
pub(super) fn input_grad(
    (dx, dxv, acc): (&mut [f32], &View, bool),
    (g, gv): (&[f32], &View),
    w: &Weights,
) {
    let r = w.rank;
    rows_mut(dx, dxv, |b, out| {
        let gr = row(g, gv, b);
        let dt = w.dt(gr);
        for (j, o) in out.iter_mut().enumerate() {
            let v = gr[j] + (0..r).map(|k| dt[k] * w.wb[j * r + k]).sum::<f32>();
            *o = if acc { *o + v } else { v };
        }
    });
}

/// Gradients for the weights summed over the rows: `dWb = g^T t + x^T
/// dt`, `dWs = -s^T dt` (`[n, r]` and `[m, r]`).
pub(super) fn weight_grads(
    (g, gv): (&[f32], &View),
    (x, xv): (&[f32], &View),
    (s, sv): (&[f32], &View),
    w: &Weights,
) -> (Vec<f32>, Vec<f32>) {
    let (r, n, m) = (w.rank, xv.dims[2], sv.dims[2]);
    let (mut dwb, mut dws) = (vec![0f32; n * r], vec![0f32; m * r]);
    for b in 0..xv.dims[1] {
        let (gr, xr, sr) = (row(g, gv, b), row(x, xv, b), row(s, sv, b));
        let (t, dt) = (w.t(xr, sr), w.dt(gr));
        for j in 0..n {
            for k in 0..r {
                dwb[j * r + k] += gr[j] * t[k] + xr[j] * dt[k];
            }
        }
        for j in 0..m {
            for k in 0..r {
                dws[j * r + k] -= sr[j] * dt[k];
            }
        }
    }
    (dwb, dws)
}
