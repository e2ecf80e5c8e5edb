//! Re-cuts encoded record batches (whose sizes follow row groups) into
//! batches of exactly `batch_size` rows, optionally shuffling rows within a
//! buffer of several batches. Hands the reader thread finished batches.

use arrow_array::{Array, ArrayRef};

use super::batch::{Batch, FeatureInput};
use crate::rng::SplitMix64;

/// An encoded batch plus the pass-through columns of the same rows.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub batch: Batch,
    /// Kept (pass-through) columns, in the order they were asked for.
    pub kept: Vec<ArrayRef>,
    /// Where each row came from: a resume re-reads the rows a checkpoint
    /// left in the assembler by these.
    pub origin: Vec<RowId>,
}

/// One row of the input: the file (index into the data source's resolved
/// files, before shuffling) and the row counted from the file's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId {
    pub file: u32,
    pub row: u64,
}

/// Collects chunks and emits full batches.
pub struct Assembler {
    batch_size: usize,
    drop_remainder: bool,
    shuffle: Option<SplitMix64>,
    /// Rows to collect before cutting (a multiple of the batch size when
    /// shuffling, so rows mix across that many batches).
    target_rows: usize,
    pool: Vec<Chunk>,
    pooled: usize,
}

impl Assembler {
    /// `shuffle` carries the row-shuffle RNG; `buffer_batches` is how many
    /// batches of rows are mixed together when shuffling.
    pub fn new(
        batch_size: usize,
        drop_remainder: bool,
        shuffle: Option<SplitMix64>,
        buffer_batches: usize,
    ) -> Self {
        let batch_size = batch_size.max(1);
        let target_rows = if shuffle.is_some() {
            batch_size * buffer_batches.max(1)
        } else {
            batch_size
        };
        Assembler {
            batch_size,
            drop_remainder,
            shuffle,
            target_rows,
            pool: Vec::new(),
            pooled: 0,
        }
    }

    /// Continues where a pass left off: `pending` (the rows read but not yet
    /// cut into a batch, in pool order) goes back into the pool, and the
    /// row shuffle continues from `shuffle_state`. From there the assembler
    /// cuts exactly the batches the interrupted pass would have.
    pub fn restore(&mut self, pending: Option<Chunk>, shuffle_state: u64) {
        if let Some(rng) = self.shuffle.as_mut() {
            *rng = SplitMix64::new(shuffle_state);
        }
        self.pool.clear();
        self.pooled = 0;
        if let Some(chunk) = pending.filter(|c| c.batch.rows > 0) {
            self.pooled = chunk.batch.rows;
            self.pool.push(chunk);
        }
    }

    /// The rows read but not yet cut into a batch, in pool order.
    pub fn pending_rows(&self) -> Vec<RowId> {
        self.pool
            .iter()
            .flat_map(|c| c.origin.iter().copied())
            .collect()
    }

    /// The row shuffle's generator state (0 without shuffling).
    pub fn shuffle_state(&self) -> u64 {
        self.shuffle.as_ref().map_or(0, SplitMix64::state)
    }

    /// Adds a chunk; returns the batches now complete.
    pub fn push(&mut self, chunk: Chunk) -> Vec<Chunk> {
        if chunk.batch.rows == 0 {
            return Vec::new();
        }
        if self.shuffle.is_none() && self.pool.is_empty() && chunk.batch.rows == self.batch_size {
            return vec![chunk];
        }
        self.pooled += chunk.batch.rows;
        self.pool.push(chunk);
        if self.pooled < self.target_rows {
            return Vec::new();
        }
        self.cut(false)
    }

    /// Emits what is left at the end of the data (a last short batch unless
    /// `drop_remainder`).
    pub fn finish(&mut self) -> Vec<Chunk> {
        if self.pooled == 0 {
            return Vec::new();
        }
        self.cut(true)
    }

    fn cut(&mut self, last: bool) -> Vec<Chunk> {
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(self.pooled);
        for (c, chunk) in self.pool.iter().enumerate() {
            order.extend((0..chunk.batch.rows).map(|r| (c, r)));
        }
        if let Some(rng) = self.shuffle.as_mut() {
            rng.shuffle(&mut order);
        }
        let mut out: Vec<Chunk> = order
            .chunks_exact(self.batch_size)
            .map(|rows| gather(&self.pool, rows))
            .collect();
        let rest = order.chunks_exact(self.batch_size).remainder();
        let leftover = if rest.is_empty() {
            None
        } else {
            Some(gather(&self.pool, rest))
        };
        self.pool.clear();
        self.pooled = 0;
        if let Some(chunk) = leftover {
            if !last {
                self.pooled = chunk.batch.rows;
                self.pool.push(chunk);
            } else if !self.drop_remainder {
                out.push(chunk);
            }
        }
        out
    }
}

/// Builds one chunk from `(chunk, row)` pairs of `pool`.
pub fn gather(pool: &[Chunk], rows: &[(usize, usize)]) -> Chunk {
    let first = &pool[0].batch;
    let n = rows.len();
    let features = (0..first.features.len())
        .map(|f| match &first.features[f] {
            FeatureInput::Ids { .. } => {
                let mut ids = Vec::with_capacity(n);
                let mut offsets = Vec::with_capacity(n + 1);
                offsets.push(0u32);
                for &(c, r) in rows {
                    if let FeatureInput::Ids {
                        ids: src,
                        offsets: off,
                    } = &pool[c].batch.features[f]
                    {
                        ids.extend_from_slice(&src[off[r] as usize..off[r + 1] as usize]);
                    }
                    offsets.push(ids.len() as u32);
                }
                FeatureInput::Ids { ids, offsets }
            }
            FeatureInput::Dense { dim, .. } => {
                let dim = *dim;
                let mut values = Vec::with_capacity(n * dim);
                for &(c, r) in rows {
                    if let FeatureInput::Dense { values: src, .. } = &pool[c].batch.features[f] {
                        values.extend_from_slice(&src[r * dim..(r + 1) * dim]);
                    }
                }
                FeatureInput::Dense { values, dim }
            }
            FeatureInput::SeqDense { dim, .. } => {
                let dim = *dim;
                let mut values = Vec::new();
                let mut offsets = Vec::with_capacity(n + 1);
                offsets.push(0u32);
                let mut steps = 0u32;
                for &(c, r) in rows {
                    if let FeatureInput::SeqDense {
                        values: src,
                        offsets: off,
                        ..
                    } = &pool[c].batch.features[f]
                    {
                        let (a, b) = (off[r] as usize, off[r + 1] as usize);
                        values.extend_from_slice(&src[a * dim..b * dim]);
                        steps += (b - a) as u32;
                    }
                    offsets.push(steps);
                }
                FeatureInput::SeqDense {
                    values,
                    offsets,
                    dim,
                }
            }
        })
        .collect();
    let columns = |get: &dyn Fn(&Batch) -> &Vec<Vec<f32>>| -> Vec<Vec<f32>> {
        (0..get(first).len())
            .map(|j| {
                rows.iter()
                    .map(|&(c, r)| get(&pool[c].batch)[j][r])
                    .collect()
            })
            .collect()
    };
    let labels = columns(&|b: &Batch| &b.labels);
    let sample_weights = columns(&|b: &Batch| &b.sample_weights);
    let group_keys = first
        .group_keys
        .iter()
        .enumerate()
        .map(|(j, (name, _))| {
            let keys = rows
                .iter()
                .map(|&(c, r)| pool[c].batch.group_keys[j].1[r].clone())
                .collect();
            (name.clone(), keys)
        })
        .collect();
    let kept = (0..pool[0].kept.len())
        .map(|k| {
            let arrays: Vec<&dyn Array> = pool.iter().map(|c| c.kept[k].as_ref()).collect();
            // All pooled arrays of one kept column share one type (checked
            // when the files were opened), which is all interleave needs.
            arrow_select::interleave::interleave(&arrays, rows)
                .unwrap_or_else(|_| arrow_array::new_empty_array(pool[0].kept[k].data_type()))
        })
        .collect();
    Chunk {
        batch: Batch {
            rows: n,
            features,
            labels,
            sample_weights,
            group_keys,
        },
        kept,
        origin: rows.iter().map(|&(c, r)| pool[c].origin[r]).collect(),
    }
}
