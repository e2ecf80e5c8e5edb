//! Feature importances learned by variational dropout, as TorchEasyRec's
//! `tools/feature_selection.py` reads them: per group, each feature's drop
//! probability `sigmoid(feature_p)`, lowest (most important) first.

use crate::ir::init::from_le_bytes;
use crate::proto::plan::{OpKind, Plan};

/// `{"<group op>": [{"feature": name, "drop_p": p}, ...]}` for every
/// VARIATIONAL_DROPOUT op of a trained plan; `None` when it has none.
pub(crate) fn drop_probabilities(plan: &Plan) -> Option<serde_json::Value> {
    let mut groups = serde_json::Map::new();
    for op in &plan.ops {
        if OpKind::try_from(op.kind) != Ok(OpKind::VariationalDropout) {
            continue;
        }
        let Some(p) = op.params.first().and_then(|&i| plan.params.get(i as usize)) else {
            continue;
        };
        let logits = from_le_bytes(&p.data);
        let mut rows: Vec<(&String, f64)> = op
            .feature_names
            .iter()
            .zip(&logits)
            .map(|(n, &l)| (n, 1.0 / (1.0 + (-f64::from(l)).exp())))
            .collect();
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        let list = rows
            .into_iter()
            .map(|(n, p)| serde_json::json!({"feature": n, "drop_p": p}))
            .collect();
        groups.insert(op.name.clone(), serde_json::Value::Array(list));
    }
    (!groups.is_empty()).then_some(serde_json::Value::Object(groups))
}
