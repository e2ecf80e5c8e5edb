//! Parquet to model inputs: resolving input files, reading record batches,
//! encoding feature columns as the plan's feature specs say, and synthetic
//! data generation. Hands the runtime [`Batch`]es, and `plec check --data`
//! an [`audit`] of the files against a plan.

pub mod assemble;
pub mod audit;
pub mod batch;
pub mod column;
pub mod encode;
pub mod error;
pub mod fields;
mod footer;
mod pages;
pub mod reader;
pub mod seek;
pub mod synth;

pub use batch::{Batch, FeatureInput};
pub use error::{DataError, RowLoc};
pub use reader::{Batches, DataSource, KeptBatches, KeptColumns, ReadOptions};
pub use seek::SeekPoint;
pub use synth::{generate, SynthReport, TaskReport};

#[cfg(test)]
mod tests;
