//! Embedding tables on the device and the per-batch sparse lookup.
//!
//! A table is a plain device tensor, never a `Var`: a dense gradient over a
//! whole table costs a table-sized tensor per step. Instead, in training,
//! the ids a batch uses are deduplicated on the host (the ids come from the
//! host anyway), those `U` rows are gathered into a leaf `Var` `[U, dim]`,
//! and every feature's pooled output is built from that leaf. Backward then
//! gives a `[U, dim]` gradient, and the sparse optimizer writes only those
//! rows back (see `optim::sparse`).
//!
//! Initialization, when a table has no `data` (never trained): a
//! SplitMix64 stream seeded with `init_seed` fills the table row-major;
//! `INIT_NORMAL` draws Normal(0, init_scale), `INIT_UNIFORM` draws
//! Uniform(-init_scale, init_scale). `INIT_UNSPECIFIED` (or a zero scale)
//! falls back to torchrec's default, Uniform(-sqrt(1/num_rows),
//! sqrt(1/num_rows)).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};

use super::error::{bad_batch, invalid_plan, Result};
use crate::data::batch::FeatureInput;
use crate::proto::plan::{EmbeddingTable, FeatureSpec, InitKind, Pooling};
use crate::rng::SplitMix64;

/// One embedding table on the device.
#[derive(Debug)]
pub struct Table {
    /// The table's name in the plan.
    pub name: String,
    /// Number of rows.
    pub num_rows: usize,
    /// Row width.
    pub dim: usize,
    /// `[num_rows, dim]`, updated in place by the sparse optimizer.
    pub weight: Tensor,
}

impl Table {
    /// Loads a table from the plan, or initializes it as the module doc says.
    pub fn from_plan(t: &EmbeddingTable, dtype: DType, device: &Device) -> Result<Self> {
        let num_rows = usize::try_from(t.num_rows)
            .map_err(|_| invalid_plan!("table \"{}\" has too many rows", t.name))?;
        let dim = t.dim as usize;
        if num_rows == 0 || dim == 0 {
            return Err(invalid_plan!(
                "table \"{}\" is empty ({} rows of width {})",
                t.name,
                num_rows,
                dim
            ));
        }
        let n = num_rows
            .checked_mul(dim)
            .ok_or_else(|| invalid_plan!("table \"{}\" is too large", t.name))?;
        let values = if t.data.is_empty() {
            init_values(t, n)
        } else {
            if t.data.len() != n * 4 {
                return Err(invalid_plan!(
                    "table \"{}\" holds {} bytes, expected {} ({} rows of width {} as f32)",
                    t.name,
                    t.data.len(),
                    n * 4,
                    num_rows,
                    dim
                ));
            }
            f32s_from_le(&t.data)
        };
        let weight = Tensor::from_vec(values, (num_rows, dim), device)?.to_dtype(dtype)?;
        Ok(Self {
            name: t.name.clone(),
            num_rows,
            dim,
            weight,
        })
    }
}

/// A table's `n` values as little-endian f32 bytes, for the exports: its
/// trained rows, or for a plan never trained the rows the runtime would
/// initialize it with. Err says how the stored bytes disagree with `n`.
pub(crate) fn table_le_bytes(t: &EmbeddingTable, n: usize) -> Result<Vec<u8>, String> {
    if t.data.is_empty() {
        return Ok(f32s_to_le(&init_values(t, n)));
    }
    if t.data.len() as u64 != n as u64 * 4 {
        return Err(format!(
            "table \"{}\" holds {} bytes, expected {}",
            t.name,
            t.data.len(),
            n as u64 * 4
        ));
    }
    Ok(t.data.clone())
}

/// Deterministic initial values of a never-trained table.
pub(crate) fn init_values(t: &EmbeddingTable, n: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(t.init_seed);
    let scale = t.init_scale as f64;
    match InitKind::try_from(t.init).unwrap_or(InitKind::InitUnspecified) {
        InitKind::InitNormal if scale > 0.0 => {
            (0..n).map(|_| (rng.next_normal() * scale) as f32).collect()
        }
        InitKind::InitUniform if scale > 0.0 => (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect(),
        _ => {
            let bound = (1.0 / t.num_rows as f64).sqrt();
            (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect()
        }
    }
}

/// Decodes row-major little-endian f32 bytes (length already checked).
pub(crate) fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes f32 values as little-endian bytes. On a little-endian CPU the
/// bytes already are that: one copy (a checkpoint snapshot encodes every
/// table and optimizer buffer while training waits, and the per-value loop
/// took seconds for the PLE example's 230 MB of tables).
pub(crate) fn f32s_to_le(values: &[f32]) -> Vec<u8> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and no invalid bit patterns as bytes;
        // the slice covers exactly the values' memory (u8 needs no alignment).
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        bytes.to_vec()
    }
    #[cfg(not(target_endian = "little"))]
    {
        let mut out = Vec::with_capacity(values.len() * 4);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// The rows of one table gathered for one training batch.
#[derive(Debug)]
pub struct Gathered {
    /// Index of the table in the model.
    pub table: usize,
    /// The unique ids, in first-seen order, on the device (`u32 [U]`).
    pub ids: Tensor,
    /// Host copy of `ids`.
    pub host_ids: Vec<u32>,
    /// The gathered rows `[U, dim]`: the leaf whose gradient the sparse
    /// optimizer applies.
    pub rows: Var,
}

/// Result of looking up every embedded feature of a batch.
#[derive(Debug, Default)]
pub(crate) struct Lookup {
    /// One entry per table the batch touched (training only).
    pub gathered: Vec<Gathered>,
    /// Pooled `[B, dim]` output per plan feature, `[B, L, dim]` steps for a
    /// sequence feature (None for features that are not embedded or not
    /// needed).
    pub pooled: Vec<Option<Tensor>>,
}

/// One feature's bags in a batch: (feature, table, ids, offsets, row of
/// each id).
type Bags<'a> = (usize, usize, &'a [u32], &'a [u32], Vec<u32>);

/// Checks a bag structure and returns, per id, the row it belongs to.
pub(crate) fn bag_rows(
    feature: &FeatureSpec,
    ids: &[u32],
    offsets: &[u32],
    rows: usize,
    num_rows: usize,
) -> Result<Vec<u32>> {
    if offsets.len() != rows + 1 {
        return Err(bad_batch!(
            "feature \"{}\" has {} offsets for {} rows (expected rows + 1)",
            feature.name,
            offsets.len(),
            rows
        ));
    }
    if offsets[0] != 0 || offsets[rows] as usize != ids.len() {
        return Err(bad_batch!(
            "feature \"{}\" offsets must start at 0 and end at the number of ids ({})",
            feature.name,
            ids.len()
        ));
    }
    let mut seg = Vec::with_capacity(ids.len());
    for r in 0..rows {
        let (a, b) = (offsets[r], offsets[r + 1]);
        if b < a {
            return Err(bad_batch!(
                "feature \"{}\" offsets decrease at row {}",
                feature.name,
                r
            ));
        }
        seg.extend(std::iter::repeat_n(r as u32, (b - a) as usize));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= num_rows) {
        return Err(bad_batch!(
            "feature \"{}\" has id {} but its table has {} rows",
            feature.name,
            bad,
            num_rows
        ));
    }
    Ok(seg)
}

/// The table index and the id bags of embedded feature `f`, or the error
/// naming what is wrong (missing table, dense input, missing feature).
pub(crate) fn feature_ids<'a>(
    tables: &[Table],
    features: &'a [FeatureSpec],
    f: usize,
    inputs: &'a [FeatureInput],
) -> Result<(&'a FeatureSpec, usize, &'a [u32], &'a [u32])> {
    let spec = &features[f];
    let t = spec.table as usize;
    if t >= tables.len() {
        return Err(invalid_plan!(
            "feature \"{}\" uses table {} which does not exist",
            spec.name,
            t
        ));
    }
    match inputs.get(f) {
        Some(FeatureInput::Ids { ids, offsets }) => Ok((spec, t, ids, offsets)),
        Some(FeatureInput::Dense { .. } | FeatureInput::SeqDense { .. }) => Err(bad_batch!(
            "feature \"{}\" is embedded but the batch holds dense values for it",
            spec.name
        )),
        None => Err(bad_batch!(
            "the batch has {} features, the plan {}",
            inputs.len(),
            features.len()
        )),
    }
}

/// Places gathered per-step rows `[n, dim]` of a sequence feature at their
/// steps: `[B, L, dim]` with `L` the feature's `sequence_length`; steps past
/// a row's length stay zero (TorchEasyRec pads its dense sequences the same
/// way).
fn pad_steps(
    spec: &FeatureSpec,
    per_id: &Tensor,
    offsets: &[u32],
    rows: usize,
    device: &Device,
) -> Result<Tensor> {
    let dim = per_id.dim(1)?;
    let steps = spec.sequence_length as usize;
    let positions = step_positions(spec, offsets, rows)?;
    let zeros = Tensor::zeros((rows * steps, dim), per_id.dtype(), device)?;
    if positions.is_empty() {
        return Ok(zeros.reshape((rows, steps, dim))?);
    }
    let pos = Tensor::from_vec(positions, per_id.dim(0)?, device)?;
    Ok(zeros
        .index_add(&pos, per_id, 0)?
        .reshape((rows, steps, dim))?)
}

/// The flat position `r * L + k` of every item of a sequence feature's
/// rows, or an error when a row is longer than `L`.
pub(crate) fn step_positions(spec: &FeatureSpec, offsets: &[u32], rows: usize) -> Result<Vec<u32>> {
    let steps = spec.sequence_length as usize;
    let mut out = Vec::with_capacity(offsets.last().copied().unwrap_or(0) as usize);
    for r in 0..rows {
        let (a, b) = (offsets[r], offsets[r + 1]);
        let n = b.saturating_sub(a) as usize;
        if n > steps {
            return Err(bad_batch!(
                "sequence feature \"{}\" has {} steps in row {}, more than its sequence_length {}",
                spec.name,
                n,
                r,
                steps
            ));
        }
        out.extend((0..n).map(|k| (r * steps + k) as u32));
    }
    Ok(out)
}

/// Pooled bags, or padded steps for a sequence feature.
fn pool_or_pad(
    spec: &FeatureSpec,
    per_id: &Tensor,
    seg: &[u32],
    offsets: &[u32],
    rows: usize,
    device: &Device,
) -> Result<Tensor> {
    if spec.sequence_length > 0 {
        return pad_steps(spec, per_id, offsets, rows, device);
    }
    let pooling = Pooling::try_from(spec.pooling).unwrap_or(Pooling::Sum);
    pool(per_id, seg, offsets, rows, pooling, device)
}

/// Pools gathered per-id rows `[n, dim]` into `[B, dim]` bags.
fn pool(
    per_id: &Tensor,
    seg: &[u32],
    offsets: &[u32],
    rows: usize,
    pooling: Pooling,
    device: &Device,
) -> Result<Tensor> {
    let dim = per_id.dim(1)?;
    let dtype = per_id.dtype();
    // One id per row: the gathered rows already are the output.
    if seg.len() == rows && seg.iter().enumerate().all(|(i, &r)| r as usize == i) {
        return Ok(per_id.clone());
    }
    let zeros = Tensor::zeros((rows, dim), dtype, device)?;
    if seg.is_empty() {
        return Ok(zeros);
    }
    let seg_t = Tensor::from_slice(seg, seg.len(), device)?;
    let summed = zeros.index_add(&seg_t, per_id, 0)?;
    match pooling {
        Pooling::Sum => Ok(summed),
        Pooling::Mean => {
            let inv: Vec<f32> = offsets
                .windows(2)
                .map(|w| 1.0 / (w[1] - w[0]).max(1) as f32)
                .collect();
            let inv = Tensor::from_vec(inv, (rows, 1), device)?.to_dtype(dtype)?;
            Ok(summed.broadcast_mul(&inv)?)
        }
    }
}

/// Looks up every feature in `needed` (indices into `features`).
///
/// With `train`, ids are deduplicated per table and gathered into leaf
/// `Var`s as the module doc says; otherwise each feature reads the table
/// directly and nothing is tracked.
pub(crate) fn lookup(
    tables: &[Table],
    features: &[FeatureSpec],
    needed: &[usize],
    inputs: &[FeatureInput],
    rows: usize,
    train: bool,
    device: &Device,
) -> Result<Lookup> {
    let mut out = Lookup {
        gathered: Vec::new(),
        pooled: vec![None; features.len()],
    };
    // Validate every needed feature first and remember its bag rows.
    let mut bags: Vec<Bags<'_>> = Vec::new();
    for &f in needed {
        let (spec, t, ids, offsets) = feature_ids(tables, features, f, inputs)?;
        let table = &tables[t];
        let seg = bag_rows(spec, ids, offsets, rows, table.num_rows)?;
        bags.push((f, t, ids, offsets, seg));
    }
    if !train {
        for (f, t, ids, offsets, seg) in &bags {
            let per_id = if ids.is_empty() {
                Tensor::zeros((0, tables[*t].dim), tables[*t].weight.dtype(), device)?
            } else {
                let ids_t = Tensor::from_slice(ids, ids.len(), device)?;
                tables[*t].weight.index_select(&ids_t, 0)?
            };
            out.pooled[*f] = Some(pool_or_pad(
                &features[*f],
                &per_id,
                seg,
                offsets,
                rows,
                device,
            )?);
        }
        return Ok(out);
    }
    // Training: dedupe per table in first-seen order (deterministic).
    let mut slot_of_table: HashMap<usize, usize> = HashMap::new();
    let mut uniq: Vec<(usize, Vec<u32>, HashMap<u32, u32>)> = Vec::new();
    let mut inverse: Vec<Vec<u32>> = Vec::with_capacity(bags.len());
    for (_, t, ids, _, _) in &bags {
        let slot = *slot_of_table.entry(*t).or_insert_with(|| {
            uniq.push((*t, Vec::new(), HashMap::new()));
            uniq.len() - 1
        });
        let (_, list, map) = &mut uniq[slot];
        let inv = ids
            .iter()
            .map(|&id| {
                *map.entry(id).or_insert_with(|| {
                    list.push(id);
                    (list.len() - 1) as u32
                })
            })
            .collect();
        inverse.push(inv);
    }
    for (t, list, _) in &uniq {
        let table = &tables[*t];
        let (ids_t, rows_t) = if list.is_empty() {
            (
                Tensor::zeros(0, DType::U32, device)?,
                Tensor::zeros((0, table.dim), table.weight.dtype(), device)?,
            )
        } else {
            let ids_t = Tensor::from_slice(list, list.len(), device)?;
            let rows_t = table.weight.index_select(&ids_t, 0)?;
            (ids_t, rows_t)
        };
        out.gathered.push(Gathered {
            table: *t,
            ids: ids_t,
            host_ids: list.clone(),
            rows: Var::from_tensor(&rows_t)?,
        });
    }
    for ((f, t, _, offsets, seg), inv) in bags.iter().zip(inverse) {
        let g = &out.gathered[slot_of_table[t]];
        let per_id = if inv.is_empty() {
            Tensor::zeros((0, tables[*t].dim), tables[*t].weight.dtype(), device)?
        } else {
            let inv_t = Tensor::from_vec(inv.clone(), inv.len(), device)?;
            g.rows.as_tensor().index_select(&inv_t, 0)?
        };
        out.pooled[*f] = Some(pool_or_pad(
            &features[*f],
            &per_id,
            seg,
            offsets,
            rows,
            device,
        )?);
    }
    Ok(out)
}
