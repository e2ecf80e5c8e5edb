//! Stage 5: rewrites of the model graph that never change what it computes.
//!
//! Tract style: a [`Pass`] only reads the graph and returns a [`Patch`]
//! (or nothing); [`optimize`], the one driver, applies patches, re-checks
//! shapes and graph consistency after each, repeats until no pass has
//! anything to say, and can stop after N patches so a bad rewrite can be
//! bisected (`plec compile --max-patches N`). Every pass has a before/after
//! equivalence test on random inputs (`ir::reference`).

mod dead_nodes;
mod fuse_experts;

#[cfg(test)]
mod tests;

use petgraph::stable_graph::{EdgeIndex, NodeIndex};

use crate::ir::graph::{Edge, ModelGraph, Node};

pub(crate) use dead_nodes::RemoveDeadNodes;
pub(crate) use fuse_experts::FuseParallelExperts;

/// A graph rewrite: looks at the graph, proposes one patch at a time.
pub(crate) trait Pass {
    /// Name in logs (`FuseParallelExperts`).
    fn name(&self) -> &'static str;
    /// The next change this pass would make, or `None` at its fixpoint.
    fn next_patch(&self, graph: &ModelGraph) -> Option<Patch>;
}

/// A node a patch refers to: an existing one or one the patch adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Old(NodeIndex),
    New(usize),
}

/// What a pass would change; applied only by the driver.
#[derive(Debug, Clone, Default)]
pub(crate) struct Patch {
    /// One line for logs: what and why.
    pub description: String,
    pub add_nodes: Vec<Node>,
    pub replace_nodes: Vec<(NodeIndex, Node)>,
    pub add_edges: Vec<(Target, Target, Edge)>,
    pub remove_edges: Vec<EdgeIndex>,
    pub remove_nodes: Vec<NodeIndex>,
}

/// A patch the driver applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub pass: &'static str,
    pub description: String,
}

/// A patch left the graph inconsistent: a bug in that pass.
#[derive(Debug, thiserror::Error)]
#[error("pass {pass} broke the graph ({description}): {}", .problems.join("; "))]
pub struct PassError {
    pub pass: &'static str,
    pub description: String,
    pub problems: Vec<String>,
}

impl Patch {
    /// Applies the patch to `graph`.
    pub(crate) fn apply(self, graph: &mut ModelGraph) {
        let g = &mut graph.graph;
        for (n, node) in self.replace_nodes {
            if let Some(w) = g.node_weight_mut(n) {
                *w = node;
            }
        }
        let new: Vec<NodeIndex> = self.add_nodes.into_iter().map(|n| g.add_node(n)).collect();
        for e in self.remove_edges {
            g.remove_edge(e);
        }
        let resolve = |t: Target| match t {
            Target::Old(n) => Some(n),
            Target::New(i) => new.get(i).copied(),
        };
        for (a, b, e) in self.add_edges {
            if let (Some(a), Some(b)) = (resolve(a), resolve(b)) {
                g.add_edge(a, b, e);
            }
        }
        for n in self.remove_nodes {
            g.remove_node(n);
        }
    }
}

/// The standard pipeline: dead-node removal, then expert fusion if asked.
pub(crate) fn pipeline(fuse: bool) -> Vec<Box<dyn Pass>> {
    let mut passes: Vec<Box<dyn Pass>> = vec![Box::new(RemoveDeadNodes)];
    if fuse {
        passes.push(Box::new(FuseParallelExperts));
    }
    passes
}

/// Applies `passes` until none proposes a patch (or `max_patches` were
/// applied), checking the graph after every patch.
pub(crate) fn optimize(
    graph: &mut ModelGraph,
    passes: &[Box<dyn Pass>],
    max_patches: Option<usize>,
) -> Result<Vec<Applied>, PassError> {
    let mut applied = Vec::new();
    loop {
        let mut changed = false;
        for pass in passes {
            if max_patches.is_some_and(|m| applied.len() >= m) {
                return Ok(applied);
            }
            let Some(patch) = pass.next_patch(graph) else {
                continue;
            };
            let description = patch.description.clone();
            patch.apply(graph);
            if let Err(problems) = graph.check() {
                return Err(PassError {
                    pass: pass.name(),
                    description,
                    problems,
                });
            }
            applied.push(Applied {
                pass: pass.name(),
                description,
            });
            changed = true;
        }
        if !changed {
            return Ok(applied);
        }
    }
}
