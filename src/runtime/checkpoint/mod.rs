//! Training checkpoints: everything a run needs to continue exactly where
//! it stopped (parameters, optimizer state, data position, random state,
//! metrics so far; `proto/plec/checkpoint.proto`), the file envelope
//! (`file`) and the directory of them a run keeps (`dir`).

pub(crate) mod dir;
pub(crate) mod file;
pub(crate) mod writer;

pub(crate) use file::CheckpointError;

use crate::data::assemble::RowId;
use crate::data::seek::SeekPoint;
use crate::proto::checkpoint::DataPosition;

/// A reader position as a checkpoint stores it.
pub(crate) fn data_position(at: &SeekPoint) -> DataPosition {
    DataPosition {
        file: at.file,
        row_group: at.row_group,
        row: at.row,
        shuffle_state: at.shuffle_state,
        pending_files: at.pending.iter().map(|r| r.file).collect(),
        pending_rows: at.pending.iter().map(|r| r.row).collect(),
        skip: at.skip,
        batch_size: at.batch_size,
        buffer_batches: at.buffer_batches,
        files: at.files,
        rows: at.rows,
    }
}

/// A checkpoint's reader position; `None` when its pending rows are not
/// pairs (a corrupted checkpoint: the resume then re-reads and skips).
pub(crate) fn seek_point(p: &DataPosition) -> Option<SeekPoint> {
    if p.pending_files.len() != p.pending_rows.len() {
        return None;
    }
    Some(SeekPoint {
        file: p.file,
        row_group: p.row_group,
        row: p.row,
        shuffle_state: p.shuffle_state,
        pending: p
            .pending_files
            .iter()
            .zip(&p.pending_rows)
            .map(|(&file, &row)| RowId { file, row })
            .collect(),
        skip: p.skip,
        batch_size: p.batch_size,
        buffer_batches: p.buffer_batches,
        files: p.files,
        rows: p.rows,
    })
}
