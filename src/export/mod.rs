//! Taking a trained plan elsewhere: the ONNX model of a plan (`onnx`), the
//! input contract it follows (`contract`), and a data file encoded as that
//! model's inputs (`inputs`, written as `.npz` by `npz`). Reads plans and
//! data; the CLI (`plec export`) is its only caller.

pub mod contract;
pub mod inputs;
pub mod npz;
pub mod onnx;
