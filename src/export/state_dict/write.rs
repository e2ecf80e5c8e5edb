//! `plec export --format safetensors`: every table and parameter of a plan
//! under its TorchEasyRec `state_dict` key, f32 little-endian in PyTorch's
//! layout (a Linear weight `[out, in]`, a table `[rows, dim]`), plus the
//! derived buffers, and a `__metadata__` header (plec version, config hash,
//! model kind, trained steps, the feature contract as a JSON string).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use super::{derived, slots, DerivedValue, NamingError, Place, Slot};
use crate::export::contract::{self, ContractError, InputKind};
use crate::proto::plan::{OpKind, Plan, Pooling};

/// Why a plan could not be written as safetensors.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
    #[error("cannot write {path}: {reason}")]
    Write {
        path: String,
        reason: safetensors::SafeTensorError,
    },
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Tensors in the file (f32 ones and derived buffers).
    pub tensors: usize,
    /// f32 values in the file.
    pub values: u64,
}

/// A tensor's bytes, owned until the file is written.
struct Owned {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The values of `slot`, little-endian f32.
fn slot_bytes(plan: &Plan, slot: &Slot) -> Result<Vec<u8>, WriteError> {
    let n = slot.numel();
    match &slot.place {
        Place::Table(i) => crate::runtime::embedding::table_le_bytes(&plan.tables[*i], n)
            .map_err(WriteError::InvalidPlan),
        Place::Param { index, offset } => {
            let (index, offset) = (*index, *offset);
            let p = &plan.params[index];
            p.data
                .get(offset * 4..(offset + n) * 4)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    WriteError::InvalidPlan(format!(
                        "parameter \"{}\" holds {} bytes, too few for its shape",
                        p.name,
                        p.data.len()
                    ))
                })
        }
        Place::Packed(indices) => {
            let mut bytes = Vec::with_capacity(n * 4);
            for &index in indices {
                let p = &plan.params[index];
                let want = p.shape.iter().product::<u64>() as usize * 4;
                if p.data.len() != want {
                    return Err(WriteError::InvalidPlan(format!(
                        "parameter \"{}\" holds {} bytes, expected {want}",
                        p.name,
                        p.data.len()
                    )));
                }
                bytes.extend_from_slice(&p.data);
            }
            if bytes.len() != n * 4 {
                return Err(WriteError::InvalidPlan(format!(
                    "the parts of \"{}\" hold {} bytes, expected {}",
                    slot.name,
                    bytes.len(),
                    n * 4
                )));
            }
            Ok(bytes)
        }
    }
}

/// The feature contract: each model input as `plec export --inputs`
/// writes it (and the ONNX model reads it), the TorchEasyRec table an id
/// input looks up, and each feature group's features in concatenation
/// order.
pub fn feature_contract(plan: &Plan) -> Result<serde_json::Value, ContractError> {
    let inputs = contract::graph_inputs(plan)?;
    let table_of = |f: usize| {
        plan.features
            .get(f)
            .and_then(|s| plan.tables.get(s.table as usize))
    };
    let pooling = |f: usize| match plan.features.get(f).map(|s| s.pooling) {
        Some(p) if p == Pooling::Mean as i32 => "mean",
        _ => "sum",
    };
    let list: Vec<serde_json::Value> = inputs
        .iter()
        .map(|i| match i.kind {
            InputKind::Ids { feature } => json!({
                "name": i.name,
                "dtype": "int64",
                "shape": ["batch", "K"],
                "pad": contract::PAD_ID,
                "pooling": pooling(feature),
                "table": table_of(feature).map(|t| t.torch_name.clone()),
                "dim": table_of(feature).map(|t| t.dim),
            }),
            InputKind::Dense { dim, .. } => json!({
                "name": i.name,
                "dtype": "float32",
                "shape": ["batch", dim],
            }),
            InputKind::SequenceIds { feature, steps } => json!({
                "name": i.name,
                "dtype": "int64",
                "shape": ["batch", steps],
                "pad": contract::PAD_ID,
                "table": table_of(feature).map(|t| t.torch_name.clone()),
            }),
            InputKind::SequenceDense { steps, dim, .. } => json!({
                "name": i.name,
                "dtype": "float32",
                "shape": ["batch", steps, dim],
            }),
            InputKind::Domain { .. } => json!({
                "name": i.name,
                "dtype": "int64",
                "shape": ["batch"],
            }),
        })
        .collect();
    let groups: Vec<serde_json::Value> = plan
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::FeatureGroup as i32)
        .map(|op| {
            let names: Vec<&str> = op
                .features
                .iter()
                .filter_map(|&f| plan.features.get(f as usize).map(|s| s.name.as_str()))
                .collect();
            json!({ "name": op.name, "features": names })
        })
        .collect();
    Ok(json!({ "inputs": list, "groups": groups }))
}

/// The `__metadata__` header.
fn metadata(plan: &Plan) -> Result<HashMap<String, String>, ContractError> {
    let mut m = HashMap::new();
    // What `safetensors.torch` and Hugging Face loaders expect of a
    // PyTorch state_dict.
    m.insert("format".to_string(), "pt".to_string());
    m.insert(
        "plec_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    m.insert(
        "config_sha256".to_string(),
        plan.source_config_sha256.clone(),
    );
    m.insert("model_kind".to_string(), plan.model_kind.clone());
    m.insert("trained_steps".to_string(), plan.trained_steps.to_string());
    m.insert(
        "feature_contract".to_string(),
        feature_contract(plan)?.to_string(),
    );
    Ok(m)
}

/// Writes `plan`'s state_dict to `path` (through a temporary sibling and a
/// rename, so a failure leaves nothing behind).
pub fn write_safetensors(plan: &Plan, path: &Path) -> Result<Written, WriteError> {
    let slots = slots(plan)?;
    let meta = metadata(plan)?;
    let mut owned = Vec::with_capacity(slots.len());
    let mut values = 0u64;
    for s in &slots {
        owned.push(Owned {
            name: s.name.clone(),
            dtype: Dtype::F32,
            shape: s.shape.iter().map(|&d| d as usize).collect(),
            bytes: slot_bytes(plan, s)?,
        });
        values += s.numel() as u64;
    }
    for d in derived(plan, &slots) {
        let (dtype, bytes) = match &d.value {
            DerivedValue::I64(v) => (
                Dtype::I64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            ),
            DerivedValue::I32(v) => (
                Dtype::I32,
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            ),
        };
        owned.push(Owned {
            name: d.name,
            dtype,
            shape: d.shape.iter().map(|&x| x as usize).collect(),
            bytes,
        });
    }
    let write_err = |reason| WriteError::Write {
        path: path.display().to_string(),
        reason,
    };
    let views: Vec<(&str, TensorView<'_>)> = owned
        .iter()
        .map(|o| TensorView::new(o.dtype, o.shape.clone(), &o.bytes).map(|v| (o.name.as_str(), v)))
        .collect::<Result<_, _>>()
        .map_err(write_err)?;
    let tensors = views.len();
    safetensors::serialize_to_file(views, Some(meta), path).map_err(write_err)?;
    Ok(Written { tensors, values })
}
