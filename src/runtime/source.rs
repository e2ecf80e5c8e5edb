//! Where batches come from: anything that can be (re)opened once per epoch
//! and yields `Batch`es or errors.

use crate::data::batch::Batch;

use super::error::BoxError;

/// An iterator over the batches of one pass through the data.
pub type BatchIter = Box<dyn Iterator<Item = Result<Batch, BoxError>>>;

/// A source of batches that can be read again for every epoch.
pub trait BatchSource {
    /// Starts pass `epoch` (0-based) over the data.
    fn open(&mut self, epoch: u64) -> Result<BatchIter, BoxError>;
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
