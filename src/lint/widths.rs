//! Output widths of features and feature groups as TorchEasyRec computes
//! them (`feature.output_dim`, `EmbeddingGroup.group_total_dim`), for every
//! feature kind: rules that compare widths a model derives from its groups
//! read them here.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use super::context::Ctx;
use super::facts::is_set;
use crate::proto::tzrec::protos::{FeatureGroupConfig, FeatureGroupType};

/// One feature's output width and whether it is a sequence feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Width {
    /// `None` when plec cannot tell (a kind whose width TorchEasyRec derives
    /// at run time, or a width of 0 that another rule reports).
    pub dim: Option<u64>,
    pub sequence: bool,
}

/// Width of every feature by each name a group may use for it.
pub(super) fn feature_widths(cx: &Ctx) -> HashMap<String, Width> {
    let mut out = HashMap::new();
    for (name, path) in &cx.all_features {
        if path.ends_with(".sequence_feature") {
            continue;
        }
        let Some((_, msg)) = cx.nodes.iter().find(|(p, _)| p == path) else {
            continue;
        };
        let kind = path.rsplit('.').next().unwrap_or("");
        let sequence = kind.starts_with("sequence_") || path.contains(".sequence_feature.");
        out.insert(
            name.clone(),
            Width {
                dim: output_dim(cx, msg),
                sequence,
            },
        );
    }
    out
}

/// `embedding_dim` for an embedded feature (a bucket setting or a dense
/// embedding), else `value_dim`.
fn output_dim(cx: &Ctx, msg: &DynamicMessage) -> Option<u64> {
    let desc = msg.descriptor();
    let bucketed = desc
        .fields()
        .any(|f| cx.facts.is_bucket(&f) && is_set(msg, &f));
    let dense_emb = desc
        .oneofs()
        .filter(|o| o.name() == "dense_emb")
        .any(|o| o.fields().any(|f| msg.has_field(&f)));
    let field = if bucketed || dense_emb {
        "embedding_dim"
    } else {
        "value_dim"
    };
    let fd = desc.get_field_by_name(field)?;
    let dim = match msg.get_field(&fd).as_ref() {
        Value::U32(v) => u64::from(*v),
        Value::U64(v) => *v,
        Value::I32(v) => u64::try_from(*v).ok()?,
        Value::I64(v) => u64::try_from(*v).ok()?,
        _ => return None,
    };
    (dim > 0).then_some(dim)
}

/// The widths TorchEasyRec derives from one feature group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GroupWidth {
    /// Each listed feature's width, in order, with its name.
    pub dims: Vec<(String, Width)>,
    /// Sum of the plain (non-sequence) features: `<group>.query` of a
    /// sequence group, the whole group otherwise.
    pub query: Option<u64>,
    /// Sum of the sequence features: `<group>.sequence`.
    pub sequence: Option<u64>,
}

impl GroupWidth {
    /// `group_total_dim(<group>)`: the query and sequence parts together.
    pub(super) fn total(&self) -> Option<u64> {
        Some(self.query? + self.sequence?)
    }
}

/// The widths of a group; parts with a feature of unknown width are
/// `None`. A DEEP group with sequence encoders adds their outputs, which
/// plec does not compute: both parts are `None` then.
pub(super) fn group_width(widths: &HashMap<String, Width>, g: &FeatureGroupConfig) -> GroupWidth {
    let mut dims = Vec::new();
    let (mut query, mut sequence) = (Some(0u64), Some(0u64));
    for name in &g.feature_names {
        let w = widths.get(name).copied().unwrap_or(Width {
            dim: None,
            sequence: false,
        });
        let part = if w.sequence {
            &mut sequence
        } else {
            &mut query
        };
        *part = match (*part, w.dim) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        dims.push((name.clone(), w));
    }
    let encoded = g.group_type() == FeatureGroupType::Deep && !g.sequence_encoders.is_empty();
    if encoded {
        (query, sequence) = (None, None);
    }
    GroupWidth {
        dims,
        query,
        sequence,
    }
}
