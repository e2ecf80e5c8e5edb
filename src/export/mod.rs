//! Taking a trained plan elsewhere: the ONNX model of a plan (`onnx`), the
//! input contract it follows (`contract`), a data file encoded as that
//! model's inputs (`inputs`, written as `.npz` by `npz`), and the plan's
//! parameters as TorchEasyRec's `state_dict` in a safetensors file, both
//! ways (`state_dict`). Reads plans and data; the CLI (`plec export`,
//! `plec import`) is its only caller.

pub mod contract;
pub mod inputs;
pub mod npz;
pub mod onnx;
pub mod state_dict;
