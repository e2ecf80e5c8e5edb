//! Continuing a pass where a checkpoint left it (`plec run --resume`),
//! without reading the batches before it again.
//!
//! A pass's batches are a function of its file and row-group order (drawn
//! from `(seed, epoch)`), of the rows the assembler holds between cuts,
//! and of the row shuffle's generator. A [`SeekPoint`] records all three
//! at the last cut: the next record batch to read (file, row group, row),
//! the rows left over from the cut (by file and row, re-read on resume,
//! at most a batch), the generator's state, and how many batches of the
//! following cut were already handed out (at most the shuffle buffer's
//! batches: a cut is made all at once, so a position inside it re-reads
//! that cut's rows and drops what was trained). Record batches are cut at
//! the same rows from a resume point as from a row group's start (each
//! holds `batch_size` rows, and a point always lies between two of them),
//! so the resumed pass yields exactly the batches the uninterrupted one
//! would have.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;

use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use super::assemble::{gather, Chunk, RowId};
use super::encode::BatchLoc;
use super::error::{DataError, Result};
use super::pages;
use super::reader::{FileInfo, Inner, ReadOptions};
use crate::rng::SplitMix64;

/// Where a pass stands between two of its batches; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeekPoint {
    /// The next file to read, as an index into the pass's file order.
    pub file: u64,
    /// The next row group, as an index into that file's row-group order.
    pub row_group: u64,
    /// The first row of that row group not read yet.
    pub row: u64,
    /// The row shuffle's generator state (0 without shuffling).
    pub shuffle_state: u64,
    /// Rows read but not yet in a batch, in the assembler's order.
    pub pending: Vec<RowId>,
    /// Batches the assembler cuts next that were already handed out.
    pub skip: u64,
    /// The pass these belong to: a resume over other data, or with another
    /// batch size or shuffle buffer, cannot continue it.
    pub batch_size: u64,
    pub buffer_batches: u64,
    pub files: u64,
    pub rows: u64,
}

impl SeekPoint {
    /// The same point with `skip` batches of the next cut handed out.
    pub(super) fn with_skip(&self, skip: u64) -> Self {
        SeekPoint {
            skip,
            ..self.clone()
        }
    }
}

/// The order a pass reads in: per file (index into the source's files, in
/// read order) its row groups in read order. With shuffling, the file
/// order and then each file's row-group order are drawn from one stream of
/// `(seed, epoch)`, in that sequence.
pub(super) fn pass_order(files: &[FileInfo], opts: &ReadOptions) -> Vec<(usize, Vec<usize>)> {
    let mut file_order: Vec<usize> = (0..files.len()).collect();
    let mut rng = SplitMix64::from_words(&[opts.seed, opts.epoch, 1]);
    if opts.shuffle {
        rng.shuffle(&mut file_order);
    }
    file_order
        .into_iter()
        .map(|fi| {
            let mut rgs: Vec<usize> = (0..files[fi].rg_start.len()).collect();
            if opts.shuffle {
                rng.shuffle(&mut rgs);
            }
            (fi, rgs)
        })
        .collect()
}

impl Inner {
    /// The point before the first batch of a pass.
    pub(super) fn pass_start(&self, opts: &ReadOptions, shuffle_state: u64) -> SeekPoint {
        SeekPoint {
            shuffle_state,
            batch_size: opts.batch_size as u64,
            buffer_batches: opts.shuffle_buffer_batches as u64,
            files: self.files.len() as u64,
            rows: self.files.iter().map(|f| f.rows).sum(),
            ..SeekPoint::default()
        }
    }

    /// Refuses a point that does not belong to a pass of this source with
    /// these options.
    pub(super) fn check_seek(&self, at: &SeekPoint, opts: &ReadOptions) -> Result<()> {
        let here = self.pass_start(opts, at.shuffle_state);
        let mismatch = |detail: String| Err(DataError::Reseek { detail });
        if (at.files, at.rows) != (here.files, here.rows) {
            return mismatch(format!(
                "the checkpoint read {} files of {} rows, the data now has {} files of {} rows",
                at.files, at.rows, here.files, here.rows
            ));
        }
        if (at.batch_size, at.buffer_batches) != (here.batch_size, here.buffer_batches) {
            return mismatch(format!(
                "the checkpoint read batches of {} rows (shuffle buffer {}), this run {} ({})",
                at.batch_size, at.buffer_batches, here.batch_size, here.buffer_batches
            ));
        }
        if at.file > here.files {
            return mismatch(format!("file {} of {}", at.file, here.files));
        }
        if let Some(r) = at.pending.iter().find(|r| {
            self.files
                .get(r.file as usize)
                .is_none_or(|f| r.row >= f.rows)
        }) {
            return mismatch(format!("row {} of file {}", r.row, r.file));
        }
        Ok(())
    }

    /// Reads and encodes the rows `ids` (of this source's files) into one
    /// chunk holding them in that order; `None` when `ids` is empty.
    pub(super) fn read_rows(&self, ids: &[RowId], opts: &ReadOptions) -> Result<Option<Chunk>> {
        if ids.is_empty() {
            return Ok(None);
        }
        // Rows wanted per (file, row group), as offsets into the row group.
        let mut wanted: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
        for id in ids {
            let info = &self.files[id.file as usize];
            let rg = info
                .rg_start
                .partition_point(|&s| s <= id.row)
                .saturating_sub(1);
            wanted
                .entry((id.file as usize, rg))
                .or_default()
                .push(id.row - info.rg_start[rg]);
        }
        let mut pool: Vec<Chunk> = Vec::new();
        for ((fi, rg), mut rows) in wanted {
            rows.sort_unstable();
            rows.dedup();
            let info = &self.files[fi];
            let corrupt = |detail: String| DataError::Corrupt {
                file: info.path.clone(),
                row_group: rg,
                detail,
            };
            let file = File::open(&info.path).map_err(|e| DataError::Io {
                path: info.path.clone(),
                detail: e.to_string(),
            })?;
            let reader = pages::row_group_reader(
                file,
                &info.meta,
                &info.projection,
                rg,
                rows.len(),
                Some(selection(&rows, rg_rows(info, rg))),
            )
            .map_err(corrupt)?;
            let mut next = rows.iter();
            for rb in reader {
                let rb = rb.map_err(corrupt)?;
                let origin: Vec<RowId> = next
                    .by_ref()
                    .take(rb.num_rows())
                    .map(|&r| RowId {
                        file: fi as u32,
                        row: info.rg_start[rg] + r,
                    })
                    .collect();
                let loc = BatchLoc {
                    file: &info.path,
                    first_row: origin.first().map_or(0, |r| r.row),
                    row_group: rg,
                };
                let mut chunk = self.encode(&rb, &loc, fi, opts.group_keys)?;
                chunk.origin = origin;
                pool.push(chunk);
            }
        }
        let mut at: HashMap<RowId, (usize, usize)> = HashMap::new();
        for (c, chunk) in pool.iter().enumerate() {
            for (r, id) in chunk.origin.iter().enumerate() {
                at.insert(*id, (c, r));
            }
        }
        let order = ids
            .iter()
            .map(|id| {
                at.get(id).copied().ok_or_else(|| DataError::Reseek {
                    detail: format!("row {} of file {} could not be read again", id.row, id.file),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(gather(&pool, &order)))
    }
}

/// Rows of row group `rg` of `info`, as its footer says.
pub(super) fn rg_rows(info: &FileInfo, rg: usize) -> u64 {
    let start = info.rg_start.get(rg).copied().unwrap_or(info.rows);
    let end = info.rg_start.get(rg + 1).copied().unwrap_or(info.rows);
    end.saturating_sub(start)
}

/// A row selection of the sorted, distinct offsets `rows` of a row group
/// of `total` rows.
fn selection(rows: &[u64], total: u64) -> RowSelection {
    let mut selectors = Vec::new();
    let mut next = 0u64;
    for &r in rows {
        if r > next {
            selectors.push(RowSelector::skip((r - next) as usize));
        }
        selectors.push(RowSelector::select(1));
        next = r + 1;
    }
    if total > next {
        selectors.push(RowSelector::skip((total - next) as usize));
    }
    RowSelection::from(selectors)
}

/// A row selection of a row group's rows from `first` on.
pub(super) fn from_row(first: u64, rows: u64) -> RowSelection {
    RowSelection::from(vec![
        RowSelector::skip(first as usize),
        RowSelector::select(rows.saturating_sub(first) as usize),
    ])
}
