//! Optimizer state to and from a checkpoint (`proto/plec/checkpoint.proto`):
//! each buffer as row-major little-endian f32 with its shape, so a resumed
//! run continues with exactly the moments and accumulators it stopped with.
//!
//! Values are stored as f32: exact for the f32 models `plec run` trains
//! (a model in another dtype is rounded through f32).

use candle_core::{DType, Device, Tensor};

use crate::proto::checkpoint::{StateSlot, StateTensor};
use crate::runtime::embedding::{f32s_from_le, f32s_to_le};
use crate::runtime::error::{invalid_plan, Result};

/// A device tensor as a checkpoint buffer.
pub(crate) fn from_tensor(t: &Tensor) -> Result<StateTensor> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(StateTensor {
        shape: t.dims().iter().map(|&d| d as u64).collect(),
        data: f32s_to_le(&v),
    })
}

/// A host buffer (the fused kernels' state) as a checkpoint buffer.
pub(crate) fn from_host(v: &[f32]) -> StateTensor {
    StateTensor {
        shape: vec![v.len() as u64],
        data: f32s_to_le(v),
    }
}

/// The values of a checkpoint buffer, checked to hold `expected` of them
/// (`what` names the buffer in the error).
pub(crate) fn to_host(t: &StateTensor, expected: usize, what: &str) -> Result<Vec<f32>> {
    let n: u64 = t.shape.iter().product();
    if n != expected as u64 || t.data.len() as u64 != n * 4 {
        return Err(invalid_plan!(
            "the checkpoint's optimizer state for {what} holds {} values, the model needs {expected}",
            t.data.len() / 4
        ));
    }
    Ok(f32s_from_le(&t.data))
}

/// A checkpoint buffer as a tensor of its own shape on `device`, checked
/// to hold `expected` values.
pub(crate) fn to_tensor(
    t: &StateTensor,
    expected: usize,
    what: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let v = to_host(t, expected, what)?;
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
}

/// Checks that a checkpoint has one slot per parameter or table.
pub(crate) fn check_slots(slots: &[StateSlot], expected: usize, what: &str) -> Result<()> {
    if slots.len() != expected {
        return Err(invalid_plan!(
            "the checkpoint's {what} optimizer state has {} slots, the plan {expected}",
            slots.len()
        ));
    }
    Ok(())
}
