//! The input contract of an exported model: which tensors it takes, named
//! how, with what type and layout. One list, read by the ONNX lowering (the
//! graph inputs) and by `plec export --inputs` (the arrays it writes), so
//! the two cannot drift apart.
//!
//! - An embedded feature that is not a sequence (`id_feature`,
//!   `combo_feature`, a `raw_feature` with `boundaries`): int64
//!   `[batch, K]` named after the feature, each row's ids (after hashing,
//!   vocab lookup or bucketizing, as `src/data/encode.rs` says) followed by
//!   `-1` up to `K`, the longest bag of the batch (at least 1). A row of
//!   only `-1` is an empty bag: a zero embedding. Bags are pooled by the
//!   feature's `sum` or `mean`.
//! - A dense `raw_feature`: float32 `[batch, value_dim]`, already
//!   normalized.
//! - An embedded sequence feature: int64 `[batch, sequence_length]`, the
//!   row's step ids first, then `-1`.
//! - A dense sequence feature: float32 `[batch, sequence_length, dim]`,
//!   the row's steps first, then zeros. Which steps are real comes from an
//!   embedded feature of the same sequence group (all of a group's
//!   features have as many steps in a row), so a group of dense sequences
//!   alone cannot be exported.
//! - PEPNet's per-domain towers: int64 `[batch]` named `domain_<label>`,
//!   the domain (`0 <= d < task_domain_num`) whose tower scores the row.

use crate::proto::plan::{FeatureKind, OpKind, Plan};

/// Value used after a row's ids in a padded int64 input.
pub const PAD_ID: i64 = -1;

/// What one graph input carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// Padded ids of embedded feature `feature` (an index into
    /// `Plan.features`), `[batch, K]`.
    Ids { feature: usize },
    /// Dense values of feature `feature`, `[batch, dim]`.
    Dense { feature: usize, dim: usize },
    /// Padded step ids of sequence feature `feature`, `[batch, steps]`.
    SequenceIds { feature: usize, steps: usize },
    /// Zero-padded steps of dense sequence feature `feature`,
    /// `[batch, steps, dim]`.
    SequenceDense {
        feature: usize,
        steps: usize,
        dim: usize,
    },
    /// The domain of each row for the per-domain towers that read label
    /// `label` (an index into `DataSpec.label_fields`), `[batch]`.
    Domain { label: usize },
}

/// One graph input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphInput {
    pub name: String,
    pub kind: InputKind,
}

/// Why a plan's inputs cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the exported model would have two inputs or outputs named \"{name}\" (one of them a {what}): inputs are named after features, outputs logits_<tower> and probs_<tower>")]
    NameClash { what: &'static str, name: String },
    #[error("task \"{tower}\" picks its tower by label \"{label}\", which the plan's data config does not list")]
    MissingDomainLabel { tower: String, label: String },
}

/// The graph inputs of `plan`, in order: every feature an op reads (plan
/// order), then the domain labels of per-domain towers.
pub fn graph_inputs(plan: &Plan) -> Result<Vec<GraphInput>, ContractError> {
    let mut used = vec![false; plan.features.len()];
    for op in &plan.ops {
        let reads_features = matches!(
            OpKind::try_from(op.kind),
            Ok(OpKind::FeatureGroup | OpKind::SequenceEmbed | OpKind::SequenceMask)
        );
        if reads_features {
            for &f in &op.features {
                if let Some(u) = used.get_mut(f as usize) {
                    *u = true;
                }
            }
        }
    }
    let mut out: Vec<GraphInput> = Vec::new();
    for (f, spec) in plan.features.iter().enumerate() {
        if !used[f] {
            continue;
        }
        let embedded = FeatureKind::try_from(spec.kind) != Ok(FeatureKind::RawDense);
        let kind = match (spec.sequence_length > 0, embedded) {
            (false, true) => InputKind::Ids { feature: f },
            (false, false) => InputKind::Dense {
                feature: f,
                dim: (spec.value_dim as usize).max(1),
            },
            (true, true) => InputKind::SequenceIds {
                feature: f,
                steps: spec.sequence_length as usize,
            },
            (true, false) => InputKind::SequenceDense {
                feature: f,
                steps: spec.sequence_length as usize,
                dim: (spec.value_dim as usize).max(1),
            },
        };
        push(&mut out, spec.name.clone(), kind, "feature")?;
    }
    let labels = plan
        .data
        .as_ref()
        .map(|d| d.label_fields.clone())
        .unwrap_or_default();
    for t in &plan.tasks {
        if t.domain_count <= 1 {
            continue;
        }
        let label = labels
            .iter()
            .position(|l| *l == t.domain_label)
            .ok_or_else(|| ContractError::MissingDomainLabel {
                tower: t.tower_name.clone(),
                label: t.domain_label.clone(),
            })?;
        let name = domain_input_name(&t.domain_label);
        let same = |i: &GraphInput| {
            i.name == name && matches!(i.kind, InputKind::Domain { label: l } if l == label)
        };
        if out.iter().any(same) {
            continue;
        }
        push(&mut out, name, InputKind::Domain { label }, "domain input")?;
    }
    Ok(out)
}

/// The input name of the domain label `label`.
pub fn domain_input_name(label: &str) -> String {
    format!("domain_{label}")
}

fn push(
    out: &mut Vec<GraphInput>,
    name: String,
    kind: InputKind,
    what: &'static str,
) -> Result<(), ContractError> {
    if out.iter().any(|i| i.name == name) {
        return Err(ContractError::NameClash { what, name });
    }
    out.push(GraphInput { name, kind });
    Ok(())
}
