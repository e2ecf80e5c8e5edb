//! The backward pass of an in-place relu, moved into the writers of its
//! gradient.
//!
//! A relu's backward pass zeroes the gradient where the relu's output is
//! not positive. Done on its own it is a pass that reads the gradient and
//! the output and writes the gradient back, over every expert and tower
//! layer. But the gradient was just written by the relu's readers (the
//! next layer's input-gradient multiply, the gates' expert gradients), and
//! masking distributes over their sum: when every writer stores its share
//! already masked, the relu has nothing left to do, and a writer that
//! accumulates may even mask the running sum, whose old values are zero
//! wherever the mask is. A multiply applies the mask as it stores its
//! tiles; the gate kernel as it writes its rows.

use super::step::{gradient_writes, Step};
use super::view::View;
use crate::proto::plan::{Activation, Plan};

/// Per step, whether the gradient it writes into its input (a linear's
/// `x`, a gate mix's experts) is stored masked by that input's forward
/// values; per in-place relu step, whether its backward pass is thereby
/// done (all its gradient's writers mask).
pub(super) struct ReluMasks {
    pub masked: Vec<bool>,
    pub relu_done: Vec<bool>,
}

/// A view's non-empty row runs `[start, end)`, in row order.
fn rows(v: &View) -> impl Iterator<Item = (usize, usize)> + '_ {
    v.row_runs().filter(|(s, e)| e > s)
}

/// The sorted, disjoint element runs `[start, end)` of a view's rows.
struct Runs(Vec<(usize, usize)>);

impl Runs {
    fn of(v: &View) -> Self {
        let mut r: Vec<(usize, usize)> = rows(v).collect();
        r.sort_unstable();
        Self(r)
    }

    /// The run with the largest start at or before `at`.
    fn before(&self, at: usize) -> Option<&(usize, usize)> {
        let i = self.0.partition_point(|&(s, _)| s <= at);
        i.checked_sub(1).map(|i| &self.0[i])
    }

    /// Whether every element of `v` is one of ours.
    fn contain(&self, v: &View) -> bool {
        rows(v).all(|(s, e)| {
            // Our runs are disjoint rows, so a row of `v` lies in one.
            self.before(s).is_some_and(|&(rs, re)| rs <= s && e <= re)
        })
    }

    /// Whether `v` shares an element with ours.
    fn meet(&self, v: &View) -> bool {
        rows(v).any(|(s, e)| {
            let i = self.0.partition_point(|&(_, re)| re <= s);
            self.0.get(i).is_some_and(|&(rs, _)| rs < e)
        })
    }
}

/// The gradient views a step writes that it can mask: a linear's input,
/// a gate mix's experts.
fn maskable(step: &Step) -> Vec<View> {
    match step {
        Step::Linear { x, .. } | Step::Batched { x, .. } => vec![*x],
        Step::GateMix { es, .. } => es.clone(),
        _ => Vec::new(),
    }
}

/// Which relus' backward passes move into their writers. A relu qualifies
/// when every gradient write into its output is a maskable one lying
/// wholly inside it; a writer masks all its maskable writes, so each of
/// those must lie in a qualifying relu too (checked until nothing changes).
pub(super) fn relu_masks(plan: &Plan, steps: &[Step], needs: &[bool]) -> ReluMasks {
    let n = steps.len();
    let relus: Vec<(usize, View, Runs)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Step::Act {
                x, in_place: true, ..
            } if Activation::try_from(plan.ops[i].activation) == Ok(Activation::Relu) => {
                Some((i, *x, Runs::of(x)))
            }
            _ => None,
        })
        .collect();
    // Per relu: the steps writing its gradient, or None when one of them
    // cannot mask (or writes past it).
    let mut writers: Vec<Option<Vec<usize>>> = relus
        .iter()
        .map(|(_, x, runs)| {
            let mut ws = Vec::new();
            for (si, s) in steps.iter().enumerate() {
                let can = maskable(s);
                for w in gradient_writes(s, needs) {
                    if w.buf != x.buf || !runs.meet(&w) {
                        continue;
                    }
                    if !can.contains(&w) || !runs.contain(&w) {
                        return None;
                    }
                    ws.push(si);
                }
            }
            Some(ws)
        })
        .collect();
    loop {
        let mut masked = vec![false; n];
        for ws in writers.iter().flatten() {
            for &w in ws {
                masked[w] = true;
            }
        }
        let in_qualifying = |v: &View| {
            relus
                .iter()
                .zip(&writers)
                .any(|((_, x, runs), ws)| ws.is_some() && x.buf == v.buf && runs.contain(v))
        };
        let stray: Vec<usize> = (0..n)
            .filter(|&si| {
                masked[si]
                    && maskable(&steps[si])
                        .iter()
                        .any(|v| needs[v.buf] && !in_qualifying(v))
            })
            .collect();
        if stray.is_empty() {
            let mut relu_done = vec![false; n];
            for ((ai, _, _), ws) in relus.iter().zip(&writers) {
                relu_done[*ai] = ws.is_some();
            }
            return ReluMasks { masked, relu_done };
        }
        for ws in writers.iter_mut() {
            if ws
                .as_ref()
                .is_some_and(|w| w.iter().any(|s| stray.contains(s)))
            {
                *ws = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_contain_and_meet_exactly() {
        let wide = View::contiguous(0, &[4, 10]).unwrap_or_else(|| unreachable!());
        let experts = Runs::of(&wide.narrow(2, 2, 6));
        assert!(experts.contain(&wide.narrow(2, 2, 6)));
        assert!(experts.contain(&wide.narrow(2, 4, 3)));
        assert!(!experts.contain(&wide.narrow(2, 1, 3)));
        assert!(experts.meet(&wide.narrow(2, 1, 3)));
        // The columns on either side share nothing with ours.
        assert!(!experts.meet(&wide.narrow(2, 0, 2)));
        assert!(!experts.meet(&wide.narrow(2, 8, 2)));
        assert!(!experts.contain(&wide));
    }
}
