//! The runtime: executes a compiled plan on the native CPU engine or
//! candle (the reference, and the CUDA path).
//!
//! `model` loads a plan's parameters and tables onto a device and runs its
//! ops (`ops`, `embedding`); `loss` turns logits into task losses;
//! `optim` holds the dense and sparse optimizers and the learning-rate
//! schedules; `train` is the loop that ties them together and writes the
//! trained plan; `eval` evaluates and predicts. Batches come from a
//! `source::BatchSource`, which the data reader plugs into.
//!
//! Entry points for the CLI: [`train()`] (or [`train_with`] to choose the
//! metrics), [`evaluate`], [`predict`], [`Model::from_plan`],
//! [`set_threads`].

pub(crate) mod checkpoint;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub(crate) mod embedding;
pub(crate) mod engine_choice;
pub(crate) mod error;
pub(crate) mod eval;
pub mod exec;
pub(crate) mod feature_importance;
pub(crate) mod interrupt;
pub(crate) mod loss;
pub(crate) mod model;
pub(crate) mod optim;
pub(crate) mod params;
pub(crate) mod precision;
pub(crate) mod profile;
pub(crate) mod row_parallel;
pub(crate) mod source;
pub(crate) mod train;

#[cfg(test)]
mod tests;

pub use engine_choice::{set_engine_choice, EngineChoice};
pub use error::{BoxError, Result, RuntimeError};
pub use eval::{evaluate, evaluate_with, predict, predict_batch, TaskMetricSink, TaskPredictions};
pub use model::Model;
pub use params::Mode;
pub use source::{vec_source, BatchIter, BatchSource};
pub use train::{train, train_with, Progress, TrainOptions, TrainReport, Trainer};

/// Sets the CPU thread counts of candle: `matmul` threads on rayon's
/// global pool, `elementwise` threads on candle's own pool. Both are fixed
/// at first use, so call this before any tensor work and before other
/// threads start.
///
/// Candle's element-wise pool synchronizes with a spinning barrier: on a
/// machine whose cores are busy with other work, more than one element-wise
/// thread made a training step 2.5 times slower (the mid-size benchmark in
/// `runtime::tests::runs`: 346 ms with 2, 136 ms with 1, on 2 shared cores).
pub fn set_threads(matmul: usize, elementwise: usize) {
    std::env::set_var("RAYON_NUM_THREADS", matmul.max(1).to_string());
    std::env::set_var("CANDLE_NUM_THREADS", elementwise.max(1).to_string());
}
