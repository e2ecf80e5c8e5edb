//! `FuseParallelExperts`: experts that read the same input with the same
//! layer widths (and norms, activation, dropout) become one batched chain,
//! and gates that read that input join its first multiply.
//!
//! The fused form, in plan ops: one wide `LINEAR` whose weight rows are
//! every expert's first-layer weight followed by every joined gate's
//! weight; `SLICE`s take the gate logits and the experts' part; norm,
//! activation and dropout run once on the experts' part (batch norm is
//! per feature, so the concatenated parameters give the same result); the
//! experts are sliced apart and `STACK`ed into `[E, B, h]`; deeper layers
//! are `BATCHED_LINEAR`s over `[E, B, h]`. Without joined gates the first
//! layer is a `BATCHED_LINEAR` over the shared `[B, in]` input. Gates then
//! take `SLICE`s of the stacked experts (merged with `CONCAT` along the
//! expert axis) instead of stacking separate expert outputs.
//!
//! Experts with layer norm or PReLU are left alone: the plan's layer norm
//! takes `[D]` parameters and PReLU one shared slope, neither of which
//! batches over experts without changing the parameters.

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::{Pass, Patch, Target};
use crate::ir::graph::*;
use crate::proto::plan::Activation;

/// Batches parallel experts and joins the gates that read their input.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FuseParallelExperts;

/// What must be equal for experts to share one batched chain.
type Signature = Vec<(u64, u64, u8, i32, u32, u32, bool)>;

fn signature(m: &MlpBlock) -> Option<Signature> {
    m.layers
        .iter()
        .map(|l| {
            let norm = match l.norm {
                Norm::None => 0,
                Norm::Batch(_) => 1,
                Norm::Layer(_) => return None,
            };
            if l.act.kind == Activation::Prelu || l.act.dice.is_some() {
                return None;
            }
            Some((
                l.linear.in_dim,
                l.linear.out_dim,
                norm,
                l.act.kind as i32,
                l.act.alpha.to_bits(),
                l.dropout.to_bits(),
                l.linear.bias.is_some(),
            ))
        })
        .collect()
}

/// The longest common dotted prefix of names (`layer1` of `layer1.ctr.expert0`
/// and `layer1.shared.expert1`).
fn common_prefix(names: &[&str]) -> String {
    let split: Vec<Vec<&str>> = names.iter().map(|n| n.split('.').collect()).collect();
    let Some(first) = split.first() else {
        return String::new();
    };
    let mut k = 0;
    while k + 1 < first.len() && split.iter().all(|s| s.len() > k + 1 && s[k] == first[k]) {
        k += 1;
    }
    first[..k].join(".")
}

impl Pass for FuseParallelExperts {
    fn name(&self) -> &'static str {
        "FuseParallelExperts"
    }

    fn next_patch(&self, graph: &ModelGraph) -> Option<Patch> {
        let g = &graph.graph;
        let mut groups: Vec<((NodeIndex, u32, Signature), Vec<NodeIndex>)> = Vec::new();
        for n in g.node_indices() {
            let Node::Mlp(m) = &g[n] else { continue };
            if m.role != MlpRole::Expert {
                continue;
            }
            let inputs = graph.inputs(n);
            let [(src, e)] = inputs.as_slice() else {
                continue;
            };
            let outs = graph.outputs(n);
            let only_gates = !outs.is_empty()
                && outs.iter().all(|(t, e)| {
                    matches!(g[*t], Node::Gate(_)) && e.dst_port >= 1 && e.experts.is_none()
                });
            let Some(sig) = signature(m) else { continue };
            if !only_gates {
                continue;
            }
            let key = (*src, e.src_port, sig);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(n),
                None => groups.push((key, vec![n])),
            }
        }
        let ((src, src_port, sig), members) = groups.into_iter().find(|(_, m)| m.len() >= 2)?;
        let blocks: Vec<MlpBlock> = members
            .iter()
            .filter_map(|&n| match &g[n] {
                Node::Mlp(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        let e = blocks.len() as i64;
        let in_dim = blocks[0].in_dim();
        let out_dim = blocks[0].out_dim();
        let first_has_bias = sig.first().is_some_and(|s| s.6);
        // Gates whose selector is this same input join the first multiply.
        let mut joined: Vec<(
            NodeIndex,
            petgraph::stable_graph::EdgeIndex,
            GateBlock,
            LinearParams,
        )> = Vec::new();
        if first_has_bias {
            for n in g.node_indices() {
                let Node::Gate(gate) = &g[n] else { continue };
                let Some(head) = &gate.head else { continue };
                if head.bias.is_none() {
                    continue;
                }
                let sel = g
                    .edges_directed(n, Direction::Incoming)
                    .find(|er| er.weight().dst_port == 0);
                if let Some(er) = sel {
                    if er.source() == src && er.weight().src_port == src_port {
                        joined.push((n, er.id(), gate.clone(), head.clone()));
                    }
                }
            }
        }
        let names: Vec<String> = blocks.iter().map(|b| b.name.clone()).collect();
        let prefix = common_prefix(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let name = if prefix.is_empty() {
            "fused_experts".to_string()
        } else {
            format!("{prefix}.fused_experts")
        };
        let fused = FusedExperts {
            name: name.clone(),
            experts: blocks,
            gates: joined
                .iter()
                .map(|(_, _, gate, head)| GateHead {
                    gate: gate.name.clone(),
                    linear: head.clone(),
                })
                .collect(),
        };
        let mut patch = Patch {
            description: format!(
                "fuse {} experts {} into {name}{}",
                e,
                names.join(", "),
                if joined.is_empty() {
                    String::new()
                } else {
                    format!(
                        " with gates {}",
                        joined
                            .iter()
                            .map(|j| j.2.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ),
            add_nodes: vec![Node::FusedExperts(fused)],
            ..Default::default()
        };
        patch.add_edges.push((
            Target::Old(src),
            Target::New(0),
            Edge::new(batch_shape(in_dim), src_port, 0),
        ));
        for (k, &m) in members.iter().enumerate() {
            for (gate, edge) in graph.outputs(m) {
                patch.add_edges.push((
                    Target::New(0),
                    Target::Old(gate),
                    Edge {
                        shape: vec![e, BATCH, out_dim as i64],
                        src_port: 0,
                        dst_port: edge.dst_port,
                        experts: Some((k as u32, 1)),
                    },
                ));
            }
        }
        for (j, (n, sel_edge, gate, head)) in joined.into_iter().enumerate() {
            patch.remove_edges.push(sel_edge);
            patch.add_edges.push((
                Target::New(0),
                Target::Old(n),
                Edge::new(batch_shape(head.out_dim), 1 + j as u32, 0),
            ));
            patch
                .replace_nodes
                .push((n, Node::Gate(GateBlock { head: None, ..gate })));
        }
        patch.remove_nodes = members;
        Some(patch)
    }
}
