//! The compiled plan: the prost message (`crate::proto::plan`) and its file
//! envelope (version, checksum, atomic write).

pub mod emit;
pub mod file;

pub use crate::proto::plan::*;
