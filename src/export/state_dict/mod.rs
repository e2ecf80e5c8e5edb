//! A plan's parameters as TorchEasyRec's `state_dict`, in safetensors
//! files: `write` exports a trained plan, `read` fills a compiled plan from
//! such a file (`plec import`).
//!
//! The names and shapes are the ones `plan::emit` recorded from
//! `ir::torch_names` (`Parameter.torch`, `EmbeddingTable.torch_name`): a
//! fused plan parameter holds several TorchEasyRec tensors back to back, so
//! each is a contiguous range of its values ([`slots`]). Besides the
//! trained values, a `state_dict` holds buffers plec has no parameter for:
//! BatchNorm's `num_batches_tracked` (Dice's too), VariationalDropout's
//! `feature_dim_repeat` and multi-window DIN's `windows_len` and
//! `cumsum_windows_len`. They follow from the plan ([`derived`]); export
//! writes them and import accepts them without reading them. A parameter
//! TorchEasyRec's model has no tensor for (`Parameter.torch_absent`: Dice's
//! frozen batch-norm scale and shift) is neither written nor read.

pub mod read;
pub mod write;

use crate::proto::plan::{OpKind, Plan};

/// Where a TorchEasyRec tensor's values live in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// All of table `index`.
    Table(usize),
    /// Parameter `index`, `offset` values in.
    Param { index: usize, offset: usize },
    /// All of these parameters, one after the other (a packed tensor).
    Packed(Vec<usize>),
}

/// One f32 tensor of the `state_dict` and where it lives in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub shape: Vec<u64>,
    pub place: Place,
}

impl Slot {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product::<u64>() as usize
    }
}

/// A non-f32 buffer of the `state_dict` that plec derives from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub name: String,
    pub shape: Vec<u64>,
    pub value: DerivedValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivedValue {
    /// int64 (BatchNorm's `num_batches_tracked`, multi-window DIN's
    /// windows).
    I64(Vec<i64>),
    /// int32 (VariationalDropout's `feature_dim_repeat`).
    I32(Vec<i32>),
}

/// Why a plan has no TorchEasyRec `state_dict`.
#[derive(Debug, thiserror::Error)]
pub enum NamingError {
    #[error("{kind} model has no TorchEasyRec parameter names: {reason}")]
    Unsupported { kind: String, reason: String },
    #[error("{count} of the plan's tables and parameters have no TorchEasyRec name ({}), so the state_dict would be incomplete", names.join(", "))]
    Unnamed { count: usize, names: Vec<String> },
    #[error(
        "parameter \"{name}\" holds {have} values, but its TorchEasyRec tensors add up to {want}"
    )]
    PartsMismatch { name: String, have: u64, want: u64 },
    #[error("the TorchEasyRec name \"{0}\" is given to two tensors")]
    Duplicate(String),
    #[error("the parts of the packed TorchEasyRec tensor \"{0}\" do not fill it exactly")]
    PackedParts(String),
    #[error("the plan records no TorchEasyRec names: it was compiled by a plec older than the safetensors export")]
    NotRecorded,
}

/// Every f32 tensor of TorchEasyRec's `state_dict` for `plan`: tables
/// first, then parameters, in plan order.
pub fn slots(plan: &Plan) -> Result<Vec<Slot>, NamingError> {
    if !plan.torch_unnamed_reason.is_empty() {
        return Err(NamingError::Unsupported {
            kind: plan.model_kind.clone(),
            reason: plan.torch_unnamed_reason.clone(),
        });
    }
    let mut out = Vec::new();
    let mut unnamed = Vec::new();
    // (tensor, its shape, this part's offset, parameter) of packed tensors.
    let mut packed: Vec<(String, Vec<u64>, u64, usize)> = Vec::new();
    for (index, t) in plan.tables.iter().enumerate() {
        if t.torch_name.is_empty() {
            unnamed.push(format!("table {}", t.name));
            continue;
        }
        out.push(Slot {
            name: t.torch_name.clone(),
            shape: vec![t.num_rows, t.dim as u64],
            place: Place::Table(index),
        });
    }
    for (index, p) in plan.params.iter().enumerate() {
        if p.torch_absent {
            // A constant TorchEasyRec's model has no tensor for.
            continue;
        }
        if p.torch.is_empty() {
            unnamed.push(p.name.clone());
            continue;
        }
        if let [t] = p.torch.as_slice() {
            if t.packed {
                packed.push((t.name.clone(), t.shape.clone(), t.packed_offset, index));
                continue;
            }
        }
        let have: u64 = p.shape.iter().product();
        let want: u64 = p
            .torch
            .iter()
            .map(|t| t.shape.iter().product::<u64>())
            .sum();
        if have != want {
            return Err(NamingError::PartsMismatch {
                name: p.name.clone(),
                have,
                want,
            });
        }
        let mut offset = 0;
        for t in &p.torch {
            let slot = Slot {
                name: t.name.clone(),
                shape: t.shape.clone(),
                place: Place::Param { index, offset },
            };
            offset += slot.numel();
            out.push(slot);
        }
    }
    out.extend(packed_slots(plan, packed)?);
    if out.is_empty() && !unnamed.is_empty() {
        return Err(NamingError::NotRecorded);
    }
    if !unnamed.is_empty() {
        return Err(NamingError::Unnamed {
            count: unnamed.len(),
            names: unnamed,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for s in &out {
        if !seen.insert(s.name.as_str()) {
            return Err(NamingError::Duplicate(s.name.clone()));
        }
    }
    Ok(out)
}

/// One slot per packed tensor, its parts in offset order; they must tile
/// it exactly, each with the tensor's shape.
fn packed_slots(
    plan: &Plan,
    mut parts: Vec<(String, Vec<u64>, u64, usize)>,
) -> Result<Vec<Slot>, NamingError> {
    parts.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    let mut out: Vec<Slot> = Vec::new();
    let mut filled = 0u64;
    for (name, shape, offset, index) in parts {
        let numel: u64 = plan
            .params
            .get(index)
            .map_or(0, |p| p.shape.iter().product());
        match out.last_mut() {
            Some(Slot {
                name: n,
                shape: s,
                place: Place::Packed(indices),
            }) if *n == name => {
                if *s != shape || offset != filled {
                    return Err(NamingError::PackedParts(name));
                }
                indices.push(index);
            }
            last => {
                let done = last.is_none_or(|s| filled == s.shape.iter().product::<u64>());
                if !done || offset != 0 {
                    return Err(NamingError::PackedParts(name));
                }
                filled = 0;
                out.push(Slot {
                    name,
                    shape,
                    place: Place::Packed(vec![index]),
                });
            }
        }
        filled += numel;
    }
    if let Some(s) = out.last() {
        if filled != s.shape.iter().product::<u64>() {
            return Err(NamingError::PackedParts(s.name.clone()));
        }
    }
    Ok(out)
}

/// The buffers TorchEasyRec's model has beside the slots: a BatchNorm's
/// `num_batches_tracked` (the training steps taken: each step is one
/// training-mode forward) next to each running mean, and a
/// VariationalDropout's `feature_dim_repeat` (its features' widths).
pub fn derived(plan: &Plan, slots: &[Slot]) -> Vec<Derived> {
    let mut out = Vec::new();
    for s in slots {
        if let Some(module) = s.name.strip_suffix(".running_mean") {
            out.push(Derived {
                name: format!("{module}.num_batches_tracked"),
                shape: Vec::new(),
                value: DerivedValue::I64(vec![plan.trained_steps as i64]),
            });
        }
    }
    for op in &plan.ops {
        if op.kind != OpKind::VariationalDropout as i32 {
            continue;
        }
        let named = op
            .params
            .first()
            .and_then(|&i| plan.params.get(i as usize))
            .and_then(|p| p.torch.first())
            .and_then(|t| t.name.strip_suffix(".feature_p"));
        if let Some(module) = named {
            out.push(Derived {
                name: format!("{module}.feature_dim_repeat"),
                shape: vec![op.widths.len() as u64],
                value: DerivedValue::I32(op.widths.iter().map(|&w| w as i32).collect()),
            });
        }
    }
    // Multi-window DIN (`tzrec/modules/sequence.py`) registers its window
    // lengths and their exclusive running sums as int64 buffers beside its
    // score `linear`.
    for op in &plan.ops {
        if op.kind != OpKind::WindowPool as i32 {
            continue;
        }
        let score = format!("{}.score.weight", op.name);
        let module = plan
            .params
            .iter()
            .find(|p| p.name == score)
            .and_then(|p| p.torch.first())
            .and_then(|t| t.name.strip_suffix(".linear.weight"));
        if let Some(module) = module {
            let windows: Vec<i64> = op.widths.iter().map(|&w| i64::from(w)).collect();
            let starts: Vec<i64> = windows
                .iter()
                .scan(0i64, |sum, &w| {
                    let start = *sum;
                    *sum += w;
                    Some(start)
                })
                .collect();
            let n = windows.len() as u64;
            out.push(Derived {
                name: format!("{module}.windows_len"),
                shape: vec![n],
                value: DerivedValue::I64(windows),
            });
            out.push(Derived {
                name: format!("{module}.cumsum_windows_len"),
                shape: vec![n],
                value: DerivedValue::I64(starts),
            });
        }
    }
    out
}
