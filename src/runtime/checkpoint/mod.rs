//! Training checkpoints: everything a run needs to continue exactly where
//! it stopped (parameters, optimizer state, data position, random state,
//! metrics so far; `proto/plec/checkpoint.proto`), the file envelope
//! (`file`) and the directory of them a run keeps (`dir`).

pub(crate) mod dir;
pub(crate) mod file;
pub(crate) mod writer;

pub(crate) use file::CheckpointError;
