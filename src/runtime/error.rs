//! Errors of the runtime: a plan that cannot be executed, a batch that does
//! not match the plan, data that could not be read, a tensor operation that
//! failed, or training that diverged.

use std::path::PathBuf;

/// An error from a data source, boxed so any reader can plug in.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The plan is inconsistent (a bad index, a shape that does not match
    /// its data): no engine can run it.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    /// The plan is consistent, but this engine cannot run one of its ops;
    /// another engine may (the native engine's refusals fall back to
    /// candle unless `--engine native` was asked for).
    #[error("op \"{op}\" is not supported by the native engine: {why}")]
    Unsupported { op: String, why: String },
    /// A batch from the data reader does not fit the plan.
    #[error("batch does not match the plan: {0}")]
    BadBatch(String),
    /// The data source failed.
    #[error("cannot read data: {0}")]
    Data(#[source] BoxError),
    /// A tensor operation failed (shape mismatch, device error).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Writing the trained plan failed.
    #[error(transparent)]
    PlanFile(#[from] crate::plan::file::PlanFileError),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The loss stopped being a finite number.
    #[error("training diverged: loss of task \"{task}\" is {value} at step {step}")]
    Diverged { task: String, step: u64, value: f32 },
}

/// Shorthand for runtime results.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Builds an `InvalidPlan` error from format arguments.
macro_rules! invalid_plan {
    ($($arg:tt)*) => { $crate::runtime::error::RuntimeError::InvalidPlan(format!($($arg)*)) };
}
/// Builds an `Unsupported` error: the op's name, then the reason's format
/// arguments.
macro_rules! unsupported {
    ($op:expr, $($arg:tt)*) => {
        $crate::runtime::error::RuntimeError::Unsupported { op: ($op).to_string(), why: format!($($arg)*) }
    };
}
/// Builds a `BadBatch` error from format arguments.
macro_rules! bad_batch {
    ($($arg:tt)*) => { $crate::runtime::error::RuntimeError::BadBatch(format!($($arg)*)) };
}
pub(crate) use bad_batch;
pub(crate) use invalid_plan;
pub(crate) use unsupported;
