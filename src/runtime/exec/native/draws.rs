//! The random draws of a training pass (dropout masks, variational
//! dropout's noise) for the rows a pass runs, when those rows are part of a
//! larger batch (`runtime::row_parallel` trains a batch's rows side by
//! side, one chunk per thread).
//!
//! Each op draws one number per element of its input over the whole batch,
//! in row-major order, from a stream fixed by `(seed, step, op)`: the candle
//! path's masks, bit for bit. SplitMix64 is a counter, so a chunk starts
//! its part of the stream where it lies without drawing what comes before,
//! and the chunks of a batch draw together exactly what one pass draws.

use crate::rng::SplitMix64;

/// Which rows of a batch a pass runs: `first .. first + rows` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowSpan {
    pub first: usize,
    pub total: usize,
}

/// A value's shape around its batch axis: `outer` blocks (the product of
/// the axes before it), the pass's `rows`, `inner` elements per row (the
/// product of the axes after it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub outer: usize,
    pub rows: usize,
    pub inner: usize,
}

impl Layout {
    /// The layout of internal dims `dims` with the batch along `axis`.
    pub(super) fn of(dims: [usize; 3], axis: usize) -> Self {
        let axis = axis.min(2);
        Self {
            outer: dims[..axis].iter().product(),
            rows: dims[axis],
            inner: dims[axis + 1..].iter().product(),
        }
    }
}

/// `f` of each draw of `rng`'s stream that falls on the pass's rows
/// (`span`) of a value laid out as `layout` over the whole batch, in the
/// order the pass stores them (row-major over its own rows).
pub(super) fn draws<T>(
    rng: &SplitMix64,
    layout: Layout,
    span: RowSpan,
    mut f: impl FnMut(f64) -> T,
) -> Vec<T> {
    let Layout { outer, rows, inner } = layout;
    let mut out = Vec::with_capacity(outer * rows * inner);
    for o in 0..outer {
        let mut r = rng.clone();
        r.skip(((o * span.total + span.first) * inner) as u64);
        out.extend((0..rows * inner).map(|_| f(r.next_f64())));
    }
    out
}

/// The noise of op `op` in training step `step` (the candle path's stream).
pub(super) fn op_stream(seed: u64, step: u64, op: usize) -> SplitMix64 {
    SplitMix64::derive(seed, &[step, op as u64])
}

/// A dropout keep mask of op `op` in training step `step` over the pass's
/// rows: 1 where the draw is at least `ratio`.
pub(super) fn keep_mask(
    (seed, step, op): (u64, u64, usize),
    layout: Layout,
    span: RowSpan,
    ratio: f32,
) -> Vec<u8> {
    draws(&op_stream(seed, step, op), layout, span, |u| {
        u8::from(u >= f64::from(ratio))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks of a batch, drawn on their own, give the whole batch's
    /// stream in the batch's order, whatever axis the batch lies along.
    #[test]
    fn chunks_draw_what_one_pass_draws() {
        let rng = SplitMix64::derive(7, &[3, 11]);
        for (dims, axis) in [([1, 10, 4], 1), ([3, 10, 4], 1), ([10, 5, 2], 0)] {
            let whole = draws(&rng, Layout::of(dims, axis), span(0, 10), |u| u);
            let mut straight = rng.clone();
            let expect: Vec<f64> = (0..whole.len()).map(|_| straight.next_f64()).collect();
            assert_eq!(whole, expect, "one pass is the plain stream");
            let mut parts = vec![Vec::new(); dims[..axis].iter().product()];
            for (first, rows) in [(0, 3), (3, 6), (9, 1)] {
                let mut d = dims;
                d[axis] = rows;
                let l = Layout::of(d, axis);
                let got = draws(&rng, l, span(first, 10), |u| u);
                for (o, p) in parts.iter_mut().enumerate() {
                    p.extend_from_slice(&got[o * rows * l.inner..(o + 1) * rows * l.inner]);
                }
            }
            assert_eq!(parts.concat(), whole, "dims {dims:?}, batch axis {axis}");
        }
    }

    fn span(first: usize, total: usize) -> RowSpan {
        RowSpan { first, total }
    }
}
