//! Embedding lookups of the native engine: ids pooled straight into the
//! feature group's columns, and the gradient scattered back per unique row.
//!
//! Training follows `runtime::embedding`: per table, the batch's ids are
//! deduplicated in first-seen order and those rows gathered into one leaf
//! `[U, dim]`, so the sparse optimizer (shared with the candle path)
//! updates exactly the rows the batch touched.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};

use super::host;
use crate::data::batch::FeatureInput;
use crate::proto::plan::{FeatureSpec, Pooling};
use crate::runtime::embedding::{bag_rows, feature_ids, Gathered, Table};
use crate::runtime::error::Result;

/// One embedded feature of a batch, ready to pool.
#[derive(Debug)]
pub(super) struct Bag {
    /// Index of the feature in the plan.
    pub feature: usize,
    /// Slot in `Lookup::rows` (training) or table index (evaluation).
    pub source: usize,
    /// Per id, its row in the source.
    pub index: Vec<u32>,
    /// Bag boundaries, `rows + 1` long.
    pub offsets: Vec<u32>,
    pub mean: bool,
    pub dim: usize,
}

/// The batch's embedded features, and in training the gathered rows.
#[derive(Debug, Default)]
pub(super) struct Lookup {
    pub bags: Vec<Bag>,
    /// Training: (table, unique ids, rows `[U, dim]`) per touched table.
    pub rows: Vec<super::GatheredRows>,
}

/// Validates the ids of every `needed` feature and, in training, gathers
/// the unique rows of each table.
pub(super) fn lookup(
    tables: &[Table],
    features: &[FeatureSpec],
    needed: &[usize],
    inputs: &[FeatureInput],
    rows: usize,
    train: bool,
) -> Result<Lookup> {
    let mut out = Lookup::default();
    let mut slot_of_table: HashMap<usize, usize> = HashMap::new();
    let mut seen: Vec<HashMap<u32, u32>> = Vec::new();
    for &f in needed {
        let (spec, t, ids, offsets) = feature_ids(tables, features, f, inputs)?;
        let table = &tables[t];
        bag_rows(spec, ids, offsets, rows, table.num_rows)?;
        let mean = Pooling::try_from(spec.pooling).unwrap_or(Pooling::Sum) == Pooling::Mean;
        let (source, index) = if train {
            let slot = *slot_of_table.entry(t).or_insert_with(|| {
                out.rows.push((t, Vec::new(), Vec::new()));
                seen.push(HashMap::new());
                out.rows.len() - 1
            });
            let list = &mut out.rows[slot].1;
            let map = &mut seen[slot];
            let index = ids
                .iter()
                .map(|&id| {
                    *map.entry(id).or_insert_with(|| {
                        list.push(id);
                        (list.len() - 1) as u32
                    })
                })
                .collect();
            (slot, index)
        } else {
            (t, ids.to_vec())
        };
        out.bags.push(Bag {
            feature: f,
            source,
            index,
            offsets: offsets.to_vec(),
            mean,
            dim: table.dim,
        });
    }
    for (t, list, rows) in &mut out.rows {
        let table = &tables[*t];
        let weight = host::tensor_f32(&table.weight)?;
        let w = weight.slice();
        rows.reserve(list.len() * table.dim);
        for &id in list.iter() {
            let o = id as usize * table.dim;
            rows.extend_from_slice(&w[o..o + table.dim]);
        }
    }
    Ok(out)
}

/// Pools `bag` into columns `[col, col + dim)` of the `[rows, width]`
/// group buffer `out`, reading rows from `src` (`[*, dim]`).
pub(super) fn pool(out: &mut [f32], width: usize, col: usize, bag: &Bag, src: &[f32]) {
    let d = bag.dim;
    for (r, w) in bag.offsets.windows(2).enumerate() {
        let (a, b) = (w[0] as usize, w[1] as usize);
        let dst = &mut out[r * width + col..r * width + col + d];
        dst.fill(0.0);
        for &i in &bag.index[a..b] {
            let o = i as usize * d;
            dst.iter_mut()
                .zip(&src[o..o + d])
                .for_each(|(y, &x)| *y += x);
        }
        if bag.mean && b > a {
            let s = 1.0 / (b - a) as f32;
            dst.iter_mut().for_each(|y| *y *= s);
        }
    }
}

/// Adds the gradient of columns `[col, col + dim)` of `g` (`[rows,
/// width]`) to the gathered rows' gradient `drows`.
pub(super) fn scatter(drows: &mut [f32], g: &[f32], width: usize, col: usize, bag: &Bag) {
    let d = bag.dim;
    for (r, w) in bag.offsets.windows(2).enumerate() {
        let (a, b) = (w[0] as usize, w[1] as usize);
        let src = &g[r * width + col..r * width + col + d];
        let s = if bag.mean && b > a {
            1.0 / (b - a) as f32
        } else {
            1.0
        };
        for &i in &bag.index[a..b] {
            let o = i as usize * d;
            drows[o..o + d]
                .iter_mut()
                .zip(src)
                .for_each(|(y, &x)| *y += x * s);
        }
    }
}

/// The gathered rows as the sparse optimizer takes them.
pub(crate) fn gathered(
    rows: &[super::GatheredRows],
    tables: &[Table],
    device: &Device,
) -> Result<Vec<Gathered>> {
    rows.iter()
        .map(|(t, list, rows)| {
            let dim = tables[*t].dim;
            Ok(Gathered {
                table: *t,
                ids: Tensor::from_slice(list, list.len(), device)?,
                host_ids: list.clone(),
                rows: Var::from_tensor(&Tensor::from_slice(rows, (list.len(), dim), device)?)?,
            })
        })
        .collect()
}
