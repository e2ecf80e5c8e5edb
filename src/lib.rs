//! plec: a compiler and runtime for TorchEasyRec multi-task model configs.
//!
//! Stages, each in its own module and depending only on those before it:
//! `syntax` (text format to syntax tree), `schema` (binding the tree to
//! protobuf descriptors: typed config plus span map), `lint` (semantic
//! rules), `ir` (model graph), `passes` (graph rewrites), `plan` (the
//! serialized compiled plan), `data` (parquet to model inputs), `runtime`
//! (training and evaluation on the native CPU engine or candle), `metrics`.
//! `pipeline` runs the compiler stages on a source text; `diag` holds the
//! diagnostic types shared by all stages, `rng` the one random generator;
//! `format` prints a syntax tree in the canonical layout (`plec fmt`);
//! `export` writes a trained plan as an ONNX model and data as its inputs;
//! `cli` is the only module that knows the commands.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(unreachable_pub)]

pub mod alloc;
pub mod cli;
pub mod convert;
pub mod data;
pub mod diag;
pub mod export;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod ir;
pub(crate) mod lang;
pub(crate) mod lint;
pub(crate) mod metrics;
pub(crate) mod passes;
pub mod pipeline;
pub mod plan;
pub mod proto;
pub mod rng;
pub mod runtime;
pub mod schema;
pub mod syntax;
