//! Borrowing the f32 data of CPU tensors without copying it.

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};

use crate::runtime::error::{invalid_plan, Result};

/// The contiguous f32 elements of a CPU tensor, read-locked while held.
pub(crate) struct HostSlice<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl HostSlice<'_> {
    /// The elements.
    pub(crate) fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            // `tensor_f32` only builds a HostSlice over f32 CPU storage.
            _ => &[],
        }
    }
}

/// Borrows `t`'s elements; errors unless it is a contiguous f32 CPU tensor.
pub(crate) fn tensor_f32(t: &Tensor) -> Result<HostSlice<'_>> {
    let (guard, layout) = t.storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(invalid_plan!(
            "native engine: a parameter is not contiguous"
        ));
    };
    match &*guard {
        Storage::Cpu(CpuStorage::F32(v)) if end <= v.len() => Ok(HostSlice { guard, start, end }),
        _ => Err(invalid_plan!(
            "native engine: parameters must be f32 on the CPU"
        )),
    }
}
