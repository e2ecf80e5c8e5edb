//! Training with a batch's rows side by side: each thread runs the forward
//! and backward passes of its own contiguous part of the batch on its own
//! single-threaded engine, and the parts' gradients are summed, instead of
//! every layer's multiply being split over all threads.
//!
//! The result is the one pass's up to the order of f32 sums: the loss is
//! taken over the whole batch's logits (so its gradient is the one pass's),
//! each part backpropagates its rows of it, and a parameter's gradient is
//! the sum of the parts'. Dropout and variational dropout draw each part's
//! share of the whole batch's stream (`exec::native::RowSpan`), so the
//! masks are the one pass's bit for bit. Batch norm's training statistics
//! tie the rows together: a plan with one trains as one pass.
//!
//! Each part gathers the embedding rows its ids touch; the parts' lists are
//! merged into the batch's (the first part's rows first, then each later
//! part's new ids in order: the one pass's first-seen order), so the sparse
//! optimizer sees one gradient per row, the parts' summed.
//!
//! Why: two single-threaded processes training 4096-row batches side by side
//! ran 14359 samples/s together where one two-thread process ran 11492 at
//! batch 8192 (PLE example, bf16, AMD EPYC Zen 5 with AVX512-BF16); fp32 9017
//! against 8135. A multiply split over two threads pays joins per block and
//! shares its packed operands; a part's multiplies pay neither.

use std::collections::HashMap;

use rayon::prelude::*;

use super::{join_rows, Lent, RowWorkers, TaskLogits};
use crate::data::batch::Batch;
use crate::proto::plan::{OpKind, Plan};
use crate::runtime::error::{invalid_plan, Result};
use crate::runtime::exec::native::{GatheredRows, PassGrads, Precision, RowSpan};
use crate::runtime::params::{Mode, ParamSlot};

/// Fewest rows a part of a training batch gets.
const TRAIN_PART_MIN: usize = 256;

/// The number of parts a training batch of `rows` rows runs in on
/// `threads` threads: one per thread, or None when the batch is too small
/// to give each thread `TRAIN_PART_MIN` rows.
pub(crate) fn train_parts(rows: usize, threads: usize) -> Option<usize> {
    (threads >= 2 && rows >= threads * TRAIN_PART_MIN).then_some(threads)
}

/// Whether the plan's training pass treats every row on its own (no batch
/// norm, whose training statistics are the whole batch's).
pub(crate) fn rows_apart_in_training(plan: &Plan) -> bool {
    !plan
        .ops
        .iter()
        .any(|op| op.kind == OpKind::BatchNorm as i32)
}

/// What a training forward pass in parts leaves for its backward pass.
#[derive(Debug)]
pub(crate) struct PartsTape {
    /// Where each part starts, then the batch's rows.
    bounds: Vec<usize>,
    /// Per part after the first (whose rows head the merged lists, in
    /// order), per gathered slot: each of the part's rows' index in the
    /// merged rows.
    maps: Vec<Vec<Vec<u32>>>,
    /// Per merged slot: its rows' width and count.
    dims: Vec<usize>,
    lens: Vec<usize>,
}

/// The output of a training forward pass in parts.
#[derive(Debug)]
pub(crate) struct PartsForward {
    /// Per task, `[rows, C]` row-major, the parts' rows in order.
    pub logits: TaskLogits,
    /// The loss's penalty terms (every part finds the same ones).
    pub penalties: Vec<(usize, f32)>,
    /// The batch's gathered rows, merged over the parts.
    pub gathered: Vec<GatheredRows>,
    pub tape: PartsTape,
}

impl RowWorkers {
    /// A training forward pass of `batch`, one contiguous part per worker.
    /// The model checked the batch (`splittable`, its features) and the
    /// plan (`rows_apart_in_training`).
    pub(crate) fn train_forward(
        &mut self,
        lent: &Lent<'_>,
        batch: &Batch,
        mode: Mode,
        precision: Option<Precision>,
    ) -> Result<PartsForward> {
        let parts = self.len();
        let total = batch.rows;
        let bounds: Vec<usize> = (0..=parts).map(|i| total * i / parts).collect();
        let outs = self.on_each(precision, |i, engine, _| {
            let (first, end) = (bounds[i], bounds[i + 1]);
            engine.set_span(Some(RowSpan { first, total }));
            let part = batch.rows_range(first, end);
            let out = engine.forward_pass(
                lent.plan,
                lent.analysis,
                lent.params,
                lent.tables,
                &part,
                mode,
            )?;
            if !out.buffer_updates.is_empty() {
                return Err(invalid_plan!(
                    "a batch norm's statistics cannot be taken over part of a batch"
                ));
            }
            Ok((out.logits, out.penalties))
        })?;
        // Every part finds the same penalty terms.
        let penalties = outs.first().map(|(_, p)| p.clone()).unwrap_or_default();
        let logits = join_rows(outs.into_iter().map(|(l, _)| l));
        let (gathered, tape) = merge_gathered(self, lent, bounds)?;
        Ok(PartsForward {
            logits,
            penalties,
            gathered,
            tape,
        })
    }

    /// The backward pass of the last `train_forward` from the logits'
    /// gradients (per task, `[rows, C]`): the parameters' gradients summed
    /// over the parts, and the merged gathered rows' gradients.
    pub(crate) fn train_backward(
        &mut self,
        plan: &Plan,
        params: &[ParamSlot],
        tape: &PartsTape,
        dlogits: &[Option<Vec<f32>>],
        precision: Option<Precision>,
    ) -> Result<PassGrads> {
        let bounds = &tape.bounds;
        if bounds.len() != self.len() + 1 {
            return Err(invalid_plan!(
                "a training pass in {} parts, backward on {} threads",
                bounds.len().saturating_sub(1),
                self.len()
            ));
        }
        let total = bounds.last().copied().unwrap_or(0);
        let grads = self.on_each(precision, |i, engine, _| {
            let (first, end) = (bounds[i], bounds[i + 1]);
            let mine: Vec<Option<Vec<f32>>> = dlogits
                .iter()
                .map(|d| {
                    d.as_ref().map(|d| {
                        let c = d.len() / total.max(1);
                        d[first * c..end * c].to_vec()
                    })
                })
                .collect();
            engine.backward_grads(plan, params, &mine)
        })?;
        let mut grads = grads.into_iter();
        let mut sum = grads
            .next()
            .ok_or_else(|| invalid_plan!("a training pass without parts"))?;
        // Every part's rows map onto the merged list; the first part's
        // are its head, in order.
        for (slot, rows) in sum.rows.iter_mut().enumerate() {
            rows.resize(tape.dims[slot] * tape.lens[slot], 0.0);
        }
        for (part, g) in grads.enumerate() {
            for (total, p) in sum.params.iter_mut().zip(&g.params) {
                add(total, p);
            }
            for (slot, rows) in g.rows.iter().enumerate() {
                let (Some(dst), Some(map)) = (sum.rows.get_mut(slot), tape.maps[part].get(slot))
                else {
                    continue;
                };
                let d = tape.dims[slot];
                for (local, &m) in map.iter().enumerate() {
                    let m = m as usize;
                    dst[m * d..(m + 1) * d]
                        .iter_mut()
                        .zip(&rows[local * d..(local + 1) * d])
                        .for_each(|(y, &x)| *y += x);
                }
            }
        }
        Ok(sum)
    }
}

/// `total += part`, over the threads for large gradients.
fn add(total: &mut [f32], part: &[f32]) {
    const CHUNK: usize = 1 << 15;
    if total.len() < 4 * CHUNK {
        total.iter_mut().zip(part).for_each(|(t, &p)| *t += p);
    } else {
        total
            .par_chunks_mut(CHUNK)
            .zip(part.par_chunks(CHUNK))
            .for_each(|(t, p)| t.iter_mut().zip(p).for_each(|(t, &p)| *t += p));
    }
}

/// The parts' gathered rows merged per table slot (first part's first,
/// then each later part's new ids), and the tape that maps each later
/// part's rows onto them.
fn merge_gathered(
    workers: &RowWorkers,
    lent: &Lent<'_>,
    bounds: Vec<usize>,
) -> Result<(Vec<GatheredRows>, PartsTape)> {
    let parts: Vec<&[GatheredRows]> = workers.engines().map(|e| e.gathered_rows()).collect();
    let first = parts.first().copied().unwrap_or(&[]);
    let mut merged: Vec<GatheredRows> = first.to_vec();
    let dims: Vec<usize> = first
        .iter()
        .map(|(t, _, _)| lent.tables.get(*t).map_or(0, |t| t.dim))
        .collect();
    let mut maps = Vec::with_capacity(parts.len().saturating_sub(1));
    let mut index: Vec<HashMap<u32, u32>> = first
        .iter()
        .map(|(_, ids, _)| {
            ids.iter()
                .enumerate()
                .map(|(i, &id)| (id, i as u32))
                .collect()
        })
        .collect();
    for part in &parts[1..] {
        if part.len() != merged.len() || part.iter().zip(&merged).any(|(p, m)| p.0 != m.0) {
            return Err(invalid_plan!(
                "the parts of a training batch gathered different tables"
            ));
        }
        let mut part_maps = Vec::with_capacity(part.len());
        for (slot, (_, ids, rows)) in part.iter().enumerate() {
            let d = dims[slot];
            let (_, list, all) = &mut merged[slot];
            let seen = &mut index[slot];
            let map = ids
                .iter()
                .enumerate()
                .map(|(local, &id)| {
                    *seen.entry(id).or_insert_with(|| {
                        list.push(id);
                        all.extend_from_slice(&rows[local * d..(local + 1) * d]);
                        (list.len() - 1) as u32
                    })
                })
                .collect();
            part_maps.push(map);
        }
        maps.push(part_maps);
    }
    let lens = merged.iter().map(|(_, ids, _)| ids.len()).collect();
    let tape = PartsTape {
        bounds,
        maps,
        dims,
        lens,
    };
    Ok((merged, tape))
}
