//! The model summary `plec inspect` prints: layers, experts, gates,
//! towers, parameter counts and forward FLOPs per sample.

use super::graph::{MlpRole, ModelGraph, Node};
use crate::proto::plan::Plan;

/// What a compiled model holds, in a modeler's numbers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Summary {
    pub model_kind: String,
    /// Features in the feature group.
    pub features: usize,
    /// Width of the feature group (the model input).
    pub input_width: u64,
    /// Extraction layers (PLE), 1 for one MoE layer, 0 without experts.
    pub layers: usize,
    pub experts: usize,
    pub gates: usize,
    pub towers: usize,
    /// Trainable dense parameters (batch-norm running statistics excluded).
    pub dense_params: u64,
    pub embedding_tables: usize,
    /// Rows times dims summed over the embedding tables.
    pub embedding_params: u64,
    pub ops: usize,
    /// Forward FLOPs per sample of the dense part (2 per multiply-add).
    pub forward_flops_per_sample: u64,
}

/// Summarizes a graph and the plan emitted from it.
pub(crate) fn summarize(graph: &ModelGraph, plan: &Plan) -> Summary {
    let mut experts = 0;
    let mut gates = 0;
    let mut towers = 0;
    for n in graph.graph.node_weights() {
        match n {
            Node::Mlp(m) if m.role == MlpRole::Expert => experts += 1,
            Node::FusedExperts(f) => experts += f.experts.len(),
            Node::Gate(_) => gates += 1,
            Node::Tower(_) => towers += 1,
            _ => {}
        }
    }
    let input_width = graph
        .graph
        .node_weights()
        .find_map(|n| match n {
            Node::FeatureGroup { width, .. } => Some(*width),
            _ => None,
        })
        .unwrap_or(0);
    Summary {
        model_kind: graph.model_kind.clone(),
        features: plan.features.len(),
        input_width,
        layers: graph.layers,
        experts,
        gates,
        towers,
        dense_params: plan
            .params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<u64>())
            .sum(),
        embedding_tables: plan.tables.len(),
        embedding_params: plan.tables.iter().map(|t| t.num_rows * t.dim as u64).sum(),
        ops: plan.ops.len(),
        forward_flops_per_sample: plan.forward_flops_per_sample,
    }
}
