//! The dense parameters' gradients during one backward pass.
//!
//! Most of them (27 MB a step for the PLE example) are the weights of the
//! linear layers, and each such weight's gradient is written, whole, by
//! one multiply. Zeroing it first and adding to it would cost a pass over
//! the memory and a read of it inside the multiply; instead its buffer
//! starts unwritten (capacity only) and the multiply stores into it. Every
//! other gradient (biases, norms, prelu slopes, shared weights) is zeroed
//! and added to.

use std::mem::MaybeUninit;

use super::gemm::SharedDst;
use super::step::Step;
use crate::proto::plan::Plan;
use crate::runtime::params::ParamSlot;

pub(super) struct ParamGrads {
    bufs: Vec<Vec<f32>>,
    /// Per parameter: its buffer starts unwritten, for its one multiply.
    fresh: Vec<bool>,
    sizes: Vec<usize>,
}

impl ParamGrads {
    pub(super) fn new(plan: &Plan, params: &[ParamSlot], steps: &[Step]) -> Self {
        let sizes: Vec<usize> = plan
            .params
            .iter()
            .map(|p| p.shape.iter().product::<u64>() as usize)
            .collect();
        // Writers of each parameter's gradient: weight multiplies, and all
        // other reads of it.
        let mut multiplies = vec![0usize; sizes.len()];
        let mut others = vec![0usize; sizes.len()];
        let count = |v: &mut Vec<usize>, p: usize| {
            if let Some(c) = v.get_mut(p) {
                *c += 1;
            }
        };
        for s in steps {
            match s {
                Step::Linear { w, b, .. } | Step::Batched { w, b, .. } => {
                    count(&mut multiplies, *w);
                    if let Some(b) = b {
                        count(&mut others, *b);
                    }
                }
                Step::Act { slope: Some(s), .. }
                | Step::VarDrop { fp: s, .. }
                | Step::Dice { alpha: s, .. } => count(&mut others, *s),
                Step::Norm { params: ps, .. } => ps.iter().for_each(|&p| count(&mut others, p)),
                _ => {}
            }
        }
        let mut fresh = vec![false; sizes.len()];
        let bufs = params
            .iter()
            .enumerate()
            .map(|(p, slot)| match slot {
                ParamSlot::Trainable(_) if multiplies[p] == 1 && others[p] == 0 => {
                    fresh[p] = true;
                    Vec::with_capacity(sizes[p])
                }
                ParamSlot::Trainable(_) => zeros(sizes[p]),
                ParamSlot::Buffer(_) => Vec::new(),
            })
            .collect();
        Self { bufs, fresh, sizes }
    }

    /// Where weight `w`'s multiply writes its gradient (`n` values), and
    /// whether it adds to what is there. None when `w` is not trained.
    /// After the multiply has written all of it, call `stored`.
    pub(super) fn weight(&mut self, w: usize, n: usize) -> Option<(SharedDst, bool)> {
        let g = self.bufs.get_mut(w)?;
        if self.fresh[w] {
            // Only a write of the whole parameter makes it readable.
            (n == self.sizes[w] && g.is_empty()).then(|| {
                (
                    SharedDst::unwritten(&mut g.spare_capacity_mut()[..n]),
                    false,
                )
            })
        } else {
            (g.len() == n && n > 0).then(|| (SharedDst::new(g), true))
        }
    }

    /// Weight `w`'s multiply wrote all of its gradient.
    ///
    /// # Safety
    /// Every one of the parameter's values was written through the
    /// destination `weight` returned.
    pub(super) unsafe fn stored(&mut self, w: usize) {
        if self.fresh[w] {
            if let Some(g) = self.bufs.get_mut(w) {
                // SAFETY: the caller wrote all `sizes[w]` values, which
                // `weight` checked fit the capacity.
                unsafe { g.set_len(self.sizes[w]) };
            }
        }
    }

    /// A gradient that is added to (a bias's, a slope's), when trained.
    pub(super) fn added(&mut self, p: usize) -> Option<&mut Vec<f32>> {
        self.bufs
            .get_mut(p)
            .filter(|g| !g.is_empty() && !self.fresh[p])
    }

    /// Takes a gradient that is added to out (empty when not trained).
    pub(super) fn take(&mut self, p: usize) -> Vec<f32> {
        match self.added(p) {
            Some(g) => std::mem::take(g),
            None => Vec::new(),
        }
    }

    /// Puts back what `take` took.
    pub(super) fn put(&mut self, p: usize, g: Vec<f32>) {
        if let Some(slot) = self.bufs.get_mut(p) {
            *slot = g;
        }
    }

    /// The gradients, per parameter; a fresh one its multiply never wrote
    /// (none in a complete pass) reads as zeros.
    pub(super) fn finish(self) -> Vec<Vec<f32>> {
        self.bufs
            .into_iter()
            .zip(self.fresh)
            .zip(self.sizes)
            .map(|((mut g, fresh), n)| {
                if fresh && g.is_empty() {
                    g.resize(n, 0.0);
                }
                g
            })
            .collect()
    }
}

/// `n` zeros, written by all threads when that is a lot of memory: the
/// allocator hands back recycled memory, which it would clear on one thread.
fn zeros(n: usize) -> Vec<f32> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    if n < 4 * CHUNK {
        return vec![0.0; n];
    }
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|c| c.fill(MaybeUninit::new(0.0)));
    // SAFETY: the first `n` elements were just initialized.
    unsafe { v.set_len(n) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::plan::Parameter;
    use crate::runtime::exec::native::view::View;
    use candle_core::{Device, Var};

    fn linear(w: usize, b: Option<usize>) -> Step {
        let v = View::contiguous(0, &[2, 3]).unwrap_or_else(|| unreachable!());
        Step::Linear { x: v, out: v, w, b }
    }

    /// A weight its one multiply writes starts unwritten and is stored
    /// into; a weight two multiplies read, and a bias, start zeroed and are
    /// added to; a fresh weight nothing wrote reads as zeros.
    #[test]
    fn only_a_weights_sole_multiply_stores() {
        let plan = Plan {
            params: [6, 6, 3, 4]
                .iter()
                .map(|&n| Parameter {
                    shape: vec![n],
                    trainable: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let var = |n: usize| {
            ParamSlot::Trainable(Var::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap())
        };
        let params = vec![var(6), var(6), var(3), var(4)];
        // 0: one multiply; 1: two (a shared weight); 2: a bias; 3: a
        // weight whose multiply never ran.
        let steps = vec![
            linear(0, Some(2)),
            linear(1, None),
            linear(1, None),
            linear(3, None),
        ];
        let mut pg = ParamGrads::new(&plan, &params, &steps);
        let (dst, add) = pg.weight(0, 6).unwrap();
        assert!(!add, "a sole multiply stores");
        // SAFETY: the test writes all six values through the destination.
        unsafe {
            let d = dst.ptr();
            for k in 0..6 {
                *d.add(k) = k as f32;
            }
            pg.stored(0);
        }
        assert!(pg.weight(0, 5).is_none(), "only a whole write of weight 0");
        let (_, add) = pg.weight(1, 6).unwrap();
        assert!(add, "a shared weight is added to");
        assert_eq!(pg.added(2).map(|g| g.clone()), Some(vec![0.0; 3]));
        assert!(pg.added(0).is_none(), "weight 0 is not added to");
        let out = pg.finish();
        assert_eq!(out[0], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(out[1], vec![0.0; 6]);
        assert_eq!(
            out[3],
            vec![0.0; 4],
            "an unwritten fresh gradient reads as zeros"
        );
    }
}
