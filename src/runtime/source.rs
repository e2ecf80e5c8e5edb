//! Where batches come from: anything that can be (re)opened once per epoch
//! and yields `Batch`es or errors.

use crate::data::batch::Batch;
use crate::data::seek::SeekPoint;

use super::error::BoxError;

/// An iterator over the batches of one pass through the data.
pub type BatchIter = Box<dyn Iterator<Item = Result<Batch, BoxError>>>;

/// A source of batches that can be read again for every epoch.
pub trait BatchSource {
    /// Starts pass `epoch` (0-based) over the data.
    fn open(&mut self, epoch: u64) -> Result<BatchIter, BoxError>;

    /// Where the pass opened last stands after the batches it has handed
    /// out, for a checkpoint; `None` when this source cannot seek.
    fn position(&self) -> Option<SeekPoint> {
        None
    }

    /// Opens pass `epoch` at `at` (a [`Self::position`] of an earlier run
    /// over the same data), yielding the batches that followed it there.
    /// `Ok(None)`: this source cannot seek, and the caller re-reads the
    /// epoch and skips the batches already trained.
    fn open_at(&mut self, _epoch: u64, _at: &SeekPoint) -> Result<Option<BatchIter>, BoxError> {
        Ok(None)
    }
}

impl<F> BatchSource for F
where
    F: FnMut(u64) -> Result<BatchIter, BoxError>,
{
    fn open(&mut self, epoch: u64) -> Result<BatchIter, BoxError> {
        self(epoch)
    }
}

/// A source over batches held in memory (tests, benchmarks, small data).
pub fn vec_source(batches: Vec<Batch>) -> impl BatchSource {
    move |_epoch: u64| -> Result<BatchIter, BoxError> {
        Ok(Box::new(batches.clone().into_iter().map(Ok)))
    }
}
